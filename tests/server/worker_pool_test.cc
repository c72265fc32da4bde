#include "server/scheduler/worker_pool.h"

#include <gtest/gtest.h>

#include <atomic>

#include "absl/synchronization/notification.h"

namespace maskserve::server {
namespace {

TEST(WorkerPoolTest, RunsEveryTaskBeforeDestruction) {
  std::atomic<int> done{0};
  {
    auto pool = WorkerPool::Create({.num_threads = 3, .name = "t"});
    ASSERT_TRUE(pool.ok());
    for (int i = 0; i < 1000; ++i) {
      ASSERT_TRUE((*pool)->Submit([&] { done.fetch_add(1); }).ok());
    }
  }
  EXPECT_EQ(done.load(), 1000);
}

TEST(WorkerPoolTest, BoundedQueueRejectsWithResourceExhausted) {
  absl::Notification block, started;
  auto pool = WorkerPool::Create({.num_threads = 1, .name = "t", .max_queued = 2});
  ASSERT_TRUE(pool.ok());
  ASSERT_TRUE((*pool)->Submit([&] {
                started.Notify();
                block.WaitForNotification();
              }).ok());
  started.WaitForNotification();
  EXPECT_TRUE((*pool)->Submit([] {}).ok());
  EXPECT_TRUE((*pool)->Submit([] {}).ok());
  absl::Status s = (*pool)->Submit([] {});
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ((*pool)->queued(), 2u);
  block.Notify();
}

TEST(WorkerPoolTest, RejectsZeroThreads) {
  EXPECT_FALSE(WorkerPool::Create({.num_threads = 0}).ok());
}

}  // namespace
}  // namespace maskserve::server
