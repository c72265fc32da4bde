// Bearer tokens and what each may do, read from the --auth_tokens_file.
//
// File format: UTF-8 text, one token per line, '#' starts a comment line.
// Fields are separated by spaces or tabs:
//
//   <name> <token> <scopes> [max_concurrent=N] [rps=R] [burst=B]
//
//   name    [A-Za-z0-9_.-]{1,64}, unique: what logs and metrics show (the
//           token itself never leaves this class)
//   token   the secret, 16..512 printable ASCII characters without spaces,
//           or "sha256:" + 64 hex digits, the SHA-256 of the secret, so the
//           file need not hold the secret at all
//   scopes  comma-separated: embed, generate, admin, or * (all three)
//   max_concurrent / rps / burst
//           this token's limits (server/auth/call_limiter.h), overriding the
//           server-wide --limit_* flags; 0 = unlimited
//
// Only SHA-256 digests of the tokens are kept in memory; a presented token is
// hashed and compared with every digest in constant time.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace maskserve::server {

// What a token may call (a bit set).
enum Scope : uint32_t {
  kScopeEmbed = 1u << 0,     // Embed, Tokenize, Detokenize, GetWhitening, ListWhitening
  kScopeGenerate = 1u << 1,  // Generate, GenerateStream, Paraphrase, Tokenize, Detokenize
  kScopeAdmin = 1u << 2,     // FitWhitening, ImportWhitening, DeleteWhitening
  kScopeAll = kScopeEmbed | kScopeGenerate | kScopeAdmin,
};

// "embed", "generate", "admin" (one bit set), else "".
const char* ScopeName(uint32_t scope);

// Per-principal call limits; 0 in a field = no limit of that kind.
struct CallLimits {
  // Calls in flight at once.
  int max_concurrent = 0;
  // Sustained calls per second (token bucket refill rate).
  double rps = 0;
  // Calls allowed at once above the rate (bucket size); 0 = max(1, rps).
  double burst = 0;
};

// One line of the file.
struct TokenEntry {
  std::string name;
  uint32_t scopes = 0;
  // Limits given on the line (unset = the server-wide default).
  std::optional<int> max_concurrent;
  std::optional<double> rps;
  std::optional<double> burst;
};

using TokenDigest = std::array<uint8_t, 32>;

// SHA-256 of `token`.
TokenDigest DigestToken(absl::string_view token);

class TokenStore {
 public:
  // Parses file contents. Errors are INVALID_ARGUMENT naming `source` and
  // the line number, never quoting a token.
  static absl::StatusOr<std::unique_ptr<TokenStore>> Parse(absl::string_view text,
                                                           absl::string_view source);
  // Reads and parses `path`.
  static absl::StatusOr<std::unique_ptr<TokenStore>> Load(const std::string& path);

  // The entry whose token is `token`, or null. Constant time in the token's
  // contents: every digest is compared in full.
  const TokenEntry* Find(absl::string_view token) const;

  size_t size() const { return entries_.size(); }

 private:
  TokenStore() = default;
  std::vector<TokenEntry> entries_;
  std::vector<TokenDigest> digests_;
};

}  // namespace maskserve::server
