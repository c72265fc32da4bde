// Fuzzes the two whitening-profile readers with untrusted bytes: the .wprof
// file format (DecodeWhiteningProfile; files under --data_dir may be torn,
// corrupt or planted) and the JSON import format (ImportWhiteningJson, what
// ImportWhitening and `whiten import` accept). The first input byte picks
// the reader; for .wprof the rest gets a correct CRC-32C appended half the
// time so the fuzzer reaches the parser behind the checksum. An accepted
// profile must be self-consistent and survive a write/read round trip.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "server/crc32c.h"
#include "server/whitening_profile_file.h"
#include "server/whitening_profile_json.h"

namespace {

using maskserve::server::StoredProfile;

void CheckProfile(const StoredProfile& p) {
  const int d = p.dim();
  if (d <= 0 || p.info().k < 1 || p.info().k > d) std::abort();
  if (static_cast<int64_t>(p.params().mean.size()) != d ||
      static_cast<int64_t>(p.params().eigenvalues.size()) != d ||
      static_cast<int64_t>(p.params().eigenvectors.size()) != int64_t{d} * d) {
    std::abort();
  }
  if (p.transform().output_dim() != p.info().k) std::abort();
  // A file written from it reads back as the same profile.
  const std::string bytes = maskserve::server::EncodeWhiteningProfile(p);
  auto again = maskserve::server::DecodeWhiteningProfile(bytes);
  if (!again.ok() || (*again)->dim() != d || (*again)->info().k != p.info().k ||
      (*again)->params().mean != p.params().mean ||
      maskserve::server::EncodeWhiteningProfile(**again) != bytes) {
    std::abort();
  }
  // Applying it touches exactly its own parameters (ASan checks the bounds).
  std::vector<float> x(d, 0.5f), out(p.info().k);
  p.transform().Apply(x.data(), 1, out.data());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t mode = data[0];
  std::string bytes(reinterpret_cast<const char*>(data + 1), size - 1);
  if (mode % 4 == 3) {
    auto p = maskserve::server::ImportWhiteningJson(bytes);
    if (p.ok()) CheckProfile(**p);
    return 0;
  }
  if (mode % 2 == 0) {
    const uint32_t crc = maskserve::server::Crc32c(bytes);
    for (int i = 0; i < 4; ++i) bytes.push_back(static_cast<char>((crc >> (8 * i)) & 0xff));
  }
  auto p = maskserve::server::DecodeWhiteningProfile(bytes);
  if (p.ok()) CheckProfile(**p);
  return 0;
}
