#include "engine/encoder_arch.h"

#include <limits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/model_config.h"

namespace maskserve::engine {
absl::StatusOr<EncoderArch> EncoderArchFromConfig(const ModelConfig& c) {
  EncoderArch a;
  a.model_type = c.model_type;
  switch (c.family) {
    case ModelFamily::kBert:
      a.prefixes = {"bert.", "", "roberta.", "roformer."};
      break;
    case ModelFamily::kRoberta:
      a.prefixes = {"roberta.", "", "bert."};
      break;
    case ModelFamily::kRoformer:
      a.prefixes = {"roformer.", "", "bert."};
      break;
    default:
      return absl::UnimplementedError(
          absl::StrCat("model_type \"", c.model_type, "\" is not a BERT-family encoder"));
  }
  struct Dim {
    int* dst;
    int64_t v;
    const char* name;
  };
  for (const Dim& d :
       {Dim{&a.hidden_size, c.hidden_size, "hidden_size"},
        Dim{&a.embedding_size, c.embedding_size, "embedding_size"},
        Dim{&a.num_layers, c.num_hidden_layers, "num_hidden_layers"},
        Dim{&a.num_heads, c.num_attention_heads, "num_attention_heads"},
        Dim{&a.num_kv_heads, c.num_key_value_heads, "num_key_value_heads"},
        Dim{&a.head_dim, c.head_dim, "head_dim"},
        Dim{&a.intermediate_size, c.intermediate_size, "intermediate_size"},
        Dim{&a.vocab_size, c.vocab_size, "vocab_size"},
        Dim{&a.type_vocab_size, c.type_vocab_size, "type_vocab_size"},
        Dim{&a.max_position_embeddings, c.max_position_embeddings, "max_position_embeddings"}}) {
    absl::StatusOr<int> v = ConfigDimension(d.v, d.name);
    if (!v.ok()) return v.status();
    *d.dst = *v;
  }
  if (a.embedding_size == 0) a.embedding_size = a.hidden_size;
  if (a.num_kv_heads == 0) a.num_kv_heads = a.num_heads;
  a.layer_norm_eps = static_cast<float>(c.layer_norm_eps);
  switch (c.activation) {
    case Activation::kGelu:
      a.activation = EncoderArch::Act::kGeluErf;
      break;
    case Activation::kGeluTanh:
      a.activation = EncoderArch::Act::kGeluTanh;
      break;
    case Activation::kQuickGelu:
      a.activation = EncoderArch::Act::kQuickGelu;
      break;
    case Activation::kRelu:
      a.activation = EncoderArch::Act::kRelu;
      break;
    case Activation::kSilu:
      a.activation = EncoderArch::Act::kSilu;
      break;
  }
  if (c.gated_ffn) return absl::UnimplementedError("gated FFN encoders are not supported");
  if (c.norm_kind != NormKind::kLayerNorm) {
    return absl::UnimplementedError("encoders with RMSNorm are not supported");
  }
  a.pre_layer_norm = c.norm_placement == NormPlacement::kPreLN;
  a.final_layer_norm = a.pre_layer_norm && c.final_layer_norm;
  a.rope_theta = c.rope_theta;
  a.rotary_value = c.rotary_value;
  switch (c.position_embedding) {
    case PositionEmbeddingKind::kLearned:
      a.positions = EncoderArch::Positions::kLearned;
      break;
    case PositionEmbeddingKind::kSinusoidal:
      a.positions = EncoderArch::Positions::kSinusoidal;
      break;
    case PositionEmbeddingKind::kRotary:
      a.positions = EncoderArch::Positions::kRotary;
      break;
    default:
      return absl::UnimplementedError(absl::StrCat("position_embedding_type \"",
                                                   c.position_embedding_type,
                                                   "\" is not supported by the encoder"));
  }
  if (c.family == ModelFamily::kRoberta) {
    a.roberta_positions = true;
    a.padding_idx = static_cast<int>(c.pad_token_id.value_or(1));
    a.position_offset = a.padding_idx + 1;
  } else if (a.positions == EncoderArch::Positions::kLearned) {
    absl::StatusOr<int> off = ConfigDimension(c.position_offset, "position offset");
    if (!off.ok()) return off.status();
    a.position_offset = *off;
  }
  if (a.positions == EncoderArch::Positions::kRotary && a.head_dim % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("rotary positions need an even head_dim, got ", a.head_dim));
  }
  if (a.max_sequence_length() <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_position_embeddings ", a.max_position_embeddings,
                     " leaves no usable position after the offset ", a.position_offset));
  }
  return a;
}

}  // namespace maskserve::engine
