// The encoder on tiny generated checkpoints (random weights written with
// SafetensorsWriter) against a naive double-precision forward pass written
// here from the HF definitions: explicit per-row softmax over an explicit
// mask matrix, no packing, no fusion. Covers every architecture option the
// encoder supports, packing, masks, errors and concurrency.
#include "engine/encoder.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/demo_model.h"
#include "engine/loaded_model.h"
#include "engine/model_config.h"
#include "engine/onednn/engine_context.h"
#include "engine/safetensors.h"
#include "engine/safetensors_writer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/engine/isa_param.h"
#include "tests/util/test_env.h"

namespace maskserve::engine {
namespace {

using ::testing::HasSubstr;
using Act = EncoderArch::Act;
using Positions = EncoderArch::Positions;

// FP32 engine vs the float64 reference on O(1) activations: float32 rounding
// through a few layers stays well below this.
constexpr double kFp32Tol = 1e-4;

struct Tensor {
  std::vector<int64_t> shape;
  std::vector<float> data;
};
using Checkpoint = std::map<std::string, Tensor>;

EncoderArch TinyArch() {
  EncoderArch a;
  a.model_type = "bert";
  a.prefixes = {"bert.", ""};
  a.hidden_size = 32;
  a.embedding_size = 32;
  a.num_layers = 2;
  a.num_heads = 4;
  a.num_kv_heads = 4;
  a.head_dim = 8;
  a.intermediate_size = 48;
  a.vocab_size = 50;
  a.type_vocab_size = 2;
  a.max_position_embeddings = 80;
  a.layer_norm_eps = 1e-12f;
  return a;
}

// Random weights in the golden files' style (N(0, 1/fan_in) linears, N(0, 1)
// embeddings, LayerNorm gamma ~ 1 + N(0, 0.1)).
Checkpoint MakeCheckpoint(const EncoderArch& a, const std::string& prefix, bool mlm_head,
                          bool store_rotary_table, uint32_t seed) {
  std::mt19937 rng(seed);
  Checkpoint ck;
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
  const std::string emb = prefix + "embeddings.";
  add(emb + "word_embeddings.weight", {a.vocab_size, E}, 0, 1);
  if (a.type_vocab_size > 0)
    add(emb + "token_type_embeddings.weight", {a.type_vocab_size, E}, 0, 1);
  if (a.positions == Positions::kLearned) {
    add(emb + "position_embeddings.weight", {a.max_position_embeddings, E}, 0, 1);
  }
  norm(emb + "LayerNorm", E);
  if (E != H) linear(prefix + "embeddings_project", E, H);
  if (a.positions == Positions::kRotary && store_rotary_table) {
    Tensor t{{a.max_position_embeddings, a.head_dim},
             std::vector<float>(static_cast<size_t>(a.max_position_embeddings) * a.head_dim)};
    const int half = a.head_dim / 2;
    for (int p = 0; p < a.max_position_embeddings; ++p) {
      for (int i = 0; i < half; ++i) {
        const double angle = p / std::pow(a.rope_theta, 2.0 * i / a.head_dim);
        t.data[p * a.head_dim + i] = static_cast<float>(std::sin(angle));
        t.data[p * a.head_dim + half + i] = static_cast<float>(std::cos(angle));
      }
    }
    ck[prefix + "encoder.embed_positions.weight"] = std::move(t);
  }
  for (int l = 0; l < a.num_layers; ++l) {
    const std::string lp = absl::StrCat(prefix, "encoder.layer.", l, ".");
    linear(lp + "attention.self.query", H, a.num_heads * a.head_dim);
    linear(lp + "attention.self.key", H, a.num_kv_heads * a.head_dim);
    linear(lp + "attention.self.value", H, a.num_kv_heads * a.head_dim);
    linear(lp + "attention.output.dense", a.num_heads * a.head_dim, H);
    norm(lp + "attention.output.LayerNorm", H);
    linear(lp + "intermediate.dense", H, a.intermediate_size);
    linear(lp + "output.dense", a.intermediate_size, H);
    norm(lp + "output.LayerNorm", H);
  }
  if (a.final_layer_norm) norm(prefix + "encoder.LayerNorm", H);
  if (mlm_head) {
    linear("cls.predictions.transform.dense", H, E);
    norm("cls.predictions.transform.LayerNorm", E);
    add("cls.predictions.bias", {a.vocab_size}, 0, 0.05);
  }
  return ck;
}

std::string WriteCheckpoint(const Checkpoint& ck) {
  SafetensorsWriter w;
  for (const auto& [name, t] : ck) {
    EXPECT_TRUE(w.Add(name, SafetensorsDtype::kF32, t.shape, t.data.data()).ok()) << name;
  }
  const std::string dir = maskserve::testing::MakeTempDir("encoder_test");
  EXPECT_TRUE(w.Write(dir + "/model.safetensors").ok());
  return dir;
}

// ---------------------------------------------------------------- reference

using Mat = std::vector<double>;  // row-major

double ActRef(Act act, double x) {
  switch (act) {
    case Act::kGeluErf:
      return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
    case Act::kGeluTanh:
      return 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
    case Act::kQuickGelu:
      return x / (1 + std::exp(-1.702 * x));
    case Act::kRelu:
      return std::max(x, 0.0);
    case Act::kSilu:
      return x / (1 + std::exp(-x));
  }
  return 0;
}

// y [n, out] = x [n, in] W^T + b
Mat LinearRef(const Checkpoint& ck, const std::string& name, const Mat& x, int n, int in) {
  const Tensor& w = ck.at(name + ".weight");
  const Tensor& b = ck.at(name + ".bias");
  const int out = static_cast<int>(w.shape[0]);
  Mat y(static_cast<size_t>(n) * out);
  for (int r = 0; r < n; ++r) {
    for (int o = 0; o < out; ++o) {
      double s = b.data[o];
      for (int i = 0; i < in; ++i) s += static_cast<double>(w.data[o * in + i]) * x[r * in + i];
      y[r * out + o] = s;
    }
  }
  return y;
}

Mat LayerNormRef(const Checkpoint& ck, const std::string& name, const Mat& x, int n, int d,
                 double eps) {
  const Tensor& g = ck.at(name + ".weight");
  const Tensor& b = ck.at(name + ".bias");
  Mat y(x.size());
  for (int r = 0; r < n; ++r) {
    double mean = 0, var = 0;
    for (int c = 0; c < d; ++c) mean += x[r * d + c];
    mean /= d;
    for (int c = 0; c < d; ++c) var += (x[r * d + c] - mean) * (x[r * d + c] - mean);
    var /= d;
    for (int c = 0; c < d; ++c) {
      y[r * d + c] = (x[r * d + c] - mean) / std::sqrt(var + eps) * g.data[c] + b.data[c];
    }
  }
  return y;
}

void RotateRef(double* head, int hd, int pos, double theta) {
  for (int i = 0; i < hd / 2; ++i) {
    const double angle = pos / std::pow(theta, 2.0 * i / hd);
    const double x0 = head[2 * i], x1 = head[2 * i + 1];
    head[2 * i] = x0 * std::cos(angle) - x1 * std::sin(angle);
    head[2 * i + 1] = x1 * std::cos(angle) + x0 * std::sin(angle);
  }
}

struct RefOutput {
  Mat last, first;
};

// One sequence, mask[i * n + j] = 1 when query i may attend key j.
RefOutput ReferenceForward(const EncoderArch& a, const Checkpoint& ck, const std::string& prefix,
                           const std::vector<int32_t>& ids, const std::vector<int32_t>& types,
                           const std::vector<uint8_t>& mask) {
  const int n = static_cast<int>(ids.size());
  const int H = a.hidden_size, E = a.embedding_size, hd = a.head_dim;
  const double eps = a.layer_norm_eps;
  const std::string emb = prefix + "embeddings.";
  std::vector<int> pos(n);
  int nonpad = 0;
  for (int t = 0; t < n; ++t) {
    if (a.roberta_positions) {
      // create_position_ids_from_input_ids: cumsum(mask) * mask + padding_idx
      const int m = ids[t] != a.padding_idx;
      nonpad += m;
      pos[t] = nonpad * m + a.padding_idx;
    } else {
      pos[t] = t + (a.positions == Positions::kRotary ? 0 : a.position_offset);
    }
  }
  Mat x(static_cast<size_t>(n) * E);
  for (int t = 0; t < n; ++t) {
    for (int c = 0; c < E; ++c) {
      double v = ck.at(emb + "word_embeddings.weight").data[ids[t] * E + c];
      if (a.type_vocab_size > 0)
        v += ck.at(emb + "token_type_embeddings.weight").data[types[t] * E + c];
      if (a.positions == Positions::kLearned) {
        v += ck.at(emb + "position_embeddings.weight").data[pos[t] * E + c];
      } else if (a.positions == Positions::kSinusoidal) {
        const int i = c % (E / 2);
        const double angle = pos[t] / std::pow(a.rope_theta, 2.0 * i / E);
        v += c < E / 2 ? std::sin(angle) : std::cos(angle);
      }
      x[t * E + c] = v;
    }
  }
  x = LayerNormRef(ck, emb + "LayerNorm", x, n, E, eps);
  if (E != H) x = LinearRef(ck, prefix + "embeddings_project", x, n, E);

  RefOutput out;
  const int qw = a.num_heads * hd, kw = a.num_kv_heads * hd;
  for (int l = 0; l < a.num_layers; ++l) {
    const std::string lp = absl::StrCat(prefix, "encoder.layer.", l, ".");
    auto attention = [&](const Mat& in) {
      Mat q = LinearRef(ck, lp + "attention.self.query", in, n, H);
      Mat k = LinearRef(ck, lp + "attention.self.key", in, n, H);
      Mat v = LinearRef(ck, lp + "attention.self.value", in, n, H);
      if (a.positions == Positions::kRotary) {
        for (int t = 0; t < n; ++t) {
          for (int h = 0; h < a.num_heads; ++h)
            RotateRef(&q[t * qw + h * hd], hd, pos[t], a.rope_theta);
          for (int h = 0; h < a.num_kv_heads; ++h) {
            RotateRef(&k[t * kw + h * hd], hd, pos[t], a.rope_theta);
            if (a.rotary_value) RotateRef(&v[t * kw + h * hd], hd, pos[t], a.rope_theta);
          }
        }
      }
      Mat ctx(static_cast<size_t>(n) * qw, 0.0);
      const int group = a.num_heads / a.num_kv_heads;
      for (int h = 0; h < a.num_heads; ++h) {
        const int g = h / group;
        for (int i = 0; i < n; ++i) {
          std::vector<double> p(n, 0.0);
          double mx = -1e300;
          for (int j = 0; j < n; ++j) {
            if (!mask[i * n + j]) continue;
            double s = 0;
            for (int c = 0; c < hd; ++c) s += q[i * qw + h * hd + c] * k[j * kw + g * hd + c];
            p[j] = s / std::sqrt(static_cast<double>(hd));
            mx = std::max(mx, p[j]);
          }
          double z = 0;
          for (int j = 0; j < n; ++j) {
            p[j] = mask[i * n + j] ? std::exp(p[j] - mx) : 0.0;
            z += p[j];
          }
          for (int j = 0; j < n; ++j) {
            for (int c = 0; c < hd; ++c)
              ctx[i * qw + h * hd + c] += p[j] / z * v[j * kw + g * hd + c];
          }
        }
      }
      return LinearRef(ck, lp + "attention.output.dense", ctx, n, qw);
    };
    auto ffn = [&](const Mat& in) {
      Mat inner = LinearRef(ck, lp + "intermediate.dense", in, n, H);
      for (double& e : inner) e = ActRef(a.activation, e);
      return LinearRef(ck, lp + "output.dense", inner, n, a.intermediate_size);
    };
    if (a.pre_layer_norm) {
      Mat att = attention(LayerNormRef(ck, lp + "attention.output.LayerNorm", x, n, H, eps));
      for (size_t i = 0; i < x.size(); ++i) x[i] += att[i];
      Mat f = ffn(LayerNormRef(ck, lp + "output.LayerNorm", x, n, H, eps));
      for (size_t i = 0; i < x.size(); ++i) x[i] += f[i];
    } else {
      Mat att = attention(x);
      for (size_t i = 0; i < x.size(); ++i) att[i] += x[i];
      x = LayerNormRef(ck, lp + "attention.output.LayerNorm", att, n, H, eps);
      Mat f = ffn(x);
      for (size_t i = 0; i < x.size(); ++i) f[i] += x[i];
      x = LayerNormRef(ck, lp + "output.LayerNorm", f, n, H, eps);
    }
    if (l == 0) out.first = x;
  }
  if (a.final_layer_norm) x = LayerNormRef(ck, prefix + "encoder.LayerNorm", x, n, H, eps);
  out.last = x;
  return out;
}

// ------------------------------------------------------------------- inputs

struct Inputs {
  std::vector<int32_t> ids, types, cu = {0};
  std::vector<MaskSpec> masks;
  std::vector<std::vector<uint8_t>> mask_matrices;  // explicit, from the definitions
};

// Three sequences of lengths 1, 9 and 70 (crossing the attention tiles):
// BIDIRECTIONAL, CAUSAL+LOCAL(2) and UNILM with segments from the type ids.
Inputs MakeInputs(const EncoderArch& a, uint32_t seed, bool with_pad_ids = false) {
  std::mt19937 rng(seed);
  Inputs in;
  const int lens[] = {1, 9, 70};
  for (int s = 0; s < 3; ++s) {
    const int n = lens[s];
    std::vector<int32_t> types(n);
    for (int t = 0; t < n; ++t) {
      int32_t id = static_cast<int32_t>(rng() % a.vocab_size);
      if (with_pad_ids && t % 7 == 3) id = a.padding_idx;
      in.ids.push_back(id);
      types[t] = a.type_vocab_size > 1 && t >= n / 2 ? 1 : 0;
    }
    in.types.insert(in.types.end(), types.begin(), types.end());
    in.cu.push_back(static_cast<int32_t>(in.ids.size()));
    MaskSpec spec;
    std::vector<uint8_t> m(static_cast<size_t>(n) * n);
    std::vector<int> c(n);
    for (int t = 0, acc = 0; t < n; ++t) c[t] = acc += types[t];
    for (int i = 0; i < n; ++i) {
      for (int j = 0; j < n; ++j) {
        bool ok = true;
        if (s == 1) ok = j <= i && std::abs(i - j) <= 2;
        if (s == 2) ok = c[j] <= c[i];
        m[i * n + j] = ok;
      }
    }
    if (s == 1) {
      spec.kind = MaskKind::kLocal;
      spec.window = 2;
      spec.causal = true;
    } else if (s == 2) {
      spec.kind = MaskKind::kUnilm;  // segments default to the type ids
    }
    in.masks.push_back(spec);
    in.mask_matrices.push_back(std::move(m));
  }
  return in;
}

EncoderBatch BatchOf(const Inputs& in, bool first_layer = true) {
  EncoderBatch b;
  b.token_ids = in.ids;
  b.type_ids = in.types;
  b.cu_seqlens = in.cu;
  b.masks = in.masks;
  b.need_first_layer = first_layer;
  return b;
}

struct Built {
  Checkpoint ck;
  std::string dir;
  std::unique_ptr<SafetensorsModel> weights;
  std::unique_ptr<Encoder> encoder;
};

Built Build(const EncoderArch& a, const std::string& prefix, uint32_t seed,
            MatmulDType dtype = MatmulDType::kF32, bool mlm = true, bool store_table = true) {
  Built b;
  b.ck = MakeCheckpoint(a, prefix, mlm, store_table, seed);
  b.dir = WriteCheckpoint(b.ck);
  auto w = SafetensorsModel::Open(b.dir);
  EXPECT_TRUE(w.ok()) << w.status();
  if (!w.ok()) return b;
  b.weights = std::move(*w);
  auto e = Encoder::Create(a, *b.weights, {.dtype = dtype});
  EXPECT_TRUE(e.ok()) << e.status();
  if (e.ok()) b.encoder = std::move(*e);
  return b;
}

// Runs the packed batch and compares every sequence with the reference;
// returns the worst |d| seen.
double CheckAgainstReference(const EncoderArch& a, const std::string& prefix, uint32_t seed,
                             bool with_pad_ids = false, bool store_table = true) {
  Built b = Build(a, prefix, seed, MatmulDType::kF32, true, store_table);
  if (b.encoder == nullptr) return 1e9;
  const Inputs in = MakeInputs(a, seed + 1, with_pad_ids);
  absl::StatusOr<EncoderOutput> out = b.encoder->Encode(BatchOf(in));
  EXPECT_TRUE(out.ok()) << out.status();
  if (!out.ok()) return 1e9;
  const int H = a.hidden_size;
  EXPECT_EQ(out->hidden_size, H);
  EXPECT_EQ(out->num_tokens, static_cast<int>(in.ids.size()));
  double worst = 0;
  for (int s = 0; s + 1 < static_cast<int>(in.cu.size()); ++s) {
    const std::vector<int32_t> ids(in.ids.begin() + in.cu[s], in.ids.begin() + in.cu[s + 1]);
    const std::vector<int32_t> types(in.types.begin() + in.cu[s], in.types.begin() + in.cu[s + 1]);
    const RefOutput ref = ReferenceForward(a, b.ck, prefix, ids, types, in.mask_matrices[s]);
    for (size_t i = 0; i < ref.last.size(); ++i) {
      const size_t at = static_cast<size_t>(in.cu[s]) * H + i;
      const double d1 = std::abs(out->last_hidden_state[at] - ref.last[i]);
      const double d2 = std::abs(out->hidden_states_1[at] - ref.first[i]);
      worst = std::max({worst, d1, d2});
      if (d1 > kFp32Tol || d2 > kFp32Tol) {
        ADD_FAILURE() << "sequence " << s << " element " << i << ": last " << d1 << ", first "
                      << d2;
        return worst;
      }
    }
  }
  return worst;
}

TEST(EncoderTest, BertPostLnMatchesReference) {
  EXPECT_LE(CheckAgainstReference(TinyArch(), "bert.", 1), kFp32Tol);
}

TEST(EncoderTest, BareCheckpointWithoutPrefix) {
  EXPECT_LE(CheckAgainstReference(TinyArch(), "", 2), kFp32Tol);
}

TEST(EncoderTest, PreLnWithFinalNormMatchesReference) {
  EncoderArch a = TinyArch();
  a.pre_layer_norm = true;
  a.final_layer_norm = true;
  a.activation = Act::kGeluTanh;
  EXPECT_LE(CheckAgainstReference(a, "bert.", 3), kFp32Tol);
  a.final_layer_norm = false;
  EXPECT_LE(CheckAgainstReference(a, "bert.", 4), kFp32Tol);
}

TEST(EncoderTest, EveryActivationMatchesReference) {
  for (Act act : {Act::kGeluErf, Act::kGeluTanh, Act::kQuickGelu, Act::kRelu, Act::kSilu}) {
    SCOPED_TRACE(static_cast<int>(act));
    EncoderArch a = TinyArch();
    a.activation = act;
    EXPECT_LE(CheckAgainstReference(a, "bert.", 10 + static_cast<int>(act)), kFp32Tol);
  }
}

TEST(EncoderTest, HeadDimIndependentOfHiddenSize) {
  EncoderArch a = TinyArch();
  a.num_heads = 3;
  a.num_kv_heads = 3;
  a.head_dim = 12;  // Q/K/V width 36 != hidden 32
  EXPECT_LE(CheckAgainstReference(a, "bert.", 20), kFp32Tol);
}

TEST(EncoderTest, GroupedKeyValueHeads) {
  EncoderArch a = TinyArch();
  a.num_kv_heads = 2;
  EXPECT_LE(CheckAgainstReference(a, "bert.", 21), kFp32Tol);
}

TEST(EncoderTest, RoformerRotaryMatchesReference) {
  EncoderArch a = TinyArch();
  a.model_type = "roformer";
  a.prefixes = {"roformer.", ""};
  a.positions = Positions::kRotary;
  for (bool rotary_value : {false, true}) {
    for (bool stored_table : {true, false}) {
      SCOPED_TRACE(absl::StrCat("rotary_value=", rotary_value, " stored_table=", stored_table));
      a.rotary_value = rotary_value;
      EXPECT_LE(CheckAgainstReference(a, "roformer.", 30 + rotary_value, false, stored_table),
                kFp32Tol);
    }
  }
}

TEST(EncoderTest, RoformerEmbeddingSizeDiffersFromHidden) {
  EncoderArch a = TinyArch();
  a.prefixes = {"roformer."};
  a.positions = Positions::kRotary;
  a.embedding_size = 16;  // embeddings_project 16 -> 32
  EXPECT_LE(CheckAgainstReference(a, "roformer.", 40), kFp32Tol);
}

TEST(EncoderTest, SinusoidalAbsolutePositions) {
  EncoderArch a = TinyArch();
  a.positions = Positions::kSinusoidal;
  EXPECT_LE(CheckAgainstReference(a, "bert.", 45), kFp32Tol);
}

TEST(EncoderTest, RobertaPositionsFromPadCumsum) {
  // From a config, as LoadedModel does it: positions start at pad + 1.
  absl::StatusOr<ModelConfig> config = ParseModelConfig(R"({
    "model_type": "roberta", "hidden_size": 32, "num_hidden_layers": 2,
    "num_attention_heads": 4, "intermediate_size": 48, "vocab_size": 50,
    "max_position_embeddings": 80, "type_vocab_size": 1, "pad_token_id": 1,
    "layer_norm_eps": 1e-5, "hidden_act": "gelu"})");
  ASSERT_TRUE(config.ok()) << config.status();
  absl::StatusOr<EncoderArch> a = EncoderArchFromConfig(*config);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_TRUE(a->roberta_positions);
  EXPECT_EQ(a->padding_idx, 1);
  EXPECT_EQ(a->position_offset, 2);
  EXPECT_EQ(a->max_sequence_length(), 78);
  EXPECT_EQ(a->prefixes.front(), "roberta.");
  // Pad ids inside the sequences keep position padding_idx and do not count.
  EXPECT_LE(CheckAgainstReference(*a, "roberta.", 50, /*with_pad_ids=*/true), kFp32Tol);

  Built b = Build(*a, "roberta.", 51);
  ASSERT_NE(b.encoder, nullptr);
  EXPECT_EQ(b.encoder->max_sequence_length(), 78);
  std::vector<int32_t> ids(79, 5);
  std::vector<int32_t> cu = {0, 79};
  EncoderBatch batch;
  batch.token_ids = ids;
  batch.cu_seqlens = cu;
  absl::StatusOr<EncoderOutput> out = b.encoder->Encode(batch);
  EXPECT_FALSE(out.ok());
  EXPECT_THAT(out.status().message(), HasSubstr("sequence 0"));
  ids.resize(78);
  cu[1] = 78;
  batch.token_ids = ids;
  EXPECT_TRUE(b.encoder->Encode(batch).ok());
}

TEST(EncoderTest, ArchFromBertAndRoformerConfigs) {
  absl::StatusOr<ModelConfig> config = ParseModelConfig(R"({
    "model_type": "roformer", "hidden_size": 32, "embedding_size": 16, "num_hidden_layers": 2,
    "num_attention_heads": 4, "intermediate_size": 48, "vocab_size": 50,
    "max_position_embeddings": 80, "rotary_value": true, "hidden_act": "gelu_new"})");
  ASSERT_TRUE(config.ok()) << config.status();
  absl::StatusOr<EncoderArch> a = EncoderArchFromConfig(*config);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->positions, Positions::kRotary);
  EXPECT_TRUE(a->rotary_value);
  EXPECT_EQ(a->embedding_size, 16);
  EXPECT_EQ(a->head_dim, 8);
  EXPECT_EQ(a->activation, Act::kGeluTanh);
  EXPECT_EQ(a->max_sequence_length(), 80);

  config = ParseModelConfig(R"({
    "model_type": "bert", "hidden_size": 32, "num_hidden_layers": 2,
    "num_attention_heads": 4, "intermediate_size": 48, "vocab_size": 50,
    "position_embedding_type": "relative_key"})");
  ASSERT_TRUE(config.ok()) << config.status();
  a = EncoderArchFromConfig(*config);
  EXPECT_EQ(a.status().code(), absl::StatusCode::kUnimplemented);

  config = ParseModelConfig(R"({"model_type": "gpt2", "n_embd": 32, "n_layer": 2, "n_head": 4,
                                "vocab_size": 50})");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(EncoderArchFromConfig(*config).status().code(), absl::StatusCode::kUnimplemented);
}

TEST(EncoderTest, PackedBatchEqualsEachSequenceAlone) {
  EncoderArch a = TinyArch();
  Built b = Build(a, "bert.", 60);
  ASSERT_NE(b.encoder, nullptr);
  const Inputs in = MakeInputs(a, 61);
  absl::StatusOr<EncoderOutput> packed = b.encoder->Encode(BatchOf(in));
  ASSERT_TRUE(packed.ok()) << packed.status();
  const int H = a.hidden_size;
  for (int s = 0; s < 3; ++s) {
    const std::vector<int32_t> ids(in.ids.begin() + in.cu[s], in.ids.begin() + in.cu[s + 1]);
    const std::vector<int32_t> types(in.types.begin() + in.cu[s], in.types.begin() + in.cu[s + 1]);
    const std::vector<int32_t> cu = {0, static_cast<int32_t>(ids.size())};
    EncoderBatch one;
    one.token_ids = ids;
    one.type_ids = types;
    one.cu_seqlens = cu;
    one.masks = absl::MakeConstSpan(&in.masks[s], 1);
    absl::StatusOr<EncoderOutput> alone = b.encoder->Encode(one);
    ASSERT_TRUE(alone.ok()) << alone.status();
    EXPECT_TRUE(alone->hidden_states_1.empty());
    double worst = 0;
    for (size_t i = 0; i < alone->last_hidden_state.size(); ++i) {
      worst = std::max(
          worst, static_cast<double>(
                     std::abs(alone->last_hidden_state[i] -
                              packed->last_hidden_state[static_cast<size_t>(in.cu[s]) * H + i])));
    }
    // Only the matmul row blocking differs between the two runs.
    EXPECT_LE(worst, 1e-5) << "sequence " << s;
  }
}

TEST(EncoderTest, DefaultMasksAreBidirectionalAndTypesDefaultToZero) {
  EncoderArch a = TinyArch();
  Built b = Build(a, "bert.", 62);
  ASSERT_NE(b.encoder, nullptr);
  const std::vector<int32_t> ids = {3, 9, 4, 7, 1};
  const std::vector<int32_t> zeros(ids.size(), 0);
  const std::vector<int32_t> cu = {0, 5};
  EncoderBatch implicit;
  implicit.token_ids = ids;
  implicit.cu_seqlens = cu;
  EncoderBatch explicit_batch = implicit;
  explicit_batch.type_ids = zeros;
  const std::vector<MaskSpec> masks = {MaskSpec{}};
  explicit_batch.masks = masks;
  auto x = b.encoder->Encode(implicit);
  auto y = b.encoder->Encode(explicit_batch);
  ASSERT_TRUE(x.ok() && y.ok());
  EXPECT_EQ(x->last_hidden_state, y->last_hidden_state);
  const RefOutput ref = ReferenceForward(a, b.ck, "bert.", ids, zeros,
                                         std::vector<uint8_t>(ids.size() * ids.size(), 1));
  for (size_t i = 0; i < ref.last.size(); ++i) {
    ASSERT_NEAR(x->last_hidden_state[i], ref.last[i], kFp32Tol) << i;
  }
}

TEST(EncoderTest, Bf16CloseToReference) {
  if (absl::Status s = CheckMatmulDTypeSupported(MatmulDType::kBF16); !s.ok()) {
    GTEST_SKIP() << s.message();
  }
  EncoderArch a = TinyArch();
  Built b = Build(a, "bert.", 63, MatmulDType::kBF16);
  ASSERT_NE(b.encoder, nullptr);
  EXPECT_EQ(b.encoder->dtype(), MatmulDType::kBF16);
  const Inputs in = MakeInputs(a, 64);
  auto out = b.encoder->Encode(BatchOf(in));
  ASSERT_TRUE(out.ok()) << out.status();
  const int H = a.hidden_size;
  for (int s = 0; s < 3; ++s) {
    const std::vector<int32_t> ids(in.ids.begin() + in.cu[s], in.ids.begin() + in.cu[s + 1]);
    const std::vector<int32_t> types(in.types.begin() + in.cu[s], in.types.begin() + in.cu[s + 1]);
    const RefOutput ref = ReferenceForward(a, b.ck, "bert.", ids, types, in.mask_matrices[s]);
    for (size_t t = 0; t < ids.size(); ++t) {
      double ab = 0, aa = 0, bb = 0;
      for (int c = 0; c < H; ++c) {
        const double g = out->last_hidden_state[(in.cu[s] + t) * H + c], r = ref.last[t * H + c];
        ab += g * r;
        aa += g * g;
        bb += r * r;
      }
      // bf16 weights and activations: ~3 significant digits per matmul.
      EXPECT_GE(ab / std::sqrt(aa * bb), 0.999) << "sequence " << s << " token " << t;
    }
  }
}

TEST(EncoderTest, MlmLogitsMatchReference) {
  EncoderArch a = TinyArch();
  a.embedding_size = 16;  // RoFormer-style: transform maps hidden -> embedding size
  a.positions = Positions::kRotary;
  a.prefixes = {"roformer."};
  Built b = Build(a, "roformer.", 70);
  ASSERT_NE(b.encoder, nullptr);
  ASSERT_TRUE(b.encoder->has_mlm_head());
  const int H = a.hidden_size, E = a.embedding_size, V = a.vocab_size, rows = 3;
  std::mt19937 rng(71);
  std::normal_distribution<float> dist(0, 1);
  std::vector<float> h(rows * H);
  for (float& v : h) v = dist(rng);
  absl::StatusOr<std::vector<float>> logits = b.encoder->MlmLogits(h.data(), rows);
  ASSERT_TRUE(logits.ok()) << logits.status();
  ASSERT_EQ(logits->size(), static_cast<size_t>(rows * V));
  Mat t = LinearRef(b.ck, "cls.predictions.transform.dense", Mat(h.begin(), h.end()), rows, H);
  for (double& v : t) v = ActRef(a.activation, v);
  t = LayerNormRef(b.ck, "cls.predictions.transform.LayerNorm", t, rows, E, a.layer_norm_eps);
  const Tensor& word = b.ck.at("roformer.embeddings.word_embeddings.weight");
  const Tensor& bias = b.ck.at("cls.predictions.bias");
  for (int r = 0; r < rows; ++r) {
    for (int v = 0; v < V; ++v) {
      double s = bias.data[v];
      for (int c = 0; c < E; ++c) s += t[r * E + c] * word.data[v * E + c];
      ASSERT_NEAR((*logits)[r * V + v], s, kFp32Tol) << r << "," << v;
    }
  }
}

TEST(EncoderTest, NoMlmHead) {
  Built b = Build(TinyArch(), "bert.", 72, MatmulDType::kF32, /*mlm=*/false);
  ASSERT_NE(b.encoder, nullptr);
  EXPECT_FALSE(b.encoder->has_mlm_head());
  std::vector<float> h(32);
  EXPECT_EQ(b.encoder->MlmLogits(h.data(), 1).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

absl::Status CreateFrom(const EncoderArch& a, const Checkpoint& ck) {
  const std::string dir = WriteCheckpoint(ck);
  auto w = SafetensorsModel::Open(dir);
  if (!w.ok()) return w.status();
  return Encoder::Create(a, **w, {}).status();
}

TEST(EncoderTest, MissingOrMisshapenTensorErrorsNameIt) {
  const EncoderArch a = TinyArch();
  const Checkpoint good = MakeCheckpoint(a, "bert.", true, true, 80);
  ASSERT_TRUE(CreateFrom(a, good).ok());
  for (const std::string name :
       {"bert.encoder.layer.1.attention.self.key.weight",
        "bert.encoder.layer.0.output.LayerNorm.bias", "bert.embeddings.position_embeddings.weight",
        "cls.predictions.bias", "bert.embeddings.token_type_embeddings.weight"}) {
    SCOPED_TRACE(name);
    Checkpoint missing = good;
    missing.erase(name);
    absl::Status s = CreateFrom(a, missing);
    EXPECT_FALSE(s.ok());
    EXPECT_THAT(s.message(), HasSubstr(name));

    Checkpoint wrong = good;
    wrong[name].shape.back() += 1;
    wrong[name].data.resize(wrong[name].data.size() / (wrong[name].shape.back() - 1) *
                            wrong[name].shape.back());
    s = CreateFrom(a, wrong);
    EXPECT_FALSE(s.ok());
    EXPECT_THAT(s.message(), HasSubstr(name));
    EXPECT_THAT(s.message(), HasSubstr("model.safetensors"));
  }
  Checkpoint none = good;
  none.erase("bert.embeddings.word_embeddings.weight");
  absl::Status s = CreateFrom(a, none);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("word_embeddings"));
}

TEST(EncoderTest, InvalidBatchesNameTheSequence) {
  EncoderArch a = TinyArch();
  Built b = Build(a, "bert.", 90);
  ASSERT_NE(b.encoder, nullptr);
  std::vector<int32_t> ids = {1, 2, 3, 4, 5};
  std::vector<int32_t> types = {0, 0, 0, 1, 1};
  std::vector<int32_t> cu = {0, 2, 5};
  EncoderBatch batch;
  batch.token_ids = ids;
  batch.type_ids = types;
  batch.cu_seqlens = cu;
  ASSERT_TRUE(b.encoder->Encode(batch).ok());

  ids[3] = 50;  // == vocab
  auto out = b.encoder->Encode(batch);
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(out.status().message(), HasSubstr("sequence 1"));
  EXPECT_THAT(out.status().message(), HasSubstr("token id 50"));
  ids[3] = 4;

  types[1] = 2;  // == type_vocab_size
  out = b.encoder->Encode(batch);
  EXPECT_THAT(out.status().message(), HasSubstr("sequence 0"));
  EXPECT_THAT(out.status().message(), HasSubstr("type id 2"));
  types[1] = 0;

  std::vector<int32_t> bad_cu = {0, 3, 2, 5};
  batch.cu_seqlens = bad_cu;
  out = b.encoder->Encode(batch);
  EXPECT_THAT(out.status().message(), HasSubstr("sequence 1"));
  std::vector<int32_t> short_cu = {0, 4};
  batch.cu_seqlens = short_cu;
  EXPECT_FALSE(b.encoder->Encode(batch).ok());
  batch.cu_seqlens = cu;

  std::vector<MaskSpec> masks(2);
  masks[1].kind = MaskKind::kLocal;
  masks[1].window = -1;
  batch.masks = masks;
  out = b.encoder->Encode(batch);
  EXPECT_THAT(out.status().message(), HasSubstr("sequence 1"));
  masks.resize(1);
  batch.masks = masks;
  EXPECT_FALSE(b.encoder->Encode(batch).ok());
  batch.masks = {};

  std::vector<int32_t> long_ids(81, 3);
  std::vector<int32_t> long_cu = {0, 81};
  EncoderBatch too_long;
  too_long.token_ids = long_ids;
  too_long.cu_seqlens = long_cu;
  out = b.encoder->Encode(too_long);
  EXPECT_THAT(out.status().message(), HasSubstr("sequence 0 has 81 tokens"));
}

TEST(EncoderTest, ConcurrentEncodeIsIdentical) {
  EncoderArch a = TinyArch();
  Built b = Build(a, "bert.", 100);
  ASSERT_NE(b.encoder, nullptr);
  const Inputs in = MakeInputs(a, 101);
  auto expected = b.encoder->Encode(BatchOf(in));
  ASSERT_TRUE(expected.ok());
  std::vector<std::vector<float>> results(4 * 5);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int r = 0; r < 5; ++r) {
        auto out = b.encoder->Encode(BatchOf(in));
        if (out.ok()) results[t * 5 + r] = std::move(out->last_hidden_state);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (const std::vector<float>& r : results) EXPECT_EQ(r, expected->last_hidden_state);
}

TEST(EncoderTest, LoadedModelBuildsTheEncoderForTheDemoModel) {
  const std::string dir = maskserve::testing::MakeTempDir("encoder_demo");
  ASSERT_TRUE(WriteDemoModel(dir).ok());
  std::string skipped;
  for (ComputeDtype dtype : {ComputeDtype::kFloat32, ComputeDtype::kBFloat16}) {
    LoadOptions lo;
    lo.path = dir;
    lo.dtype = dtype;
    absl::StatusOr<std::unique_ptr<LoadedModel>> model = LoadedModel::Load(lo);
    if (dtype == ComputeDtype::kBFloat16 &&
        !CheckMatmulDTypeSupported(MatmulDType::kBF16).ok()) {
      // No BF16 matmuls on this CPU: the load fails up front, saying why.
      ASSERT_FALSE(model.ok());
      EXPECT_EQ(model.status().code(), absl::StatusCode::kFailedPrecondition);
      EXPECT_THAT(model.status().message(), HasSubstr("bfloat16"));
      EXPECT_THAT(model.status().message(), HasSubstr("AVX-512"));
      skipped = std::string(model.status().message());
      continue;
    }
    ASSERT_TRUE(model.ok()) << model.status();
    const Encoder* enc = (*model)->encoder();
    ASSERT_NE(enc, nullptr);
    EXPECT_EQ(enc->dtype(),
              dtype == ComputeDtype::kBFloat16 ? MatmulDType::kBF16 : MatmulDType::kF32);
    EXPECT_TRUE(enc->has_mlm_head());
    EXPECT_EQ(enc->hidden_size(), DemoModelSpec::kHiddenSize);
    EXPECT_EQ(enc->max_sequence_length(), (*model)->description().max_sequence_length);
    // The demo model has an MLM head: it embeds and (UniLM) generates.
    EXPECT_EQ((*model)->description().tasks,
              (std::vector<ModelTask>{ModelTask::kEmbed, ModelTask::kGenerate}));
    EXPECT_NE((*model)->generator(), nullptr);
    const std::vector<int32_t> ids = {2, 10, 11, 3};
    const std::vector<int32_t> cu = {0, 4};
    EncoderBatch batch;
    batch.token_ids = ids;
    batch.cu_seqlens = cu;
    absl::StatusOr<EncoderOutput> out = enc->Encode(batch);
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ(out->last_hidden_state.size(), 4u * DemoModelSpec::kHiddenSize);
  }
  if (!skipped.empty()) GTEST_SKIP() << "float32 loaded; bfloat16 refused: " << skipped;
}

// --dtype auto: bfloat16 only where AMX runs it, float32 everywhere else
// (in particular on AVX2-only CPUs, which have no BF16 matmul at all).
TEST(EncoderTest, AutoDtypeIsFloat32WithoutAmx) {
  const ComputeDtype dtype = AutoComputeDtype();
  if (!CheckMatmulDTypeSupported(MatmulDType::kBF16).ok() || !CpuHasAmxBf16()) {
    EXPECT_EQ(dtype, ComputeDtype::kFloat32);
  } else {
    EXPECT_EQ(dtype, ComputeDtype::kBFloat16);
  }
}

// The tiny-model reference checks once more on every kernel ISA this CPU
// runs (.../avx2, .../avx512): norms, activations and attention all switch.
class EncoderIsaTest : public maskserve::testing::IsaTest {};

TEST_P(EncoderIsaTest, MatchesReference) {
  EXPECT_LE(CheckAgainstReference(TinyArch(), "bert.", 1), kFp32Tol);
  EncoderArch a = TinyArch();
  a.pre_layer_norm = true;
  a.final_layer_norm = true;
  a.activation = Act::kGeluTanh;
  EXPECT_LE(CheckAgainstReference(a, "bert.", 3), kFp32Tol);
}

MASKSERVE_INSTANTIATE_ISA_TESTS(EncoderIsaTest);

}  // namespace
}  // namespace maskserve::engine
