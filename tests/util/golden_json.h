// Reading the HuggingFace reference files of ../shared/golden (JSON) in
// engine tests, and tracking the worst deviation a golden check saw.
// Header-only: only the engine tests use it, and they link nlohmann_json.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/util/test_env.h"

namespace maskserve::testing {

// The parsed JSON file at `path`; the test dies when it cannot be read.
inline nlohmann::json LoadJson(const std::string& path) {
  return nlohmann::json::parse(ReadFileOrDie(path));
}

// A JSON array of integers.
inline std::vector<int32_t> Ints(const nlohmann::json& j) { return j.get<std::vector<int32_t>>(); }

// A JSON number or (nested) array of numbers, flattened in row-major order.
inline void FlattenInto(const nlohmann::json& j, std::vector<float>* out) {
  if (j.is_array()) {
    for (const nlohmann::json& e : j) FlattenInto(e, out);
  } else {
    out->push_back(j.get<float>());
  }
}
inline std::vector<float> Floats(const nlohmann::json& j) {
  std::vector<float> v;
  FlattenInto(j, &v);
  return v;
}

// The largest absolute deviation one golden check saw, printed at its end so
// that the log states how close the match was, not only that it passed.
struct WorstDelta {
  double value = 0;
  void Add(double d) { value = std::max(value, d); }
  void Print(const std::string& what) const {
    std::printf("[golden] %-58s worst max|d| = %.3g\n", what.c_str(), value);
  }
};

}  // namespace maskserve::testing
