#include "server/metrics/exposition.h"

#include <charconv>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace maskserve::server::metrics {
namespace {

std::string FormatDouble(double v, bool general) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  std::to_chars_result r = general ? std::to_chars(buf, buf + sizeof(buf), v,
                                                   std::chars_format::general)
                                   : std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, r.ptr);
}

// name{l1="v1",l2="v2"} with an optional extra label (histogram `le`) last.
void AppendSeries(const std::string& name, const std::vector<std::string>& label_names,
                  const std::vector<std::string>& label_values, const char* extra_name,
                  const std::string& extra_value, std::string* out) {
  out->append(name);
  if (label_names.empty() && extra_name == nullptr) return;
  out->push_back('{');
  bool first = true;
  for (size_t i = 0; i < label_names.size(); ++i) {
    if (!first) out->push_back(',');
    first = false;
    absl::StrAppend(out, label_names[i], "=\"", EscapeLabelValue(label_values[i]), "\"");
  }
  if (extra_name != nullptr) {
    if (!first) out->push_back(',');
    absl::StrAppend(out, extra_name, "=\"", EscapeLabelValue(extra_value), "\"");
  }
  out->push_back('}');
}

}  // namespace

std::string FormatSampleValue(double v) { return FormatDouble(v, /*general=*/false); }

std::string FormatBucketBound(double v) { return FormatDouble(v, /*general=*/true); }

std::string EscapeHelp(const std::string& help) {
  std::string out;
  out.reserve(help.size());
  for (char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::string EscapeLabelValue(const std::string& value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::string RenderText(const std::vector<FamilySnapshot>& families) {
  std::string out;
  for (const FamilySnapshot& f : families) {
    absl::StrAppend(&out, "# HELP ", f.name, " ", EscapeHelp(f.help), "\n");
    absl::StrAppend(&out, "# TYPE ", f.name, " ", MetricTypeName(f.type), "\n");
    for (const MetricPoint& p : f.points) {
      if (f.type != MetricType::kHistogram) {
        AppendSeries(f.name, f.label_names, p.label_values, nullptr, "", &out);
        absl::StrAppend(&out, " ", FormatSampleValue(p.value), "\n");
        continue;
      }
      const std::string bucket = f.name + "_bucket";
      const std::vector<uint64_t>& cum = p.histogram.cumulative;
      for (size_t i = 0; i < cum.size(); ++i) {
        const double bound = i < f.bucket_bounds.size() ? f.bucket_bounds[i] : INFINITY;
        AppendSeries(bucket, f.label_names, p.label_values, "le", FormatBucketBound(bound), &out);
        absl::StrAppend(&out, " ", cum[i], "\n");
      }
      AppendSeries(f.name + "_sum", f.label_names, p.label_values, nullptr, "", &out);
      absl::StrAppend(&out, " ", FormatSampleValue(p.histogram.sum), "\n");
      AppendSeries(f.name + "_count", f.label_names, p.label_values, nullptr, "", &out);
      absl::StrAppend(&out, " ", cum.empty() ? 0 : cum.back(), "\n");
    }
  }
  return out;
}

std::string RenderText(const MetricsRegistry& registry) { return RenderText(registry.Collect()); }

}  // namespace maskserve::server::metrics
