// GenerationService in process: request validation (PrepareGenerate) and the
// three RPCs over a loopback gRPC server, with the fake generative model
// behind a LoadedModel (no engine kernels run).
#include "server/services/generation_service.h"

#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <cmath>

#include "engine/encoder.h"
#include "engine/model_config.h"
#include "maskserve/v1/generation.grpc.pb.h"
#include "server/model_registry.h"
#include "server/scheduler/worker_pool.h"
#include "tests/util/fake_generation.h"

namespace maskserve::server {
namespace {

namespace pb = maskserve::v1;
using ::maskserve::testing::FakeGenerativeModel;
using ::maskserve::testing::FakeTokenizer;
using ::testing::HasSubstr;

std::shared_ptr<const engine::LoadedModel> Generator() {
  engine::ModelDescription d;
  d.architecture = "fake-lm";
  d.tasks = {engine::ModelTask::kGenerate};
  d.max_sequence_length = 512;
  return std::make_shared<engine::LoadedModel>(d, std::make_unique<engine::ModelConfig>(),
                                               std::make_unique<FakeTokenizer>(), nullptr,
                                               std::make_unique<FakeGenerativeModel>());
}

std::shared_ptr<const engine::LoadedModel> EmbedOnly() {
  engine::ModelDescription d;
  d.architecture = "bert";
  d.tasks = {engine::ModelTask::kEmbed};
  return std::make_shared<engine::LoadedModel>(d, std::make_unique<engine::ModelConfig>(),
                                               std::make_unique<FakeTokenizer>());
}

class GenerationServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    options_.max_new_tokens = 100;
    options_.kv_cache_bytes = FakeGenerativeModel::PoolOptions(4096, 16).total_bytes;
    registry_ = std::make_unique<ModelRegistry>(
        std::vector<ModelSpec>{{"lm", "/lm"}, {"enc", "/enc"}},
        [](const ModelSpec& spec) -> absl::StatusOr<std::shared_ptr<const engine::LoadedModel>> {
          return spec.name == "lm" ? Generator() : EmbedOnly();
        });
    registry_->Start();
    registry_->WaitUntilSettled();
    WorkerPoolOptions po;
    po.num_threads = 2;
    po.name = "test";
    pool_ = *WorkerPool::Create(po);
    GenerationService::Deps deps;
    deps.registry = registry_.get();
    deps.options = &options_;
    deps.pool = pool_.get();
    deps.metrics = &metrics_;
    service_ = std::make_unique<GenerationService>(deps);
  }

  void StartServer() {
    grpc::ServerBuilder b;
    int port = 0;
    b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    b.RegisterService(service_.get());
    server_ = b.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    channel_ =
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials());
    stub_ = pb::Generation::NewStub(channel_);
  }

  void TearDown() override {
    if (server_) server_->Shutdown();
    service_.reset();
  }

  static pb::GenerateRequest Request() {
    pb::GenerateRequest r;
    r.set_model("lm");
    r.set_prompt("ab c");
    r.set_max_new_tokens(8);
    return r;
  }

  absl::Status Prepare(const pb::GenerateRequest& r) {
    return service_->PrepareGenerate(r).status();
  }

  ServerOptions options_;
  metrics::MetricsRegistry metrics_;
  std::unique_ptr<ModelRegistry> registry_;
  std::unique_ptr<WorkerPool> pool_;
  std::unique_ptr<GenerationService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<pb::Generation::Stub> stub_;
};

TEST_F(GenerationServiceTest, PrepareMapsTheRequest) {
  pb::GenerateRequest r = Request();
  auto p = service_->PrepareGenerate(r);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->decoder->options().strategy, engine::DecodeStrategy::kGreedy);
  EXPECT_EQ(p->decoder->prompt_tokens(), 3);
  EXPECT_TRUE(p->decoder->options().skip_special_tokens);
  // UNSPECIFIED: sampling when temperature and top_k/top_p are set, beams for beam_width > 1.
  r.set_temperature(0.7f);
  r.set_top_k(5);
  EXPECT_EQ(service_->PrepareGenerate(r)->decoder->options().strategy,
            engine::DecodeStrategy::kSample);
  r = Request();
  r.set_beam_width(3);
  EXPECT_EQ(service_->PrepareGenerate(r)->decoder->options().strategy,
            engine::DecodeStrategy::kBeam);
  r = Request();
  r.set_temperature(0.7f);  // temperature alone stays greedy
  EXPECT_EQ(service_->PrepareGenerate(r)->decoder->options().strategy,
            engine::DecodeStrategy::kGreedy);
}

TEST_F(GenerationServiceTest, PrepareNamesTheField) {
  struct Case {
    std::function<void(pb::GenerateRequest&)> set;
    absl::StatusCode code;
    std::string needle;
  };
  const auto kInv = absl::StatusCode::kInvalidArgument;
  std::vector<Case> cases = {
      {[](pb::GenerateRequest& r) { r.set_model("nope"); }, absl::StatusCode::kNotFound, "nope"},
      {[](pb::GenerateRequest& r) { r.set_model(""); }, kInv, "model"},
      {[](pb::GenerateRequest& r) { r.set_model("enc"); }, absl::StatusCode::kFailedPrecondition,
       "cannot generate"},
      {[](pb::GenerateRequest& r) { r.clear_prompt(); }, kInv, "prompt"},
      {[](pb::GenerateRequest& r) { r.add_prompt_ids(4); }, kInv, "prompt_ids"},
      {[](pb::GenerateRequest& r) { r.set_source("x"); }, kInv, "source"},
      {[](pb::GenerateRequest& r) {
         r.clear_prompt();
         r.add_prompt_ids(4);
         r.add_prompt_ids(40);
       },
       kInv, "prompt_ids[1] = 40"},
      {[](pb::GenerateRequest& r) { r.set_max_new_tokens(0); }, kInv, "max_new_tokens"},
      {[](pb::GenerateRequest& r) { r.set_max_new_tokens(101); }, kInv, "--max_new_tokens"},
      {[](pb::GenerateRequest& r) { r.set_min_new_tokens(-1); }, kInv, "min_new_tokens"},
      {[](pb::GenerateRequest& r) { r.set_temperature(-1); }, kInv, "temperature"},
      {[](pb::GenerateRequest& r) { r.set_temperature(std::nanf("")); }, kInv, "temperature"},
      {[](pb::GenerateRequest& r) { r.set_top_p(0); }, kInv, "top_p"},
      {[](pb::GenerateRequest& r) { r.set_top_k(-3); }, kInv, "top_k"},
      {[](pb::GenerateRequest& r) { r.set_repetition_penalty(0); }, kInv, "repetition_penalty"},
      {[](pb::GenerateRequest& r) { r.set_length_penalty(std::nanf("")); }, kInv, "length_penalty"},
      {[](pb::GenerateRequest& r) { r.set_no_repeat_ngram_size(-1); }, kInv,
       "no_repeat_ngram_size"},
      {[](pb::GenerateRequest& r) { r.set_strategy(pb::STRATEGY_BEAM); }, kInv, "beam_width"},
      {[](pb::GenerateRequest& r) {
         r.set_strategy(pb::STRATEGY_BEAM);
         r.set_beam_width(2);
         r.set_num_return_sequences(3);
       },
       kInv, "num_return_sequences"},
      {[](pb::GenerateRequest& r) {
         r.set_strategy(pb::STRATEGY_SAMPLE);
         r.set_num_return_sequences(65);
       },
       kInv, "x num_return_sequences (65)"},
      {[](pb::GenerateRequest& r) { r.set_strategy(static_cast<pb::Strategy>(9)); }, kInv,
       "strategy"},
      {[](pb::GenerateRequest& r) { r.add_stop_token_ids(-1); }, kInv, "stop_token_ids[0]"},
      {[](pb::GenerateRequest& r) {
         r.mutable_mask()->set_kind(pb::MASK_KIND_LOCAL);
         r.mutable_mask()->set_window(2);
       },
       kInv, "mask"},
      {[](pb::GenerateRequest& r) { r.mutable_mask()->set_kind(pb::MASK_KIND_UNILM); }, kInv,
       "mask"},
  };
  for (const Case& c : cases) {
    pb::GenerateRequest r = Request();
    c.set(r);
    absl::Status s = Prepare(r);
    EXPECT_EQ(s.code(), c.code) << c.needle << ": " << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr(c.needle));
  }
  // LOCAL + causal (sliding window) is a valid generation mask.
  pb::GenerateRequest r = Request();
  r.mutable_mask()->set_kind(pb::MASK_KIND_LOCAL);
  r.mutable_mask()->set_window(2);
  r.mutable_mask()->set_causal(true);
  EXPECT_TRUE(Prepare(r).ok());
}

TEST_F(GenerationServiceTest, GenerateAndStreamAgree) {
  StartServer();
  pb::GenerateRequest r = Request();
  r.set_max_new_tokens(30);
  r.set_ignore_eos(true);
  r.set_strategy(pb::STRATEGY_SAMPLE);
  r.set_num_return_sequences(3);
  r.set_seed(11);
  r.set_logprobs(true);
  grpc::ClientContext ctx;
  pb::GenerateResponse unary;
  ASSERT_TRUE(stub_->Generate(&ctx, r, &unary).ok());
  ASSERT_EQ(unary.sequences_size(), 3);
  EXPECT_EQ(unary.usage().prompt_tokens(), 3);
  EXPECT_EQ(unary.usage().completion_tokens(), 90);
  EXPECT_EQ(unary.usage().total_tokens(), 93);
  EXPECT_EQ(unary.model(), "lm");
  for (const auto& s : unary.sequences()) {
    EXPECT_EQ(s.ids_size(), 30);
    EXPECT_EQ(s.logprobs_size(), 30);
    EXPECT_EQ(s.finish_reason(), pb::FINISH_REASON_LENGTH);
  }
  grpc::ClientContext sctx;
  auto reader = stub_->GenerateStream(&sctx, r);
  pb::GenerateStreamResponse m;
  std::map<int, std::string> text;
  std::map<int, std::vector<int>> ids;
  int messages = 0, with_usage = 0;
  bool last_had_usage = false;
  while (reader->Read(&m)) {
    ++messages;
    text[m.index()] += m.text();
    ids[m.index()].insert(ids[m.index()].end(), m.ids().begin(), m.ids().end());
    last_had_usage = m.has_usage();
    with_usage += m.has_usage() ? 1 : 0;
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_GT(messages, 3);
  EXPECT_EQ(with_usage, 1);
  EXPECT_TRUE(last_had_usage);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(text[i], unary.sequences(i).text());
    EXPECT_EQ(ids[i],
              std::vector<int>(unary.sequences(i).ids().begin(), unary.sequences(i).ids().end()));
  }
}

TEST_F(GenerationServiceTest, CancelledStreamFreesItsBlocks) {
  StartServer();
  pb::GenerateRequest r = Request();
  r.set_max_new_tokens(100);
  r.set_ignore_eos(true);
  grpc::ClientContext ctx;
  auto reader = stub_->GenerateStream(&ctx, r);
  pb::GenerateStreamResponse m;
  ASSERT_TRUE(reader->Read(&m));
  auto model = registry_->GetReady("lm");
  ContinuousBatcher* batcher = *service_->BatcherFor("lm", *model);
  ctx.TryCancel();
  while (reader->Read(&m)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  // The batcher frees the blocks at its next step boundary.
  for (int i = 0; i < 2000 && batcher->kv_stats().blocks_used > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(batcher->kv_stats().blocks_used, 0);
}

TEST_F(GenerationServiceTest, ParaphraseNeedsUnilmAndEmbeddings) {
  StartServer();
  pb::ParaphraseRequest r;
  r.set_model("lm");
  r.set_text("ab");
  r.set_num_candidates(2);
  r.set_max_new_tokens(4);
  grpc::ClientContext ctx;
  pb::ParaphraseResponse out;
  grpc::Status s = stub_->Paraphrase(&ctx, r, &out);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(), HasSubstr("cannot paraphrase"));
}

}  // namespace
}  // namespace maskserve::server
