#include "engine/generation_step.h"

#include <algorithm>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace maskserve::engine {
namespace {

absl::Status SeqError(size_t b, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("sequence ", b, ": ", what));
}

// c[x] of a UNILM spec (prefix form or explicit segment ids).
int64_t UnilmSegmentCount(const MaskSpec& spec, int x) {
  if (spec.segment_ids.empty()) return x < spec.prefix_length ? 0 : x - spec.prefix_length + 1;
  int64_t c = 0;
  for (int t = 0; t <= x; ++t) c += spec.segment_ids[t];
  return c;
}

}  // namespace

int64_t KvLayerOffsetFloats(const KvCacheOptions& o, int layer) {
  return int64_t{layer} * 2 * o.num_kv_heads * o.block_size_tokens * o.head_dim;
}

void GenerationStep::FreeDeleter::operator()(float* p) const { std::free(p); }

absl::StatusOr<float*> GenerationStep::Scratch(size_t floats) {
  if (floats > scratch_floats_ || !scratch_) {
    const size_t n = std::max<size_t>((floats + 15) / 16 * 16, 16);
    scratch_.reset(static_cast<float*>(std::aligned_alloc(64, n * sizeof(float))));
    scratch_floats_ = scratch_ ? n : 0;
    if (!scratch_) {
      return absl::ResourceExhaustedError(
          absl::StrCat("cannot allocate ", n * sizeof(float), " bytes of step scratch"));
    }
  }
  return scratch_.get();
}

absl::Status GenerationStep::Prepare(absl::Span<const StepSequence> seqs, const KvCachePool& pool,
                                     const StepLimits& limits, const GenerativeModel& model) {
  kv_seqs_.clear();
  num_keys_.clear();
  token_ids_.clear();
  type_ids_.clear();
  positions_.clear();
  cu_seqlens_.clear();
  masks_.clear();
  specs_.clear();
  logit_rows_.clear();
  last_masks_.clear();
  last_cu_.clear();
  last_ready_ = false;
  layer0_.reset();
  truncated_.clear();

  if (seqs.empty()) return absl::InvalidArgumentError("a step needs at least one sequence");
  const KvCacheOptions& po = pool.options();
  if (po.num_layers != limits.layout.num_layers || po.num_kv_heads != limits.layout.num_kv_heads ||
      po.head_dim != limits.layout.head_dim) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the KV cache pool holds ", po.num_layers, " layers x ", po.num_kv_heads,
        " heads x head_dim ", po.head_dim, " but the model needs ", limits.layout.num_layers, " x ",
        limits.layout.num_kv_heads, " x ", limits.layout.head_dim));
  }
  pool_options_ = po;
  truncated_.reserve(seqs.size());
  cu_seqlens_.push_back(0);
  for (size_t b = 0; b < seqs.size(); ++b) {
    const StepSequence& s = seqs[b];
    const int n = static_cast<int>(s.tokens.size());
    if (n == 0) return SeqError(b, "a step needs at least one new token");
    if (s.num_cached < 0) {
      return SeqError(b, absl::StrCat("num_cached must be >= 0, got ", s.num_cached));
    }
    if (int64_t{s.num_cached} + n > limits.max_sequence_length) {
      return SeqError(
          b, absl::StrCat("positions ", s.num_cached, "..", int64_t{s.num_cached} + n - 1,
                          " exceed the model's max_sequence_length ", limits.max_sequence_length));
    }
    if (!s.type_ids.empty() && s.type_ids.size() != s.tokens.size()) {
      return SeqError(
          b, absl::StrCat("type_ids has ", s.type_ids.size(), " entries for ", n, " tokens"));
    }
    for (int t = 0; t < n; ++t) {
      const int32_t id = s.tokens[t];
      if (id < 0 || id >= limits.vocab_size) {
        return SeqError(b, absl::StrCat("token id ", id, " at position ", s.num_cached + t,
                                        " is outside the vocabulary [0, ", limits.vocab_size, ")"));
      }
      int32_t ty = 0;
      if (limits.max_type_id >= 0 && !s.type_ids.empty()) {
        ty = s.type_ids[t];
        if (ty < 0 || ty > limits.max_type_id) {
          return SeqError(b, absl::StrCat("type id ", ty, " at position ", s.num_cached + t,
                                          " is outside [0, ", limits.max_type_id, "]"));
        }
      }
      token_ids_.push_back(id);
      type_ids_.push_back(ty);
      positions_.push_back(s.num_cached + t);
    }
    for (size_t a = 0; a < b; ++a) {
      if (seqs[a].kv_seq == s.kv_seq) {
        return SeqError(
            b, absl::StrCat("KV sequence ", s.kv_seq, " is also sequence ", a, " of this step"));
      }
    }
    absl::StatusOr<int> reserved = pool.Length(s.kv_seq);
    if (!reserved.ok()) return SeqError(b, reserved.status().message());
    const int k_len = s.num_cached + n;
    if (*reserved < k_len) {
      return SeqError(b, absl::StrCat("KV sequence ", s.kv_seq, " has ", *reserved,
                                      " reserved positions but the step needs ", k_len,
                                      " (KvCachePool::Append first)"));
    }
    if (absl::Status v = model.ValidateMask(s.mask); !v.ok()) return SeqError(b, v.message());
    const MaskSpec* spec = &s.mask;
    if (spec->kind == MaskKind::kUnilm && spec->segment_ids.size() > static_cast<size_t>(k_len)) {
      // Segments of the whole planned sequence: this step sees its first k_len.
      MaskSpec& t = truncated_.emplace_back(*spec);
      t.segment_ids.resize(k_len);
      spec = &t;
    }
    if (spec->kind == MaskKind::kUnilm && !spec->causal) {
      // Under UNILM, segment-0 positions see each other: a step boundary
      // inside the segment-0 prefix would leave cached keys/values computed
      // without the later prefix positions (stale).
      const bool ends_inside = spec->segment_ids.empty()
                                   ? spec->prefix_length > k_len
                                   : s.mask.segment_ids.size() > static_cast<size_t>(k_len) &&
                                         s.mask.segment_ids[k_len] == 0;
      if (ends_inside) {
        return SeqError(
            b, absl::StrCat("mask ", spec->ToString(), ": position ", k_len - 1,
                            " of this step attends position ", k_len,
                            " of a later step; the segment-0 prefix must be fed in one step"));
      }
      if (absl::Status v = spec->Validate(k_len); !v.ok()) return SeqError(b, v.message());
      if (s.num_cached > 0 &&
          UnilmSegmentCount(*spec, s.num_cached) <= UnilmSegmentCount(*spec, s.num_cached - 1)) {
        return SeqError(b, absl::StrCat("mask ", spec->ToString(), ": cached position ",
                                        s.num_cached - 1, " attends new position ", s.num_cached,
                                        "; the segment-0 prefix must be fed in one step"));
      }
    }
    absl::StatusOr<AttentionMask> m = AttentionMask::Create(*spec, k_len, s.num_cached, n);
    if (!m.ok()) return SeqError(b, m.status().message());
    masks_.push_back(std::move(*m));
    specs_.push_back(spec);
    kv_seqs_.push_back(s.kv_seq);
    num_keys_.push_back(k_len);
    cu_seqlens_.push_back(static_cast<int32_t>(token_ids_.size()));
    if (s.want_logits) logit_rows_.push_back(static_cast<int32_t>(token_ids_.size()) - 1);
  }
  return absl::OkStatus();
}

absl::Status GenerationStep::PrepareLastRows() {
  if (last_ready_) return absl::OkStatus();
  last_masks_.clear();
  last_cu_.clear();
  last_cu_.push_back(0);
  size_t next_logit = 0;
  for (int b = 0; b < num_seqs(); ++b) {
    const int k_len = num_keys_[b];
    const bool wants =
        next_logit < logit_rows_.size() && logit_rows_[next_logit] == cu_seqlens_[b + 1] - 1;
    if (wants) ++next_logit;
    const int q_len = wants ? 1 : 0;
    absl::StatusOr<AttentionMask> m =
        AttentionMask::Create(*specs_[b], k_len, k_len - q_len, q_len);
    if (!m.ok()) return SeqError(b, m.status().message());
    last_masks_.push_back(std::move(*m));
    last_cu_.push_back(last_cu_.back() + q_len);
  }
  last_ready_ = true;
  return absl::OkStatus();
}

absl::Status GenerationStep::WriteKv(KvCachePool* pool, int layer, const float* k, const float* v,
                                     int64_t stride) const {
  for (int b = 0; b < num_seqs(); ++b) {
    const int row = cu_seqlens_[b];
    const int n = cu_seqlens_[b + 1] - row;
    const int64_t off = int64_t{row} * stride;
    if (absl::Status s =
            pool->Write(kv_seqs_[b], layer, positions_[row], n, k + off, v + off, stride, stride);
        !s.ok()) {
      return SeqError(b, s.message());
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<const KvSource*> GenerationStep::Kv(const KvCachePool& pool, int layer) {
  if (layer < 0 || layer >= pool_options_.num_layers) {
    return absl::InvalidArgumentError(absl::StrCat("KV layer ", layer, " out of range"));
  }
  if (!layer0_) {
    absl::StatusOr<std::unique_ptr<PagedKvSource>> src = pool.MakeKvSource(0, kv_seqs_, num_keys_);
    if (!src.ok()) return src.status();
    layer0_ = std::move(*src);
  }
  layer_view_.Reset(layer0_.get(), KvLayerOffsetFloats(pool_options_, layer));
  return &layer_view_;
}

}  // namespace maskserve::engine
