#include "engine/kv_cache.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>

#include "absl/strings/str_cat.h"

namespace maskserve::engine {
namespace {

constexpr int64_t kAlign = 64;

int CeilDiv(int a, int b) { return (a + b - 1) / b; }

absl::Status UnknownSequence(SeqId seq) {
  return absl::NotFoundError(absl::StrCat("KV cache: unknown sequence ", seq));
}

}  // namespace

absl::StatusOr<std::unique_ptr<KvCachePool>> KvCachePool::Create(const KvCacheOptions& options) {
  if (options.block_size_tokens <= 0) {
    return absl::InvalidArgumentError("kv_cache.block_size_tokens must be > 0");
  }
  if (options.num_layers <= 0) return absl::InvalidArgumentError("kv_cache.num_layers must be > 0");
  if (options.num_kv_heads <= 0) {
    return absl::InvalidArgumentError("kv_cache.num_kv_heads must be > 0");
  }
  if (options.head_dim <= 0) return absl::InvalidArgumentError("kv_cache.head_dim must be > 0");
  if (options.dtype != KvDtype::kF32) return absl::InvalidArgumentError("kv_cache.dtype must be F32");
  const int64_t block_floats = int64_t{2} * options.num_layers * options.num_kv_heads *
                               options.block_size_tokens * options.head_dim;
  const int64_t block_bytes = block_floats * static_cast<int64_t>(sizeof(float));
  const int64_t num_blocks = options.total_bytes / block_bytes;
  if (num_blocks < 1) {
    return absl::InvalidArgumentError(absl::StrCat("kv_cache.total_bytes (", options.total_bytes,
                                                   ") is smaller than one block (", block_bytes,
                                                   " bytes)"));
  }
  if (num_blocks > (int64_t{1} << 30)) {
    return absl::InvalidArgumentError("kv_cache.total_bytes holds more than 2^30 blocks");
  }
  const int64_t bytes = (num_blocks * block_bytes + kAlign - 1) / kAlign * kAlign;
  // Not touched here: the OS commits pages as blocks are first written.
  void* data = std::aligned_alloc(kAlign, static_cast<size_t>(bytes));
  if (data == nullptr) {
    return absl::ResourceExhaustedError(absl::StrCat("KV cache: cannot allocate ", bytes, " bytes"));
  }
  return std::unique_ptr<KvCachePool>(new KvCachePool(options, static_cast<int>(num_blocks),
                                                      block_floats, static_cast<float*>(data)));
}

KvCachePool::KvCachePool(const KvCacheOptions& options, int num_blocks, int64_t block_floats,
                         float* data)
    : options_(options), num_blocks_(num_blocks), block_floats_(block_floats), data_(data) {
  free_.reserve(num_blocks);
  // Popped from the back: block 0 is handed out first.
  for (int32_t b = num_blocks - 1; b >= 0; --b) free_.push_back(b);
  refcount_.assign(num_blocks, 0);
}

KvCachePool::~KvCachePool() { std::free(data_); }

SeqId KvCachePool::AllocateSequence() {
  std::lock_guard<std::mutex> lock(mu_);
  const SeqId id = next_id_++;
  seqs_.emplace(id, Sequence{});
  return id;
}

int KvCachePool::NeededLocked(const Sequence& s, int n) const {
  if (n <= 0) return 0;
  const int bs = options_.block_size_tokens;
  int needed = CeilDiv(s.length + n, bs) - CeilDiv(s.length, bs);
  if (s.length % bs != 0 && refcount_[s.blocks.back()] > 1) ++needed;  // copy-on-write
  return needed;
}

absl::StatusOr<int> KvCachePool::BlocksNeededToAppend(SeqId seq, int n) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = seqs_.find(seq);
  if (it == seqs_.end()) return UnknownSequence(seq);
  return NeededLocked(it->second, n);
}

int32_t KvCachePool::TakeBlockLocked() {
  const int32_t b = free_.back();
  free_.pop_back();
  refcount_[b] = 1;
  return b;
}

void KvCachePool::ReleaseBlockLocked(int32_t block) {
  if (--refcount_[block] == 0) free_.push_back(block);
}

void KvCachePool::CopyOnWriteLocked(Sequence& s, int index, int filled) {
  const int32_t old_block = s.blocks[index];
  const int32_t new_block = TakeBlockLocked();
  const float* src = BlockData(old_block);
  float* dst = BlockData(new_block);
  const int64_t segment = int64_t{options_.block_size_tokens} * options_.head_dim;
  const int64_t used = int64_t{filled} * options_.head_dim;
  const int64_t segments = int64_t{2} * options_.num_layers * options_.num_kv_heads;
  for (int64_t g = 0; g < segments; ++g) {
    std::memcpy(dst + g * segment, src + g * segment, used * sizeof(float));
  }
  --refcount_[old_block];  // still > 0: it was shared
  s.blocks[index] = new_block;
}

absl::Status KvCachePool::Append(SeqId seq, int n) {
  if (n < 0) return absl::InvalidArgumentError("KV cache: Append count must be >= 0");
  std::lock_guard<std::mutex> lock(mu_);
  auto it = seqs_.find(seq);
  if (it == seqs_.end()) return UnknownSequence(seq);
  Sequence& s = it->second;
  if (n == 0) return absl::OkStatus();
  const int needed = NeededLocked(s, n);
  if (needed > static_cast<int>(free_.size())) {
    return absl::ResourceExhaustedError(absl::StrCat("KV cache: ", needed, " blocks needed, ",
                                                     free_.size(), " free"));
  }
  const int bs = options_.block_size_tokens;
  if (s.length % bs != 0 && refcount_[s.blocks.back()] > 1) {
    CopyOnWriteLocked(s, static_cast<int>(s.blocks.size()) - 1, s.length % bs);
  }
  const int new_blocks = CeilDiv(s.length + n, bs) - static_cast<int>(s.blocks.size());
  for (int i = 0; i < new_blocks; ++i) s.blocks.push_back(TakeBlockLocked());
  s.length += n;
  return absl::OkStatus();
}

SeqId KvCachePool::ForkLocked(const Sequence& parent) {
  for (int32_t b : parent.blocks) ++refcount_[b];
  const SeqId id = next_id_++;
  seqs_.emplace(id, parent);
  return id;
}

absl::StatusOr<SeqId> KvCachePool::Fork(SeqId parent) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = seqs_.find(parent);
  if (it == seqs_.end()) return UnknownSequence(parent);
  // Copy before emplace: emplace may rehash and invalidate `it`.
  const Sequence copy = it->second;
  return ForkLocked(copy);
}

void KvCachePool::FreeLocked(SeqId id) {
  auto it = seqs_.find(id);
  for (int32_t b : it->second.blocks) ReleaseBlockLocked(b);
  seqs_.erase(it);
}

absl::Status KvCachePool::Free(SeqId seq) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!seqs_.contains(seq)) return UnknownSequence(seq);
  FreeLocked(seq);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<SeqId>> KvCachePool::Reassign(absl::Span<const SeqId> old_seqs,
                                                         absl::Span<const int> parents) {
  std::lock_guard<std::mutex> lock(mu_);
  for (SeqId s : old_seqs) {
    if (!seqs_.contains(s)) return UnknownSequence(s);
  }
  for (int p : parents) {
    if (p < 0 || p >= static_cast<int>(old_seqs.size())) {
      return absl::InvalidArgumentError(
          absl::StrCat("KV cache: Reassign parent ", p, " out of range [0, ", old_seqs.size(), ")"));
    }
  }
  std::vector<bool> taken(old_seqs.size(), false);
  std::vector<SeqId> out(parents.size());
  // Forks first, while every old sequence still holds its blocks.
  for (size_t i = 0; i < parents.size(); ++i) {
    const int p = parents[i];
    if (!taken[p]) {
      taken[p] = true;
      out[i] = old_seqs[p];
    } else {
      const Sequence copy = seqs_.at(old_seqs[p]);
      out[i] = ForkLocked(copy);
    }
  }
  for (size_t p = 0; p < old_seqs.size(); ++p) {
    if (!taken[p]) FreeLocked(old_seqs[p]);
  }
  return out;
}

absl::Status KvCachePool::Write(SeqId seq, int layer, int pos_begin, int n, const float* k,
                                const float* v, int64_t k_stride, int64_t v_stride) {
  if (layer < 0 || layer >= options_.num_layers) {
    return absl::InvalidArgumentError(absl::StrCat("KV cache: layer ", layer, " out of range"));
  }
  if (n < 0 || pos_begin < 0) return absl::InvalidArgumentError("KV cache: bad Write range");
  if (n == 0) return absl::OkStatus();
  const int bs = options_.block_size_tokens;
  const int hd = options_.head_dim;
  const int heads = options_.num_kv_heads;
  if (k_stride == 0) k_stride = row_width();
  if (v_stride == 0) v_stride = row_width();
  // Resolve (and un-share) the target blocks under the lock; copy data outside it.
  std::vector<float*> bases;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = seqs_.find(seq);
    if (it == seqs_.end()) return UnknownSequence(seq);
    Sequence& s = it->second;
    if (pos_begin + n > s.length) {
      return absl::OutOfRangeError(absl::StrCat("KV cache: Write of positions [", pos_begin, ", ",
                                                pos_begin + n, ") past sequence length ", s.length,
                                                " (Append first)"));
    }
    const int first = pos_begin / bs;
    const int last = (pos_begin + n - 1) / bs;
    int shared = 0;
    for (int b = first; b <= last; ++b) shared += refcount_[s.blocks[b]] > 1;
    if (shared > static_cast<int>(free_.size())) {
      return absl::ResourceExhaustedError("KV cache: no free block for copy-on-write");
    }
    for (int b = first; b <= last; ++b) {
      if (refcount_[s.blocks[b]] > 1) CopyOnWriteLocked(s, b, std::min(bs, s.length - b * bs));
      bases.push_back(BlockData(s.blocks[b]));
    }
  }
  const int first = pos_begin / bs;
  for (int t = 0; t < n; ++t) {
    const int pos = pos_begin + t;
    float* base = bases[pos / bs - first];
    const int tok = pos % bs;
    for (int h = 0; h < heads; ++h) {
      if (k != nullptr) {
        std::memcpy(base + Offset(layer, 0, h, tok), k + t * k_stride + h * hd, hd * sizeof(float));
      }
      if (v != nullptr) {
        std::memcpy(base + Offset(layer, 1, h, tok), v + t * v_stride + h * hd, hd * sizeof(float));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status KvCachePool::Gather(SeqId seq, int layer, float* k_out, float* v_out) const {
  if (layer < 0 || layer >= options_.num_layers) {
    return absl::InvalidArgumentError(absl::StrCat("KV cache: layer ", layer, " out of range"));
  }
  std::lock_guard<std::mutex> lock(mu_);
  auto it = seqs_.find(seq);
  if (it == seqs_.end()) return UnknownSequence(seq);
  const Sequence& s = it->second;
  const int bs = options_.block_size_tokens;
  const int hd = options_.head_dim;
  const int w = row_width();
  for (int pos = 0; pos < s.length; ++pos) {
    const float* base = BlockData(s.blocks[pos / bs]);
    for (int h = 0; h < options_.num_kv_heads; ++h) {
      if (k_out != nullptr) {
        std::memcpy(k_out + int64_t{pos} * w + h * hd, base + Offset(layer, 0, h, pos % bs),
                    hd * sizeof(float));
      }
      if (v_out != nullptr) {
        std::memcpy(v_out + int64_t{pos} * w + h * hd, base + Offset(layer, 1, h, pos % bs),
                    hd * sizeof(float));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<int> KvCachePool::Length(SeqId seq) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = seqs_.find(seq);
  if (it == seqs_.end()) return UnknownSequence(seq);
  return it->second.length;
}

absl::StatusOr<std::vector<int32_t>> KvCachePool::BlockTable(SeqId seq) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = seqs_.find(seq);
  if (it == seqs_.end()) return UnknownSequence(seq);
  return it->second.blocks;
}

int KvCachePool::RefCount(int32_t block) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (block < 0 || block >= num_blocks_) return 0;
  return refcount_[block];
}

KvCacheStats KvCachePool::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  KvCacheStats st;
  st.blocks_total = num_blocks_;
  st.blocks_free = static_cast<int64_t>(free_.size());
  st.blocks_used = st.blocks_total - st.blocks_free;
  st.sequences = static_cast<int64_t>(seqs_.size());
  for (const auto& [id, s] : seqs_) st.tokens += s.length;
  st.block_bytes = block_bytes();
  return st;
}

absl::StatusOr<std::unique_ptr<PagedKvSource>> KvCachePool::MakeKvSource(
    int layer, absl::Span<const SeqId> seqs, absl::Span<const int> num_keys) const {
  if (layer < 0 || layer >= options_.num_layers) {
    return absl::InvalidArgumentError(absl::StrCat("KV cache: layer ", layer, " out of range"));
  }
  if (!num_keys.empty() && num_keys.size() != seqs.size()) {
    return absl::InvalidArgumentError("KV cache: num_keys must be empty or one per sequence");
  }
  std::unique_ptr<PagedKvSource> kv(new PagedKvSource());
  kv->block_size_ = options_.block_size_tokens;
  kv->head_dim_ = options_.head_dim;
  kv->head_floats_ = int64_t{options_.block_size_tokens} * options_.head_dim;
  kv->v_offset_ = Offset(0, 1, 0, 0);
  kv->num_keys_.reserve(seqs.size());
  kv->blocks_.reserve(seqs.size());
  std::lock_guard<std::mutex> lock(mu_);
  for (size_t b = 0; b < seqs.size(); ++b) {
    auto it = seqs_.find(seqs[b]);
    if (it == seqs_.end()) return UnknownSequence(seqs[b]);
    const Sequence& s = it->second;
    int keys = s.length;
    if (!num_keys.empty()) {
      if (num_keys[b] < 0 || num_keys[b] > s.length) {
        return absl::InvalidArgumentError(absl::StrCat("KV cache: num_keys[", b, "] = ",
                                                       num_keys[b], " exceeds sequence length ",
                                                       s.length));
      }
      keys = num_keys[b];
    }
    kv->num_keys_.push_back(keys);
    std::vector<const float*> bases;
    bases.reserve(s.blocks.size());
    for (int32_t blk : s.blocks) bases.push_back(BlockData(blk) + Offset(layer, 0, 0, 0));
    kv->blocks_.push_back(std::move(bases));
  }
  return kv;
}

KvRun PagedKvSource::Fetch(int seq, int kv_head, int key, int max_count) const {
  const int block = key / block_size_;
  const int tok = key % block_size_;
  const float* k = blocks_[seq][block] + kv_head * head_floats_ + int64_t{tok} * head_dim_;
  KvRun run;
  run.k = k;
  run.v = k + v_offset_;
  run.k_stride = head_dim_;
  run.v_stride = head_dim_;
  run.count = std::min({max_count, block_size_ - tok, num_keys_[seq] - key});
  return run;
}

}  // namespace maskserve::engine
