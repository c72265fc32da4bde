// Rank correlation for STS-style evaluation: Spearman's rho with average
// ranks for ties (scipy.stats.spearmanr's definition, which the
// BERT-whitening paper's numbers come from), and the cosine similarity it is
// computed on. Header-only so the eval binary and its unit test share it
// without a library.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <numeric>
#include <optional>
#include <vector>

namespace maskserve::bench {

// 1-based ranks of `values`; tied values all get the mean of the ranks they
// span (e.g. {10, 20, 20, 30} -> {1, 2.5, 2.5, 4}).
inline std::vector<double> AverageRanks(const std::vector<double>& values) {
  const size_t n = values.size();
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return values[a] < values[b]; });
  std::vector<double> ranks(n);
  size_t i = 0;
  while (i < n) {
    size_t j = i + 1;
    while (j < n && values[order[j]] == values[order[i]]) ++j;
    // Positions i..j-1 (0-based) hold ranks i+1..j; their mean:
    const double rank = 0.5 * static_cast<double>(i + 1 + j);
    for (size_t t = i; t < j; ++t) ranks[order[t]] = rank;
    i = j;
  }
  return ranks;
}

// Pearson correlation; nullopt when the lengths differ, n < 2, or either
// side is constant (the coefficient is undefined there, scipy returns nan).
inline std::optional<double> Pearson(const std::vector<double>& x,
                                     const std::vector<double>& y) {
  const size_t n = x.size();
  if (n != y.size() || n < 2) return std::nullopt;
  double mx = 0, my = 0;
  for (size_t i = 0; i < n; ++i) {
    mx += x[i];
    my += y[i];
  }
  mx /= static_cast<double>(n);
  my /= static_cast<double>(n);
  double sxy = 0, sxx = 0, syy = 0;
  for (size_t i = 0; i < n; ++i) {
    const double dx = x[i] - mx, dy = y[i] - my;
    sxy += dx * dy;
    sxx += dx * dx;
    syy += dy * dy;
  }
  if (sxx <= 0 || syy <= 0) return std::nullopt;
  return sxy / std::sqrt(sxx * syy);
}

// Spearman's rho = Pearson of the average ranks (exact with ties, unlike the
// 1 - 6*sum(d^2)/(n(n^2-1)) shortcut). nullopt under Pearson's conditions.
inline std::optional<double> Spearman(const std::vector<double>& x,
                                      const std::vector<double>& y) {
  if (x.size() != y.size()) return std::nullopt;
  return Pearson(AverageRanks(x), AverageRanks(y));
}

// cos(a, b) in double; 0 when either vector is zero (or the sizes differ),
// so a degenerate embedding counts as "unrelated" rather than NaN.
inline double Cosine(const float* a, const float* b, size_t n) {
  double dot = 0, na = 0, nb = 0;
  for (size_t i = 0; i < n; ++i) {
    dot += static_cast<double>(a[i]) * b[i];
    na += static_cast<double>(a[i]) * a[i];
    nb += static_cast<double>(b[i]) * b[i];
  }
  if (na <= 0 || nb <= 0) return 0;
  return dot / std::sqrt(na * nb);
}

}  // namespace maskserve::bench
