// Picks and loads the right tokenizer for an HF-layout model directory.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/tokenizer/tokenizer.h"

namespace maskserve::engine {

// Loads the tokenizer of `model_dir`. Kinds are tried in order (see
// tokenizer_factory.cc); today only WordPiece (vocab.txt, or tokenizer.json
// with model.type "WordPiece") is implemented. Other recognised kinds give
// Unimplemented, a directory with no tokenizer files NotFound; both name the
// directory.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& model_dir);

}  // namespace maskserve::engine
