// A Linear layer's weight (and optional bias) packed once, at model load, into
// the blocked layout oneDNN's matmul kernels read fastest, in FP32 or BF16.
//
// How the layout is chosen: a matmul primitive descriptor is created with
// format_tag::any for the weights and the weights are reordered into its
// weights_desc(). With oneDNN 2.6 on AVX-512 CPUs this is the brgemm layout
// BA16a64b (f32) / BA16a64b2a (bf16) for every M from 1 to 4096 and every
// K, N we tried (measured; see bench/matmul_bench.cc), so a single packed
// copy serves all batch sizes: we pack against a representative M of 128.
// On AVX2-only CPUs oneDNN 2.6 has no brgemm matmul; it picks gemm:jit and
// the plain [K, N] layout (ab), again for every M. Linear() then always
// creates its primitives against exactly this layout.
//
// Only BF16 weights are rounded (round-to-nearest-even, once, at pack time);
// the bias stays float32 in both modes. PackedLinear is a cheap-to-copy
// handle: copies share the packed buffers, which are immutable after Create,
// so any number of threads may use one concurrently.
//
// Fusing Q/K/V: concatenate the three [H, H] weights row-wise into one
// [3H, H] array (and the biases into [3H]) before Create; one Linear then
// yields [M, 3H] with Q, K, V in column blocks.
//
// This header is oneDNN-free so that it can be included anywhere.
#pragma once

#include <cstddef>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace maskserve::engine {

// Arithmetic of a packed matmul. kBF16: bf16 weights x bf16 activations with
// float32 accumulation and output (activations are converted per call).
enum class MatmulDType { kF32, kBF16 };

// OK when oneDNN can run `dtype` matmuls on this CPU, else FailedPrecondition
// naming the CPU limitation. FP32 runs everywhere. BF16: oneDNN 2.6 (Debian
// libdnnl2) implements BF16 matmuls only from avx512_core up (emulated with
// AVX-512 F/BW/VL/DQ, native with AVX512-BF16, AMX tiles on Sapphire
// Rapids). On an AVX2-only CPU (e.g. Zen 3) it has no BF16 matmul at all,
// not even its reference kernel: primitive creation fails ("could not create
// a primitive descriptor iterator", checked with ONEDNN_VERBOSE=1), while
// f32 -> bf16 reorders still work. There is nothing to fall back to that
// would be worth having (BF16 without hardware support is slower than FP32
// on any path), so BF16 is refused at model load and `auto` picks FP32. The
// answer comes from creating a tiny BF16 matmul once, so it follows the
// library actually loaded (and ONEDNN_MAX_CPU_ISA).
absl::Status CheckMatmulDTypeSupported(MatmulDType dtype);

// How the float32 weight handed to Create is laid out (row-major).
enum class WeightLayout {
  kOutIn,  // [out_features, in_features]: torch.nn.Linear / Hugging Face.
  kInOut,  // [in_features, out_features]: GPT-2's Conv1D.
};

class PackedLinear {
 public:
  struct Impl;  // oneDNN handles; defined in packed_weight_impl.h.

  // weight: in_features * out_features floats in `layout`; bias: empty or
  // out_features floats. Fails on size mismatches or non-positive dims, and
  // with CheckMatmulDTypeSupported's error for a dtype the CPU cannot run.
  static absl::StatusOr<PackedLinear> Create(absl::Span<const float> weight, int in_features,
                                             int out_features, absl::Span<const float> bias,
                                             MatmulDType dtype,
                                             WeightLayout layout = WeightLayout::kOutIn);

  PackedLinear() = default;  // empty; valid() is false

  bool valid() const { return impl_ != nullptr; }
  int in_features() const;   // K
  int out_features() const;  // N
  MatmulDType dtype() const;
  bool has_bias() const;
  // Bytes held by the packed weight (blocked layouts pad K and N).
  size_t packed_bytes() const;

  const Impl& impl() const { return *impl_; }

 private:
  explicit PackedLinear(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;
};

}  // namespace maskserve::engine
