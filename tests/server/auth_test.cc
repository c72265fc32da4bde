// Access control without a network: the tokens file format, the
// per-principal limiter on a FakeClock, the method -> scope table, the
// verdicts of AccessController, and the retry hint's way from an absl::Status
// into google.rpc.RetryInfo status details.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>

#include "server/auth/access_control.h"
#include "server/auth/call_limiter.h"
#include "server/auth/token_store.h"
#include "server/metrics/exposition.h"
#include "server/retry_hint.h"
#include "server/scheduler/clock.h"
#include "server/status_util.h"
#include "tests/util/test_env.h"

namespace maskserve::server {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kAlice[] = "alice-token-0123456789";
constexpr char kBob[] = "bob-token-abcdefghijkl";

TEST(TokenStoreTest, ParsesNamesScopesAndLimits) {
  const std::string text = absl::StrCat(
      "# comment\n\n", "alice ", kAlice, " embed,generate max_concurrent=2 rps=5 burst=10\r\n",
      "bob\t", kBob, "\tadmin\n", "ops sha256:", std::string(64, 'a'), " *\n");
  auto store = TokenStore::Parse(text, "tokens.txt");
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->size(), 3u);
  const TokenEntry* a = (*store)->Find(kAlice);
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->name, "alice");
  EXPECT_EQ(a->scopes, kScopeEmbed | kScopeGenerate);
  EXPECT_EQ(a->max_concurrent, 2);
  EXPECT_EQ(a->rps, 5.0);
  EXPECT_EQ(a->burst, 10.0);
  const TokenEntry* b = (*store)->Find(kBob);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->scopes, kScopeAdmin);
  EXPECT_FALSE(b->rps.has_value());
  EXPECT_EQ((*store)->Find("nobody-token-000000"), nullptr);
  EXPECT_EQ((*store)->Find(""), nullptr);
  // A hashed entry matches the secret whose SHA-256 it holds.
  const TokenDigest d = DigestToken("the-hashed-secret-123");
  std::string hex;
  for (uint8_t x : d) absl::StrAppend(&hex, absl::Hex(x, absl::kZeroPad2));
  auto hashed = TokenStore::Parse(absl::StrCat("h sha256:", hex, " embed"), "t");
  ASSERT_TRUE(hashed.ok()) << hashed.status();
  EXPECT_NE((*hashed)->Find("the-hashed-secret-123"), nullptr);
  EXPECT_EQ((*hashed)->Find(absl::StrCat("sha256:", hex)), nullptr);
}

TEST(TokenStoreTest, ErrorsNameTheLineAndNeverTheToken) {
  const std::string secret = "very-secret-token-value";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"alice " + secret, "line 1: expected"},
      {"al!ce " + secret + " embed", "name must match"},
      {"alice short embed", "16..512 printable"},
      {"alice " + secret + " embed,fly", "unknown scope 'fly'"},
      {"alice " + secret + " ,", "no scope"},
      {"alice " + secret + " embed rps=-1", "bad option 'rps=-1'"},
      {"alice " + secret + " embed\nalice " + secret + "x embed", "line 2: duplicate name"},
      {"alice " + secret + " embed\nbob " + secret + " embed", "line 2: token of 'bob' is also"},
      {"h sha256:abc embed", "64 hex digits"},
  };
  for (const auto& [text, needle] : cases) {
    auto store = TokenStore::Parse(text, "tokens.txt");
    ASSERT_FALSE(store.ok()) << text;
    EXPECT_EQ(store.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(store.status().message(), HasSubstr(needle)) << text;
    EXPECT_THAT(store.status().message(), HasSubstr("tokens.txt line"));
    EXPECT_THAT(store.status().message(), Not(HasSubstr(secret))) << text;
  }
  EXPECT_EQ(TokenStore::Load("/nonexistent/tokens").status().code(), absl::StatusCode::kNotFound);
}

TEST(CallLimiterTest, ConcurrencyLimitFreesSlotsWhenPermitsEnd) {
  FakeClock clock;
  metrics::MetricsRegistry registry;
  CallLimiterOptions o;
  o.clock = &clock;
  o.registry = &registry;
  o.concurrency_retry_hint = absl::Milliseconds(250);
  auto limiter = *CallLimiter::Create(o);
  CallLimits limits;
  limits.max_concurrent = 2;
  auto a = limiter->Acquire("k", "alice", "alice", limits);
  auto b = limiter->Acquire("k", "alice", "alice", limits);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(limiter->inflight("k"), 2);
  auto c = limiter->Acquire("k", "alice", "alice", limits);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(c.status().message(), HasSubstr("max_concurrent"));
  EXPECT_EQ(RetryAfterOf(c.status()), absl::Milliseconds(250));
  // Another principal is not affected.
  EXPECT_TRUE(limiter->Acquire("other", "bob", "bob", limits).ok());
  a->Release();
  EXPECT_EQ(limiter->inflight("k"), 1);
  auto d = limiter->Acquire("k", "alice", "alice", limits);
  EXPECT_TRUE(d.ok());
  // Moving a permit keeps one slot, released once.
  CallLimiter::Permit moved = std::move(*d);
  moved = std::move(moved);
  EXPECT_EQ(limiter->inflight("k"), 2);
  moved.Release();
  moved.Release();
  EXPECT_EQ(limiter->inflight("k"), 1);
  const std::string text = metrics::RenderText(registry);
  EXPECT_THAT(text,
              HasSubstr("maskserve_rate_limited_total{principal=\"alice\",limit=\"concurrency\"} 1"));
}

TEST(CallLimiterTest, TokenBucketRefillsWithTheClock) {
  FakeClock clock;
  auto limiter = *CallLimiter::Create({.clock = &clock});
  CallLimits limits;
  limits.rps = 2;
  limits.burst = 3;
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(limiter->Acquire("k", "p", "p", limits).ok()) << i;  // the burst
  }
  auto refused = limiter->Acquire("k", "p", "p", limits);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(refused.status().message(), HasSubstr("rate limit of 2 calls/s"));
  // One token arrives every 500 ms.
  EXPECT_EQ(RetryAfterOf(refused.status()), absl::Milliseconds(500));
  clock.Advance(absl::Milliseconds(200));
  refused = limiter->Acquire("k", "p", "p", limits);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(RetryAfterOf(refused.status()), absl::Milliseconds(300));
  clock.Advance(absl::Milliseconds(300));
  EXPECT_TRUE(limiter->Acquire("k", "p", "p", limits).ok());
  EXPECT_FALSE(limiter->Acquire("k", "p", "p", limits).ok());
  // Never more than the burst, however long the pause.
  clock.Advance(absl::Hours(1));
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(limiter->Acquire("k", "p", "p", limits).ok());
  EXPECT_FALSE(limiter->Acquire("k", "p", "p", limits).ok());
}

TEST(CallLimiterTest, NoLimitsMeansNoStateAndIdlePrincipalsArePruned) {
  FakeClock clock;
  CallLimiterOptions o;
  o.clock = &clock;
  o.prune_threshold = 8;
  auto limiter = *CallLimiter::Create(o);
  EXPECT_TRUE(limiter->Acquire("k", "p", "p", CallLimits{}).ok());
  EXPECT_EQ(limiter->tracked(), 0u);
  CallLimits limits;
  limits.rps = 100;
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(limiter->Acquire(absl::StrCat("peer:", i), "a", "peer", limits).ok());
    clock.Advance(absl::Seconds(1));  // every earlier bucket is full again
  }
  EXPECT_LE(limiter->tracked(), 9u);
  // A principal with a call in flight is never forgotten.
  CallLimits conc;
  conc.max_concurrent = 1;
  auto held = limiter->Acquire("held", "h", "h", conc);
  ASSERT_TRUE(held.ok());
  for (int i = 0; i < 50; ++i) {
    ASSERT_TRUE(limiter->Acquire(absl::StrCat("more:", i), "a", "peer", limits).ok());
    clock.Advance(absl::Seconds(1));
  }
  EXPECT_EQ(limiter->inflight("held"), 1);
  EXPECT_FALSE(limiter->Acquire("held", "h", "h", conc).ok());
}

TEST(RequiredScopesTest, EveryMaskserveMethodHasItsScope) {
  EXPECT_EQ(RequiredScopes("/maskserve.v1.Embedding/Embed"), kScopeEmbed);
  EXPECT_EQ(RequiredScopes("/maskserve.v1.Embedding/GetWhitening"), kScopeEmbed);
  EXPECT_EQ(RequiredScopes("/maskserve.v1.Embedding/ListWhitening"), kScopeEmbed);
  EXPECT_EQ(RequiredScopes("/maskserve.v1.Embedding/Tokenize"), kScopeEmbed | kScopeGenerate);
  EXPECT_EQ(RequiredScopes("/maskserve.v1.Embedding/Detokenize"), kScopeEmbed | kScopeGenerate);
  EXPECT_EQ(RequiredScopes("/maskserve.v1.Embedding/FitWhitening"), kScopeAdmin);
  EXPECT_EQ(RequiredScopes("/maskserve.v1.Embedding/ImportWhitening"), kScopeAdmin);
  EXPECT_EQ(RequiredScopes("/maskserve.v1.Embedding/DeleteWhitening"), kScopeAdmin);
  EXPECT_EQ(RequiredScopes("/maskserve.v1.Generation/Generate"), kScopeGenerate);
  EXPECT_EQ(RequiredScopes("/maskserve.v1.Generation/GenerateStream"), kScopeGenerate);
  EXPECT_EQ(RequiredScopes("/maskserve.v1.Generation/Paraphrase"), kScopeGenerate);
  EXPECT_EQ(RequiredScopes("/maskserve.v1.Models/ListModels"), 0u);
  EXPECT_EQ(RequiredScopes("/something.Else/Call"), 0u);
}

class AccessControllerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = maskserve::testing::MakeTempDir("access_control_test");
    path_ = dir_ + "/tokens";
    Write(absl::StrCat("alice ", kAlice, " embed rps=1\nbob ", kBob, " admin,generate\n"));
  }
  void Write(const std::string& text) { std::ofstream(path_, std::ios::trunc) << text; }
  std::unique_ptr<AccessController> Make(bool open_health = true, bool open_reflection = false) {
    AccessControlOptions o;
    o.tokens_file = path_;
    o.open_health = open_health;
    o.open_reflection = open_reflection;
    o.clock = &clock_;
    o.registry = &registry_;
    o.default_limits.max_concurrent = 1;
    auto ac = AccessController::Create(o);
    EXPECT_TRUE(ac.ok()) << ac.status();
    return std::move(*ac);
  }
  static std::string Bearer(const std::string& t) { return "Bearer " + t; }

  FakeClock clock_;
  metrics::MetricsRegistry registry_;
  std::string dir_, path_;
};

TEST_F(AccessControllerTest, AuthenticatesAuthorisesAndLimits) {
  auto ac = Make();
  const std::string peer = "ipv4:127.0.0.1:5555";
  const std::string embed = "/maskserve.v1.Embedding/Embed";
  auto d = ac->Admit(embed, std::nullopt, peer);
  EXPECT_EQ(d.status.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(d.status.message(), HasSubstr("missing bearer token"));
  d = ac->Admit(embed, std::string("Basic abc"), peer);
  EXPECT_EQ(d.status.code(), absl::StatusCode::kUnauthenticated);
  d = ac->Admit(embed, Bearer("wrong-token-0000000000"), peer);
  EXPECT_EQ(d.status.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(d.status.message(), "invalid bearer token");
  {
    auto ok = ac->Admit(embed, Bearer(kAlice), peer);
    EXPECT_TRUE(ok.status.ok()) << ok.status;
    EXPECT_EQ(ok.principal, "alice");
    // alice's default max_concurrent is 1: a second call while the first runs is refused.
    clock_.Advance(absl::Seconds(5));
    auto busy = ac->Admit(embed, std::string("bearer  ") + kAlice, peer);
    EXPECT_EQ(busy.status.code(), absl::StatusCode::kResourceExhausted);
    EXPECT_THAT(busy.status.message(), HasSubstr("'alice' has 1 calls in flight"));
  }
  // Its rate (rps=1 from the file): the next call right away is refused.
  clock_.Advance(absl::Seconds(5));
  EXPECT_TRUE(ac->Admit(embed, Bearer(kAlice), peer).status.ok());
  auto fast = ac->Admit(embed, Bearer(kAlice), peer);
  EXPECT_EQ(fast.status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(RetryAfterOf(fast.status), absl::Seconds(1));
  // Scopes.
  auto denied = ac->Admit("/maskserve.v1.Embedding/DeleteWhitening", Bearer(kAlice), peer);
  EXPECT_EQ(denied.status.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(denied.status.message(),
            "token 'alice' lacks the scope 'admin' that maskserve.v1.Embedding/DeleteWhitening "
            "needs");
  EXPECT_EQ(ac->Admit("/maskserve.v1.Generation/Generate", Bearer(kAlice), peer).status.code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(ac->Admit("/maskserve.v1.Generation/Generate", Bearer(kBob), peer).status.ok());
  EXPECT_TRUE(ac->Admit("/maskserve.v1.Models/ListModels", Bearer(kBob), peer).status.ok());
  // Health open, reflection closed by default.
  EXPECT_TRUE(ac->Admit("/grpc.health.v1.Health/Check", std::nullopt, peer).status.ok());
  EXPECT_EQ(ac->Admit("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                      std::nullopt, peer)
                .status.code(),
            absl::StatusCode::kUnauthenticated);
  const std::string text = metrics::RenderText(registry_);
  EXPECT_THAT(text, HasSubstr("maskserve_auth_failures_total{reason=\"missing_token\"} 2"));
  EXPECT_THAT(text, HasSubstr("maskserve_auth_failures_total{reason=\"invalid_token\"} 2"));
  EXPECT_THAT(text, HasSubstr("maskserve_auth_failures_total{reason=\"missing_scope\"} 2"));
  EXPECT_THAT(text, HasSubstr("maskserve_auth_tokens 2"));
  EXPECT_THAT(text, Not(HasSubstr(kAlice)));
}

TEST_F(AccessControllerTest, HealthAndReflectionFollowTheirFlags) {
  auto ac = Make(/*open_health=*/false, /*open_reflection=*/true);
  EXPECT_EQ(ac->Admit("/grpc.health.v1.Health/Check", std::nullopt, "p").status.code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_TRUE(ac->Admit("/grpc.health.v1.Health/Check", Bearer(kBob), "p").status.ok());
  EXPECT_TRUE(
      ac->Admit("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", std::nullopt, "p")
          .status.ok());
}

TEST_F(AccessControllerTest, ReloadSwapsTokensAndKeepsThemOnError) {
  auto ac = Make();
  const std::string m = "/maskserve.v1.Models/ListModels";
  const std::string carol = "carol-token-9876543210";
  Write(absl::StrCat("carol ", carol, " embed\n"));
  auto n = ac->Reload();
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 1u);
  EXPECT_EQ(ac->Admit(m, Bearer(kAlice), "p").status.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_TRUE(ac->Admit(m, Bearer(carol), "p").status.ok());
  // A broken file leaves carol's token in force.
  Write("carol " + carol + " bogus-scope\n");
  auto bad = ac->Reload();
  EXPECT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), Not(HasSubstr(carol)));
  EXPECT_TRUE(ac->Admit(m, Bearer(carol), "p").status.ok());
  const std::string text = metrics::RenderText(registry_);
  EXPECT_THAT(text, HasSubstr("maskserve_auth_reloads_total{result=\"error\"} 1"));
  EXPECT_THAT(text, HasSubstr("maskserve_auth_reloads_total{result=\"ok\"} 1"));
}

TEST_F(AccessControllerTest, WithoutTokensFileLimitsApplyPerClientAddress) {
  AccessControlOptions o;
  o.clock = &clock_;
  o.default_limits.rps = 1;
  auto ac = *AccessController::Create(o);
  EXPECT_FALSE(ac->auth_enabled());
  const std::string m = "/maskserve.v1.Embedding/Embed";
  EXPECT_TRUE(ac->Admit(m, std::nullopt, "ipv4:10.0.0.1:1000").status.ok());
  // Same address, another port: the same principal.
  auto d = ac->Admit(m, std::nullopt, "ipv4:10.0.0.1:1001");
  EXPECT_EQ(d.status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(d.status.message(), HasSubstr("'ipv4:10.0.0.1'"));
  EXPECT_TRUE(ac->Admit(m, std::nullopt, "ipv6:[::1]:1000").status.ok());
  // Health is never limited.
  for (int i = 0; i < 5; ++i) {
    EXPECT_TRUE(ac->Admit("/grpc.health.v1.Health/Check", std::nullopt, "ipv4:10.0.0.1:1").status.ok());
  }
  // A missing tokens file fails Create, naming the flag.
  o.tokens_file = dir_ + "/missing";
  auto missing = AccessController::Create(o);
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(), HasSubstr("--auth_tokens_file"));
}

TEST(RetryHintTest, TravelsAsRetryInfoInStatusDetails) {
  absl::Status s = WithRetryAfter(absl::ResourceExhaustedError("slow down"), absl::Microseconds(1500));
  EXPECT_EQ(RetryAfterOf(s), absl::Milliseconds(2));  // rounded up to whole ms
  EXPECT_FALSE(RetryAfterOf(absl::ResourceExhaustedError("x")).has_value());
  EXPECT_TRUE(WithRetryAfter(absl::OkStatus(), absl::Seconds(1)).ok());
  const grpc::Status g = ToGrpcStatus(WithRetryAfter(s, absl::Milliseconds(2500)));
  EXPECT_EQ(g.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(g.error_message(), "slow down");
  EXPECT_EQ(RetryDelayFromStatusDetails(g.error_details()), absl::Milliseconds(2500));
  EXPECT_TRUE(ToGrpcStatus(absl::ResourceExhaustedError("x")).error_details().empty());
  EXPECT_FALSE(RetryDelayFromStatusDetails("\xff\xff").has_value());
  EXPECT_FALSE(RetryDelayFromStatusDetails("").has_value());
}

}  // namespace
}  // namespace maskserve::server
