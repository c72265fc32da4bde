// Seq2SeqModel on tiny random checkpoints in HuggingFace layout (BART,
// mBART, Marian, T5 v1.1 with the gated-GELU FFN and an untied head, T5
// v1.0 with tied embeddings), against a naive float64 re-statement of HF
// transformers 4.31's modeling code written in this file
// (modeling_bart / modeling_mbart / modeling_marian / modeling_t5
// semantics: learned positions offset by 2 and layernorm_embedding for
// BART, sinusoidal positions from 0 for Marian, scale_embedding, post-LN
// for BART / Marian and pre-LN + final layer norms for mBART, T5's RMSNorm,
// unscaled scores, relative buckets from layer 0, d_model^-0.5 before a
// tied head, final_logits_bias), plus the properties the serving path
// relies on:
//
//   - cached decoding (prefill, then one token per step) equals the naive
//     full recompute at every step (encoder output too);
//   - cache == recompute on the model itself (one step over the whole
//     decoder input vs token by token, and a prefix fed in two chunks);
//   - a packed batch of several requests (one EncodeSources, one Forward
//     mixing a prefill chunk with decode tokens) equals the single runs;
//   - argument errors (no encoder state, bad ids, masks) name the culprit;
//   - LoadedModel serves a BART directory with its byte-level BPE tokenizer
//     and a Marian directory with source.spm / target.spm, end to end
//     through BuildGenerationPrompt and RequestDecoder.
#include "engine/seq2seq_model.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "engine/generation_input.h"
#include "engine/kv_cache.h"
#include "engine/loaded_model.h"
#include "engine/model_config.h"
#include "engine/request_decoder.h"
#include "engine/safetensors.h"
#include "engine/safetensors_writer.h"
#include "engine/seq2seq_arch.h"
#include "engine/t5_relative_position.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/engine/generation_test_util.h"
#include "tests/util/test_env.h"

namespace maskserve::engine {
namespace {

using ::testing::HasSubstr;
using testing::MakePool;
using testing::MaxAbsDiff;
using Mat = std::vector<std::vector<double>>;  // [rows][cols]

constexpr double kVsNaiveTol = 2e-4;  // FP32 engine vs float64 reference
constexpr double kCacheTol = 2e-5;    // FP32 vs FP32, different step shapes

enum class Kind { kBart, kMbart, kMarian, kT5Gated, kT5Tied };

const char* Name(Kind k) {
  switch (k) {
    case Kind::kBart:
      return "bart";
    case Kind::kMbart:
      return "mbart";
    case Kind::kMarian:
      return "marian";
    case Kind::kT5Gated:
      return "t5 v1.1 (gated-gelu, untied)";
    case Kind::kT5Tied:
      return "t5 v1.0 (relu, tied)";
  }
  return "?";
}

bool IsT5(Kind k) { return k == Kind::kT5Gated || k == Kind::kT5Tied; }

// Shapes of the tiny models.
constexpr int kD = 16;
constexpr int kHeads = 2;
constexpr int kT5Dkv = 6;  // T5: heads * d_kv != d_model on purpose
constexpr int kEncFfn = 24;
constexpr int kDecFfn = 20;
constexpr int kEncLayers = 2;
constexpr int kDecLayers = 3;
constexpr int kVocab = 50;
constexpr int kMaxPos = 64;
constexpr int kBuckets = 8;
constexpr int kMaxDistance = 20;

std::string ConfigJson(Kind k) {
  switch (k) {
    case Kind::kBart:
    case Kind::kMbart:
      return absl::StrCat(R"({"model_type": ")", k == Kind::kBart ? "bart" : "mbart",
                          R"(", "d_model": 16, "encoder_layers": 2, "decoder_layers": 3,
          "encoder_attention_heads": 2, "decoder_attention_heads": 2, "encoder_ffn_dim": 24,
          "decoder_ffn_dim": 20, "vocab_size": 50, "max_position_embeddings": 64,
          "activation_function": "gelu", "scale_embedding": true, "pad_token_id": 1,
          "bos_token_id": 0, "eos_token_id": 2, "decoder_start_token_id": 2,
          "is_encoder_decoder": true})");
    case Kind::kMarian:
      return R"({"model_type": "marian", "d_model": 16, "encoder_layers": 2, "decoder_layers": 3,
          "encoder_attention_heads": 2, "decoder_attention_heads": 2, "encoder_ffn_dim": 24,
          "decoder_ffn_dim": 20, "vocab_size": 50, "max_position_embeddings": 64,
          "activation_function": "swish", "scale_embedding": true, "pad_token_id": 49,
          "eos_token_id": 0, "decoder_start_token_id": 49, "is_encoder_decoder": true})";
    case Kind::kT5Gated:
    case Kind::kT5Tied:
      return absl::StrCat(R"({"model_type": "t5", "d_model": 16, "d_kv": 6, "num_heads": 2,
          "d_ff": )",
                          kEncFfn, R"(, "num_layers": 2, "num_decoder_layers": 3,
          "vocab_size": 50, "relative_attention_num_buckets": 8,
          "relative_attention_max_distance": 20, "feed_forward_proj": ")",
                          k == Kind::kT5Gated ? "gated-gelu" : "relu",
                          R"(", "tie_word_embeddings": )", k == Kind::kT5Gated ? "false" : "true",
                          R"(, "layer_norm_epsilon": 1e-6, "pad_token_id": 0, "eos_token_id": 1,
          "decoder_start_token_id": 0, "is_encoder_decoder": true})");
  }
  return "";
}

// The checkpoint: every tensor by HF name, float64 copies kept for the
// reference.
struct Checkpoint {
  std::map<std::string, std::vector<double>> t;
  std::map<std::string, std::vector<int64_t>> shape;
  const std::vector<double>& at(const std::string& name) const {
    auto it = t.find(name);
    EXPECT_NE(it, t.end()) << name;
    static const std::vector<double> empty;
    return it == t.end() ? empty : it->second;
  }
  bool has(const std::string& name) const { return t.count(name) > 0; }
};

class Builder {
 public:
  explicit Builder(uint32_t seed) : rng_(seed) {}
  void Add(const std::string& name, std::vector<int64_t> shape, double stddev, double mean = 0) {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    std::normal_distribution<double> dist(mean, stddev);
    std::vector<double> v(n);
    // Values rounded to float32 so both sides see the same weights.
    for (double& x : v) x = static_cast<float>(dist(rng_));
    c.t[name] = std::move(v);
    c.shape[name] = std::move(shape);
  }
  void Linear(const std::string& name, int in, int out, bool bias) {
    Add(name + ".weight", {out, in}, 1.0 / std::sqrt(in));
    if (bias) Add(name + ".bias", {out}, 0.1);
  }
  void Norm(const std::string& name, bool with_bias) {
    Add(name + ".weight", {kD}, 0.1, 1.0);
    if (with_bias) Add(name + ".bias", {kD}, 0.1);
  }
  Checkpoint c;

 private:
  std::mt19937 rng_;
};

Checkpoint MakeCheckpoint(Kind k) {
  Builder b(1000 + static_cast<int>(k));
  if (IsT5(k)) {
    const int inner = kHeads * kT5Dkv;
    b.Add("shared.weight", {kVocab, kD}, 0.5);
    for (int side = 0; side < 2; ++side) {
      const std::string root = side ? "decoder." : "encoder.";
      const int layers = side ? kDecLayers : kEncLayers;
      const int ffn = kEncFfn;  // T5 has one d_ff
      b.Add(root + "block.0.layer.0.SelfAttention.relative_attention_bias.weight",
            {kBuckets, kHeads}, 0.5);
      for (int l = 0; l < layers; ++l) {
        const std::string lp = absl::StrCat(root, "block.", l, ".layer.");
        for (const char* p : {"q", "k", "v"})
          b.Linear(lp + "0.SelfAttention." + p, kD, inner, false);
        b.Linear(lp + "0.SelfAttention.o", inner, kD, false);
        b.Norm(lp + "0.layer_norm", false);
        std::string ff = lp + "1.";
        if (side) {
          for (const char* p : {"q", "k", "v"}) {
            b.Linear(lp + "1.EncDecAttention." + p, kD, inner, false);
          }
          b.Linear(lp + "1.EncDecAttention.o", inner, kD, false);
          b.Norm(lp + "1.layer_norm", false);
          ff = lp + "2.";
        }
        if (k == Kind::kT5Gated) {
          b.Linear(ff + "DenseReluDense.wi_0", kD, ffn, false);
          b.Linear(ff + "DenseReluDense.wi_1", kD, ffn, false);
        } else {
          b.Linear(ff + "DenseReluDense.wi", kD, ffn, false);
        }
        b.Linear(ff + "DenseReluDense.wo", ffn, kD, false);
        b.Norm(ff + "layer_norm", false);
      }
      b.Norm(root + "final_layer_norm", false);
    }
    if (k == Kind::kT5Gated) b.Linear("lm_head", kD, kVocab, false);
    return b.c;
  }
  b.Add("model.shared.weight", {kVocab, kD}, 0.5);
  for (int side = 0; side < 2; ++side) {
    const std::string root = side ? "model.decoder." : "model.encoder.";
    const int layers = side ? kDecLayers : kEncLayers;
    const int ffn = side ? kDecFfn : kEncFfn;
    if (k != Kind::kMarian) {
      b.Add(root + "embed_positions.weight", {kMaxPos + 2, kD}, 0.5);
      b.Norm(root + "layernorm_embedding", true);
    }
    for (int l = 0; l < layers; ++l) {
      const std::string lp = absl::StrCat(root, "layers.", l, ".");
      for (const char* p : {"q_proj", "k_proj", "v_proj"})
        b.Linear(lp + "self_attn." + p, kD, kD, true);
      b.Linear(lp + "self_attn.out_proj", kD, kD, true);
      b.Norm(lp + "self_attn_layer_norm", true);
      if (side) {
        for (const char* p : {"q_proj", "k_proj", "v_proj"}) {
          b.Linear(lp + "encoder_attn." + p, kD, kD, true);
        }
        b.Linear(lp + "encoder_attn.out_proj", kD, kD, true);
        b.Norm(lp + "encoder_attn_layer_norm", true);
      }
      b.Linear(lp + "fc1", kD, ffn, true);
      b.Linear(lp + "fc2", ffn, kD, true);
      b.Norm(lp + "final_layer_norm", true);
    }
    if (k == Kind::kMbart) b.Norm(root + "layer_norm", true);
  }
  b.Add("final_logits_bias", {1, kVocab}, 0.5);
  return b.c;
}

std::string WriteCheckpoint(Kind k, const Checkpoint& c) {
  const std::string dir = maskserve::testing::MakeTempDir("seq2seq_model_test");
  SafetensorsWriter w;
  for (const auto& [name, values] : c.t) {
    std::vector<float> f(values.begin(), values.end());
    EXPECT_TRUE(w.Add(name, SafetensorsDtype::kF32, c.shape.at(name), f.data()).ok());
  }
  EXPECT_TRUE(w.Write(dir + "/model.safetensors").ok());
  EXPECT_TRUE(WriteFileAtomically(dir + "/config.json", ConfigJson(k)).ok());
  return dir;
}

// ---------------------------------------------------------------------------
// The float64 reference, from HF's modeling code.

class Naive {
 public:
  Naive(Kind k, const Checkpoint& c) : k_(k), c_(c) {}

  Mat Encoder(const std::vector<int32_t>& ids) const {
    Mat x = Embed(ids, "encoder");
    for (int l = 0; l < kEncLayers; ++l) {
      x = IsT5(k_) ? T5Layer(x, nullptr, "encoder", l) : BartLayer(x, nullptr, "encoder", l);
    }
    return FinalNorm(x, "encoder");
  }
  // Logits at every decoder position (full recompute, no cache).
  Mat Decoder(const std::vector<int32_t>& ids, const Mat& enc) const {
    Mat x = Embed(ids, "decoder");
    for (int l = 0; l < kDecLayers; ++l) {
      x = IsT5(k_) ? T5Layer(x, &enc, "decoder", l) : BartLayer(x, &enc, "decoder", l);
    }
    x = FinalNorm(x, "decoder");
    if (k_ == Kind::kT5Tied) {
      for (auto& row : x) {
        for (double& v : row) v *= std::pow(static_cast<double>(kD), -0.5);
      }
    }
    const std::string head = k_ == Kind::kT5Gated ? "lm_head.weight"
                             : IsT5(k_)           ? "shared.weight"
                                                  : "model.shared.weight";
    Mat logits = MatMulT(x, c_.at(head), kVocab);
    if (c_.has("final_logits_bias")) {
      for (auto& row : logits) {
        for (int v = 0; v < kVocab; ++v) row[v] += c_.at("final_logits_bias")[v];
      }
    }
    return logits;
  }

 private:
  std::string Root(const std::string& side) const {
    return IsT5(k_) ? side + "." : "model." + side + ".";
  }
  // x W^T (+ b); W [out, in].
  static Mat MatMulT(const Mat& x, const std::vector<double>& w, int out,
                     const std::vector<double>* b = nullptr) {
    Mat y(x.size(), std::vector<double>(out, 0.0));
    const size_t in = x.empty() ? 0 : x[0].size();
    for (size_t r = 0; r < x.size(); ++r) {
      for (int o = 0; o < out; ++o) {
        double s = b ? (*b)[o] : 0.0;
        for (size_t i = 0; i < in; ++i) s += x[r][i] * w[o * in + i];
        y[r][o] = s;
      }
    }
    return y;
  }
  Mat Lin(const Mat& x, const std::string& name, int out, bool bias) const {
    return MatMulT(x, c_.at(name + ".weight"), out, bias ? &c_.at(name + ".bias") : nullptr);
  }
  Mat Norm(const Mat& x, const std::string& name) const {
    Mat y = x;
    const std::vector<double>& g = c_.at(name + ".weight");
    for (auto& row : y) {
      const double n = static_cast<double>(row.size());
      if (IsT5(k_)) {
        double ms = 0;
        for (double v : row) ms += v * v;
        const double inv = 1.0 / std::sqrt(ms / n + 1e-6);
        for (size_t i = 0; i < row.size(); ++i) row[i] = row[i] * inv * g[i];
      } else {
        double mean = 0, var = 0;
        for (double v : row) mean += v;
        mean /= n;
        for (double v : row) var += (v - mean) * (v - mean);
        var /= n;
        const double inv = 1.0 / std::sqrt(var + 1e-5);
        const std::vector<double>& b = c_.at(name + ".bias");
        for (size_t i = 0; i < row.size(); ++i) row[i] = (row[i] - mean) * inv * g[i] + b[i];
      }
    }
    return y;
  }
  static void AddInto(Mat& x, const Mat& y) {
    for (size_t r = 0; r < x.size(); ++r) {
      for (size_t i = 0; i < x[r].size(); ++i) x[r][i] += y[r][i];
    }
  }
  static double Act(double x, const char* kind) {
    const std::string k = kind;
    if (k == "relu") return std::max(x, 0.0);
    if (k == "gelu") return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
    if (k == "gelu_new") {
      return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
    }
    return x / (1.0 + std::exp(-x));  // swish
  }
  Mat Embed(const std::vector<int32_t>& ids, const std::string& side) const {
    const std::string root = Root(side);
    const std::vector<double>& e = c_.at(IsT5(k_) ? "shared.weight" : "model.shared.weight");
    const double scale = IsT5(k_) ? 1.0 : std::sqrt(static_cast<double>(kD));
    Mat x(ids.size(), std::vector<double>(kD));
    for (size_t t = 0; t < ids.size(); ++t) {
      for (int i = 0; i < kD; ++i) x[t][i] = e[ids[t] * kD + i] * scale;
      if (k_ == Kind::kBart || k_ == Kind::kMbart) {
        // BartLearnedPositionalEmbedding: offset 2.
        const std::vector<double>& p = c_.at(root + "embed_positions.weight");
        for (int i = 0; i < kD; ++i) x[t][i] += p[(t + 2) * kD + i];
      } else if (k_ == Kind::kMarian) {
        // MarianSinusoidalPositionalEmbedding._init_weight.
        for (int j = 0; j < kD; ++j) {
          const double angle = t / std::pow(10000.0, 2.0 * (j / 2) / kD);
          if (j % 2 == 0) {
            x[t][j / 2] += std::sin(angle);
          } else {
            x[t][kD / 2 + j / 2] += std::cos(angle);
          }
        }
      }
    }
    if (k_ == Kind::kBart || k_ == Kind::kMbart) x = Norm(x, root + "layernorm_embedding");
    return x;
  }
  Mat FinalNorm(const Mat& x, const std::string& side) const {
    if (IsT5(k_)) return Norm(x, side + ".final_layer_norm");
    if (k_ == Kind::kMbart) return Norm(x, Root(side) + "layer_norm");
    return x;
  }
  // Multi-head attention of q rows against kv rows; T5: no scaling, plus
  // the relative bias of `side` (nullptr: cross-attention).
  Mat Attention(const Mat& q, const Mat& k, const Mat& v, int hd, bool causal,
                const std::string* bias_side) const {
    const double scale = IsT5(k_) ? 1.0 : 1.0 / std::sqrt(static_cast<double>(hd));
    Mat out(q.size(), std::vector<double>(kHeads * hd, 0.0));
    for (int h = 0; h < kHeads; ++h) {
      for (size_t i = 0; i < q.size(); ++i) {
        std::vector<double> s(k.size(), -INFINITY);
        double mx = -INFINITY;
        for (size_t j = 0; j < k.size(); ++j) {
          if (causal && j > i) continue;
          double dot = 0;
          for (int c = 0; c < hd; ++c) dot += q[i][h * hd + c] * k[j][h * hd + c];
          s[j] = dot * scale;
          if (bias_side != nullptr) {
            const bool enc = *bias_side == "encoder";
            const int bucket = T5RelativePositionBucket(static_cast<int>(j) - static_cast<int>(i),
                                                        enc, kBuckets, kMaxDistance);
            s[j] += c_.at(
                *bias_side +
                ".block.0.layer.0.SelfAttention.relative_attention_bias.weight")[bucket * kHeads +
                                                                                 h];
          }
          mx = std::max(mx, s[j]);
        }
        double sum = 0;
        for (size_t j = 0; j < k.size(); ++j) {
          if (s[j] == -INFINITY) continue;
          const double e = std::exp(s[j] - mx);
          sum += e;
          for (int c = 0; c < hd; ++c) out[i][h * hd + c] += e * v[j][h * hd + c];
        }
        for (int c = 0; c < hd; ++c) out[i][h * hd + c] /= sum;
      }
    }
    return out;
  }
  // BartEncoderLayer / BartDecoderLayer (post-LN), MBart* (pre-LN).
  Mat BartLayer(Mat x, const Mat* enc, const std::string& side, int l) const {
    const std::string lp = absl::StrCat(Root(side), "layers.", l, ".");
    const bool pre = k_ == Kind::kMbart;
    const int hd = kD / kHeads;
    auto attn_block = [&](const std::string& name, const std::string& norm, const Mat* kv_src,
                          bool causal) {
      const Mat h = pre ? Norm(x, norm) : x;
      const Mat& kvs = kv_src ? *kv_src : h;
      const Mat a =
          Attention(Lin(h, name + ".q_proj", kD, true), Lin(kvs, name + ".k_proj", kD, true),
                    Lin(kvs, name + ".v_proj", kD, true), hd, causal, nullptr);
      AddInto(x, Lin(a, name + ".out_proj", kD, true));
      if (!pre) x = Norm(x, norm);
    };
    attn_block(lp + "self_attn", lp + "self_attn_layer_norm", nullptr, enc != nullptr);
    if (enc) attn_block(lp + "encoder_attn", lp + "encoder_attn_layer_norm", enc, false);
    const int ffn = enc ? kDecFfn : kEncFfn;
    const Mat h = pre ? Norm(x, lp + "final_layer_norm") : x;
    Mat f = Lin(h, lp + "fc1", ffn, true);
    for (auto& row : f) {
      for (double& v : row) v = Act(v, k_ == Kind::kMarian ? "swish" : "gelu");
    }
    AddInto(x, Lin(f, lp + "fc2", kD, true));
    if (!pre) x = Norm(x, lp + "final_layer_norm");
    return x;
  }
  // T5Block: pre-RMSNorm self-attention (+ bias), cross-attention, FFN.
  Mat T5Layer(Mat x, const Mat* enc, const std::string& side, int l) const {
    const std::string lp = absl::StrCat(side, ".block.", l, ".layer.");
    const int inner = kHeads * kT5Dkv;
    {
      const Mat h = Norm(x, lp + "0.layer_norm");
      const std::string sa = lp + "0.SelfAttention.";
      const Mat a = Attention(Lin(h, sa + "q", inner, false), Lin(h, sa + "k", inner, false),
                              Lin(h, sa + "v", inner, false), kT5Dkv, enc != nullptr, &side);
      AddInto(x, Lin(a, sa + "o", kD, false));
    }
    std::string ff = lp + "1.";
    if (enc) {
      const Mat h = Norm(x, lp + "1.layer_norm");
      const std::string ca = lp + "1.EncDecAttention.";
      const Mat a = Attention(Lin(h, ca + "q", inner, false), Lin(*enc, ca + "k", inner, false),
                              Lin(*enc, ca + "v", inner, false), kT5Dkv, false, nullptr);
      AddInto(x, Lin(a, ca + "o", kD, false));
      ff = lp + "2.";
    }
    const int ffn = kEncFfn;  // T5 has one d_ff
    const Mat h = Norm(x, ff + "layer_norm");
    const std::string dr = ff + "DenseReluDense.";
    Mat f;
    if (k_ == Kind::kT5Gated) {
      f = Lin(h, dr + "wi_0", ffn, false);
      const Mat up = Lin(h, dr + "wi_1", ffn, false);
      for (size_t r = 0; r < f.size(); ++r) {
        for (int i = 0; i < ffn; ++i) f[r][i] = Act(f[r][i], "gelu_new") * up[r][i];
      }
    } else {
      f = Lin(h, dr + "wi", ffn, false);
      for (auto& row : f) {
        for (double& v : row) v = Act(v, "relu");
      }
    }
    AddInto(x, Lin(f, dr + "wo", kD, false));
    return x;
  }

  Kind k_;
  const Checkpoint& c_;
};

// ---------------------------------------------------------------------------

struct Fixture {
  Kind kind;
  Checkpoint ckpt;
  std::unique_ptr<Seq2SeqModel> model;
};

std::unique_ptr<Fixture> MakeFixture(Kind k) {
  auto f = std::make_unique<Fixture>();
  f->kind = k;
  f->ckpt = MakeCheckpoint(k);
  const std::string dir = WriteCheckpoint(k, f->ckpt);
  absl::StatusOr<ModelConfig> config = LoadModelConfig(dir);
  EXPECT_TRUE(config.ok()) << config.status();
  if (!config.ok()) return nullptr;
  absl::StatusOr<Seq2SeqArch> arch = Seq2SeqArchFromConfig(*config);
  EXPECT_TRUE(arch.ok()) << arch.status();
  if (!arch.ok()) return nullptr;
  absl::StatusOr<std::unique_ptr<SafetensorsModel>> w = SafetensorsModel::Open(dir);
  EXPECT_TRUE(w.ok()) << w.status();
  if (!w.ok()) return nullptr;
  absl::StatusOr<std::unique_ptr<Seq2SeqModel>> m = Seq2SeqModel::Create(*arch, **w, {});
  EXPECT_TRUE(m.ok()) << m.status();
  if (!m.ok()) return nullptr;
  f->model = std::move(*m);
  return f;
}

MaskSpec Causal() {
  MaskSpec m;
  m.kind = MaskKind::kCausal;
  return m;
}

// Runs `chunks` (token runs) through one fresh decoder sequence, one step
// per chunk; returns the logits after each chunk.
std::vector<std::vector<float>> RunChunks(const GenerativeModel& model, const EncoderState* enc,
                                          const std::vector<std::vector<int32_t>>& chunks) {
  std::unique_ptr<KvCachePool> pool = MakePool(model, 256);
  const SeqId seq = pool->AllocateSequence();
  int cached = 0;
  std::vector<std::vector<float>> out;
  for (const std::vector<int32_t>& c : chunks) {
    EXPECT_TRUE(pool->Append(seq, static_cast<int>(c.size())).ok());
    StepSequence ss;
    ss.kv_seq = seq;
    ss.num_cached = cached;
    ss.tokens = c;
    ss.mask = Causal();
    ss.encoder = enc;
    std::vector<float> logits;
    const absl::Status s = model.Forward({&ss, 1}, pool.get(), &logits);
    EXPECT_TRUE(s.ok()) << s;
    out.push_back(std::move(logits));
    cached += static_cast<int>(c.size());
  }
  return out;
}

class Seq2SeqModelTest : public ::testing::TestWithParam<Kind> {};

TEST_P(Seq2SeqModelTest, CachedDecodeEqualsNaiveReference) {
  std::unique_ptr<Fixture> f = MakeFixture(GetParam());
  ASSERT_NE(f, nullptr);
  const Seq2SeqModel& m = *f->model;
  const Naive naive(f->kind, f->ckpt);
  EXPECT_EQ(m.kind(), GenerationKind::kEncoderDecoder);
  EXPECT_EQ(m.vocab_size(), kVocab);
  const std::vector<int32_t> source = {5, 17, 3, 44, 9, 23, 2};
  // Encoder output.
  const absl::Span<const int32_t> one[] = {source};
  absl::StatusOr<std::vector<float>> h = m.EncoderHiddenStates(one);
  ASSERT_TRUE(h.ok()) << h.status();
  const Mat enc = naive.Encoder(source);
  double worst_h = 0;
  for (size_t t = 0; t < source.size(); ++t) {
    for (int i = 0; i < kD; ++i)
      worst_h = std::max(worst_h, std::abs((*h)[t * kD + i] - enc[t][i]));
  }
  EXPECT_LE(worst_h, kVsNaiveTol) << Name(f->kind);
  // Greedy with the cache: prefill the start token + a 2-token prefix, then
  // one token per step; every step's logits against the full recompute.
  absl::StatusOr<std::shared_ptr<const EncoderState>> state = m.EncodeSource(source);
  ASSERT_TRUE(state.ok()) << state.status();
  std::vector<int32_t> ids = {m.decoder_start_token_id(), 7, 11};
  std::vector<std::vector<int32_t>> chunks = {ids};
  double worst = 0;
  for (int step = 0; step < 8; ++step) {
    const std::vector<std::vector<float>> lg = RunChunks(m, state->get(), chunks);
    const Mat want = naive.Decoder(ids, enc);
    const std::vector<float>& got = lg.back();
    ASSERT_EQ(got.size(), static_cast<size_t>(kVocab));
    for (int v = 0; v < kVocab; ++v) worst = std::max(worst, std::abs(got[v] - want.back()[v]));
    const int32_t next = testing::Argmax(got);
    ids.push_back(next);
    chunks.push_back({next});
  }
  EXPECT_LE(worst, kVsNaiveTol) << Name(f->kind);
  std::printf(
      "[seq2seq] %-30s encoder max|d| %.3g, logits max|d| %.3g vs float64 HF re-statement\n",
      Name(f->kind), worst_h, worst);
}

TEST_P(Seq2SeqModelTest, CacheEqualsRecomputeAndChunking) {
  std::unique_ptr<Fixture> f = MakeFixture(GetParam());
  ASSERT_NE(f, nullptr);
  const Seq2SeqModel& m = *f->model;
  const std::vector<int32_t> source = {8, 1, 30, 12};
  absl::StatusOr<std::shared_ptr<const EncoderState>> state = m.EncodeSource(source);
  ASSERT_TRUE(state.ok());
  const std::vector<int32_t> ids = {m.decoder_start_token_id(), 4, 19, 33, 7, 41, 6};
  // Whole sequence in one step.
  const std::vector<float> whole = RunChunks(m, state->get(), {ids}).back();
  // Token by token.
  std::vector<std::vector<int32_t>> singles;
  for (int32_t id : ids) singles.push_back({id});
  const std::vector<float> stepwise = RunChunks(m, state->get(), singles).back();
  // Two chunks (a chunked prefill).
  const std::vector<float> chunked =
      RunChunks(m, state->get(), {{ids.begin(), ids.begin() + 3}, {ids.begin() + 3, ids.end()}})
          .back();
  EXPECT_LE(MaxAbsDiff(whole, stepwise), kCacheTol) << Name(f->kind);
  EXPECT_LE(MaxAbsDiff(whole, chunked), kCacheTol) << Name(f->kind);
}

TEST_P(Seq2SeqModelTest, PackedRequestsEqualSingleRuns) {
  std::unique_ptr<Fixture> f = MakeFixture(GetParam());
  ASSERT_NE(f, nullptr);
  const Seq2SeqModel& m = *f->model;
  const std::vector<std::vector<int32_t>> sources = {{3, 4, 5}, {10, 20, 30, 40, 45, 2}, {7}};
  const std::vector<std::vector<int32_t>> decoder = {{m.decoder_start_token_id(), 9, 9, 13},
                                                     {m.decoder_start_token_id()},
                                                     {m.decoder_start_token_id(), 5}};
  // Singles.
  std::vector<std::vector<float>> single_logits;
  std::vector<std::vector<float>> single_hidden;
  for (size_t b = 0; b < sources.size(); ++b) {
    absl::StatusOr<std::shared_ptr<const EncoderState>> s = m.EncodeSource(sources[b]);
    ASSERT_TRUE(s.ok());
    // Prefill all but the last token, then the last one alone.
    std::vector<std::vector<int32_t>> chunks;
    if (decoder[b].size() > 1) chunks.push_back({decoder[b].begin(), decoder[b].end() - 1});
    chunks.push_back({decoder[b].back()});
    single_logits.push_back(RunChunks(m, s->get(), chunks).back());
    const absl::Span<const int32_t> one[] = {sources[b]};
    single_hidden.push_back(*m.EncoderHiddenStates(one));
  }
  // Packed: one encoder pass for all, then one step with all prefixes
  // (except the last tokens) and one step mixing decode tokens.
  std::vector<absl::Span<const int32_t>> spans(sources.begin(), sources.end());
  absl::StatusOr<std::vector<float>> hidden = m.EncoderHiddenStates(spans);
  ASSERT_TRUE(hidden.ok());
  size_t row = 0;
  for (size_t b = 0; b < sources.size(); ++b) {
    const absl::Span<const float> part(hidden->data() + row * kD, sources[b].size() * kD);
    EXPECT_LE(MaxAbsDiff(part, single_hidden[b]), kCacheTol) << b;
    row += sources[b].size();
  }
  absl::StatusOr<std::vector<std::shared_ptr<const EncoderState>>> states = m.EncodeSources(spans);
  ASSERT_TRUE(states.ok()) << states.status();
  std::unique_ptr<KvCachePool> pool = MakePool(m, 256);
  std::vector<SeqId> seqs;
  std::vector<int> cached(sources.size(), 0);
  std::vector<StepSequence> batch;
  for (size_t b = 0; b < sources.size(); ++b) {
    seqs.push_back(pool->AllocateSequence());
    if (decoder[b].size() == 1) continue;
    const int n = static_cast<int>(decoder[b].size()) - 1;
    ASSERT_TRUE(pool->Append(seqs[b], n).ok());
    StepSequence ss;
    ss.kv_seq = seqs[b];
    ss.tokens = absl::MakeConstSpan(decoder[b]).subspan(0, n);
    ss.mask = Causal();
    ss.want_logits = false;
    ss.encoder = (*states)[b].get();
    batch.push_back(ss);
    cached[b] = n;
  }
  std::vector<float> logits;
  ASSERT_TRUE(m.Forward(batch, pool.get(), &logits).ok());
  EXPECT_TRUE(logits.empty());
  batch.clear();
  for (size_t b = 0; b < sources.size(); ++b) {
    ASSERT_TRUE(pool->Append(seqs[b], 1).ok());
    StepSequence ss;
    ss.kv_seq = seqs[b];
    ss.num_cached = cached[b];
    ss.tokens = absl::MakeConstSpan(decoder[b]).subspan(cached[b], 1);
    ss.mask = Causal();
    ss.encoder = (*states)[b].get();
    batch.push_back(ss);
  }
  ASSERT_TRUE(m.Forward(batch, pool.get(), &logits).ok());
  ASSERT_EQ(logits.size(), sources.size() * kVocab);
  for (size_t b = 0; b < sources.size(); ++b) {
    EXPECT_LE(MaxAbsDiff(absl::MakeConstSpan(logits.data() + b * kVocab, kVocab), single_logits[b]),
              kCacheTol)
        << Name(f->kind) << " request " << b;
  }
}

INSTANTIATE_TEST_SUITE_P(Families, Seq2SeqModelTest,
                         ::testing::Values(Kind::kBart, Kind::kMbart, Kind::kMarian, Kind::kT5Gated,
                                           Kind::kT5Tied),
                         [](const ::testing::TestParamInfo<Kind>& info) {
                           switch (info.param) {
                             case Kind::kBart:
                               return std::string("Bart");
                             case Kind::kMbart:
                               return std::string("Mbart");
                             case Kind::kMarian:
                               return std::string("Marian");
                             case Kind::kT5Gated:
                               return std::string("T5Gated");
                             case Kind::kT5Tied:
                               return std::string("T5Tied");
                           }
                           return std::string("x");
                         });

TEST(Seq2SeqModelErrorsTest, NameTheCulprit) {
  std::unique_ptr<Fixture> f = MakeFixture(Kind::kBart);
  ASSERT_NE(f, nullptr);
  const Seq2SeqModel& m = *f->model;
  // Sources.
  EXPECT_THAT(m.EncodeSource({}).status().message(), HasSubstr("source 0 has no tokens"));
  const std::vector<int32_t> bad = {3, kVocab};
  EXPECT_THAT(m.EncodeSource(bad).status().message(),
              HasSubstr("token id 50 at position 1 is outside the source vocabulary"));
  const std::vector<int32_t> too_long(kMaxPos + 1, 3);
  EXPECT_THAT(m.EncodeSource(too_long).status().message(), HasSubstr("at most 64"));
  const std::vector<int32_t> ok = {3}, empty;
  const absl::Span<const int32_t> two[] = {ok, empty};
  EXPECT_THAT(m.EncodeSources(two).status().message(), HasSubstr("source 1 has no tokens"));
  // Steps.
  std::unique_ptr<KvCachePool> pool = MakePool(m, 64);
  const SeqId seq = pool->AllocateSequence();
  ASSERT_TRUE(pool->Append(seq, 1).ok());
  const std::vector<int32_t> start = {m.decoder_start_token_id()};
  StepSequence ss;
  ss.kv_seq = seq;
  ss.tokens = start;
  ss.mask = Causal();
  std::vector<float> logits;
  EXPECT_THAT(m.Forward({&ss, 1}, pool.get(), &logits).message(),
              HasSubstr("sequence 0: needs the EncoderState"));
  MaskSpec uni;
  uni.kind = MaskKind::kUnilm;
  uni.prefix_length = 1;
  EXPECT_THAT(m.ValidateMask(uni).message(), HasSubstr("UNILM"));
  EXPECT_FALSE(m.ValidateMask(MaskSpec{}).ok());
  EXPECT_TRUE(m.ValidateMask(Causal()).ok());
  // A state of another model instance is refused.
  std::unique_ptr<Fixture> other = MakeFixture(Kind::kBart);
  ASSERT_NE(other, nullptr);
  absl::StatusOr<std::shared_ptr<const EncoderState>> foreign = other->model->EncodeSource(ok);
  ASSERT_TRUE(foreign.ok());
  ss.encoder = foreign->get();
  EXPECT_THAT(m.Forward({&ss, 1}, pool.get(), &logits).message(),
              HasSubstr("needs the EncoderState"));
}

// Drives one RequestDecoder the way the ContinuousBatcher does (prefill,
// then one token per step) until it is done.
std::vector<GeneratedSequence> RunRequest(const GenerativeModel& model,
                                          std::unique_ptr<RequestDecoder> d) {
  std::unique_ptr<KvCachePool> pool = MakePool(model, 512);
  std::vector<RequestDecoder::PendingInput> pending;
  std::vector<float> logits;
  for (int guard = 0; guard < 1000 && !d->done(); ++guard) {
    d->PendingInputs(&pending);
    std::vector<StepSequence> seqs;
    for (const auto& p : pending) {
      absl::StatusOr<StepSequence> s = d->PrepareChunk(pool.get(), p.slot, p.tokens);
      EXPECT_TRUE(s.ok()) << s.status();
      if (!s.ok()) return {};
      seqs.push_back(*s);
    }
    EXPECT_TRUE(model.Forward(seqs, pool.get(), &logits).ok());
    const int V = model.vocab_size();
    for (size_t i = 0; i < pending.size(); ++i) {
      EXPECT_TRUE(d->CompleteChunk(pending[i].slot, pending[i].tokens,
                                   absl::MakeConstSpan(logits.data() + i * V, V))
                      .ok());
    }
    EXPECT_TRUE(d->Advance(pool.get()).ok());
  }
  EXPECT_TRUE(d->done());
  return d->TakeResults();
}

// Greedy ids straight from the model (one sequence, cache), `n` tokens.
std::vector<int32_t> DirectGreedy(const GenerativeModel& m, absl::Span<const int32_t> source,
                                  std::vector<int32_t> decoder, int n) {
  absl::StatusOr<std::shared_ptr<const EncoderState>> state = m.EncodeSource(source);
  EXPECT_TRUE(state.ok()) << state.status();
  std::vector<std::vector<int32_t>> chunks = {decoder};
  std::vector<int32_t> out;
  for (int t = 0; t < n; ++t) {
    const int32_t next = testing::Argmax(RunChunks(m, state->get(), chunks).back());
    out.push_back(next);
    chunks.push_back({next});
  }
  return out;
}

// GPT-2's bytes_to_unicode character of a printable ASCII byte is itself;
// space is U+0120.
std::string TinyBpeVocab() {
  std::string v = R"({"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, )";
  for (int c = 0; c < 26; ++c)
    absl::StrAppend(&v, "\"", std::string(1, 'a' + c), "\": ", 4 + c, ", ");
  absl::StrAppend(&v, R"("\u0120": 30, "hi": 31, "\u0120w": 32})");
  return v;
}

TEST(Seq2SeqLoadedModelTest, BartWithByteLevelBpe) {
  Checkpoint c = MakeCheckpoint(Kind::kBart);
  const std::string dir = WriteCheckpoint(Kind::kBart, c);
  ASSERT_TRUE(WriteFileAtomically(dir + "/vocab.json", TinyBpeVocab()).ok());
  ASSERT_TRUE(WriteFileAtomically(dir + "/merges.txt", "#version: 0.2\nh i\n\xC4\xA0 w\n").ok());
  ASSERT_TRUE(
      WriteFileAtomically(dir + "/tokenizer_config.json", R"({"tokenizer_class": "BartTokenizer"})")
          .ok());
  absl::StatusOr<std::unique_ptr<LoadedModel>> lm = LoadedModel::Load({.path = dir});
  ASSERT_TRUE(lm.ok()) << lm.status();
  const GenerativeModel& m = *(*lm)->generator();
  ASSERT_EQ(m.kind(), GenerationKind::kEncoderDecoder);
  EXPECT_EQ((*lm)->tokenizer(), (*lm)->target_tokenizer());
  EXPECT_EQ((*lm)->description().architecture, "bart");
  GenerationInput in;
  in.source = "hi world";
  in.target_prefix = "hi";
  absl::StatusOr<GenerationPrompt> p =
      BuildGenerationPrompt(m, (*lm)->tokenizer(), in, (*lm)->target_tokenizer());
  ASSERT_TRUE(p.ok()) << p.status();
  // <s> hi Ġw o r l d </s>, decoding from </s> (BART's decoder start) + prefix.
  EXPECT_EQ(p->source_ids, (std::vector<int32_t>{0, 31, 32, 18, 21, 15, 7, 2}));
  EXPECT_EQ(p->ids, (std::vector<int32_t>{2, 31}));
  EXPECT_EQ(p->prompt_tokens, 10);
  DecodeOptions o;
  o.max_new_tokens = 6;
  o.ignore_eos = true;
  absl::StatusOr<std::unique_ptr<RequestDecoder>> d =
      RequestDecoder::Create(&m, (*lm)->target_tokenizer(), *p, o);
  ASSERT_TRUE(d.ok()) << d.status();
  const std::vector<GeneratedSequence> r = RunRequest(m, std::move(*d));
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].ids, DirectGreedy(m, p->source_ids, p->ids, 6));
}

TEST(Seq2SeqLoadedModelTest, MarianWithSourceAndTargetSpm) {
  MASKSERVE_REQUIRE_SHARED(spm, "golden/models/t5-mini/spiece.model");
  Checkpoint c = MakeCheckpoint(Kind::kMarian);
  const std::string dir = WriteCheckpoint(Kind::kMarian, c);
  std::filesystem::create_symlink(spm, dir + "/source.spm");
  std::filesystem::create_symlink(spm, dir + "/target.spm");
  ASSERT_TRUE(WriteFileAtomically(dir + "/vocab.json",
                                  "{\"</s>\": 0, \"<unk>\": 1, \"\\u2581The\": 2, "
                                  "\"\\u2581house\": 3, \"<pad>\": 49}")
                  .ok());
  absl::StatusOr<std::unique_ptr<LoadedModel>> lm = LoadedModel::Load({.path = dir});
  ASSERT_TRUE(lm.ok()) << lm.status();
  const GenerativeModel& m = *(*lm)->generator();
  EXPECT_NE((*lm)->tokenizer(), (*lm)->target_tokenizer());
  EXPECT_EQ(m.decoder_start_token_id(), 49);
  GenerationInput in;
  in.prompt = "The house is";  // a plain prompt is the source
  in.target_prefix = "The";
  absl::StatusOr<GenerationPrompt> p =
      BuildGenerationPrompt(m, (*lm)->tokenizer(), in, (*lm)->target_tokenizer());
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->source_ids, (std::vector<int32_t>{2, 3, 1, 0}));  // "▁is" is not in vocab.json
  EXPECT_EQ(p->ids, (std::vector<int32_t>{49, 2}));
  DecodeOptions o;
  o.strategy = DecodeStrategy::kBeam;
  o.beam_width = 3;
  o.num_return_sequences = 2;
  o.max_new_tokens = 5;
  absl::StatusOr<std::unique_ptr<RequestDecoder>> d =
      RequestDecoder::Create(&m, (*lm)->target_tokenizer(), *p, o);
  ASSERT_TRUE(d.ok()) << d.status();
  const std::vector<GeneratedSequence> r = RunRequest(m, std::move(*d));
  ASSERT_EQ(r.size(), 2u);
  EXPECT_GE(r[0].score, r[1].score);
}

TEST(Seq2SeqArchTest, FamiliesResolveHfDefaults) {
  struct Case {
    Kind kind;
    bool pre_norm, final_norm, ln_embedding;
    Seq2SeqArch::Positions positions;
    int offset;
    int32_t start;
  };
  for (const Case& c :
       {Case{Kind::kBart, false, false, true, Seq2SeqArch::Positions::kLearned, 2, 2},
        Case{Kind::kMbart, true, true, true, Seq2SeqArch::Positions::kLearned, 2, 2},
        Case{Kind::kMarian, false, false, false, Seq2SeqArch::Positions::kSinusoidalMarian, 0, 49},
        Case{Kind::kT5Gated, true, true, false, Seq2SeqArch::Positions::kNone, 0, 0}}) {
    absl::StatusOr<ModelConfig> config = ParseModelConfig(ConfigJson(c.kind));
    ASSERT_TRUE(config.ok()) << config.status();
    absl::StatusOr<Seq2SeqArch> a = Seq2SeqArchFromConfig(*config);
    ASSERT_TRUE(a.ok()) << a.status();
    EXPECT_EQ(a->pre_norm, c.pre_norm) << Name(c.kind);
    EXPECT_EQ(a->final_norm, c.final_norm) << Name(c.kind);
    EXPECT_EQ(a->layernorm_embedding, c.ln_embedding) << Name(c.kind);
    EXPECT_EQ(a->positions, c.positions) << Name(c.kind);
    EXPECT_EQ(a->position_offset, c.offset) << Name(c.kind);
    EXPECT_EQ(a->decoder_start_token_id, c.start) << Name(c.kind);
  }
  absl::StatusOr<ModelConfig> t5 = ParseModelConfig(ConfigJson(Kind::kT5Gated));
  ASSERT_TRUE(t5.ok());
  absl::StatusOr<Seq2SeqArch> a = Seq2SeqArchFromConfig(*t5);
  ASSERT_TRUE(a.ok());
  EXPECT_TRUE(a->gated_ffn);
  EXPECT_EQ(a->activation, Seq2SeqArch::Act::kGeluTanh);
  EXPECT_FALSE(a->scale_attention);
  EXPECT_FALSE(a->scale_decoder_output);  // untied
  EXPECT_EQ(a->head_dim, kT5Dkv);
  EXPECT_EQ(a->max_source_positions, 2048);
  absl::StatusOr<ModelConfig> gpt2 =
      ParseModelConfig(R"({"model_type": "gpt2", "n_embd": 8, "n_layer": 1, "n_head": 2,
                          "vocab_size": 10})");
  ASSERT_TRUE(gpt2.ok());
  EXPECT_EQ(Seq2SeqArchFromConfig(*gpt2).status().code(), absl::StatusCode::kUnimplemented);
}

}  // namespace
}  // namespace maskserve::engine
