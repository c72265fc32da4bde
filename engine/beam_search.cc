#include "engine/beam_search.h"

#include <algorithm>
#include <cmath>
#include <queue>

#include "absl/strings/str_cat.h"

namespace maskserve::engine {
namespace {

// A (beam, token) candidate; flat = beam * vocab + token.
struct Candidate {
  float score;
  int64_t flat;
};

// Better = higher score, then lower flat index.
bool Better(const Candidate& a, const Candidate& b) {
  return a.score > b.score || (a.score == b.score && a.flat < b.flat);
}

}  // namespace

absl::StatusOr<std::unique_ptr<BeamSearch>> BeamSearch::Create(const BeamSearchOptions& options,
                                                               absl::Span<const int32_t> prefix) {
  if (options.num_beams < 1) return absl::InvalidArgumentError("num_beams must be >= 1");
  if (options.num_return_sequences < 1 || options.num_return_sequences > options.num_beams) {
    return absl::InvalidArgumentError(absl::StrCat("num_return_sequences must be in [1, num_beams=",
                                                   options.num_beams, "], got ",
                                                   options.num_return_sequences));
  }
  if (options.max_new_tokens < 1) return absl::InvalidArgumentError("max_new_tokens must be >= 1");
  if (!std::isfinite(options.length_penalty)) {
    return absl::InvalidArgumentError("length_penalty must be finite");
  }
  if (prefix.empty()) {
    return absl::InvalidArgumentError(
        "beam search needs a non-empty prefix (the prompt, or the decoder start token)");
  }
  return std::unique_ptr<BeamSearch>(new BeamSearch(options, prefix));
}

BeamSearch::BeamSearch(const BeamSearchOptions& options, absl::Span<const int32_t> prefix)
    : options_(options), prefix_(prefix.begin(), prefix.end()), beams_(options.num_beams) {
  // HF: beam_scores[:, 1:] = -1e9 so that the identical beams are not all expanded.
  for (int b = 1; b < options_.num_beams; ++b) beams_[b].score = -1e9f;
}

std::vector<int32_t> BeamSearch::History(int beam) const {
  std::vector<int32_t> h = prefix_;
  h.insert(h.end(), beams_[beam].tokens.begin(), beams_[beam].tokens.end());
  return h;
}

bool BeamSearch::IsEos(int32_t id) const {
  return std::find(options_.eos_token_ids.begin(), options_.eos_token_ids.end(), id) !=
         options_.eos_token_ids.end();
}

void BeamSearch::AddFinished(const Beam& beam, float sum_logprobs, int length, int32_t eos) {
  const double score =
      static_cast<double>(sum_logprobs) / std::pow(static_cast<double>(length), options_.length_penalty);
  const int n = options_.num_beams;
  if (static_cast<int>(finished_.size()) < n || score > worst_score_) {
    Finished f;
    f.score = score;
    f.hyp.tokens = beam.tokens;
    f.hyp.score = static_cast<float>(score);
    f.hyp.sum_logprobs = sum_logprobs;
    f.hyp.transition_scores = beam.transitions;
    f.hyp.beam_indices = beam.beam_indices;
    f.hyp.finished_with_eos = eos >= 0;
    f.hyp.eos_token_id = eos;
    finished_.push_back(std::move(f));
    if (static_cast<int>(finished_.size()) > n) {
      // HF: sorted((s, idx)), drop the smallest, worst = the second smallest.
      std::vector<std::pair<double, int>> order;
      for (int i = 0; i < static_cast<int>(finished_.size()); ++i) {
        order.emplace_back(finished_[i].score, i);
      }
      std::sort(order.begin(), order.end());
      finished_.erase(finished_.begin() + order[0].second);
      worst_score_ = order[1].first;
    } else {
      worst_score_ = std::min(score, worst_score_);
    }
  }
}

bool BeamSearch::FinishedIsDone(float best_sum_logprobs, int cur_len) const {
  if (static_cast<int>(finished_.size()) < options_.num_beams) return false;
  const double lp = options_.length_penalty;
  const double best = best_sum_logprobs;
  switch (options_.early_stopping) {
    case EarlyStopping::kTrue:
      return true;
    case EarlyStopping::kHeuristic:
      return worst_score_ >= best / std::pow(static_cast<double>(cur_len), lp);
    case EarlyStopping::kNever: {
      const int max_length = static_cast<int>(prefix_.size()) + options_.max_new_tokens;
      const double len = lp > 0.0 ? max_length : cur_len;
      return worst_score_ >= best / std::pow(len, lp);
    }
  }
  return false;
}

absl::StatusOr<BeamStep> BeamSearch::Step(absl::Span<const float> log_probs, int vocab) {
  if (done_ || finalized_) return absl::FailedPreconditionError("beam search is done");
  const int n = options_.num_beams;
  if (vocab <= 0) return absl::InvalidArgumentError("vocab must be > 0");
  const bool single_row = num_generated_ == 0 && static_cast<int64_t>(log_probs.size()) == vocab;
  if (!single_row && static_cast<int64_t>(log_probs.size()) != int64_t{n} * vocab) {
    return absl::InvalidArgumentError(absl::StrCat("beam search: log_probs has ", log_probs.size(),
                                                   " values, expected num_beams * vocab = ",
                                                   int64_t{n} * vocab));
  }
  auto row = [&](int b) { return log_probs.data() + (single_row ? 0 : int64_t{b} * vocab); };

  // HF takes the top 2 * num_beams; a few more keep the step well defined
  // when more than num_beams of those are EOS (HF raises there). The extra
  // candidates are never looked at otherwise, so results are unchanged.
  const int64_t total = int64_t{n} * vocab;
  const int64_t k = std::min<int64_t>(
      total, 2 * int64_t{n} + int64_t{n} * static_cast<int64_t>(options_.eos_token_ids.size()));
  // Min-heap of the best k: top() is the worst kept.
  auto worse_on_top = [](const Candidate& a, const Candidate& b) { return Better(a, b); };
  std::priority_queue<Candidate, std::vector<Candidate>, decltype(worse_on_top)> heap(worse_on_top);
  for (int b = 0; b < n; ++b) {
    const float* r = row(b);
    const float beam_score = beams_[b].score;
    for (int t = 0; t < vocab; ++t) {
      const Candidate c{r[t] + beam_score, int64_t{b} * vocab + t};
      if (std::isnan(c.score)) continue;
      if (static_cast<int64_t>(heap.size()) < k) {
        heap.push(c);
      } else if (Better(c, heap.top())) {
        heap.pop();
        heap.push(c);
      }
    }
  }
  std::vector<Candidate> cands;
  cands.reserve(heap.size());
  while (!heap.empty()) {
    cands.push_back(heap.top());
    heap.pop();
  }
  std::reverse(cands.begin(), cands.end());  // best first
  if (cands.empty()) return absl::InvalidArgumentError("beam search: every log-prob is NaN");

  const int cur = cur_len();
  BeamStep step;
  for (int rank = 0; rank < static_cast<int>(cands.size()); ++rank) {
    const int b = static_cast<int>(cands[rank].flat / vocab);
    const int32_t token = static_cast<int32_t>(cands[rank].flat % vocab);
    if (IsEos(token)) {
      if (rank >= n) continue;
      // HF stores the hypothesis without EOS (its length is cur_len) and
      // finalize() writes eos_token_ids[0] after it, whichever EOS id was
      // chosen; compute_transition_scores then reads that id's score.
      const int32_t written = options_.eos_token_ids[0];
      Beam closed = beams_[b];
      closed.tokens.push_back(written);
      closed.transitions.push_back(row(b)[written]);
      closed.beam_indices.push_back(b);
      AddFinished(closed, cands[rank].score, cur, token);
    } else {
      step.parents.push_back(b);
      step.tokens.push_back(token);
      if (static_cast<int>(step.parents.size()) == n) break;
    }
  }
  if (static_cast<int>(step.parents.size()) < n) {
    return absl::InvalidArgumentError(
        "beam search: fewer non-EOS candidates than beams (vocabulary too small)");
  }
  done_by_scorer_ = done_by_scorer_ || FinishedIsDone(cands[0].score, cur);

  std::vector<Beam> next(n);
  for (int i = 0; i < n; ++i) {
    const int b = step.parents[i];
    const int32_t token = step.tokens[i];
    next[i].tokens = beams_[b].tokens;
    next[i].tokens.push_back(token);
    next[i].transitions = beams_[b].transitions;
    next[i].transitions.push_back(row(b)[token]);
    next[i].beam_indices = beams_[b].beam_indices;
    next[i].beam_indices.push_back(b);
    next[i].score = row(b)[token] + beams_[b].score;
  }
  beams_ = std::move(next);
  ++num_generated_;
  done_ = done_by_scorer_ || num_generated_ >= options_.max_new_tokens;
  step.done = done_;
  return step;
}

absl::StatusOr<std::vector<BeamHypothesis>> BeamSearch::Finalize() {
  if (finalized_) return absl::FailedPreconditionError("beam search already finalized");
  finalized_ = true;
  done_ = true;
  if (!done_by_scorer_) {
    for (const Beam& beam : beams_) AddFinished(beam, beam.score, cur_len(), /*eos=*/-1);
  }
  // HF: sorted(key=score) (stable), then pop() from the end: among equal
  // scores the later-added hypothesis comes first.
  std::vector<int> order(finished_.size());
  for (int i = 0; i < static_cast<int>(order.size()); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return finished_[a].score < finished_[b].score; });
  std::vector<BeamHypothesis> out;
  for (int j = 0; j < options_.num_return_sequences && !order.empty(); ++j) {
    out.push_back(finished_[order.back()].hyp);
    order.pop_back();
  }
  return out;
}

}  // namespace maskserve::engine
