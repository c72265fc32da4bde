// oneDNN matmul throughput on this CPU, and the measurements behind the
// design choices in engine/onednn (packed layout, per-M primitives, our own
// f32->bf16 conversion).
//
//   matmul_bench            all sections
//   matmul_bench gemm       bare GEMM GFLOP/s, BERT-base shapes, FP32 vs BF16,
//                           1 and 2 threads
//   matmul_bench mclass     exact-M brgemm (packed weights) vs runtime-M
//                           primitive vs MatmulCache::Linear, M = 1..4096
//   matmul_bench convert    f32->bf16 of activations: ours vs oneDNN reorder
//
// This machine's speed drifts (shared vCPUs), so FP32 and BF16 runs are
// interleaved and each figure is the best of several rounds. The kernel each
// primitive dispatched to is printed (impl); "amx" in it means AMX tiles ran
// (ONEDNN_VERBOSE=1 shows the same at execution time).
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "engine/kernels/bf16.h"
#include "engine/kernels/cpu_features.h"
#include "engine/onednn/engine_context.h"
#include "engine/onednn/matmul_cache.h"
#include "engine/onednn/packed_weight.h"
#include "oneapi/dnnl/dnnl.hpp"

namespace {

using maskserve::engine::EngineContext;
using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;
using dim = dnnl::memory::dim;

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Seconds per call of f: best mean over `rounds` rounds of >= min_s each.
double TimeIt(const std::function<void()>& f, double min_s = 0.1, int rounds = 3) {
  f();  // warm-up (first touch, JIT caches)
  double best = 1e30;
  for (int r = 0; r < rounds; ++r) {
    int iters = 0;
    const double t0 = Now();
    double t = t0;
    do {
      f();
      ++iters;
      t = Now();
    } while (t - t0 < min_s);
    best = std::min(best, (t - t0) / iters);
  }
  return best;
}

std::vector<float> Random(size_t n) {
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> d(-1, 1);
  std::vector<float> v(n);
  for (auto& f : v) f = d(rng);
  return v;
}

// One bare matmul: src [M,K] (f32 or bf16), packed weights, dst f32.
struct Bare {
  dnnl::matmul prim;
  dnnl::memory src, wei, dst;
  std::string impl;
};

Bare MakeBare(dim M, dim K, dim N, dt t, bool runtime_m = false) {
  const dnnl::engine& eng = EngineContext::Default().engine();
  const dim m = runtime_m ? DNNL_RUNTIME_DIM_VAL : M;
  dnnl::matmul::desc d(dnnl::memory::desc({m, K}, t, tag::ab),
                       dnnl::memory::desc({K, N}, t, runtime_m ? tag::ab : tag::any),
                       dnnl::memory::desc({m, N}, dt::f32, tag::ab));
  dnnl::matmul::primitive_desc pd(d, eng);
  Bare b;
  b.prim = dnnl::matmul(pd);
  b.impl = pd.impl_info_str();
  b.src = dnnl::memory(dnnl::memory::desc({M, K}, t, tag::ab), eng);
  b.wei = dnnl::memory(pd.weights_desc(), eng);
  b.dst = dnnl::memory(dnnl::memory::desc({M, N}, dt::f32, tag::ab), eng);
  std::memset(b.src.get_data_handle(), 0x3f, b.src.get_desc().get_size());
  std::memset(b.wei.get_data_handle(), 0x3c, b.wei.get_desc().get_size());
  return b;
}

// BF16 matmuls exist only on AVX-512 CPUs (oneDNN 2.6); without them the
// BF16 columns print "-" instead of the bench dying in primitive creation.
bool Bf16Available() {
  static const bool ok =
      maskserve::engine::CheckMatmulDTypeSupported(maskserve::engine::MatmulDType::kBF16).ok();
  return ok;
}

double RunBare(Bare& b) {
  dnnl::stream& s = EngineContext::Default().ThreadStream();
  return TimeIt([&] {
    b.prim.execute(s, {{DNNL_ARG_SRC, b.src}, {DNNL_ARG_WEIGHTS, b.wei}, {DNNL_ARG_DST, b.dst}});
    s.wait();
  });
}

void GemmSection() {
  std::printf("\n== Bare oneDNN matmul, BERT-base shapes (GFLOP/s, best of interleaved rounds)\n");
  std::printf("%-4s %-5s %-11s %9s %9s %6s  %s\n", "thr", "M", "KxN", "FP32", "BF16", "ratio", "impl (fp32 / bf16)");
  const std::pair<dim, dim> shapes[] = {{768, 768}, {768, 3072}, {3072, 768}};
  for (int thr : {1, 2}) {
    omp_set_num_threads(thr);  // primitives bake the thread count in at creation
    for (dim M : {128, 1024, 4096}) {
      for (auto [K, N] : shapes) {
        Bare f = MakeBare(M, K, N, dt::f32);
        const bool bf16 = Bf16Available();
        Bare h = bf16 ? MakeBare(M, K, N, dt::bf16) : Bare{};
        double tf = 1e30, th = 1e30;
        for (int round = 0; round < 2; ++round) {  // interleave against drift
          tf = std::min(tf, RunBare(f));
          if (bf16) th = std::min(th, RunBare(h));
        }
        const double flop = 2.0 * M * K * N;
        if (!bf16) {
          std::printf("%-4d %-5ld %4ldx%-6ld %9.1f %9s %6s  %s / -\n", thr, static_cast<long>(M),
                      static_cast<long>(K), static_cast<long>(N), flop / tf / 1e9, "-", "-",
                      f.impl.c_str());
          std::fflush(stdout);
          continue;
        }
        std::printf("%-4d %-5ld %4ldx%-6ld %9.1f %9.1f %6.2f  %s / %s\n", thr, static_cast<long>(M),
                    static_cast<long>(K), static_cast<long>(N), flop / tf / 1e9, flop / th / 1e9, tf / th,
                    f.impl.c_str(), h.impl.c_str());
        std::fflush(stdout);
      }
    }
  }
}

void MClassSection() {
  std::printf("\n== Row classes: K=768 N=768, 1 thread, microseconds per call\n");
  std::printf("   exact = per-M brgemm primitive on packed weights (what MatmulCache builds)\n");
  std::printf("   rtM   = one primitive with runtime M (DNNL_RUNTIME_DIM_VAL), plain weights\n");
  std::printf("   Linear= MatmulCache::Linear (incl. row splitting; BF16 incl. f32->bf16 of x)\n");
  omp_set_num_threads(1);
  maskserve::engine::SetNumThreads(1);
  const dim K = 768, N = 768;
  maskserve::engine::MatmulCache cache;
  const std::vector<float> w = Random(K * N), bias = Random(N);
  for (dt t : {dt::f32, dt::bf16}) {
    if (t == dt::bf16 && !Bf16Available()) {
      std::printf("BF16  (no BF16 matmuls on this CPU)\n");
      continue;
    }
    const auto mdt = t == dt::bf16 ? maskserve::engine::MatmulDType::kBF16 : maskserve::engine::MatmulDType::kF32;
    auto packed = maskserve::engine::PackedLinear::Create(w, K, N, bias, mdt);
    if (!packed.ok()) {
      std::printf("pack failed: %s\n", std::string(packed.status().message()).c_str());
      return;
    }
    std::printf("%-5s %5s %10s %10s %10s %8s  %s\n", t == dt::f32 ? "FP32" : "BF16", "M", "exact", "rtM", "Linear",
                "GF/s", "impl exact / rtM");
    for (dim M : {1, 8, 16, 32, 64, 100, 128, 300, 512, 1024, 4096}) {
      Bare exact = MakeBare(M, K, N, t);
      Bare rt = MakeBare(M, K, N, t, /*runtime_m=*/true);
      const std::vector<float> x = Random(M * K);
      std::vector<float> y(M * N);
      const double te = RunBare(exact);
      const double tr = RunBare(rt);
      const double tl = TimeIt([&] {
        (void)cache.Linear(x.data(), static_cast<int>(M), *packed, y.data(), maskserve::engine::PostOp{});
      });
      std::printf("%-5s %5ld %10.1f %10.1f %10.1f %8.1f  %s / %s\n", "", static_cast<long>(M), te * 1e6, tr * 1e6,
                  tl * 1e6, 2.0 * M * K * N / tl / 1e9, exact.impl.c_str(), rt.impl.c_str());
      std::fflush(stdout);
    }
  }
  const auto s = cache.stats();
  std::printf("MatmulCache after the sweep: %zu primitives, %llu hits, %llu misses\n", s.primitives,
              static_cast<unsigned long long>(s.hits), static_cast<unsigned long long>(s.misses));
  // Fixed cost of Linear over a bare execute (lookup, memory handles, args).
  {
    const dim k = 64, n = 64;
    auto small = maskserve::engine::PackedLinear::Create(Random(k * n), k, n, {},
                                                         maskserve::engine::MatmulDType::kF32);
    Bare bare = MakeBare(1, k, n, dt::f32);
    const std::vector<float> x = Random(k);
    std::vector<float> y(n);
    const double tb = RunBare(bare);
    const double tl = TimeIt([&] {
      (void)cache.Linear(x.data(), 1, *small, y.data(), maskserve::engine::PostOp{});
    });
    std::printf("per-call overhead, M=1 K=N=64: bare %.2f us, Linear %.2f us\n", tb * 1e6, tl * 1e6);
  }
  // Creation cost of one primitive, for the per-M decision.
  const double t0 = Now();
  for (dim M = 2000; M < 2010; ++M) MakeBare(M, K, N, Bf16Available() ? dt::bf16 : dt::f32);
  std::printf("primitive creation: %.0f us each\n", (Now() - t0) / 10 * 1e6);
}

void ConvertSection() {
  std::printf("\n== f32 -> bf16 activations, 1 thread, microseconds per call\n");
  std::printf("%-11s %10s %10s\n", "rows x K", "ours", "reorder");
  omp_set_num_threads(1);
  const dnnl::engine& eng = EngineContext::Default().engine();
  dnnl::stream& s = EngineContext::Default().ThreadStream();
  for (dim M : {1, 16, 128, 1024, 4096}) {
    const dim K = 768;
    std::vector<float> x = Random(M * K);
    std::vector<uint16_t> out(M * K);
    dnnl::memory src(dnnl::memory::desc({M, K}, dt::f32, tag::ab), eng, x.data());
    dnnl::memory dst(dnnl::memory::desc({M, K}, dt::bf16, tag::ab), eng, out.data());
    dnnl::reorder r(src, dst);
    const double ours = TimeIt([&] { maskserve::engine::kernels::FloatToBf16(x.data(), out.data(), x.size()); });
    const double theirs = TimeIt([&] {
      r.execute(s, src, dst);
      s.wait();
    });
    std::printf("%4ldx%-6ld %10.2f %10.2f\n", static_cast<long>(M), static_cast<long>(K), ours * 1e6, theirs * 1e6);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const std::string only = argc > 1 ? argv[1] : "";
  std::printf("oneDNN %d.%d.%d, ISA %s, AMX-BF16 %s, AVX512-BF16 %s, kernels %s, OpenMP max threads %d\n",
              dnnl::version()->major, dnnl::version()->minor, dnnl::version()->patch,
              maskserve::engine::IsaDescription().c_str(), maskserve::engine::CpuHasAmxBf16() ? "yes" : "no",
              maskserve::engine::CpuHasAvx512Bf16() ? "yes" : "no",
              maskserve::engine::kernels::CpuFeatureSummary().c_str(), omp_get_max_threads());
  if (only.empty() || only == "gemm") GemmSection();
  if (only.empty() || only == "mclass") MClassSection();
  if (only.empty() || only == "convert") ConvertSection();
  return 0;
}
