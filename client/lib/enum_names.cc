#include "client/lib/enum_names.h"

#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace maskserve::client {
namespace {

// POOLING_FIRST_LAST_AVG -> first_last_avg; "default" for *_UNSPECIFIED.
std::string ShortName(const std::string& full, absl::string_view prefix) {
  absl::string_view s = full;
  if (!absl::ConsumePrefix(&s, prefix)) return absl::AsciiStrToLower(full);
  if (s == "UNSPECIFIED") return "default";
  return absl::AsciiStrToLower(s);
}

// Normalises user spelling: upper case, '-' -> '_'.
std::string Normalize(absl::string_view name) {
  std::string s = absl::AsciiStrToUpper(name);
  for (char& c : s) {
    if (c == '-') c = '_';
  }
  return s;
}

template <typename Enum, typename ParseFn>
absl::StatusOr<Enum> ParseEnum(absl::string_view name, absl::string_view prefix,
                               const char* what, ParseFn parse) {
  std::string s = Normalize(name);
  if (s == "DEFAULT") s = "UNSPECIFIED";
  Enum value{};
  if (parse(s, &value) || parse(absl::StrCat(prefix, s), &value)) return value;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown ", what, " '", std::string(name), "'"));
}

}  // namespace

std::string PoolingName(v1::Pooling pooling) {
  return ShortName(v1::Pooling_Name(pooling), "POOLING_");
}

absl::StatusOr<v1::Pooling> ParsePooling(absl::string_view name) {
  return ParseEnum<v1::Pooling>(
      name, "POOLING_", "pooling (cls|mean|first_last_avg|max|last_token)",
      [](const std::string& s, v1::Pooling* out) {
        return v1::Pooling_Parse(s, out);
      });
}

std::string ModelStateName(v1::ModelState state) {
  return ShortName(v1::ModelState_Name(state), "MODEL_STATE_");
}

std::string TaskName(v1::Task task) {
  return ShortName(v1::Task_Name(task), "TASK_");
}

std::string MaskKindName(v1::MaskKind kind) {
  return ShortName(v1::MaskKind_Name(kind), "MASK_KIND_");
}

absl::StatusOr<v1::Strategy> ParseStrategy(absl::string_view name) {
  return ParseEnum<v1::Strategy>(
      name, "STRATEGY_", "strategy (greedy|sample|beam)",
      [](const std::string& s, v1::Strategy* out) {
        return v1::Strategy_Parse(s, out);
      });
}

std::string FinishReasonName(v1::FinishReason reason) {
  return ShortName(v1::FinishReason_Name(reason), "FINISH_REASON_");
}

absl::StatusOr<v1::MaskSpec> ParseMaskSpec(absl::string_view spec) {
  v1::MaskSpec mask;
  absl::string_view s = spec;
  if (absl::ConsumeSuffix(&s, "+causal")) mask.set_causal(true);
  std::vector<std::string> parts = absl::StrSplit(s, ':');
  const auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bad mask '", std::string(spec), "': ", why,
        " (bidirectional | causal | unilm[:PREFIX_LEN] | local:WINDOW | "
        "dilated:RATE | strided:WINDOW:RATE, optionally +causal)"));
  };
  std::vector<int> args;
  for (size_t i = 1; i < parts.size(); ++i) {
    int v = 0;
    if (!absl::SimpleAtoi(parts[i], &v) || v < 0) {
      return bad(absl::StrCat("'", parts[i], "' is not a non-negative integer"));
    }
    args.push_back(v);
  }
  const std::string kind = Normalize(parts[0]);
  const auto want_args = [&](size_t lo, size_t hi) {
    return args.size() >= lo && args.size() <= hi;
  };
  if (kind == "BIDIRECTIONAL" && want_args(0, 0)) {
    mask.set_kind(v1::MASK_KIND_BIDIRECTIONAL);
  } else if (kind == "CAUSAL" && want_args(0, 0)) {
    mask.set_kind(v1::MASK_KIND_CAUSAL);
  } else if (kind == "UNILM" && want_args(0, 1)) {
    mask.set_kind(v1::MASK_KIND_UNILM);
    if (!args.empty()) mask.set_prefix_length(args[0]);
  } else if (kind == "LOCAL" && want_args(1, 1)) {
    mask.set_kind(v1::MASK_KIND_LOCAL);
    mask.set_window(args[0]);
  } else if (kind == "DILATED" && want_args(1, 1)) {
    mask.set_kind(v1::MASK_KIND_DILATED);
    mask.set_rate(args[0]);
  } else if (kind == "STRIDED" && want_args(2, 2)) {
    mask.set_kind(v1::MASK_KIND_STRIDED);
    mask.set_window(args[0]);
    mask.set_rate(args[1]);
  } else {
    return bad("unknown kind or wrong number of arguments");
  }
  return mask;
}

}  // namespace maskserve::client
