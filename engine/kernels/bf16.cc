#include "engine/kernels/bf16.h"

#include <cstring>

#include "engine/kernels/cpu_features.h"
#include "engine/kernels/simd16.h"

// The software conversions, once per ISA (see simd16.h).
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq")
namespace maskserve::engine::kernels::avx512 {
namespace {
#include "engine/kernels/bf16_impl.inc"
}  // namespace
}  // namespace maskserve::engine::kernels::avx512
#pragma GCC pop_options

namespace maskserve::engine::kernels::avx2 {
namespace {
#include "engine/kernels/bf16_impl.inc"
}  // namespace
}  // namespace maskserve::engine::kernels::avx2

// The AVX512-BF16 instruction (Zen 4, Cooper Lake, Sapphire Rapids): one
// VCVTNE2PS2BF16 per 32 values, same bits as the software path.
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")
namespace maskserve::engine::kernels::avx512bf16 {
namespace {

void FloatToBf16Range(const float* src, uint16_t* dst, size_t n) {
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m512 lo = _mm512_loadu_ps(src + i);
    const __m512 hi = _mm512_loadu_ps(src + i + 16);
    const __m512bh packed = _mm512_cvtne2ps_pbh(hi, lo);
    _mm512_storeu_si512(reinterpret_cast<void*>(dst + i),
                        reinterpret_cast<const __m512i&>(packed));
  }
  if (i + 16 <= n) {
    const __m256bh v = _mm512_cvtneps_pbh(_mm512_loadu_ps(src + i));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), reinterpret_cast<const __m256i&>(v));
    i += 16;
  }
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1u);
    const __m256bh v = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, src + i));
    _mm256_mask_storeu_epi16(dst + i, m, reinterpret_cast<const __m256i&>(v));
  }
}

}  // namespace
}  // namespace maskserve::engine::kernels::avx512bf16
#pragma GCC pop_options

namespace maskserve::engine::kernels {
namespace {

struct Bf16Kernels {
  void (*to_bf16)(const float*, uint16_t*, size_t);
  void (*to_float)(const uint16_t*, float*, size_t);
};

constexpr Bf16Kernels kKernels[kNumIsas] = {
    {avx2::FloatToBf16Range, avx2::Bf16ToFloatRange},
    {avx512::FloatToBf16Range, avx512::Bf16ToFloatRange},
};

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
  if (UseHardwareBf16()) {
    avx512bf16::FloatToBf16Range(src, dst, n);
  } else {
    kKernels[static_cast<int>(ActiveIsa())].to_bf16(src, dst, n);
  }
}

bool FloatToBf16Via(Isa isa, bool hardware, const float* src, uint16_t* dst, size_t n) {
  if (!IsaSupported(isa)) return false;
  if (hardware) {
    if (isa != Isa::kAvx512 || !GetCpuFeatures().avx512bf16) return false;
    avx512bf16::FloatToBf16Range(src, dst, n);
  } else {
    kKernels[static_cast<int>(isa)].to_bf16(src, dst, n);
  }
  return true;
}

void Bf16ToFloat(const uint16_t* src, float* dst, size_t n) {
  kKernels[static_cast<int>(ActiveIsa())].to_float(src, dst, n);
}

void RoundToBf16(float* x, size_t n) {
  for (size_t i = 0; i < n; ++i) x[i] = Bf16ToFloat(FloatToBf16(x[i]));
}

}  // namespace maskserve::engine::kernels
