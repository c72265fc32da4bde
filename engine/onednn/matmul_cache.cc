#include "engine/onednn/matmul_cache.h"

#include <bit>
#include <cstdlib>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/kernels/bf16.h"
#include "engine/onednn/engine_context.h"
#include "engine/onednn/packed_weight_impl.h"

namespace maskserve::engine {
namespace {

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

dnnl::algorithm EltwiseAlg(Activation a) {
  switch (a) {
    case Activation::kGeluErf: return dnnl::algorithm::eltwise_gelu_erf;
    case Activation::kGeluTanh: return dnnl::algorithm::eltwise_gelu_tanh;
    case Activation::kRelu: return dnnl::algorithm::eltwise_relu;
    case Activation::kSilu: return dnnl::algorithm::eltwise_swish;
    case Activation::kNone: break;
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

}  // namespace

struct MatmulCache::Entry {
  dnnl::matmul prim;
  dnnl::memory::desc src_md, dst_md, scratch_md;
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
  absl::MutexLock lock(&mu_);
  return Stats{entries_.size(), hits_, misses_};
}

absl::StatusOr<std::shared_ptr<const MatmulCache::Entry>> MatmulCache::GetOrCreate(
    const Key& key, const PackedLinear& w) {
  {
    absl::MutexLock lock(&mu_);
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
    dnnl::post_ops ops;
    if (key.activation != static_cast<uint8_t>(Activation::kNone)) {
      const auto act = static_cast<Activation>(key.activation);
      ops.append_eltwise(1.0f, EltwiseAlg(act), act == Activation::kSilu ? 1.0f : 0.0f, 0.0f);
    }
    if (key.accumulate) ops.append_sum(1.0f);
    dnnl::primitive_attr attr;
    attr.set_post_ops(ops);
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    const dnnl::matmul::desc desc =
        key.bias ? dnnl::matmul::desc(entry->src_md, w_md,
                                      dnnl::memory::desc({1, N}, dt::f32, tag::ab), entry->dst_md)
                 : dnnl::matmul::desc(entry->src_md, w_md, entry->dst_md);
    const dnnl::matmul::primitive_desc pd(desc, attr, eng);
    entry->scratch_md = pd.scratchpad_desc();
    entry->prim = dnnl::matmul(pd);
  } catch (const dnnl::error& e) {
    return absl::InternalError(absl::StrCat("MatmulCache: oneDNN matmul M=", key.m, " K=", key.k,
                                            " N=", key.n, ": ", e.what()));
  }
  absl::MutexLock lock(&mu_);
  ++misses_;
  // Another thread may have raced us to it; keep the first one.
  auto [it, inserted] = entries_.emplace(key, std::move(entry));
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
  // oneDNN reorder, which costs a primitive call per piece (measured in
  // bench/matmul_bench.cc).
  const void* src = x;
  if (bf16) {
    auto* buf = static_cast<uint16_t*>(t_bf16_src.Get(static_cast<size_t>(M) * k * sizeof(uint16_t)));
    kernels::FloatToBf16(x, buf, static_cast<size_t>(M) * k);
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
      dnnl::memory dst_mem(e.dst_md, eng, y + row * n);
      const size_t scratch_bytes = e.scratch_md.get_size();
      dnnl::memory scratch_mem(e.scratch_md, eng, scratch_bytes ? t_scratchpad.Get(scratch_bytes) : nullptr);
      std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_SRC, src_mem},
                                                 {DNNL_ARG_WEIGHTS, wi.weights},
                                                 {DNNL_ARG_DST, dst_mem},
                                                 {DNNL_ARG_SCRATCHPAD, scratch_mem}};
      if (post.bias) args.emplace(DNNL_ARG_BIAS, wi.bias);
      e.prim.execute(stream, args);
      row += key.m;
    }
    stream.wait();
  } catch (const dnnl::error& e) {
    return absl::InternalError(absl::StrCat("Linear: oneDNN: ", e.what()));
  }
  return absl::OkStatus();
}

}  // namespace maskserve::engine
