#include "server/services/embedding_service.h"

#include <chrono>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "engine/encoder.h"
#include "engine/tokenizer/tokenizer.h"
#include "server/engine_threads.h"
#include "server/logging.h"
#include "server/services/proto_convert.h"
#include "server/services/raw_codec.h"
#include "server/services/reactor_lifetime.h"
#include "server/services/request_validation.h"
#include "server/services/service_util.h"
#include "server/status_util.h"

namespace maskserve::server {
namespace {

namespace pb = maskserve::v1;

engine::TruncationOptions TruncationFrom(bool truncate, int max_length, pb::TruncationSide side,
                                         pb::TruncationStrategy strategy) {
  engine::TruncationOptions t;
  if (!truncate) return t;
  t.max_length = max_length;
  t.side = side == pb::TRUNCATION_SIDE_LEFT ? engine::TruncationOptions::Side::kLeft
                                            : engine::TruncationOptions::Side::kRight;
  switch (strategy) {
    case pb::TRUNCATION_STRATEGY_ONLY_FIRST:
      t.strategy = engine::TruncationOptions::Strategy::kOnlyFirst;
      break;
    case pb::TRUNCATION_STRATEGY_ONLY_SECOND:
      t.strategy = engine::TruncationOptions::Strategy::kOnlySecond;
      break;
    default:
      t.strategy = engine::TruncationOptions::Strategy::kLongestFirst;
  }
  return t;
}

// Prefixes an engine error with the request field it came from.
absl::Status AtField(const absl::Status& s, const std::string& field) {
  return absl::Status(s.code(), absl::StrCat(field, ": ", s.message()));
}


// Cuts `ids` to `max_length` tokens from the requested side.
void TruncateIds(std::vector<int32_t>* ids, int max_length, pb::TruncationSide side) {
  if (static_cast<int>(ids->size()) <= max_length) return;
  if (side == pb::TRUNCATION_SIDE_LEFT) {
    ids->erase(ids->begin(), ids->end() - max_length);
  } else {
    ids->resize(max_length);
  }
}

// One Embed call: prepare on the pool, batch on the model's runner, finish
// from the batcher's completion. Deleted when gRPC is done with it and the
// pool task has returned (ReactorLifetime).
class EmbedCall final : public grpc::ServerUnaryReactor {
 public:
  EmbedCall(EmbeddingService* service, grpc::CallbackServerContext* context,
            const grpc::ByteBuffer* request, grpc::ByteBuffer* response)
      : service_(service), context_(context), raw_request_(request), raw_response_(response),
        start_(absl::Now()) {}

  void Start() {
    absl::Status s = AdmitCall(*context_, *service_->deps().registry);
    if (s.ok()) s = life_.SubmitHolding(service_->deps().pool, this, [this] { Prepare(); });
    if (!s.ok()) Finish(ToGrpcStatus(s));
  }

  void OnCancel() override {
    EmbeddingRunner* runner = nullptr;
    RequestHandle handle;
    {
      std::lock_guard<std::mutex> lock(mu_);
      cancelled_ = true;
      if (!submitted_) return;
      runner = runner_;
      handle = handle_;
    }
    runner->Cancel(handle);
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
    // Under overload most calls are refused: refuse before tokenising.
    if (absl::Status s = service_->RefuseEarly(request_.model(), DeadlineOf(*context_)); !s.ok()) {
      Finish(ToGrpcStatus(s));
      return;
    }
    absl::StatusOr<PreparedEmbed> prepared = service_->PrepareEmbed(request_);
    if (!prepared.ok()) {
      Finish(ToGrpcStatus(prepared.status()));
      return;
    }
    prepared_ = std::move(*prepared);
    absl::StatusOr<EmbeddingRunner*> runner =
        service_->RunnerFor(request_.model(), prepared_.model);
    if (!runner.ok()) {
      Finish(ToGrpcStatus(runner.status()));
      return;
    }
    std::vector<EmbedInput> inputs = std::move(prepared_.inputs);
    std::lock_guard<std::mutex> lock(mu_);
    if (cancelled_) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the client cancelled the call"));
      return;
    }
    absl::StatusOr<RequestHandle> handle = (*runner)->Submit(
        std::move(inputs), DeadlineOf(*context_),
        [this](EmbedBatcher::Result result) { Complete(std::move(result)); });
    if (!handle.ok()) {
      Finish(ToGrpcStatus(handle.status()));
      return;
    }
    runner_ = *runner;
    handle_ = *handle;
    submitted_ = true;
  }

  void Complete(EmbedBatcher::Result result) {
    if (!result.ok()) {
      Finish(ToGrpcStatus(result.status()));
      return;
    }
    const absl::Time post_start = absl::Now();
    std::vector<float> scratch;
    absl::Duration queue, inference;
    for (size_t i = 0; i < result->size(); ++i) {
      const ItemResult<EmbedOutput>& r = (*result)[i];
      pb::EmbedResponse::Embedding* e = response_.add_embeddings();
      EmbeddingService::PostProcess(prepared_, r.output.pooled, &scratch, e->mutable_values());
      e->set_token_count(static_cast<int32_t>(r.output.tokens));
      e->set_truncated(prepared_.truncated[i]);
      queue = std::max(queue, r.timing.queue_wait);
      inference = std::max(inference, r.timing.inference);
    }
    response_.set_model(request_.model());
    response_.set_dimensions(prepared_.dimensions);
    response_.set_pooling(ToProtoPooling(prepared_.pooling));
    pb::Timing* t = response_.mutable_timing();
    t->set_tokenization_us(prepared_.tokenization_us);
    t->set_queue_us(absl::ToInt64Microseconds(queue));
    t->set_inference_us(absl::ToInt64Microseconds(inference));
    t->set_postprocess_us(MicrosSince(post_start));
    t->set_total_us(MicrosSince(start_));
    Finish(SerializeResponse(response_, raw_response_));
  }

  EmbeddingService* service_;
  grpc::CallbackServerContext* context_;
  const grpc::ByteBuffer* raw_request_;
  grpc::ByteBuffer* raw_response_;
  pb::EmbedRequest request_;
  pb::EmbedResponse response_;
  const absl::Time start_;
  ReactorLifetime life_;
  PreparedEmbed prepared_;
  std::mutex mu_;
  bool cancelled_ = false;
  bool submitted_ = false;
  EmbeddingRunner* runner_ = nullptr;
  RequestHandle handle_;
};

}  // namespace

EmbeddingService::~EmbeddingService() {
  std::lock_guard<std::mutex> lock(runners_mu_);
  for (auto& [name, runner] : runners_) runner->Shutdown();
}

absl::Status EmbeddingService::RefuseEarly(const std::string& model, absl::Time deadline) {
  EmbeddingRunner* runner = nullptr;
  {
    std::lock_guard<std::mutex> lock(runners_mu_);
    auto it = runners_.find(model);
    if (it == runners_.end()) return absl::OkStatus();
    runner = it->second.get();
  }
  return runner->CheckAdmission(deadline);
}

absl::StatusOr<EmbeddingRunner*> EmbeddingService::RunnerFor(
    const std::string& name, std::shared_ptr<const engine::LoadedModel> model) {
  std::lock_guard<std::mutex> lock(runners_mu_);
  auto it = runners_.find(name);
  if (it != runners_.end()) return it->second.get();
  const ServerOptions& o = *deps_.options;
  EmbeddingRunnerOptions ro;
  ro.batching.max_batch_size = o.max_batch_size;
  ro.batching.max_batch_tokens = o.max_batch_tokens;
  ro.batching.max_queue_delay = absl::Microseconds(o.max_queue_delay_us);
  ro.batching.max_queue_size = o.max_queue_size;
  ro.batching.shed_on_deadline = o.shed_on_deadline;
  const EngineThreadPlan threads =
      PlanEngineThreads(o.workers, o.intra_op_threads, o.cpu.usable_cores);
  ro.batching.num_workers = threads.embed_workers;
  ro.threads_per_worker = threads.embed_threads;
  ro.batching.model = name;
  ro.batching.registry = deps_.metrics;
  absl::StatusOr<std::unique_ptr<EmbeddingRunner>> runner =
      EmbeddingRunner::Create(std::move(model), ro);
  if (!runner.ok()) return runner.status();
  EmbeddingRunner* raw = runner->get();
  runners_.emplace(name, std::move(*runner));
  return raw;
}

absl::StatusOr<PreparedEmbed> EmbeddingService::PrepareEmbed(const pb::EmbedRequest& req) const {
  const absl::Time start = absl::Now();
  PreparedEmbed p;
  absl::StatusOr<std::shared_ptr<const engine::LoadedModel>> model =
      ResolveModel(*deps_.registry, req.model());
  if (!model.ok()) return model.status();
  p.model = *model;
  const engine::Encoder* encoder = p.model->encoder();
  if (encoder == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("model '", req.model(), "' (", p.model->description().architecture,
                     ") cannot embed: it has no encoder"));
  }
  const int hidden = encoder->hidden_size();
  const bool has_texts = req.texts_size() > 0;
  const bool has_ids = req.token_ids_size() > 0;
  if (has_texts && has_ids) {
    return absl::InvalidArgumentError("set either texts or token_ids, not both");
  }
  if (!has_texts && !has_ids) {
    return absl::InvalidArgumentError("texts (or token_ids) must not be empty");
  }
  const char* field = has_texts ? "texts" : "token_ids";
  const int n = has_texts ? req.texts_size() : req.token_ids_size();
  if (absl::Status s = CheckInputCount(field, n, deps_.options->max_inputs_per_request); !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckPairsMatch("text_pairs", req.text_pairs_size(), "texts", n); !s.ok()) {
    return s;
  }
  if (has_ids && req.text_pairs_size() > 0) {
    return absl::InvalidArgumentError("text_pairs can only be used with texts");
  }

  // Pooling: the request's, else the profile's, else the model's default.
  if (!req.whitening_profile().empty()) {
    absl::StatusOr<std::shared_ptr<const StoredProfile>> profile =
        deps_.whitening->Get(req.model(), req.whitening_profile());
    if (!profile.ok()) return AtField(profile.status(), "whitening_profile");
    p.profile = *profile;
    if (p.profile->dim() != hidden) {
      return absl::FailedPreconditionError(absl::StrCat(
          "whitening_profile '", req.whitening_profile(), "' has dim ", p.profile->dim(),
          " but model '", req.model(), "' has hidden size ", hidden));
    }
  }
  const engine::PoolingMode fallback =
      p.profile ? p.profile->info().pooling : p.model->description().default_pooling;
  absl::StatusOr<engine::PoolingMode> pooling = FromProtoPooling(req.pooling(), fallback);
  if (!pooling.ok()) return pooling.status();
  p.pooling = *pooling;
  if (p.profile && p.pooling != p.profile->info().pooling) {
    return absl::InvalidArgumentError(absl::StrCat(
        "pooling ", std::string(engine::PoolingModeName(p.pooling)),
        " does not match whitening_profile '", req.whitening_profile(),
        "', which was fitted with ", std::string(engine::PoolingModeName(p.profile->info().pooling))));
  }
  const int available = p.profile ? p.profile->transform().output_dim() : hidden;
  if (req.dimensions() < 0 || req.dimensions() > available) {
    return absl::InvalidArgumentError(absl::StrCat("dimensions must be in [0, ", available,
                                                   "], got ", req.dimensions()));
  }
  p.dimensions = req.dimensions() > 0 ? req.dimensions() : available;
  p.normalize = req.normalize();

  const int model_max = p.model->description().max_sequence_length;
  if (req.max_length() < 0 || (model_max > 0 && req.max_length() > model_max)) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_length must be in [0, ", model_max, "], got ", req.max_length()));
  }
  const int max_length = req.max_length() > 0 ? req.max_length() : model_max;
  absl::StatusOr<engine::MaskSpec> mask =
      FromProtoMask(req.mask(), engine::MaskKind::kBidirectional);
  if (!mask.ok()) return mask.status();

  const engine::Tokenizer* tok = nullptr;
  if (has_texts) {
    absl::StatusOr<const engine::Tokenizer*> t = RequireTokenizer(*p.model, req.model());
    if (!t.ok()) return t.status();
    tok = *t;
  }
  const engine::TruncationOptions trunc =
      TruncationFrom(true, max_length, req.truncation_side(), req.truncation_strategy());
  int64_t total_tokens = 0;
  p.inputs.reserve(n);
  p.truncated.reserve(n);
  for (int i = 0; i < n; ++i) {
    EmbedInput in;
    bool truncated = false;
    int untruncated = 0;
    if (has_texts) {
      absl::StatusOr<engine::Encoding> enc =
          req.text_pairs_size() == 0
              ? tok->Encode(req.texts(i), true, trunc)
              : tok->EncodePair(req.texts(i), req.text_pairs(i), true, trunc);
      if (!enc.ok()) return AtField(enc.status(), absl::StrCat("texts[", i, "]"));
      truncated = enc->truncated;
      untruncated = enc->num_tokens_untruncated;
      in.ids = std::move(enc->ids);
      in.type_ids = std::move(enc->type_ids);
    } else {
      const auto& ids = req.token_ids(i).ids();
      if (ids.empty()) {
        return absl::InvalidArgumentError(absl::StrCat("token_ids[", i, "] is empty"));
      }
      if (absl::Status s = CheckIdsInVocab("token_ids", i, absl::MakeConstSpan(ids.data(), ids.size()),
                                           encoder->vocab_size());
          !s.ok()) {
        return s;
      }
      in.ids.assign(ids.begin(), ids.end());
      untruncated = static_cast<int>(in.ids.size());
      if (untruncated > max_length) {
        truncated = true;
        TruncateIds(&in.ids, max_length, req.truncation_side());
      }
    }
    if (truncated && !req.truncate()) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, "[", i, "] has ", untruncated, " tokens; the limit is ", max_length,
          " (set truncate to cut over-long inputs)"));
    }
    total_tokens += static_cast<int64_t>(in.ids.size());
    if (total_tokens > deps_.options->max_tokens_per_request) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": the request has more than ", deps_.options->max_tokens_per_request,
                       " tokens (--max_tokens_per_request)"));
    }
    if (absl::Status s = mask->Validate(static_cast<int>(in.ids.size())); !s.ok()) {
      return AtField(s, absl::StrCat(field, "[", i, "]"));
    }
    in.pooling = p.pooling;
    in.mask = *mask;
    p.inputs.push_back(std::move(in));
    p.truncated.push_back(truncated);
  }
  p.tokenization_us = MicrosSince(start);
  return p;
}

void EmbeddingService::PostProcess(const PreparedEmbed& prepared, const std::vector<float>& pooled,
                                   std::vector<float>* scratch,
                                   google::protobuf::RepeatedField<float>* out) {
  const float* v = pooled.data();
  if (prepared.profile) {
    const engine::WhiteningTransform& t = prepared.profile->transform();
    scratch->resize(t.output_dim());
    t.Apply(pooled.data(), 1, scratch->data());
    v = scratch->data();
  }
  const int d = prepared.dimensions;
  out->Resize(d, 0.0f);
  float* dst = out->mutable_data();
  double norm2 = 0;
  for (int j = 0; j < d; ++j) {
    dst[j] = v[j];
    norm2 += static_cast<double>(v[j]) * v[j];
  }
  if (prepared.normalize) {
    const float inv = static_cast<float>(1.0 / std::max(std::sqrt(norm2), 1e-12));
    for (int j = 0; j < d; ++j) dst[j] *= inv;
  }
}

grpc::ServerUnaryReactor* EmbeddingService::Embed(grpc::CallbackServerContext* context,
                                                  const grpc::ByteBuffer* request,
                                                  grpc::ByteBuffer* response) {
  auto* call = new EmbedCall(this, context, request, response);
  call->Start();
  return call;
}

grpc::ServerUnaryReactor* EmbeddingService::Tokenize(grpc::CallbackServerContext* context,
                                                     const grpc::ByteBuffer* request,
                                                     grpc::ByteBuffer* response) {
  return RunOnPool(context, [this, context, request, response]() -> absl::Status {
    pb::TokenizeRequest typed_request;
    if (absl::Status s = ParseRequest(*request, &typed_request); !s.ok()) return s;
    pb::TokenizeResponse typed_response;
    if (absl::Status s = DoTokenize(context, &typed_request, &typed_response); !s.ok()) return s;
    grpc::Status out = SerializeResponse(typed_response, response);
    return absl::Status(static_cast<absl::StatusCode>(out.error_code()), out.error_message());
  });
}

grpc::ServerUnaryReactor* EmbeddingService::RunOnPool(grpc::CallbackServerContext* context,
                                                      std::function<absl::Status()> work) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (absl::Status s = AdmitCall(*context, *deps_.registry); !s.ok()) {
    reactor->Finish(ToGrpcStatus(s));
    return reactor;
  }
  absl::Status queued = deps_.pool->Submit(
      [reactor, work = std::move(work)] { reactor->Finish(ToGrpcStatus(work())); });
  if (!queued.ok()) reactor->Finish(ToGrpcStatus(queued));
  return reactor;
}

absl::Status EmbeddingService::DoTokenize(grpc::CallbackServerContext* context,
                                          const pb::TokenizeRequest* request,
                                          pb::TokenizeResponse* response) {
  auto model = ResolveModel(*deps_.registry, request->model());
  if (!model.ok()) return model.status();
  absl::StatusOr<const engine::Tokenizer*> tokenizer = RequireTokenizer(**model, request->model());
  if (!tokenizer.ok()) return tokenizer.status();
  const engine::Tokenizer* tok = *tokenizer;
  const int n = request->texts_size();
  if (absl::Status s = CheckInputCount("texts", n, deps_.options->max_inputs_per_request); !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckPairsMatch("text_pairs", request->text_pairs_size(), "texts", n);
      !s.ok()) {
    return s;
  }
  if (request->max_length() < 0) {
    return absl::InvalidArgumentError("max_length must be >= 0");
  }
  const int max_length = request->max_length() > 0 ? request->max_length()
                                                   : (*model)->description().max_sequence_length;
  const engine::TruncationOptions trunc = TruncationFrom(
      request->truncate(), max_length, request->truncation_side(), request->truncation_strategy());
  const bool add_special = !request->has_add_special_tokens() || request->add_special_tokens();
  int64_t total_tokens = 0;
  for (int i = 0; i < n; ++i) {
    if (context->IsCancelled()) {
      return absl::CancelledError("the client cancelled the call");
    }
    absl::StatusOr<engine::Encoding> enc =
        request->text_pairs_size() == 0
            ? tok->Encode(request->texts(i), add_special, trunc)
            : tok->EncodePair(request->texts(i), request->text_pairs(i), add_special, trunc);
    if (!enc.ok()) return AtField(enc.status(), absl::StrCat("texts[", i, "]"));
    total_tokens += static_cast<int64_t>(enc->ids.size());
    if (total_tokens > deps_.options->max_tokens_per_request) {
      return absl::InvalidArgumentError(absl::StrCat("texts: the request has more than ",
                                                     deps_.options->max_tokens_per_request,
                                                     " tokens (--max_tokens_per_request)"));
    }
    pb::TokenizeResult* r = response->add_results();
    r->mutable_ids()->Assign(enc->ids.begin(), enc->ids.end());
    for (std::string& t : enc->tokens) r->add_tokens(std::move(t));
    for (const auto& [start, end] : enc->offsets) {
      pb::Offset* o = r->add_offsets();
      o->set_start(start);
      o->set_end(end);
    }
    r->mutable_token_type_ids()->Assign(enc->type_ids.begin(), enc->type_ids.end());
    r->set_truncated(enc->truncated);
  }
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* EmbeddingService::Detokenize(grpc::CallbackServerContext* context,
                                                       const pb::DetokenizeRequest* request,
                                                       pb::DetokenizeResponse* response) {
  return RunOnPool(context, [this, request, response] { return DoDetokenize(request, response); });
}

absl::Status EmbeddingService::DoDetokenize(const pb::DetokenizeRequest* request,
                                            pb::DetokenizeResponse* response) {
  auto model = ResolveModel(*deps_.registry, request->model());
  if (!model.ok()) return model.status();
  absl::StatusOr<const engine::Tokenizer*> tokenizer = RequireTokenizer(**model, request->model());
  if (!tokenizer.ok()) return tokenizer.status();
  const engine::Tokenizer* tok = *tokenizer;
  const int n = request->token_ids_size();
  if (absl::Status s = CheckInputCount("token_ids", n, deps_.options->max_inputs_per_request); !s.ok()) {
    return s;
  }
  for (int i = 0; i < n; ++i) {
    const auto& ids = request->token_ids(i).ids();
    if (absl::Status s = CheckIdsInVocab(
            "token_ids", i, absl::MakeConstSpan(ids.data(), ids.size()), tok->vocab_size());
        !s.ok()) {
      return s;
    }
    absl::StatusOr<std::string> text =
        tok->Decode(absl::MakeConstSpan(ids.data(), ids.size()), request->skip_special_tokens());
    if (!text.ok()) {
      return AtField(text.status(), absl::StrCat("token_ids[", i, "]"));
    }
    response->add_texts(std::move(*text));
  }
  return absl::OkStatus();
}


}  // namespace maskserve::server
