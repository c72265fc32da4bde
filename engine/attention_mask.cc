#include "engine/attention_mask.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace maskserve::engine {
namespace {

int64_t FloorDiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

// Integers in [a, b] (0 when a > b).
int64_t Length(int64_t a, int64_t b) { return a > b ? 0 : b - a + 1; }

// Multiples of rate in [a, b].
int64_t Multiples(int64_t a, int64_t b, int64_t rate) {
  if (a > b) return 0;
  return FloorDiv(b, rate) - FloorDiv(a - 1, rate);
}

bool UsesWindow(MaskKind kind) { return kind == MaskKind::kLocal || kind == MaskKind::kStrided; }
bool UsesRate(MaskKind kind) { return kind == MaskKind::kDilated || kind == MaskKind::kStrided; }

}  // namespace

std::string MaskKindName(MaskKind kind) {
  switch (kind) {
    case MaskKind::kBidirectional:
      return "BIDIRECTIONAL";
    case MaskKind::kCausal:
      return "CAUSAL";
    case MaskKind::kUnilm:
      return "UNILM";
    case MaskKind::kLocal:
      return "LOCAL";
    case MaskKind::kDilated:
      return "DILATED";
    case MaskKind::kStrided:
      return "STRIDED";
  }
  return "UNKNOWN";
}

absl::Status MaskSpec::Validate(int seq_len) const {
  if (seq_len < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("mask sequence length must be >= 0, got ", seq_len));
  }
  if (UsesWindow(kind) && window < 0) {
    return absl::InvalidArgumentError(absl::StrCat("mask.window must be >= 0, got ", window));
  }
  if (UsesRate(kind) && rate < 1) {
    return absl::InvalidArgumentError(absl::StrCat("mask.rate must be >= 1, got ", rate));
  }
  if (kind == MaskKind::kUnilm) {
    if (!segment_ids.empty()) {
      if (static_cast<int64_t>(segment_ids.size()) != seq_len) {
        return absl::InvalidArgumentError(absl::StrCat("mask.segment_ids has ", segment_ids.size(),
                                                       " entries but the sequence has ", seq_len));
      }
      for (size_t t = 0; t < segment_ids.size(); ++t) {
        if (segment_ids[t] != 0 && segment_ids[t] != 1) {
          return absl::InvalidArgumentError(
              absl::StrCat("mask.segment_ids[", t, "] must be 0 or 1, got ", segment_ids[t]));
        }
      }
    } else if (prefix_length < 1 || prefix_length > seq_len) {
      return absl::InvalidArgumentError(absl::StrCat("mask.prefix_length must be in [1, ", seq_len,
                                                     "] (or give "
                                                     "mask.segment_ids), got ",
                                                     prefix_length));
    }
  }
  return absl::OkStatus();
}

std::string MaskSpec::ToString() const {
  std::string base;
  switch (kind) {
    case MaskKind::kBidirectional:
      base = causal ? "" : "BIDIRECTIONAL";
      break;
    case MaskKind::kCausal:
      return "CAUSAL";
    case MaskKind::kUnilm:
      base = segment_ids.empty() ? absl::StrCat("UNILM(prefix=", prefix_length, ")")
                                 : std::string("UNILM(segments)");
      break;
    case MaskKind::kLocal:
      base = absl::StrCat("LOCAL(", window, ")");
      break;
    case MaskKind::kDilated:
      base = absl::StrCat("DILATED(", rate, ")");
      break;
    case MaskKind::kStrided:
      base = absl::StrCat("STRIDED(", window, ",", rate, ")");
      break;
  }
  if (!causal) return base;
  return base.empty() ? std::string("CAUSAL") : absl::StrCat("CAUSAL+", base);
}

absl::StatusOr<AttentionMask> AttentionMask::Create(const MaskSpec& spec, int k_len, int q_offset,
                                                    int q_len) {
  if (absl::Status s = spec.Validate(k_len); !s.ok()) return s;
  if (q_offset < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("mask query offset must be >= 0, got ", q_offset));
  }
  if (q_len < 0) q_len = std::max(0, k_len - q_offset);
  if (spec.kind == MaskKind::kUnilm && !spec.causal && int64_t{q_offset} + q_len > k_len) {
    return absl::InvalidArgumentError(
        absl::StrCat("UNILM mask needs every query to be a key: q_offset ", q_offset, " + q_len ",
                     q_len, " > k_len ", k_len));
  }
  AttentionMask m;
  m.q_len_ = q_len;
  m.k_len_ = k_len;
  m.q_offset_ = q_offset;
  m.name_ = spec.ToString();
  const bool causal = spec.causal || spec.kind == MaskKind::kCausal;
  m.lo_ = causal ? 0 : -kUnbounded;
  switch (spec.kind) {
    case MaskKind::kBidirectional:
    case MaskKind::kCausal:
      m.pattern_ = Pattern::kBand;
      break;
    case MaskKind::kUnilm:
      // j <= i implies c[j] <= c[i] (c is non-decreasing), so causal UNILM is
      // plain causal.
      if (causal) {
        m.pattern_ = Pattern::kBand;
        break;
      }
      m.pattern_ = Pattern::kUnilm;
      if (spec.segment_ids.empty()) {
        m.prefix_length_ = spec.prefix_length;
      } else {
        m.cumsum_.resize(spec.segment_ids.size());
        int32_t c = 0;
        for (size_t t = 0; t < spec.segment_ids.size(); ++t) {
          c += spec.segment_ids[t];
          m.cumsum_[t] = c;
        }
      }
      break;
    case MaskKind::kLocal:
      m.pattern_ = Pattern::kBand;
      m.lo_ = std::max<int64_t>(m.lo_, -spec.window);
      m.hi_ = spec.window;
      break;
    case MaskKind::kDilated:
      m.pattern_ = Pattern::kDilated;
      m.rate_ = spec.rate;
      break;
    case MaskKind::kStrided:
      m.pattern_ = Pattern::kStrided;
      m.window_ = spec.window;
      m.rate_ = spec.rate;
      break;
  }
  return m;
}

int64_t AttentionMask::CountAllowed(int64_t a, int64_t b) const {
  switch (pattern_) {
    case Pattern::kBand:
      return Length(std::max(a, lo_), std::min(b, hi_));
    case Pattern::kDilated:
      return Multiples(std::max(a, lo_), b, rate_);
    case Pattern::kStrided: {
      // |I ∩ local| + |multiples in I| - |multiples in I ∩ local|.
      const int64_t ia = std::max(a, lo_);
      const int64_t la = std::max(ia, -window_);
      const int64_t lb = std::min(b, window_);
      return Length(la, lb) + Multiples(ia, b, rate_) - Multiples(la, lb, rate_);
    }
    case Pattern::kUnilm:
      break;
  }
  return 0;
}

BlockState AttentionMask::Classify(int q0, int q1, int k0, int k1) const {
  if (q0 >= q1 || k0 >= k1) return BlockState::kEmpty;
  const int64_t i0 = int64_t{q_offset_} + q0;
  const int64_t i1 = int64_t{q_offset_} + q1 - 1;
  if (pattern_ == Pattern::kUnilm) {
    if (Segment(k1 - 1) <= Segment(i0)) return BlockState::kFull;
    if (Segment(k0) > Segment(i1)) return BlockState::kEmpty;
    return BlockState::kPartial;
  }
  // Every d in [i0 - (k1 - 1), i1 - k0] occurs in the rectangle, and the
  // pattern depends on d only: counting allowed d values decides exactly.
  const int64_t dmin = i0 - (k1 - 1);
  const int64_t dmax = i1 - k0;
  const int64_t allowed = CountAllowed(dmin, dmax);
  if (allowed == 0) return BlockState::kEmpty;
  if (allowed == dmax - dmin + 1) return BlockState::kFull;
  return BlockState::kPartial;
}

KeySpan AttentionMask::KeyRange(int q0, int q1) const {
  if (q0 >= q1 || k_len_ == 0) return {0, 0};
  const int64_t i0 = int64_t{q_offset_} + q0;
  const int64_t i1 = int64_t{q_offset_} + q1 - 1;
  int64_t begin = 0;
  int64_t end = k_len_;
  switch (pattern_) {
    case Pattern::kBand:
      begin = i0 - hi_;
      end = i1 - lo_ + 1;
      break;
    case Pattern::kDilated:
    case Pattern::kStrided:
      end = i1 - lo_ + 1;
      break;
    case Pattern::kUnilm: {
      const int64_t c = Segment(i1);
      if (!cumsum_.empty()) {
        end = std::upper_bound(cumsum_.begin(), cumsum_.end(), c) - cumsum_.begin();
      } else {
        // c(j) <= c: j < prefix_length when c == 0, else j <= i1.
        end = c == 0 ? prefix_length_ : i1 + 1;
      }
      break;
    }
  }
  begin = std::clamp<int64_t>(begin, 0, k_len_);
  end = std::clamp<int64_t>(end, 0, k_len_);
  if (begin >= end) return {0, 0};
  return {static_cast<int>(begin), static_cast<int>(end)};
}

std::vector<uint8_t> AttentionMask::Materialize() const {
  std::vector<uint8_t> out(static_cast<size_t>(q_len_) * k_len_);
  for (int r = 0; r < q_len_; ++r) {
    for (int j = 0; j < k_len_; ++j) {
      out[static_cast<size_t>(r) * k_len_ + j] = Allowed(r, j) ? 1 : 0;
    }
  }
  return out;
}

std::string AttentionMask::DebugString() const {
  std::string s;
  s.reserve(static_cast<size_t>(q_len_) * (k_len_ + 1));
  for (int r = 0; r < q_len_; ++r) {
    for (int j = 0; j < k_len_; ++j) s.push_back(Allowed(r, j) ? '1' : '.');
    s.push_back('\n');
  }
  return s;
}

absl::StatusOr<std::vector<uint8_t>> MaterializeMask(const MaskSpec& spec, int seq_len) {
  absl::StatusOr<AttentionMask> mask = AttentionMask::Create(spec, seq_len);
  if (!mask.ok()) return mask.status();
  return mask->Materialize();
}

}  // namespace maskserve::engine
