// y = act(x W + b) [+ y] with a PackedLinear, on oneDNN matmul primitives
// that are created once per shape class and then reused from any thread.
//
// Row classes (why primitives are per-M and not runtime-M): in oneDNN 2.6 a
// matmul with a runtime M (DNNL_RUNTIME_DIM_VAL) dispatches to gemm:jit,
// which cannot read the packed blocked weights (only the reference kernel,
// ref:any, accepts them) and whose BF16 path is slower than brgemm at small
// M (M=8: ~240 vs ~130 us for 768x768; FP32 is on par). Per-M brgemm
// primitives cost 0.3-1 ms and ~200 KB each to create, so M is split into
// pieces of a bounded set of sizes: chunks of max_chunk_rows, then the
// remainder is rounded *down* to its row class and the rest handled the same
// way (exact up to 16 rows; above, 8 classes per power of two, e.g.
// 300 = 288 + 12). No padding or copies, at most ~3 extra primitive calls per
// Linear, and <= 56 primitives per (K, N, dtype, post-op, thread count) with
// the default 512-row chunk. Small-M brgemm runs close to large-M throughput
// (weights stay in cache), so Linear measures within noise of one exact-M
// primitive (`matmul_bench mclass`). The packed weight layout is not part of
// the key: PackedLinear derives it from (K, N, dtype) alone. On AVX2-only
// CPUs (gemm:jit) an activation followed by accumulate has no optimised
// fused kernel; Linear then runs act(x W + b) into a per-thread buffer and
// adds it to y itself rather than take oneDNN's scalar reference kernel.
//
// Thread safety: Linear may be called concurrently from any number of
// threads. Primitive lookup is under a mutex; creation happens outside it;
// execution uses a per-thread stream and a per-thread user-mode scratchpad
// (the library-managed one may not be shared across threads in oneDNN 2.6).
// Each call runs on SyncThreadCount() OpenMP threads (see engine_context.h).
//
// This header is oneDNN-free.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include <mutex>
#include "engine/onednn/packed_weight.h"

namespace maskserve::engine {

enum class FusedActivation : uint8_t {
  kNone,
  kGeluErf,   // BERT "gelu" (oneDNN eltwise_gelu_erf)
  kGeluTanh,  // GPT-2 "gelu_new" (eltwise_gelu_tanh)
  kRelu,      // eltwise_relu
  kSilu,      // x * sigmoid(x) (eltwise_swish, alpha = 1)
};

// What is fused into the matmul, in this order: bias, activation, sum.
//   y = act(x W + (bias ? b : 0))            when accumulate is false
//   y = y_old + act(x W + (bias ? b : 0))    when accumulate is true
// e.g. FFN up: {.bias = true, .activation = FusedActivation::kGeluErf};
// attention output with residual: {.bias = true, .accumulate = true} with y
// preloaded with the residual.
struct PostOp {
  bool bias = false;                          // add the PackedLinear's bias
  FusedActivation activation = FusedActivation::kNone;  // applied after the bias
  bool accumulate = false;                    // add into y (fused residual)
};

struct MatmulCacheOptions {
  // Largest M run by one primitive; bigger M is processed in chunks of this
  // many rows. Bounds the number of row classes (and primitives).
  int max_chunk_rows = 512;
};

class MatmulCache {
 public:
  explicit MatmulCache(const MatmulCacheOptions& options = {});
  ~MatmulCache();
  MatmulCache(const MatmulCache&) = delete;
  MatmulCache& operator=(const MatmulCache&) = delete;

  // A process-wide cache for callers that need no private one; primitives
  // are shared by every model with the same shapes.
  static MatmulCache& Global();

  // x: [M, K] float32 row-major (K = w.in_features()); y: [M, N] float32
  // row-major (N = w.out_features()); x and y must not overlap. M == 0 is a
  // no-op. For BF16 weights, x is rounded to bf16 first (in a per-thread
  // buffer; x is not modified). Fails when post.bias is set on a weight
  // without bias, on bad arguments, or when oneDNN refuses the shape.
  absl::Status Linear(const float* x, int M, const PackedLinear& w, float* y, PostOp post);

  struct Stats {
    size_t primitives = 0;  // distinct primitives created and held
    uint64_t hits = 0;      // primitive lookups that found one
    uint64_t misses = 0;    // lookups that had to create one
    // Primitives that fell back to oneDNN's reference (slow, scalar) kernel:
    // 0 unless the packed layout and a row class disagree; worth alerting on.
    size_t reference_impls = 0;
  };
  Stats stats() const;

  // The row class `rows` is rounded down to (<= rows, >= 1): rows itself up
  // to 16, then multiples of 2^(floor(log2 rows) - 3), capped at
  // max_chunk_rows. Exposed for tests.
  static int RowClass(int rows, int max_chunk_rows);

 private:
  struct Key {
    int m, k, n, threads;
    uint8_t dtype, activation;
    bool bias, accumulate;
    template <typename H>
    friend H AbslHashValue(H h, const Key& key) {
      return H::combine(std::move(h), key.m, key.k, key.n, key.threads, key.dtype, key.activation,
                        key.bias, key.accumulate);
    }
    bool operator==(const Key&) const = default;
  };
  struct Entry;  // a oneDNN matmul and its scratchpad size

  absl::StatusOr<std::shared_ptr<const Entry>> GetOrCreate(const Key& key,
                                                           const PackedLinear& w);

  const MatmulCacheOptions options_;
  mutable std::mutex mu_;  // std::, not absl::Mutex, so that TSan sees it (Debian's Abseil is uninstrumented)
  absl::flat_hash_map<Key, std::shared_ptr<const Entry>> entries_;
  uint64_t hits_ = 0;
  uint64_t misses_ = 0;
  size_t reference_impls_ = 0;
};

}  // namespace maskserve::engine
