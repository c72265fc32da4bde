#include "server/scheduler/dynamic_batcher.h"

#include <pthread.h>

#include <algorithm>
#include <cstdlib>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "server/retry_hint.h"

namespace maskserve::server::internal {
namespace {

// Families are shared by every model's batcher (the registry returns the
// existing family for a repeated registration); children carry {model}.
constexpr const char* kQueueDepth = "maskserve_queue_depth";
constexpr const char* kBatchSize = "maskserve_batch_size";
constexpr const char* kBatchTokens = "maskserve_batch_tokens";
constexpr const char* kQueueWait = "maskserve_queue_wait_seconds";
constexpr const char* kInference = "maskserve_inference_seconds";
constexpr const char* kTokensTotal = "maskserve_tokens_total";
constexpr const char* kPaddingRatio = "maskserve_padding_ratio";
constexpr const char* kRejected = "maskserve_requests_rejected_total";

std::string ThreadName(const std::string& model, int worker) {
  // Linux limits thread names to 15 characters.
  std::string name = absl::StrCat("b-", model.substr(0, 9), "-", worker);
  return name.substr(0, 15);
}

}  // namespace

struct BatcherCore::Metrics {
  metrics::Gauge* queue_depth = nullptr;
  metrics::Histogram* batch_size = nullptr;
  metrics::Histogram* batch_tokens = nullptr;
  metrics::Histogram* queue_wait = nullptr;
  metrics::Histogram* inference = nullptr;
  metrics::Histogram* padding_ratio = nullptr;
  metrics::Counter* input_tokens = nullptr;
  metrics::Counter* rejected_queue_full = nullptr;
  metrics::Counter* rejected_deadline = nullptr;
  metrics::Counter* rejected_cancelled = nullptr;
  metrics::Counter* rejected_shed = nullptr;

  static absl::StatusOr<std::unique_ptr<Metrics>> Create(metrics::MetricsRegistry* registry,
                                                         const std::string& model) {
    auto m = std::make_unique<Metrics>();
    const std::vector<std::string> labels = {model};
    auto depth = registry->AddGauge(kQueueDepth, "Inputs queued for batching and not yet running.",
                                    {"model"});
    if (!depth.ok()) return depth.status();
    m->queue_depth = (*depth)->WithLabels(labels);
    auto size = registry->AddHistogram(kBatchSize, "Inputs per engine batch.", {"model"},
                                       {1, 2, 4, 8, 16, 32, 64, 128, 256});
    if (!size.ok()) return size.status();
    m->batch_size = (*size)->WithLabels(labels);
    auto tokens = registry->AddHistogram(kBatchTokens, "Real (unpadded) tokens per engine batch.",
                                         {"model"}, metrics::ExponentialBuckets(16, 2, 13));
    if (!tokens.ok()) return tokens.status();
    m->batch_tokens = (*tokens)->WithLabels(labels);
    auto wait = registry->AddHistogram(
        kQueueWait, "Time an input waited in the batching queue before its batch started.",
        {"model"});
    if (!wait.ok()) return wait.status();
    m->queue_wait = (*wait)->WithLabels(labels);
    auto inference = registry->AddHistogram(kInference, "Engine time of one batch.", {"model"});
    if (!inference.ok()) return inference.status();
    m->inference = (*inference)->WithLabels(labels);
    auto padding = registry->AddHistogram(
        kPaddingRatio,
        "Share of a padded batch (items x longest) that would be padding; the engine packs "
        "batches without padding, so this is what length grouping saves.",
        {"model"}, {0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9});
    if (!padding.ok()) return padding.status();
    m->padding_ratio = (*padding)->WithLabels(labels);
    auto total = registry->AddCounter(kTokensTotal, "Tokens processed.", {"model", "kind"});
    if (!total.ok()) return total.status();
    m->input_tokens = (*total)->WithLabels({model, "input"});
    auto rejected = registry->AddCounter(
        kRejected, "Requests refused or dropped by the batching queue.", {"model", "reason"});
    if (!rejected.ok()) return rejected.status();
    m->rejected_queue_full = (*rejected)->WithLabels({model, "queue_full"});
    m->rejected_deadline = (*rejected)->WithLabels({model, "deadline"});
    m->rejected_cancelled = (*rejected)->WithLabels({model, "cancelled"});
    m->rejected_shed = (*rejected)->WithLabels({model, "shed"});
    return m;
  }
};

absl::StatusOr<std::unique_ptr<BatcherCore>> BatcherCore::Create(
    const DynamicBatcherOptions& options, CoreBatchFn fn) {
  const std::string what = absl::StrCat("DynamicBatcher(", options.model, "): ");
  if (options.max_batch_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat(what, "max_batch_size must be >= 1"));
  }
  if (options.max_batch_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat(what, "max_batch_tokens must be >= 1"));
  }
  if (options.max_queue_delay < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(what, "max_queue_delay must be >= 0"));
  }
  if (!(options.deadline_headroom > 0 && options.deadline_headroom <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat(what, "deadline_headroom must be in (0, 1]"));
  }
  if (options.max_queue_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat(what, "max_queue_size must be >= 1"));
  }
  if (options.num_workers < 1) {
    return absl::InvalidArgumentError(absl::StrCat(what, "num_workers must be >= 1"));
  }
  if (options.length_grouping_window < 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, "length_grouping_window must be >= 0"));
  }
  if (!fn) return absl::InvalidArgumentError(absl::StrCat(what, "a batch function is required"));
  std::unique_ptr<BatcherCore> core(new BatcherCore(options, std::move(fn)));
  if (options.registry != nullptr) {
    absl::StatusOr<std::unique_ptr<Metrics>> m = Metrics::Create(options.registry, options.model);
    if (!m.ok()) return m.status();
    core->metrics_ = std::move(*m);
  }
  core->workers_.resize(options.num_workers);
  for (int i = 0; i < options.num_workers; ++i) {
    core->threads_.emplace_back([c = core.get(), i] { c->WorkerLoop(i); });
    pthread_setname_np(core->threads_.back().native_handle(),
                       ThreadName(options.model, i).c_str());
  }
  return core;
}

BatcherCore::BatcherCore(const DynamicBatcherOptions& options, CoreBatchFn fn)
    : options_(options),
      clock_(options.clock != nullptr ? options.clock : RealClock::Get()),
      fn_(std::move(fn)) {}

BatcherCore::~BatcherCore() { Shutdown(); }

absl::StatusOr<RequestHandle> BatcherCore::Submit(std::shared_ptr<CoreRequest> request,
                                                  absl::Time deadline) {
  const int64_t n = static_cast<int64_t>(request->items.size());
  if (n == 0) return absl::InvalidArgumentError("a request needs at least one input");
  int64_t tokens = 0;
  for (const CoreItem& item : request->items) {
    if (item.tokens < 0) return absl::InvalidArgumentError("an input has a negative token count");
    tokens += item.tokens;
  }
  std::unique_lock<std::mutex> lock(mu_);
  const absl::Time now = clock_->Now();
  if (n > options_.max_queue_size) {
    if (metrics_) metrics_->rejected_queue_full->Inc();
    return absl::ResourceExhaustedError(absl::StrCat(
        "the request has ", n, " inputs but model ", options_.model, "'s batching queue holds at most ",
        options_.max_queue_size, " (max_queue_size); split it into smaller requests"));
  }
  if (absl::Status s = AdmitLocked(now, n, tokens, deadline); !s.ok()) return s;
  request->id = next_id_++;
  request->enqueue_time = now;
  request->deadline = deadline;
  request->remaining = static_cast<size_t>(n);
  request->queued = static_cast<size_t>(n);
  for (CoreItem& item : request->items) queue_.push_back(Queued{request, &item});
  queued_tokens_ += tokens;
  next_expiry_ = std::min(next_expiry_, deadline);
  active_[request->id] = request;
  ChangedLocked();
  return RequestHandle{request->id};
}

absl::Status BatcherCore::CheckAdmission(absl::Time deadline) const {
  std::lock_guard<std::mutex> lock(mu_);
  return AdmitLocked(clock_->Now(), 1, 0, deadline);
}

absl::Status BatcherCore::AdmitLocked(absl::Time now, int64_t n, int64_t tokens,
                                      absl::Time deadline) const {
  if (stopping_) {
    return absl::UnavailableError(
        absl::StrCat("model ", options_.model, " is shutting down; retry on another replica"));
  }
  if (deadline <= now) {
    if (metrics_) metrics_->rejected_deadline->Inc();
    return absl::DeadlineExceededError("the request's deadline passed before it was queued");
  }
  const int64_t pending = static_cast<int64_t>(queue_.size());
  // Time for the workers to get through what is queued and running now.
  const double spt = busy_seconds_per_token_ > 0 ? busy_seconds_per_token_ : seconds_per_token_;
  const absl::Duration drain = absl::Seconds(
      static_cast<double>(queued_tokens_ + running_tokens_) * spt / options_.num_workers);
  if (pending + n > options_.max_queue_size) {
    if (metrics_) metrics_->rejected_queue_full->Inc();
    return WithRetryAfter(
        absl::ResourceExhaustedError(absl::StrCat(
            "model ", options_.model, "'s batching queue is full (", pending, " of ",
            options_.max_queue_size, " inputs pending, this request adds ", n,
            "); retry after a short backoff")),
        std::max(drain, absl::Milliseconds(10)));
  }
  if (options_.shed_on_deadline && spt > 0 && deadline != absl::InfiniteFuture()) {
    const absl::Duration done_in = drain + absl::Seconds(static_cast<double>(tokens) * spt);
    if (done_in > (deadline - now) * options_.deadline_headroom) {
      if (metrics_) metrics_->rejected_shed->Inc();
      return WithRetryAfter(
          absl::ResourceExhaustedError(absl::StrCat(
              "model ", options_.model, " is overloaded: the ", pending,
              " inputs queued ahead would take about ",
              absl::FormatDuration(absl::Trunc(done_in, absl::Milliseconds(1))),
              ", past this request's deadline in ",
              absl::FormatDuration(absl::Trunc(deadline - now, absl::Milliseconds(1))),
              "; retry later or elsewhere")),
          std::max(drain, absl::Milliseconds(10)));
    }
  }
  return absl::OkStatus();
}

bool BatcherCore::Cancel(RequestHandle handle) {
  std::vector<Finished> finished;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = active_.find(handle.id);
    if (it == active_.end()) return false;
    std::shared_ptr<CoreRequest> request = it->second;
    FailLocked(request, absl::CancelledError("the request was cancelled"), &finished);
    if (metrics_) metrics_->rejected_cancelled->Inc();
  }
  RunFinished(&finished);
  return true;
}

void BatcherCore::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stopping_) {
      stopping_ = true;
      ChangedLocked();
    }
  }
  std::lock_guard<std::mutex> join_lock(join_mu_);
  for (std::thread& t : threads_) {
    if (t.joinable()) t.join();
  }
}

int64_t BatcherCore::pending_items() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int64_t>(queue_.size());
}

void BatcherCore::AwaitIdleForTesting() {
  std::unique_lock<std::mutex> lock(mu_);
  idle_cv_.wait(lock, [this] { return IdleLocked(); });
}

bool BatcherCore::IdleLocked() {
  const absl::Time now = clock_->Now();
  for (const WorkerState& w : workers_) {
    if (!w.asleep || w.epoch != epoch_ || w.at != now) return false;
  }
  return true;
}

void BatcherCore::ChangedLocked() {
  ++epoch_;
  if (metrics_) metrics_->queue_depth->Set(static_cast<double>(queue_.size()));
  cv_.notify_all();
}

bool BatcherCore::ReadyLocked(absl::Time now) const {
  if (queue_.empty()) return false;
  if (stopping_) return true;
  if (static_cast<int64_t>(queue_.size()) >= options_.max_batch_size) return true;
  if (queued_tokens_ >= options_.max_batch_tokens) return true;
  return now - queue_.front().request->enqueue_time >= options_.max_queue_delay;
}

void BatcherCore::WorkerLoop(int worker) {
  std::unique_lock<std::mutex> lock(mu_);
  // The previous batch of this worker, while it has not slept since.
  absl::Time previous_start = absl::InfinitePast();
  int64_t previous_tokens = 0;
  for (;;) {
    const absl::Time now = clock_->Now();
    std::vector<Finished> finished;
    ExpireLocked(now, &finished);
    if (ReadyLocked(now)) {
      if (previous_tokens > 0 && now > previous_start) {
        // Back to back: the whole cycle is what a busy worker really takes.
        const double cycle = absl::ToDoubleSeconds(now - previous_start);
        const double spt = cycle / static_cast<double>(previous_tokens);
        busy_seconds_per_token_ =
            busy_seconds_per_token_ == 0 ? spt : 0.8 * busy_seconds_per_token_ + 0.2 * spt;
        batch_seconds_ = batch_seconds_ == 0 ? cycle : 0.8 * batch_seconds_ + 0.2 * cycle;
      }
      Batch batch = FormBatchLocked(now);
      previous_start = now;
      previous_tokens = batch.tokens;
      lock.unlock();
      RunFinished(&finished);
      RunBatch(std::move(batch));
      lock.lock();
      continue;
    }
    if (!finished.empty()) {
      lock.unlock();
      RunFinished(&finished);
      lock.lock();
      continue;
    }
    if (stopping_ && queue_.empty()) return;
    absl::Time wake = absl::InfiniteFuture();
    if (!queue_.empty()) {
      wake = std::min(queue_.front().request->enqueue_time + options_.max_queue_delay, next_expiry_);
    }
    workers_[worker] = WorkerState{true, epoch_, now};
    previous_tokens = 0;
    idle_cv_.notify_all();
    clock_->WaitUntil(lock, cv_, now, wake);
    workers_[worker].asleep = false;
  }
}

BatcherCore::Batch BatcherCore::FormBatchLocked(absl::Time now) {
  Batch batch;
  std::vector<std::list<Queued>::iterator> taken;
  auto first = queue_.begin();
  const int64_t first_tokens = first->item->tokens;
  taken.push_back(first);
  batch.tokens = first_tokens;

  // Candidates after the oldest, nearest in length first (age breaks ties).
  const size_t window =
      options_.length_grouping_window == 0
          ? static_cast<size_t>(options_.max_batch_size - 1)
          : static_cast<size_t>(
                std::max(options_.length_grouping_window, options_.max_batch_size - 1));
  std::vector<std::list<Queued>::iterator> candidates;
  for (auto it = std::next(first); it != queue_.end() && candidates.size() < window; ++it) {
    candidates.push_back(it);
  }
  if (options_.length_grouping_window > 0) {
    // Grouping lets younger items overtake older ones, so an item queued
    // behind a run of similar lengths could wait many batches. Items that
    // must start within about two batches to meet their deadline go first,
    // earliest deadline first; the rest by nearness in length.
    const absl::Time urgent_before = now + absl::Seconds(2 * batch_seconds_);
    std::stable_sort(candidates.begin(), candidates.end(),
                     [first_tokens, urgent_before](auto a, auto b) {
                       const absl::Time da = a->request->deadline, db = b->request->deadline;
                       const bool ua = da <= urgent_before, ub = db <= urgent_before;
                       if (ua != ub) return ua;
                       if (ua) return da < db;
                       return std::llabs(a->item->tokens - first_tokens) <
                              std::llabs(b->item->tokens - first_tokens);
                     });
  }
  // With several workers, one batch takes at most its share of everything
  // queued and running, so that batches running side by side are about the
  // same size: one worker grabbing most of the queue would make its batch,
  // and every request in it, the slow one.
  int limit = options_.max_batch_size;
  if (options_.num_workers > 1) {
    const int64_t outstanding = static_cast<int64_t>(queue_.size()) + running_items_;
    const int64_t share = (outstanding + options_.num_workers - 1) / options_.num_workers;
    limit = static_cast<int>(std::clamp<int64_t>(share, 1, options_.max_batch_size));
  }
  for (auto it : candidates) {
    if (static_cast<int>(taken.size()) >= limit) break;
    if (batch.tokens + it->item->tokens > options_.max_batch_tokens) break;
    taken.push_back(it);
    batch.tokens += it->item->tokens;
  }

  batch.entries.reserve(taken.size());
  for (auto it : taken) {
    CoreRequest& request = *it->request;
    it->item->timing.queue_wait = now - request.enqueue_time;
    --request.queued;
    queued_tokens_ -= it->item->tokens;
    running_tokens_ += it->item->tokens;
    ++running_items_;
    batch.entries.push_back(std::move(*it));
    queue_.erase(it);
  }
  ChangedLocked();
  return batch;
}

void BatcherCore::RunBatch(Batch batch) {
  std::vector<CoreItem*> items;
  items.reserve(batch.entries.size());
  int64_t longest = 0;
  for (const Queued& q : batch.entries) {
    items.push_back(q.item);
    longest = std::max(longest, q.item->tokens);
  }
  const absl::Time start = clock_->Now();
  const absl::Status status = fn_(absl::MakeConstSpan(items));
  const absl::Duration inference = clock_->Now() - start;

  const int size = static_cast<int>(items.size());
  for (CoreItem* item : items) {
    item->timing.inference = inference;
    item->timing.batch_size = size;
    item->timing.batch_tokens = batch.tokens;
    if (!status.ok()) item->status = status;
  }
  if (metrics_) {
    metrics_->batch_size->Observe(size);
    metrics_->batch_tokens->Observe(static_cast<double>(batch.tokens));
    metrics_->inference->Observe(absl::ToDoubleSeconds(inference));
    metrics_->input_tokens->Inc(static_cast<double>(batch.tokens));
    for (CoreItem* item : items) metrics_->queue_wait->Observe(absl::ToDoubleSeconds(item->timing.queue_wait));
    if (longest > 0) {
      metrics_->padding_ratio->Observe(1.0 - static_cast<double>(batch.tokens) /
                                                 (static_cast<double>(size) * longest));
    }
  }

  std::vector<Finished> finished;
  {
    std::lock_guard<std::mutex> lock(mu_);
    running_tokens_ -= batch.tokens;
    running_items_ -= static_cast<int64_t>(batch.entries.size());
    if (status.ok() && batch.tokens > 0) {
      const double spt = absl::ToDoubleSeconds(inference) / static_cast<double>(batch.tokens);
      seconds_per_token_ =
          seconds_per_token_ == 0 ? spt : 0.8 * seconds_per_token_ + 0.2 * spt;
      // Until a worker has run back to back, a batch takes its engine time.
      if (busy_seconds_per_token_ == 0) {
        const double seconds = absl::ToDoubleSeconds(inference);
        batch_seconds_ = batch_seconds_ == 0 ? seconds : 0.8 * batch_seconds_ + 0.2 * seconds;
      }
    }
    for (const Queued& q : batch.entries) {
      CoreRequest& request = *q.request;
      --request.remaining;
      if (request.finished) continue;
      if (!q.item->status.ok()) {
        FailLocked(q.request, q.item->status, &finished);
      } else if (request.remaining == 0) {
        request.finished = true;
        active_.erase(request.id);
        finished.push_back(Finished{q.request, absl::OkStatus()});
      }
    }
  }
  // Requests (and their outputs) stay alive through `finished` and `batch`
  // until the callbacks have run.
  RunFinished(&finished);
}

void BatcherCore::ExpireLocked(absl::Time now, std::vector<Finished>* finished) {
  if (now < next_expiry_) return;
  absl::flat_hash_set<CoreRequest*> seen;
  std::vector<std::shared_ptr<CoreRequest>> expired;
  absl::Time next = absl::InfiniteFuture();
  for (const Queued& q : queue_) {
    if (q.request->deadline <= now) {
      if (seen.insert(q.request.get()).second) expired.push_back(q.request);
    } else {
      next = std::min(next, q.request->deadline);
    }
  }
  next_expiry_ = next;
  for (const std::shared_ptr<CoreRequest>& request : expired) {
    FailLocked(request,
               absl::DeadlineExceededError(absl::StrCat(
                   "deadline exceeded after waiting ",
                   absl::FormatDuration(now - request->enqueue_time), " in model ",
                   options_.model, "'s batching queue")),
               finished);
    if (metrics_) metrics_->rejected_deadline->Inc();
  }
}

void BatcherCore::FailLocked(const std::shared_ptr<CoreRequest>& request, absl::Status status,
                             std::vector<Finished>* finished) {
  request->finished = true;
  active_.erase(request->id);
  if (request->queued > 0) {
    for (auto it = queue_.begin(); it != queue_.end();) {
      if (it->request == request) {
        queued_tokens_ -= it->item->tokens;
        --request->remaining;
        it = queue_.erase(it);
      } else {
        ++it;
      }
    }
    request->queued = 0;
    ChangedLocked();
  }
  finished->push_back(Finished{request, std::move(status)});
}

void BatcherCore::RunFinished(std::vector<Finished>* finished) {
  for (Finished& f : *finished) f.request->Finish(std::move(f.status));
  finished->clear();
}

}  // namespace maskserve::server::internal
