#include "engine/attention.h"

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"

namespace maskserve::engine {
namespace {

constexpr int kBQ = kAttentionBlockQ;
constexpr int kBK = kAttentionBlockK;
// Keys per step of the score micro-kernel (8 keys x 2 vectors of 16 query
// rows = 16 accumulators).
constexpr int kKeyGroup = 8;
static_assert(kBQ == 32, "the micro-kernels hold a query block in 2 vectors");
static_assert(kBK % kKeyGroup == 0);

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr __mmask16 kAllLanes = 0xFFFF;

// GCC 12 warns (-Wmaybe-uninitialized) about the unmasked forms of these
// intrinsics, whose pass-through operand is _mm512_undefined_ps(); the
// zero-masking forms with every lane set compile to the same instruction.
inline __m512 Max512(__m512 a, __m512 b) { return _mm512_maskz_max_ps(kAllLanes, a, b); }
inline __m512 Min512(__m512 a, __m512 b) { return _mm512_maskz_min_ps(kAllLanes, a, b); }

// e^x, max rel. error ~2 ulp for x in [-87, 88]; anything below -87.3 (masked
// scores are -inf) gives exactly 0 so masked pairs contribute nothing.
inline __m512 Exp512(__m512 x) {
  const __m512 lo = _mm512_set1_ps(-87.33654f);
  const __mmask16 live = _mm512_cmp_ps_mask(x, lo, _CMP_GE_OQ);
  x = Min512(Max512(x, lo), _mm512_set1_ps(88.3762626647949f));
  const __m512 n =
      _mm512_maskz_roundscale_ps(kAllLanes, _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                 _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  const __m512 r2 = _mm512_mul_ps(r, r);
  p = _mm512_fmadd_ps(p, r2, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_maskz_scalef_ps(live, p, n);
}

// Scores of one tile, key-major: st[j * kBQ + i] = sum_c qt[c * kBQ + i] *
// kp[j][c] for j < round_up(nk, kKeyGroup). Keeping queries in the vector
// lanes lets keys be read straight from the cache (no transpose/pack) and
// makes the softmax reductions over keys plain element-wise max/add.
template <int NV>
void ScoreTile(const float* qt, int d, const float* const* kp, int nk, float* st) {
  for (int jb = 0; jb < nk; jb += kKeyGroup) {
    const float* p[kKeyGroup];
    for (int t = 0; t < kKeyGroup; ++t) p[t] = kp[jb + t];
    __m512 a[kKeyGroup][NV];
#pragma GCC unroll 8
    for (int t = 0; t < kKeyGroup; ++t) {
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) a[t][v] = _mm512_setzero_ps();
    }
    for (int c = 0; c < d; ++c) {
      __m512 qv[NV];
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) qv[v] = _mm512_loadu_ps(qt + c * kBQ + 16 * v);
#pragma GCC unroll 8
      for (int t = 0; t < kKeyGroup; ++t) {
        const __m512 b = _mm512_set1_ps(p[t][c]);
#pragma GCC unroll 2
        for (int v = 0; v < NV; ++v) a[t][v] = _mm512_fmadd_ps(b, qv[v], a[t][v]);
      }
    }
#pragma GCC unroll 8
    for (int t = 0; t < kKeyGroup; ++t) {
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) {
        _mm512_storeu_ps(st + (jb + t) * kBQ + 16 * v, a[t][v]);
      }
    }
  }
}

// Online-softmax update for one tile of key-major scores (keys j < nk):
// turns st into probabilities relative to the new running max and returns in
// corr the factor by which each row's previous accumulator must be scaled.
template <int NV>
void SoftmaxTile(float* st, int nk, float* m, float* l, float* corr) {
  for (int v = 0; v < NV; ++v) {
    __m512 tmax = _mm512_set1_ps(kNegInf);
    for (int j = 0; j < nk; ++j) {
      tmax = Max512(tmax, _mm512_loadu_ps(st + j * kBQ + 16 * v));
    }
    const __m512 mold = _mm512_loadu_ps(m + 16 * v);
    const __m512 mnew = Max512(mold, tmax);
    // Rows with nothing allowed yet keep m = -inf; subtracting 0 instead
    // avoids inf - inf and still gives exp(-inf) = 0 for their scores.
    const __mmask16 none = _mm512_cmp_ps_mask(mnew, _mm512_set1_ps(kNegInf), _CMP_EQ_OQ);
    const __m512 base = _mm512_mask_mov_ps(mnew, none, _mm512_setzero_ps());
    const __m512 c = Exp512(_mm512_sub_ps(mold, base));
    __m512 sum = _mm512_setzero_ps();
    for (int j = 0; j < nk; ++j) {
      float* s = st + j * kBQ + 16 * v;
      const __m512 pj = Exp512(_mm512_sub_ps(_mm512_loadu_ps(s), base));
      _mm512_storeu_ps(s, pj);
      sum = _mm512_add_ps(sum, pj);
    }
    const __m512 lold = _mm512_loadu_ps(l + 16 * v);
    _mm512_storeu_ps(l + 16 * v, _mm512_fmadd_ps(lold, c, sum));
    _mm512_storeu_ps(m + 16 * v, mnew);
    _mm512_storeu_ps(corr + 16 * v, c);
  }
}

// acc[i][cb + 16v ..] += sum_{j < nk} pt[j * kBQ + i] * vp[j][cb + 16v ..] for
// rows i0..i0+3 and NV vectors of columns starting at cb.
template <int NV>
void PvChunk(const float* pt, const float* const* vp, int nk, int i0, int cb, int d, int dp,
             float* acc) {
  __mmask16 lanes[NV];
  for (int v = 0; v < NV; ++v) {
    const int left = std::clamp(d - (cb + 16 * v), 0, 16);
    lanes[v] = static_cast<__mmask16>((1u << left) - 1u);
  }
  __m512 a[4][NV];
#pragma GCC unroll 4
  for (int r = 0; r < 4; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      a[r][v] = _mm512_loadu_ps(acc + (i0 + r) * dp + cb + 16 * v);
    }
  }
  for (int j = 0; j < nk; ++j) {
    __m512 vv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      vv[v] = _mm512_maskz_loadu_ps(lanes[v], vp[j] + cb + 16 * v);
    }
    const float* pj = pt + j * kBQ + i0;
#pragma GCC unroll 4
    for (int r = 0; r < 4; ++r) {
      const __m512 b = _mm512_set1_ps(pj[r]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) a[r][v] = _mm512_fmadd_ps(b, vv[v], a[r][v]);
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < 4; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      _mm512_storeu_ps(acc + (i0 + r) * dp + cb + 16 * v, a[r][v]);
    }
  }
}

void PvTile(const float* pt, const float* const* vp, int nk, int nq4, int d, int dp, float* acc) {
  for (int i0 = 0; i0 < nq4; i0 += 4) {
    for (int cb = 0; cb < dp; cb += 64) {
      switch (std::min(4, (dp - cb) / 16)) {
        case 1:
          PvChunk<1>(pt, vp, nk, i0, cb, d, dp, acc);
          break;
        case 2:
          PvChunk<2>(pt, vp, nk, i0, cb, d, dp, acc);
          break;
        case 3:
          PvChunk<3>(pt, vp, nk, i0, cb, d, dp, acc);
          break;
        default:
          PvChunk<4>(pt, vp, nk, i0, cb, d, dp, acc);
          break;
      }
    }
  }
}

// Per-thread buffers, sized once per call.
struct Scratch {
  explicit Scratch(int d, int dp)
      : qt(static_cast<size_t>(d) * kBQ),
        st(static_cast<size_t>(kBK) * kBQ),
        acc(static_cast<size_t>(kBQ) * dp),
        zero_row(static_cast<size_t>(dp), 0.0f),
        kp(kBK + kKeyGroup),
        vp(kBK + kKeyGroup) {}
  std::vector<float> qt;   // [d][kBQ] scaled queries, transposed
  std::vector<float> st;   // [kBK][kBQ] scores, then probabilities
  std::vector<float> acc;  // [kBQ][dp] unnormalised outputs
  std::vector<float> zero_row;
  std::vector<const float*> kp;  // key row pointers of the current tile
  std::vector<const float*> vp;  // value row pointers of the current tile
  alignas(64) float m[kBQ];
  alignas(64) float l[kBQ];
  alignas(64) float corr[kBQ];
};

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

absl::Status ValidateCommon(const AttentionOptions& o, int64_t q_stride, int64_t out_stride,
                            absl::Span<const int32_t> cu_seqlens_q,
                            absl::Span<const AttentionMask> masks) {
  if (o.num_heads < 1 || o.num_kv_heads < 1 || o.head_dim < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("attention: num_heads, num_kv_heads and head_dim must be >= 1, got ",
                     o.num_heads, ", ", o.num_kv_heads, ", ", o.head_dim));
  }
  if (o.num_heads % o.num_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("attention: num_kv_heads ", o.num_kv_heads,
                                                   " does not divide num_heads ", o.num_heads));
  }
  if (o.log_n_train_length < 0 || o.log_n_train_length == 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "attention: log_n_train_length must be 0 (off) or >= 2, got ", o.log_n_train_length));
  }
  if (!std::isfinite(o.scale)) {
    return absl::InvalidArgumentError("attention: scale must be finite");
  }
  const int64_t width = int64_t{o.num_heads} * o.head_dim;
  if (q_stride < width || out_stride < width) {
    return absl::InvalidArgumentError(absl::StrCat("attention: q/out row strides (", q_stride, ", ",
                                                   out_stride,
                                                   ") must be >= num_heads * head_dim = ", width));
  }
  if (cu_seqlens_q.size() != masks.size() + 1) {
    return absl::InvalidArgumentError(absl::StrCat("attention: cu_seqlens_q has ",
                                                   cu_seqlens_q.size(), " entries for ",
                                                   masks.size(), " sequences"));
  }
  if (!masks.empty() && cu_seqlens_q[0] < 0) {
    return absl::InvalidArgumentError("attention: cu_seqlens_q[0] < 0");
  }
  for (size_t b = 0; b < masks.size(); ++b) {
    const int n = cu_seqlens_q[b + 1] - cu_seqlens_q[b];
    if (n != masks[b].q_len()) {
      return absl::InvalidArgumentError(absl::StrCat("attention: sequence ", b, " has ", n,
                                                     " query rows but its mask has q_len ",
                                                     masks[b].q_len()));
    }
  }
  return absl::OkStatus();
}

}  // namespace

float EffectiveAttentionScale(const AttentionOptions& options, int k_len) {
  double scale = options.scale != 0.0f ? options.scale
                                       : 1.0 / std::sqrt(static_cast<double>(options.head_dim));
  if (options.log_n_train_length > 1 && k_len >= 1) {
    scale *= std::log(static_cast<double>(k_len)) /
             std::log(static_cast<double>(options.log_n_train_length));
  }
  return static_cast<float>(scale);
}

ContiguousKv::ContiguousKv(const float* k, int64_t k_stride, const float* v, int64_t v_stride,
                           absl::Span<const int32_t> cu_seqlens_k, int head_dim)
    : k_(k),
      k_stride_(k_stride),
      v_(v),
      v_stride_(v_stride),
      cu_seqlens_k_(cu_seqlens_k),
      head_dim_(head_dim) {}

int ContiguousKv::NumKeys(int seq) const {
  if (seq < 0 || static_cast<size_t>(seq) + 1 >= cu_seqlens_k_.size()) return -1;
  return cu_seqlens_k_[seq + 1] - cu_seqlens_k_[seq];
}

KvRun ContiguousKv::Fetch(int seq, int kv_head, int key, int max_count) const {
  const int64_t row = int64_t{cu_seqlens_k_[seq]} + key;
  const int64_t col = int64_t{kv_head} * head_dim_;
  KvRun run;
  run.k = k_ + row * k_stride_ + col;
  run.v = v_ + row * v_stride_ + col;
  run.k_stride = k_stride_;
  run.v_stride = v_stride_;
  run.count = std::min(max_count, NumKeys(seq) - key);
  return run;
}

absl::Status FusedAttention(const AttentionOptions& options, const float* q, int64_t q_stride,
                            absl::Span<const int32_t> cu_seqlens_q, const KvSource& kv,
                            absl::Span<const AttentionMask> masks, float* out, int64_t out_stride,
                            AttentionStats* stats) {
  if (absl::Status s = ValidateCommon(options, q_stride, out_stride, cu_seqlens_q, masks);
      !s.ok()) {
    return s;
  }
  const int num_seqs = static_cast<int>(masks.size());
  const int heads = options.num_heads;
  const int group = options.num_heads / options.num_kv_heads;
  const int d = options.head_dim;
  const int dp = (d + 15) / 16 * 16;

  // Work items: (sequence, query block); heads are the inner index.
  struct Item {
    int seq;
    int q0;
  };
  std::vector<Item> items;
  std::vector<float> scales(num_seqs);
  AttentionStats total;
  for (int b = 0; b < num_seqs; ++b) {
    const AttentionMask& mask = masks[b];
    if (kv.NumKeys(b) != mask.k_len()) {
      return absl::InvalidArgumentError(absl::StrCat("attention: sequence ", b, " has ",
                                                     kv.NumKeys(b), " keys but its mask has k_len ",
                                                     mask.k_len()));
    }
    scales[b] = EffectiveAttentionScale(options, mask.k_len());
    for (int q0 = 0; q0 < mask.q_len(); q0 += kBQ) items.push_back({b, q0});
    total.blocks_dense += int64_t{heads} * CeilDiv(mask.q_len(), kBQ) * CeilDiv(mask.k_len(), kBK);
  }
  if (items.empty()) {
    if (stats != nullptr) *stats = total;
    return absl::OkStatus();
  }
  if (q == nullptr || out == nullptr) {
    return absl::InvalidArgumentError("attention: q and out must be non-null");
  }

  const int64_t num_work = static_cast<int64_t>(items.size()) * heads;
  std::atomic<bool> fetch_failed{false};
  int64_t full = 0;
  int64_t partial = 0;
  int64_t empty = 0;

#pragma omp parallel reduction(+ : full, partial, empty)
  {
    Scratch sc(d, dp);
#pragma omp for schedule(dynamic, 1)
    for (int64_t w = 0; w < num_work; ++w) {
      const Item item = items[w / heads];
      const int h = static_cast<int>(w % heads);
      const int g = h / group;
      const int b = item.seq;
      const int q0 = item.q0;
      const AttentionMask& mask = masks[b];
      const int nq = std::min(kBQ, mask.q_len() - q0);
      const int nq4 = (nq + 3) / 4 * 4;
      const float scale = scales[b];
      const int64_t row0 = int64_t{cu_seqlens_q[b]} + q0;

      // Scaled queries, transposed; unused lanes stay zero.
      std::fill(sc.qt.begin(), sc.qt.end(), 0.0f);
      for (int r = 0; r < nq; ++r) {
        const float* src = q + (row0 + r) * q_stride + int64_t{h} * d;
        for (int c = 0; c < d; ++c) sc.qt[c * kBQ + r] = src[c] * scale;
      }
      std::fill(sc.acc.begin(), sc.acc.end(), 0.0f);
      std::fill(std::begin(sc.m), std::end(sc.m), kNegInf);
      std::fill(std::begin(sc.l), std::end(sc.l), 0.0f);

      const KeySpan range = mask.KeyRange(q0, q0 + nq);
      for (int k0 = range.begin; k0 < range.end; k0 += kBK) {
        const int k1 = std::min(k0 + kBK, range.end);
        const BlockState state = mask.Classify(q0, q0 + nq, k0, k1);
        if (state == BlockState::kEmpty) {
          ++empty;
          continue;
        }
        (state == BlockState::kFull ? full : partial) += 1;
        const int nk = k1 - k0;

        // Row pointers of this tile's keys/values, run by run.
        int filled = 0;
        while (filled < nk) {
          const KvRun run = kv.Fetch(b, g, k0 + filled, nk - filled);
          const int cnt = std::min(run.count, nk - filled);
          if (cnt <= 0 || run.k == nullptr || run.v == nullptr) {
            fetch_failed.store(true, std::memory_order_relaxed);
            break;
          }
          for (int t = 0; t < cnt; ++t) {
            sc.kp[filled + t] = run.k + t * run.k_stride;
            sc.vp[filled + t] = run.v + t * run.v_stride;
          }
          filled += cnt;
        }
        if (filled < nk) break;
        for (int t = nk; t < kBK + kKeyGroup; ++t) {
          sc.kp[t] = sc.zero_row.data();
          sc.vp[t] = sc.zero_row.data();
        }

        float* st = sc.st.data();
        if (nq4 <= 16) {
          ScoreTile<1>(sc.qt.data(), d, sc.kp.data(), nk, st);
        } else {
          ScoreTile<2>(sc.qt.data(), d, sc.kp.data(), nk, st);
        }
        if (state == BlockState::kPartial) {
          for (int j = 0; j < nk; ++j) {
            float* srow = st + j * kBQ;
            for (int r = 0; r < nq; ++r) {
              if (!mask.Allowed(q0 + r, k0 + j)) srow[r] = kNegInf;
            }
          }
        }
        if (nq4 <= 16) {
          SoftmaxTile<1>(st, nk, sc.m, sc.l, sc.corr);
        } else {
          SoftmaxTile<2>(st, nk, sc.m, sc.l, sc.corr);
        }
        for (int r = 0; r < nq4; ++r) {
          const float c = sc.corr[r];
          if (c == 1.0f) continue;
          float* a = sc.acc.data() + r * dp;
          for (int x = 0; x < dp; ++x) a[x] *= c;
        }
        PvTile(st, sc.vp.data(), nk, nq4, d, dp, sc.acc.data());
      }

      for (int r = 0; r < nq; ++r) {
        float* dst = out + (row0 + r) * out_stride + int64_t{h} * d;
        const float inv = sc.l[r] > 0.0f ? 1.0f / sc.l[r] : 0.0f;
        const float* a = sc.acc.data() + r * dp;
        for (int c = 0; c < d; ++c) dst[c] = a[c] * inv;
      }
    }
  }

  if (fetch_failed.load()) {
    return absl::InternalError("attention: KvSource returned an empty run");
  }
  total.blocks_full = full;
  total.blocks_partial = partial;
  total.blocks_empty = empty;
  if (stats != nullptr) *stats = total;
  return absl::OkStatus();
}

absl::Status FusedAttention(const AttentionOptions& options, const float* q, int64_t q_stride,
                            const float* k, int64_t k_stride, const float* v, int64_t v_stride,
                            absl::Span<const int32_t> cu_seqlens_q,
                            absl::Span<const int32_t> cu_seqlens_k,
                            absl::Span<const AttentionMask> masks, float* out, int64_t out_stride,
                            AttentionStats* stats) {
  if (cu_seqlens_k.size() != masks.size() + 1) {
    return absl::InvalidArgumentError(absl::StrCat("attention: cu_seqlens_k has ",
                                                   cu_seqlens_k.size(), " entries for ",
                                                   masks.size(), " sequences"));
  }
  const int64_t kv_width = int64_t{options.num_kv_heads} * options.head_dim;
  if (k_stride < kv_width || v_stride < kv_width) {
    return absl::InvalidArgumentError(
        absl::StrCat("attention: k/v row strides (", k_stride, ", ", v_stride,
                     ") must be >= num_kv_heads * head_dim = ", kv_width));
  }
  const ContiguousKv kv(k, k_stride, v, v_stride, cu_seqlens_k, options.head_dim);
  return FusedAttention(options, q, q_stride, cu_seqlens_q, kv, masks, out, out_stride, stats);
}

absl::Status NaiveAttention(const AttentionOptions& options, const float* q, int64_t q_stride,
                            const float* k, int64_t k_stride, const float* v, int64_t v_stride,
                            absl::Span<const int32_t> cu_seqlens_q,
                            absl::Span<const int32_t> cu_seqlens_k,
                            absl::Span<const AttentionMask> masks, float* out, int64_t out_stride) {
  if (absl::Status s = ValidateCommon(options, q_stride, out_stride, cu_seqlens_q, masks);
      !s.ok()) {
    return s;
  }
  if (cu_seqlens_k.size() != masks.size() + 1) {
    return absl::InvalidArgumentError("attention: cu_seqlens_k size mismatch");
  }
  const int d = options.head_dim;
  const int group = options.num_heads / options.num_kv_heads;
  std::vector<double> scores;
  std::vector<double> acc(d);
  for (size_t b = 0; b < masks.size(); ++b) {
    const AttentionMask& mask = masks[b];
    if (cu_seqlens_k[b + 1] - cu_seqlens_k[b] != mask.k_len()) {
      return absl::InvalidArgumentError("attention: k_len mismatch");
    }
    const double scale = EffectiveAttentionScale(options, mask.k_len());
    scores.assign(mask.k_len(), 0.0);
    for (int h = 0; h < options.num_heads; ++h) {
      const int g = h / group;
      for (int r = 0; r < mask.q_len(); ++r) {
        const float* qr = q + (int64_t{cu_seqlens_q[b]} + r) * q_stride + int64_t{h} * d;
        double mx = -std::numeric_limits<double>::infinity();
        for (int j = 0; j < mask.k_len(); ++j) {
          if (!mask.Allowed(r, j)) continue;
          const float* kr = k + (int64_t{cu_seqlens_k[b]} + j) * k_stride + int64_t{g} * d;
          double dot = 0.0;
          for (int c = 0; c < d; ++c) dot += double{qr[c]} * kr[c];
          scores[j] = dot * scale;
          mx = std::max(mx, scores[j]);
        }
        std::fill(acc.begin(), acc.end(), 0.0);
        double sum = 0.0;
        for (int j = 0; j < mask.k_len(); ++j) {
          if (!mask.Allowed(r, j)) continue;
          const double p = std::exp(scores[j] - mx);
          sum += p;
          const float* vr = v + (int64_t{cu_seqlens_k[b]} + j) * v_stride + int64_t{g} * d;
          for (int c = 0; c < d; ++c) acc[c] += p * vr[c];
        }
        float* dst = out + (int64_t{cu_seqlens_q[b]} + r) * out_stride + int64_t{h} * d;
        for (int c = 0; c < d; ++c) {
          dst[c] = sum > 0.0 ? static_cast<float>(acc[c] / sum) : 0.0f;
        }
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace maskserve::engine
