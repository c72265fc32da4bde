#include "server/services/proto_convert.h"

#include "absl/strings/str_cat.h"

namespace maskserve::server {

namespace pb = maskserve::v1;

pb::Pooling ToProtoPooling(engine::PoolingMode mode) {
  switch (mode) {
    case engine::PoolingMode::kCls:
      return pb::POOLING_CLS;
    case engine::PoolingMode::kMean:
      return pb::POOLING_MEAN;
    case engine::PoolingMode::kFirstLastAvg:
      return pb::POOLING_FIRST_LAST_AVG;
    case engine::PoolingMode::kMax:
      return pb::POOLING_MAX;
    case engine::PoolingMode::kLastToken:
      return pb::POOLING_LAST_TOKEN;
  }
  return pb::POOLING_UNSPECIFIED;
}

absl::StatusOr<engine::PoolingMode> FromProtoPooling(pb::Pooling pooling,
                                                     engine::PoolingMode fallback,
                                                     const char* field) {
  switch (pooling) {
    case pb::POOLING_UNSPECIFIED:
      return fallback;
    case pb::POOLING_CLS:
      return engine::PoolingMode::kCls;
    case pb::POOLING_MEAN:
      return engine::PoolingMode::kMean;
    case pb::POOLING_FIRST_LAST_AVG:
      return engine::PoolingMode::kFirstLastAvg;
    case pb::POOLING_MAX:
      return engine::PoolingMode::kMax;
    case pb::POOLING_LAST_TOKEN:
      return engine::PoolingMode::kLastToken;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat(field, " has unknown value ", static_cast<int>(pooling)));
  }
}

absl::StatusOr<engine::MaskSpec> FromProtoMask(const pb::MaskSpec& mask, engine::MaskKind fallback,
                                               const char* field) {
  engine::MaskSpec spec;
  switch (mask.kind()) {
    case pb::MASK_KIND_UNSPECIFIED:
      spec.kind = fallback;
      break;
    case pb::MASK_KIND_BIDIRECTIONAL:
      spec.kind = engine::MaskKind::kBidirectional;
      break;
    case pb::MASK_KIND_CAUSAL:
      spec.kind = engine::MaskKind::kCausal;
      break;
    case pb::MASK_KIND_UNILM:
      spec.kind = engine::MaskKind::kUnilm;
      break;
    case pb::MASK_KIND_LOCAL:
      spec.kind = engine::MaskKind::kLocal;
      break;
    case pb::MASK_KIND_DILATED:
      spec.kind = engine::MaskKind::kDilated;
      break;
    case pb::MASK_KIND_STRIDED:
      spec.kind = engine::MaskKind::kStrided;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".kind has unknown value ", static_cast<int>(mask.kind())));
  }
  spec.window = mask.window();
  spec.rate = mask.rate();
  spec.causal = mask.causal();
  spec.prefix_length = mask.prefix_length();
  spec.segment_ids.assign(mask.segment_ids().begin(), mask.segment_ids().end());
  return spec;
}

pb::MaskKind ToProtoMaskKind(engine::MaskKind kind) {
  switch (kind) {
    case engine::MaskKind::kBidirectional:
      return pb::MASK_KIND_BIDIRECTIONAL;
    case engine::MaskKind::kCausal:
      return pb::MASK_KIND_CAUSAL;
    case engine::MaskKind::kUnilm:
      return pb::MASK_KIND_UNILM;
    case engine::MaskKind::kLocal:
      return pb::MASK_KIND_LOCAL;
    case engine::MaskKind::kDilated:
      return pb::MASK_KIND_DILATED;
    case engine::MaskKind::kStrided:
      return pb::MASK_KIND_STRIDED;
  }
  return pb::MASK_KIND_UNSPECIFIED;
}

void FillWhiteningSummary(const StoredProfile& profile, pb::WhiteningProfileSummary* out) {
  const WhiteningProfileInfo& info = profile.info();
  out->set_name(info.name);
  out->set_pooling(ToProtoPooling(info.pooling));
  out->set_k(info.k);
  out->set_beta(info.beta);
  out->set_gamma(info.gamma);
  out->set_num_samples(profile.num_samples());
}

void FillWhiteningProfile(const StoredProfile& profile, bool include_parameters,
                          pb::WhiteningProfile* out) {
  const WhiteningProfileInfo& info = profile.info();
  out->set_model(info.model);
  out->set_name(info.name);
  out->set_pooling(ToProtoPooling(info.pooling));
  out->set_k(info.k);
  out->set_beta(info.beta);
  out->set_gamma(info.gamma);
  out->set_dim(profile.dim());
  out->set_num_samples(profile.num_samples());
  out->set_created_unix_s(info.created_unix_s);
  if (!include_parameters) return;
  const engine::WhiteningParams& p = profile.params();
  for (double v : p.mean) out->add_mean(static_cast<float>(v));
  for (double v : p.eigenvalues) out->add_eigenvalues(static_cast<float>(v));
  for (double v : p.eigenvectors) out->add_eigenvectors(static_cast<float>(v));
}

}  // namespace maskserve::server
