// ContinuousBatcher with a FakeClock and the fake generative model. Steps are
// driven by hand (start_thread = false) so every assertion is about one
// exact step; one test runs the real scheduler thread. No sleeps.
#include "server/scheduler/continuous_batcher.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <condition_variable>
#include <map>
#include <mutex>

#include "server/metrics/registry.h"
#include "server/scheduler/clock.h"
#include "tests/util/fake_generation.h"

namespace maskserve::server {
namespace {

using ::maskserve::testing::FakeGenerativeModel;
using ::maskserve::testing::FakeModelOptions;
using ::maskserve::testing::FakeTokenizer;
using ::testing::HasSubstr;

// Bytes of `blocks` KV blocks of `block_size` tokens for the fake model.
int64_t PoolBytes(int64_t blocks, int block_size) {
  return FakeGenerativeModel::PoolOptions(blocks, block_size).total_bytes;
}

// What the callbacks of one request saw.
struct Outcome {
  std::string streamed;
  std::vector<int32_t> streamed_ids;
  int steps = 0;
  bool done = false;
  absl::Status status;
  GenerationResult result;
};

class ContinuousBatcherTest : public ::testing::Test {
 protected:
  void SetUp() override { model_ = std::make_shared<FakeGenerativeModel>(); }

  std::unique_ptr<ContinuousBatcher> MakeBatcher(int64_t blocks = 1024, int block_size = 4,
                                                 int max_step_tokens = 512,
                                                 int64_t max_queue_size = 64, bool thread = false,
                                                 const std::string& label = "fake") {
    ContinuousBatcherOptions o;
    o.model = label;
    o.kv_cache_bytes = PoolBytes(blocks, block_size);
    o.kv_block_size = block_size;
    o.max_step_tokens = max_step_tokens;
    o.max_queue_size = max_queue_size;
    o.clock = &clock_;
    o.registry = &registry_;
    o.start_thread = thread;
    auto b = ContinuousBatcher::Create(model_, o);
    EXPECT_TRUE(b.ok()) << b.status();
    return std::move(*b);
  }

  std::unique_ptr<engine::RequestDecoder> Decoder(
      std::vector<int32_t> prompt, int max_new,
      engine::DecodeStrategy strategy = engine::DecodeStrategy::kGreedy, int n = 1,
      uint64_t seed = 7) {
    engine::GenerationPrompt p;
    p.ids = std::move(prompt);
    p.mask.kind = engine::MaskKind::kCausal;
    p.prompt_tokens = static_cast<int>(p.ids.size());
    engine::DecodeOptions o;
    o.strategy = strategy;
    o.max_new_tokens = max_new;
    o.ignore_eos = true;
    o.seed = seed;
    if (strategy == engine::DecodeStrategy::kBeam) {
      o.beam_width = n;
    } else {
      o.num_return_sequences = n;
    }
    auto d = engine::RequestDecoder::Create(model_.get(), &tok_, std::move(p), std::move(o));
    EXPECT_TRUE(d.ok()) << d.status();
    return std::move(*d);
  }

  // Submits with callbacks recording into outcomes_[key].
  GenerationHandle Submit(ContinuousBatcher& b, const std::string& key,
                          std::unique_ptr<engine::RequestDecoder> d,
                          absl::Time deadline = absl::InfiniteFuture()) {
    GenerationCallbacks cb;
    cb.on_step = [this, key](const engine::StepOutput& out) {
      std::lock_guard<std::mutex> lock(mu_);
      Outcome& o = outcomes_[key];
      ++o.steps;
      for (const auto& d : out.deltas) {
        if (d.index == 0) {
          o.streamed += d.text;
          o.streamed_ids.insert(o.streamed_ids.end(), d.ids.begin(), d.ids.end());
        }
      }
    };
    cb.on_done = [this, key](absl::StatusOr<GenerationResult> r) {
      std::lock_guard<std::mutex> lock(mu_);
      Outcome& o = outcomes_[key];
      EXPECT_FALSE(o.done) << key << " finished twice";
      o.done = true;
      o.status = r.status();
      if (r.ok()) o.result = std::move(*r);
      cv_.notify_all();
    };
    auto h = b.Submit(std::move(d), deadline, std::move(cb));
    EXPECT_TRUE(h.ok()) << h.status();
    return h.ok() ? *h : GenerationHandle{};
  }

  Outcome Get(const std::string& key) {
    std::lock_guard<std::mutex> lock(mu_);
    return outcomes_[key];
  }

  void RunUntilIdle(ContinuousBatcher& b, int limit = 10000) {
    for (int i = 0; i < limit; ++i) {
      if (!b.RunStep()) return;
    }
    ADD_FAILURE() << "batcher never went idle";
  }

  // The sequences of `d` generated alone in a fresh batcher.
  std::vector<engine::GeneratedSequence> Alone(std::unique_ptr<engine::RequestDecoder> d) {
    auto b = MakeBatcher(1024, 4, 512, 64, false, "alone");
    Submit(*b, "__alone", std::move(d));
    RunUntilIdle(*b);
    Outcome o = Get("__alone");
    std::lock_guard<std::mutex> lock(mu_);
    outcomes_.erase("__alone");
    EXPECT_TRUE(o.status.ok()) << o.status;
    return o.result.sequences;
  }

  double MetricValue(const std::string& name, const std::vector<std::string>& labels) {
    for (const metrics::FamilySnapshot& f : registry_.Collect()) {
      if (f.name != name) continue;
      for (const metrics::MetricPoint& p : f.points) {
        if (p.label_values == labels) {
          return f.type == metrics::MetricType::kHistogram
                     ? static_cast<double>(p.histogram.cumulative.back())
                     : p.value;
        }
      }
    }
    return -1;
  }

  FakeClock clock_;
  metrics::MetricsRegistry registry_;
  std::shared_ptr<FakeGenerativeModel> model_;
  FakeTokenizer tok_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, Outcome> outcomes_;
};

TEST_F(ContinuousBatcherTest, NewRequestsJoinAtTheNextStep) {
  auto b = MakeBatcher();
  Submit(*b, "a", Decoder({5, 6, 7}, 10));
  ASSERT_TRUE(b->RunStep());  // a: prefill (3 tokens) + first token
  ASSERT_TRUE(b->RunStep());  // a: decode
  Submit(*b, "b", Decoder({8, 9, 10, 11}, 5));
  ASSERT_TRUE(b->RunStep());
  const auto steps = model_->steps();
  ASSERT_EQ(steps.size(), 3u);
  EXPECT_EQ(steps[0], (std::vector<int>{3}));
  EXPECT_EQ(steps[1], (std::vector<int>{1}));
  EXPECT_EQ(steps[2], (std::vector<int>{1, 4}));  // a's decode token and b's whole prompt
  RunUntilIdle(*b);
  // b joined and left early; a ran on; both equal their solo runs.
  EXPECT_EQ(Get("a").result.sequences[0].ids, Alone(Decoder({5, 6, 7}, 10))[0].ids);
  EXPECT_EQ(Get("b").result.sequences[0].ids, Alone(Decoder({8, 9, 10, 11}, 5))[0].ids);
  EXPECT_EQ(Get("a").streamed, Get("a").result.sequences[0].text);
  EXPECT_EQ(b->kv_stats().blocks_used, 0);
}

TEST_F(ContinuousBatcherTest, LongPrefillIsChunkedAndStreamsKeepGoing) {
  auto b = MakeBatcher(/*blocks=*/1024, /*block_size=*/4, /*max_step_tokens=*/8);
  Submit(*b, "a", Decoder({5, 6}, 30));
  ASSERT_TRUE(b->RunStep());
  std::vector<int32_t> long_prompt;
  for (int i = 0; i < 30; ++i) long_prompt.push_back(3 + i % 25);
  Submit(*b, "b", Decoder(long_prompt, 4));
  const int a_steps_before = Get("a").steps;
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(b->RunStep());
  // Every step: a's decode token first, then a 7-token chunk of b's prompt.
  const auto steps = model_->steps();
  for (size_t s = 1; s <= 4; ++s) EXPECT_EQ(steps[s], (std::vector<int>{1, 7})) << "step " << s;
  EXPECT_EQ(steps[5], (std::vector<int>{1, 2}));  // the last chunk (30 = 4 x 7 + 2)
  EXPECT_EQ(Get("a").steps, a_steps_before + 5);  // a got a token every step
  EXPECT_EQ(Get("b").steps, 1);                   // b's first token after its last chunk
  RunUntilIdle(*b);
  EXPECT_EQ(Get("b").result.sequences[0].ids, Alone(Decoder(long_prompt, 4))[0].ids);
  EXPECT_EQ(Get("a").result.sequences[0].ids, Alone(Decoder({5, 6}, 30))[0].ids);
}

TEST_F(ContinuousBatcherTest, AdmissionWaitsForFreeBlocks) {
  // 12 blocks of 4: a (prompt 20, +8) holds up to 7 blocks; b needs 7 to start.
  auto b = MakeBatcher(/*blocks=*/12, /*block_size=*/4);
  std::vector<int32_t> pa(20, 5), pb(26, 6);
  Submit(*b, "a", Decoder(pa, 8));
  ASSERT_TRUE(b->RunStep());
  Submit(*b, "b", Decoder(pb, 2));
  ASSERT_TRUE(b->RunStep());
  EXPECT_EQ(b->counts().running_requests, 1);
  EXPECT_EQ(b->counts().waiting_requests, 1);
  EXPECT_EQ(MetricValue("maskserve_generation_sequences", {"fake", "waiting"}), 1);
  RunUntilIdle(*b);
  EXPECT_TRUE(Get("a").status.ok());
  EXPECT_TRUE(Get("b").status.ok());
  EXPECT_EQ(Get("b").result.sequences[0].ids, Alone(Decoder(pb, 2))[0].ids);
  EXPECT_EQ(Get("b").result.preemptions, 0);
  EXPECT_EQ(MetricValue("maskserve_kv_cache_blocks_used", {"fake"}), 0);
  EXPECT_EQ(MetricValue("maskserve_kv_cache_blocks_free", {"fake"}), 12);
}

TEST_F(ContinuousBatcherTest, PreemptionAndResumeGiveIdenticalOutput) {
  // Three requests that fit at admission but outgrow the pool as they decode.
  auto b = MakeBatcher(/*blocks=*/20, /*block_size=*/4);
  struct Req {
    std::string key;
    std::vector<int32_t> prompt;
    engine::DecodeStrategy strategy;
    int n;
  };
  const std::vector<Req> reqs = {{"greedy", {5, 6, 7, 8}, engine::DecodeStrategy::kGreedy, 1},
                                 {"sample", {9, 10, 11}, engine::DecodeStrategy::kSample, 2},
                                 {"beam", {12, 13}, engine::DecodeStrategy::kBeam, 2}};
  for (const Req& r : reqs) Submit(*b, r.key, Decoder(r.prompt, 24, r.strategy, r.n));
  RunUntilIdle(*b);
  EXPECT_GT(MetricValue("maskserve_generation_preemptions_total", {"fake"}), 0);
  int preemptions = 0;
  for (const Req& r : reqs) {
    Outcome o = Get(r.key);
    ASSERT_TRUE(o.status.ok()) << r.key << ": " << o.status;
    preemptions += o.result.preemptions;
    const auto alone = Alone(Decoder(r.prompt, 24, r.strategy, r.n));
    ASSERT_EQ(o.result.sequences.size(), alone.size());
    for (size_t i = 0; i < alone.size(); ++i) {
      EXPECT_EQ(o.result.sequences[i].ids, alone[i].ids) << r.key << " " << i;
      EXPECT_EQ(o.result.sequences[i].text, alone[i].text) << r.key << " " << i;
    }
    if (r.strategy != engine::DecodeStrategy::kBeam) {
      EXPECT_EQ(o.streamed, o.result.sequences[0].text) << r.key;
      EXPECT_EQ(o.streamed_ids, o.result.sequences[0].ids) << r.key;
    }
  }
  EXPECT_GT(preemptions, 0);
  EXPECT_EQ(b->kv_stats().blocks_used, 0);
}

TEST_F(ContinuousBatcherTest, CancelFreesBlocksAtTheNextStep) {
  auto b = MakeBatcher();
  GenerationHandle h = Submit(*b, "a", Decoder(std::vector<int32_t>(30, 5), 50));
  Submit(*b, "b", Decoder({6, 7}, 3));
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(b->RunStep());
  const int64_t used = b->kv_stats().blocks_used;
  EXPECT_GE(used, 8);
  EXPECT_TRUE(b->Cancel(h));
  ASSERT_TRUE(b->RunStep());
  Outcome a = Get("a");
  EXPECT_TRUE(a.done);
  EXPECT_EQ(a.status.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(b->kv_stats().blocks_used, 0);  // b finished too; a's blocks went at once
  EXPECT_FALSE(b->Cancel(h));
  EXPECT_EQ(MetricValue("maskserve_requests_rejected_total", {"fake", "cancelled"}), 1);
}

TEST_F(ContinuousBatcherTest, DeadlinesEndWaitingAndRunningRequests) {
  auto b = MakeBatcher();
  const absl::Time t0 = clock_.Now();
  Submit(*b, "a", Decoder({5, 6, 7}, 100), t0 + absl::Seconds(1));
  Submit(*b, "b", Decoder({5, 6, 7}, 100), t0 + absl::Seconds(10));
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(b->RunStep());
  clock_.Advance(absl::Seconds(2));
  ASSERT_TRUE(b->RunStep());
  EXPECT_EQ(Get("a").status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_FALSE(Get("b").done);
  EXPECT_EQ(b->counts().running_requests, 1);
  auto late = b->Submit(Decoder({5}, 2), t0, {});
  EXPECT_EQ(late.status().code(), absl::StatusCode::kDeadlineExceeded);
}

TEST_F(ContinuousBatcherTest, BackpressureAndOversizedRequests) {
  auto b = MakeBatcher(/*blocks=*/16, /*block_size=*/4, 512, /*max_queue_size=*/2);
  Submit(*b, "a", Decoder({5}, 4));
  Submit(*b, "b", Decoder({5}, 4));
  auto full = b->Submit(Decoder({5}, 4), absl::InfiniteFuture(), {});
  EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(full.status().message()), HasSubstr("--max_queue_size"));
  EXPECT_EQ(MetricValue("maskserve_requests_rejected_total", {"fake", "queue_full"}), 1);
  ASSERT_TRUE(b->RunStep());  // both admitted: the queue has room again
  EXPECT_TRUE(b->Submit(Decoder({5}, 4), absl::InfiniteFuture(), {}).ok());
  // 4 sequences x (60 + 40 tokens) can never fit in 16 blocks.
  auto big = b->Submit(Decoder(std::vector<int32_t>(60, 5), 40, engine::DecodeStrategy::kSample, 4),
                       absl::InfiniteFuture(), {});
  EXPECT_EQ(big.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(big.status().message()), HasSubstr("--kv_cache_bytes"));
  RunUntilIdle(*b);
}

TEST_F(ContinuousBatcherTest, TimingAndMetrics) {
  auto b = MakeBatcher();
  // Every model step takes 10 ms of fake time.
  model_->SetHook(
      [this](absl::Span<const engine::StepSequence>) { clock_.Advance(absl::Milliseconds(10)); });
  Submit(*b, "a", Decoder({5, 6, 7}, 5));
  clock_.Advance(absl::Milliseconds(40));  // queued before the first step
  RunUntilIdle(*b);
  model_->SetHook(nullptr);
  const GenerationResult r = Get("a").result;
  EXPECT_EQ(r.times.queue, absl::Milliseconds(40));
  EXPECT_EQ(r.times.prefill, absl::Milliseconds(10));
  EXPECT_EQ(r.times.first_token, absl::Milliseconds(50));
  EXPECT_EQ(r.times.decode, absl::Milliseconds(40));
  EXPECT_EQ(r.times.total, absl::Milliseconds(90));
  EXPECT_EQ(r.prompt_tokens, 3);
  EXPECT_EQ(r.completion_tokens, 5);
  EXPECT_EQ(MetricValue("maskserve_tokens_total", {"fake", "prompt"}), 3);
  EXPECT_EQ(MetricValue("maskserve_tokens_total", {"fake", "generated"}), 5);
  EXPECT_EQ(MetricValue("maskserve_time_to_first_token_seconds", {"fake"}), 1);
  EXPECT_EQ(MetricValue("maskserve_generation_step_seconds", {"fake"}), 5);
  EXPECT_EQ(MetricValue("maskserve_generation_step_batch_size", {"fake"}), 5);
  EXPECT_EQ(MetricValue("maskserve_generation_sequences", {"fake", "running"}), 0);
}

TEST_F(ContinuousBatcherTest, SchedulerThreadBatchesConcurrentRequests) {
  auto b = MakeBatcher(1024, 4, 512, 64, /*thread=*/true);
  // Hold the first step until every request is queued, so they share steps.
  std::mutex gate_mu;
  std::condition_variable gate_cv;
  bool open = false;
  model_->SetHook([&](absl::Span<const engine::StepSequence>) {
    std::unique_lock<std::mutex> lock(gate_mu);
    gate_cv.wait(lock, [&] { return open; });
  });
  for (int i = 0; i < 8; ++i) {
    Submit(*b, absl::StrCat("r", i),
           Decoder({static_cast<int32_t>(4 + i), 5, 6}, 12, engine::DecodeStrategy::kSample, 1,
                   100 + i));
  }
  {
    std::lock_guard<std::mutex> lock(gate_mu);
    open = true;
  }
  gate_cv.notify_all();
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] {
      int n = 0;
      for (auto& [k, o] : outcomes_) n += o.done ? 1 : 0;
      return n == 8;
    });
  }
  b->AwaitIdleForTesting();
  model_->SetHook(nullptr);
  size_t widest = 0;
  for (const auto& s : model_->steps()) widest = std::max(widest, s.size());
  EXPECT_GE(widest, 7u);  // the first step may have started with one request only
  for (int i = 0; i < 8; ++i) {
    Outcome o = Get(absl::StrCat("r", i));
    ASSERT_TRUE(o.status.ok()) << o.status;
    EXPECT_EQ(o.result.sequences[0].ids,
              Alone(Decoder({static_cast<int32_t>(4 + i), 5, 6}, 12,
                            engine::DecodeStrategy::kSample, 1, 100 + i))[0]
                  .ids);
  }
  EXPECT_EQ(b->kv_stats().blocks_used, 0);
}

TEST_F(ContinuousBatcherTest, ShutdownEndsQueuedAndRunningRequests) {
  auto b = MakeBatcher();
  Submit(*b, "a", Decoder({5, 6}, 50));
  ASSERT_TRUE(b->RunStep());
  Submit(*b, "b", Decoder({5, 6}, 50));
  b->Shutdown();
  EXPECT_EQ(Get("a").status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(Get("b").status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(b->kv_stats().blocks_used, 0);
  auto after = b->Submit(Decoder({5}, 2), absl::InfiniteFuture(), {});
  EXPECT_EQ(after.status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace maskserve::server
