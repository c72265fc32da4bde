#include "engine/decode_attention.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/onednn/engine_context.h"

// GCC 12 reports false -Wmaybe-uninitialized inside its own intrinsics
// headers (PR105593); keep it out of this file's diagnostics.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

namespace maskserve::engine {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
// Below this many multiply-adds a call runs on the calling thread only
// (waking a passive OpenMP team costs tens of us).
constexpr int64_t kParallelMin = int64_t{1} << 18;

inline float HSum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)));
}

inline float Dot(const float* a, const float* b, int d) {
  __m256 s0 = _mm256_setzero_ps(), s1 = s0;
  int c = 0;
  for (; c + 16 <= d; c += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + c), _mm256_loadu_ps(b + c), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + c + 8), _mm256_loadu_ps(b + c + 8), s1);
  }
  if (c + 8 <= d) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + c), _mm256_loadu_ps(b + c), s0);
    c += 8;
  }
  const __m256 s = _mm256_add_ps(s0, s1);
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  if (c + 4 <= d) {
    // Narrow heads (e.g. 4 floats): one 128-bit FMA instead of a scalar loop.
    h = _mm_fmadd_ps(_mm_loadu_ps(a + c), _mm_loadu_ps(b + c), h);
    c += 4;
  }
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  float r = _mm_cvtss_f32(_mm_add_ss(h, _mm_shuffle_ps(h, h, 1)));
  for (; c < d; ++c) r += a[c] * b[c];
  return r;
}

// The dot products of `a` with four rows b0..b3 (d a multiple of 8), the
// four horizontal sums folded together.
inline __m128 Dot4(const float* a, const float* b0, const float* b1, const float* b2,
                   const float* b3, int d) {
  __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  for (int c = 0; c < d; c += 8) {
    const __m256 av = _mm256_loadu_ps(a + c);
    s0 = _mm256_fmadd_ps(av, _mm256_loadu_ps(b0 + c), s0);
    s1 = _mm256_fmadd_ps(av, _mm256_loadu_ps(b1 + c), s1);
    s2 = _mm256_fmadd_ps(av, _mm256_loadu_ps(b2 + c), s2);
    s3 = _mm256_fmadd_ps(av, _mm256_loadu_ps(b3 + c), s3);
  }
  const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(s0, s1), _mm256_hadd_ps(s2, s3));
  return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

// y += p * x over d floats.
inline void Axpy(float p, const float* x, float* y, int d) {
  const __m256 pv = _mm256_set1_ps(p);
  int c = 0;
  for (; c + 8 <= d; c += 8) {
    _mm256_storeu_ps(y + c, _mm256_fmadd_ps(pv, _mm256_loadu_ps(x + c), _mm256_loadu_ps(y + c)));
  }
  if (c + 4 <= d) {
    _mm_storeu_ps(
        y + c, _mm_fmadd_ps(_mm256_castps256_ps128(pv), _mm_loadu_ps(x + c), _mm_loadu_ps(y + c)));
    c += 4;
  }
  for (; c < d; ++c) y[c] += p * x[c];
}

// exp(x) for x <= 0 (Cephes expf polynomial, ~1 ulp); -inf gives exactly 0.
inline __m256 Exp8(__m256 x) {
  const __m256 masked = _mm256_cmp_ps(x, _mm256_set1_ps(kNegInf), _CMP_EQ_OQ);
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.33654f));
  const __m256 fx = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i e =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
  return _mm256_andnot_ps(masked, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

// dst[0, 8 NV) = inv * sum_j p[j] * v[j][0, 8 NV), the accumulators held
// in registers (named locals: GCC stores __m256 arrays back every iteration).
template <int NV>
void PvRegisters(const float* p, const float* const* v, int n, float inv, float* dst) {
  static_assert(NV >= 1 && NV <= 8);
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
  for (int j = 0; j < n; ++j) {
    if (p[j] == 0.0f) continue;
    const __m256 pj = _mm256_set1_ps(p[j]);
    const float* vr = v[j];
    a0 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vr), a0);
    if constexpr (NV > 1) a1 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vr + 8), a1);
    if constexpr (NV > 2) a2 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vr + 16), a2);
    if constexpr (NV > 3) a3 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vr + 24), a3);
    if constexpr (NV > 4) a4 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vr + 32), a4);
    if constexpr (NV > 5) a5 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vr + 40), a5);
    if constexpr (NV > 6) a6 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vr + 48), a6);
    if constexpr (NV > 7) a7 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vr + 56), a7);
  }
  const __m256 s = _mm256_set1_ps(inv);
  _mm256_storeu_ps(dst, _mm256_mul_ps(a0, s));
  if constexpr (NV > 1) _mm256_storeu_ps(dst + 8, _mm256_mul_ps(a1, s));
  if constexpr (NV > 2) _mm256_storeu_ps(dst + 16, _mm256_mul_ps(a2, s));
  if constexpr (NV > 3) _mm256_storeu_ps(dst + 24, _mm256_mul_ps(a3, s));
  if constexpr (NV > 4) _mm256_storeu_ps(dst + 32, _mm256_mul_ps(a4, s));
  if constexpr (NV > 5) _mm256_storeu_ps(dst + 40, _mm256_mul_ps(a5, s));
  if constexpr (NV > 6) _mm256_storeu_ps(dst + 48, _mm256_mul_ps(a6, s));
  if constexpr (NV > 7) _mm256_storeu_ps(dst + 56, _mm256_mul_ps(a7, s));
}

using PvFn = void (*)(const float*, const float* const*, int, float, float*);
constexpr PvFn kPv[9] = {nullptr,         &PvRegisters<1>, &PvRegisters<2>,
                         &PvRegisters<3>, &PvRegisters<4>, &PvRegisters<5>,
                         &PvRegisters<6>, &PvRegisters<7>, &PvRegisters<8>};

// Any width: accumulate in dst (zeroed first), then scale.
void PvMemory(const float* p, const float* const* v, int n, float inv, float* dst, int d) {
  std::fill(dst, dst + d, 0.0f);
  for (int j = 0; j < n; ++j) {
    if (p[j] != 0.0f) Axpy(p[j], v[j], dst, d);
  }
  for (int c = 0; c < d; ++c) dst[c] *= inv;
}

// s[i] = exp(s[i] - max) in place; returns the sum (0 when all are -inf).
float SoftmaxNumerators(float* s, int n) {
  __m256 mv = _mm256_set1_ps(kNegInf);
  int i = 0;
  for (; i + 8 <= n; i += 8) mv = _mm256_max_ps(mv, _mm256_loadu_ps(s + i));
  alignas(32) float t[8];
  _mm256_store_ps(t, mv);
  float mx = *std::max_element(t, t + 8);
  for (; i < n; ++i) mx = std::max(mx, s[i]);
  if (mx == kNegInf) {
    std::fill(s, s + n, 0.0f);
    return 0.0f;
  }
  const __m256 m8 = _mm256_set1_ps(mx);
  __m256 sum = _mm256_setzero_ps();
  for (i = 0; i + 8 <= n; i += 8) {
    const __m256 e = Exp8(_mm256_sub_ps(_mm256_loadu_ps(s + i), m8));
    _mm256_storeu_ps(s + i, e);
    sum = _mm256_add_ps(sum, e);
  }
  float total = HSum(sum);
  for (; i < n; ++i) {
    s[i] = s[i] == kNegInf ? 0.0f : std::exp(s[i] - mx);
    total += s[i];
  }
  return total;
}

}  // namespace

bool IsDecodeStep(absl::Span<const AttentionMask> masks) {
  for (const AttentionMask& m : masks) {
    if (m.q_len() > 1) return false;
  }
  return true;
}

absl::Status DecodeAttention(const AttentionOptions& o, const float* q, int64_t q_stride,
                             absl::Span<const int32_t> cu_seqlens_q, const KvSource& kv,
                             absl::Span<const AttentionMask> masks, float* out,
                             int64_t out_stride) {
  if (o.num_heads < 1 || o.num_kv_heads < 1 || o.head_dim < 1 ||
      o.num_heads % o.num_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("attention: bad heads ", o.num_heads,
                                                   " / kv heads ", o.num_kv_heads, " / head_dim ",
                                                   o.head_dim));
  }
  const int64_t width = int64_t{o.num_heads} * o.head_dim;
  if (q_stride < width || out_stride < width) {
    return absl::InvalidArgumentError("attention: q/out row strides below num_heads * head_dim");
  }
  if (cu_seqlens_q.size() != masks.size() + 1) {
    return absl::InvalidArgumentError(absl::StrCat("attention: cu_seqlens_q has ",
                                                   cu_seqlens_q.size(), " entries for ",
                                                   masks.size(), " sequences"));
  }
  const int num_seqs = static_cast<int>(masks.size());
  int64_t cost = 0;
  for (int b = 0; b < num_seqs; ++b) {
    const AttentionMask& m = masks[b];
    if (m.q_len() > 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("DecodeAttention: sequence ", b, " has ", m.q_len(), " query rows"));
    }
    if (cu_seqlens_q[b + 1] - cu_seqlens_q[b] != m.q_len()) {
      return absl::InvalidArgumentError(
          absl::StrCat("attention: sequence ", b, " rows do not match its mask q_len"));
    }
    if (kv.NumKeys(b) != m.k_len()) {
      return absl::InvalidArgumentError(absl::StrCat("attention: sequence ", b, " has ",
                                                     kv.NumKeys(b), " keys but its mask has k_len ",
                                                     m.k_len()));
    }
    cost += int64_t{m.q_len()} * m.k_len() * width;
  }
  const int kvh = o.num_kv_heads;
  const int group = o.num_heads / kvh;
  const int d = o.head_dim;
  const int64_t work = int64_t{num_seqs} * kvh;
  const int nthr = cost < kParallelMin ? 1 : SyncThreadCount();
  std::atomic<bool> failed{false};
#pragma omp parallel num_threads(nthr) if (nthr > 1)
  {
    thread_local std::vector<float> scores;
    thread_local std::vector<const float*> vrows;
#pragma omp for schedule(dynamic, 1)
    for (int64_t w = 0; w < work; ++w) {
      const int b = static_cast<int>(w / kvh);
      const int g = static_cast<int>(w % kvh);
      const AttentionMask& mask = masks[b];
      if (mask.q_len() == 0) continue;
      const int64_t row = cu_seqlens_q[b];
      const float scale = EffectiveAttentionScale(o, mask.k_len());
      const KeySpan range = mask.KeyRange(0, 1);
      const int n = std::max(0, range.end - range.begin);
      scores.resize(static_cast<size_t>(group) * std::max(n, 1));
      vrows.resize(std::max(n, 1));
      const float* qh = q + row * q_stride + int64_t{g} * group * d;
      float* oh = out + row * out_stride + int64_t{g} * group * d;
      // Scores of every query head of the group; masked keys get -inf.
      for (int key = range.begin; key < range.end;) {
        const KvRun run = kv.Fetch(b, g, key, range.end - key);
        if (run.count <= 0 || run.k == nullptr || run.v == nullptr) {
          failed.store(true, std::memory_order_relaxed);
          break;
        }
        const BlockState state = mask.Classify(0, 1, key, key + run.count);
        int t = 0;
        if (state == BlockState::kFull && d % 8 == 0) {
          // Every key allowed: four keys per pass.
          const __m128 sc = _mm_set1_ps(scale);
          for (; t + 4 <= run.count; t += 4) {
            const float* k0 = run.k + t * run.k_stride;
            const int j = key + t - range.begin;
            for (int u = 0; u < 4; ++u) vrows[j + u] = run.v + (t + u) * run.v_stride;
            for (int hh = 0; hh < group; ++hh) {
              _mm_storeu_ps(scores.data() + static_cast<size_t>(hh) * n + j,
                            _mm_mul_ps(sc, Dot4(qh + hh * d, k0, k0 + run.k_stride,
                                                k0 + 2 * run.k_stride, k0 + 3 * run.k_stride, d)));
            }
          }
        }
        for (; t < run.count; ++t) {
          const int j = key + t;
          const bool ok =
              state == BlockState::kFull || (state == BlockState::kPartial && mask.Allowed(0, j));
          const float* kr = run.k + t * run.k_stride;
          vrows[j - range.begin] = run.v + t * run.v_stride;
          for (int hh = 0; hh < group; ++hh) {
            scores[static_cast<size_t>(hh) * n + (j - range.begin)] =
                ok ? Dot(qh + hh * d, kr, d) * scale : kNegInf;
          }
        }
        key += run.count;
      }
      if (failed.load(std::memory_order_relaxed)) continue;
      if (o.bias.table != nullptr) {
        // Relative-position bias of the query (position q_offset) against
        // keys range.begin + j: entry center + q_offset - key.
        for (int hh = 0; hh < group; ++hh) {
          const float* brow = o.bias.table + int64_t{g * group + hh} * o.bias.head_stride +
                              o.bias.center + mask.q_offset() - range.begin;
          float* p = scores.data() + static_cast<size_t>(hh) * n;
          for (int j = 0; j < n; ++j) p[j] += brow[-j];
        }
      }
      const bool in_registers = d % 8 == 0 && d <= 64;
      for (int hh = 0; hh < group; ++hh) {
        float* p = scores.data() + static_cast<size_t>(hh) * n;
        const float sum = SoftmaxNumerators(p, n);
        const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
        if (in_registers) {
          kPv[d / 8](p, vrows.data(), n, inv, oh + hh * d);
        } else {
          PvMemory(p, vrows.data(), n, inv, oh + hh * d, d);
        }
      }
    }
  }
  if (failed.load()) return absl::InternalError("attention: KvSource returned an empty run");
  return absl::OkStatus();
}

}  // namespace maskserve::engine
