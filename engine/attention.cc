#include "engine/attention.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/kernels/cpu_features.h"
#include "engine/kernels/simd16.h"

namespace maskserve::engine {
namespace {

constexpr int kBQ = kAttentionBlockQ;
constexpr int kBK = kAttentionBlockK;
// Most keys per step of the score micro-kernel (8 keys x 2 vectors of 16
// query rows = 16 accumulators on AVX-512; fewer on AVX2, see
// ScoreKeyGroup). Key/value pointer arrays are padded by this many rows.
constexpr int kMaxKeyGroup = 8;
static_assert(kBQ == 32, "the micro-kernels hold a query block in 2 vectors");
static_assert(kBK % kMaxKeyGroup == 0);

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

}  // namespace
}  // namespace maskserve::engine

// The tile kernels, once per ISA (see engine/kernels/simd16.h).
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq")
namespace maskserve::engine::kernels::avx512 {
namespace {
#include "engine/attention_tiles.inc"
}  // namespace
}  // namespace maskserve::engine::kernels::avx512
#pragma GCC pop_options

namespace maskserve::engine::kernels::avx2 {
namespace {
#include "engine/attention_tiles.inc"
}  // namespace
}  // namespace maskserve::engine::kernels::avx2

namespace maskserve::engine {
namespace {

// Dispatch table of the tile kernels; index [NV - 1] where a kernel is
// specialised for one or two vectors of 16 query rows.
struct AttentionTiles {
  void (*score[2])(const float* qt, int d, const float* const* kp, int nk, float* st);
  void (*softmax[2])(float* st, int nk, float* m, float* l, float* corr);
  void (*bias[2])(float* st, int nk, int nq, const float* bias);
  void (*pv)(const float* pt, const float* const* vp, int nk, int nq4, int d, int dp,
             const float* corr, float* acc);
};

constexpr AttentionTiles kTiles[kernels::kNumIsas] = {
    {{kernels::avx2::ScoreTile<1>, kernels::avx2::ScoreTile<2>},
     {kernels::avx2::SoftmaxTile<1>, kernels::avx2::SoftmaxTile<2>},
     {kernels::avx2::BiasTile<1>, kernels::avx2::BiasTile<2>},
     kernels::avx2::PvTile},
    {{kernels::avx512::ScoreTile<1>, kernels::avx512::ScoreTile<2>},
     {kernels::avx512::SoftmaxTile<1>, kernels::avx512::SoftmaxTile<2>},
     {kernels::avx512::BiasTile<1>, kernels::avx512::BiasTile<2>},
     kernels::avx512::PvTile},
};

// Per-thread buffers, sized once per call.
struct Scratch {
  explicit Scratch(int d, int dp)
      : qt(static_cast<size_t>(d) * kBQ),
        st(static_cast<size_t>(kBK) * kBQ),
        acc(static_cast<size_t>(kBQ) * dp),
        zero_row(static_cast<size_t>(dp), 0.0f),
        kp(kBK + kMaxKeyGroup),
        vp(kBK + kMaxKeyGroup) {}
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
  if (o.bias.table != nullptr && (o.bias.head_stride < 0 || o.bias.center < 0)) {
    return absl::InvalidArgumentError("attention: bias head_stride and center must be >= 0");
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
  const AttentionTiles& tiles = kTiles[static_cast<int>(kernels::ActiveIsa())];
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
      const float* bias_h =
          options.bias.table == nullptr
              ? nullptr
              : options.bias.table + int64_t{h} * options.bias.head_stride + options.bias.center;

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
        for (int t = nk; t < kBK + kMaxKeyGroup; ++t) {
          sc.kp[t] = sc.zero_row.data();
          sc.vp[t] = sc.zero_row.data();
        }

        float* st = sc.st.data();
        const int nv = nq4 <= 16 ? 0 : 1;
        tiles.score[nv](sc.qt.data(), d, sc.kp.data(), nk, st);
        if (bias_h != nullptr) {
          // Entry of (query row q0, key k0): center + (q_offset + q0) - k0.
          tiles.bias[nv](st, nk, nq, bias_h + (int64_t{mask.q_offset()} + q0 - k0));
        }
        if (state == BlockState::kPartial) {
          for (int j = 0; j < nk; ++j) {
            float* srow = st + j * kBQ;
            for (int r = 0; r < nq; ++r) {
              if (!mask.Allowed(q0 + r, k0 + j)) srow[r] = kNegInf;
            }
          }
        }
        tiles.softmax[nv](st, nk, sc.m, sc.l, sc.corr);
        tiles.pv(st, sc.vp.data(), nk, nq4, d, dp, sc.corr, sc.acc.data());
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
          if (options.bias.table != nullptr) {
            scores[j] += options.bias.table[int64_t{h} * options.bias.head_stride +
                                            options.bias.center + mask.q_offset() + r - j];
          }
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
