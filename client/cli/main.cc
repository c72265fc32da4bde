// maskserve-cli: command-line client for a maskserve server.
//
//   maskserve-cli [global flags] <command> [command options] [args]
//
// Global flags (absl flags, before or after the command): --target, --json,
// --timeout_s, --tls, --tls_ca, --tls_cert, --tls_key, --tls_server_name,
// --token_file, --request_id, --max_retries, --lb_policy. Commands parse their own
// options (client/cli/arg_parser.h). Exit codes: 0 ok, 1 health not
// SERVING, 2 any error ("error: <CODE>: <message>" on stderr).
#include <cstdio>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "client/cli/commands.h"

ABSL_FLAG(std::string, target, "localhost:50051", "server address host:port");
ABSL_FLAG(bool, json, false, "machine-readable JSON output");
ABSL_FLAG(double, timeout_s, 0,
          "deadline per command in seconds (0 = the command's default: 5 s "
          "health, 30-60 s queries, 5 min generation, none for whiten fit)");
ABSL_FLAG(bool, tls, false, "use TLS with the system root CAs");
ABSL_FLAG(std::string, tls_ca, "", "PEM root CA file (implies TLS)");
ABSL_FLAG(std::string, tls_cert, "", "PEM client certificate for mTLS");
ABSL_FLAG(std::string, tls_key, "", "PEM client private key for mTLS");
ABSL_FLAG(std::string, tls_server_name, "", "expected server name in its certificate");
ABSL_FLAG(std::string, token_file, "",
          "file holding a bearer token (sent as 'authorization: Bearer ...')");
ABSL_FLAG(std::string, request_id, "", "x-request-id metadata for the call");
ABSL_FLAG(int, max_retries, 3, "retries of idempotent calls on UNAVAILABLE");
ABSL_FLAG(std::string, lb_policy, "",
          "pick_first (default) or round_robin over every address the target resolves to");

namespace maskserve::client::cli {
namespace {

struct Command {
  const char* name;
  int (*run)(CliContext&, const Args&);
  const char* summary;
};

constexpr Command kCommands[] = {
    {"models", RunModels, "list models: name, state, arch, tasks, dtype, hidden, max_len"},
    {"model", RunModel, "NAME: details of one model"},
    {"embed", RunEmbed, "--model M [--pooling P] [--normalize] [--whitening W] "
                        "[--dimensions N] [--truncate] TEXT... | --file F"},
    {"tokenize", RunTokenize, "--model M TEXT...: ids, tokens, character spans"},
    {"detokenize", RunDetokenize, "--model M ID...: ids back to text"},
    {"generate", RunGenerate, "--model M [--stream] [--max_new_tokens N] "
                              "[--strategy greedy|sample|beam] ... PROMPT"},
    {"paraphrase", RunParaphrase, "--model M [--num_candidates N] [--top_k K] TEXT"},
    {"whiten", RunWhiten, "fit|list|get|delete|export|import: BERT-whitening profiles"},
    {"health", RunHealth, "[SERVICE]: grpc.health.v1 check (exit 0 SERVING, 1 not)"},
};

void PrintHelp(FILE* out) {
  std::fputs(
      "maskserve-cli: command-line client for maskserve\n\n"
      "usage: maskserve-cli [global flags] <command> [options] [args]\n\n"
      "commands:\n",
      out);
  for (const Command& c : kCommands) {
    std::fprintf(out, "  %-11s %s\n", c.name, c.summary);
  }
  std::fputs(
      "\nglobal flags (anywhere before a \"--\"):\n"
      "  --target=HOST:PORT    server address (default localhost:50051)\n"
      "  --json                machine-readable JSON output\n"
      "  --timeout_s=S         deadline in seconds (default per command)\n"
      "  --tls                 use TLS with the system root CAs\n"
      "  --tls_ca=FILE         PEM root CA (implies TLS)\n"
      "  --tls_cert=FILE --tls_key=FILE   client certificate for mutual TLS\n"
      "  --tls_server_name=N   expected name in the server certificate\n"
      "  --token_file=FILE     bearer token file (authorization metadata)\n"
      "  --request_id=ID       x-request-id metadata\n"
      "  --max_retries=N       retries on UNAVAILABLE for idempotent calls (default 3)\n"
      "  --lb_policy=P         pick_first (default) or round_robin, e.g. over\n"
      "                        dns:///maskserve-headless.NS.svc.cluster.local:50051\n"
      "\n'maskserve-cli <command> --help' lists a command's options.\n"
      "exit codes: 0 ok, 1 health not SERVING, 2 error.\n",
      out);
}

// Global flags that take a value (so "--target host:port" consumes two words).
const std::set<std::string>& ValueFlags() {
  static const auto* flags = new std::set<std::string>{
      "target", "timeout_s", "tls_ca", "tls_cert", "tls_key",
      "tls_server_name", "token_file", "request_id", "max_retries", "lb_policy"};
  return *flags;
}
const std::set<std::string>& BoolFlags() {
  static const auto* flags = new std::set<std::string>{"json", "nojson", "tls", "notls"};
  return *flags;
}

int Main(int argc, char** argv) {
  // Split argv into global flags (for absl), the command and its words.
  // Global flags may also follow the command (up to a "--"), as long as
  // their names do not clash with the command's own options (none do).
  std::vector<char*> global = {argv[0]};
  int cmd = -1;
  Args args;
  bool terminated = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (cmd < 0 && (arg == "-h" || arg == "--help" || arg == "help")) {
      PrintHelp(stdout);
      return 0;
    }
    if (terminated || arg.size() < 2 || arg[0] != '-') {
      if (cmd < 0) {
        cmd = i;
      } else {
        args.push_back(arg);
      }
      continue;
    }
    if (arg == "--" && cmd >= 0) {
      terminated = true;
      args.push_back(arg);
      continue;
    }
    std::string name = arg.substr(arg[1] == '-' ? 2 : 1);
    const bool has_value = name.find('=') != std::string::npos;
    name = name.substr(0, name.find('='));
    const bool is_global = ValueFlags().count(name) > 0 || BoolFlags().count(name) > 0;
    if (!is_global) {
      if (cmd >= 0) {
        args.push_back(arg);
        continue;
      }
      std::fprintf(stderr, "error: INVALID_ARGUMENT: unknown global flag %s "
                           "(see maskserve-cli --help)\n", arg.c_str());
      return 2;
    }
    global.push_back(argv[i]);
    if (!has_value && ValueFlags().count(name) > 0) {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "error: INVALID_ARGUMENT: %s needs a value\n", arg.c_str());
        return 2;
      }
      global.push_back(argv[++i]);
    }
  }
  const int global_argc = static_cast<int>(global.size());
  absl::ParseCommandLine(global_argc, global.data());

  if (cmd < 0) {
    PrintHelp(stderr);
    return Fail(absl::InvalidArgumentError("no command given"));
  }
  const std::string name = argv[cmd];
  const Command* command = nullptr;
  for (const Command& c : kCommands) {
    if (name == c.name) command = &c;
  }
  if (command == nullptr) {
    PrintHelp(stderr);
    return Fail(absl::InvalidArgumentError(absl::StrCat("unknown command '", name, "'")));
  }

  ClientOptions options;
  options.target = absl::GetFlag(FLAGS_target);
  options.use_tls = absl::GetFlag(FLAGS_tls);
  options.tls_root_ca_file = absl::GetFlag(FLAGS_tls_ca);
  options.tls_cert_file = absl::GetFlag(FLAGS_tls_cert);
  options.tls_key_file = absl::GetFlag(FLAGS_tls_key);
  options.tls_server_name_override = absl::GetFlag(FLAGS_tls_server_name);
  options.max_retries = absl::GetFlag(FLAGS_max_retries);
  options.load_balancing_policy = absl::GetFlag(FLAGS_lb_policy);
  if (const std::string path = absl::GetFlag(FLAGS_token_file); !path.empty()) {
    std::ifstream in(path);
    if (!in) return Fail(absl::NotFoundError(absl::StrCat("cannot read token file '", path, "'")));
    std::stringstream ss;
    ss << in.rdbuf();
    options.bearer_token = std::string(absl::StripAsciiWhitespace(ss.str()));
    if (options.bearer_token.empty()) {
      return Fail(absl::InvalidArgumentError(absl::StrCat("token file '", path, "' is empty")));
    }
  }
  if (const std::string id = absl::GetFlag(FLAGS_request_id); !id.empty()) {
    options.metadata.emplace_back("x-request-id", id);
  }
  auto client = Client::Create(options);
  if (!client.ok()) return Fail(client.status());

  CliContext ctx;
  ctx.client = client->get();
  ctx.json = absl::GetFlag(FLAGS_json);
  const double timeout_s = absl::GetFlag(FLAGS_timeout_s);
  if (timeout_s < 0) return Fail(absl::InvalidArgumentError("--timeout_s must be >= 0"));
  if (timeout_s > 0) ctx.timeout = absl::Seconds(timeout_s);
  return command->run(ctx, args);
}

}  // namespace
}  // namespace maskserve::client::cli

int main(int argc, char** argv) { return maskserve::client::cli::Main(argc, argv); }
