#include "server/services/embedding_service.h"

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/tokenizer.h"
#include "server/services/service_util.h"
#include "server/status_util.h"

namespace maskserve::server {
namespace {

namespace pb = maskserve::v1;

constexpr char kNeedsEncoder[] = "the encoder engine and the dynamic batcher";
constexpr char kNeedsWhitening[] = "the encoder engine and the whitening store";

// A client-streaming call that ends with a status without reading.
class FinishedReader : public grpc::ServerReadReactor<pb::FitWhiteningRequest> {
 public:
  explicit FinishedReader(const grpc::Status& status) { Finish(status); }
  void OnDone() override { delete this; }
};

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

}  // namespace

grpc::ServerUnaryReactor* EmbeddingService::Embed(grpc::CallbackServerContext* context,
                                                  const pb::EmbedRequest* request,
                                                  pb::EmbedResponse* /*response*/) {
  auto model = ResolveModel(*registry_, request->model());
  if (!model.ok()) return FinishUnary(context, model.status());
  return FinishUnary(context, NotYetImplemented("Embed", kNeedsEncoder));
}

grpc::ServerUnaryReactor* EmbeddingService::Tokenize(grpc::CallbackServerContext* context,
                                                     const pb::TokenizeRequest* request,
                                                     pb::TokenizeResponse* response) {
  return RunOnPool(context, [this, context, request, response] {
    return DoTokenize(context, request, response);
  });
}

grpc::ServerUnaryReactor* EmbeddingService::RunOnPool(grpc::CallbackServerContext* context,
                                                      std::function<absl::Status()> work) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::Status queued = pool_->Submit(
      [reactor, work = std::move(work)] { reactor->Finish(ToGrpcStatus(work())); });
  if (!queued.ok()) reactor->Finish(ToGrpcStatus(queued));
  return reactor;
}

absl::Status EmbeddingService::DoTokenize(grpc::CallbackServerContext* context,
                                          const pb::TokenizeRequest* request,
                                          pb::TokenizeResponse* response) {
  auto model = ResolveModel(*registry_, request->model());
  if (!model.ok()) return model.status();
  const engine::Tokenizer* tok = (*model)->tokenizer();
  if (tok == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
                                    "model '", request->model(), "' has no tokenizer files"));
  }
  const int n = request->texts_size();
  if (n == 0) return absl::InvalidArgumentError("texts must not be empty");
  if (n > options_->max_inputs_per_request) {
    return absl::InvalidArgumentError(absl::StrCat(
                                    "texts has ", n, " inputs; the limit is ",
                                    options_->max_inputs_per_request));
  }
  if (request->text_pairs_size() != 0 && request->text_pairs_size() != n) {
    return absl::InvalidArgumentError(absl::StrCat(
                                    "text_pairs has ", request->text_pairs_size(),
                                    " entries; it must be empty or match texts (", n, ")"));
  }
  if (request->max_length() < 0) {
    return absl::InvalidArgumentError("max_length must be >= 0");
  }
  const int max_length = request->max_length() > 0 ? request->max_length()
                                                   : (*model)->description().max_sequence_length;
  const engine::TruncationOptions trunc =
      TruncationFrom(request->truncate(), max_length, request->truncation_side(),
                     request->truncation_strategy());
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
    if (total_tokens > options_->max_tokens_per_request) {
      return absl::InvalidArgumentError(absl::StrCat(
                                      "texts: the request has more than ",
                                      options_->max_tokens_per_request,
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
  auto model = ResolveModel(*registry_, request->model());
  if (!model.ok()) return model.status();
  const engine::Tokenizer* tok = (*model)->tokenizer();
  if (tok == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
                                    "model '", request->model(), "' has no tokenizer files"));
  }
  const int n = request->token_ids_size();
  if (n == 0) return absl::InvalidArgumentError("token_ids must not be empty");
  if (n > options_->max_inputs_per_request) {
    return absl::InvalidArgumentError(absl::StrCat(
                                    "token_ids has ", n, " inputs; the limit is ",
                                    options_->max_inputs_per_request));
  }
  for (int i = 0; i < n; ++i) {
    const auto& ids = request->token_ids(i).ids();
    for (int j = 0; j < ids.size(); ++j) {
      if (ids[j] < 0 || ids[j] >= tok->vocab_size()) {
        return absl::InvalidArgumentError(absl::StrCat(
                                        "token_ids[", i, "].ids[", j, "] = ", ids[j],
                                        " is outside the vocabulary [0, ", tok->vocab_size(), ")"));
      }
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

grpc::ServerReadReactor<pb::FitWhiteningRequest>* EmbeddingService::FitWhitening(
    grpc::CallbackServerContext* /*context*/, pb::WhiteningProfile* /*response*/) {
  return new FinishedReader(ToGrpcStatus(NotYetImplemented("FitWhitening", kNeedsWhitening)));
}

grpc::ServerUnaryReactor* EmbeddingService::GetWhitening(grpc::CallbackServerContext* context,
                                                         const pb::GetWhiteningRequest* request,
                                                         pb::WhiteningProfile* /*response*/) {
  auto model = ResolveModel(*registry_, request->model());
  if (!model.ok()) return FinishUnary(context, model.status());
  return FinishUnary(context, NotYetImplemented("GetWhitening", kNeedsWhitening));
}

grpc::ServerUnaryReactor* EmbeddingService::ListWhitening(grpc::CallbackServerContext* context,
                                                          const pb::ListWhiteningRequest* request,
                                                          pb::ListWhiteningResponse* /*response*/) {
  auto model = ResolveModel(*registry_, request->model());
  if (!model.ok()) return FinishUnary(context, model.status());
  return FinishUnary(context, NotYetImplemented("ListWhitening", kNeedsWhitening));
}

grpc::ServerUnaryReactor* EmbeddingService::DeleteWhitening(
    grpc::CallbackServerContext* context, const pb::DeleteWhiteningRequest* request,
    pb::DeleteWhiteningResponse* /*response*/) {
  auto model = ResolveModel(*registry_, request->model());
  if (!model.ok()) return FinishUnary(context, model.status());
  return FinishUnary(context, NotYetImplemented("DeleteWhitening", kNeedsWhitening));
}

grpc::ServerUnaryReactor* EmbeddingService::ImportWhitening(
    grpc::CallbackServerContext* context, const pb::ImportWhiteningRequest* request,
    pb::WhiteningProfile* /*response*/) {
  auto model = ResolveModel(*registry_, request->profile().model(), "profile.model");
  if (!model.ok()) return FinishUnary(context, model.status());
  return FinishUnary(context, NotYetImplemented("ImportWhitening", kNeedsWhitening));
}

}  // namespace maskserve::server
