#include "server/whitening_profile_json.h"

#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace maskserve::server {
namespace {

using nlohmann::json;

// Largest |U^T U - I| accepted on import: float32 eigenvectors of a few
// thousand dimensions are orthonormal to ~1e-6; 1e-3 only catches matrices
// that are not eigenvector sets at all (transposed, wrong order of a flat
// array, another matrix).
constexpr double kOrthonormalTolerance = 1e-3;

json Floats(const std::vector<double>& values) {
  json out = json::array();
  for (double v : values) out.push_back(v);
  return out;
}

absl::Status Bad(const std::string& field, const std::string& why) {
  return absl::InvalidArgumentError(
      absl::StrCat("whitening profile JSON: field '", field, "' ", why));
}

// Appends the numbers of array `j` to `out`; `field` names it in errors.
absl::Status ReadNumbers(const json& j, const std::string& field, std::vector<double>& out) {
  if (!j.is_array()) return Bad(field, "must be an array of numbers");
  out.reserve(out.size() + j.size());
  for (size_t i = 0; i < j.size(); ++i) {
    if (!j[i].is_number()) return Bad(field, absl::StrCat("entry ", i, " is not a number"));
    out.push_back(j[i].get<double>());
  }
  return absl::OkStatus();
}

// The CLI's parser accepts "FIRST-LAST-AVG" and "POOLING_FIRST_LAST_AVG";
// so does this one.
std::string NormalizePoolingName(std::string name) {
  for (char& c : name) {
    c = c == '-' ? '_' : absl::ascii_tolower(static_cast<unsigned char>(c));
  }
  absl::string_view view = name;
  absl::ConsumePrefix(&view, "pooling_");
  return std::string(view);
}

}  // namespace

std::string ExportWhiteningJson(const StoredProfile& profile, bool pretty) {
  const WhiteningProfileInfo& info = profile.info();
  const engine::WhiteningParams& p = profile.params();
  json j;
  j["format"] = kWhiteningJsonFormat;
  j["model"] = info.model;
  j["name"] = info.name;
  j["pooling"] = std::string(engine::PoolingModeName(info.pooling));
  j["k"] = info.k;
  j["beta"] = static_cast<double>(info.beta);
  j["gamma"] = static_cast<double>(info.gamma);
  j["dim"] = p.dim;
  j["num_samples"] = p.num_samples;
  j["created_unix_s"] = info.created_unix_s;
  j["mean"] = Floats(p.mean);
  j["eigenvalues"] = Floats(p.eigenvalues);
  j["eigenvectors"] = Floats(p.eigenvectors);
  return j.dump(pretty ? 2 : -1);
}

absl::StatusOr<std::shared_ptr<const StoredProfile>> ImportWhiteningJson(const std::string& text) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("whitening profile JSON: ", e.what()));
  }
  if (!j.is_object()) return absl::InvalidArgumentError("whitening profile JSON: not an object");
  if (j.contains("format") &&
      (!j["format"].is_string() || j["format"].get<std::string>() != kWhiteningJsonFormat)) {
    return Bad("format", absl::StrCat("must be \"", kWhiteningJsonFormat, "\", got ",
                                      j["format"].dump()));
  }
  for (const char* f : {"model", "name", "pooling"}) {
    if (!j.contains(f) || !j[f].is_string()) return Bad(f, "must be a string");
  }
  for (const char* f : {"k", "dim", "num_samples"}) {
    if (!j.contains(f) || !j[f].is_number_integer()) return Bad(f, "must be an integer");
  }
  for (const char* f : {"beta", "gamma"}) {
    if (!j.contains(f) || !j[f].is_number()) return Bad(f, "must be a number");
  }
  if (j.contains("created_unix_s") && !j["created_unix_s"].is_number_integer()) {
    return Bad("created_unix_s", "must be an integer");
  }
  for (const char* f : {"mean", "eigenvalues", "eigenvectors"}) {
    if (!j.contains(f)) return Bad(f, "is missing");
  }

  WhiteningProfileInfo info;
  info.model = j["model"].get<std::string>();
  info.name = j["name"].get<std::string>();
  auto pooling = engine::ParsePoolingMode(NormalizePoolingName(j["pooling"].get<std::string>()));
  if (!pooling.ok()) return Bad("pooling", std::string(pooling.status().message()));
  info.pooling = *pooling;
  const int64_t dim = j["dim"].get<int64_t>();
  if (dim < 1 || dim > engine::kMaxWhiteningDim) {
    return Bad("dim", absl::StrCat("must be in [1, ", engine::kMaxWhiteningDim, "], got ", dim));
  }
  int64_t k = j["k"].get<int64_t>();
  if (k == 0) k = dim;  // as FitWhiteningRequest.k: 0 = all dimensions
  if (k < 1 || k > dim) return Bad("k", absl::StrCat("must be in [0, ", dim, "], got ", k));
  info.k = static_cast<int>(k);
  info.beta = static_cast<float>(j["beta"].get<double>());
  info.gamma = static_cast<float>(j["gamma"].get<double>());
  if (j.contains("created_unix_s")) info.created_unix_s = j["created_unix_s"].get<int64_t>();

  engine::WhiteningParams params;
  params.dim = static_cast<int>(dim);
  params.num_samples = j["num_samples"].get<int64_t>();
  if (auto s = ReadNumbers(j["mean"], "mean", params.mean); !s.ok()) return s;
  if (auto s = ReadNumbers(j["eigenvalues"], "eigenvalues", params.eigenvalues); !s.ok()) {
    return s;
  }
  const json& vectors = j["eigenvectors"];
  if (vectors.is_array() && !vectors.empty() && vectors[0].is_array()) {
    if (static_cast<int64_t>(vectors.size()) != dim) {
      return Bad("eigenvectors", absl::StrCat("has ", vectors.size(), " rows, expected dim = ", dim));
    }
    for (size_t r = 0; r < vectors.size(); ++r) {
      const std::string row = absl::StrCat("eigenvectors[", r, "]");
      if (auto s = ReadNumbers(vectors[r], row, params.eigenvectors); !s.ok()) return s;
      if (static_cast<int64_t>(params.eigenvectors.size()) != (static_cast<int64_t>(r) + 1) * dim) {
        return Bad(row, absl::StrCat("must have dim = ", dim, " entries"));
      }
    }
  } else if (auto s = ReadNumbers(vectors, "eigenvectors", params.eigenvectors); !s.ok()) {
    return s;
  }
  if (auto s = engine::ValidateWhiteningParams(params, kOrthonormalTolerance); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("whitening profile JSON: ", s.message()));
  }
  auto profile = StoredProfile::Create(std::move(info), std::move(params));
  if (!profile.ok()) {
    return absl::Status(profile.status().code(),
                        absl::StrCat("whitening profile JSON: ", profile.status().message()));
  }
  return profile;
}

}  // namespace maskserve::server
