#include "server/config.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, config, "",
          "Optional JSON config file: an object whose keys are flag names (e.g. "
          "{\"port\": 50051, \"model\": [\"bert=/models/bert\"]}). Command-line flags and "
          "MASKSERVE_<FLAG> environment variables override it.");
ABSL_FLAG(std::string, bind, "0.0.0.0", "Address the gRPC and metrics listeners bind to.");
ABSL_FLAG(int, port, 50051, "gRPC port (0 = pick a free port).");
ABSL_FLAG(int, metrics_port, 9090,
          "Prometheus /metrics, /healthz and /readyz port (0 = pick a free port, -1 = off).");
ABSL_FLAG(std::vector<std::string>, model, {},
          "Model to serve as name=/path/to/hf_checkpoint_dir; repeatable (or comma-separated). "
          "Without any, the generated demo model is served as 'demo'.");
ABSL_FLAG(std::string, data_dir, "maskserve-data",
          "Directory for whitening profiles and the generated demo model.");
ABSL_FLAG(int, workers, 0,
          "Embedding batching workers per model (0 = 2 when the CPU budget has 2+ cores, each "
          "with half of it, while generation uses all of it; N = N workers of budget / N "
          "threads for embedding and generation).");
ABSL_FLAG(int, intra_op_threads, 0, "oneDNN/OpenMP threads per worker (0 = budget / workers).");
ABSL_FLAG(std::string, dtype, "float32", "Compute precision: float32, bfloat16 or auto.");
ABSL_FLAG(int64_t, max_message_bytes, 64 << 20, "Largest gRPC message in bytes.");
ABSL_FLAG(int, max_inputs_per_request, 512, "Most inputs in one Embed/Tokenize request.");
ABSL_FLAG(int, max_tokens_per_request, 131072, "Most tokens (all inputs) in one request.");
ABSL_FLAG(int, max_new_tokens, 4096, "Largest max_new_tokens a Generate request may ask for.");
ABSL_FLAG(int, max_batch_size, 32, "Dynamic batching: most inputs per engine batch.");
ABSL_FLAG(int, max_batch_tokens, 16384, "Dynamic batching: most real tokens per engine batch.");
ABSL_FLAG(int64_t, max_queue_delay_us, 2000,
          "Dynamic batching: longest wait of the oldest queued input before its batch runs.");
ABSL_FLAG(int, max_queue_size, 4096,
          "Pending inputs per model beyond which requests get RESOURCE_EXHAUSTED.");
ABSL_FLAG(int64_t, kv_cache_bytes, 512ll << 20, "Paged KV-cache pool per generative model.");
ABSL_FLAG(double, shutdown_grace_s, 30,
          "On SIGTERM/SIGINT, how long in-flight requests may take to finish.");
ABSL_FLAG(double, max_connection_age_s, 0,
          "Close client connections (GOAWAY) after this many seconds (0 = never), so that "
          "clients balancing over a DNS name re-resolve it and find new replicas.");
ABSL_FLAG(std::string, log_level, "info", "Minimum log level: debug, info, warn, error.");
ABSL_FLAG(bool, reflection, true, "Serve gRPC server reflection.");
ABSL_FLAG(std::string, tls_cert_file, "",
          "PEM certificate chain for gRPC over TLS (with --tls_key_file); empty = plaintext.");
ABSL_FLAG(std::string, tls_key_file, "", "PEM private key of --tls_cert_file.");
ABSL_FLAG(std::string, tls_client_ca_file, "",
          "PEM CA bundle: clients must present a certificate signed by it (mutual TLS).");
ABSL_FLAG(bool, metrics_tls, false,
          "Serve /metrics, /healthz and /readyz over HTTPS with --tls_cert_file.");
ABSL_FLAG(std::string, auth_tokens_file, "",
          "Bearer tokens file ('<name> <token> <scopes> [max_concurrent=N] [rps=R] [burst=B]' "
          "per line); every call then needs 'authorization: Bearer <token>'. Re-read on SIGHUP. "
          "Empty = no authentication.");
ABSL_FLAG(bool, auth_open_health, true,
          "With --auth_tokens_file: grpc.health.v1.Health needs no token.");
ABSL_FLAG(bool, auth_open_reflection, false,
          "With --auth_tokens_file: server reflection needs no token.");
ABSL_FLAG(int, limit_concurrency, 0,
          "Per token (per client address without authentication): most calls in flight; "
          "0 = unlimited.");
ABSL_FLAG(double, limit_rps, 0,
          "Per token (per client address without authentication): sustained calls per second; "
          "0 = unlimited.");
ABSL_FLAG(double, limit_burst, 0, "Calls allowed at once above --limit_rps (0 = max(1, rps)).");
ABSL_FLAG(bool, shed_on_deadline, true,
          "Refuse an Embed at once (RESOURCE_EXHAUSTED) when the queue ahead of it would "
          "outlast its deadline.");

namespace maskserve::server {
namespace {

const char* const kFlagNames[] = {"bind",
                                  "port",
                                  "metrics_port",
                                  "model",
                                  "data_dir",
                                  "workers",
                                  "intra_op_threads",
                                  "dtype",
                                  "max_message_bytes",
                                  "max_inputs_per_request",
                                  "max_tokens_per_request",
                                  "max_new_tokens",
                                  "max_batch_size",
                                  "max_batch_tokens",
                                  "max_queue_delay_us",
                                  "max_queue_size",
                                  "kv_cache_bytes",
                                  "shutdown_grace_s",
                                  "max_connection_age_s",
                                  "log_level",
                                  "reflection",
                                  "tls_cert_file",
                                  "tls_key_file",
                                  "tls_client_ca_file",
                                  "metrics_tls",
                                  "auth_tokens_file",
                                  "auth_open_health",
                                  "auth_open_reflection",
                                  "limit_concurrency",
                                  "limit_rps",
                                  "limit_burst",
                                  "shed_on_deadline"};

bool IsKnownFlag(const std::string& name) {
  for (const char* n : kFlagNames) {
    if (name == n) return true;
  }
  return false;
}

// absl flags keep only the last occurrence of a flag; --model is repeatable,
// so all occurrences are merged into one comma-separated value first.
std::vector<std::string> MergeRepeatedModelFlags(int argc, char** argv) {
  std::vector<std::string> out;
  std::vector<std::string> models;
  for (int i = 0; i < argc; ++i) {
    std::string arg = argv[i];
    if (i > 0 && arg == "--") {
      for (; i < argc; ++i) out.push_back(argv[i]);
      break;
    }
    for (const std::string prefix : {"--model=", "-model="}) {
      if (absl::StartsWith(arg, prefix)) {
        models.push_back(arg.substr(prefix.size()));
        arg.clear();
        break;
      }
    }
    if (arg.empty()) continue;
    if ((arg == "--model" || arg == "-model") && i + 1 < argc) {
      models.push_back(argv[++i]);
      continue;
    }
    out.push_back(arg);
  }
  if (!models.empty()) out.push_back("--model=" + absl::StrJoin(models, ","));
  return out;
}

// Names of the flags given on the command line (this Abseil version keeps
// IsSpecifiedOnCommandLine private).
std::set<std::string> FlagsOnCommandLine(const std::vector<std::string>& args) {
  std::set<std::string> out;
  for (size_t i = 1; i < args.size(); ++i) {
    absl::string_view a = args[i];
    if (a == "--") break;
    if (!absl::ConsumePrefix(&a, "--") && !absl::ConsumePrefix(&a, "-")) continue;
    std::string name(a.substr(0, a.find('=')));
    if (!IsKnownFlag(name) && absl::StartsWith(name, "no") && IsKnownFlag(name.substr(2))) {
      name = name.substr(2);
    }
    out.insert(name);
  }
  return out;
}

std::string JsonToFlagValue(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_array()) {
    std::vector<std::string> parts;
    for (const auto& e : v) parts.push_back(JsonToFlagValue(e));
    return absl::StrJoin(parts, ",");
  }
  return v.dump();
}

absl::Status ApplyConfigFile(const std::string& path,
                             const std::set<std::string>& on_command_line) {
  std::ifstream in(path);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("--config: cannot read '", path, "'"));
  std::stringstream ss;
  ss << in.rdbuf();
  nlohmann::json j = nlohmann::json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--config: '", path, "' is not a JSON object of flag names to values"));
  }
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (!IsKnownFlag(it.key())) {
      return absl::InvalidArgumentError(
          absl::StrCat("--config: '", path, "' has unknown key '", it.key(), "'"));
    }
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(it.key());
    if (flag == nullptr || on_command_line.count(it.key()) > 0) continue;
    const std::string env = "MASKSERVE_" + absl::AsciiStrToUpper(it.key());
    if (std::getenv(env.c_str()) != nullptr) continue;
    std::string err;
    if (!flag->ParseFrom(JsonToFlagValue(it.value()), &err)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--config: key '", it.key(), "' in '", path, "': ", err));
    }
  }
  return absl::OkStatus();
}

absl::Status ApplyEnvironment(const std::set<std::string>& on_command_line) {
  for (const char* name : kFlagNames) {
    const std::string env = "MASKSERVE_" + absl::AsciiStrToUpper(name);
    const char* value = std::getenv(env.c_str());
    if (value == nullptr) continue;
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr || on_command_line.count(name) > 0) continue;
    std::string err;
    if (!flag->ParseFrom(value, &err)) {
      return absl::InvalidArgumentError(absl::StrCat("environment ", env, ": ", err));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ModelSpec> ParseModelSpec(const std::string& text) {
  static const std::regex kName("[A-Za-z0-9_.-]{1,64}");
  ModelSpec spec;
  const size_t eq = text.find('=');
  if (eq == std::string::npos) {
    spec.path = text;
    std::filesystem::path p(text);
    while (!p.empty() && p.filename().empty()) p = p.parent_path();
    spec.name = p.filename().string();
  } else {
    spec.name = text.substr(0, eq);
    spec.path = text.substr(eq + 1);
  }
  if (spec.path.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("--model '", text, "': empty path"));
  }
  if (!std::regex_match(spec.name, kName)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--model '", text, "': model name must match [A-Za-z0-9_.-]{1,64}, got '", spec.name, "'"));
  }
  return spec;
}

absl::StatusOr<ServerOptions> ParseServerOptions(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "maskserve: gRPC inference server for Transformer models on CPU.\n"
      "  maskserve [--model name=/path/to/hf_dir ...] [--port 50051] [--metrics_port 9090]");
  std::vector<std::string> merged = MergeRepeatedModelFlags(argc, argv);
  std::vector<char*> args;
  for (auto& s : merged) args.push_back(s.data());
  std::vector<char*> positional =
      absl::ParseCommandLine(static_cast<int>(args.size()), args.data());
  if (positional.size() > 1) {
    return absl::InvalidArgumentError(absl::StrCat("unexpected positional argument '",
                                                   positional[1],
                                                   "' (models are given with --model name=path)"));
  }
  const std::set<std::string> given = FlagsOnCommandLine(merged);
  if (absl::Status s = ApplyEnvironment(given); !s.ok()) return s;
  const std::string config = absl::GetFlag(FLAGS_config);
  if (!config.empty()) {
    if (absl::Status s = ApplyConfigFile(config, given); !s.ok()) return s;
  }

  ServerOptions o;
  o.bind = absl::GetFlag(FLAGS_bind);
  o.port = absl::GetFlag(FLAGS_port);
  o.metrics_port = absl::GetFlag(FLAGS_metrics_port);
  for (const std::string& m : absl::GetFlag(FLAGS_model)) {
    if (m.empty()) continue;
    absl::StatusOr<ModelSpec> spec = ParseModelSpec(m);
    if (!spec.ok()) return spec.status();
    o.models.push_back(*spec);
  }
  o.data_dir = absl::GetFlag(FLAGS_data_dir);
  o.workers = absl::GetFlag(FLAGS_workers);
  o.intra_op_threads = absl::GetFlag(FLAGS_intra_op_threads);
  o.dtype = absl::GetFlag(FLAGS_dtype);
  o.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  o.max_inputs_per_request = absl::GetFlag(FLAGS_max_inputs_per_request);
  o.max_tokens_per_request = absl::GetFlag(FLAGS_max_tokens_per_request);
  o.max_new_tokens = absl::GetFlag(FLAGS_max_new_tokens);
  o.max_batch_size = absl::GetFlag(FLAGS_max_batch_size);
  o.max_batch_tokens = absl::GetFlag(FLAGS_max_batch_tokens);
  o.max_queue_delay_us = absl::GetFlag(FLAGS_max_queue_delay_us);
  o.max_queue_size = absl::GetFlag(FLAGS_max_queue_size);
  o.kv_cache_bytes = absl::GetFlag(FLAGS_kv_cache_bytes);
  o.shutdown_grace_s = absl::GetFlag(FLAGS_shutdown_grace_s);
  o.max_connection_age_s = absl::GetFlag(FLAGS_max_connection_age_s);
  o.log_level = absl::GetFlag(FLAGS_log_level);
  o.reflection = absl::GetFlag(FLAGS_reflection);
  o.tls_cert_file = absl::GetFlag(FLAGS_tls_cert_file);
  o.tls_key_file = absl::GetFlag(FLAGS_tls_key_file);
  o.tls_client_ca_file = absl::GetFlag(FLAGS_tls_client_ca_file);
  o.metrics_tls = absl::GetFlag(FLAGS_metrics_tls);
  o.auth_tokens_file = absl::GetFlag(FLAGS_auth_tokens_file);
  o.auth_open_health = absl::GetFlag(FLAGS_auth_open_health);
  o.auth_open_reflection = absl::GetFlag(FLAGS_auth_open_reflection);
  o.limit_concurrency = absl::GetFlag(FLAGS_limit_concurrency);
  o.limit_rps = absl::GetFlag(FLAGS_limit_rps);
  o.limit_burst = absl::GetFlag(FLAGS_limit_burst);
  o.shed_on_deadline = absl::GetFlag(FLAGS_shed_on_deadline);
  o.cpu = DetectCpuBudget();
  if (absl::Status s = ValidateServerOptions(o); !s.ok()) return s;
  return o;
}

absl::Status ValidateServerOptions(const ServerOptions& o) {
  auto bad = [](absl::string_view flag, const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat("--", flag, ": ", why));
  };
  if (o.bind.empty()) return bad("bind", "must not be empty");
  if (o.port < 0 || o.port > 65535) return bad("port", absl::StrCat("out of range: ", o.port));
  if (o.metrics_port < -1 || o.metrics_port > 65535) {
    return bad("metrics_port", absl::StrCat("out of range: ", o.metrics_port));
  }
  if (o.port != 0 && o.port == o.metrics_port) {
    return bad("metrics_port", "must differ from --port");
  }
  std::vector<std::string> names;
  for (const ModelSpec& m : o.models) {
    for (const auto& n : names) {
      if (n == m.name) return bad("model", absl::StrCat("duplicate model name '", m.name, "'"));
    }
    names.push_back(m.name);
  }
  if (o.data_dir.empty()) return bad("data_dir", "must not be empty");
  if (o.workers < 0) return bad("workers", "must be >= 0");
  if (o.intra_op_threads < 0) return bad("intra_op_threads", "must be >= 0");
  if (o.dtype != "float32" && o.dtype != "bfloat16" && o.dtype != "auto") {
    return bad("dtype", absl::StrCat("must be float32, bfloat16 or auto, got '", o.dtype, "'"));
  }
  if (o.max_message_bytes < 1024 || o.max_message_bytes > (int64_t{1} << 31) - 1) {
    return bad("max_message_bytes", "must be in [1024, 2^31-1]");
  }
  if (o.max_inputs_per_request < 1) return bad("max_inputs_per_request", "must be >= 1");
  if (o.max_tokens_per_request < 1) return bad("max_tokens_per_request", "must be >= 1");
  if (o.max_new_tokens < 1) return bad("max_new_tokens", "must be >= 1");
  if (o.max_batch_size < 1) return bad("max_batch_size", "must be >= 1");
  if (o.max_batch_tokens < 1) return bad("max_batch_tokens", "must be >= 1");
  if (o.max_queue_delay_us < 0) return bad("max_queue_delay_us", "must be >= 0");
  if (o.max_queue_size < 1) return bad("max_queue_size", "must be >= 1");
  if (o.kv_cache_bytes < (1 << 20)) return bad("kv_cache_bytes", "must be >= 1 MiB");
  if (!(o.shutdown_grace_s >= 0)) return bad("shutdown_grace_s", "must be >= 0");
  if (!(o.max_connection_age_s >= 0) || o.max_connection_age_s > 86400 * 365) {
    return bad("max_connection_age_s", "must be in [0, 1 year]");
  }
  if (o.tls_cert_file.empty() != o.tls_key_file.empty()) {
    return bad(o.tls_cert_file.empty() ? "tls_cert_file" : "tls_key_file",
               "--tls_cert_file and --tls_key_file go together");
  }
  if (!o.tls_client_ca_file.empty() && o.tls_cert_file.empty()) {
    return bad("tls_client_ca_file", "needs --tls_cert_file and --tls_key_file");
  }
  if (o.metrics_tls && o.tls_cert_file.empty()) {
    return bad("metrics_tls", "needs --tls_cert_file and --tls_key_file");
  }
  if (o.metrics_tls && o.metrics_port < 0) return bad("metrics_tls", "the metrics port is off");
  for (const auto& [flag, path] : {std::pair<const char*, const std::string*>{"tls_cert_file", &o.tls_cert_file},
                                   {"tls_key_file", &o.tls_key_file},
                                   {"tls_client_ca_file", &o.tls_client_ca_file},
                                   {"auth_tokens_file", &o.auth_tokens_file}}) {
    if (!path->empty() && !std::ifstream(*path).good()) {
      return bad(flag, absl::StrCat("cannot read '", *path, "'"));
    }
  }
  if (o.limit_concurrency < 0) return bad("limit_concurrency", "must be >= 0");
  if (!(o.limit_rps >= 0) || o.limit_rps > 1e9) return bad("limit_rps", "must be in [0, 1e9]");
  if (!(o.limit_burst >= 0) || o.limit_burst > 1e9) {
    return bad("limit_burst", "must be in [0, 1e9]");
  }
  return absl::OkStatus();
}

}  // namespace maskserve::server
