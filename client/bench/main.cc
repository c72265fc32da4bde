// maskserve-bench: load generator for a maskserve server.
//
// Closed loop (--mode=closed --concurrency=N): N threads, each with one
// request outstanding; measures what the server sustains.
// Open loop (--mode=open --rate=R): Poisson arrivals at R requests/s served
// by a pool of --concurrency worker threads. Latency is measured from each
// request's *scheduled* send time, so a slow server (or a saturated client)
// shows up as latency instead of silently lowering the offered load
// (coordinated omission).
//
// The run lasts --warmup_s + --duration_s (requests started during warmup
// are not measured) or stops after --requests measured requests, whichever
// is first; every request carries --deadline_ms, so it always ends.
// Mixed workload (--workload=mixed --mix=embed=4,generate=2,stream=2,cancel=1):
// each request is one of those kinds; a cancel is a stream the client hangs
// up on after its first message (counted as ok, "cancelled"). --verify
// compares every answer with a reference fetched before the run (see
// workload.h); answers that differ are counted as "wrong".
// Exit code: 0, 1 when no measured request succeeded or an answer was wrong,
// 2 on bad flags.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/random/distributions.h"
#include "absl/random/random.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "client/bench/latency_stats.h"
#include "client/bench/workload.h"
#include "client/lib/client.h"

ABSL_FLAG(std::string, target, "localhost:50051", "server address host:port");
ABSL_FLAG(std::string, mode, "closed", "closed (fixed concurrency) or open (fixed rate)");
ABSL_FLAG(int, concurrency, 0,
          "closed: client threads, one request each (0 = 4); open: worker "
          "threads, i.e. the most requests in flight (0 = 64)");
ABSL_FLAG(double, rate, 10, "open: mean arrival rate, requests/s (Poisson)");
ABSL_FLAG(double, duration_s, 10, "measured duration, seconds");
ABSL_FLAG(double, warmup_s, 2, "unmeasured warmup before it, seconds");
ABSL_FLAG(int64_t, requests, 0, "stop after this many measured requests (0 = no cap)");
ABSL_FLAG(std::string, workload, "embed", "embed | generate | stream | mixed");
ABSL_FLAG(std::string, mix, "embed=4,generate=2,stream=2,cancel=1",
          "mixed: weights of the request kinds (embed, generate, stream, cancel)");
ABSL_FLAG(bool, verify, false,
          "compare every answer with a reference answer fetched before the run (generation "
          "is then greedy)");
ABSL_FLAG(std::string, model, "demo", "model name");
ABSL_FLAG(std::string, sentences_file, "", "input sentences, one per line (default: built-in)");
ABSL_FLAG(int, batch, 1, "embed: texts per request");
ABSL_FLAG(int, max_new_tokens, 32, "generate/stream: tokens per request");
ABSL_FLAG(int, deadline_ms, 10000, "deadline of each request, ms");
ABSL_FLAG(int, connections, 1, "TCP connections (requests are spread over them)");
ABSL_FLAG(bool, json, false, "print one JSON object instead of text");
ABSL_FLAG(std::string, tls_ca, "", "PEM root CA file (enables TLS)");
ABSL_FLAG(std::string, token_file, "", "bearer token file");
ABSL_FLAG(std::string, lb_policy, "",
          "pick_first (default) or round_robin: load a whole Deployment through its "
          "headless Service (dns:///maskserve-headless.NS.svc.cluster.local:50051)");

namespace maskserve::client::bench {
namespace {

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "error: %s: %s\n", absl::StatusCodeToString(status.code()).c_str(),
               status.message().empty() ? "(no message)" : std::string(status.message()).c_str());
  return 2;
}

double Ms(absl::Duration d) { return absl::ToDoubleMilliseconds(d); }

absl::StatusOr<std::vector<std::string>> LoadSentences(const std::string& path) {
  if (path.empty()) return DefaultSentences();
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read '", path, "'"));
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) lines.push_back(std::move(line));
  }
  if (lines.empty()) return absl::InvalidArgumentError(absl::StrCat("'", path, "' has no sentences"));
  return lines;
}

// Shared state of one run.
struct Run {
  const Workload* workload = nullptr;
  std::vector<std::unique_ptr<Client>>* clients = nullptr;
  absl::Time measure_start;  // end of warmup
  absl::Time end;            // no request is started at or after this
  int64_t cap = 0;           // measured requests at most (0 = no cap)
  std::atomic<int64_t> measured{0};
  std::atomic<uint64_t> seq{0};
  bool stream = false;

  // Claims a measured slot; false when the cap is reached.
  bool ClaimMeasured() { return cap <= 0 || measured.fetch_add(1) < cap; }
  bool CapReached() const { return cap > 0 && measured.load() >= cap; }

  // Sends one request; `origin` is when it counts as sent (the scheduled
  // time in open loop).
  void Execute(absl::Time origin, bool measure, LatencyStats* stats) {
    const uint64_t n = seq.fetch_add(1);
    Client& client = *(*clients)[n % clients->size()];
    const Outcome out = workload->Run(client, n);
    const absl::Time done = absl::Now();
    if (!measure) return;
    ++stats->by_kind[RequestKindName(out.kind)];
    if (!out.status.ok()) {
      ++stats->errors[out.status.code()];
      stats->first_error.emplace(out.status.code(), std::string(out.status.message()));
      if (absl::IsResourceExhausted(out.status)) {
        stats->rejected_latency_ms.push_back(Ms(done - origin));
      }
      return;
    }
    if (!out.wrong.empty()) {
      ++stats->wrong;
      if (stats->wrong_examples.size() < 5) stats->wrong_examples.push_back(out.wrong);
    }
    if (out.cancelled_as_intended) {
      ++stats->ok;
      ++stats->cancelled;
      return;
    }
    ++stats->ok;
    stats->inputs += out.inputs;
    stats->tokens += out.tokens;
    stats->latency_ms.push_back(Ms(done - origin));
    if (stream && out.first_message != absl::InfinitePast()) {
      stats->ttft_ms.push_back(Ms(out.first_message - origin));
    }
    if (out.server_queue_ms >= 0) stats->server_queue_ms.push_back(out.server_queue_ms);
    if (out.server_inference_ms >= 0) {
      stats->server_inference_ms.push_back(out.server_inference_ms);
    }
  }
};

void ClosedWorker(Run* run, LatencyStats* stats) {
  while (true) {
    const absl::Time now = absl::Now();
    if (now >= run->end || run->CapReached()) return;
    const bool measure = now >= run->measure_start;
    if (measure && !run->ClaimMeasured()) return;
    run->Execute(now, measure, stats);
  }
}

// Hands out Poisson arrival times to the open-loop workers.
class ArrivalSchedule {
 public:
  ArrivalSchedule(absl::Time start, double rate) : next_(start), rate_(rate) {}
  absl::Time Next() {
    std::lock_guard<std::mutex> lock(mu_);
    const absl::Time t = next_;
    next_ += absl::Seconds(absl::Exponential<double>(gen_, rate_));
    return t;
  }

 private:
  std::mutex mu_;
  absl::BitGen gen_;
  absl::Time next_;
  double rate_;
};

void OpenWorker(Run* run, ArrivalSchedule* schedule, LatencyStats* stats) {
  while (true) {
    const absl::Time scheduled = schedule->Next();
    if (scheduled >= run->end || run->CapReached()) return;
    const bool measure = scheduled >= run->measure_start;
    if (measure && !run->ClaimMeasured()) return;
    const absl::Time now = absl::Now();
    if (scheduled > now) {
      absl::SleepFor(scheduled - now);
    } else if (measure) {
      stats->max_send_lag_ms = std::max(stats->max_send_lag_ms, Ms(now - scheduled));
    }
    run->Execute(scheduled, measure, stats);
  }
}

nlohmann::json PercentilesJson(const Percentiles& p) {
  return {{"p50", p.p50}, {"p90", p.p90}, {"p99", p.p99}, {"max", p.max}, {"mean", p.mean}};
}

std::string PercentilesText(const Percentiles& p) {
  return absl::StrFormat("p50 %.2f  p90 %.2f  p99 %.2f  max %.2f  mean %.2f", p.p50,
                         p.p90, p.p99, p.max, p.mean);
}

int Main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "load generator for maskserve.\n"
      "  maskserve-bench --mode=closed --concurrency=8 --workload=embed --batch=4\n"
      "  maskserve-bench --mode=open --rate=50 --workload=stream --max_new_tokens=32");
  // --help lists this program's flags (absl's default filter looks for a
  // file named after the binary, which main.cc is not).
  absl::FlagsUsageConfig usage_config;
  usage_config.contains_help_flags = [](absl::string_view file) {
    return absl::StrContains(file, "client/bench/");
  };
  usage_config.contains_helpshort_flags = usage_config.contains_help_flags;
  absl::SetFlagsUsageConfig(usage_config);
  absl::ParseCommandLine(argc, argv);

  const std::string mode = absl::GetFlag(FLAGS_mode);
  int concurrency = absl::GetFlag(FLAGS_concurrency);
  if (concurrency == 0) concurrency = mode == "open" ? 64 : 4;
  const double rate = absl::GetFlag(FLAGS_rate);
  const double duration_s = absl::GetFlag(FLAGS_duration_s);
  const double warmup_s = absl::GetFlag(FLAGS_warmup_s);
  if (mode != "closed" && mode != "open") {
    return Fail(absl::InvalidArgumentError("--mode must be closed or open"));
  }
  if (concurrency < 1 || concurrency > 4096) {
    return Fail(absl::InvalidArgumentError("--concurrency must be in [1, 4096]"));
  }
  if (mode == "open" && !(rate > 0)) {
    return Fail(absl::InvalidArgumentError("--rate must be > 0"));
  }
  if (!(duration_s > 0) || warmup_s < 0) {
    return Fail(absl::InvalidArgumentError("--duration_s must be > 0, --warmup_s >= 0"));
  }
  if (absl::GetFlag(FLAGS_batch) < 1 || absl::GetFlag(FLAGS_max_new_tokens) < 1 ||
      absl::GetFlag(FLAGS_deadline_ms) < 1 || absl::GetFlag(FLAGS_connections) < 1) {
    return Fail(absl::InvalidArgumentError(
        "--batch, --max_new_tokens, --deadline_ms, --connections must be >= 1"));
  }
  auto kind = ParseWorkloadKind(absl::GetFlag(FLAGS_workload));
  if (!kind.ok()) return Fail(kind.status());
  auto mix = ParseMix(absl::GetFlag(FLAGS_mix));
  if (!mix.ok()) return Fail(mix.status());
  auto sentences = LoadSentences(absl::GetFlag(FLAGS_sentences_file));
  if (!sentences.ok()) return Fail(sentences.status());

  ClientOptions client_options;
  client_options.target = absl::GetFlag(FLAGS_target);
  // A benchmark measures the server as it is: no client-side retries.
  client_options.max_retries = 0;
  client_options.tls_root_ca_file = absl::GetFlag(FLAGS_tls_ca);
  client_options.own_connection = absl::GetFlag(FLAGS_connections) > 1;
  client_options.load_balancing_policy = absl::GetFlag(FLAGS_lb_policy);
  if (const std::string path = absl::GetFlag(FLAGS_token_file); !path.empty()) {
    std::ifstream in(path);
    if (!in) return Fail(absl::NotFoundError(absl::StrCat("cannot read '", path, "'")));
    std::stringstream ss;
    ss << in.rdbuf();
    client_options.bearer_token = std::string(absl::StripAsciiWhitespace(ss.str()));
  }
  std::vector<std::unique_ptr<Client>> clients;
  for (int i = 0; i < absl::GetFlag(FLAGS_connections); ++i) {
    auto client = Client::Create(client_options);
    if (!client.ok()) return Fail(client.status());
    clients.push_back(*std::move(client));
  }

  WorkloadOptions wopts;
  wopts.kind = *kind;
  wopts.model = absl::GetFlag(FLAGS_model);
  wopts.sentences = *std::move(sentences);
  wopts.batch = absl::GetFlag(FLAGS_batch);
  wopts.max_new_tokens = absl::GetFlag(FLAGS_max_new_tokens);
  wopts.deadline = absl::Milliseconds(absl::GetFlag(FLAGS_deadline_ms));
  wopts.mix = *mix;
  wopts.verify = absl::GetFlag(FLAGS_verify);
  Workload workload(wopts);
  if (absl::Status s = workload.Prepare(*clients[0]); !s.ok()) {
    std::fprintf(stderr, "error: fetching reference answers: %s\n", s.ToString().c_str());
    return 1;
  }

  Run run;
  run.workload = &workload;
  run.clients = &clients;
  run.stream = *kind == WorkloadKind::kStream || *kind == WorkloadKind::kMixed;
  run.cap = absl::GetFlag(FLAGS_requests);
  const absl::Time start = absl::Now();
  run.measure_start = start + absl::Seconds(warmup_s);
  run.end = run.measure_start + absl::Seconds(duration_s);

  std::vector<LatencyStats> per_thread(concurrency);
  std::vector<std::thread> threads;
  ArrivalSchedule schedule(start, rate);
  for (int i = 0; i < concurrency; ++i) {
    if (mode == "closed") {
      threads.emplace_back(ClosedWorker, &run, &per_thread[i]);
    } else {
      threads.emplace_back(OpenWorker, &run, &schedule, &per_thread[i]);
    }
  }
  for (auto& t : threads) t.join();
  const absl::Time finished = absl::Now();

  LatencyStats stats;
  for (const auto& s : per_thread) stats.Merge(s);
  // Requests in flight at `end` finish afterwards and are counted, so the
  // window runs to when the last one came back.
  const double elapsed_s =
      std::max(1e-9, absl::ToDoubleSeconds(finished - std::max(start, run.measure_start)));
  const Percentiles latency = ComputePercentiles(stats.latency_ms);
  const Percentiles ttft = ComputePercentiles(stats.ttft_ms);
  const bool server_timing = !stats.server_inference_ms.empty();
  const Percentiles server_queue = ComputePercentiles(stats.server_queue_ms);
  const Percentiles server_inference = ComputePercentiles(stats.server_inference_ms);
  const Percentiles rejected = ComputePercentiles(stats.rejected_latency_ms);
  const bool generates = *kind != WorkloadKind::kEmbed;
  const int64_t measured = stats.ok + stats.total_errors();

  if (absl::GetFlag(FLAGS_json)) {
    nlohmann::json j;
    j["target"] = client_options.target;
    j["mode"] = mode;
    j["workload"] = absl::GetFlag(FLAGS_workload);
    j["model"] = wopts.model;
    j["concurrency"] = concurrency;
    if (mode == "open") j["rate"] = rate;
    j["batch"] = wopts.batch;
    if (generates) j["max_new_tokens"] = wopts.max_new_tokens;
    j["elapsed_s"] = elapsed_s;
    j["requests"] = measured;
    j["ok"] = stats.ok;
    nlohmann::json errors = nlohmann::json::object();
    for (const auto& [code, n] : stats.errors) errors[absl::StatusCodeToString(code)] = n;
    j["errors"] = errors;
    nlohmann::json first_error = nlohmann::json::object();
    for (const auto& [code, message] : stats.first_error) {
      first_error[absl::StatusCodeToString(code)] = message;
    }
    j["first_error"] = first_error;
    j["requests_per_s"] = stats.ok / elapsed_s;
    j["inputs_per_s"] = stats.inputs / elapsed_s;
    if (generates) j["tokens_per_s"] = stats.tokens / elapsed_s;
    j["latency_ms"] = PercentilesJson(latency);
    if (run.stream) j["ttft_ms"] = PercentilesJson(ttft);
    if (server_timing) {
      j["server_queue_ms"] = PercentilesJson(server_queue);
      j["server_inference_ms"] = PercentilesJson(server_inference);
    }
    if (mode == "open") j["max_send_lag_ms"] = stats.max_send_lag_ms;
    if (!stats.rejected_latency_ms.empty()) j["rejected_latency_ms"] = PercentilesJson(rejected);
    if (*kind == WorkloadKind::kMixed) {
      j["by_kind"] = stats.by_kind;
      j["cancelled"] = stats.cancelled;
    }
    if (wopts.verify) {
      j["wrong"] = stats.wrong;
      j["wrong_examples"] = stats.wrong_examples;
    }
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("maskserve-bench: %s workload, %s loop, concurrency %d%s, model %s\n",
                absl::GetFlag(FLAGS_workload).c_str(), mode.c_str(), concurrency,
                mode == "open" ? absl::StrFormat(", rate %.1f/s", rate).c_str() : "",
                wopts.model.c_str());
    std::string errors;
    for (const auto& [code, n] : stats.errors) {
      absl::StrAppend(&errors, errors.empty() ? "" : ", ", absl::StatusCodeToString(code), "=", n);
    }
    std::printf("requests:   %lld measured in %.2f s: %lld ok, %lld errors%s\n",
                static_cast<long long>(measured), elapsed_s, static_cast<long long>(stats.ok),
                static_cast<long long>(stats.total_errors()),
                errors.empty() ? "" : absl::StrCat(" (", errors, ")").c_str());
    for (const auto& [code, message] : stats.first_error) {
      std::printf("            first %s: %s\n", absl::StatusCodeToString(code).c_str(),
                  message.c_str());
    }
    std::printf("throughput: %.2f requests/s, %.2f inputs/s", stats.ok / elapsed_s,
                stats.inputs / elapsed_s);
    if (generates) std::printf(", %.1f tokens/s", stats.tokens / elapsed_s);
    std::printf("\nlatency ms: %s\n", PercentilesText(latency).c_str());
    if (run.stream) std::printf("ttft ms:    %s\n", PercentilesText(ttft).c_str());
    if (server_timing) {
      std::printf("server queue ms:     %s\n", PercentilesText(server_queue).c_str());
      std::printf("server inference ms: %s\n", PercentilesText(server_inference).c_str());
    }
    if (!stats.rejected_latency_ms.empty()) {
      std::printf("RESOURCE_EXHAUSTED answered in ms: %s\n", PercentilesText(rejected).c_str());
    }
    if (*kind == WorkloadKind::kMixed) {
      std::string kinds;
      for (const auto& [k, n] : stats.by_kind) {
        absl::StrAppend(&kinds, kinds.empty() ? "" : ", ", k, "=", n);
      }
      std::printf("mix:        %s (%lld cancelled by the client)\n", kinds.c_str(),
                  static_cast<long long>(stats.cancelled));
    }
    if (wopts.verify) {
      std::printf("verified:   %lld wrong answers%s\n", static_cast<long long>(stats.wrong),
                  stats.wrong_examples.empty()
                      ? ""
                      : absl::StrCat(" (first: ", stats.wrong_examples[0], ")").c_str());
    }
    // A few ms of lag is scheduler noise; beyond that the workers were the
    // bottleneck.
    if (mode == "open" && stats.max_send_lag_ms > 10.0) {
      std::printf("note: sends lagged their schedule by up to %.1f ms (all %d workers "
                  "busy); latency includes that wait\n",
                  stats.max_send_lag_ms, concurrency);
    }
  }
  return stats.ok > 0 && stats.wrong == 0 ? 0 : 1;
}

}  // namespace
}  // namespace maskserve::client::bench

int main(int argc, char** argv) { return maskserve::client::bench::Main(argc, argv); }
