// CausalLm (GPT-2, Llama, GPT-NeoX blocks) on tiny generated checkpoints
// (random weights written with SafetensorsWriter, config.json parsed by the
// real loader) against a naive double-precision forward pass written here
// from HF transformers 4.31's GPT2 / Llama / GPTNeoX code: explicit per-head
// softmax over an explicit mask matrix, no packing, no cache, full recompute.
//
// Covers: logits vs the reference under every mask a causal LM accepts,
// cached incremental decode == full recompute at every step, chunked
// prefill == one-shot prefill, a packed batch of mixed prefill chunks and
// decode tokens == the sequences one by one, GQA, untied heads, partial
// rotary, sequential and parallel residuals, GPT-2 attention-scale switches,
// name prefixes, errors (missing tensors, shapes, ids, positions, masks) and
// LoadedModel wiring (tasks, eos from generation_config.json).
#include "engine/causal_lm.h"

#include <cmath>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/causal_lm_arch.h"
#include "engine/generation_config.h"
#include "engine/loaded_model.h"
#include "engine/model_config.h"
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
using testing::Recompute;
using testing::StepOne;

// FP32 engine vs the float64 reference on O(1) logits.
constexpr double kTol = 1e-4;

struct Tensor {
  std::vector<int64_t> shape;
  std::vector<float> data;
};
using Checkpoint = std::map<std::string, Tensor>;

// A tiny model: its config.json and its tensors.
struct Spec {
  std::string family;  // "gpt2", "llama", "gpt_neox"
  int hidden = 32, layers = 2, heads = 4, kv_heads = 4, inner = 48, vocab = 61, max_pos = 64;
  bool tie = true;                   // llama / neox: tie_word_embeddings
  double rotary_pct = 0.5;           // neox
  bool parallel = true;              // neox use_parallel_residual
  bool inverse_layer_scale = false;  // gpt2 scale_attn_by_inverse_layer_idx
  bool scale_weights = true;         // gpt2 scale_attn_weights
  std::string prefix = "default";    // tensor-name prefix; "default" = the family's
  std::string act = "";              // hidden_act override
  int head_dim() const { return hidden / heads; }
};

std::string ConfigJson(const Spec& s) {
  if (s.family == "gpt2") {
    return absl::StrCat(R"({"model_type": "gpt2", "n_embd": )", s.hidden, R"(, "n_layer": )",
                        s.layers, R"(, "n_head": )", s.heads, R"(, "n_inner": )", s.inner,
                        R"(, "vocab_size": )", s.vocab, R"(, "n_positions": )", s.max_pos,
                        R"(, "activation_function": ")", s.act.empty() ? "gelu_new" : s.act,
                        R"(", "layer_norm_epsilon": 1e-05, "scale_attn_by_inverse_layer_idx": )",
                        s.inverse_layer_scale ? "true" : "false", R"(, "scale_attn_weights": )",
                        s.scale_weights ? "true" : "false",
                        R"(, "bos_token_id": 3, "eos_token_id": 3})");
  }
  if (s.family == "llama") {
    return absl::StrCat(R"({"model_type": "llama", "hidden_size": )", s.hidden,
                        R"(, "num_hidden_layers": )", s.layers, R"(, "num_attention_heads": )",
                        s.heads, R"(, "num_key_value_heads": )", s.kv_heads,
                        R"(, "intermediate_size": )", s.inner, R"(, "vocab_size": )", s.vocab,
                        R"(, "max_position_embeddings": )", s.max_pos,
                        R"(, "rms_norm_eps": 1e-05, "rope_theta": 500.0, "hidden_act": "silu",)",
                        R"( "tie_word_embeddings": )", s.tie ? "true" : "false",
                        R"(, "bos_token_id": 1, "eos_token_id": 2})");
  }
  return absl::StrCat(R"({"model_type": "gpt_neox", "hidden_size": )", s.hidden,
                      R"(, "num_hidden_layers": )", s.layers, R"(, "num_attention_heads": )",
                      s.heads, R"(, "intermediate_size": )", s.inner, R"(, "vocab_size": )",
                      s.vocab, R"(, "max_position_embeddings": )", s.max_pos, R"(, "rotary_pct": )",
                      s.rotary_pct,
                      R"(, "rotary_emb_base": 10000, "layer_norm_eps": 1e-05, "hidden_act": ")",
                      s.act.empty() ? "gelu" : s.act, R"(", "use_parallel_residual": )",
                      s.parallel ? "true" : "false", R"(, "tie_word_embeddings": )",
                      s.tie ? "true" : "false", R"(, "bos_token_id": 0, "eos_token_id": 0})");
}

std::string Prefix(const Spec& s) {
  if (s.prefix != "default") return s.prefix;
  if (s.family == "gpt2") return "transformer.";
  if (s.family == "llama") return "model.";
  return "gpt_neox.";
}

Checkpoint MakeCheckpoint(const Spec& s, uint32_t seed) {
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
  const int H = s.hidden, I = s.inner, V = s.vocab, hd = s.head_dim();
  const std::string p = Prefix(s);
  auto ln = [&](const std::string& name, bool bias) {
    add(name + ".weight", {H}, 1, 0.1);
    if (bias) add(name + ".bias", {H}, 0, 0.1);
  };
  if (s.family == "gpt2") {
    add(p + "wte.weight", {V, H}, 0, 0.3);
    add(p + "wpe.weight", {s.max_pos, H}, 0, 0.3);
    for (int l = 0; l < s.layers; ++l) {
      const std::string lp = absl::StrCat(p, "h.", l, ".");
      ln(lp + "ln_1", true);
      ln(lp + "ln_2", true);
      add(lp + "attn.c_attn.weight", {H, 3 * H}, 0, 1 / std::sqrt(H));  // Conv1D [in, out]
      add(lp + "attn.c_attn.bias", {3 * H}, 0, 0.02);
      add(lp + "attn.c_proj.weight", {H, H}, 0, 1 / std::sqrt(H));
      add(lp + "attn.c_proj.bias", {H}, 0, 0.02);
      add(lp + "mlp.c_fc.weight", {H, I}, 0, 1 / std::sqrt(H));
      add(lp + "mlp.c_fc.bias", {I}, 0, 0.02);
      add(lp + "mlp.c_proj.weight", {I, H}, 0, 1 / std::sqrt(I));
      add(lp + "mlp.c_proj.bias", {H}, 0, 0.02);
      // Old GPT-2 checkpoints store the causal-mask buffers: ignored.
      add(lp + "attn.bias", {1, 1, 4, 4}, 0, 1);
    }
    ln(p + "ln_f", true);
  } else if (s.family == "llama") {
    add(p + "embed_tokens.weight", {V, H}, 0, 0.3);
    for (int l = 0; l < s.layers; ++l) {
      const std::string lp = absl::StrCat(p, "layers.", l, ".");
      ln(lp + "input_layernorm", false);
      ln(lp + "post_attention_layernorm", false);
      add(lp + "self_attn.q_proj.weight", {s.heads * hd, H}, 0, 1 / std::sqrt(H));
      add(lp + "self_attn.k_proj.weight", {s.kv_heads * hd, H}, 0, 1 / std::sqrt(H));
      add(lp + "self_attn.v_proj.weight", {s.kv_heads * hd, H}, 0, 1 / std::sqrt(H));
      add(lp + "self_attn.o_proj.weight", {H, s.heads * hd}, 0, 1 / std::sqrt(H));
      add(lp + "mlp.gate_proj.weight", {I, H}, 0, 1 / std::sqrt(H));
      add(lp + "mlp.up_proj.weight", {I, H}, 0, 1 / std::sqrt(H));
      add(lp + "mlp.down_proj.weight", {H, I}, 0, 1 / std::sqrt(I));
    }
    ln(p + "norm", false);
    if (!s.tie) add("lm_head.weight", {V, H}, 0, 1 / std::sqrt(H));
  } else {
    add(p + "embed_in.weight", {V, H}, 0, 0.3);
    for (int l = 0; l < s.layers; ++l) {
      const std::string lp = absl::StrCat(p, "layers.", l, ".");
      ln(lp + "input_layernorm", true);
      ln(lp + "post_attention_layernorm", true);
      add(lp + "attention.query_key_value.weight", {3 * H, H}, 0, 1 / std::sqrt(H));
      add(lp + "attention.query_key_value.bias", {3 * H}, 0, 0.02);
      add(lp + "attention.dense.weight", {H, H}, 0, 1 / std::sqrt(H));
      add(lp + "attention.dense.bias", {H}, 0, 0.02);
      add(lp + "mlp.dense_h_to_4h.weight", {I, H}, 0, 1 / std::sqrt(H));
      add(lp + "mlp.dense_h_to_4h.bias", {I}, 0, 0.02);
      add(lp + "mlp.dense_4h_to_h.weight", {H, I}, 0, 1 / std::sqrt(I));
      add(lp + "mlp.dense_4h_to_h.bias", {H}, 0, 0.02);
      // Buffers some NeoX checkpoints carry: ignored.
      const int rd = static_cast<int>(hd * s.rotary_pct);
      add(lp + "attention.rotary_emb.inv_freq", {rd / 2}, 0, 1);
    }
    ln(p + "final_layer_norm", true);
    if (!s.tie) add("embed_out.weight", {V, H}, 0, 1 / std::sqrt(H));
  }
  return ck;
}

std::string WriteModelDir(const Spec& s, const Checkpoint& ck,
                          const std::string& generation_config = "") {
  SafetensorsWriter w;
  for (const auto& [name, t] : ck) {
    EXPECT_TRUE(w.Add(name, SafetensorsDtype::kF32, t.shape, t.data.data()).ok()) << name;
  }
  const std::string dir = maskserve::testing::MakeTempDir("causal_lm_test");
  EXPECT_TRUE(w.Write(dir + "/model.safetensors").ok());
  EXPECT_TRUE(WriteFileAtomically(dir + "/config.json", ConfigJson(s)).ok());
  // Any tokenizer does for these tests: a WordPiece vocab.txt of `vocab` tokens.
  std::string vocab = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n";
  for (int i = 5; i < s.vocab; ++i) absl::StrAppend(&vocab, "tok", i, "\n");
  EXPECT_TRUE(WriteFileAtomically(dir + "/vocab.txt", vocab).ok());
  if (!generation_config.empty()) {
    EXPECT_TRUE(WriteFileAtomically(dir + "/generation_config.json", generation_config).ok());
  }
  return dir;
}

// ---------------------------------------------------------------- reference

using Mat = std::vector<double>;  // row-major

double ActRef(const std::string& act, double x) {
  if (act == "gelu") return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
  if (act == "gelu_new") {
    return 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
  }
  if (act == "relu") return std::max(x, 0.0);
  if (act == "silu") return x / (1 + std::exp(-x));
  ADD_FAILURE() << "activation " << act;
  return 0;
}

const Tensor& T(const Checkpoint& ck, const std::string& name) {
  auto it = ck.find(name);
  if (it == ck.end()) {
    ADD_FAILURE() << "reference: no tensor " << name;
    static const Tensor empty;
    return empty;
  }
  return it->second;
}

// y [n, out] = x [n, in] W (+ b); W is [out, in] (torch Linear) or [in, out]
// (Conv1D) per `conv1d`.
Mat Lin(const Checkpoint& ck, const std::string& name, const Mat& x, int n, int in, int out,
        bool conv1d, bool bias) {
  const Tensor& w = T(ck, name + ".weight");
  Mat y(static_cast<size_t>(n) * out);
  for (int r = 0; r < n; ++r) {
    for (int o = 0; o < out; ++o) {
      double s = bias ? T(ck, name + ".bias").data[o] : 0.0;
      for (int i = 0; i < in; ++i) {
        const double wv = conv1d ? w.data[static_cast<size_t>(i) * out + o]
                                 : w.data[static_cast<size_t>(o) * in + i];
        s += wv * x[static_cast<size_t>(r) * in + i];
      }
      y[static_cast<size_t>(r) * out + o] = s;
    }
  }
  return y;
}

Mat Norm(const Checkpoint& ck, const std::string& name, const Mat& x, int n, int d, bool rms) {
  const double eps = 1e-5;
  const Tensor& g = T(ck, name + ".weight");
  Mat y(x.size());
  for (int r = 0; r < n; ++r) {
    const double* v = x.data() + static_cast<size_t>(r) * d;
    double mean = 0, var = 0;
    if (!rms) {
      for (int c = 0; c < d; ++c) mean += v[c];
      mean /= d;
    }
    for (int c = 0; c < d; ++c) var += (v[c] - mean) * (v[c] - mean);
    var /= d;
    for (int c = 0; c < d; ++c) {
      y[static_cast<size_t>(r) * d + c] = (v[c] - mean) / std::sqrt(var + eps) * g.data[c] +
                                          (rms ? 0.0 : T(ck, name + ".bias").data[c]);
    }
  }
  return y;
}

// HF rotate_half rotary on the first rd floats of a head at position pos.
void Rope(double* x, int rd, int pos, double theta) {
  const int half = rd / 2;
  for (int i = 0; i < half; ++i) {
    const double a = pos / std::pow(theta, 2.0 * i / rd);
    const double x0 = x[i], x1 = x[i + half];
    x[i] = x0 * std::cos(a) - x1 * std::sin(a);
    x[i + half] = x1 * std::cos(a) + x0 * std::sin(a);
  }
}

// Logits [L, vocab] of every position of `ids` under `mask` (full recompute).
Mat Reference(const Spec& s, const Checkpoint& ck, const std::vector<int32_t>& ids,
              const MaskSpec& mask) {
  const int n = static_cast<int>(ids.size());
  const int H = s.hidden, hd = s.head_dim(), nh = s.heads;
  const bool gpt2 = s.family == "gpt2", llama = s.family == "llama";
  const int kvh = llama ? s.kv_heads : nh;
  const std::string p = Prefix(s);
  const std::vector<uint8_t> allowed = *MaterializeMask(mask, n);
  const std::string act = !s.act.empty() ? s.act : gpt2 ? "gelu_new" : llama ? "silu" : "gelu";
  const int rd = gpt2 ? 0 : llama ? hd : static_cast<int>(hd * s.rotary_pct);
  const double theta = llama ? 500.0 : 10000.0;

  Mat x(static_cast<size_t>(n) * H);
  const Tensor& emb = T(ck, p + (gpt2    ? "wte.weight"
                                 : llama ? "embed_tokens.weight"
                                         : "embed_in.weight"));
  for (int t = 0; t < n; ++t) {
    for (int c = 0; c < H; ++c) {
      x[t * H + c] = emb.data[static_cast<size_t>(ids[t]) * H + c] +
                     (gpt2 ? T(ck, p + "wpe.weight").data[static_cast<size_t>(t) * H + c] : 0.0);
    }
  }
  for (int l = 0; l < s.layers; ++l) {
    const std::string lp = absl::StrCat(p, gpt2 ? "h." : "layers.", l, ".");
    const Mat h = Norm(ck, lp + (gpt2 ? "ln_1" : "input_layernorm"), x, n, H, llama);
    // q [n, nh*hd], k/v [n, kvh*hd]
    Mat q(static_cast<size_t>(n) * nh * hd), k(static_cast<size_t>(n) * kvh * hd), v(k.size());
    if (gpt2) {
      const Mat qkv = Lin(ck, lp + "attn.c_attn", h, n, H, 3 * H, true, true);
      for (int t = 0; t < n; ++t) {
        for (int c = 0; c < H; ++c) {
          q[t * H + c] = qkv[t * 3 * H + c];
          k[t * H + c] = qkv[t * 3 * H + H + c];
          v[t * H + c] = qkv[t * 3 * H + 2 * H + c];
        }
      }
    } else if (llama) {
      q = Lin(ck, lp + "self_attn.q_proj", h, n, H, nh * hd, false, false);
      k = Lin(ck, lp + "self_attn.k_proj", h, n, H, kvh * hd, false, false);
      v = Lin(ck, lp + "self_attn.v_proj", h, n, H, kvh * hd, false, false);
    } else {
      // NeoX: view(.., heads, 3 * head_size): q = [:hd], k = [hd:2hd], v = [2hd:].
      const Mat qkv = Lin(ck, lp + "attention.query_key_value", h, n, H, 3 * H, false, true);
      for (int t = 0; t < n; ++t) {
        for (int hh = 0; hh < nh; ++hh) {
          for (int c = 0; c < hd; ++c) {
            const double* src = qkv.data() + static_cast<size_t>(t) * 3 * H + hh * 3 * hd;
            q[t * H + hh * hd + c] = src[c];
            k[t * H + hh * hd + c] = src[hd + c];
            v[t * H + hh * hd + c] = src[2 * hd + c];
          }
        }
      }
    }
    if (rd > 0) {
      for (int t = 0; t < n; ++t) {
        for (int hh = 0; hh < nh; ++hh)
          Rope(&q[(static_cast<size_t>(t) * nh + hh) * hd], rd, t, theta);
        for (int hh = 0; hh < kvh; ++hh)
          Rope(&k[(static_cast<size_t>(t) * kvh + hh) * hd], rd, t, theta);
      }
    }
    double scale = 1.0 / std::sqrt(static_cast<double>(hd));
    if (gpt2 && !s.scale_weights) scale = 1.0;
    if (gpt2 && s.inverse_layer_scale) scale /= (l + 1);
    Mat ctx(static_cast<size_t>(n) * nh * hd, 0.0);
    for (int hh = 0; hh < nh; ++hh) {
      const int g = hh / (nh / kvh);
      for (int i = 0; i < n; ++i) {
        std::vector<double> sc(n, -INFINITY);
        double mx = -INFINITY;
        for (int j = 0; j < n; ++j) {
          if (!allowed[static_cast<size_t>(i) * n + j]) continue;
          double d = 0;
          for (int c = 0; c < hd; ++c) {
            d += q[(static_cast<size_t>(i) * nh + hh) * hd + c] *
                 k[(static_cast<size_t>(j) * kvh + g) * hd + c];
          }
          sc[j] = d * scale;
          mx = std::max(mx, sc[j]);
        }
        double sum = 0;
        for (int j = 0; j < n; ++j) sum += std::isinf(sc[j]) ? 0.0 : std::exp(sc[j] - mx);
        for (int j = 0; j < n; ++j) {
          if (std::isinf(sc[j])) continue;
          const double pj = std::exp(sc[j] - mx) / sum;
          for (int c = 0; c < hd; ++c) {
            ctx[(static_cast<size_t>(i) * nh + hh) * hd + c] +=
                pj * v[(static_cast<size_t>(j) * kvh + g) * hd + c];
          }
        }
      }
    }
    const Mat attn = gpt2    ? Lin(ck, lp + "attn.c_proj", ctx, n, H, H, true, true)
                     : llama ? Lin(ck, lp + "self_attn.o_proj", ctx, n, nh * hd, H, false, false)
                             : Lin(ck, lp + "attention.dense", ctx, n, H, H, false, true);
    auto mlp = [&](const Mat& in) {
      if (gpt2) {
        Mat a = Lin(ck, lp + "mlp.c_fc", in, n, H, s.inner, true, true);
        for (double& e : a) e = ActRef(act, e);
        return Lin(ck, lp + "mlp.c_proj", a, n, s.inner, H, true, true);
      }
      if (llama) {
        const Mat gt = Lin(ck, lp + "mlp.gate_proj", in, n, H, s.inner, false, false);
        Mat up = Lin(ck, lp + "mlp.up_proj", in, n, H, s.inner, false, false);
        for (size_t e = 0; e < up.size(); ++e) up[e] *= ActRef(act, gt[e]);
        return Lin(ck, lp + "mlp.down_proj", up, n, s.inner, H, false, false);
      }
      Mat a = Lin(ck, lp + "mlp.dense_h_to_4h", in, n, H, s.inner, false, true);
      for (double& e : a) e = ActRef(act, e);
      return Lin(ck, lp + "mlp.dense_4h_to_h", a, n, s.inner, H, false, true);
    };
    const std::string n2 = lp + (gpt2 ? "ln_2" : "post_attention_layernorm");
    if (!gpt2 && !llama && s.parallel) {
      // x = x + attn(ln1(x)) + mlp(ln2(x))
      const Mat m = mlp(Norm(ck, n2, x, n, H, false));
      for (size_t e = 0; e < x.size(); ++e) x[e] += attn[e] + m[e];
    } else {
      for (size_t e = 0; e < x.size(); ++e) x[e] += attn[e];
      const Mat m = mlp(Norm(ck, n2, x, n, H, llama));
      for (size_t e = 0; e < x.size(); ++e) x[e] += m[e];
    }
  }
  const Mat hf = Norm(ck,
                      p + (gpt2    ? "ln_f"
                           : llama ? "norm"
                                   : "final_layer_norm"),
                      x, n, H, llama);
  const bool tied = gpt2 || s.tie;
  const std::string head = tied ? p + (gpt2    ? "wte"
                                       : llama ? "embed_tokens"
                                               : "embed_in")
                                : (llama ? "lm_head" : "embed_out");
  return Lin(ck, head, hf, n, H, s.vocab, false, false);
}

std::vector<float> Row(const Mat& m, int row, int width) {
  return std::vector<float>(m.begin() + static_cast<size_t>(row) * width,
                            m.begin() + static_cast<size_t>(row + 1) * width);
}

// ---------------------------------------------------------------- fixtures

struct Built {
  Spec spec;
  Checkpoint ck;
  std::string dir;
  std::unique_ptr<CausalLm> lm;
};

Built Build(const Spec& s, uint32_t seed, MatmulDType dtype = MatmulDType::kF32,
            LinearKernel kernel = LinearKernel::kAuto) {
  Built b;
  b.spec = s;
  b.ck = MakeCheckpoint(s, seed);
  b.dir = WriteModelDir(s, b.ck);
  absl::StatusOr<ModelConfig> config = LoadModelConfig(b.dir);
  EXPECT_TRUE(config.ok()) << config.status();
  if (!config.ok()) return b;
  absl::StatusOr<CausalLmArch> arch = CausalLmArchFromConfig(*config);
  EXPECT_TRUE(arch.ok()) << arch.status();
  if (!arch.ok()) return b;
  absl::StatusOr<std::unique_ptr<SafetensorsModel>> w = SafetensorsModel::Open(b.dir);
  EXPECT_TRUE(w.ok()) << w.status();
  CausalLmOptions o;
  o.dtype = dtype;
  o.linear_kernel = kernel;
  absl::StatusOr<std::unique_ptr<CausalLm>> lm = CausalLm::Create(*arch, **w, o);
  EXPECT_TRUE(lm.ok()) << lm.status();
  if (lm.ok()) b.lm = std::move(*lm);
  return b;
}

std::vector<Spec> AllSpecs() {
  std::vector<Spec> v;
  Spec gpt2{.family = "gpt2"};
  v.push_back(gpt2);
  Spec gpt2b = gpt2;  // bare names (HF hub "gpt2"), inverse-layer scaling, no 1/sqrt(d)
  gpt2b.prefix = "";
  gpt2b.inverse_layer_scale = true;
  gpt2b.scale_weights = false;
  v.push_back(gpt2b);
  Spec llama{.family = "llama"};  // MHA, tied
  v.push_back(llama);
  Spec gqa = llama;  // GQA 4q / 2kv, untied head
  gqa.kv_heads = 2;
  gqa.tie = false;
  v.push_back(gqa);
  Spec mqa = llama;  // MQA
  mqa.kv_heads = 1;
  v.push_back(mqa);
  Spec neox{.family = "gpt_neox", .tie = false};  // partial rotary 0.5, parallel residual
  v.push_back(neox);
  Spec neox_seq = neox;  // full rotary, sequential residual, tied
  neox_seq.rotary_pct = 1.0;
  neox_seq.parallel = false;
  neox_seq.tie = true;
  v.push_back(neox_seq);
  Spec neox_quarter = neox;  // HF default rotary_pct 0.25 of head_dim 16
  neox_quarter.heads = 2;
  neox_quarter.rotary_pct = 0.25;
  v.push_back(neox_quarter);
  return v;
}

std::string Name(const Spec& s) {
  return absl::StrCat(
      s.family, "(kv=", s.family == "llama" ? s.kv_heads : s.heads, s.tie ? ",tied" : ",untied",
      s.family == "gpt_neox" ? absl::StrCat(",rot=", s.rotary_pct, s.parallel ? ",par" : ",seq")
                             : "",
      s.prefix == "" ? ",bare" : "", ")");
}

std::vector<int32_t> RandomIds(int n, int vocab, std::mt19937& rng) {
  std::uniform_int_distribution<int32_t> d(0, vocab - 1);
  std::vector<int32_t> v(n);
  for (int32_t& x : v) x = d(rng);
  return v;
}

MaskSpec Causal() {
  MaskSpec m;
  m.kind = MaskKind::kCausal;
  return m;
}

std::vector<MaskSpec> AcceptedMasks() {
  std::vector<MaskSpec> v;
  v.push_back(Causal());
  MaskSpec local;
  local.kind = MaskKind::kLocal;
  local.window = 3;
  local.causal = true;
  v.push_back(local);
  MaskSpec dil;
  dil.kind = MaskKind::kDilated;
  dil.rate = 3;
  dil.causal = true;
  v.push_back(dil);
  MaskSpec str;
  str.kind = MaskKind::kStrided;
  str.window = 2;
  str.rate = 4;
  str.causal = true;
  v.push_back(str);
  return v;
}

// ---------------------------------------------------------------- tests

// Prefill logits at every prompt length and cached decode logits at every
// step equal the float64 reference (full recompute), under every mask.
TEST(CausalLmTest, CachedDecodeMatchesReferenceForEveryArchitectureAndMask) {
  uint32_t seed = 100;
  for (const Spec& s : AllSpecs()) {
    for (LinearKernel kernel : {LinearKernel::kOneDnn, LinearKernel::kPanel}) {
      const char* kname = kernel == LinearKernel::kPanel ? "panel" : "onednn";
      Built b = Build(s, ++seed, MatmulDType::kF32, kernel);
      ASSERT_NE(b.lm, nullptr) << Name(s);
      EXPECT_EQ(b.lm->uses_panel_linear(), kernel == LinearKernel::kPanel);
      std::mt19937 rng(seed);
      const std::vector<int32_t> ids = RandomIds(21, s.vocab, rng);
      const int prompt = 7;
      for (const MaskSpec& mask : AcceptedMasks()) {
        const Mat ref = Reference(s, b.ck, ids, mask);
        std::unique_ptr<KvCachePool> pool = MakePool(*b.lm, 64, 4);  // small blocks: many pages
        const SeqId seq = pool->AllocateSequence();
        absl::StatusOr<std::vector<float>> lg =
            StepOne(*b.lm, pool.get(), seq, 0, absl::MakeConstSpan(ids).first(prompt), mask);
        ASSERT_TRUE(lg.ok()) << lg.status();
        double worst = MaxAbsDiff(*lg, Row(ref, prompt - 1, s.vocab));
        for (int t = prompt; t < static_cast<int>(ids.size()); ++t) {
          lg = StepOne(*b.lm, pool.get(), seq, t, absl::MakeConstSpan(ids).subspan(t, 1), mask);
          ASSERT_TRUE(lg.ok()) << lg.status();
          worst = std::max(worst, MaxAbsDiff(*lg, Row(ref, t, s.vocab)));
          // Cache == recompute with the engine itself, too.
          if (t % 5 == 0) {
            absl::StatusOr<std::vector<float>> full =
                Recompute(*b.lm, absl::MakeConstSpan(ids).first(t + 1), mask);
            ASSERT_TRUE(full.ok()) << full.status();
            EXPECT_LE(MaxAbsDiff(*lg, *full), kTol)
                << Name(s) << " " << mask.ToString() << " t=" << t;
          }
        }
        EXPECT_LE(worst, kTol) << Name(s) << " " << kname << " " << mask.ToString();
        std::printf("[causal_lm] %-40s %-6s %-22s max|d| vs fp64 = %.3g\n", Name(s).c_str(), kname,
                    mask.ToString().c_str(), worst);
      }
    }
  }
}

TEST(CausalLmTest, ChunkedPrefillEqualsOneShot) {
  uint32_t seed = 200;
  for (const Spec& s : AllSpecs()) {
    Built b = Build(s, ++seed);
    ASSERT_NE(b.lm, nullptr);
    std::mt19937 rng(seed);
    const std::vector<int32_t> ids = RandomIds(23, s.vocab, rng);
    const absl::Span<const int32_t> all(ids);
    const MaskSpec mask = Causal();
    std::unique_ptr<KvCachePool> pool = MakePool(*b.lm, 128, 8);
    const SeqId one = pool->AllocateSequence();
    const SeqId chunked = pool->AllocateSequence();
    absl::StatusOr<std::vector<float>> a = StepOne(*b.lm, pool.get(), one, 0, all.first(20), mask);
    ASSERT_TRUE(a.ok()) << a.status();
    // Chunks 0..6 (no logits), 7..14 (no logits), 15..19.
    ASSERT_TRUE(StepOne(*b.lm, pool.get(), chunked, 0, all.subspan(0, 7), mask, {}, false).ok());
    absl::StatusOr<std::vector<float>> none =
        StepOne(*b.lm, pool.get(), chunked, 7, all.subspan(7, 8), mask, {}, false);
    ASSERT_TRUE(none.ok()) << none.status();
    EXPECT_TRUE(none->empty());
    absl::StatusOr<std::vector<float>> c =
        StepOne(*b.lm, pool.get(), chunked, 15, all.subspan(15, 5), mask);
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_LE(MaxAbsDiff(*a, *c), 1e-5) << Name(s);
    // And the caches agree: the next decode steps match.
    for (int t = 20; t < 23; ++t) {
      a = StepOne(*b.lm, pool.get(), one, t, all.subspan(t, 1), mask);
      c = StepOne(*b.lm, pool.get(), chunked, t, all.subspan(t, 1), mask);
      ASSERT_TRUE(a.ok() && c.ok());
      EXPECT_LE(MaxAbsDiff(*a, *c), 1e-5) << Name(s) << " t=" << t;
    }
  }
}

// One packed step holding a fresh prefill, a prefill continuation chunk, a
// chunk without logits and single decode tokens (different masks) gives the
// logits of running each sequence alone.
TEST(CausalLmTest, MixedPackedStepEqualsSequencesOneByOne) {
  uint32_t seed = 300;
  for (const Spec& s : AllSpecs()) {
    Built b = Build(s, ++seed);
    ASSERT_NE(b.lm, nullptr);
    std::mt19937 rng(seed);
    const std::vector<MaskSpec> masks = AcceptedMasks();
    struct Plan {
      std::vector<int32_t> history;  // cached before the step
      std::vector<int32_t> step;     // new tokens in the packed step
      MaskSpec mask;
      bool want_logits;
    };
    std::vector<Plan> plans = {
        {{}, RandomIds(9, s.vocab, rng), masks[0], true},                           // fresh prefill
        {RandomIds(11, s.vocab, rng), RandomIds(1, s.vocab, rng), masks[0], true},  // decode
        {RandomIds(5, s.vocab, rng), RandomIds(6, s.vocab, rng), masks[1], true},   // chunk
        {RandomIds(3, s.vocab, rng), RandomIds(4, s.vocab, rng), masks[2], false},  // no logits
        {RandomIds(17, s.vocab, rng), RandomIds(1, s.vocab, rng), masks[3], true},  // decode
        {RandomIds(1, s.vocab, rng), RandomIds(1, s.vocab, rng), masks[0], true},   // decode
    };
    std::unique_ptr<KvCachePool> packed_pool = MakePool(*b.lm, 256, 4);
    std::unique_ptr<KvCachePool> alone_pool = MakePool(*b.lm, 256, 4);
    std::vector<SeqId> packed_ids, alone_ids;
    std::vector<std::vector<float>> alone_logits;
    for (const Plan& p : plans) {
      const SeqId a = packed_pool->AllocateSequence();
      const SeqId c = alone_pool->AllocateSequence();
      if (!p.history.empty()) {
        ASSERT_TRUE(StepOne(*b.lm, packed_pool.get(), a, 0, p.history, p.mask).ok());
        ASSERT_TRUE(StepOne(*b.lm, alone_pool.get(), c, 0, p.history, p.mask).ok());
      }
      absl::StatusOr<std::vector<float>> lg =
          StepOne(*b.lm, alone_pool.get(), c, static_cast<int>(p.history.size()), p.step, p.mask,
                  {}, p.want_logits);
      ASSERT_TRUE(lg.ok()) << lg.status();
      alone_logits.push_back(*lg);
      packed_ids.push_back(a);
    }
    std::vector<StepSequence> step(plans.size());
    for (size_t i = 0; i < plans.size(); ++i) {
      ASSERT_TRUE(packed_pool->Append(packed_ids[i], static_cast<int>(plans[i].step.size())).ok());
      step[i].kv_seq = packed_ids[i];
      step[i].num_cached = static_cast<int>(plans[i].history.size());
      step[i].tokens = plans[i].step;
      step[i].mask = plans[i].mask;
      step[i].want_logits = plans[i].want_logits;
    }
    std::vector<float> logits;
    ASSERT_TRUE(b.lm->Forward(step, packed_pool.get(), &logits).ok());
    size_t row = 0;
    for (size_t i = 0; i < plans.size(); ++i) {
      if (!plans[i].want_logits) continue;
      const std::vector<float> got(logits.begin() + row * s.vocab,
                                   logits.begin() + (row + 1) * s.vocab);
      EXPECT_LE(MaxAbsDiff(got, alone_logits[i]), 1e-5) << Name(s) << " sequence " << i;
      ++row;
    }
    EXPECT_EQ(row * s.vocab, logits.size());
  }
}

TEST(CausalLmTest, ConcurrentStepsOnDistinctSequences) {
  Built b = Build(AllSpecs()[3], 400);
  ASSERT_NE(b.lm, nullptr);
  std::unique_ptr<KvCachePool> pool = MakePool(*b.lm, 1024, 16);
  std::mt19937 rng(4);
  std::vector<std::vector<int32_t>> inputs;
  std::vector<std::vector<float>> expect;
  for (int i = 0; i < 4; ++i) {
    inputs.push_back(RandomIds(10 + i, b.spec.vocab, rng));
    expect.push_back(*Recompute(*b.lm, inputs.back(), Causal()));
  }
  std::vector<std::vector<float>> got(4);
  std::vector<SeqId> seqs;
  for (int i = 0; i < 4; ++i) seqs.push_back(pool->AllocateSequence());
  for (int i = 0; i < 4; ++i)
    ASSERT_TRUE(pool->Append(seqs[i], static_cast<int>(inputs[i].size())).ok());
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      StepSequence ss;
      ss.kv_seq = seqs[i];
      ss.tokens = inputs[i];
      ss.mask = Causal();
      EXPECT_TRUE(b.lm->Forward({&ss, 1}, pool.get(), &got[i]).ok());
    });
  }
  for (std::thread& t : threads) t.join();
  for (int i = 0; i < 4; ++i) EXPECT_LE(MaxAbsDiff(got[i], expect[i]), 1e-6);
}

TEST(CausalLmTest, MasksAcceptedAndRejected) {
  Built b = Build(AllSpecs()[0], 500);
  ASSERT_NE(b.lm, nullptr);
  EXPECT_EQ(b.lm->NaturalMask(5).kind, MaskKind::kCausal);
  for (const MaskSpec& m : AcceptedMasks()) EXPECT_TRUE(b.lm->ValidateMask(m).ok()) << m.ToString();
  MaskSpec bad;
  bad.kind = MaskKind::kBidirectional;
  EXPECT_THAT(b.lm->ValidateMask(bad).message(), HasSubstr("mask"));
  bad.causal = true;  // rejected whatever causal says
  EXPECT_EQ(b.lm->ValidateMask(bad).code(), absl::StatusCode::kInvalidArgument);
  bad = MaskSpec{};
  bad.kind = MaskKind::kUnilm;
  bad.prefix_length = 3;
  EXPECT_THAT(b.lm->ValidateMask(bad).message(), HasSubstr("mask UNILM"));
  bad = MaskSpec{};
  bad.kind = MaskKind::kLocal;
  bad.window = 2;
  EXPECT_THAT(b.lm->ValidateMask(bad).message(), HasSubstr("causal"));

  // Forward names the sequence.
  std::unique_ptr<KvCachePool> pool = MakePool(*b.lm);
  const std::vector<int32_t> ids = {1, 2, 3};
  std::vector<StepSequence> step(2);
  for (int i = 0; i < 2; ++i) {
    step[i].kv_seq = pool->AllocateSequence();
    ASSERT_TRUE(pool->Append(step[i].kv_seq, 3).ok());
    step[i].tokens = ids;
    step[i].mask = Causal();
  }
  step[1].mask = bad;
  std::vector<float> logits;
  const absl::Status st = b.lm->Forward(step, pool.get(), &logits);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("sequence 1: mask LOCAL(2)"));
}

TEST(CausalLmTest, StepErrorsNameTheSequence) {
  Built b = Build(AllSpecs()[2], 600);
  ASSERT_NE(b.lm, nullptr);
  std::unique_ptr<KvCachePool> pool = MakePool(*b.lm);
  const int V = b.spec.vocab;
  auto run = [&](std::vector<int32_t> ids1, int num_cached1, int reserve1) {
    std::vector<StepSequence> step(2);
    static const std::vector<int32_t> ok_ids = {1, 2};
    step[0].kv_seq = pool->AllocateSequence();
    EXPECT_TRUE(pool->Append(step[0].kv_seq, 2).ok());
    step[0].tokens = ok_ids;
    step[0].mask = Causal();
    step[1].kv_seq = pool->AllocateSequence();
    if (reserve1 > 0) {
      EXPECT_TRUE(pool->Append(step[1].kv_seq, reserve1).ok());
    }
    step[1].num_cached = num_cached1;
    step[1].tokens = ids1;
    step[1].mask = Causal();
    std::vector<float> logits;
    return b.lm->Forward(step, pool.get(), &logits);
  };
  absl::Status s = run({1, V}, 0, 2);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(),
              HasSubstr("sequence 1: token id 61 at position 1 is outside the vocabulary"));
  s = run({-1}, 0, 1);
  EXPECT_THAT(s.message(), HasSubstr("sequence 1: token id -1"));
  s = run({1, 2}, b.spec.max_pos - 1, b.spec.max_pos + 1);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(),
              HasSubstr("sequence 1: positions 63..64 exceed the model's max_sequence_length 64"));
  s = run({1, 2}, 0, 1);
  EXPECT_THAT(s.message(), HasSubstr("sequence 1: KV sequence"));
  EXPECT_THAT(s.message(), HasSubstr("reserved positions"));
  s = run({}, 0, 0);
  EXPECT_THAT(s.message(), HasSubstr("sequence 1: a step needs at least one new token"));
  s = run({1}, -1, 1);
  EXPECT_THAT(s.message(), HasSubstr("sequence 1: num_cached"));

  // The same KV sequence twice.
  std::vector<StepSequence> dup(2);
  const std::vector<int32_t> ids = {1};
  dup[0].kv_seq = dup[1].kv_seq = pool->AllocateSequence();
  ASSERT_TRUE(pool->Append(dup[0].kv_seq, 1).ok());
  dup[0].tokens = dup[1].tokens = ids;
  dup[0].mask = dup[1].mask = Causal();
  std::vector<float> logits;
  EXPECT_THAT(b.lm->Forward(dup, pool.get(), &logits).message(),
              HasSubstr("sequence 1: KV sequence"));

  // A pool of another model's layout.
  KvCacheOptions o = pool->options();
  o.head_dim += 1;
  o.total_bytes = 1 << 20;
  std::unique_ptr<KvCachePool> wrong = *KvCachePool::Create(o);
  dup.resize(1);
  dup[0].kv_seq = wrong->AllocateSequence();
  ASSERT_TRUE(wrong->Append(dup[0].kv_seq, 1).ok());
  EXPECT_THAT(b.lm->Forward(dup, wrong.get(), &logits).message(), HasSubstr("KV cache pool"));
  EXPECT_FALSE(b.lm->Forward({}, pool.get(), &logits).ok());
}

TEST(CausalLmTest, LoadErrorsNameFileAndTensor) {
  for (const Spec& s : {AllSpecs()[0], AllSpecs()[3], AllSpecs()[5]}) {
    Checkpoint ck = MakeCheckpoint(s, 700);
    // Drop one tensor of layer 1.
    std::string victim;
    for (const auto& [name, t] : ck) {
      if (name.find("1.") != std::string::npos && name.find("weight") != std::string::npos &&
          name.find("norm") == std::string::npos && name.find("ln_") == std::string::npos) {
        victim = name;
        break;
      }
    }
    ASSERT_FALSE(victim.empty());
    Checkpoint missing = ck;
    missing.erase(victim);
    const std::string dir = WriteModelDir(s, missing);
    absl::StatusOr<std::unique_ptr<LoadedModel>> m = LoadedModel::Load({.path = dir});
    ASSERT_FALSE(m.ok()) << Name(s);
    EXPECT_THAT(m.status().message(), HasSubstr(victim)) << m.status();
    EXPECT_THAT(m.status().message(), HasSubstr(dir)) << m.status();

    Checkpoint reshaped = ck;
    reshaped[victim].shape = {static_cast<int64_t>(ck[victim].data.size())};
    const std::string dir2 = WriteModelDir(s, reshaped);
    m = LoadedModel::Load({.path = dir2});
    ASSERT_FALSE(m.ok());
    EXPECT_THAT(m.status().message(), HasSubstr(victim)) << m.status();
    EXPECT_THAT(m.status().message(), HasSubstr("model.safetensors")) << m.status();
    EXPECT_THAT(m.status().message(), HasSubstr("expected")) << m.status();
  }
  // Untied Llama without lm_head.weight.
  Spec s = AllSpecs()[3];
  Checkpoint ck = MakeCheckpoint(s, 701);
  ck.erase("lm_head.weight");
  absl::StatusOr<std::unique_ptr<LoadedModel>> m =
      LoadedModel::Load({.path = WriteModelDir(s, ck)});
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(m.status().message(), HasSubstr("lm_head.weight"));
}

TEST(CausalLmTest, LoadedModelServesGenerationOnly) {
  for (const Spec& s : AllSpecs()) {
    const Checkpoint ck = MakeCheckpoint(s, 800);
    const std::string dir = WriteModelDir(s, ck);
    absl::StatusOr<std::unique_ptr<LoadedModel>> m = LoadedModel::Load({.path = dir});
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ((*m)->encoder(), nullptr);
    ASSERT_NE((*m)->generator(), nullptr);
    EXPECT_EQ((*m)->description().tasks, std::vector<ModelTask>{ModelTask::kGenerate});
    const GenerativeModel& g = *(*m)->generator();
    EXPECT_EQ(g.kind(), GenerationKind::kCausalLm);
    EXPECT_EQ(g.vocab_size(), s.vocab);
    EXPECT_EQ(g.max_sequence_length(), s.max_pos);
    const KvLayout l = g.kv_layout();
    EXPECT_EQ(l.num_layers, s.layers);
    EXPECT_EQ(l.num_kv_heads, s.family == "llama" ? s.kv_heads : s.heads);
    EXPECT_EQ(l.head_dim, s.head_dim());
    // config.json eos.
    const int eos = s.family == "gpt2" ? 3 : s.family == "llama" ? 2 : 0;
    EXPECT_EQ(g.eos_token_ids(), std::vector<int32_t>{eos});
    // Same logits as the directly built model.
    Built b = Build(s, 800);
    std::mt19937 rng(8);
    const std::vector<int32_t> ids = RandomIds(6, s.vocab, rng);
    EXPECT_LE(MaxAbsDiff(*Recompute(g, ids, Causal()), *Recompute(*b.lm, ids, Causal())), 0.0);
  }
  // generation_config.json overrides config.json (even with _from_model_config).
  Spec s = AllSpecs()[2];
  const std::string dir = WriteModelDir(s, MakeCheckpoint(s, 801),
                                        R"({"_from_model_config": true, "eos_token_id": [1, 2]})");
  absl::StatusOr<std::unique_ptr<LoadedModel>> m = LoadedModel::Load({.path = dir});
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ((*m)->generator()->eos_token_ids(), (std::vector<int32_t>{1, 2}));
  const std::string bad = WriteModelDir(s, MakeCheckpoint(s, 801), R"({"eos_token_id": 999})");
  EXPECT_THAT(LoadedModel::Load({.path = bad}).status().message(),
              HasSubstr("generation_config.json: eos_token_id 999"));
}

TEST(CausalLmTest, GenerationConfigParsing) {
  absl::StatusOr<GenerationConfig> g = ParseGenerationConfig(
      R"({"_from_model_config": true, "bos_token_id": 1, "eos_token_id": [1, 2], "pad_token_id": null})",
      "g.json");
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_TRUE(g->from_model_config);
  EXPECT_EQ(*g->eos_token_ids, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(*g->bos_token_id, 1);
  EXPECT_FALSE(g->pad_token_id.has_value());
  g = ParseGenerationConfig(R"({"eos_token_id": 7})", "g.json");
  EXPECT_EQ(*g->eos_token_ids, std::vector<int64_t>{7});
  g = ParseGenerationConfig(R"({"pad_token_id": 0})", "g.json");
  EXPECT_FALSE(g->eos_token_ids.has_value());
  EXPECT_THAT(ParseGenerationConfig(R"({"eos_token_id": "x"})", "g.json").status().message(),
              HasSubstr("g.json: key \"eos_token_id\""));
  EXPECT_THAT(ParseGenerationConfig("[", "g.json").status().message(), HasSubstr("g.json"));
}

TEST(CausalLmTest, Bf16CloseToFp32) {
  const Spec s = AllSpecs()[3];
  Built f = Build(s, 900);
  const Checkpoint ck = MakeCheckpoint(s, 900);
  absl::StatusOr<ModelConfig> config = LoadModelConfig(f.dir);
  ASSERT_TRUE(config.ok());
  absl::StatusOr<std::unique_ptr<SafetensorsModel>> w = SafetensorsModel::Open(f.dir);
  ASSERT_TRUE(w.ok());
  CausalLmOptions o;
  o.dtype = MatmulDType::kBF16;
  absl::StatusOr<std::unique_ptr<CausalLm>> bf =
      CausalLm::Create(*CausalLmArchFromConfig(*config), **w, o);
  if (!bf.ok()) GTEST_SKIP() << "BF16 matmuls unavailable on this CPU: " << bf.status();
  std::mt19937 rng(9);
  const std::vector<int32_t> ids = RandomIds(12, s.vocab, rng);
  absl::StatusOr<std::vector<float>> a = Recompute(*f.lm, ids, Causal());
  absl::StatusOr<std::vector<float>> c = Recompute(**bf, ids, Causal());
  ASSERT_TRUE(a.ok() && c.ok()) << c.status();
  double ab = 0, aa = 0, cc = 0;
  for (size_t i = 0; i < a->size(); ++i) {
    ab += double{(*a)[i]} * (*c)[i];
    aa += double{(*a)[i]} * (*a)[i];
    cc += double{(*c)[i]} * (*c)[i];
  }
  EXPECT_GE(ab / std::sqrt(aa * cc), 0.999);
}

}  // namespace
}  // namespace maskserve::engine
