#include "engine/tokenizer/tokenizer_factory.h"

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/hf_tokenizer_config.h"
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

absl::StatusOr<std::unique_ptr<Tokenizer>> NotYet(const std::string& dir, const char* kind) {
  return absl::UnimplementedError(
      absl::StrCat(dir, ": ", kind, " tokenizers are not implemented yet"));
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
     [](const std::string& d) { return NotYet(d, "byte-level BPE"); }},
    {"SentencePiece",
     [](const std::string& d, const std::string&) {
       return Has(d, "spiece.model") || Has(d, "tokenizer.model") ||
              Has(d, "sentencepiece.bpe.model");
     },
     [](const std::string& d) { return NotYet(d, "SentencePiece"); }},
    {"WordPiece (tokenizer.json)",
     [](const std::string&, const std::string& t) { return t == "WordPiece"; }, LoadWordPiece},
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
                   "tokenizer.model or tokenizer.json)"));
}

}  // namespace maskserve::engine
