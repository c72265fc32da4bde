#include "engine/onednn/engine_context.h"

#include <omp.h>

#include <atomic>

#include "oneapi/dnnl/dnnl.hpp"

namespace maskserve::engine {
namespace {

// 0 means "not decided yet": NumThreads() then adopts OpenMP's default.
std::atomic<int> g_num_threads{0};
// The calling thread's own count; 0 = follow g_num_threads.
thread_local int t_own_threads = 0;

}  // namespace

EngineContext::EngineContext()
    : engine_(std::make_unique<dnnl::engine>(dnnl::engine::kind::cpu, 0)) {}

EngineContext& EngineContext::Default() {
  static EngineContext* const ctx = new EngineContext();
  return *ctx;
}

dnnl::stream& EngineContext::ThreadStream() {
  // One stream per (thread, context); there is only one context in practice.
  thread_local std::unique_ptr<dnnl::stream> stream;
  thread_local const EngineContext* owner = nullptr;
  if (!stream || owner != this) {
    stream = std::make_unique<dnnl::stream>(*engine_);
    owner = this;
  }
  return *stream;
}

void SetNumThreads(int n) {
  g_num_threads.store(n < 1 ? 1 : n, std::memory_order_relaxed);
  SyncThreadCount();
}

int NumThreads() {
  int n = g_num_threads.load(std::memory_order_relaxed);
  if (n > 0) return n;
  int expected = 0;
  const int def = omp_get_max_threads() > 0 ? omp_get_max_threads() : 1;
  g_num_threads.compare_exchange_strong(expected, def, std::memory_order_relaxed);
  return g_num_threads.load(std::memory_order_relaxed);
}

void SetCallingThreadNumThreads(int n) {
  t_own_threads = n < 0 ? 0 : n;
  SyncThreadCount();
}

int SyncThreadCount() {
  thread_local int applied = 0;
  const int n = t_own_threads > 0 ? t_own_threads : NumThreads();
  if (applied != n) {
    omp_set_num_threads(n);
    applied = n;
  }
  return n;
}

bool CpuHasAmxBf16() {
  return dnnl::get_effective_cpu_isa() == dnnl::cpu_isa::avx512_core_amx;
}

bool CpuHasAvx512Bf16() {
  static const bool has = __builtin_cpu_supports("avx512bf16");
  return has;
}

std::string IsaDescription() {
  switch (dnnl::get_effective_cpu_isa()) {
    case dnnl::cpu_isa::sse41: return "sse41";
    case dnnl::cpu_isa::avx: return "avx";
    case dnnl::cpu_isa::avx2: return "avx2";
    case dnnl::cpu_isa::avx2_vnni: return "avx2_vnni";
    case dnnl::cpu_isa::avx512_mic: return "avx512_mic";
    case dnnl::cpu_isa::avx512_mic_4ops: return "avx512_mic_4ops";
    case dnnl::cpu_isa::avx512_core: return "avx512_core";
    case dnnl::cpu_isa::avx512_core_vnni: return "avx512_core_vnni";
    case dnnl::cpu_isa::avx512_core_bf16: return "avx512_core_bf16";
    case dnnl::cpu_isa::avx512_core_amx: return "avx512_core_amx";
    default: return "unknown";
  }
}

}  // namespace maskserve::engine
