#include "tests/util/test_env.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <vector>

namespace maskserve::testing {
namespace {

std::mutex g_mu;
std::vector<std::string>* g_dirs = nullptr;

void RemoveTempDirs() {
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_dirs == nullptr) return;
  for (const auto& d : *g_dirs) {
    std::error_code ec;
    std::filesystem::remove_all(d, ec);
  }
}

}  // namespace

std::optional<std::string> SharedDir() {
  const char* env = std::getenv("MASKSERVE_SHARED");
  std::string dir = env != nullptr ? env : MASKSERVE_DEFAULT_SHARED_DIR;
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) return std::nullopt;
  return std::filesystem::absolute(dir, ec).string();
}

std::optional<std::string> SharedPath(const std::string& relative) {
  auto dir = SharedDir();
  if (!dir) return std::nullopt;
  std::string p = *dir + "/" + relative;
  std::error_code ec;
  if (!std::filesystem::exists(p, ec)) return std::nullopt;
  return p;
}

std::string SourceDir() {
  const char* env = std::getenv("MASKSERVE_SOURCE_DIR");
  return env != nullptr ? env : MASKSERVE_DEFAULT_SOURCE_DIR;
}

std::string BuildDir() {
  const char* env = std::getenv("MASKSERVE_BUILD_DIR");
  return env != nullptr ? env : MASKSERVE_DEFAULT_BUILD_DIR;
}

std::string MakeTempDir(const std::string& prefix) {
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern = std::string(tmp != nullptr ? tmp : "/tmp") + "/" + prefix + "-XXXXXX";
  std::vector<char> buf(pattern.begin(), pattern.end());
  buf.push_back('\0');
  char* made = mkdtemp(buf.data());
  if (made == nullptr) {
    ADD_FAILURE() << "mkdtemp failed for " << pattern;
    return {};
  }
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_dirs == nullptr) {
    g_dirs = new std::vector<std::string>();
    std::atexit(RemoveTempDirs);
  }
  g_dirs->push_back(made);
  return made;
}

std::string ReadFileOrDie(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    ADD_FAILURE() << "cannot read " << path;
    return {};
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace maskserve::testing
