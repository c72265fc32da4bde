// Attention mask patterns (what query position i may attend key position j)
// and their compiled, per-sequence form. The fused attention kernel never
// materialises a mask: it asks AttentionMask to classify whole (query block x
// key block) rectangles analytically, skips empty ones, runs full ones without
// any per-element test and only evaluates Allowed() inside partial ones.
//
// Padding is implicit: sequences are packed without pad tokens, so keys past a
// sequence's length simply do not exist.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace maskserve::engine {

// Base patterns; d = i - j (query minus key position).
enum class MaskKind {
  kBidirectional,  // always allowed
  kCausal,         // d >= 0
  kUnilm,          // c[j] <= c[i], c = cumsum(segment ids) (bert4keras seq2seq)
  kLocal,          // |d| <= window
  kDilated,        // d mod rate == 0
  kStrided,        // LOCAL(window) OR DILATED(rate)
};

// Upper-case name: "BIDIRECTIONAL", "CAUSAL", "UNILM", "LOCAL", "DILATED",
// "STRIDED".
std::string MaskKindName(MaskKind kind);

struct MaskSpec {
  MaskKind kind = MaskKind::kBidirectional;  // base pattern
  int window = 0;       // LOCAL/STRIDED: keys with |i - j| <= window are allowed
  int rate = 0;         // DILATED/STRIDED: keys with (i - j) mod rate == 0 are allowed
  bool causal = false;  // additionally require j <= i (ANDed with the pattern)
  // UNILM: segment id (0/1) of every key position of the sequence; empty means
  // "use prefix_length".
  std::vector<int32_t> segment_ids;
  // UNILM without segment_ids: the first prefix_length tokens are segment 0,
  // every later token is segment 1.
  int prefix_length = 0;

  // Checks the fields that the kind uses against a sequence of seq_len keys.
  // Messages name the field, e.g. "mask.window must be >= 0".
  absl::Status Validate(int seq_len) const;

  // E.g. "BIDIRECTIONAL", "CAUSAL", "LOCAL(3)", "CAUSAL+STRIDED(2,4)",
  // "UNILM(prefix=5)", "UNILM(segments)".
  std::string ToString() const;
};

// How a rectangle of (query, key) pairs relates to the mask.
enum class BlockState {
  kEmpty,    // no pair allowed: skip the block
  kFull,     // every pair allowed: no per-element mask needed
  kPartial,  // mixed: evaluate Allowed() per element
};

// Half-open range of key positions [begin, end).
struct KeySpan {
  int begin = 0;
  int end = 0;
};

// A MaskSpec compiled for one sequence: q_len query rows whose absolute
// positions are q_offset + r (r = 0..q_len-1; q_offset > 0 when decoding with
// a KV cache) against keys at positions 0..k_len-1. All query arguments below
// are row indices r, not absolute positions.
class AttentionMask {
 public:
  // q_len < 0 means k_len - q_offset (every position from q_offset on is a
  // query). UNILM needs every query position to be a key position.
  static absl::StatusOr<AttentionMask> Create(const MaskSpec& spec, int k_len, int q_offset = 0,
                                              int q_len = -1);

  int q_len() const { return q_len_; }
  int k_len() const { return k_len_; }
  int q_offset() const { return q_offset_; }
  const std::string& name() const { return name_; }

  // Whether query row r may attend key j (0 <= r < q_len, 0 <= j < k_len).
  bool Allowed(int r, int j) const;

  // Exact state of rows [q0, q1) x keys [k0, k1), computed in O(1) (O(log n)
  // for UNILM with explicit segment ids) from the pattern's structure: every
  // pattern except UNILM depends only on d = i - j, and the d values of a
  // rectangle form one integer interval; UNILM's c is non-decreasing.
  BlockState Classify(int q0, int q1, int k0, int k1) const;

  // Smallest key range outside which rows [q0, q1) allow nothing. Tight for
  // CAUSAL/LOCAL/BIDIRECTIONAL/UNILM, so LOCAL visits O(window) keys per
  // query block; DILATED/STRIDED span every key up to the causal limit.
  KeySpan KeyRange(int q0, int q1) const;

  // Row-major q_len x k_len matrix of 0/1, for tests and debugging.
  std::vector<uint8_t> Materialize() const;

  // Materialize() as q_len lines of '1' (allowed) and '.' (masked).
  std::string DebugString() const;

 private:
  // The spec normalised into the four shapes the code has to handle.
  enum class Pattern : uint8_t {
    kBand,     // lo <= d <= hi (BIDIRECTIONAL, CAUSAL, LOCAL, causal UNILM)
    kDilated,  // d >= lo and d mod rate == 0
    kStrided,  // d >= lo and (|d| <= window or d mod rate == 0)
    kUnilm,    // c[j] <= c[i]
  };
  // Stands in for +-infinity on d without overflowing int64 arithmetic.
  static constexpr int64_t kUnbounded = int64_t{1} << 40;

  AttentionMask() = default;

  // c[x] for absolute position x.
  int64_t Segment(int64_t x) const {
    if (!cumsum_.empty()) return cumsum_[x];
    return x < prefix_length_ ? 0 : x - prefix_length_ + 1;
  }
  // Number of d in [a, b] that the pattern allows (d-only patterns).
  int64_t CountAllowed(int64_t a, int64_t b) const;

  Pattern pattern_ = Pattern::kBand;
  int64_t lo_ = -kUnbounded;
  int64_t hi_ = kUnbounded;
  int64_t window_ = 0;
  int64_t rate_ = 1;
  int prefix_length_ = 0;
  std::vector<int32_t> cumsum_;
  int q_len_ = 0;
  int k_len_ = 0;
  int q_offset_ = 0;
  std::string name_;
};

inline bool AttentionMask::Allowed(int r, int j) const {
  const int64_t i = int64_t{q_offset_} + r;
  const int64_t d = i - j;
  switch (pattern_) {
    case Pattern::kBand:
      return d >= lo_ && d <= hi_;
    case Pattern::kDilated:
      return d >= lo_ && d % rate_ == 0;
    case Pattern::kStrided:
      return d >= lo_ && ((d <= window_ && d >= -window_) || d % rate_ == 0);
    case Pattern::kUnilm:
      return Segment(j) <= Segment(i);
  }
  return false;
}

// Validates spec against seq_len and returns the seq_len x seq_len matrix.
absl::StatusOr<std::vector<uint8_t>> MaterializeMask(const MaskSpec& spec, int seq_len);

}  // namespace maskserve::engine
