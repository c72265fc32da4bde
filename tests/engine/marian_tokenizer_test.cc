// MarianTokenizer (HF transformers 4.31 slow MarianTokenizer semantics) on a
// hand-made Marian directory: the real T5 sentencepiece model as
// source.spm / target.spm (its pieces are known from the T5 golden
// tokenization) and a small vocab.json, so every expected id below is
// worked out by hand: pieces missing from vocab.json become <unk>, a
// leading >>xx<< language code is one token and later codes vanish,
// special-token strings are cut out first, add_special_tokens appends
// </s>; Decode writes specials literally and joins pieces with target.spm;
// separate_vocabs makes the target side use target_vocab.json.
#include "engine/tokenizer/marian_tokenizer.h"

#include <filesystem>
#include <string>
#include <vector>

#include "engine/safetensors_writer.h"
#include "engine/tokenizer/spm_library.h"
#include "engine/tokenizer/tokenizer_factory.h"
#include "gtest/gtest.h"
#include "tests/util/test_env.h"

namespace maskserve::engine {
namespace {

constexpr const char* kVocab = R"({"<pad>": 0, "</s>": 1, "<unk>": 2, ">>de<<": 3,
  "\u2581translate": 4, "\u2581English": 5, "\u2581to": 6, "\u2581German": 7, ":": 8,
  "\u2581The": 9, "\u2581house": 10, "\u2581is": 11, ".": 12})";

// A Marian directory whose .spm files link to `source_spm` / `target_spm`.
std::string MakeDir(const std::string& source_spm, const std::string& target_spm,
                    const std::string& tokenizer_config = "",
                    const std::string& target_vocab = "") {
  const std::string dir = maskserve::testing::MakeTempDir("marian_tokenizer_test");
  std::filesystem::create_symlink(source_spm, dir + "/source.spm");
  std::filesystem::create_symlink(target_spm, dir + "/target.spm");
  EXPECT_TRUE(WriteFileAtomically(dir + "/vocab.json", kVocab).ok());
  if (!tokenizer_config.empty()) {
    EXPECT_TRUE(WriteFileAtomically(dir + "/tokenizer_config.json", tokenizer_config).ok());
  }
  if (!target_vocab.empty()) {
    EXPECT_TRUE(WriteFileAtomically(dir + "/target_vocab.json", target_vocab).ok());
  }
  return dir;
}

std::unique_ptr<MarianTokenizer> Load(const std::string& dir, bool target) {
  absl::StatusOr<MarianTokenizerOptions> o = MarianTokenizerOptionsFromDirectory(dir, target);
  EXPECT_TRUE(o.ok()) << o.status();
  if (!o.ok()) return nullptr;
  absl::StatusOr<std::unique_ptr<MarianTokenizer>> t = MarianTokenizer::Create(*std::move(o));
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? std::move(*t) : nullptr;
}

std::vector<int32_t> Ids(const Tokenizer& t, const std::string& text, bool special = true) {
  absl::StatusOr<Encoding> e = t.Encode(text, special, {});
  EXPECT_TRUE(e.ok()) << e.status();
  return e.ok() ? e->ids : std::vector<int32_t>{};
}

TEST(MarianTokenizerTest, EncodesThroughVocabJson) {
  MASKSERVE_REQUIRE_SHARED(spm, "golden/models/t5-mini/spiece.model");
  const std::string dir = MakeDir(spm, spm);
  std::unique_ptr<MarianTokenizer> t = Load(dir, false);
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->vocab_size(), 13);
  EXPECT_EQ(t->special_ids().eos, 1);
  EXPECT_EQ(t->special_ids().unk, 2);
  EXPECT_EQ(t->special_ids().pad, 0);
  EXPECT_TRUE(t->IsSpecial(0) && t->IsSpecial(1) && t->IsSpecial(2));
  EXPECT_FALSE(t->IsSpecial(3));
  // "▁wonderful" is not in vocab.json: <unk>, its token string kept.
  absl::StatusOr<Encoding> e =
      t->Encode("translate English to German: The house is wonderful.", true, {});
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->ids, (std::vector<int32_t>{4, 5, 6, 7, 8, 9, 10, 11, 2, 12, 1}));
  EXPECT_EQ(e->tokens[8], "\xE2\x96\x81wonderful");
  EXPECT_EQ(e->tokens.back(), "</s>");
  EXPECT_EQ(Ids(*t, "The house", false), (std::vector<int32_t>{9, 10}));
  // Language codes: kept at the start, removed elsewhere.
  EXPECT_EQ(Ids(*t, ">>de<< The house"), (std::vector<int32_t>{3, 9, 10, 1}));
  EXPECT_EQ(Ids(*t, "The >>de<< house"), (std::vector<int32_t>{9, 10, 1}));
  // Special-token strings are cut out before sentencepiece.
  EXPECT_EQ(Ids(*t, "The house</s>"), (std::vector<int32_t>{9, 10, 1, 1}));
  // Pairs: A B </s>.
  absl::StatusOr<Encoding> p = t->EncodePair("The", "house", true, {});
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->ids, (std::vector<int32_t>{9, 10, 1}));
  // Truncation counts the </s>.
  TruncationOptions tr;
  tr.max_length = 3;
  absl::StatusOr<Encoding> cut = t->Encode("The house is", true, tr);
  ASSERT_TRUE(cut.ok());
  EXPECT_EQ(cut->ids, (std::vector<int32_t>{9, 10, 1}));
  EXPECT_TRUE(cut->truncated);
}

TEST(MarianTokenizerTest, DecodesWithTargetSpm) {
  MASKSERVE_REQUIRE_SHARED(spm, "golden/models/t5-mini/spiece.model");
  std::unique_ptr<MarianTokenizer> t = Load(MakeDir(spm, spm), true);
  ASSERT_NE(t, nullptr);
  absl::StatusOr<std::string> d = t->Decode({9, 10, 11, 2, 12, 1}, true);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(*d, "The house is.");
  // Specials written literally, a space after each; ids outside the
  // vocabulary decode as <unk>.
  d = t->Decode({0, 9, 10, 2, 1, 99}, false);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(*d, "<pad> The house<unk> </s> <unk>");
}

TEST(MarianTokenizerTest, SeparateVocabsAndSides) {
  MASKSERVE_REQUIRE_SHARED(t5spm, "golden/models/t5-mini/spiece.model");
  MASKSERVE_REQUIRE_SHARED(llamaspm, "models/stories260K/tokenizer.model");
  // Target side: its own vocabulary (separate_vocabs) and target.spm.
  const std::string dir = MakeDir(t5spm, llamaspm, R"({"separate_vocabs": true})",
                                  R"({"<pad>": 0, "</s>": 1, "<unk>": 2, "\u2581The": 5})");
  absl::StatusOr<Seq2SeqTokenizers> both = LoadSeq2SeqTokenizers(dir);
  ASSERT_TRUE(both.ok()) << both.status();
  ASSERT_NE(both->source, both->target);
  EXPECT_EQ(both->source->vocab_size(), 13);
  EXPECT_EQ(both->target->vocab_size(), 6);
  EXPECT_EQ(Ids(*both->source, "The house", false), (std::vector<int32_t>{9, 10}));
  // The target side segments with the stories260K model: its pieces, looked
  // up in target_vocab.json.
  absl::StatusOr<std::unique_ptr<SpmModel>> llama = SpmModel::Load(llamaspm);
  ASSERT_TRUE(llama.ok());
  std::vector<SpmPiece> pieces;
  ASSERT_TRUE((*llama)->Encode("The house", &pieces).ok());
  std::vector<int32_t> want;
  for (const SpmPiece& p : pieces)
    want.push_back((*llama)->IdToPiece(p.id) == "\xE2\x96\x81The" ? 5 : 2);
  EXPECT_EQ(Ids(*both->target, "The house", false), want);
  // Decoding always uses the target vocabulary.
  absl::StatusOr<std::string> d = both->source->Decode({5}, true);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(*d, "The");
  // LoadTokenizer (one tokenizer) gives the source side.
  absl::StatusOr<std::unique_ptr<Tokenizer>> single = LoadTokenizer(dir);
  ASSERT_TRUE(single.ok()) << single.status();
  EXPECT_EQ((*single)->vocab_size(), 13);
}

TEST(MarianTokenizerTest, MissingFilesAndTokens) {
  MASKSERVE_REQUIRE_SHARED(spm, "golden/models/t5-mini/spiece.model");
  const std::string dir = maskserve::testing::MakeTempDir("marian_tokenizer_test");
  EXPECT_EQ(MarianTokenizerOptionsFromDirectory(dir, false).status().code(),
            absl::StatusCode::kNotFound);
  absl::StatusOr<MarianTokenizerOptions> o =
      MarianTokenizerOptionsFromDirectory(MakeDir(spm, spm), false);
  ASSERT_TRUE(o.ok());
  o->unk_token.content = "<nope>";
  EXPECT_EQ(MarianTokenizer::Create(*o).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace maskserve::engine
