// Paged KV cache: one preallocated pool of fixed-size blocks shared by every
// sequence of one model, vLLM style. A sequence owns a block table (block ids
// in position order); blocks are reference counted so Fork() (beam search,
// parallel sampling, prefix sharing) shares all of a sequence's blocks and the
// first write into a shared block copies it (copy-on-write). Freeing returns a
// sequence's blocks to the free list at once, so the scheduler can admit or
// preempt work on exact block counts.
//
// Block layout: one block holds block_size_tokens consecutive positions for
// ALL layers (one block table per sequence, not per layer: every layer has the
// same length, so per-layer tables would only multiply bookkeeping). Inside a
// block the floats are ordered [layer][K|V][kv_head][token][head_dim], so the
// keys (and values) of one layer and head are contiguous rows of head_dim
// floats: FusedAttention reads them in place, one run per block, through
// PagedKvSource.
//
// Thread-safety: all metadata (allocation, block tables, refcounts) is guarded
// by an internal mutex, so every method may be called from any thread. The
// data itself is not: Write() to a sequence must not race with reads of the
// same positions, and a sequence must not be Freed (or Appended to, which may
// copy its last block) while a PagedKvSource over it is in use. The intended model:
// one scheduler thread does AllocateSequence/Append/Fork/Free/Reassign between
// model steps; during a step workers Write() distinct positions and attention
// reads concurrently through PagedKvSource snapshots.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include <mutex>
#include "absl/types/span.h"
#include "engine/attention.h"

namespace maskserve::engine {

// Element type of the cache. Only FP32 for now (the attention kernel is FP32).
enum class KvDtype { kF32 };

struct KvCacheOptions {
  int64_t total_bytes = 0;      // pool size; rounded down to whole blocks (>= 1 block)
  int block_size_tokens = 16;   // positions per block
  int num_layers = 0;           // decoder layers sharing one block table
  int num_kv_heads = 0;         // key/value heads per layer
  int head_dim = 0;             // floats per head
  KvDtype dtype = KvDtype::kF32;  // element type of K and V
};

// Snapshot for metrics and admission control.
struct KvCacheStats {
  int64_t blocks_total = 0;     // blocks in the pool
  int64_t blocks_used = 0;      // blocks referenced by at least one sequence
  int64_t blocks_free = 0;      // blocks on the free list
  int64_t sequences = 0;        // live sequences
  int64_t tokens = 0;           // sum of sequence lengths (shared blocks counted per sequence)
  int64_t block_bytes = 0;      // bytes per block
};

// Opaque handle of a sequence in one pool; never reused by that pool.
using SeqId = int64_t;

class PagedKvSource;

class KvCachePool {
 public:
  static absl::StatusOr<std::unique_ptr<KvCachePool>> Create(const KvCacheOptions& options);
  ~KvCachePool();
  KvCachePool(const KvCachePool&) = delete;
  KvCachePool& operator=(const KvCachePool&) = delete;

  const KvCacheOptions& options() const { return options_; }
  int num_blocks() const { return num_blocks_; }
  int64_t block_bytes() const { return block_floats_ * static_cast<int64_t>(sizeof(float)); }
  // Floats of one K (or V) row: num_kv_heads * head_dim.
  int row_width() const { return options_.num_kv_heads * options_.head_dim; }

  // A new empty sequence (length 0, no blocks). Never fails: blocks are only
  // taken by Append().
  SeqId AllocateSequence();

  // Reserves positions length .. length+n-1 (contents undefined until
  // Write()). Takes new blocks as needed and, when the partially filled last
  // block is shared with a fork, copies it first so Write() never has to
  // allocate. All or nothing: RESOURCE_EXHAUSTED (nothing changed) when the
  // free list is too short; the scheduler then preempts someone and retries.
  absl::Status Append(SeqId seq, int n);

  // Blocks Append(seq, n) would take now (including a copy-on-write copy).
  absl::StatusOr<int> BlocksNeededToAppend(SeqId seq, int n) const;

  // A new sequence with the same length and contents, sharing every block
  // (no copy, no allocation).
  absl::StatusOr<SeqId> Fork(SeqId parent);

  // Drops the sequence; blocks no other sequence references go back to the
  // free list immediately.
  absl::Status Free(SeqId seq);

  // Beam-search reordering: new sequence i continues old_seqs[parents[i]].
  // The first new sequence naming an old one takes it over, later ones Fork
  // it; old sequences no one names are freed. Never allocates blocks.
  absl::StatusOr<std::vector<SeqId>> Reassign(absl::Span<const SeqId> old_seqs,
                                              absl::Span<const int> parents);

  // Stores K/V rows for positions pos_begin .. pos_begin+n-1 (all reserved) of
  // one layer. Row t of k is k[t * k_stride + h * head_dim + c] (stride 0 =
  // row_width(), i.e. packed [n, kv_heads * head_dim]); the same for v. A
  // block still shared with a fork is copied first (RESOURCE_EXHAUSTED if no
  // block is free; Append() already copies the last block, so this only
  // happens when rewriting older positions).
  absl::Status Write(SeqId seq, int layer, int pos_begin, int n, const float* k, const float* v,
                     int64_t k_stride = 0, int64_t v_stride = 0);

  // Copies all positions of one layer out as packed rows [length, row_width()]
  // (either pointer may be null). For tests and debugging.
  absl::Status Gather(SeqId seq, int layer, float* k_out, float* v_out) const;

  // Number of reserved positions.
  absl::StatusOr<int> Length(SeqId seq) const;
  // Block ids in position order (for tests and debugging).
  absl::StatusOr<std::vector<int32_t>> BlockTable(SeqId seq) const;
  // References to a block (0 = free). For tests.
  int RefCount(int32_t block) const;

  KvCacheStats Stats() const;

  // KvSource over one layer of a batch of sequences (batch index b = seqs[b]),
  // for FusedAttention. num_keys, when given, overrides each sequence's key
  // count (must not exceed its length), e.g. to attend before the last
  // reserved positions are written. Snapshots block pointers: valid until
  // one of these sequences is Appended, Freed, or written with a copy.
  absl::StatusOr<std::unique_ptr<PagedKvSource>> MakeKvSource(int layer, absl::Span<const SeqId> seqs,
                                                        absl::Span<const int> num_keys = {}) const;

 private:
  struct Sequence {
    std::vector<int32_t> blocks;
    int length = 0;
  };

  KvCachePool(const KvCacheOptions& options, int num_blocks, int64_t block_floats, float* data);

  float* BlockData(int32_t block) const { return data_ + block * block_floats_; }
  // Offset of (layer, K=0/V=1, head, token) inside a block.
  int64_t Offset(int layer, int kv, int head, int token) const {
    const int64_t bs = options_.block_size_tokens;
    return (((static_cast<int64_t>(layer) * 2 + kv) * options_.num_kv_heads + head) * bs + token) *
           options_.head_dim;
  }
  // The *Locked members run with mu_ held; mu_ guards free_, refcount_, seqs_
  // and next_id_.
  int NeededLocked(const Sequence& s, int n) const;
  // Replaces s.blocks[index] (shared) by a private copy of its first `filled`
  // tokens; a free block must exist.
  void CopyOnWriteLocked(Sequence& s, int index, int filled);
  int32_t TakeBlockLocked();
  void ReleaseBlockLocked(int32_t block);
  SeqId ForkLocked(const Sequence& parent);
  void FreeLocked(SeqId id);

  const KvCacheOptions options_;
  const int num_blocks_;
  const int64_t block_floats_;
  float* const data_;  // num_blocks_ * block_floats_, 64-byte aligned, owned

  mutable std::mutex mu_;  // std::, not absl::Mutex, so that TSan sees it (Debian's Abseil is uninstrumented)
  std::vector<int32_t> free_;      // LIFO: recently freed blocks are reused first
  std::vector<int32_t> refcount_;  // per block
  absl::flat_hash_map<SeqId, Sequence> seqs_;
  SeqId next_id_ = 1;
};

// Keys/values of one layer of a batch of sequences, read in place from the
// pool's blocks: each Fetch returns at most the rest of one block. Lock-free
// (a snapshot of block pointers) and safe to call concurrently.
class PagedKvSource final : public KvSource {
 public:
  int NumKeys(int seq) const override { return num_keys_[seq]; }
  KvRun Fetch(int seq, int kv_head, int key, int max_count) const override;

 private:
  friend class KvCachePool;
  PagedKvSource() = default;

  int block_size_ = 0;
  int head_dim_ = 0;
  int64_t head_floats_ = 0;  // block_size * head_dim: distance between heads in a block
  int64_t v_offset_ = 0;     // from a layer's K section to its V section
  std::vector<int> num_keys_;
  std::vector<std::vector<const float*>> blocks_;  // per sequence: layer's K section of each block
};

}  // namespace maskserve::engine
