#include "server/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <functional>

#include "tests/util/test_env.h"

namespace maskserve::server {
namespace {

using ::testing::HasSubstr;

TEST(ModelSpecTest, NameEqualsPath) {
  absl::StatusOr<ModelSpec> s = ParseModelSpec("bert=/models/bert-base");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->name, "bert");
  EXPECT_EQ(s->path, "/models/bert-base");
}

TEST(ModelSpecTest, BarePathIsNamedAfterItsDirectory) {
  absl::StatusOr<ModelSpec> s = ParseModelSpec("/models/all-MiniLM-L6-v2/");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->name, "all-MiniLM-L6-v2");
}

TEST(ModelSpecTest, BadNamesAndEmptyPathsAreRejected) {
  EXPECT_THAT(std::string(ParseModelSpec("bad name=/x").status().message()),
              HasSubstr("model name must match"));
  EXPECT_THAT(std::string(ParseModelSpec("bert=").status().message()), HasSubstr("empty path"));
  EXPECT_FALSE(ParseModelSpec(std::string(65, 'a') + "=/x").ok());
}

TEST(ValidateServerOptionsTest, ErrorsNameTheFlag) {
  ServerOptions o;
  EXPECT_TRUE(ValidateServerOptions(o).ok());
  struct Case {
    std::function<void(ServerOptions*)> mutate;
    const char* flag;
  } cases[] = {
      {[](ServerOptions* o) { o->port = 70000; }, "--port"},
      {[](ServerOptions* o) { o->metrics_port = o->port; }, "--metrics_port"},
      {[](ServerOptions* o) { o->dtype = "fp8"; }, "--dtype"},
      {[](ServerOptions* o) { o->max_batch_size = 0; }, "--max_batch_size"},
      {[](ServerOptions* o) { o->max_queue_delay_us = -1; }, "--max_queue_delay_us"},
      {[](ServerOptions* o) { o->kv_cache_bytes = 10; }, "--kv_cache_bytes"},
      {[](ServerOptions* o) { o->shutdown_grace_s = -1; }, "--shutdown_grace_s"},
      {[](ServerOptions* o) { o->max_connection_age_s = -1; }, "--max_connection_age_s"},
      {[](ServerOptions* o) {
         o->models = {{"a", "/x"}, {"a", "/y"}};
       },
       "duplicate model name"},
  };
  for (const Case& c : cases) {
    ServerOptions bad;
    c.mutate(&bad);
    absl::Status s = ValidateServerOptions(bad);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.flag;
    EXPECT_THAT(std::string(s.message()), HasSubstr(c.flag));
  }
}

}  // namespace
}  // namespace maskserve::server
