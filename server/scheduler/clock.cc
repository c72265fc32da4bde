#include "server/scheduler/clock.h"

#include <algorithm>
#include <chrono>

namespace maskserve::server {
namespace {

// Longest single wait of RealClock: a deadline further away is waited for in
// steps (callers loop anyway), which keeps chrono conversions from overflowing.
constexpr absl::Duration kMaxWaitStep = absl::Hours(1);

// Locks two unique_locks as one, so condition_variable_any::wait releases
// both atomically with respect to notifiers and re-takes them in order.
class BothLocks {
 public:
  BothLocks(std::unique_lock<std::mutex>& first, std::unique_lock<std::mutex>& second)
      : first_(first), second_(second) {}
  void lock() {
    first_.lock();
    second_.lock();
  }
  void unlock() {
    second_.unlock();
    first_.unlock();
  }

 private:
  std::unique_lock<std::mutex>& first_;
  std::unique_lock<std::mutex>& second_;
};

}  // namespace

RealClock* RealClock::Get() {
  static RealClock* const clock = new RealClock;
  return clock;
}

absl::Time RealClock::Now() { return absl::Now(); }

void RealClock::WaitUntil(std::unique_lock<std::mutex>& lock, std::condition_variable_any& cv,
                          absl::Time /*seen*/, absl::Time deadline) {
  // Real time always moves on, so `seen` says nothing; the wait is bounded
  // by `deadline` alone.
  if (deadline == absl::InfiniteFuture()) {
    cv.wait(lock);
    return;
  }
  const absl::Duration left = deadline - absl::Now();
  if (left <= absl::ZeroDuration()) return;
  cv.wait_for(lock, absl::ToChronoNanoseconds(std::min(left, kMaxWaitStep)));
}

absl::Time FakeClock::Now() {
  std::lock_guard<std::mutex> lock(mu_);
  return now_;
}

void FakeClock::WaitUntil(std::unique_lock<std::mutex>& lock, std::condition_variable_any& cv,
                          absl::Time seen, absl::Time deadline) {
  std::unique_lock<std::mutex> clock_lock(mu_);
  // An Advance between the caller's Now() and here notified nobody.
  if (now_ >= deadline || now_ != seen) return;
  auto it = sleepers_.insert(sleepers_.end(), &cv);
  BothLocks both(lock, clock_lock);
  cv.wait(both);
  sleepers_.erase(it);
}

void FakeClock::Advance(absl::Duration d) {
  std::lock_guard<std::mutex> lock(mu_);
  if (d > absl::ZeroDuration()) now_ += d;
  for (std::condition_variable_any* cv : sleepers_) cv->notify_all();
}

int FakeClock::sleepers() {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(sleepers_.size());
}

}  // namespace maskserve::server
