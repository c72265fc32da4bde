// UnilmModel (UniLM seq2seq on a BERT-family MLM) on tiny generated
// checkpoints — BERT (cls.predictions.*), RoFormer (rotary) and RoBERTa
// (lm_head.*, one token type, positions after padding_idx) — against the
// Encoder run over the whole sequence each step (Encode + MlmLogits at the
// last row: the uncached path that the encoder goldens check against HF).
//
// Covers: cached decode == recompute under UNILM (prefix length and explicit
// segment ids), CAUSAL and causal LOCAL / DILATED / STRIDED; chunked target
// and chunked causal prefill; a packed step of mixed sequences == one by
// one; the rule that the segment-0 source must be fed in one step; mask and
// type-id errors; and LoadedModel wiring on the demo model (EMBED +
// GENERATE, the generator sharing the Encoder's packed weights).
#include "engine/unilm_model.h"

#include <cmath>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/demo_model.h"
#include "engine/encoder.h"
#include "engine/encoder_arch.h"
#include "engine/loaded_model.h"
#include "engine/safetensors.h"
#include "engine/safetensors_writer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/engine/generation_test_util.h"
#include "tests/util/test_env.h"

namespace maskserve::engine {
namespace {

using ::testing::HasSubstr;
using testing::MakePool;
using testing::MaxAbsDiff;
using testing::StepOne;
using Positions = EncoderArch::Positions;

constexpr double kTol = 1e-4;

struct Tensor {
  std::vector<int64_t> shape;
  std::vector<float> data;
};

enum class Family { kBert, kRoformer, kRoberta };

const char* FamilyName(Family f) {
  return f == Family::kBert ? "bert" : f == Family::kRoformer ? "roformer" : "roberta";
}

EncoderArch Arch(Family f) {
  EncoderArch a;
  a.hidden_size = 32;
  a.embedding_size = 32;
  a.num_layers = 2;
  a.num_heads = 4;
  a.num_kv_heads = 4;
  a.head_dim = 8;
  a.intermediate_size = 48;
  a.vocab_size = 57;
  a.type_vocab_size = 2;
  a.max_position_embeddings = 80;
  switch (f) {
    case Family::kBert:
      a.model_type = "bert";
      a.prefixes = {"bert."};
      break;
    case Family::kRoformer:
      a.model_type = "roformer";
      a.prefixes = {"roformer."};
      a.positions = Positions::kRotary;
      a.embedding_size = 24;  // embeddings_project
      break;
    case Family::kRoberta:
      a.model_type = "roberta";
      a.prefixes = {"roberta."};
      a.type_vocab_size = 1;
      a.roberta_positions = true;
      a.padding_idx = 1;
      a.position_offset = 2;
      a.layer_norm_eps = 1e-5f;
      break;
  }
  return a;
}

std::string WriteCheckpoint(const EncoderArch& a, Family f, uint32_t seed) {
  std::mt19937 rng(seed);
  std::map<std::string, Tensor> ck;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, double mean, double sd) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::normal_distribution<double> dist(mean, sd);
    Tensor t{shape, std::vector<float>(n)};
    for (float& v : t.data) v = static_cast<float>(dist(rng));
    ck[name] = std::move(t);
  };
  auto linear = [&](const std::string& name, int in, int out) {
    add(name + ".weight", {out, in}, 0, 1.0 / std::sqrt(in));
    add(name + ".bias", {out}, 0, 0.05);
  };
  auto norm = [&](const std::string& name, int n) {
    add(name + ".weight", {n}, 1, 0.1);
    add(name + ".bias", {n}, 0, 0.1);
  };
  const int H = a.hidden_size, E = a.embedding_size;
  const std::string p = a.prefixes[0];
  const std::string emb = p + "embeddings.";
  add(emb + "word_embeddings.weight", {a.vocab_size, E}, 0, 1);
  add(emb + "token_type_embeddings.weight", {a.type_vocab_size, E}, 0, 1);
  if (a.positions == Positions::kLearned) {
    add(emb + "position_embeddings.weight", {a.max_position_embeddings, E}, 0, 1);
  }
  norm(emb + "LayerNorm", E);
  if (E != H) linear(p + "embeddings_project", E, H);
  for (int l = 0; l < a.num_layers; ++l) {
    const std::string lp = absl::StrCat(p, "encoder.layer.", l, ".");
    linear(lp + "attention.self.query", H, H);
    linear(lp + "attention.self.key", H, H);
    linear(lp + "attention.self.value", H, H);
    linear(lp + "attention.output.dense", H, H);
    norm(lp + "attention.output.LayerNorm", H);
    linear(lp + "intermediate.dense", H, a.intermediate_size);
    linear(lp + "output.dense", a.intermediate_size, H);
    norm(lp + "output.LayerNorm", H);
  }
  if (f == Family::kRoberta) {
    linear("lm_head.dense", H, E);
    norm("lm_head.layer_norm", E);
    add("lm_head.bias", {a.vocab_size}, 0, 0.05);
    add("lm_head.decoder.weight", {a.vocab_size, E}, 0, 0.5);  // untied decoder
  } else {
    linear("cls.predictions.transform.dense", H, E);
    norm("cls.predictions.transform.LayerNorm", E);
    add("cls.predictions.bias", {a.vocab_size}, 0, 0.05);
  }
  SafetensorsWriter w;
  for (const auto& [name, t] : ck) {
    EXPECT_TRUE(w.Add(name, SafetensorsDtype::kF32, t.shape, t.data.data()).ok()) << name;
  }
  const std::string dir = maskserve::testing::MakeTempDir("unilm_test");
  EXPECT_TRUE(w.Write(dir + "/model.safetensors").ok());
  return dir;
}

struct Built {
  Family family;
  EncoderArch arch;
  std::unique_ptr<Encoder> encoder;
  std::unique_ptr<UnilmModel> model;
};

Built Build(Family f, uint32_t seed) {
  Built b;
  b.family = f;
  b.arch = Arch(f);
  const std::string dir = WriteCheckpoint(b.arch, f, seed);
  absl::StatusOr<std::unique_ptr<SafetensorsModel>> w = SafetensorsModel::Open(dir);
  EXPECT_TRUE(w.ok()) << w.status();
  absl::StatusOr<std::unique_ptr<Encoder>> e = Encoder::Create(b.arch, **w, EncoderOptions{});
  EXPECT_TRUE(e.ok()) << e.status();
  if (!e.ok()) return b;
  b.encoder = std::move(*e);
  UnilmModelOptions o;
  o.eos_token_ids = {3};
  absl::StatusOr<std::unique_ptr<UnilmModel>> m = UnilmModel::Create(b.encoder.get(), o);
  EXPECT_TRUE(m.ok()) << m.status();
  if (m.ok()) b.model = std::move(*m);
  return b;
}

// MLM logits at the last position of `ids` by the uncached encoder.
std::vector<float> EncodeLast(const Built& b, const std::vector<int32_t>& ids,
                              const std::vector<int32_t>& types, const MaskSpec& mask) {
  const std::vector<int32_t> cu = {0, static_cast<int32_t>(ids.size())};
  std::vector<int32_t> ty = types;
  if (b.arch.type_vocab_size == 1) ty.assign(ids.size(), 0);
  EncoderBatch batch;
  batch.token_ids = ids;
  batch.type_ids = ty;
  batch.cu_seqlens = cu;
  batch.masks = {&mask, 1};
  absl::StatusOr<EncoderOutput> out = b.encoder->Encode(batch);
  EXPECT_TRUE(out.ok()) << out.status();
  if (!out.ok()) return {};
  absl::StatusOr<std::vector<float>> lg = b.encoder->MlmLogits(
      out->last_hidden_state.data() + (ids.size() - 1) * b.arch.hidden_size, 1);
  EXPECT_TRUE(lg.ok()) << lg.status();
  return lg.ok() ? *lg : std::vector<float>{};
}

std::vector<int32_t> RandomIds(int n, int vocab, std::mt19937& rng) {
  // Never the RoBERTa padding id 1 (HF would not advance its position).
  std::uniform_int_distribution<int32_t> d(2, vocab - 1);
  std::vector<int32_t> v(n);
  for (int32_t& x : v) x = d(rng);
  return v;
}

MaskSpec Unilm(int prefix) {
  MaskSpec m;
  m.kind = MaskKind::kUnilm;
  m.prefix_length = prefix;
  return m;
}

std::vector<MaskSpec> AcceptedMasks(int prefix, int total_len) {
  std::vector<MaskSpec> v;
  v.push_back(Unilm(prefix));
  MaskSpec seg;  // the same as explicit segment ids of the whole planned sequence
  seg.kind = MaskKind::kUnilm;
  seg.segment_ids.assign(total_len, 0);
  for (int t = prefix; t < total_len; ++t) seg.segment_ids[t] = 1;
  v.push_back(seg);
  MaskSpec causal;
  causal.kind = MaskKind::kCausal;
  v.push_back(causal);
  MaskSpec local;
  local.kind = MaskKind::kLocal;
  local.window = 3;
  local.causal = true;
  v.push_back(local);
  MaskSpec dil;
  dil.kind = MaskKind::kDilated;
  dil.rate = 2;
  dil.causal = true;
  v.push_back(dil);
  MaskSpec str;
  str.kind = MaskKind::kStrided;
  str.window = 1;
  str.rate = 3;
  str.causal = true;
  v.push_back(str);
  return v;
}

// The spec an uncached full-sequence Encode of `len` tokens uses.
MaskSpec ForLength(const MaskSpec& m, int len) {
  MaskSpec r = m;
  if (!r.segment_ids.empty()) r.segment_ids.resize(len);
  return r;
}

TEST(UnilmModelTest, CachedDecodeEqualsRecomputeForEveryFamilyAndMask) {
  uint32_t seed = 10;
  for (Family f : {Family::kBert, Family::kRoformer, Family::kRoberta}) {
    Built b = Build(f, ++seed);
    ASSERT_NE(b.model, nullptr);
    std::mt19937 rng(seed);
    const int source = 6, targets = 9;
    const std::vector<int32_t> ids = RandomIds(source + targets, b.arch.vocab_size, rng);
    std::vector<int32_t> types(ids.size(), 0);
    for (int t = source; t < source + targets; ++t) types[t] = 1;
    for (const MaskSpec& mask : AcceptedMasks(source, source + targets)) {
      std::unique_ptr<KvCachePool> pool = MakePool(*b.model, 64, 4);
      const SeqId seq = pool->AllocateSequence();
      const absl::Span<const int32_t> all(ids), ty(types);
      absl::StatusOr<std::vector<float>> lg =
          StepOne(*b.model, pool.get(), seq, 0, all.first(source), mask, ty.first(source));
      ASSERT_TRUE(lg.ok()) << lg.status();
      double worst =
          MaxAbsDiff(*lg, EncodeLast(b, std::vector<int32_t>(ids.begin(), ids.begin() + source),
                                     std::vector<int32_t>(types.begin(), types.begin() + source),
                                     ForLength(mask, source)));
      for (int t = source; t < source + targets; ++t) {
        lg = StepOne(*b.model, pool.get(), seq, t, all.subspan(t, 1), mask, ty.subspan(t, 1));
        ASSERT_TRUE(lg.ok()) << lg.status();
        const std::vector<float> ref = EncodeLast(
            b, std::vector<int32_t>(ids.begin(), ids.begin() + t + 1),
            std::vector<int32_t>(types.begin(), types.begin() + t + 1), ForLength(mask, t + 1));
        worst = std::max(worst, MaxAbsDiff(*lg, ref));
      }
      EXPECT_LE(worst, kTol) << FamilyName(f) << " " << mask.ToString();
      std::printf("[unilm] %-9s %-22s cached vs recompute max|d| = %.3g\n", FamilyName(f),
                  mask.ToString().c_str(), worst);
    }
  }
}

TEST(UnilmModelTest, ChunkedTargetsAndMixedPackedStep) {
  uint32_t seed = 20;
  for (Family f : {Family::kBert, Family::kRoformer, Family::kRoberta}) {
    Built b = Build(f, ++seed);
    ASSERT_NE(b.model, nullptr);
    std::mt19937 rng(seed);
    const int V = b.arch.vocab_size;
    // Sequence A: source 5 then 4 target tokens in one chunk, vs one by one.
    const std::vector<int32_t> a = RandomIds(9, V, rng);
    const std::vector<int32_t> a_types = {0, 0, 0, 0, 0, 1, 1, 1, 1};
    const MaskSpec um = Unilm(5);
    std::unique_ptr<KvCachePool> pool = MakePool(*b.model, 256, 4);
    const SeqId one = pool->AllocateSequence(), chunk = pool->AllocateSequence();
    const absl::Span<const int32_t> as(a), ts(a_types);
    absl::StatusOr<std::vector<float>> x, y;
    ASSERT_TRUE(StepOne(*b.model, pool.get(), one, 0, as.first(5), um, ts.first(5)).ok());
    for (int t = 5; t < 9; ++t) {
      x = StepOne(*b.model, pool.get(), one, t, as.subspan(t, 1), um, ts.subspan(t, 1));
      ASSERT_TRUE(x.ok()) << x.status();
    }
    ASSERT_TRUE(StepOne(*b.model, pool.get(), chunk, 0, as.first(5), um, ts.first(5)).ok());
    y = StepOne(*b.model, pool.get(), chunk, 5, as.subspan(5, 4), um, ts.subspan(5, 4));
    ASSERT_TRUE(y.ok()) << y.status();
    EXPECT_LE(MaxAbsDiff(*x, *y), 1e-5) << FamilyName(f);

    // A packed step: a fresh UNILM source, a UNILM decode token, a causal
    // prefill continuation without logits, a causal decode.
    struct Plan {
      std::vector<int32_t> history, history_types, step, step_types;
      MaskSpec mask;
      bool want;
    };
    MaskSpec causal;
    causal.kind = MaskKind::kCausal;
    std::vector<Plan> plans = {
        {{}, {}, RandomIds(7, V, rng), std::vector<int32_t>(7, 0), Unilm(7), true},
        {RandomIds(6, V, rng), {0, 0, 0, 0, 1, 1}, RandomIds(1, V, rng), {1}, Unilm(4), true},
        {RandomIds(4, V, rng), {}, RandomIds(3, V, rng), {}, causal, false},
        {RandomIds(8, V, rng), {}, RandomIds(1, V, rng), {}, causal, true},
    };
    std::unique_ptr<KvCachePool> packed = MakePool(*b.model, 256, 4);
    std::unique_ptr<KvCachePool> alone = MakePool(*b.model, 256, 4);
    std::vector<SeqId> pids;
    std::vector<std::vector<float>> expect;
    for (const Plan& p : plans) {
      const SeqId s1 = packed->AllocateSequence(), s2 = alone->AllocateSequence();
      if (!p.history.empty()) {
        // UNILM histories hold the whole source plus decoded targets: feed
        // the source, then the rest token by token.
        const int src = p.mask.kind == MaskKind::kUnilm ? p.mask.prefix_length
                                                        : static_cast<int>(p.history.size());
        for (KvCachePool* pl : {packed.get(), alone.get()}) {
          const SeqId s = pl == packed.get() ? s1 : s2;
          const absl::Span<const int32_t> h(p.history), ht(p.history_types);
          ASSERT_TRUE(
              StepOne(*b.model, pl, s, 0, h.first(src), p.mask, ht.empty() ? ht : ht.first(src))
                  .ok());
          for (int t = src; t < static_cast<int>(h.size()); ++t) {
            ASSERT_TRUE(StepOne(*b.model, pl, s, t, h.subspan(t, 1), p.mask,
                                ht.empty() ? ht : ht.subspan(t, 1))
                            .ok());
          }
        }
      }
      absl::StatusOr<std::vector<float>> lg =
          StepOne(*b.model, alone.get(), s2, static_cast<int>(p.history.size()), p.step, p.mask,
                  p.step_types, p.want);
      ASSERT_TRUE(lg.ok()) << lg.status();
      expect.push_back(*lg);
      pids.push_back(s1);
    }
    std::vector<StepSequence> step(plans.size());
    for (size_t i = 0; i < plans.size(); ++i) {
      ASSERT_TRUE(packed->Append(pids[i], static_cast<int>(plans[i].step.size())).ok());
      step[i].kv_seq = pids[i];
      step[i].num_cached = static_cast<int>(plans[i].history.size());
      step[i].tokens = plans[i].step;
      step[i].type_ids = plans[i].step_types;
      step[i].mask = plans[i].mask;
      step[i].want_logits = plans[i].want;
    }
    std::vector<float> logits;
    ASSERT_TRUE(b.model->Forward(step, packed.get(), &logits).ok());
    size_t row = 0;
    for (size_t i = 0; i < plans.size(); ++i) {
      if (!plans[i].want) continue;
      const std::vector<float> got(logits.begin() + row * V, logits.begin() + (row + 1) * V);
      EXPECT_LE(MaxAbsDiff(got, expect[i]), 1e-5) << FamilyName(f) << " sequence " << i;
      ++row;
    }
    EXPECT_EQ(logits.size(), row * V);
  }
}

TEST(UnilmModelTest, SourceMustBeFedInOneStepAndMasksAreChecked) {
  Built b = Build(Family::kBert, 30);
  ASSERT_NE(b.model, nullptr);
  EXPECT_EQ(b.model->kind(), GenerationKind::kUnilm);
  EXPECT_EQ(b.model->NaturalMask(5).kind, MaskKind::kUnilm);
  EXPECT_EQ(b.model->NaturalMask(5).prefix_length, 5);
  EXPECT_EQ(b.model->eos_token_ids(), std::vector<int32_t>{3});
  EXPECT_EQ(b.model->max_sequence_length(), 80);
  EXPECT_EQ(b.model->kv_layout().num_layers, 2);

  MaskSpec bidi;
  EXPECT_THAT(b.model->ValidateMask(bidi).message(), HasSubstr("mask BIDIRECTIONAL"));
  MaskSpec local;
  local.kind = MaskKind::kLocal;
  local.window = 2;
  EXPECT_THAT(b.model->ValidateMask(local).message(), HasSubstr("mask LOCAL(2)"));

  std::unique_ptr<KvCachePool> pool = MakePool(*b.model);
  const std::vector<int32_t> ids = {2, 10, 11, 12, 3, 20};
  const absl::Span<const int32_t> s(ids);
  const SeqId seq = pool->AllocateSequence();
  // Source of 5 split 3 + 2: the first chunk ends inside segment 0.
  absl::StatusOr<std::vector<float>> r =
      StepOne(*b.model, pool.get(), seq, 0, s.first(3), Unilm(5), {}, false);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(),
              HasSubstr("sequence 0: mask UNILM(prefix=5): position 2 of this step attends "
                        "position 3 of a later step"));
  EXPECT_THAT(r.status().message(), HasSubstr("segment-0 prefix must be fed in one step"));
  // Explicit segment ids of the whole sequence: the same rule.
  MaskSpec seg;
  seg.kind = MaskKind::kUnilm;
  seg.segment_ids = {0, 0, 0, 0, 0, 1};
  const SeqId seq2 = pool->AllocateSequence();
  r = StepOne(*b.model, pool.get(), seq2, 0, s.first(4), seg, {}, false);
  EXPECT_THAT(r.status().message(), HasSubstr("segment-0 prefix"));
  // A cached prefix that a later step's mask extends is caught too.
  const SeqId seq6 = pool->AllocateSequence();
  ASSERT_TRUE(StepOne(*b.model, pool.get(), seq6, 0, s.first(3), Unilm(3), {}, false).ok());
  r = StepOne(*b.model, pool.get(), seq6, 3, s.subspan(3, 2), Unilm(5));
  EXPECT_THAT(
      r.status().message(),
      HasSubstr("sequence 0: mask UNILM(prefix=5): cached position 2 attends new position 3"));
  // BIDIRECTIONAL in a step names the sequence; type ids must be 0 or 1.
  const SeqId seq3 = pool->AllocateSequence();
  r = StepOne(*b.model, pool.get(), seq3, 0, s.first(2), bidi);
  EXPECT_THAT(r.status().message(), HasSubstr("sequence 0: mask BIDIRECTIONAL"));
  const std::vector<int32_t> bad_types = {0, 2};
  const SeqId seq4 = pool->AllocateSequence();
  r = StepOne(*b.model, pool.get(), seq4, 0, s.first(2), Unilm(2), bad_types);
  EXPECT_THAT(r.status().message(), HasSubstr("sequence 0: type id 2 at position 1"));
  // Vocabulary.
  const std::vector<int32_t> big = {2, 57};
  const SeqId seq5 = pool->AllocateSequence();
  r = StepOne(*b.model, pool.get(), seq5, 0, big, Unilm(2));
  EXPECT_THAT(r.status().message(), HasSubstr("sequence 0: token id 57"));
}

TEST(UnilmModelTest, NoMlmHeadIsRejected) {
  Built b = Build(Family::kBert, 40);
  ASSERT_NE(b.encoder, nullptr);
  EXPECT_EQ(UnilmModel::Create(nullptr, {}).status().code(), absl::StatusCode::kInvalidArgument);
  const EncoderArch a = Arch(Family::kBert);
  const std::string dir = WriteCheckpoint(a, Family::kBert, 41);
  absl::StatusOr<std::unique_ptr<SafetensorsModel>> w = SafetensorsModel::Open(dir);
  ASSERT_TRUE(w.ok());
  EncoderOptions o;
  o.load_mlm_head = false;
  absl::StatusOr<std::unique_ptr<Encoder>> e = Encoder::Create(a, **w, o);
  ASSERT_TRUE(e.ok());
  EXPECT_THAT(UnilmModel::Create(e->get(), {}).status().message(), HasSubstr("MLM head"));
}

TEST(UnilmModelTest, DemoModelEmbedsAndGeneratesOnOneEncoder) {
  const std::string dir = maskserve::testing::MakeTempDir("unilm_demo");
  ASSERT_TRUE(WriteDemoModel(dir).ok());
  absl::StatusOr<std::unique_ptr<LoadedModel>> m = LoadedModel::Load({.path = dir});
  ASSERT_TRUE(m.ok()) << m.status();
  const LoadedModel& lm = **m;
  EXPECT_EQ(lm.description().tasks,
            (std::vector<ModelTask>{ModelTask::kEmbed, ModelTask::kGenerate}));
  ASSERT_NE(lm.encoder(), nullptr);
  ASSERT_NE(lm.generator(), nullptr);
  ASSERT_EQ(lm.generator()->kind(), GenerationKind::kUnilm);
  const auto* unilm = dynamic_cast<const UnilmModel*>(lm.generator());
  ASSERT_NE(unilm, nullptr);
  EXPECT_EQ(&unilm->encoder(), lm.encoder());                           // one set of packed weights
  EXPECT_EQ(lm.generator()->eos_token_ids(), std::vector<int32_t>{3});  // [SEP]
  // Greedy UniLM decoding runs and is deterministic.
  std::vector<int32_t> ids = {2, 10, 11, 12, 3};
  std::vector<int32_t> out[2];
  for (int run = 0; run < 2; ++run) {
    std::unique_ptr<KvCachePool> pool = MakePool(*lm.generator());
    const SeqId seq = pool->AllocateSequence();
    const MaskSpec mask = lm.generator()->NaturalMask(5);
    absl::StatusOr<std::vector<float>> lg = StepOne(*lm.generator(), pool.get(), seq, 0, ids, mask);
    ASSERT_TRUE(lg.ok()) << lg.status();
    for (int t = 0; t < 6; ++t) {
      const int32_t next = testing::Argmax(*lg);
      out[run].push_back(next);
      const std::vector<int32_t> one = {next}, ty = {1};
      lg = StepOne(*lm.generator(), pool.get(), seq, 5 + t, one, mask, ty);
      ASSERT_TRUE(lg.ok()) << lg.status();
    }
  }
  EXPECT_EQ(out[0], out[1]);
}

}  // namespace
}  // namespace maskserve::engine
