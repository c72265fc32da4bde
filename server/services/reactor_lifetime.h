// When a callback reactor may delete itself. gRPC calls OnDone once the call
// is finished, but the pool task that submitted the call's work to a batcher
// can still be unwinding then (the batcher's completion may Finish the call
// from another thread before Submit's caller has stored the handle it
// returned, or while it still holds the reactor's mutex). So a reactor is
// deleted by whoever lets go of it last: OnDone, or one of the pool tasks or
// batcher callbacks working on it.
#pragma once

#include <atomic>

namespace maskserve::server {

class ReactorLifetime {
 public:
  // `holders`: OnDone plus the pool tasks already planned (the default: one).
  explicit ReactorLifetime(int holders = 2) : refs_(holders) {}

  // One more holder, before submitting another pool task that touches the
  // reactor; the reactor must still be alive (the call not yet finished).
  void Acquire() { refs_.fetch_add(1, std::memory_order_relaxed); }
  // Returns true for the holder that must delete the reactor.
  bool Release() { return refs_.fetch_sub(1, std::memory_order_acq_rel) == 1; }

 private:
  std::atomic<int> refs_;
};

}  // namespace maskserve::server
