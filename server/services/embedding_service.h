// maskserve.v1.Embedding: sentence embeddings, tokenisation, BERT-whitening.
// Handlers validate and tokenise on the CPU pool, queue the inputs on the
// model's dynamic batcher (EmbeddingRunner) and finish the call from the
// batcher's completion; no gRPC thread waits on model compute.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "maskserve/v1/embedding.grpc.pb.h"
#include "server/config.h"
#include "server/embedding_runner.h"
#include "server/model_registry.h"
#include "server/scheduler/worker_pool.h"
#include "server/whitening_store.h"

namespace maskserve::server {

// An Embed request turned into engine inputs, with what post-processing needs.
struct PreparedEmbed {
  std::shared_ptr<const engine::LoadedModel> model;
  std::vector<EmbedInput> inputs;
  std::vector<bool> truncated;
  engine::PoolingMode pooling = engine::PoolingMode::kCls;
  // Null unless the request names a whitening profile.
  std::shared_ptr<const StoredProfile> profile;
  // Output dimensions after whitening and truncation.
  int dimensions = 0;
  bool normalize = false;
  int64_t tokenization_us = 0;
};

// Embed, Tokenize and FitWhitening take user text, so they are registered
// raw: their bytes are checked for UTF-8 first (services/raw_codec.h).
using EmbeddingServiceBase = maskserve::v1::Embedding::WithRawCallbackMethod_Embed<
    maskserve::v1::Embedding::WithRawCallbackMethod_Tokenize<
        maskserve::v1::Embedding::WithRawCallbackMethod_FitWhitening<
            maskserve::v1::Embedding::CallbackService>>>;

class EmbeddingService final : public EmbeddingServiceBase {
 public:
  struct Deps {
    // All must outlive the service.
    const ModelRegistry* registry = nullptr;
    const ServerOptions* options = nullptr;
    // Runs tokenisation and other CPU work of handlers.
    WorkerPool* pool = nullptr;
    WhiteningStore* whitening = nullptr;
    // Batcher metrics (nullable).
    metrics::MetricsRegistry* metrics = nullptr;
  };
  explicit EmbeddingService(const Deps& deps) : deps_(deps) {}
  // Drains and stops the per-model batchers.
  ~EmbeddingService() override;

  grpc::ServerUnaryReactor* Embed(grpc::CallbackServerContext* context,
                                  const grpc::ByteBuffer* request,
                                  grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const grpc::ByteBuffer* request,
                                     grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Detokenize(grpc::CallbackServerContext* context,
                                       const maskserve::v1::DetokenizeRequest* request,
                                       maskserve::v1::DetokenizeResponse* response) override;
  grpc::ServerReadReactor<grpc::ByteBuffer>* FitWhitening(grpc::CallbackServerContext* context,
                                                           grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetWhitening(grpc::CallbackServerContext* context,
                                         const maskserve::v1::GetWhiteningRequest* request,
                                         maskserve::v1::WhiteningProfile* response) override;
  grpc::ServerUnaryReactor* ListWhitening(grpc::CallbackServerContext* context,
                                          const maskserve::v1::ListWhiteningRequest* request,
                                          maskserve::v1::ListWhiteningResponse* response) override;
  grpc::ServerUnaryReactor* DeleteWhitening(
      grpc::CallbackServerContext* context, const maskserve::v1::DeleteWhiteningRequest* request,
      maskserve::v1::DeleteWhiteningResponse* response) override;
  grpc::ServerUnaryReactor* ImportWhitening(
      grpc::CallbackServerContext* context, const maskserve::v1::ImportWhiteningRequest* request,
      maskserve::v1::WhiteningProfile* response) override;

  // Validates and tokenises an Embed request (public for tests).
  absl::StatusOr<PreparedEmbed> PrepareEmbed(const maskserve::v1::EmbedRequest& request) const;

  // The batcher of a READY encoder model, created on first use.
  // Refuses early (before tokenisation) what the model's batching queue
  // would refuse anyway (DynamicBatcher::CheckAdmission); OK when the model
  // has no queue yet.
  absl::Status RefuseEarly(const std::string& model, absl::Time deadline);

  absl::StatusOr<EmbeddingRunner*> RunnerFor(const std::string& name,
                                             std::shared_ptr<const engine::LoadedModel> model);

  // Whitening, truncation to `dimensions`, L2 normalisation, into `out`.
  static void PostProcess(const PreparedEmbed& prepared, const std::vector<float>& pooled,
                          std::vector<float>* scratch, google::protobuf::RepeatedField<float>* out);

  const Deps& deps() const { return deps_; }

 private:
  // Runs `work` on the pool and finishes the call with its status.
  grpc::ServerUnaryReactor* RunOnPool(grpc::CallbackServerContext* context,
                                      std::function<absl::Status()> work);
  absl::Status DoTokenize(grpc::CallbackServerContext* context,
                          const maskserve::v1::TokenizeRequest* request,
                          maskserve::v1::TokenizeResponse* response);
  absl::Status DoDetokenize(const maskserve::v1::DetokenizeRequest* request,
                            maskserve::v1::DetokenizeResponse* response);

  const Deps deps_;
  std::mutex runners_mu_;
  std::map<std::string, std::unique_ptr<EmbeddingRunner>> runners_;
};

}  // namespace maskserve::server
