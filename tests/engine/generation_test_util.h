// Helpers the generation tests share: a KV cache pool sized for a model,
// one-sequence steps (Append + Forward), full recompute, and a greedy driver
// that decodes with the cache (prefill, then one-token steps).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/generative_model.h"
#include "engine/kv_cache.h"
#include "engine/loaded_model.h"

namespace maskserve::engine::testing {

// A pool for `model` with room for `tokens` positions (over all sequences).
inline std::unique_ptr<KvCachePool> MakePool(const GenerativeModel& model, int tokens = 4096,
                                             int block_size = 16) {
  const KvLayout l = model.kv_layout();
  KvCacheOptions o;
  o.block_size_tokens = block_size;
  o.num_layers = l.num_layers;
  o.num_kv_heads = l.num_kv_heads;
  o.head_dim = l.head_dim;
  const int64_t blocks = (tokens + block_size - 1) / block_size + 8;
  o.total_bytes = blocks * 2 * l.num_layers * l.num_kv_heads * block_size * l.head_dim *
                  static_cast<int64_t>(sizeof(float));
  absl::StatusOr<std::unique_ptr<KvCachePool>> p = KvCachePool::Create(o);
  return p.ok() ? std::move(*p) : nullptr;
}

// Appends tokens.size() positions to `seq` (whose cached length is
// num_cached) and runs them as one step; returns the last token's logits
// (empty when !want_logits).
inline absl::StatusOr<std::vector<float>> StepOne(const GenerativeModel& model, KvCachePool* pool,
                                                  SeqId seq, int num_cached,
                                                  absl::Span<const int32_t> tokens,
                                                  const MaskSpec& mask,
                                                  absl::Span<const int32_t> type_ids = {},
                                                  bool want_logits = true) {
  if (absl::Status s = pool->Append(seq, static_cast<int>(tokens.size())); !s.ok()) return s;
  StepSequence ss;
  ss.kv_seq = seq;
  ss.num_cached = num_cached;
  ss.tokens = tokens;
  ss.type_ids = type_ids;
  ss.mask = mask;
  ss.want_logits = want_logits;
  std::vector<float> logits;
  if (absl::Status s = model.Forward({&ss, 1}, pool, &logits); !s.ok()) return s;
  return logits;
}

// Logits at the last position of `ids`, computed from scratch (a fresh
// sequence, the whole input in one step).
inline absl::StatusOr<std::vector<float>> Recompute(const GenerativeModel& model,
                                                    absl::Span<const int32_t> ids,
                                                    const MaskSpec& mask,
                                                    absl::Span<const int32_t> type_ids = {}) {
  std::unique_ptr<KvCachePool> pool = MakePool(model, static_cast<int>(ids.size()) + 16);
  if (pool == nullptr) return absl::InternalError("pool");
  const SeqId seq = pool->AllocateSequence();
  return StepOne(model, pool.get(), seq, 0, ids, mask, type_ids);
}

inline int32_t Argmax(absl::Span<const float> row) {
  return static_cast<int32_t>(std::max_element(row.begin(), row.end()) - row.begin());
}

inline double MaxAbsDiff(absl::Span<const float> a, absl::Span<const float> b) {
  if (a.size() != b.size()) return 1e30;
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    m = std::max(m, std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
  }
  return m;
}

// The model directory `dir` loaded as a generator (nullptr and a test
// failure when it does not load or cannot generate).
inline std::unique_ptr<LoadedModel> LoadGenerator(const std::string& dir) {
  absl::StatusOr<std::unique_ptr<LoadedModel>> m = LoadedModel::Load({.path = dir});
  EXPECT_TRUE(m.ok()) << m.status();
  if (!m.ok()) return nullptr;
  EXPECT_NE((*m)->generator(), nullptr);
  return std::move(*m);
}

}  // namespace maskserve::engine::testing
