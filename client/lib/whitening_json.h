// The file format of `maskserve-cli whiten export` / `whiten import`: a
// whitening profile with its parameters as one JSON object, so that profiles
// fitted on one server (or offline, e.g. in numpy) can be moved to another.
//
//   {
//     "model": "bert-base",            // model the profile belongs to
//     "name": "nli",                   // profile name
//     "pooling": "first_last_avg",     // cls|mean|first_last_avg|max|last_token
//     "k": 256,                        // output dimensions
//     "beta": 1.0,                     // mean-shift weight
//     "gamma": 1.0,                    // variance-scaling exponent
//     "dim": 768,                      // input dimension (hidden size)
//     "num_samples": 10000,            // sentences the statistics came from
//     "mean": [dim floats],            // mu
//     "eigenvalues": [dim floats],     // Lambda, descending
//     "eigenvectors": [dim*dim floats] // U row-major: [r*dim + c], column c
//   }                                  // is the c-th eigenvector
//
// Optional on import: "created_unix_s". Floats are written with enough
// digits to round-trip exactly.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "maskserve/v1/embedding.pb.h"

namespace maskserve::client {

// Profile -> JSON text (indented when pretty).
std::string WhiteningProfileToJson(const maskserve::v1::WhiteningProfile& profile,
                                   bool pretty = false);

// JSON text -> profile. Checks field types and that the array lengths match
// dim (mean, eigenvalues: dim; eigenvectors: dim*dim); INVALID_ARGUMENT
// otherwise.
absl::StatusOr<maskserve::v1::WhiteningProfile> WhiteningProfileFromJson(
    const std::string& json);

}  // namespace maskserve::client
