// Beam search with the exact semantics of HuggingFace transformers v4.31
// (generate(num_beams>1, do_sample=False): BeamSearchScorer + BeamHypotheses),
// for one prompt, driven one step at a time by the caller:
//
//   auto bs = BeamSearch::Create(options, prefix);
//   while (!bs->done()) {
//     for each running beam b: row_b = log_softmax(logits of History(b)),
//                              then ApplyLogitsProcessors on row_b (HF order)
//     BeamStep step = bs->Step(rows, vocab);
//     KV: seqs = pool.Reassign(seqs, step.parents); append step.tokens[i] to seqs[i]
//   }
//   hyps = bs->Finalize();
//
// HF details kept: beam 0 starts at score 0 and the other beams at -1e9 (so
// the first step expands beam 0 only); each step ranks the top 2*num_beams
// (beam, token) candidates by beam score + processed log-prob (float32);
// an EOS candidate closes a hypothesis only if it ranks among the first
// num_beams, and the hypothesis is stored WITHOUT the EOS (its length, used
// by the length penalty, excludes it; EOS is appended to the returned ids);
// hypothesis score = sum_logprobs / length^length_penalty where length counts
// the prefix (decoder-only: the prompt; encoder-decoder: the decoder start
// token), i.e. HF's input_ids length; the running beams enter the finished
// list only at the end, and only if the search did not stop early.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace maskserve::engine {

// HF early_stopping.
enum class EarlyStopping {
  kHeuristic,  // False: stop when worst finished >= best candidate / cur_len^lp
  kTrue,       // True: stop once num_beams hypotheses are finished
  kNever,      // "never": stop only when no running beam can improve (uses max length if lp > 0)
};

struct BeamSearchOptions {
  int num_beams = 4;                  // beams kept per step, >= 1
  int num_return_sequences = 1;       // hypotheses returned, 1..num_beams
  float length_penalty = 1.0f;        // exponent of the length dividing sum_logprobs
  EarlyStopping early_stopping = EarlyStopping::kHeuristic;  // when to stop before max_new_tokens
  std::vector<int32_t> eos_token_ids;  // ids that finish a hypothesis; empty = none
  int max_new_tokens = 0;             // steps at most (HF max_length = prefix + this), >= 1
};

// What one step did to the running beams: new beam i continues old beam
// parents[i] with tokens[i] appended.
struct BeamStep {
  std::vector<int> parents;      // [num_beams], old beam index
  std::vector<int32_t> tokens;   // [num_beams], appended id (never an EOS id)
  bool done = false;             // no more steps: call Finalize()
};

struct BeamHypothesis {
  // Generated ids (no prefix). A hypothesis that finished on EOS ends with
  // eos_token_ids[0], as HF writes it, even when another EOS id was chosen.
  std::vector<int32_t> tokens;
  float score = 0.0f;                    // sum_logprobs / length^length_penalty (HF sequences_scores)
  float sum_logprobs = 0.0f;             // sum of the processed log-probs of its tokens
  std::vector<float> transition_scores;  // per token: processed log-prob (HF compute_transition_scores)
  std::vector<int> beam_indices;         // per token: the beam it was chosen from (HF beam_indices)
  bool finished_with_eos = false;        // ended on an EOS id (vs. reaching the length limit)
  int32_t eos_token_id = -1;             // the EOS id actually chosen, -1 if none
};

class BeamSearch {
 public:
  // prefix: the ids every hypothesis starts from and whose count enters the
  // length penalty (must not be empty).
  static absl::StatusOr<std::unique_ptr<BeamSearch>> Create(const BeamSearchOptions& options,
                                                            absl::Span<const int32_t> prefix);

  int num_beams() const { return options_.num_beams; }
  // HF cur_len: prefix + generated length of every running beam.
  int cur_len() const { return static_cast<int>(prefix_.size()) + num_generated_; }
  int num_generated() const { return num_generated_; }
  bool done() const { return done_; }
  // Running beam b as HF's input_ids[b] (prefix + generated): the history
  // logits processors see.
  std::vector<int32_t> History(int beam) const;
  const std::vector<int32_t>& Generated(int beam) const { return beams_[beam].tokens; }
  // Accumulated (float32) score of running beam b.
  float BeamScore(int beam) const { return beams_[beam].score; }

  // log_probs: [num_beams, vocab] processed log-probs of the running beams,
  // row-major. On the first step all beams are identical, so a single row
  // [vocab] is also accepted. Ties between candidates go to the lower
  // (beam * vocab + token). FAILED_PRECONDITION after done().
  absl::StatusOr<BeamStep> Step(absl::Span<const float> log_probs, int vocab);

  // The num_return_sequences best hypotheses, best first. Call once, after
  // done() (or earlier to cut the search short).
  absl::StatusOr<std::vector<BeamHypothesis>> Finalize();

 private:
  struct Beam {
    std::vector<int32_t> tokens;
    float score = 0.0f;
    std::vector<float> transitions;
    std::vector<int> beam_indices;
  };
  struct Finished {
    double score;  // HF computes this in Python floats
    BeamHypothesis hyp;
  };

  BeamSearch(const BeamSearchOptions& options, absl::Span<const int32_t> prefix);
  bool IsEos(int32_t id) const;
  // HF BeamHypotheses.add / is_done.
  // eos: the EOS id that closed it, -1 for a running beam.
  void AddFinished(const Beam& beam, float sum_logprobs, int length, int32_t eos);
  bool FinishedIsDone(float best_sum_logprobs, int cur_len) const;

  const BeamSearchOptions options_;
  const std::vector<int32_t> prefix_;
  std::vector<Beam> beams_;
  std::vector<Finished> finished_;
  double worst_score_ = 1e9;
  int num_generated_ = 0;
  bool done_ = false;            // no more steps
  bool done_by_scorer_ = false;  // HF BeamSearchScorer._done: running beams are not added
  bool finalized_ = false;
};

}  // namespace maskserve::engine
