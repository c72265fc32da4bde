// RequestDecoder against straightforward references: a no-cache loop that
// recomputes the fake model's logits from the whole history every step
// (greedy / sample / processors / stop conditions), and BeamSearch driven
// the same way. The fake model reads every history back from the KV pool,
// so these comparisons also check forks, copy-on-write, Reassign, chunked
// prefill and recompute after ReleaseKv.
#include "engine/request_decoder.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <limits>
#include <map>
#include <random>
#include <set>

#include "engine/generation_input.h"
#include "engine/kv_cache.h"
#include "engine/logits_processors.h"
#include "engine/sampling.h"
#include "tests/util/fake_generation.h"

namespace maskserve::engine {
namespace {

using ::maskserve::testing::FakeBertTokenizer;
using ::maskserve::testing::FakeGenerativeModel;
using ::maskserve::testing::FakeModelOptions;
using ::maskserve::testing::FakeTokenizer;
using ::testing::HasSubstr;

std::unique_ptr<KvCachePool> MakePool(int64_t blocks = 512, int block_size = 4) {
  auto pool = KvCachePool::Create(FakeGenerativeModel::PoolOptions(blocks, block_size));
  EXPECT_TRUE(pool.ok()) << pool.status();
  return std::move(*pool);
}

GenerationPrompt CausalPrompt(std::vector<int32_t> ids) {
  GenerationPrompt p;
  p.ids = std::move(ids);
  p.mask.kind = MaskKind::kCausal;
  p.prompt_tokens = static_cast<int>(p.ids.size());
  return p;
}

bool ValidUtf8(const std::string& s) {
  std::string out;
  return DecodeUtf8Replace(s, true, &out) == s.size() && out == s;
}

struct RunOptions {
  int chunk = 1 << 20;                 // most tokens per sequence per step
  std::set<int> release_before_steps;  // ReleaseKv (preemption) before these steps
};

struct RunResult {
  std::vector<GeneratedSequence> seqs;
  std::map<int, std::string> streamed;  // concatenated deltas per index
  int steps = 0;
  int max_kv_blocks_used = 0;
};

// Drives one decoder to completion the way the scheduler does.
RunResult Drive(RequestDecoder& d, const GenerativeModel& model, KvCachePool& pool,
                const RunOptions& ro = {}) {
  RunResult r;
  std::vector<RequestDecoder::PendingInput> pending;
  while (!d.done()) {
    if (ro.release_before_steps.count(r.steps)) d.ReleaseKv(&pool);
    d.PendingInputs(&pending);
    EXPECT_FALSE(pending.empty());
    std::vector<StepSequence> seqs;
    std::vector<std::pair<int, int>> chunks;
    for (const auto& p : pending) {
      const int n = std::min(p.tokens, ro.chunk);
      auto s = d.PrepareChunk(&pool, p.slot, n);
      EXPECT_TRUE(s.ok()) << s.status();
      if (!s.ok()) return r;
      seqs.push_back(*s);
      chunks.emplace_back(p.slot, n);
    }
    std::vector<float> logits;
    absl::Status st = model.Forward(seqs, &pool, &logits);
    EXPECT_TRUE(st.ok()) << st;
    r.max_kv_blocks_used = std::max<int>(r.max_kv_blocks_used, pool.Stats().blocks_used);
    size_t row = 0;
    for (size_t i = 0; i < chunks.size(); ++i) {
      absl::Span<const float> l;
      if (seqs[i].want_logits) {
        l = absl::MakeConstSpan(logits).subspan(row * model.vocab_size(), model.vocab_size());
        ++row;
      }
      EXPECT_TRUE(d.CompleteChunk(chunks[i].first, chunks[i].second, l).ok());
    }
    auto out = d.Advance(&pool);
    EXPECT_TRUE(out.ok()) << out.status();
    if (!out.ok()) return r;
    EXPECT_EQ(out->done, d.done());
    for (const SequenceDelta& delta : out->deltas) {
      EXPECT_TRUE(ValidUtf8(delta.text)) << delta.text;
      r.streamed[delta.index] += delta.text;
    }
    ++r.steps;
    if (r.steps > 10000) {
      ADD_FAILURE() << "no progress";
      return r;
    }
  }
  r.seqs = d.TakeResults();
  EXPECT_EQ(pool.Stats().blocks_used, 0) << "KV blocks leaked";
  EXPECT_EQ(pool.Stats().sequences, 0);
  return r;
}

// The no-cache reference for greedy / sample.
GeneratedSequence Reference(const FakeGenerativeModel& m, const Tokenizer* tok,
                            const GenerationPrompt& p, const DecodeOptions& o, int index) {
  std::vector<int32_t> hist = p.ids;
  std::vector<int32_t> types = p.type_ids;
  types.resize(hist.size(), 0);
  std::vector<int32_t> stops = o.ignore_eos ? std::vector<int32_t>{} : m.eos_token_ids();
  for (int32_t s : o.stop_token_ids) stops.push_back(s);
  LogitsProcessorOptions lp;
  lp.repetition_penalty = o.repetition_penalty;
  lp.no_repeat_ngram_size = o.no_repeat_ngram_size;
  lp.min_new_tokens = o.min_new_tokens;
  lp.stop_token_ids = stops;
  if (o.strategy == DecodeStrategy::kSample) {
    lp.temperature = o.temperature;
    lp.top_k = o.top_k;
    lp.top_p = o.top_p;
  }
  TokenSampler sampler(SequenceSeed(o.seed, index));
  GeneratedSequence g;
  std::vector<int32_t> text_ids;
  for (int step = 0; step < o.max_new_tokens; ++step) {
    std::vector<float> scores = m.ReferenceLogits(hist, types, p.source_ids);
    ApplyLogitsProcessors(lp, hist, step, absl::MakeSpan(scores));
    int32_t t;
    if (o.strategy == DecodeStrategy::kSample) {
      ApplyLogitsWarpers(lp, absl::MakeSpan(scores));
      t = sampler.Sample(scores);
    } else {
      t = Argmax(scores);
    }
    const float logprob = TokenLogProb(scores, t);
    g.ids.push_back(t);
    g.logprobs.push_back(logprob);
    g.score += logprob;
    hist.push_back(t);
    types.push_back(p.generated_type_id);
    if (std::find(stops.begin(), stops.end(), t) != stops.end() && step + 1 >= o.min_new_tokens) {
      g.finish = FinishReason::kStopToken;
      break;
    }
    text_ids.push_back(t);
    if (tok != nullptr && !o.stop.empty()) {
      std::string text = *tok->Decode(text_ids, o.skip_special_tokens);
      size_t best = std::string::npos;
      for (const std::string& s : o.stop) best = std::min(best, text.find(s));
      if (best != std::string::npos) {
        g.text = text.substr(0, best);
        g.finish = FinishReason::kStopString;
        return g;
      }
    }
  }
  if (g.finish == FinishReason::kNone) g.finish = FinishReason::kLength;
  if (tok != nullptr) g.text = *tok->Decode(text_ids, o.skip_special_tokens);
  return g;
}

void ExpectSame(const GeneratedSequence& got, const GeneratedSequence& want,
                const std::string& what) {
  EXPECT_EQ(got.ids, want.ids) << what;
  EXPECT_EQ(got.text, want.text) << what;
  EXPECT_EQ(got.finish, want.finish) << what;
  EXPECT_NEAR(got.score, want.score, 1e-3) << what;
}

// A GenerationInput with the given fields (the rest empty).
GenerationInput In(std::string prompt, std::vector<int32_t> ids = {}, std::string source = {},
                   std::optional<MaskSpec> mask = std::nullopt) {
  GenerationInput in;
  in.prompt = std::move(prompt);
  in.prompt_ids = std::move(ids);
  in.source = std::move(source);
  in.mask = std::move(mask);
  return in;
}

class RequestDecoderTest : public ::testing::Test {
 protected:
  std::unique_ptr<RequestDecoder> Make(GenerationPrompt p, DecodeOptions o,
                                       const GenerativeModel* model = nullptr) {
    auto d = RequestDecoder::Create(model ? model : &model_, &tok_, std::move(p), std::move(o));
    EXPECT_TRUE(d.ok()) << d.status();
    return d.ok() ? std::move(*d) : nullptr;
  }
  FakeGenerativeModel model_;
  FakeTokenizer tok_;
};

TEST_F(RequestDecoderTest, GreedyMatchesFullRecompute) {
  for (int seed = 0; seed < 8; ++seed) {
    GenerationPrompt p = CausalPrompt({5, 6, static_cast<int32_t>(7 + seed), 3, 9});
    DecodeOptions o;
    o.max_new_tokens = 24;
    o.ignore_eos = seed % 2 == 0;
    o.logprobs = true;
    auto pool = MakePool();
    auto d = Make(p, o);
    RunResult r = Drive(*d, model_, *pool);
    ASSERT_EQ(r.seqs.size(), 1u);
    GeneratedSequence want = Reference(model_, &tok_, p, o, 0);
    ExpectSame(r.seqs[0], want, absl::StrCat("prompt ", seed));
    EXPECT_EQ(r.seqs[0].logprobs.size(), r.seqs[0].ids.size());
    EXPECT_EQ(r.streamed[0], r.seqs[0].text);
    EXPECT_EQ(d->completion_tokens(), static_cast<int>(r.seqs[0].ids.size()));
  }
}

TEST_F(RequestDecoderTest, ProcessorsMatchReference) {
  GenerationPrompt p = CausalPrompt({4, 5, 4, 5, 4});
  DecodeOptions o;
  o.max_new_tokens = 40;
  o.ignore_eos = true;
  o.repetition_penalty = 1.3f;
  o.no_repeat_ngram_size = 2;
  auto pool = MakePool();
  RunResult r = Drive(*Make(p, o), model_, *pool);
  ExpectSame(r.seqs[0], Reference(model_, &tok_, p, o, 0), "processors");
  // No generated token completes a bigram seen before it.
  std::vector<int32_t> all = p.ids;
  all.insert(all.end(), r.seqs[0].ids.begin(), r.seqs[0].ids.end());
  std::set<std::pair<int, int>> seen;
  for (size_t i = 0; i + 1 < all.size(); ++i) {
    const bool fresh = seen.insert({all[i], all[i + 1]}).second;
    if (i + 1 >= p.ids.size()) {
      EXPECT_TRUE(fresh) << "bigram repeated at " << i;
    }
  }
}

TEST_F(RequestDecoderTest, ChunkedPrefillAndPreemptionGiveTheSameOutput) {
  std::vector<int32_t> prompt;
  for (int i = 0; i < 37; ++i) prompt.push_back(3 + (i * 7) % 30);
  for (DecodeStrategy strategy :
       {DecodeStrategy::kGreedy, DecodeStrategy::kSample, DecodeStrategy::kBeam}) {
    DecodeOptions o;
    o.strategy = strategy;
    o.max_new_tokens = 20;
    o.ignore_eos = true;
    o.seed = 42;
    if (strategy == DecodeStrategy::kSample) o.num_return_sequences = 3;
    if (strategy == DecodeStrategy::kBeam) {
      o.beam_width = 3;
      o.num_return_sequences = 2;
    }
    auto pool = MakePool();
    RunResult base = Drive(*Make(CausalPrompt(prompt), o), model_, *pool);
    for (int chunk : {1, 5, 16}) {
      RunOptions ro;
      ro.chunk = chunk;
      ro.release_before_steps = {3, 9, 40, 45};
      RunResult r = Drive(*Make(CausalPrompt(prompt), o), model_, *pool, ro);
      ASSERT_EQ(r.seqs.size(), base.seqs.size());
      for (size_t i = 0; i < r.seqs.size(); ++i) {
        ExpectSame(
            r.seqs[i], base.seqs[i],
            absl::StrCat("strategy ", static_cast<int>(strategy), " chunk ", chunk, " seq ", i));
      }
    }
  }
}

TEST_F(RequestDecoderTest, SamplingIsSeededPerSequence) {
  GenerationPrompt p = CausalPrompt({5, 6, 7});
  DecodeOptions o;
  o.strategy = DecodeStrategy::kSample;
  o.max_new_tokens = 16;
  o.ignore_eos = true;
  o.temperature = 0.8f;
  o.top_k = 20;
  o.top_p = 0.9f;
  o.num_return_sequences = 4;
  o.seed = 1234;
  auto pool = MakePool();
  RunResult a = Drive(*Make(p, o), model_, *pool);
  ASSERT_EQ(a.seqs.size(), 4u);
  for (int i = 0; i < 4; ++i) {
    ExpectSame(a.seqs[i], Reference(model_, &tok_, p, o, i), absl::StrCat("sample ", i));
    EXPECT_EQ(a.streamed[i], a.seqs[i].text);
  }
  // The samples differ from each other, the same seed repeats, another seed differs.
  std::set<std::vector<int32_t>> distinct;
  for (const auto& s : a.seqs) distinct.insert(s.ids);
  EXPECT_GT(distinct.size(), 1u);
  RunResult b = Drive(*Make(p, o), model_, *pool);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(a.seqs[i].ids, b.seqs[i].ids);
  o.seed = 999;
  RunResult c = Drive(*Make(p, o), model_, *pool);
  bool any_diff = false;
  for (int i = 0; i < 4; ++i) any_diff |= a.seqs[i].ids != c.seqs[i].ids;
  EXPECT_TRUE(any_diff);
}

TEST_F(RequestDecoderTest, SamplesShareThePromptBlocks) {
  std::vector<int32_t> prompt(40, 5);  // 10 blocks of 4
  DecodeOptions o;
  o.strategy = DecodeStrategy::kSample;
  o.max_new_tokens = 2;
  o.ignore_eos = true;
  o.num_return_sequences = 8;
  auto pool = MakePool();
  RunResult r = Drive(*Make(CausalPrompt(prompt), o), model_, *pool);
  ASSERT_EQ(r.seqs.size(), 8u);
  // Unshared it would be 8 x 11 blocks; shared: 10 prompt blocks + 8 tails.
  EXPECT_LE(r.max_kv_blocks_used, 10 + 8);
}

// Beam search with no KV cache: logits recomputed from each beam's history.
std::vector<BeamHypothesis> ReferenceBeam(const FakeGenerativeModel& m, const GenerationPrompt& p,
                                          const DecodeOptions& o) {
  BeamSearchOptions bo;
  bo.num_beams = o.beam_width;
  bo.num_return_sequences = o.num_return_sequences;
  bo.length_penalty = o.length_penalty;
  bo.early_stopping = o.early_stopping ? EarlyStopping::kTrue : EarlyStopping::kHeuristic;
  bo.eos_token_ids = o.ignore_eos ? std::vector<int32_t>{} : m.eos_token_ids();
  bo.max_new_tokens = o.max_new_tokens;
  auto bs = *BeamSearch::Create(bo, p.ids);
  LogitsProcessorOptions lp;
  lp.repetition_penalty = o.repetition_penalty;
  lp.no_repeat_ngram_size = o.no_repeat_ngram_size;
  lp.min_new_tokens = o.min_new_tokens;
  lp.stop_token_ids = bo.eos_token_ids;
  while (!bs->done()) {
    std::vector<float> rows;
    for (int b = 0; b < bs->num_beams(); ++b) {
      std::vector<int32_t> h = bs->History(b);
      std::vector<float> row = m.ReferenceLogits(h);
      LogSoftmaxInPlace(absl::MakeSpan(row));
      ApplyLogitsProcessors(lp, h, bs->num_generated(), absl::MakeSpan(row));
      rows.insert(rows.end(), row.begin(), row.end());
    }
    EXPECT_TRUE(bs->Step(rows, m.vocab_size()).ok());
  }
  return *bs->Finalize();
}

TEST_F(RequestDecoderTest, BeamMatchesNoCacheBeamSearch) {
  FakeModelOptions mo;
  mo.eos_bias = 1.5f;  // some hypotheses finish on EOS
  FakeGenerativeModel model(mo);
  for (int k = 0; k < 6; ++k) {
    GenerationPrompt p = CausalPrompt({4, static_cast<int32_t>(5 + k), 6});
    DecodeOptions o;
    o.strategy = DecodeStrategy::kBeam;
    o.beam_width = 4;
    o.num_return_sequences = 2 + k % 3;
    o.max_new_tokens = 12;
    o.length_penalty = k % 2 ? 1.0f : 0.5f;
    o.early_stopping = k % 3 == 0;
    o.no_repeat_ngram_size = k % 2 ? 0 : 2;
    o.logprobs = true;
    auto pool = MakePool();
    RunResult r = Drive(*Make(p, o, &model), model, *pool);
    std::vector<BeamHypothesis> want = ReferenceBeam(model, p, o);
    ASSERT_EQ(r.seqs.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      std::vector<int32_t> ids = want[i].tokens;
      if (want[i].finished_with_eos) ids.back() = want[i].eos_token_id;
      EXPECT_EQ(r.seqs[i].ids, ids) << "case " << k << " hyp " << i;
      EXPECT_NEAR(r.seqs[i].score, want[i].score, 1e-5);
      EXPECT_EQ(r.seqs[i].logprobs, want[i].transition_scores);
      EXPECT_EQ(r.seqs[i].finish,
                want[i].finished_with_eos ? FinishReason::kStopToken : FinishReason::kLength);
      EXPECT_EQ(r.streamed[static_cast<int>(i)], r.seqs[i].text);
      std::vector<int32_t> text_ids = ids;
      if (want[i].finished_with_eos) text_ids.pop_back();
      EXPECT_EQ(r.seqs[i].text, *tok_.Decode(text_ids, true));
    }
  }
}

TEST_F(RequestDecoderTest, StopTokensEosAndMinNewTokens) {
  FakeModelOptions mo;
  mo.eos_bias = 3.0f;
  FakeGenerativeModel model(mo);
  GenerationPrompt p = CausalPrompt({5, 6, 7});
  DecodeOptions o;
  o.max_new_tokens = 30;
  auto pool = MakePool();
  RunResult r = Drive(*Make(p, o, &model), model, *pool);
  GeneratedSequence want = Reference(model, &tok_, p, o, 0);
  ExpectSame(r.seqs[0], want, "eos");
  ASSERT_EQ(r.seqs[0].finish, FinishReason::kStopToken);
  EXPECT_EQ(r.seqs[0].ids.back(), 1);  // the EOS is in the ids, not in the text
  EXPECT_EQ(r.streamed[0], r.seqs[0].text);

  o.min_new_tokens = static_cast<int>(r.seqs[0].ids.size()) + 4;
  RunResult longer = Drive(*Make(p, o, &model), model, *pool);
  ExpectSame(longer.seqs[0], Reference(model, &tok_, p, o, 0), "min_new_tokens");
  EXPECT_GE(static_cast<int>(longer.seqs[0].ids.size()), o.min_new_tokens);

  o.min_new_tokens = 0;
  o.ignore_eos = true;
  RunResult ignored = Drive(*Make(p, o, &model), model, *pool);
  EXPECT_EQ(ignored.seqs[0].finish, FinishReason::kLength);
  EXPECT_EQ(ignored.seqs[0].ids.size(), 30u);

  // An extra stop token id (the first id greedy picks) still applies with ignore_eos.
  o.stop_token_ids = {ignored.seqs[0].ids[2]};
  RunResult extra = Drive(*Make(p, o, &model), model, *pool);
  EXPECT_EQ(extra.seqs[0].finish, FinishReason::kStopToken);
  ExpectSame(extra.seqs[0], Reference(model, &tok_, p, o, 0), "stop_token_ids");
}

TEST_F(RequestDecoderTest, StopStringsAcrossTokenBoundaries) {
  GenerationPrompt p = CausalPrompt({5, 6, 7});
  DecodeOptions o;
  o.max_new_tokens = 40;
  o.ignore_eos = true;
  auto pool = MakePool();
  RunResult free_run = Drive(*Make(p, o), model_, *pool);
  const std::string full = free_run.seqs[0].text;
  ASSERT_GE(full.size(), 12u) << full;
  // A stop string that starts mid-text and spans several tokens.
  const std::string stop = full.substr(full.size() / 2, 4);
  o.stop = {"never-there", stop};
  RunResult r = Drive(*Make(p, o), model_, *pool);
  GeneratedSequence want = Reference(model_, &tok_, p, o, 0);
  EXPECT_EQ(r.seqs[0].finish, FinishReason::kStopString);
  EXPECT_EQ(r.seqs[0].text, want.text);
  EXPECT_EQ(r.seqs[0].text, full.substr(0, full.find(stop)));
  EXPECT_EQ(r.seqs[0].ids, want.ids);
  // The stream never showed any part of the stop string.
  EXPECT_EQ(r.streamed[0], r.seqs[0].text);
}

TEST_F(RequestDecoderTest, StreamingNeverSplitsUtf8) {
  // Find a greedy run that produces multi-byte characters from byte tokens.
  FakeModelOptions mo;
  mo.scale = 0.5f;
  for (int k = 0; k < 40; ++k) {
    GenerationPrompt p = CausalPrompt({30, 31, static_cast<int32_t>(3 + k)});
    DecodeOptions o;
    o.strategy = DecodeStrategy::kSample;
    o.seed = k;
    o.max_new_tokens = 40;
    o.ignore_eos = true;
    auto pool = MakePool();
    RunResult r = Drive(*Make(p, o), model_, *pool);  // Run checks every delta is valid UTF-8
    EXPECT_EQ(r.streamed[0], r.seqs[0].text);
    EXPECT_EQ(r.seqs[0].text, *tok_.Decode(r.seqs[0].ids, true));
  }
}

TEST_F(RequestDecoderTest, UnilmPromptTypesAndMask) {
  FakeModelOptions mo;
  mo.kind = GenerationKind::kUnilm;
  FakeGenerativeModel model(mo);
  FakeBertTokenizer tok;
  GenerationInput in;
  in.source = "abc";
  in.target_prefix = "x";
  auto p = BuildGenerationPrompt(model, &tok, in);
  ASSERT_TRUE(p.ok()) << p.status();
  // [CLS]=2 a b c [SEP]=1, then "x" with type 1.
  EXPECT_EQ(p->ids, (std::vector<int32_t>{2, 36, 6, 1, 27}));
  EXPECT_EQ(p->type_ids, (std::vector<int32_t>{0, 0, 0, 0, 1}));
  EXPECT_EQ(p->mask.kind, MaskKind::kUnilm);
  EXPECT_EQ(p->mask.prefix_length, 4);
  EXPECT_EQ(p->generated_type_id, 1);
  EXPECT_EQ(p->text_context_ids, (std::vector<int32_t>{27}));  // the target prefix only
  DecodeOptions o;
  o.max_new_tokens = 16;
  o.ignore_eos = true;
  auto pool = MakePool();
  auto d = RequestDecoder::Create(&model, &tok, *p, o);
  ASSERT_TRUE(d.ok());
  RunOptions ro;
  ro.chunk = 2;
  RunResult r = Drive(**d, model, *pool, ro);
  // The reference feeds types (1 for generated tokens) into the hash.
  ExpectSame(r.seqs[0], Reference(model, &tok, *p, o, 0), "unilm");
}

TEST_F(RequestDecoderTest, EncoderDecoderRunsTheEncoderOnce) {
  FakeModelOptions mo;
  mo.kind = GenerationKind::kEncoderDecoder;
  FakeGenerativeModel model(mo);
  GenerationInput in;
  in.source = "hello";
  auto p = BuildGenerationPrompt(model, &tok_, in);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->ids, (std::vector<int32_t>{0}));
  EXPECT_EQ(p->source_ids.size(), 5u);
  EXPECT_EQ(p->prompt_tokens, 6);
  DecodeOptions o;
  o.max_new_tokens = 10;
  o.ignore_eos = true;
  o.strategy = DecodeStrategy::kBeam;
  o.beam_width = 2;
  auto pool = MakePool();
  auto d = RequestDecoder::Create(&model, &tok_, *p, o);
  ASSERT_TRUE(d.ok());
  RunOptions ro;
  ro.release_before_steps = {4};
  RunResult r = Drive(**d, model, *pool, ro);
  EXPECT_EQ(r.seqs.size(), 1u);
  EXPECT_EQ(r.seqs[0].ids.size(), 10u);
  EXPECT_EQ(model.encode_calls(), 1);

  o.strategy = DecodeStrategy::kGreedy;
  o.beam_width = 1;
  auto g = RequestDecoder::Create(&model, &tok_, *p, o);
  RunResult gr = Drive(**g, model, *pool);
  ExpectSame(gr.seqs[0], Reference(model, &tok_, *p, o, 0), "enc-dec greedy");
}

TEST_F(RequestDecoderTest, PromptBuildingPerKind) {
  FakeTokenizer bos_tok(/*add_bos=*/true);
  GenerationInput in;
  in.prompt = "ab c";
  auto p = BuildGenerationPrompt(model_, &bos_tok, in);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->ids, (std::vector<int32_t>{2, 36, 3, 6}));  // BOS added by the tokenizer
  EXPECT_EQ(p->text_context_ids, p->ids);                 // the text continues the prompt
  EXPECT_TRUE(p->type_ids.empty());
  EXPECT_EQ(p->mask.kind, MaskKind::kCausal);
  p = BuildGenerationPrompt(model_, &tok_, in);
  EXPECT_EQ(p->ids, (std::vector<int32_t>{36, 3, 6}));  // GPT-2 style: nothing added

  in = {};
  in.prompt_ids = {7, 8, 9};
  in.target_prefix = "z";
  p = BuildGenerationPrompt(model_, &tok_, in);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->ids, (std::vector<int32_t>{7, 8, 9, 29}));

  struct Case {
    GenerationInput in;
    const GenerativeModel* model;
    std::string needle;
  };
  FakeModelOptions mo;
  mo.kind = GenerationKind::kUnilm;
  FakeGenerativeModel unilm(mo);
  std::vector<Case> cases;
  cases.push_back({GenerationInput{}, &model_, "prompt"});
  cases.push_back({In("a", {4}), &model_, "prompt_ids"});
  cases.push_back({In("", {4, 400}), &model_, "prompt_ids[1] = 400"});
  cases.push_back({In("a", {}, "b"), &model_, "source"});
  cases.push_back({In("a", {}, "b"), &unilm, "either source or prompt"});
  cases.push_back({In("", {4}, "b"), &unilm, "prompt_ids"});
  cases.push_back({GenerationInput{}, &unilm, "source"});
  MaskSpec bidi;
  cases.push_back({In("a", {}, "", bidi), &model_, "mask"});
  MaskSpec u;
  u.kind = MaskKind::kUnilm;
  cases.push_back({In("a", {}, "", u), &model_, "mask"});
  u.segment_ids = {0, 1};
  cases.push_back({In("", {}, "a", u), &unilm, "mask.segment_ids"});
  for (const Case& c : cases) {
    auto r = BuildGenerationPrompt(*c.model, &tok_, c.in);
    EXPECT_FALSE(r.ok()) << c.needle;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(c.needle));
  }
  // A prompt is a seq2seq model's source.
  FakeBertTokenizer bert;
  auto as_source = BuildGenerationPrompt(unilm, &bert, In("ab"));
  ASSERT_TRUE(as_source.ok()) << as_source.status();
  EXPECT_EQ(as_source->ids, (std::vector<int32_t>{2, 36, 1}));
  EXPECT_EQ(as_source->mask.prefix_length, 3);
  auto no_tok = BuildGenerationPrompt(model_, nullptr, In("a"));
  EXPECT_EQ(no_tok.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(RequestDecoderTest, OptionsNameTheField) {
  FakeModelOptions mo;
  mo.max_sequence_length = 50;
  FakeGenerativeModel model(mo);
  struct Case {
    std::function<void(DecodeOptions&)> set;
    std::string needle;
  };
  std::vector<Case> cases = {
      {[](DecodeOptions& o) { o.max_new_tokens = 0; }, "max_new_tokens"},
      {[](DecodeOptions& o) { o.max_new_tokens = 48; }, "maximum length 50"},
      {[](DecodeOptions& o) { o.min_new_tokens = 20; }, "min_new_tokens"},
      {[](DecodeOptions& o) { o.temperature = 0; }, "temperature"},
      {[](DecodeOptions& o) { o.temperature = std::nanf(""); }, "temperature"},
      {[](DecodeOptions& o) { o.top_p = 1.5f; }, "top_p"},
      {[](DecodeOptions& o) { o.top_p = 0; }, "top_p"},
      {[](DecodeOptions& o) { o.top_k = -1; }, "top_k"},
      {[](DecodeOptions& o) { o.repetition_penalty = 0; }, "repetition_penalty"},
      {[](DecodeOptions& o) { o.repetition_penalty = std::nanf(""); }, "repetition_penalty"},
      {[](DecodeOptions& o) { o.length_penalty = std::nanf(""); }, "length_penalty"},
      {[](DecodeOptions& o) { o.no_repeat_ngram_size = -2; }, "no_repeat_ngram_size"},
      {[](DecodeOptions& o) {
         o.strategy = DecodeStrategy::kBeam;
         o.beam_width = 2;
         o.num_return_sequences = 3;
       },
       "num_return_sequences"},
      {[](DecodeOptions& o) {
         o.strategy = DecodeStrategy::kBeam;
         o.beam_width = 16;
         o.num_return_sequences = 8;
       },
       "beam_width (16) x num_return_sequences (8)"},
      {[](DecodeOptions& o) {
         o.strategy = DecodeStrategy::kBeam;
         o.beam_width = 0;
       },
       "beam_width"},
      {[](DecodeOptions& o) { o.num_return_sequences = 2; }, "num_return_sequences"},
      {[](DecodeOptions& o) { o.beam_width = 3; }, "beam_width"},
      {[](DecodeOptions& o) {
         o.stop_token_ids = {3, 99};
       },
       "stop_token_ids[1] = 99"},
      {[](DecodeOptions& o) { o.stop = std::vector<std::string>(17, "x"); }, "stop"},
  };
  for (const Case& c : cases) {
    DecodeOptions o;
    o.max_new_tokens = 8;
    c.set(o);
    auto d = RequestDecoder::Create(&model, &tok_, CausalPrompt({4, 5, 6}), o);
    ASSERT_FALSE(d.ok()) << c.needle;
    EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(d.status().message()), HasSubstr(c.needle));
  }
}

TEST_F(RequestDecoderTest, ResourceExhaustedReservesNothing) {
  auto pool = MakePool(/*blocks=*/3, /*block_size=*/4);
  DecodeOptions o;
  o.max_new_tokens = 4;
  std::vector<int32_t> prompt(20, 5);  // needs 5 blocks
  auto d = Make(CausalPrompt(prompt), o);
  EXPECT_EQ(d->MaxBlocks(4), 7);
  std::vector<RequestDecoder::PendingInput> pending;
  d->PendingInputs(&pending);
  ASSERT_EQ(pending.size(), 1u);
  EXPECT_EQ(pending[0].tokens, 20);
  auto s = d->PrepareChunk(pool.get(), 0, 20);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(pool->Stats().sequences, 0);
  EXPECT_EQ(d->kv_sequences(), 0);
  // A chunk that fits works.
  EXPECT_TRUE(d->PrepareChunk(pool.get(), 0, 8).ok());
  EXPECT_EQ(pool->Stats().blocks_used, 2);
  d->ReleaseKv(pool.get());
  EXPECT_EQ(pool->Stats().blocks_used, 0);
}

TEST(FastTokenLogProbTest, MatchesTokenLogProb) {
  std::mt19937 rng(5);
  for (int vocab : {1, 7, 8, 50257}) {
    for (float scale : {0.1f, 5.0f, 60.0f}) {
      std::normal_distribution<float> dist(0.0f, scale);
      std::vector<float> row(vocab);
      for (float& x : row) x = dist(rng);
      if (vocab > 10) {
        row[3] = -std::numeric_limits<float>::infinity();  // banned ids stay harmless
        row[4] = -1e30f;
      }
      for (int t : {0, vocab / 2, vocab - 1}) {
        EXPECT_NEAR(FastTokenLogProb(row, t), TokenLogProb(row, t), 1e-5f * (1 + scale))
            << vocab << " " << scale << " " << t;
      }
      if (vocab > 10) {
        EXPECT_EQ(FastTokenLogProb(row, 3), TokenLogProb(row, 3));
      }
    }
  }
  std::vector<float> all_banned(16, -std::numeric_limits<float>::infinity());
  EXPECT_EQ(std::isnan(FastTokenLogProb(all_banned, 2)), std::isnan(TokenLogProb(all_banned, 2)));
}

TEST(FastArgmaxTest, MatchesArgmax) {
  std::mt19937 rng(9);
  std::uniform_int_distribution<int> small(-3, 3);
  for (int vocab : {0, 1, 5, 8, 9, 1000, 50257}) {
    for (int round = 0; round < 20; ++round) {
      std::vector<float> row(vocab);
      for (float& x : row) x = static_cast<float>(small(rng));  // many ties
      if (vocab > 3 && round % 3 == 0) row[1] = std::nanf("");
      if (vocab > 3 && round % 5 == 0) {
        std::fill(row.begin(), row.end(), -std::numeric_limits<float>::infinity());
      }
      if (vocab > 3 && round % 7 == 0) std::fill(row.begin(), row.end(), std::nanf(""));
      EXPECT_EQ(FastArgmax(row), Argmax(row)) << vocab << " " << round;
    }
  }
}

}  // namespace
}  // namespace maskserve::engine
