// Encoder-decoder models against their references:
//
//   t5-mini (HF transformers 4.31, ../shared/golden/t5-mini)
//     outputs.json: input ids from the tokenizer, encoder_last_hidden_state,
//     step0_logits, 24 greedy steps with the cache (ids and per-step top-5
//     logits), beam search (num_beams 4, 2 returned, 16 new tokens, EOS 1:
//     sequences, sequences_scores, transition_scores);
//     batched_right_padding.json: the 4 inputs through ONE packed encoder
//     pass and decoded as one packed step per token (ids identical).
//   opennmt-aren-transliteration (float64 reference, ../shared/models)
//     reference_outputs.json: source ids from the source tokenizer, decoder
//     start + target prefix from the target tokenizer, greedy ids until EOS
//     and the log-prob of every generated token.
//
// Tolerances (golden/README.md): hidden states 1e-4, logits 1e-3, ids and
// beam sequences identical, beam scores 1e-4; OpenNMT log-probs 1e-4 (the
// file rounds them to 6 decimals).
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
#include "engine/sampling.h"
#include "engine/seq2seq_model.h"
#include "engine/tokenizer/tokenizer.h"
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

constexpr double kHiddenTol = 1e-4;
constexpr double kLogitsTol = 1e-3;
constexpr double kBeamScoreTol = 1e-4;
constexpr double kLogProbTol = 1e-4;

MaskSpec Causal() {
  MaskSpec m;
  m.kind = MaskKind::kCausal;
  return m;
}

// Several decoder sequences (each with its request's encoder state) fed
// one packed step at a time.
class Decoders {
 public:
  Decoders(const GenerativeModel& model, KvCachePool* pool) : model_(model), pool_(pool) {}
  int Add(std::shared_ptr<const EncoderState> enc) {
    seqs_.push_back({pool_->AllocateSequence(), 0, std::move(enc)});
    return static_cast<int>(seqs_.size()) - 1;
  }
  // Feeds tokens[i] to sequence i (all of them); one logits row each.
  absl::StatusOr<std::vector<float>> Step(const std::vector<std::vector<int32_t>>& tokens) {
    std::vector<StepSequence> batch(seqs_.size());
    for (size_t i = 0; i < seqs_.size(); ++i) {
      const int n = static_cast<int>(tokens[i].size());
      if (absl::Status s = pool_->Append(seqs_[i].kv, n); !s.ok()) return s;
      batch[i].kv_seq = seqs_[i].kv;
      batch[i].num_cached = seqs_[i].length;
      batch[i].tokens = tokens[i];
      batch[i].mask = Causal();
      batch[i].encoder = seqs_[i].enc.get();
    }
    std::vector<float> logits;
    if (absl::Status s = model_.Forward(batch, pool_, &logits); !s.ok()) return s;
    for (size_t i = 0; i < seqs_.size(); ++i) seqs_[i].length += static_cast<int>(tokens[i].size());
    return logits;
  }

 private:
  struct Seq {
    SeqId kv;
    int length;
    std::shared_ptr<const EncoderState> enc;
  };
  const GenerativeModel& model_;
  KvCachePool* pool_;
  std::vector<Seq> seqs_;
};

TEST(Seq2SeqGoldenTest, T5Mini) {
  MASKSERVE_REQUIRE_SHARED(dir, "golden/models/t5-mini");
  MASKSERVE_REQUIRE_SHARED(golden, "golden/t5-mini/outputs.json");
  std::unique_ptr<LoadedModel> lm = LoadGenerator(dir);
  ASSERT_NE(lm, nullptr);
  const GenerativeModel& model = *lm->generator();
  ASSERT_EQ(model.kind(), GenerationKind::kEncoderDecoder);
  const auto* s2s = dynamic_cast<const Seq2SeqModel*>(&model);
  ASSERT_NE(s2s, nullptr);
  EXPECT_EQ(model.vocab_size(), 32128);
  EXPECT_EQ(model.decoder_start_token_id(), 0);
  EXPECT_EQ(model.eos_token_ids(), std::vector<int32_t>{1});
  ASSERT_NE(lm->tokenizer(), nullptr);
  EXPECT_EQ(lm->tokenizer(), lm->target_tokenizer());
  const int V = model.vocab_size();
  const json g = LoadJson(golden);
  WorstDelta hidden, step0, top5, beam_scores;
  int inputs = 0;
  for (const json& in : g["inputs"]) {
    ++inputs;
    const std::vector<int32_t> src = Ints(in["input_ids"]);
    absl::StatusOr<Encoding> enc = lm->tokenizer()->Encode(in["text"].get<std::string>(), true, {});
    ASSERT_TRUE(enc.ok()) << enc.status();
    EXPECT_EQ(enc->ids, src);
    // Encoder.
    const absl::Span<const int32_t> one[] = {src};
    absl::StatusOr<std::vector<float>> h = s2s->EncoderHiddenStates(one);
    ASSERT_TRUE(h.ok()) << h.status();
    std::vector<float> want_h;
    for (const json& row : in["encoder_last_hidden_state"]) {
      const std::vector<float> r = Floats(row);
      want_h.insert(want_h.end(), r.begin(), r.end());
    }
    hidden.Add(MaxAbsDiff(*h, want_h));
    absl::StatusOr<std::shared_ptr<const EncoderState>> state = model.EncodeSource(src);
    ASSERT_TRUE(state.ok()) << state.status();
    EXPECT_EQ((*state)->source_length(), static_cast<int>(src.size()));

    // Greedy with the cache, EOS ignored.
    std::unique_ptr<KvCachePool> pool = MakePool(model, 64);
    Decoders dec(model, pool.get());
    dec.Add(*state);
    std::vector<int32_t> greedy;
    std::vector<std::vector<int32_t>> next = {{0}};
    for (int t = 0; t < 24; ++t) {
      absl::StatusOr<std::vector<float>> lg = dec.Step(next);
      ASSERT_TRUE(lg.ok()) << lg.status();
      ASSERT_EQ(static_cast<int>(lg->size()), V);
      if (t == 0) step0.Add(MaxAbsDiff(*lg, Floats(in["step0_logits"])));
      const json& st = in["greedy_step_top5"][t];
      const std::vector<int32_t> ids = Ints(st["ids"]);
      const std::vector<float> vals = Floats(st["logits"]);
      for (size_t k = 0; k < ids.size(); ++k) top5.Add(std::abs((*lg)[ids[k]] - vals[k]));
      greedy.push_back(Argmax(*lg));
      next = {{greedy.back()}};
    }
    EXPECT_EQ(greedy, Ints(in["greedy_ids"])) << in["text"];

    // Beam search: every running beam one row of a packed step, all
    // sharing the request's encoder state; KV reordered with Reassign.
    BeamSearchOptions bo;
    bo.num_beams = 4;
    bo.num_return_sequences = 2;
    bo.length_penalty = 1.0f;
    bo.early_stopping = EarlyStopping::kHeuristic;
    bo.eos_token_ids = {1};
    bo.max_new_tokens = 16;
    const std::vector<int32_t> prefix = {0};
    absl::StatusOr<std::unique_ptr<BeamSearch>> bs = BeamSearch::Create(bo, prefix);
    ASSERT_TRUE(bs.ok());
    std::unique_ptr<KvCachePool> bpool = MakePool(model, 4 * 40);
    std::vector<SeqId> seqs = {bpool->AllocateSequence()};
    absl::StatusOr<std::vector<float>> rows =
        testing::StepOne(model, bpool.get(), seqs[0], 0, prefix, Causal());
    // StepOne has no encoder: run the first step by hand.
    ASSERT_FALSE(rows.ok());
    {
      StepSequence ss;
      ss.kv_seq = seqs[0];
      ss.tokens = prefix;
      ss.mask = Causal();
      ss.encoder = state->get();
      rows.emplace();
      ASSERT_TRUE(model.Forward({&ss, 1}, bpool.get(), &*rows).ok());
    }
    while (!(*bs)->done()) {
      const int n = static_cast<int>(rows->size()) / V;
      for (int r = 0; r < n; ++r) LogSoftmaxInPlace(absl::MakeSpan(rows->data() + r * V, V));
      absl::StatusOr<BeamStep> step = (*bs)->Step(*rows, V);
      ASSERT_TRUE(step.ok()) << step.status();
      if (step->done) break;
      absl::StatusOr<std::vector<SeqId>> re = bpool->Reassign(seqs, step->parents);
      ASSERT_TRUE(re.ok());
      seqs = *re;
      const int num_cached = (*bs)->cur_len() - 1;
      std::vector<StepSequence> batch(seqs.size());
      for (size_t i = 0; i < seqs.size(); ++i) {
        ASSERT_TRUE(bpool->Append(seqs[i], 1).ok());
        batch[i].kv_seq = seqs[i];
        batch[i].num_cached = num_cached;
        batch[i].tokens = absl::MakeConstSpan(&step->tokens[i], 1);
        batch[i].mask = Causal();
        batch[i].encoder = state->get();
      }
      ASSERT_TRUE(model.Forward(batch, bpool.get(), &*rows).ok());
    }
    absl::StatusOr<std::vector<BeamHypothesis>> hyps = (*bs)->Finalize();
    ASSERT_TRUE(hyps.ok());
    const json& want = in["beam"];
    ASSERT_EQ(hyps->size(), want["sequences"].size());
    for (size_t i = 0; i < hyps->size(); ++i) {
      std::vector<int32_t> seq = prefix;
      seq.insert(seq.end(), (*hyps)[i].tokens.begin(), (*hyps)[i].tokens.end());
      EXPECT_EQ(seq, Ints(want["sequences"][i])) << in["text"] << " beam " << i;
      const double ds = std::abs((*hyps)[i].score - want["sequences_scores"][i].get<double>());
      beam_scores.Add(ds);
      EXPECT_LE(ds, kBeamScoreTol) << i;
      const std::vector<float> ts = Floats(want["transition_scores"][i]);
      for (size_t t = 0; t < (*hyps)[i].transition_scores.size() && t < ts.size(); ++t) {
        const double dt = std::abs((*hyps)[i].transition_scores[t] - ts[t]);
        beam_scores.Add(dt);
        EXPECT_LE(dt, kBeamScoreTol) << i << " t=" << t;
      }
    }
  }
  EXPECT_EQ(inputs, 4);
  EXPECT_LE(hidden.value, kHiddenTol);
  EXPECT_LE(step0.value, kLogitsTol);
  EXPECT_LE(top5.value, kLogitsTol);
  hidden.Print("t5-mini encoder_last_hidden_state");
  step0.Print("t5-mini step0_logits");
  top5.Print("t5-mini greedy_step_top5 logits (cached decode)");
  beam_scores.Print("t5-mini beam sequences_scores + transition_scores");
}

TEST(Seq2SeqGoldenTest, T5MiniBatched) {
  MASKSERVE_REQUIRE_SHARED(dir, "golden/models/t5-mini");
  MASKSERVE_REQUIRE_SHARED(golden, "golden/t5-mini/batched_right_padding.json");
  std::unique_ptr<LoadedModel> lm = LoadGenerator(dir);
  ASSERT_NE(lm, nullptr);
  const GenerativeModel& model = *lm->generator();
  const auto* s2s = dynamic_cast<const Seq2SeqModel*>(&model);
  ASSERT_NE(s2s, nullptr);
  const json g = LoadJson(golden);
  std::vector<std::vector<int32_t>> sources;
  for (size_t b = 0; b < g["input_ids"].size(); ++b) {
    std::vector<int32_t> ids;
    for (size_t t = 0; t < g["input_ids"][b].size(); ++t) {
      if (g["attention_mask"][b][t].get<int>() == 1) ids.push_back(g["input_ids"][b][t]);
    }
    sources.push_back(ids);
  }
  std::vector<absl::Span<const int32_t>> spans(sources.begin(), sources.end());
  // One packed encoder pass: real rows equal HF's padded batch.
  absl::StatusOr<std::vector<float>> h = s2s->EncoderHiddenStates(spans);
  ASSERT_TRUE(h.ok()) << h.status();
  WorstDelta hidden;
  size_t row = 0;
  for (size_t b = 0; b < sources.size(); ++b) {
    for (size_t t = 0; t < sources[b].size(); ++t, ++row) {
      const std::vector<float> want = Floats(g["encoder_last_hidden_state"][b][t]);
      hidden.Add(MaxAbsDiff(absl::MakeConstSpan(h->data() + row * want.size(), want.size()), want));
    }
  }
  EXPECT_LE(hidden.value, kHiddenTol);
  hidden.Print("t5-mini batched encoder_last_hidden_state (packed)");
  // Packed states, packed decoding.
  absl::StatusOr<std::vector<std::shared_ptr<const EncoderState>>> states =
      model.EncodeSources(spans);
  ASSERT_TRUE(states.ok()) << states.status();
  std::unique_ptr<KvCachePool> pool = MakePool(model, 4 * 40);
  Decoders dec(model, pool.get());
  for (auto& s : *states) dec.Add(s);
  std::vector<std::vector<int32_t>> next(sources.size(), {0}), got(sources.size());
  const int V = model.vocab_size();
  for (int t = 0; t < 24; ++t) {
    absl::StatusOr<std::vector<float>> lg = dec.Step(next);
    ASSERT_TRUE(lg.ok()) << lg.status();
    for (size_t b = 0; b < sources.size(); ++b) {
      const int32_t id = Argmax(absl::MakeConstSpan(lg->data() + b * V, V));
      got[b].push_back(id);
      next[b] = {id};
    }
  }
  for (size_t b = 0; b < sources.size(); ++b) {
    EXPECT_EQ(got[b], Ints(g["greedy_ids"][b])) << b;
  }
}

TEST(Seq2SeqGoldenTest, OpenNmtTransliterationReferenceOutputs) {
  MASKSERVE_REQUIRE_SHARED(dir, "models/opennmt-aren-transliteration");
  std::unique_ptr<LoadedModel> lm = LoadGenerator(dir);
  ASSERT_NE(lm, nullptr);
  const GenerativeModel& model = *lm->generator();
  ASSERT_EQ(model.kind(), GenerationKind::kEncoderDecoder);
  EXPECT_EQ(model.vocab_size(), 43);
  EXPECT_EQ(model.decoder_start_token_id(), 1);
  EXPECT_EQ(model.eos_token_ids(), std::vector<int32_t>{2});
  ASSERT_NE(lm->tokenizer(), nullptr);
  ASSERT_NE(lm->target_tokenizer(), lm->tokenizer());
  const int V = model.vocab_size();
  const json ref = LoadJson(dir + "/reference_outputs.json");
  WorstDelta logprob;
  int cases = 0;
  for (const json& c : ref["cases"]) {
    ++cases;
    std::string text;
    for (const json& t : c["source_tokens"]) text += t.get<std::string>();
    absl::StatusOr<Encoding> src = lm->tokenizer()->Encode(text, true, {});
    ASSERT_TRUE(src.ok());
    ASSERT_EQ(src->ids, Ints(c["source_ids"]));
    std::string prefix_text;
    for (const json& t : c["target_prefix"]) prefix_text += t.get<std::string>() + " ";
    absl::StatusOr<Encoding> prefix = lm->target_tokenizer()->Encode(prefix_text, false, {});
    ASSERT_TRUE(prefix.ok());
    std::vector<int32_t> start = {model.decoder_start_token_id()};
    start.insert(start.end(), prefix->ids.begin(), prefix->ids.end());
    ASSERT_EQ(start, Ints(c["decoder_input_start"]));

    absl::StatusOr<std::shared_ptr<const EncoderState>> state = model.EncodeSource(src->ids);
    ASSERT_TRUE(state.ok()) << state.status();
    std::unique_ptr<KvCachePool> pool = MakePool(model, 128);
    Decoders dec(model, pool.get());
    dec.Add(*state);
    std::vector<int32_t> out = start;
    std::vector<float> lps;
    std::vector<std::vector<int32_t>> next = {start};
    for (int t = 0; t < 48; ++t) {
      absl::StatusOr<std::vector<float>> lg = dec.Step(next);
      ASSERT_TRUE(lg.ok()) << lg.status();
      ASSERT_EQ(static_cast<int>(lg->size()), V);
      const int32_t id = Argmax(*lg);
      out.push_back(id);
      lps.push_back(TokenLogProb(*lg, id));
      if (id == 2) break;
      next = {{id}};
    }
    EXPECT_EQ(out, Ints(c["greedy_output_ids"])) << c["expected_text"];
    const std::vector<float> want = Floats(c["generated_token_logprobs"]);
    ASSERT_EQ(lps.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      logprob.Add(std::abs(lps[i] - want[i]));
      EXPECT_NEAR(lps[i], want[i], kLogProbTol) << c["expected_text"] << " step " << i;
    }
    absl::StatusOr<std::string> decoded = lm->target_tokenizer()->Decode(out, true);
    ASSERT_TRUE(decoded.ok());
    EXPECT_EQ(*decoded, c["expected_text"].get<std::string>());
  }
  EXPECT_EQ(cases, 4);
  logprob.Print("opennmt-aren greedy log-probs vs float64 reference");
}

}  // namespace
}  // namespace maskserve::engine
