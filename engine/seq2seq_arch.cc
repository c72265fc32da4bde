#include "engine/seq2seq_arch.h"

#include <cmath>
#include <limits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "engine/model_config.h"

namespace maskserve::engine {
namespace {

// Positions a T5 stack may reach when the config names no limit (T5's
// relative buckets have none; this bounds the bias tables).
constexpr int kT5DefaultMaxPositions = 2048;


}  // namespace

absl::StatusOr<Seq2SeqArch> Seq2SeqArchFromConfig(const ModelConfig& c) {
  Seq2SeqArch a;
  a.model_type = c.model_type;
  switch (c.family) {
    case ModelFamily::kT5:
      a.family = Seq2SeqArch::Family::kT5;
      break;
    case ModelFamily::kBart:
    case ModelFamily::kMarian:
      a.family = Seq2SeqArch::Family::kBart;
      break;
    case ModelFamily::kOpenNmtTransformer:
      a.family = Seq2SeqArch::Family::kOpenNmt;
      break;
    default:
      return absl::UnimplementedError(
          absl::StrCat("model_type \"", c.model_type, "\" is not an encoder-decoder model"));
  }
  struct Dim {
    int* dst;
    int64_t v;
    const char* name;
  };
  const int64_t dec_heads =
      c.num_decoder_attention_heads > 0 ? c.num_decoder_attention_heads : c.num_attention_heads;
  const int64_t dec_layers = c.num_decoder_layers > 0 ? c.num_decoder_layers : c.num_hidden_layers;
  const int64_t dec_ffn =
      c.decoder_intermediate_size > 0 ? c.decoder_intermediate_size : c.intermediate_size;
  for (const Dim& d :
       {Dim{&a.d_model, c.hidden_size, "d_model"},
        Dim{&a.encoder_layers, c.num_hidden_layers, "encoder layers"},
        Dim{&a.decoder_layers, dec_layers, "decoder layers"},
        Dim{&a.encoder_heads, c.num_attention_heads, "encoder attention heads"},
        Dim{&a.decoder_heads, dec_heads, "decoder attention heads"},
        Dim{&a.head_dim, c.head_dim, "head_dim"},
        Dim{&a.encoder_ffn, c.intermediate_size, "encoder FFN width"},
        Dim{&a.decoder_ffn, dec_ffn, "decoder FFN width"},
        Dim{&a.vocab_size, c.vocab_size, "vocab_size"},
        Dim{&a.source_vocab_size, c.source_vocab_size, "source vocab_size"},
        Dim{&a.max_source_positions, c.max_position_embeddings, "max_position_embeddings"}}) {
    absl::StatusOr<int> v = ConfigDimension(d.v, d.name);
    if (!v.ok()) return v.status();
    *d.dst = *v;
  }
  if (a.source_vocab_size == 0) a.source_vocab_size = a.vocab_size;
  a.max_target_positions = a.max_source_positions;
  a.norm_eps = static_cast<float>(c.layer_norm_eps);
  switch (c.activation) {
    case Activation::kGelu:
      a.activation = Seq2SeqArch::Act::kGeluErf;
      break;
    case Activation::kGeluTanh:
      a.activation = Seq2SeqArch::Act::kGeluTanh;
      break;
    case Activation::kQuickGelu:
      a.activation = Seq2SeqArch::Act::kQuickGelu;
      break;
    case Activation::kRelu:
      a.activation = Seq2SeqArch::Act::kRelu;
      break;
    case Activation::kSilu:
      a.activation = Seq2SeqArch::Act::kSilu;
      break;
  }
  a.gated_ffn = c.gated_ffn;
  a.tie_word_embeddings = c.tie_word_embeddings;
  a.embed_scale = c.scale_embedding ? static_cast<float>(c.embedding_scale) : 1.0f;
  a.position_offset = static_cast<int>(c.position_offset);
  for (int64_t id : c.eos_token_ids) {
    absl::StatusOr<int> v = ConfigDimension(id, "eos_token_id");
    if (!v.ok()) return v.status();
    a.eos_token_ids.push_back(*v);
  }
  if (c.decoder_start_token_id.has_value()) {
    absl::StatusOr<int> v = ConfigDimension(*c.decoder_start_token_id, "decoder_start_token_id");
    if (!v.ok()) return v.status();
    a.decoder_start_token_id = *v;
  }

  switch (a.family) {
    case Seq2SeqArch::Family::kT5:
      // HF T5: T5LayerNorm, no biases anywhere, no score scaling, relative
      // buckets from layer 0 of each stack; tied LM head => decoder output
      // * d_model^-0.5.
      a.rms_norm = true;
      a.pre_norm = true;
      a.final_norm = true;
      a.attention_bias = a.mlp_bias = false;
      a.scale_attention = false;
      a.positions = Seq2SeqArch::Positions::kNone;
      a.position_offset = 0;
      a.embed_scale = 1.0f;
      a.relative_buckets = static_cast<int>(c.relative_attention_num_buckets);
      a.relative_max_distance = static_cast<int>(c.relative_attention_max_distance);
      a.scale_decoder_output = a.tie_word_embeddings;
      if (a.max_source_positions == 0) {
        a.max_source_positions = a.max_target_positions = kT5DefaultMaxPositions;
      }
      if (a.relative_buckets < 2 || a.relative_max_distance < 1) {
        return absl::InvalidArgumentError(absl::StrCat(
            "t5: relative_attention_num_buckets ", a.relative_buckets,
            " / relative_attention_max_distance ", a.relative_max_distance, " are invalid"));
      }
      if (a.gated_ffn && a.activation != Seq2SeqArch::Act::kGeluTanh &&
          a.activation != Seq2SeqArch::Act::kSilu && a.activation != Seq2SeqArch::Act::kRelu &&
          a.activation != Seq2SeqArch::Act::kGeluErf) {
        return absl::UnimplementedError(
            absl::StrCat("t5 feed_forward_proj \"", c.hidden_act, "\" is not supported"));
      }
      break;
    case Seq2SeqArch::Family::kBart: {
      // HF BartForConditionalGeneration / MarianMTModel (4.31): post-LN,
      // biases everywhere, scaled scores; BART adds layernorm_embedding and
      // a learned table offset by 2; Marian has sinusoidal positions from 0;
      // mBART is pre-LN with layernorm_embedding and final layer norms.
      const bool marian = c.family == ModelFamily::kMarian;
      const bool mbart = c.model_type == "mbart";
      a.pre_norm = mbart;
      a.final_norm = mbart;
      a.layernorm_embedding = !marian;
      a.positions =
          marian ? Seq2SeqArch::Positions::kSinusoidalMarian : Seq2SeqArch::Positions::kLearned;
      a.position_offset = marian ? 0 : 2;
      if (a.gated_ffn) return absl::UnimplementedError("gated FFN in a BART-family model");
      break;
    }
    case Seq2SeqArch::Family::kOpenNmt:
      // MODELS.md: pre-LN with final norms, LayerNorm with bias, ReLU,
      // tensor2tensor sinusoid from position 1 (config
      // position_encoding.first_position_index), separate embeddings,
      // untied LM head with a bias.
      a.pre_norm = c.norm_placement == NormPlacement::kPreLN;
      a.final_norm = c.final_layer_norm;
      a.positions = Seq2SeqArch::Positions::kSinusoidalT2T;
      a.tie_word_embeddings = false;
      if (a.gated_ffn) return absl::UnimplementedError("gated FFN in an OpenNMT model");
      break;
  }
  if (a.d_model <= 0 || a.encoder_layers <= 0 || a.decoder_layers <= 0 || a.encoder_heads <= 0 ||
      a.decoder_heads <= 0 || a.head_dim <= 0 || a.encoder_ffn <= 0 || a.decoder_ffn <= 0 ||
      a.vocab_size <= 0 || a.max_source_positions <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("invalid ", a.model_type, " shape"));
  }
  if (a.family != Seq2SeqArch::Family::kT5 &&
      (a.encoder_heads * a.head_dim != a.d_model || a.decoder_heads * a.head_dim != a.d_model)) {
    return absl::InvalidArgumentError(
        absl::StrCat(a.model_type, ": heads x head_dim (", a.head_dim, ") != d_model ", a.d_model));
  }
  if (a.positions == Seq2SeqArch::Positions::kSinusoidalT2T &&
      (a.d_model % 2 != 0 || a.d_model < 4)) {
    return absl::InvalidArgumentError(
        absl::StrCat(a.model_type, ": sinusoidal positions need an even d_model >= 4"));
  }
  return a;
}

}  // namespace maskserve::engine
