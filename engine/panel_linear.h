// y = x W + b [+ y] in FP32 with the weight packed once, at load, into
// 16-column panels (panel p holds W[k][16p .. 16p + 15] for every k,
// contiguous), computed by an AVX2/FMA register-blocked kernel (6 rows x 16
// columns per tile) that streams each panel exactly once per call whatever
// the number of rows.
//
// Why it exists: on CPUs without AVX-512, oneDNN 2.6's matmul is gemm:jit,
// which re-packs the whole weight matrix on every call with M > 1 (it has
// small-M kernels only for AVX-512): a decode step of 16 sequences then
// moves ~3x the weight bytes of a single-sequence step instead of ~1x, and
// 16 streams run barely 4x faster than one. PanelLinear keeps M = 2..16
// within a few percent of the M = 1 (bandwidth-bound) time, and is on par
// with gemm:jit for long prefills. On AVX-512 CPUs oneDNN's brgemm already
// behaves this way, and the models keep using MatmulCache there.
//
// Thread safety: immutable after Create; copies share the packed panels; Run
// may be called concurrently. Each call splits the panels across
// SyncThreadCount() OpenMP threads (one thread for small products).
#pragma once

#include <cstddef>
#include <memory>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/onednn/packed_weight.h"

namespace maskserve::engine {

class PanelLinear {
 public:
  // Columns per panel.
  static constexpr int kPanel = 16;

  // weight: in_features * out_features floats in `layout`; bias: empty or
  // out_features floats. InvalidArgument on size mismatches or non-positive
  // dims.
  static absl::StatusOr<PanelLinear> Create(absl::Span<const float> weight, int in_features,
                                            int out_features, absl::Span<const float> bias,
                                            WeightLayout layout = WeightLayout::kOutIn);

  PanelLinear() = default;  // empty; valid() is false

  bool valid() const { return data_ != nullptr; }
  int in_features() const;   // K
  int out_features() const;  // N
  bool has_bias() const;
  // Bytes held (panels padded to 16 columns, bias).
  size_t bytes() const;

  // y[r, :] = x[r, :] W + b (added to y[r, :] when accumulate) for r <
  // rows. x: [rows, K] row-major, y: [rows, N] row-major; they must not
  // overlap. rows == 0 is a no-op.
  void Run(const float* x, int rows, float* y, bool accumulate) const;

 private:
  struct Data;
  explicit PanelLinear(std::shared_ptr<const Data> data) : data_(std::move(data)) {}
  std::shared_ptr<const Data> data_;
};

// The matmul implementation of the linear layers.
enum class LinearKernel {
  kAuto,    // oneDNN on AVX-512 CPUs or for BF16; PanelLinear for FP32 on AVX2-only CPUs
  kOneDnn,  // MatmulCache (PackedLinear) at every M
  kPanel,   // PanelLinear at every M (FP32 only)
};

// Whether the generative models' linear layers run on PanelLinear (true) or
// oneDNN (false) for `kernel` and `dtype`: kAuto picks PanelLinear for FP32
// unless the CPU has AVX-512 (oneDNN 2.6 has small-M brgemm matmuls only from
// AVX-512 on). INVALID_ARGUMENT for kPanel with a non-FP32 dtype.
absl::StatusOr<bool> UsePanelLinear(LinearKernel kernel, MatmulDType dtype);

}  // namespace maskserve::engine
