#include "engine/encoder.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>

#include "absl/strings/str_cat.h"
#include "engine/attention.h"
#include "engine/decode_attention.h"
#include "engine/generation_step.h"
#include "engine/kernels/cpu_features.h"
#include "engine/kernels/norms.h"
#include "engine/kv_cache.h"
#include "engine/onednn/engine_context.h"
#include "engine/onednn/matmul_cache.h"
#include "engine/safetensors.h"

// model_config.h is deliberately not included here (see encoder_arch.h).

namespace maskserve::engine {
namespace {

// Below this many floats a loop is not worth an OpenMP fork.
constexpr size_t kParallelMin = size_t{1} << 15;

int ThreadsFor(size_t work) { return work < kParallelMin ? 1 : SyncThreadCount(); }

FusedActivation ToFusedActivation(EncoderArch::Act a) {
  switch (a) {
    case EncoderArch::Act::kGeluErf:
      return FusedActivation::kGeluErf;
    case EncoderArch::Act::kGeluTanh:
      return FusedActivation::kGeluTanh;
    case EncoderArch::Act::kRelu:
      return FusedActivation::kRelu;
    case EncoderArch::Act::kSilu:
      return FusedActivation::kSilu;
    case EncoderArch::Act::kQuickGelu:
      break;  // no oneDNN eltwise for it: applied separately
  }
  return FusedActivation::kNone;
}

// x * sigmoid(1.702 x), in place.
void QuickGelu(float* x, size_t n) {
  const int nthr = ThreadsFor(n);
#pragma omp parallel for num_threads(nthr) schedule(static) if (nthr > 1)
  for (size_t i = 0; i < n; ++i) x[i] = x[i] / (1.0f + std::exp(-1.702f * x[i]));
}

// y = act(x W + b) [+ y], with quick-GELU (the one activation oneDNN lacks)
// applied after the matmul.
absl::Status LinearAct(const float* x, int rows, const PackedLinear& w, float* y,
                       EncoderArch::Act act) {
  absl::Status s = MatmulCache::Global().Linear(
      x, rows, w, y, PostOp{.bias = true, .activation = ToFusedActivation(act)});
  if (s.ok() && act == EncoderArch::Act::kQuickGelu) {
    QuickGelu(y, static_cast<size_t>(rows) * static_cast<size_t>(w.out_features()));
  }
  return s;
}

// Per-thread scratch: Encode is const and runs concurrently, so every calling
// thread keeps (and reuses across calls) its own 64-byte aligned buffer.
class ThreadScratch {
 public:
  float* Get(size_t floats) {
    if (floats > size_) {
      std::free(data_);
      size_ = (floats + 15) / 16 * 16;
      data_ = static_cast<float*>(std::aligned_alloc(64, size_ * sizeof(float)));
    }
    return data_;
  }
  ~ThreadScratch() { std::free(data_); }

 private:
  float* data_ = nullptr;
  size_t size_ = 0;
};

thread_local ThreadScratch t_scratch;

// fixed sin | cos table: row p = [sin(p w_0) .. sin(p w_{d/2-1}), cos(p w_0) ..
// cos(p w_{d/2-1})], w_i = theta^(-2i/d), in float64 then rounded (what HF's
// RoFormerSinusoidalPositionalEmbedding stores).
std::vector<float> SinCosTable(int rows, int dim, double theta) {
  std::vector<float> t(static_cast<size_t>(rows) * dim);
  const int half = dim / 2;
  for (int p = 0; p < rows; ++p) {
    float* r = t.data() + static_cast<size_t>(p) * dim;
    for (int i = 0; i < half; ++i) {
      const double angle = p / std::pow(theta, 2.0 * i / dim);
      r[i] = static_cast<float>(std::sin(angle));
      r[half + i] = static_cast<float>(std::cos(angle));
    }
  }
  return t;
}

absl::StatusOr<PackedLinear> PackLinear(const SafetensorsModel& w, const std::string& name, int in,
                                        int out, MatmulDType dtype) {
  absl::StatusOr<std::vector<float>> weight = ReadTensor(w, name + ".weight", {out, in});
  if (!weight.ok()) return weight.status();
  absl::StatusOr<std::vector<float>> bias = ReadTensor(w, name + ".bias", {out});
  if (!bias.ok()) return bias.status();
  absl::StatusOr<PackedLinear> p = PackedLinear::Create(*weight, in, out, *bias, dtype);
  if (!p.ok()) {
    return absl::Status(p.status().code(),
                        absl::StrCat("packing ", name, ": ", p.status().message()));
  }
  return p;
}

}  // namespace

Encoder::~Encoder() = default;

absl::StatusOr<std::unique_ptr<Encoder>> Encoder::Create(const ModelConfig& config,
                                                         const SafetensorsModel& weights,
                                                         const EncoderOptions& options) {
  absl::StatusOr<EncoderArch> arch = EncoderArchFromConfig(config);
  if (!arch.ok()) return arch.status();
  return Create(*arch, weights, options);
}

absl::StatusOr<std::unique_ptr<Encoder>> Encoder::Create(const EncoderArch& arch,
                                                         const SafetensorsModel& w,
                                                         const EncoderOptions& options) {
  if (absl::Status s = kernels::CheckCpuSupported(); !s.ok()) return s;
  if (absl::Status s = CheckMatmulDTypeSupported(options.dtype); !s.ok()) return s;
  const EncoderArch& a = arch;
  if (a.hidden_size <= 0 || a.embedding_size <= 0 || a.num_layers <= 0 || a.num_heads <= 0 ||
      a.num_kv_heads <= 0 || a.head_dim <= 0 || a.intermediate_size <= 0 || a.vocab_size <= 0 ||
      a.type_vocab_size < 0 || a.num_heads % a.num_kv_heads != 0 || a.max_sequence_length() <= 0 ||
      a.position_offset < 0) {
    return absl::InvalidArgumentError(absl::StrCat("invalid encoder architecture for ", w.dir()));
  }
  if (a.positions == EncoderArch::Positions::kRotary && a.head_dim % 2 != 0) {
    return absl::InvalidArgumentError("rotary positions need an even head_dim");
  }
  if (a.positions == EncoderArch::Positions::kSinusoidal && a.embedding_size % 2 != 0) {
    return absl::InvalidArgumentError("sinusoidal positions need an even embedding size");
  }
  std::string prefix;
  bool found = false;
  for (const std::string& p : a.prefixes) {
    if (w.Has(p + "embeddings.word_embeddings.weight")) {
      prefix = p;
      found = true;
      break;
    }
  }
  if (!found) {
    std::string tried;
    for (const std::string& p : a.prefixes) {
      absl::StrAppend(&tried, tried.empty() ? "" : ", ", "'", p,
                      "embeddings.word_embeddings.weight'");
    }
    return absl::NotFoundError(
        absl::StrCat("no word embeddings in ", w.dir(), " (tried ", tried, ")"));
  }

  auto enc = std::unique_ptr<Encoder>(new Encoder());
  Encoder& e = *enc;
  e.arch_ = a;
  e.dtype_ = options.dtype;
  e.q_width_ = a.num_heads * a.head_dim;
  e.kv_width_ = a.num_kv_heads * a.head_dim;
  const int H = a.hidden_size, E = a.embedding_size, I = a.intermediate_size;
  const std::string emb = prefix + "embeddings.";

  absl::Status s;
  s = ReadInto(w, emb + "word_embeddings.weight", {a.vocab_size, E}, &e.word_embeddings_);
  if (!s.ok()) return s;
  if (a.type_vocab_size > 0) {
    s = ReadInto(w, emb + "token_type_embeddings.weight", {a.type_vocab_size, E},
                 &e.type_embeddings_);
    if (!s.ok()) return s;
  }
  const std::string pos_name = emb + "position_embeddings.weight";
  switch (a.positions) {
    case EncoderArch::Positions::kLearned:
      s = ReadInto(w, pos_name, {a.max_position_embeddings, E}, &e.position_embeddings_);
      if (!s.ok()) return s;
      break;
    case EncoderArch::Positions::kSinusoidal:
      if (w.Has(pos_name)) {
        s = ReadInto(w, pos_name, {a.max_position_embeddings, E}, &e.position_embeddings_);
        if (!s.ok()) return s;
      } else {
        e.position_embeddings_ = SinCosTable(a.max_position_embeddings, E, a.rope_theta);
      }
      break;
    case EncoderArch::Positions::kRotary: {
      // RoFormer stores its fixed table; HF recomputes it identically when absent.
      const std::string table = prefix + "encoder.embed_positions.weight";
      if (w.Has(table)) {
        s = ReadInto(w, table, {a.max_position_embeddings, a.head_dim}, &e.rotary_table_);
        if (!s.ok()) return s;
      } else {
        e.rotary_table_ = SinCosTable(a.max_position_embeddings, a.head_dim, a.rope_theta);
      }
      break;
    }
  }
  s = ReadInto(w, emb + "LayerNorm.weight", {E}, &e.embedding_norm_.gamma);
  if (!s.ok()) return s;
  s = ReadInto(w, emb + "LayerNorm.bias", {E}, &e.embedding_norm_.beta);
  if (!s.ok()) return s;
  if (E != H) {
    absl::StatusOr<PackedLinear> p =
        PackLinear(w, prefix + "embeddings_project", E, H, options.dtype);
    if (!p.ok()) return p.status();
    e.embeddings_project_ = std::move(*p);
  }

  const int qw = e.q_width_, kw = e.kv_width_;
  e.layers_.resize(a.num_layers);
  for (int l = 0; l < a.num_layers; ++l) {
    Layer& layer = e.layers_[l];
    const std::string lp = absl::StrCat(prefix, "encoder.layer.", l, ".");
    // Fused QKV: rows [0, qw) = query, [qw, qw + kw) = key, then value.
    std::vector<float> qkv_w(static_cast<size_t>(qw + 2 * kw) * H);
    std::vector<float> qkv_b(static_cast<size_t>(qw + 2 * kw));
    size_t row = 0;
    for (const auto& [name, width] :
         {std::pair<const char*, int>{"query", qw}, {"key", kw}, {"value", kw}}) {
      const std::string base = lp + "attention.self." + name;
      absl::StatusOr<std::vector<float>> wt = ReadTensor(w, base + ".weight", {width, H});
      if (!wt.ok()) return wt.status();
      absl::StatusOr<std::vector<float>> bs = ReadTensor(w, base + ".bias", {width});
      if (!bs.ok()) return bs.status();
      std::copy(wt->begin(), wt->end(), qkv_w.begin() + row * H);
      std::copy(bs->begin(), bs->end(), qkv_b.begin() + row);
      row += width;
    }
    absl::StatusOr<PackedLinear> qkv =
        PackedLinear::Create(qkv_w, H, qw + 2 * kw, qkv_b, options.dtype);
    if (!qkv.ok()) return qkv.status();
    layer.qkv = std::move(*qkv);
    absl::StatusOr<PackedLinear> p =
        PackLinear(w, lp + "attention.output.dense", qw, H, options.dtype);
    if (!p.ok()) return p.status();
    layer.attn_out = std::move(*p);
    p = PackLinear(w, lp + "intermediate.dense", H, I, options.dtype);
    if (!p.ok()) return p.status();
    layer.ffn_in = std::move(*p);
    p = PackLinear(w, lp + "output.dense", I, H, options.dtype);
    if (!p.ok()) return p.status();
    layer.ffn_out = std::move(*p);
    for (const auto& [name, norm] :
         {std::pair<std::string, Norm*>{"attention.output.LayerNorm", &layer.attn_norm},
          {"output.LayerNorm", &layer.ffn_norm}}) {
      s = ReadInto(w, lp + name + ".weight", {H}, &norm->gamma);
      if (!s.ok()) return s;
      s = ReadInto(w, lp + name + ".bias", {H}, &norm->beta);
      if (!s.ok()) return s;
    }
  }
  if (a.final_layer_norm) {
    s = ReadInto(w, prefix + "encoder.LayerNorm.weight", {H}, &e.final_norm_.gamma);
    if (!s.ok()) return s;
    s = ReadInto(w, prefix + "encoder.LayerNorm.bias", {H}, &e.final_norm_.beta);
    if (!s.ok()) return s;
  }

  // MLM head: BERT / RoFormer "cls.predictions.*", RoBERTa "lm_head.*". The
  // transform maps hidden -> embedding_size and the decoder is tied to the
  // word embeddings unless the checkpoint stores its own.
  if (options.load_mlm_head) {
    struct HeadNames {
      std::string dense, norm, decoder, bias;
      EncoderArch::Act act;
    };
    const HeadNames heads[] = {
        {"cls.predictions.transform.dense", "cls.predictions.transform.LayerNorm",
         "cls.predictions.decoder.weight", "cls.predictions.bias", a.activation},
        // RobertaLMHead hard-codes exact GELU whatever hidden_act says.
        {"lm_head.dense", "lm_head.layer_norm", "lm_head.decoder.weight", "lm_head.bias",
         EncoderArch::Act::kGeluErf},
    };
    for (const HeadNames& h : heads) {
      if (!w.Has(h.dense + ".weight")) continue;
      absl::StatusOr<PackedLinear> t = PackLinear(w, h.dense, H, E, options.dtype);
      if (!t.ok()) return t.status();
      e.mlm_.transform = std::move(*t);
      e.mlm_act_ = h.act;
      s = ReadInto(w, h.norm + ".weight", {E}, &e.mlm_.norm.gamma);
      if (!s.ok()) return s;
      s = ReadInto(w, h.norm + ".bias", {E}, &e.mlm_.norm.beta);
      if (!s.ok()) return s;
      absl::StatusOr<std::vector<float>> bias = ReadTensor(w, h.bias, {a.vocab_size});
      if (!bias.ok()) return bias.status();
      std::vector<float> own_decoder;
      if (w.Has(h.decoder)) {
        s = ReadInto(w, h.decoder, {a.vocab_size, E}, &own_decoder);
        if (!s.ok()) return s;
      }
      absl::StatusOr<PackedLinear> dec =
          PackedLinear::Create(own_decoder.empty() ? e.word_embeddings_ : own_decoder, E,
                               a.vocab_size, *bias, options.dtype);
      if (!dec.ok()) return dec.status();
      e.mlm_.decoder = std::move(*dec);
      break;
    }
  }
  return enc;
}

void Encoder::ApplyRotary(float* head, int position) const {
  // HF RoFormer: pairs (2i, 2i+1) rotate by angle i, i.e.
  // x' = x * cos_pos + rotate_half(x) * sin_pos with rotate_half = [-x1, x0, ...].
  const int half = arch_.head_dim / 2;
  const float* sin = rotary_table_.data() + static_cast<size_t>(position) * arch_.head_dim;
  const float* cos = sin + half;
  for (int i = 0; i < half; ++i) {
    const float x0 = head[2 * i], x1 = head[2 * i + 1];
    head[2 * i] = x0 * cos[i] - x1 * sin[i];
    head[2 * i + 1] = x1 * cos[i] + x0 * sin[i];
  }
}

absl::Status Encoder::RunLayer(const Layer& layer, int total, absl::Span<const int32_t> cu_seqlens,
                               absl::Span<const AttentionMask> masks,
                               absl::Span<const int32_t> positions, float* x, float* scratch,
                               GenerationStep* step, KvCachePool* pool, int layer_index) const {
  const EncoderArch& a = arch_;
  const int H = a.hidden_size;
  const int qkv_width = q_width_ + 2 * kv_width_;
  const size_t T = static_cast<size_t>(total);
  // Scratch layout: [qkv | ffn inner] (qkv is dead once attention is done),
  // then the attention context, then a [T, H] temporary.
  float* qkv = scratch;
  float* inner = scratch;
  float* ctx = scratch + T * std::max(qkv_width, a.intermediate_size);
  float* tmp = ctx + T * q_width_;
  MatmulCache& mm = MatmulCache::Global();

  const float* attn_in = x;
  if (a.pre_layer_norm) {
    kernels::LayerNorm(x, nullptr, layer.attn_norm.gamma.data(), layer.attn_norm.beta.data(),
                       a.layer_norm_eps, total, H, tmp);
    attn_in = tmp;
  }
  if (absl::Status s = mm.Linear(attn_in, total, layer.qkv, qkv, PostOp{.bias = true}); !s.ok()) {
    return s;
  }
  if (!rotary_table_.empty()) {
    const int hd = a.head_dim;
    const int rotated_heads = a.num_heads + a.num_kv_heads * (a.rotary_value ? 2 : 1);
    const int nthr = ThreadsFor(T * static_cast<size_t>(qkv_width));
#pragma omp parallel for num_threads(nthr) schedule(static) if (nthr > 1)
    for (size_t t = 0; t < T; ++t) {
      float* row = qkv + t * qkv_width;
      // Heads are contiguous in the fused row: q heads, k heads, v heads.
      for (int h = 0; h < rotated_heads; ++h) ApplyRotary(row + h * hd, positions[t]);
    }
  }
  AttentionOptions ao;
  ao.num_heads = a.num_heads;
  ao.num_kv_heads = a.num_kv_heads;
  ao.head_dim = a.head_dim;
  if (step != nullptr) {
    // Cached: store this layer's new keys/values, then attend every cached
    // and new key of each sequence in place.
    if (absl::Status s =
            step->WriteKv(pool, layer_index, qkv + q_width_, qkv + q_width_ + kv_width_, qkv_width);
        !s.ok()) {
      return s;
    }
    absl::StatusOr<const KvSource*> kv = step->Kv(*pool, layer_index);
    if (!kv.ok()) return kv.status();
    const absl::Status s = IsDecodeStep(step->masks())
                               ? DecodeAttention(ao, qkv, qkv_width, step->cu_seqlens(), **kv,
                                                 step->masks(), ctx, q_width_)
                               : FusedAttention(ao, qkv, qkv_width, step->cu_seqlens(), **kv,
                                                step->masks(), ctx, q_width_);
    if (!s.ok()) return s;
  } else if (absl::Status s = FusedAttention(ao, qkv, qkv_width, qkv + q_width_, qkv_width,
                                             qkv + q_width_ + kv_width_, qkv_width, cu_seqlens,
                                             cu_seqlens, masks, ctx, q_width_);
             !s.ok()) {
    return s;
  }
  if (a.pre_layer_norm) {
    // x += attn(LN(x)) W_o + b_o, the residual add fused into the matmul.
    if (absl::Status s =
            mm.Linear(ctx, total, layer.attn_out, x, PostOp{.bias = true, .accumulate = true});
        !s.ok()) {
      return s;
    }
    kernels::LayerNorm(x, nullptr, layer.ffn_norm.gamma.data(), layer.ffn_norm.beta.data(),
                       a.layer_norm_eps, total, H, tmp);
    if (absl::Status s = LinearAct(tmp, total, layer.ffn_in, inner, a.activation); !s.ok()) {
      return s;
    }
    return mm.Linear(inner, total, layer.ffn_out, x, PostOp{.bias = true, .accumulate = true});
  }
  // Post-LN: x = LN(x + f(x)). The residual add rides in the LayerNorm
  // kernel, which saves preloading the matmul output with a copy of x.
  if (absl::Status s = mm.Linear(ctx, total, layer.attn_out, tmp, PostOp{.bias = true}); !s.ok()) {
    return s;
  }
  kernels::LayerNorm(tmp, x, layer.attn_norm.gamma.data(), layer.attn_norm.beta.data(),
                     a.layer_norm_eps, total, H, x);
  if (absl::Status s = LinearAct(x, total, layer.ffn_in, inner, a.activation); !s.ok()) return s;
  if (absl::Status s = mm.Linear(inner, total, layer.ffn_out, tmp, PostOp{.bias = true}); !s.ok()) {
    return s;
  }
  kernels::LayerNorm(tmp, x, layer.ffn_norm.gamma.data(), layer.ffn_norm.beta.data(),
                     a.layer_norm_eps, total, H, x);
  return absl::OkStatus();
}

absl::Status Encoder::Embed(absl::Span<const int32_t> ids, absl::Span<const int32_t> type_ids,
                            absl::Span<const int32_t> positions, float* x, float* scratch) const {
  const EncoderArch& a = arch_;
  const int H = a.hidden_size, E = a.embedding_size;
  const size_t T = ids.size();
  const int total = static_cast<int>(T);
  // Embeddings: (word + token type) + position, as HF adds them, then
  // LayerNorm, then RoFormer's projection to the hidden size if any.
  float* emb = E == H ? x : scratch;
  {
    const size_t e = static_cast<size_t>(E);
    const int nthr = ThreadsFor(T * e);
#pragma omp parallel for num_threads(nthr) schedule(static) if (nthr > 1)
    for (size_t t = 0; t < T; ++t) {
      float* dst = emb + t * e;
      const float* word = word_embeddings_.data() + static_cast<size_t>(ids[t]) * e;
      std::memcpy(dst, word, e * sizeof(float));
      if (!type_embeddings_.empty()) {
        const int ty = type_ids.empty() ? 0 : type_ids[t];
        const float* type = type_embeddings_.data() + static_cast<size_t>(ty) * e;
        for (size_t c = 0; c < e; ++c) dst[c] += type[c];
      }
      if (!position_embeddings_.empty()) {
        const float* pos = position_embeddings_.data() + static_cast<size_t>(positions[t]) * e;
        for (size_t c = 0; c < e; ++c) dst[c] += pos[c];
      }
    }
  }
  kernels::LayerNorm(emb, nullptr, embedding_norm_.gamma.data(), embedding_norm_.beta.data(),
                     a.layer_norm_eps, total, E, emb);
  if (E != H) {
    return MatmulCache::Global().Linear(emb, total, embeddings_project_, x, PostOp{.bias = true});
  }
  return absl::OkStatus();
}

absl::StatusOr<EncoderOutput> Encoder::Encode(const EncoderBatch& batch) const {
  const EncoderArch& a = arch_;
  const absl::Span<const int32_t> cu = batch.cu_seqlens;
  if (cu.size() < 2) return absl::InvalidArgumentError("encoder batch has no sequences");
  const int num_seqs = static_cast<int>(cu.size() - 1);
  if (batch.token_ids.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return absl::InvalidArgumentError("encoder batch is too large");
  }
  const int total = static_cast<int>(batch.token_ids.size());
  if (cu[0] != 0 || cu[num_seqs] != total) {
    return absl::InvalidArgumentError(
        absl::StrCat("cu_seqlens must run from 0 to the number of tokens (", total, "), got ",
                     cu[0], " .. ", cu[num_seqs]));
  }
  if (!batch.type_ids.empty() && batch.type_ids.size() != batch.token_ids.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("type_ids has ", batch.type_ids.size(), " entries for ", total, " tokens"));
  }
  if (!batch.masks.empty() && batch.masks.size() != static_cast<size_t>(num_seqs)) {
    return absl::InvalidArgumentError(
        absl::StrCat(batch.masks.size(), " masks for ", num_seqs, " sequences"));
  }
  const int type_rows = std::max(a.type_vocab_size, 1);
  for (int b = 0; b < num_seqs; ++b) {
    const int len = cu[b + 1] - cu[b];
    if (len <= 0) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", b, " is empty"));
    }
    if (len > max_sequence_length()) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", b, " has ", len,
                                                     " tokens; the model allows at most ",
                                                     max_sequence_length()));
    }
    for (int t = cu[b]; t < cu[b + 1]; ++t) {
      const int32_t id = batch.token_ids[t];
      if (id < 0 || id >= a.vocab_size) {
        return absl::InvalidArgumentError(
            absl::StrCat("sequence ", b, ": token id ", id, " at position ", t - cu[b],
                         " is outside the vocabulary [0, ", a.vocab_size, ")"));
      }
      if (!batch.type_ids.empty()) {
        const int32_t ty = batch.type_ids[t];
        if (ty < 0 || ty >= type_rows) {
          return absl::InvalidArgumentError(absl::StrCat("sequence ", b, ": token type id ", ty,
                                                         " at position ", t - cu[b],
                                                         " is outside [0, ", type_rows, ")"));
        }
      }
    }
  }

  std::vector<AttentionMask> masks;
  masks.reserve(num_seqs);
  for (int b = 0; b < num_seqs; ++b) {
    const int len = cu[b + 1] - cu[b];
    absl::StatusOr<AttentionMask> m;
    if (batch.masks.empty()) {
      m = AttentionMask::Create(MaskSpec{}, len);
    } else if (const MaskSpec& spec = batch.masks[b]; spec.kind == MaskKind::kUnilm &&
                                                      spec.segment_ids.empty() &&
                                                      spec.prefix_length == 0) {
      MaskSpec with_segments = spec;
      if (batch.type_ids.empty()) {
        with_segments.segment_ids.assign(len, 0);
      } else {
        with_segments.segment_ids.assign(batch.type_ids.begin() + cu[b],
                                         batch.type_ids.begin() + cu[b + 1]);
      }
      m = AttentionMask::Create(with_segments, len);
    } else {
      m = AttentionMask::Create(spec, len);
    }
    if (!m.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", b, ": ", m.status().message()));
    }
    masks.push_back(std::move(*m));
  }

  // Position of every token: the row of the learned / sinusoidal table, or
  // the rotary angle index.
  std::vector<int32_t> positions(total);
  for (int b = 0; b < num_seqs; ++b) {
    if (a.roberta_positions) {
      int nonpad = 0;
      for (int t = cu[b]; t < cu[b + 1]; ++t) {
        if (batch.token_ids[t] != a.padding_idx) {
          positions[t] = a.padding_idx + ++nonpad;
        } else {
          positions[t] = a.padding_idx;
        }
      }
    } else {
      const int offset = a.positions == EncoderArch::Positions::kRotary ? 0 : a.position_offset;
      for (int t = cu[b]; t < cu[b + 1]; ++t) positions[t] = t - cu[b] + offset;
    }
  }

  const int H = a.hidden_size, E = a.embedding_size;
  const size_t T = static_cast<size_t>(total);
  const int qkv_width = q_width_ + 2 * kv_width_;
  const size_t scratch_floats = T * (static_cast<size_t>(std::max(qkv_width, a.intermediate_size)) +
                                     q_width_ + std::max(H, E));
  float* scratch = t_scratch.Get(scratch_floats);

  EncoderOutput out;
  out.num_tokens = total;
  out.hidden_size = H;
  out.last_hidden_state.resize(T * H);
  float* x = out.last_hidden_state.data();

  if (absl::Status s = Embed(batch.token_ids, batch.type_ids, positions, x, scratch); !s.ok()) {
    return s;
  }

  for (size_t l = 0; l < layers_.size(); ++l) {
    if (absl::Status s = RunLayer(layers_[l], total, cu, masks, positions, x, scratch); !s.ok()) {
      return s;
    }
    if (l == 0 && batch.need_first_layer) out.hidden_states_1.assign(x, x + T * H);
  }
  if (!final_norm_.gamma.empty()) {
    kernels::LayerNorm(x, nullptr, final_norm_.gamma.data(), final_norm_.beta.data(),
                       a.layer_norm_eps, total, H, x);
  }
  return out;
}

absl::StatusOr<std::vector<float>> Encoder::MlmLogits(const float* hidden, int rows) const {
  std::vector<float> logits(static_cast<size_t>(std::max(rows, 0)) * arch_.vocab_size);
  if (absl::Status s = MlmLogits(hidden, rows, logits.data()); !s.ok()) return s;
  return logits;
}

absl::Status Encoder::MlmLogits(const float* hidden, int rows, float* logits) const {
  if (!has_mlm_head()) {
    return absl::FailedPreconditionError("the checkpoint has no MLM head");
  }
  if (rows < 0 || (rows > 0 && (hidden == nullptr || logits == nullptr))) {
    return absl::InvalidArgumentError("MlmLogits: bad rows / hidden / logits");
  }
  if (rows == 0) return absl::OkStatus();
  const int E = arch_.embedding_size;
  float* t = t_scratch.Get(static_cast<size_t>(rows) * E);
  if (absl::Status s = LinearAct(hidden, rows, mlm_.transform, t, mlm_act_); !s.ok()) {
    return s;
  }
  kernels::LayerNorm(t, nullptr, mlm_.norm.gamma.data(), mlm_.norm.beta.data(),
                     arch_.layer_norm_eps, rows, E, t);
  return MatmulCache::Global().Linear(t, rows, mlm_.decoder, logits, PostOp{.bias = true});
}

KvLayout Encoder::kv_layout() const {
  return KvLayout{arch_.num_layers, arch_.num_kv_heads, arch_.head_dim};
}

absl::Status Encoder::EncodeStep(GenerationStep& step, KvCachePool* pool,
                                 float* last_hidden) const {
  const EncoderArch& a = arch_;
  if (pool == nullptr) return absl::InvalidArgumentError("EncodeStep: pool must not be null");
  const int total = step.num_tokens();
  const size_t T = static_cast<size_t>(total);
  const int H = a.hidden_size, E = a.embedding_size;
  const int type_rows = std::max(a.type_vocab_size, 1);
  const absl::Span<const int32_t> rows_out = step.logit_rows();
  if (!rows_out.empty() && last_hidden == nullptr) {
    return absl::InvalidArgumentError("EncodeStep: last_hidden must not be null");
  }

  // x | embedding-table positions | clamped type ids live in the step's
  // scratch; the layers use this thread's encoder scratch.
  const size_t x_floats = (T * H + 15) / 16 * 16;
  absl::StatusOr<float*> buf = step.Scratch(x_floats + 2 * T + 16);
  if (!buf.ok()) return buf.status();
  float* x = *buf;
  int32_t* table_pos = reinterpret_cast<int32_t*>(x + x_floats);
  int32_t* types = table_pos + T;
  const absl::Span<const int32_t> pos = step.positions();
  const absl::Span<const int32_t> ty = step.type_ids();
  const int offset = a.positions == EncoderArch::Positions::kRotary ? 0 : a.position_offset;
  for (size_t t = 0; t < T; ++t) {
    // RoBERTa: padding_idx + 1 + position (position_offset = padding_idx + 1).
    table_pos[t] = pos[t] + offset;
    types[t] = std::min(ty[t], type_rows - 1);
  }
  const absl::Span<const int32_t> emb_pos(table_pos, T);
  const int qkv_width = q_width_ + 2 * kv_width_;
  float* scratch =
      t_scratch.Get(T * (static_cast<size_t>(std::max(qkv_width, a.intermediate_size)) + q_width_ +
                         std::max(H, E)));
  if (absl::Status s =
          Embed(step.token_ids(), absl::Span<const int32_t>(types, T), emb_pos, x, scratch);
      !s.ok()) {
    return s;
  }
  // Rotary angles use the absolute position itself.
  const absl::Span<const int32_t> layer_pos =
      a.positions == EncoderArch::Positions::kRotary ? pos : emb_pos;
  for (size_t l = 0; l < layers_.size(); ++l) {
    if (absl::Status s = RunLayer(layers_[l], total, step.cu_seqlens(), step.masks(), layer_pos, x,
                                  scratch, &step, pool, static_cast<int>(l));
        !s.ok()) {
      return s;
    }
  }
  for (size_t r = 0; r < rows_out.size(); ++r) {
    std::memcpy(last_hidden + r * H, x + static_cast<size_t>(rows_out[r]) * H, H * sizeof(float));
  }
  if (!final_norm_.gamma.empty() && !rows_out.empty()) {
    kernels::LayerNorm(last_hidden, nullptr, final_norm_.gamma.data(), final_norm_.beta.data(),
                       a.layer_norm_eps, static_cast<int>(rows_out.size()), H, last_hidden);
  }
  return absl::OkStatus();
}

}  // namespace maskserve::engine
