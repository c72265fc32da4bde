// SentencePiece tokenizers against HF transformers 4.31's slow LlamaTokenizer
// (stories260K) and T5Tokenizer (t5-mini) golden tokenization.json files.
// Tolerance: ids, tokens and decoded text identical.
#include "engine/tokenizer/sentencepiece_tokenizer.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "engine/tokenizer/spm_library.h"
#include "engine/tokenizer/tokenizer_factory.h"
#include "nlohmann/json.hpp"
#include "tests/util/golden_json.h"
#include "tests/util/test_env.h"

namespace maskserve::engine {
namespace {

using json = nlohmann::json;
using maskserve::testing::LoadJson;


std::unique_ptr<Tokenizer> LoadOrDie(const std::string& dir) {
  auto tok = LoadTokenizer(dir);
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? *std::move(tok) : nullptr;
}

void ExpectGoldenSentences(const Tokenizer& tok, const json& g) {
  ASSERT_EQ(g["sentences"].size(), 40u);
  for (const json& s : g["sentences"]) {
    const std::string what = s["id"].get<std::string>();
    auto e = tok.Encode(s["text"].get<std::string>(), /*add_special_tokens=*/true, {});
    ASSERT_TRUE(e.ok()) << what << ": " << e.status();
    EXPECT_EQ(e->ids, s["input_ids"].get<std::vector<int32_t>>()) << what;
    EXPECT_EQ(e->tokens, s["tokens"].get<std::vector<std::string>>()) << what;
    ASSERT_EQ(e->offsets.size(), e->ids.size()) << what;
    auto d = tok.Decode(e->ids, /*skip_special_tokens=*/true);
    ASSERT_TRUE(d.ok()) << what << ": " << d.status();
    EXPECT_EQ(*d, s["decoded"].get<std::string>()) << what;
  }
}

TEST(SentencePieceTokenizerTest, GoldenStories260KMatchesLlamaTokenizer) {
  MASKSERVE_REQUIRE_SHARED(golden, "golden/stories260K/tokenization.json");
  MASKSERVE_REQUIRE_SHARED(model_dir, "models/stories260K");
  auto tok = LoadOrDie(model_dir);
  ASSERT_NE(tok, nullptr);
  auto* sp = dynamic_cast<const SentencePieceTokenizer*>(tok.get());
  ASSERT_NE(sp, nullptr);
  EXPECT_EQ(sp->flavor(), SentencePieceFlavor::kLlama);
  EXPECT_EQ(tok->vocab_size(), 512);
  EXPECT_EQ(tok->special_ids().bos, 1);
  EXPECT_EQ(tok->special_ids().eos, 2);
  EXPECT_EQ(tok->special_ids().unk, 0);
  EXPECT_EQ(tok->special_ids().pad, std::nullopt);
  EXPECT_EQ(tok->NumSpecialTokensToAdd(false), 1);
  const json g = LoadJson(golden);
  ExpectGoldenSentences(*tok, g);
  for (const json& p : g["prompt_pool"]) {
    auto e = tok->Encode(p["text"].get<std::string>(), true, {});
    ASSERT_TRUE(e.ok());
    EXPECT_EQ(e->ids, p["input_ids"].get<std::vector<int32_t>>()) << p["text"];
  }
  // [bos] A [bos] B, B with token type 1; LlamaTokenizer writes <s> literally.
  auto e = tok->EncodePair("Once upon a time", "Tom and his dog", true, {});
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->ids, (std::vector<int32_t>{1, 403, 407, 261, 378, 1, 274, 287, 269, 345, 400, 428}));
  EXPECT_EQ(e->type_ids, (std::vector<int32_t>{0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1}));
  EXPECT_EQ(*tok->Decode({1, 403, 407, 261, 378}, false), "<s>Once upon a time");
  // HF's convert_tokens_to_string puts a space before a special token that is
  // not first, hence the leading space.
  EXPECT_EQ(*tok->Decode({403, 407, 1, 261, 378}, false), " Once upon<s>a time");
  // "<s>" inside the text is the special token; the text after it is encoded
  // on its own (legacy), where sentencepiece drops the leading space
  // (remove_extra_whitespaces) and adds its dummy prefix.
  e = tok->Encode("Once<s> upon", false, {});
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->ids, (std::vector<int32_t>{403, 1, 407}));
  EXPECT_EQ(e->offsets, (std::vector<std::pair<int32_t, int32_t>>{{0, 4}, {4, 7}, {8, 12}}));
}

TEST(SentencePieceTokenizerTest, GoldenT5MatchesT5Tokenizer) {
  MASKSERVE_REQUIRE_SHARED(golden, "golden/t5-mini/tokenization.json");
  MASKSERVE_REQUIRE_SHARED(model_dir, "golden/models/t5-mini");
  auto tok = LoadOrDie(model_dir);
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->vocab_size(), 32100);
  EXPECT_EQ(tok->TokenToId("<extra_id_0>"), 32099);
  EXPECT_EQ(tok->TokenToId("<extra_id_99>"), 32000);
  EXPECT_EQ(*tok->IdToToken(32099), "<extra_id_0>");
  EXPECT_TRUE(tok->IsSpecial(32050));
  EXPECT_EQ(tok->special_ids().pad, 0);
  EXPECT_EQ(tok->special_ids().eos, 1);
  EXPECT_EQ(tok->special_ids().unk, 2);
  const json g = LoadJson(golden);
  ExpectGoldenSentences(*tok, g);
  for (const json& p : g["input_pool"]) {
    auto e = tok->Encode(p["text"].get<std::string>(), true, {});
    ASSERT_TRUE(e.ok());
    EXPECT_EQ(e->ids, p["input_ids"].get<std::vector<int32_t>>()) << p["text"];
  }
}

TEST(SentencePieceTokenizerTest, T5ReadmeCheckExtraIdsAndEos) {
  MASKSERVE_REQUIRE_SHARED(model_dir, "golden/models/t5-mini");
  auto tok = LoadOrDie(model_dir);
  ASSERT_NE(tok, nullptr);
  auto e = tok->Encode("translate English to German: The house is wonderful.", true, {});
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->ids, (std::vector<int32_t>{13959, 1566, 12, 2968, 10, 37, 629, 19, 1627, 5, 1}));
  // Byte offsets from sentencepiece, in code points: "▁translate" is [0, 9).
  EXPECT_EQ(e->offsets[0], (std::pair<int32_t, int32_t>{0, 9}));
  EXPECT_EQ(e->offsets.back(), (std::pair<int32_t, int32_t>{0, 0}));

  auto hello = tok->Encode("Hello", false, {});
  auto world = tok->Encode("world", false, {});
  ASSERT_TRUE(hello.ok() && world.ok());
  // Extra ids are special strings: matched first, spaces around them stripped.
  e = tok->Encode("Hello <extra_id_0> world", true, {});
  ASSERT_TRUE(e.ok());
  std::vector<int32_t> want = hello->ids;
  want.push_back(32099);
  want.insert(want.end(), world->ids.begin(), world->ids.end());
  want.push_back(1);
  EXPECT_EQ(e->ids, want);
  EXPECT_EQ(*tok->Decode(e->ids, false), "Hello<extra_id_0> world</s>");
  EXPECT_EQ(*tok->Decode(e->ids, true), "Hello world");
  // _add_eos_if_not_present: no second </s>.
  e = tok->Encode("Hello</s>", true, {});
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->ids.back(), 1);
  EXPECT_NE(e->ids[e->ids.size() - 2], 1);
  // Pairs: A </s> B </s>, token types all 0.
  e = tok->EncodePair("Hello", "world", true, {});
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->ids.size(), hello->ids.size() + world->ids.size() + 2);
  EXPECT_EQ(e->type_ids, std::vector<int32_t>(e->ids.size(), 0));
  EXPECT_FALSE(tok->Encode("bad \xFF", true, {}).ok());
}

TEST(SentencePieceTokenizerTest, ShimLoadsWithDeepBind) {
  auto lib = SpmLibrary::Get();
  ASSERT_TRUE(lib.ok()) << lib.status();
  EXPECT_FALSE((*lib)->path.empty());
  auto bad = SpmModel::Load("/nonexistent/spiece.model");
  EXPECT_FALSE(bad.ok());
}

}  // namespace
}  // namespace maskserve::engine
