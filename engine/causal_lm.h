// Decoder-only causal language models in HuggingFace layout — GPT-2, Llama
// and GPT-NeoX blocks — as a GenerativeModel, reproducing transformers 4.31
// GPT2LMHeadModel / LlamaForCausalLM / GPTNeoXForCausalLM.
//
// Weights are read, checked and packed once in Create: Q, K and V become one
// fused [q + 2 kv, hidden] PackedLinear per layer (GPT-2's c_attn is already
// fused; NeoX's per-head interleaved query_key_value rows are regrouped into
// q heads | k heads | v heads), Llama's gate and up projections one fused
// [2 * inner, hidden] PackedLinear, and the LM head (tied or not) one
// PackedLinear of [vocab, hidden]. Bias, activation and residual adds ride in
// the matmuls as post-ops. Embedding tables and norm parameters stay float32.
//
// Which matmul runs the linear layers (CausalLmOptions::linear_kernel):
// oneDNN through MatmulCache where oneDNN 2.6 has its AVX-512 brgemm kernels
// (fast at every M), else — FP32 on AVX2-only CPUs — PanelLinear, whose
// per-call cost at M = 2..16 stays close to M = 1 where oneDNN's gemm:jit
// re-packs the weights on every call (see panel_linear.h). Each weight is
// packed for exactly one of the two.
//
// A step (Forward) runs the new tokens of all sequences as one packed,
// padding-free batch: every matmul sees exactly the real rows (M = 1..16 for
// decode), keys/values go straight into the paged KV cache and attention
// reads them there in place. The last layer only computes the rows whose
// logits are wanted, and only those rows go through the final norm and the
// LM head. Scratch memory is per calling thread and reused across steps.
//
// Tensor names: GPT-2 "[transformer.]{wte,wpe,h.N.*,ln_f}" (Conv1D weights
// [in, out], lm_head tied to wte unless "lm_head.weight" is stored); Llama
// "model.{embed_tokens,layers.N.*,norm}" + "lm_head.weight" unless tied;
// GPT-NeoX "gpt_neox.{embed_in,layers.N.*,final_layer_norm}" +
// "embed_out.weight" unless tied.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/causal_lm_arch.h"
#include "engine/generative_model.h"
#include "engine/onednn/packed_weight.h"
#include "engine/panel_linear.h"

namespace maskserve::engine {

class SafetensorsModel;
class GenerationStep;

struct CausalLmOptions {
  MatmulDType dtype = MatmulDType::kF32;             // precision of the packed linear layers
  LinearKernel linear_kernel = LinearKernel::kAuto;  // matmul implementation (see above)
  // Overrides arch.eos_token_ids when non-empty (generation_config.json).
  std::vector<int32_t> eos_token_ids;
};

class CausalLm final : public GenerativeModel {
 public:
  // Reads, checks and packs every weight. Errors name the checkpoint file
  // and tensor (missing tensor, wrong shape, unreadable dtype).
  static absl::StatusOr<std::unique_ptr<CausalLm>> Create(const CausalLmArch& arch,
                                                          const SafetensorsModel& weights,
                                                          const CausalLmOptions& options);
  ~CausalLm() override;
  CausalLm(const CausalLm&) = delete;
  CausalLm& operator=(const CausalLm&) = delete;

  GenerationKind kind() const override { return GenerationKind::kCausalLm; }
  KvLayout kv_layout() const override;
  int vocab_size() const override { return arch_.vocab_size; }
  int max_sequence_length() const override { return arch_.max_position_embeddings; }
  const std::vector<int32_t>& eos_token_ids() const override { return eos_; }
  // CAUSAL.
  MaskSpec NaturalMask(int prefix_length) const override;
  // CAUSAL, and LOCAL / DILATED / STRIDED with causal = true. BIDIRECTIONAL
  // and UNILM are rejected (InvalidArgument naming "mask").
  absl::Status ValidateMask(const MaskSpec& spec) const override;
  // Type ids are ignored (no segment embeddings).
  absl::Status Forward(absl::Span<const StepSequence> seqs, KvCachePool* pool,
                       std::vector<float>* logits) const override;

  const CausalLmArch& arch() const { return arch_; }
  MatmulDType dtype() const { return dtype_; }
  // Whether the linear layers run on PanelLinear (else oneDNN).
  bool uses_panel_linear() const { return panel_; }
  // Bytes of packed weights streamed by one decode step (all linear layers
  // and the LM head): the numerator of the memory-bandwidth bound.
  int64_t packed_weight_bytes() const;

 private:
  struct Norm {
    std::vector<float> gamma, beta;  // beta empty for RMSNorm
  };
  // One linear layer, packed for oneDNN or for PanelLinear (never both).
  struct Linear {
    PackedLinear onednn;
    PanelLinear panel;
    bool has_bias() const { return panel.valid() ? panel.has_bias() : onednn.has_bias(); }
    int out_features() const {
      return panel.valid() ? panel.out_features() : onednn.out_features();
    }
    size_t bytes() const { return panel.valid() ? panel.bytes() : onednn.packed_bytes(); }
  };
  struct Layer {
    Norm norm1;            // before attention (ln_1 / input_layernorm)
    Norm norm2;            // before the FFN (ln_2 / post_attention_layernorm)
    Linear qkv;            // [q_width + 2 kv_width, hidden]: q heads | k heads | v heads
    Linear attn_out;       // [hidden, q_width]
    Linear ffn_in;         // [inner, hidden], or SwiGLU [2 inner, hidden]: gate | up
    Linear ffn_out;        // [hidden, inner]
    float attn_scale = 0;  // score multiplier
  };
  CausalLm() = default;
  absl::StatusOr<Linear> Pack(const std::string& what, absl::Span<const float> weight, int in,
                              int out, absl::Span<const float> bias, WeightLayout layout) const;
  absl::StatusOr<Linear> PackNamed(const SafetensorsModel& w, const std::string& name, int in,
                                   int out, bool bias, WeightLayout layout) const;
  // y = act(x W + b) [+ y]; `act` must be kNone with accumulate.
  absl::Status Apply(const Linear& w, const float* x, int rows, float* y, bool accumulate,
                     CausalLmArch::Act act, bool activate) const;
  void ApplyNorm(const Norm& n, const float* x, int rows, float* out) const;
  void ApplyRotary(float* qkv, int rows, absl::Span<const int32_t> positions) const;
  // x[rows] += attn_out(ctx) and the FFN, with normed = norm2 input buffer.
  absl::Status FinishLayer(const Layer& layer, int rows, const float* ctx, float* x, float* normed,
                           float* inner, float* act) const;
  absl::Status RunSteps(GenerationStep& step, KvCachePool* pool, std::vector<float>* logits) const;

  CausalLmArch arch_;
  MatmulDType dtype_ = MatmulDType::kF32;
  bool panel_ = false;  // linear layers on PanelLinear
  std::vector<int32_t> eos_;
  int q_width_ = 0;               // num_heads * head_dim
  int kv_width_ = 0;              // num_kv_heads * head_dim
  std::vector<float> embed_;      // [vocab, hidden]
  std::vector<float> positions_;  // GPT-2 learned [max_pos, hidden]; empty otherwise
  std::vector<float> rope_cos_;   // [max_pos, rotary_dim / 2]
  std::vector<float> rope_sin_;   // [max_pos, rotary_dim / 2]
  std::vector<Layer> layers_;
  Norm final_norm_;
  Linear lm_head_;  // [vocab, hidden], no bias
};

}  // namespace maskserve::engine
