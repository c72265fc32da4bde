// The one step interface every text-generating model implements, so the
// decoding logic (engine/request_decoder.h) and the continuous batcher
// (server/scheduler/) never care which architecture they drive:
//
//   decoder-only LMs (GPT-2, Llama, GPT-NeoX)   natural mask CAUSAL
//   UniLM seq2seq on a BERT-family MLM          natural mask UNILM (segment 0 = source)
//   encoder-decoder (T5, BART, Marian, OpenNMT) decoder self-attention CAUSAL,
//                                               cross-attention over an EncoderState
//
// A step runs the new tokens of many sequences (different requests, beams,
// samples) in ONE packed, padding-free forward pass: a prefill chunk of a
// prompt and a single decode token are the same thing, a run of new tokens
// appended after the sequence's cached positions. Keys and values of every
// layer live in a paged KvCachePool owned by the caller; the model reads the
// cached positions and writes the new ones. That is valid for every mask a
// generating model accepts, because none lets an earlier position attend a
// later one across a step boundary (CAUSAL and its LOCAL / DILATED /
// STRIDED compositions never; UNILM only inside the segment-0 prefix, which
// is fed in one step), so cached keys/values never change.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/attention_mask.h"
#include "engine/kv_cache.h"

namespace maskserve::engine {

// What a KvCachePool must hold for this model (KvCacheOptions minus sizes).
struct KvLayout {
  int num_layers = 0;    // decoder layers (self-attention) sharing one block table
  int num_kv_heads = 0;  // key/value heads per layer
  int head_dim = 0;      // floats per head
};

// How a model generates; drives request validation and prompt building.
enum class GenerationKind {
  kCausalLm,        // prompt ids -> continuation
  kUnilm,           // [CLS] source [SEP] (segment 0) -> target (segment 1), MLM head
  kEncoderDecoder,  // source -> encoder once; decoder starts at decoder_start_token_id
};

// The encoder side of an encoder-decoder request: the encoder output already
// projected to every decoder layer's cross-attention keys/values. Computed
// once per request (EncodeSource) and shared, read-only, by all of its beams
// and samples.
class EncoderState {
 public:
  virtual ~EncoderState() = default;
  // Source tokens (cross-attention keys).
  virtual int source_length() const = 0;
  // Bytes held (for accounting).
  virtual int64_t bytes() const = 0;
};

// One sequence's share of a step.
struct StepSequence {
  // The sequence in the caller's pool. Positions [0, num_cached) hold keys
  // and values written by earlier steps; the caller has already reserved
  // (KvCachePool::Append) positions num_cached .. num_cached + tokens.size() - 1
  // for this step, and the model writes them.
  SeqId kv_seq = 0;
  int num_cached = 0;
  // New token ids at positions num_cached, num_cached + 1, ... (>= 1 token).
  absl::Span<const int32_t> tokens;
  // Segment (token type) id of each new token; empty = all 0. UniLM: 0 for
  // the source, 1 for the target.
  absl::Span<const int32_t> type_ids;
  // Attention pattern over the whole sequence (absolute positions). The
  // model's natural mask when the request gave none; UNILM carries
  // prefix_length = source length (or segment_ids of at least num_cached +
  // tokens.size() positions; later ones are ignored). Must pass
  // ValidateMask. Under UNILM the segment-0 positions attend each other, so
  // the whole segment-0 prefix must arrive in one step: Forward rejects a
  // step that ends inside it or a cached prefix that a later step extends.
  MaskSpec mask;
  // Return the logits of the last new token (false for the first chunks of
  // a chunked prefill).
  bool want_logits = true;
  // Encoder-decoder only: this request's encoder output; null otherwise.
  const EncoderState* encoder = nullptr;
};

class GenerativeModel {
 public:
  virtual ~GenerativeModel() = default;

  virtual GenerationKind kind() const = 0;
  virtual KvLayout kv_layout() const = 0;
  // Width of a logits row (may exceed the tokenizer's vocabulary, e.g. T5).
  virtual int vocab_size() const = 0;
  // Most positions a sequence may reach (prompt + generated), e.g. GPT-2's
  // n_positions, BERT's max_position_embeddings; for encoder-decoder models
  // the decoder side (the source limit is max_source_length()).
  virtual int max_sequence_length() const = 0;
  virtual int max_source_length() const { return 0; }
  // The ids that end a sequence by default (config / generation_config.json
  // eos_token_id; UniLM: [SEP]). May be empty.
  virtual const std::vector<int32_t>& eos_token_ids() const = 0;
  // Encoder-decoder: the first decoder input id; -1 otherwise.
  virtual int32_t decoder_start_token_id() const { return -1; }

  // The mask used when a request names none.
  virtual MaskSpec NaturalMask(int prefix_length) const = 0;
  // Whether this model can generate under `spec` (InvalidArgument naming
  // "mask" otherwise): e.g. BIDIRECTIONAL is never valid for generation (a
  // cached position would have to see the future); UNILM needs an MLM head.
  virtual absl::Status ValidateMask(const MaskSpec& spec) const = 0;

  // Encoder-decoder only: runs the encoder on `source_ids` and precomputes
  // every layer's cross-attention keys/values. Unimplemented otherwise.
  virtual absl::StatusOr<std::shared_ptr<const EncoderState>> EncodeSource(
      absl::Span<const int32_t> source_ids) const {
    (void)source_ids;
    return absl::UnimplementedError("this model has no encoder");
  }
  // Encoder-decoder only: EncodeSource for several requests at once (one
  // packed encoder pass where the model supports it; this default runs them
  // one by one). Element i is the state of sources[i].
  virtual absl::StatusOr<std::vector<std::shared_ptr<const EncoderState>>> EncodeSources(
      absl::Span<const absl::Span<const int32_t>> sources) const {
    std::vector<std::shared_ptr<const EncoderState>> states;
    states.reserve(sources.size());
    for (absl::Span<const int32_t> s : sources) {
      absl::StatusOr<std::shared_ptr<const EncoderState>> e = EncodeSource(s);
      if (!e.ok()) return e.status();
      states.push_back(*std::move(e));
    }
    return states;
  }

  // Runs one packed step over `seqs` (any mix of prefill chunks and decode
  // tokens), writes the new keys/values into `pool`, and fills `logits` with
  // one row [vocab_size()] per sequence whose want_logits is set, in order.
  // Thread-safe (const); several steps may run at once on distinct sequences.
  // InvalidArgument naming the sequence index for out-of-range ids, positions
  // past max_sequence_length() or masks that fail ValidateMask.
  virtual absl::Status Forward(absl::Span<const StepSequence> seqs, KvCachePool* pool,
                               std::vector<float>* logits) const = 0;
};

}  // namespace maskserve::engine
