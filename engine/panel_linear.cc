#include "engine/panel_linear.h"

#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "engine/onednn/engine_context.h"

// GCC 12 reports false -Wmaybe-uninitialized inside its own intrinsics
// headers (PR105593); keep it out of this file's diagnostics.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

namespace maskserve::engine {

struct PanelLinear::Data {
  int k = 0;
  int n = 0;
  int panels = 0;
  bool has_bias = false;
  float* w = nullptr;  // [panels][k][16], 64-byte aligned, zero-padded columns
  float* b = nullptr;  // [panels * 16], zeros without bias
  ~Data() {
    std::free(w);
    std::free(b);
  }
};

namespace {

constexpr int kP = PanelLinear::kPanel;
constexpr int kRowsPerTile = 6;  // 6 x 2 accumulators + 2 weights + 1 broadcast <= 16 ymm
// Below this many multiply-adds (~10 us on one core) a call runs on the
// calling thread only: waking a passive OpenMP team costs tens of us, which
// dominated the steps of small models (stories260K at 16 sequences).
constexpr int64_t kParallelMin = int64_t{1} << 20;

float* AlignedFloats(size_t n) {
  const size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
  return static_cast<float*>(std::aligned_alloc(64, std::max<size_t>(bytes, 64)));
}

// Epilogue of one row of one panel: v + bias (+ y) into y[0, cols).
inline void StoreRow(__m256 v0, __m256 v1, const float* bias, float* y, int cols, bool accumulate) {
  v0 = _mm256_add_ps(v0, _mm256_load_ps(bias));
  v1 = _mm256_add_ps(v1, _mm256_load_ps(bias + 8));
  if (cols == kP) {
    if (accumulate) {
      v0 = _mm256_add_ps(v0, _mm256_loadu_ps(y));
      v1 = _mm256_add_ps(v1, _mm256_loadu_ps(y + 8));
    }
    _mm256_storeu_ps(y, v0);
    _mm256_storeu_ps(y + 8, v1);
  } else {
    alignas(32) float t[kP];
    _mm256_store_ps(t, v0);
    _mm256_store_ps(t + 8, v1);
    for (int c = 0; c < cols; ++c) y[c] = accumulate ? y[c] + t[c] : t[c];
  }
}

// Rows [0, R) of one 16-column tile: y[r][0, cols) (+)= x[r] . panel + bias.
// The accumulators are named locals (not arrays): GCC keeps arrays of
// __m256 in registers but also stores them back every iteration.
//
// `next` is the panel the thread computes after this one: its cache lines
// are prefetched one per k (one panel row is one line), so the next panel
// streams in from memory while this one is computed.
template <int R>
inline void Tile(const float* x, int K, const float* panel, const float* next, const float* bias,
                 float* y, int N, int cols, bool accumulate) {
  static_assert(R >= 1 && R <= 6);
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
         c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  const size_t ks = static_cast<size_t>(K);
  const float* x0 = x;
  const float* x1 = x + ks * (R > 1 ? 1 : 0);
  const float* x2 = x + ks * (R > 2 ? 2 : 0);
  const float* x3 = x + ks * (R > 3 ? 3 : 0);
  const float* x4 = x + ks * (R > 4 ? 4 : 0);
  const float* x5 = x + ks * (R > 5 ? 5 : 0);
  const float* w = panel;
  for (int k = 0; k < K; ++k, w += kP) {
    _mm_prefetch(reinterpret_cast<const char*>(next + static_cast<size_t>(k) * kP), _MM_HINT_T0);
    const __m256 w0 = _mm256_load_ps(w), w1 = _mm256_load_ps(w + 8);
    __m256 xb = _mm256_broadcast_ss(x0 + k);
    c00 = _mm256_fmadd_ps(xb, w0, c00);
    c01 = _mm256_fmadd_ps(xb, w1, c01);
    if constexpr (R > 1) {
      xb = _mm256_broadcast_ss(x1 + k);
      c10 = _mm256_fmadd_ps(xb, w0, c10);
      c11 = _mm256_fmadd_ps(xb, w1, c11);
    }
    if constexpr (R > 2) {
      xb = _mm256_broadcast_ss(x2 + k);
      c20 = _mm256_fmadd_ps(xb, w0, c20);
      c21 = _mm256_fmadd_ps(xb, w1, c21);
    }
    if constexpr (R > 3) {
      xb = _mm256_broadcast_ss(x3 + k);
      c30 = _mm256_fmadd_ps(xb, w0, c30);
      c31 = _mm256_fmadd_ps(xb, w1, c31);
    }
    if constexpr (R > 4) {
      xb = _mm256_broadcast_ss(x4 + k);
      c40 = _mm256_fmadd_ps(xb, w0, c40);
      c41 = _mm256_fmadd_ps(xb, w1, c41);
    }
    if constexpr (R > 5) {
      xb = _mm256_broadcast_ss(x5 + k);
      c50 = _mm256_fmadd_ps(xb, w0, c50);
      c51 = _mm256_fmadd_ps(xb, w1, c51);
    }
  }
  const __m256 acc[6][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
  for (int r = 0; r < R; ++r) {
    StoreRow(acc[r][0], acc[r][1], bias, y + static_cast<size_t>(r) * N, cols, accumulate);
  }
}

// One row (decode of a single sequence) over G adjacent panels at once:
// bandwidth-bound, and several concurrent weight streams keep more cache
// misses in flight than one (measured: ~1.5x the read bandwidth of a single
// stream per core here).
template <int G>
inline void RowPanels(const float* x, int K, const float* panels, size_t panel_stride,
                      const float* bias, float* y, int cols_last, bool accumulate) {
  static_assert(G == 1 || G == 4);
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, b0 = a0, b1 = a0, c0 = a0, c1 = a0, d0 = a0, d1 = a0;
  const float* wa = panels;
  const float* wb = panels + (G > 1 ? panel_stride : 0);
  const float* wc = panels + (G > 1 ? 2 * panel_stride : 0);
  const float* wd = panels + (G > 1 ? 3 * panel_stride : 0);
  for (int k = 0; k < K; ++k) {
    const __m256 xb = _mm256_broadcast_ss(x + k);
    const size_t off = static_cast<size_t>(k) * kP;
    a0 = _mm256_fmadd_ps(xb, _mm256_load_ps(wa + off), a0);
    a1 = _mm256_fmadd_ps(xb, _mm256_load_ps(wa + off + 8), a1);
    if constexpr (G > 1) {
      b0 = _mm256_fmadd_ps(xb, _mm256_load_ps(wb + off), b0);
      b1 = _mm256_fmadd_ps(xb, _mm256_load_ps(wb + off + 8), b1);
      c0 = _mm256_fmadd_ps(xb, _mm256_load_ps(wc + off), c0);
      c1 = _mm256_fmadd_ps(xb, _mm256_load_ps(wc + off + 8), c1);
      d0 = _mm256_fmadd_ps(xb, _mm256_load_ps(wd + off), d0);
      d1 = _mm256_fmadd_ps(xb, _mm256_load_ps(wd + off + 8), d1);
    }
  }
  if constexpr (G == 1) {
    StoreRow(a0, a1, bias, y, cols_last, accumulate);
  } else {
    StoreRow(a0, a1, bias, y, kP, accumulate);
    StoreRow(b0, b1, bias + kP, y + kP, kP, accumulate);
    StoreRow(c0, c1, bias + 2 * kP, y + 2 * kP, kP, accumulate);
    StoreRow(d0, d1, bias + 3 * kP, y + 3 * kP, cols_last, accumulate);
  }
}

using TileFn = void (*)(const float*, int, const float*, const float*, const float*, float*, int,
                        int, bool);
constexpr TileFn kTiles[kRowsPerTile + 1] = {nullptr,  &Tile<1>, &Tile<2>, &Tile<3>,
                                             &Tile<4>, &Tile<5>, &Tile<6>};

}  // namespace

absl::StatusOr<PanelLinear> PanelLinear::Create(absl::Span<const float> weight, int in_features,
                                                int out_features, absl::Span<const float> bias,
                                                WeightLayout layout) {
  if (in_features <= 0 || out_features <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("PanelLinear: bad shape in=", in_features, " out=", out_features));
  }
  const size_t K = static_cast<size_t>(in_features), N = static_cast<size_t>(out_features);
  if (weight.size() != K * N) {
    return absl::InvalidArgumentError(
        absl::StrCat("PanelLinear: weight has ", weight.size(), " floats, expected ", K * N));
  }
  if (!bias.empty() && bias.size() != N) {
    return absl::InvalidArgumentError(
        absl::StrCat("PanelLinear: bias has ", bias.size(), " floats, expected ", N));
  }
  auto d = std::make_shared<Data>();
  d->k = in_features;
  d->n = out_features;
  d->panels = static_cast<int>((N + kP - 1) / kP);
  d->has_bias = !bias.empty();
  const size_t P = static_cast<size_t>(d->panels);
  d->w = AlignedFloats(P * K * kP);
  d->b = AlignedFloats(P * kP);
  if (d->w == nullptr || d->b == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat("PanelLinear: cannot allocate ", P * K * kP * sizeof(float), " bytes"));
  }
  std::memset(d->b, 0, P * kP * sizeof(float));
  if (!bias.empty()) std::memcpy(d->b, bias.data(), N * sizeof(float));
  for (size_t p = 0; p < P; ++p) {
    float* panel = d->w + p * K * kP;
    for (size_t k = 0; k < K; ++k) {
      for (size_t c = 0; c < static_cast<size_t>(kP); ++c) {
        const size_t col = p * kP + c;
        float v = 0.0f;
        if (col < N) v = layout == WeightLayout::kOutIn ? weight[col * K + k] : weight[k * N + col];
        panel[k * kP + c] = v;
      }
    }
  }
  return PanelLinear(std::move(d));
}

int PanelLinear::in_features() const { return data_ ? data_->k : 0; }
int PanelLinear::out_features() const { return data_ ? data_->n : 0; }
bool PanelLinear::has_bias() const { return data_ && data_->has_bias; }
size_t PanelLinear::bytes() const {
  return data_ ? static_cast<size_t>(data_->panels) * (data_->k + 1) * kP * sizeof(float) : 0;
}

void PanelLinear::Run(const float* x, int rows, float* y, bool accumulate) const {
  if (rows <= 0 || data_ == nullptr) return;
  const Data& d = *data_;
  const int K = d.k, N = d.n, P = d.panels;
  const int64_t work = int64_t{rows} * K * N;
  const int nthr = work < kParallelMin ? 1 : SyncThreadCount();
#pragma omp parallel num_threads(nthr) if (nthr > 1)
  {
    const int t = omp_get_thread_num(), T = omp_get_num_threads();
    const int p0 = static_cast<int>(int64_t{P} * t / T);
    const int p1 = static_cast<int>(int64_t{P} * (t + 1) / T);
    if (rows == 1) {
      const size_t stride = static_cast<size_t>(K) * kP;
      int p = p0;
      for (; p + 4 <= p1; p += 4) {
        RowPanels<4>(x, K, d.w + p * stride, stride, d.b + static_cast<size_t>(p) * kP,
                     y + static_cast<size_t>(p) * kP, std::min(kP, N - (p + 3) * kP), accumulate);
      }
      for (; p < p1; ++p) {
        RowPanels<1>(x, K, d.w + p * stride, stride, d.b + static_cast<size_t>(p) * kP,
                     y + static_cast<size_t>(p) * kP, std::min(kP, N - p * kP), accumulate);
      }
    }
    for (int p = rows == 1 ? p1 : p0; p < p1; ++p) {
      const float* panel = d.w + static_cast<size_t>(p) * K * kP;
      const float* next = p + 1 < p1 ? panel + static_cast<size_t>(K) * kP : panel;
      const float* bias = d.b + static_cast<size_t>(p) * kP;
      const int cols = std::min(kP, N - p * kP);
      // Every row tile reuses the panel from L1/L2: one pass over the
      // weights per call.
      for (int m0 = 0; m0 < rows; m0 += kRowsPerTile) {
        const int mr = std::min(kRowsPerTile, rows - m0);
        kTiles[mr](x + static_cast<size_t>(m0) * K, K, panel, next, bias,
                   y + static_cast<size_t>(m0) * N + static_cast<size_t>(p) * kP, N, cols,
                   accumulate);
      }
    }
  }
}

absl::StatusOr<bool> UsePanelLinear(LinearKernel kernel, MatmulDType dtype) {
  switch (kernel) {
    case LinearKernel::kAuto:
      return dtype == MatmulDType::kF32 && IsaDescription().rfind("avx512", 0) != 0;
    case LinearKernel::kOneDnn:
      return false;
    case LinearKernel::kPanel:
      if (dtype != MatmulDType::kF32) {
        return absl::InvalidArgumentError("LinearKernel::kPanel is FP32 only");
      }
      return true;
  }
  return false;
}

}  // namespace maskserve::engine
