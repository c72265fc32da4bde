#include "engine/tokenizer/tokenizer_factory.h"

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/byte_level_bpe_tokenizer.h"
#include "engine/tokenizer/char_vocab_tokenizer.h"
#include "engine/tokenizer/hf_tokenizer_config.h"
#include "engine/tokenizer/marian_tokenizer.h"
#include "engine/tokenizer/sentencepiece_tokenizer.h"
#include "engine/tokenizer/wordpiece_tokenizer.h"
#include "nlohmann/json.hpp"

namespace maskserve::engine {
namespace {

// model.type of tokenizer.json ("WordPiece", "BPE", "Unigram", ...), or "".
std::string TokenizerJsonType(const std::string& dir) {
  const std::string path = dir + "/tokenizer.json";
  if (!FileExists(path)) return "";
  auto text = ReadFileToString(path);
  if (!text.ok()) return "";
  try {
    const auto j = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
    if (j.is_object() && j.contains("model") && j["model"].is_object()) {
      return j["model"].value("type", std::string());
    }
  } catch (const std::exception&) {
  }
  return "";
}

bool Has(const std::string& dir, const char* file) { return FileExists(dir + "/" + file); }

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadWordPiece(const std::string& dir) {
  auto options = WordPieceOptionsFromDirectory(dir);
  if (!options.ok()) return options.status();
  auto tok = WordPieceTokenizer::Create(*std::move(options));
  if (!tok.ok()) {
    return absl::Status(tok.status().code(), absl::StrCat(dir, ": ", tok.status().message()));
  }
  return std::unique_ptr<Tokenizer>(*std::move(tok));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadByteLevelBpe(const std::string& dir) {
  auto options = ByteLevelBpeOptionsFromDirectory(dir);
  if (!options.ok()) return options.status();
  auto tok = ByteLevelBpeTokenizer::Create(*std::move(options));
  if (!tok.ok()) {
    return absl::Status(tok.status().code(), absl::StrCat(dir, ": ", tok.status().message()));
  }
  return std::unique_ptr<Tokenizer>(*std::move(tok));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadSentencePiece(const std::string& dir) {
  auto options = SentencePieceOptionsFromDirectory(dir);
  if (!options.ok()) return options.status();
  auto tok = SentencePieceTokenizer::Create(*std::move(options));
  if (!tok.ok()) {
    return absl::Status(tok.status().code(), absl::StrCat(dir, ": ", tok.status().message()));
  }
  return std::unique_ptr<Tokenizer>(*std::move(tok));
}

// OpenNMT character vocabularies; `target` selects the decoder side.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadCharVocab(const std::string& dir, bool target) {
  CharVocabOptions options;
  options.add_bos = target;
  auto tok = CharVocabTokenizer::FromFile(
      absl::StrCat(dir, target ? "/target_vocab.txt" : "/source_vocab.txt"), std::move(options));
  if (!tok.ok()) return tok.status();
  return std::unique_ptr<Tokenizer>(*std::move(tok));
}

// Marian source.spm / target.spm + vocab.json; `target` selects the side
// Encode serves.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadMarian(const std::string& dir, bool target) {
  auto options = MarianTokenizerOptionsFromDirectory(dir, target);
  if (!options.ok()) return options.status();
  auto tok = MarianTokenizer::Create(*std::move(options));
  if (!tok.ok()) {
    return absl::Status(tok.status().code(), absl::StrCat(dir, ": ", tok.status().message()));
  }
  return std::unique_ptr<Tokenizer>(*std::move(tok));
}

// One tokenizer kind: how to recognise its files, and how to load them.
// Earlier entries win, so the slow tokenizers' own files come before
// tokenizer.json (which HF's slow classes never read).
struct Kind {
  const char* name;
  bool (*matches)(const std::string& dir, const std::string& json_type);
  absl::StatusOr<std::unique_ptr<Tokenizer>> (*load)(const std::string& dir);
};

const Kind kKinds[] = {
    {"WordPiece", [](const std::string& d, const std::string&) { return Has(d, "vocab.txt"); },
     LoadWordPiece},
    {"byte-level BPE",
     [](const std::string& d, const std::string&) {
       return Has(d, "vocab.json") && Has(d, "merges.txt");
     },
     LoadByteLevelBpe},
    {"SentencePiece",
     [](const std::string& d, const std::string&) {
       return Has(d, "spiece.model") || Has(d, "tokenizer.model") ||
              Has(d, "sentencepiece.bpe.model");
     },
     LoadSentencePiece},
    {"OpenNMT character vocabulary",
     [](const std::string& d, const std::string&) { return Has(d, "source_vocab.txt"); },
     [](const std::string& d) { return LoadCharVocab(d, /*target=*/false); }},
    {"WordPiece (tokenizer.json)",
     [](const std::string&, const std::string& t) { return t == "WordPiece"; }, LoadWordPiece},
    {"byte-level BPE (tokenizer.json)",
     [](const std::string&, const std::string& t) { return t == "BPE"; }, LoadByteLevelBpe},
    {"Marian", [](const std::string& d, const std::string&) { return Has(d, "source.spm"); },
     [](const std::string& d) { return LoadMarian(d, /*target=*/false); }},
};

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& model_dir) {
  const std::string json_type = TokenizerJsonType(model_dir);
  for (const Kind& kind : kKinds) {
    if (kind.matches(model_dir, json_type)) return kind.load(model_dir);
  }
  if (!json_type.empty()) {
    return absl::UnimplementedError(absl::StrCat(model_dir, ": tokenizer.json model type \"",
                                                 json_type, "\" is not supported"));
  }
  return absl::NotFoundError(
      absl::StrCat(model_dir,
                   ": no tokenizer files (vocab.txt, vocab.json + merges.txt, spiece.model, "
                   "tokenizer.model, source_vocab.txt or tokenizer.json)"));
}

absl::StatusOr<Seq2SeqTokenizers> LoadSeq2SeqTokenizers(const std::string& model_dir) {
  Seq2SeqTokenizers t;
  if (Has(model_dir, "source_vocab.txt") && Has(model_dir, "target_vocab.txt")) {
    auto source = LoadCharVocab(model_dir, /*target=*/false);
    if (!source.ok()) return source.status();
    auto target = LoadCharVocab(model_dir, /*target=*/true);
    if (!target.ok()) return target.status();
    t.source = *std::move(source);
    t.target = *std::move(target);
    return t;
  }
  if (Has(model_dir, "source.spm") && Has(model_dir, "target.spm") &&
      Has(model_dir, "vocab.json")) {
    auto source = LoadMarian(model_dir, /*target=*/false);
    if (!source.ok()) return source.status();
    auto target = LoadMarian(model_dir, /*target=*/true);
    if (!target.ok()) return target.status();
    t.source = *std::move(source);
    t.target = *std::move(target);
    return t;
  }
  auto shared = LoadTokenizer(model_dir);
  if (!shared.ok()) return shared.status();
  t.source = std::shared_ptr<const Tokenizer>(*std::move(shared));
  t.target = t.source;
  return t;
}

}  // namespace maskserve::engine
