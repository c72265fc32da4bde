#include "engine/beam_search.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <iostream>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/logits_processors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace maskserve::engine {
namespace {

using Seq = std::vector<int32_t>;

// A tiny deterministic "model": log-probs of the next token are a fixed
// function of the whole prefix (random logits seeded by a hash of it), with
// EOS boosted by eos_bias so hypotheses do finish, and optionally HF's
// no_repeat_ngram_size=2 applied to the log-probs as beam search does.
struct TableModel {
  int vocab = 8;
  uint64_t seed = 1;
  float eos_bias = 0.0f;
  std::vector<int32_t> eos;
  int no_repeat_ngram = 0;

  std::vector<float> LogProbs(const Seq& history) const {
    uint64_t h = seed * 0x9E3779B97F4A7C15ull;
    for (int32_t t : history) h = (h ^ static_cast<uint64_t>(t + 1)) * 0x100000001B3ull;
    std::mt19937_64 rng(h);
    std::normal_distribution<float> dist(0.0f, 2.0f);
    std::vector<float> row(vocab);
    for (float& x : row) x = dist(rng);
    for (int32_t e : eos) row[e] += eos_bias;
    LogSoftmaxInPlace(absl::MakeSpan(row));
    if (no_repeat_ngram > 0) ApplyNoRepeatNgram(history, no_repeat_ngram, absl::MakeSpan(row));
    return row;
  }
};

struct Output {
  std::vector<Seq> sequences;  // prefix included, as HF returns them (padded with pad)
  std::vector<float> scores;
  std::vector<std::vector<float>> transition_scores;
  std::vector<std::vector<int>> beam_indices;  // per returned sequence, -1 padded like HF
  std::vector<std::vector<int>> step_parents;  // per step
  bool hf_raises = false;  // more than num_beams of the top 2*num_beams were EOS
};

// A second, deliberately literal transcription of HF v4.31 beam_search() +
// BeamSearchScorer + BeamHypotheses + compute_transition_scores for batch 1:
// whole sequences as input_ids, a full sort instead of a heap, Python list
// semantics for the hypotheses, transition scores gathered from the stored
// per-step score rows through beam_indices, as HF does.
Output NaiveHfBeamSearch(const TableModel& model, const Seq& prompt, const BeamSearchOptions& o,
                         int pad) {
  const int n = o.num_beams;
  const int v = model.vocab;
  const int max_length = static_cast<int>(prompt.size()) + o.max_new_tokens;
  std::vector<Seq> input_ids(n, prompt);
  std::vector<float> beam_scores(n, -1e9f);
  beam_scores[0] = 0.0f;
  std::vector<std::vector<int>> beam_indices(n);
  std::vector<std::vector<float>> scores;  // per step: [n * v] processed rows
  struct Hyp {
    double score;
    Seq hyp;
    std::vector<int> indices;
  };
  std::vector<Hyp> beams;
  double worst = 1e9;
  bool done = false;
  auto add = [&](const Seq& hyp, double sum, const std::vector<int>& idx) {
    const double score = sum / std::pow(static_cast<double>(hyp.size()), o.length_penalty);
    if (static_cast<int>(beams.size()) < n || score > worst) {
      beams.push_back({score, hyp, idx});
      if (static_cast<int>(beams.size()) > n) {
        std::vector<std::pair<double, int>> sorted;
        for (int i = 0; i < static_cast<int>(beams.size()); ++i) sorted.push_back({beams[i].score, i});
        std::sort(sorted.begin(), sorted.end());
        beams.erase(beams.begin() + sorted[0].second);
        worst = sorted[1].first;
      } else {
        worst = std::min(score, worst);
      }
    }
  };
  auto is_done = [&](double best_sum, int cur_len) {
    if (static_cast<int>(beams.size()) < n) return false;
    switch (o.early_stopping) {
      case EarlyStopping::kTrue:
        return true;
      case EarlyStopping::kHeuristic:
        return worst >= best_sum / std::pow(cur_len, o.length_penalty);
      case EarlyStopping::kNever:
        return worst >= best_sum / std::pow(o.length_penalty > 0 ? max_length : cur_len,
                                            o.length_penalty);
    }
    return false;
  };
  auto is_eos = [&](int t) {
    return std::find(o.eos_token_ids.begin(), o.eos_token_ids.end(), t) != o.eos_token_ids.end();
  };
  Output out;
  int cur_len = static_cast<int>(prompt.size());
  while (true) {
    std::vector<float> processed(static_cast<size_t>(n) * v);
    std::vector<std::pair<float, int>> all;  // (score, flat)
    for (int b = 0; b < n; ++b) {
      const std::vector<float> row = model.LogProbs(input_ids[b]);
      for (int t = 0; t < v; ++t) {
        processed[b * v + t] = row[t];
        all.push_back({row[t] + beam_scores[b], b * v + t});
      }
    }
    scores.push_back(processed);
    std::stable_sort(all.begin(), all.end(),
                     [](const auto& a, const auto& b) { return a.first > b.first; });
    all.resize(2 * n);
    std::vector<float> next_scores;
    std::vector<int> next_tokens, next_indices;
    for (int rank = 0; rank < 2 * n; ++rank) {
      const int b = all[rank].second / v, t = all[rank].second % v;
      if (is_eos(t)) {
        if (rank >= n) continue;
        std::vector<int> idx = beam_indices[b];
        idx.push_back(b);
        add(input_ids[b], all[rank].first, idx);
      } else {
        next_scores.push_back(all[rank].first);
        next_tokens.push_back(t);
        next_indices.push_back(b);
      }
      if (static_cast<int>(next_tokens.size()) == n) break;
    }
    if (static_cast<int>(next_tokens.size()) < n) {
      out.hf_raises = true;  // "At most num_beams tokens ... can be equal to eos_token_id"
      return out;
    }
    done = done || is_done(all[0].first, cur_len);
    std::vector<Seq> new_ids;
    std::vector<std::vector<int>> new_indices;
    for (int i = 0; i < n; ++i) {
      new_ids.push_back(input_ids[next_indices[i]]);
      new_ids.back().push_back(next_tokens[i]);
      new_indices.push_back(beam_indices[next_indices[i]]);
      new_indices.back().push_back(next_indices[i]);
    }
    input_ids = new_ids;
    beam_indices = new_indices;
    beam_scores = next_scores;
    out.step_parents.push_back(next_indices);
    ++cur_len;
    if (done || cur_len >= max_length) break;
  }
  // finalize()
  if (!done) {
    for (int b = 0; b < n; ++b) add(input_ids[b], beam_scores[b], beam_indices[b]);
  }
  std::vector<Hyp> sorted = beams;
  std::stable_sort(sorted.begin(), sorted.end(),
                   [](const Hyp& a, const Hyp& b) { return a.score < b.score; });
  std::vector<Hyp> best;
  for (int j = 0; j < o.num_return_sequences; ++j) {
    best.push_back(sorted.back());
    sorted.pop_back();
  }
  int max_len = 0, min_len = 1 << 30;
  for (const Hyp& h : best) {
    max_len = std::max<int>(max_len, h.hyp.size());
    min_len = std::min<int>(min_len, h.hyp.size());
  }
  const int sent_max_len = std::min(max_len + 1, max_length);
  for (const Hyp& h : best) {
    Seq s(sent_max_len, pad);
    std::copy(h.hyp.begin(), h.hyp.end(), s.begin());
    if (static_cast<int>(h.hyp.size()) < sent_max_len) s[h.hyp.size()] = o.eos_token_ids[0];
    std::vector<int> idx(sent_max_len, -1);
    std::copy(h.indices.begin(), h.indices.end(), idx.begin());
    out.sequences.push_back(s);
    out.scores.push_back(static_cast<float>(h.score));
    out.beam_indices.push_back(idx);
  }
  // compute_transition_scores(normalize_logits=False).
  int max_beam_length = 0;
  for (const auto& idx : out.beam_indices) {
    max_beam_length = std::max<int>(max_beam_length, std::count_if(idx.begin(), idx.end(),
                                                                   [](int i) { return i >= 0; }));
  }
  for (size_t r = 0; r < out.sequences.size(); ++r) {
    const int cut = static_cast<int>(out.sequences[r].size()) - max_beam_length;
    std::vector<float> ts;
    for (int step = 0; step < max_beam_length; ++step) {
      const int bi = out.beam_indices[r][step];
      if (bi < 0) {
        ts.push_back(0.0f);
        continue;
      }
      ts.push_back(scores[step][bi * v + out.sequences[r][cut + step]]);
    }
    out.transition_scores.push_back(ts);
  }
  return out;
}

// Runs BeamSearch the way the engine will: one Step per model call.
Output RunBeamSearch(const TableModel& model, const Seq& prompt, const BeamSearchOptions& o) {
  Output out;
  auto bs_or = BeamSearch::Create(o, prompt);
  EXPECT_TRUE(bs_or.ok()) << bs_or.status();
  BeamSearch& bs = **bs_or;
  bool first = true;
  while (!bs.done()) {
    std::vector<float> rows;
    // The first step may pass one row: every beam is the prompt.
    for (int b = 0; b < (first ? 1 : o.num_beams); ++b) {
      const std::vector<float> row = model.LogProbs(bs.History(b));
      rows.insert(rows.end(), row.begin(), row.end());
    }
    first = false;
    auto step = bs.Step(rows, model.vocab);
    EXPECT_TRUE(step.ok()) << step.status();
    if (!step.ok()) return out;
    out.step_parents.push_back(step->parents);
    for (int i = 0; i < o.num_beams; ++i) {
      EXPECT_EQ(bs.Generated(i).back(), step->tokens[i]);
    }
  }
  auto hyps = bs.Finalize();
  EXPECT_TRUE(hyps.ok()) << hyps.status();
  for (const BeamHypothesis& h : *hyps) {
    Seq s = prompt;
    s.insert(s.end(), h.tokens.begin(), h.tokens.end());
    out.sequences.push_back(s);
    out.scores.push_back(h.score);
    out.transition_scores.push_back(h.transition_scores);
    out.beam_indices.push_back(h.beam_indices);
    EXPECT_EQ(h.tokens.size(), h.transition_scores.size());
    EXPECT_EQ(h.tokens.size(), h.beam_indices.size());
  }
  return out;
}

std::string Name(const BeamSearchOptions& o, const TableModel& m, size_t prompt_len) {
  return absl::StrCat("beams=", o.num_beams, " ret=", o.num_return_sequences, " lp=",
                      o.length_penalty, " es=", static_cast<int>(o.early_stopping), " eos=[",
                      absl::StrJoin(o.eos_token_ids, ","), "] max_new=", o.max_new_tokens,
                      " seed=", m.seed, " bias=", m.eos_bias, " nr=", m.no_repeat_ngram,
                      " prompt=", prompt_len);
}

// Strip HF's padding so sequences of different lengths compare.
Seq Unpad(const Seq& s, size_t real_len) { return Seq(s.begin(), s.begin() + real_len); }

TEST(BeamSearchTest, MatchesLiteralHfTranscription) {
  int cases = 0, with_eos_finish = 0, stopped_early = 0, hf_raises = 0;
  for (int num_beams : {2, 3, 4}) {
    for (float lp : {1.0f, 0.5f, 2.0f, -1.0f}) {
      for (EarlyStopping es : {EarlyStopping::kHeuristic, EarlyStopping::kTrue,
                               EarlyStopping::kNever}) {
        for (int variant = 0; variant < 6; ++variant) {
          TableModel m;
          m.seed = 1000 + variant * 7 + num_beams;
          m.eos = variant % 3 == 2 ? std::vector<int32_t>{0, 5} : std::vector<int32_t>{0};
          m.eos_bias = variant % 2 == 0 ? 1.5f : -0.5f;
          m.no_repeat_ngram = variant >= 4 ? 2 : 0;
          BeamSearchOptions o;
          o.num_beams = num_beams;
          o.num_return_sequences = 1 + variant % num_beams;
          o.length_penalty = lp;
          o.early_stopping = es;
          o.eos_token_ids = m.eos;
          o.max_new_tokens = 3 + variant;
          const Seq prompt = variant % 2 ? Seq{3} : Seq{1, 2, 3, 4, 6};
          const std::string name = Name(o, m, prompt.size());
          const Output want = NaiveHfBeamSearch(m, prompt, o, /*pad=*/-7);
          const Output got = RunBeamSearch(m, prompt, o);
          ++cases;
          if (want.hf_raises) {
            // HF raises a ValueError; BeamSearch looks past the top 2*num_beams instead.
            ++hf_raises;
            EXPECT_EQ(got.sequences.size(), static_cast<size_t>(o.num_return_sequences)) << name;
            continue;
          }
          if (static_cast<int>(want.step_parents.size()) < o.max_new_tokens) ++stopped_early;
          ASSERT_EQ(got.step_parents, want.step_parents) << name;
          ASSERT_EQ(got.sequences.size(), want.sequences.size()) << name;
          for (size_t r = 0; r < got.sequences.size(); ++r) {
            const size_t len = got.sequences[r].size();
            if (len < prompt.size() + o.max_new_tokens &&
                std::count(m.eos.begin(), m.eos.end(), got.sequences[r].back())) {
              ++with_eos_finish;
            }
            EXPECT_EQ(got.sequences[r], Unpad(want.sequences[r], len)) << name << " r=" << r;
            for (size_t i = len; i < want.sequences[r].size(); ++i) {
              EXPECT_EQ(want.sequences[r][i], -7) << "HF pads after a shorter hypothesis";
            }
            EXPECT_EQ(got.scores[r], want.scores[r]) << name << " r=" << r;
            // HF trims transition scores to the longest returned beam and
            // pads shorter ones with 0.
            std::vector<float> ts = got.transition_scores[r];
            ts.resize(want.transition_scores[r].size(), 0.0f);
            EXPECT_EQ(ts, want.transition_scores[r]) << name << " r=" << r;
            std::vector<int> bi = got.beam_indices[r];
            bi.resize(want.beam_indices[r].size(), -1);
            EXPECT_EQ(bi, want.beam_indices[r]) << name << " r=" << r;
          }
        }
      }
    }
  }
  // The grid must actually exercise EOS finishes and early stops.
  EXPECT_GT(with_eos_finish, 20);
  EXPECT_GT(stopped_early, 10);
  EXPECT_EQ(cases, 3 * 4 * 3 * 6);
  EXPECT_LT(hf_raises, cases / 10);
  std::cout << cases << " cases, " << with_eos_finish << " returned EOS hypotheses, "
            << stopped_early << " early stops, " << hf_raises << " where HF raises\n";
}

// Exhaustive search: every hypothesis (ending on EOS, or reaching the length
// limit) with score sum_logprobs / (prompt + length without EOS)^lp.
struct Scored {
  double score;
  Seq tokens;  // generated, EOS (first eos id) included
};
void Enumerate(const TableModel& m, const Seq& prompt, Seq& gen, float sum, int max_new,
               double lp, std::vector<Scored>& out) {
  Seq history = prompt;
  history.insert(history.end(), gen.begin(), gen.end());
  const std::vector<float> row = m.LogProbs(history);
  for (int t = 0; t < m.vocab; ++t) {
    const float s = row[t] + sum;  // float32 accumulation, as the beams do
    const bool eos = std::count(m.eos.begin(), m.eos.end(), t) > 0;
    if (eos || static_cast<int>(gen.size()) + 1 == max_new) {
      const int length = static_cast<int>(history.size()) + (eos ? 0 : 1);
      Seq tokens = gen;
      tokens.push_back(eos ? m.eos[0] : t);
      out.push_back({s / std::pow(static_cast<double>(length), lp), tokens});
    } else {
      gen.push_back(t);
      Enumerate(m, prompt, gen, s, max_new, lp, out);
      gen.pop_back();
    }
  }
}

TEST(BeamSearchTest, WideBeamWithNeverStoppingIsExhaustive) {
  // With more beams than live prefixes, no candidate is ever dropped, and
  // early_stopping="never" with lp > 0 only stops when nothing can improve:
  // the top hypotheses are the global optimum under the length penalty.
  for (float lp : {1.0f, 0.7f, 2.0f}) {
    for (uint64_t seed : {5u, 6u, 7u}) {
      TableModel m;
      m.vocab = 4;
      m.seed = seed;
      m.eos = {0};
      m.eos_bias = 1.0f;
      const Seq prompt = {1, 2};
      constexpr int kMaxNew = 4;
      std::vector<Scored> all;
      Seq gen;
      Enumerate(m, prompt, gen, 0.0f, kMaxNew, lp, all);
      std::stable_sort(all.begin(), all.end(),
                       [](const Scored& a, const Scored& b) { return a.score > b.score; });
      BeamSearchOptions o;
      o.num_beams = 128;  // >= all 27 * 4 real candidates of the last step
      o.num_return_sequences = 5;
      o.length_penalty = lp;
      o.early_stopping = EarlyStopping::kNever;
      o.eos_token_ids = {0};
      o.max_new_tokens = kMaxNew;
      const Output got = RunBeamSearch(m, prompt, o);
      ASSERT_EQ(got.sequences.size(), 5u);
      for (int r = 0; r < 5; ++r) {
        Seq want = prompt;
        want.insert(want.end(), all[r].tokens.begin(), all[r].tokens.end());
        EXPECT_EQ(got.sequences[r], want) << "lp=" << lp << " seed=" << seed << " r=" << r;
        EXPECT_NEAR(got.scores[r], all[r].score, 1e-6);
      }
    }
  }
}

// A hand-made 3-token model where the arithmetic can be followed on paper.
// Vocab {0: EOS, 1: a, 2: b}; the table below gives log-probs per prefix.
TEST(BeamSearchTest, HandComputedLengthPenaltyAndEos) {
  const float la = std::log(0.6f), lb = std::log(0.3f), le = std::log(0.1f);
  auto model = [&](const Seq& h) -> std::vector<float> {
    // After the prompt {9}: EOS 0.1, a 0.6, b 0.3. After "a": EOS 0.7, a 0.2, b 0.1.
    // After anything else: EOS 0.1, a 0.45, b 0.45.
    if (h.size() == 1) return {le, la, lb};
    if (h.size() == 2 && h[1] == 1) return {std::log(0.7f), std::log(0.2f), std::log(0.1f)};
    return {le, std::log(0.45f), std::log(0.45f)};
  };
  for (float lp : {1.0f, 0.0f}) {
    BeamSearchOptions o;
    o.num_beams = 2;
    o.num_return_sequences = 2;
    o.length_penalty = lp;
    o.early_stopping = EarlyStopping::kTrue;
    o.eos_token_ids = {0};
    o.max_new_tokens = 3;
    auto bs = *BeamSearch::Create(o, {9});
    // Step 1 (one row): candidates a (.6), b (.3), EOS (.1, rank 2 >= num_beams: ignored).
    auto s1 = *bs->Step(model({9}), 3);
    EXPECT_EQ(s1.parents, (std::vector<int>{0, 0}));
    EXPECT_EQ(s1.tokens, (std::vector<int32_t>{1, 2}));
    EXPECT_FALSE(s1.done);
    // Step 2: "a EOS" = .42 (rank 0, finished with length 2 = prompt + "a"),
    // "b a" = "b b" = .135, "a a" = .12: the beams become "b a", "b b".
    std::vector<float> rows = model(bs->History(0));
    const std::vector<float> r1 = model(bs->History(1));
    rows.insert(rows.end(), r1.begin(), r1.end());
    auto s2 = *bs->Step(rows, 3);
    EXPECT_EQ(s2.parents, (std::vector<int>{1, 1}));
    EXPECT_EQ(s2.tokens, (std::vector<int32_t>{1, 2}));
    EXPECT_FALSE(s2.done);  // one finished hypothesis < num_beams
    // Step 3: both beams end in EOS (.0135 each) at ranks >= 2 behind "b a a"
    // etc. (.06075): not added; max_new_tokens reached.
    rows = model(bs->History(0));
    const std::vector<float> r2 = model(bs->History(1));
    rows.insert(rows.end(), r2.begin(), r2.end());
    auto s3 = *bs->Step(rows, 3);
    EXPECT_TRUE(s3.done);
    auto hyps = *bs->Finalize();
    ASSERT_EQ(hyps.size(), 2u);
    // "a EOS": log(.42) / 2^lp; running "b a a": log(.06075) / 4^lp.
    const double a_eos = std::log(0.42) / std::pow(2.0, lp);
    const double baa = std::log(0.3 * 0.45 * 0.45) / std::pow(4.0, lp);
    EXPECT_EQ(hyps[0].tokens, (std::vector<int32_t>{1, 0}));
    EXPECT_TRUE(hyps[0].finished_with_eos);
    EXPECT_NEAR(hyps[0].score, a_eos, 1e-6);
    EXPECT_NEAR(hyps[0].transition_scores[1], std::log(0.7), 1e-6);
    EXPECT_EQ(hyps[0].beam_indices, (std::vector<int>{0, 0}));
    EXPECT_EQ(hyps[1].tokens, (std::vector<int32_t>{2, 1, 1}));
    EXPECT_FALSE(hyps[1].finished_with_eos);
    EXPECT_NEAR(hyps[1].score, baa, 1e-6);
    EXPECT_EQ(hyps[1].beam_indices, (std::vector<int>{0, 1, 0}));
    EXPECT_GT(hyps[0].score, hyps[1].score);
  }
}

TEST(BeamSearchTest, EarlyStoppingTrueStopsOnceNumBeamsFinished) {
  // EOS is by far the likeliest token everywhere: after step 1 only one EOS
  // (rank 0) finishes; after step 2 both beams' EOS rank 0 and 1.
  auto row = [](const Seq&) {
    std::vector<float> r = {0.9f, 0.05f, 0.05f};
    for (float& x : r) x = std::log(x);
    return r;
  };
  BeamSearchOptions o;
  o.num_beams = 2;
  o.eos_token_ids = {0};
  o.max_new_tokens = 10;
  o.early_stopping = EarlyStopping::kTrue;
  auto bs = *BeamSearch::Create(o, {5, 5});
  EXPECT_FALSE(bs->Step(row({}), 3)->done);
  std::vector<float> rows = row({});
  rows.insert(rows.end(), rows.begin(), rows.end());
  EXPECT_TRUE(bs->Step(rows, 3)->done);
  EXPECT_EQ(bs->Step(rows, 3).status().code(), absl::StatusCode::kFailedPrecondition);
  auto hyps = *bs->Finalize();
  ASSERT_EQ(hyps.size(), 1u);
  EXPECT_EQ(hyps[0].tokens, (std::vector<int32_t>{0}));
  EXPECT_NEAR(hyps[0].score, std::log(0.9) / 2.0, 1e-6);  // length = prompt (2), EOS excluded
}

TEST(BeamSearchTest, SecondEosIdIsWrittenAsTheFirstLikeHf) {
  // EOS ids {2, 0}; the model picks 0, HF's finalize writes eos_token_id[0] = 2.
  auto row = [](const Seq&) {
    std::vector<float> r = {0.8f, 0.1f, 0.05f, 0.05f};
    for (float& x : r) x = std::log(x);
    return r;
  };
  BeamSearchOptions o;
  o.num_beams = 2;
  o.eos_token_ids = {2, 0};
  o.max_new_tokens = 2;
  auto bs = *BeamSearch::Create(o, {1});
  while (!bs->done()) {
    std::vector<float> rows = row({});
    rows.insert(rows.end(), rows.begin(), rows.end());
    ASSERT_TRUE(bs->Step(rows, 4).ok());
  }
  auto hyps = *bs->Finalize();
  ASSERT_FALSE(hyps.empty());
  EXPECT_EQ(hyps[0].tokens, (std::vector<int32_t>{2}));
  EXPECT_EQ(hyps[0].eos_token_id, 0);
  EXPECT_NEAR(hyps[0].sum_logprobs, std::log(0.8), 1e-6);
  EXPECT_NEAR(hyps[0].transition_scores[0], std::log(0.05), 1e-6);  // HF gathers id 2's score
}

TEST(BeamSearchTest, ValidatesInputs) {
  BeamSearchOptions o;
  o.max_new_tokens = 4;
  o.num_return_sequences = 5;
  EXPECT_FALSE(BeamSearch::Create(o, {1}).ok());
  o.num_return_sequences = 1;
  EXPECT_FALSE(BeamSearch::Create(o, {}).ok());
  o.max_new_tokens = 0;
  EXPECT_FALSE(BeamSearch::Create(o, {1}).ok());
  o.max_new_tokens = 4;
  auto bs = *BeamSearch::Create(o, {1});
  EXPECT_EQ(bs->Step(std::vector<float>(7), 10).status().code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(bs->Step(std::vector<float>(10, -1.0f), 10).ok());
  // After the first step a single row is no longer accepted.
  EXPECT_EQ(bs->Step(std::vector<float>(10, -1.0f), 10).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace maskserve::engine
