// The forward pass of a BERT-family encoder (BERT, RoBERTa, RoFormer),
// reproducing HuggingFace transformers 4.31 BertModel / RobertaModel /
// RoFormerModel, plus the MLM head (for UniLM-style generation).
//
// Weights are read and packed once in Create: Q, K and V become one fused
// [q + 2 kv, hidden] PackedLinear (one GEMM per layer), and bias, activation
// and residual adds are fused into the matmuls as post-ops. Embedding tables
// and LayerNorm parameters stay float32 in both precisions.
//
// Batches are packed without padding: sequence b owns rows cu_seqlens[b] ..
// cu_seqlens[b+1]-1 of every activation, so the linear layers only ever see
// real tokens and attention never looks past a sequence's own keys.
//
// Tensor names follow HF: "<prefix>embeddings.*", "<prefix>encoder.layer.N.*"
// with prefix "bert." / "roberta." / "roformer." or none (bare BertModel
// checkpoints), RoFormer's "<prefix>embeddings_project.*" when embedding_size
// != hidden_size, and the MLM head "cls.predictions.*" (BERT, RoFormer) or
// "lm_head.*" (RoBERTa). Pre-LN stacks (not an HF BERT variant, but what a
// config with normalize_before asks for) reuse the two per-layer LayerNorms
// in front of attention / FFN, and the final norm is "<prefix>encoder.LayerNorm".
//
// EncodeStep is the KV-cached forward used for UniLM generation: a packed
// GenerationStep whose new tokens sit at absolute positions num_cached.. of
// their sequences attend the keys/values cached in a KvCachePool plus each
// other, and write their own. It is exact (equal to Encode over the whole
// sequence) whenever no earlier position attends a later one across step
// boundaries, which GenerationStep::Prepare enforces (UNILM with the whole
// segment-0 source in the first step, CAUSAL, causal compositions).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/attention_mask.h"
#include "engine/encoder_arch.h"
#include "engine/generative_model.h"
#include "engine/onednn/packed_weight.h"

namespace maskserve::engine {

class GenerationStep;
class KvCachePool;
class SafetensorsModel;
struct ModelConfig;

struct EncoderOptions {
  MatmulDType dtype = MatmulDType::kF32;  // precision of the packed linear layers
  bool load_mlm_head = true;              // pack the MLM head when the checkpoint has one
};

// One packed batch. The spans are borrowed for the duration of Encode.
struct EncoderBatch {
  absl::Span<const int32_t> token_ids;   // all sequences back to back
  absl::Span<const int32_t> type_ids;    // same length as token_ids, or empty = all 0
  absl::Span<const int32_t> cu_seqlens;  // num_seqs + 1 row offsets: 0, len0, len0+len1, ...
  // One mask per sequence, or empty = every sequence BIDIRECTIONAL. A UNILM
  // spec with neither segment_ids nor prefix_length takes the sequence's
  // type ids as segment ids (bert4keras seq2seq).
  absl::Span<const MaskSpec> masks;
  bool need_first_layer = false;  // also return hidden_states_1 (FIRST_LAST_AVG pooling)
};

struct EncoderOutput {
  int num_tokens = 0;
  int hidden_size = 0;
  std::vector<float> last_hidden_state;  // [num_tokens, hidden_size]
  // Output of the first transformer layer (HF hidden_states[1]),
  // [num_tokens, hidden_size]; empty unless need_first_layer.
  std::vector<float> hidden_states_1;
};

class Encoder {
 public:
  // Reads, checks and packs every weight. Errors name the checkpoint file and
  // tensor (missing tensor, wrong shape, unreadable dtype).
  static absl::StatusOr<std::unique_ptr<Encoder>> Create(const ModelConfig& config,
                                                         const SafetensorsModel& weights,
                                                         const EncoderOptions& options);
  static absl::StatusOr<std::unique_ptr<Encoder>> Create(const EncoderArch& arch,
                                                         const SafetensorsModel& weights,
                                                         const EncoderOptions& options);
  ~Encoder();
  Encoder(const Encoder&) = delete;
  Encoder& operator=(const Encoder&) = delete;

  // Runs the encoder. Thread-safe (const, scratch is per calling thread).
  // InvalidArgument naming the sequence index for ids >= vocab, type ids >=
  // type_vocab_size, empty or too long sequences and bad masks.
  absl::StatusOr<EncoderOutput> Encode(const EncoderBatch& batch) const;

  // Whether the checkpoint has an MLM head (and it was loaded).
  bool has_mlm_head() const { return mlm_.decoder.valid(); }
  // MLM logits of `rows` hidden-state rows [rows, hidden_size]:
  // decoder(LayerNorm(act(dense(h)))) + bias, as [rows, vocab_size].
  // FailedPrecondition without an MLM head.
  absl::StatusOr<std::vector<float>> MlmLogits(const float* hidden, int rows) const;
  // The same into logits[rows * vocab_size] (no allocation once warm).
  absl::Status MlmLogits(const float* hidden, int rows, float* logits) const;

  // What a KvCachePool must hold for EncodeStep: every layer's K and V.
  KvLayout kv_layout() const;
  // KV-cached forward over a prepared step (see the file comment): embeds the
  // new tokens at their absolute positions (RoBERTa: padding_idx + 1 +
  // position, i.e. pad ids inside a sequence are not skipped as HF's
  // create_position_ids_from_input_ids would), runs every layer with
  // attention over the pool (writing the new keys/values of every layer),
  // and stores the final hidden state of each step.logit_rows() row in
  // last_hidden [rows, hidden_size]. Type ids past the checkpoint's segment
  // table (RoBERTa has one row) use its last row: the segment then lives in
  // the mask only. Thread-safe for distinct sequences.
  absl::Status EncodeStep(GenerationStep& step, KvCachePool* pool, float* last_hidden) const;

  const EncoderArch& arch() const { return arch_; }
  int hidden_size() const { return arch_.hidden_size; }
  int vocab_size() const { return arch_.vocab_size; }
  MatmulDType dtype() const { return dtype_; }
  // Longest sequence Encode accepts.
  int max_sequence_length() const { return arch_.max_sequence_length(); }

 private:
  struct Norm {
    std::vector<float> gamma, beta;
  };
  struct Layer {
    PackedLinear qkv;       // [q_width + 2 kv_width, hidden]
    PackedLinear attn_out;  // [hidden, q_width]
    PackedLinear ffn_in;    // [intermediate, hidden]
    PackedLinear ffn_out;   // [hidden, intermediate]
    Norm attn_norm;         // attention.output.LayerNorm
    Norm ffn_norm;          // output.LayerNorm
  };
  struct MlmHead {
    PackedLinear transform;  // cls.predictions.transform.dense
    Norm norm;               // cls.predictions.transform.LayerNorm
    PackedLinear decoder;    // tied word embeddings + cls.predictions.bias
  };
  Encoder() = default;
  // One layer over `total` packed rows. Attention runs over the rows
  // themselves (cu_seqlens / masks), or, when `step` is given, over the KV
  // cache: the rows' keys/values are written into `pool` as layer
  // `layer_index` first, and the step's masks and row offsets apply.
  absl::Status RunLayer(const Layer& layer, int total, absl::Span<const int32_t> cu_seqlens,
                        absl::Span<const AttentionMask> masks, absl::Span<const int32_t> positions,
                        float* x, float* scratch, GenerationStep* step = nullptr,
                        KvCachePool* pool = nullptr, int layer_index = 0) const;
  // Word + type + position embeddings, LayerNorm and projection of `total`
  // tokens into x [total, hidden_size]; `scratch` holds total * embedding_size.
  absl::Status Embed(absl::Span<const int32_t> ids, absl::Span<const int32_t> type_ids,
                     absl::Span<const int32_t> positions, float* x, float* scratch) const;
  // Rotates one head_dim-wide head in place for sequence position `position`.
  void ApplyRotary(float* head, int position) const;

  EncoderArch arch_;
  MatmulDType dtype_ = MatmulDType::kF32;
  int q_width_ = 0;                         // num_heads * head_dim
  int kv_width_ = 0;                        // num_kv_heads * head_dim
  std::vector<float> word_embeddings_;      // [vocab, embedding_size]
  std::vector<float> position_embeddings_;  // learned / sinusoidal [max_pos, embedding_size]
  std::vector<float> type_embeddings_;      // [type_vocab, embedding_size]
  Norm embedding_norm_;
  PackedLinear embeddings_project_;  // embedding_size -> hidden (RoFormer), or invalid
  std::vector<float> rotary_table_;  // [max_pos, head_dim]: sin | cos halves
  std::vector<Layer> layers_;
  Norm final_norm_;  // pre-LN final LayerNorm, or empty
  MlmHead mlm_;
  EncoderArch::Act mlm_act_ = EncoderArch::Act::kGeluErf;  // transform activation
};

}  // namespace maskserve::engine
