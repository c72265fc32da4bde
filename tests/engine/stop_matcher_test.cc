#include "engine/stop_matcher.h"

#include <string>
#include <vector>

#include "engine/tokenizer/utf8.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace maskserve::engine {
namespace {

bool ValidUtf8(const std::string& s) {
  std::u32string cps;
  return DecodeUtf8(s, &cps).ok();
}

// Feeds pieces one by one; returns what was emitted per piece.
std::vector<std::string> Feed(StopMatcher& m, const std::vector<std::string>& pieces) {
  std::vector<std::string> out;
  for (const std::string& p : pieces) out.push_back(m.Push(p).text);
  return out;
}

TEST(StopMatcherTest, StopStringSplitAcrossTokens) {
  StopMatcher m({"###"});
  EXPECT_EQ(m.Push("ab#").text, "ab");
  EXPECT_EQ(m.held(), 1u);
  EXPECT_EQ(m.Push("#").text, "");
  const StopMatcher::Result r = m.Push("#cd");
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.text, "");
  EXPECT_EQ(r.stop_index, 0);
  EXPECT_TRUE(m.Push("more").stopped);
  EXPECT_EQ(m.Push("more").text, "");
  EXPECT_EQ(m.Flush(), "");
}

TEST(StopMatcherTest, TextBeforeTheStopInTheSameTokenIsEmitted) {
  StopMatcher m({"\n\n"});
  EXPECT_EQ(m.Push("Hello").text, "Hello");
  const StopMatcher::Result r = m.Push(" world\n\nignored");
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.text, " world");
}

TEST(StopMatcherTest, PartialPrefixIsHeldThenReleased) {
  StopMatcher m({"STOP"});
  EXPECT_THAT(Feed(m, {"hello S", "T", "ar", "S"}),
              ::testing::ElementsAre("hello ", "", "STar", ""));
  EXPECT_FALSE(m.stopped());
  EXPECT_EQ(m.Flush(), "S");  // end of generation releases the tail
}

TEST(StopMatcherTest, EarliestMatchWinsAcrossStrings) {
  StopMatcher m({"world", "lo w", ""});
  const StopMatcher::Result r = m.Push("hello world");
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.text, "hel");
  EXPECT_EQ(r.stop_index, 1);
}

TEST(StopMatcherTest, OverlappingCandidatesHoldTheLongestTail) {
  // "aab": after "xaa" both "a" and "aa" could start "aab"; hold "aa".
  StopMatcher m({"aab", "zz"});
  EXPECT_EQ(m.Push("xaa").text, "x");
  EXPECT_EQ(m.Push("a").text, "a");  // "aaa": only "aa" can still start a match
  const StopMatcher::Result r = m.Push("b!");
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.text, "");
}

TEST(StopMatcherTest, NoStopStringsPassesEverythingThrough) {
  StopMatcher m({});
  EXPECT_EQ(m.Push("abc").text, "abc");
  EXPECT_EQ(m.held(), 0u);
}

TEST(Utf8StreamDecoderTest, MultiByteCharactersSplitAcrossTokensAreNeverHalfEmitted) {
  Utf8StreamDecoder d;
  // "é" = C3 A9, "😀" = F0 9F 98 80, "中" = E4 B8 AD.
  EXPECT_EQ(d.Push("caf\xC3"), "caf");
  EXPECT_EQ(d.held(), 1u);
  EXPECT_EQ(d.Push("\xA9 \xF0"), "\xC3\xA9 ");
  EXPECT_EQ(d.Push("\x9F\x98"), "");
  EXPECT_EQ(d.Push("\x80\xE4\xB8"), "\xF0\x9F\x98\x80");
  EXPECT_EQ(d.Push("\xAD"), "\xE4\xB8\xAD");
  EXPECT_EQ(d.Flush(), "");
}

TEST(Utf8StreamDecoderTest, InvalidBytesBecomeReplacementLikePython) {
  const std::string fffd = "\xEF\xBF\xBD";
  Utf8StreamDecoder d;
  // b'\xe2\x82A'.decode(errors='replace') == '\ufffdA' (one per maximal subpart).
  EXPECT_EQ(d.Push("\xE2\x82"), "");
  EXPECT_EQ(d.Push("A"), fffd + "A");
  // A stray continuation byte and a byte that never starts a character.
  EXPECT_EQ(d.Push("\x80\xFF"), fffd + fffd);
  // An encoded surrogate: ED A0 80 -> three replacements in Python.
  EXPECT_EQ(d.Push("\xED\xA0\x80"), fffd + fffd + fffd);
  // Overlong "/" (C0 AF) -> two.
  EXPECT_EQ(d.Push("\xC0\xAF"), fffd + fffd);
  // A truncated character at the end of the stream -> one.
  EXPECT_EQ(d.Push("\xF0\x9F"), "");
  EXPECT_EQ(d.Flush(), fffd);
}

TEST(StopMatcherTest, BytePiecesThroughDecoderAndMatcherStayValidUtf8) {
  // Byte-level tokens splitting multi-byte characters, with a multi-byte stop
  // string ("。" = E3 80 82) split across tokens too.
  const std::vector<std::string> tokens = {"\xE4\xBD", "\xA0\xE5\xA5", "\xBD\xE3", "\x80",
                                           "\x82\xE5\x86\x8D"};
  Utf8StreamDecoder dec;
  StopMatcher m({"\xE3\x80\x82"});
  std::string emitted;
  bool stopped = false;
  for (const std::string& t : tokens) {
    const StopMatcher::Result r = m.Push(dec.Push(t));
    EXPECT_TRUE(ValidUtf8(r.text)) << "emitted a partial character";
    emitted += r.text;
    if (r.stopped) {
      stopped = true;
      break;
    }
  }
  EXPECT_TRUE(stopped);
  EXPECT_EQ(emitted, "\xE4\xBD\xA0\xE5\xA5\xBD");  // "你好"
}

// A fake byte-level tokenizer: id -> bytes, decode = concatenation decoded
// with errors="replace"; sentencepiece_like strips one leading space of the
// decoded text, as SentencePiece decoding does.
struct FakeTokenizer {
  std::vector<std::string> pieces;
  bool sentencepiece_like = false;
  absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids) const {
    std::string bytes;
    for (int32_t id : ids) bytes += pieces[id];
    std::string text;
    DecodeUtf8Replace(bytes, /*final=*/true, &text);
    if (sentencepiece_like && !text.empty() && text[0] == ' ') text.erase(0, 1);
    return text;
  }
};

TEST(IncrementalDetokenizerTest, WaitsForCompleteCharacters) {
  FakeTokenizer tok{{"Hi", " caf", "\xC3", "\xA9", "!", "\xF0\x9F", "\x98\x80"}};
  IncrementalDetokenizer d([&](absl::Span<const int32_t> ids) { return tok.Decode(ids); }, {0});
  std::vector<std::string> out;
  for (int32_t id : {1, 2, 3, 4, 5, 6}) out.push_back(*d.Push(id));
  EXPECT_THAT(out, ::testing::ElementsAre(" caf", "", "\xC3\xA9", "!", "", "\xF0\x9F\x98\x80"));
  EXPECT_EQ(*d.Flush(), "");
}

TEST(IncrementalDetokenizerTest, StreamEqualsFullDecodeWithSentencePieceSpaces) {
  FakeTokenizer tok{{" Once", " upon", " a", " time", ",", " \xE4\xB8", "\xAD"}, true};
  auto decode = [&](absl::Span<const int32_t> ids) { return tok.Decode(ids); };
  const std::vector<int32_t> prompt = {0, 1};
  const std::vector<int32_t> gen = {2, 3, 4, 5, 6, 2};
  IncrementalDetokenizer d(decode, prompt);
  std::string streamed;
  for (int32_t id : gen) {
    const std::string piece = *d.Push(id);
    EXPECT_TRUE(ValidUtf8(piece));
    streamed += piece;
  }
  streamed += *d.Flush();
  std::vector<int32_t> all = prompt;
  all.insert(all.end(), gen.begin(), gen.end());
  const std::string full = *tok.Decode(all);
  const std::string prompt_text = *tok.Decode(prompt);
  // The leading space of " a" survives: the window decode has context.
  EXPECT_EQ(streamed, full.substr(prompt_text.size()));
  EXPECT_EQ(streamed, " a time, \xE4\xB8\xAD a");
}

TEST(IncrementalDetokenizerTest, FlushReleasesATruncatedCharacter) {
  FakeTokenizer tok{{"ok", "\xE4\xB8"}};
  IncrementalDetokenizer d([&](absl::Span<const int32_t> ids) { return tok.Decode(ids); }, {});
  EXPECT_EQ(*d.Push(0), "ok");
  EXPECT_EQ(*d.Push(1), "");
  EXPECT_EQ(*d.Flush(), "\xEF\xBF\xBD");
}

}  // namespace
}  // namespace maskserve::engine
