#include "engine/kernels/norms.h"

#include <cmath>
#include <cstddef>

#include "engine/kernels/cpu_features.h"
#include "engine/kernels/simd16.h"
#include "engine/onednn/engine_context.h"

// The row kernels, once per ISA (see simd16.h).
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq")
namespace maskserve::engine::kernels::avx512 {
namespace {
#include "engine/kernels/norms_impl.inc"
}  // namespace
}  // namespace maskserve::engine::kernels::avx512
#pragma GCC pop_options

namespace maskserve::engine::kernels::avx2 {
namespace {
#include "engine/kernels/norms_impl.inc"
}  // namespace
}  // namespace maskserve::engine::kernels::avx2

namespace maskserve::engine::kernels {
namespace {

struct NormKernels {
  void (*layer_norm_row)(const float*, const float*, const float*, const float*, float, int,
                         float*);
  void (*rms_norm_row)(const float*, const float*, float, int, float*);
};

constexpr NormKernels kKernels[kNumIsas] = {
    {avx2::LayerNormRow, avx2::RmsNormRow},
    {avx512::LayerNormRow, avx512::RmsNormRow},
};

// Matrices smaller than this are normalised on the calling thread only.
constexpr size_t kParallelMin = 1 << 14;

int ThreadsFor(int rows, int cols) {
  const size_t total = static_cast<size_t>(rows) * static_cast<size_t>(cols);
  return (total < kParallelMin || rows < 2) ? 1 : SyncThreadCount();
}

}  // namespace

void LayerNorm(const float* x, const float* residual, const float* gamma, const float* beta,
               float eps, int rows, int cols, float* out) {
  if (rows <= 0 || cols <= 0) return;
  const auto row_kernel = kKernels[static_cast<int>(ActiveIsa())].layer_norm_row;
  const int nthr = ThreadsFor(rows, cols);
  const size_t c = static_cast<size_t>(cols);
#pragma omp parallel for num_threads(nthr) schedule(static) if (nthr > 1)
  for (int r = 0; r < rows; ++r) {
    const size_t off = static_cast<size_t>(r) * c;
    row_kernel(x + off, residual ? residual + off : nullptr, gamma, beta, eps, cols, out + off);
  }
}

void RmsNorm(const float* x, const float* weight, float eps, int rows, int cols, float* out) {
  if (rows <= 0 || cols <= 0) return;
  const auto row_kernel = kKernels[static_cast<int>(ActiveIsa())].rms_norm_row;
  const int nthr = ThreadsFor(rows, cols);
  const size_t c = static_cast<size_t>(cols);
#pragma omp parallel for num_threads(nthr) schedule(static) if (nthr > 1)
  for (int r = 0; r < rows; ++r) {
    const size_t off = static_cast<size_t>(r) * c;
    row_kernel(x + off, weight, eps, cols, out + off);
  }
}

}  // namespace maskserve::engine::kernels
