// Smoke tests of the built maskserve-cli binary (found through
// $MASKSERVE_BUILD_DIR, set by ctest) against the in-process fake server:
// output, exit codes and error formatting.
#include <fstream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/client/fake_server.h"
#include "tests/client/subprocess.h"
#include "tests/util/test_env.h"

namespace maskserve::client {
namespace {

using ::maskserve::client::testing::BuiltBinary;
using ::maskserve::client::testing::FakeServer;
using ::maskserve::client::testing::ProcessResult;
using ::maskserve::client::testing::RunProcess;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto cli = BuiltBinary("client/maskserve-cli");
    if (!cli) {
      GTEST_SKIP() << "$MASKSERVE_BUILD_DIR/client/maskserve-cli not found (run "
                      "through ctest after building maskserve-cli): skipping";
    }
    cli_ = *cli;
    ASSERT_TRUE(server_.ok());
    dir_ = maskserve::testing::MakeTempDir("cli_test");
  }

  ProcessResult Run(const std::vector<std::string>& args) {
    return RunProcess(cli_, args, dir_);
  }

  std::string Target() const { return "--target=" + server_.target(); }

  FakeServer server_;
  std::string cli_;
  std::string dir_;
};

TEST_F(CliTest, ModelsPrintsTableAndErrors) {
  const ProcessResult r = Run({Target(), "models"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("NAME"));
  EXPECT_THAT(r.out, HasSubstr("fake-bert"));
  EXPECT_THAT(r.out, HasSubstr("ready"));
  EXPECT_THAT(r.out, HasSubstr("broken: error: config.json: no such file"));
}

TEST_F(CliTest, ModelsJson) {
  const ProcessResult r = Run({Target(), "--json", "models"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("\"name\": \"fake-bert\""));
  EXPECT_THAT(r.out, HasSubstr("\"hidden_size\": 4"));
}

TEST_F(CliTest, GlobalFlagsAfterCommandAndRequestId) {
  const ProcessResult r = Run({"models", Target(), "--request_id=abc-1"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  const auto md = server_.models.last_metadata();
  ASSERT_EQ(md.count("x-request-id"), 1u);
  EXPECT_EQ(md.find("x-request-id")->second, "abc-1");
}

TEST_F(CliTest, TokenFileSendsBearer) {
  const std::string token = dir_ + "/token";
  std::ofstream(token) << "tok123\n";
  const ProcessResult r = Run({Target(), "--token_file=" + token, "models"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  const auto md = server_.models.last_metadata();
  ASSERT_EQ(md.count("authorization"), 1u);
  EXPECT_EQ(md.find("authorization")->second, "Bearer tok123");
}

TEST_F(CliTest, BadTargetIsUnavailableExit2) {
  const ProcessResult r = Run({"--target=127.0.0.1:1", "--max_retries=0", "models"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("error: UNAVAILABLE"));
}

TEST_F(CliTest, NotFoundIsReported) {
  const ProcessResult r = Run({Target(), "model", "nope"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("error: NOT_FOUND: no model 'nope'"));
}

TEST_F(CliTest, UsageErrorsExit2) {
  EXPECT_EQ(Run({Target(), "embed", "--bogus", "x"}).exit_code, 2);
  EXPECT_EQ(Run({Target(), "embed", "x"}).exit_code, 2);  // --model missing
  EXPECT_EQ(Run({Target(), "frobnicate"}).exit_code, 2);
  const ProcessResult help = Run({"--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_THAT(help.out, HasSubstr("whiten"));
  EXPECT_THAT(help.out, HasSubstr("generate"));
}

TEST_F(CliTest, HealthExitCodes) {
  server_.SetServing("maskserve.v1.Generation", false);
  server_.SetServing("maskserve.v1.Embedding", true);
  const ProcessResult ok = Run({Target(), "health"});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_EQ(ok.out, "SERVING\n");
  EXPECT_EQ(Run({Target(), "health", "maskserve.v1.Embedding"}).exit_code, 0);
  const ProcessResult down = Run({Target(), "health", "maskserve.v1.Generation"});
  EXPECT_EQ(down.exit_code, 1);
  EXPECT_EQ(down.out, "NOT_SERVING\n");
  const ProcessResult unknown = Run({Target(), "health", "x.Y"});
  EXPECT_EQ(unknown.exit_code, 2);
  EXPECT_THAT(unknown.err, HasSubstr("error: NOT_FOUND"));
}

TEST_F(CliTest, EmbedPrintsVectors) {
  const ProcessResult r = Run({Target(), "embed", "--model", "fake-bert", "hello", "hi"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("[0] dims=4 tokens=3: 5.0000 0.0000 0.5000 -1.0000"));
  EXPECT_THAT(r.out, HasSubstr("[1] dims=4 tokens=3: 2.0000 1.0000"));
}

TEST_F(CliTest, EmbedFileJsonMergesBatches) {
  const std::string file = dir_ + "/texts.txt";
  std::ofstream(file) << "a\nbb\n\nccc\n";
  const ProcessResult r = Run({Target(), "--json", "embed", "--model=fake-bert",
                        "--file", file, "--batch=2"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  // Three vectors from two requests; the second request restarts at index 0,
  // so the merged output carries the per-request index in values[1].
  size_t count = 0;
  for (size_t pos = 0; (pos = r.out.find("\"values\"", pos)) != std::string::npos; ++pos) {
    ++count;
  }
  EXPECT_EQ(count, 3u) << r.out;
}

TEST_F(CliTest, WhitenFitStreamsFile) {
  const std::string file = dir_ + "/corpus.txt";
  {
    std::ofstream f(file);
    for (int i = 0; i < 7; ++i) f << "line " << i << "\n";
  }
  const ProcessResult r = Run({Target(), "whiten", "fit", "--model=fake-bert",
                        "--profile=p", "--file", file, "--batch=3", "--k=2"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("num_samples:"));
  EXPECT_THAT(r.out, HasSubstr("7"));
  EXPECT_THAT(server_.embedding.fit_batch_sizes(), ElementsAre(3, 3, 1));
  // stderr is not a terminal here: no progress bar.
  EXPECT_THAT(r.err, Not(HasSubstr("texts (")));
}

TEST_F(CliTest, GenerateStreamPrintsTextAndUsage) {
  const ProcessResult r = Run({Target(), "generate", "--model=gpt", "--stream",
                               "--max_new_tokens=3", "Hello", "world"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "w0 w1 w2 \n");
  EXPECT_THAT(r.err, HasSubstr("finish=length"));
  EXPECT_THAT(r.err, HasSubstr("completion_tokens=3"));
}

TEST_F(CliTest, GenerateJsonAndBadMask) {
  const ProcessResult r = Run({Target(), "--json", "generate", "--model=gpt",
                               "--max_new_tokens=2", "--mask=local:4+causal", "Hi"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("\"text\": \"w0 w1 \""));
  EXPECT_THAT(r.out, HasSubstr("\"finish_reason\": \"FINISH_REASON_LENGTH\""));
  const ProcessResult bad = Run({Target(), "generate", "--model=gpt", "--mask=local", "Hi"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_THAT(bad.err, HasSubstr("error: INVALID_ARGUMENT: bad mask"));
}

}  // namespace
}  // namespace maskserve::client
