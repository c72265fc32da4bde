// maskserve.v1.Generation: Generate, GenerateStream and SimBERT-style
// Paraphrase.
//
// Handlers validate and tokenise on the CPU pool (PrepareGenerate: every
// error is INVALID_ARGUMENT naming the field, NOT_FOUND for an unknown
// model, FAILED_PRECONDITION for a model that cannot generate), build the
// request's engine::RequestDecoder and submit it to the model's
// ContinuousBatcher (one per generative model, created on first use; it
// owns the model's KV pool). The call finishes from the batcher's
// completion; GenerateStream writes each step's new text from the
// scheduler thread's callback with at most one write in flight (deltas that
// arrive meanwhile are merged into the next message), so a slow client
// never stalls the step loop. A cancelled call or a disconnected client
// cancels the request in the batcher, which frees its KV blocks at the next
// step boundary.
//
// Generate, GenerateStream and Paraphrase take user text, so they are
// registered raw and checked for UTF-8 first (services/raw_codec.h).
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "engine/request_decoder.h"
#include "maskserve/v1/generation.grpc.pb.h"
#include "server/config.h"
#include "server/model_registry.h"
#include "server/scheduler/clock.h"
#include "server/scheduler/continuous_batcher.h"
#include "server/scheduler/worker_pool.h"

namespace maskserve::server {

class EmbeddingService;

// A Generate request turned into engine terms.
struct PreparedGeneration {
  std::shared_ptr<const engine::LoadedModel> model;
  std::unique_ptr<engine::RequestDecoder> decoder;
  int64_t tokenization_us = 0;
};

using GenerationServiceBase = maskserve::v1::Generation::WithRawCallbackMethod_Generate<
    maskserve::v1::Generation::WithRawCallbackMethod_GenerateStream<
        maskserve::v1::Generation::WithRawCallbackMethod_Paraphrase<
            maskserve::v1::Generation::CallbackService>>>;

class GenerationService final : public GenerationServiceBase {
 public:
  struct Deps {
    // All must outlive the service.
    const ModelRegistry* registry = nullptr;
    const ServerOptions* options = nullptr;
    // Runs validation, tokenisation and Paraphrase's post-processing.
    WorkerPool* pool = nullptr;
    // Paraphrase embeds through the model's embedding runner (nullable: no Paraphrase).
    EmbeddingService* embedding = nullptr;
    // Batcher metrics (nullable).
    metrics::MetricsRegistry* metrics = nullptr;
    // Batchers' time source (nullptr = real time).
    Clock* clock = nullptr;
  };
  explicit GenerationService(const Deps& deps) : deps_(deps) {}
  // Stops the per-model batchers (requests still running end UNAVAILABLE).
  ~GenerationService() override;

  grpc::ServerUnaryReactor* Generate(grpc::CallbackServerContext* context,
                                     const grpc::ByteBuffer* request,
                                     grpc::ByteBuffer* response) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* GenerateStream(
      grpc::CallbackServerContext* context, const grpc::ByteBuffer* request) override;
  grpc::ServerUnaryReactor* Paraphrase(grpc::CallbackServerContext* context,
                                       const grpc::ByteBuffer* request,
                                       grpc::ByteBuffer* response) override;

  // Validates and tokenises a Generate request (public for tests).
  absl::StatusOr<PreparedGeneration> PrepareGenerate(
      const maskserve::v1::GenerateRequest& request) const;

  // The continuous batcher of a READY generative model, created on first use.
  absl::StatusOr<ContinuousBatcher*> BatcherFor(const std::string& name,
                                                std::shared_ptr<const engine::LoadedModel> model);

  const Deps& deps() const { return deps_; }

 private:
  const Deps deps_;
  std::mutex batchers_mu_;
  std::map<std::string, std::unique_ptr<ContinuousBatcher>> batchers_;
};

}  // namespace maskserve::server
