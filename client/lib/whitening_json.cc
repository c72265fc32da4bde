#include "client/lib/whitening_json.h"

#include <cmath>
#include <cstdint>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "client/lib/enum_names.h"

namespace maskserve::client {
namespace {

using nlohmann::json;

json FloatArray(const google::protobuf::RepeatedField<float>& values) {
  json out = json::array();
  for (float v : values) out.push_back(static_cast<double>(v));
  return out;
}

// Copies a JSON number array into `out`; false when it is not one.
bool ReadFloats(const json& j, google::protobuf::RepeatedField<float>* out) {
  if (!j.is_array()) return false;
  out->Reserve(static_cast<int>(j.size()));
  for (const json& v : j) {
    if (!v.is_number()) return false;
    out->Add(static_cast<float>(v.get<double>()));
  }
  return true;
}

}  // namespace

std::string WhiteningProfileToJson(const v1::WhiteningProfile& profile,
                                   bool pretty) {
  json j;
  j["model"] = profile.model();
  j["name"] = profile.name();
  j["pooling"] = PoolingName(profile.pooling());
  j["k"] = profile.k();
  j["beta"] = static_cast<double>(profile.beta());
  j["gamma"] = static_cast<double>(profile.gamma());
  j["dim"] = profile.dim();
  j["num_samples"] = profile.num_samples();
  if (profile.created_unix_s() != 0) j["created_unix_s"] = profile.created_unix_s();
  j["mean"] = FloatArray(profile.mean());
  j["eigenvalues"] = FloatArray(profile.eigenvalues());
  j["eigenvectors"] = FloatArray(profile.eigenvectors());
  return j.dump(pretty ? 2 : -1);
}

absl::StatusOr<v1::WhiteningProfile> WhiteningProfileFromJson(
    const std::string& text) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("whitening profile JSON: ", e.what()));
  }
  if (!j.is_object()) {
    return absl::InvalidArgumentError("whitening profile JSON: not an object");
  }
  const auto bad = [](const char* field, const char* why) {
    return absl::InvalidArgumentError(
        absl::StrCat("whitening profile JSON: field '", field, "' ", why));
  };
  v1::WhiteningProfile p;
  for (const char* field : {"model", "name", "pooling"}) {
    if (!j.contains(field) || !j[field].is_string()) {
      return bad(field, "must be a string");
    }
  }
  p.set_model(j["model"].get<std::string>());
  p.set_name(j["name"].get<std::string>());
  auto pooling = ParsePooling(j["pooling"].get<std::string>());
  if (!pooling.ok()) return bad("pooling", "is not a known pooling");
  p.set_pooling(*pooling);
  for (const char* field : {"k", "dim", "num_samples"}) {
    if (!j.contains(field) || !j[field].is_number_integer()) {
      return bad(field, "must be an integer");
    }
  }
  const int64_t dim = j["dim"].get<int64_t>();
  const int64_t k = j["k"].get<int64_t>();
  if (dim <= 0 || dim > (1 << 16)) return bad("dim", "is out of range");
  if (k < 0 || k > dim) return bad("k", "must be in [0, dim]");
  p.set_dim(static_cast<int32_t>(dim));
  p.set_k(static_cast<int32_t>(k));
  p.set_num_samples(j["num_samples"].get<int64_t>());
  for (const char* field : {"beta", "gamma"}) {
    if (!j.contains(field) || !j[field].is_number()) {
      return bad(field, "must be a number");
    }
  }
  p.set_beta(static_cast<float>(j["beta"].get<double>()));
  p.set_gamma(static_cast<float>(j["gamma"].get<double>()));
  if (j.contains("created_unix_s")) {
    if (!j["created_unix_s"].is_number_integer()) {
      return bad("created_unix_s", "must be an integer");
    }
    p.set_created_unix_s(j["created_unix_s"].get<int64_t>());
  }
  if (!j.contains("mean") || !ReadFloats(j["mean"], p.mutable_mean())) {
    return bad("mean", "must be an array of numbers");
  }
  if (!j.contains("eigenvalues") ||
      !ReadFloats(j["eigenvalues"], p.mutable_eigenvalues())) {
    return bad("eigenvalues", "must be an array of numbers");
  }
  if (!j.contains("eigenvectors") ||
      !ReadFloats(j["eigenvectors"], p.mutable_eigenvectors())) {
    return bad("eigenvectors", "must be an array of numbers");
  }
  if (p.mean_size() != dim) return bad("mean", "must have dim entries");
  if (p.eigenvalues_size() != dim) return bad("eigenvalues", "must have dim entries");
  if (p.eigenvectors_size() != dim * dim) {
    return bad("eigenvectors", "must have dim*dim entries");
  }
  return p;
}

}  // namespace maskserve::client
