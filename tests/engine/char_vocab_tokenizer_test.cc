// OpenNMT character vocabularies against the model's reference_outputs.json
// (CTranslate2's own test expectations). Tolerance: ids and text identical.
#include "engine/tokenizer/char_vocab_tokenizer.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "engine/tokenizer/tokenizer_factory.h"
#include "nlohmann/json.hpp"
#include "tests/util/test_env.h"

namespace maskserve::engine {
namespace {

using json = nlohmann::json;

TEST(CharVocabTokenizerTest, OpenNmtReferenceCases) {
  MASKSERVE_REQUIRE_SHARED(dir, "models/opennmt-aren-transliteration");
  auto toks = LoadSeq2SeqTokenizers(dir);
  ASSERT_TRUE(toks.ok()) << toks.status();
  const Tokenizer& src = *toks->source;
  const Tokenizer& tgt = *toks->target;
  EXPECT_NE(&src, &tgt);
  EXPECT_EQ(src.vocab_size(), 51);
  EXPECT_EQ(tgt.vocab_size(), 43);
  EXPECT_EQ(src.special_ids().unk, 50);
  EXPECT_EQ(tgt.special_ids().unk, 42);
  EXPECT_EQ(src.special_ids().pad, 0);
  EXPECT_EQ(tgt.special_ids().bos, 1);
  EXPECT_EQ(tgt.special_ids().eos, 2);
  // The invisible entries survive reading: U+200E is id 41, U+200C id 45.
  EXPECT_EQ(src.TokenToId("\xE2\x80\x8E"), 41);
  EXPECT_EQ(src.TokenToId("\xE2\x80\x8C"), 45);

  const json ref = json::parse(maskserve::testing::ReadFileOrDie(dir + "/reference_outputs.json"));
  ASSERT_EQ(ref["cases"].size(), 4u);
  for (const json& c : ref["cases"]) {
    std::string text;
    for (const json& t : c["source_tokens"]) text += t.get<std::string>();
    auto e = src.Encode(text, /*add_special_tokens=*/true, {});
    ASSERT_TRUE(e.ok()) << e.status();
    EXPECT_EQ(e->ids, c["source_ids"].get<std::vector<int32_t>>()) << text;
    EXPECT_EQ(e->tokens, c["source_tokens"].get<std::vector<std::string>>()) << text;
    // Space-separated tokens (OpenNMT's input convention) encode alike.
    std::string spaced;
    for (const json& t : c["source_tokens"]) spaced += t.get<std::string>() + " ";
    EXPECT_EQ(src.Encode(spaced, true, {})->ids, e->ids);

    // Target side: add_special_tokens gives the decoder start + prefix.
    std::string prefix;
    for (const json& t : c["target_prefix"]) prefix += t.get<std::string>();
    auto p = tgt.Encode(prefix, true, {});
    ASSERT_TRUE(p.ok());
    EXPECT_EQ(p->ids, c["decoder_input_start"].get<std::vector<int32_t>>()) << prefix;
    auto d = tgt.Decode(c["greedy_output_ids"].get<std::vector<int32_t>>(), true);
    ASSERT_TRUE(d.ok());
    EXPECT_EQ(*d, c["expected_text"].get<std::string>());
  }
  // LoadTokenizer gives the source side.
  auto single = LoadTokenizer(dir);
  ASSERT_TRUE(single.ok()) << single.status();
  EXPECT_EQ((*single)->vocab_size(), 51);
}

TEST(CharVocabTokenizerTest, UnknownCharactersOffsetsAndDecode) {
  CharVocabOptions o;
  o.vocab = {"<blank>", "<s>", "</s>", "a", "b", "\xE2\x80\x8E"};  // no <unk>: appended
  o.add_eos = true;
  auto tok = CharVocabTokenizer::Create(o);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->vocab_size(), 7);
  auto e = (*tok)->Encode("a x\xE2\x80\x8E" "b", true, {});
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->ids, (std::vector<int32_t>{3, 6, 5, 4, 2}));
  EXPECT_EQ(e->offsets, (std::vector<std::pair<int32_t, int32_t>>{{0, 1}, {2, 3}, {3, 4}, {4, 5},
                                                                  {0, 0}}));
  EXPECT_EQ(*(*tok)->Decode({1, 3, 4, 6, 2, 0}, true), "a b");
  EXPECT_EQ(*(*tok)->Decode({3, 99}, false), "a <unk>");
  EXPECT_FALSE((*tok)->Encode("\xC3", true, {}).ok());
  auto lines = ParseVocabLines("a\n\n \nb\n");
  ASSERT_TRUE(lines.ok());
  EXPECT_EQ(*lines, (std::vector<std::string>{"a", "", " ", "b"}));
}

}  // namespace
}  // namespace maskserve::engine
