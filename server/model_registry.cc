#include "server/model_registry.h"

#include <chrono>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace maskserve::server {

const char* ModelStateName(ModelState state) {
  switch (state) {
    case ModelState::kLoading:
      return "LOADING";
    case ModelState::kReady:
      return "READY";
    case ModelState::kFailed:
      return "FAILED";
  }
  return "UNKNOWN";
}

ModelRegistry::ModelRegistry(std::vector<ModelSpec> specs, Loader loader)
    : loader_(std::move(loader)) {
  for (ModelSpec& s : specs) {
    ModelSnapshot snap;
    snap.spec = std::move(s);
    entries_.push_back(std::move(snap));
  }
}

ModelRegistry::~ModelRegistry() {
  if (thread_.joinable()) thread_.join();
}

void ModelRegistry::AddListener(Listener listener) { listeners_.push_back(std::move(listener)); }

void ModelRegistry::Start() {
  thread_ = std::thread([this] { LoadAll(); });
}

void ModelRegistry::LoadAll() {
  size_t n;
  {
    std::lock_guard<std::mutex> lock(mu_);
    n = entries_.size();
  }
  for (size_t i = 0; i < n; ++i) {
    ModelSpec spec;
    {
      std::lock_guard<std::mutex> lock(mu_);
      spec = entries_[i].spec;
    }
    const auto start = std::chrono::steady_clock::now();
    absl::StatusOr<std::shared_ptr<const engine::LoadedModel>> loaded = loader_(spec);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    ModelSnapshot snap;
    {
      std::lock_guard<std::mutex> lock(mu_);
      ModelSnapshot& e = entries_[i];
      e.load_seconds = seconds;
      if (loaded.ok()) {
        e.state = ModelState::kReady;
        e.model = std::move(*loaded);
      } else {
        e.state = ModelState::kFailed;
        e.error = std::string(loaded.status().message());
      }
      snap = e;
    }
    for (const Listener& l : listeners_) l(snap);
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++notified_;
    }
    settled_cv_.notify_all();
  }
}

std::vector<ModelSnapshot> ModelRegistry::List() const {
  std::lock_guard<std::mutex> lock(mu_);
  return entries_;
}

absl::StatusOr<ModelSnapshot> ModelRegistry::Get(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> names;
  for (const ModelSnapshot& e : entries_) {
    if (e.spec.name == name) return e;
    names.push_back(e.spec.name);
  }
  return absl::NotFoundError(
      absl::StrCat("model '", name, "' not found; this server has: ", absl::StrJoin(names, ", ")));
}

void ModelRegistry::SetDraining() {
  std::lock_guard<std::mutex> lock(mu_);
  draining_ = true;
}

absl::Status ModelRegistry::AcceptingWork() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (draining_) {
    return absl::UnavailableError("the server is shutting down; retry on another replica");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const engine::LoadedModel>> ModelRegistry::GetReady(
    const std::string& name) const {
  absl::StatusOr<ModelSnapshot> snap = Get(name);
  if (!snap.ok()) return snap.status();
  switch (snap->state) {
    case ModelState::kLoading:
      return absl::UnavailableError(absl::StrCat("model '", name, "' is still loading"));
    case ModelState::kFailed:
      return absl::FailedPreconditionError(
          absl::StrCat("model '", name, "' failed to load: ", snap->error));
    case ModelState::kReady:
      break;
  }
  return snap->model;
}

bool ModelRegistry::AllSettled() const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const ModelSnapshot& e : entries_) {
    if (e.state == ModelState::kLoading) return false;
  }
  return true;
}

void ModelRegistry::WaitUntilSettled() const {
  std::unique_lock<std::mutex> lock(mu_);
  // Settled and every listener has heard about it.
  settled_cv_.wait(lock, [this] { return notified_ == entries_.size(); });
}

}  // namespace maskserve::server
