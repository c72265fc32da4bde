// EmbeddingService's whitening RPCs: FitWhitening streams sentences through
// the model's batcher into a double-precision accumulator (memory bounded:
// one message in flight, vectors are folded in and dropped), then fits,
// stores atomically and answers; Get/List/Delete/Import work on the store.
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "engine/encoder.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/whitening.h"
#include "server/logging.h"
#include "server/request_interceptor.h"
#include "server/services/embedding_service.h"
#include "server/services/proto_convert.h"
#include "server/services/raw_codec.h"
#include "server/services/reactor_lifetime.h"
#include "server/services/request_validation.h"
#include "server/services/service_util.h"
#include "server/status_util.h"

namespace maskserve::server {
namespace {

namespace pb = maskserve::v1;

absl::Status AtProfile(const absl::Status& s) {
  return absl::Status(s.code(), absl::StrCat("profile: ", s.message()));
}

class FitWhiteningCall final : public grpc::ServerReadReactor<grpc::ByteBuffer> {
 public:
  FitWhiteningCall(EmbeddingService* service, grpc::CallbackServerContext* context,
                   grpc::ByteBuffer* response)
      : service_(service), context_(context), raw_response_(response) {
    if (absl::Status s = AdmitCall(*context_, *service_->deps().registry); !s.ok()) {
      Fail(s);
      return;
    }
    StartRead(&raw_message_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      // The client closed its side: fit and store on the pool (fsync).
      absl::Status queued =
          life_.SubmitHolding(service_->deps().pool, this, [this] { FinishFit(); });
      if (!queued.ok()) Fail(queued);
      return;
    }
    absl::Status s = ConsumeMessage();
    if (!s.ok()) Fail(s);
  }

  void OnCancel() override {
    EmbeddingRunner* runner = nullptr;
    RequestHandle handle;
    {
      std::lock_guard<std::mutex> lock(mu_);
      cancelled_ = true;
      if (!in_flight_) return;
      runner = runner_;
      handle = handle_;
    }
    runner->Cancel(handle);
  }

  void OnDone() override {
    if (life_.Release()) delete this;
  }

 private:
  absl::Status Configure() {
    model_name_ = message_.model();
    profile_name_ = message_.profile();
    absl::StatusOr<std::shared_ptr<const engine::LoadedModel>> model =
        ResolveModel(*service_->deps().registry, model_name_);
    if (!model.ok()) return model.status();
    model_ = *model;
    if (model_->encoder() == nullptr) {
      return absl::FailedPreconditionError(
          absl::StrCat("model '", model_name_, "' cannot embed: it has no encoder"));
    }
    if (absl::Status s = ValidateWhiteningName(profile_name_, "profile"); !s.ok()) return s;
    const int hidden = model_->encoder()->hidden_size();
    if (message_.k() < 0 || message_.k() > hidden) {
      return absl::InvalidArgumentError(
          absl::StrCat("k must be in [0, ", hidden, "] (0 = hidden size), got ", message_.k()));
    }
    info_.model = model_name_;
    info_.name = profile_name_;
    info_.k = message_.k() > 0 ? message_.k() : hidden;
    info_.beta = message_.has_beta() ? message_.beta() : 1.0f;
    info_.gamma = message_.has_gamma() ? message_.gamma() : 1.0f;
    for (const auto& [name, v] : {std::pair<const char*, float>{"beta", info_.beta},
                                  std::pair<const char*, float>{"gamma", info_.gamma}}) {
      if (!(v >= 0.0f && v <= 1.0f)) {
        return absl::InvalidArgumentError(
            absl::StrCat(name, " must be a finite number in [0, 1], got ", v));
      }
    }
    absl::StatusOr<engine::PoolingMode> pooling =
        FromProtoPooling(message_.pooling(), engine::PoolingMode::kFirstLastAvg);
    if (!pooling.ok()) return pooling.status();
    info_.pooling = *pooling;
    truncate_ = message_.truncate();
    accumulator_ = std::make_unique<engine::WhiteningAccumulator>(hidden);
    absl::StatusOr<EmbeddingRunner*> runner = service_->RunnerFor(model_name_, model_);
    if (!runner.ok()) return runner.status();
    runner_ = *runner;
    return absl::OkStatus();
  }

  absl::Status ConsumeMessage() {
    message_.Clear();
    if (absl::Status s = ParseRequest(raw_message_, &message_); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("message ", messages_seen_, ": ", s.message()));
    }
    ++messages_seen_;
    if (accumulator_ == nullptr) {
      if (absl::Status s = Configure(); !s.ok()) return s;
    } else if ((!message_.model().empty() && message_.model() != model_name_) ||
               (!message_.profile().empty() && message_.profile() != profile_name_)) {
      return absl::InvalidArgumentError(
          "model and profile must not change between FitWhitening messages");
    }
    if (message_.texts_size() == 0) {
      StartRead(&raw_message_);
      return absl::OkStatus();
    }
    if (message_.texts_size() > service_->deps().options->max_inputs_per_request) {
      return absl::InvalidArgumentError(
          absl::StrCat("texts has ", message_.texts_size(), " entries in one message; the limit is ",
                       service_->deps().options->max_inputs_per_request));
    }
    const engine::Tokenizer* tok = model_->tokenizer();
    if (tok == nullptr) {
      return absl::FailedPreconditionError(
          absl::StrCat("model '", model_name_, "' has no tokenizer files"));
    }
    const int max_length = model_->description().max_sequence_length;
    engine::TruncationOptions trunc;
    trunc.max_length = max_length;
    std::vector<EmbedInput> inputs;
    inputs.reserve(message_.texts_size());
    for (int i = 0; i < message_.texts_size(); ++i) {
      absl::StatusOr<engine::Encoding> enc = tok->Encode(message_.texts(i), true, trunc);
      if (!enc.ok()) {
        return absl::Status(enc.status().code(),
                            absl::StrCat("texts[", texts_seen_ + i, "]: ", enc.status().message()));
      }
      if (enc->truncated && !truncate_) {
        return absl::InvalidArgumentError(absl::StrCat(
            "texts[", texts_seen_ + i, "] has ", enc->num_tokens_untruncated,
            " tokens; the limit is ", max_length, " (set truncate to cut over-long inputs)"));
      }
      EmbedInput in;
      in.ids = std::move(enc->ids);
      in.type_ids = std::move(enc->type_ids);
      in.pooling = info_.pooling;
      inputs.push_back(std::move(in));
    }
    texts_seen_ += message_.texts_size();
    std::lock_guard<std::mutex> lock(mu_);
    if (cancelled_) return absl::CancelledError("the client cancelled the call");
    absl::StatusOr<RequestHandle> handle = runner_->Submit(
        std::move(inputs), absl::InfiniteFuture(),
        life_.Holding(this,
                      [this](EmbedBatcher::Result result) { OnEmbedded(std::move(result)); }));
    if (!handle.ok()) {
      life_.Release();  // the completion will never run; OnDone still holds it
      return handle.status();
    }
    handle_ = *handle;
    in_flight_ = true;
    return absl::OkStatus();
  }

  void OnEmbedded(EmbedBatcher::Result result) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      in_flight_ = false;
    }
    if (!result.ok()) {
      Fail(result.status());
      return;
    }
    for (const ItemResult<EmbedOutput>& r : *result) {
      absl::Status s = accumulator_->Add(r.output.pooled.data(), 1,
                                         static_cast<int>(r.output.pooled.size()));
      if (!s.ok()) {
        Fail(s);
        return;
      }
    }
    // Only now ask for more: one message in flight bounds memory.
    StartRead(&raw_message_);
  }

  void FinishFit() {
    if (accumulator_ == nullptr) {
      Fail(absl::InvalidArgumentError("FitWhitening received no messages (model and profile "
                                      "must be set in the first one)"));
      return;
    }
    absl::StatusOr<engine::WhiteningParams> params = engine::Fit(*accumulator_);
    if (!params.ok()) {
      Fail(absl::Status(params.status().code(),
                        absl::StrCat("texts: ", params.status().message(), " (", texts_seen_,
                                     " texts received)")));
      return;
    }
    absl::StatusOr<std::shared_ptr<const StoredProfile>> profile =
        StoredProfile::Create(info_, std::move(*params));
    if (!profile.ok()) {
      Fail(profile.status());
      return;
    }
    if (absl::Status s = service_->deps().whitening->Put(*profile); !s.ok()) {
      Fail(s);
      return;
    }
    LogEvent(LogLevel::kInfo, "whitening_fitted",
             {{"request_id", RequestIdOf(*context_)},
              {"model", model_name_},
              {"profile", profile_name_},
              {"texts", absl::StrCat(texts_seen_)},
              {"k", absl::StrCat(info_.k)}});
    pb::WhiteningProfile response;
    FillWhiteningProfile(**profile, /*include_parameters=*/false, &response);
    Finish(SerializeResponse(response, raw_response_));
  }

  void Fail(const absl::Status& status) {
    std::lock_guard<std::mutex> lock(mu_);
    if (failed_) return;
    failed_ = true;
    Finish(ToGrpcStatus(status));
  }

  EmbeddingService* service_;
  grpc::CallbackServerContext* context_;
  grpc::ByteBuffer* raw_response_;
  // OnDone, the embedding batch in flight and the fit on the pool.
  ReactorLifetime life_;
  grpc::ByteBuffer raw_message_;
  pb::FitWhiteningRequest message_;
  int64_t messages_seen_ = 0;
  std::string model_name_, profile_name_;
  std::shared_ptr<const engine::LoadedModel> model_;
  WhiteningProfileInfo info_;
  bool truncate_ = false;
  std::unique_ptr<engine::WhiteningAccumulator> accumulator_;
  int64_t texts_seen_ = 0;
  std::mutex mu_;
  bool cancelled_ = false;
  bool failed_ = false;
  bool in_flight_ = false;
  EmbeddingRunner* runner_ = nullptr;
  RequestHandle handle_;
};

}  // namespace

grpc::ServerReadReactor<grpc::ByteBuffer>* EmbeddingService::FitWhitening(
    grpc::CallbackServerContext* context, grpc::ByteBuffer* response) {
  return new FitWhiteningCall(this, context, response);
}

grpc::ServerUnaryReactor* EmbeddingService::GetWhitening(grpc::CallbackServerContext* context,
                                                         const pb::GetWhiteningRequest* request,
                                                         pb::WhiteningProfile* response) {
  if (absl::Status s = CallAdmission(*context); !s.ok()) return FinishUnary(context, s);
  if (request->model().empty()) {
    return FinishUnary(context, absl::InvalidArgumentError("model must be set"));
  }
  absl::StatusOr<std::shared_ptr<const StoredProfile>> p =
      deps_.whitening->Get(request->model(), request->profile());
  if (!p.ok()) return FinishUnary(context, p.status());
  FillWhiteningProfile(**p, request->include_parameters(), response);
  return FinishUnary(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* EmbeddingService::ListWhitening(grpc::CallbackServerContext* context,
                                                          const pb::ListWhiteningRequest* request,
                                                          pb::ListWhiteningResponse* response) {
  if (absl::Status s = CallAdmission(*context); !s.ok()) return FinishUnary(context, s);
  if (request->model().empty()) {
    return FinishUnary(context, absl::InvalidArgumentError("model must be set"));
  }
  absl::StatusOr<ModelSnapshot> model = deps_.registry->Get(request->model());
  if (!model.ok()) return FinishUnary(context, model.status());
  for (const auto& p : deps_.whitening->List(request->model())) {
    FillWhiteningSummary(*p, response->add_profiles());
  }
  return FinishUnary(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* EmbeddingService::DeleteWhitening(
    grpc::CallbackServerContext* context, const pb::DeleteWhiteningRequest* request,
    pb::DeleteWhiteningResponse* /*response*/) {
  if (absl::Status s = CallAdmission(*context); !s.ok()) return FinishUnary(context, s);
  if (request->model().empty()) {
    return FinishUnary(context, absl::InvalidArgumentError("model must be set"));
  }
  absl::Status s = deps_.whitening->Delete(request->model(), request->profile());
  if (s.ok()) {
    LogEvent(LogLevel::kInfo, "whitening_deleted",
             {{"request_id", RequestIdOf(*context)},
              {"model", request->model()},
              {"profile", request->profile()}});
  }
  return FinishUnary(context, s);
}

grpc::ServerUnaryReactor* EmbeddingService::ImportWhitening(
    grpc::CallbackServerContext* context, const pb::ImportWhiteningRequest* request,
    pb::WhiteningProfile* response) {
  if (absl::Status s = AdmitCall(*context, *deps_.registry); !s.ok()) return FinishUnary(context, s);
  const pb::WhiteningProfile& in = request->profile();
  auto model = ResolveModel(*deps_.registry, in.model(), "profile.model");
  if (!model.ok()) return FinishUnary(context, model.status());
  const engine::Encoder* encoder = (*model)->encoder();
  if (encoder == nullptr) {
    return FinishUnary(context, absl::FailedPreconditionError(absl::StrCat(
                                    "model '", in.model(), "' cannot embed: it has no encoder")));
  }
  const int d = in.dim();
  if (d != encoder->hidden_size()) {
    return FinishUnary(context, absl::InvalidArgumentError(absl::StrCat(
                                    "profile.dim is ", d, " but model '", in.model(),
                                    "' has hidden size ", encoder->hidden_size())));
  }
  if (in.mean_size() != d || in.eigenvalues_size() != d ||
      in.eigenvectors_size() != static_cast<int64_t>(d) * d) {
    return FinishUnary(context, absl::InvalidArgumentError(absl::StrCat(
                                    "profile.mean and profile.eigenvalues must have dim (", d,
                                    ") values and profile.eigenvectors dim*dim; got ",
                                    in.mean_size(), ", ", in.eigenvalues_size(), ", ",
                                    in.eigenvectors_size())));
  }
  absl::StatusOr<engine::PoolingMode> pooling =
      FromProtoPooling(in.pooling(), engine::PoolingMode::kFirstLastAvg, "profile.pooling");
  if (!pooling.ok()) return FinishUnary(context, pooling.status());
  WhiteningProfileInfo info;
  info.model = in.model();
  info.name = in.name();
  info.pooling = *pooling;
  info.k = in.k() > 0 ? in.k() : d;
  info.beta = in.beta();
  info.gamma = in.gamma();
  info.created_unix_s = in.created_unix_s();
  engine::WhiteningParams params;
  params.dim = d;
  params.num_samples = in.num_samples();
  params.mean.assign(in.mean().begin(), in.mean().end());
  params.eigenvalues.assign(in.eigenvalues().begin(), in.eigenvalues().end());
  params.eigenvectors.assign(in.eigenvectors().begin(), in.eigenvectors().end());
  if (absl::Status s = engine::ValidateWhiteningParams(params); !s.ok()) {
    return FinishUnary(context, AtProfile(s));
  }
  absl::StatusOr<std::shared_ptr<const StoredProfile>> profile =
      StoredProfile::Create(info, std::move(params));
  if (!profile.ok()) return FinishUnary(context, AtProfile(profile.status()));
  if (absl::Status s = deps_.whitening->Put(*profile, request->overwrite()); !s.ok()) {
    return FinishUnary(context, s);
  }
  FillWhiteningProfile(**profile, /*include_parameters=*/false, response);
  return FinishUnary(context, absl::OkStatus());
}

}  // namespace maskserve::server
