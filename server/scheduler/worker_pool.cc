#include "server/scheduler/worker_pool.h"

#include <pthread.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace maskserve::server {

absl::StatusOr<std::unique_ptr<WorkerPool>> WorkerPool::Create(const WorkerPoolOptions& options) {
  if (options.num_threads < 1) {
    return absl::InvalidArgumentError("WorkerPool: num_threads must be >= 1");
  }
  std::unique_ptr<WorkerPool> pool(new WorkerPool(options));
  for (int i = 0; i < options.num_threads; ++i) {
    pool->threads_.emplace_back([p = pool.get()] { p->Run(); });
    const std::string name = absl::StrCat(options.name.substr(0, 10), "-", i);
    pthread_setname_np(pool->threads_.back().native_handle(), name.c_str());
  }
  return pool;
}

WorkerPool::~WorkerPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (std::thread& t : threads_) t.join();
}

absl::Status WorkerPool::Submit(std::function<void()> task) {
  std::unique_lock<std::mutex> lock(mu_);
  if (stopping_) return absl::FailedPreconditionError("the server is shutting down");
  if (options_.max_queued > 0 && queue_.size() - head_ >= options_.max_queued) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the ", options_.name, " queue is full (", options_.max_queued, " tasks)"));
  }
  queue_.push_back(std::move(task));
  lock.unlock();
  cv_.notify_one();
  return absl::OkStatus();
}

size_t WorkerPool::queued() const {
  std::lock_guard<std::mutex> lock(mu_);
  return queue_.size() - head_;
}

void WorkerPool::Run() {
  for (;;) {
    std::function<void()> task;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return head_ < queue_.size() || stopping_; });
      if (head_ == queue_.size()) return;  // stopping and drained
      task = std::move(queue_[head_++]);
      if (head_ == queue_.size()) {
        queue_.clear();
        head_ = 0;
      }
    }
    task();
  }
}

}  // namespace maskserve::server
