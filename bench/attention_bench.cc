// Fused attention cost by mask: BIDIRECTIONAL and CAUSAL grow as L^2, LOCAL
// as L * window. One sequence, 12 heads x 64, Q/K/V slices of a fused QKV
// buffer as the encoder produces them.
#include <cstdint>
#include <random>
#include <vector>

#include "benchmark/benchmark.h"
#include "engine/attention.h"
#include "engine/attention_mask.h"
#include "engine/kernels/cpu_features.h"

namespace maskserve::engine {
namespace {

constexpr int kHeads = 12;
constexpr int kHeadDim = 64;

MaskSpec SpecFor(int which) {
  MaskSpec spec;
  switch (which) {
    case 0:
      spec.kind = MaskKind::kBidirectional;
      break;
    case 1:
      spec.kind = MaskKind::kLocal;
      spec.window = 64;
      break;
    default:
      spec.kind = MaskKind::kCausal;
      break;
  }
  return spec;
}

void BM_FusedAttention(benchmark::State& state) {
  const int which = static_cast<int>(state.range(0));
  const int len = static_cast<int>(state.range(1));
  const MaskSpec spec = SpecFor(which);
  state.SetLabel(spec.ToString());
  const int64_t width = int64_t{kHeads} * kHeadDim;
  const int64_t stride = 3 * width;
  std::vector<float> qkv(static_cast<size_t>(len) * stride);
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (float& x : qkv) x = dist(rng);
  std::vector<float> out(static_cast<size_t>(len) * width);
  const std::vector<int32_t> cu = {0, len};
  std::vector<AttentionMask> masks = {*AttentionMask::Create(spec, len)};
  AttentionOptions options;
  options.num_heads = kHeads;
  options.num_kv_heads = kHeads;
  options.head_dim = kHeadDim;
  AttentionStats stats;
  for (auto _ : state) {
    const absl::Status s =
        FusedAttention(options, qkv.data(), stride, qkv.data() + width, stride,
                       qkv.data() + 2 * width, stride, cu, cu, masks, out.data(), width, &stats);
    if (!s.ok()) state.SkipWithError(std::string(s.message()).c_str());
    benchmark::DoNotOptimize(out.data());
  }
  // Useful FLOPs: 4 * d per computed (query, key) pair in computed tiles.
  const double flops_per_iter =
      4.0 * kHeadDim * kAttentionBlockQ * kAttentionBlockK * stats.blocks_computed();
  state.counters["tiles"] = static_cast<double>(stats.blocks_computed());
  state.counters["tile_GFLOPS"] =
      benchmark::Counter(flops_per_iter * state.iterations() / 1e9, benchmark::Counter::kIsRate);
  state.counters["us_per_token"] =
      benchmark::Counter(static_cast<double>(len) * state.iterations(),
                         benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

// Which tile kernels ran: MASKSERVE_ISA=avx2 compares the AVX2 ones on an
// AVX-512 machine.
const bool kIsaContext =
    (benchmark::AddCustomContext("kernels", kernels::CpuFeatureSummary()), true);

BENCHMARK(BM_FusedAttention)
    ->ArgNames({"mask", "L"})
    ->ArgsProduct({{0, 1, 2}, {512, 2048, 8192}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
}  // namespace maskserve::engine

BENCHMARK_MAIN();
