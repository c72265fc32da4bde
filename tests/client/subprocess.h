// Runs a built binary of this project (path under $MASKSERVE_BUILD_DIR) and
// captures its exit code, stdout and stderr. For the CLI and bench tests.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/util/test_env.h"

namespace maskserve::client::testing {

struct ProcessResult {
  int exit_code = -1;  // -1 when it did not exit normally
  std::string out;
  std::string err;
};

// <build dir>/<relative> when that file exists. The build dir comes from
// $MASKSERVE_BUILD_DIR, or else is the parent of this test binary's
// directory (<build>/tests/client_tests), so the tests also find the
// binaries when run directly.
inline std::optional<std::string> BuiltBinary(const std::string& relative) {
  std::vector<std::string> roots;
  if (const char* build = std::getenv("MASKSERVE_BUILD_DIR")) roots.push_back(build);
  char self[4096];
  const ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n > 0) {
    std::string dir(self, static_cast<size_t>(n));
    dir.resize(dir.rfind('/'));  // <build>/tests
    if (const size_t slash = dir.rfind('/'); slash != std::string::npos) {
      roots.push_back(dir.substr(0, slash));
    }
  }
  for (const std::string& root : roots) {
    const std::string path = root + "/" + relative;
    if (std::ifstream(path)) return path;
  }
  return std::nullopt;
}

inline std::string ShellQuote(const std::string& s) {
  std::string q = "'";
  for (char c : s) {
    if (c == '\'') {
      q.append("'\\''");
    } else {
      q.push_back(c);
    }
  }
  q.push_back('\'');
  return q;
}

// Runs `binary args...`; stderr goes through a file in `scratch_dir`.
inline ProcessResult RunProcess(const std::string& binary,
                                const std::vector<std::string>& args,
                                const std::string& scratch_dir) {
  std::string cmd = ShellQuote(binary);
  for (const auto& a : args) cmd.append(" ").append(ShellQuote(a));
  const std::string err_path = scratch_dir + "/stderr.txt";
  cmd.append(" 2>").append(ShellQuote(err_path));
  ProcessResult r;
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) {
    ADD_FAILURE() << "popen failed: " << cmd;
    return r;
  }
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) r.out.append(buf, n);
  const int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.err = maskserve::testing::ReadFileOrDie(err_path);
  return r;
}

}  // namespace maskserve::client::testing
