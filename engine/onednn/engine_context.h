// The process-wide oneDNN CPU engine, per-thread streams, and the thread
// budget that every oneDNN primitive and OpenMP kernel of the engine obeys.
//
// Thread budget: oneDNN here uses the OpenMP runtime, so each *calling*
// thread (an engine worker) opens its own OpenMP team of NumThreads() threads
// for every GEMM / kernel. With W workers running concurrently the process
// uses up to W x NumThreads() cores; keep that product within the process CPU
// budget (cgroup quota / taskset), or workers oversubscribe the cores and
// every request gets slower. Typical choices: W=1 x all cores (lowest
// latency) or W=cores x 1 thread (highest throughput).
//
// This header deliberately does not include oneDNN so that it can be reached
// from code that must stay oneDNN-free.
#pragma once

#include <memory>
#include <string>

namespace dnnl {
struct engine;
struct stream;
}  // namespace dnnl

namespace maskserve::engine {

class EngineContext {
 public:
  // The single CPU engine of the process (created on first use, never freed:
  // primitives cached elsewhere may outlive static destruction order).
  static EngineContext& Default();

  const dnnl::engine& engine() const { return *engine_; }

  // A stream owned by the calling thread. oneDNN streams are not meant to be
  // shared between threads, and a CPU stream is cheap, so each thread lazily
  // gets its own one bound to engine().
  dnnl::stream& ThreadStream();

  EngineContext(const EngineContext&) = delete;
  EngineContext& operator=(const EngineContext&) = delete;

 private:
  EngineContext();
  std::unique_ptr<dnnl::engine> engine_;
};

// Sets the process-wide number of OpenMP threads each engine call may use
// (n >= 1; values < 1 are clamped to 1). It takes effect on every thread at
// its next SyncThreadCount() (which Linear and the kernels call), because the
// OpenMP thread count is a per-thread setting.
void SetNumThreads(int n);

// The process-wide thread count: what SetNumThreads set, else OpenMP's
// default at first use (OMP_NUM_THREADS or the number of CPUs).
int NumThreads();

// Gives the calling thread its own count (n >= 1) in place of NumThreads();
// 0 returns it to the process-wide count. For a pool of workers that splits
// the CPU budget among themselves (the embedding batcher's W workers x n
// threads) while another component's single thread uses the whole budget.
void SetCallingThreadNumThreads(int n);

// Applies the calling thread's count (its own, else NumThreads()) to its
// OpenMP setting if it differs (a thread-local compare when nothing changed)
// and returns it.
int SyncThreadCount();

// True when oneDNN will use AMX-BF16 tile kernels on this CPU (needs the CPU
// flag and the OS permission, which oneDNN requests itself).
bool CpuHasAmxBf16();

// True when the CPU has AVX512-BF16 (native bf16 dot products and
// conversions); without it BF16 matmuls are emulated and slower than FP32.
bool CpuHasAvx512Bf16();

// Human-readable ISA oneDNN dispatches to, e.g. "avx512_core_bf16".
std::string IsaDescription();

}  // namespace maskserve::engine
