// An in-process stand-in for maskserve (Models, Embedding, Generation and the
// standard health service) on 127.0.0.1:<ephemeral>, with knobs to inject failures,
// delays and to observe what the client sent. Shared by the client tests.
#pragma once

#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "maskserve/v1/embedding.grpc.pb.h"
#include "maskserve/v1/generation.grpc.pb.h"
#include "maskserve/v1/models.grpc.pb.h"

namespace maskserve::client::testing {

namespace v1 = ::maskserve::v1;

// Copies the client metadata of a call (keys are lowercase on the wire).
inline std::multimap<std::string, std::string> CopyMetadata(
    const grpc::ServerContext* ctx) {
  std::multimap<std::string, std::string> out;
  for (const auto& [k, v] : ctx->client_metadata()) {
    out.emplace(std::string(k.data(), k.size()), std::string(v.data(), v.size()));
  }
  return out;
}

// Sleeps up to `ms`, returning early when the call is cancelled (deadline).
inline void SleepUnlessCancelled(grpc::ServerContext* ctx, int ms) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (std::chrono::steady_clock::now() < end && !ctx->IsCancelled()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

class FakeModels final : public v1::Models::Service {
 public:
  // ListModels fails with UNAVAILABLE while its call count is <= this.
  std::atomic<int> unavailable_first{0};
  // ListModels takes this long (cut short by cancellation).
  std::atomic<int> delay_ms{0};
  std::atomic<int> list_calls{0};

  std::multimap<std::string, std::string> last_metadata() {
    std::lock_guard<std::mutex> lock(mu_);
    return last_metadata_;
  }

  static v1::ModelInfo Demo() {
    v1::ModelInfo m;
    m.set_name("fake-bert");
    m.set_state(v1::MODEL_STATE_READY);
    m.set_architecture("bert");
    m.add_tasks(v1::TASK_EMBED);
    m.set_dtype("float32");
    m.set_hidden_size(4);
    m.set_max_sequence_length(512);
    m.set_vocab_size(100);
    return m;
  }

  grpc::Status ListModels(grpc::ServerContext* ctx, const v1::ListModelsRequest*,
                          v1::ListModelsResponse* response) override {
    const int call = ++list_calls;
    {
      std::lock_guard<std::mutex> lock(mu_);
      last_metadata_ = CopyMetadata(ctx);
    }
    if (call <= unavailable_first) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "warming up");
    }
    if (delay_ms > 0) SleepUnlessCancelled(ctx, delay_ms);
    *response->add_models() = Demo();
    v1::ModelInfo broken;
    broken.set_name("broken");
    broken.set_state(v1::MODEL_STATE_FAILED);
    broken.set_error("config.json: no such file");
    *response->add_models() = broken;
    return grpc::Status::OK;
  }

  grpc::Status GetModel(grpc::ServerContext*, const v1::GetModelRequest* request,
                        v1::ModelInfo* response) override {
    if (request->name() != "fake-bert") {
      return grpc::Status(grpc::StatusCode::NOT_FOUND,
                          "no model '" + request->name() + "'");
    }
    *response = Demo();
    return grpc::Status::OK;
  }

 private:
  std::mutex mu_;
  std::multimap<std::string, std::string> last_metadata_;
};

class FakeEmbedding final : public v1::Embedding::Service {
 public:
  // Texts per FitWhitening message, in arrival order.
  std::vector<int> fit_batch_sizes() {
    std::lock_guard<std::mutex> lock(mu_);
    return fit_batch_sizes_;
  }
  std::vector<std::string> fit_texts() {
    std::lock_guard<std::mutex> lock(mu_);
    return fit_texts_;
  }

  // Vector i = {len(text_i), i, 0.5, -1}.
  grpc::Status Embed(grpc::ServerContext*, const v1::EmbedRequest* request,
                     v1::EmbedResponse* response) override {
    if (request->model() != "fake-bert") {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "no model");
    }
    for (int i = 0; i < request->texts_size(); ++i) {
      auto* e = response->add_embeddings();
      e->add_values(static_cast<float>(request->texts(i).size()));
      e->add_values(static_cast<float>(i));
      e->add_values(0.5f);
      e->add_values(-1.0f);
      e->set_token_count(3);
    }
    response->set_model(request->model());
    response->set_dimensions(4);
    response->set_pooling(v1::POOLING_MEAN);
    return grpc::Status::OK;
  }

  grpc::Status FitWhitening(grpc::ServerContext*,
                            grpc::ServerReader<v1::FitWhiteningRequest>* reader,
                            v1::WhiteningProfile* response) override {
    v1::FitWhiteningRequest message;
    bool first = true;
    int64_t n = 0;
    while (reader->Read(&message)) {
      if (first) {
        response->set_model(message.model());
        response->set_name(message.profile());
        response->set_k(message.k());
        response->set_beta(message.has_beta() ? message.beta() : 1.0f);
        response->set_gamma(message.has_gamma() ? message.gamma() : 1.0f);
        response->set_pooling(message.pooling());
        first = false;
      }
      std::lock_guard<std::mutex> lock(mu_);
      fit_batch_sizes_.push_back(message.texts_size());
      for (const auto& t : message.texts()) fit_texts_.push_back(t);
      n += message.texts_size();
    }
    if (first) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "empty stream");
    response->set_dim(4);
    response->set_num_samples(n);
    return grpc::Status::OK;
  }

 private:
  std::mutex mu_;
  std::vector<int> fit_batch_sizes_;
  std::vector<std::string> fit_texts_;
};

// Generates max_new_tokens tokens "w0 w1 ..." (ids 0, 1, ...); the stream
// sends one token per message and usage on the last one.
class FakeGeneration final : public v1::Generation::Service {
 public:
  // "w<i> ".
  static std::string Word(int i) {
    std::string w = std::to_string(i);
    w.insert(w.begin(), 'w');
    w.push_back(' ');
    return w;
  }

  std::atomic<int> stream_calls{0};

  grpc::Status Generate(grpc::ServerContext*, const v1::GenerateRequest* request,
                        v1::GenerateResponse* response) override {
    auto* seq = response->add_sequences();
    for (int i = 0; i < request->max_new_tokens(); ++i) {
      seq->add_ids(i);
      seq->mutable_text()->append(Word(i));
    }
    seq->set_finish_reason(v1::FINISH_REASON_LENGTH);
    response->mutable_usage()->set_prompt_tokens(3);
    response->mutable_usage()->set_completion_tokens(request->max_new_tokens());
    response->set_model(request->model());
    return grpc::Status::OK;
  }

  grpc::Status GenerateStream(grpc::ServerContext*, const v1::GenerateRequest* request,
                              grpc::ServerWriter<v1::GenerateStreamResponse>* writer) override {
    ++stream_calls;
    const int n = request->max_new_tokens();
    for (int i = 0; i < n; ++i) {
      v1::GenerateStreamResponse m;
      m.add_ids(i);
      m.set_text(Word(i));
      if (i + 1 == n) {
        m.set_finish_reason(v1::FINISH_REASON_LENGTH);
        m.mutable_usage()->set_prompt_tokens(3);
        m.mutable_usage()->set_completion_tokens(n);
      }
      if (!writer->Write(m)) break;
    }
    return grpc::Status::OK;
  }
};

class FakeServer {
 public:
  FakeServer() {
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&models);
    builder.RegisterService(&embedding);
    builder.RegisterService(&generation);
    server_ = builder.BuildAndStart();
  }
  ~FakeServer() {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  }

  bool ok() const { return server_ != nullptr && port_ > 0; }
  std::string target() const { return "127.0.0.1:" + std::to_string(port_); }
  void SetServing(const std::string& service, bool serving) {
    server_->GetHealthCheckService()->SetServingStatus(service, serving);
  }

  FakeModels models;
  FakeEmbedding embedding;
  FakeGeneration generation;

 private:
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

}  // namespace maskserve::client::testing
