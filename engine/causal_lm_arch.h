// The architecture of a decoder-only causal LM (GPT-2, Llama, GPT-NeoX) as
// CausalLm needs it: every HF default resolved and every family quirk an
// explicit field. Built from a ModelConfig by CausalLmArchFromConfig, or
// filled in directly by tests that generate tiny checkpoints.
//
// Why a separate struct (and translation unit): model_config.h and
// onednn/matmul_cache.h both declare maskserve::engine::Activation, so no
// file can include both; the model implementation sees only this struct
// (the same split as encoder_arch.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace maskserve::engine {

struct ModelConfig;

struct CausalLmArch {
  // Block layout and tensor naming.
  enum class Block {
    kGpt2,     // pre-LN, learned positions, Conv1D [in, out] weights, fused c_attn
    kLlama,    // pre-RMSNorm, rotary, SwiGLU, separate q/k/v (GQA), no biases by default
    kGptNeox,  // pre-LN, partial rotary, fused per-head [q|k|v] query_key_value, parallel residual
  };
  enum class Act { kGeluErf, kGeluTanh, kQuickGelu, kRelu, kSilu };

  std::string model_type;  // config model_type, for messages
  Block block = Block::kGpt2;

  int hidden_size = 0;
  int num_layers = 0;
  int num_heads = 0;
  int num_kv_heads = 0;       // divides num_heads; < num_heads = grouped-query attention (Llama)
  int head_dim = 0;           // Q/K/V width per head
  int intermediate_size = 0;  // FFN inner width (SwiGLU: width of gate and of up)
  int vocab_size = 0;         // rows of the token embedding and of the LM head
  int max_position_embeddings = 0;  // longest sequence (learned table rows / rotary limit)
  float norm_eps = 1e-5f;           // LayerNorm / RMSNorm epsilon
  Act activation = Act::kGeluTanh;  // FFN activation (Llama: applied to the gate)
  bool attention_bias = true;       // q/k/v/o projections carry biases
  bool mlp_bias = true;             // FFN projections carry biases
  bool parallel_residual = false;   // x + attn(LN1 x) + mlp(LN2 x) (GPT-NeoX)
  bool tie_word_embeddings = true;  // LM head = token embedding (else lm_head / embed_out)
  // Rotary: the first rotary_dim floats of every q/k head are rotated in
  // HF's rotate_half layout (pairs i, i + rotary_dim/2) by angle
  // position * rope_theta^(-2i/rotary_dim); 0 = learned absolute positions.
  int rotary_dim = 0;
  double rope_theta = 10000.0;
  // GPT-2 attention scaling: 1/sqrt(head_dim) when scale_attn_weights, and
  // additionally 1/(layer + 1) when scale_attn_by_inverse_layer_idx.
  bool scale_attn_weights = true;
  bool scale_attn_by_inverse_layer_idx = false;
  // Ids that end a sequence by default (config.json eos_token_id; the
  // loader overrides them from generation_config.json).
  std::vector<int32_t> eos_token_ids;
};

// Resolves a gpt2 / llama / gpt_neox config. Unimplemented for other
// families and unsupported options (non-SiLU gated FFN); InvalidArgument
// for shapes the model cannot run (odd rotary_dim, fused GPT-2 / NeoX
// projections with heads * head_dim != hidden, ...).
absl::StatusOr<CausalLmArch> CausalLmArchFromConfig(const ModelConfig& config);

}  // namespace maskserve::engine
