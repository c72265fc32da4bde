// A fixed set of threads running submitted tasks in FIFO order. Handlers
// hand CPU work (tokenisation, model compute) here so gRPC's callback
// threads only validate and enqueue and keep serving the transport. Idle
// workers block on a condition variable: nothing spin-waits.
#pragma once

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"

namespace maskserve::server {

struct WorkerPoolOptions {
  // Number of threads (>= 1).
  int num_threads = 1;
  // Thread name prefix (shown by top -H / gdb), at most 10 characters.
  std::string name = "worker";
  // Most queued tasks; Submit fails with RESOURCE_EXHAUSTED beyond it (0 = unbounded).
  size_t max_queued = 0;
};

class WorkerPool {
 public:
  static absl::StatusOr<std::unique_ptr<WorkerPool>> Create(const WorkerPoolOptions& options);
  // Runs every queued task, then joins the threads.
  ~WorkerPool();

  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Queues `task`; RESOURCE_EXHAUSTED when the queue is full, FAILED_PRECONDITION
  // after shutdown began.
  absl::Status Submit(std::function<void()> task);

  // Tasks queued and not yet started.
  size_t queued() const;

 private:
  explicit WorkerPool(const WorkerPoolOptions& options) : options_(options) {}
  void Run();

  const WorkerPoolOptions options_;
  // std:: rather than absl::Mutex: Debian's Abseil is not built with TSan,
  // which then cannot see absl::Mutex's synchronisation (make test-tsan).
  mutable std::mutex mu_;
  std::condition_variable cv_;              // signalled on a new task or on stop
  std::vector<std::function<void()>> queue_;  // guarded by mu_
  size_t head_ = 0;                           // guarded by mu_
  bool stopping_ = false;                     // guarded by mu_
  std::vector<std::thread> threads_;
};

}  // namespace maskserve::server
