// WordPiece tokenizer against HF transformers 4.31's slow BertTokenizer
// (golden tokenization.json files). Tolerance: ids, tokens and token type ids
// identical.
#include "engine/tokenizer/wordpiece_tokenizer.h"

#include <gtest/gtest.h>
#include <utf8proc.h>

#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "engine/tokenizer/tokenizer_factory.h"
#include "engine/tokenizer/truncation.h"
#include "engine/tokenizer/utf8.h"
#include "nlohmann/json.hpp"
#include "tests/util/golden_json.h"
#include "tests/util/test_env.h"

namespace maskserve::engine {
namespace {

using json = nlohmann::json;
using maskserve::testing::LoadJson;
using Strategy = TruncationOptions::Strategy;
using Side = TruncationOptions::Side;


std::unique_ptr<Tokenizer> LoadOrDie(const std::string& dir) {
  auto tok = LoadTokenizer(dir);
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? *std::move(tok) : nullptr;
}

TruncationOptions Max512() {
  TruncationOptions t;
  t.max_length = 512;
  return t;
}

void ExpectMatchesGolden(const Encoding& e, const json& g, const std::string& what) {
  EXPECT_EQ(e.ids, g["input_ids"].get<std::vector<int32_t>>()) << what;
  EXPECT_EQ(e.tokens, g["tokens"].get<std::vector<std::string>>()) << what;
  EXPECT_EQ(e.type_ids, g["token_type_ids"].get<std::vector<int32_t>>()) << what;
  EXPECT_EQ(e.offsets.size(), e.ids.size()) << what;
  if (g.contains("num_tokens_untruncated")) {
    EXPECT_EQ(e.num_tokens_untruncated, g["num_tokens_untruncated"].get<int32_t>()) << what;
    EXPECT_EQ(e.truncated, g["truncated"].get<bool>()) << what;
  }
}

class GoldenTokenizationTest : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenTokenizationTest, SentencesPairsAndTruncationMatchHf) {
  MASKSERVE_REQUIRE_SHARED(golden, "golden/" + GetParam() + "/tokenization.json");
  MASKSERVE_REQUIRE_SHARED(model_dir, "golden/models/" + GetParam());
  auto tok = LoadOrDie(model_dir);
  ASSERT_NE(tok, nullptr);
  const json g = LoadJson(golden);

  ASSERT_EQ(g["sentences"].size(), 40u);
  for (const json& s : g["sentences"]) {
    auto e = tok->Encode(s["text"].get<std::string>(), true, Max512());
    ASSERT_TRUE(e.ok()) << e.status();
    ExpectMatchesGolden(*e, s, s["id"].get<std::string>());
  }
  ASSERT_EQ(g["pairs"].size(), 10u);
  for (const json& p : g["pairs"]) {
    auto e = tok->EncodePair(p["text_a"].get<std::string>(), p["text_b"].get<std::string>(), true,
                             Max512());
    ASSERT_TRUE(e.ok()) << e.status();
    ExpectMatchesGolden(*e, p, p["id"].get<std::string>());
  }
  ASSERT_EQ(g["truncation_variants"].size(), 9u);
  int n = 0;
  for (const json& v : g["truncation_variants"]) {
    TruncationOptions t;
    t.max_length = v["max_length"].get<int>();
    const std::string strategy = v["truncation"].get<std::string>();
    t.strategy = strategy == "only_first"    ? Strategy::kOnlyFirst
                 : strategy == "only_second" ? Strategy::kOnlySecond
                                             : Strategy::kLongestFirst;
    ASSERT_TRUE(strategy == "only_first" || strategy == "only_second" ||
                strategy == "longest_first");
    t.side = v["truncation_side"].get<std::string>() == "left" ? Side::kLeft : Side::kRight;
    const std::string what = "variant " + std::to_string(n++) + " " + strategy + " " +
                             std::to_string(t.max_length) + " " +
                             v["truncation_side"].get<std::string>();
    absl::StatusOr<Encoding> e;
    if (v.contains("text")) {
      e = tok->Encode(v["text"].get<std::string>(), true, t);
    } else {
      e = tok->EncodePair(v["text_a"].get<std::string>(), v["text_b"].get<std::string>(), true, t);
    }
    ASSERT_TRUE(e.ok()) << e.status();
    ExpectMatchesGolden(*e, v, what);
    EXPECT_EQ(static_cast<int>(e->ids.size()), t.max_length) << what;
    EXPECT_TRUE(e->truncated) << what;
  }
}

INSTANTIATE_TEST_SUITE_P(BertAndRoformer, GoldenTokenizationTest,
                         ::testing::Values("bert-mini", "roformer-mini"), [](const auto& info) {
                           return info.param == "bert-mini" ? "BertMini" : "RoformerMini";
                         });

// vocab.txt and tokenizer.json of the same model must agree on everything.
TEST(WordPieceTokenizerTest, VocabTxtAndTokenizerJsonAgreeOnAllGoldenInputs) {
  MASKSERVE_REQUIRE_SHARED(dir, "models/tokenizer-only/all-MiniLM-L6-v2");
  MASKSERVE_REQUIRE_SHARED(inputs_path, "golden/inputs.json");
  auto from_txt = WordPieceOptionsFromDirectory(dir, WordPieceSource::kVocabTxt);
  auto from_json = WordPieceOptionsFromDirectory(dir, WordPieceSource::kTokenizerJson);
  ASSERT_TRUE(from_txt.ok()) << from_txt.status();
  ASSERT_TRUE(from_json.ok()) << from_json.status();
  EXPECT_EQ(from_txt->vocab, from_json->vocab);
  auto a = WordPieceTokenizer::Create(*from_txt);
  auto b = WordPieceTokenizer::Create(*from_json);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ((*a)->vocab_size(), 30522);
  EXPECT_EQ((*b)->vocab_size(), 30522);
  const json inputs = LoadJson(inputs_path);
  auto same = [](const Encoding& x, const Encoding& y, const std::string& what) {
    EXPECT_EQ(x.ids, y.ids) << what;
    EXPECT_EQ(x.tokens, y.tokens) << what;
    EXPECT_EQ(x.offsets, y.offsets) << what;
    EXPECT_EQ(x.type_ids, y.type_ids) << what;
  };
  int checked = 0;
  for (const json& s : inputs["sentences"]) {
    const std::string text = s["text"].get<std::string>();
    auto x = (*a)->Encode(text, true, Max512());
    auto y = (*b)->Encode(text, true, Max512());
    ASSERT_TRUE(x.ok() && y.ok());
    same(*x, *y, s["id"].get<std::string>());
    ++checked;
  }
  for (const json& p : inputs["pairs"]) {
    auto x = (*a)->EncodePair(p["text_a"].get<std::string>(), p["text_b"].get<std::string>(), true,
                              Max512());
    auto y = (*b)->EncodePair(p["text_a"].get<std::string>(), p["text_b"].get<std::string>(), true,
                              Max512());
    ASSERT_TRUE(x.ok() && y.ok());
    same(*x, *y, p["id"].get<std::string>());
    ++checked;
  }
  EXPECT_EQ(checked, 50);
}

// The model directory's bert-mini vocabulary is this vocab.txt: the factory
// must reproduce the golden ids from the tokenizer-only directory too.
TEST(WordPieceTokenizerTest, FactoryLoadsTokenizerOnlyDirectory) {
  MASKSERVE_REQUIRE_SHARED(dir, "models/tokenizer-only/all-MiniLM-L6-v2");
  auto tok = LoadOrDie(dir);
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->model_max_length(), 512);
  EXPECT_EQ(tok->special_ids().cls, 101);
  EXPECT_EQ(tok->special_ids().sep, 102);
  EXPECT_EQ(tok->special_ids().pad, 0);
  EXPECT_EQ(tok->special_ids().unk, 100);
  EXPECT_EQ(tok->special_ids().mask, 103);
  EXPECT_FALSE(tok->special_ids().bos.has_value());
  EXPECT_TRUE(tok->IsSpecial(103));
  EXPECT_FALSE(tok->IsSpecial(1996));
  EXPECT_EQ(tok->NumSpecialTokensToAdd(false), 2);
  EXPECT_EQ(tok->NumSpecialTokensToAdd(true), 3);
  EXPECT_EQ(tok->TokenToId("the"), 1996);
  EXPECT_EQ(tok->TokenToId("no-such-token-here"), std::nullopt);
  EXPECT_EQ(*tok->IdToToken(1996), "the");
  EXPECT_FALSE(tok->IdToToken(30522).ok());
  EXPECT_FALSE(tok->IdToToken(-1).ok());
  auto e = tok->Encode("The capital of France is [MASK].", true, {});
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->ids, (std::vector<int32_t>{101, 1996, 3007, 1997, 2605, 2003, 103, 1012, 102}));
}

TEST(WordPieceTokenizerTest, FactoryErrorsNameTheDirectory) {
  const std::string empty = maskserve::testing::MakeTempDir("tok-empty");
  auto none = LoadTokenizer(empty);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(none.status().message().find(empty), std::string::npos) << none.status();

  const std::string bpe = maskserve::testing::MakeTempDir("tok-bpe");
  std::ofstream(bpe + "/vocab.json") << "{}";
  std::ofstream(bpe + "/merges.txt") << "#version: 0.2\n";
  // BPE files are recognised (not "no tokenizer files"); an empty vocabulary
  // is a damaged checkpoint, reported with the file's path.
  auto b = LoadTokenizer(bpe);
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(b.status().message().find(bpe + "/vocab.json"), std::string::npos) << b.status();
}

// A tiny in-memory vocabulary for behaviour tests that need no shared data.
std::unique_ptr<WordPieceTokenizer> TinyTokenizer(bool lower = true) {
  WordPieceOptions o;
  o.vocab = {"[PAD]", "[UNK]", "[CLS]", "[SEP]",  "[MASK]", "hello", "world", ",",
             "!",     "un",    "##aff", "##able", "a",      "b",     "[",     "]",
             "mask",  "e",     "##llo", "h",      "Hello",  "ß"};
  o.do_lower_case = lower;
  auto t = WordPieceTokenizer::Create(o);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *std::move(t) : nullptr;
}

std::vector<std::string> Tokens(const Tokenizer& tok, const std::string& text) {
  auto e = tok.Encode(text, false, {});
  EXPECT_TRUE(e.ok()) << e.status();
  return e.ok() ? e->tokens : std::vector<std::string>{};
}

TEST(WordPieceTokenizerTest, InvalidUtf8IsAnError) {
  auto tok = TinyTokenizer();
  ASSERT_NE(tok, nullptr);
  const std::pair<std::string, int> bad[] = {
      {"abc\xff", 3},           // not a lead byte
      {"ab\xC0\x80", 2},        // overlong NUL
      {"\xED\xA0\x80", 0},      // UTF-16 surrogate
      {"hello \xE2\x82", 6},    // truncated at the end
      {"\xF4\x90\x80\x80", 0},  // above U+10FFFF
      {"x\x80y", 1},            // stray continuation byte
  };
  for (const auto& [text, byte] : bad) {
    auto e = tok->Encode(text, true, {});
    ASSERT_FALSE(e.ok()) << "byte " << byte;
    EXPECT_EQ(e.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(e.status().message(), "text is not valid UTF-8 at byte " + std::to_string(byte));
    EXPECT_FALSE(tok->EncodePair("ok", text, true, {}).ok());
  }
}

TEST(WordPieceTokenizerTest, WordPieceGreedyLongestMatch) {
  auto tok = TinyTokenizer();
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(Tokens(*tok, "unaffable"), (std::vector<std::string>{"un", "##aff", "##able"}));
  // No full segmentation: the whole word is one [UNK].
  EXPECT_EQ(Tokens(*tok, "unaffablex hello"), (std::vector<std::string>{"[UNK]", "hello"}));
  EXPECT_EQ(Tokens(*tok, "HELLO,world!"), (std::vector<std::string>{"hello", ",", "world", "!"}));
  // Special tokens match exactly and case-sensitively; "[mask]" is text.
  EXPECT_EQ(Tokens(*tok, "a[MASK]b"), (std::vector<std::string>{"a", "[MASK]", "b"}));
  EXPECT_EQ(Tokens(*tok, "a [mask] b"), (std::vector<std::string>{"a", "[", "mask", "]", "b"}));
  // Over max_input_chars_per_word (100 code points) -> one [UNK].
  EXPECT_EQ(Tokens(*tok, std::string(101, 'a')), (std::vector<std::string>{"[UNK]"}));
}

TEST(WordPieceTokenizerTest, CasedTokenizerKeepsCase) {
  auto tok = TinyTokenizer(/*lower=*/false);
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(Tokens(*tok, "Hello hello"), (std::vector<std::string>{"Hello", "hello"}));
  // No accent stripping without lower-casing; NFC composes e + U+0301.
  EXPECT_EQ(Tokens(*tok, "h\xC3\xA9llo"), (std::vector<std::string>{"[UNK]"}));
}

TEST(WordPieceTokenizerTest, OffsetsAreCodePointsOfTheOriginalText) {
  auto tok = TinyTokenizer();
  ASSERT_NE(tok, nullptr);
  // "Héllo, World!": é is one code point (two bytes); it maps back whole.
  auto e = tok->Encode("H\xC3\xA9llo, World!", true, {});
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->tokens, (std::vector<std::string>{"[CLS]", "hello", ",", "world", "!", "[SEP]"}));
  using P = std::pair<int32_t, int32_t>;
  EXPECT_EQ(e->offsets, (std::vector<P>{{0, 0}, {0, 5}, {5, 6}, {7, 12}, {12, 13}, {0, 0}}));
  // Decomposed input: e + U+0301 are two code points of one token.
  e = tok->Encode("he\xCC\x81llo", false, {});
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->tokens, (std::vector<std::string>{"hello"}));
  EXPECT_EQ(e->offsets, (std::vector<P>{{0, 6}}));
  // Sub-word pieces, dropped control characters and special tokens in text.
  e = tok->Encode(
      "un\xE2\x80\x8B"
      "affable [MASK]",
      false, {});
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->tokens, (std::vector<std::string>{"un", "##aff", "##able", "[MASK]"}));
  EXPECT_EQ(e->offsets, (std::vector<P>{{0, 2}, {3, 6}, {6, 10}, {11, 17}}));
}

// Lower-cased, accent-stripped, case-folded form of UTF-8 text.
std::string Fold(const std::string& s) {
  utf8proc_uint8_t* out = nullptr;
  const auto n = utf8proc_map(
      reinterpret_cast<const utf8proc_uint8_t*>(s.data()), static_cast<utf8proc_ssize_t>(s.size()),
      &out,
      static_cast<utf8proc_option_t>(UTF8PROC_DECOMPOSE | UTF8PROC_STRIPMARK | UTF8PROC_CASEFOLD));
  std::string r = n >= 0 ? std::string(reinterpret_cast<char*>(out), n) : s;
  free(out);
  return r;
}

// Slicing the input at a token's offsets gives the token's text up to case
// and accents (a Hangul syllable slice holds several jamo tokens).
TEST(WordPieceTokenizerTest, OffsetsSliceToTokenTextOnGoldenInputs) {
  MASKSERVE_REQUIRE_SHARED(dir, "models/tokenizer-only/all-MiniLM-L6-v2");
  MASKSERVE_REQUIRE_SHARED(inputs_path, "golden/inputs.json");
  auto tok = LoadOrDie(dir);
  ASSERT_NE(tok, nullptr);
  const json inputs = LoadJson(inputs_path);
  int exact = 0;
  for (const json& s : inputs["sentences"]) {
    const std::string text = s["text"].get<std::string>();
    std::u32string cps;
    ASSERT_TRUE(DecodeUtf8(text, &cps).ok());
    auto e = tok->Encode(text, true, {});
    ASSERT_TRUE(e.ok());
    int32_t last_begin = 0;
    for (size_t i = 0; i < e->ids.size(); ++i) {
      const auto [b, en] = e->offsets[i];
      if (tok->IsSpecial(e->ids[i]) && b == 0 && en == 0) continue;
      ASSERT_LE(0, b);
      ASSERT_LT(b, en);
      ASSERT_LE(en, static_cast<int32_t>(cps.size()));
      EXPECT_LE(last_begin, b) << s["id"];
      last_begin = b;
      if (e->ids[i] == *tok->special_ids().unk) continue;
      std::string token = e->tokens[i];
      if (token.rfind("##", 0) == 0) token = token.substr(2);
      const std::string slice = Fold(EncodeUtf8(std::u32string_view(cps).substr(b, en - b)));
      const std::string folded = Fold(token);
      if (slice == folded) {
        ++exact;
      } else {
        EXPECT_NE(slice.find(folded), std::string::npos)
            << s["id"] << " token " << e->tokens[i] << " slice " << slice;
      }
    }
  }
  EXPECT_GT(exact, 2000);
}

TEST(WordPieceTokenizerTest, DecodeLikeHf) {
  MASKSERVE_REQUIRE_SHARED(dir, "models/tokenizer-only/all-MiniLM-L6-v2");
  auto tok = LoadOrDie(dir);
  ASSERT_NE(tok, nullptr);
  const std::pair<std::string, std::string> cases[] = {
      {"The quick brown fox jumps over the lazy dog.",
       "the quick brown fox jumps over the lazy dog."},
      {"Hello, World! It's a test; isn't it?", "hello, world! it's a test ; isn't it?"},
      {"I'm sure they've gone, you're right.", "i'm sure they've gone, you're right."},
      {"tokenization unaffable", "tokenization unaffable"},
  };
  for (const auto& [text, want] : cases) {
    auto e = tok->Encode(text, true, {});
    ASSERT_TRUE(e.ok());
    auto d = tok->Decode(e->ids, /*skip_special_tokens=*/true);
    ASSERT_TRUE(d.ok());
    EXPECT_EQ(*d, want);
  }
  auto e = tok->EncodePair("Hi there.", "[MASK] me", true, {});
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(*tok->Decode(e->ids, false), "[CLS] hi there. [SEP] [MASK] me [SEP]");
  EXPECT_EQ(*tok->Decode(e->ids, true), "hi there. me");
  // Unknown ids decode as [UNK], as in HF (and are not skipped as special).
  const int32_t odd[] = {1996, 999999, -5};
  EXPECT_EQ(*tok->Decode(odd, true), "the [UNK] [UNK]");
}

TEST(WordPieceTokenizerTest, PairsAndTruncationOptions) {
  auto tok = TinyTokenizer();
  ASSERT_NE(tok, nullptr);
  TruncationOptions t;
  t.max_length = 5;
  auto e = tok->EncodePair("hello world hello", "a b", true, t);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->tokens, (std::vector<std::string>{"[CLS]", "hello", "[SEP]", "a", "[SEP]"}));
  EXPECT_EQ(e->type_ids, (std::vector<int32_t>{0, 0, 0, 1, 1}));
  EXPECT_TRUE(e->truncated);
  EXPECT_EQ(e->num_tokens_untruncated, 8);
  // Without special tokens all types are 0 and nothing is reserved for them.
  e = tok->EncodePair("hello", "a b", false, t);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->tokens, (std::vector<std::string>{"hello", "a", "b"}));
  EXPECT_EQ(e->type_ids, (std::vector<int32_t>{0, 0, 0}));
  EXPECT_FALSE(e->truncated);
  // Empty second text is still a pair.
  e = tok->EncodePair("hello", "", true, {});
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->tokens, (std::vector<std::string>{"[CLS]", "hello", "[SEP]", "[SEP]"}));
  EXPECT_EQ(e->type_ids, (std::vector<int32_t>{0, 0, 0, 1}));
}

TEST(TruncationTest, FollowsHfTruncateSequences) {
  TruncationOptions t;
  t.max_length = 10;
  // Fits: nothing removed.
  EXPECT_FALSE(PlanTruncation(5, 2, 3, t).truncated());
  // longest_first removes from the longer, B on ties: a=6,b=4 (+3) -> 10.
  TruncationPlan p = PlanTruncation(6, 4, 3, t);
  EXPECT_EQ(p.a_back, 2);
  EXPECT_EQ(p.b_back, 1);
  t.side = Side::kLeft;
  p = PlanTruncation(6, 4, 3, t);
  EXPECT_EQ(p.a_front, 2);
  EXPECT_EQ(p.b_front, 1);
  EXPECT_EQ(p.a_back + p.b_back, 0);
  t.side = Side::kRight;
  // Single text.
  p = PlanTruncation(20, -1, 2, t);
  EXPECT_EQ(p.a_back, 12);
  // only_second.
  t.strategy = Strategy::kOnlySecond;
  p = PlanTruncation(3, 20, 3, t);
  EXPECT_EQ(p.b_back, 16);
  EXPECT_EQ(p.a_back, 0);
  // Failure modes return the input untruncated, as HF does.
  p = PlanTruncation(20, 3, 3, t);
  EXPECT_FALSE(p.truncated());
  t.strategy = Strategy::kOnlyFirst;
  p = PlanTruncation(3, 20, 3, t);
  EXPECT_FALSE(p.truncated());
  t.strategy = Strategy::kLongestFirst;
  t.max_length = 2;
  EXPECT_FALSE(PlanTruncation(2, -1, 2, t).truncated());
  // only_second on a single text does nothing.
  t.strategy = Strategy::kOnlySecond;
  t.max_length = 4;
  EXPECT_FALSE(PlanTruncation(10, -1, 2, t).truncated());
}

}  // namespace
}  // namespace maskserve::engine
