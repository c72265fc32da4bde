#include "server/auth/call_limiter.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/retry_hint.h"

namespace maskserve::server {

CallLimiter::Permit& CallLimiter::Permit::operator=(Permit&& other) noexcept {
  if (this != &other) {
    Release();
    limiter_ = other.limiter_;
    key_ = std::move(other.key_);
    other.limiter_ = nullptr;
  }
  return *this;
}

void CallLimiter::Permit::Release() {
  if (limiter_ == nullptr) return;
  limiter_->ReleaseKey(key_);
  limiter_ = nullptr;
}

CallLimiter::CallLimiter(const CallLimiterOptions& options)
    : options_(options), clock_(options.clock != nullptr ? options.clock : RealClock::Get()) {}

absl::StatusOr<std::unique_ptr<CallLimiter>> CallLimiter::Create(
    const CallLimiterOptions& options) {
  if (options.concurrency_retry_hint < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("CallLimiterOptions.concurrency_retry_hint must be >= 0");
  }
  std::unique_ptr<CallLimiter> l(new CallLimiter(options));
  if (options.registry != nullptr) {
    absl::StatusOr<metrics::CounterFamily*> f = options.registry->AddCounter(
        "maskserve_rate_limited_total",
        "Calls refused with RESOURCE_EXHAUSTED by a per-principal limit (limit: rate or "
        "concurrency; principal: the token name, or peer without authentication).",
        {"principal", "limit"});
    if (!f.ok()) return f.status();
    l->refused_ = *f;
  }
  return l;
}

void CallLimiter::CountRefusal(const std::string& label, const char* limit) {
  if (refused_ != nullptr) refused_->WithLabels({label, limit})->Inc();
}

void CallLimiter::PruneLocked(absl::Time now) {
  if (states_.size() < options_.prune_threshold) return;
  for (auto it = states_.begin(); it != states_.end();) {
    const State& s = it->second;
    // Full bucket (or no rate limit) and nothing in flight: a fresh entry is
    // the same thing, so it can go.
    const bool full =
        s.rps <= 0 || s.tokens + absl::ToDoubleSeconds(now - s.refilled) * s.rps >= s.burst;
    if (s.inflight == 0 && full) {
      it = states_.erase(it);
    } else {
      ++it;
    }
  }
}

absl::StatusOr<CallLimiter::Permit> CallLimiter::Acquire(const std::string& key,
                                                         const std::string& display,
                                                         const std::string& label,
                                                         const CallLimits& limits) {
  Permit permit;
  if (limits.max_concurrent <= 0 && limits.rps <= 0) return permit;
  std::lock_guard<std::mutex> lock(mu_);
  const absl::Time now = clock_->Now();
  auto it = states_.find(key);
  if (it == states_.end()) {
    PruneLocked(now);
    it = states_.emplace(key, State{}).first;
    const double burst = limits.burst > 0 ? limits.burst : std::max(1.0, limits.rps);
    it->second.tokens = burst;
    it->second.burst = burst;
    it->second.refilled = now;
  }
  State& s = it->second;
  if (limits.max_concurrent > 0 && s.inflight >= limits.max_concurrent) {
    CountRefusal(label, "concurrency");
    return WithRetryAfter(
        absl::ResourceExhaustedError(absl::StrCat(
            "'", display, "' has ", s.inflight, " calls in flight, its limit (max_concurrent) is ",
            limits.max_concurrent, "; retry when one has finished")),
        options_.concurrency_retry_hint);
  }
  if (limits.rps > 0) {
    const double burst = limits.burst > 0 ? limits.burst : std::max(1.0, limits.rps);
    s.burst = burst;
    s.rps = limits.rps;
    const double elapsed = std::max(0.0, absl::ToDoubleSeconds(now - s.refilled));
    s.tokens = std::min(burst, s.tokens + elapsed * limits.rps);
    s.refilled = now;
    if (s.tokens < 1.0) {
      CountRefusal(label, "rate");
      const absl::Duration wait = absl::Seconds((1.0 - s.tokens) / limits.rps);
      return WithRetryAfter(
          absl::ResourceExhaustedError(absl::StrFormat(
              "'%s' is over its rate limit of %g calls/s (burst %g); retry after %d ms",
              display, limits.rps, burst,
              static_cast<int64_t>(std::ceil(absl::ToDoubleMilliseconds(wait))))),
          wait);
    }
    s.tokens -= 1.0;
  } else {
    s.rps = 0;
  }
  ++s.inflight;
  permit.limiter_ = this;
  permit.key_ = key;
  return permit;
}

void CallLimiter::ReleaseKey(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = states_.find(key);
  if (it != states_.end() && it->second.inflight > 0) --it->second.inflight;
}

size_t CallLimiter::tracked() const {
  std::lock_guard<std::mutex> lock(mu_);
  return states_.size();
}

int CallLimiter::inflight(const std::string& key) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = states_.find(key);
  return it == states_.end() ? 0 : it->second.inflight;
}

}  // namespace maskserve::server
