// The architecture of an encoder-decoder Transformer (T5, BART / mBART,
// Marian, OpenNMT-style pre-norm) as Seq2SeqModel needs it: every HF default
// resolved and every family quirk an explicit field. Built from a
// ModelConfig by Seq2SeqArchFromConfig, or filled in directly by tests that
// write tiny checkpoints.
//
// Why a separate struct (and translation unit): model_config.h and
// onednn/matmul_cache.h both declare maskserve::engine::Activation, so no
// file can include both (the same split as causal_lm_arch.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace maskserve::engine {

struct ModelConfig;

struct Seq2SeqArch {
  // Tensor naming and block layout.
  enum class Family {
    kT5,       // "shared", "{encoder,decoder}.block.N.layer.M.*"; RMSNorm, no biases
    kBart,     // "model.{shared,encoder,decoder}.*"; BART, mBART and Marian
    kOpenNmt,  // BART-style names, separate source/target embeddings, lm_head.bias
  };
  enum class Act { kRelu, kGeluErf, kGeluTanh, kSilu, kQuickGelu };
  // How absolute positions enter the embeddings (T5 has none: kNone).
  enum class Positions {
    kNone,              // T5: relative position buckets inside attention
    kLearned,           // BART: embed_positions.weight row (position + position_offset)
    kSinusoidalMarian,  // HF Marian: [sin | cos](pos / 10000^(2i/d)), position from 0
    kSinusoidalT2T,     // OpenNMT / tensor2tensor: [sin | cos](pos * exp(-i ln(1e4) / (d/2 - 1)))
  };

  std::string model_type;  // config model_type, for messages
  Family family = Family::kBart;

  int d_model = 0;
  int encoder_layers = 0;
  int decoder_layers = 0;
  int encoder_heads = 0;
  int decoder_heads = 0;
  int head_dim = 0;     // per head, both stacks (T5 d_kv may differ from d_model / heads)
  int encoder_ffn = 0;  // FFN inner width (gated: width of gate and of up)
  int decoder_ffn = 0;
  int vocab_size = 0;            // target embedding rows = logits width
  int source_vocab_size = 0;     // source embedding rows (= vocab_size when shared)
  int max_source_positions = 0;  // longest encoder input
  int max_target_positions = 0;  // longest decoder sequence (start token + prefix + generated)

  bool rms_norm = false;    // T5LayerNorm (no mean, no bias) instead of LayerNorm
  float norm_eps = 1e-5f;   // LayerNorm / RMSNorm epsilon
  bool pre_norm = false;    // x + f(LN(x)) (T5, mBART, OpenNMT) vs LN(x + f(x)) (BART, Marian)
  bool final_norm = false;  // a norm after each stack's last layer
  bool layernorm_embedding = false;  // BART / mBART: LayerNorm right after the embeddings
  Act activation = Act::kRelu;       // FFN activation (gated: applied to the gate)
  bool gated_ffn = false;            // T5 v1.1 / flan: act(wi_0 x) * (wi_1 x)
  bool attention_bias = true;        // q/k/v/o projections carry biases
  bool mlp_bias = true;              // FFN projections carry biases
  bool scale_attention = true;       // scores * head_dim^-0.5 (T5: no scaling)

  Positions positions = Positions::kLearned;
  int position_offset = 0;   // first position's index (BART learned table 2, OpenNMT 1)
  float embed_scale = 1.0f;  // token embeddings * this (sqrt(d_model) when scale_embedding)
  // T5 relative position buckets (Positions::kNone).
  int relative_buckets = 0;
  int relative_max_distance = 0;

  bool tie_word_embeddings = true;  // LM head = the target token embedding
  // T5 with tied embeddings: the decoder output is multiplied by
  // d_model^-0.5 before the LM head.
  bool scale_decoder_output = false;

  std::vector<int32_t> eos_token_ids;  // config.json eos_token_id (the loader may override)
  int32_t decoder_start_token_id = -1;
};

// Resolves a t5 / bart / mbart / marian / opennmt_transformer config.
// Unimplemented for other families and unsupported options; InvalidArgument
// for shapes the model cannot run.
absl::StatusOr<Seq2SeqArch> Seq2SeqArchFromConfig(const ModelConfig& config);

}  // namespace maskserve::engine
