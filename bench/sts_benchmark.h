// Reader for the STS Benchmark files (sts-{train,dev,test}.csv of the
// original Stsbenchmark.tar.gz). Header-only so whitening_eval and its unit
// test share it.
//
// The files are tab-separated with NO quoting: sentences contain '"' and
// 284 test rows carry two extra trailing attribution columns, so score and
// sentences are fields 4, 5, 6 counted from the start (never from the end,
// and never through a CSV parser that honours quotes).
#pragma once

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

namespace maskserve::bench {

// One scored sentence pair.
struct StsPair {
  // Gold similarity, 0-5.
  double score = 0;
  std::string sentence1;
  std::string sentence2;
};

// Parses one line (trailing '\r' tolerated). Needs at least the 7 fields
// genre, file, year, id, score, sentence1, sentence2.
inline absl::StatusOr<StsPair> ParseStsBenchmarkLine(absl::string_view line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  std::vector<absl::string_view> fields = absl::StrSplit(line, '\t');
  if (fields.size() < 7) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected >= 7 tab-separated fields, got ", fields.size()));
  }
  StsPair pair;
  if (!absl::SimpleAtod(fields[4], &pair.score)) {
    return absl::InvalidArgumentError(
        absl::StrCat("score field '", fields[4], "' is not a number"));
  }
  pair.sentence1 = std::string(fields[5]);
  pair.sentence2 = std::string(fields[6]);
  return pair;
}

// Every pair of `path`, in file order; blank lines are skipped, any other
// malformed line is an error naming its line number.
inline absl::StatusOr<std::vector<StsPair>> ReadStsBenchmark(
    const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read '", path, "'"));
  std::vector<StsPair> pairs;
  std::string line;
  int line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.empty() || line == "\r") continue;
    auto pair = ParseStsBenchmarkLine(line);
    if (!pair.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ":", line_no, ": ", pair.status().message()));
    }
    pairs.push_back(*std::move(pair));
  }
  return pairs;
}

}  // namespace maskserve::bench
