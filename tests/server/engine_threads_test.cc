#include "server/engine_threads.h"

#include <gtest/gtest.h>

namespace maskserve::server {
namespace {

TEST(EngineThreadsTest, AutomaticSplitsEmbeddingInTwoAndGivesGenerationEverything) {
  const EngineThreadPlan two = PlanEngineThreads(0, 0, 2);
  EXPECT_EQ(two.embed_workers, 2);
  EXPECT_EQ(two.embed_threads, 1);
  EXPECT_EQ(two.engine_threads, 2);
  const EngineThreadPlan sixteen = PlanEngineThreads(0, 0, 16);
  EXPECT_EQ(sixteen.embed_workers, 2);
  EXPECT_EQ(sixteen.embed_threads, 8);
  EXPECT_EQ(sixteen.engine_threads, 16);
  const EngineThreadPlan odd = PlanEngineThreads(0, 0, 3);
  EXPECT_EQ(odd.embed_workers * odd.embed_threads, 2);  // never more than the budget
  const EngineThreadPlan one = PlanEngineThreads(0, 0, 1);
  EXPECT_EQ(one.embed_workers, 1);
  EXPECT_EQ(one.embed_threads, 1);
  EXPECT_EQ(one.engine_threads, 1);
  const EngineThreadPlan unknown = PlanEngineThreads(0, 0, 0);
  EXPECT_EQ(unknown.embed_workers, 1);
  EXPECT_EQ(unknown.engine_threads, 1);
}

TEST(EngineThreadsTest, ExplicitWorkersAndThreadsApplyToBoth) {
  const EngineThreadPlan w = PlanEngineThreads(4, 0, 8);
  EXPECT_EQ(w.embed_workers, 4);
  EXPECT_EQ(w.embed_threads, 2);
  EXPECT_EQ(w.engine_threads, 2);
  const EngineThreadPlan wt = PlanEngineThreads(1, 3, 8);
  EXPECT_EQ(wt.embed_workers, 1);
  EXPECT_EQ(wt.embed_threads, 3);
  EXPECT_EQ(wt.engine_threads, 3);
  const EngineThreadPlan t = PlanEngineThreads(0, 4, 8);
  EXPECT_EQ(t.embed_workers, 2);
  EXPECT_EQ(t.embed_threads, 4);
  EXPECT_EQ(t.engine_threads, 4);
}

}  // namespace
}  // namespace maskserve::server
