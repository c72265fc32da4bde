#include "engine/causal_lm.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/attention.h"
#include "engine/decode_attention.h"
#include "engine/generation_step.h"
#include "engine/kernels/activations.h"
#include "engine/kernels/norms.h"
#include "engine/onednn/engine_context.h"
#include "engine/onednn/matmul_cache.h"
#include "engine/safetensors.h"

// model_config.h is deliberately not included here (see causal_lm_arch.h).

namespace maskserve::engine {
namespace {

using Block = CausalLmArch::Block;
using Act = CausalLmArch::Act;

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

// The first prefix under which `probe` exists; NotFound listing the tries.
absl::StatusOr<std::string> FindPrefix(const SafetensorsModel& w,
                                       std::initializer_list<const char*> prefixes,
                                       const std::string& probe) {
  std::string tried;
  for (const char* p : prefixes) {
    if (w.Has(p + probe)) return std::string(p);
    absl::StrAppend(&tried, tried.empty() ? "" : ", ", "'", p, probe, "'");
  }
  return absl::NotFoundError(
      absl::StrCat("no token embeddings in ", w.dir(), " (tried ", tried, ")"));
}

void QuickGeluInPlace(float* x, size_t n) {
  for (size_t i = 0; i < n; ++i) x[i] = x[i] / (1.0f + std::exp(-1.702f * x[i]));
}

}  // namespace

CausalLm::~CausalLm() = default;

KvLayout CausalLm::kv_layout() const {
  return KvLayout{arch_.num_layers, arch_.num_kv_heads, arch_.head_dim};
}

MaskSpec CausalLm::NaturalMask(int /*prefix_length*/) const {
  MaskSpec m;
  m.kind = MaskKind::kCausal;
  return m;
}

absl::Status CausalLm::ValidateMask(const MaskSpec& spec) const {
  switch (spec.kind) {
    case MaskKind::kCausal:
      return absl::OkStatus();
    case MaskKind::kLocal:
    case MaskKind::kDilated:
    case MaskKind::kStrided:
      if (spec.causal) return absl::OkStatus();
      return absl::InvalidArgumentError(absl::StrCat(
          "mask ", spec.ToString(), " lets a position attend later positions; a causal LM ",
          "generates only under CAUSAL or a pattern with mask.causal = true"));
    case MaskKind::kBidirectional:
      return absl::InvalidArgumentError(
          "mask BIDIRECTIONAL is not valid for generation (a cached position would have to see "
          "the future); use CAUSAL");
    case MaskKind::kUnilm:
      return absl::InvalidArgumentError(
          absl::StrCat("mask UNILM is not valid for the causal LM \"", arch_.model_type,
                       "\" (it needs a BERT-family MLM model); use CAUSAL"));
  }
  return absl::InvalidArgumentError("mask kind is unknown");
}

int64_t CausalLm::packed_weight_bytes() const {
  int64_t total = static_cast<int64_t>(lm_head_.bytes());
  for (const Layer& l : layers_) {
    total += static_cast<int64_t>(l.qkv.bytes() + l.attn_out.bytes() + l.ffn_in.bytes() +
                                  l.ffn_out.bytes());
  }
  return total;
}

absl::StatusOr<CausalLm::Linear> CausalLm::Pack(const std::string& what,
                                                absl::Span<const float> weight, int in, int out,
                                                absl::Span<const float> bias,
                                                WeightLayout layout) const {
  Linear l;
  if (panel_) {
    absl::StatusOr<PanelLinear> p = PanelLinear::Create(weight, in, out, bias, layout);
    if (!p.ok()) {
      return absl::Status(p.status().code(),
                          absl::StrCat("packing ", what, ": ", p.status().message()));
    }
    l.panel = std::move(*p);
  } else {
    absl::StatusOr<PackedLinear> p = PackedLinear::Create(weight, in, out, bias, dtype_, layout);
    if (!p.ok()) {
      return absl::Status(p.status().code(),
                          absl::StrCat("packing ", what, ": ", p.status().message()));
    }
    l.onednn = std::move(*p);
  }
  return l;
}

// "<name>.weight" [out, in] (or Conv1D [in, out]) and, when `bias`,
// "<name>.bias" [out], packed.
absl::StatusOr<CausalLm::Linear> CausalLm::PackNamed(const SafetensorsModel& w,
                                                     const std::string& name, int in, int out,
                                                     bool bias, WeightLayout layout) const {
  const std::vector<int64_t> shape = layout == WeightLayout::kOutIn ? std::vector<int64_t>{out, in}
                                                                    : std::vector<int64_t>{in, out};
  absl::StatusOr<std::vector<float>> weight = ReadTensor(w, name + ".weight", shape);
  if (!weight.ok()) return weight.status();
  std::vector<float> b;
  if (bias) {
    absl::Status s = ReadInto(w, name + ".bias", {out}, &b);
    if (!s.ok()) return s;
  }
  return Pack(name, *weight, in, out, b, layout);
}

absl::Status CausalLm::Apply(const Linear& w, const float* x, int rows, float* y, bool accumulate,
                             Act act, bool activate) const {
  if (!w.panel.valid()) {
    absl::Status s = MatmulCache::Global().Linear(
        x, rows, w.onednn, y,
        PostOp{.bias = w.onednn.has_bias(),
               .activation = activate ? ToFused(act) : FusedActivation::kNone,
               .accumulate = accumulate});
    if (!s.ok() || !activate || act != Act::kQuickGelu) return s;
    QuickGeluInPlace(y, static_cast<size_t>(rows) * w.onednn.out_features());
    return absl::OkStatus();
  }
  w.panel.Run(x, rows, y, accumulate);
  if (!activate) return absl::OkStatus();
  const size_t n = static_cast<size_t>(rows) * w.panel.out_features();
  switch (act) {
    case Act::kGeluErf:
      kernels::GeluErf(y, n);
      break;
    case Act::kGeluTanh:
      kernels::GeluTanh(y, n);
      break;
    case Act::kRelu:
      kernels::Relu(y, n);
      break;
    case Act::kSilu:
      kernels::Silu(y, n);
      break;
    case Act::kQuickGelu:
      QuickGeluInPlace(y, n);
      break;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<CausalLm>> CausalLm::Create(const CausalLmArch& arch,
                                                           const SafetensorsModel& w,
                                                           const CausalLmOptions& options) {
  const CausalLmArch& a = arch;
  if (a.hidden_size <= 0 || a.num_layers <= 0 || a.num_heads <= 0 || a.num_kv_heads <= 0 ||
      a.head_dim <= 0 || a.intermediate_size <= 0 || a.vocab_size <= 0 ||
      a.max_position_embeddings <= 0 || a.num_heads % a.num_kv_heads != 0 || a.rotary_dim < 0 ||
      a.rotary_dim > a.head_dim || a.rotary_dim % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("invalid causal LM architecture for ", w.dir()));
  }
  if (a.block != Block::kLlama &&
      (a.num_kv_heads != a.num_heads || a.num_heads * a.head_dim != a.hidden_size)) {
    return absl::InvalidArgumentError(absl::StrCat(
        a.model_type, " needs num_kv_heads == num_heads and heads * head_dim == hidden"));
  }
  if (a.block == Block::kLlama && a.activation != Act::kSilu) {
    return absl::UnimplementedError("gated FFN other than SwiGLU is not supported");
  }

  auto lm = std::unique_ptr<CausalLm>(new CausalLm());
  CausalLm& m = *lm;
  m.arch_ = a;
  m.dtype_ = options.dtype;
  absl::StatusOr<bool> panel = UsePanelLinear(options.linear_kernel, options.dtype);
  if (!panel.ok()) return panel.status();
  m.panel_ = *panel;
  m.eos_ = options.eos_token_ids.empty() ? a.eos_token_ids : options.eos_token_ids;
  m.q_width_ = a.num_heads * a.head_dim;
  m.kv_width_ = a.num_kv_heads * a.head_dim;
  const int H = a.hidden_size, I = a.intermediate_size, V = a.vocab_size;
  const int qw = m.q_width_, kw = m.kv_width_, hd = a.head_dim;
  absl::Status s;

  // --- names per family
  std::string prefix, embed_name, layers, final_norm, head_name;
  switch (a.block) {
    case Block::kGpt2: {
      absl::StatusOr<std::string> p = FindPrefix(w, {"transformer.", ""}, "wte.weight");
      if (!p.ok()) return p.status();
      prefix = *p;
      embed_name = prefix + "wte.weight";
      layers = prefix + "h.";
      final_norm = prefix + "ln_f";
      head_name = "lm_head.weight";
      break;
    }
    case Block::kLlama: {
      absl::StatusOr<std::string> p = FindPrefix(w, {"model.", ""}, "embed_tokens.weight");
      if (!p.ok()) return p.status();
      prefix = *p;
      embed_name = prefix + "embed_tokens.weight";
      layers = prefix + "layers.";
      final_norm = prefix + "norm";
      head_name = "lm_head.weight";
      break;
    }
    case Block::kGptNeox: {
      absl::StatusOr<std::string> p = FindPrefix(w, {"gpt_neox.", ""}, "embed_in.weight");
      if (!p.ok()) return p.status();
      prefix = *p;
      embed_name = prefix + "embed_in.weight";
      layers = prefix + "layers.";
      final_norm = prefix + "final_layer_norm";
      head_name = "embed_out.weight";
      break;
    }
  }
  const bool layer_norm = a.block != Block::kLlama;
  auto read_norm = [&](const std::string& name, Norm* n) -> absl::Status {
    absl::Status st = ReadInto(w, name + ".weight", {H}, &n->gamma);
    if (!st.ok() || !layer_norm) return st;
    return ReadInto(w, name + ".bias", {H}, &n->beta);
  };

  // --- embeddings, positions
  s = ReadInto(w, embed_name, {V, H}, &m.embed_);
  if (!s.ok()) return s;
  if (a.rotary_dim == 0) {
    s = ReadInto(w, prefix + "wpe.weight", {a.max_position_embeddings, H}, &m.positions_);
    if (!s.ok()) return s;
  } else {
    // HF (4.31) LlamaRotaryEmbedding / GPTNeoXRotaryEmbedding, in float32:
    // inv_freq = 1 / base^(arange(0, d, 2) / d); angle = t * inv_freq.
    const int half = a.rotary_dim / 2;
    m.rope_cos_.resize(static_cast<size_t>(a.max_position_embeddings) * half);
    m.rope_sin_.resize(m.rope_cos_.size());
    const float base = static_cast<float>(a.rope_theta);
    for (int i = 0; i < half; ++i) {
      const float e = static_cast<float>(2 * i) / static_cast<float>(a.rotary_dim);
      const float inv = 1.0f / static_cast<float>(std::pow(static_cast<double>(base), double{e}));
      for (int p = 0; p < a.max_position_embeddings; ++p) {
        const float angle = static_cast<float>(p) * inv;
        m.rope_cos_[static_cast<size_t>(p) * half + i] =
            static_cast<float>(std::cos(double{angle}));
        m.rope_sin_[static_cast<size_t>(p) * half + i] =
            static_cast<float>(std::sin(double{angle}));
      }
    }
  }

  // --- layers
  m.layers_.resize(a.num_layers);
  for (int l = 0; l < a.num_layers; ++l) {
    Layer& ly = m.layers_[l];
    const std::string lp = absl::StrCat(layers, l, ".");
    float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    switch (a.block) {
      case Block::kGpt2: {
        s = read_norm(lp + "ln_1", &ly.norm1);
        if (!s.ok()) return s;
        s = read_norm(lp + "ln_2", &ly.norm2);
        if (!s.ok()) return s;
        // Conv1D c_attn [H, 3H]: columns q | k | v, heads contiguous.
        absl::StatusOr<Linear> p =
            m.PackNamed(w, lp + "attn.c_attn", H, 3 * H, true, WeightLayout::kInOut);
        if (!p.ok()) return p.status();
        ly.qkv = std::move(*p);
        p = m.PackNamed(w, lp + "attn.c_proj", H, H, true, WeightLayout::kInOut);
        if (!p.ok()) return p.status();
        ly.attn_out = std::move(*p);
        p = m.PackNamed(w, lp + "mlp.c_fc", H, I, true, WeightLayout::kInOut);
        if (!p.ok()) return p.status();
        ly.ffn_in = std::move(*p);
        p = m.PackNamed(w, lp + "mlp.c_proj", I, H, true, WeightLayout::kInOut);
        if (!p.ok()) return p.status();
        ly.ffn_out = std::move(*p);
        if (!a.scale_attn_weights) scale = 1.0f;
        if (a.scale_attn_by_inverse_layer_idx) scale /= static_cast<float>(l + 1);
        break;
      }
      case Block::kLlama: {
        s = read_norm(lp + "input_layernorm", &ly.norm1);
        if (!s.ok()) return s;
        s = read_norm(lp + "post_attention_layernorm", &ly.norm2);
        if (!s.ok()) return s;
        std::vector<float> qkv_w(static_cast<size_t>(qw + 2 * kw) * H);
        std::vector<float> qkv_b;
        if (a.attention_bias) qkv_b.resize(qw + 2 * kw);
        size_t row = 0;
        for (const auto& [name, width] :
             {std::pair<const char*, int>{"q_proj", qw}, {"k_proj", kw}, {"v_proj", kw}}) {
          const std::string base = lp + "self_attn." + name;
          absl::StatusOr<std::vector<float>> wt = ReadTensor(w, base + ".weight", {width, H});
          if (!wt.ok()) return wt.status();
          std::copy(wt->begin(), wt->end(), qkv_w.begin() + row * H);
          if (a.attention_bias) {
            absl::StatusOr<std::vector<float>> bs = ReadTensor(w, base + ".bias", {width});
            if (!bs.ok()) return bs.status();
            std::copy(bs->begin(), bs->end(), qkv_b.begin() + row);
          }
          row += width;
        }
        absl::StatusOr<Linear> p = m.Pack(lp + "self_attn.{q,k,v}_proj", qkv_w, H, qw + 2 * kw,
                                          qkv_b, WeightLayout::kOutIn);
        if (!p.ok()) return p.status();
        ly.qkv = std::move(*p);
        p = m.PackNamed(w, lp + "self_attn.o_proj", qw, H, a.attention_bias, WeightLayout::kOutIn);
        if (!p.ok()) return p.status();
        ly.attn_out = std::move(*p);
        // Fused gate | up: one [2I, H] matmul, then SwiGluFused.
        std::vector<float> gu_w(static_cast<size_t>(2 * I) * H);
        std::vector<float> gu_b;
        if (a.mlp_bias) gu_b.resize(2 * I);
        row = 0;
        for (const char* name : {"gate_proj", "up_proj"}) {
          const std::string base = lp + "mlp." + name;
          absl::StatusOr<std::vector<float>> wt = ReadTensor(w, base + ".weight", {I, H});
          if (!wt.ok()) return wt.status();
          std::copy(wt->begin(), wt->end(), gu_w.begin() + row * H);
          if (a.mlp_bias) {
            absl::StatusOr<std::vector<float>> bs = ReadTensor(w, base + ".bias", {I});
            if (!bs.ok()) return bs.status();
            std::copy(bs->begin(), bs->end(), gu_b.begin() + row);
          }
          row += I;
        }
        p = m.Pack(lp + "mlp.{gate,up}_proj", gu_w, H, 2 * I, gu_b, WeightLayout::kOutIn);
        if (!p.ok()) return p.status();
        ly.ffn_in = std::move(*p);
        p = m.PackNamed(w, lp + "mlp.down_proj", I, H, a.mlp_bias, WeightLayout::kOutIn);
        if (!p.ok()) return p.status();
        ly.ffn_out = std::move(*p);
        break;
      }
      case Block::kGptNeox: {
        s = read_norm(lp + "input_layernorm", &ly.norm1);
        if (!s.ok()) return s;
        s = read_norm(lp + "post_attention_layernorm", &ly.norm2);
        if (!s.ok()) return s;
        // query_key_value rows are per head [q | k | v] (hd rows each):
        // regroup into q heads | k heads | v heads.
        const std::string base = lp + "attention.query_key_value";
        absl::StatusOr<std::vector<float>> wt = ReadTensor(w, base + ".weight", {3 * H, H});
        if (!wt.ok()) return wt.status();
        std::vector<float> bias_in;
        if (a.attention_bias) {
          s = ReadInto(w, base + ".bias", {3 * H}, &bias_in);
          if (!s.ok()) return s;
        }
        std::vector<float> qkv_w(wt->size());
        std::vector<float> qkv_b(bias_in.size());
        for (int h = 0; h < a.num_heads; ++h) {
          for (int part = 0; part < 3; ++part) {
            for (int c = 0; c < hd; ++c) {
              const size_t src =
                  static_cast<size_t>(h) * 3 * hd + static_cast<size_t>(part) * hd + c;
              const size_t dst = static_cast<size_t>(part) * H + static_cast<size_t>(h) * hd + c;
              std::copy_n(wt->begin() + src * H, H, qkv_w.begin() + dst * H);
              if (!bias_in.empty()) qkv_b[dst] = bias_in[src];
            }
          }
        }
        absl::StatusOr<Linear> p = m.Pack(base, qkv_w, H, 3 * H, qkv_b, WeightLayout::kOutIn);
        if (!p.ok()) return p.status();
        ly.qkv = std::move(*p);
        p = m.PackNamed(w, lp + "attention.dense", H, H, a.attention_bias, WeightLayout::kOutIn);
        if (!p.ok()) return p.status();
        ly.attn_out = std::move(*p);
        p = m.PackNamed(w, lp + "mlp.dense_h_to_4h", H, I, true, WeightLayout::kOutIn);
        if (!p.ok()) return p.status();
        ly.ffn_in = std::move(*p);
        p = m.PackNamed(w, lp + "mlp.dense_4h_to_h", I, H, true, WeightLayout::kOutIn);
        if (!p.ok()) return p.status();
        ly.ffn_out = std::move(*p);
        break;
      }
    }
    ly.attn_scale = scale;
  }
  s = read_norm(final_norm, &m.final_norm_);
  if (!s.ok()) return s;

  // --- LM head: tied to the token embedding unless a head is stored and
  // the config unties it (a tied checkpoint that also stores lm_head holds
  // the same values).
  if (!a.tie_word_embeddings) {
    absl::StatusOr<std::vector<float>> head = ReadTensor(w, head_name, {V, H});
    if (!head.ok()) return head.status();
    absl::StatusOr<Linear> p = m.Pack(head_name, *head, H, V, {}, WeightLayout::kOutIn);
    if (!p.ok()) return p.status();
    m.lm_head_ = std::move(*p);
  } else {
    absl::StatusOr<Linear> p =
        m.Pack(embed_name + " (tied LM head)", m.embed_, H, V, {}, WeightLayout::kOutIn);
    if (!p.ok()) return p.status();
    m.lm_head_ = std::move(*p);
  }
  return lm;
}

void CausalLm::ApplyNorm(const Norm& n, const float* x, int rows, float* out) const {
  if (n.beta.empty()) {
    kernels::RmsNorm(x, n.gamma.data(), arch_.norm_eps, rows, arch_.hidden_size, out);
  } else {
    kernels::LayerNorm(x, nullptr, n.gamma.data(), n.beta.data(), arch_.norm_eps, rows,
                       arch_.hidden_size, out);
  }
}

void CausalLm::ApplyRotary(float* qkv, int rows, absl::Span<const int32_t> positions) const {
  const int hd = arch_.head_dim;
  const int half = arch_.rotary_dim / 2;
  const int qkv_width = q_width_ + 2 * kv_width_;
  const int rotated_heads = arch_.num_heads + arch_.num_kv_heads;  // q heads, then k heads
  for (int t = 0; t < rows; ++t) {
    float* row = qkv + static_cast<size_t>(t) * qkv_width;
    const float* cs = rope_cos_.data() + static_cast<size_t>(positions[t]) * half;
    const float* sn = rope_sin_.data() + static_cast<size_t>(positions[t]) * half;
    for (int h = 0; h < rotated_heads; ++h) {
      float* x = row + h * hd;
      // x * cos + rotate_half(x) * sin, rotate_half(x) = [-x2, x1].
      for (int i = 0; i < half; ++i) {
        const float x0 = x[i], x1 = x[i + half];
        x[i] = x0 * cs[i] - x1 * sn[i];
        x[i + half] = x1 * cs[i] + x0 * sn[i];
      }
    }
  }
}

absl::Status CausalLm::FinishLayer(const Layer& ly, int rows, const float* ctx, float* x,
                                   float* normed, float* inner, float* act) const {
  if (absl::Status s = Apply(ly.attn_out, ctx, rows, x, /*accumulate=*/true, arch_.activation,
                             /*activate=*/false);
      !s.ok()) {
    return s;
  }
  if (!arch_.parallel_residual) ApplyNorm(ly.norm2, x, rows, normed);
  if (arch_.block == Block::kLlama) {
    if (absl::Status s = Apply(ly.ffn_in, normed, rows, inner, false, arch_.activation, false);
        !s.ok()) {
      return s;
    }
    kernels::SwiGluFused(inner, rows, arch_.intermediate_size, act);
    return Apply(ly.ffn_out, act, rows, x, true, arch_.activation, false);
  }
  if (absl::Status s = Apply(ly.ffn_in, normed, rows, inner, false, arch_.activation, true);
      !s.ok()) {
    return s;
  }
  return Apply(ly.ffn_out, inner, rows, x, true, arch_.activation, false);
}

absl::Status CausalLm::Forward(absl::Span<const StepSequence> seqs, KvCachePool* pool,
                               std::vector<float>* logits) const {
  if (pool == nullptr || logits == nullptr) {
    return absl::InvalidArgumentError("Forward: pool and logits must not be null");
  }
  thread_local GenerationStep step;
  StepLimits limits;
  limits.layout = kv_layout();
  limits.vocab_size = arch_.vocab_size;
  limits.max_sequence_length = max_sequence_length();
  if (absl::Status s = step.Prepare(seqs, *pool, limits, *this); !s.ok()) return s;
  return RunSteps(step, pool, logits);
}

absl::Status CausalLm::RunSteps(GenerationStep& step, KvCachePool* pool,
                                std::vector<float>* logits) const {
  const CausalLmArch& a = arch_;
  const size_t T = static_cast<size_t>(step.num_tokens());
  const absl::Span<const int32_t> rows_out = step.logit_rows();
  const size_t R = rows_out.size();
  const size_t H = static_cast<size_t>(a.hidden_size);
  const size_t qkv_width = static_cast<size_t>(q_width_ + 2 * kv_width_);
  const size_t ffn_width = static_cast<size_t>(layers_[0].ffn_in.out_features());
  const size_t act_width = a.block == Block::kLlama ? static_cast<size_t>(a.intermediate_size) : 0;
  // The last layer computes only the rows whose logits are wanted.
  const bool compact = R < T;

  // Scratch: x | normed | qkv | ctx | inner | act | q_last | x_last.
  const size_t sizes[] = {T * H,         T * H,         T * qkv_width, T * q_width_,
                          T * ffn_width, T * act_width, R * q_width_,  R * H};
  size_t total = 0;
  for (size_t n : sizes) total += (n + 15) / 16 * 16;
  absl::StatusOr<float*> base = step.Scratch(total);
  if (!base.ok()) return base.status();
  float* bufs[8];
  {
    float* p = *base;
    for (int i = 0; i < 8; ++i) {
      bufs[i] = p;
      p += (sizes[i] + 15) / 16 * 16;
    }
  }
  float* x = bufs[0];
  float* normed = bufs[1];
  float* qkv = bufs[2];
  float* ctx = bufs[3];
  float* inner = bufs[4];
  float* act = bufs[5];
  float* q_last = bufs[6];
  float* x_last = bufs[7];

  // Embeddings (+ learned positions).
  const absl::Span<const int32_t> ids = step.token_ids();
  const absl::Span<const int32_t> pos = step.positions();
  for (size_t t = 0; t < T; ++t) {
    float* dst = x + t * H;
    std::memcpy(dst, embed_.data() + static_cast<size_t>(ids[t]) * H, H * sizeof(float));
    if (!positions_.empty()) {
      const float* p = positions_.data() + static_cast<size_t>(pos[t]) * H;
      for (size_t c = 0; c < H; ++c) dst[c] += p[c];
    }
  }

  AttentionOptions ao;
  ao.num_heads = a.num_heads;
  ao.num_kv_heads = a.num_kv_heads;
  ao.head_dim = a.head_dim;
  const int nT = static_cast<int>(T), nR = static_cast<int>(R);
  // One query row per sequence (decode): the single-query attention kernel.
  const bool decode = IsDecodeStep(step.masks());
  for (int l = 0; l < a.num_layers; ++l) {
    const Layer& ly = layers_[l];
    ApplyNorm(ly.norm1, x, nT, normed);
    if (absl::Status s = Apply(ly.qkv, normed, nT, qkv, false, a.activation, false); !s.ok()) {
      return s;
    }
    if (a.rotary_dim > 0) ApplyRotary(qkv, nT, pos);
    if (absl::Status s = step.WriteKv(pool, l, qkv + q_width_, qkv + q_width_ + kv_width_,
                                      static_cast<int64_t>(qkv_width));
        !s.ok()) {
      return s;
    }
    absl::StatusOr<const KvSource*> kv = step.Kv(*pool, l);
    if (!kv.ok()) return kv.status();
    ao.scale = ly.attn_scale;
    if (l + 1 < a.num_layers || !compact) {
      const absl::Status s =
          decode ? DecodeAttention(ao, qkv, static_cast<int64_t>(qkv_width), step.cu_seqlens(),
                                   **kv, step.masks(), ctx, q_width_)
                 : FusedAttention(ao, qkv, static_cast<int64_t>(qkv_width), step.cu_seqlens(), **kv,
                                  step.masks(), ctx, q_width_);
      if (!s.ok()) return s;
      if (a.parallel_residual) ApplyNorm(ly.norm2, x, nT, normed);
      if (absl::Status s = FinishLayer(ly, nT, ctx, x, normed, inner, act); !s.ok()) return s;
      continue;
    }
    // Last layer, compacted: only the logit rows attend and go on.
    if (R == 0) break;
    if (absl::Status s = step.PrepareLastRows(); !s.ok()) return s;
    for (size_t r = 0; r < R; ++r) {
      const size_t src = static_cast<size_t>(rows_out[r]);
      std::memcpy(q_last + r * q_width_, qkv + src * qkv_width, q_width_ * sizeof(float));
      std::memcpy(x_last + r * H, x + src * H, H * sizeof(float));
    }
    if (absl::Status s = DecodeAttention(ao, q_last, q_width_, step.last_row_cu_seqlens(), **kv,
                                         step.last_row_masks(), ctx, q_width_);
        !s.ok()) {
      return s;
    }
    if (a.parallel_residual) ApplyNorm(ly.norm2, x_last, nR, normed);
    if (absl::Status s = FinishLayer(ly, nR, ctx, x_last, normed, inner, act); !s.ok()) return s;
  }

  // Final norm + LM head on the wanted rows only.
  logits->resize(R * static_cast<size_t>(a.vocab_size));
  if (R == 0) return absl::OkStatus();
  // Not compacted: every new token is a logits row (one-token sequences).
  ApplyNorm(final_norm_, compact ? x_last : x, nR, normed);
  return Apply(lm_head_, normed, nR, logits->data(), false, a.activation, false);
}

}  // namespace maskserve::engine
