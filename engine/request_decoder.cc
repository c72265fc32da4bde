#include "engine/request_decoder.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"

namespace maskserve::engine {
namespace {

// SplitMix64: decorrelates the per-sequence seeds derived from one seed.
uint64_t Mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Eight floats, with GCC/Clang vector extensions: one AVX2 register on the
// engine's x86-64-v3 baseline. Without -ffast-math a compiler will not
// vectorise a scalar max / sum reduction (it may not reorder them), so the
// reductions below are written on vectors.
typedef float V8 __attribute__((vector_size(32)));
typedef int32_t V8i __attribute__((vector_size(32)));

inline V8 Splat(float x) { return V8{x, x, x, x, x, x, x, x}; }

inline V8 Load(const float* p) {
  V8 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// exp(x) for x <= 0: Cephes expf (range reduction to [-ln2/2, ln2/2] and a
// degree-5 polynomial, about 2 ulp). Inputs below -87 (and NaN) give
// exp(-87) ~ 1.6e-38, which no sum over a logits row can notice.
inline V8 ExpNonPositive(V8 x) {
  x = x > Splat(-87.0f) ? x : Splat(-87.0f);
  // Round to nearest through the 1.5 * 2^23 trick.
  const V8 fx = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  V8 r = x - fx * 0.693359375f;
  r = r - fx * -2.12194440e-4f;
  const V8 z = r * r;
  const V8 y = (((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r +
                  4.1665795894e-2f) *
                     r +
                 1.6666665459e-1f) *
                    r +
                5.0000001201e-1f) *
                   z +
               r + 1.0f;
  const V8i n = __builtin_convertvector(fx, V8i);
  return y * std::bit_cast<V8>(static_cast<V8i>((n + 127) << 23));
}

}  // namespace

int32_t FastArgmax(absl::Span<const float> scores) {
  const size_t n = scores.size();
  const float* s = scores.data();
  constexpr size_t kLanes = 8;
  const float neg_inf = -std::numeric_limits<float>::infinity();
  V8 vmax = Splat(neg_inf);
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const V8 v = Load(s + i);
    vmax = v > vmax ? v : vmax;
  }
  float m = neg_inf;
  for (size_t j = 0; j < kLanes; ++j) m = std::max(m, vmax[j]);
  for (size_t t = i; t < n; ++t) m = s[t] > m ? s[t] : m;
  // All -inf / NaN rows (and empty ones) keep Argmax's rules.
  if (!(m > neg_inf)) return Argmax(scores);
  for (size_t t = 0; t < n; ++t) {
    if (s[t] == m) return static_cast<int32_t>(t);  // the first maximum, as torch.argmax
  }
  return Argmax(scores);
}

float FastTokenLogProb(absl::Span<const float> scores, int32_t token) {
  const size_t n = scores.size();
  if (token < 0 || static_cast<size_t>(token) >= n) return TokenLogProb(scores, token);
  const float* s = scores.data();
  constexpr size_t kLanes = 8;
  const float neg_inf = -std::numeric_limits<float>::infinity();
  V8 vmax = Splat(neg_inf);
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const V8 v = Load(s + i);
    vmax = v > vmax ? v : vmax;  // NaN never wins
  }
  float m = neg_inf;
  for (size_t j = 0; j < kLanes; ++j) m = std::max(m, vmax[j]);
  for (size_t t = i; t < n; ++t) m = s[t] > m ? s[t] : m;
  if (!std::isfinite(m) || !std::isfinite(s[token])) return TokenLogProb(scores, token);
  const V8 vm = Splat(m);
  V8 vsum = Splat(0.0f);
  for (i = 0; i + kLanes <= n; i += kLanes) vsum += ExpNonPositive(Load(s + i) - vm);
  double sum = 0.0;
  for (size_t j = 0; j < kLanes; ++j) sum += vsum[j];
  if (i < n) {
    float tail[kLanes];
    std::fill(tail, tail + kLanes, neg_inf);
    std::copy(s + i, s + n, tail);
    const V8 e = ExpNonPositive(Load(tail) - vm);
    for (size_t j = 0; j < n - i; ++j) sum += e[j];
  }
  return static_cast<float>(static_cast<double>(s[token]) - m - std::log(sum));
}

namespace {

absl::Status Invalid(absl::string_view message) { return absl::InvalidArgumentError(message); }

}  // namespace

uint64_t SequenceSeed(uint64_t seed, int index) {
  return Mix(seed ^ Mix(static_cast<uint64_t>(index)));
}

struct RequestDecoder::Slot {
  // The model's input stream: prompt + generated ids.
  std::vector<int32_t> tokens;
  // Token type of each token; empty = all 0.
  std::vector<int32_t> type_ids;
  // tokens[0, num_cached) have keys/values in the pool.
  int num_cached = 0;
  bool has_kv = false;
  SeqId kv = 0;
  // Logits after the last token, waiting for Advance.
  std::vector<float> logits;
  bool has_logits = false;

  // Greedy / sample output.
  std::vector<int32_t> generated;
  std::vector<float> logprobs;
  double sum_logprobs = 0.0;
  std::string text;
  FinishReason finish = FinishReason::kNone;
  std::optional<TokenSampler> sampler;
  std::optional<IncrementalDetokenizer> detok;
  std::optional<StopMatcher> matcher;
  // The stop matcher sees the text (min_new_tokens reached).
  bool matching = false;

  bool live() const { return finish == FinishReason::kNone; }
};

absl::Status DecodeOptions::Validate(const GenerativeModel& model, int prompt_length) const {
  if (max_new_tokens < 1) {
    return Invalid(absl::StrCat("max_new_tokens must be >= 1, got ", max_new_tokens));
  }
  if (min_new_tokens < 0 || min_new_tokens > max_new_tokens) {
    return Invalid(absl::StrCat("min_new_tokens must be in [0, max_new_tokens = ", max_new_tokens,
                                "], got ", min_new_tokens));
  }
  const int64_t total = int64_t{prompt_length} + max_new_tokens;
  if (model.max_sequence_length() > 0 && total > model.max_sequence_length()) {
    return Invalid(absl::StrCat(
        "the prompt has ", prompt_length, " tokens; with max_new_tokens = ", max_new_tokens,
        " that exceeds the model's maximum length ", model.max_sequence_length()));
  }
  if (!(temperature > 0.0f) || !std::isfinite(temperature)) {
    return Invalid(absl::StrCat("temperature must be > 0, got ", temperature));
  }
  if (top_k < 0) return Invalid(absl::StrCat("top_k must be >= 0, got ", top_k));
  if (!(top_p > 0.0f && top_p <= 1.0f)) {
    return Invalid(absl::StrCat("top_p must be in (0, 1], got ", top_p));
  }
  if (!(repetition_penalty > 0.0f) || !std::isfinite(repetition_penalty)) {
    return Invalid(absl::StrCat("repetition_penalty must be > 0, got ", repetition_penalty));
  }
  if (no_repeat_ngram_size < 0) {
    return Invalid(absl::StrCat("no_repeat_ngram_size must be >= 0, got ", no_repeat_ngram_size));
  }
  if (!std::isfinite(length_penalty)) {
    return Invalid(absl::StrCat("length_penalty must be a finite number, got ", length_penalty));
  }
  if (num_return_sequences < 1) {
    return Invalid(absl::StrCat("num_return_sequences must be >= 1, got ", num_return_sequences));
  }
  if (beam_width < 1) return Invalid(absl::StrCat("beam_width must be >= 1, got ", beam_width));
  if (int64_t{beam_width} * num_return_sequences > kMaxSequencesPerRequest) {
    return Invalid(absl::StrCat("beam_width (", beam_width, ") x num_return_sequences (",
                                num_return_sequences, ") must be at most ",
                                kMaxSequencesPerRequest));
  }
  switch (strategy) {
    case DecodeStrategy::kBeam:
      if (num_return_sequences > beam_width) {
        return Invalid(absl::StrCat("num_return_sequences (", num_return_sequences,
                                    ") must not exceed beam_width (", beam_width, ") for BEAM"));
      }
      break;
    case DecodeStrategy::kGreedy:
      if (num_return_sequences > 1) {
        return Invalid(
            "num_return_sequences > 1 needs STRATEGY_SAMPLE or STRATEGY_BEAM (greedy decoding "
            "would return identical sequences)");
      }
      [[fallthrough]];
    case DecodeStrategy::kSample:
      if (beam_width > 1) return Invalid("beam_width is only used with STRATEGY_BEAM");
      break;
  }
  if (static_cast<int>(stop.size()) > kMaxStopStrings) {
    return Invalid(
        absl::StrCat("stop has ", stop.size(), " strings; the limit is ", kMaxStopStrings));
  }
  for (size_t i = 0; i < stop.size(); ++i) {
    if (static_cast<int>(stop[i].size()) > kMaxStopStringBytes) {
      return Invalid(absl::StrCat("stop[", i, "] has ", stop[i].size(), " bytes; the limit is ",
                                  kMaxStopStringBytes));
    }
  }
  for (size_t i = 0; i < stop_token_ids.size(); ++i) {
    const int32_t id = stop_token_ids[i];
    if (id < 0 || id >= model.vocab_size()) {
      return Invalid(absl::StrCat("stop_token_ids[", i, "] = ", id,
                                  " is outside the vocabulary [0, ", model.vocab_size(), ")"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<RequestDecoder>> RequestDecoder::Create(const GenerativeModel* model,
                                                                       const Tokenizer* tokenizer,
                                                                       GenerationPrompt prompt,
                                                                       DecodeOptions options) {
  if (model == nullptr) return absl::InvalidArgumentError("RequestDecoder: model is null");
  if (prompt.ids.empty()) return absl::InvalidArgumentError("the prompt has no tokens");
  if (!prompt.type_ids.empty() && prompt.type_ids.size() != prompt.ids.size()) {
    return absl::InvalidArgumentError("prompt type_ids must match its ids");
  }
  if (absl::Status s = options.Validate(*model, static_cast<int>(prompt.ids.size())); !s.ok()) {
    return s;
  }
  std::unique_ptr<RequestDecoder> d(
      new RequestDecoder(model, tokenizer, std::move(prompt), std::move(options)));
  if (absl::Status s = d->processors_.Validate(); !s.ok()) return s;
  if (d->options_.strategy == DecodeStrategy::kBeam) {
    BeamSearchOptions bo;
    bo.num_beams = d->options_.beam_width;
    bo.num_return_sequences = d->options_.num_return_sequences;
    bo.length_penalty = d->options_.length_penalty;
    bo.early_stopping =
        d->options_.early_stopping ? EarlyStopping::kTrue : EarlyStopping::kHeuristic;
    bo.eos_token_ids = d->stop_ids_;
    bo.max_new_tokens = d->options_.max_new_tokens;
    absl::StatusOr<std::unique_ptr<BeamSearch>> beam = BeamSearch::Create(bo, d->prompt_.ids);
    if (!beam.ok()) return beam.status();
    d->beam_ = std::move(*beam);
  }
  d->slots_.push_back(d->NewPromptSlot());
  return d;
}

RequestDecoder::RequestDecoder(const GenerativeModel* model, const Tokenizer* tokenizer,
                               GenerationPrompt prompt, DecodeOptions options)
    : model_(model),
      tokenizer_(tokenizer),
      prompt_(std::move(prompt)),
      options_(std::move(options)) {
  if (!options_.ignore_eos) stop_ids_ = model_->eos_token_ids();
  for (int32_t id : options_.stop_token_ids) {
    if (std::find(stop_ids_.begin(), stop_ids_.end(), id) == stop_ids_.end()) {
      stop_ids_.push_back(id);
    }
  }
  processors_.repetition_penalty = options_.repetition_penalty;
  processors_.no_repeat_ngram_size = options_.no_repeat_ngram_size;
  processors_.min_new_tokens = options_.min_new_tokens;
  processors_.stop_token_ids = stop_ids_;
  if (options_.strategy == DecodeStrategy::kSample) {
    processors_.temperature = options_.temperature;
    processors_.top_k = options_.top_k;
    processors_.top_p = options_.top_p;
  }
}

RequestDecoder::~RequestDecoder() = default;

IncrementalDetokenizer RequestDecoder::MakeDetokenizer() const {
  const Tokenizer* tok = tokenizer_;
  const bool skip = options_.skip_special_tokens;
  IncrementalDetokenizer::DecodeFn fn =
      [tok, skip](absl::Span<const int32_t> ids) -> absl::StatusOr<std::string> {
    if (tok == nullptr) return std::string();
    return tok->Decode(ids, skip);
  };
  return IncrementalDetokenizer(std::move(fn), prompt_.text_context_ids);
}

RequestDecoder::Slot RequestDecoder::NewPromptSlot() const {
  Slot s;
  s.tokens = prompt_.ids;
  if (!prompt_.type_ids.empty() || prompt_.generated_type_id != 0) {
    s.type_ids = prompt_.type_ids;
    s.type_ids.resize(s.tokens.size(), 0);
  }
  if (options_.strategy != DecodeStrategy::kBeam) {
    s.detok.emplace(MakeDetokenizer());
    s.matcher.emplace(options_.stop);
  }
  return s;
}

bool RequestDecoder::IsStop(int32_t id) const {
  return std::find(stop_ids_.begin(), stop_ids_.end(), id) != stop_ids_.end();
}

int RequestDecoder::planned_sequences() const {
  return options_.strategy == DecodeStrategy::kBeam ? options_.beam_width
                                                    : options_.num_return_sequences;
}

int RequestDecoder::live_sequences() const {
  if (done_) return 0;
  int n = 0;
  for (const Slot& s : slots_) n += s.live() ? 1 : 0;
  return n;
}

int RequestDecoder::kv_sequences() const {
  int n = 0;
  for (const Slot& s : slots_) n += s.has_kv ? 1 : 0;
  return n;
}

int64_t RequestDecoder::MaxBlocks(int block_size) const {
  const int64_t length = static_cast<int64_t>(prompt_.ids.size()) + options_.max_new_tokens;
  return planned_sequences() * (CeilDiv(length, block_size) + 1);
}

int64_t RequestDecoder::BlocksToRun(const KvCachePool& pool) const {
  if (done_) return 0;
  const int bs = pool.options().block_size_tokens;
  int64_t blocks = 0;
  for (const Slot& s : slots_) {
    if (!s.live() || s.has_logits) continue;
    const int uncached = static_cast<int>(s.tokens.size()) - s.num_cached;
    if (s.has_kv) {
      absl::StatusOr<int> need = pool.BlocksNeededToAppend(s.kv, uncached + 1);
      blocks += need.ok() ? *need : CeilDiv(uncached + 1, bs);
    } else {
      blocks += CeilDiv(uncached + 1, bs);
    }
  }
  // The forks of the shared prompt each copy its last, partly filled block.
  if (!expanded_) blocks += planned_sequences() - 1;
  return blocks;
}

void RequestDecoder::PendingInputs(std::vector<PendingInput>* out) const {
  out->clear();
  if (done_) return;
  for (size_t i = 0; i < slots_.size(); ++i) {
    const Slot& s = slots_[i];
    if (!s.live() || s.has_logits) continue;
    const int uncached = static_cast<int>(s.tokens.size()) - s.num_cached;
    if (uncached > 0) out->push_back({static_cast<int>(i), uncached});
  }
}

bool RequestDecoder::needs_encoder() const {
  return !done_ && model_->kind() == GenerationKind::kEncoderDecoder && encoder_ == nullptr;
}

void RequestDecoder::SetEncoderState(std::shared_ptr<const EncoderState> state) {
  encoder_ = std::move(state);
}

absl::StatusOr<StepSequence> RequestDecoder::PrepareChunk(KvCachePool* pool, int slot, int n) {
  if (done_ || slot < 0 || slot >= static_cast<int>(slots_.size())) {
    return absl::FailedPreconditionError(absl::StrCat("PrepareChunk: no running slot ", slot));
  }
  Slot& s = slots_[slot];
  const int uncached = static_cast<int>(s.tokens.size()) - s.num_cached;
  if (!s.live() || s.has_logits || n < 1 || n > uncached) {
    return absl::FailedPreconditionError(
        absl::StrCat("PrepareChunk: slot ", slot, " cannot take ", n, " tokens"));
  }
  if (model_->kind() == GenerationKind::kEncoderDecoder && encoder_ == nullptr) {
    absl::StatusOr<std::shared_ptr<const EncoderState>> enc =
        model_->EncodeSource(prompt_.source_ids);
    if (!enc.ok()) return enc.status();
    encoder_ = std::move(*enc);
  }
  bool allocated = false;
  if (!s.has_kv) {
    s.kv = pool->AllocateSequence();
    s.has_kv = true;
    allocated = true;
  }
  if (absl::Status st = pool->Append(s.kv, n); !st.ok()) {
    if (allocated) {
      (void)pool->Free(s.kv);
      s.has_kv = false;
    }
    return st;
  }
  StepSequence q;
  q.kv_seq = s.kv;
  q.num_cached = s.num_cached;
  q.tokens = absl::MakeConstSpan(s.tokens).subspan(s.num_cached, n);
  if (!s.type_ids.empty()) q.type_ids = absl::MakeConstSpan(s.type_ids).subspan(s.num_cached, n);
  q.mask = prompt_.mask;
  q.want_logits = n == uncached;
  q.encoder = encoder_.get();
  return q;
}

absl::Status RequestDecoder::CompleteChunk(int slot, int n, absl::Span<const float> logits) {
  if (slot < 0 || slot >= static_cast<int>(slots_.size())) {
    return absl::FailedPreconditionError(absl::StrCat("CompleteChunk: no slot ", slot));
  }
  Slot& s = slots_[slot];
  s.num_cached += n;
  if (s.num_cached > static_cast<int>(s.tokens.size())) {
    return absl::InternalError("CompleteChunk: more tokens completed than the slot has");
  }
  const bool at_end = s.num_cached == static_cast<int>(s.tokens.size());
  if (at_end != !logits.empty()) {
    return absl::InternalError(absl::StrCat("CompleteChunk: slot ", slot,
                                            at_end ? " needs its logits" : " got early logits"));
  }
  if (at_end) {
    if (static_cast<int>(logits.size()) != model_->vocab_size()) {
      return absl::InternalError(absl::StrCat("CompleteChunk: logits row has ", logits.size(),
                                              " entries, the model's vocabulary ",
                                              model_->vocab_size()));
    }
    s.logits.assign(logits.begin(), logits.end());
    s.has_logits = true;
  }
  return absl::OkStatus();
}

void RequestDecoder::FreeSlotKv(Slot& slot, KvCachePool* pool) {
  if (slot.has_kv) (void)pool->Free(slot.kv);
  slot.has_kv = false;
  slot.num_cached = 0;
}

void RequestDecoder::ReleaseKv(KvCachePool* pool) {
  for (Slot& s : slots_) {
    FreeSlotKv(s, pool);
    s.has_logits = false;
    s.logits.clear();
  }
}

absl::StatusOr<StepOutput> RequestDecoder::Advance(KvCachePool* pool) {
  StepOutput out;
  if (done_) return out;
  if (options_.strategy == DecodeStrategy::kBeam) {
    if (absl::Status s = AdvanceBeam(pool, &out); !s.ok()) return s;
    out.done = done_;
    return out;
  }
  if (!expanded_) {
    if (!slots_[0].has_logits) return out;
    expanded_ = true;
    std::vector<float> logits;
    logits.swap(slots_[0].logits);
    slots_[0].has_logits = false;
    // Every sample starts from the prompt's logits and its KV blocks (shared
    // until a sequence writes into the last, partly filled one).
    const int n = planned_sequences();
    for (int i = 1; i < n; ++i) {
      Slot fork = slots_[0];
      if (fork.has_kv) {
        absl::StatusOr<SeqId> id = pool->Fork(slots_[0].kv);
        if (!id.ok()) return id.status();
        fork.kv = *id;
      }
      slots_.push_back(std::move(fork));
    }
    for (int i = 0; i < n; ++i) {
      if (options_.strategy == DecodeStrategy::kSample) {
        slots_[i].sampler.emplace(SequenceSeed(options_.seed, i));
      }
      scratch_.assign(logits.begin(), logits.end());
      if (absl::Status s = ChooseToken(slots_[i], i, pool, &out); !s.ok()) return s;
    }
  } else {
    for (size_t i = 0; i < slots_.size(); ++i) {
      Slot& s = slots_[i];
      if (!s.live() || !s.has_logits) continue;
      // Swapped, not copied: both buffers keep their capacity for the next step.
      scratch_.swap(s.logits);
      s.has_logits = false;
      if (absl::Status st = ChooseToken(s, static_cast<int>(i), pool, &out); !st.ok()) {
        return st;
      }
    }
  }
  bool all_done = true;
  for (const Slot& s : slots_) all_done = all_done && !s.live();
  if (all_done) {
    done_ = true;
    for (Slot& s : slots_) {
      GeneratedSequence g;
      g.ids = std::move(s.generated);
      g.text = std::move(s.text);
      g.finish = s.finish;
      if (options_.logprobs) g.logprobs = s.logprobs;
      g.score = static_cast<float>(s.sum_logprobs);
      completion_tokens_ += static_cast<int>(g.ids.size());
      results_.push_back(std::move(g));
    }
    ReleaseKv(pool);
  }
  out.done = done_;
  return out;
}

absl::Status RequestDecoder::ChooseToken(Slot& slot, int index, KvCachePool* pool,
                                         StepOutput* out) {
  const absl::Span<float> scores = absl::MakeSpan(scratch_);
  const int generated = static_cast<int>(slot.generated.size());
  ApplyLogitsProcessors(processors_, slot.tokens, generated, scores);
  int32_t token;
  if (options_.strategy == DecodeStrategy::kSample) {
    ApplyLogitsWarpers(processors_, scores);
    token = slot.sampler->Sample(scores);
  } else {
    token = FastArgmax(scores);
  }
  const float logprob = FastTokenLogProb(scores, token);
  slot.generated.push_back(token);
  slot.logprobs.push_back(logprob);
  slot.sum_logprobs += logprob;
  slot.tokens.push_back(token);
  if (!slot.type_ids.empty()) slot.type_ids.push_back(prompt_.generated_type_id);
  ++tokens_generated_;
  ++out->new_tokens;

  SequenceDelta d;
  d.index = index;
  d.ids.push_back(token);
  if (options_.logprobs) d.logprobs.push_back(logprob);
  const int count = generated + 1;
  // Stop conditions count only once min_new_tokens exist (the min-new-tokens
  // processor already bans stop tokens before that).
  const bool armed = count >= options_.min_new_tokens;
  FinishReason finish = FinishReason::kNone;
  if (armed && IsStop(token)) {
    finish = FinishReason::kStopToken;
  } else {
    absl::StatusOr<std::string> piece = slot.detok->Push(token);
    if (!piece.ok()) return piece.status();
    if (!slot.matching && armed && !options_.stop.empty()) slot.matching = true;
    if (slot.matching) {
      StopMatcher::Result r = slot.matcher->Push(*piece);
      d.text += r.text;
      if (r.stopped) finish = FinishReason::kStopString;
    } else {
      d.text += *piece;
    }
    if (finish == FinishReason::kNone && count >= options_.max_new_tokens) {
      finish = FinishReason::kLength;
    }
  }
  if (finish != FinishReason::kNone) {
    if (finish != FinishReason::kStopString) {
      absl::StatusOr<std::string> tail = slot.detok->Flush();
      if (!tail.ok()) return tail.status();
      if (slot.matching) {
        StopMatcher::Result r = slot.matcher->Push(*tail);
        d.text += r.text;
        if (r.stopped) {
          finish = FinishReason::kStopString;
        } else {
          d.text += slot.matcher->Flush();
        }
      } else {
        d.text += *tail;
      }
    }
    slot.finish = finish;
    d.finish = finish;
    FreeSlotKv(slot, pool);
  }
  slot.text += d.text;
  out->deltas.push_back(std::move(d));
  return absl::OkStatus();
}

absl::Status RequestDecoder::AdvanceBeam(KvCachePool* pool, StepOutput* out) {
  for (const Slot& s : slots_) {
    if (!s.has_logits) return absl::OkStatus();  // wait for every running beam
  }
  const int vocab = model_->vocab_size();
  const int nb = options_.beam_width;
  // Processed log-probs: one row on the first step (all beams are the
  // prompt), one per beam afterwards.
  const int rows = static_cast<int>(slots_.size());
  scratch_.resize(static_cast<size_t>(rows) * vocab);
  for (int b = 0; b < rows; ++b) {
    Slot& s = slots_[b];
    const absl::Span<float> row =
        absl::MakeSpan(scratch_).subspan(static_cast<size_t>(b) * vocab, vocab);
    std::copy(s.logits.begin(), s.logits.end(), row.begin());
    s.logits.clear();
    s.has_logits = false;
    LogSoftmaxInPlace(row);
    ApplyLogitsProcessors(processors_, s.tokens, beam_->num_generated(), row);
  }
  absl::StatusOr<BeamStep> step = beam_->Step(scratch_, vocab);
  if (!step.ok()) return step.status();
  tokens_generated_ += nb;
  out->new_tokens += nb;

  // The beams the step chose from: on the first step every beam is the
  // prompt, so slot 0's KV sequence is forked (no allocation) once per beam.
  std::vector<SeqId> old_kv;
  std::vector<int> old_slot;
  for (int b = 0; b < nb; ++b) {
    const int from = expanded_ ? b : 0;
    old_slot.push_back(from);
    const Slot& s = slots_[from];
    if (!s.has_kv) return absl::InternalError("beam without a KV sequence");
    if (expanded_ || b == 0) {
      old_kv.push_back(s.kv);
    } else {
      absl::StatusOr<SeqId> id = pool->Fork(s.kv);
      if (!id.ok()) return id.status();
      old_kv.push_back(*id);
    }
  }
  expanded_ = true;
  if (step->done) {
    for (SeqId id : old_kv) (void)pool->Free(id);
    for (Slot& s : slots_) s.has_kv = false;
    return FinishBeam(pool, out);
  }
  absl::StatusOr<std::vector<SeqId>> seqs = pool->Reassign(old_kv, step->parents);
  if (!seqs.ok()) return seqs.status();
  std::vector<Slot> next(nb);
  for (int i = 0; i < nb; ++i) {
    const Slot& parent = slots_[old_slot[step->parents[i]]];
    Slot& s = next[i];
    s.tokens = parent.tokens;
    s.tokens.push_back(step->tokens[i]);
    if (!parent.type_ids.empty()) {
      s.type_ids = parent.type_ids;
      s.type_ids.push_back(prompt_.generated_type_id);
    }
    s.num_cached = parent.num_cached;
    s.kv = (*seqs)[i];
    s.has_kv = true;
  }
  slots_ = std::move(next);
  return absl::OkStatus();
}

absl::StatusOr<std::string> RequestDecoder::FinalText(absl::Span<const int32_t> ids,
                                                      bool* stopped) const {
  *stopped = false;
  IncrementalDetokenizer detok = MakeDetokenizer();
  StopMatcher matcher(options_.stop);
  bool matching = false;
  std::string text;
  for (size_t i = 0; i < ids.size(); ++i) {
    absl::StatusOr<std::string> piece = detok.Push(ids[i]);
    if (!piece.ok()) return piece.status();
    if (!matching && static_cast<int>(i) + 1 >= options_.min_new_tokens && !options_.stop.empty()) {
      matching = true;
    }
    if (!matching) {
      text += *piece;
      continue;
    }
    StopMatcher::Result r = matcher.Push(*piece);
    text += r.text;
    if (r.stopped) {
      *stopped = true;
      return text;
    }
  }
  absl::StatusOr<std::string> tail = detok.Flush();
  if (!tail.ok()) return tail.status();
  if (!matching) return text + *tail;
  StopMatcher::Result r = matcher.Push(*tail);
  text += r.text;
  if (r.stopped) {
    *stopped = true;
    return text;
  }
  return text + matcher.Flush();
}

absl::Status RequestDecoder::FinishBeam(KvCachePool* pool, StepOutput* out) {
  absl::StatusOr<std::vector<BeamHypothesis>> hyps = beam_->Finalize();
  if (!hyps.ok()) return hyps.status();
  for (size_t i = 0; i < hyps->size(); ++i) {
    BeamHypothesis& h = (*hyps)[i];
    GeneratedSequence g;
    g.ids = std::move(h.tokens);
    size_t text_len = g.ids.size();
    if (h.finished_with_eos && !g.ids.empty()) {
      // HF writes eos_token_ids[0]; return the stop id actually chosen.
      if (h.eos_token_id >= 0) g.ids.back() = h.eos_token_id;
      --text_len;
    }
    bool stopped = false;
    absl::StatusOr<std::string> text =
        FinalText(absl::MakeConstSpan(g.ids).subspan(0, text_len), &stopped);
    if (!text.ok()) return text.status();
    g.text = std::move(*text);
    g.finish = stopped               ? FinishReason::kStopString
               : h.finished_with_eos ? FinishReason::kStopToken
                                     : FinishReason::kLength;
    if (options_.logprobs) g.logprobs = h.transition_scores;
    g.score = h.score;
    completion_tokens_ += static_cast<int>(g.ids.size());
    SequenceDelta d;
    d.index = static_cast<int>(i);
    d.text = g.text;
    d.ids = g.ids;
    d.logprobs = g.logprobs;
    d.finish = g.finish;
    out->deltas.push_back(std::move(d));
    results_.push_back(std::move(g));
  }
  done_ = true;
  ReleaseKv(pool);
  return absl::OkStatus();
}

std::vector<GeneratedSequence> RequestDecoder::TakeResults() { return std::move(results_); }

}  // namespace maskserve::engine
