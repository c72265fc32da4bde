#include "engine/onednn/packed_weight.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "engine/onednn/engine_context.h"
#include "engine/onednn/packed_weight_impl.h"

namespace maskserve::engine {
namespace {

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

// The M the packing primitive is described with. The preferred weight layout
// did not depend on M in oneDNN 2.6 (checked for M = 1..4096), so any value
// works; 128 is a typical encoder batch x sequence.
constexpr dnnl::memory::dim kRepresentativeM = 128;

// Whether oneDNN creates a BF16 matmul here (tiny shape, weights in the
// layout it prefers, as Create asks for).
bool Bf16MatmulAvailable() {
  try {
    const dnnl::engine& eng = EngineContext::Default().engine();
    const dnnl::matmul::desc desc(dnnl::memory::desc({1, 32}, dt::bf16, tag::ab),
                                  dnnl::memory::desc({32, 32}, dt::bf16, tag::any),
                                  dnnl::memory::desc({1, 32}, dt::f32, tag::ab));
    const dnnl::matmul::primitive_desc pd(desc, eng);
    return true;
  } catch (const dnnl::error&) {
    return false;
  }
}

}  // namespace

absl::Status CheckMatmulDTypeSupported(MatmulDType dtype) {
  if (dtype != MatmulDType::kBF16) return absl::OkStatus();
  static const bool available = Bf16MatmulAvailable();
  if (available) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "bfloat16 is not available on this CPU (oneDNN ISA ", IsaDescription(),
      "): oneDNN 2.6 has BF16 matmuls only for AVX-512 CPUs (avx512_core and up; fast with "
      "AVX512-BF16 or AMX). Use float32 (--dtype float32, or auto, which picks float32 here)"));
}

absl::StatusOr<PackedLinear> PackedLinear::Create(absl::Span<const float> weight, int in_features,
                                                  int out_features, absl::Span<const float> bias,
                                                  MatmulDType dtype, WeightLayout layout) {
  if (absl::Status s = CheckMatmulDTypeSupported(dtype); !s.ok()) return s;
  if (in_features <= 0 || out_features <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("PackedLinear: bad shape in=", in_features, " out=", out_features));
  }
  const size_t expect = static_cast<size_t>(in_features) * static_cast<size_t>(out_features);
  if (weight.size() != expect) {
    return absl::InvalidArgumentError(absl::StrCat("PackedLinear: weight has ", weight.size(),
                                                   " floats, expected ", expect));
  }
  if (!bias.empty() && bias.size() != static_cast<size_t>(out_features)) {
    return absl::InvalidArgumentError(absl::StrCat("PackedLinear: bias has ", bias.size(),
                                                   " floats, expected ", out_features));
  }
  auto impl = std::make_shared<Impl>();
  impl->k = in_features;
  impl->n = out_features;
  impl->dtype = dtype;
  impl->has_bias = !bias.empty();
  try {
    const dnnl::engine& eng = EngineContext::Default().engine();
    const dnnl::memory::dim K = in_features, N = out_features;
    const dt wdt = dtype == MatmulDType::kBF16 ? dt::bf16 : dt::f32;
    const dnnl::matmul::desc desc(dnnl::memory::desc({kRepresentativeM, K}, wdt, tag::ab),
                                  dnnl::memory::desc({K, N}, wdt, tag::any),
                                  dnnl::memory::desc({1, N}, dt::f32, tag::ab),
                                  dnnl::memory::desc({kRepresentativeM, N}, dt::f32, tag::ab));
    const dnnl::matmul::primitive_desc pd(desc, eng);
    impl->weights = dnnl::memory(pd.weights_desc(), eng);
    // [out, in] row-major is the logical [K, N] matrix with tag ba.
    const dnnl::memory::desc user_md({K, N}, dt::f32, layout == WeightLayout::kOutIn ? tag::ba : tag::ab);
    dnnl::memory user(user_md, eng, const_cast<float*>(weight.data()));
    dnnl::stream s(eng);
    dnnl::reorder(user, impl->weights).execute(s, user, impl->weights);
    s.wait();
    if (impl->has_bias) {
      impl->bias = dnnl::memory(dnnl::memory::desc({1, N}, dt::f32, tag::ab), eng);
      std::memcpy(impl->bias.get_data_handle(), bias.data(), bias.size() * sizeof(float));
    }
  } catch (const dnnl::error& e) {
    return absl::InternalError(absl::StrCat("PackedLinear: oneDNN: ", e.what()));
  }
  return PackedLinear(std::move(impl));
}

int PackedLinear::in_features() const { return impl_ ? impl_->k : 0; }
int PackedLinear::out_features() const { return impl_ ? impl_->n : 0; }
MatmulDType PackedLinear::dtype() const { return impl_ ? impl_->dtype : MatmulDType::kF32; }
bool PackedLinear::has_bias() const { return impl_ && impl_->has_bias; }
size_t PackedLinear::packed_bytes() const {
  return impl_ ? impl_->weights.get_desc().get_size() : 0;
}

}  // namespace maskserve::engine
