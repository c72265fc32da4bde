// Reading HuggingFace safetensors checkpoints.
//
// A safetensors file is an 8-byte little-endian header length N, N bytes of
// JSON describing every tensor (dtype, shape, byte range in the data section),
// then the raw little-endian tensor data. Files are memory-mapped read-only so
// that opening a checkpoint costs no copy; weights are converted to float32
// only when a model asks for them.
//
// Three layers:
//   - ParseSafetensorsHeader: pure validation of the JSON header (fuzzed).
//   - SafetensorsFile: one mapped file.
//   - SafetensorsModel: a checkpoint directory, single file or sharded
//     (model.safetensors.index.json), with errors naming file and tensor.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace maskserve::engine {

// Element types of the safetensors format. Only kF32, kF16 and kBF16 can be
// loaded as float; the others are recognised so that files holding them
// (e.g. int64 position_ids buffers) can still be opened and listed.
enum class SafetensorsDtype {
  kF64,
  kF32,
  kF16,
  kBF16,
  kF8E4M3,
  kF8E5M2,
  kI64,
  kI32,
  kI16,
  kI8,
  kU64,
  kU32,
  kU16,
  kU8,
  kBool,
};

// The format's spelling: "F32", "BF16", "BOOL", ...
absl::string_view SafetensorsDtypeName(SafetensorsDtype dtype);
// Inverse of SafetensorsDtypeName (exact, case-sensitive as in the format).
absl::StatusOr<SafetensorsDtype> ParseSafetensorsDtype(absl::string_view name);
// Bytes per element.
size_t SafetensorsDtypeSize(SafetensorsDtype dtype);
// True for the dtypes ReadFloat32 converts (F32, F16, BF16).
bool IsFloatLoadable(SafetensorsDtype dtype);

// "[30522, 256]"; used in every shape error message.
std::string FormatShape(absl::Span<const int64_t> shape);

struct TensorInfo {
  std::string name;
  SafetensorsDtype dtype = SafetensorsDtype::kF32;
  std::vector<int64_t> shape;  // empty for a scalar
  uint64_t begin = 0;          // byte offset into the data section
  uint64_t end = 0;            // one past the last byte

  int64_t num_elements() const;
  uint64_t num_bytes() const { return end - begin; }
};

struct SafetensorsHeader {
  // In file order of the JSON object (nlohmann sorts keys, so: by name).
  std::vector<TensorInfo> tensors;
  // The optional "__metadata__" string map (e.g. {"format": "pt"}).
  std::map<std::string, std::string> metadata;

  // nullptr when absent.
  const TensorInfo* Find(absl::string_view name) const;

 private:
  friend absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(absl::string_view, uint64_t);
  absl::flat_hash_map<std::string, size_t> index_;
};

// Parses and validates a header: known dtypes, non-negative shapes whose
// element count times the dtype size equals end - begin, begin <= end <=
// data_size, no two non-empty tensors overlapping, no duplicate names.
// Gaps between tensors are tolerated. Errors name the offending tensor.
absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(absl::string_view header_json,
                                                         uint64_t data_size);

// Converters shared with the writer and tests. Exact: every F16/BF16 value,
// subnormals, infinities and NaNs included, maps to the float of equal value.
// `src` holds n little-endian 16-bit values and need not be aligned.
void ConvertF16ToF32(const void* src, float* dst, size_t n);
void ConvertBF16ToF32(const void* src, float* dst, size_t n);
// Round-to-nearest-even; overflow goes to infinity, NaN stays NaN.
uint16_t Float32ToF16(float f);
uint16_t Float32ToBF16(float f);
float F16ToFloat32(uint16_t h);
float BF16ToFloat32(uint16_t h);

// One memory-mapped safetensors file (read-only, MAP_PRIVATE).
class SafetensorsFile {
 public:
  // Headers larger than this are rejected as corrupt.
  static constexpr uint64_t kMaxHeaderBytes = 100ull * 1000 * 1000;

  // Errors (missing, truncated, corrupt header) name the file.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return header_.tensors; }
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  // nullptr when absent.
  const TensorInfo* Find(absl::string_view name) const { return header_.Find(name); }

  // The tensor's stored bytes. Not necessarily aligned to the element size
  // (the format does not promise alignment): copy or use unaligned loads.
  absl::string_view RawBytes(const TensorInfo& info) const;

  // Converts the tensor to float32 into dst, which must hold exactly
  // n == num_elements() floats. Errors name file and tensor.
  absl::Status ReadFloat32(absl::string_view name, float* dst, size_t n) const;
  absl::StatusOr<std::vector<float>> ReadFloat32(absl::string_view name) const;
  // Same, for an info obtained from this file's tensors()/Find().
  absl::Status ReadFloat32(const TensorInfo& info, float* dst, size_t n) const;

 private:
  SafetensorsFile() = default;

  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  const uint8_t* data_ = nullptr;  // start of the data section
  SafetensorsHeader header_;
};

// A checkpoint directory: "model.safetensors", or the shards listed by
// "model.safetensors.index.json" (weight_map: tensor name -> shard file).
// Open() also accepts the path of a single .safetensors file.
class SafetensorsModel {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsModel>> Open(const std::string& dir);

  const std::string& dir() const { return dir_; }
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }
  // Every tensor name, sorted.
  std::vector<std::string> TensorNames() const;

  bool Has(absl::string_view name) const;
  // nullptr when absent.
  const TensorInfo* Find(absl::string_view name) const;
  // The file holding `name`; nullptr when absent.
  const SafetensorsFile* FileOf(absl::string_view name) const;
  // Errors when absent ("tensor 'x' not found in <dir> (...)").
  absl::StatusOr<std::vector<int64_t>> Shape(absl::string_view name) const;

  // "tensor X in file Y has shape [..], expected [..]" on mismatch, a not
  // found error naming the directory when absent.
  absl::Status RequireShape(absl::string_view name, absl::Span<const int64_t> expected) const;

  // Convert to float32; errors name file and tensor.
  absl::Status ReadFloat32(absl::string_view name, float* dst, size_t n) const;
  absl::StatusOr<std::vector<float>> ReadFloat32(absl::string_view name) const;

 private:
  struct Entry {
    const SafetensorsFile* file;
    const TensorInfo* info;
  };
  SafetensorsModel() = default;
  absl::Status NotFound(absl::string_view name) const;

  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  absl::flat_hash_map<std::string, Entry> entries_;
};

// Reads tensor `name` as float32 after checking that its shape is `shape`;
// errors name the file and the tensor.
absl::StatusOr<std::vector<float>> ReadTensor(const SafetensorsModel& w, const std::string& name,
                                              std::vector<int64_t> shape);
// ReadTensor into `*out`.
absl::Status ReadInto(const SafetensorsModel& w, const std::string& name,
                      std::vector<int64_t> shape, std::vector<float>* out);

}  // namespace maskserve::engine
