#include "client/cli/arg_parser.h"

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace maskserve::client::cli {
namespace {

std::string NotA(const char* what, const std::string& value) {
  return absl::StrCat("'", value, "' is not ", what);
}

}  // namespace

void ArgParser::AddFlag(const std::string& name, bool* out,
                        const std::string& help) {
  Add({name, true, help, [out](const std::string& v) -> std::string {
         if (v.empty() || v == "true" || v == "1") {
           *out = true;
         } else if (v == "false" || v == "0") {
           *out = false;
         } else {
           return NotA("true or false", v);
         }
         return "";
       }});
}

void ArgParser::AddString(const std::string& name, std::string* out,
                          const std::string& help) {
  Add({name, false, help, [out](const std::string& v) -> std::string {
         *out = v;
         return "";
       }});
}

void ArgParser::AddInt(const std::string& name, int* out,
                       const std::string& help) {
  Add({name, false, help, [out](const std::string& v) -> std::string {
         return absl::SimpleAtoi(v, out) ? "" : NotA("an integer", v);
       }});
}

void ArgParser::AddDouble(const std::string& name, double* out,
                          const std::string& help) {
  Add({name, false, help, [out](const std::string& v) -> std::string {
         return absl::SimpleAtod(v, out) ? "" : NotA("a number", v);
       }});
}

void ArgParser::AddOptionalFloat(const std::string& name,
                                 std::optional<float>* out,
                                 const std::string& help) {
  Add({name, false, help, [out](const std::string& v) -> std::string {
         float f = 0;
         if (!absl::SimpleAtof(v, &f)) return NotA("a number", v);
         *out = f;
         return "";
       }});
}

void ArgParser::AddOptionalUint64(const std::string& name,
                                  std::optional<uint64_t>* out,
                                  const std::string& help) {
  Add({name, false, help, [out](const std::string& v) -> std::string {
         uint64_t u = 0;
         if (!absl::SimpleAtoi(v, &u)) return NotA("a non-negative integer", v);
         *out = u;
         return "";
       }});
}

void ArgParser::AddStringList(const std::string& name,
                              std::vector<std::string>* out,
                              const std::string& help) {
  Add({name, false, help, [out](const std::string& v) -> std::string {
         out->push_back(v);
         return "";
       }});
}

void ArgParser::AddIntList(const std::string& name, std::vector<int>* out,
                           const std::string& help) {
  Add({name, false, help, [out](const std::string& v) -> std::string {
         int i = 0;
         if (!absl::SimpleAtoi(v, &i)) return NotA("an integer", v);
         out->push_back(i);
         return "";
       }});
}

const ArgParser::Option* ArgParser::Find(const std::string& name) const {
  for (const Option& o : options_) {
    if (o.name == name) return &o;
  }
  return nullptr;
}

absl::Status ArgParser::Parse(const std::vector<std::string>& args) {
  bool options_done = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (options_done || arg.size() < 2 || arg[0] != '-') {
      positionals_.push_back(arg);
      continue;
    }
    if (arg == "--") {
      options_done = true;
      continue;
    }
    if (arg == "-h" || arg == "--help") {
      help_requested_ = true;
      return absl::OkStatus();
    }
    if (arg[1] != '-') {
      // Negative numbers ("-1") are positional words, not options.
      double unused;
      if (absl::SimpleAtod(arg, &unused)) {
        positionals_.push_back(arg);
        continue;
      }
      return absl::InvalidArgumentError(
          absl::StrCat("unknown option '", arg, "' (options start with --)"));
    }
    std::string name = arg.substr(2);
    std::optional<std::string> value;
    if (const size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
    }
    const Option* option = Find(name);
    if (option == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("unknown option --", name));
    }
    if (!value && !option->is_flag) {
      if (i + 1 >= args.size()) {
        return absl::InvalidArgumentError(
            absl::StrCat("option --", name, " needs a value"));
      }
      value = args[++i];
    }
    const std::string error = option->set(value.value_or(""));
    if (!error.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("--", name, ": ", error));
    }
    seen_.insert(name);
  }
  return absl::OkStatus();
}

std::string ArgParser::Help() const {
  std::string out = absl::StrCat("usage: maskserve-cli [global flags] ", usage_, "\n");
  if (options_.empty()) return out;
  size_t width = 0;
  for (const Option& o : options_) {
    width = std::max(width, o.name.size() + (o.is_flag ? 0 : 4));
  }
  out += "options:\n";
  for (const Option& o : options_) {
    std::string left = absl::StrCat("--", o.name, o.is_flag ? "" : " VAL");
    left.resize(width + 4, ' ');
    absl::StrAppend(&out, "  ", left, o.help, "\n");
  }
  return out;
}

}  // namespace maskserve::client::cli
