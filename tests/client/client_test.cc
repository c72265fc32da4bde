// maskserve::client::Client against the in-process fake server: round trips,
// retry policy, deadlines, the hand-encoded health check, FitWhitening
// streaming and call metadata; plus the whitening JSON and CLI enum parsers.
#include "client/lib/client.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/time/clock.h"
#include "client/lib/enum_names.h"
#include "client/lib/health_check.h"
#include "client/lib/whitening_json.h"
#include "tests/client/fake_server.h"

namespace maskserve::client {
namespace {

using ::maskserve::client::testing::FakeServer;
using ::testing::ElementsAre;
using ::testing::Pair;
using ::testing::UnorderedElementsAre;

std::unique_ptr<Client> MakeClient(const FakeServer& server,
                                   ClientOptions options = {}) {
  options.target = server.target();
  options.initial_backoff = absl::Milliseconds(5);
  options.max_backoff = absl::Milliseconds(20);
  auto client = Client::Create(options);
  EXPECT_TRUE(client.ok()) << client.status();
  return client.ok() ? *std::move(client) : nullptr;
}

TEST(ClientTest, ListModelsRoundTrip) {
  FakeServer server;
  ASSERT_TRUE(server.ok());
  auto client = MakeClient(server);
  auto models = client->ListModels();
  ASSERT_TRUE(models.ok()) << models.status();
  ASSERT_EQ(models->models_size(), 2);
  EXPECT_EQ(models->models(0).name(), "fake-bert");
  EXPECT_EQ(models->models(0).hidden_size(), 4);
  EXPECT_EQ(models->models(1).state(), v1::MODEL_STATE_FAILED);
  EXPECT_EQ(server.models.list_calls, 1);
}

TEST(ClientTest, GetModelNotFoundKeepsCodeAndMessage) {
  FakeServer server;
  ASSERT_TRUE(server.ok());
  auto client = MakeClient(server);
  auto model = client->GetModel("nope");
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(model.status().message(), "no model 'nope'");
  auto found = client->GetModel("fake-bert");
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(found->architecture(), "bert");
}

TEST(ClientTest, RetriesUnavailableUntilSuccess) {
  FakeServer server;
  ASSERT_TRUE(server.ok());
  server.models.unavailable_first = 2;
  ClientOptions options;
  options.max_retries = 3;
  auto client = MakeClient(server, options);
  auto models = client->ListModels();
  ASSERT_TRUE(models.ok()) << models.status();
  EXPECT_EQ(server.models.list_calls, 3);
}

TEST(ClientTest, GivesUpAfterMaxRetries) {
  FakeServer server;
  ASSERT_TRUE(server.ok());
  server.models.unavailable_first = 2;
  ClientOptions options;
  options.max_retries = 1;
  auto client = MakeClient(server, options);
  auto models = client->ListModels();
  ASSERT_FALSE(models.ok());
  EXPECT_EQ(models.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(models.status().message(), "warming up");
  EXPECT_EQ(server.models.list_calls, 2);
}

TEST(ClientTest, DoesNotRetryOtherErrors) {
  FakeServer server;
  ASSERT_TRUE(server.ok());
  auto client = MakeClient(server);
  v1::EmbedRequest request;
  request.set_model("missing");
  request.add_texts("x");
  auto out = client->Embed(request);
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kNotFound);
}

TEST(ClientTest, DeadlineExceededMapsToAbsl) {
  FakeServer server;
  ASSERT_TRUE(server.ok());
  server.models.delay_ms = 2000;
  auto client = MakeClient(server);
  CallOptions call;
  call.deadline = absl::Milliseconds(100);
  const absl::Time start = absl::Now();
  auto models = client->ListModels(call);
  ASSERT_FALSE(models.ok());
  EXPECT_TRUE(absl::IsDeadlineExceeded(models.status())) << models.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(1.5));
}

TEST(ClientTest, UnreachableServerIsUnavailable) {
  ClientOptions options;
  options.target = "127.0.0.1:1";  // nothing listens on tcpmux
  options.max_retries = 1;
  options.initial_backoff = absl::Milliseconds(5);
  auto client = Client::Create(options);
  ASSERT_TRUE(client.ok());
  auto models = (*client)->ListModels();
  ASSERT_FALSE(models.ok());
  EXPECT_EQ(models.status().code(), absl::StatusCode::kUnavailable);
}

TEST(ClientTest, HealthServingAndNotServing) {
  FakeServer server;
  ASSERT_TRUE(server.ok());
  auto client = MakeClient(server);
  auto overall = client->Health("");
  ASSERT_TRUE(overall.ok()) << overall.status();
  EXPECT_EQ(*overall, HealthStatus::kServing);

  server.SetServing("maskserve.v1.Embedding", true);
  server.SetServing("maskserve.v1.Generation", false);
  auto embedding = client->Health("maskserve.v1.Embedding");
  ASSERT_TRUE(embedding.ok()) << embedding.status();
  EXPECT_EQ(*embedding, HealthStatus::kServing);
  auto generation = client->Health("maskserve.v1.Generation");
  ASSERT_TRUE(generation.ok()) << generation.status();
  EXPECT_EQ(*generation, HealthStatus::kNotServing);

  auto unknown = client->Health("no.such.Service");
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound);
}

TEST(HealthWireTest, EncodesAndDecodes) {
  EXPECT_EQ(EncodeHealthCheckRequest(""), "");
  EXPECT_EQ(EncodeHealthCheckRequest("ab"), std::string("\x0a\x02" "ab", 4));
  const std::string long_name(200, 'x');  // length needs a 2-byte varint
  EXPECT_EQ(EncodeHealthCheckRequest(long_name).substr(0, 3),
            std::string("\x0a\xc8\x01", 3));

  EXPECT_EQ(*DecodeHealthCheckResponse(""), HealthStatus::kUnknown);
  EXPECT_EQ(*DecodeHealthCheckResponse(std::string("\x08\x01", 2)),
            HealthStatus::kServing);
  EXPECT_EQ(*DecodeHealthCheckResponse(std::string("\x08\x02", 2)),
            HealthStatus::kNotServing);
  // An unknown length-delimited field 2 before the status is skipped.
  EXPECT_EQ(*DecodeHealthCheckResponse(std::string("\x12\x01z\x08\x01", 5)),
            HealthStatus::kServing);
  EXPECT_FALSE(DecodeHealthCheckResponse(std::string("\x08", 1)).ok());
  EXPECT_FALSE(DecodeHealthCheckResponse(std::string("\x12\x05z", 3)).ok());
}

TEST(ClientTest, FitWhiteningStreamsAllTextsInBatches) {
  FakeServer server;
  ASSERT_TRUE(server.ok());
  auto client = MakeClient(server);
  std::vector<std::string> texts;
  for (int i = 0; i < 10; ++i) texts.push_back("sentence " + std::to_string(i));
  FitWhiteningParams params;
  params.k = 2;
  params.beta = 0.5f;
  params.pooling = v1::POOLING_MEAN;
  std::vector<std::pair<int64_t, int64_t>> progress;
  auto profile = client->FitWhitening(
      "fake-bert", "p1", params, VectorTextSource(texts, 4),
      [&](int64_t t, int64_t b) { progress.emplace_back(t, b); });
  ASSERT_TRUE(profile.ok()) << profile.status();
  EXPECT_EQ(profile->model(), "fake-bert");
  EXPECT_EQ(profile->name(), "p1");
  EXPECT_EQ(profile->k(), 2);
  EXPECT_FLOAT_EQ(profile->beta(), 0.5f);
  EXPECT_FLOAT_EQ(profile->gamma(), 1.0f);  // unset -> server default
  EXPECT_EQ(profile->pooling(), v1::POOLING_MEAN);
  EXPECT_EQ(profile->num_samples(), 10);
  EXPECT_THAT(server.embedding.fit_batch_sizes(), ElementsAre(4, 4, 2));
  EXPECT_EQ(server.embedding.fit_texts(), texts);
  EXPECT_THAT(progress, ElementsAre(Pair(4, 1), Pair(8, 2), Pair(10, 3)));
}

TEST(ClientTest, FitWhiteningSourceErrorAbortsCall) {
  FakeServer server;
  ASSERT_TRUE(server.ok());
  auto client = MakeClient(server);
  int calls = 0;
  TextSource source = [&]() -> absl::StatusOr<std::vector<std::string>> {
    if (++calls == 1) return std::vector<std::string>{"a", "b"};
    return absl::DataLossError("disk on fire");
  };
  auto profile = client->FitWhitening("fake-bert", "p", {}, source);
  ASSERT_FALSE(profile.ok());
  EXPECT_EQ(profile.status().code(), absl::StatusCode::kDataLoss);
}

TEST(ClientTest, GenerateStreamDeliversEveryMessage) {
  FakeServer server;
  ASSERT_TRUE(server.ok());
  auto client = MakeClient(server);
  v1::GenerateRequest request;
  request.set_model("gpt");
  request.set_max_new_tokens(5);
  std::string text;
  int final_tokens = 0;
  const absl::Status status = client->GenerateStream(
      request, [&](const v1::GenerateStreamResponse& m) {
        text += m.text();
        if (m.has_usage()) final_tokens = m.usage().completion_tokens();
        return true;
      });
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(text, "w0 w1 w2 w3 w4 ");
  EXPECT_EQ(final_tokens, 5);
}

TEST(ClientTest, GenerateStreamCallbackCanCancel) {
  FakeServer server;
  ASSERT_TRUE(server.ok());
  auto client = MakeClient(server);
  v1::GenerateRequest request;
  request.set_model("gpt");
  request.set_max_new_tokens(1000);
  int seen = 0;
  const absl::Status status = client->GenerateStream(
      request, [&](const v1::GenerateStreamResponse&) { return ++seen < 2; });
  EXPECT_EQ(status.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(seen, 2);
  EXPECT_EQ(server.generation.stream_calls, 1);  // never retried
}

TEST(ClientTest, MetadataReachesServer) {
  FakeServer server;
  ASSERT_TRUE(server.ok());
  ClientOptions options;
  options.bearer_token = "s3cret";
  options.metadata = {{"X-Request-Id", "req-42"}};  // sent lower-cased
  auto client = MakeClient(server, options);
  CallOptions call;
  call.metadata = {{"x-tenant", "t1"}};
  ASSERT_TRUE(client->ListModels(call).ok());
  const auto md = server.models.last_metadata();
  auto range = md.equal_range("authorization");
  ASSERT_NE(range.first, range.second);
  EXPECT_EQ(range.first->second, "Bearer s3cret");
  ASSERT_EQ(md.count("x-request-id"), 1u);
  EXPECT_EQ(md.find("x-request-id")->second, "req-42");
  ASSERT_EQ(md.count("x-tenant"), 1u);
  EXPECT_EQ(md.find("x-tenant")->second, "t1");
}

TEST(ClientTest, CreateRejectsBadOptions) {
  ClientOptions options;
  options.target = "";
  EXPECT_EQ(Client::Create(options).status().code(),
            absl::StatusCode::kInvalidArgument);
  options.target = "localhost:1";
  options.tls_cert_file = "/nonexistent/cert.pem";  // key missing
  EXPECT_EQ(Client::Create(options).status().code(),
            absl::StatusCode::kInvalidArgument);
  options.tls_key_file = "/nonexistent/key.pem";
  EXPECT_EQ(Client::Create(options).status().code(), absl::StatusCode::kNotFound);
}

TEST(ClientTest, RoundRobinSpreadsCallsOverEveryAddress) {
  // Two servers behind one target, as a headless Service's DNS name would
  // resolve: round_robin must use both, pick_first only one.
  FakeServer a, b;
  ASSERT_TRUE(a.ok() && b.ok());
  const std::string target = "ipv4:" + a.target() + "," + b.target();
  for (const std::string policy : {"round_robin", "pick_first"}) {
    a.models.list_calls = 0;
    b.models.list_calls = 0;
    ClientOptions options;
    options.target = target;
    options.load_balancing_policy = policy;
    auto client = Client::Create(options);
    ASSERT_TRUE(client.ok()) << client.status();
    for (int i = 0; i < 20; ++i) ASSERT_TRUE((*client)->ListModels().ok()) << policy;
    EXPECT_EQ(a.models.list_calls + b.models.list_calls, 20);
    if (policy == "round_robin") {
      EXPECT_GT(a.models.list_calls, 0);
      EXPECT_GT(b.models.list_calls, 0);
    } else {
      EXPECT_TRUE(a.models.list_calls == 0 || b.models.list_calls == 0);
    }
  }
  ClientOptions bad;
  bad.load_balancing_policy = "least_request";
  EXPECT_EQ(Client::Create(bad).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(WhiteningJsonTest, RoundTripsExactly) {
  v1::WhiteningProfile p;
  p.set_model("m");
  p.set_name("n");
  p.set_pooling(v1::POOLING_FIRST_LAST_AVG);
  p.set_k(1);
  p.set_beta(0.25f);
  p.set_gamma(0.1f);
  p.set_dim(2);
  p.set_num_samples(7);
  p.set_created_unix_s(1700000000);
  for (float v : {0.1f, -3.3333333f}) p.add_mean(v);
  for (float v : {2.5f, 1e-7f}) p.add_eigenvalues(v);
  for (float v : {0.6f, -0.8f, 0.8f, 0.6f}) p.add_eigenvectors(v);
  const std::string json = WhiteningProfileToJson(p, /*pretty=*/true);
  EXPECT_NE(json.find("\"pooling\": \"first_last_avg\""), std::string::npos);
  auto back = WhiteningProfileFromJson(json);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->SerializeAsString(), p.SerializeAsString());
}

TEST(WhiteningJsonTest, RejectsMalformed) {
  EXPECT_FALSE(WhiteningProfileFromJson("{").ok());
  EXPECT_FALSE(WhiteningProfileFromJson("[]").ok());
  const std::string wrong_len =
      R"({"model":"m","name":"n","pooling":"cls","k":1,"beta":1,"gamma":1,)"
      R"("dim":2,"num_samples":3,"mean":[0,0],"eigenvalues":[1,1],)"
      R"("eigenvectors":[1,0,0]})";
  auto r = WhiteningProfileFromJson(wrong_len);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), ::testing::HasSubstr("eigenvectors"));
}

TEST(EnumNamesTest, ParsesPoolingStrategyAndMask) {
  EXPECT_EQ(*ParsePooling("mean"), v1::POOLING_MEAN);
  EXPECT_EQ(*ParsePooling("first-last-avg"), v1::POOLING_FIRST_LAST_AVG);
  EXPECT_EQ(*ParsePooling("POOLING_CLS"), v1::POOLING_CLS);
  EXPECT_FALSE(ParsePooling("avg").ok());
  EXPECT_EQ(PoolingName(v1::POOLING_LAST_TOKEN), "last_token");
  EXPECT_EQ(*ParseStrategy("beam"), v1::STRATEGY_BEAM);
  EXPECT_FALSE(ParseStrategy("topk").ok());

  auto local = ParseMaskSpec("local:64+causal");
  ASSERT_TRUE(local.ok()) << local.status();
  EXPECT_EQ(local->kind(), v1::MASK_KIND_LOCAL);
  EXPECT_EQ(local->window(), 64);
  EXPECT_TRUE(local->causal());
  auto strided = ParseMaskSpec("strided:8:4");
  ASSERT_TRUE(strided.ok());
  EXPECT_EQ(strided->window(), 8);
  EXPECT_EQ(strided->rate(), 4);
  EXPECT_EQ(ParseMaskSpec("unilm:5")->prefix_length(), 5);
  EXPECT_EQ(ParseMaskSpec("causal")->kind(), v1::MASK_KIND_CAUSAL);
  EXPECT_FALSE(ParseMaskSpec("local").ok());
  EXPECT_FALSE(ParseMaskSpec("local:-1").ok());
  EXPECT_FALSE(ParseMaskSpec("blocky:3").ok());
}

}  // namespace
}  // namespace maskserve::client
