// Per-principal concurrency and rate limits. A principal is a token name
// (authentication on) or a client address (off). Each call takes a Permit
// when it starts and gives it back when it ends; a call over a limit is
// refused with RESOURCE_EXHAUSTED carrying a retry hint (server/retry_hint.h):
//
//   concurrency  more than max_concurrent calls in flight; hint =
//                Options::concurrency_retry_hint (a slot frees when any of
//                the principal's calls ends)
//   rate         a token bucket of `burst` calls refilled at `rps` calls/s is
//                empty; hint = when the next call's token arrives
//
// Time comes from a Clock (server/scheduler/clock.h), so tests need no
// sleeps. Idle principals (nothing in flight, bucket full) are forgotten
// when the table grows, so a scan of many client addresses cannot grow it
// without bound.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/auth/token_store.h"
#include "server/metrics/registry.h"
#include "server/scheduler/clock.h"

namespace maskserve::server {

struct CallLimiterOptions {
  // Time source; nullptr = RealClock::Get(). Must outlive the limiter.
  Clock* clock = nullptr;
  // Retry hint of a call refused by the concurrency limit.
  absl::Duration concurrency_retry_hint = absl::Milliseconds(100);
  // Table size above which idle principals are dropped.
  size_t prune_threshold = 4096;
  // maskserve_rate_limited_total{principal,limit}; nullptr = no metrics.
  metrics::MetricsRegistry* registry = nullptr;
};

class CallLimiter {
 public:
  // A held concurrency slot; returns it when destroyed. Move-only.
  class Permit {
   public:
    Permit() = default;
    Permit(Permit&& other) noexcept { *this = std::move(other); }
    Permit& operator=(Permit&& other) noexcept;
    ~Permit() { Release(); }
    void Release();

   private:
    friend class CallLimiter;
    CallLimiter* limiter_ = nullptr;
    std::string key_;
  };

  static absl::StatusOr<std::unique_ptr<CallLimiter>> Create(const CallLimiterOptions& options);

  // Admits one call of principal `key` under `limits`. `display` names the
  // principal in the error message, `label` in the metric (token names;
  // "peer" for client addresses, which would be unbounded label values).
  absl::StatusOr<Permit> Acquire(const std::string& key, const std::string& display,
                                 const std::string& label, const CallLimits& limits);

  // Principals tracked now (tests).
  size_t tracked() const;
  // Calls in flight of `key` (tests).
  int inflight(const std::string& key) const;

 private:
  struct State {
    int inflight = 0;
    double tokens = 0;
    double burst = 0;
    double rps = 0;
    absl::Time refilled;
  };
  explicit CallLimiter(const CallLimiterOptions& options);
  void ReleaseKey(const std::string& key);
  void CountRefusal(const std::string& label, const char* limit);
  void PruneLocked(absl::Time now);

  const CallLimiterOptions options_;
  Clock* const clock_;
  metrics::CounterFamily* refused_ = nullptr;
  mutable std::mutex mu_;
  std::unordered_map<std::string, State> states_;  // guarded by mu_
};

}  // namespace maskserve::server
