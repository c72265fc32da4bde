#include "server/engine_threads.h"

#include <algorithm>

namespace maskserve::server {

EngineThreadPlan PlanEngineThreads(int workers, int intra_op_threads, int cores) {
  cores = std::max(1, cores);
  EngineThreadPlan plan;
  if (workers > 0) {
    const int threads = intra_op_threads > 0 ? intra_op_threads : std::max(1, cores / workers);
    plan.engine_threads = threads;
    plan.embed_workers = workers;
    plan.embed_threads = threads;
    return plan;
  }
  plan.embed_workers = cores >= 2 ? 2 : 1;
  plan.embed_threads =
      intra_op_threads > 0 ? intra_op_threads : std::max(1, cores / plan.embed_workers);
  plan.engine_threads = intra_op_threads > 0 ? intra_op_threads : cores;
  return plan;
}

}  // namespace maskserve::server
