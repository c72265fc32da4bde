#include "engine/stop_matcher.h"

#include <algorithm>
#include <utility>

namespace maskserve::engine {
namespace {

constexpr absl::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

bool EndsWith(absl::string_view s, absl::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// Allowed range of the second byte after lead byte `b` (Unicode Table 3-7),
// and the sequence length; 0 = invalid lead byte.
int SequenceLength(unsigned char b, unsigned char* lo, unsigned char* hi) {
  *lo = 0x80;
  *hi = 0xBF;
  if (b < 0x80) return 1;
  if (b >= 0xC2 && b <= 0xDF) return 2;
  if (b == 0xE0) {
    *lo = 0xA0;
    return 3;
  }
  if ((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF) return 3;
  if (b == 0xED) {
    *hi = 0x9F;
    return 3;
  }
  if (b == 0xF0) {
    *lo = 0x90;
    return 4;
  }
  if (b >= 0xF1 && b <= 0xF3) return 4;
  if (b == 0xF4) {
    *hi = 0x8F;
    return 4;
  }
  return 0;
}

}  // namespace

StopMatcher::StopMatcher(std::vector<std::string> stop_strings) {
  for (auto& s : stop_strings) stops_.push_back(std::move(s));
}

StopMatcher::Result StopMatcher::Push(absl::string_view text) {
  Result r;
  if (stopped_) {
    r.stopped = true;
    r.stop_index = stop_index_;
    return r;
  }
  pending_.append(text.data(), text.size());
  size_t best = std::string::npos;
  for (int i = 0; i < static_cast<int>(stops_.size()); ++i) {
    if (stops_[i].empty()) continue;
    const size_t p = pending_.find(stops_[i]);
    if (p < best) {
      best = p;
      stop_index_ = i;
    }
  }
  if (best != std::string::npos) {
    stopped_ = true;
    r.text = pending_.substr(0, best);
    r.stopped = true;
    r.stop_index = stop_index_;
    pending_.clear();
    return r;
  }
  // Hold back the longest tail that is a proper prefix of some stop string:
  // any future match must start inside it.
  size_t hold = 0;
  const absl::string_view pending(pending_);
  for (const std::string& s : stops_) {
    for (size_t len = std::min(s.size() - (s.empty() ? 0 : 1), pending.size()); len > hold; --len) {
      if (EndsWith(pending, absl::string_view(s).substr(0, len))) {
        hold = len;
        break;
      }
    }
  }
  r.text = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return r;
}

std::string StopMatcher::Flush() {
  if (stopped_) return "";
  std::string out = std::move(pending_);
  pending_.clear();
  return out;
}

size_t DecodeUtf8Replace(absl::string_view bytes, bool final, std::string* out) {
  size_t i = 0;
  const size_t n = bytes.size();
  while (i < n) {
    const unsigned char b = static_cast<unsigned char>(bytes[i]);
    unsigned char lo, hi;
    const int len = SequenceLength(b, &lo, &hi);
    if (len == 1) {
      out->push_back(static_cast<char>(b));
      ++i;
      continue;
    }
    if (len == 0) {
      out->append(kReplacement.data(), kReplacement.size());
      ++i;
      continue;
    }
    // Longest valid prefix of the sequence (the maximal subpart).
    int got = 1;
    while (got < len && i + got < n) {
      const unsigned char c = static_cast<unsigned char>(bytes[i + got]);
      const unsigned char clo = got == 1 ? lo : 0x80;
      const unsigned char chi = got == 1 ? hi : 0xBF;
      if (c < clo || c > chi) break;
      ++got;
    }
    if (got == len) {
      out->append(bytes.data() + i, len);
      i += len;
    } else if (i + got == n && !final) {
      return i;  // truncated: wait for more bytes
    } else {
      out->append(kReplacement.data(), kReplacement.size());
      i += got;
    }
  }
  return i;
}

std::string Utf8StreamDecoder::Push(absl::string_view bytes) {
  pending_.append(bytes.data(), bytes.size());
  std::string out;
  const size_t used = DecodeUtf8Replace(pending_, /*final=*/false, &out);
  pending_.erase(0, used);
  return out;
}

std::string Utf8StreamDecoder::Flush() {
  std::string out;
  DecodeUtf8Replace(pending_, /*final=*/true, &out);
  pending_.clear();
  return out;
}

IncrementalDetokenizer::IncrementalDetokenizer(DecodeFn decode, std::vector<int32_t> prompt_ids)
    : decode_(std::move(decode)), ids_(std::move(prompt_ids)) {
  read_offset_ = ids_.size();
  prefix_offset_ = ids_.size() > static_cast<size_t>(kContext) ? ids_.size() - kContext : 0;
}

namespace {

// new_text minus the part that prefix_text already covered. They normally
// share prefix_text as a prefix; if a tokenizer rewrites earlier text (space
// clean-up), emit from the common prefix, snapped to a character boundary.
std::string Tail(const std::string& prefix_text, const std::string& new_text) {
  size_t common = 0;
  const size_t limit = std::min(prefix_text.size(), new_text.size());
  while (common < limit && prefix_text[common] == new_text[common]) ++common;
  if (common == prefix_text.size()) return new_text.substr(common);
  while (common > 0 && (static_cast<unsigned char>(new_text[common]) & 0xC0) == 0x80) --common;
  return new_text.substr(common);
}

}  // namespace

absl::StatusOr<std::string> IncrementalDetokenizer::Push(int32_t id) {
  ids_.push_back(id);
  const absl::Span<const int32_t> all(ids_);
  absl::StatusOr<std::string> prefix_text =
      decode_(all.subspan(prefix_offset_, read_offset_ - prefix_offset_));
  if (!prefix_text.ok()) return prefix_text.status();
  absl::StatusOr<std::string> new_text = decode_(all.subspan(prefix_offset_));
  if (!new_text.ok()) return new_text.status();
  if (new_text->size() > prefix_text->size() && !EndsWith(*new_text, kReplacement)) {
    std::string out = Tail(*prefix_text, *new_text);
    prefix_offset_ = read_offset_;
    read_offset_ = ids_.size();
    return out;
  }
  return std::string();
}

absl::StatusOr<std::string> IncrementalDetokenizer::Flush() {
  if (read_offset_ == ids_.size()) return std::string();
  const absl::Span<const int32_t> all(ids_);
  absl::StatusOr<std::string> prefix_text =
      decode_(all.subspan(prefix_offset_, read_offset_ - prefix_offset_));
  if (!prefix_text.ok()) return prefix_text.status();
  absl::StatusOr<std::string> new_text = decode_(all.subspan(prefix_offset_));
  if (!new_text.ok()) return new_text.status();
  prefix_offset_ = read_offset_;
  read_offset_ = ids_.size();
  if (new_text->size() <= prefix_text->size()) return std::string();
  return Tail(*prefix_text, *new_text);
}

}  // namespace maskserve::engine
