// The decoding state machine of ONE Generate request over a GenerativeModel,
// independent of gRPC and of how steps are batched. The scheduler asks it
// which sequences need a forward step and with which tokens, runs those
// tokens (together with other requests' tokens) through Model::Forward, and
// hands the logits back; the decoder chooses tokens, manages the request's
// KV sequences and turns tokens into text:
//
//   while (!d.done()) {
//     d.PendingInputs(&in);                       // (slot, uncached tokens)
//     for each chosen (slot, n): seqs += d.PrepareChunk(&pool, slot, n);   // reserves KV
//     model.Forward(seqs, &pool, &logits);
//     for each (slot, n): d.CompleteChunk(slot, n, row);
//     StepOutput out = d.Advance(&pool);          // new tokens, text deltas, finishes
//   }
//   results = d.TakeResults();
//
// Every sequence ("slot") is a token stream (prompt + generated) of which the
// first num_cached have keys/values in the pool; whatever is not cached is
// its next input. A prefill, a chunk of a long prefill, a decode token and
// the recompute of a preempted sequence are therefore all the same thing,
// so ReleaseKv (preemption, cancellation) just drops the KV sequences and
// resets num_cached: the next steps recompute them, and the output is the
// same as without preemption.
//
// Strategies (HF transformers v4.31 semantics, processors in HF order):
//   greedy   processors on the raw logits, argmax
//   sample   processors, warpers (temperature, top-k, top-p), one seeded
//            TokenSampler per sequence (same seed => same output, whatever
//            else shares the batch)
//   beam     log-softmax, processors, BeamSearch::Step; KV reordered with
//            KvCachePool::Reassign
// num_return_sequences samples (and the beams) share the prompt's KV blocks:
// the prompt is prefilled once on slot 0, which is Forked (copy-on-write)
// when its logits arrive.
//
// Text: per sequence an IncrementalDetokenizer (never splits a UTF-8
// character) feeds a StopMatcher (stop strings across token boundaries,
// active once min_new_tokens exist; the text ends before the stop string).
// Stop tokens (the model's EOS unless ignore_eos, and stop_token_ids) end a
// sequence; they are part of its ids but not of its text.
//
// Not thread-safe: one scheduler thread drives a decoder.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/beam_search.h"
#include "engine/generation_input.h"
#include "engine/generative_model.h"
#include "engine/kv_cache.h"
#include "engine/logits_processors.h"
#include "engine/sampling.h"
#include "engine/stop_matcher.h"
#include "engine/tokenizer/tokenizer.h"

namespace maskserve::engine {

enum class DecodeStrategy { kGreedy, kSample, kBeam };

// Why a sequence ended.
enum class FinishReason {
  kNone,        // still running
  kLength,      // max_new_tokens reached
  kStopToken,   // EOS or one of stop_token_ids
  kStopString,  // a stop string appeared (the text ends before it)
};

// Most sequences one request may run at once (beam_width x
// num_return_sequences for BEAM, num_return_sequences otherwise).
inline constexpr int kMaxSequencesPerRequest = 64;
// Most stop strings per request and bytes per stop string.
inline constexpr int kMaxStopStrings = 16;
inline constexpr int kMaxStopStringBytes = 256;

// One request's decoding parameters (already defaulted: unset proto fields
// arrive as their documented defaults). Field names follow GenerateRequest,
// and so do the messages of Validate.
struct DecodeOptions {
  DecodeStrategy strategy = DecodeStrategy::kGreedy;  // how tokens are chosen
  int max_new_tokens = 16;                            // tokens to generate at most (>= 1)
  int min_new_tokens = 0;               // stop conditions are ignored until this many exist
  float temperature = 1.0f;             // SAMPLE: logits / temperature (> 0)
  int top_k = 0;                        // SAMPLE: keep the k most likely (0 = off)
  float top_p = 1.0f;                   // SAMPLE: nucleus mass in (0, 1]
  float repetition_penalty = 1.0f;      // HF/CTRL penalty (> 0; 1 = off)
  int no_repeat_ngram_size = 0;         // ban repeated n-grams (0 = off)
  int beam_width = 1;                   // BEAM: beams kept per step (>= 1)
  float length_penalty = 1.0f;          // BEAM: score = sum logprobs / length^length_penalty
  bool early_stopping = false;          // BEAM: stop once beam_width hypotheses are finished
  int num_return_sequences = 1;         // sequences returned (<= beam_width for BEAM)
  std::vector<std::string> stop;        // stop strings (empty ones ignored)
  std::vector<int32_t> stop_token_ids;  // ids that end a sequence besides the model's EOS
  uint64_t seed = 0;                    // SAMPLE: RNG seed (sequence i uses a seed derived from it)
  bool logprobs = false;                // return per-token log-probabilities
  bool ignore_eos = false;              // the model's EOS does not end a sequence
  bool skip_special_tokens = true;      // drop special tokens from the text

  // INVALID_ARGUMENT naming the request field, e.g. "top_p must be in (0, 1],
  // got 1.5", or "prompt has 500 tokens; with max_new_tokens = 100 that
  // exceeds the model's maximum length 512". `prompt_length` = decoder-side
  // input tokens (GenerationPrompt::ids).
  absl::Status Validate(const GenerativeModel& model, int prompt_length) const;
};

// What one Advance produced for one returned sequence (greedy / sample: each
// step; beam: the final result only, as one delta per returned sequence).
struct SequenceDelta {
  int index = 0;                              // which returned sequence
  std::string text;                           // new text (complete UTF-8 characters only)
  std::vector<int32_t> ids;                   // new token ids
  std::vector<float> logprobs;                // their log-probs (when requested)
  FinishReason finish = FinishReason::kNone;  // set on the sequence's last delta
};

struct StepOutput {
  std::vector<SequenceDelta> deltas;
  // Tokens chosen by this Advance over all sequences (beams included); 0
  // when the step only advanced a prefill.
  int new_tokens = 0;
  // The request ended with this step (these are its last deltas).
  bool done = false;
};

// The TokenSampler seed of sample `index` of a request seeded with `seed`
// (decorrelated, so samples of one request differ).
uint64_t SequenceSeed(uint64_t seed, int index);

// TokenLogProb (log_softmax(scores)[token]) without a libm call per entry:
// a vectorised polynomial exp, so a 50k-entry row costs microseconds, not a
// quarter of a millisecond per generated token. Within 1e-5 of TokenLogProb.
float FastTokenLogProb(absl::Span<const float> scores, int32_t token);
// Argmax (lowest id among ties, NaN never chosen) with a vectorised max.
int32_t FastArgmax(absl::Span<const float> scores);

// One returned sequence.
struct GeneratedSequence {
  std::vector<int32_t> ids;  // generated ids (the prompt is not included)
  std::string text;          // their text (a stop string and what follows removed)
  FinishReason finish = FinishReason::kNone;
  std::vector<float> logprobs;  // per id, when requested
  float score = 0.0f;           // sum of log-probs; BEAM: the length-penalised score
};

class RequestDecoder {
 public:
  // Validates `options` against the model and the prompt. `model` (and
  // `tokenizer`, which may be null: no text then) must outlive the decoder.
  static absl::StatusOr<std::unique_ptr<RequestDecoder>> Create(const GenerativeModel* model,
                                                                const Tokenizer* tokenizer,
                                                                GenerationPrompt prompt,
                                                                DecodeOptions options);
  ~RequestDecoder();
  RequestDecoder(const RequestDecoder&) = delete;
  RequestDecoder& operator=(const RequestDecoder&) = delete;

  // A sequence that needs tokens run: its uncached tokens (>= 1).
  struct PendingInput {
    int slot = 0;
    int tokens = 0;
  };
  // The sequences waiting for a forward step, in slot order (cleared first).
  void PendingInputs(std::vector<PendingInput>* out) const;

  // Reserves the next `n` uncached tokens of `slot` in `pool` (allocating
  // its KV sequence when it has none) and describes them for Forward; the
  // spans stay valid until CompleteChunk or ReleaseKv. RESOURCE_EXHAUSTED
  // (nothing reserved) when the pool has too few free blocks. For
  // encoder-decoder models the first call also runs the encoder.
  absl::StatusOr<StepSequence> PrepareChunk(KvCachePool* pool, int slot, int n);

  // Encoder-decoder models: whether the request has no encoder state yet.
  // A scheduler may encode the sources of several such requests in one
  // packed pass (GenerativeModel::EncodeSources of their source_ids()) and
  // hand each its state with SetEncoderState; otherwise the first
  // PrepareChunk encodes the source alone. The state outlives preemption
  // (ReleaseKv keeps it: it holds no KV blocks).
  bool needs_encoder() const;
  absl::Span<const int32_t> source_ids() const { return prompt_.source_ids; }
  void SetEncoderState(std::shared_ptr<const EncoderState> state);

  // The model wrote the chunk's keys/values; `logits` is its row when the
  // chunk reached the end of the sequence's tokens (want_logits), else empty.
  absl::Status CompleteChunk(int slot, int n, absl::Span<const float> logits);

  // Chooses the next tokens of every sequence whose logits are in (beam:
  // once every running beam's are), forks / reorders / frees KV sequences,
  // detokenises and applies stop conditions.
  absl::StatusOr<StepOutput> Advance(KvCachePool* pool);

  // Frees every KV sequence of the request (preemption, cancellation,
  // failure); the tokens stay, so later steps recompute them.
  void ReleaseKv(KvCachePool* pool);

  bool done() const { return done_; }
  // The returned sequences (call once, after done()).
  std::vector<GeneratedSequence> TakeResults();

  // Sequences the request runs once past its prompt (num_return_sequences,
  // or beam_width for BEAM).
  int planned_sequences() const;
  // Live sequences now (1 while the shared prompt is being prefilled).
  int live_sequences() const;
  // Worst-case KV blocks the request can hold at once: every planned
  // sequence at its full length with no sharing (plus one copy-on-write
  // block each). A request larger than the pool can never finish.
  int64_t MaxBlocks(int block_size) const;
  // Blocks needed to run every uncached token now plus one more token per
  // sequence (what admission reserves).
  int64_t BlocksToRun(const KvCachePool& pool) const;
  // KV sequences held in the pool.
  int kv_sequences() const;

  int prompt_tokens() const { return prompt_.prompt_tokens; }
  // Generated tokens of the returned sequences (after done()).
  int completion_tokens() const { return completion_tokens_; }
  // Tokens generated so far (all sequences, beams included).
  int64_t tokens_generated() const { return tokens_generated_; }
  const DecodeOptions& options() const { return options_; }

 private:
  struct Slot;

  RequestDecoder(const GenerativeModel* model, const Tokenizer* tokenizer, GenerationPrompt prompt,
                 DecodeOptions options);
  bool IsStop(int32_t id) const;
  Slot NewPromptSlot() const;
  // Greedy / sample: picks the slot's next token from the logits in
  // scratch_ (processed in place).
  absl::Status ChooseToken(Slot& slot, int index, KvCachePool* pool, StepOutput* out);
  absl::Status AdvanceBeam(KvCachePool* pool, StepOutput* out);
  absl::Status FinishBeam(KvCachePool* pool, StepOutput* out);
  // Detokenises `ids` and applies the stop strings from scratch (beam results).
  absl::StatusOr<std::string> FinalText(absl::Span<const int32_t> ids, bool* stopped) const;
  void FreeSlotKv(Slot& slot, KvCachePool* pool);
  IncrementalDetokenizer MakeDetokenizer() const;

  const GenerativeModel* const model_;
  const Tokenizer* const tokenizer_;
  const GenerationPrompt prompt_;
  const DecodeOptions options_;
  LogitsProcessorOptions processors_;
  std::vector<int32_t> stop_ids_;  // EOS (unless ignore_eos) + stop_token_ids
  std::shared_ptr<const EncoderState> encoder_;
  std::vector<Slot> slots_;
  // False until the shared prompt's logits were used (slot 0 only until then).
  bool expanded_ = false;
  std::unique_ptr<BeamSearch> beam_;
  std::vector<GeneratedSequence> results_;
  bool done_ = false;
  int completion_tokens_ = 0;
  int64_t tokens_generated_ = 0;
  std::vector<float> scratch_;
};

}  // namespace maskserve::engine
