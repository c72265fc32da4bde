// Encoder-decoder Transformers in HuggingFace layout — T5 (v1.0 and the
// gated v1.1 / flan FFN), BART / mBART, Marian — and the OpenNMT-style
// pre-norm Transformer of ../shared/models, as a GenerativeModel of kind
// kEncoderDecoder, reproducing transformers 4.31 T5ForConditionalGeneration
// / BartForConditionalGeneration / MarianMTModel (and CTranslate2's
// TransformerBase for OpenNMT; see seq2seq_arch.h for the per-family
// details).
//
// The encoder runs once per request: EncodeSources packs the sources of
// several requests without padding (cu_seqlens, like the BERT encoder),
// runs the stack with bidirectional FusedAttention (T5: plus the relative
// position bias), and projects the output to every decoder layer's
// cross-attention keys and values in ONE matmul ([tokens, d_model] x
// [d_model, decoder_layers * 2 * heads * head_dim]). Each request's
// EncoderState holds those rows and is shared, read-only, by all its beams
// and samples.
//
// A decoder step (Forward) is a packed, padding-free GenerationStep like
// CausalLm's: self-attention keys/values go to the paged KV cache (T5: the
// unidirectional relative bias), cross-attention reads each sequence's
// EncoderState in place; decode steps (one new token per sequence) use
// DecodeAttention for both, and the last layer computes only the rows whose
// logits are wanted. Linear layers run on PanelLinear for FP32 on AVX2-only
// CPUs and on oneDNN otherwise (CausalLm's rule); Q|K|V of the
// self-attention, gate|up of a gated FFN and all cross K|V are fused.
//
// Tensor names: T5 "shared.weight", "{encoder,decoder}.block.N.layer.M.*",
// "{encoder,decoder}.final_layer_norm.weight", "lm_head.weight" when untied;
// BART/Marian "model.shared.weight" (or "model.{encoder,decoder}.embed_tokens
// .weight"), "model.{encoder,decoder}.{embed_positions,layernorm_embedding,
// layer_norm,layers.N.*}", "final_logits_bias", "lm_head.weight" when
// untied; OpenNMT as BART with separate embed_tokens and "lm_head.{weight,
// bias}". The "model." prefix may be absent.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/causal_lm.h"
#include "engine/generative_model.h"
#include "engine/onednn/packed_weight.h"
#include "engine/panel_linear.h"
#include "engine/seq2seq_arch.h"
#include "engine/t5_relative_position.h"

namespace maskserve::engine {

class SafetensorsModel;

struct Seq2SeqModelOptions {
  MatmulDType dtype = MatmulDType::kF32;             // precision of the packed linear layers
  LinearKernel linear_kernel = LinearKernel::kAuto;  // matmul implementation (causal_lm.h)
  // Overrides arch.eos_token_ids when non-empty (generation_config.json).
  std::vector<int32_t> eos_token_ids;
  // Overrides arch.decoder_start_token_id when >= 0 (generation_config.json).
  int32_t decoder_start_token_id = -1;
};

class Seq2SeqModel final : public GenerativeModel {
 public:
  // Reads, checks and packs every weight. Errors name the checkpoint
  // directory and tensor.
  static absl::StatusOr<std::unique_ptr<Seq2SeqModel>> Create(const Seq2SeqArch& arch,
                                                              const SafetensorsModel& weights,
                                                              const Seq2SeqModelOptions& options);
  ~Seq2SeqModel() override;
  Seq2SeqModel(const Seq2SeqModel&) = delete;
  Seq2SeqModel& operator=(const Seq2SeqModel&) = delete;

  GenerationKind kind() const override { return GenerationKind::kEncoderDecoder; }
  // Decoder layers x decoder heads x head_dim (self-attention only; cross
  // keys/values live in the EncoderState).
  KvLayout kv_layout() const override;
  int vocab_size() const override { return arch_.vocab_size; }
  int max_sequence_length() const override { return arch_.max_target_positions; }
  int max_source_length() const override { return arch_.max_source_positions; }
  const std::vector<int32_t>& eos_token_ids() const override { return eos_; }
  int32_t decoder_start_token_id() const override { return decoder_start_; }
  // CAUSAL (the decoder's self-attention).
  MaskSpec NaturalMask(int prefix_length) const override;
  // CAUSAL, and LOCAL / DILATED / STRIDED with causal = true.
  absl::Status ValidateMask(const MaskSpec& spec) const override;

  absl::StatusOr<std::shared_ptr<const EncoderState>> EncodeSource(
      absl::Span<const int32_t> source_ids) const override;
  // One packed encoder pass over every source (InvalidArgument naming the
  // source index for empty sources, ids outside the source vocabulary or
  // sources longer than max_source_length()).
  absl::StatusOr<std::vector<std::shared_ptr<const EncoderState>>> EncodeSources(
      absl::Span<const absl::Span<const int32_t>> sources) const override;
  // Every sequence needs the EncoderState of its request (made by this
  // model); type ids are ignored.
  absl::Status Forward(absl::Span<const StepSequence> seqs, KvCachePool* pool,
                       std::vector<float>* logits) const override;

  // The encoder's last hidden state (after the final norm) of each source,
  // packed [sum of lengths, d_model]: HF encoder_last_hidden_state, for tests.
  absl::StatusOr<std::vector<float>> EncoderHiddenStates(
      absl::Span<const absl::Span<const int32_t>> sources) const;

  const Seq2SeqArch& arch() const { return arch_; }
  // Whether the linear layers run on PanelLinear (else oneDNN).
  bool uses_panel_linear() const { return panel_; }
  // Bytes of packed decoder weights streamed by one decode step (decoder
  // linear layers and the LM head).
  int64_t decoder_weight_bytes() const;

 private:
  struct Norm {
    std::vector<float> gamma, beta;  // beta empty for RMSNorm
  };
  // One linear layer, packed for oneDNN or for PanelLinear (never both).
  struct Linear {
    PackedLinear onednn;
    PanelLinear panel;
    int out_features() const {
      return panel.valid() ? panel.out_features() : onednn.out_features();
    }
    size_t bytes() const { return panel.valid() ? panel.bytes() : onednn.packed_bytes(); }
  };
  struct Layer {
    Norm self_norm;    // before (pre-LN) / after (post-LN) self-attention
    Norm cross_norm;   // decoder only: around cross-attention
    Norm ffn_norm;     // around the FFN
    Linear qkv;        // [3 * heads * head_dim, d]: q heads | k heads | v heads
    Linear self_out;   // [d, heads * head_dim]
    Linear cross_q;    // decoder only: [heads * head_dim, d]
    Linear cross_out;  // decoder only: [d, heads * head_dim]
    Linear ffn_in;     // [ffn, d], gated [2 ffn, d]: gate | up
    Linear ffn_out;    // [d, ffn]
  };
  struct Stack {
    std::vector<float> embed;      // [rows, d] token embedding
    std::vector<float> positions;  // [rows, d] absolute position table (empty for T5)
    Norm embed_norm;               // layernorm_embedding (BART); empty gamma = none
    std::vector<Layer> layers;
    Norm final_norm;      // empty gamma = none
    T5RelativeBias bias;  // T5 only
    int heads = 0;
    int ffn = 0;
  };
  class State;
  struct Buffers;

  Seq2SeqModel() = default;
  absl::StatusOr<Linear> Pack(const std::string& what, absl::Span<const float> weight, int in,
                              int out, absl::Span<const float> bias) const;
  // y = x W + b [+ y], then the activation when `activate`.
  absl::Status Apply(const Linear& w, const float* x, int rows, float* y, bool accumulate,
                     bool activate) const;
  void ApplyNorm(const Norm& n, const float* x, int rows, float* out) const;
  // x[rows, d] = embed[ids] * scale + positions (+ layernorm_embedding).
  void Embed(const Stack& s, absl::Span<const int32_t> ids, absl::Span<const int32_t> positions,
             float* x) const;
  // x += FFN(x) (pre-LN) or x = LN(x + FFN(x)) (post-LN) over `rows` rows.
  absl::Status Ffn(const Stack& s, const Layer& l, int rows, float* x, float* normed, float* inner,
                   float* act) const;
  // Output of an attention block: x += out(ctx) (pre-LN) or x = LN(x +
  // out(ctx)) (post-LN, `n` the block's norm).
  absl::Status AttentionOut(const Linear& out, const Norm& n, const float* ctx, int rows,
                            float* x) const;
  // The encoder stack over a packed batch; out = last hidden state.
  absl::Status RunEncoder(absl::Span<const absl::Span<const int32_t>> sources,
                          std::vector<int32_t>* cu, std::vector<float>* out) const;
  // The decoder over a prepared step (buf.step, buf.sources).
  absl::Status RunDecoder(Buffers& buf, KvCachePool* pool, std::vector<float>* logits) const;

  Seq2SeqArch arch_;
  MatmulDType dtype_ = MatmulDType::kF32;
  bool panel_ = false;
  std::vector<int32_t> eos_;
  int32_t decoder_start_ = -1;
  Stack encoder_;
  Stack decoder_;
  Linear cross_kv_;  // [decoder_layers * 2 * inner, d]: per layer K heads | V heads
  Linear lm_head_;   // [vocab, d], with OpenNMT's lm_head.bias / BART's final_logits_bias
};

}  // namespace maskserve::engine
