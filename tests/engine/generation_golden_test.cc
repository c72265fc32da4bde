// The generation models against HuggingFace transformers 4.31
// (../shared/golden) and the float64 llama2.c reference of stories260K:
//
//   gpt2-mini, stories260K   generation.json: last_logits, greedy (with the
//                            KV cache: prefill then one-token steps), greedy
//                            with repetition penalty / no-repeat n-gram, beam
//                            search (BeamSearch + KvCachePool::Reassign);
//                            batched_left_padding.json: the 8 prompts as one
//                            packed batch; stories260K reference_outputs.json
//   bert-mini, roformer-mini unilm_generation.json: step0_logits and 24
//                            greedy UniLM steps with the cache
//
// Tolerances (golden/README.md): logits max|d| <= 1e-3; ids and beam
// sequences identical; beam scores <= 1e-4; stories260K last logits vs the
// float64 reference <= 1e-4. Token ids come from the golden files, so the
// models are tested in isolation from the tokenizers.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "engine/beam_search.h"
#include "engine/generative_model.h"
#include "engine/kv_cache.h"
#include "engine/loaded_model.h"
#include "engine/logits_processors.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/engine/generation_test_util.h"
#include "tests/util/golden_json.h"
#include "tests/util/test_env.h"

namespace maskserve::engine {
namespace {

using json = nlohmann::json;
using maskserve::testing::LoadJson;
using maskserve::testing::Ints;
using maskserve::testing::Floats;
using maskserve::testing::WorstDelta;
using testing::Argmax;
using testing::LoadGenerator;
using testing::MakePool;
using testing::MaxAbsDiff;

constexpr double kLogitsTol = 1e-3;
constexpr double kBeamScoreTol = 1e-4;
constexpr double kFp64Tol = 1e-4;

// One sequence decoded with the cache: Prefill(prompt), then Next(token).
class CachedSequence {
 public:
  CachedSequence(const GenerativeModel& model, KvCachePool* pool, MaskSpec mask)
      : model_(model), pool_(pool), mask_(std::move(mask)), seq_(pool->AllocateSequence()) {}

  absl::StatusOr<std::vector<float>> Feed(absl::Span<const int32_t> ids,
                                          absl::Span<const int32_t> types = {}) {
    absl::StatusOr<std::vector<float>> lg =
        testing::StepOne(model_, pool_, seq_, length_, ids, mask_, types);
    if (lg.ok()) length_ += static_cast<int>(ids.size());
    return lg;
  }

 private:
  const GenerativeModel& model_;
  KvCachePool* pool_;
  MaskSpec mask_;
  SeqId seq_;
  int length_ = 0;
};

MaskSpec Causal() {
  MaskSpec m;
  m.kind = MaskKind::kCausal;
  return m;
}

// Greedy with HF processors (raw logits -> processors -> argmax), the cache
// and exactly `steps` tokens (EOS ignored). Per step, `on_logits` sees the
// raw logits.
template <typename F>
std::vector<int32_t> Greedy(const GenerativeModel& model, const std::vector<int32_t>& prompt,
                            int steps, const LogitsProcessorOptions& proc, F on_logits) {
  std::unique_ptr<KvCachePool> pool = MakePool(model, static_cast<int>(prompt.size()) + steps + 16);
  CachedSequence seq(model, pool.get(), Causal());
  absl::StatusOr<std::vector<float>> lg = seq.Feed(prompt);
  std::vector<int32_t> history = prompt, out;
  for (int t = 0; t < steps; ++t) {
    EXPECT_TRUE(lg.ok()) << lg.status();
    if (!lg.ok()) return out;
    on_logits(t, *lg);
    ApplyLogitsProcessors(proc, history, t, absl::MakeSpan(*lg));
    const int32_t next = Argmax(*lg);
    out.push_back(next);
    history.push_back(next);
    if (t + 1 < steps) {
      const int32_t one[] = {next};
      lg = seq.Feed(one);
    }
  }
  return out;
}

// HF beam search: every running beam one row of one packed step.
absl::StatusOr<std::vector<BeamHypothesis>> Beam(const GenerativeModel& model,
                                                 const std::vector<int32_t>& prompt,
                                                 const BeamSearchOptions& options,
                                                 const LogitsProcessorOptions& proc) {
  absl::StatusOr<std::unique_ptr<BeamSearch>> bs = BeamSearch::Create(options, prompt);
  if (!bs.ok()) return bs.status();
  const int V = model.vocab_size();
  std::unique_ptr<KvCachePool> pool = MakePool(
      model, options.num_beams * (static_cast<int>(prompt.size()) + options.max_new_tokens + 16));
  std::vector<SeqId> seqs = {pool->AllocateSequence()};
  absl::StatusOr<std::vector<float>> rows =
      testing::StepOne(model, pool.get(), seqs[0], 0, prompt, Causal());
  if (!rows.ok()) return rows.status();
  std::vector<std::vector<int32_t>> next_tokens;
  while (!(*bs)->done()) {
    const int n = static_cast<int>(rows->size()) / V;
    for (int r = 0; r < n; ++r) {
      const absl::Span<float> row(rows->data() + static_cast<size_t>(r) * V, V);
      LogSoftmaxInPlace(row);
      ApplyLogitsProcessors(proc, (*bs)->History(r), (*bs)->num_generated(), row);
    }
    absl::StatusOr<BeamStep> step = (*bs)->Step(*rows, V);
    if (!step.ok()) return step.status();
    if (step->done) break;
    absl::StatusOr<std::vector<SeqId>> re = pool->Reassign(seqs, step->parents);
    if (!re.ok()) return re.status();
    seqs = *re;
    const int num_cached = (*bs)->cur_len() - 1;
    std::vector<StepSequence> batch(seqs.size());
    for (size_t i = 0; i < seqs.size(); ++i) {
      if (absl::Status s = pool->Append(seqs[i], 1); !s.ok()) return s;
      batch[i].kv_seq = seqs[i];
      batch[i].num_cached = num_cached;
      batch[i].tokens = absl::MakeConstSpan(&step->tokens[i], 1);
      batch[i].mask = Causal();
    }
    if (absl::Status s = model.Forward(batch, pool.get(), &*rows); !s.ok()) return s;
  }
  return (*bs)->Finalize();
}

void CheckCausalGeneration(const std::string& model_rel, const std::string& golden_rel,
                           const std::vector<int32_t>& beam_eos) {
  MASKSERVE_REQUIRE_SHARED(dir, model_rel);
  MASKSERVE_REQUIRE_SHARED(golden, golden_rel + "/generation.json");
  std::unique_ptr<LoadedModel> lm = LoadGenerator(dir);
  ASSERT_NE(lm, nullptr);
  const GenerativeModel& model = *lm->generator();
  ASSERT_EQ(model.kind(), GenerationKind::kCausalLm);
  const json g = LoadJson(golden);
  WorstDelta last, top5, beam_scores;
  int prompts = 0;
  for (const json& p : g["prompts"]) {
    ++prompts;
    const std::vector<int32_t> prompt = Ints(p["input_ids"]);
    const std::vector<float> want_last = Floats(p["last_logits"]);
    ASSERT_EQ(static_cast<int>(want_last.size()), model.vocab_size());
    // Greedy (cached), plus per-step top-5 logits and the last prompt logits.
    const std::vector<int32_t> greedy = Greedy(
        model, prompt, 32, LogitsProcessorOptions{}, [&](int t, const std::vector<float>& lg) {
          if (t == 0) last.Add(MaxAbsDiff(lg, want_last));
          const json& st = p["greedy_step_top5"][t];
          const std::vector<int32_t> ids = Ints(st["ids"]);
          const std::vector<float> vals = Floats(st["logits"]);
          for (size_t k = 0; k < ids.size(); ++k) top5.Add(std::abs(lg[ids[k]] - vals[k]));
        });
    EXPECT_EQ(greedy, Ints(p["greedy_ids"])) << golden_rel << " prompt " << p["prompt"];
    // Greedy with processors.
    struct Variant {
      const char* key;
      float penalty;
      int ngram;
    };
    for (const Variant& v : {Variant{"greedy_no_repeat_ngram_2", 1.0f, 2},
                             Variant{"greedy_repetition_penalty_1.3", 1.3f, 0},
                             Variant{"greedy_no_repeat_ngram_2_repetition_penalty_1.3", 1.3f, 2}}) {
      LogitsProcessorOptions proc;
      proc.repetition_penalty = v.penalty;
      proc.no_repeat_ngram_size = v.ngram;
      const std::vector<int32_t> ids =
          Greedy(model, prompt, 32, proc, [](int, const std::vector<float>&) {});
      EXPECT_EQ(ids, Ints(p[v.key]["ids"])) << golden_rel << " " << v.key << " " << p["prompt"];
    }
    // Beam search.
    for (const char* key : {"beam", "beam_no_repeat_ngram_2"}) {
      BeamSearchOptions bo;
      bo.num_beams = 4;
      bo.num_return_sequences = 2;
      bo.length_penalty = 1.0f;
      bo.early_stopping = EarlyStopping::kHeuristic;
      bo.eos_token_ids = beam_eos;
      bo.max_new_tokens = 16;
      LogitsProcessorOptions proc;
      if (std::string(key) == "beam_no_repeat_ngram_2") proc.no_repeat_ngram_size = 2;
      absl::StatusOr<std::vector<BeamHypothesis>> hyps = Beam(model, prompt, bo, proc);
      ASSERT_TRUE(hyps.ok()) << hyps.status();
      const json& want = p[key];
      ASSERT_EQ(hyps->size(), want["sequences"].size());
      for (size_t i = 0; i < hyps->size(); ++i) {
        std::vector<int32_t> seq = prompt;
        seq.insert(seq.end(), (*hyps)[i].tokens.begin(), (*hyps)[i].tokens.end());
        EXPECT_EQ(seq, Ints(want["sequences"][i])) << golden_rel << " " << key << " " << i;
        const double ds = std::abs((*hyps)[i].score - want["sequences_scores"][i].get<double>());
        beam_scores.Add(ds);
        EXPECT_LE(ds, kBeamScoreTol) << key << " " << i;
        const std::vector<float> ts = Floats(want["transition_scores"][i]);
        for (size_t t = 0; t < (*hyps)[i].transition_scores.size() && t < ts.size(); ++t) {
          const double d = std::abs((*hyps)[i].transition_scores[t] - ts[t]);
          beam_scores.Add(d);
          EXPECT_LE(d, kBeamScoreTol) << key << " " << i << " t=" << t;
        }
      }
    }
  }
  EXPECT_GT(prompts, 0);
  EXPECT_LE(last.value, kLogitsTol);
  EXPECT_LE(top5.value, kLogitsTol);
  last.Print(golden_rel + " last_logits (" + std::to_string(prompts) + " prompts)");
  top5.Print(golden_rel + " greedy_step_top5 logits (cached decode)");
  beam_scores.Print(golden_rel + " beam sequences_scores + transition_scores");
}

TEST(GenerationGoldenTest, Gpt2Mini) {
  CheckCausalGeneration("golden/models/gpt2-mini", "golden/gpt2-mini", {50256});
}

TEST(GenerationGoldenTest, Stories260K) {
  CheckCausalGeneration("models/stories260K", "golden/stories260K", {1, 2});
}

// The 8 prompts as ONE packed step (prefill), then 32 packed decode steps:
// the same greedy ids as each prompt alone (HF's left-padded batch).
void CheckBatched(const std::string& model_rel, const std::string& golden_rel) {
  MASKSERVE_REQUIRE_SHARED(dir, model_rel);
  MASKSERVE_REQUIRE_SHARED(golden, golden_rel + "/batched_left_padding.json");
  std::unique_ptr<LoadedModel> lm = LoadGenerator(dir);
  ASSERT_NE(lm, nullptr);
  const GenerativeModel& model = *lm->generator();
  const json g = LoadJson(golden);
  std::vector<std::vector<int32_t>> prompts;
  for (size_t b = 0; b < g["input_ids"].size(); ++b) {
    std::vector<int32_t> ids;
    for (size_t t = 0; t < g["input_ids"][b].size(); ++t) {
      if (g["attention_mask"][b][t].get<int>() == 1)
        ids.push_back(g["input_ids"][b][t].get<int32_t>());
    }
    prompts.push_back(ids);
  }
  const int B = static_cast<int>(prompts.size());
  ASSERT_EQ(B, 8);
  std::unique_ptr<KvCachePool> pool = MakePool(model, B * 64, 16);
  std::vector<SeqId> seqs;
  std::vector<int> lengths;
  std::vector<std::vector<int32_t>> generated(B), pending(B);
  for (int b = 0; b < B; ++b) {
    seqs.push_back(pool->AllocateSequence());
    lengths.push_back(0);
    pending[b] = prompts[b];
  }
  std::vector<float> logits;
  const int V = model.vocab_size();
  for (int step = 0; step < 32; ++step) {
    std::vector<StepSequence> batch(B);
    for (int b = 0; b < B; ++b) {
      ASSERT_TRUE(pool->Append(seqs[b], static_cast<int>(pending[b].size())).ok());
      batch[b].kv_seq = seqs[b];
      batch[b].num_cached = lengths[b];
      batch[b].tokens = pending[b];
      batch[b].mask = Causal();
    }
    ASSERT_TRUE(model.Forward(batch, pool.get(), &logits).ok());
    ASSERT_EQ(logits.size(), static_cast<size_t>(B) * V);
    for (int b = 0; b < B; ++b) {
      lengths[b] += static_cast<int>(pending[b].size());
      const int32_t next =
          Argmax(absl::MakeConstSpan(logits.data() + static_cast<size_t>(b) * V, V));
      generated[b].push_back(next);
      pending[b] = {next};
    }
  }
  for (int b = 0; b < B; ++b) {
    EXPECT_EQ(generated[b], Ints(g["greedy_ids"][b])) << golden_rel << " batch row " << b;
  }
  std::printf("[golden] %s batched_left_padding: %d prompts in one packed step, ids identical\n",
              golden_rel.c_str(), B);
}

TEST(GenerationGoldenTest, Gpt2MiniBatched) {
  CheckBatched("golden/models/gpt2-mini", "golden/gpt2-mini");
}

TEST(GenerationGoldenTest, Stories260KBatched) {
  CheckBatched("models/stories260K", "golden/stories260K");
}

// The llama2.c float64 reference: greedy to total_positions and the last
// prompt position's logits.
TEST(GenerationGoldenTest, Stories260KReferenceOutputs) {
  MASKSERVE_REQUIRE_SHARED(dir, "models/stories260K");
  MASKSERVE_REQUIRE_SHARED(ref, "models/stories260K/reference_outputs.json");
  std::unique_ptr<LoadedModel> lm = LoadGenerator(dir);
  ASSERT_NE(lm, nullptr);
  const GenerativeModel& model = *lm->generator();
  EXPECT_EQ(model.eos_token_ids(), (std::vector<int32_t>{1, 2}));  // generation_config.json
  const json r = LoadJson(ref);
  WorstDelta fp64;
  for (const json& c : r["cases"]) {
    const std::vector<int32_t> prompt = Ints(c["prompt_ids"]);
    const std::vector<int32_t> want = Ints(c["greedy_ids"]);
    const std::vector<float> want_logits = Floats(c["last_prompt_position_logits_fp64"]);
    const int steps = static_cast<int>(want.size() - prompt.size());
    std::vector<int32_t> got = prompt;
    const std::vector<int32_t> gen = Greedy(model, prompt, steps, LogitsProcessorOptions{},
                                            [&](int t, const std::vector<float>& lg) {
                                              if (t == 0) fp64.Add(MaxAbsDiff(lg, want_logits));
                                            });
    got.insert(got.end(), gen.begin(), gen.end());
    EXPECT_EQ(got, want) << "case " << c["prompt"];
  }
  EXPECT_LE(fp64.value, kFp64Tol);
  fp64.Print("stories260K reference_outputs last logits vs fp64 (3 cases)");
}

void CheckUnilm(const std::string& model_rel, const std::string& golden_rel) {
  MASKSERVE_REQUIRE_SHARED(dir, model_rel);
  MASKSERVE_REQUIRE_SHARED(golden, golden_rel + "/unilm_generation.json");
  std::unique_ptr<LoadedModel> lm = LoadGenerator(dir);
  ASSERT_NE(lm, nullptr);
  const GenerativeModel& model = *lm->generator();
  ASSERT_EQ(model.kind(), GenerationKind::kUnilm);
  const json g = LoadJson(golden);
  const int steps = g["steps"].get<int>();
  WorstDelta step0, top5;
  for (const json& gen : g["generations"]) {
    const std::vector<int32_t> source = Ints(gen["source_input_ids"]);
    const int src = gen["source_len"].get<int>();
    ASSERT_EQ(static_cast<int>(source.size()), src);
    std::unique_ptr<KvCachePool> pool = MakePool(model, src + steps + 16);
    CachedSequence seq(model, pool.get(), model.NaturalMask(src));
    absl::StatusOr<std::vector<float>> lg = seq.Feed(source);  // type ids 0
    ASSERT_TRUE(lg.ok()) << lg.status();
    step0.Add(MaxAbsDiff(*lg, Floats(gen["step0_logits"])));
    std::vector<int32_t> out;
    for (int t = 0; t < steps; ++t) {
      const json& st = gen["top5"][t];
      const std::vector<int32_t> ids = Ints(st["ids"]);
      const std::vector<float> vals = Floats(st["logits"]);
      for (size_t k = 0; k < ids.size(); ++k) top5.Add(std::abs((*lg)[ids[k]] - vals[k]));
      const int32_t next = Argmax(*lg);
      out.push_back(next);
      const int32_t one[] = {next};
      const int32_t type1[] = {1};
      if (t + 1 < steps) {
        lg = seq.Feed(one, type1);
        ASSERT_TRUE(lg.ok()) << lg.status();
      }
    }
    EXPECT_EQ(out, Ints(gen["greedy_ids"])) << golden_rel << " " << gen["source"];
  }
  EXPECT_LE(step0.value, kLogitsTol);
  EXPECT_LE(top5.value, kLogitsTol);
  step0.Print(golden_rel + " UniLM step0_logits");
  top5.Print(golden_rel + " UniLM per-step top5 logits (cached)");
}

TEST(GenerationGoldenTest, BertMiniUnilm) {
  CheckUnilm("golden/models/bert-mini", "golden/bert-mini");
}

TEST(GenerationGoldenTest, RoformerMiniUnilm) {
  CheckUnilm("golden/models/roformer-mini", "golden/roformer-mini");
}

}  // namespace
}  // namespace maskserve::engine
