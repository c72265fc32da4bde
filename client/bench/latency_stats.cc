#include "client/bench/latency_stats.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace maskserve::client::bench {

void LatencyStats::Merge(const LatencyStats& other) {
  latency_ms.insert(latency_ms.end(), other.latency_ms.begin(), other.latency_ms.end());
  ttft_ms.insert(ttft_ms.end(), other.ttft_ms.begin(), other.ttft_ms.end());
  server_queue_ms.insert(server_queue_ms.end(), other.server_queue_ms.begin(),
                         other.server_queue_ms.end());
  server_inference_ms.insert(server_inference_ms.end(), other.server_inference_ms.begin(),
                             other.server_inference_ms.end());
  for (const auto& [code, n] : other.errors) errors[code] += n;
  for (const auto& [code, message] : other.first_error) first_error.emplace(code, message);
  rejected_latency_ms.insert(rejected_latency_ms.end(), other.rejected_latency_ms.begin(),
                             other.rejected_latency_ms.end());
  for (const auto& [kind, n] : other.by_kind) by_kind[kind] += n;
  cancelled += other.cancelled;
  wrong += other.wrong;
  for (const std::string& w : other.wrong_examples) {
    if (wrong_examples.size() < 5) wrong_examples.push_back(w);
  }
  ok += other.ok;
  inputs += other.inputs;
  tokens += other.tokens;
  max_send_lag_ms = std::max(max_send_lag_ms, other.max_send_lag_ms);
}

int64_t LatencyStats::total_errors() const {
  int64_t n = 0;
  for (const auto& [code, count] : errors) n += count;
  return n;
}

Percentiles ComputePercentiles(std::vector<double>& samples) {
  Percentiles p;
  if (samples.empty()) return p;
  std::sort(samples.begin(), samples.end());
  const auto rank = [&](double q) {
    // Nearest rank: the smallest value with at least q of the sample <= it.
    const size_t k = static_cast<size_t>(std::ceil(q * samples.size()));
    return samples[std::min(samples.size() - 1, k == 0 ? 0 : k - 1)];
  };
  p.p50 = rank(0.50);
  p.p90 = rank(0.90);
  p.p99 = rank(0.99);
  p.max = samples.back();
  p.mean = std::accumulate(samples.begin(), samples.end(), 0.0) / samples.size();
  return p;
}

}  // namespace maskserve::client::bench
