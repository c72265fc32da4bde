#include "engine/seq2seq_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/attention.h"
#include "engine/attention_mask.h"
#include "engine/decode_attention.h"
#include "engine/generation_step.h"
#include "engine/kernels/activations.h"
#include "engine/kernels/norms.h"
#include "engine/onednn/engine_context.h"
#include "engine/onednn/matmul_cache.h"
#include "engine/safetensors.h"

// model_config.h is deliberately not included here (see seq2seq_arch.h).

namespace maskserve::engine {
namespace {

using Act = Seq2SeqArch::Act;
using Family = Seq2SeqArch::Family;
using Positions = Seq2SeqArch::Positions;

FusedActivation ToFused(Act a) {
  switch (a) {
    case Act::kGeluErf:
      return FusedActivation::kGeluErf;
    case Act::kGeluTanh:
      return FusedActivation::kGeluTanh;
    case Act::kRelu:
      return FusedActivation::kRelu;
    case Act::kSilu:
      return FusedActivation::kSilu;
    case Act::kQuickGelu:
      break;  // no oneDNN eltwise for it: applied after the matmul
  }
  return FusedActivation::kNone;
}

void ActivateInPlace(Act a, float* x, size_t n) {
  switch (a) {
    case Act::kGeluErf:
      kernels::GeluErf(x, n);
      break;
    case Act::kGeluTanh:
      kernels::GeluTanh(x, n);
      break;
    case Act::kRelu:
      kernels::Relu(x, n);
      break;
    case Act::kSilu:
      kernels::Silu(x, n);
      break;
    case Act::kQuickGelu:
      for (size_t i = 0; i < n; ++i) x[i] = x[i] / (1.0f + std::exp(-1.702f * x[i]));
      break;
  }
}

// The first of `names` the checkpoint holds; NotFound listing them all.
absl::StatusOr<std::string> FirstPresent(const SafetensorsModel& w,
                                         std::initializer_list<std::string> names) {
  std::string tried;
  for (const std::string& n : names) {
    if (w.Has(n)) return n;
    absl::StrAppend(&tried, tried.empty() ? "" : ", ", "'", n, "'");
  }
  return absl::NotFoundError(absl::StrCat("none of ", tried, " found in ", w.dir()));
}

// [rows, d] sinusoid table; row r encodes position value r.
std::vector<float> SinusoidTable(Positions kind, int rows, int d) {
  std::vector<float> t(static_cast<size_t>(rows) * d);
  if (kind == Positions::kSinusoidalMarian) {
    // HF MarianSinusoidalPositionalEmbedding: angle(pos, j) = pos /
    // 10000^(2 (j // 2) / d); sin of the even j in the first ceil(d/2)
    // columns, cos of the odd j after them.
    const int sentinel = (d + 1) / 2;
    for (int r = 0; r < rows; ++r) {
      float* row = t.data() + static_cast<size_t>(r) * d;
      for (int c = 0; c < sentinel; ++c) {
        const double j = 2 * c;
        row[c] = static_cast<float>(std::sin(r / std::pow(10000.0, 2.0 * std::floor(j / 2) / d)));
      }
      for (int c = 0; sentinel + c < d; ++c) {
        const double j = 2 * c + 1;
        row[sentinel + c] =
            static_cast<float>(std::cos(r / std::pow(10000.0, 2.0 * std::floor(j / 2) / d)));
      }
    }
  } else {
    // tensor2tensor / OpenNMT / CTranslate2: inv_timescale_i = exp(-i
    // ln(10000) / (d/2 - 1)); [sin | cos] concatenated.
    const int half = d / 2;
    const double inc = std::log(10000.0) / (half - 1);
    for (int r = 0; r < rows; ++r) {
      float* row = t.data() + static_cast<size_t>(r) * d;
      for (int i = 0; i < half; ++i) {
        const double angle = r * std::exp(-i * inc);
        row[i] = static_cast<float>(std::sin(angle));
        row[half + i] = static_cast<float>(std::cos(angle));
      }
    }
  }
  return t;
}

// The cross-attention keys/values of one decoder layer for a batch of
// sequences, read in place from their EncoderStates (row t of a state: per
// layer K heads | V heads).
class CrossKv final : public KvSource {
 public:
  struct Source {
    const float* data;
    int length;
  };
  void Reset(const std::vector<Source>* sources, int64_t row_width, int64_t layer_offset,
             int64_t inner, int head_dim) {
    sources_ = sources;
    row_width_ = row_width;
    layer_offset_ = layer_offset;
    inner_ = inner;
    head_dim_ = head_dim;
  }
  int NumKeys(int seq) const override { return (*sources_)[seq].length; }
  KvRun Fetch(int seq, int kv_head, int key, int max_count) const override {
    const Source& s = (*sources_)[seq];
    KvRun run;
    run.k = s.data + int64_t{key} * row_width_ + layer_offset_ + int64_t{kv_head} * head_dim_;
    run.v = run.k + inner_;
    run.k_stride = run.v_stride = row_width_;
    run.count = std::min(max_count, s.length - key);
    return run;
  }

 private:
  const std::vector<Source>* sources_ = nullptr;
  int64_t row_width_ = 0;
  int64_t layer_offset_ = 0;
  int64_t inner_ = 0;
  int head_dim_ = 0;
};

int64_t Round16(int64_t n) { return (n + 15) / 16 * 16; }

}  // namespace

// One request's encoder output, projected to every decoder layer's
// cross-attention keys/values: rows [source_length, row_width].
class Seq2SeqModel::State final : public EncoderState {
 public:
  State(const Seq2SeqModel* owner, int length, int64_t row_width, std::vector<float> kv)
      : owner_(owner), length_(length), row_width_(row_width), kv_(std::move(kv)) {}
  int source_length() const override { return length_; }
  int64_t bytes() const override { return static_cast<int64_t>(kv_.size() * sizeof(float)); }
  const Seq2SeqModel* owner() const { return owner_; }
  const float* data() const { return kv_.data(); }

 private:
  const Seq2SeqModel* owner_;
  int length_;
  int64_t row_width_;
  std::vector<float> kv_;
};

// Per-thread step state, reused across Forward calls.
struct Seq2SeqModel::Buffers {
  GenerationStep step;
  std::vector<CrossKv::Source> sources;
  std::vector<AttentionMask> cross_masks;
  std::vector<AttentionMask> cross_last_masks;
  CrossKv cross;
};

Seq2SeqModel::~Seq2SeqModel() = default;

KvLayout Seq2SeqModel::kv_layout() const {
  return KvLayout{arch_.decoder_layers, arch_.decoder_heads, arch_.head_dim};
}

MaskSpec Seq2SeqModel::NaturalMask(int /*prefix_length*/) const {
  MaskSpec m;
  m.kind = MaskKind::kCausal;
  return m;
}

absl::Status Seq2SeqModel::ValidateMask(const MaskSpec& spec) const {
  switch (spec.kind) {
    case MaskKind::kCausal:
      return absl::OkStatus();
    case MaskKind::kLocal:
    case MaskKind::kDilated:
    case MaskKind::kStrided:
      if (spec.causal) return absl::OkStatus();
      return absl::InvalidArgumentError(absl::StrCat(
          "mask ", spec.ToString(), " lets a decoder position attend later positions; an ",
          "encoder-decoder model generates only under CAUSAL or a pattern with mask.causal = "
          "true"));
    case MaskKind::kBidirectional:
      return absl::InvalidArgumentError(
          "mask BIDIRECTIONAL is not valid for generation (a cached position would have to see "
          "the future); use CAUSAL (the encoder always attends bidirectionally)");
    case MaskKind::kUnilm:
      return absl::InvalidArgumentError(
          absl::StrCat("mask UNILM is not valid for the encoder-decoder model \"", arch_.model_type,
                       "\" (its encoder already reads the source); use CAUSAL"));
  }
  return absl::InvalidArgumentError("mask kind is unknown");
}

int64_t Seq2SeqModel::decoder_weight_bytes() const {
  int64_t total = static_cast<int64_t>(lm_head_.bytes());
  for (const Layer& l : decoder_.layers) {
    total += static_cast<int64_t>(l.qkv.bytes() + l.self_out.bytes() + l.cross_q.bytes() +
                                  l.cross_out.bytes() + l.ffn_in.bytes() + l.ffn_out.bytes());
  }
  return total;
}

absl::StatusOr<Seq2SeqModel::Linear> Seq2SeqModel::Pack(const std::string& what,
                                                        absl::Span<const float> weight, int in,
                                                        int out,
                                                        absl::Span<const float> bias) const {
  Linear l;
  if (panel_) {
    absl::StatusOr<PanelLinear> p = PanelLinear::Create(weight, in, out, bias);
    if (!p.ok()) {
      return absl::Status(p.status().code(),
                          absl::StrCat("packing ", what, ": ", p.status().message()));
    }
    l.panel = std::move(*p);
  } else {
    absl::StatusOr<PackedLinear> p =
        PackedLinear::Create(weight, in, out, bias, dtype_, WeightLayout::kOutIn);
    if (!p.ok()) {
      return absl::Status(p.status().code(),
                          absl::StrCat("packing ", what, ": ", p.status().message()));
    }
    l.onednn = std::move(*p);
  }
  return l;
}

absl::Status Seq2SeqModel::Apply(const Linear& w, const float* x, int rows, float* y,
                                 bool accumulate, bool activate) const {
  if (rows == 0) return absl::OkStatus();
  const Act act = arch_.activation;
  if (!w.panel.valid()) {
    absl::Status s = MatmulCache::Global().Linear(
        x, rows, w.onednn, y,
        PostOp{.bias = w.onednn.has_bias(),
               .activation = activate ? ToFused(act) : FusedActivation::kNone,
               .accumulate = accumulate});
    if (!s.ok() || !activate || act != Act::kQuickGelu) return s;
    ActivateInPlace(act, y, static_cast<size_t>(rows) * w.onednn.out_features());
    return absl::OkStatus();
  }
  w.panel.Run(x, rows, y, accumulate);
  if (activate) ActivateInPlace(act, y, static_cast<size_t>(rows) * w.panel.out_features());
  return absl::OkStatus();
}

void Seq2SeqModel::ApplyNorm(const Norm& n, const float* x, int rows, float* out) const {
  if (rows == 0) return;
  if (n.beta.empty()) {
    kernels::RmsNorm(x, n.gamma.data(), arch_.norm_eps, rows, arch_.d_model, out);
  } else {
    kernels::LayerNorm(x, nullptr, n.gamma.data(), n.beta.data(), arch_.norm_eps, rows,
                       arch_.d_model, out);
  }
}

absl::StatusOr<std::unique_ptr<Seq2SeqModel>> Seq2SeqModel::Create(
    const Seq2SeqArch& arch, const SafetensorsModel& w, const Seq2SeqModelOptions& options) {
  const Seq2SeqArch& a = arch;
  if (a.d_model <= 0 || a.encoder_layers <= 0 || a.decoder_layers <= 0 || a.encoder_heads <= 0 ||
      a.decoder_heads <= 0 || a.head_dim <= 0 || a.encoder_ffn <= 0 || a.decoder_ffn <= 0 ||
      a.vocab_size <= 0 || a.source_vocab_size <= 0 || a.max_source_positions <= 0 ||
      a.max_target_positions <= 0 || a.position_offset < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid encoder-decoder architecture for ", w.dir()));
  }
  if (a.positions == Positions::kNone && a.family != Family::kT5) {
    return absl::InvalidArgumentError("only T5 runs without absolute positions");
  }
  auto model = std::unique_ptr<Seq2SeqModel>(new Seq2SeqModel());
  Seq2SeqModel& m = *model;
  m.arch_ = a;
  m.dtype_ = options.dtype;
  absl::StatusOr<bool> panel = UsePanelLinear(options.linear_kernel, options.dtype);
  if (!panel.ok()) return panel.status();
  m.panel_ = *panel;
  m.eos_ = options.eos_token_ids.empty() ? a.eos_token_ids : options.eos_token_ids;
  m.decoder_start_ = options.decoder_start_token_id >= 0 ? options.decoder_start_token_id
                                                         : a.decoder_start_token_id;
  for (int32_t id : m.eos_) {
    if (id < 0 || id >= a.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          w.dir(), ": eos_token_id ", id, " is outside the vocabulary [0, ", a.vocab_size, ")"));
    }
  }
  if (m.decoder_start_ < 0 || m.decoder_start_ >= a.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(w.dir(), ": decoder_start_token_id ",
                                                   m.decoder_start_,
                                                   " is missing or outside the "
                                                   "vocabulary [0, ",
                                                   a.vocab_size, ")"));
  }

  const int d = a.d_model, hd = a.head_dim;
  const bool t5 = a.family == Family::kT5;
  absl::Status s;
  auto read_norm = [&](const std::string& name, Norm* n) -> absl::Status {
    absl::Status st = ReadInto(w, name + ".weight", {d}, &n->gamma);
    if (!st.ok() || a.rms_norm) return st;
    return ReadInto(w, name + ".bias", {d}, &n->beta);
  };
  // "<name>.weight" [out, in] (+ "<name>.bias" [out] when `bias`).
  auto read_linear = [&](const std::string& name, int in, int out, bool bias,
                         std::vector<float>* weight, std::vector<float>* b) -> absl::Status {
    absl::Status st = ReadInto(w, name + ".weight", {out, in}, weight);
    if (!st.ok() || !bias) return st;
    return ReadInto(w, name + ".bias", {out}, b);
  };
  auto pack_named = [&](const std::string& name, int in, int out, bool bias,
                        Linear* dst) -> absl::Status {
    std::vector<float> wt, b;
    if (absl::Status st = read_linear(name, in, out, bias, &wt, &b); !st.ok()) return st;
    absl::StatusOr<Linear> p = m.Pack(name, wt, in, out, b);
    if (!p.ok()) return p.status();
    *dst = std::move(*p);
    return absl::OkStatus();
  };
  // Several [out_i, in] projections stacked into one [sum out_i, in] layer.
  auto pack_fused = [&](const std::string& what, const std::vector<std::string>& names, int in,
                        int out_each, bool bias, Linear* dst) -> absl::Status {
    std::vector<float> wt, b;
    for (const std::string& name : names) {
      std::vector<float> w1, b1;
      if (absl::Status st = read_linear(name, in, out_each, bias, &w1, &b1); !st.ok()) return st;
      wt.insert(wt.end(), w1.begin(), w1.end());
      b.insert(b.end(), b1.begin(), b1.end());
    }
    absl::StatusOr<Linear> p = m.Pack(what, wt, in, out_each * static_cast<int>(names.size()), b);
    if (!p.ok()) return p.status();
    *dst = std::move(*p);
    return absl::OkStatus();
  };

  // Cross-attention K|V of every decoder layer, gathered for one fused layer.
  std::vector<float> cross_w, cross_b;
  const int dec_inner = a.decoder_heads * hd;

  if (t5) {
    absl::StatusOr<std::string> shared =
        FirstPresent(w, {"shared.weight", "encoder.embed_tokens.weight"});
    if (!shared.ok()) return shared.status();
    if (absl::Status st = ReadInto(w, *shared, {a.vocab_size, d}, &m.encoder_.embed); !st.ok()) {
      return st;
    }
    if (w.Has("decoder.embed_tokens.weight") && *shared != "shared.weight") {
      s = ReadInto(w, "decoder.embed_tokens.weight", {a.vocab_size, d}, &m.decoder_.embed);
      if (!s.ok()) return s;
    } else {
      m.decoder_.embed = m.encoder_.embed;
    }
    for (int side = 0; side < 2; ++side) {
      const bool dec = side == 1;
      Stack& st = dec ? m.decoder_ : m.encoder_;
      const std::string root = dec ? "decoder." : "encoder.";
      st.heads = dec ? a.decoder_heads : a.encoder_heads;
      st.ffn = dec ? a.decoder_ffn : a.encoder_ffn;
      const int inner = st.heads * hd;
      const int layers = dec ? a.decoder_layers : a.encoder_layers;
      st.layers.resize(layers);
      for (int l = 0; l < layers; ++l) {
        Layer& ly = st.layers[l];
        const std::string lp = absl::StrCat(root, "block.", l, ".layer.");
        const std::string sa = lp + "0.SelfAttention.";
        if ((s = read_norm(lp + "0.layer_norm", &ly.self_norm)); !s.ok()) return s;
        if ((s = pack_fused(sa + "{q,k,v}", {sa + "q", sa + "k", sa + "v"}, d, inner, false,
                            &ly.qkv));
            !s.ok()) {
          return s;
        }
        if ((s = pack_named(sa + "o", inner, d, false, &ly.self_out)); !s.ok()) return s;
        std::string ff = lp + "1.";
        if (dec) {
          const std::string ca = lp + "1.EncDecAttention.";
          if ((s = read_norm(lp + "1.layer_norm", &ly.cross_norm)); !s.ok()) return s;
          if ((s = pack_named(ca + "q", d, inner, false, &ly.cross_q)); !s.ok()) return s;
          if ((s = pack_named(ca + "o", inner, d, false, &ly.cross_out)); !s.ok()) return s;
          for (const char* kv : {"k", "v"}) {
            std::vector<float> w1, b1;
            if ((s = read_linear(ca + kv, d, inner, false, &w1, &b1)); !s.ok()) return s;
            cross_w.insert(cross_w.end(), w1.begin(), w1.end());
          }
          ff = lp + "2.";
        }
        if ((s = read_norm(ff + "layer_norm", &ly.ffn_norm)); !s.ok()) return s;
        const std::string dr = ff + "DenseReluDense.";
        if (a.gated_ffn) {
          s = pack_fused(dr + "wi_{0,1}", {dr + "wi_0", dr + "wi_1"}, d, st.ffn, false, &ly.ffn_in);
        } else {
          s = pack_named(dr + "wi", d, st.ffn, false, &ly.ffn_in);
        }
        if (!s.ok()) return s;
        if ((s = pack_named(dr + "wo", st.ffn, d, false, &ly.ffn_out)); !s.ok()) return s;
      }
      if ((s = read_norm(root + "final_layer_norm", &st.final_norm)); !s.ok()) return s;
      std::vector<float> rel;
      s = ReadInto(w, root + "block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                   {a.relative_buckets, st.heads}, &rel);
      if (!s.ok()) return s;
      absl::StatusOr<T5RelativeBias> bias = T5RelativeBias::Create(
          rel, a.relative_buckets, st.heads, a.relative_max_distance, /*bidirectional=*/!dec,
          dec ? a.max_target_positions : a.max_source_positions);
      if (!bias.ok()) return bias.status();
      st.bias = std::move(*bias);
    }
    if (a.tie_word_embeddings) {
      absl::StatusOr<Linear> p =
          m.Pack(*shared + " (tied LM head)", m.decoder_.embed, d, a.vocab_size, {});
      if (!p.ok()) return p.status();
      m.lm_head_ = std::move(*p);
    } else if ((s = pack_named("lm_head", d, a.vocab_size, false, &m.lm_head_)); !s.ok()) {
      return s;
    }
  } else {
    // BART / mBART / Marian / OpenNMT names.
    const std::string p = w.Has("model.encoder.layers.0.fc1.weight") ? "model." : "";
    const bool onmt = a.family == Family::kOpenNmt;
    for (int side = 0; side < 2; ++side) {
      const bool dec = side == 1;
      Stack& st = dec ? m.decoder_ : m.encoder_;
      const std::string root = p + (dec ? "decoder." : "encoder.");
      const int rows = dec ? a.vocab_size : a.source_vocab_size;
      const int max_pos = dec ? a.max_target_positions : a.max_source_positions;
      absl::StatusOr<std::string> embed =
          onmt ? FirstPresent(w, {root + "embed_tokens.weight"})
               : FirstPresent(w, {root + "embed_tokens.weight", p + "shared.weight"});
      if (!embed.ok()) return embed.status();
      if ((s = ReadInto(w, *embed, {rows, d}, &st.embed)); !s.ok()) return s;
      const int table_rows = max_pos + a.position_offset;
      const std::string pos_name = root + "embed_positions.weight";
      if (a.positions == Positions::kLearned) {
        if ((s = ReadInto(w, pos_name, {table_rows, d}, &st.positions)); !s.ok()) return s;
      } else if (a.positions == Positions::kSinusoidalMarian && w.Has(pos_name)) {
        // HF loads the stored table over the computed one.
        if ((s = ReadInto(w, pos_name, {table_rows, d}, &st.positions)); !s.ok()) return s;
      } else {
        st.positions = SinusoidTable(a.positions, table_rows, d);
      }
      if (a.layernorm_embedding) {
        if ((s = read_norm(root + "layernorm_embedding", &st.embed_norm)); !s.ok()) return s;
      }
      st.heads = dec ? a.decoder_heads : a.encoder_heads;
      st.ffn = dec ? a.decoder_ffn : a.encoder_ffn;
      const int inner = st.heads * hd;
      const int layers = dec ? a.decoder_layers : a.encoder_layers;
      const bool ab = a.attention_bias, mb = a.mlp_bias;
      st.layers.resize(layers);
      for (int l = 0; l < layers; ++l) {
        Layer& ly = st.layers[l];
        const std::string lp = absl::StrCat(root, "layers.", l, ".");
        const std::string sa = lp + "self_attn.";
        if ((s = read_norm(lp + "self_attn_layer_norm", &ly.self_norm)); !s.ok()) return s;
        if ((s = pack_fused(sa + "{q,k,v}_proj", {sa + "q_proj", sa + "k_proj", sa + "v_proj"}, d,
                            inner, ab, &ly.qkv));
            !s.ok()) {
          return s;
        }
        if ((s = pack_named(sa + "out_proj", inner, d, ab, &ly.self_out)); !s.ok()) return s;
        if (dec) {
          const std::string ca = lp + "encoder_attn.";
          if ((s = read_norm(lp + "encoder_attn_layer_norm", &ly.cross_norm)); !s.ok()) return s;
          if ((s = pack_named(ca + "q_proj", d, inner, ab, &ly.cross_q)); !s.ok()) return s;
          if ((s = pack_named(ca + "out_proj", inner, d, ab, &ly.cross_out)); !s.ok()) return s;
          for (const char* kv : {"k_proj", "v_proj"}) {
            std::vector<float> w1, b1;
            if ((s = read_linear(ca + kv, d, inner, ab, &w1, &b1)); !s.ok()) return s;
            cross_w.insert(cross_w.end(), w1.begin(), w1.end());
            cross_b.insert(cross_b.end(), b1.begin(), b1.end());
          }
        }
        if ((s = read_norm(lp + "final_layer_norm", &ly.ffn_norm)); !s.ok()) return s;
        if ((s = pack_named(lp + "fc1", d, st.ffn, mb, &ly.ffn_in)); !s.ok()) return s;
        if ((s = pack_named(lp + "fc2", st.ffn, d, mb, &ly.ffn_out)); !s.ok()) return s;
      }
      if (a.final_norm) {
        if ((s = read_norm(root + "layer_norm", &st.final_norm)); !s.ok()) return s;
      }
    }
    // LM head: tied to the decoder's token embedding unless untied; bias
    // from lm_head.bias (OpenNMT) or final_logits_bias (BART, Marian).
    std::vector<float> head, head_bias;
    std::string head_name = "lm_head.weight";
    if (a.tie_word_embeddings) {
      head = m.decoder_.embed;
      head_name = "decoder embed_tokens (tied LM head)";
    } else if ((s = ReadInto(w, "lm_head.weight", {a.vocab_size, d}, &head)); !s.ok()) {
      return s;
    }
    if (w.Has("lm_head.bias")) {
      if ((s = ReadInto(w, "lm_head.bias", {a.vocab_size}, &head_bias)); !s.ok()) return s;
    } else if (w.Has("final_logits_bias")) {
      if ((s = ReadInto(w, "final_logits_bias", {1, a.vocab_size}, &head_bias)); !s.ok()) {
        return s;
      }
    }
    absl::StatusOr<Linear> lp = m.Pack(head_name, head, d, a.vocab_size, head_bias);
    if (!lp.ok()) return lp.status();
    m.lm_head_ = std::move(*lp);
  }
  absl::StatusOr<Linear> ckv = m.Pack("cross-attention k|v of every decoder layer", cross_w, d,
                                      a.decoder_layers * 2 * dec_inner, cross_b);
  if (!ckv.ok()) return ckv.status();
  m.cross_kv_ = std::move(*ckv);
  return model;
}

void Seq2SeqModel::Embed(const Stack& st, absl::Span<const int32_t> ids,
                         absl::Span<const int32_t> positions, float* x) const {
  const size_t d = static_cast<size_t>(arch_.d_model);
  const float scale = arch_.embed_scale;
  for (size_t t = 0; t < ids.size(); ++t) {
    float* dst = x + t * d;
    const float* e = st.embed.data() + static_cast<size_t>(ids[t]) * d;
    if (scale == 1.0f) {
      std::memcpy(dst, e, d * sizeof(float));
    } else {
      for (size_t c = 0; c < d; ++c) dst[c] = e[c] * scale;
    }
    if (!st.positions.empty()) {
      const float* p =
          st.positions.data() + static_cast<size_t>(positions[t] + arch_.position_offset) * d;
      for (size_t c = 0; c < d; ++c) dst[c] += p[c];
    }
  }
  if (!st.embed_norm.gamma.empty()) {
    ApplyNorm(st.embed_norm, x, static_cast<int>(ids.size()), x);
  }
}

absl::Status Seq2SeqModel::AttentionOut(const Linear& out, const Norm& n, const float* ctx,
                                        int rows, float* x) const {
  if (absl::Status s = Apply(out, ctx, rows, x, /*accumulate=*/true, false); !s.ok()) return s;
  if (!arch_.pre_norm) ApplyNorm(n, x, rows, x);
  return absl::OkStatus();
}

absl::Status Seq2SeqModel::Ffn(const Stack& st, const Layer& l, int rows, float* x, float* normed,
                               float* inner, float* act) const {
  const float* src = x;
  if (arch_.pre_norm) {
    ApplyNorm(l.ffn_norm, x, rows, normed);
    src = normed;
  }
  if (arch_.gated_ffn) {
    if (absl::Status s = Apply(l.ffn_in, src, rows, inner, false, false); !s.ok()) return s;
    const size_t f = static_cast<size_t>(st.ffn);
    if (arch_.activation == Act::kSilu) {
      kernels::SwiGluFused(inner, rows, st.ffn, act);
    } else {
      // act(gate) * up, gate | up per row.
      for (int r = 0; r < rows; ++r) {
        std::memcpy(act + r * f, inner + r * 2 * f, f * sizeof(float));
      }
      ActivateInPlace(arch_.activation, act, static_cast<size_t>(rows) * f);
      for (int r = 0; r < rows; ++r) {
        float* o = act + r * f;
        const float* up = inner + r * 2 * f + f;
        for (size_t c = 0; c < f; ++c) o[c] *= up[c];
      }
    }
    if (absl::Status s = Apply(l.ffn_out, act, rows, x, true, false); !s.ok()) return s;
  } else {
    if (absl::Status s = Apply(l.ffn_in, src, rows, inner, false, true); !s.ok()) return s;
    if (absl::Status s = Apply(l.ffn_out, inner, rows, x, true, false); !s.ok()) return s;
  }
  if (!arch_.pre_norm) ApplyNorm(l.ffn_norm, x, rows, x);
  return absl::OkStatus();
}

absl::Status Seq2SeqModel::RunEncoder(absl::Span<const absl::Span<const int32_t>> sources,
                                      std::vector<int32_t>* cu, std::vector<float>* out) const {
  if (sources.empty()) return absl::InvalidArgumentError("no source to encode");
  std::vector<int32_t> ids, positions;
  cu->assign(1, 0);
  for (size_t b = 0; b < sources.size(); ++b) {
    const absl::Span<const int32_t> src = sources[b];
    if (src.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("source ", b, " has no tokens"));
    }
    if (static_cast<int64_t>(src.size()) > arch_.max_source_positions) {
      return absl::InvalidArgumentError(absl::StrCat("source ", b, " has ", src.size(),
                                                     " tokens; the model takes at most ",
                                                     arch_.max_source_positions));
    }
    for (size_t t = 0; t < src.size(); ++t) {
      if (src[t] < 0 || src[t] >= arch_.source_vocab_size) {
        return absl::InvalidArgumentError(
            absl::StrCat("source ", b, ": token id ", src[t], " at position ", t,
                         " is outside the source vocabulary [0, ", arch_.source_vocab_size, ")"));
      }
      ids.push_back(src[t]);
      positions.push_back(static_cast<int32_t>(t));
    }
    cu->push_back(static_cast<int32_t>(ids.size()));
  }
  const Stack& st = encoder_;
  const int T = static_cast<int>(ids.size());
  const size_t d = static_cast<size_t>(arch_.d_model);
  const int inner = st.heads * arch_.head_dim;
  const size_t ffn_in = static_cast<size_t>(st.layers[0].ffn_in.out_features());
  out->resize(static_cast<size_t>(T) * d);
  std::vector<float> normed(T * d), qkv(static_cast<size_t>(T) * 3 * inner),
      ctx(static_cast<size_t>(T) * inner), inner_buf(T * ffn_in),
      act(arch_.gated_ffn ? static_cast<size_t>(T) * st.ffn : 0);
  float* x = out->data();
  Embed(st, ids, positions, x);

  std::vector<AttentionMask> masks;
  MaskSpec bidir;
  for (size_t b = 0; b < sources.size(); ++b) {
    absl::StatusOr<AttentionMask> mk =
        AttentionMask::Create(bidir, static_cast<int>(sources[b].size()));
    if (!mk.ok()) return mk.status();
    masks.push_back(std::move(*mk));
  }
  AttentionOptions ao;
  ao.num_heads = ao.num_kv_heads = st.heads;
  ao.head_dim = arch_.head_dim;
  ao.scale = arch_.scale_attention ? 0.0f : 1.0f;
  ao.bias = st.bias.view();
  for (const Layer& l : st.layers) {
    const float* src = x;
    if (arch_.pre_norm) {
      ApplyNorm(l.self_norm, x, T, normed.data());
      src = normed.data();
    }
    if (absl::Status s = Apply(l.qkv, src, T, qkv.data(), false, false); !s.ok()) return s;
    if (absl::Status s =
            FusedAttention(ao, qkv.data(), 3 * inner, qkv.data() + inner, 3 * inner,
                           qkv.data() + 2 * inner, 3 * inner, *cu, *cu, masks, ctx.data(), inner);
        !s.ok()) {
      return s;
    }
    if (absl::Status s = AttentionOut(l.self_out, l.self_norm, ctx.data(), T, x); !s.ok()) {
      return s;
    }
    if (absl::Status s = Ffn(st, l, T, x, normed.data(), inner_buf.data(), act.data()); !s.ok()) {
      return s;
    }
  }
  if (!st.final_norm.gamma.empty()) ApplyNorm(st.final_norm, x, T, x);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> Seq2SeqModel::EncoderHiddenStates(
    absl::Span<const absl::Span<const int32_t>> sources) const {
  std::vector<int32_t> cu;
  std::vector<float> out;
  if (absl::Status s = RunEncoder(sources, &cu, &out); !s.ok()) return s;
  return out;
}

absl::StatusOr<std::shared_ptr<const EncoderState>> Seq2SeqModel::EncodeSource(
    absl::Span<const int32_t> source_ids) const {
  const absl::Span<const int32_t> one[] = {source_ids};
  absl::StatusOr<std::vector<std::shared_ptr<const EncoderState>>> v = EncodeSources(one);
  if (!v.ok()) return v.status();
  return std::move((*v)[0]);
}

absl::StatusOr<std::vector<std::shared_ptr<const EncoderState>>> Seq2SeqModel::EncodeSources(
    absl::Span<const absl::Span<const int32_t>> sources) const {
  std::vector<int32_t> cu;
  std::vector<float> hidden;
  if (absl::Status s = RunEncoder(sources, &cu, &hidden); !s.ok()) return s;
  const int T = cu.back();
  const int64_t width = cross_kv_.out_features();
  std::vector<float> kv(static_cast<size_t>(T) * width);
  if (absl::Status s = Apply(cross_kv_, hidden.data(), T, kv.data(), false, false); !s.ok()) {
    return s;
  }
  std::vector<std::shared_ptr<const EncoderState>> states;
  states.reserve(sources.size());
  for (size_t b = 0; b < sources.size(); ++b) {
    const int len = cu[b + 1] - cu[b];
    std::vector<float> rows(kv.begin() + static_cast<int64_t>(cu[b]) * width,
                            kv.begin() + static_cast<int64_t>(cu[b + 1]) * width);
    states.push_back(std::make_shared<State>(this, len, width, std::move(rows)));
  }
  return states;
}

absl::Status Seq2SeqModel::Forward(absl::Span<const StepSequence> seqs, KvCachePool* pool,
                                   std::vector<float>* logits) const {
  if (pool == nullptr || logits == nullptr) {
    return absl::InvalidArgumentError("Forward: pool and logits must not be null");
  }
  thread_local Buffers buf;
  StepLimits limits;
  limits.layout = kv_layout();
  limits.vocab_size = arch_.vocab_size;
  limits.max_sequence_length = max_sequence_length();
  if (absl::Status s = buf.step.Prepare(seqs, *pool, limits, *this); !s.ok()) return s;
  buf.sources.clear();
  for (size_t b = 0; b < seqs.size(); ++b) {
    const State* st = dynamic_cast<const State*>(seqs[b].encoder);
    if (st == nullptr || st->owner() != this) {
      return absl::InvalidArgumentError(
          absl::StrCat("sequence ", b,
                       ": needs the EncoderState this model made for its source (EncodeSource)"));
    }
    buf.sources.push_back({st->data(), st->source_length()});
  }
  return RunDecoder(buf, pool, logits);
}

absl::Status Seq2SeqModel::RunDecoder(Buffers& buf, KvCachePool* pool,
                                      std::vector<float>* logits) const {
  GenerationStep& step = buf.step;
  const Stack& st = decoder_;
  const size_t T = static_cast<size_t>(step.num_tokens());
  const absl::Span<const int32_t> rows_out = step.logit_rows();
  const size_t R = rows_out.size();
  const size_t d = static_cast<size_t>(arch_.d_model);
  const int inner = st.heads * arch_.head_dim;
  const size_t ffn_in = static_cast<size_t>(st.layers[0].ffn_in.out_features());
  const size_t ffn_act = arch_.gated_ffn ? static_cast<size_t>(st.ffn) : 0;
  const int nseq = step.num_seqs();
  // The last layer computes only the rows whose logits are wanted.
  const bool compact = R < T;

  // Scratch: x | normed | qkv | ctx | q | inner | act | x_last | q_last.
  const size_t sizes[] = {T * d,      T * d,       T * 3 * inner, T * inner,    T * inner,
                          T * ffn_in, T * ffn_act, R * d,         R * 3 * inner};
  size_t total = 0;
  for (size_t n : sizes) total += Round16(static_cast<int64_t>(n));
  absl::StatusOr<float*> base = step.Scratch(total);
  if (!base.ok()) return base.status();
  float* bufs[9];
  {
    float* p = *base;
    for (int i = 0; i < 9; ++i) {
      bufs[i] = p;
      p += Round16(static_cast<int64_t>(sizes[i]));
    }
  }
  float* x = bufs[0];
  float* normed = bufs[1];
  float* qkv = bufs[2];
  float* ctx = bufs[3];
  float* q = bufs[4];
  float* inner_buf = bufs[5];
  float* act = bufs[6];
  float* x_last = bufs[7];
  float* q_last = bufs[8];

  Embed(st, step.token_ids(), step.positions(), x);

  // Cross-attention: every new token of sequence b against its source.
  const absl::Span<const int32_t> cu = step.cu_seqlens();
  buf.cross_masks.clear();
  MaskSpec bidir;
  for (int b = 0; b < nseq; ++b) {
    absl::StatusOr<AttentionMask> mk =
        AttentionMask::Create(bidir, buf.sources[b].length, 0, cu[b + 1] - cu[b]);
    if (!mk.ok()) return mk.status();
    buf.cross_masks.push_back(std::move(*mk));
  }
  const int64_t cross_width = cross_kv_.out_features();

  AttentionOptions ao;
  ao.num_heads = ao.num_kv_heads = st.heads;
  ao.head_dim = arch_.head_dim;
  ao.scale = arch_.scale_attention ? 0.0f : 1.0f;
  AttentionOptions cross_ao = ao;
  ao.bias = st.bias.view();
  const int nT = static_cast<int>(T), nR = static_cast<int>(R);
  const int64_t qkv_w = 3 * int64_t{inner};
  // One query row per sequence (decode): the single-query attention kernel.
  const bool decode = IsDecodeStep(step.masks());
  const int L = static_cast<int>(st.layers.size());
  for (int l = 0; l < L; ++l) {
    const Layer& ly = st.layers[l];
    const float* src = x;
    if (arch_.pre_norm) {
      ApplyNorm(ly.self_norm, x, nT, normed);
      src = normed;
    }
    if (absl::Status s = Apply(ly.qkv, src, nT, qkv, false, false); !s.ok()) return s;
    if (absl::Status s = step.WriteKv(pool, l, qkv + inner, qkv + 2 * inner, qkv_w); !s.ok()) {
      return s;
    }
    absl::StatusOr<const KvSource*> kv = step.Kv(*pool, l);
    if (!kv.ok()) return kv.status();
    buf.cross.Reset(&buf.sources, cross_width, int64_t{l} * 2 * inner, inner, arch_.head_dim);

    // Rows this layer carries on: all of them, or (last layer, compacted)
    // only the logit rows.
    float* xl = x;
    int rows = nT;
    absl::Span<const int32_t> row_cu = cu;
    absl::Span<const AttentionMask> cross_masks = buf.cross_masks;
    if (l + 1 < L || !compact) {
      const absl::Status s =
          decode ? DecodeAttention(ao, qkv, qkv_w, cu, **kv, step.masks(), ctx, inner)
                 : FusedAttention(ao, qkv, qkv_w, cu, **kv, step.masks(), ctx, inner);
      if (!s.ok()) return s;
    } else {
      if (R == 0) break;
      if (absl::Status s = step.PrepareLastRows(); !s.ok()) return s;
      for (size_t r = 0; r < R; ++r) {
        const size_t row = static_cast<size_t>(rows_out[r]);
        std::memcpy(q_last + r * inner, qkv + row * qkv_w, inner * sizeof(float));
        std::memcpy(x_last + r * d, x + row * d, d * sizeof(float));
      }
      if (absl::Status s = DecodeAttention(ao, q_last, inner, step.last_row_cu_seqlens(), **kv,
                                           step.last_row_masks(), ctx, inner);
          !s.ok()) {
        return s;
      }
      xl = x_last;
      rows = nR;
      row_cu = step.last_row_cu_seqlens();
      buf.cross_last_masks.clear();
      for (int b = 0; b < nseq; ++b) {
        absl::StatusOr<AttentionMask> mk =
            AttentionMask::Create(bidir, buf.sources[b].length, 0, row_cu[b + 1] - row_cu[b]);
        if (!mk.ok()) return mk.status();
        buf.cross_last_masks.push_back(std::move(*mk));
      }
      cross_masks = buf.cross_last_masks;
    }
    if (absl::Status s = AttentionOut(ly.self_out, ly.self_norm, ctx, rows, xl); !s.ok()) {
      return s;
    }
    // Cross-attention over the encoder states.
    src = xl;
    if (arch_.pre_norm) {
      ApplyNorm(ly.cross_norm, xl, rows, normed);
      src = normed;
    }
    if (absl::Status s = Apply(ly.cross_q, src, rows, q, false, false); !s.ok()) return s;
    const bool one_row = decode || xl == x_last;
    const absl::Status cs =
        one_row ? DecodeAttention(cross_ao, q, inner, row_cu, buf.cross, cross_masks, ctx, inner)
                : FusedAttention(cross_ao, q, inner, row_cu, buf.cross, cross_masks, ctx, inner);
    if (!cs.ok()) return cs;
    if (absl::Status s = AttentionOut(ly.cross_out, ly.cross_norm, ctx, rows, xl); !s.ok()) {
      return s;
    }
    if (absl::Status s = Ffn(st, ly, rows, xl, normed, inner_buf, act); !s.ok()) return s;
  }

  // Final norm (+ T5's d_model^-0.5) and the LM head on the wanted rows only.
  logits->resize(R * static_cast<size_t>(arch_.vocab_size));
  if (R == 0) return absl::OkStatus();
  // Not compacted: every new token is a logits row (one-token sequences).
  const float* h = compact ? x_last : x;
  if (!st.final_norm.gamma.empty()) {
    ApplyNorm(st.final_norm, h, nR, normed);
    h = normed;
  }
  if (arch_.scale_decoder_output) {
    const float s = static_cast<float>(std::pow(static_cast<double>(arch_.d_model), -0.5));
    if (h != normed) {
      std::memcpy(normed, h, R * d * sizeof(float));
      h = normed;
    }
    for (size_t i = 0; i < R * d; ++i) normed[i] *= s;
  }
  return Apply(lm_head_, h, nR, logits->data(), false, false);
}

}  // namespace maskserve::engine
