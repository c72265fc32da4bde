// The architecture of a BERT-family encoder (BERT, RoBERTa, RoFormer) as the
// Encoder needs it: every HF default resolved, every family quirk turned into
// an explicit field. Built from a ModelConfig by EncoderArchFromConfig, or
// filled in directly by tests that generate tiny checkpoints.
//
// Why a separate struct (and translation unit): model_config.h and
// onednn/matmul_cache.h both declare maskserve::engine::Activation, so no
// file can include both; the encoder implementation sees only this struct.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace maskserve::engine {

struct ModelConfig;

struct EncoderArch {
  enum class Act { kGeluErf, kGeluTanh, kQuickGelu, kRelu, kSilu };
  enum class Positions {
    kLearned,     // embeddings.position_embeddings table added to the embeddings
    kSinusoidal,  // fixed sin | cos table added to the embeddings (no weights needed)
    kRotary,      // RoFormer: interleaved rotary on q, k (and v) in every layer
  };

  std::string model_type;  // config model_type, for messages
  // Tensor-name prefixes tried in order; the first under which
  // "embeddings.word_embeddings.weight" exists is used ("" = bare model).
  std::vector<std::string> prefixes = {"bert.", "roberta.", "roformer.", ""};

  int hidden_size = 0;     // width of the transformer stream
  int embedding_size = 0;  // embedding width; != hidden_size adds embeddings_project
  int num_layers = 0;
  int num_heads = 0;
  int num_kv_heads = 0;             // = num_heads for every HF BERT-family model
  int head_dim = 0;                 // Q/K/V width is num_heads * head_dim (may differ from hidden)
  int intermediate_size = 0;        // FFN inner width
  int vocab_size = 0;               // rows of the word embedding table
  int type_vocab_size = 0;          // rows of token_type_embeddings; 0 = no segment table
  int max_position_embeddings = 0;  // rows of the position table (learned, rotary, sinusoidal)
  float layer_norm_eps = 1e-12f;
  Act activation = Act::kGeluErf;

  // Pre-LN: x += f(LN(x)) with the layer's two LayerNorms applied before
  // attention / FFN instead of after; final_layer_norm adds
  // "encoder.LayerNorm" after the last layer.
  bool pre_layer_norm = false;
  bool final_layer_norm = false;

  Positions positions = Positions::kLearned;
  // Learned positions: token t of a sequence gets row t + position_offset.
  int position_offset = 0;
  // RoBERTa create_position_ids_from_input_ids: position = padding_idx +
  // (number of non-pad tokens up to and including t) for non-pad tokens and
  // padding_idx for pad tokens; position_offset is then padding_idx + 1.
  bool roberta_positions = false;
  int padding_idx = 0;
  bool rotary_value = false;    // RoFormer: rotate V as well
  double rope_theta = 10000.0;  // rotary / sinusoidal base

  // Longest sequence the position scheme allows (max_position_embeddings
  // minus the offset of the first position).
  int max_sequence_length() const { return max_position_embeddings - position_offset; }
};

// Resolves a bert / roberta / roformer config. Unimplemented for other
// families and for relative_key(_query) positions; InvalidArgument for
// shapes the encoder cannot run (odd head_dim with rotary, ...).
absl::StatusOr<EncoderArch> EncoderArchFromConfig(const ModelConfig& config);

}  // namespace maskserve::engine
