#include "server/auth/token_store.h"

#include <openssl/evp.h>

#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace maskserve::server {
namespace {

constexpr size_t kMinTokenLength = 16;
constexpr size_t kMaxTokenLength = 512;
constexpr char kDigestPrefix[] = "sha256:";

bool ParseHexDigest(absl::string_view hex, TokenDigest* out) {
  if (hex.size() != 64) return false;
  for (size_t i = 0; i < 32; ++i) {
    int v = 0;
    for (int j = 0; j < 2; ++j) {
      const char c = absl::ascii_tolower(hex[2 * i + j]);
      int d = 0;
      if (c >= '0' && c <= '9') {
        d = c - '0';
      } else if (c >= 'a' && c <= 'f') {
        d = c - 'a' + 10;
      } else {
        return false;
      }
      v = v * 16 + d;
    }
    (*out)[i] = static_cast<uint8_t>(v);
  }
  return true;
}

bool PrintableToken(absl::string_view t) {
  for (char c : t) {
    if (c <= 0x20 || c >= 0x7f) return false;
  }
  return true;
}

}  // namespace

const char* ScopeName(uint32_t scope) {
  switch (scope) {
    case kScopeEmbed:
      return "embed";
    case kScopeGenerate:
      return "generate";
    case kScopeAdmin:
      return "admin";
    default:
      return "";
  }
}

TokenDigest DigestToken(absl::string_view token) {
  TokenDigest d{};
  unsigned int len = 0;
  EVP_Digest(token.data(), token.size(), d.data(), &len, EVP_sha256(), nullptr);
  return d;
}

absl::StatusOr<std::unique_ptr<TokenStore>> TokenStore::Parse(absl::string_view text,
                                                              absl::string_view source) {
  static const std::regex kName("[A-Za-z0-9_.-]{1,64}");
  std::unique_ptr<TokenStore> store(new TokenStore());
  std::set<std::string> names;
  std::set<TokenDigest> digests;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    auto bad = [&](const std::string& why) {
      return absl::InvalidArgumentError(absl::StrCat(source, " line ", line_no, ": ", why));
    };
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    std::vector<absl::string_view> f = absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (f.size() < 3) {
      return bad("expected '<name> <token> <scopes> [max_concurrent=N] [rps=R] [burst=B]'");
    }
    TokenEntry e;
    e.name = std::string(f[0]);
    if (!std::regex_match(e.name, kName)) return bad("name must match [A-Za-z0-9_.-]{1,64}");
    if (!names.insert(e.name).second) return bad(absl::StrCat("duplicate name '", e.name, "'"));
    TokenDigest digest{};
    if (absl::StartsWith(f[1], kDigestPrefix)) {
      if (!ParseHexDigest(f[1].substr(sizeof(kDigestPrefix) - 1), &digest)) {
        return bad(absl::StrCat("token of '", e.name, "': sha256: needs 64 hex digits"));
      }
    } else {
      if (f[1].size() < kMinTokenLength || f[1].size() > kMaxTokenLength ||
          !PrintableToken(f[1])) {
        return bad(absl::StrCat("token of '", e.name, "' must be ", kMinTokenLength, "..",
                                kMaxTokenLength, " printable ASCII characters"));
      }
      digest = DigestToken(f[1]);
    }
    if (!digests.insert(digest).second) {
      return bad(absl::StrCat("token of '", e.name, "' is also given to another name"));
    }
    for (absl::string_view s : absl::StrSplit(f[2], ',', absl::SkipEmpty())) {
      if (s == "*") {
        e.scopes |= kScopeAll;
      } else if (s == "embed") {
        e.scopes |= kScopeEmbed;
      } else if (s == "generate") {
        e.scopes |= kScopeGenerate;
      } else if (s == "admin") {
        e.scopes |= kScopeAdmin;
      } else {
        return bad(absl::StrCat("unknown scope '", s, "' (embed, generate, admin or *)"));
      }
    }
    if (e.scopes == 0) return bad("no scope (embed, generate, admin or *)");
    for (size_t i = 3; i < f.size(); ++i) {
      std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(f[i], absl::MaxSplits('=', 1));
      int n = 0;
      double x = 0;
      if (kv.first == "max_concurrent" && absl::SimpleAtoi(kv.second, &n) && n >= 0) {
        e.max_concurrent = n;
      } else if (kv.first == "rps" && absl::SimpleAtod(kv.second, &x) && x >= 0 && x < 1e9) {
        e.rps = x;
      } else if (kv.first == "burst" && absl::SimpleAtod(kv.second, &x) && x >= 0 && x < 1e9) {
        e.burst = x;
      } else {
        return bad(absl::StrCat("bad option '", f[i],
                                "' (max_concurrent=N, rps=R, burst=B; non-negative numbers)"));
      }
    }
    store->entries_.push_back(std::move(e));
    store->digests_.push_back(digest);
  }
  return store;
}

absl::StatusOr<std::unique_ptr<TokenStore>> TokenStore::Load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read tokens file '", path, "'"));
  std::stringstream ss;
  ss << in.rdbuf();
  return Parse(ss.str(), path);
}

const TokenEntry* TokenStore::Find(absl::string_view token) const {
  const TokenDigest d = DigestToken(token);
  const TokenEntry* found = nullptr;
  for (size_t i = 0; i < digests_.size(); ++i) {
    uint8_t diff = 0;
    for (size_t j = 0; j < d.size(); ++j) diff |= static_cast<uint8_t>(d[j] ^ digests_[i][j]);
    // No early exit: every entry costs the same whatever matched.
    if (diff == 0) found = &entries_[i];
  }
  return found;
}

}  // namespace maskserve::server
