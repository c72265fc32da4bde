// When a callback reactor may delete itself. gRPC calls OnDone once the call
// is finished, but the pool task that submitted the call's work to a batcher
// can still be unwinding then (the batcher's completion may Finish the call
// from another thread before Submit's caller has stored the handle it
// returned, or while it still holds the reactor's mutex). So a reactor is
// deleted by whoever lets go of it last: OnDone, or one of the pool tasks or
// batcher callbacks working on it.
#pragma once

#include <atomic>
#include <utility>

#include "absl/status/status.h"

namespace maskserve::server {

class ReactorLifetime {
 public:
  // One more holder; the reactor must still be alive (the call not yet finished).
  void Acquire() { refs_.fetch_add(1, std::memory_order_relaxed); }
  // Returns true for the holder that must delete the reactor. OnDone calls it.
  bool Release() { return refs_.fetch_sub(1, std::memory_order_acq_rel) == 1; }

  // Takes one more holder and returns `fn` wrapped to let go of it after
  // running (deleting `reactor`, whose member this is, if it was the last).
  // The wrapper must run exactly once, or the caller Release()s instead.
  template <typename Reactor, typename Fn>
  auto Holding(Reactor* reactor, Fn fn) {
    Acquire();
    return [this, reactor, fn = std::move(fn)](auto&&... args) mutable {
      fn(std::forward<decltype(args)>(args)...);
      if (Release()) delete reactor;
    };
  }

  // Runs `fn` on `pool` as a holder of `reactor`; the pool's refusal is
  // returned with the holder given back (OnDone still holds the reactor).
  template <typename Pool, typename Reactor, typename Fn>
  absl::Status SubmitHolding(Pool* pool, Reactor* reactor, Fn fn) {
    absl::Status queued = pool->Submit(Holding(reactor, std::move(fn)));
    if (!queued.ok()) Release();
    return queued;
  }

 private:
  // OnDone's hold, from the start.
  std::atomic<int> refs_{1};
};

}  // namespace maskserve::server
