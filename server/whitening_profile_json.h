// A whitening profile as one JSON document, for moving profiles between
// servers or bringing in ones fitted offline (e.g. numpy). The same format
// as `maskserve-cli whiten export/import` (client/lib/whitening_json.h):
//
//   {
//     "format": "maskserve-whitening/v1",  // optional on import; if present
//                                          // it must be exactly this
//     "model": "bert-base",                // [A-Za-z0-9_.-]{1,64}
//     "name": "nli",                       // [A-Za-z0-9_.-]{1,64}
//     "pooling": "first_last_avg",         // cls|mean|first_last_avg|max|last_token
//     "k": 256,                            // output dims, 1..dim (0 on import = dim)
//     "beta": 1.0,                         // mean-shift weight, [0, 1]
//     "gamma": 1.0,                        // variance-scaling exponent, [0, 1]
//     "dim": 768,                          // input dimension
//     "num_samples": 10000,                // sentences behind the statistics, >= 0
//     "created_unix_s": 1700000000,        // optional on import (absent = now)
//     "mean": [dim numbers],               // mu
//     "eigenvalues": [dim numbers],        // Lambda, descending
//     "eigenvectors": [dim*dim numbers]    // U row-major: [r*dim + c], column c is
//   }                                      // the c-th eigenvector
//
// On import "eigenvectors" may also be nested rows ([[row 0], [row 1], ...],
// numpy's U.tolist()), and "pooling" may be spelled as the CLI accepts it
// (any case, '-' for '_', a "pooling_" prefix). Numbers are written with 17 significant digits, so
// float32 values survive export -> import bit for bit.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/whitening_profile.h"

namespace maskserve::server {

inline constexpr char kWhiteningJsonFormat[] = "maskserve-whitening/v1";

// The profile as JSON text (indented by 2 when pretty).
std::string ExportWhiteningJson(const StoredProfile& profile, bool pretty = false);

// Parses and validates a JSON profile: field types, array sizes against dim,
// finite values, descending eigenvalues, max |U^T U - I| <= 1e-3, then k,
// beta, gamma as the transform needs. INVALID_ARGUMENT naming the field.
// The result is not stored; pass it to WhiteningStore::Put.
absl::StatusOr<std::shared_ptr<const StoredProfile>> ImportWhiteningJson(const std::string& text);

}  // namespace maskserve::server
