// The request interceptor over a loopback gRPC server: access control
// reaches the client as the right status before any handler work, a limit's
// retry hint arrives as `retry-after-ms` and google.rpc.RetryInfo, health
// stays open, and handlers never see the token or a forged verdict.
#include "server/request_interceptor.h"

#include <gmock/gmock.h>
#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <gtest/gtest.h>

#include <condition_variable>
#include <fstream>
#include <mutex>

#include "engine/model_config.h"
#include "maskserve/v1/embedding.grpc.pb.h"
#include "maskserve/v1/models.grpc.pb.h"
#include "server/auth/access_control.h"
#include "server/logging.h"
#include "server/model_registry.h"
#include "server/scheduler/clock.h"
#include "server/services/embedding_service.h"
#include "server/services/models_service.h"
#include "server/status_util.h"
#include "server/whitening_store.h"
#include "tests/util/fake_generation.h"
#include "tests/util/test_env.h"

namespace maskserve::server {
namespace {

namespace pb = maskserve::v1;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kAlice[] = "alice-token-0123456789";  // embed, 1 call/s
constexpr char kOps[] = "ops-token-abcdefghijklm";   // everything, unlimited

TEST(SplitMethodTest, SplitsServiceAndMethod) {
  std::string service, method;
  SplitMethod("/maskserve.v1.Models/ListModels", &service, &method);
  EXPECT_EQ(service, "maskserve.v1.Models");
  EXPECT_EQ(method, "ListModels");
  SplitMethod("odd", &service, &method);
  EXPECT_EQ(service, "odd");
  EXPECT_EQ(method, "");
}

// Answers any method it is asked (an unregistered one) by reporting what the
// handler saw of the client's metadata.
class EchoMetadataService final : public grpc::CallbackGenericService {
 public:
  grpc::ServerGenericBidiReactor* CreateReactor(grpc::GenericCallbackServerContext* ctx) override {
    class Reactor final : public grpc::ServerGenericBidiReactor {
     public:
      explicit Reactor(grpc::GenericCallbackServerContext* ctx) {
        const auto& md = ctx->client_metadata();
        std::string seen = absl::StrCat("authorization=", md.count("authorization"),
                                        " admission=", md.count("x-maskserve-admission"));
        Finish(grpc::Status(grpc::StatusCode::ABORTED, seen));
      }
      void OnDone() override { delete this; }
    };
    return new Reactor(ctx);
  }
};

class InterceptorAccessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SetLogSinkForTesting(&log_);
    dir_ = maskserve::testing::MakeTempDir("interceptor_test");
    std::ofstream(dir_ + "/tokens") << "alice " << kAlice << " embed rps=1\n"
                                    << "ops " << kOps << " *\n";
    AccessControlOptions ao;
    ao.tokens_file = dir_ + "/tokens";
    ao.clock = &clock_;
    ao.registry = &metrics_;
    access_ = *AccessController::Create(ao);

    registry_ = std::make_unique<ModelRegistry>(
        std::vector<ModelSpec>{{"enc", "/enc"}},
        [](const ModelSpec&) -> absl::StatusOr<std::shared_ptr<const engine::LoadedModel>> {
          engine::ModelDescription d;
          d.architecture = "bert";
          d.tasks = {engine::ModelTask::kEmbed};
          return std::make_shared<engine::LoadedModel>(
              d, std::make_unique<engine::ModelConfig>(),
              std::make_unique<maskserve::testing::FakeTokenizer>());
        });
    registry_->Start();
    registry_->WaitUntilSettled();
    whitening_ = *WhiteningStore::Open(dir_ + "/data");
    WorkerPoolOptions po;
    po.num_threads = 1;
    po.name = "test";
    pool_ = *WorkerPool::Create(po);
    EmbeddingService::Deps deps;
    deps.registry = registry_.get();
    deps.options = &options_;
    deps.pool = pool_.get();
    deps.whitening = whitening_.get();
    models_ = std::make_unique<ModelsService>(registry_.get(), whitening_.get());
    embedding_ = std::make_unique<EmbeddingService>(deps);

    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder b;
    int port = 0;
    b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    b.RegisterService(models_.get());
    b.RegisterService(embedding_.get());
    b.RegisterCallbackGenericService(&echo_);
    std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> f;
    f.push_back(std::make_unique<RequestInterceptorFactory>(nullptr, access_.get()));
    b.experimental().SetInterceptorCreators(std::move(f));
    server_ = b.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    channel_ =
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials());
    models_stub_ = pb::Models::NewStub(channel_);
    embedding_stub_ = pb::Embedding::NewStub(channel_);
  }

  void TearDown() override {
    server_->Shutdown();
    server_->Wait();
    embedding_.reset();
    SetLogSinkForTesting(nullptr);
  }

  static void Auth(grpc::ClientContext* ctx, const std::string& token) {
    ctx->AddMetadata("authorization", "Bearer " + token);
  }

  grpc::Status ListModels(const std::string& token) {
    grpc::ClientContext ctx;
    if (!token.empty()) Auth(&ctx, token);
    pb::ListModelsResponse r;
    return models_stub_->ListModels(&ctx, pb::ListModelsRequest(), &r);
  }

  // Calls `method` with an empty request through the generic stub.
  grpc::Status Generic(const std::string& method, const std::vector<std::pair<std::string, std::string>>& md) {
    grpc::GenericStub stub(channel_);
    grpc::ClientContext ctx;
    for (const auto& [k, v] : md) ctx.AddMetadata(k, v);
    grpc::Slice empty(std::string(""));
    grpc::ByteBuffer req(&empty, 1), resp;
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    grpc::Status status;
    grpc::StubOptions so;
    stub.UnaryCall(&ctx, method, so, &req, &resp, [&](grpc::Status s) {
      std::lock_guard<std::mutex> lock(mu);
      status = s;
      done = true;
      cv.notify_all();
    });
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return done; });
    return status;
  }

  std::string log_;
  std::string dir_;
  FakeClock clock_;
  metrics::MetricsRegistry metrics_;
  std::unique_ptr<AccessController> access_;
  ServerOptions options_;
  std::unique_ptr<ModelRegistry> registry_;
  std::unique_ptr<WhiteningStore> whitening_;
  std::unique_ptr<WorkerPool> pool_;
  std::unique_ptr<ModelsService> models_;
  std::unique_ptr<EmbeddingService> embedding_;
  EchoMetadataService echo_;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<pb::Models::Stub> models_stub_;
  std::unique_ptr<pb::Embedding::Stub> embedding_stub_;
};

TEST_F(InterceptorAccessTest, RefusalsReachTheClientWithTheirCodes) {
  grpc::Status s = ListModels("");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(s.error_message(), HasSubstr("missing bearer token"));
  s = ListModels("not-a-valid-token-000");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(s.error_message(), "invalid bearer token");
  EXPECT_TRUE(ListModels(kOps).ok());

  // An embed token cannot delete a whitening profile (admin); an admin can
  // (NOT_FOUND: the handler ran and found no profile).
  pb::DeleteWhiteningRequest del;
  del.set_model("enc");
  del.set_profile("p");
  pb::DeleteWhiteningResponse resp;
  {
    grpc::ClientContext ctx;
    Auth(&ctx, kAlice);
    s = embedding_stub_->DeleteWhitening(&ctx, del, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
    EXPECT_EQ(s.error_message(),
              "token 'alice' lacks the scope 'admin' that maskserve.v1.Embedding/DeleteWhitening "
              "needs");
  }
  {
    grpc::ClientContext ctx;
    Auth(&ctx, kOps);
    s = embedding_stub_->DeleteWhitening(&ctx, del, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << s.error_message();
  }
  // A client-streaming call is refused too.
  {
    grpc::ClientContext ctx;
    pb::WhiteningProfile profile;
    auto writer = embedding_stub_->FitWhitening(&ctx, &profile);
    writer->WritesDone();
    s = writer->Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  // Health is open by default; other services without a handler of ours
  // are refused by the interceptor alone.
  EXPECT_TRUE(Generic("/grpc.health.v1.Health/Check", {}).ok());
  s = Generic("/x.Echo/Call", {});
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

TEST_F(InterceptorAccessTest, RateLimitCarriesRetryAfter) {
  EXPECT_TRUE(ListModels(kAlice).ok());
  grpc::ClientContext ctx;
  Auth(&ctx, kAlice);
  pb::ListModelsResponse r;
  grpc::Status s = models_stub_->ListModels(&ctx, pb::ListModelsRequest(), &r);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(s.error_message(), HasSubstr("rate limit of 1 calls/s"));
  auto it = ctx.GetServerTrailingMetadata().find("retry-after-ms");
  ASSERT_NE(it, ctx.GetServerTrailingMetadata().end());
  EXPECT_EQ(std::string(it->second.data(), it->second.size()), "1000");
  EXPECT_EQ(RetryDelayFromStatusDetails(s.error_details()), absl::Seconds(1));
  clock_.Advance(absl::Seconds(1));
  EXPECT_TRUE(ListModels(kAlice).ok());
}

TEST_F(InterceptorAccessTest, HandlersNeverSeeTheTokenOrAForgedVerdict) {
  grpc::Status s = Generic("/x.Echo/Call", {{"authorization", std::string("Bearer ") + kOps},
                                            {"x-maskserve-admission", "0:0:forged"}});
  EXPECT_EQ(s.error_code(), grpc::StatusCode::ABORTED);
  EXPECT_EQ(s.error_message(), "authorization=0 admission=0");
  // A client cannot let itself through either: a forged verdict is dropped
  // and the real one (no token) applies.
  s = Generic("/x.Echo/Call", {{"x-maskserve-admission", "0:0:ok"}});
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  // The access log names the principal and never the token.
  EXPECT_TRUE(ListModels(kOps).ok());
  EXPECT_TRUE(ListModels("wrong-but-long-token-000").error_code() ==
              grpc::StatusCode::UNAUTHENTICATED);
  server_->Shutdown();  // flushes the interceptors' log lines
  EXPECT_THAT(log_, HasSubstr("principal=ops"));
  EXPECT_THAT(log_, HasSubstr("code=UNAUTHENTICATED"));
  EXPECT_THAT(log_, Not(HasSubstr(kOps)));
  EXPECT_THAT(log_, Not(HasSubstr("wrong-but-long-token-000")));
}

}  // namespace
}  // namespace maskserve::server
