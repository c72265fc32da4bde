#include "engine/kernels/norms.h"

#include <cmath>
#include <cstddef>

#include "engine/kernels/simd.h"
#include "engine/onednn/engine_context.h"

namespace maskserve::engine::kernels {
namespace {

// Matrices smaller than this are normalised on the calling thread only.
constexpr size_t kParallelMin = 1 << 14;

inline __mmask16 TailMask(int n) { return static_cast<__mmask16>((1u << n) - 1u); }

void LayerNormRow(const float* x, const float* res, const float* gamma, const float* beta,
                  float eps, int cols, float* out) {
  // Pass 1: v = x (+ res) written to out when fused, and the sum.
  __m512 acc = _mm512_setzero_ps();
  const float* v = x;
  int i = 0;
  if (res != nullptr) {
    for (; i + 16 <= cols; i += 16) {
      const __m512 s = _mm512_add_ps(_mm512_loadu_ps(x + i), _mm512_loadu_ps(res + i));
      _mm512_storeu_ps(out + i, s);
      acc = _mm512_add_ps(acc, s);
    }
    if (i < cols) {
      const __mmask16 m = TailMask(cols - i);
      const __m512 s = _mm512_add_ps(_mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, res + i));
      _mm512_mask_storeu_ps(out + i, m, s);
      acc = _mm512_add_ps(acc, s);
    }
    v = out;
  } else {
    for (; i + 16 <= cols; i += 16) acc = _mm512_add_ps(acc, _mm512_loadu_ps(x + i));
    if (i < cols) acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(TailMask(cols - i), x + i));
  }
  const float mean = _mm512_reduce_add_ps(acc) / static_cast<float>(cols);
  // Pass 2: biased variance around the mean.
  const __m512 vmean = _mm512_set1_ps(mean);
  acc = _mm512_setzero_ps();
  for (i = 0; i + 16 <= cols; i += 16) {
    const __m512 d = _mm512_sub_ps(_mm512_loadu_ps(v + i), vmean);
    acc = _mm512_fmadd_ps(d, d, acc);
  }
  if (i < cols) {
    const __mmask16 m = TailMask(cols - i);
    const __m512 d = _mm512_maskz_sub_ps(m, _mm512_maskz_loadu_ps(m, v + i), vmean);
    acc = _mm512_fmadd_ps(d, d, acc);
  }
  const float var = _mm512_reduce_add_ps(acc) / static_cast<float>(cols);
  const __m512 inv = _mm512_set1_ps(1.0f / std::sqrt(var + eps));
  // Pass 3: normalise and apply the affine transform.
  for (i = 0; i + 16 <= cols; i += 16) {
    const __m512 d = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(v + i), vmean), inv);
    _mm512_storeu_ps(out + i, _mm512_fmadd_ps(d, _mm512_loadu_ps(gamma + i), _mm512_loadu_ps(beta + i)));
  }
  if (i < cols) {
    const __mmask16 m = TailMask(cols - i);
    const __m512 d = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, v + i), vmean), inv);
    _mm512_mask_storeu_ps(out + i, m,
                          _mm512_fmadd_ps(d, _mm512_maskz_loadu_ps(m, gamma + i),
                                          _mm512_maskz_loadu_ps(m, beta + i)));
  }
}

void RmsNormRow(const float* x, const float* w, float eps, int cols, float* out) {
  __m512 acc = _mm512_setzero_ps();
  int i = 0;
  for (; i + 16 <= cols; i += 16) {
    const __m512 a = _mm512_loadu_ps(x + i);
    acc = _mm512_fmadd_ps(a, a, acc);
  }
  if (i < cols) {
    const __m512 a = _mm512_maskz_loadu_ps(TailMask(cols - i), x + i);
    acc = _mm512_fmadd_ps(a, a, acc);
  }
  const float ms = _mm512_reduce_add_ps(acc) / static_cast<float>(cols);
  const __m512 inv = _mm512_set1_ps(1.0f / std::sqrt(ms + eps));
  for (i = 0; i + 16 <= cols; i += 16) {
    _mm512_storeu_ps(out + i, _mm512_mul_ps(_mm512_mul_ps(_mm512_loadu_ps(x + i), inv),
                                            _mm512_loadu_ps(w + i)));
  }
  if (i < cols) {
    const __mmask16 m = TailMask(cols - i);
    _mm512_mask_storeu_ps(out + i, m,
                          _mm512_mul_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), inv),
                                        _mm512_maskz_loadu_ps(m, w + i)));
  }
}

int ThreadsFor(int rows, int cols) {
  const size_t total = static_cast<size_t>(rows) * static_cast<size_t>(cols);
  return (total < kParallelMin || rows < 2) ? 1 : SyncThreadCount();
}

}  // namespace

void LayerNorm(const float* x, const float* residual, const float* gamma, const float* beta,
               float eps, int rows, int cols, float* out) {
  if (rows <= 0 || cols <= 0) return;
  const int nthr = ThreadsFor(rows, cols);
  const size_t c = static_cast<size_t>(cols);
#pragma omp parallel for num_threads(nthr) schedule(static) if (nthr > 1)
  for (int r = 0; r < rows; ++r) {
    const size_t off = static_cast<size_t>(r) * c;
    LayerNormRow(x + off, residual ? residual + off : nullptr, gamma, beta, eps, cols, out + off);
  }
}

void RmsNorm(const float* x, const float* weight, float eps, int rows, int cols, float* out) {
  if (rows <= 0 || cols <= 0) return;
  const int nthr = ThreadsFor(rows, cols);
  const size_t c = static_cast<size_t>(cols);
#pragma omp parallel for num_threads(nthr) schedule(static) if (nthr > 1)
  for (int r = 0; r < rows; ++r) {
    const size_t off = static_cast<size_t>(r) * c;
    RmsNormRow(x + off, weight, eps, cols, out + off);
  }
}

}  // namespace maskserve::engine::kernels
