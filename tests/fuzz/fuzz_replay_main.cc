// Replays fuzz inputs without libFuzzer: every build (GCC, release and
// ASan+UBSan) runs each fuzz target over its seed corpus and over the
// inputs that once crashed it (tests/fuzz/regressions/<name>/), so a fixed
// crash stays fixed even where clang's libFuzzer is not built.
//
//   fuzz_replay <name> <file or directory>...
//
// The fuzz targets are compiled into this binary with their entry point
// renamed to MaskserveFuzz_<name>; fuzz_replay_list.h, generated and
// force-included by tests/fuzz/CMakeLists.txt, lists them.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#define MASKSERVE_DECLARE_FUZZER(name) \
  extern "C" int MaskserveFuzz_##name(const uint8_t* data, size_t size);
MASKSERVE_FUZZERS(MASKSERVE_DECLARE_FUZZER)

namespace {

using FuzzFn = int (*)(const uint8_t*, size_t);

FuzzFn Find(const std::string& name) {
#define MASKSERVE_MATCH_FUZZER(n) \
  if (name == #n) return &MaskserveFuzz_##n;
  MASKSERVE_FUZZERS(MASKSERVE_MATCH_FUZZER)
  return nullptr;
}

int RunFile(FuzzFn fn, const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "cannot read %s\n", path.c_str());
    return 1;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string bytes = ss.str();
  // A copy of exactly the input's size, so ASan sees reads past its end.
  std::vector<uint8_t> data(bytes.begin(), bytes.end());
  fn(data.empty() ? nullptr : data.data(), data.size());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s <fuzzer> <file or dir>...\n", argv[0]);
    return 2;
  }
  const FuzzFn fn = Find(argv[1]);
  if (fn == nullptr) {
    std::fprintf(stderr, "unknown fuzzer '%s'\n", argv[1]);
    return 2;
  }
  int files = 0;
  for (int i = 2; i < argc; ++i) {
    const std::filesystem::path p(argv[i]);
    std::vector<std::filesystem::path> paths;
    if (std::filesystem::is_directory(p)) {
      for (const auto& e : std::filesystem::directory_iterator(p)) {
        if (e.is_regular_file()) paths.push_back(e.path());
      }
    } else {
      paths.push_back(p);
    }
    for (const auto& path : paths) {
      if (RunFile(fn, path) != 0) return 1;
      ++files;
    }
  }
  std::printf("%s: %d inputs replayed, no crash\n", argv[1], files);
  return 0;
}
