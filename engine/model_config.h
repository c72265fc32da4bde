// The architecture description of a checkpoint, read from HuggingFace
// config.json (and the sentence-transformers files next to it).
//
// HF spells the same quantity differently per model family (hidden_size /
// n_embd / d_model, ...) and leaves class defaults out of the file; this
// struct is the one normalised view the model builders use, with each
// family's HF class defaults filled in when a key is absent.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/pooling_mode.h"

namespace maskserve::engine {

// Model families the engine knows; kUnknown keeps a config readable (for
// listing) even when no builder exists for it.
enum class ModelFamily {
  kBert,
  kRoberta,
  kRoformer,
  kGpt2,
  kLlama,
  kGptNeox,
  kT5,
  kBart,
  kMarian,
  kOpenNmtTransformer,
  kUnknown,
};

enum class Activation {
  kGelu,       // exact erf GELU ("gelu")
  kGeluTanh,   // tanh approximation ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")
  kQuickGelu,  // x * sigmoid(1.702 x)
  kRelu,
  kSilu,       // "silu", "swish"
};

enum class PositionEmbeddingKind {
  kLearned,           // absolute table added to the embeddings (BERT, GPT-2, BART)
  kSinusoidal,        // fixed sin/cos table (Marian, OpenNMT)
  kRotary,            // RoPE (Llama, GPT-NeoX, RoFormer)
  kRelativeBuckets,   // T5 bucketed relative attention bias
  kRelativeKey,       // BERT "relative_key" (recognised, not supported by the engine)
  kRelativeKeyQuery,  // BERT "relative_key_query" (recognised, not supported)
};

enum class NormPlacement {
  kPostLN,  // x = LN(x + f(x)) (BERT, RoBERTa, RoFormer, BART, Marian)
  kPreLN,   // x = x + f(LN(x)) (GPT-2, Llama, T5, OpenNMT, mBART)
};

enum class NormKind {
  kLayerNorm,
  kRmsNorm,  // Llama, T5: no mean subtraction, no bias
};

absl::string_view ModelFamilyName(ModelFamily family);
absl::string_view ActivationName(Activation act);
absl::string_view PositionEmbeddingKindName(PositionEmbeddingKind kind);
// Maps an HF activation string ("gelu", "gelu_new", "relu", "silu", ...).
absl::StatusOr<Activation> ParseActivation(absl::string_view name);

struct ModelConfig {
  // --- identity
  std::string model_type;                  // config "model_type", e.g. "bert"
  ModelFamily family = ModelFamily::kUnknown;
  std::vector<std::string> architectures;  // e.g. {"BertForMaskedLM"}

  // --- shape
  int64_t hidden_size = 0;           // hidden_size / n_embd / d_model
  int64_t embedding_size = 0;        // RoFormer/ALBERT embedding width; = hidden_size if absent
  int64_t num_hidden_layers = 0;     // layers of the (only, or encoder) stack
  int64_t num_decoder_layers = 0;    // decoder stack of enc-dec models; 0 otherwise
  int64_t num_attention_heads = 0;   // n_head / num_heads / encoder_attention_heads
  int64_t num_decoder_attention_heads = 0;  // enc-dec decoder heads; 0 otherwise
  int64_t num_key_value_heads = 0;   // grouped-query attention; = num_attention_heads if absent
  int64_t head_dim = 0;              // head_dim / d_kv / key_size, else hidden / heads
  int64_t intermediate_size = 0;     // intermediate_size / n_inner / d_ff / encoder_ffn_dim
  int64_t decoder_intermediate_size = 0;  // decoder_ffn_dim for enc-dec; 0 otherwise
  int64_t vocab_size = 0;            // output (target) vocabulary
  int64_t source_vocab_size = 0;     // OpenNMT src_vocab_size; = vocab_size otherwise
  int64_t max_position_embeddings = 0;  // n_positions; 0 when positions are relative
  int64_t type_vocab_size = 0;       // segment embeddings (BERT family); 0 if none

  // --- layer details
  double layer_norm_eps = 1e-12;     // layer_norm_eps / layer_norm_epsilon / rms_norm_eps
  std::string hidden_act;            // raw activation string from the file
  Activation activation = Activation::kGelu;
  bool gated_ffn = false;            // act(W_gate x) * (W_up x): Llama, T5 "gated-*"
  NormPlacement norm_placement = NormPlacement::kPostLN;
  NormKind norm_kind = NormKind::kLayerNorm;
  bool attention_bias = true;        // q/k/v/o projections carry biases
  bool mlp_bias = true;              // FFN projections carry biases
  bool final_layer_norm = false;     // a norm after the last layer (pre-LN stacks)
  bool parallel_residual = false;    // GPT-NeoX: x + attn(LN1 x) + mlp(LN2 x)

  // --- positions
  PositionEmbeddingKind position_embedding = PositionEmbeddingKind::kLearned;
  std::string position_embedding_type;  // raw "position_embedding_type" if present
  // Index of the first real position in the learned table: RoBERTa starts at
  // pad_token_id + 1, BART at 2, OpenNMT's sinusoid at 1; 0 elsewhere.
  int64_t position_offset = 0;
  double rope_theta = 10000.0;        // rope_theta / rotary_emb_base
  double rotary_pct = 1.0;            // GPT-NeoX partial rotary fraction
  bool rotary_value = false;          // RoFormer: rotate V too
  int64_t relative_attention_num_buckets = 0;  // T5
  int64_t relative_attention_max_distance = 0; // T5

  // --- embeddings / heads
  bool tie_word_embeddings = true;   // LM head shares the token embedding
  bool scale_embedding = false;      // multiply token embeddings by embedding_scale
  double embedding_scale = 1.0;      // sqrt(d_model) when scale_embedding, unless given
  bool lm_head_bias = false;         // OpenNMT lm_head.bias
  bool shared_encoder_decoder_embeddings = true;  // enc-dec: one token table for both sides
  // GPT-2 attention scaling switches.
  bool scale_attn_weights = true;
  bool scale_attn_by_inverse_layer_idx = false;

  // --- encoder-decoder
  bool is_encoder_decoder = false;
  bool source_adds_bos_eos = true;   // OpenNMT: false = source ids get no BOS/EOS

  // --- special tokens
  std::optional<int64_t> pad_token_id;
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;  // "eos_token_id" may be a list
  std::optional<int64_t> decoder_start_token_id;
  std::optional<int64_t> unk_token_id;  // OpenNMT tgt_unk_token_id
  std::optional<int64_t> source_unk_token_id;  // OpenNMT src_unk_token_id

  std::string torch_dtype;  // as saved ("float16", ...); informational

  // --- from the sentence-transformers files (LoadModelConfig only)
  std::optional<PoolingMode> default_pooling;  // 1_Pooling/config.json
  bool normalize = false;                      // a Normalize module in modules.json
  std::optional<int64_t> max_seq_length;       // sentence_bert_config.json
};

// Parses config.json text. Missing required keys give an error naming the
// key; `source` (a path) prefixes every message when given.
absl::StatusOr<ModelConfig> ParseModelConfig(absl::string_view json,
                                             absl::string_view source = "config.json");

// Reads <dir>/config.json plus, when present, sentence-transformers'
// modules.json, the Pooling module's config.json and
// sentence_bert_config.json. Errors name the file and the key.
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& dir);

// A config size (`what` = its JSON key) as an int: INVALID_ARGUMENT when it is
// negative or so large that products of such sizes could overflow int32.
absl::StatusOr<int> ConfigDimension(int64_t v, const char* what);

}  // namespace maskserve::engine
