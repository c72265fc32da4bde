// The subcommands of maskserve-cli. Each takes the words after its name,
// prints its result (human-readable, or JSON with --json) to stdout and
// returns the process exit code: 0 success, 2 error (the message goes to
// stderr as "error: <CODE>: <message>"), 1 for a health check that is not
// SERVING.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "client/cli/arg_parser.h"
#include "client/lib/client.h"
#include "google/protobuf/message.h"

namespace maskserve::client::cli {

// What every command gets from the global flags.
struct CliContext {
  // Connected client (calls are lazy: no I/O has happened yet).
  Client* client = nullptr;
  // --json: machine-readable output.
  bool json = false;
  // --timeout_s when given (> 0); otherwise each command picks its default.
  std::optional<absl::Duration> timeout;

  // Call options with the deadline --timeout_s or `command_default`.
  CallOptions Call(absl::Duration command_default) const {
    CallOptions call;
    call.deadline = timeout.value_or(command_default);
    return call;
  }
};

using Args = std::vector<std::string>;

int RunModels(CliContext& ctx, const Args& args);
int RunModel(CliContext& ctx, const Args& args);
int RunEmbed(CliContext& ctx, const Args& args);
int RunTokenize(CliContext& ctx, const Args& args);
int RunDetokenize(CliContext& ctx, const Args& args);
int RunGenerate(CliContext& ctx, const Args& args);
int RunParaphrase(CliContext& ctx, const Args& args);
int RunWhiten(CliContext& ctx, const Args& args);
int RunHealth(CliContext& ctx, const Args& args);

// Shared helpers.

// Prints "error: <CODE>: <message>" to stderr; returns exit code 2.
int Fail(const absl::Status& status);
// Parses `args` with `parser`; on --help prints the help and sets *exit_code
// to 0, on a usage error prints it and sets *exit_code to 2. Returns whether
// the command should go on.
bool ParseOrExit(ArgParser& parser, const Args& args, int* exit_code);
// INVALID_ARGUMENT naming a required option that is missing.
absl::Status Missing(const std::string& what);
// The message as indented JSON with proto field names and defaults shown.
std::string ToJson(const google::protobuf::Message& message, bool pretty = true);
// Prints ToJson(message) and a newline to stdout.
void PrintJson(const google::protobuf::Message& message);
// Fixed-point float with `digits` decimals.
std::string FormatFloat(double v, int digits = 4);

// Lines of a text file (blank lines skipped), or an error.
absl::StatusOr<std::vector<std::string>> ReadLines(const std::string& path);

// Left-aligned text table with a header row.
class Table {
 public:
  explicit Table(std::vector<std::string> header);
  void AddRow(std::vector<std::string> row);
  std::string Render() const;

 private:
  std::vector<std::vector<std::string>> rows_;
};

}  // namespace maskserve::client::cli
