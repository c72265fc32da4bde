// Time source for the schedulers, injectable so tests drive time by hand.
// The batcher never sleeps directly: it asks its Clock to block on a condition
// variable "until notified or the deadline passes", so a FakeClock can wake
// it by advancing time and unit tests need no real sleeps.
//
// std::mutex / std::condition_variable_any rather than absl::Mutex: Debian's
// Abseil is not built with TSan, so TSan could not see absl's synchronisation.
#pragma once

#include <condition_variable>
#include <list>
#include <mutex>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace maskserve::server {

class Clock {
 public:
  virtual ~Clock() = default;

  virtual absl::Time Now() = 0;

  // With `lock` held on entry (and again on return): blocks on `cv` until it
  // is notified, Now() reaches `deadline` (absl::InfiniteFuture() = never), or
  // spuriously. Callers re-check their condition in a loop. Returns at once
  // when the deadline has passed or time has moved on since `seen`, the
  // Now() the caller based its decision to wait on.
  virtual void WaitUntil(std::unique_lock<std::mutex>& lock, std::condition_variable_any& cv,
                         absl::Time seen, absl::Time deadline) = 0;
};

// Wall time (absl::Now()); waits use the steady clock for their duration.
class RealClock final : public Clock {
 public:
  // The process-wide instance; never destroyed.
  static RealClock* Get();

  absl::Time Now() override;
  void WaitUntil(std::unique_lock<std::mutex>& lock, std::condition_variable_any& cv,
                 absl::Time seen, absl::Time deadline) override;
};

// Time that moves only when a test calls Advance(). Thread-safe.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(absl::Time start = absl::UnixEpoch() + absl::Hours(1)) : now_(start) {}

  absl::Time Now() override;
  void WaitUntil(std::unique_lock<std::mutex>& lock, std::condition_variable_any& cv,
                 absl::Time seen, absl::Time deadline) override;

  // Moves time forward by `d` (>= 0) and wakes every thread blocked in
  // WaitUntil, which then re-checks its condition against the new time.
  void Advance(absl::Duration d);

  // Threads blocked in WaitUntil right now.
  int sleepers();

 private:
  // Taken after a caller's own mutex (WaitUntil is entered holding it) and
  // never before one, so the order is always caller mutex -> mu_.
  std::mutex mu_;
  absl::Time now_;  // guarded by mu_
  // Condition variables of the threads inside WaitUntil; guarded by mu_.
  // Advance notifies them while holding mu_, and a sleeper holds mu_ from its
  // deadline check until cv releases it, so no wake-up is lost between the
  // two; a sleeper removes itself under mu_, so Advance never touches a cv
  // whose owner has gone.
  std::list<std::condition_variable_any*> sleepers_;
};

}  // namespace maskserve::server
