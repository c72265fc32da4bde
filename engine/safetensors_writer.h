// Building safetensors files: used by the demo model and by tests that need a
// tiny checkpoint. Output is deterministic (same tensors -> same bytes) and is
// laid out like HuggingFace's writer: tensors sorted by element size then
// name, no gaps, header padded with spaces so the data section starts 8-byte
// aligned, which keeps every tensor naturally aligned.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "engine/safetensors.h"

namespace maskserve::engine {

class SafetensorsWriter {
 public:
  // Adds a tensor from float32 data (num_elements(shape) values), stored as
  // `dtype` (F32, F16 or BF16; rounding to nearest even). Fails on a
  // duplicate name, another dtype or a negative dimension.
  absl::Status Add(const std::string& name, SafetensorsDtype dtype, std::vector<int64_t> shape,
                   const float* data);
  // Adds pre-encoded little-endian bytes in any dtype; the size must match.
  absl::Status AddRaw(const std::string& name, SafetensorsDtype dtype, std::vector<int64_t> shape,
                      absl::string_view bytes);
  // A "__metadata__" entry; HF writes {"format": "pt"}.
  void SetMetadata(const std::string& key, const std::string& value);

  // The complete file contents.
  std::string Serialize() const;
  // Writes atomically: a temp file in the same directory, fsync, rename, and
  // an fsync of the directory, so readers never see a partial file.
  absl::Status Write(const std::string& path) const;

 private:
  struct Pending {
    SafetensorsDtype dtype;
    std::vector<int64_t> shape;
    std::string bytes;
  };
  std::map<std::string, Pending> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Writes `contents` to `path` atomically (temp file in the same directory,
// fsync, rename, directory fsync). Shared by everything that writes models.
absl::Status WriteFileAtomically(const std::string& path, absl::string_view contents);

}  // namespace maskserve::engine
