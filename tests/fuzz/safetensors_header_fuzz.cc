// Fuzzes ParseSafetensorsHeader: the JSON header of an untrusted checkpoint.
// Input layout: 8 bytes little-endian data-section size, then the header
// text. Beyond "no crash", every accepted header must satisfy the invariants
// the loader relies on when it indexes the mapped data.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "engine/safetensors.h"

using maskserve::engine::ParseSafetensorsHeader;
using maskserve::engine::SafetensorsDtypeSize;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 8) return 0;
  uint64_t data_size = 0;
  for (int i = 7; i >= 0; --i) data_size = (data_size << 8) | data[i];
  // Keep sizes meaningful: real files are far below 2^40 bytes.
  data_size &= (uint64_t{1} << 40) - 1;
  absl::string_view header(reinterpret_cast<const char*>(data + 8), size - 8);
  auto parsed = ParseSafetensorsHeader(header, data_size);
  if (!parsed.ok()) return 0;

  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const auto& t : parsed->tensors) {
    if (t.begin > t.end || t.end > data_size) abort();
    if (static_cast<uint64_t>(t.num_elements()) * SafetensorsDtypeSize(t.dtype) != t.num_bytes()) {
      abort();
    }
    if (parsed->Find(t.name) != &t) abort();
    if (t.end > t.begin) ranges.emplace_back(t.begin, t.end);
  }
  for (size_t i = 0; i < ranges.size(); ++i) {
    for (size_t j = i + 1; j < ranges.size() && j < i + 64; ++j) {
      if (ranges[i].first < ranges[j].second && ranges[j].first < ranges[i].second) abort();
    }
  }
  return 0;
}
