#include "engine/kernels/activations.h"

#include <omp.h>

#include <cstdint>

#include "engine/kernels/cpu_features.h"
#include "engine/kernels/simd16.h"
#include "engine/onednn/engine_context.h"

// The per-range kernels, once per ISA (see simd16.h).
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq")
namespace maskserve::engine::kernels::avx512 {
namespace {
#include "engine/kernels/activations_impl.inc"
}  // namespace
}  // namespace maskserve::engine::kernels::avx512
#pragma GCC pop_options

namespace maskserve::engine::kernels::avx2 {
namespace {
#include "engine/kernels/activations_impl.inc"
}  // namespace
}  // namespace maskserve::engine::kernels::avx2

namespace maskserve::engine::kernels {
namespace {

struct ActivationKernels {
  void (*gelu_erf)(float*, size_t);
  void (*gelu_tanh)(float*, size_t);
  void (*relu)(float*, size_t);
  void (*silu)(float*, size_t);
  void (*exp)(float*, size_t);
  void (*swiglu)(const float*, const float*, float*, size_t);
};

constexpr ActivationKernels kKernels[kNumIsas] = {
    {avx2::GeluErfRange, avx2::GeluTanhRange, avx2::ReluRange, avx2::SiluRange, avx2::ExpRange,
     avx2::SwiGluRange},
    {avx512::GeluErfRange, avx512::GeluTanhRange, avx512::ReluRange, avx512::SiluRange,
     avx512::ExpRange, avx512::SwiGluRange},
};

const ActivationKernels& Kernels() { return kKernels[static_cast<int>(ActiveIsa())]; }

// Buffers shorter than this run on the calling thread only: an OpenMP fork
// costs more than the work.
constexpr size_t kParallelMin = 1 << 15;

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

// In-place map of x[0, n) with one of the table's range kernels.
inline void Map(void (*range)(float*, size_t), float* x, size_t n) {
  ParallelBlocks(n, [range, x](size_t b, size_t e) { range(x + b, e - b); });
}

}  // namespace

void GeluErf(float* x, size_t n) { Map(Kernels().gelu_erf, x, n); }
void GeluTanh(float* x, size_t n) { Map(Kernels().gelu_tanh, x, n); }
void Relu(float* x, size_t n) { Map(Kernels().relu, x, n); }
void Silu(float* x, size_t n) { Map(Kernels().silu, x, n); }
void Exp(float* x, size_t n) { Map(Kernels().exp, x, n); }

void SwiGlu(const float* gate, const float* up, float* out, size_t n) {
  const auto swiglu = Kernels().swiglu;
  ParallelBlocks(n, [=](size_t b, size_t e) { swiglu(gate + b, up + b, out + b, e - b); });
}

void SwiGluFused(const float* gate_up, int rows, int inner, float* out) {
  const auto swiglu = Kernels().swiglu;
  const size_t total = static_cast<size_t>(rows) * static_cast<size_t>(inner);
  const int nthr = total < kParallelMin ? 1 : SyncThreadCount();
#pragma omp parallel for num_threads(nthr) schedule(static) if (nthr > 1)
  for (int r = 0; r < rows; ++r) {
    const float* g = gate_up + static_cast<size_t>(r) * 2 * inner;
    swiglu(g, g + inner, out + static_cast<size_t>(r) * inner, static_cast<size_t>(inner));
  }
}

}  // namespace maskserve::engine::kernels
