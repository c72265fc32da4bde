// Who may call what, and how often: bearer-token authentication, scopes and
// per-principal limits, decided once per call by the request interceptor
// (server/request_interceptor.h) before any handler work.
//
//   method                                        needs
//   maskserve.v1.Models/*                         any valid token
//   maskserve.v1.Embedding/Embed, GetWhitening,   embed
//     ListWhitening
//   maskserve.v1.Embedding/Tokenize, Detokenize   embed or generate
//   maskserve.v1.Embedding/FitWhitening,          admin
//     ImportWhitening, DeleteWhitening
//   maskserve.v1.Generation/*                     generate
//   grpc.health.v1.Health/*                       nothing with open_health, else any valid token
//   grpc.reflection.*                             nothing with open_reflection, else any valid token
//   anything else                                 any valid token
//
// Without a tokens file every call is admitted (authentication off) and the
// limits apply per client address instead of per token. Limits (server/auth/
// call_limiter.h) apply to the maskserve.v1 services only, never to health
// or reflection.
//
// The tokens file is re-read by Reload() (SIGHUP); a file that fails to
// parse leaves the previous tokens in force. Decisions take a snapshot of the
// tokens, so a reload never races a call.
#pragma once

#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/auth/call_limiter.h"
#include "server/auth/token_store.h"
#include "server/metrics/registry.h"
#include "server/scheduler/clock.h"

namespace maskserve::server {

struct AccessControlOptions {
  // Bearer tokens (server/auth/token_store.h); empty = authentication off.
  std::string tokens_file;
  // Health checks need no token (Kubernetes gRPC probes send none).
  bool open_health = true;
  // Server reflection needs no token.
  bool open_reflection = false;
  // Limits of a principal whose token line sets none (and of every client
  // address when authentication is off).
  CallLimits default_limits;
  // Time source of the rate limits; nullptr = real time. Must outlive this.
  Clock* clock = nullptr;
  // Auth and limit metrics; nullptr = none. Must outlive this.
  metrics::MetricsRegistry* registry = nullptr;
};

// The verdict on one call.
struct AccessDecision {
  // OK, UNAUTHENTICATED, PERMISSION_DENIED or RESOURCE_EXHAUSTED (with a
  // retry hint, server/retry_hint.h); messages never contain a token.
  absl::Status status;
  // Token name of an authenticated call, else "".
  std::string principal;
  // The call's concurrency slot; hold it until the call ends.
  CallLimiter::Permit permit;
};

// Scopes `method` ("/package.Service/Method") needs: a bit set of Scope
// values any one of which suffices, 0 = any valid token.
uint32_t RequiredScopes(absl::string_view method);

class AccessController {
 public:
  // Loads the tokens file (when set); its errors fail Create.
  static absl::StatusOr<std::unique_ptr<AccessController>> Create(
      const AccessControlOptions& options);

  bool auth_enabled() const { return !options_.tokens_file.empty(); }

  // Re-reads the tokens file. On error the current tokens stay in force.
  // Returns the number of tokens now loaded.
  absl::StatusOr<size_t> Reload();

  // Decides on a call to `method` with the value of its `authorization`
  // metadata (if any) from `peer` (gRPC's peer string, "ipv4:1.2.3.4:5678").
  AccessDecision Admit(absl::string_view method, std::optional<absl::string_view> authorization,
                       absl::string_view peer);

 private:
  explicit AccessController(const AccessControlOptions& options) : options_(options) {}
  std::shared_ptr<const TokenStore> tokens() const;
  void SetTokens(std::shared_ptr<const TokenStore> tokens);
  AccessDecision Fail(absl::Status status, const char* reason);

  const AccessControlOptions options_;
  std::unique_ptr<CallLimiter> limiter_;
  metrics::CounterFamily* failures_ = nullptr;
  metrics::CounterFamily* reloads_ = nullptr;
  metrics::Gauge* tokens_gauge_ = nullptr;
  mutable std::mutex mu_;
  std::shared_ptr<const TokenStore> tokens_;  // guarded by mu_
};

}  // namespace maskserve::server
