// A small option parser for subcommands. absl flags are process-global, so
// the CLI uses them only for the global flags before the command name; each
// command declares its own options here, bound to local variables.
//
// Accepted forms: --name=value, --name value, --flag, --flag=true|false,
// "--" (everything after it is positional), -h / --help.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace maskserve::client::cli {

class ArgParser {
 public:
  // `usage`: one line, e.g. "embed --model M [options] TEXT...".
  explicit ArgParser(std::string usage) : usage_(std::move(usage)) {}

  void AddFlag(const std::string& name, bool* out, const std::string& help);
  void AddString(const std::string& name, std::string* out,
                 const std::string& help);
  void AddInt(const std::string& name, int* out, const std::string& help);
  void AddDouble(const std::string& name, double* out, const std::string& help);
  void AddOptionalFloat(const std::string& name, std::optional<float>* out,
                        const std::string& help);
  void AddOptionalUint64(const std::string& name, std::optional<uint64_t>* out,
                         const std::string& help);
  // Repeatable: each occurrence appends.
  void AddStringList(const std::string& name, std::vector<std::string>* out,
                     const std::string& help);
  void AddIntList(const std::string& name, std::vector<int>* out,
                  const std::string& help);

  // Parses `args` (the words after the command name). INVALID_ARGUMENT on
  // unknown options, missing or malformed values.
  absl::Status Parse(const std::vector<std::string>& args);

  // Words that are not options, in order.
  const std::vector<std::string>& positionals() const { return positionals_; }
  // Whether -h / --help was given (Parse then stops early).
  bool help_requested() const { return help_requested_; }
  // Whether the option appeared on the command line.
  bool seen(const std::string& name) const { return seen_.count(name) > 0; }
  // Usage line plus one line per option.
  std::string Help() const;

 private:
  struct Option {
    std::string name;
    bool is_flag = false;
    std::string help;
    // Stores a value; returns an error message or "" on success.
    std::function<std::string(const std::string&)> set;
  };
  void Add(Option option) { options_.push_back(std::move(option)); }
  const Option* Find(const std::string& name) const;

  std::string usage_;
  std::vector<Option> options_;
  std::vector<std::string> positionals_;
  std::set<std::string> seen_;
  bool help_requested_ = false;
};

}  // namespace maskserve::client::cli
