// maskserve-cli's progress bar: `whiten fit` over a file draws one on a
// terminal (run here under a pseudo-terminal) and stays silent when stderr
// is not a terminal (logs, pipes).
#include <pty.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
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
using ::testing::HasSubstr;
using ::testing::Not;

// Runs `binary args` with stdin/stdout/stderr on a new pseudo-terminal;
// returns everything it wrote and its exit code.
ProcessResult RunOnTerminal(const std::string& binary, const std::vector<std::string>& args) {
  ProcessResult result;
  // Built before forking: the child of a multi-threaded process may only
  // call async-signal-safe functions (no malloc) before exec.
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(binary.c_str()));
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  int master = -1;
  const pid_t pid = forkpty(&master, nullptr, nullptr, nullptr);
  if (pid < 0) return result;
  if (pid == 0) {
    execv(argv[0], argv.data());
    _exit(127);
  }
  char buf[4096];
  for (;;) {
    const ssize_t n = read(master, buf, sizeof(buf));
    if (n > 0) {
      result.out.append(buf, static_cast<size_t>(n));
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      break;  // EIO once the child has exited and closed the terminal
    }
  }
  close(master);
  int status = 0;
  waitpid(pid, &status, 0);
  if (WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  return result;
}

class CliTtyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto cli = BuiltBinary("client/maskserve-cli");
    if (!cli) GTEST_SKIP() << "maskserve-cli not built";
    cli_ = *cli;
    ASSERT_TRUE(server_.ok());
    dir_ = maskserve::testing::MakeTempDir("cli_tty_test");
    file_ = dir_ + "/sentences.txt";
    std::ofstream out(file_);
    for (int i = 0; i < 300; ++i) out << "sentence number " << i << "\n";
  }
  void TearDown() override {
    std::error_code ec;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
  }
  std::vector<std::string> FitArgs() const {
    return {"--target=" + server_.target(), "whiten", "fit", "--model", "fake-bert",
            "--profile", "p", "--file", file_, "--batch", "50"};
  }

  FakeServer server_;
  std::string cli_, dir_, file_;
};

TEST_F(CliTtyTest, ProgressBarOnATerminal) {
  const ProcessResult r = RunOnTerminal(cli_, FitArgs());
  ASSERT_EQ(r.exit_code, 0) << r.out;
  // Redrawn in place with \r after every batch, ending at 100 %.
  EXPECT_THAT(r.out, HasSubstr("\r["));
  EXPECT_THAT(r.out, HasSubstr("50/300 texts"));
  EXPECT_THAT(r.out, HasSubstr("] 300/300 texts (100%)"));
  EXPECT_THAT(r.out, HasSubstr("num_samples:"));
  EXPECT_EQ(server_.embedding.fit_texts().size(), 300u);
}

TEST_F(CliTtyTest, NoProgressBarWhenNotATerminal) {
  const ProcessResult r = RunProcess(cli_, FitArgs(), dir_);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.err, Not(HasSubstr("texts (")));
  EXPECT_THAT(r.out, HasSubstr("num_samples:"));
}

}  // namespace
}  // namespace maskserve::client
