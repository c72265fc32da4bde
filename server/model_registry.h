// The models a server hosts and their lifecycle: LOADING -> READY | FAILED.
// Loading runs on a background thread, one model at a time, so the gRPC
// server (and health checks reporting NOT_SERVING) are up while large
// checkpoints load. A model that fails to load stays FAILED with its error;
// the others serve. Listeners hear every state change (health, metrics).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include <condition_variable>
#include <mutex>
#include "engine/loaded_model.h"
#include "server/config.h"

namespace maskserve::server {

enum class ModelState { kLoading, kReady, kFailed };

const char* ModelStateName(ModelState state);

// A consistent copy of one model's registry entry.
struct ModelSnapshot {
  ModelSpec spec;
  ModelState state = ModelState::kLoading;
  // Load error (FAILED only).
  std::string error;
  // Seconds the load took (READY/FAILED).
  double load_seconds = 0;
  // The model (READY only).
  std::shared_ptr<const engine::LoadedModel> model;
};

class ModelRegistry {
 public:
  using Loader =
      std::function<absl::StatusOr<std::shared_ptr<const engine::LoadedModel>>(const ModelSpec&)>;
  using Listener = std::function<void(const ModelSnapshot&)>;

  ModelRegistry(std::vector<ModelSpec> specs, Loader loader);
  ~ModelRegistry();

  ModelRegistry(const ModelRegistry&) = delete;
  ModelRegistry& operator=(const ModelRegistry&) = delete;

  // Called on every state change (from the loader thread); add before Start.
  void AddListener(Listener listener);

  // Starts the background loader thread.
  void Start();

  // Every model, in configuration order.
  std::vector<ModelSnapshot> List() const;

  // One model; NOT_FOUND (listing the known names) when absent.
  absl::StatusOr<ModelSnapshot> Get(const std::string& name) const;

  // A READY model for serving a request: NOT_FOUND when unknown, UNAVAILABLE
  // while loading, FAILED_PRECONDITION (with the load error) when failed.
  // Answers the same while draining: a call admitted before the drain (see
  // AcceptingWork) may still resolve its model from a worker thread.
  absl::StatusOr<std::shared_ptr<const engine::LoadedModel>> GetReady(
      const std::string& name) const;

  // From now on AcceptingWork answers UNAVAILABLE ("shutting down"): new
  // calls are refused while the calls already admitted drain.
  void SetDraining();

  // OK, or UNAVAILABLE once draining. Handlers call it first thing, on the
  // gRPC thread that received the call, so the admit-or-refuse decision is
  // made when the call arrives, not when a worker thread gets to it.
  absl::Status AcceptingWork() const;

  // True once no model is LOADING.
  bool AllSettled() const;

  // Blocks until AllSettled() and every listener has been told (tests).
  void WaitUntilSettled() const;

 private:
  void LoadAll();

  Loader loader_;
  // std:: rather than absl::Mutex: Debian's Abseil is not built with TSan,
  // which then cannot see absl::Mutex's synchronisation (make test-tsan).
  mutable std::mutex mu_;
  mutable std::condition_variable settled_cv_;  // signalled as notified_ grows
  std::vector<ModelSnapshot> entries_;          // guarded by mu_
  bool draining_ = false;                       // guarded by mu_
  // Models whose final state the listeners have been told (guarded by mu_).
  size_t notified_ = 0;
  std::vector<Listener> listeners_;
  std::thread thread_;
};

}  // namespace maskserve::server
