// Byte-level BPE against HF transformers 4.31's slow GPT2Tokenizer (golden
// gpt2-mini/tokenization.json). Tolerance: ids, tokens and decoded text
// identical. Expected values not in the golden files were computed with HF's
// own algorithm (GPT2Tokenizer.bpe + the `regex` pattern) and, for byte
// decoding, Python's bytes.decode("utf-8", errors="replace").
#include "engine/tokenizer/byte_level_bpe_tokenizer.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "engine/tokenizer/python_utf8_decode.h"
#include "engine/tokenizer/tokenizer_factory.h"
#include "nlohmann/json.hpp"
#include "tests/util/golden_json.h"
#include "tests/util/test_env.h"

namespace maskserve::engine {
namespace {

using json = nlohmann::json;
using maskserve::testing::LoadJson;


std::unique_ptr<ByteLevelBpeTokenizer> LoadGpt2(const std::string& dir, int cache = 16384,
                                                bool add_prefix_space = false) {
  auto options = ByteLevelBpeOptionsFromDirectory(dir);
  EXPECT_TRUE(options.ok()) << options.status();
  if (!options.ok()) return nullptr;
  options->cache_capacity = cache;
  options->add_prefix_space = add_prefix_space;
  auto tok = ByteLevelBpeTokenizer::Create(*std::move(options));
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? *std::move(tok) : nullptr;
}

TEST(ByteLevelBpeTest, GoldenGpt2SentencesMatchHf) {
  MASKSERVE_REQUIRE_SHARED(golden, "golden/gpt2-mini/tokenization.json");
  MASKSERVE_REQUIRE_SHARED(model_dir, "golden/models/gpt2-mini");
  auto loaded = LoadTokenizer(model_dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const Tokenizer& tok = **loaded;
  ASSERT_NE(dynamic_cast<const ByteLevelBpeTokenizer*>(&tok), nullptr);
  EXPECT_EQ(tok.vocab_size(), 50257);
  EXPECT_EQ(tok.model_max_length(), 512);
  EXPECT_EQ(tok.NumSpecialTokensToAdd(false), 0);
  const json g = LoadJson(golden);
  ASSERT_EQ(g["sentences"].size(), 40u);
  for (const json& s : g["sentences"]) {
    const std::string what = s["id"].get<std::string>();
    auto e = tok.Encode(s["text"].get<std::string>(), /*add_special_tokens=*/true, {});
    ASSERT_TRUE(e.ok()) << what << ": " << e.status();
    EXPECT_EQ(e->ids, s["input_ids"].get<std::vector<int32_t>>()) << what;
    EXPECT_EQ(e->tokens, s["tokens"].get<std::vector<std::string>>()) << what;
    EXPECT_EQ(e->type_ids, std::vector<int32_t>(e->ids.size(), 0)) << what;
    ASSERT_EQ(e->offsets.size(), e->ids.size()) << what;
    auto d = tok.Decode(e->ids, /*skip_special_tokens=*/true);
    ASSERT_TRUE(d.ok()) << what;
    EXPECT_EQ(*d, s["decoded"].get<std::string>()) << what;
  }
  for (const json& p : g["prompt_pool"]) {
    auto e = tok.Encode(p["text"].get<std::string>(), true, {});
    ASSERT_TRUE(e.ok());
    EXPECT_EQ(e->ids, p["input_ids"].get<std::vector<int32_t>>()) << p["text"];
    EXPECT_EQ(e->tokens, p["tokens"].get<std::vector<std::string>>()) << p["text"];
  }
}

TEST(ByteLevelBpeTest, ReadmeCheckSpecialTokensAndOffsets) {
  MASKSERVE_REQUIRE_SHARED(model_dir, "golden/models/gpt2-mini");
  auto tok = LoadGpt2(model_dir);
  ASSERT_NE(tok, nullptr);
  auto e = tok->Encode("Hello world", true, {});
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->ids, (std::vector<int32_t>{15496, 995}));
  EXPECT_EQ(e->offsets, (std::vector<std::pair<int32_t, int32_t>>{{0, 5}, {5, 11}}));

  // <|endoftext|> is matched before BPE and, being AddedToken(lstrip=False,
  // rstrip=False), leaves the neighbouring spaces alone.
  e = tok->Encode("Hello<|endoftext|> world", true, {});
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->ids, (std::vector<int32_t>{15496, 50256, 995}));
  EXPECT_EQ(e->offsets[1], (std::pair<int32_t, int32_t>{5, 18}));
  EXPECT_EQ(*tok->Decode(e->ids, false), "Hello<|endoftext|> world");
  EXPECT_EQ(*tok->Decode(e->ids, true), "Hello world");
  EXPECT_TRUE(tok->IsSpecial(50256));
  EXPECT_EQ(tok->special_ids().eos, 50256);
  EXPECT_EQ(tok->special_ids().pad, std::nullopt);

  // An emoji is split into byte-level tokens; both cover the character.
  e = tok->Encode("a \xF0\x9F\x98\x80", true, {});
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->ids, (std::vector<int32_t>{64, 30325, 222}));
  EXPECT_EQ(e->offsets,
            (std::vector<std::pair<int32_t, int32_t>>{{0, 1}, {1, 3}, {2, 3}}));
  // Contractions and runs of spaces follow the regex.
  EXPECT_EQ(tok->Encode("don't stop", true, {})->ids, (std::vector<int32_t>{9099, 470, 2245}));
  EXPECT_EQ(tok->Encode("  a", true, {})->ids, (std::vector<int32_t>{220, 257}));
}

TEST(ByteLevelBpeTest, AddPrefixSpace) {
  MASKSERVE_REQUIRE_SHARED(model_dir, "golden/models/gpt2-mini");
  auto tok = LoadGpt2(model_dir, 16384, /*add_prefix_space=*/true);
  ASSERT_NE(tok, nullptr);
  auto e = tok->Encode("Hello world", true, {});
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->ids, (std::vector<int32_t>{18435, 995}));
  // The added space has no place in the input.
  EXPECT_EQ(e->offsets, (std::vector<std::pair<int32_t, int32_t>>{{0, 5}, {5, 11}}));
  EXPECT_EQ(*tok->Decode(e->ids, true), " Hello world");
}

TEST(ByteLevelBpeTest, InvalidUtf8IsRejected) {
  MASKSERVE_REQUIRE_SHARED(model_dir, "golden/models/gpt2-mini");
  auto tok = LoadGpt2(model_dir);
  ASSERT_NE(tok, nullptr);
  auto e = tok->Encode("ok \xC3\x28 no", true, {});
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(e.status().message().find("byte 3"), std::string::npos) << e.status();
  EXPECT_FALSE(tok->EncodePair("fine", "\xFF", true, {}).ok());
}

TEST(ByteLevelBpeTest, DecodingPartialUtf8GivesReplacementCharacters) {
  MASKSERVE_REQUIRE_SHARED(model_dir, "golden/models/gpt2-mini");
  auto tok = LoadGpt2(model_dir);
  ASSERT_NE(tok, nullptr);
  // Single-byte tokens (bytes_to_unicode characters) of the GPT-2 vocabulary.
  const int32_t kE2 = 158, k82 = 224, kAC = 105, kF0 = 172, k9F = 253, k98 = 246, kED = 169,
                kA0 = 254, k80 = 222, kFF = 187, kA = 64;
  const std::string fffd = "\xEF\xBF\xBD";
  EXPECT_EQ(*tok->Decode({kE2, k82, kAC}, true), "\xE2\x82\xAC");
  EXPECT_EQ(*tok->Decode({kE2, k82}, true), fffd);  // truncated: one U+FFFD
  EXPECT_EQ(*tok->Decode({kFF}, true), fffd);
  EXPECT_EQ(*tok->Decode({kF0, k9F, k98, kA}, true), fffd + "a");
  EXPECT_EQ(*tok->Decode({kED, kA0, k80}, true), fffd + fffd + fffd);  // surrogate
  // Out-of-range ids decode as the unknown token (<|endoftext|>; HF itself
  // would fail), even when skipping special tokens, like the other tokenizers.
  EXPECT_EQ(*tok->Decode({kA, 999999, kA}, false), "a<|endoftext|>a");
  EXPECT_EQ(*tok->Decode({kA, -5, kA}, true), "a<|endoftext|>a");
  EXPECT_EQ(*tok->Decode({kA, 50256, kA}, true), "aa");
}

TEST(PythonUtf8DecodeTest, MatchesBytesDecodeReplace) {
  const std::string r = "\xEF\xBF\xBD";
  EXPECT_EQ(DecodeUtf8Replace(""), "");
  EXPECT_EQ(DecodeUtf8Replace("abc"), "abc");
  EXPECT_EQ(DecodeUtf8Replace("\xE2\x82"), r);
  EXPECT_EQ(DecodeUtf8Replace("\xE0\x80"), r + r);  // overlong lead: each byte
  EXPECT_EQ(DecodeUtf8Replace("\xC3"), r);
  EXPECT_EQ(DecodeUtf8Replace("a\xF4\x90\x80\x80" "b"), "a" + r + r + r + r + "b");
  EXPECT_EQ(DecodeUtf8Replace("\xF0\x9F\x98\x80"), "\xF0\x9F\x98\x80");
  EXPECT_EQ(DecodeUtf8Replace("\x80\xBF"), r + r);
  EXPECT_EQ(DecodeUtf8Replace("\xC0\xAF"), r + r);
  EXPECT_EQ(DecodeUtf8Replace("\xE1\x80\xE1\x80\x80"), r + "\xE1\x80\x80");
}

TEST(ByteLevelBpeTest, MergesTxtIsReadLikeHf) {
  // The first line is always skipped; without a final newline the last merge
  // is lost too (read().split("\n")[1:-1]).
  auto m = ParseMergesTxt("#version: 0.2\na b\nab c\n");
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(m[1], (std::pair<std::string, std::string>{"ab", "c"}));
  EXPECT_EQ(ParseMergesTxt("a b\nab c").size(), 0u);
  EXPECT_EQ(ParseMergesTxt("x\na b\r\nab c\n")[0],
            (std::pair<std::string, std::string>{"a", "b"}));
}

// A tiny vocabulary exercising the merge order, RoBERTa's template and
// added tokens without any shared data.
std::unique_ptr<ByteLevelBpeTokenizer> TinyRoberta() {
  ByteLevelBpeOptions o;
  o.vocab = {{"<s>", 0}, {"<pad>", 1}, {"</s>", 2}, {"<unk>", 3}, {"a", 4},  {"b", 5},
             {"c", 6},   {"ab", 7},   {"bc", 8},   {"abc", 9},   {"Ġ", 10}, {"Ġa", 11},
             {"<mask>", 12}};
  o.merges = {{"b", "c"}, {"a", "b"}, {"a", "bc"}, {"Ġ", "a"}};
  o.post_processor = BpeTemplate::kRoberta;
  o.bos_token = {"<s>", false, false};
  o.eos_token = {"</s>", false, false};
  o.sep_token = {"</s>", false, false};
  o.cls_token = {"<s>", false, false};
  o.unk_token = {"<unk>", false, false};
  o.pad_token = {"<pad>", false, false};
  o.mask_token = {"<mask>", true, false};
  o.cache_capacity = 0;
  auto t = ByteLevelBpeTokenizer::Create(o);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *std::move(t) : nullptr;
}

TEST(ByteLevelBpeTest, RobertaTemplateMergeRanksAndMask) {
  auto tok = TinyRoberta();
  ASSERT_NE(tok, nullptr);
  // "abc": (b,c) ranks first, then (a,bc) -> abc, not ab + c.
  auto e = tok->Encode("abc", true, {});
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->ids, (std::vector<int32_t>{0, 9, 2}));
  // "abab": (a,b) merges both occurrences; no (ab,ab) merge exists.
  EXPECT_EQ(tok->Encode("abab", false, {})->ids, (std::vector<int32_t>{7, 7}));
  // Bytes without a vocabulary entry become <unk>; tokens keep the piece.
  e = tok->Encode("d", false, {});
  EXPECT_EQ(e->ids, (std::vector<int32_t>{3}));
  EXPECT_EQ(e->tokens, (std::vector<std::string>{"d"}));
  // <mask> strips the space on its left (lstrip=True) only.
  e = tok->Encode("a <mask> a", false, {});
  EXPECT_EQ(e->ids, (std::vector<int32_t>{4, 12, 11}));
  // Pairs: <s> A </s></s> B </s>, all token type 0.
  e = tok->EncodePair("a", "b", true, {});
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->ids, (std::vector<int32_t>{0, 4, 2, 2, 5, 2}));
  EXPECT_EQ(e->type_ids, std::vector<int32_t>(6, 0));
  EXPECT_EQ(tok->NumSpecialTokensToAdd(true), 4);
  TruncationOptions t;
  t.max_length = 5;
  e = tok->EncodePair("abab", "b", true, t);
  ASSERT_TRUE(e.ok());
  EXPECT_TRUE(e->truncated);
  EXPECT_EQ(e->ids, (std::vector<int32_t>{0, 7, 2, 2, 2}));
}

TEST(ByteLevelBpeTest, ConcurrentEncodingWithASmallCacheIsConsistent) {
  MASKSERVE_REQUIRE_SHARED(golden, "golden/gpt2-mini/tokenization.json");
  MASKSERVE_REQUIRE_SHARED(model_dir, "golden/models/gpt2-mini");
  // A capacity of 32 words forces constant eviction while 4 threads share it.
  auto tok = LoadGpt2(model_dir, /*cache=*/32);
  ASSERT_NE(tok, nullptr);
  const json g = LoadJson(golden);
  std::vector<std::string> texts;
  std::vector<std::vector<int32_t>> want;
  for (const json& s : g["sentences"]) {
    texts.push_back(s["text"].get<std::string>());
    want.push_back(s["input_ids"].get<std::vector<int32_t>>());
  }
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 5; ++round) {
        for (size_t i = 0; i < texts.size(); ++i) {
          const size_t k = (i + t * 7) % texts.size();
          auto e = tok->Encode(texts[k], true, {});
          if (!e.ok() || e->ids != want[k]) ++mismatches[t];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches, std::vector<int>(4, 0));
}

}  // namespace
}  // namespace maskserve::engine
