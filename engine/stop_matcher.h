// Streaming text hygiene for generation:
//  - StopMatcher finds stop strings in detokenised text across token
//    boundaries and holds back any tail that could still become one, so a
//    stream never shows part of a stop string (nor anything after it).
//  - Utf8StreamDecoder turns a byte stream into complete UTF-8 characters,
//    replacing invalid bytes with U+FFFD the way Python's
//    bytes.decode("utf-8", errors="replace") does (one per maximal invalid
//    subpart), for byte-level tokenizers whose tokens split characters.
//  - IncrementalDetokenizer streams the text of a growing id sequence using
//    only a Decode(ids) function (vLLM's offset scheme): it re-decodes a small
//    window for context (so SentencePiece's leading-space rules come out as
//    in a full decode) and waits while the text ends in U+FFFD (an incomplete
//    character).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace maskserve::engine {

class StopMatcher {
 public:
  // Empty strings in stop_strings are ignored.
  explicit StopMatcher(std::vector<std::string> stop_strings);

  struct Result {
    std::string text;      // safe to emit now
    bool stopped = false;  // a stop string was found; `text` ends right before it
    int stop_index = -1;   // which stop string (index into the constructor's list)
  };

  // Feeds newly decoded text. After a stop every call returns {"" , true}.
  // The earliest match wins; at equal starts, the earlier-listed string.
  Result Push(absl::string_view text);

  // End of generation without a stop: returns the held-back tail.
  std::string Flush();

  bool stopped() const { return stopped_; }
  // Bytes currently held back.
  size_t held() const { return pending_.size(); }

 private:
  std::vector<std::string> stops_;
  std::string pending_;
  bool stopped_ = false;
  int stop_index_ = -1;
};

class Utf8StreamDecoder {
 public:
  // Appends bytes; returns the valid UTF-8 text they complete (an incomplete
  // trailing character is held back until more bytes arrive).
  std::string Push(absl::string_view bytes);
  // End of stream: an incomplete trailing character becomes U+FFFD.
  std::string Flush();
  size_t held() const { return pending_.size(); }

 private:
  std::string pending_;
};

// Decodes [bos, eos) bytes of text as valid UTF-8 up to the first incomplete
// trailing sequence: returns how many bytes were consumed and appends the
// (replacement-repaired) text to out. final = true treats a truncated tail
// as invalid (U+FFFD) instead of leaving it.
size_t DecodeUtf8Replace(absl::string_view bytes, bool final, std::string* out);

class IncrementalDetokenizer {
 public:
  // decode(ids) -> text, e.g. the tokenizer's Decode with special tokens
  // skipped; it must insert U+FFFD for incomplete characters (HF
  // errors="replace").
  using DecodeFn = std::function<absl::StatusOr<std::string>(absl::Span<const int32_t>)>;

  // prompt_ids (may be empty) give context only: their text is not emitted.
  IncrementalDetokenizer(DecodeFn decode, std::vector<int32_t> prompt_ids);

  // Adds one generated id; returns the newly completed text (may be empty).
  absl::StatusOr<std::string> Push(int32_t id);
  // End of generation: whatever was held back (may end in U+FFFD).
  absl::StatusOr<std::string> Flush();

 private:
  // How many previous ids re-decoded for context.
  static constexpr int kContext = 5;
  DecodeFn decode_;
  std::vector<int32_t> ids_;
  size_t prefix_offset_ = 0;  // start of the context window
  size_t read_offset_ = 0;    // ids up to here have been emitted
};

}  // namespace maskserve::engine
