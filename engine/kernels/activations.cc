#include "engine/kernels/activations.h"

#include <omp.h>

#include <cstdint>

#include "engine/kernels/simd.h"
#include "engine/onednn/engine_context.h"

namespace maskserve::engine::kernels {
namespace {

// Buffers shorter than this run on the calling thread only: an OpenMP fork
// costs more than the work.
constexpr size_t kParallelMin = 1 << 15;

// exp(x), relative error ~1e-7 over the whole float range. 2^n is applied
// with scalef, which saturates to 0 / +inf instead of wrapping the exponent.
inline __m512 Exp(__m512 x) {
  x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(89.0f)), _mm512_set1_ps(-104.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187045e-06f), r);
  // Taylor to degree 7 on |r| <= ln2/2: truncation error < 1e-8 relative.
  __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

// 1 / (1 + exp(-v)).
inline __m512 Sigmoid(__m512 v) {
  const __m512 one = _mm512_set1_ps(1.0f);
  return _mm512_div_ps(one, _mm512_add_ps(one, Exp(_mm512_sub_ps(_mm512_setzero_ps(), v))));
}

// Phi(x) = 0.5 erfc(-x / sqrt 2), the standard normal CDF, with relative
// accuracy in both tails: erfc(a) for a = |x|/sqrt2 >= 0 is
// exp(-a^2) * (1 + P(q)) / (1 + 2a), q = (a - 2) / (a + 2) in [-1, 1), with P
// a degree-11 Chebyshev fit (max abs error 1.5e-9, fitted with mpmath); the
// a^2 = x^2/2 term keeps its rounding residual so exp(-a^2) stays accurate for
// large a.
inline __m512 NormalCdf(__m512 x) {
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 two = _mm512_set1_ps(2.0f);
  const __m512 ax = _mm512_abs_ps(x);
  const __m512 a = _mm512_mul_ps(ax, _mm512_set1_ps(0.70710678118654752f));
  const __m512 q = _mm512_div_ps(_mm512_sub_ps(a, two), _mm512_add_ps(a, two));
  static constexpr float kP[12] = {
      8.383818212433099e-05f, 0.00017780787699998182f, -0.00040183451642194525f,
      -0.0014301499271922352f, 0.0012506210333167137f, 0.008712785678741647f,
      -0.00802978425990106f, -0.05421843722837164f, 0.16405087960761197f,
      -0.16603048495117276f, -0.09276381482235581f, 0.27697838230670757f};
  __m512 p = _mm512_set1_ps(kP[0]);
  for (int i = 1; i < 12; ++i) p = _mm512_fmadd_ps(p, q, _mm512_set1_ps(kP[i]));
  const __m512 g = _mm512_div_ps(_mm512_add_ps(p, one), _mm512_fmadd_ps(two, a, one));
  // a^2 = x^2 / 2 = (hi + lo) / 2 exactly; exp(-(hi+lo)/2) ~= exp(-hi/2) (1 - lo/2).
  const __m512 half = _mm512_set1_ps(0.5f);
  const __m512 hi = _mm512_mul_ps(ax, ax);
  const __m512 lo = _mm512_fmsub_ps(ax, ax, hi);
  const __m512 e = Exp(_mm512_mul_ps(hi, _mm512_set1_ps(-0.5f)));
  __m512 erfc = _mm512_mul_ps(g, e);
  erfc = _mm512_fnmadd_ps(_mm512_mul_ps(erfc, lo), half, erfc);
  // Beyond a ~ 10 erfc underflows; the fit domain ends there too.
  erfc = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, _mm512_set1_ps(10.0f), _CMP_GT_OQ), erfc,
                              _mm512_setzero_ps());
  const __m512 tail = _mm512_mul_ps(half, erfc);  // Phi(-|x|)
  const __mmask16 pos = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GT_OQ);
  return _mm512_mask_blend_ps(pos, tail, _mm512_sub_ps(one, tail));
}

inline __m512 GeluErfV(__m512 x) { return _mm512_mul_ps(x, NormalCdf(x)); }

// 0.5 (1 + tanh(u)) == sigmoid(2u): no cancellation for negative x.
inline __m512 GeluTanhV(__m512 x) {
  const __m512 x3 = _mm512_mul_ps(_mm512_mul_ps(x, x), x);
  const __m512 inner = _mm512_fmadd_ps(x3, _mm512_set1_ps(0.044715f), x);
  const __m512 v = _mm512_mul_ps(inner, _mm512_set1_ps(2.0f * 0.7978845608028654f));
  return _mm512_mul_ps(x, Sigmoid(v));
}

inline __m512 ReluV(__m512 x) { return _mm512_max_ps(x, _mm512_setzero_ps()); }
inline __m512 SiluV(__m512 x) { return _mm512_mul_ps(x, Sigmoid(x)); }

// Applies f over x[0, n) in 16-lane steps with a masked tail.
template <typename F>
inline void MapRange(float* x, size_t n, F f) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, f(_mm512_loadu_ps(x + i)));
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1u);
    _mm512_mask_storeu_ps(x + i, m, f(_mm512_maskz_loadu_ps(m, x + i)));
  }
}

// Splits [0, n) into per-thread blocks (multiples of 16) for large n.
template <typename Body>
inline void ParallelBlocks(size_t n, Body body) {
  if (n < kParallelMin) {
    body(0, n);
    return;
  }
  const int nthr = SyncThreadCount();
  const size_t nblocks = (n + 15) / 16;
#pragma omp parallel num_threads(nthr)
  {
    const size_t t = static_cast<size_t>(omp_get_thread_num());
    const size_t T = static_cast<size_t>(omp_get_num_threads());
    const size_t b0 = nblocks * t / T, b1 = nblocks * (t + 1) / T;
    const size_t begin = b0 * 16, end = b1 * 16 < n ? b1 * 16 : n;
    if (begin < end) body(begin, end);
  }
}

}  // namespace

void GeluErf(float* x, size_t n) {
  ParallelBlocks(n, [x](size_t b, size_t e) { MapRange(x + b, e - b, GeluErfV); });
}

void GeluTanh(float* x, size_t n) {
  ParallelBlocks(n, [x](size_t b, size_t e) { MapRange(x + b, e - b, GeluTanhV); });
}

void Relu(float* x, size_t n) {
  ParallelBlocks(n, [x](size_t b, size_t e) { MapRange(x + b, e - b, ReluV); });
}

void Silu(float* x, size_t n) {
  ParallelBlocks(n, [x](size_t b, size_t e) { MapRange(x + b, e - b, SiluV); });
}

namespace {

inline void SwiGluRange(const float* gate, const float* up, float* out, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    _mm512_storeu_ps(out + i, _mm512_mul_ps(SiluV(_mm512_loadu_ps(gate + i)), _mm512_loadu_ps(up + i)));
  }
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1u);
    const __m512 g = _mm512_maskz_loadu_ps(m, gate + i);
    const __m512 u = _mm512_maskz_loadu_ps(m, up + i);
    _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(SiluV(g), u));
  }
}

}  // namespace

void SwiGlu(const float* gate, const float* up, float* out, size_t n) {
  ParallelBlocks(n, [=](size_t b, size_t e) { SwiGluRange(gate + b, up + b, out + b, e - b); });
}

void SwiGluFused(const float* gate_up, int rows, int inner, float* out) {
  const size_t total = static_cast<size_t>(rows) * static_cast<size_t>(inner);
  const int nthr = total < kParallelMin ? 1 : SyncThreadCount();
#pragma omp parallel for num_threads(nthr) schedule(static) if (nthr > 1)
  for (int r = 0; r < rows; ++r) {
    const float* g = gate_up + static_cast<size_t>(r) * 2 * inner;
    SwiGluRange(g, g + inner, out + static_cast<size_t>(r) * inner, static_cast<size_t>(inner));
  }
}

}  // namespace maskserve::engine::kernels
