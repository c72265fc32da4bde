#include "engine/kernels/bf16.h"

#include <cstring>

#include "engine/kernels/simd.h"

namespace maskserve::engine::kernels {
namespace {

bool HasAvx512Bf16() {
  static const bool has = __builtin_cpu_supports("avx512bf16");
  return has;
}

}  // namespace

uint16_t FloatToBf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof(u));
  if ((u & 0x7f800000u) == 0x7f800000u) {  // Inf or NaN
    if (u & 0x007fffffu) return static_cast<uint16_t>((u >> 16) | 0x0040u);
    return static_cast<uint16_t>(u >> 16);
  }
  if ((u & 0x7f800000u) == 0) return static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t lsb = (u >> 16) & 1u;
  u += 0x7fffu + lsb;
  return static_cast<uint16_t>(u >> 16);
}

float Bf16ToFloat(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

void FloatToBf16(const float* src, uint16_t* dst, size_t n) {
  size_t i = 0;
  if (HasAvx512Bf16()) {
    for (; i + 32 <= n; i += 32) {
      const __m512 lo = _mm512_loadu_ps(src + i);
      const __m512 hi = _mm512_loadu_ps(src + i + 16);
      const __m512bh packed = _mm512_cvtne2ps_pbh(hi, lo);
      _mm512_storeu_si512(reinterpret_cast<void*>(dst + i),
                          reinterpret_cast<const __m512i&>(packed));
    }
    if (i < n) {
      const size_t rest = n - i;
      if (rest >= 16) {
        const __m256bh v = _mm512_cvtneps_pbh(_mm512_loadu_ps(src + i));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i),
                            reinterpret_cast<const __m256i&>(v));
        i += 16;
      }
      if (i < n) {
        const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1u);
        const __m256bh v = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, src + i));
        _mm256_mask_storeu_epi16(dst + i, m, reinterpret_cast<const __m256i&>(v));
        i = n;
      }
    }
  }
  for (; i < n; ++i) dst[i] = FloatToBf16(src[i]);
}

void Bf16ToFloat(const uint16_t* src, float* dst, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
    const __m512i w = _mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16);
    _mm512_storeu_ps(dst + i, _mm512_castsi512_ps(w));
  }
  for (; i < n; ++i) dst[i] = Bf16ToFloat(src[i]);
}

void RoundToBf16(float* x, size_t n) {
  for (size_t i = 0; i < n; ++i) x[i] = Bf16ToFloat(FloatToBf16(x[i]));
}

}  // namespace maskserve::engine::kernels
