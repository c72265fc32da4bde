#include "server/whitening_profile_file.h"

#include <bit>
#include <cstdint>
#include <cstring>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "server/crc32c.h"

namespace maskserve::server {
namespace {

static_assert(std::endian::native == std::endian::little,
              "the profile format is little-endian; add byte swapping for this host");

constexpr size_t kMagicSize = 8;
constexpr size_t kFixedSize = kMagicSize + 4 + 4;  // magic, header length, checksum

void PutU32(std::string& out, uint32_t v) {
  char b[4];
  std::memcpy(b, &v, 4);
  out.append(b, 4);
}

uint32_t GetU32(const char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

void PutFloats(std::string& out, const std::vector<double>& values) {
  const size_t at = out.size();
  out.resize(at + 4 * values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    const float f = static_cast<float>(values[i]);
    std::memcpy(out.data() + at + 4 * i, &f, 4);
  }
}

std::vector<double> GetFloats(const char* p, size_t n) {
  std::vector<double> out(n);
  for (size_t i = 0; i < n; ++i) {
    float f;
    std::memcpy(&f, p + 4 * i, 4);
    out[i] = f;
  }
  return out;
}

absl::Status Invalid(const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat("whitening profile file: ", why));
}

}  // namespace

std::string EncodeWhiteningProfile(const StoredProfile& profile) {
  const WhiteningProfileInfo& info = profile.info();
  const engine::WhiteningParams& p = profile.params();
  nlohmann::json header = {
      {"model", info.model},
      {"name", info.name},
      {"pooling", std::string(engine::PoolingModeName(info.pooling))},
      {"k", info.k},
      {"beta", static_cast<double>(info.beta)},
      {"gamma", static_cast<double>(info.gamma)},
      {"dim", p.dim},
      {"num_samples", p.num_samples},
      {"created_unix_s", info.created_unix_s},
  };
  const std::string header_text = header.dump();
  std::string out;
  const size_t d = static_cast<size_t>(p.dim);
  out.reserve(kFixedSize + header_text.size() + 4 * (2 * d + d * d));
  out.append(kWhiteningFileMagic, kMagicSize);
  PutU32(out, static_cast<uint32_t>(header_text.size()));
  out += header_text;
  PutFloats(out, p.mean);
  PutFloats(out, p.eigenvalues);
  PutFloats(out, p.eigenvectors);
  PutU32(out, Crc32c(out));
  return out;
}

absl::StatusOr<std::shared_ptr<const StoredProfile>> DecodeWhiteningProfile(
    absl::string_view bytes) {
  if (bytes.size() < kFixedSize) {
    return absl::DataLossError(
        absl::StrCat("whitening profile file: truncated (", bytes.size(), " bytes)"));
  }
  if (bytes.substr(0, 6) != absl::string_view(kWhiteningFileMagic, 6)) {
    return Invalid("not a whitening profile (bad magic)");
  }
  if (bytes.substr(0, kMagicSize) != absl::string_view(kWhiteningFileMagic, kMagicSize)) {
    return Invalid(absl::StrCat("unsupported format version '",
                                bytes.substr(6, 2), "' (this server reads 01)"));
  }
  const uint32_t stored_crc = GetU32(bytes.data() + bytes.size() - 4);
  const uint32_t crc = Crc32c(bytes.substr(0, bytes.size() - 4));
  if (stored_crc != crc) {
    return absl::DataLossError(
        "whitening profile file: checksum mismatch (corrupt or truncated file)");
  }
  const size_t header_len = GetU32(bytes.data() + kMagicSize);
  if (header_len > bytes.size() - kFixedSize) return Invalid("header length exceeds the file");
  nlohmann::json h;
  try {
    h = nlohmann::json::parse(bytes.substr(kMagicSize + 4, header_len));
  } catch (const nlohmann::json::exception& e) {
    return Invalid(absl::StrCat("header is not JSON: ", e.what()));
  }
  if (!h.is_object()) return Invalid("header is not a JSON object");
  for (const char* f : {"model", "name", "pooling"}) {
    if (!h.contains(f) || !h[f].is_string()) return Invalid(absl::StrCat("header field '", f, "' must be a string"));
  }
  for (const char* f : {"k", "dim", "num_samples", "created_unix_s"}) {
    if (!h.contains(f) || !h[f].is_number_integer()) {
      return Invalid(absl::StrCat("header field '", f, "' must be an integer"));
    }
  }
  for (const char* f : {"beta", "gamma"}) {
    if (!h.contains(f) || !h[f].is_number()) return Invalid(absl::StrCat("header field '", f, "' must be a number"));
  }
  WhiteningProfileInfo info;
  info.model = h["model"].get<std::string>();
  info.name = h["name"].get<std::string>();
  auto pooling = engine::ParsePoolingMode(h["pooling"].get<std::string>());
  if (!pooling.ok()) return Invalid(std::string(pooling.status().message()));
  info.pooling = *pooling;
  const int64_t k = h["k"].get<int64_t>();
  const int64_t dim = h["dim"].get<int64_t>();
  if (dim < 1 || dim > engine::kMaxWhiteningDim) {
    return Invalid(absl::StrCat("dim must be in [1, ", engine::kMaxWhiteningDim, "], got ", dim));
  }
  if (k < 1 || k > dim) return Invalid(absl::StrCat("k must be in [1, ", dim, "], got ", k));
  info.k = static_cast<int>(k);
  info.beta = static_cast<float>(h["beta"].get<double>());
  info.gamma = static_cast<float>(h["gamma"].get<double>());
  info.created_unix_s = h["created_unix_s"].get<int64_t>();

  const size_t d = static_cast<size_t>(dim);
  const size_t expected = kFixedSize + header_len + 4 * (2 * d + d * d);
  if (bytes.size() != expected) {
    return absl::DataLossError(absl::StrCat("whitening profile file: ", bytes.size(),
                                            " bytes, expected ", expected, " for dim ", dim));
  }
  engine::WhiteningParams params;
  params.dim = static_cast<int>(dim);
  params.num_samples = h["num_samples"].get<int64_t>();
  const char* p = bytes.data() + kMagicSize + 4 + header_len;
  params.mean = GetFloats(p, d);
  params.eigenvalues = GetFloats(p + 4 * d, d);
  params.eigenvectors = GetFloats(p + 8 * d, d * d);
  return StoredProfile::Create(std::move(info), std::move(params));
}

}  // namespace maskserve::server
