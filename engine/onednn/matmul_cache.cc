#include "engine/onednn/matmul_cache.h"

#include <omp.h>

#include <bit>
#include <string>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "engine/kernels/bf16.h"
#include "engine/onednn/engine_context.h"
#include "engine/onednn/packed_weight_impl.h"

namespace maskserve::engine {
namespace {

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

dnnl::algorithm EltwiseAlg(FusedActivation a) {
  switch (a) {
    case FusedActivation::kGeluErf: return dnnl::algorithm::eltwise_gelu_erf;
    case FusedActivation::kGeluTanh: return dnnl::algorithm::eltwise_gelu_tanh;
    case FusedActivation::kRelu: return dnnl::algorithm::eltwise_relu;
    case FusedActivation::kSilu: return dnnl::algorithm::eltwise_swish;
    case FusedActivation::kNone: break;
  }
  return dnnl::algorithm::undef;
}

// A growable 64-byte-aligned per-thread buffer.
class ThreadBuffer {
 public:
  void* Get(size_t bytes) {
    if (bytes > size_) {
      std::free(data_);
      size_ = (bytes + 63) / 64 * 64;
      data_ = std::aligned_alloc(64, size_);
    }
    return data_;
  }
  ~ThreadBuffer() { std::free(data_); }

 private:
  void* data_ = nullptr;
  size_t size_ = 0;
};

thread_local ThreadBuffer t_bf16_src;
thread_local ThreadBuffer t_scratchpad;
thread_local ThreadBuffer t_split_dst;

}  // namespace

struct MatmulCache::Entry {
  dnnl::matmul prim;
  dnnl::memory::desc src_md, dst_md, scratch_md;
  bool reference = false;  // oneDNN picked its reference implementation
  // The primitive leaves out the sum post-op: it writes act(xW + b) to a
  // scratch buffer that Linear then adds to y. On AVX2 CPUs oneDNN 2.6's
  // gemm:jit matmul takes an eltwise or a sum post-op but not eltwise then
  // sum, and would fall back to the scalar reference kernel (~50x slower).
  bool split_sum = false;
};

MatmulCache::MatmulCache(const MatmulCacheOptions& options) : options_(options) {}
MatmulCache::~MatmulCache() = default;

MatmulCache& MatmulCache::Global() {
  static MatmulCache* const cache = new MatmulCache();
  return *cache;
}

int MatmulCache::RowClass(int rows, int max_chunk_rows) {
  if (max_chunk_rows < 1) max_chunk_rows = 1;
  if (rows >= max_chunk_rows) return max_chunk_rows;
  if (rows <= 16) return rows;
  const int step = 1 << (std::bit_width(static_cast<unsigned>(rows)) - 1 - 3);
  return rows - rows % step;
}

MatmulCache::Stats MatmulCache::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return Stats{entries_.size(), hits_, misses_, reference_impls_};
}

absl::StatusOr<std::shared_ptr<const MatmulCache::Entry>> MatmulCache::GetOrCreate(
    const Key& key, const PackedLinear& w) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(key);
    if (it != entries_.end()) {
      ++hits_;
      return it->second;
    }
  }
  // Created outside the lock: it takes ~0.3 ms and other shapes must not wait.
  auto entry = std::make_shared<Entry>();
  try {
    const dnnl::engine& eng = EngineContext::Default().engine();
    const dnnl::memory::dim M = key.m, K = key.k, N = key.n;
    const dt sdt = w.dtype() == MatmulDType::kBF16 ? dt::bf16 : dt::f32;
    entry->src_md = dnnl::memory::desc({M, K}, sdt, tag::ab);
    entry->dst_md = dnnl::memory::desc({M, N}, dt::f32, tag::ab);
    const dnnl::memory::desc& w_md = w.impl().weights.get_desc();
    const bool has_act = key.activation != static_cast<uint8_t>(FusedActivation::kNone);
    const dnnl::matmul::desc desc =
        key.bias ? dnnl::matmul::desc(entry->src_md, w_md,
                                      dnnl::memory::desc({1, N}, dt::f32, tag::ab), entry->dst_md)
                 : dnnl::matmul::desc(entry->src_md, w_md, entry->dst_md);
    // post_ops is a shared handle: each description builds its own chain.
    auto describe = [&](bool with_sum) {
      dnnl::post_ops chain;
      if (has_act) {
        const auto act = static_cast<FusedActivation>(key.activation);
        chain.append_eltwise(1.0f, EltwiseAlg(act), act == FusedActivation::kSilu ? 1.0f : 0.0f,
                             0.0f);
      }
      if (with_sum) chain.append_sum(1.0f);
      dnnl::primitive_attr attr;
      attr.set_post_ops(chain);
      attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
      return dnnl::matmul::primitive_desc(desc, attr, eng);
    };
    auto is_reference = [](const dnnl::matmul::primitive_desc& p) {
      return std::string(p.impl_info_str()).rfind("ref", 0) == 0;
    };
    dnnl::matmul::primitive_desc pd = describe(key.accumulate);
    if (key.accumulate && has_act && is_reference(pd)) {
      dnnl::matmul::primitive_desc unsummed = describe(false);
      if (!is_reference(unsummed)) {
        pd = unsummed;
        entry->split_sum = true;
      }
    }
    entry->scratch_md = pd.scratchpad_desc();
    entry->prim = dnnl::matmul(pd);
    entry->reference = is_reference(pd);
  } catch (const dnnl::error& e) {
    return absl::InternalError(absl::StrCat("MatmulCache: oneDNN matmul M=", key.m, " K=", key.k,
                                            " N=", key.n, ": ", e.what()));
  }
  std::lock_guard<std::mutex> lock(mu_);
  ++misses_;
  // Another thread may have raced us to it; keep the first one.
  auto [it, inserted] = entries_.emplace(key, std::move(entry));
  if (inserted && it->second->reference) ++reference_impls_;
  return it->second;
}

absl::Status MatmulCache::Linear(const float* x, int M, const PackedLinear& w, float* y,
                                 PostOp post) {
  if (!w.valid()) return absl::InvalidArgumentError("Linear: empty PackedLinear");
  if (M < 0) return absl::InvalidArgumentError(absl::StrCat("Linear: M=", M));
  if (M == 0) return absl::OkStatus();
  if (x == nullptr || y == nullptr) return absl::InvalidArgumentError("Linear: null x or y");
  if (post.bias && !w.has_bias()) {
    return absl::InvalidArgumentError("Linear: post.bias set but the weight has no bias");
  }
  const int threads = SyncThreadCount();
  const int K = w.in_features(), N = w.out_features();
  const bool bf16 = w.dtype() == MatmulDType::kBF16;
  const size_t k = static_cast<size_t>(K), n = static_cast<size_t>(N);

  // BF16 source: converted ourselves (AVX512-BF16, one pass) rather than by a
  // oneDNN reorder: as fast for large M, 2-5x faster for M <= 16 where the
  // reorder's call overhead dominates, and no extra primitive to cache
  // (`matmul_bench convert`). oneDNN 2.6 has no f32-src x bf16-weight matmul.
  const void* src = x;
  if (bf16) {
    auto* buf = static_cast<uint16_t*>(t_bf16_src.Get(static_cast<size_t>(M) * k * sizeof(uint16_t)));
    const size_t total = static_cast<size_t>(M) * k;
    // Memory-bound: worth splitting across the call's threads only when big.
    const int conv_threads = total >= (size_t{1} << 16) ? threads : 1;
#pragma omp parallel num_threads(conv_threads) if (conv_threads > 1)
    {
      const size_t t = static_cast<size_t>(omp_get_thread_num());
      const size_t nt = static_cast<size_t>(omp_get_num_threads());
      const size_t r0 = static_cast<size_t>(M) * t / nt, r1 = static_cast<size_t>(M) * (t + 1) / nt;
      kernels::FloatToBf16(x + r0 * k, buf + r0 * k, (r1 - r0) * k);
    }
    src = buf;
  }
  const size_t src_elem = bf16 ? sizeof(uint16_t) : sizeof(float);

  Key key{0, K, N, threads, static_cast<uint8_t>(w.dtype()), static_cast<uint8_t>(post.activation),
          post.bias, post.accumulate};
  try {
    const dnnl::engine& eng = EngineContext::Default().engine();
    dnnl::stream& stream = EngineContext::Default().ThreadStream();
    const PackedLinear::Impl& wi = w.impl();
    for (int row = 0; row < M;) {
      key.m = RowClass(M - row, options_.max_chunk_rows);
      auto entry = GetOrCreate(key, w);
      if (!entry.ok()) return entry.status();
      const Entry& e = **entry;
      dnnl::memory src_mem(e.src_md, eng,
                           const_cast<char*>(static_cast<const char*>(src)) + row * k * src_elem);
      float* const y_rows = y + row * n;
      const size_t chunk = static_cast<size_t>(key.m) * n;
      float* const dst = e.split_sum
                             ? static_cast<float*>(t_split_dst.Get(chunk * sizeof(float)))
                             : y_rows;
      dnnl::memory dst_mem(e.dst_md, eng, dst);
      // The C entry point takes a plain array: no per-call hash map.
      dnnl_exec_arg_t args[5];
      int nargs = 0;
      args[nargs++] = {DNNL_ARG_SRC, src_mem.get()};
      args[nargs++] = {DNNL_ARG_WEIGHTS, wi.weights.get()};
      args[nargs++] = {DNNL_ARG_DST, dst_mem.get()};
      if (post.bias) args[nargs++] = {DNNL_ARG_BIAS, wi.bias.get()};
      dnnl::memory scratch_mem;
      const size_t scratch_bytes = e.scratch_md.get_size();
      if (scratch_bytes > 0) {
        scratch_mem = dnnl::memory(e.scratch_md, eng, t_scratchpad.Get(scratch_bytes));
        args[nargs++] = {DNNL_ARG_SCRATCHPAD, scratch_mem.get()};
      }
      dnnl::error::wrap_c_api(dnnl_primitive_execute(e.prim.get(), stream.get(), nargs, args),
                              "could not execute matmul");
      if (e.split_sum) {
        stream.wait();
        for (size_t i = 0; i < chunk; ++i) y_rows[i] += dst[i];
      }
      row += key.m;
    }
    stream.wait();
  } catch (const dnnl::error& e) {
    return absl::InternalError(absl::StrCat("Linear: oneDNN: ", e.what()));
  }
  return absl::OkStatus();
}

}  // namespace maskserve::engine
