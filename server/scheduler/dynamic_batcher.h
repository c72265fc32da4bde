// Dynamic batching for encoder (embedding) models: inputs from many client
// requests are queued per model and run together, so the engine sees batches
// instead of single sentences. Requests are split into items (one per input);
// items may land in different batches and are reassembled, in request order,
// before the request's callback fires once.
//
// A batch closes when it holds max_batch_size items, when the next item would
// push it past max_batch_tokens real (unpadded) tokens, or when the oldest
// queued item has waited max_queue_delay; a single item larger than
// max_batch_tokens runs alone. A batch always starts with the oldest queued
// item, so nothing starves, and is filled first with queued items that must
// start within about two batches to meet their deadline, then with those
// closest to it in length, so batches are uniform. With several workers a
// batch takes at most an even share (per worker) of the items queued and
// running, so batches running side by side are about the same size. Expired and cancelled requests leave
// the queue before they cost compute. Each model has its own batcher (queue
// and threads), so one model's load never delays another's.
//
// Threads: `num_workers` workers each form a batch when they are free and
// run it; while all are busy the queue fills, which is when batching pays.
// Idle workers block on a condition variable through the Clock: nothing
// spin-waits, and a FakeClock drives time in tests.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "server/metrics/registry.h"
#include "server/scheduler/clock.h"

namespace maskserve::server {

struct DynamicBatcherOptions {
  // Most items (inputs) in one batch (>= 1).
  int max_batch_size = 32;
  // Most real tokens summed over one batch's items (>= 1).
  int64_t max_batch_tokens = 16384;
  // Longest the oldest queued item waits for its batch to fill (>= 0).
  absl::Duration max_queue_delay = absl::Microseconds(2000);
  // Most pending (queued, not yet running) items; beyond it Submit fails (>= 1).
  int64_t max_queue_size = 4096;
  // Threads forming and running batches (>= 1).
  int num_workers = 1;
  // Queued items after the oldest searched for similar lengths (at least
  // max_batch_size - 1 are searched); 0 = strict FIFO, no length grouping.
  int length_grouping_window = 128;
  // Refuse a request at Submit (RESOURCE_EXHAUSTED with a retry hint,
  // server/retry_hint.h) when the work queued and running ahead of it, at the
  // recently measured speed, would not be done within deadline_headroom of
  // the time to its deadline, instead of queueing it only to expire. The
  // speed is what a busy worker really gets through per token, batch start
  // to batch start (engine time plus everything else on the machine), or the
  // engine time alone until a worker has run two batches back to back. No
  // estimate before the first batch.
  bool shed_on_deadline = false;
  // Share of the time left to a deadline that the predicted wait may use
  // (0, 1]: room for the estimate's error and for sending the response.
  double deadline_headroom = 0.5;
  // Time source; nullptr = RealClock::Get(). Must outlive the batcher.
  Clock* clock = nullptr;
  // Model name: the `model` metric label, thread names and error messages.
  std::string model;
  // Receives the maskserve_* batching metrics; nullptr = none. Must outlive the batcher.
  metrics::MetricsRegistry* registry = nullptr;
};

// Where one item's time went, for a response's timing breakdown.
struct ItemTiming {
  // Submit -> its batch started.
  absl::Duration queue_wait;
  // BatchFn time of its batch.
  absl::Duration inference;
  // Items and real tokens in its batch.
  int batch_size = 0;
  int64_t batch_tokens = 0;
};

// One input as Submit takes it.
template <typename Input>
struct BatchInput {
  // The caller's payload (e.g. token ids), moved into the batcher.
  Input input;
  // Real tokens of this input: what max_batch_tokens and length grouping count.
  int64_t tokens = 0;
};

// One input as BatchFn sees it.
template <typename Input, typename Output>
struct BatchItem {
  Input input;
  int64_t tokens = 0;
  // BatchFn writes this item's result here.
  Output output{};
  // BatchFn may set an error that fails only this item's request.
  absl::Status status;
};

// One input's result as the request's callback gets it.
template <typename Output>
struct ItemResult {
  Output output;
  ItemTiming timing;
};

// Identifies a submitted request for Cancel.
struct RequestHandle {
  uint64_t id = 0;
};

namespace internal {

// Scheduling state of one item; `payload` points at the typed BatchItem.
struct CoreItem {
  int64_t tokens = 0;
  void* payload = nullptr;
  // Set from the typed item (or the batch's error) after BatchFn.
  absl::Status status;
  ItemTiming timing;
};

// A request as the untyped core sees it. Fields below `items` belong to
// BatcherCore and are guarded by its mutex.
class CoreRequest {
 public:
  virtual ~CoreRequest() = default;
  // Called exactly once, on no lock: OK when every item has its output, else
  // the first error (other items may still be running; their results are
  // dropped).
  virtual void Finish(absl::Status status) = 0;

  std::vector<CoreItem> items;
  uint64_t id = 0;
  absl::Time enqueue_time;
  absl::Time deadline;
  // Items not yet finished (queued or running), and of those the queued ones.
  size_t remaining = 0;
  size_t queued = 0;
  bool finished = false;
};

using CoreBatchFn = std::function<absl::Status(absl::Span<CoreItem* const> items)>;

// The type-independent batcher; DynamicBatcher is a typed face on it.
class BatcherCore {
 public:
  static absl::StatusOr<std::unique_ptr<BatcherCore>> Create(const DynamicBatcherOptions& options,
                                                             CoreBatchFn fn);
  ~BatcherCore();
  BatcherCore(const BatcherCore&) = delete;
  BatcherCore& operator=(const BatcherCore&) = delete;

  absl::StatusOr<RequestHandle> Submit(std::shared_ptr<CoreRequest> request, absl::Time deadline);
  absl::Status CheckAdmission(absl::Time deadline) const;
  bool Cancel(RequestHandle handle);
  void Shutdown();
  int64_t pending_items() const;
  void AwaitIdleForTesting();

 private:
  struct Metrics;
  struct Queued {
    std::shared_ptr<CoreRequest> request;
    CoreItem* item;
  };
  struct Finished {
    std::shared_ptr<CoreRequest> request;
    absl::Status status;
  };
  struct Batch {
    std::vector<Queued> entries;
    int64_t tokens = 0;
  };
  struct WorkerState {
    bool asleep = false;
    // epoch_ and clock time when it went to sleep.
    uint64_t epoch = 0;
    absl::Time at;
  };

  BatcherCore(const DynamicBatcherOptions& options, CoreBatchFn fn);
  void WorkerLoop(int worker);
  // Submit's refusals: shutting down, deadline passed, queue full, and with
  // shed_on_deadline the work ahead plus `tokens` outlasting the deadline.
  absl::Status AdmitLocked(absl::Time now, int64_t n, int64_t tokens, absl::Time deadline) const;
  bool ReadyLocked(absl::Time now) const;
  Batch FormBatchLocked(absl::Time now);
  void RunBatch(Batch batch);
  void ExpireLocked(absl::Time now, std::vector<Finished>* finished);
  void FailLocked(const std::shared_ptr<CoreRequest>& request, absl::Status status,
                  std::vector<Finished>* finished);
  // Records a change of the queue (or of stopping_) and wakes the workers.
  void ChangedLocked();
  bool IdleLocked();
  static void RunFinished(std::vector<Finished>* finished);

  const DynamicBatcherOptions options_;
  Clock* const clock_;
  const CoreBatchFn fn_;
  std::unique_ptr<Metrics> metrics_;

  mutable std::mutex mu_;
  // Workers wait here (through clock_) for work or the oldest item's delay.
  std::condition_variable_any cv_;
  // AwaitIdleForTesting waits here for workers going to sleep.
  std::condition_variable idle_cv_;
  // Guarded by mu_: pending items, oldest first.
  std::list<Queued> queue_;
  int64_t queued_tokens_ = 0;
  // Tokens and items of the batches running now.
  int64_t running_tokens_ = 0;
  int64_t running_items_ = 0;
  // Moving averages of one worker's seconds per token: engine time alone, and
  // batch start to next batch start while busy (0 = not measured yet).
  double seconds_per_token_ = 0;
  double busy_seconds_per_token_ = 0;
  // Moving average of one batch's cycle (engine time until measured back to
  // back): how long a queued item that misses a batch waits for the next.
  double batch_seconds_ = 0;
  // Earliest deadline among queued requests (may be stale-early after removals).
  absl::Time next_expiry_ = absl::InfiniteFuture();
  absl::flat_hash_map<uint64_t, std::shared_ptr<CoreRequest>> active_;
  uint64_t next_id_ = 1;
  uint64_t epoch_ = 0;
  bool stopping_ = false;
  std::vector<WorkerState> workers_;

  // Serialises joins so concurrent Shutdown calls all return after the join.
  std::mutex join_mu_;
  std::vector<std::thread> threads_;
};

}  // namespace internal

// `Input`: what BatchFn needs per item (e.g. token and type ids); `Output`:
// what it produces per item (e.g. a pooled vector); default-constructible.
template <typename Input, typename Output>
class DynamicBatcher {
 public:
  using Item = BatchItem<Input, Output>;
  // Per-item results in request order, or the request's first error.
  using Result = absl::StatusOr<std::vector<ItemResult<Output>>>;
  using DoneFn = std::function<void(Result result)>;
  // Runs one batch on a worker thread: writes each item's output (or its
  // status). An error fails every request with an item in the batch.
  using BatchFn = std::function<absl::Status(absl::Span<Item* const> items)>;

  static absl::StatusOr<std::unique_ptr<DynamicBatcher>> Create(const DynamicBatcherOptions& options,
                                                                BatchFn fn);
  // Shutdown().
  ~DynamicBatcher() { core_->Shutdown(); }
  DynamicBatcher(const DynamicBatcher&) = delete;
  DynamicBatcher& operator=(const DynamicBatcher&) = delete;

  // Queues the request's inputs. On success `on_done` runs exactly once later,
  // on a worker thread (or on the thread calling Cancel); on error it never
  // runs. Errors: INVALID_ARGUMENT (no inputs, negative tokens),
  // DEADLINE_EXCEEDED (`deadline` already passed), RESOURCE_EXHAUSTED (the
  // queue would exceed max_queue_size; the message says to retry later, or to
  // split a request larger than the whole queue; or, with shed_on_deadline,
  // the queue would outlast `deadline`), UNAVAILABLE (shutting down).
  // An item still queued at `deadline` fails the request with DEADLINE_EXCEEDED.
  absl::StatusOr<RequestHandle> Submit(std::vector<BatchInput<Input>> inputs, absl::Time deadline,
                                       DoneFn on_done);

  // What Submit would refuse now for one input of unknown length (shutting
  // down, queue full, or with shed_on_deadline the work already queued and
  // running outlasting `deadline`), with the same status and metrics; OK
  // does not promise Submit will accept. Lets a caller refuse before it has
  // tokenised the request, so refusing stays cheap under overload.
  absl::Status CheckAdmission(absl::Time deadline) const { return core_->CheckAdmission(deadline); }

  // Fails the request with CANCELLED and drops its queued items; items already
  // running finish but their results are discarded. False when the request
  // already finished (or is unknown).
  bool Cancel(RequestHandle handle) { return core_->Cancel(handle); }

  // Stops accepting requests, runs everything queued (without waiting for
  // delays; expired items still fail), and joins the workers. Idempotent.
  // Must not be called from BatchFn or a DoneFn.
  void Shutdown() { core_->Shutdown(); }

  // Items queued and not yet running.
  int64_t pending_items() const { return core_->pending_items(); }

  // Blocks until every worker sleeps having seen the current queue and clock
  // time. For tests with a FakeClock and a BatchFn that does not block.
  void AwaitIdleForTesting() { core_->AwaitIdleForTesting(); }

 private:
  class Request final : public internal::CoreRequest {
   public:
    void Finish(absl::Status status) override {
      DoneFn done = std::move(on_done);
      if (!status.ok()) {
        done(std::move(status));
        return;
      }
      std::vector<ItemResult<Output>> results;
      results.reserve(typed.size());
      for (size_t i = 0; i < typed.size(); ++i) {
        results.push_back(ItemResult<Output>{std::move(typed[i].output), items[i].timing});
      }
      done(std::move(results));
    }

    std::vector<Item> typed;
    DoneFn on_done;
  };

  explicit DynamicBatcher(std::unique_ptr<internal::BatcherCore> core) : core_(std::move(core)) {}

  std::unique_ptr<internal::BatcherCore> core_;
};

template <typename Input, typename Output>
absl::StatusOr<std::unique_ptr<DynamicBatcher<Input, Output>>>
DynamicBatcher<Input, Output>::Create(const DynamicBatcherOptions& options, BatchFn fn) {
  if (!fn) return absl::InvalidArgumentError("DynamicBatcher: a batch function is required");
  auto adapter = [fn = std::move(fn)](absl::Span<internal::CoreItem* const> core) {
    std::vector<Item*> items;
    items.reserve(core.size());
    for (internal::CoreItem* c : core) items.push_back(static_cast<Item*>(c->payload));
    absl::Status status = fn(absl::MakeConstSpan(items));
    for (size_t i = 0; i < core.size(); ++i) core[i]->status = items[i]->status;
    return status;
  };
  absl::StatusOr<std::unique_ptr<internal::BatcherCore>> core =
      internal::BatcherCore::Create(options, std::move(adapter));
  if (!core.ok()) return core.status();
  return std::unique_ptr<DynamicBatcher>(new DynamicBatcher(std::move(*core)));
}

template <typename Input, typename Output>
absl::StatusOr<RequestHandle> DynamicBatcher<Input, Output>::Submit(
    std::vector<BatchInput<Input>> inputs, absl::Time deadline, DoneFn on_done) {
  auto request = std::make_shared<Request>();
  request->typed.reserve(inputs.size());
  request->items.resize(inputs.size());
  for (BatchInput<Input>& in : inputs) {
    request->typed.push_back(Item{std::move(in.input), in.tokens, Output{}, absl::OkStatus()});
  }
  // `typed` is never resized again, so these pointers stay valid.
  for (size_t i = 0; i < inputs.size(); ++i) {
    request->items[i].tokens = inputs[i].tokens;
    request->items[i].payload = &request->typed[i];
  }
  request->on_done = std::move(on_done);
  return core_->Submit(std::move(request), deadline);
}

}  // namespace maskserve::server
