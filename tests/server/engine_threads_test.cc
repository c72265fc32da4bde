#include "server/engine_threads.h"

#include <gtest/gtest.h>

#include <vector>

namespace maskserve::server {
namespace {

struct Case {
  int workers, intra_op_threads, cores;  // the inputs
  int embed_workers, embed_threads, engine_threads;  // the plan
};

void ExpectPlans(const std::vector<Case>& cases) {
  for (const Case& c : cases) {
    const EngineThreadPlan p = PlanEngineThreads(c.workers, c.intra_op_threads, c.cores);
    SCOPED_TRACE(::testing::Message() << "workers=" << c.workers << " intra=" << c.intra_op_threads
                                    << " cores=" << c.cores);
    EXPECT_EQ(p.embed_workers, c.embed_workers);
    EXPECT_EQ(p.embed_threads, c.embed_threads);
    EXPECT_EQ(p.engine_threads, c.engine_threads);
  }
}

TEST(EngineThreadsTest, AutomaticSplitsEmbeddingInTwoAndGivesGenerationEverything) {
  ExpectPlans({
      {0, 0, 2, 2, 1, 2},
      {0, 0, 16, 2, 8, 16},
      {0, 0, 3, 2, 1, 3},  // never more embedding threads than the budget
      {0, 0, 1, 1, 1, 1},
      {0, 0, 0, 1, 1, 1},  // an unknown budget counts as one core
  });
}

TEST(EngineThreadsTest, ExplicitWorkersAndThreadsApplyToBoth) {
  ExpectPlans({
      {4, 0, 8, 4, 2, 2},
      {1, 3, 8, 1, 3, 3},
      {0, 4, 8, 2, 4, 4},
  });
}

}  // namespace
}  // namespace maskserve::server
