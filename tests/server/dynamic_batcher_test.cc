#include "server/scheduler/dynamic_batcher.h"

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "server/metrics/registry.h"
#include "server/scheduler/clock.h"
#include "server/retry_hint.h"

namespace maskserve::server {
namespace {

// std primitives only (no absl::Notification): Debian's Abseil is not built
// with TSan, and the stress test runs under TSan.
class Latch {
 public:
  void Notify() {
    std::lock_guard<std::mutex> lock(mu_);
    done_ = true;
    cv_.notify_all();
  }
  void Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return done_; });
  }
  bool HasBeenNotified() {
    std::lock_guard<std::mutex> lock(mu_);
    return done_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
};

struct In {
  int id = 0;
};
using Batcher = DynamicBatcher<In, int>;

// What BatchFn saw: one entry per batch, the (id, tokens) of its items.
struct Seen {
  int id;
  int64_t tokens;
  bool operator==(const Seen&) const = default;
};

class Recorder {
 public:
  // Writes output = 10 * id; a test may hook each batch.
  Batcher::BatchFn Fn(std::function<void(absl::Span<Batcher::Item* const>)> hook = nullptr) {
    return [this, hook](absl::Span<Batcher::Item* const> items) {
      std::vector<Seen> batch;
      for (Batcher::Item* item : items) {
        batch.push_back({item->input.id, item->tokens});
        item->output = 10 * item->input.id;
      }
      {
        std::lock_guard<std::mutex> lock(mu_);
        batches_.push_back(std::move(batch));
      }
      if (hook) hook(items);
      return absl::OkStatus();
    };
  }
  std::vector<std::vector<Seen>> batches() {
    std::lock_guard<std::mutex> lock(mu_);
    return batches_;
  }

 private:
  std::mutex mu_;
  std::vector<std::vector<Seen>> batches_;
};

// One request's outcome; counts callbacks so "exactly once" is checked.
class BatchOutcome {
 public:
  Batcher::DoneFn Fn() {
    return [this](Batcher::Result r) {
      std::lock_guard<std::mutex> lock(mu_);
      ++calls_;
      result_ = std::move(r);
      cv_.notify_all();
    };
  }
  const Batcher::Result& Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return calls_ > 0; });
    return result_;
  }
  int calls() {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int calls_ = 0;
  Batcher::Result result_ = absl::UnknownError("not finished");
};

std::vector<BatchInput<In>> Inputs(std::vector<std::pair<int, int64_t>> id_tokens) {
  std::vector<BatchInput<In>> out;
  for (auto [id, tokens] : id_tokens) out.push_back({In{id}, tokens});
  return out;
}

DynamicBatcherOptions FakeOptions(FakeClock* clock) {
  return DynamicBatcherOptions{.max_batch_size = 4,
                               .max_batch_tokens = 1000,
                               .max_queue_delay = absl::Milliseconds(10),
                               .max_queue_size = 100,
                               .num_workers = 1,
                               .clock = clock,
                               .model = "m"};
}

std::unique_ptr<Batcher> MakeBatcher(const DynamicBatcherOptions& o, Batcher::BatchFn fn) {
  auto b = Batcher::Create(o, std::move(fn));
  EXPECT_TRUE(b.ok()) << b.status();
  return b.ok() ? std::move(*b) : nullptr;
}

TEST(DynamicBatcherTest, ClosesOnSizeWithoutWaitingForTheDelay) {
  FakeClock clock;
  Recorder rec;
  // Declared before the batcher: its shutdown may still complete them.
  BatchOutcome out[5];
  auto b = MakeBatcher(FakeOptions(&clock), rec.Fn());
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(b->Submit(Inputs({{i, 5}}), absl::InfiniteFuture(), out[i].Fn()).ok());
  }
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(out[i].Wait().ok());
  b->AwaitIdleForTesting();
  // The fifth waits: one item is neither a full batch nor past its delay.
  EXPECT_EQ(out[4].calls(), 0);
  EXPECT_EQ(b->pending_items(), 1);
  ASSERT_EQ(rec.batches().size(), 1u);
  EXPECT_EQ(rec.batches()[0],
            (std::vector<Seen>{{0, 5}, {1, 5}, {2, 5}, {3, 5}}));
  EXPECT_EQ((*out[2].Wait())[0].output, 20);
}

TEST(DynamicBatcherTest, ClosesWhenTheNextItemWouldExceedMaxBatchTokens) {
  FakeClock clock;
  Recorder rec;
  DynamicBatcherOptions o = FakeOptions(&clock);
  o.max_batch_size = 100;
  o.max_batch_tokens = 100;
  // Declared before the batcher: its shutdown may still complete them.
  BatchOutcome out[3];
  auto b = MakeBatcher(o, rec.Fn());
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(b->Submit(Inputs({{i, 40}}), absl::InfiniteFuture(), out[i].Fn()).ok());
  }
  ASSERT_TRUE(out[0].Wait().ok());
  ASSERT_TRUE(out[1].Wait().ok());
  b->AwaitIdleForTesting();
  EXPECT_EQ(out[2].calls(), 0);
  ASSERT_EQ(rec.batches().size(), 1u);
  EXPECT_EQ(rec.batches()[0], (std::vector<Seen>{{0, 40}, {1, 40}}));
  EXPECT_EQ((*out[0].Wait())[0].timing.batch_tokens, 80);
  clock.Advance(absl::Milliseconds(10));
  ASSERT_TRUE(out[2].Wait().ok());
  EXPECT_EQ(rec.batches().size(), 2u);
}

TEST(DynamicBatcherTest, ClosesOnDelayOnlyOnceTheOldestItemWaitedMaxQueueDelay) {
  FakeClock clock;
  Recorder rec;
  // Declared before the batcher: its shutdown may still complete them.
  BatchOutcome first, second;
  auto b = MakeBatcher(FakeOptions(&clock), rec.Fn());
  ASSERT_TRUE(b->Submit(Inputs({{1, 5}}), absl::InfiniteFuture(), first.Fn()).ok());
  clock.Advance(absl::Milliseconds(4));
  ASSERT_TRUE(b->Submit(Inputs({{2, 5}}), absl::InfiniteFuture(), second.Fn()).ok());
  b->AwaitIdleForTesting();
  EXPECT_TRUE(rec.batches().empty());
  clock.Advance(absl::Milliseconds(5));  // oldest has waited 9 ms
  b->AwaitIdleForTesting();
  EXPECT_TRUE(rec.batches().empty());
  EXPECT_EQ(first.calls(), 0);
  clock.Advance(absl::Milliseconds(1));  // 10 ms: whatever is queued goes
  ASSERT_TRUE(first.Wait().ok());
  ASSERT_TRUE(second.Wait().ok());
  ASSERT_EQ(rec.batches().size(), 1u);
  EXPECT_EQ(rec.batches()[0].size(), 2u);
  EXPECT_EQ((*first.Wait())[0].timing.queue_wait, absl::Milliseconds(10));
  EXPECT_EQ((*second.Wait())[0].timing.queue_wait, absl::Milliseconds(6));
}

TEST(DynamicBatcherTest, ResultsCarryQueueWaitAndInferenceTime) {
  FakeClock clock;
  Recorder rec;
  // Declared before the batcher: its shutdown may still complete them.
  BatchOutcome out;
  // The "engine" takes 3 ms of fake time.
  auto b = MakeBatcher(FakeOptions(&clock),
                       rec.Fn([&](auto) { clock.Advance(absl::Milliseconds(3)); }));
  ASSERT_TRUE(b->Submit(Inputs({{1, 7}, {2, 9}}), absl::InfiniteFuture(), out.Fn()).ok());
  b->AwaitIdleForTesting();
  clock.Advance(absl::Milliseconds(10));
  const Batcher::Result& r = out.Wait();
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 2u);
  for (const ItemResult<int>& item : *r) {
    EXPECT_EQ(item.timing.queue_wait, absl::Milliseconds(10));
    EXPECT_EQ(item.timing.inference, absl::Milliseconds(3));
    EXPECT_EQ(item.timing.batch_size, 2);
    EXPECT_EQ(item.timing.batch_tokens, 16);
  }
}

TEST(DynamicBatcherTest, AnItemLargerThanMaxBatchTokensRunsAlone) {
  FakeClock clock;
  Recorder rec;
  DynamicBatcherOptions o = FakeOptions(&clock);
  o.max_batch_tokens = 100;
  // Declared before the batcher: its shutdown may still complete them.
  BatchOutcome out;
  auto b = MakeBatcher(o, rec.Fn());
  ASSERT_TRUE(b->Submit(Inputs({{0, 500}, {1, 10}}), absl::InfiniteFuture(), out.Fn()).ok());
  b->AwaitIdleForTesting();
  // The oversize item ran at once, alone; the small one waits for its delay.
  ASSERT_EQ(rec.batches().size(), 1u);
  EXPECT_EQ(rec.batches()[0], (std::vector<Seen>{{0, 500}}));
  EXPECT_EQ(out.calls(), 0);
  clock.Advance(absl::Milliseconds(10));
  const Batcher::Result& r = out.Wait();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)[0].output, 0);
  EXPECT_EQ((*r)[1].output, 10);
  EXPECT_EQ(rec.batches().size(), 2u);
}

TEST(DynamicBatcherTest, ExpiredRequestsAreDroppedBeforeCompute) {
  FakeClock clock;
  Recorder rec;
  metrics::MetricsRegistry registry;
  DynamicBatcherOptions o = FakeOptions(&clock);
  o.registry = &registry;
  // Declared before the batcher: its shutdown may still complete them.
  BatchOutcome late, patient;
  BatchOutcome never;
  auto b = MakeBatcher(o, rec.Fn());
  ASSERT_TRUE(
      b->Submit(Inputs({{1, 5}, {2, 5}}), clock.Now() + absl::Milliseconds(5), late.Fn()).ok());
  ASSERT_TRUE(b->Submit(Inputs({{3, 5}}), absl::InfiniteFuture(), patient.Fn()).ok());
  clock.Advance(absl::Milliseconds(5));
  // The worker wakes at the deadline, not only at the batch delay.
  EXPECT_EQ(late.Wait().status().code(), absl::StatusCode::kDeadlineExceeded);
  b->AwaitIdleForTesting();
  EXPECT_EQ(b->pending_items(), 1);
  EXPECT_TRUE(rec.batches().empty());
  clock.Advance(absl::Milliseconds(5));
  ASSERT_TRUE(patient.Wait().ok());
  ASSERT_EQ(rec.batches().size(), 1u);
  EXPECT_EQ(rec.batches()[0], (std::vector<Seen>{{3, 5}}));
  EXPECT_EQ(late.calls(), 1);

  // A deadline already past is refused at once.
  absl::StatusOr<RequestHandle> h = b->Submit(Inputs({{4, 5}}), clock.Now(), never.Fn());
  EXPECT_EQ(h.status().code(), absl::StatusCode::kDeadlineExceeded);
  auto rejected = registry.AddCounter("maskserve_requests_rejected_total", "", {"model", "reason"});
  ASSERT_TRUE(rejected.ok());
  EXPECT_EQ((*rejected)->WithLabels({"m", "deadline"})->Value(), 2);
  b->Shutdown();
  EXPECT_EQ(never.calls(), 0);
}

TEST(DynamicBatcherTest, CancelRemovesQueuedItemsAndReportsCancelled) {
  FakeClock clock;
  Recorder rec;
  metrics::MetricsRegistry registry;
  DynamicBatcherOptions o = FakeOptions(&clock);
  o.max_batch_size = 8;  // the four items must not fill a batch before Cancel
  o.registry = &registry;
  // Declared before the batcher: its shutdown may still complete them.
  BatchOutcome a, c;
  auto b = MakeBatcher(o, rec.Fn());
  absl::StatusOr<RequestHandle> ha =
      b->Submit(Inputs({{1, 5}, {2, 5}, {3, 5}}), absl::InfiniteFuture(), a.Fn());
  ASSERT_TRUE(ha.ok());
  ASSERT_TRUE(b->Submit(Inputs({{4, 5}}), absl::InfiniteFuture(), c.Fn()).ok());
  EXPECT_TRUE(b->Cancel(*ha));
  EXPECT_EQ(a.calls(), 1);  // on the cancelling thread, before Cancel returns
  EXPECT_EQ(a.Wait().status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(b->pending_items(), 1);
  EXPECT_FALSE(b->Cancel(*ha));
  clock.Advance(absl::Milliseconds(10));
  ASSERT_TRUE(c.Wait().ok());
  ASSERT_EQ(rec.batches().size(), 1u);
  EXPECT_EQ(rec.batches()[0], (std::vector<Seen>{{4, 5}}));
  EXPECT_EQ(a.calls(), 1);
  auto rejected = registry.AddCounter("maskserve_requests_rejected_total", "", {"model", "reason"});
  EXPECT_EQ((*rejected)->WithLabels({"m", "cancelled"})->Value(), 1);
}

TEST(DynamicBatcherTest, RefusesWithResourceExhaustedBeyondMaxQueueSize) {
  FakeClock clock;
  Recorder rec;
  metrics::MetricsRegistry registry;
  DynamicBatcherOptions o = FakeOptions(&clock);
  o.max_batch_size = 100;
  o.max_queue_size = 5;
  o.registry = &registry;
  // Declared before the batcher: its shutdown may still complete them.
  BatchOutcome out[3];
  BatchOutcome refused;
  auto b = MakeBatcher(o, rec.Fn());
  ASSERT_TRUE(
      b->Submit(Inputs({{1, 1}, {2, 1}, {3, 1}}), absl::InfiniteFuture(), out[0].Fn()).ok());
  absl::StatusOr<RequestHandle> full =
      b->Submit(Inputs({{4, 1}, {5, 1}, {6, 1}}), absl::InfiniteFuture(), refused.Fn());
  EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(full.status().message().find("queue is full"), std::string::npos) << full.status();
  EXPECT_NE(full.status().message().find("retry"), std::string::npos) << full.status();
  ASSERT_TRUE(b->Submit(Inputs({{4, 1}, {5, 1}}), absl::InfiniteFuture(), out[1].Fn()).ok());
  EXPECT_EQ(b->Submit(Inputs({{6, 1}}), absl::InfiniteFuture(), refused.Fn()).status().code(),
            absl::StatusCode::kResourceExhausted);
  absl::StatusOr<RequestHandle> huge =
      b->Submit(Inputs({{1, 1}, {2, 1}, {3, 1}, {4, 1}, {5, 1}, {6, 1}}), absl::InfiniteFuture(),
                refused.Fn());
  EXPECT_EQ(huge.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(huge.status().message().find("split"), std::string::npos) << huge.status();
  EXPECT_EQ(b->pending_items(), 5);
  auto rejected = registry.AddCounter("maskserve_requests_rejected_total", "", {"model", "reason"});
  EXPECT_EQ((*rejected)->WithLabels({"m", "queue_full"})->Value(), 3);
  // Space frees once the queue drains.
  clock.Advance(absl::Milliseconds(10));
  ASSERT_TRUE(out[0].Wait().ok());
  ASSERT_TRUE(out[1].Wait().ok());
  ASSERT_TRUE(b->Submit(Inputs({{6, 1}}), absl::InfiniteFuture(), out[2].Fn()).ok());
  b->Shutdown();
  EXPECT_TRUE(out[2].Wait().ok());
  EXPECT_EQ(refused.calls(), 0);
}

TEST(DynamicBatcherTest, ALargeRequestIsSplitAcrossBatchesAndReassembledInOrder) {
  FakeClock clock;
  Recorder rec;
  // Declared before the batcher: its shutdown may still complete them.
  BatchOutcome out;
  auto b = MakeBatcher(FakeOptions(&clock), rec.Fn());
  std::vector<std::pair<int, int64_t>> items;
  for (int i = 0; i < 10; ++i) items.push_back({i, 1 + (i * 7) % 5});
  ASSERT_TRUE(b->Submit(Inputs(items), absl::InfiniteFuture(), out.Fn()).ok());
  b->AwaitIdleForTesting();
  EXPECT_EQ(rec.batches().size(), 2u);  // two full batches of 4
  EXPECT_EQ(out.calls(), 0);            // two items still queued
  clock.Advance(absl::Milliseconds(10));
  const Batcher::Result& r = out.Wait();
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 10u);
  for (int i = 0; i < 10; ++i) EXPECT_EQ((*r)[i].output, 10 * i) << i;
  std::vector<std::vector<Seen>> batches = rec.batches();
  ASSERT_EQ(batches.size(), 3u);
  EXPECT_EQ(batches[0].size(), 4u);
  EXPECT_EQ(batches[1].size(), 4u);
  EXPECT_EQ(batches[2].size(), 2u);
  for (const std::vector<Seen>& batch : batches) {
    for (const Seen& item : batch) {
      EXPECT_EQ((*r)[item.id].timing.batch_size, static_cast<int>(batch.size())) << item.id;
    }
  }
  EXPECT_EQ(out.calls(), 1);
}

TEST(DynamicBatcherTest, LengthGroupingMakesUniformBatchesAndTheOldestGoesFirst) {
  // Oldest is long; short and long alternate.
  const std::vector<std::pair<int, int64_t>> mixed = {{0, 500}, {1, 8},   {2, 9},   {3, 510},
                                                      {4, 8},   {5, 505}, {6, 10},  {7, 500}};
  {
    FakeClock clock;
    Recorder rec;
    BatchOutcome out;
    DynamicBatcherOptions o = FakeOptions(&clock);
    o.max_batch_tokens = 100000;
    auto b = MakeBatcher(o, rec.Fn());
    ASSERT_TRUE(b->Submit(Inputs(mixed), absl::InfiniteFuture(), out.Fn()).ok());
    ASSERT_TRUE(out.Wait().ok());
    std::vector<std::vector<Seen>> batches = rec.batches();
    ASSERT_EQ(batches.size(), 2u);
    EXPECT_EQ(batches[0], (std::vector<Seen>{{0, 500}, {7, 500}, {5, 505}, {3, 510}}));
    EXPECT_EQ(batches[1], (std::vector<Seen>{{1, 8}, {4, 8}, {2, 9}, {6, 10}}));
  }
  {
    // Strict FIFO for contrast: the same queue gives mixed batches.
    FakeClock clock;
    Recorder rec;
    BatchOutcome out;
    DynamicBatcherOptions o = FakeOptions(&clock);
    o.max_batch_tokens = 100000;
    o.length_grouping_window = 0;
    auto b = MakeBatcher(o, rec.Fn());
    ASSERT_TRUE(b->Submit(Inputs(mixed), absl::InfiniteFuture(), out.Fn()).ok());
    ASSERT_TRUE(out.Wait().ok());
    std::vector<std::vector<Seen>> batches = rec.batches();
    ASSERT_EQ(batches.size(), 2u);
    EXPECT_EQ(batches[0], (std::vector<Seen>{{0, 500}, {1, 8}, {2, 9}, {3, 510}}));
  }
}

TEST(DynamicBatcherTest, AFloodOfSimilarRequestsDoesNotStarveAnOlderOne) {
  FakeClock clock;
  Recorder rec;
  Latch started, release;
  DynamicBatcherOptions o = FakeOptions(&clock);
  o.max_batch_tokens = 1000;
  // Declared before the batcher: its shutdown may still complete them.
  BatchOutcome blocker;
  BatchOutcome old;
  std::vector<std::unique_ptr<BatchOutcome>> flood;
  auto b = MakeBatcher(o, rec.Fn([&](absl::Span<Batcher::Item* const> items) {
    if (items[0]->input.id == -1) {
      started.Notify();
      release.Wait();
    }
  }));
  // An oversize blocker occupies the only worker so the queue fills up.
  ASSERT_TRUE(b->Submit(Inputs({{-1, 2000}}), absl::InfiniteFuture(), blocker.Fn()).ok());
  started.Wait();
  ASSERT_TRUE(b->Submit(Inputs({{1000, 300}}), absl::InfiniteFuture(), old.Fn()).ok());
  for (int i = 0; i < 40; ++i) {
    flood.push_back(std::make_unique<BatchOutcome>());
    ASSERT_TRUE(b->Submit(Inputs({{i, 10}}), absl::InfiniteFuture(), flood.back()->Fn()).ok());
  }
  release.Notify();
  ASSERT_TRUE(old.Wait().ok());
  std::vector<std::vector<Seen>> batches = rec.batches();
  ASSERT_GE(batches.size(), 2u);
  // Right after the blocker, the old request leads the next batch.
  EXPECT_EQ(batches[1][0], (Seen{1000, 300}));
  // 41 items in batches of 4 leave one waiting for its delay.
  b->AwaitIdleForTesting();
  clock.Advance(absl::Milliseconds(10));
  for (auto& f : flood) ASSERT_TRUE(f->Wait().ok());
}

TEST(DynamicBatcherTest, LengthGroupingDoesNotMakeAnItemMissItsDeadline) {
  FakeClock clock;
  Recorder rec;
  DynamicBatcherOptions o = FakeOptions(&clock);
  o.max_batch_size = 2;
  Latch entered, release;
  std::atomic<int> batches{0};
  // Declared before the batcher: its shutdown may still complete them.
  BatchOutcome warm, blocker, queued, urgent;
  auto b = MakeBatcher(o, rec.Fn([&](absl::Span<Batcher::Item* const>) {
    if (batches.fetch_add(1) == 1) {
      entered.Notify();
      release.Wait();
    }
    clock.Advance(absl::Milliseconds(100));  // every batch takes 100 ms
  }));
  ASSERT_TRUE(b->Submit(Inputs({{1, 10}, {2, 10}}), absl::InfiniteFuture(), warm.Fn()).ok());
  ASSERT_TRUE(warm.Wait().ok());
  ASSERT_TRUE(b->Submit(Inputs({{3, 10}, {4, 10}}), absl::InfiniteFuture(), blocker.Fn()).ok());
  entered.Wait();
  // Queued behind the running batch: three short items, then a long one
  // that must start within 250 ms, then more short ones. Grouping by length
  // alone would run {5,6} at +100 ms and {7,9} at +200 ms, and the long item
  // would expire at +250 ms; as it must start within two batches, it joins
  // the next batch.
  ASSERT_TRUE(b->Submit(Inputs({{5, 10}, {6, 10}, {7, 10}}), absl::InfiniteFuture(),
                        queued.Fn())
                  .ok());
  ASSERT_TRUE(b->Submit(Inputs({{8, 50}}), clock.Now() + absl::Milliseconds(250), urgent.Fn()).ok());
  std::vector<BatchOutcome> rest(2);
  ASSERT_TRUE(b->Submit(Inputs({{9, 10}}), absl::InfiniteFuture(), rest[0].Fn()).ok());
  ASSERT_TRUE(b->Submit(Inputs({{10, 10}}), absl::InfiniteFuture(), rest[1].Fn()).ok());
  release.Notify();
  EXPECT_TRUE(urgent.Wait().ok()) << urgent.Wait().status();
  EXPECT_TRUE(queued.Wait().ok());
  for (BatchOutcome& r : rest) EXPECT_TRUE(r.Wait().ok());
  std::vector<std::vector<Seen>> seen = rec.batches();
  ASSERT_GE(seen.size(), 3u);
  EXPECT_EQ(seen[2], (std::vector<Seen>{{5, 10}, {8, 50}}));
}

TEST(DynamicBatcherTest, WorkersSideBySideTakeEvenShares) {
  FakeClock clock;
  Recorder rec;
  DynamicBatcherOptions o = FakeOptions(&clock);
  o.max_batch_size = 8;
  o.max_queue_delay = absl::ZeroDuration();
  o.num_workers = 2;
  Latch entered, release;
  // Declared before the batcher: its shutdown may still complete them.
  BatchOutcome blocker, seven;
  auto b = MakeBatcher(o, rec.Fn([&](absl::Span<Batcher::Item* const> items) {
    if (items[0]->input.id == -1) {
      entered.Notify();
      release.Wait();
    }
  }));
  // One worker is busy with one item; seven arrive at once. The free worker
  // takes its share of the eight outstanding, four, not all seven.
  ASSERT_TRUE(b->Submit(Inputs({{-1, 10}}), absl::InfiniteFuture(), blocker.Fn()).ok());
  entered.Wait();
  ASSERT_TRUE(b->Submit(Inputs({{1, 10}, {2, 10}, {3, 10}, {4, 10}, {5, 10}, {6, 10}, {7, 10}}),
                        absl::InfiniteFuture(), seven.Fn())
                  .ok());
  // The second batch (4 items) runs while the blocker still holds the other
  // worker; then the rest.
  while (rec.batches().size() < 2) std::this_thread::yield();
  EXPECT_EQ(rec.batches()[1].size(), 4u);
  release.Notify();
  ASSERT_TRUE(seven.Wait().ok());
  ASSERT_TRUE(blocker.Wait().ok());
}

TEST(DynamicBatcherTest, OneModelsLoadDoesNotBlockAnother) {
  FakeClock clock;
  Recorder rec_a, rec_b;
  Latch started, release;
  DynamicBatcherOptions oa = FakeOptions(&clock);
  oa.model = "a";
  oa.max_batch_size = 1;
  DynamicBatcherOptions ob = oa;
  ob.model = "b";
  // Declared before the batcher: its shutdown may still complete them.
  BatchOutcome out_a, out_a2, out_b;
  auto a = MakeBatcher(oa, rec_a.Fn([&](auto) {
    started.Notify();
    release.Wait();
  }));
  auto b = MakeBatcher(ob, rec_b.Fn());
  ASSERT_TRUE(a->Submit(Inputs({{1, 5}}), absl::InfiniteFuture(), out_a.Fn()).ok());
  ASSERT_TRUE(a->Submit(Inputs({{2, 5}}), absl::InfiniteFuture(), out_a2.Fn()).ok());
  started.Wait();
  ASSERT_TRUE(b->Submit(Inputs({{3, 5}}), absl::InfiniteFuture(), out_b.Fn()).ok());
  // b completes while a's only worker is stuck and a still has work queued.
  ASSERT_TRUE(out_b.Wait().ok());
  EXPECT_EQ(out_a.calls(), 0);
  EXPECT_EQ(a->pending_items(), 1);
  release.Notify();
  EXPECT_TRUE(out_a.Wait().ok());
  EXPECT_TRUE(out_a2.Wait().ok());
}

TEST(DynamicBatcherTest, ShutdownRunsQueuedWorkThenRefusesNewRequests) {
  FakeClock clock;
  Recorder rec;
  DynamicBatcherOptions o = FakeOptions(&clock);
  o.max_queue_delay = absl::Hours(1);
  o.num_workers = 2;
  // Declared before the batcher: its shutdown may still complete them.
  BatchOutcome out[3];
  BatchOutcome late;
  auto b = MakeBatcher(o, rec.Fn());
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(b->Submit(Inputs({{i, 5}}), absl::InfiniteFuture(), out[i].Fn()).ok());
  }
  b->AwaitIdleForTesting();
  EXPECT_TRUE(rec.batches().empty());
  b->Shutdown();  // no clock advance: shutdown does not wait for the delay
  for (BatchOutcome& o : out) {
    EXPECT_EQ(o.calls(), 1);
    EXPECT_TRUE(o.Wait().ok());
  }
  EXPECT_EQ(b->Submit(Inputs({{9, 5}}), absl::InfiniteFuture(), late.Fn()).status().code(),
            absl::StatusCode::kUnavailable);
  b->Shutdown();  // idempotent
  EXPECT_EQ(late.calls(), 0);
}

TEST(DynamicBatcherTest, ErrorsFailOnlyTheRequestsTheyConcern) {
  FakeClock clock;
  DynamicBatcherOptions o = FakeOptions(&clock);
  o.max_batch_size = 3;
  // Declared before the batcher: its shutdown may still complete them.
  BatchOutcome bad, good;
  BatchOutcome alone;
  auto b = MakeBatcher(o, [](absl::Span<Batcher::Item* const> items) {
    for (Batcher::Item* item : items) {
      if (item->input.id == 13) item->status = absl::InvalidArgumentError("unlucky");
      item->output = item->input.id;
    }
    return items.size() == 1 ? absl::InternalError("engine failed") : absl::OkStatus();
  });
  ASSERT_TRUE(b->Submit(Inputs({{12, 5}, {13, 5}}), absl::InfiniteFuture(), bad.Fn()).ok());
  ASSERT_TRUE(b->Submit(Inputs({{14, 5}}), absl::InfiniteFuture(), good.Fn()).ok());
  EXPECT_EQ(bad.Wait().status().code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(good.Wait().ok());
  EXPECT_EQ((*good.Wait())[0].output, 14);
  // A batch-level error fails every request in the batch.
  ASSERT_TRUE(b->Submit(Inputs({{15, 5}}), absl::InfiniteFuture(), alone.Fn()).ok());
  clock.Advance(absl::Milliseconds(10));
  EXPECT_EQ(alone.Wait().status().code(), absl::StatusCode::kInternal);
  EXPECT_EQ(bad.calls(), 1);
}

const metrics::FamilySnapshot* FindFamily(const std::vector<metrics::FamilySnapshot>& fs,
                                          const std::string& name) {
  for (const auto& f : fs) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

TEST(DynamicBatcherTest, ExportsBatchingMetrics) {
  FakeClock clock;
  Recorder rec;
  metrics::MetricsRegistry registry;
  DynamicBatcherOptions o = FakeOptions(&clock);
  o.registry = &registry;
  // Declared before the batcher: its shutdown may still complete them.
  BatchOutcome out, queued;
  auto b = MakeBatcher(o, rec.Fn());
  // One batch of 4 with lengths 10,10,10,30: padding 1 - 60/120 = 0.5.
  ASSERT_TRUE(
      b->Submit(Inputs({{0, 10}, {1, 10}, {2, 10}, {3, 30}}), absl::InfiniteFuture(), out.Fn())
          .ok());
  ASSERT_TRUE(out.Wait().ok());
  ASSERT_TRUE(b->Submit(Inputs({{4, 1}, {5, 1}}), absl::InfiniteFuture(), queued.Fn()).ok());
  b->AwaitIdleForTesting();
  std::vector<metrics::FamilySnapshot> fs = registry.Collect();
  const auto* depth = FindFamily(fs, "maskserve_queue_depth");
  ASSERT_NE(depth, nullptr);
  EXPECT_EQ(depth->points.at(0).label_values, std::vector<std::string>{"m"});
  EXPECT_EQ(depth->points.at(0).value, 2);
  const auto* size = FindFamily(fs, "maskserve_batch_size");
  ASSERT_NE(size, nullptr);
  EXPECT_EQ(size->points.at(0).histogram.sum, 4);
  EXPECT_EQ(size->points.at(0).histogram.cumulative.back(), 1u);
  const auto* tokens = FindFamily(fs, "maskserve_batch_tokens");
  ASSERT_NE(tokens, nullptr);
  EXPECT_EQ(tokens->points.at(0).histogram.sum, 60);
  const auto* padding = FindFamily(fs, "maskserve_padding_ratio");
  ASSERT_NE(padding, nullptr);
  EXPECT_DOUBLE_EQ(padding->points.at(0).histogram.sum, 0.5);
  const auto* wait = FindFamily(fs, "maskserve_queue_wait_seconds");
  ASSERT_NE(wait, nullptr);
  EXPECT_EQ(wait->points.at(0).histogram.cumulative.back(), 4u);
  ASSERT_NE(FindFamily(fs, "maskserve_inference_seconds"), nullptr);
  const auto* total = FindFamily(fs, "maskserve_tokens_total");
  ASSERT_NE(total, nullptr);
  EXPECT_EQ(total->points.at(0).label_values, (std::vector<std::string>{"m", "input"}));
  EXPECT_EQ(total->points.at(0).value, 60);
  b->Shutdown();
  EXPECT_EQ(registry.AddGauge("maskserve_queue_depth", "", {"model"}).value()->WithLabels({"m"})
                ->Value(),
            0);
}

TEST(DynamicBatcherTest, CreateRejectsInvalidOptions) {
  FakeClock clock;
  Recorder rec;
  auto bad = [&](auto mutate) {
    DynamicBatcherOptions o = FakeOptions(&clock);
    mutate(o);
    return Batcher::Create(o, rec.Fn()).status().code();
  };
  EXPECT_EQ(bad([](auto& o) { o.max_batch_size = 0; }), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad([](auto& o) { o.max_batch_tokens = 0; }), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad([](auto& o) { o.max_queue_delay = -absl::Milliseconds(1); }),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad([](auto& o) { o.max_queue_size = 0; }), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad([](auto& o) { o.num_workers = 0; }), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Batcher::Create(FakeOptions(&clock), nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
  // Declared before the batcher: its shutdown may still complete them.
  BatchOutcome out;
  auto b = MakeBatcher(FakeOptions(&clock), rec.Fn());
  EXPECT_EQ(b->Submit({}, absl::InfiniteFuture(), out.Fn()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(b->Submit(Inputs({{1, -1}}), absl::InfiniteFuture(), out.Fn()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Many submitters on the real clock, with cancellations: every request
// completes exactly once, with its own outputs (or CANCELLED when Cancel won).
// Run under TSan too (MASKSERVE_TSAN=ON).
TEST(DynamicBatcherStressTest, EveryRequestCompletesExactlyOnceWithItsOwnResults) {
  DynamicBatcherOptions o;
  o.max_batch_size = 8;
  o.max_batch_tokens = 256;
  o.max_queue_delay = absl::Microseconds(200);
  o.max_queue_size = 100000;
  o.num_workers = 3;
  o.model = "stress";
  metrics::MetricsRegistry registry;
  o.registry = &registry;
  constexpr int kThreads = 6;
  constexpr int kRequests = 150;
  struct Tracked {
    std::vector<int> ids;
    BatchOutcome outcome;
    bool cancelled = false;
  };
  std::vector<std::unique_ptr<Tracked>> tracked(kThreads * kRequests);
  for (auto& t : tracked) t = std::make_unique<Tracked>();
  auto b = MakeBatcher(o, [](absl::Span<Batcher::Item* const> items) {
    for (Batcher::Item* item : items) item->output = item->input.id * 3 + 1;
    return absl::OkStatus();
  });
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(t);
      for (int r = 0; r < kRequests; ++r) {
        Tracked& tr = *tracked[t * kRequests + r];
        const int n = 1 + static_cast<int>(rng() % 5);
        std::vector<BatchInput<In>> inputs;
        for (int i = 0; i < n; ++i) {
          const int id = (t * kRequests + r) * 10 + i;
          tr.ids.push_back(id);
          inputs.push_back({In{id}, 1 + static_cast<int64_t>(rng() % 100)});
        }
        absl::StatusOr<RequestHandle> h =
            b->Submit(std::move(inputs), absl::InfiniteFuture(), tr.outcome.Fn());
        ASSERT_TRUE(h.ok()) << h.status();
        if (r % 7 == 3) tr.cancelled = b->Cancel(*h);
      }
    });
  }
  for (std::thread& th : threads) th.join();
  int cancelled = 0;
  for (auto& tr : tracked) {
    const Batcher::Result& r = tr->outcome.Wait();
    if (tr->cancelled) {
      ++cancelled;
      EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled);
      continue;
    }
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->size(), tr->ids.size());
    for (size_t i = 0; i < tr->ids.size(); ++i) EXPECT_EQ((*r)[i].output, tr->ids[i] * 3 + 1);
  }
  b->Shutdown();
  for (auto& tr : tracked) EXPECT_EQ(tr->outcome.calls(), 1);
  EXPECT_EQ(registry.AddCounter("maskserve_requests_rejected_total", "", {"model", "reason"})
                .value()
                ->WithLabels({"stress", "cancelled"})
                ->Value(),
            cancelled);
}

}  // namespace
}  // namespace maskserve::server

namespace maskserve::server {
namespace {

TEST(DynamicBatcherTest, ShedsARequestTheQueueWouldMakeLate) {
  FakeClock clock;
  Recorder rec;
  metrics::MetricsRegistry registry;
  DynamicBatcherOptions o = FakeOptions(&clock);
  o.max_batch_size = 1;
  o.shed_on_deadline = true;
  o.registry = &registry;
  Latch entered, release;
  std::atomic<int> batches{0};
  // Declared before the batcher: its shutdown may still complete them.
  BatchOutcome a, b, c, e, late_but_unmeasured;
  auto batcher = MakeBatcher(o, rec.Fn([&](absl::Span<Batcher::Item* const>) {
    if (batches.fetch_add(1) == 0) {
      clock.Advance(absl::Milliseconds(100));  // 10 tokens in 100 ms: 10 ms a token
      return;
    }
    entered.Notify();
    release.Wait();
  }));
  // No speed measured yet: nothing is shed, however tight the deadline.
  ASSERT_TRUE(batcher->Submit(Inputs({{1, 10}}), clock.Now() + absl::Milliseconds(1), a.Fn()).ok());
  ASSERT_TRUE(a.Wait().ok());
  ASSERT_TRUE(batcher->Submit(Inputs({{2, 10}}), absl::InfiniteFuture(), b.Fn()).ok());
  entered.Wait();  // 10 tokens running
  ASSERT_TRUE(batcher->Submit(Inputs({{3, 10}}), absl::InfiniteFuture(), c.Fn()).ok());  // queued
  // 20 tokens ahead + its own 10 at 10 ms each: done in 300 ms, more than
  // the half (deadline_headroom) of 550 ms it may take.
  absl::StatusOr<RequestHandle> shed =
      batcher->Submit(Inputs({{4, 10}}), clock.Now() + absl::Milliseconds(550),
                      late_but_unmeasured.Fn());
  ASSERT_FALSE(shed.ok());
  EXPECT_EQ(shed.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(shed.status().message().find("overloaded"), absl::string_view::npos)
      << shed.status();
  EXPECT_EQ(RetryAfterOf(shed.status()), absl::Milliseconds(200));
  // Before tokenising, only the 200 ms of work ahead is known: refused when
  // that alone is past half the time left (350 ms), not otherwise (550 ms).
  absl::Status early = batcher->CheckAdmission(clock.Now() + absl::Milliseconds(350));
  EXPECT_EQ(early.code(), absl::StatusCode::kResourceExhausted) << early;
  EXPECT_EQ(RetryAfterOf(early), absl::Milliseconds(200));
  EXPECT_TRUE(batcher->CheckAdmission(clock.Now() + absl::Milliseconds(550)).ok());
  EXPECT_EQ(batcher->CheckAdmission(clock.Now()).code(), absl::StatusCode::kDeadlineExceeded);
  ASSERT_TRUE(
      batcher->Submit(Inputs({{5, 10}}), clock.Now() + absl::Milliseconds(600), e.Fn()).ok());
  auto rejected = registry.AddCounter("maskserve_requests_rejected_total", "", {"model", "reason"});
  ASSERT_TRUE(rejected.ok());
  EXPECT_EQ((*rejected)->WithLabels({"m", "shed"})->Value(), 2);
  release.Notify();
  EXPECT_TRUE(b.Wait().ok());
  EXPECT_TRUE(c.Wait().ok());
  EXPECT_TRUE(e.Wait().ok());
  EXPECT_EQ(late_but_unmeasured.calls(), 0);
}

}  // namespace
}  // namespace maskserve::server
