#include "server/auth/access_control.h"

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace maskserve::server {
namespace {

// Scope bit sets with a meaning of their own.
constexpr uint32_t kAnyToken = 0;
constexpr uint32_t kOpenHealth = 1u << 30;
constexpr uint32_t kOpenReflection = 1u << 31;

std::string ScopeList(uint32_t scopes) {
  std::string out;
  for (uint32_t bit : {kScopeEmbed, kScopeGenerate, kScopeAdmin}) {
    if ((scopes & bit) == 0) continue;
    if (!out.empty()) out += "' or '";
    out += ScopeName(bit);
  }
  return out;
}

// "ipv4:10.0.0.1:5678" -> "ipv4:10.0.0.1", "ipv6:[::1]:5678" -> "ipv6:[::1]".
std::string PeerAddress(absl::string_view peer) {
  if (absl::StartsWith(peer, "ipv4:") || absl::StartsWith(peer, "ipv6:")) {
    const size_t colon = peer.rfind(':');
    if (colon > 5) return std::string(peer.substr(0, colon));
  }
  return std::string(peer);
}

}  // namespace

uint32_t RequiredScopes(absl::string_view method) {
  absl::ConsumePrefix(&method, "/");
  if (absl::StartsWith(method, "grpc.health.v1.Health/")) return kOpenHealth;
  if (absl::StartsWith(method, "grpc.reflection.")) return kOpenReflection;
  if (absl::ConsumePrefix(&method, "maskserve.v1.Embedding/")) {
    if (method == "Tokenize" || method == "Detokenize") return kScopeEmbed | kScopeGenerate;
    if (method == "FitWhitening" || method == "ImportWhitening" || method == "DeleteWhitening") {
      return kScopeAdmin;
    }
    return kScopeEmbed;
  }
  if (absl::StartsWith(method, "maskserve.v1.Generation/")) return kScopeGenerate;
  return kAnyToken;
}

absl::StatusOr<std::unique_ptr<AccessController>> AccessController::Create(
    const AccessControlOptions& options) {
  std::unique_ptr<AccessController> ac(new AccessController(options));
  CallLimiterOptions lo;
  lo.clock = options.clock;
  lo.registry = options.registry;
  absl::StatusOr<std::unique_ptr<CallLimiter>> limiter = CallLimiter::Create(lo);
  if (!limiter.ok()) return limiter.status();
  ac->limiter_ = std::move(*limiter);
  if (options.registry != nullptr) {
    absl::StatusOr<metrics::CounterFamily*> failures = options.registry->AddCounter(
        "maskserve_auth_failures_total",
        "Calls refused by authentication (reason: missing_token, invalid_token) or "
        "authorisation (missing_scope).",
        {"reason"});
    if (!failures.ok()) return failures.status();
    ac->failures_ = *failures;
    absl::StatusOr<metrics::CounterFamily*> reloads = options.registry->AddCounter(
        "maskserve_auth_reloads_total", "Reloads of the tokens file (SIGHUP) by result.",
        {"result"});
    if (!reloads.ok()) return reloads.status();
    ac->reloads_ = *reloads;
    absl::StatusOr<metrics::GaugeFamily*> tokens =
        options.registry->AddGauge("maskserve_auth_tokens", "Bearer tokens loaded.");
    if (!tokens.ok()) return tokens.status();
    ac->tokens_gauge_ = (*tokens)->WithLabels({});
  }
  if (ac->auth_enabled()) {
    absl::StatusOr<std::unique_ptr<TokenStore>> store = TokenStore::Load(options.tokens_file);
    if (!store.ok()) {
      return absl::Status(store.status().code(),
                          absl::StrCat("--auth_tokens_file: ", store.status().message()));
    }
    ac->SetTokens(std::move(*store));
  }
  return ac;
}

std::shared_ptr<const TokenStore> AccessController::tokens() const {
  std::lock_guard<std::mutex> lock(mu_);
  return tokens_;
}

void AccessController::SetTokens(std::shared_ptr<const TokenStore> tokens) {
  if (tokens_gauge_ != nullptr) tokens_gauge_->Set(static_cast<double>(tokens->size()));
  std::lock_guard<std::mutex> lock(mu_);
  tokens_ = std::move(tokens);
}

absl::StatusOr<size_t> AccessController::Reload() {
  if (!auth_enabled()) return absl::FailedPreconditionError("authentication is off");
  absl::StatusOr<std::unique_ptr<TokenStore>> store = TokenStore::Load(options_.tokens_file);
  if (!store.ok()) {
    if (reloads_ != nullptr) reloads_->WithLabels({"error"})->Inc();
    return store.status();
  }
  const size_t n = (*store)->size();
  SetTokens(std::move(*store));
  if (reloads_ != nullptr) reloads_->WithLabels({"ok"})->Inc();
  return n;
}

AccessDecision AccessController::Fail(absl::Status status, const char* reason) {
  if (failures_ != nullptr) failures_->WithLabels({reason})->Inc();
  AccessDecision d;
  d.status = std::move(status);
  return d;
}

AccessDecision AccessController::Admit(absl::string_view method,
                                       std::optional<absl::string_view> authorization,
                                       absl::string_view peer) {
  const uint32_t needed = RequiredScopes(method);
  if ((needed == kOpenHealth && options_.open_health) ||
      (needed == kOpenReflection && options_.open_reflection)) {
    return AccessDecision{};
  }
  // Health and reflection are never rate-limited.
  const bool limited = needed != kOpenHealth && needed != kOpenReflection;
  const TokenEntry* entry = nullptr;
  if (auth_enabled()) {
    if (!authorization.has_value() || authorization->empty()) {
      return Fail(absl::UnauthenticatedError(
                      "missing bearer token: send metadata 'authorization: Bearer <token>'"),
                  "missing_token");
    }
    absl::string_view value = absl::StripAsciiWhitespace(*authorization);
    if (value.size() < 7 || !absl::EqualsIgnoreCase(value.substr(0, 7), "bearer ")) {
      return Fail(absl::UnauthenticatedError(
                      "the authorization metadata is not 'Bearer <token>'"),
                  "invalid_token");
    }
    value = absl::StripLeadingAsciiWhitespace(value.substr(7));
    std::shared_ptr<const TokenStore> store = tokens();
    entry = store->Find(value);
    if (entry == nullptr) {
      return Fail(absl::UnauthenticatedError("invalid bearer token"), "invalid_token");
    }
    const uint32_t scopes = needed & kScopeAll;
    if (scopes != 0 && (entry->scopes & scopes) == 0) {
      absl::string_view m = method;
      absl::ConsumePrefix(&m, "/");
      AccessDecision d = Fail(
          absl::PermissionDeniedError(absl::StrCat("token '", entry->name, "' lacks the scope '",
                                                   ScopeList(scopes), "' that ", m, " needs")),
          "missing_scope");
      d.principal = entry->name;
      return d;
    }
    // The store may be swapped by a reload while the call runs; keep what
    // the decision needs by value.
    AccessDecision d;
    d.principal = entry->name;
    if (limited) {
      CallLimits limits = options_.default_limits;
      if (entry->max_concurrent) limits.max_concurrent = *entry->max_concurrent;
      if (entry->rps) limits.rps = *entry->rps;
      if (entry->burst) limits.burst = *entry->burst;
      absl::StatusOr<CallLimiter::Permit> permit =
          limiter_->Acquire(absl::StrCat("token:", entry->name), entry->name, entry->name, limits);
      if (!permit.ok()) {
        d.status = permit.status();
      } else {
        d.permit = std::move(*permit);
      }
    }
    return d;
  }
  AccessDecision d;
  if (limited) {
    const std::string address = PeerAddress(peer);
    absl::StatusOr<CallLimiter::Permit> permit = limiter_->Acquire(
        absl::StrCat("peer:", address), address, "peer", options_.default_limits);
    if (!permit.ok()) {
      d.status = permit.status();
    } else {
      d.permit = std::move(*permit);
    }
  }
  return d;
}

}  // namespace maskserve::server
