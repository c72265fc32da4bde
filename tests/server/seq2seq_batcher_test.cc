// The real encoder-decoder models (../shared: the OpenNMT transliteration
// model and the golden t5-mini) through the serving path below gRPC:
// BuildGenerationPrompt (source / target tokenizers) -> RequestDecoder ->
// ContinuousBatcher -> Seq2SeqModel, driven step by step.
//
//   - every OpenNMT reference case (two with a target prefix) submitted at
//     once: ids, text and per-token log-probs as in reference_outputs.json,
//     and all four sources encoded in ONE EncodeSources call;
//   - t5-mini greedy (EOS ignored) and beam (golden settings) requests
//     together in a pool small enough to force preemption: the golden ids
//     and beam sequences, each request encoded exactly once.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "engine/generation_input.h"
#include "engine/generative_model.h"
#include "engine/loaded_model.h"
#include "engine/request_decoder.h"
#include "nlohmann/json.hpp"
#include "server/scheduler/clock.h"
#include "server/scheduler/continuous_batcher.h"
#include "tests/util/test_env.h"

namespace maskserve::server {
namespace {

using json = nlohmann::json;

// Delegates to a real model and counts encoder calls.
class CountingModel final : public engine::GenerativeModel {
 public:
  explicit CountingModel(std::shared_ptr<const engine::LoadedModel> m)
      : loaded_(std::move(m)), g_(*loaded_->generator()) {}
  engine::GenerationKind kind() const override { return g_.kind(); }
  engine::KvLayout kv_layout() const override { return g_.kv_layout(); }
  int vocab_size() const override { return g_.vocab_size(); }
  int max_sequence_length() const override { return g_.max_sequence_length(); }
  int max_source_length() const override { return g_.max_source_length(); }
  const std::vector<int32_t>& eos_token_ids() const override { return g_.eos_token_ids(); }
  int32_t decoder_start_token_id() const override { return g_.decoder_start_token_id(); }
  engine::MaskSpec NaturalMask(int p) const override { return g_.NaturalMask(p); }
  absl::Status ValidateMask(const engine::MaskSpec& s) const override { return g_.ValidateMask(s); }
  absl::StatusOr<std::shared_ptr<const engine::EncoderState>> EncodeSource(
      absl::Span<const int32_t> ids) const override {
    ++single_calls;
    return g_.EncodeSource(ids);
  }
  absl::StatusOr<std::vector<std::shared_ptr<const engine::EncoderState>>> EncodeSources(
      absl::Span<const absl::Span<const int32_t>> sources) const override {
    ++batch_calls;
    batch_sizes.push_back(static_cast<int>(sources.size()));
    return g_.EncodeSources(sources);
  }
  absl::Status Forward(absl::Span<const engine::StepSequence> seqs, engine::KvCachePool* pool,
                       std::vector<float>* logits) const override {
    return g_.Forward(seqs, pool, logits);
  }

  mutable std::atomic<int> single_calls{0};
  mutable std::atomic<int> batch_calls{0};
  mutable std::vector<int> batch_sizes;  // scheduler thread only

 private:
  std::shared_ptr<const engine::LoadedModel> loaded_;
  const engine::GenerativeModel& g_;
};

struct Outcome {
  bool done = false;
  absl::Status status;
  GenerationResult result;
  std::string streamed;
};

class Seq2SeqBatcherTest : public ::testing::Test {
 protected:
  std::shared_ptr<const engine::LoadedModel> Load(const std::string& dir) {
    absl::StatusOr<std::unique_ptr<engine::LoadedModel>> m =
        engine::LoadedModel::Load({.path = dir});
    EXPECT_TRUE(m.ok()) << m.status();
    if (!m.ok()) return nullptr;
    return std::shared_ptr<const engine::LoadedModel>(std::move(*m));
  }

  std::unique_ptr<ContinuousBatcher> MakeBatcher(std::shared_ptr<CountingModel> model,
                                                 int64_t kv_bytes) {
    ContinuousBatcherOptions o;
    o.model = "s2s";
    o.kv_cache_bytes = kv_bytes;
    o.kv_block_size = 4;
    o.clock = &clock_;
    o.start_thread = false;
    auto b = ContinuousBatcher::Create(std::move(model), o);
    EXPECT_TRUE(b.ok()) << b.status();
    return b.ok() ? std::move(*b) : nullptr;
  }

  std::unique_ptr<engine::RequestDecoder> Decoder(const engine::LoadedModel& lm,
                                                  const engine::GenerativeModel& model,
                                                  const engine::GenerationInput& in,
                                                  engine::DecodeOptions o) {
    absl::StatusOr<engine::GenerationPrompt> p =
        engine::BuildGenerationPrompt(model, lm.tokenizer(), in, lm.target_tokenizer());
    EXPECT_TRUE(p.ok()) << p.status();
    if (!p.ok()) return nullptr;
    absl::StatusOr<std::unique_ptr<engine::RequestDecoder>> d =
        engine::RequestDecoder::Create(&model, lm.target_tokenizer(), *std::move(p), std::move(o));
    EXPECT_TRUE(d.ok()) << d.status();
    return d.ok() ? std::move(*d) : nullptr;
  }

  void Submit(ContinuousBatcher& b, const std::string& key,
              std::unique_ptr<engine::RequestDecoder> d) {
    ASSERT_NE(d, nullptr);
    GenerationCallbacks cb;
    cb.on_step = [this, key](const engine::StepOutput& out) {
      std::lock_guard<std::mutex> lock(mu_);
      for (const auto& delta : out.deltas) {
        if (delta.index == 0) outcomes_[key].streamed += delta.text;
      }
    };
    cb.on_done = [this, key](absl::StatusOr<GenerationResult> r) {
      std::lock_guard<std::mutex> lock(mu_);
      Outcome& o = outcomes_[key];
      o.done = true;
      o.status = r.status();
      if (r.ok()) o.result = std::move(*r);
    };
    auto h = b.Submit(std::move(d), absl::InfiniteFuture(), std::move(cb));
    ASSERT_TRUE(h.ok()) << h.status();
  }

  void RunUntilIdle(ContinuousBatcher& b) {
    for (int i = 0; i < 100000; ++i) {
      if (!b.RunStep()) return;
    }
    ADD_FAILURE() << "batcher never went idle";
  }

  Outcome Get(const std::string& key) {
    std::lock_guard<std::mutex> lock(mu_);
    return outcomes_[key];
  }

  FakeClock clock_;
  std::mutex mu_;
  std::map<std::string, Outcome> outcomes_;
};

std::vector<int32_t> Ints(const json& j) { return j.get<std::vector<int32_t>>(); }

TEST_F(Seq2SeqBatcherTest, OpenNmtReferenceCasesTogether) {
  MASKSERVE_REQUIRE_SHARED(dir, "models/opennmt-aren-transliteration");
  std::shared_ptr<const engine::LoadedModel> lm = Load(dir);
  ASSERT_NE(lm, nullptr);
  auto model = std::make_shared<CountingModel>(lm);
  auto b = MakeBatcher(model, int64_t{1} << 20);
  const json ref = json::parse(maskserve::testing::ReadFileOrDie(dir + "/reference_outputs.json"));
  int i = 0;
  for (const json& c : ref["cases"]) {
    engine::GenerationInput in;
    for (const json& t : c["source_tokens"]) in.prompt += t.get<std::string>();
    for (const json& t : c["target_prefix"]) in.target_prefix += t.get<std::string>() + " ";
    engine::DecodeOptions o;
    o.max_new_tokens = 40;
    o.logprobs = true;
    Submit(*b, std::to_string(i++), Decoder(*lm, *model, in, o));
  }
  RunUntilIdle(*b);
  EXPECT_EQ(model->batch_calls.load(), 1);
  EXPECT_EQ(model->single_calls.load(), 0);
  EXPECT_EQ(model->batch_sizes, std::vector<int>{4});
  i = 0;
  for (const json& c : ref["cases"]) {
    const Outcome o = Get(std::to_string(i++));
    ASSERT_TRUE(o.done);
    ASSERT_TRUE(o.status.ok()) << o.status;
    ASSERT_EQ(o.result.sequences.size(), 1u);
    const engine::GeneratedSequence& s = o.result.sequences[0];
    // Generated ids = the reference minus the decoder start and prefix.
    const std::vector<int32_t> full = Ints(c["greedy_output_ids"]);
    const size_t start = c["decoder_input_start"].size();
    EXPECT_EQ(s.ids, std::vector<int32_t>(full.begin() + start, full.end())) << c["expected_text"];
    EXPECT_EQ(s.finish, engine::FinishReason::kStopToken);
    const std::vector<float> lp = c["generated_token_logprobs"].get<std::vector<float>>();
    ASSERT_EQ(s.logprobs.size(), lp.size());
    for (size_t k = 0; k < lp.size(); ++k) EXPECT_NEAR(s.logprobs[k], lp[k], 1e-4);
    // The text is the target segment after the prefix.
    std::string want = c["expected_text"].get<std::string>();
    std::string prefix;
    for (const json& t : c["target_prefix"]) prefix += t.get<std::string>() + " ";
    if (!prefix.empty()) want = " " + want.substr(prefix.size());
    EXPECT_EQ(s.text, want) << c["expected_text"];
    EXPECT_EQ(o.streamed, s.text);
    // Source tokens count as prompt tokens (plus the decoder start + prefix).
    EXPECT_EQ(o.result.prompt_tokens,
              static_cast<int>(c["source_ids"].size() + c["decoder_input_start"].size()));
  }
  EXPECT_EQ(b->kv_stats().blocks_used, 0);
}

TEST_F(Seq2SeqBatcherTest, T5GreedyAndBeamWithPreemption) {
  MASKSERVE_REQUIRE_SHARED(dir, "golden/models/t5-mini");
  MASKSERVE_REQUIRE_SHARED(golden, "golden/t5-mini/outputs.json");
  std::shared_ptr<const engine::LoadedModel> lm = Load(dir);
  ASSERT_NE(lm, nullptr);
  auto model = std::make_shared<CountingModel>(lm);
  // 2 layers x 2 heads x 64 x K|V x 4 tokens x 4 bytes = 8 KiB a block; 24
  // blocks cannot hold 4 greedy (25 tokens) and 4 x 4 beams (17 tokens) at
  // once.
  const engine::KvLayout l = model->kv_layout();
  const int64_t block = int64_t{2} * l.num_layers * l.num_kv_heads * l.head_dim * 4 * 4;
  auto b = MakeBatcher(model, 24 * block);
  const json g = json::parse(maskserve::testing::ReadFileOrDie(golden));
  int n = 0;
  for (const json& in : g["inputs"]) {
    engine::GenerationInput gi;
    gi.source = in["text"].get<std::string>();
    engine::DecodeOptions greedy;
    greedy.max_new_tokens = 24;
    greedy.ignore_eos = true;
    Submit(*b, "greedy" + std::to_string(n), Decoder(*lm, *model, gi, greedy));
    engine::DecodeOptions beam;
    beam.strategy = engine::DecodeStrategy::kBeam;
    beam.beam_width = 4;
    beam.num_return_sequences = 2;
    beam.max_new_tokens = 16;
    Submit(*b, "beam" + std::to_string(n), Decoder(*lm, *model, gi, beam));
    ++n;
  }
  RunUntilIdle(*b);
  int preemptions = 0;
  n = 0;
  for (const json& in : g["inputs"]) {
    const Outcome og = Get("greedy" + std::to_string(n));
    ASSERT_TRUE(og.status.ok()) << og.status;
    EXPECT_EQ(og.result.sequences[0].ids, Ints(in["greedy_ids"])) << in["text"];
    EXPECT_EQ(og.streamed, og.result.sequences[0].text);
    const Outcome ob = Get("beam" + std::to_string(n));
    ASSERT_TRUE(ob.status.ok()) << ob.status;
    ASSERT_EQ(ob.result.sequences.size(), 2u);
    for (size_t i = 0; i < 2; ++i) {
      std::vector<int32_t> seq = {0};
      seq.insert(seq.end(), ob.result.sequences[i].ids.begin(), ob.result.sequences[i].ids.end());
      EXPECT_EQ(seq, Ints(in["beam"]["sequences"][i])) << in["text"] << " beam " << i;
      EXPECT_NEAR(ob.result.sequences[i].score, in["beam"]["sequences_scores"][i].get<double>(),
                  1e-4);
    }
    preemptions += og.result.preemptions + ob.result.preemptions;
    ++n;
  }
  EXPECT_GT(preemptions, 0) << "the pool was meant to be too small";
  // Every request was encoded once (admission rounds may batch several).
  int encoded = 0;
  for (int s : model->batch_sizes) encoded += s;
  EXPECT_EQ(encoded + model->single_calls.load(), 2 * n);
  EXPECT_EQ(b->kv_stats().blocks_used, 0);
}

}  // namespace
}  // namespace maskserve::server
