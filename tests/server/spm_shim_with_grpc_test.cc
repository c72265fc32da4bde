// The sentencepiece shim in a process that has gRPC and libprotobuf loaded
// and initialised, like the server. Linking libsentencepiece directly into
// such a binary crashes at start-up (its bundled protobuf-lite collides with
// libprotobuf); loaded with dlopen(RTLD_LOCAL | RTLD_DEEPBIND) it must load
// models and tokenize correctly. Tolerance: ids identical to the golden README
// check.
#include <google/protobuf/descriptor.h>
#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "engine/tokenizer/spm_library.h"
#include "engine/tokenizer/tokenizer_factory.h"
#include "tests/util/test_env.h"

namespace maskserve::server {
namespace {

TEST(SpmShimWithGrpcTest, LoadsAndTokenizesNextToLibprotobuf) {
  MASKSERVE_REQUIRE_SHARED(model_dir, "golden/models/t5-mini");
  // Make sure libprotobuf's and gRPC's globals are really there.
  ASSERT_NE(google::protobuf::DescriptorPool::generated_pool(), nullptr);
  ASSERT_FALSE(grpc::Version().empty());
  auto lib = engine::SpmLibrary::Get();
  ASSERT_TRUE(lib.ok()) << lib.status();
  auto tok = engine::LoadTokenizer(model_dir);
  ASSERT_TRUE(tok.ok()) << tok.status();
  auto e = (*tok)->Encode("translate English to German: The house is wonderful.", true, {});
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->ids, (std::vector<int32_t>{13959, 1566, 12, 2968, 10, 37, 629, 19, 1627, 5, 1}));
  auto d = (*tok)->Decode(e->ids, true);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(*d, "translate English to German: The house is wonderful.");
  // gRPC still works after the shim is in: build and start a server (a
  // callback generic service gives it something to serve).
  grpc::CallbackGenericService generic;
  grpc::ServerBuilder builder;
  builder.RegisterCallbackGenericService(&generic);
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  auto server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  EXPECT_GT(port, 0);
  server->Shutdown();
}

}  // namespace
}  // namespace maskserve::server
