// What a loaded model is, in engine terms: the facts the server reports in
// ModelInfo and validates requests against. Plain data, no behaviour.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "engine/pooling_mode.h"

namespace maskserve::engine {

enum class ModelTask { kEmbed, kGenerate };

enum class ComputeDtype { kFloat32, kBFloat16 };

// "float32" / "bfloat16".
const char* ComputeDtypeName(ComputeDtype dtype);

struct ModelDescription {
  // config.json model_type: "bert", "roberta", "roformer", "gpt2", "llama", "t5", ...
  std::string architecture;
  // What this engine build can serve with the model.
  std::vector<ModelTask> tasks;
  // Longest input in tokens.
  int max_sequence_length = 0;
  // Precision the weights are packed in.
  ComputeDtype dtype = ComputeDtype::kFloat32;
  // Width of the hidden states.
  int hidden_size = 0;
  // Number of token ids the embedding table has.
  int vocab_size = 0;
  // Transformer layers (encoder layers for encoder-decoder models).
  int num_layers = 0;
  // Attention heads.
  int num_heads = 0;
  // Sum of all tensor element counts in the checkpoint.
  int64_t num_parameters = 0;
  // Pooling when a request leaves it unspecified.
  PoolingMode default_pooling = PoolingMode::kCls;
  // Whether sentence-transformers asks for L2-normalised output by default.
  bool default_normalize = false;
};

}  // namespace maskserve::engine
