// Renders metrics in the Prometheus text exposition format 0.0.4, the format
// every Prometheus server and promtool accept. Output is deterministic
// (families sorted by name, points by label values) so it can be diffed.
#pragma once

#include <string>
#include <vector>

#include "server/metrics/registry.h"

namespace maskserve::server::metrics {

// Content-Type header value for a /metrics response in this format.
inline constexpr char kTextExpositionContentType[] = "text/plain; version=0.0.4; charset=utf-8";

// Sample values: "+Inf", "-Inf", "NaN", else the shortest text that parses
// back to the same double (e.g. "1", "0.25", "1e+21").
std::string FormatSampleValue(double v);
// Histogram `le` values: shortest round-trip in %g style ("0.0005", "1",
// "+Inf"), the spelling the Go client uses, so series from different
// exporters share `le` values.
std::string FormatBucketBound(double v);

// HELP text escaping: backslash and newline.
std::string EscapeHelp(const std::string& help);
// Label value escaping: backslash, double quote and newline.
std::string EscapeLabelValue(const std::string& value);

// The exposition text for already collected families, in the given order.
std::string RenderText(const std::vector<FamilySnapshot>& families);
// Runs the registry's collectors and renders everything.
std::string RenderText(const MetricsRegistry& registry);

}  // namespace maskserve::server::metrics
