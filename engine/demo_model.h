// The built-in demo model: a tiny BERT (BertForMaskedLM layout, random
// weights) that the server writes and serves when the user names no model,
// so that a fresh install answers requests and smoke tests have something to
// hit. It is generated in code from a fixed seed, so every build writes the
// same bytes and a damaged copy can be detected by comparison and rewritten.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace maskserve::engine {

// Shape of the demo model (also written to its config.json).
struct DemoModelSpec {
  static constexpr int64_t kHiddenSize = 128;
  static constexpr int64_t kNumLayers = 2;
  static constexpr int64_t kNumHeads = 4;
  static constexpr int64_t kIntermediateSize = 512;
  static constexpr int64_t kMaxPositions = 512;
  static constexpr int64_t kTypeVocabSize = 2;
  static constexpr uint64_t kSeed = 20240611;
};

// One file of the demo checkpoint.
struct DemoModelFile {
  std::string relative_path;  // e.g. "1_Pooling/config.json"
  std::string contents;
};

// The complete checkpoint, in memory: config.json, vocab.txt,
// tokenizer_config.json, special_tokens_map.json, model.safetensors (F32,
// HF BertForMaskedLM names, decoder tied to the word embeddings),
// generation_config.json, modules.json, 1_Pooling/config.json (mean),
// sentence_bert_config.json and README.md.
std::vector<DemoModelFile> DemoModelFiles();

// The demo vocabulary, one token per id ([PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3,
// [MASK]=4, then characters, ## pieces and common words).
std::vector<std::string> DemoModelVocab();

// Writes the checkpoint into `dir`, replacing what is there. Everything is
// written into a sibling temp directory first and renamed into place, so a
// crash never leaves a half-written model at `dir`.
absl::Status WriteDemoModel(const std::string& dir);

// True when `dir` holds exactly the files DemoModelFiles() would write.
bool DemoModelUpToDate(const std::string& dir);

// WriteDemoModel(dir) unless DemoModelUpToDate(dir).
absl::Status EnsureDemoModel(const std::string& dir);

}  // namespace maskserve::engine
