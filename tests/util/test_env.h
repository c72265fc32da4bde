// Helpers every test binary shares: where ../shared lives, temp dirs.
#pragma once

#include <optional>
#include <string>

namespace maskserve::testing {

// Path of ../shared (from $MASKSERVE_SHARED), or nullopt when it does not
// exist. Tests that need real data call GTEST_SKIP() with a message then.
std::optional<std::string> SharedDir();

// SharedDir() + "/" + relative when that path exists, else nullopt.
std::optional<std::string> SharedPath(const std::string& relative);

// The source tree and the build tree ($MASKSERVE_SOURCE_DIR /
// $MASKSERVE_BUILD_DIR, else the directories this binary was configured with).
std::string SourceDir();
std::string BuildDir();

// A fresh, empty directory under $TMPDIR that is removed when the process
// exits normally.
std::string MakeTempDir(const std::string& prefix);

// Whole file as a string; aborts the test with a message on failure.
std::string ReadFileOrDie(const std::string& path);

}  // namespace maskserve::testing

// Skips the current test with a visible message when ../shared/<rel> is
// missing; otherwise declares `std::string var` holding the absolute path.
#define MASKSERVE_REQUIRE_SHARED(var, rel)                                  \
  auto var##_opt = ::maskserve::testing::SharedPath(rel);                   \
  if (!var##_opt) {                                                         \
    GTEST_SKIP() << "../shared/" << (rel) << " not found: skipping (set "   \
                 << "MASKSERVE_SHARED to the shared data directory)";       \
  }                                                                         \
  const std::string var = *var##_opt
