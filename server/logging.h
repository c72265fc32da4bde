// One log line per event: "<UTC time> <LEVEL> event=<name> key=value ...".
// Values containing spaces or quotes are quoted, so lines stay grep- and
// logfmt-parsable. Writes are serialised so concurrent events never
// interleave. Secrets (bearer tokens) must never be passed as fields.
#pragma once

#include <initializer_list>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace maskserve::server {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// Minimum level that is written (default kInfo).
void SetMinLogLevel(LogLevel level);
absl::Status ParseLogLevel(absl::string_view name, LogLevel* level);

using LogField = std::pair<absl::string_view, std::string>;

// Writes one line to stderr.
void LogEvent(LogLevel level, absl::string_view event, std::initializer_list<LogField> fields);

// Redirects log output (tests). nullptr restores stderr.
void SetLogSinkForTesting(std::string* sink);

}  // namespace maskserve::server
