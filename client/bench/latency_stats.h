// Per-run measurements of the load generator: latency samples, error counts
// by status code and throughput counters, merged from all worker threads
// (each worker fills its own LatencyStats, so recording takes no lock).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace maskserve::client::bench {

struct LatencyStats {
  // Latency of every successful measured request, milliseconds.
  std::vector<double> latency_ms;
  // Time to first streamed message (stream workload only), milliseconds.
  std::vector<double> ttft_ms;
  // Embed: server-reported queue wait and batch compute per request,
  // milliseconds; they show what batching costs and saves (a request's
  // latency is about queue wait + compute of the batch it joined).
  std::vector<double> server_queue_ms;
  std::vector<double> server_inference_ms;
  // Failed measured requests by status code.
  std::map<absl::StatusCode, int64_t> errors;
  // The first message seen for each failing status code: what a count alone
  // cannot say (which limit refused, why a connection failed).
  std::map<absl::StatusCode, std::string> first_error;
  // Latency of measured requests refused with RESOURCE_EXHAUSTED (load
  // shedding: how fast the server says no), milliseconds.
  std::vector<double> rejected_latency_ms;
  // Measured requests by kind (RequestKindName), whatever their outcome.
  std::map<std::string, int64_t> by_kind;
  // Cancel requests the client cancelled as intended (counted in ok).
  int64_t cancelled = 0;
  // OK answers that differed from their reference (verification), and the
  // first few reasons.
  int64_t wrong = 0;
  std::vector<std::string> wrong_examples;
  // Successful measured requests.
  int64_t ok = 0;
  // Texts embedded / prompts generated over successful requests.
  int64_t inputs = 0;
  // Generated tokens over successful requests.
  int64_t tokens = 0;
  // Open loop: the largest delay between a request's scheduled time and
  // its actual send time (large values mean the client was the bottleneck).
  double max_send_lag_ms = 0;

  void Merge(const LatencyStats& other);
  int64_t total_errors() const;
};

// Order statistics of a sample, milliseconds.
struct Percentiles {
  double p50 = 0, p90 = 0, p99 = 0, max = 0, mean = 0;
};

// Nearest-rank percentiles; all zero for an empty sample. Sorts `samples`.
Percentiles ComputePercentiles(std::vector<double>& samples);

}  // namespace maskserve::client::bench
