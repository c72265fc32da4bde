// Smoke tests of the built maskserve-bench binary against the in-process fake
// server: both loop modes stop by themselves and report sane JSON.
#include <nlohmann/json.hpp>

#include <gtest/gtest.h>

#include "tests/client/fake_server.h"
#include "tests/client/subprocess.h"

namespace maskserve::client {
namespace {

using ::maskserve::client::testing::BuiltBinary;
using ::maskserve::client::testing::FakeServer;
using ::maskserve::client::testing::ProcessResult;
using ::maskserve::client::testing::RunProcess;

class BenchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto bench = BuiltBinary("client/maskserve-bench");
    if (!bench) {
      GTEST_SKIP() << "$MASKSERVE_BUILD_DIR/client/maskserve-bench not found (run "
                      "through ctest after building maskserve-bench): skipping";
    }
    bench_ = *bench;
    ASSERT_TRUE(server_.ok());
    dir_ = maskserve::testing::MakeTempDir("bench_test");
  }

  // Runs the bench with --json and parses its single output line.
  nlohmann::json RunJson(std::vector<std::string> args, int expect_exit = 0) {
    args.push_back("--target=" + server_.target());
    args.push_back("--json");
    const ProcessResult r = RunProcess(bench_, args, dir_);
    EXPECT_EQ(r.exit_code, expect_exit) << r.err;
    try {
      return nlohmann::json::parse(r.out);
    } catch (const nlohmann::json::exception& e) {
      ADD_FAILURE() << "not JSON: " << r.out << "\n" << e.what();
      return nlohmann::json::object();
    }
  }

  FakeServer server_;
  std::string bench_;
  std::string dir_;
};

TEST_F(BenchTest, ClosedLoopEmbedStopsAtRequestCap) {
  const auto j = RunJson({"--mode=closed", "--concurrency=2", "--workload=embed",
                          "--model=fake-bert", "--batch=3", "--warmup_s=0",
                          "--duration_s=20", "--requests=40"});
  EXPECT_EQ(j.value("ok", -1), 40);
  EXPECT_EQ(j.value("requests", -1), 40);
  EXPECT_TRUE(j["errors"].empty()) << j.dump();
  // 40 requests at well under 20 s; inputs/s is 3x requests/s.
  EXPECT_LT(j.value("elapsed_s", 1e9), 15.0);
  EXPECT_NEAR(j.value("inputs_per_s", 0.0), 3 * j.value("requests_per_s", 0.0), 1e-6);
  EXPECT_GT(j["latency_ms"].value("p50", 0.0), 0.0);
  EXPECT_LE(j["latency_ms"].value("p50", 0.0), j["latency_ms"].value("p99", 0.0));
}

TEST_F(BenchTest, OpenLoopStreamStopsAtDuration) {
  const auto j = RunJson({"--mode=open", "--rate=50", "--concurrency=4",
                          "--workload=stream", "--model=gpt", "--max_new_tokens=4",
                          "--warmup_s=0.2", "--duration_s=1"});
  // ~50 arrivals in 1 s (Poisson: allow a wide band).
  EXPECT_GT(j.value("ok", 0), 20);
  EXPECT_LT(j.value("ok", 1000), 110);
  EXPECT_LT(j.value("elapsed_s", 1e9), 5.0);
  EXPECT_NEAR(j.value("tokens_per_s", 0.0), 4 * j.value("requests_per_s", 0.0), 1e-6);
  EXPECT_TRUE(j.contains("ttft_ms"));
}

TEST_F(BenchTest, ErrorsAreCountedByCodeWithTheFirstMessage) {
  // The fake serves no model "missing": every Embed is NOT_FOUND.
  const auto j = RunJson({"--mode=closed", "--concurrency=1", "--model=missing",
                          "--warmup_s=0", "--duration_s=5", "--requests=5"},
                         /*expect_exit=*/1);
  EXPECT_EQ(j.value("ok", -1), 0);
  EXPECT_EQ(j["errors"].value("NOT_FOUND", 0), 5);
  // And the first message of each code says why.
  EXPECT_EQ(j["first_error"].value("NOT_FOUND", ""), "no model");
}

}  // namespace
}  // namespace maskserve::client
