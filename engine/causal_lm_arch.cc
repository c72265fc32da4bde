#include "engine/causal_lm_arch.h"

#include <limits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/model_config.h"

namespace maskserve::engine {
absl::StatusOr<CausalLmArch> CausalLmArchFromConfig(const ModelConfig& c) {
  CausalLmArch a;
  a.model_type = c.model_type;
  switch (c.family) {
    case ModelFamily::kGpt2:
      a.block = CausalLmArch::Block::kGpt2;
      break;
    case ModelFamily::kLlama:
      a.block = CausalLmArch::Block::kLlama;
      break;
    case ModelFamily::kGptNeox:
      a.block = CausalLmArch::Block::kGptNeox;
      break;
    default:
      return absl::UnimplementedError(
          absl::StrCat("model_type \"", c.model_type, "\" is not a decoder-only causal LM"));
  }
  struct Dim {
    int* dst;
    int64_t v;
    const char* name;
  };
  for (const Dim& d :
       {Dim{&a.hidden_size, c.hidden_size, "hidden_size"},
        Dim{&a.num_layers, c.num_hidden_layers, "num_hidden_layers"},
        Dim{&a.num_heads, c.num_attention_heads, "num_attention_heads"},
        Dim{&a.num_kv_heads, c.num_key_value_heads, "num_key_value_heads"},
        Dim{&a.head_dim, c.head_dim, "head_dim"},
        Dim{&a.intermediate_size, c.intermediate_size, "intermediate_size"},
        Dim{&a.vocab_size, c.vocab_size, "vocab_size"},
        Dim{&a.max_position_embeddings, c.max_position_embeddings, "max_position_embeddings"}}) {
    absl::StatusOr<int> v = ConfigDimension(d.v, d.name);
    if (!v.ok()) return v.status();
    *d.dst = *v;
  }
  if (a.num_kv_heads == 0) a.num_kv_heads = a.num_heads;
  a.norm_eps = static_cast<float>(c.layer_norm_eps);
  switch (c.activation) {
    case Activation::kGelu:
      a.activation = CausalLmArch::Act::kGeluErf;
      break;
    case Activation::kGeluTanh:
      a.activation = CausalLmArch::Act::kGeluTanh;
      break;
    case Activation::kQuickGelu:
      a.activation = CausalLmArch::Act::kQuickGelu;
      break;
    case Activation::kRelu:
      a.activation = CausalLmArch::Act::kRelu;
      break;
    case Activation::kSilu:
      a.activation = CausalLmArch::Act::kSilu;
      break;
  }
  a.attention_bias = c.attention_bias;
  a.mlp_bias = c.mlp_bias;
  a.tie_word_embeddings = c.tie_word_embeddings;
  a.rope_theta = c.rope_theta;
  a.scale_attn_weights = c.scale_attn_weights;
  a.scale_attn_by_inverse_layer_idx = c.scale_attn_by_inverse_layer_idx;
  for (int64_t id : c.eos_token_ids) {
    absl::StatusOr<int> v = ConfigDimension(id, "eos_token_id");
    if (!v.ok()) return v.status();
    a.eos_token_ids.push_back(*v);
  }

  switch (a.block) {
    case CausalLmArch::Block::kGpt2:
      // GPT2Attention / GPT2MLP always carry biases.
      a.attention_bias = a.mlp_bias = true;
      a.num_kv_heads = a.num_heads;
      a.rotary_dim = 0;
      break;
    case CausalLmArch::Block::kLlama:
      if (a.activation != CausalLmArch::Act::kSilu) {
        return absl::UnimplementedError(absl::StrCat("llama hidden_act \"", c.hidden_act,
                                                     "\" is not supported (only silu / SwiGLU)"));
      }
      a.rotary_dim = a.head_dim;
      break;
    case CausalLmArch::Block::kGptNeox:
      a.mlp_bias = true;
      a.num_kv_heads = a.num_heads;
      a.parallel_residual = c.parallel_residual;
      // HF: rotary_ndims = int(head_size * rotary_pct).
      a.rotary_dim = static_cast<int>(a.head_dim * c.rotary_pct);
      break;
  }
  if (a.hidden_size <= 0 || a.num_layers <= 0 || a.num_heads <= 0 || a.head_dim <= 0 ||
      a.intermediate_size <= 0 || a.vocab_size <= 0 || a.max_position_embeddings <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("invalid ", a.model_type, " shape"));
  }
  if (a.num_heads % a.num_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("num_key_value_heads ", a.num_kv_heads,
                                                   " does not divide num_attention_heads ",
                                                   a.num_heads));
  }
  if (a.block != CausalLmArch::Block::kLlama && a.num_heads * a.head_dim != a.hidden_size) {
    return absl::InvalidArgumentError(absl::StrCat(a.model_type, ": ", a.num_heads, " heads x ",
                                                   a.head_dim, " != hidden size ", a.hidden_size));
  }
  if (a.rotary_dim % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("rotary dimension ", a.rotary_dim, " must be even"));
  }
  return a;
}

}  // namespace maskserve::engine
