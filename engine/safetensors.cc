#include "engine/safetensors.h"

#include <fcntl.h>
#include <immintrin.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"

namespace maskserve::engine {
namespace {

using json = nlohmann::json;

struct DtypeEntry {
  SafetensorsDtype dtype;
  const char* name;
  size_t size;
};

constexpr DtypeEntry kDtypes[] = {
    {SafetensorsDtype::kF64, "F64", 8},      {SafetensorsDtype::kF32, "F32", 4},
    {SafetensorsDtype::kF16, "F16", 2},      {SafetensorsDtype::kBF16, "BF16", 2},
    {SafetensorsDtype::kF8E4M3, "F8_E4M3", 1}, {SafetensorsDtype::kF8E5M2, "F8_E5M2", 1},
    {SafetensorsDtype::kI64, "I64", 8},      {SafetensorsDtype::kI32, "I32", 4},
    {SafetensorsDtype::kI16, "I16", 2},      {SafetensorsDtype::kI8, "I8", 1},
    {SafetensorsDtype::kU64, "U64", 8},      {SafetensorsDtype::kU32, "U32", 4},
    {SafetensorsDtype::kU16, "U16", 2},      {SafetensorsDtype::kU8, "U8", 1},
    {SafetensorsDtype::kBool, "BOOL", 1},
};

const DtypeEntry& EntryOf(SafetensorsDtype dtype) {
  for (const auto& e : kDtypes) {
    if (e.dtype == dtype) return e;
  }
  return kDtypes[1];
}

// Thrown from the parser callback to stop on pathological nesting before the
// parser builds (and later recursively destroys) a deep tree.
struct SafetensorsHeaderTooDeep {};
constexpr int kMaxHeaderJsonDepth = 16;

uint32_t BitsOf(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float FloatOf(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Multiplication of non-negative values with overflow detection.
bool MulOverflows(uint64_t a, uint64_t b, uint64_t* out) {
  return __builtin_mul_overflow(a, b, out);
}

std::string Quoted(absl::string_view s) { return absl::StrCat("'", s, "'"); }

}  // namespace

absl::string_view SafetensorsDtypeName(SafetensorsDtype dtype) { return EntryOf(dtype).name; }

absl::StatusOr<SafetensorsDtype> ParseSafetensorsDtype(absl::string_view name) {
  for (const auto& e : kDtypes) {
    if (name == e.name) return e.dtype;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown safetensors dtype ", Quoted(name)));
}

size_t SafetensorsDtypeSize(SafetensorsDtype dtype) { return EntryOf(dtype).size; }

bool IsFloatLoadable(SafetensorsDtype dtype) {
  return dtype == SafetensorsDtype::kF32 || dtype == SafetensorsDtype::kF16 ||
         dtype == SafetensorsDtype::kBF16;
}

std::string FormatShape(absl::Span<const int64_t> shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

int64_t TensorInfo::num_elements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

const TensorInfo* SafetensorsHeader::Find(absl::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors[it->second];
}

absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(absl::string_view header_json,
                                                         uint64_t data_size) {
  json root;
  // nlohmann keeps the last of duplicate keys silently; a duplicated tensor
  // name is a corrupt file, so the top-level keys are checked while parsing.
  std::set<std::string> seen;
  std::string duplicate;
  try {
    json::parser_callback_t cb = [&](int depth, json::parse_event_t event, json& parsed) {
      if (depth > kMaxHeaderJsonDepth) throw SafetensorsHeaderTooDeep{};
      if (event == json::parse_event_t::key && depth == 1 && parsed.is_string()) {
        const std::string& k = parsed.get_ref<const std::string&>();
        if (!seen.insert(k).second && duplicate.empty()) duplicate = k;
      }
      return true;
    };
    root = json::parse(header_json.begin(), header_json.end(), cb);
  } catch (const SafetensorsHeaderTooDeep&) {
    return absl::InvalidArgumentError("safetensors header: JSON nested too deeply");
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("safetensors header is not valid JSON: ", e.what()));
  }
  if (!duplicate.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("safetensors header: duplicate tensor name ", Quoted(duplicate)));
  }
  if (!root.is_object()) {
    return absl::InvalidArgumentError("safetensors header: top level is not a JSON object");
  }

  SafetensorsHeader header;
  for (auto it = root.begin(); it != root.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) {
        return absl::InvalidArgumentError("safetensors header: __metadata__ is not an object");
      }
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) {
          return absl::InvalidArgumentError(absl::StrCat(
              "safetensors header: __metadata__ value for ", Quoted(m.key()), " is not a string"));
        }
        header.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    auto bad = [&](const std::string& why) {
      return absl::InvalidArgumentError(
          absl::StrCat("safetensors header: tensor ", Quoted(name), ": ", why));
    };
    if (!v.is_object()) return bad("entry is not an object");
    auto dt = v.find("dtype");
    auto sh = v.find("shape");
    auto off = v.find("data_offsets");
    if (dt == v.end() || !dt->is_string()) return bad("missing or non-string \"dtype\"");
    if (sh == v.end() || !sh->is_array()) return bad("missing or non-array \"shape\"");
    if (off == v.end() || !off->is_array() || off->size() != 2) {
      return bad("\"data_offsets\" must be an array [begin, end]");
    }
    TensorInfo info;
    info.name = name;
    auto dtype = ParseSafetensorsDtype(dt->get<std::string>());
    if (!dtype.ok()) return bad(std::string(dtype.status().message()));
    info.dtype = *dtype;

    uint64_t elements = 1;
    for (const json& d : *sh) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0) {
        return bad(absl::StrCat("shape ", d.dump(), " is not a list of non-negative integers"));
      }
      // Unsigned JSON values above INT64_MAX read back negative above.
      uint64_t dim = static_cast<uint64_t>(d.get<int64_t>());
      if (MulOverflows(elements, dim, &elements) ||
          elements > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return bad("shape element count overflows");
      }
      info.shape.push_back(static_cast<int64_t>(dim));
    }
    for (const json& o : *off) {
      if (!o.is_number_integer() || o.get<int64_t>() < 0) {
        return bad("\"data_offsets\" must be non-negative integers");
      }
    }
    info.begin = static_cast<uint64_t>((*off)[0].get<int64_t>());
    info.end = static_cast<uint64_t>((*off)[1].get<int64_t>());
    if (info.begin > info.end) {
      return bad(absl::StrCat("data_offsets [", info.begin, ", ", info.end, "] has begin > end"));
    }
    if (info.end > data_size) {
      return bad(absl::StrCat("data_offsets [", info.begin, ", ", info.end,
                              "] run past the data section (", data_size, " bytes)"));
    }
    uint64_t bytes;
    if (MulOverflows(elements, SafetensorsDtypeSize(info.dtype), &bytes) ||
        bytes != info.end - info.begin) {
      return bad(absl::StrCat("shape ", FormatShape(info.shape), " of ",
                              SafetensorsDtypeName(info.dtype), " needs ", elements, " x ",
                              SafetensorsDtypeSize(info.dtype), " bytes but data_offsets [",
                              info.begin, ", ", info.end, "] hold ", info.end - info.begin));
    }
    header.tensors.push_back(std::move(info));
  }

  // Overlap check on byte ranges, sorted by start; empty tensors occupy none.
  std::vector<const TensorInfo*> by_offset;
  for (const auto& t : header.tensors) {
    if (t.end > t.begin) by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(), [](const TensorInfo* a, const TensorInfo* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->name < b->name;
  });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    if (by_offset[i]->begin < by_offset[i - 1]->end) {
      return absl::InvalidArgumentError(absl::StrCat(
          "safetensors header: tensor ", Quoted(by_offset[i]->name), " (bytes ", by_offset[i]->begin,
          "..", by_offset[i]->end, ") overlaps tensor ", Quoted(by_offset[i - 1]->name), " (bytes ",
          by_offset[i - 1]->begin, "..", by_offset[i - 1]->end, ")"));
    }
  }
  for (size_t i = 0; i < header.tensors.size(); ++i) header.index_[header.tensors[i].name] = i;
  return header;
}

// ---------------------------------------------------------------------------
// Conversions.

float F16ToFloat32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  const uint32_t mant = h & 0x3ff;
  if (exp == 0) {
    // Zero or subnormal: mant * 2^-24 is exact in float.
    float v = static_cast<float>(mant) * 0x1p-24f;
    return sign ? -v : v;
  }
  if (exp == 31) {
    // Inf or NaN; NaNs come back quiet, as the F16C instruction does.
    return FloatOf(sign | 0x7f800000u | (mant << 13) | (mant ? 0x00400000u : 0));
  }
  return FloatOf(sign | ((exp + 112) << 23) | (mant << 13));
}

float BF16ToFloat32(uint16_t h) { return FloatOf(static_cast<uint32_t>(h) << 16); }

uint16_t Float32ToF16(float f) {
  const uint32_t w = BitsOf(f);
  const uint16_t sign = static_cast<uint16_t>((w >> 16) & 0x8000);
  const uint32_t x = w & 0x7fffffffu;
  if (x > 0x7f800000u) return sign | 0x7e00 | static_cast<uint16_t>((x >> 13) & 0x1ff);  // NaN
  if (x >= 0x477ff000u) return sign | 0x7c00;  // >= 65520 rounds to infinity
  if (x < 0x38800000u) {
    // Result is subnormal (or zero): round x / 2^-24 to nearest even integer.
    // Adding 0.5f aligns the binary point so the FPU's RNE does the work.
    float v = FloatOf(x) + 0.5f;
    return sign | static_cast<uint16_t>(BitsOf(v) - BitsOf(0.5f));
  }
  // Normal: rebias exponent and round the 13 dropped mantissa bits to even.
  uint32_t m = x + 0xc8000fffu + ((x >> 13) & 1);  // - (112 << 23) + 0xfff + lsb
  return sign | static_cast<uint16_t>(m >> 13);
}

uint16_t Float32ToBF16(float f) {
  uint32_t w = BitsOf(f);
  if ((w & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((w >> 16) | 0x40);
  w += 0x7fffu + ((w >> 16) & 1);
  return static_cast<uint16_t>(w >> 16);
}

void ConvertF16ToF32(const void* src, float* dst, size_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(src);
  size_t i = 0;
  // The engine's baseline (x86-64-v3) has F16C; loading a checkpoint is
  // bound by memory, so 8 lanes are as fast as 16 would be.
#if defined(__F16C__)
  for (; i + 8 <= n; i += 8) {
    __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2 * i));
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
  }
#endif
  for (; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, p + 2 * i, 2);
    dst[i] = F16ToFloat32(h);
  }
}

void ConvertBF16ToF32(const void* src, float* dst, size_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(src);
  size_t i = 0;
#if defined(__AVX2__)
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2 * i));
    const __m256i w = _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), w);
  }
#endif
  for (; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, p + 2 * i, 2);
    dst[i] = BF16ToFloat32(h);
  }
}

// ---------------------------------------------------------------------------
// SafetensorsFile.

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) munmap(map_, map_size_);
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  auto fail = [&](const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat("safetensors file ", path, ": ", why));
  };
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    std::string msg = absl::StrCat("cannot open safetensors file ", path, ": ", std::strerror(err));
    return err == ENOENT ? absl::NotFoundError(msg) : absl::PermissionDeniedError(msg);
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return fail(absl::StrCat("fstat failed: ", std::strerror(err)));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return fail("not a regular file");
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    return fail(absl::StrCat("truncated: ", size, " bytes, shorter than the 8-byte header length"));
  }
  void* map = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  int map_err = errno;
  ::close(fd);  // the mapping keeps the file alive
  if (map == MAP_FAILED) return fail(absl::StrCat("mmap failed: ", std::strerror(map_err)));

  auto file = std::unique_ptr<SafetensorsFile>(new SafetensorsFile());
  file->path_ = path;
  file->map_ = map;
  file->map_size_ = size;
  const uint8_t* bytes = static_cast<const uint8_t*>(map);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];
  if (header_len > kMaxHeaderBytes) {
    return fail(absl::StrCat("header length ", header_len, " exceeds the ", kMaxHeaderBytes,
                             "-byte limit (corrupt file?)"));
  }
  if (header_len > size - 8) {
    return fail(absl::StrCat("truncated: header length ", header_len, " but only ", size - 8,
                             " bytes follow"));
  }
  const uint64_t data_size = size - 8 - header_len;
  auto header = ParseSafetensorsHeader(
      absl::string_view(reinterpret_cast<const char*>(bytes + 8), header_len), data_size);
  if (!header.ok()) {
    // A range running past the data section means the file was cut short.
    return fail(std::string(header.status().message()));
  }
  file->header_ = *std::move(header);
  file->data_ = bytes + 8 + header_len;
  return file;
}

absl::string_view SafetensorsFile::RawBytes(const TensorInfo& info) const {
  return absl::string_view(reinterpret_cast<const char*>(data_ + info.begin), info.num_bytes());
}

absl::Status SafetensorsFile::ReadFloat32(const TensorInfo& info, float* dst, size_t n) const {
  const uint64_t count = static_cast<uint64_t>(info.num_elements());
  if (n != count) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor ", Quoted(info.name), " in file ", path_, " has shape ", FormatShape(info.shape),
        " (", count, " elements) but the destination holds ", n));
  }
  const uint8_t* src = data_ + info.begin;
  switch (info.dtype) {
    case SafetensorsDtype::kF32:
      if (n > 0) std::memcpy(dst, src, n * 4);
      return absl::OkStatus();
    case SafetensorsDtype::kF16:
      ConvertF16ToF32(src, dst, n);
      return absl::OkStatus();
    case SafetensorsDtype::kBF16:
      ConvertBF16ToF32(src, dst, n);
      return absl::OkStatus();
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("tensor ", Quoted(info.name), " in file ", path_, " has dtype ",
                       SafetensorsDtypeName(info.dtype), ", which cannot be loaded as float32"));
  }
}

absl::Status SafetensorsFile::ReadFloat32(absl::string_view name, float* dst, size_t n) const {
  const TensorInfo* info = Find(name);
  if (info == nullptr) {
    return absl::NotFoundError(absl::StrCat("tensor ", Quoted(name), " not found in file ", path_));
  }
  return ReadFloat32(*info, dst, n);
}

absl::StatusOr<std::vector<float>> SafetensorsFile::ReadFloat32(absl::string_view name) const {
  const TensorInfo* info = Find(name);
  if (info == nullptr) {
    return absl::NotFoundError(absl::StrCat("tensor ", Quoted(name), " not found in file ", path_));
  }
  std::vector<float> out(static_cast<size_t>(info->num_elements()));
  absl::Status s = ReadFloat32(*info, out.data(), out.size());
  if (!s.ok()) return s;
  return out;
}

// ---------------------------------------------------------------------------
// SafetensorsModel.

absl::StatusOr<std::unique_ptr<SafetensorsModel>> SafetensorsModel::Open(const std::string& dir) {
  namespace fs = std::filesystem;
  auto model = std::unique_ptr<SafetensorsModel>(new SafetensorsModel());
  model->dir_ = dir;
  std::error_code ec;
  if (fs::is_regular_file(dir, ec)) {
    auto file = SafetensorsFile::Open(dir);
    if (!file.ok()) return file.status();
    model->files_.push_back(*std::move(file));
    for (const auto& t : model->files_[0]->tensors()) {
      model->entries_[t.name] = Entry{model->files_[0].get(), &t};
    }
    return model;
  }
  const fs::path index_path = fs::path(dir) / "model.safetensors.index.json";
  const fs::path single_path = fs::path(dir) / "model.safetensors";
  if (fs::exists(index_path, ec)) {
    std::ifstream in(index_path, std::ios::binary);
    std::stringstream buf;
    buf << in.rdbuf();
    if (!in) {
      return absl::InvalidArgumentError(absl::StrCat("cannot read ", index_path.string()));
    }
    json index;
    try {
      index = json::parse(buf.str());
    } catch (const json::exception& e) {
      return absl::InvalidArgumentError(
          absl::StrCat(index_path.string(), " is not valid JSON: ", e.what()));
    }
    if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat(index_path.string(), ": missing object \"weight_map\""));
    }
    std::map<std::string, const SafetensorsFile*> by_shard;
    for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
      if (!it.value().is_string()) {
        return absl::InvalidArgumentError(absl::StrCat(index_path.string(), ": weight_map entry ",
                                                       Quoted(it.key()), " is not a file name"));
      }
      const std::string shard = it.value().get<std::string>();
      if (shard.empty() || shard.find('/') != std::string::npos || shard == "..") {
        return absl::InvalidArgumentError(absl::StrCat(index_path.string(), ": weight_map entry ",
                                                       Quoted(it.key()), " names bad shard ",
                                                       Quoted(shard)));
      }
      auto found = by_shard.find(shard);
      if (found == by_shard.end()) {
        auto file = SafetensorsFile::Open((fs::path(dir) / shard).string());
        if (!file.ok()) {
          return absl::Status(file.status().code(),
                              absl::StrCat(file.status().message(), " (listed in ",
                                           index_path.string(), ")"));
        }
        model->files_.push_back(*std::move(file));
        found = by_shard.emplace(shard, model->files_.back().get()).first;
      }
      const TensorInfo* info = found->second->Find(it.key());
      if (info == nullptr) {
        return absl::NotFoundError(absl::StrCat("tensor ", Quoted(it.key()), " listed in ",
                                                index_path.string(), " is not in file ",
                                                found->second->path()));
      }
      model->entries_[it.key()] = Entry{found->second, info};
    }
    return model;
  }
  if (fs::exists(single_path, ec)) {
    auto file = SafetensorsFile::Open(single_path.string());
    if (!file.ok()) return file.status();
    model->files_.push_back(*std::move(file));
    for (const auto& t : model->files_[0]->tensors()) {
      model->entries_[t.name] = Entry{model->files_[0].get(), &t};
    }
    return model;
  }
  return absl::NotFoundError(absl::StrCat("no model.safetensors or model.safetensors.index.json in ",
                                          dir));
}

std::vector<std::string> SafetensorsModel::TensorNames() const {
  std::vector<std::string> names;
  names.reserve(entries_.size());
  for (const auto& [name, e] : entries_) names.push_back(name);
  std::sort(names.begin(), names.end());
  return names;
}

bool SafetensorsModel::Has(absl::string_view name) const { return entries_.contains(name); }

const TensorInfo* SafetensorsModel::Find(absl::string_view name) const {
  auto it = entries_.find(name);
  return it == entries_.end() ? nullptr : it->second.info;
}

const SafetensorsFile* SafetensorsModel::FileOf(absl::string_view name) const {
  auto it = entries_.find(name);
  return it == entries_.end() ? nullptr : it->second.file;
}

absl::Status SafetensorsModel::NotFound(absl::string_view name) const {
  std::vector<std::string> paths;
  for (const auto& f : files_) paths.push_back(std::filesystem::path(f->path()).filename().string());
  return absl::NotFoundError(absl::StrCat("tensor ", Quoted(name), " not found in ", dir_,
                                          " (files: ", absl::StrJoin(paths, ", "), ")"));
}

absl::StatusOr<std::vector<int64_t>> SafetensorsModel::Shape(absl::string_view name) const {
  const TensorInfo* info = Find(name);
  if (info == nullptr) return NotFound(name);
  return info->shape;
}

absl::Status SafetensorsModel::RequireShape(absl::string_view name,
                                            absl::Span<const int64_t> expected) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) return NotFound(name);
  const auto& shape = it->second.info->shape;
  if (absl::Span<const int64_t>(shape) != expected) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", Quoted(name), " in file ",
                                                   it->second.file->path(), " has shape ",
                                                   FormatShape(shape), ", expected ",
                                                   FormatShape(expected)));
  }
  return absl::OkStatus();
}

absl::Status SafetensorsModel::ReadFloat32(absl::string_view name, float* dst, size_t n) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) return NotFound(name);
  return it->second.file->ReadFloat32(*it->second.info, dst, n);
}

absl::StatusOr<std::vector<float>> SafetensorsModel::ReadFloat32(absl::string_view name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) return NotFound(name);
  return it->second.file->ReadFloat32(name);
}

absl::StatusOr<std::vector<float>> ReadTensor(const SafetensorsModel& w, const std::string& name,
                                              std::vector<int64_t> shape) {
  if (absl::Status s = w.RequireShape(name, shape); !s.ok()) return s;
  return w.ReadFloat32(name);
}

absl::Status ReadInto(const SafetensorsModel& w, const std::string& name,
                      std::vector<int64_t> shape, std::vector<float>* out) {
  absl::StatusOr<std::vector<float>> t = ReadTensor(w, name, std::move(shape));
  if (!t.ok()) return t.status();
  *out = std::move(*t);
  return absl::OkStatus();
}

}  // namespace maskserve::engine
