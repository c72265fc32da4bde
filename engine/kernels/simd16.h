// A 16-lane float32 SIMD vocabulary with two backends, so that each kernel is
// written once and compiled for both AVX-512 and AVX2:
//
//   namespace kernels::avx512  V16 = one __m512, M16 = __mmask16
//   namespace kernels::avx2    V16 = two __m256, M16 = two __m256 lane masks
//
// Both namespaces define the same types and functions with the same
// semantics, lane for lane (integer lanes are 32-bit, I16):
//   Zero, Set1, Load, Store, MaskLoad (masked-off lanes read as 0 and their
//   memory is never touched), MaskStore, TailMask(n) (lanes [0, n)),
//   Add, Sub, Mul, Div, Fmadd (a*b+c), Fnmadd (c-a*b), Fmsub (a*b-c), Min, Max
//   (x86 semantics: the second operand when either is NaN), Abs, Cmp{Lt,Le,
//   Gt,Ge,Eq} (ordered: false on NaN) -> M16, Select(m, if_true, if_false),
//   RoundNearest (ties to even), Scalef (x * 2^floor(n), saturating like
//   VSCALEFPS), ReduceAdd / ReduceMax (same pairing order in both backends,
//   so reductions give the same bits), and a few integer lane operations for
//   bit manipulation (bf16 rounding).
// kV16Registers says how many V16 values fit in the register file (32 / 8);
// kernels size their register blocking from it.
//
// How a kernel is compiled for both ISAs (the simdjson approach): its code
// lives in an .inc file with no #includes, included twice by its .cc:
//
//   #pragma GCC push_options
//   #pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq")
//   namespace maskserve::engine::kernels::avx512 { namespace {
//   #include "engine/kernels/foo_impl.inc"
//   } }
//   #pragma GCC pop_options
//   namespace maskserve::engine::kernels::avx2 { namespace {
//   #include "engine/kernels/foo_impl.inc"
//   } }
//
// and dispatched through a table of function pointers indexed by
// ActiveIsa() (cpu_features.h). Why target regions and not a separate
// translation unit built with -mavx512f: only functions *defined* inside the
// region get AVX-512 code. Inline functions of std/absl headers instantiated
// in a -mavx512f TU are emitted as COMDAT with AVX-512 instructions, and the
// linker may keep that copy for the generic code too: SIGILL on AVX2
// machines. Templates defined outside the region (std::min, std::fill)
// stay generic even when used inside it. So: kernels and their helpers live
// in the region, OpenMP parallel regions stay in generic code and call the
// per-row / per-tile kernels through the table (outlined OpenMP functions
// then never need a target attribute).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "engine/kernels/simd.h"

// ---------------------------------------------------------------------------
// AVX-512 backend. GCC 12 warns (-Wmaybe-uninitialized, PR105593) about the
// unmasked forms of several intrinsics whose pass-through operand is
// _mm512_undefined_*(); their zero-masking forms with every lane set are the
// same instruction, so those are used.
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq")
namespace maskserve::engine::kernels::avx512 {

inline constexpr int kV16Registers = 32;
inline constexpr __mmask16 kAll = 0xFFFF;

struct V16 {
  __m512 v;
};
struct M16 {
  __mmask16 m;
};
struct I16 {
  __m512i v;
};

inline V16 Zero() { return {_mm512_setzero_ps()}; }
inline V16 Set1(float x) { return {_mm512_set1_ps(x)}; }
inline V16 Load(const float* p) { return {_mm512_loadu_ps(p)}; }
inline void Store(float* p, V16 a) { _mm512_storeu_ps(p, a.v); }

// n in [0, 16].
inline M16 TailMask(int n) { return {static_cast<__mmask16>((1u << n) - 1u)}; }
inline M16 AllLanes() { return {kAll}; }
inline V16 MaskLoad(const float* p, M16 m) { return {_mm512_maskz_loadu_ps(m.m, p)}; }
inline void MaskStore(float* p, M16 m, V16 a) { _mm512_mask_storeu_ps(p, m.m, a.v); }
inline uint32_t MaskBits(M16 m) { return m.m; }
inline M16 MaskAnd(M16 a, M16 b) { return {static_cast<__mmask16>(a.m & b.m)}; }
inline M16 MaskOr(M16 a, M16 b) { return {static_cast<__mmask16>(a.m | b.m)}; }
inline M16 MaskNot(M16 a) { return {static_cast<__mmask16>(~a.m)}; }

inline V16 Add(V16 a, V16 b) { return {_mm512_add_ps(a.v, b.v)}; }
inline V16 Sub(V16 a, V16 b) { return {_mm512_sub_ps(a.v, b.v)}; }
inline V16 Mul(V16 a, V16 b) { return {_mm512_mul_ps(a.v, b.v)}; }
inline V16 Div(V16 a, V16 b) { return {_mm512_div_ps(a.v, b.v)}; }
inline V16 Fmadd(V16 a, V16 b, V16 c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }
inline V16 Fnmadd(V16 a, V16 b, V16 c) { return {_mm512_fnmadd_ps(a.v, b.v, c.v)}; }
inline V16 Fmsub(V16 a, V16 b, V16 c) { return {_mm512_fmsub_ps(a.v, b.v, c.v)}; }
inline V16 Min(V16 a, V16 b) { return {_mm512_maskz_min_ps(kAll, a.v, b.v)}; }
inline V16 Max(V16 a, V16 b) { return {_mm512_maskz_max_ps(kAll, a.v, b.v)}; }
inline V16 Abs(V16 a) {
  return {_mm512_castsi512_ps(
      _mm512_and_si512(_mm512_castps_si512(a.v), _mm512_set1_epi32(0x7fffffff)))};
}

inline M16 CmpLt(V16 a, V16 b) { return {_mm512_cmp_ps_mask(a.v, b.v, _CMP_LT_OQ)}; }
inline M16 CmpLe(V16 a, V16 b) { return {_mm512_cmp_ps_mask(a.v, b.v, _CMP_LE_OQ)}; }
inline M16 CmpGt(V16 a, V16 b) { return {_mm512_cmp_ps_mask(a.v, b.v, _CMP_GT_OQ)}; }
inline M16 CmpGe(V16 a, V16 b) { return {_mm512_cmp_ps_mask(a.v, b.v, _CMP_GE_OQ)}; }
inline M16 CmpEq(V16 a, V16 b) { return {_mm512_cmp_ps_mask(a.v, b.v, _CMP_EQ_OQ)}; }
inline V16 Select(M16 m, V16 if_true, V16 if_false) {
  return {_mm512_mask_blend_ps(m.m, if_false.v, if_true.v)};
}

inline V16 RoundNearest(V16 a) {
  return {_mm512_maskz_roundscale_ps(kAll, a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)};
}
// x * 2^floor(n): exact, one rounding, overflow to +-inf, underflow to +-0.
inline V16 Scalef(V16 x, V16 n) { return {_mm512_maskz_scalef_ps(kAll, x.v, n.v)}; }

// Lanes 8h .. 8h+7 (h = 0, 1).
template <int h>
inline __m256 Half(V16 a) {
  return _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(0xFF, _mm512_castps_pd(a.v), h));
}

// Pairwise: the two 8-lane halves, then the 4-lane halves, then (0,2)+(1,3),
// then lane 0 + lane 1 — the order GCC's _mm512_reduce_add_ps uses.
inline float ReduceAdd(V16 a) {
  const __m256 lo = Half<0>(a);
  const __m256 hi = Half<1>(a);
  const __m256 s8 = _mm256_add_ps(hi, lo);
  const __m128 s4 = _mm_add_ps(_mm256_extractf128_ps(s8, 1), _mm256_castps256_ps128(s8));
  const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
}
inline float ReduceMax(V16 a) {
  const __m256 lo = Half<0>(a);
  const __m256 hi = Half<1>(a);
  const __m256 s8 = _mm256_max_ps(hi, lo);
  const __m128 s4 = _mm_max_ps(_mm256_extractf128_ps(s8, 1), _mm256_castps256_ps128(s8));
  const __m128 s2 = _mm_max_ps(s4, _mm_movehl_ps(s4, s4));
  return _mm_cvtss_f32(_mm_max_ss(s2, _mm_movehdup_ps(s2)));
}

// Integer lanes.
inline I16 AsInt(V16 a) { return {_mm512_castps_si512(a.v)}; }
inline V16 AsFloat(I16 a) { return {_mm512_castsi512_ps(a.v)}; }
inline I16 Set1I(int32_t x) { return {_mm512_set1_epi32(x)}; }
inline I16 AddI(I16 a, I16 b) { return {_mm512_add_epi32(a.v, b.v)}; }
inline I16 AndI(I16 a, I16 b) { return {_mm512_and_si512(a.v, b.v)}; }
inline I16 OrI(I16 a, I16 b) { return {_mm512_or_si512(a.v, b.v)}; }
template <int kBits>
inline I16 ShiftRightI(I16 a) {  // logical
  return {_mm512_maskz_srli_epi32(kAll, a.v, kBits)};
}
template <int kBits>
inline I16 ShiftLeftI(I16 a) {
  return {_mm512_maskz_slli_epi32(kAll, a.v, kBits)};
}
inline M16 CmpEqI(I16 a, I16 b) { return {_mm512_cmpeq_epi32_mask(a.v, b.v)}; }
inline I16 SelectI(M16 m, I16 if_true, I16 if_false) {
  return {_mm512_mask_blend_epi32(m.m, if_false.v, if_true.v)};
}
// 16 uint16 values, zero-extended to 32-bit lanes.
inline I16 LoadU16(const uint16_t* p) {
  return {_mm512_maskz_cvtepu16_epi32(
      kAll, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)))};
}
// The first n (0..16) values; the rest read as 0 and are not touched.
inline I16 LoadU16N(const uint16_t* p, int n) {
  return {_mm512_maskz_cvtepu16_epi32(kAll, _mm256_maskz_loadu_epi16(TailMask(n).m, p))};
}
// The low 16 bits of each lane.
inline void StoreU16(uint16_t* p, I16 a) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_maskz_cvtepi32_epi16(kAll, a.v));
}
inline void StoreU16N(uint16_t* p, I16 a, int n) {
  _mm512_mask_cvtepi32_storeu_epi16(p, TailMask(n).m, a.v);
}

}  // namespace maskserve::engine::kernels::avx512
#pragma GCC pop_options

// ---------------------------------------------------------------------------
// AVX2 backend: lanes 0-7 in lo, 8-15 in hi; a mask lane is all ones or all
// zeros. Compiled for the engine's baseline (x86-64-v3), no target region.
namespace maskserve::engine::kernels::avx2 {

inline constexpr int kV16Registers = 8;  // 16 ymm registers

struct V16 {
  __m256 lo, hi;
};
struct M16 {
  __m256 lo, hi;
};
struct I16 {
  __m256i lo, hi;
};

// TailMask(n) reads 16 lanes of this table starting at 16 - n.
alignas(64) inline constexpr int32_t kTailTable[32] = {
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0};

inline V16 Zero() { return {_mm256_setzero_ps(), _mm256_setzero_ps()}; }
inline V16 Set1(float x) { return {_mm256_set1_ps(x), _mm256_set1_ps(x)}; }
inline V16 Load(const float* p) { return {_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)}; }
inline void Store(float* p, V16 a) {
  _mm256_storeu_ps(p, a.lo);
  _mm256_storeu_ps(p + 8, a.hi);
}

// n in [0, 16].
inline M16 TailMask(int n) {
  const int32_t* t = kTailTable + 16 - n;
  return {_mm256_castsi256_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(t))),
          _mm256_castsi256_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(t + 8)))};
}
inline M16 AllLanes() { return TailMask(16); }
// VMASKMOVPS: masked-off lanes are neither read (no fault) nor written.
inline V16 MaskLoad(const float* p, M16 m) {
  return {_mm256_maskload_ps(p, _mm256_castps_si256(m.lo)),
          _mm256_maskload_ps(p + 8, _mm256_castps_si256(m.hi))};
}
inline void MaskStore(float* p, M16 m, V16 a) {
  _mm256_maskstore_ps(p, _mm256_castps_si256(m.lo), a.lo);
  _mm256_maskstore_ps(p + 8, _mm256_castps_si256(m.hi), a.hi);
}
inline uint32_t MaskBits(M16 m) {
  return static_cast<uint32_t>(_mm256_movemask_ps(m.lo)) |
         (static_cast<uint32_t>(_mm256_movemask_ps(m.hi)) << 8);
}
inline M16 MaskAnd(M16 a, M16 b) { return {_mm256_and_ps(a.lo, b.lo), _mm256_and_ps(a.hi, b.hi)}; }
inline M16 MaskOr(M16 a, M16 b) { return {_mm256_or_ps(a.lo, b.lo), _mm256_or_ps(a.hi, b.hi)}; }
inline M16 MaskNot(M16 a) {
  const __m256 ones = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
  return {_mm256_xor_ps(a.lo, ones), _mm256_xor_ps(a.hi, ones)};
}

inline V16 Add(V16 a, V16 b) { return {_mm256_add_ps(a.lo, b.lo), _mm256_add_ps(a.hi, b.hi)}; }
inline V16 Sub(V16 a, V16 b) { return {_mm256_sub_ps(a.lo, b.lo), _mm256_sub_ps(a.hi, b.hi)}; }
inline V16 Mul(V16 a, V16 b) { return {_mm256_mul_ps(a.lo, b.lo), _mm256_mul_ps(a.hi, b.hi)}; }
inline V16 Div(V16 a, V16 b) { return {_mm256_div_ps(a.lo, b.lo), _mm256_div_ps(a.hi, b.hi)}; }
inline V16 Fmadd(V16 a, V16 b, V16 c) {
  return {_mm256_fmadd_ps(a.lo, b.lo, c.lo), _mm256_fmadd_ps(a.hi, b.hi, c.hi)};
}
inline V16 Fnmadd(V16 a, V16 b, V16 c) {
  return {_mm256_fnmadd_ps(a.lo, b.lo, c.lo), _mm256_fnmadd_ps(a.hi, b.hi, c.hi)};
}
inline V16 Fmsub(V16 a, V16 b, V16 c) {
  return {_mm256_fmsub_ps(a.lo, b.lo, c.lo), _mm256_fmsub_ps(a.hi, b.hi, c.hi)};
}
inline V16 Min(V16 a, V16 b) { return {_mm256_min_ps(a.lo, b.lo), _mm256_min_ps(a.hi, b.hi)}; }
inline V16 Max(V16 a, V16 b) { return {_mm256_max_ps(a.lo, b.lo), _mm256_max_ps(a.hi, b.hi)}; }
inline V16 Abs(V16 a) {
  const __m256 m = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  return {_mm256_and_ps(a.lo, m), _mm256_and_ps(a.hi, m)};
}

inline M16 CmpLt(V16 a, V16 b) {
  return {_mm256_cmp_ps(a.lo, b.lo, _CMP_LT_OQ), _mm256_cmp_ps(a.hi, b.hi, _CMP_LT_OQ)};
}
inline M16 CmpLe(V16 a, V16 b) {
  return {_mm256_cmp_ps(a.lo, b.lo, _CMP_LE_OQ), _mm256_cmp_ps(a.hi, b.hi, _CMP_LE_OQ)};
}
inline M16 CmpGt(V16 a, V16 b) {
  return {_mm256_cmp_ps(a.lo, b.lo, _CMP_GT_OQ), _mm256_cmp_ps(a.hi, b.hi, _CMP_GT_OQ)};
}
inline M16 CmpGe(V16 a, V16 b) {
  return {_mm256_cmp_ps(a.lo, b.lo, _CMP_GE_OQ), _mm256_cmp_ps(a.hi, b.hi, _CMP_GE_OQ)};
}
inline M16 CmpEq(V16 a, V16 b) {
  return {_mm256_cmp_ps(a.lo, b.lo, _CMP_EQ_OQ), _mm256_cmp_ps(a.hi, b.hi, _CMP_EQ_OQ)};
}
inline V16 Select(M16 m, V16 if_true, V16 if_false) {
  return {_mm256_blendv_ps(if_false.lo, if_true.lo, m.lo),
          _mm256_blendv_ps(if_false.hi, if_true.hi, m.hi)};
}

inline V16 RoundNearest(V16 a) {
  constexpr int kMode = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  return {_mm256_round_ps(a.lo, kMode), _mm256_round_ps(a.hi, kMode)};
}

// 2^k for integer lanes k in [-126, 127], built in the exponent field.
inline __m256 Pow2(__m256i k) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k, _mm256_set1_epi32(127)), 23));
}
inline __m256 Scalef8(__m256 x, __m256 n) {
  // floor(n) clamped to [-252, 254] is split into a = floor(n/2) and b = n - a,
  // both in [-126, 127], so 2^a and 2^b are normal floats and x * 2^a * 2^b
  // rounds once wherever x * 2^a stays normal.
  n = _mm256_min_ps(_mm256_max_ps(_mm256_floor_ps(n), _mm256_set1_ps(-252.0f)),
                    _mm256_set1_ps(254.0f));
  const __m256i ni = _mm256_cvtps_epi32(n);
  const __m256i a = _mm256_srai_epi32(ni, 1);
  const __m256i b = _mm256_sub_epi32(ni, a);
  return _mm256_mul_ps(_mm256_mul_ps(x, Pow2(a)), Pow2(b));
}
// x * 2^floor(n), saturating to +-inf / +-0 like VSCALEFPS. Bit-identical to
// it for finite n when x is +-0, +-inf, NaN or 2^-102 <= |x| <= 2^102 (the
// kernels scale polynomial values in [0.5, 2]); outside that range a result
// in the subnormal range may differ in its last bit, and |x| > 2^102 with
// n < -252 gives a tiny subnormal instead of 0.
inline V16 Scalef(V16 x, V16 n) { return {Scalef8(x.lo, n.lo), Scalef8(x.hi, n.hi)}; }

// Same pairing order as the AVX-512 backend.
inline float ReduceAdd(V16 a) {
  const __m256 s8 = _mm256_add_ps(a.hi, a.lo);
  const __m128 s4 = _mm_add_ps(_mm256_extractf128_ps(s8, 1), _mm256_castps256_ps128(s8));
  const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
}
inline float ReduceMax(V16 a) {
  const __m256 s8 = _mm256_max_ps(a.hi, a.lo);
  const __m128 s4 = _mm_max_ps(_mm256_extractf128_ps(s8, 1), _mm256_castps256_ps128(s8));
  const __m128 s2 = _mm_max_ps(s4, _mm_movehl_ps(s4, s4));
  return _mm_cvtss_f32(_mm_max_ss(s2, _mm_movehdup_ps(s2)));
}

// Integer lanes.
inline I16 AsInt(V16 a) { return {_mm256_castps_si256(a.lo), _mm256_castps_si256(a.hi)}; }
inline V16 AsFloat(I16 a) { return {_mm256_castsi256_ps(a.lo), _mm256_castsi256_ps(a.hi)}; }
inline I16 Set1I(int32_t x) { return {_mm256_set1_epi32(x), _mm256_set1_epi32(x)}; }
inline I16 AddI(I16 a, I16 b) {
  return {_mm256_add_epi32(a.lo, b.lo), _mm256_add_epi32(a.hi, b.hi)};
}
inline I16 AndI(I16 a, I16 b) {
  return {_mm256_and_si256(a.lo, b.lo), _mm256_and_si256(a.hi, b.hi)};
}
inline I16 OrI(I16 a, I16 b) { return {_mm256_or_si256(a.lo, b.lo), _mm256_or_si256(a.hi, b.hi)}; }
template <int kBits>
inline I16 ShiftRightI(I16 a) {  // logical
  return {_mm256_srli_epi32(a.lo, kBits), _mm256_srli_epi32(a.hi, kBits)};
}
template <int kBits>
inline I16 ShiftLeftI(I16 a) {
  return {_mm256_slli_epi32(a.lo, kBits), _mm256_slli_epi32(a.hi, kBits)};
}
inline M16 CmpEqI(I16 a, I16 b) {
  return {_mm256_castsi256_ps(_mm256_cmpeq_epi32(a.lo, b.lo)),
          _mm256_castsi256_ps(_mm256_cmpeq_epi32(a.hi, b.hi))};
}
inline I16 SelectI(M16 m, I16 if_true, I16 if_false) {
  return {_mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(if_false.lo),
                                               _mm256_castsi256_ps(if_true.lo), m.lo)),
          _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(if_false.hi),
                                               _mm256_castsi256_ps(if_true.hi), m.hi))};
}
// 16 uint16 values, zero-extended to 32-bit lanes.
inline I16 LoadU16(const uint16_t* p) {
  return {_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))),
          _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 8)))};
}
// The first n (0..16) values; the rest read as 0 and are not touched. AVX2
// has no 16-bit masked load, so the tail goes through a stack buffer.
inline I16 LoadU16N(const uint16_t* p, int n) {
  alignas(32) uint16_t buf[16] = {};
  if (n > 0) std::memcpy(buf, p, static_cast<size_t>(n) * sizeof(uint16_t));
  return LoadU16(buf);
}
// The low 16 bits of each lane.
inline void StoreU16(uint16_t* p, I16 a) {
  const __m256i low = _mm256_set1_epi32(0xffff);
  // packus works within 128-bit halves: [lo0-3 hi0-3 | lo4-7 hi4-7]; the
  // permute restores lane order. Values are < 2^16, so nothing saturates.
  const __m256i packed =
      _mm256_packus_epi32(_mm256_and_si256(a.lo, low), _mm256_and_si256(a.hi, low));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm256_permute4x64_epi64(packed, 0xD8));
}
inline void StoreU16N(uint16_t* p, I16 a, int n) {
  alignas(32) uint16_t buf[16];
  StoreU16(buf, a);
  if (n > 0) std::memcpy(p, buf, static_cast<size_t>(n) * sizeof(uint16_t));
}

}  // namespace maskserve::engine::kernels::avx2
