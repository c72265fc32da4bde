#include "server/services/generation_service.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <deque>
#include <random>
#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "engine/generation_input.h"
#include "engine/generative_model.h"
#include "engine/tokenizer/tokenizer.h"
#include "server/embedding_runner.h"
#include "server/services/embedding_service.h"
#include "server/services/proto_convert.h"
#include "server/services/raw_codec.h"
#include "server/services/reactor_lifetime.h"
#include "server/services/service_util.h"
#include "server/status_util.h"

namespace maskserve::server {
namespace {

namespace pb = maskserve::v1;


// A seed for requests that set none: different per request.
uint64_t RandomSeed() {
  static std::atomic<uint64_t> counter{0};
  static const uint64_t base = [] {
    std::random_device rd;
    return (static_cast<uint64_t>(rd()) << 32) ^ rd();
  }();
  return engine::SequenceSeed(base, static_cast<int>(counter.fetch_add(1) & 0x7fffffff));
}

pb::FinishReason ToProtoFinish(engine::FinishReason f) {
  switch (f) {
    case engine::FinishReason::kLength:
      return pb::FINISH_REASON_LENGTH;
    case engine::FinishReason::kStopToken:
      return pb::FINISH_REASON_STOP_TOKEN;
    case engine::FinishReason::kStopString:
      return pb::FINISH_REASON_STOP_STRING;
    case engine::FinishReason::kNone:
      break;
  }
  return pb::FINISH_REASON_UNSPECIFIED;
}

absl::StatusOr<engine::DecodeStrategy> StrategyOf(const pb::GenerateRequest& r) {
  switch (r.strategy()) {
    case pb::STRATEGY_GREEDY:
      return engine::DecodeStrategy::kGreedy;
    case pb::STRATEGY_SAMPLE:
      return engine::DecodeStrategy::kSample;
    case pb::STRATEGY_BEAM:
      return engine::DecodeStrategy::kBeam;
    case pb::STRATEGY_UNSPECIFIED:
      // HF's rule: beams when asked for, sampling when its knobs are set.
      if (r.beam_width() > 1) return engine::DecodeStrategy::kBeam;
      if (r.has_temperature() && r.temperature() > 0 && (r.top_k() > 0 || r.has_top_p())) {
        return engine::DecodeStrategy::kSample;
      }
      return engine::DecodeStrategy::kGreedy;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("strategy has unknown value ", static_cast<int>(r.strategy())));
  }
}

// Checks max_new_tokens against the server's limit (the engine checks >= 1
// and the model's length).
absl::Status CheckMaxNewTokens(int value, int limit) {
  if (value < 1 || value > limit) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_new_tokens must be in [1, ", limit, "] (--max_new_tokens), got ", value));
  }
  return absl::OkStatus();
}

void FillTiming(const GenerationResult& r, int64_t tokenization_us, absl::Duration before_submit,
                int64_t total_us, pb::GenerationTiming* t) {
  t->set_tokenization_us(tokenization_us);
  t->set_queue_us(absl::ToInt64Microseconds(r.times.queue));
  t->set_prefill_us(absl::ToInt64Microseconds(r.times.prefill));
  t->set_decode_us(absl::ToInt64Microseconds(r.times.decode));
  t->set_total_us(total_us);
  t->set_first_token_us(absl::ToInt64Microseconds(before_submit + r.times.first_token));
  // A single token has no decode phase: its rate is over the prefill.
  const double secs = absl::ToDoubleSeconds(
      r.times.decode > absl::ZeroDuration() ? r.times.decode : r.times.prefill);
  t->set_tokens_per_second(secs > 0 ? r.completion_tokens / secs : 0.0);
}

void FillUsage(const GenerationResult& r, pb::Usage* u) {
  u->set_prompt_tokens(r.prompt_tokens);
  u->set_completion_tokens(r.completion_tokens);
  u->set_total_tokens(r.prompt_tokens + r.completion_tokens);
}

// ---------------------------------------------------------------- Generate

class GenerateCall final : public grpc::ServerUnaryReactor {
 public:
  GenerateCall(GenerationService* service, grpc::CallbackServerContext* context,
               const grpc::ByteBuffer* request, grpc::ByteBuffer* response)
      : service_(service),
        context_(context),
        raw_request_(request),
        raw_response_(response),
        start_(absl::Now()) {}

  void Start() {
    absl::Status s = AdmitCall(*context_, *service_->deps().registry);
    if (s.ok()) s = life_.SubmitHolding(service_->deps().pool, this, [this] { Prepare(); });
    if (!s.ok()) Finish(ToGrpcStatus(s));
  }

  void OnCancel() override {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_ = true;
    if (batcher_ != nullptr) batcher_->Cancel(handle_);
  }

  void OnDone() override {
    if (life_.Release()) delete this;
  }

 private:
  void Prepare() {
    if (absl::Status s = ParseRequest(*raw_request_, &request_); !s.ok()) {
      Finish(ToGrpcStatus(s));
      return;
    }
    absl::StatusOr<PreparedGeneration> prepared = service_->PrepareGenerate(request_);
    if (!prepared.ok()) {
      Finish(ToGrpcStatus(prepared.status()));
      return;
    }
    tokenization_us_ = prepared->tokenization_us;
    absl::StatusOr<ContinuousBatcher*> batcher =
        service_->BatcherFor(request_.model(), prepared->model);
    if (!batcher.ok()) {
      Finish(ToGrpcStatus(batcher.status()));
      return;
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (cancelled_) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the client cancelled the call"));
      return;
    }
    before_submit_ = absl::Now() - start_;
    GenerationCallbacks cb;
    cb.on_done = [this](absl::StatusOr<GenerationResult> r) { Complete(std::move(r)); };
    absl::StatusOr<GenerationHandle> handle =
        (*batcher)->Submit(std::move(prepared->decoder), DeadlineOf(*context_), std::move(cb));
    if (!handle.ok()) {
      Finish(ToGrpcStatus(handle.status()));
      return;
    }
    batcher_ = *batcher;
    handle_ = *handle;
  }

  void Complete(absl::StatusOr<GenerationResult> result) {
    if (!result.ok()) {
      Finish(ToGrpcStatus(result.status()));
      return;
    }
    for (engine::GeneratedSequence& s : result->sequences) {
      pb::GeneratedSequence* out = response_.add_sequences();
      out->mutable_ids()->Add(s.ids.begin(), s.ids.end());
      out->set_text(std::move(s.text));
      out->set_finish_reason(ToProtoFinish(s.finish));
      out->mutable_logprobs()->Add(s.logprobs.begin(), s.logprobs.end());
      out->set_score(s.score);
    }
    FillUsage(*result, response_.mutable_usage());
    FillTiming(*result, tokenization_us_, before_submit_, MicrosSince(start_),
               response_.mutable_timing());
    response_.set_model(request_.model());
    Finish(SerializeResponse(response_, raw_response_));
  }

  GenerationService* service_;
  grpc::CallbackServerContext* context_;
  const grpc::ByteBuffer* raw_request_;
  grpc::ByteBuffer* raw_response_;
  const absl::Time start_;
  ReactorLifetime life_;
  pb::GenerateRequest request_;
  pb::GenerateResponse response_;
  int64_t tokenization_us_ = 0;
  absl::Duration before_submit_;
  std::mutex mu_;
  bool cancelled_ = false;
  ContinuousBatcher* batcher_ = nullptr;
  GenerationHandle handle_;
};

// ---------------------------------------------------------- GenerateStream

class GenerateStreamCall final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  GenerateStreamCall(GenerationService* service, grpc::CallbackServerContext* context,
                     const grpc::ByteBuffer* request)
      : service_(service), context_(context), raw_request_(request), start_(absl::Now()) {}

  void Start() {
    absl::Status s = AdmitCall(*context_, *service_->deps().registry);
    if (s.ok()) s = life_.SubmitHolding(service_->deps().pool, this, [this] { Prepare(); });
    if (!s.ok()) FinishNow(ToGrpcStatus(s));
  }

  void OnCancel() override {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_ = true;
    if (batcher_ != nullptr) batcher_->Cancel(handle_);
  }

  void OnWriteDone(bool ok) override {
    bool cancel = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      write_in_flight_ = false;
      if (!ok && !broken_) {
        // The client is gone: stop generating (its blocks are freed at the
        // next step). The call finishes once the batcher reports the end,
        // never before: its callbacks point at this reactor.
        broken_ = true;
        pending_.clear();
        cancel = !generation_done_;
      }
    }
    if (cancel) batcher_->Cancel(handle_);
    Pump();
  }

  void OnDone() override {
    if (life_.Release()) delete this;
  }

 private:
  // One message being assembled for a sequence index.
  struct Pending {
    pb::GenerateStreamResponse msg;
  };

  void FinishNow(const grpc::Status& status) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (finished_) return;
      finished_ = true;
    }
    Finish(status);
  }

  void Prepare() {
    pb::GenerateRequest request;
    if (absl::Status s = ParseRequest(*raw_request_, &request); !s.ok()) {
      FinishNow(ToGrpcStatus(s));
      return;
    }
    absl::StatusOr<PreparedGeneration> prepared = service_->PrepareGenerate(request);
    if (!prepared.ok()) {
      FinishNow(ToGrpcStatus(prepared.status()));
      return;
    }
    tokenization_us_ = prepared->tokenization_us;
    absl::StatusOr<ContinuousBatcher*> batcher =
        service_->BatcherFor(request.model(), prepared->model);
    if (!batcher.ok()) {
      FinishNow(ToGrpcStatus(batcher.status()));
      return;
    }
    std::unique_lock<std::mutex> lock(mu_);
    if (cancelled_) {
      lock.unlock();
      FinishNow(grpc::Status(grpc::StatusCode::CANCELLED, "the client cancelled the call"));
      return;
    }
    before_submit_ = absl::Now() - start_;
    GenerationCallbacks cb;
    cb.on_step = [this](const engine::StepOutput& out) { OnStep(out); };
    cb.on_done = [this](absl::StatusOr<GenerationResult> r) { Complete(std::move(r)); };
    absl::StatusOr<GenerationHandle> handle =
        (*batcher)->Submit(std::move(prepared->decoder), DeadlineOf(*context_), std::move(cb));
    if (!handle.ok()) {
      lock.unlock();
      FinishNow(ToGrpcStatus(handle.status()));
      return;
    }
    batcher_ = *batcher;
    handle_ = *handle;
  }

  // Scheduler thread: queue the step's deltas, merged per sequence. The last
  // step's deltas wait for Complete (which follows at once on this thread),
  // so the final message carries both them and usage / timing.
  void OnStep(const engine::StepOutput& out) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (broken_) return;
      for (const engine::SequenceDelta& d : out.deltas) {
        pb::GenerateStreamResponse* m = nullptr;
        for (Pending& p : pending_) {
          if (p.msg.index() == d.index) m = &p.msg;
        }
        if (m == nullptr) {
          pending_.emplace_back();
          m = &pending_.back().msg;
          m->set_index(d.index);
        }
        m->mutable_text()->append(d.text);
        m->mutable_ids()->Add(d.ids.begin(), d.ids.end());
        m->mutable_logprobs()->Add(d.logprobs.begin(), d.logprobs.end());
        if (d.finish != engine::FinishReason::kNone) {
          m->set_finish_reason(ToProtoFinish(d.finish));
        }
      }
    }
    if (!out.done) Pump();
  }

  // Scheduler thread: the request ended (exactly once, after its last step).
  void Complete(absl::StatusOr<GenerationResult> result) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      generation_done_ = true;
      if (broken_) {
        if (status_.ok())
          status_ = grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
      } else if (!result.ok()) {
        status_ = ToGrpcStatus(result.status());
        pending_.clear();
      } else {
        FillUsage(*result, final_.mutable_usage());
        FillTiming(*result, tokenization_us_, before_submit_, MicrosSince(start_),
                   final_.mutable_timing());
      }
    }
    Pump();
  }

  // Starts the next write, or finishes the call once everything is written;
  // at most one write is in flight. Never calls gRPC under mu_.
  void Pump() {
    bool write = false, finish = false, cancel = false;
    grpc::Status status;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (finished_ || write_in_flight_) return;
      if (!broken_ && (!pending_.empty() || (generation_done_ && status_.ok() && !final_sent_))) {
        pb::GenerateStreamResponse msg;
        if (!pending_.empty()) {
          msg = std::move(pending_.front().msg);
          pending_.pop_front();
        }
        // The last message carries usage and timing.
        if (generation_done_ && status_.ok() && pending_.empty()) {
          *msg.mutable_usage() = final_.usage();
          *msg.mutable_timing() = final_.timing();
          final_sent_ = true;
        }
        out_.Clear();  // the previous message's write is done
        grpc::Status s = SerializeResponse(msg, &out_);
        if (s.ok()) {
          write_in_flight_ = true;
          write = true;
        } else {
          // Unsendable (e.g. too large): stop generating, end with the error.
          status_ = s;
          broken_ = true;
          pending_.clear();
          cancel = !generation_done_;
        }
      }
      if (!write && generation_done_) {
        finished_ = true;
        finish = true;
        status = status_;
      }
    }
    if (cancel) batcher_->Cancel(handle_);
    if (write) {
      StartWrite(&out_);
    } else if (finish) {
      Finish(status);
    }
  }

  GenerationService* service_;
  grpc::CallbackServerContext* context_;
  const grpc::ByteBuffer* raw_request_;
  const absl::Time start_;
  ReactorLifetime life_;
  int64_t tokenization_us_ = 0;
  absl::Duration before_submit_;
  std::mutex mu_;
  bool cancelled_ = false;
  ContinuousBatcher* batcher_ = nullptr;
  GenerationHandle handle_;
  std::deque<Pending> pending_;
  pb::GenerateStreamResponse final_;  // usage + timing
  grpc::ByteBuffer out_;              // the message being written
  bool write_in_flight_ = false;
  bool generation_done_ = false;  // no more deltas will come
  bool final_sent_ = false;
  bool broken_ = false;    // a write failed: the client is gone
  bool finished_ = false;  // Finish was called
  grpc::Status status_;
};

// -------------------------------------------------------------- Paraphrase

class ParaphraseCall final : public grpc::ServerUnaryReactor {
 public:
  ParaphraseCall(GenerationService* service, grpc::CallbackServerContext* context,
                 const grpc::ByteBuffer* request, grpc::ByteBuffer* response)
      : service_(service),
        context_(context),
        raw_request_(request),
        raw_response_(response),
        start_(absl::Now()) {}

  void Start() {
    absl::Status s = AdmitCall(*context_, *service_->deps().registry);
    if (s.ok()) s = life_.SubmitHolding(service_->deps().pool, this, [this] { Prepare(); });
    if (!s.ok()) Finish(ToGrpcStatus(s));
  }

  void OnCancel() override {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_ = true;
    if (batcher_ != nullptr) batcher_->Cancel(gen_handle_);
    if (runner_ != nullptr) runner_->Cancel(embed_handle_);
  }

  void OnDone() override {
    if (life_.Release()) delete this;
  }

 private:
  absl::Status Validate() {
    const pb::ParaphraseRequest& r = request_;
    absl::StatusOr<std::shared_ptr<const engine::LoadedModel>> model =
        ResolveModel(*service_->deps().registry, r.model());
    if (!model.ok()) return model.status();
    model_ = *model;
    const engine::GenerativeModel* gen = model_->generator();
    if (gen == nullptr || gen->kind() != engine::GenerationKind::kUnilm ||
        model_->encoder() == nullptr || service_->deps().embedding == nullptr) {
      return absl::FailedPreconditionError(absl::StrCat(
          "model '", r.model(), "' (", model_->description().architecture,
          ") cannot paraphrase: it needs both UniLM generation (an encoder with an MLM head) and "
          "embeddings"));
    }
    if (model_->tokenizer() == nullptr) {
      return absl::FailedPreconditionError(
          absl::StrCat("model '", r.model(), "' has no tokenizer files"));
    }
    if (r.text().empty()) return absl::InvalidArgumentError("text must not be empty");
    if (r.num_candidates() < 1 || r.num_candidates() > engine::kMaxSequencesPerRequest) {
      return absl::InvalidArgumentError(absl::StrCat("num_candidates must be in [1, ",
                                                     engine::kMaxSequencesPerRequest, "], got ",
                                                     r.num_candidates()));
    }
    if (r.top_k() < 0 || r.top_k() > r.num_candidates()) {
      return absl::InvalidArgumentError(
          absl::StrCat("top_k must be in [0, num_candidates = ", r.num_candidates(),
                       "] (0 = all), got ", r.top_k()));
    }
    if (absl::Status s =
            CheckMaxNewTokens(r.max_new_tokens(), service_->deps().options->max_new_tokens);
        !s.ok()) {
      return s;
    }
    if (r.sample_top_k() < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("sample_top_k must be >= 0, got ", r.sample_top_k()));
    }
    absl::StatusOr<engine::PoolingMode> pooling =
        FromProtoPooling(r.pooling(), engine::PoolingMode::kCls);
    if (!pooling.ok()) return pooling.status();
    pooling_ = *pooling;

    engine::GenerationInput in;
    in.source = r.text();
    absl::StatusOr<engine::GenerationPrompt> prompt =
        engine::BuildGenerationPrompt(*gen, model_->tokenizer(), in);
    if (!prompt.ok()) {
      // Name this request's field, not Generate's.
      return absl::Status(prompt.status().code(),
                          absl::StrCat("text: ", prompt.status().message()));
    }
    engine::DecodeOptions o;
    o.strategy = engine::DecodeStrategy::kSample;
    o.max_new_tokens = r.max_new_tokens();
    o.num_return_sequences = r.num_candidates();
    o.temperature = r.has_temperature() ? r.temperature() : 1.0f;
    o.top_k = r.sample_top_k();
    o.top_p = r.has_top_p() ? r.top_p() : 1.0f;
    o.seed = r.has_seed() ? r.seed() : RandomSeed();
    absl::StatusOr<std::unique_ptr<engine::RequestDecoder>> decoder =
        engine::RequestDecoder::Create(gen, model_->tokenizer(), *std::move(prompt), o);
    if (!decoder.ok()) {
      const std::string msg(decoder.status().message());
      // The engine names Generate's fields; top_k is sample_top_k here.
      if (msg.rfind("top_k", 0) == 0) {
        return absl::InvalidArgumentError(absl::StrCat("sample_", msg));
      }
      return decoder.status();
    }
    decoder_ = std::move(*decoder);
    // The source's ids (no special tokens) identify candidates that repeat it.
    absl::StatusOr<engine::Encoding> src =
        model_->tokenizer()->Encode(r.text(), false, engine::TruncationOptions{});
    if (!src.ok()) return src.status();
    source_ids_ = std::move(src->ids);
    return absl::OkStatus();
  }

  void Prepare() {
    if (absl::Status s = ParseRequest(*raw_request_, &request_); !s.ok()) {
      Finish(ToGrpcStatus(s));
      return;
    }
    const absl::Time t0 = absl::Now();
    if (absl::Status s = Validate(); !s.ok()) {
      Finish(ToGrpcStatus(s));
      return;
    }
    tokenization_us_ = MicrosSince(t0);
    absl::StatusOr<ContinuousBatcher*> batcher = service_->BatcherFor(request_.model(), model_);
    if (!batcher.ok()) {
      Finish(ToGrpcStatus(batcher.status()));
      return;
    }
    absl::StatusOr<EmbeddingRunner*> runner =
        service_->deps().embedding->RunnerFor(request_.model(), model_);
    if (!runner.ok()) {
      Finish(ToGrpcStatus(runner.status()));
      return;
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (cancelled_) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the client cancelled the call"));
      return;
    }
    runner_for_later_ = *runner;
    before_submit_ = absl::Now() - start_;
    GenerationCallbacks cb;
    cb.on_done = [this](absl::StatusOr<GenerationResult> r) { Generated(std::move(r)); };
    absl::StatusOr<GenerationHandle> handle =
        (*batcher)->Submit(std::move(decoder_), DeadlineOf(*context_), std::move(cb));
    if (!handle.ok()) {
      Finish(ToGrpcStatus(handle.status()));
      return;
    }
    batcher_ = *batcher;
    gen_handle_ = *handle;
  }

  // Scheduler thread: hop to the pool for tokenisation and embedding.
  void Generated(absl::StatusOr<GenerationResult> result) {
    if (!result.ok()) {
      Finish(ToGrpcStatus(result.status()));
      return;
    }
    gen_ = std::move(*result);
    // Embed submits to the embedding batcher, whose completion may finish
    // the call before Embed has returned.
    absl::Status queued =
        life_.SubmitHolding(service_->deps().pool, this, [this] { Embed(); });
    if (!queued.ok()) Finish(ToGrpcStatus(queued));
  }

  void Embed() {
    const engine::Tokenizer* tok = model_->tokenizer();
    const int max_length = model_->description().max_sequence_length;
    engine::TruncationOptions trunc;
    trunc.max_length = max_length;
    std::set<std::vector<int32_t>> seen = {source_ids_};
    std::vector<EmbedInput> inputs;
    auto add = [&](const std::string& text) -> absl::Status {
      absl::StatusOr<engine::Encoding> enc = tok->Encode(text, true, trunc);
      if (!enc.ok()) return enc.status();
      EmbedInput in;
      in.ids = std::move(enc->ids);
      in.type_ids = std::move(enc->type_ids);
      in.pooling = pooling_;
      in.mask.kind = engine::MaskKind::kBidirectional;
      inputs.push_back(std::move(in));
      return absl::OkStatus();
    };
    if (absl::Status s = add(request_.text()); !s.ok()) {
      Finish(ToGrpcStatus(s));
      return;
    }
    // Distinct candidates that are not the source itself (compared as
    // tokens, so case and spacing the tokenizer ignores do not count).
    for (const engine::GeneratedSequence& s : gen_.sequences) {
      std::string text(absl::StripAsciiWhitespace(s.text));
      if (text.empty()) continue;
      absl::StatusOr<engine::Encoding> plain =
          tok->Encode(text, false, engine::TruncationOptions{});
      if (!plain.ok() || plain->ids.empty()) continue;
      if (!seen.insert(plain->ids).second) continue;
      if (absl::Status st = add(text); !st.ok()) continue;
      candidates_.push_back(std::move(text));
    }
    if (candidates_.empty()) {
      Respond({});
      return;
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (cancelled_) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the client cancelled the call"));
      return;
    }
    absl::StatusOr<RequestHandle> handle =
        runner_for_later_->Submit(std::move(inputs), DeadlineOf(*context_),
                                  [this](EmbedBatcher::Result r) { Embedded(std::move(r)); });
    if (!handle.ok()) {
      Finish(ToGrpcStatus(handle.status()));
      return;
    }
    runner_ = runner_for_later_;
    embed_handle_ = *handle;
  }

  void Embedded(EmbedBatcher::Result result) {
    if (!result.ok()) {
      Finish(ToGrpcStatus(result.status()));
      return;
    }
    std::vector<std::vector<float>> vectors;
    for (ItemResult<EmbedOutput>& r : *result) vectors.push_back(std::move(r.output.pooled));
    Respond(std::move(vectors));
  }

  static double Cosine(const std::vector<float>& a, const std::vector<float>& b) {
    double dot = 0, na = 0, nb = 0;
    for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
      dot += static_cast<double>(a[i]) * b[i];
      na += static_cast<double>(a[i]) * a[i];
      nb += static_cast<double>(b[i]) * b[i];
    }
    return dot / std::max(std::sqrt(na) * std::sqrt(nb), 1e-12);
  }

  // vectors[0] = the source, vectors[1 + i] = candidates_[i].
  void Respond(std::vector<std::vector<float>> vectors) {
    std::vector<std::pair<double, int>> ranked;
    for (size_t i = 0; i < candidates_.size() && i + 1 < vectors.size(); ++i) {
      ranked.emplace_back(Cosine(vectors[0], vectors[i + 1]), static_cast<int>(i));
    }
    std::stable_sort(ranked.begin(), ranked.end(),
                     [](const auto& a, const auto& b) { return a.first > b.first; });
    const size_t k = request_.top_k() > 0 ? static_cast<size_t>(request_.top_k()) : ranked.size();
    for (size_t i = 0; i < ranked.size() && i < k; ++i) {
      pb::ParaphraseCandidate* c = response_.add_paraphrases();
      c->set_text(candidates_[ranked[i].second]);
      c->set_similarity(static_cast<float>(ranked[i].first));
    }
    FillTiming(gen_, tokenization_us_, before_submit_, MicrosSince(start_),
               response_.mutable_timing());
    Finish(SerializeResponse(response_, raw_response_));
  }

  GenerationService* service_;
  grpc::CallbackServerContext* context_;
  const grpc::ByteBuffer* raw_request_;
  grpc::ByteBuffer* raw_response_;
  const absl::Time start_;
  ReactorLifetime life_;
  pb::ParaphraseRequest request_;
  pb::ParaphraseResponse response_;
  std::shared_ptr<const engine::LoadedModel> model_;
  std::unique_ptr<engine::RequestDecoder> decoder_;
  engine::PoolingMode pooling_ = engine::PoolingMode::kCls;
  std::vector<int32_t> source_ids_;
  std::vector<std::string> candidates_;
  GenerationResult gen_;
  int64_t tokenization_us_ = 0;
  absl::Duration before_submit_;
  std::mutex mu_;
  bool cancelled_ = false;
  ContinuousBatcher* batcher_ = nullptr;
  GenerationHandle gen_handle_;
  EmbeddingRunner* runner_for_later_ = nullptr;
  EmbeddingRunner* runner_ = nullptr;
  RequestHandle embed_handle_;
};

}  // namespace

GenerationService::~GenerationService() {
  std::lock_guard<std::mutex> lock(batchers_mu_);
  for (auto& [name, batcher] : batchers_) batcher->Shutdown();
}

absl::StatusOr<ContinuousBatcher*> GenerationService::BatcherFor(
    const std::string& name, std::shared_ptr<const engine::LoadedModel> model) {
  std::lock_guard<std::mutex> lock(batchers_mu_);
  auto it = batchers_.find(name);
  if (it != batchers_.end()) return it->second.get();
  const engine::GenerativeModel* gen = model->generator();
  if (gen == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat("model '", name, "' cannot generate"));
  }
  const ServerOptions& o = *deps_.options;
  ContinuousBatcherOptions bo;
  bo.model = name;
  bo.kv_cache_bytes = o.kv_cache_bytes;
  bo.max_queue_size = o.max_queue_size;
  bo.clock = deps_.clock;
  bo.registry = deps_.metrics;
  // The batcher keeps the model (and so its generator and tokenizer) alive.
  std::shared_ptr<const engine::GenerativeModel> shared(std::move(model), gen);
  absl::StatusOr<std::unique_ptr<ContinuousBatcher>> batcher =
      ContinuousBatcher::Create(std::move(shared), bo);
  if (!batcher.ok()) return batcher.status();
  ContinuousBatcher* raw = batcher->get();
  batchers_.emplace(name, std::move(*batcher));
  return raw;
}

absl::StatusOr<PreparedGeneration> GenerationService::PrepareGenerate(
    const pb::GenerateRequest& req) const {
  const absl::Time start = absl::Now();
  PreparedGeneration p;
  absl::StatusOr<std::shared_ptr<const engine::LoadedModel>> model =
      ResolveModel(*deps_.registry, req.model());
  if (!model.ok()) return model.status();
  p.model = *model;
  const engine::GenerativeModel* gen = p.model->generator();
  if (gen == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("model '", req.model(), "' (", p.model->description().architecture,
                     ") cannot generate: it has no GENERATE task"));
  }
  if (absl::Status s = CheckMaxNewTokens(req.max_new_tokens(), deps_.options->max_new_tokens);
      !s.ok()) {
    return s;
  }
  absl::StatusOr<engine::DecodeStrategy> strategy = StrategyOf(req);
  if (!strategy.ok()) return strategy.status();

  engine::GenerationInput in;
  in.prompt = req.prompt();
  in.prompt_ids.assign(req.prompt_ids().begin(), req.prompt_ids().end());
  in.source = req.source();
  in.target_prefix = req.target_prefix();
  const pb::MaskSpec& m = req.mask();
  if (m.kind() != pb::MASK_KIND_UNSPECIFIED || m.causal() || m.prefix_length() != 0 ||
      m.window() != 0 || m.rate() != 0 || m.segment_ids_size() > 0) {
    absl::StatusOr<engine::MaskSpec> mask = FromProtoMask(m, gen->NaturalMask(0).kind);
    if (!mask.ok()) return mask.status();
    in.mask = *mask;
  }
  absl::StatusOr<engine::GenerationPrompt> prompt =
      engine::BuildGenerationPrompt(*gen, p.model->tokenizer(), in, p.model->target_tokenizer());
  if (!prompt.ok()) return prompt.status();

  engine::DecodeOptions o;
  o.strategy = *strategy;
  o.max_new_tokens = req.max_new_tokens();
  o.min_new_tokens = req.min_new_tokens();
  o.temperature = req.has_temperature() ? req.temperature() : 1.0f;
  o.top_k = req.top_k();
  o.top_p = req.has_top_p() ? req.top_p() : 1.0f;
  o.repetition_penalty = req.has_repetition_penalty() ? req.repetition_penalty() : 1.0f;
  o.no_repeat_ngram_size = req.no_repeat_ngram_size();
  if (*strategy == engine::DecodeStrategy::kBeam && req.beam_width() == 0) {
    return absl::InvalidArgumentError("beam_width must be >= 1 for STRATEGY_BEAM");
  }
  o.beam_width = req.beam_width() == 0 ? 1 : req.beam_width();
  o.length_penalty = req.has_length_penalty() ? req.length_penalty() : 1.0f;
  o.early_stopping = req.early_stopping();
  o.num_return_sequences = req.num_return_sequences() == 0 ? 1 : req.num_return_sequences();
  o.stop.assign(req.stop().begin(), req.stop().end());
  o.stop_token_ids.assign(req.stop_token_ids().begin(), req.stop_token_ids().end());
  o.seed = req.has_seed() ? req.seed() : RandomSeed();
  o.logprobs = req.logprobs();
  o.ignore_eos = req.ignore_eos();
  o.skip_special_tokens = !req.keep_special_tokens();
  absl::StatusOr<std::unique_ptr<engine::RequestDecoder>> decoder =
      engine::RequestDecoder::Create(gen, p.model->target_tokenizer(), *std::move(prompt),
                                     std::move(o));
  if (!decoder.ok()) return decoder.status();
  p.decoder = std::move(*decoder);
  p.tokenization_us = MicrosSince(start);
  return p;
}

grpc::ServerUnaryReactor* GenerationService::Generate(grpc::CallbackServerContext* context,
                                                      const grpc::ByteBuffer* request,
                                                      grpc::ByteBuffer* response) {
  auto* call = new GenerateCall(this, context, request, response);
  call->Start();
  return call;
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* GenerationService::GenerateStream(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request) {
  auto* call = new GenerateStreamCall(this, context, request);
  call->Start();
  return call;
}

grpc::ServerUnaryReactor* GenerationService::Paraphrase(grpc::CallbackServerContext* context,
                                                        const grpc::ByteBuffer* request,
                                                        grpc::ByteBuffer* response) {
  auto* call = new ParaphraseCall(this, context, request, response);
  call->Start();
  return call;
}

}  // namespace maskserve::server
