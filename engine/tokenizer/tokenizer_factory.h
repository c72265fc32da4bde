// Picks and loads the right tokenizer for an HF-layout model directory.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/tokenizer/tokenizer.h"

namespace maskserve::engine {

// Loads the tokenizer of `model_dir`. Kinds are tried in order (see
// tokenizer_factory.cc): WordPiece (vocab.txt), byte-level BPE (vocab.json +
// merges.txt), SentencePiece (spiece.model, tokenizer.model,
// sentencepiece.bpe.model), an OpenNMT character vocabulary
// (source_vocab.txt: the source side), then tokenizer.json by model.type
// (WordPiece, BPE), then Marian (source.spm: the source side). Recognised but unsupported kinds
// give Unimplemented, a directory with no tokenizer files NotFound; both name the directory.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& model_dir);

// The two tokenizers of an encoder-decoder model. They are the same object
// when the model shares one vocabulary (T5, BART, ...).
struct Seq2SeqTokenizers {
  std::shared_ptr<const Tokenizer> source;  // encodes encoder input
  std::shared_ptr<const Tokenizer> target;  // encodes decoder prefixes, decodes output
};

// source_vocab.txt + target_vocab.txt (OpenNMT character vocabularies; the
// target side's add_special_tokens prepends the decoder start <s>, the
// source side adds nothing); source.spm + target.spm + vocab.json (Marian:
// each side segments with its own sentencepiece model); otherwise
// LoadTokenizer(model_dir) serves both.
absl::StatusOr<Seq2SeqTokenizers> LoadSeq2SeqTokenizers(const std::string& model_dir);

}  // namespace maskserve::engine
