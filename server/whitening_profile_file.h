// The on-disk format of a whitening profile (<data_dir>/whitening/<model>/
// <profile>.wprof), version 1. All integers and floats little-endian:
//
//   offset  size          contents
//   0       8             magic "MSWHTN01" ("01" is the format version)
//   8       4             uint32 H: length of the header
//   12      H             header, UTF-8 JSON object:
//                           {"model": str, "name": str,
//                            "pooling": "cls"|"mean"|"first_last_avg"|"max"|"last_token",
//                            "k": int, "beta": num, "gamma": num, "dim": int,
//                            "num_samples": int, "created_unix_s": int}
//   12+H    4*d           float32 mean[d]                    (d = dim)
//           4*d           float32 eigenvalues[d], descending
//           4*d*d         float32 eigenvectors[d*d], row-major: [r*d + c] = U(r, c),
//                         column c is the c-th eigenvector
//   end-4   4             uint32 CRC-32C (server/crc32c.h) of every byte before it
//
// The checksum covers the whole file, so a torn write, truncation or any
// flipped byte is detected before a single field is trusted. Readers reject
// other magics/versions, sizes that disagree with dim, and trailing bytes.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/whitening_profile.h"

namespace maskserve::server {

inline constexpr char kWhiteningFileMagic[] = "MSWHTN01";  // 8 bytes, no NUL on disk
inline constexpr char kWhiteningFileExtension[] = ".wprof";

// The file contents for `profile`. Deterministic.
std::string EncodeWhiteningProfile(const StoredProfile& profile);

// Parses and verifies file contents; DATA_LOSS for a bad checksum or a
// truncated file, INVALID_ARGUMENT for a well-formed but invalid profile.
absl::StatusOr<std::shared_ptr<const StoredProfile>> DecodeWhiteningProfile(
    absl::string_view bytes);

}  // namespace maskserve::server
