// Test doubles for generation, shared by the engine (request decoder) and
// server (continuous batcher, generation service) tests:
//
// FakeGenerativeModel: deterministic logits from a hash of the sequence's
// whole history (token ids, type ids, encoder source). It stores each token
// id in the KV cache (K row = [id, type]) and reads the history back from
// the pool when it computes logits, so a wrong block table, a bad fork,
// copy-on-write or Reassign changes its output exactly like a wrong KV cache
// would change a real model's. ReferenceLogits computes the same logits
// from a plain history with no cache: what a full-recompute loop sees.
//
// FakeTokenizer: a tiny byte-level vocabulary (letters, space, "ab"/"ba",
// and lone bytes of multi-byte UTF-8 characters, so tokens split
// characters) whose Decode repairs incomplete characters with U+FFFD like
// HF's errors="replace".
#pragma once

#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/generative_model.h"
#include "engine/stop_matcher.h"
#include "engine/tokenizer/tokenizer.h"

namespace maskserve::testing {

class FakeTokenizer final : public engine::Tokenizer {
 public:
  // id: 0 <pad>, 1 <eos>, 2 <bos> (special), 3 " ", 4..29 a..z, 30..34 the
  // bytes of "é" (C3 A9) and "€" (E2 82 AC), 35 ".", 36 "ab", 37 "ba", 38 "!",
  // 39 "\n".
  explicit FakeTokenizer(bool add_bos = false) : add_bos_(add_bos) {
    pieces_ = {"<pad>", "<eos>", "<bos>", " "};
    for (char c = 'a'; c <= 'z'; ++c) pieces_.push_back(std::string(1, c));
    pieces_.push_back("\xC3");
    pieces_.push_back("\xA9");
    pieces_.push_back("\xE2");
    pieces_.push_back("\x82");
    pieces_.push_back("\xAC");
    pieces_.push_back(".");
    pieces_.push_back("ab");
    pieces_.push_back("ba");
    pieces_.push_back("!");
    pieces_.push_back("\n");
    special_.pad = 0;
    special_.eos = 1;
    special_.bos = 2;
    special_.unk = 0;
  }

  absl::StatusOr<engine::Encoding> Encode(absl::string_view text, bool add_special_tokens,
                                          const engine::TruncationOptions&) const override {
    engine::Encoding e;
    if (add_special_tokens && add_bos_) e.ids.push_back(2);
    size_t i = 0;
    while (i < text.size()) {
      int best = -1;
      size_t best_len = 0;
      for (int id = 3; id < static_cast<int>(pieces_.size()); ++id) {
        const std::string& p = pieces_[id];
        if (p.size() > best_len && text.substr(i, p.size()) == p) {
          best = id;
          best_len = p.size();
        }
      }
      if (best < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("FakeTokenizer: no token for byte ", i, " of the text"));
      }
      e.ids.push_back(best);
      i += best_len;
    }
    e.type_ids.assign(e.ids.size(), 0);
    e.num_tokens_untruncated = static_cast<int32_t>(e.ids.size());
    return e;
  }
  absl::StatusOr<engine::Encoding> EncodePair(absl::string_view a, absl::string_view,
                                              bool add_special_tokens,
                                              const engine::TruncationOptions& t) const override {
    return Encode(a, add_special_tokens, t);
  }
  absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids,
                                     bool skip_special_tokens) const override {
    std::string bytes;
    for (int32_t id : ids) {
      if (id < 0 || id >= static_cast<int32_t>(pieces_.size())) {
        bytes += "?";
      } else if (id < 3) {
        if (!skip_special_tokens) bytes += pieces_[id];
      } else {
        bytes += pieces_[id];
      }
    }
    std::string out;
    engine::DecodeUtf8Replace(bytes, /*final=*/true, &out);
    return out;
  }
  int32_t vocab_size() const override { return static_cast<int32_t>(pieces_.size()); }
  absl::StatusOr<std::string> IdToToken(int32_t id) const override {
    if (id < 0 || id >= vocab_size()) return absl::NotFoundError("id");
    return pieces_[id];
  }
  std::optional<int32_t> TokenToId(absl::string_view token) const override {
    for (size_t i = 0; i < pieces_.size(); ++i) {
      if (pieces_[i] == token) return static_cast<int32_t>(i);
    }
    return std::nullopt;
  }
  const engine::SpecialTokenIds& special_ids() const override { return special_; }
  bool IsSpecial(int32_t id) const override { return id >= 0 && id < 3; }
  int NumSpecialTokensToAdd(bool) const override { return add_bos_ ? 1 : 0; }
  int model_max_length() const override { return 0; }

 private:
  bool add_bos_;
  std::vector<std::string> pieces_;
  engine::SpecialTokenIds special_;
};

// A UniLM-style tokenizer: Encode(text, true) = [CLS]=2 text [SEP]=1.
class FakeBertTokenizer final : public engine::Tokenizer {
 public:
  absl::StatusOr<engine::Encoding> Encode(absl::string_view text, bool add_special_tokens,
                                          const engine::TruncationOptions& t) const override {
    absl::StatusOr<engine::Encoding> e = inner_.Encode(text, false, t);
    if (!e.ok() || !add_special_tokens) return e;
    e->ids.insert(e->ids.begin(), 2);
    e->ids.push_back(1);
    e->type_ids.assign(e->ids.size(), 0);
    return e;
  }
  absl::StatusOr<engine::Encoding> EncodePair(absl::string_view a, absl::string_view,
                                              bool add_special_tokens,
                                              const engine::TruncationOptions& t) const override {
    return Encode(a, add_special_tokens, t);
  }
  absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids, bool skip) const override {
    return inner_.Decode(ids, skip);
  }
  int32_t vocab_size() const override { return inner_.vocab_size(); }
  absl::StatusOr<std::string> IdToToken(int32_t id) const override { return inner_.IdToToken(id); }
  std::optional<int32_t> TokenToId(absl::string_view t) const override {
    return inner_.TokenToId(t);
  }
  const engine::SpecialTokenIds& special_ids() const override { return inner_.special_ids(); }
  bool IsSpecial(int32_t id) const override { return inner_.IsSpecial(id); }
  int NumSpecialTokensToAdd(bool) const override { return 2; }
  int model_max_length() const override { return 0; }

 private:
  FakeTokenizer inner_;
};

struct FakeModelOptions {
  engine::GenerationKind kind = engine::GenerationKind::kCausalLm;
  int vocab_size = 40;             // logits width
  int max_sequence_length = 512;   // positions per sequence
  std::vector<int32_t> eos = {1};  // default stop ids
  float eos_bias = 0.0f;           // added to the EOS logit (makes EOS likelier)
  // Logit scale: scores are uniform in [-scale, scale] from the hash.
  float scale = 4.0f;
};

class FakeGenerativeModel final : public engine::GenerativeModel {
 public:
  explicit FakeGenerativeModel(FakeModelOptions options = {}) : o_(std::move(options)) {}

  // KV layout: one layer, one head of two floats: K = [token id, type id].
  static engine::KvCacheOptions PoolOptions(int64_t num_blocks, int block_size = 4) {
    engine::KvCacheOptions k;
    k.block_size_tokens = block_size;
    k.num_layers = 1;
    k.num_kv_heads = 1;
    k.head_dim = 2;
    k.total_bytes = num_blocks * block_size * 2 /*K,V*/ * 2 /*floats*/ * sizeof(float);
    return k;
  }

  engine::GenerationKind kind() const override { return o_.kind; }
  engine::KvLayout kv_layout() const override { return {1, 1, 2}; }
  int vocab_size() const override { return o_.vocab_size; }
  int max_sequence_length() const override { return o_.max_sequence_length; }
  int max_source_length() const override { return 64; }
  const std::vector<int32_t>& eos_token_ids() const override { return o_.eos; }
  int32_t decoder_start_token_id() const override {
    return o_.kind == engine::GenerationKind::kEncoderDecoder ? 0 : -1;
  }
  engine::MaskSpec NaturalMask(int prefix_length) const override {
    engine::MaskSpec m;
    if (o_.kind == engine::GenerationKind::kUnilm) {
      m.kind = engine::MaskKind::kUnilm;
      m.prefix_length = prefix_length;
    } else {
      m.kind = engine::MaskKind::kCausal;
    }
    return m;
  }
  absl::Status ValidateMask(const engine::MaskSpec& spec) const override {
    if (spec.kind == engine::MaskKind::kUnilm) {
      if (o_.kind != engine::GenerationKind::kUnilm) {
        return absl::InvalidArgumentError("mask: UNILM needs an encoder with an MLM head");
      }
      return absl::OkStatus();
    }
    if (spec.kind == engine::MaskKind::kCausal || spec.causal) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat(
        "mask: ", spec.ToString(), " lets a position attend later ones; it cannot generate"));
  }

  class FakeEncoderState final : public engine::EncoderState {
   public:
    explicit FakeEncoderState(std::vector<int32_t> ids) : ids_(std::move(ids)) {}
    int source_length() const override { return static_cast<int>(ids_.size()); }
    int64_t bytes() const override { return static_cast<int64_t>(ids_.size() * 4); }
    const std::vector<int32_t>& ids() const { return ids_; }

   private:
    std::vector<int32_t> ids_;
  };

  absl::StatusOr<std::shared_ptr<const engine::EncoderState>> EncodeSource(
      absl::Span<const int32_t> source_ids) const override {
    if (o_.kind != engine::GenerationKind::kEncoderDecoder) {
      return absl::UnimplementedError("this model has no encoder");
    }
    std::lock_guard<std::mutex> lock(mu_);
    ++encode_calls_;
    return std::make_shared<FakeEncoderState>(
        std::vector<int32_t>(source_ids.begin(), source_ids.end()));
  }

  // The logits after `history` (ids and types, types empty = all 0), no cache.
  std::vector<float> ReferenceLogits(absl::Span<const int32_t> ids,
                                     absl::Span<const int32_t> types = {},
                                     absl::Span<const int32_t> source = {}) const {
    uint64_t h = 1469598103934665603ull;
    auto mix = [&h](uint64_t v) {
      h ^= v + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
      h *= 1099511628211ull;
    };
    for (size_t i = 0; i < ids.size(); ++i) {
      mix(static_cast<uint64_t>(ids[i]) + 1);
      mix((types.empty() ? 0 : static_cast<uint64_t>(types[i])) + 7);
    }
    for (int32_t s : source) mix(static_cast<uint64_t>(s) + 1000);
    std::vector<float> logits(o_.vocab_size);
    for (int v = 0; v < o_.vocab_size; ++v) {
      uint64_t x = h ^ (static_cast<uint64_t>(v) * 0xD6E8FEB86659FD93ull);
      x = (x ^ (x >> 32)) * 0xD6E8FEB86659FD93ull;
      x ^= x >> 32;
      const double u = static_cast<double>(x >> 11) * 0x1.0p-53;  // [0, 1)
      logits[v] = static_cast<float>((2.0 * u - 1.0) * o_.scale);
    }
    for (int32_t e : o_.eos) {
      if (e >= 0 && e < o_.vocab_size) logits[e] += o_.eos_bias;
    }
    return logits;
  }

  absl::Status Forward(absl::Span<const engine::StepSequence> seqs, engine::KvCachePool* pool,
                       std::vector<float>* logits) const override {
    std::function<void(absl::Span<const engine::StepSequence>)> hook;
    {
      std::lock_guard<std::mutex> lock(mu_);
      std::vector<int> step;
      for (const engine::StepSequence& s : seqs) step.push_back(static_cast<int>(s.tokens.size()));
      steps_.push_back(std::move(step));
      hook = hook_;
    }
    if (hook) hook(seqs);
    logits->clear();
    for (size_t b = 0; b < seqs.size(); ++b) {
      const engine::StepSequence& s = seqs[b];
      if (s.tokens.empty()) return absl::InvalidArgumentError(absl::StrCat("seqs[", b, "]: empty"));
      absl::StatusOr<int> length = pool->Length(s.kv_seq);
      if (!length.ok()) return length.status();
      const int n = static_cast<int>(s.tokens.size());
      if (*length != s.num_cached + n) {
        return absl::InvalidArgumentError(absl::StrCat("seqs[", b, "]: reserved ", *length,
                                                       " positions, expected ", s.num_cached + n));
      }
      if (s.num_cached + n > o_.max_sequence_length) {
        return absl::InvalidArgumentError(absl::StrCat("seqs[", b, "]: past the maximum length"));
      }
      if (absl::Status v = ValidateMask(s.mask); !v.ok()) return v;
      if ((o_.kind == engine::GenerationKind::kEncoderDecoder) != (s.encoder != nullptr)) {
        return absl::InvalidArgumentError(absl::StrCat("seqs[", b, "]: encoder state mismatch"));
      }
      std::vector<float> k(2 * n), v(2 * n);
      for (int t = 0; t < n; ++t) {
        k[2 * t] = static_cast<float>(s.tokens[t]);
        k[2 * t + 1] = s.type_ids.empty() ? 0.0f : static_cast<float>(s.type_ids[t]);
        v[2 * t] = static_cast<float>(s.num_cached + t);
      }
      if (absl::Status w = pool->Write(s.kv_seq, 0, s.num_cached, n, k.data(), v.data()); !w.ok()) {
        return w;
      }
      if (!s.want_logits) continue;
      const int total = s.num_cached + n;
      std::vector<float> all_k(2 * total), all_v(2 * total);
      if (absl::Status g = pool->Gather(s.kv_seq, 0, all_k.data(), all_v.data()); !g.ok()) {
        return g;
      }
      std::vector<int32_t> ids(total), types(total);
      for (int t = 0; t < total; ++t) {
        ids[t] = static_cast<int32_t>(all_k[2 * t]);
        types[t] = static_cast<int32_t>(all_k[2 * t + 1]);
        if (static_cast<int>(all_v[2 * t]) != t) {
          return absl::InternalError(
              absl::StrCat("seqs[", b, "]: KV position ", t, " holds ", all_v[2 * t]));
        }
      }
      absl::Span<const int32_t> source;
      if (s.encoder != nullptr) {
        source = static_cast<const FakeEncoderState*>(s.encoder)->ids();
      }
      std::vector<float> row = ReferenceLogits(ids, types, source);
      logits->insert(logits->end(), row.begin(), row.end());
    }
    return absl::OkStatus();
  }

  // Runs inside every Forward (before the compute), e.g. to block a step.
  void SetHook(std::function<void(absl::Span<const engine::StepSequence>)> hook) {
    std::lock_guard<std::mutex> lock(mu_);
    hook_ = std::move(hook);
  }
  // New tokens per sequence of every Forward so far.
  std::vector<std::vector<int>> steps() const {
    std::lock_guard<std::mutex> lock(mu_);
    return steps_;
  }
  int encode_calls() const {
    std::lock_guard<std::mutex> lock(mu_);
    return encode_calls_;
  }

 private:
  const FakeModelOptions o_;
  mutable std::mutex mu_;
  mutable std::vector<std::vector<int>> steps_;
  mutable int encode_calls_ = 0;
  std::function<void(absl::Span<const engine::StepSequence>)> hook_;
};

}  // namespace maskserve::testing
