// Continuous (iteration-level) batching for one generative model, vLLM /
// Orca style. One scheduler thread runs the model step after step; each
// step packs the next tokens of EVERY running sequence of every request
// (decode tokens, prefill chunks, recomputes) into one GenerativeModel::Forward,
// so a request that arrives joins at the next step instead of waiting for a
// batch to drain, and a finished one leaves at once.
//
// Per step:
//   1. cancellations and expired deadlines leave (their KV blocks are freed
//      at once);
//   2. admission: waiting requests are admitted oldest first while the pool
//      has free blocks for their prompt (minus what the running requests
//      need for their next tokens) and the sequence limit allows;
//   3. planning under a token budget: one decode token per running
//      sequence first, then prefill chunks (a long prompt is fed a chunk per
//      step, so running streams keep getting tokens while it is read);
//   4. KV reservation (KvCachePool::Append). When blocks run out, the
//      newest running request is preempted: its blocks are freed and it goes
//      back to the front of the queue; once readmitted it recomputes its
//      tokens (prompt + generated so far) and continues with the same output.
//      Requests are never failed for lack of blocks (one that could not fit
//      even alone is refused at Submit);
//   5. Forward, then each request's RequestDecoder turns its logits into
//      tokens and text; on_step / on_done run on the scheduler thread.
//
// Ownership: the batcher owns the model's KvCachePool (sized from
// kv_cache_bytes and the model's kv_layout()) and every RequestDecoder;
// only the scheduler thread touches them. Submit / Cancel only queue under a
// mutex and wake the thread. The Clock is injectable: with a FakeClock and
// start_thread = false, tests drive steps by hand with RunStep().
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/generative_model.h"
#include "engine/kv_cache.h"
#include "engine/request_decoder.h"
#include "server/metrics/registry.h"
#include "server/scheduler/clock.h"

namespace maskserve::server {

struct ContinuousBatcherOptions {
  // Model name: the `model` metric label, the thread name and error messages.
  std::string model;
  // KV-cache pool size in bytes (rounded down to whole blocks).
  int64_t kv_cache_bytes = int64_t{512} << 20;
  // Positions per KV block.
  int kv_block_size = 16;
  // Tokens one step may run (decode tokens first, then prefill chunks), >= 1.
  int max_step_tokens = 512;
  // Sequences that may run at once (admission stops there), >= 1.
  int max_running_sequences = 256;
  // Requests waiting for admission (not counting preempted ones) before
  // Submit fails with RESOURCE_EXHAUSTED, >= 1.
  int64_t max_queue_size = 4096;
  // Time source; nullptr = RealClock::Get(). Must outlive the batcher.
  Clock* clock = nullptr;
  // Receives the generation metrics; nullptr = none. Must outlive the batcher.
  metrics::MetricsRegistry* registry = nullptr;
  // false: no scheduler thread; the caller drives steps with RunStep() (tests).
  bool start_thread = true;
};

// Where a request's time went (from the batcher's clock).
struct GenerationTimes {
  absl::Duration queue;        // arrival -> first admission
  absl::Duration prefill;      // first admission -> first token (includes the encoder)
  absl::Duration decode;       // first token -> completion
  absl::Duration first_token;  // arrival -> first token
  absl::Duration total;        // arrival -> completion
};

struct GenerationResult {
  std::vector<engine::GeneratedSequence> sequences;
  int prompt_tokens = 0;
  int completion_tokens = 0;
  GenerationTimes times;
  // How often the request was preempted (and recomputed).
  int preemptions = 0;
};

struct GenerationCallbacks {
  // Optional: what each step produced (new ids, text deltas, finishes). Runs
  // on the scheduler thread and must not block.
  std::function<void(const engine::StepOutput& step)> on_step;
  // Exactly once: the result, or CANCELLED / DEADLINE_EXCEEDED / UNAVAILABLE
  // (shutdown) / an engine error. Runs on the scheduler thread (or in
  // Shutdown), never inside Submit.
  std::function<void(absl::StatusOr<GenerationResult> result)> on_done;
};

// Identifies a submitted request for Cancel.
struct GenerationHandle {
  uint64_t id = 0;
};

class ContinuousBatcher {
 public:
  // Creates the KV pool for `model` and starts the scheduler thread.
  static absl::StatusOr<std::unique_ptr<ContinuousBatcher>> Create(
      std::shared_ptr<const engine::GenerativeModel> model,
      const ContinuousBatcherOptions& options);
  // Shutdown().
  ~ContinuousBatcher();
  ContinuousBatcher(const ContinuousBatcher&) = delete;
  ContinuousBatcher& operator=(const ContinuousBatcher&) = delete;

  // Queues a request (its decoder made for this batcher's model). Errors:
  // RESOURCE_EXHAUSTED when max_queue_size requests wait already, or when
  // the request could not fit in the KV pool even alone (both name the
  // flag); DEADLINE_EXCEEDED when `deadline` has passed; UNAVAILABLE after
  // Shutdown. On error no callback ever runs.
  absl::StatusOr<GenerationHandle> Submit(std::unique_ptr<engine::RequestDecoder> decoder,
                                          absl::Time deadline, GenerationCallbacks callbacks);

  // Ends the request with CANCELLED at the next step boundary (its KV blocks
  // are freed then). False when it already finished or is unknown.
  bool Cancel(GenerationHandle handle);

  // Stops the thread; requests still queued or running end with UNAVAILABLE.
  // Idempotent. Must not be called from a callback.
  void Shutdown();

  // One scheduler iteration: cancellations, deadlines, admission, one model
  // step, callbacks. Returns false when there was nothing to do. Only for
  // start_thread = false (the thread calls it otherwise).
  bool RunStep();

  // Snapshot of the pool (thread-safe).
  engine::KvCacheStats kv_stats() const { return pool_->Stats(); }

  struct Counts {
    int running_requests = 0;
    int running_sequences = 0;
    int waiting_requests = 0;    // never admitted yet
    int preempted_requests = 0;  // waiting to resume
  };
  // Scheduler state after the last step (thread-safe).
  Counts counts() const;

  // Blocks until the scheduler thread sleeps with nothing to do (thread
  // mode). For tests.
  void AwaitIdleForTesting();

 private:
  struct Request;
  struct Metrics;
  struct Entry;

  ContinuousBatcher(std::shared_ptr<const engine::GenerativeModel> model,
                    const ContinuousBatcherOptions& options,
                    std::unique_ptr<engine::KvCachePool> pool);
  void Loop();
  // Scheduler-thread helpers.
  void TakeIncoming();
  void Preempt(Request* r);
  void Admit(absl::Time now);
  void UpdateGauges();

  const std::shared_ptr<const engine::GenerativeModel> model_;
  const ContinuousBatcherOptions options_;
  Clock* const clock_;
  const std::unique_ptr<engine::KvCachePool> pool_;
  std::unique_ptr<Metrics> metrics_;

  // Guards everything up to `thread_`.
  mutable std::mutex mu_;
  std::condition_variable_any cv_;
  std::condition_variable idle_cv_;
  std::vector<std::unique_ptr<Request>> incoming_;
  absl::flat_hash_set<uint64_t> cancels_;
  // Ids of requests submitted and not finished.
  absl::flat_hash_set<uint64_t> live_;
  // Requests waiting for their first admission (incoming + queued).
  int64_t queued_new_ = 0;
  uint64_t next_id_ = 1;
  bool stopping_ = false;
  bool idle_ = false;
  Counts counts_;
  std::mutex join_mu_;
  std::thread thread_;

  // Scheduler-thread state (no lock): requests by arrival id.
  std::vector<std::unique_ptr<Request>> waiting_;
  std::vector<std::unique_ptr<Request>> running_;
};

}  // namespace maskserve::server
