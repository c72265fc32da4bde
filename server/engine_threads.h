// How the engine's compute threads split the process CPU budget.
//
// Embedding batches run on a pool of batching workers per model; generation
// runs on one scheduler thread per model. Two embedding workers, each with
// half the cores, keep the CPU busy while the other worker's batch is being
// formed, answered and refilled (gRPC, tokenisation): on the 2-vCPU
// reference machine 2 x 1 thread serves ~1.5x the requests of 1 x 2 threads
// at 32 concurrent clients, with a lower tail (bench/README.md,
// batching_bench). Generation keeps every core: its decode steps are short
// and one wide team serves them best.
#pragma once

namespace maskserve::server {

struct EngineThreadPlan {
  // OpenMP threads of engine calls outside the embedding workers (generation).
  int engine_threads = 1;
  // Embedding batching workers per model.
  int embed_workers = 1;
  // OpenMP threads each embedding worker computes with.
  int embed_threads = 1;
};

// `workers` / `intra_op_threads`: the flags (0 = automatic); `cores`: the
// usable CPU budget. Explicit --workers keeps the old meaning: that many
// workers of --intra_op_threads (default cores / workers) threads, for
// embedding and generation alike.
EngineThreadPlan PlanEngineThreads(int workers, int intra_op_threads, int cores);

}  // namespace maskserve::server
