// Encoder throughput: maskserve's Encoder against the ONNX Runtime peer
// (../shared/peers/ort/ort_bench.js) on the same checkpoint, plus the bare
// oneDNN GEMM rate of the same shapes, all measured interleaved in one run.
//
// Why interleaved: the 2-vCPU VMs drift by up to 2x within minutes, so only
// ratios taken side by side mean anything. For every (batch, len) point the
// bench times, back to back: our FP32 Encode, the ORT peer (one `node
// ort_bench.js --grid BxL` child per point), our BF16 Encode, and the model's
// four per-layer GEMMs (QKV, attention output, FFN up, FFN down) alone through
// MatmulCache at M = batch * len in FP32 and BF16. --passes N repeats that
// and reports medians of the per-pass values and ratios.
//
// Both sides compute the same model: pass the checkpoint dirs that the kit's
// make_model.py wrote and the ONNX files export_onnx.py made from them
// (--peers_work DIR finds DIR/models/NAME and DIR/onnx/NAME.onnx; see
// bench/README.md). Without them the bench writes its own random
// MiniLM-L6 / BERT-base shaped checkpoints and runs without the peer.
//
//   encoder_bench --peers_work /tmp/peers-work            full grid, table
//   encoder_bench --peers_work /tmp/peers-work --quick    reduced grid
//   encoder_bench ... --json                              JSON lines on stdout
//   encoder_bench --help                                  every option
//
// Inputs are those of the peers: batch sequences of exactly len random token
// ids, type ids 0, no padding. Seconds per call are the median of timed calls
// after one untimed warm-up call (>= --min_reps calls and >= --min_time s,
// stopping early once --max_time s are spent, so the big BERT-base points
// stay bounded). GFLOP/s count 2 * (matmul parameters) * tokens plus the
// attention products (4 * len^2 * hidden per sequence and layer).
#include <sched.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "engine/encoder.h"
#include "engine/encoder_arch.h"
#include "engine/kernels/cpu_features.h"
#include "engine/onednn/engine_context.h"
#include "engine/onednn/matmul_cache.h"
#include "engine/onednn/packed_weight.h"
#include "engine/safetensors.h"
#include "engine/safetensors_writer.h"

namespace {

using maskserve::engine::Encoder;
using maskserve::engine::EncoderArch;
using maskserve::engine::EncoderBatch;
using maskserve::engine::EncoderOptions;
using maskserve::engine::MatmulCache;
using maskserve::engine::MatmulDType;
using maskserve::engine::PackedLinear;
using maskserve::engine::PostOp;
using maskserve::engine::SafetensorsDtype;
using maskserve::engine::SafetensorsModel;
using maskserve::engine::SafetensorsWriter;
using json = nlohmann::json;

constexpr const char kUsage[] = R"(usage: encoder_bench [options]
  --peers_work DIR     the peer kit's work dir: models in DIR/models/NAME, ONNX in DIR/onnx/NAME.onnx,
                       onnxruntime-node in DIR/npm/node_modules   [$PEERS_WORK]
  --models LIST        minilm-l6,bert-base (names of checkpoints / presets)      [minilm-l6,bert-base]
  --model_dir NAME=DIR checkpoint dir for NAME (repeatable; overrides --peers_work)
  --onnx NAME=FILE     ONNX export of NAME for the peer (repeatable; overrides --peers_work)
  --gen_dir DIR        where random checkpoints are written when no dir is known
                                                               [/tmp/maskserve-encoder-bench]
  --batches LIST       [1,8,32]          --seqs LIST   [16,128,512]
  --dtypes LIST        f32,bf16          [f32,bf16]
  --threads N          threads of both sides       [process CPU budget: affinity and cgroup quota]
  --passes N           interleaved passes over the grid; medians are reported       [1]
  --min_reps N --min_time S --max_time S   timing per measurement                  [3, 1.0, 8.0]
  --no_peer            skip ONNX Runtime
  --no_bare            skip the bare GEMMs (e.g. to profile Encode alone)
  --node PATH --ort_bench PATH   [node, /work/shared/peers/ort/ort_bench.js]
  --quick              batches 1,32 x seqs 16,128, min_reps 2, min_time 0.5, max_time 4
  --json               JSON lines on stdout instead of the table (progress stays on stderr)
  --write_only         write the random preset checkpoints of --models into --gen_dir and exit
                       (e.g. for serving a MiniLM-shaped model in bench/batching_bench.sh)
)";

// ---------------------------------------------------------------- flags

struct Flags {
  std::string peers_work;
  std::vector<std::string> models = {"minilm-l6", "bert-base"};
  std::map<std::string, std::string> model_dirs, onnx_files;
  std::string gen_dir = "/tmp/maskserve-encoder-bench";
  std::vector<int> batches = {1, 8, 32};
  std::vector<int> seqs = {16, 128, 512};
  std::vector<MatmulDType> dtypes = {MatmulDType::kF32, MatmulDType::kBF16};
  int threads = 0;
  int passes = 1;
  int min_reps = 3;
  double min_time = 1.0;
  double max_time = 8.0;
  bool no_peer = false;
  bool no_bare = false;
  std::string node = "node";
  std::string ort_bench = "/work/shared/peers/ort/ort_bench.js";
  bool json = false;
  bool write_only = false;
};

[[noreturn]] void Die(const std::string& msg) {
  std::fprintf(stderr, "encoder_bench: %s\n", msg.c_str());
  std::exit(1);
}

std::vector<int> IntList(const std::string& s) {
  std::vector<int> out;
  for (absl::string_view p : absl::StrSplit(s, ',', absl::SkipEmpty())) {
    out.push_back(std::atoi(std::string(p).c_str()));
    if (out.back() <= 0) Die("bad list " + s);
  }
  return out;
}

Flags ParseFlags(int argc, char** argv) {
  Flags f;
  if (const char* w = std::getenv("PEERS_WORK")) f.peers_work = w;
  bool quick = false;
  std::map<std::string, std::string> explicit_timing;
  for (int i = 1; i < argc; ++i) {
    std::string key = argv[i];
    if (key.rfind("--", 0) != 0) Die("unexpected argument " + key);
    key = key.substr(2);
    std::string value;
    bool has_value = false;
    if (size_t eq = key.find('='); eq != std::string::npos) {
      value = key.substr(eq + 1);
      key = key.substr(0, eq);
      has_value = true;
    }
    if (key == "help") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    if (key == "no_peer") { f.no_peer = true; continue; }
    if (key == "no_bare") { f.no_bare = true; continue; }
    if (key == "quick") { quick = true; continue; }
    if (key == "json") { f.json = true; continue; }
    if (key == "write_only") { f.write_only = true; continue; }
    if (!has_value) {
      if (i + 1 >= argc) Die("--" + key + " needs a value");
      value = argv[++i];
    }
    auto named = [&](std::map<std::string, std::string>* m) {
      const size_t eq = value.find('=');
      if (eq == std::string::npos) Die("--" + key + " wants NAME=PATH");
      (*m)[value.substr(0, eq)] = value.substr(eq + 1);
    };
    if (key == "peers_work") f.peers_work = value;
    else if (key == "models") f.models = absl::StrSplit(value, ',', absl::SkipEmpty());
    else if (key == "model_dir") named(&f.model_dirs);
    else if (key == "onnx") named(&f.onnx_files);
    else if (key == "gen_dir") f.gen_dir = value;
    else if (key == "batches") f.batches = IntList(value);
    else if (key == "seqs") f.seqs = IntList(value);
    else if (key == "dtypes") {
      f.dtypes.clear();
      for (absl::string_view d : absl::StrSplit(value, ',', absl::SkipEmpty())) {
        if (d == "f32" || d == "fp32") f.dtypes.push_back(MatmulDType::kF32);
        else if (d == "bf16") f.dtypes.push_back(MatmulDType::kBF16);
        else Die("unknown dtype " + std::string(d));
      }
    } else if (key == "threads") f.threads = std::atoi(value.c_str());
    else if (key == "passes") f.passes = std::max(1, std::atoi(value.c_str()));
    else if (key == "min_reps" || key == "min_time" || key == "max_time") explicit_timing[key] = value;
    else if (key == "node") f.node = value;
    else if (key == "ort_bench") f.ort_bench = value;
    else Die("unknown option --" + key + " (see --help)");
  }
  if (quick) {
    f.batches = {1, 32};
    f.seqs = {16, 128};
    f.min_reps = 2;
    f.min_time = 0.5;
    f.max_time = 4.0;
  }
  // Explicit timing flags win over --quick whatever their order.
  if (explicit_timing.count("min_reps")) f.min_reps = std::max(1, std::atoi(explicit_timing["min_reps"].c_str()));
  if (explicit_timing.count("min_time")) f.min_time = std::atof(explicit_timing["min_time"].c_str());
  if (explicit_timing.count("max_time")) f.max_time = std::atof(explicit_timing["max_time"].c_str());
  return f;
}

// ---------------------------------------------------------------- machine

// CPUs this process may use: the affinity mask, capped by a cgroup v2 quota.
int CpuBudget() {
  cpu_set_t set;
  int n = 1;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) n = std::max(1, CPU_COUNT(&set));
  std::ifstream f("/sys/fs/cgroup/cpu.max");
  std::string quota, period;
  if (f >> quota >> period && quota != "max") {
    const double q = std::atof(quota.c_str()), p = std::atof(period.c_str());
    if (q > 0 && p > 0) n = std::min(n, std::max(1, static_cast<int>(std::ceil(q / p))));
  }
  return n;
}

std::string CpuModel() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("model name", 0) == 0) {
      const size_t c = line.find(':');
      if (c != std::string::npos) return line.substr(c + 2);
    }
  }
  return "unknown";
}

std::string Today() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", std::localtime(&t));
  return buf;
}

// Machine-wide busy jiffies (all CPUs) and this process's CPU time, to tell
// how much of the machine *other* processes used while we timed.
struct CpuSnapshot {
  double busy = 0, total = 0, self_s = 0;
  static CpuSnapshot Take() {
    CpuSnapshot s;
    std::ifstream f("/proc/stat");
    std::string cpu;
    f >> cpu;
    std::vector<double> v(8, 0);
    for (double& x : v) f >> x;
    for (double x : v) s.total += x;
    s.busy = s.total - v[3] - v[4];
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    s.self_s = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec +
               ru.ru_stime.tv_usec * 1e-6;
    return s;
  }
};

// Share of the machine's CPU used by other processes between a and b, or -1.
double OtherCpuFrac(const CpuSnapshot& a, const CpuSnapshot& b) {
  const double hz = static_cast<double>(sysconf(_SC_CLK_TCK));
  const double total = b.total - a.total;
  if (total <= 0) return -1;
  return std::max(0.0, (b.busy - a.busy) - (b.self_s - a.self_s) * hz) / total;
}

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double Median(std::vector<double> v) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

struct Timing {
  double median_s = 0, min_s = 0;
  int reps = 0;
  double other_cpu = -1;
  bool cold = false;  // the only call was the warm-up (it alone took >= max_time)
};

// One untimed warm-up call, then timed calls until >= min_reps and >=
// min_time, stopping once max_time is spent (always >= 1 timed call). A
// warm-up that alone takes max_time is the measurement: at tens of seconds
// per call, first-call costs (primitive creation, first touch) are noise,
// and it halves the time of the biggest points.
Timing Measure(const std::function<void()>& call, const Flags& f) {
  const CpuSnapshot w0 = CpuSnapshot::Take();
  const double w_start = Now();
  call();
  const double warm_s = Now() - w_start;
  if (warm_s >= f.max_time) {
    Timing t;
    t.median_s = t.min_s = warm_s;
    t.reps = 1;
    t.cold = true;
    t.other_cpu = OtherCpuFrac(w0, CpuSnapshot::Take());
    return t;
  }
  std::vector<double> times;
  const CpuSnapshot c0 = CpuSnapshot::Take();
  const double start = Now();
  while (true) {
    const double t0 = Now();
    call();
    const double t1 = Now();
    times.push_back(t1 - t0);
    const double spent = t1 - start;
    const int n = static_cast<int>(times.size());
    if (n >= f.min_reps && spent >= f.min_time) break;
    if (spent >= f.max_time) break;
    if (n >= 1000) break;
  }
  Timing t;
  t.other_cpu = OtherCpuFrac(c0, CpuSnapshot::Take());
  t.median_s = Median(times);
  t.min_s = *std::min_element(times.begin(), times.end());
  t.reps = static_cast<int>(times.size());
  return t;
}

// ---------------------------------------------------------------- models

struct ModelSpec {
  std::string name, dir, onnx;  // onnx empty = no peer for this model
};

struct Preset {
  int hidden, layers, heads, ffn;
};

const std::map<std::string, Preset>& Presets() {
  static const auto* p = new std::map<std::string, Preset>{
      {"minilm-l6", {384, 6, 12, 1536}}, {"bert-base", {768, 12, 12, 3072}}};
  return *p;
}

// A random-weight BertModel checkpoint in HF layout, initialised like the
// kit's make_model.py (N(0, 1/fan_in) weights, N(0, 1) embeddings, ...), so
// activations have realistic magnitudes. Written once; reused when present.
absl::Status WriteRandomCheckpoint(const std::string& dir, const Preset& p) {
  if (std::filesystem::exists(dir + "/model.safetensors") &&
      std::filesystem::exists(dir + "/config.json")) {
    return absl::OkStatus();
  }
  std::filesystem::create_directories(dir);
  constexpr int kVocab = 30522, kMaxPos = 512, kTypes = 2;
  std::mt19937 rng(0);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  SafetensorsWriter w;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, float scale, float offset) {
    size_t n = 1;
    for (int64_t d : shape) n *= static_cast<size_t>(d);
    std::vector<float> v(n);
    for (float& x : v) x = offset + scale * normal(rng);
    return w.Add(name, SafetensorsDtype::kF32, std::move(shape), v.data());
  };
  const int H = p.hidden, I = p.ffn;
  std::vector<absl::Status> st;
  st.push_back(add("embeddings.word_embeddings.weight", {kVocab, H}, 1.0f, 0));
  st.push_back(add("embeddings.position_embeddings.weight", {kMaxPos, H}, 1.0f, 0));
  st.push_back(add("embeddings.token_type_embeddings.weight", {kTypes, H}, 1.0f, 0));
  st.push_back(add("embeddings.LayerNorm.weight", {H}, 0.1f, 1.0f));
  st.push_back(add("embeddings.LayerNorm.bias", {H}, 0.1f, 0));
  for (int l = 0; l < p.layers; ++l) {
    const std::string lp = absl::StrCat("encoder.layer.", l, ".");
    auto linear = [&](const std::string& name, int out, int in) {
      st.push_back(add(lp + name + ".weight", {out, in}, 1.0f / std::sqrt(static_cast<float>(in)), 0));
      st.push_back(add(lp + name + ".bias", {out}, 0.02f, 0));
    };
    auto norm = [&](const std::string& name) {
      st.push_back(add(lp + name + ".weight", {H}, 0.1f, 1.0f));
      st.push_back(add(lp + name + ".bias", {H}, 0.1f, 0));
    };
    linear("attention.self.query", H, H);
    linear("attention.self.key", H, H);
    linear("attention.self.value", H, H);
    linear("attention.output.dense", H, H);
    norm("attention.output.LayerNorm");
    linear("intermediate.dense", I, H);
    linear("output.dense", H, I);
    norm("output.LayerNorm");
  }
  for (const absl::Status& s : st) {
    if (!s.ok()) return s;
  }
  w.SetMetadata("format", "pt");
  const json config = {{"architectures", {"BertModel"}},
                       {"model_type", "bert"},
                       {"hidden_size", H},
                       {"num_hidden_layers", p.layers},
                       {"num_attention_heads", p.heads},
                       {"intermediate_size", I},
                       {"vocab_size", kVocab},
                       {"max_position_embeddings", kMaxPos},
                       {"type_vocab_size", kTypes},
                       {"hidden_act", "gelu"},
                       {"layer_norm_eps", 1e-12},
                       {"position_embedding_type", "absolute"},
                       {"pad_token_id", 0}};
  std::ofstream(dir + "/config.json") << config.dump(2) << "\n";
  return w.Write(dir + "/model.safetensors");
}

// The EncoderArch of a plain BERT config.json. Read here rather than through
// LoadModelConfig because model_config.h and matmul_cache.h cannot share a
// translation unit (both declare engine::Activation).
absl::StatusOr<EncoderArch> ReadBertArch(const std::string& dir) {
  std::ifstream in(dir + "/config.json");
  if (!in) return absl::NotFoundError(dir + "/config.json not found");
  try {
    const json j = json::parse(in);
    if (j.value("model_type", std::string()) != "bert") {
      return absl::InvalidArgumentError(dir + ": only model_type bert is benchmarked");
    }
    if (j.value("position_embedding_type", std::string("absolute")) != "absolute") {
      return absl::InvalidArgumentError(dir + ": only absolute positions are benchmarked");
    }
    EncoderArch a;
    a.model_type = "bert";
    a.prefixes = {"bert.", ""};
    a.hidden_size = j.at("hidden_size").get<int>();
    a.embedding_size = a.hidden_size;
    a.num_layers = j.at("num_hidden_layers").get<int>();
    a.num_heads = j.at("num_attention_heads").get<int>();
    a.num_kv_heads = a.num_heads;
    a.head_dim = a.hidden_size / a.num_heads;
    a.intermediate_size = j.at("intermediate_size").get<int>();
    a.vocab_size = j.at("vocab_size").get<int>();
    a.type_vocab_size = j.value("type_vocab_size", 2);
    a.max_position_embeddings = j.value("max_position_embeddings", 512);
    a.layer_norm_eps = j.value("layer_norm_eps", 1e-12f);
    const std::string act = j.value("hidden_act", std::string("gelu"));
    if (act == "gelu") a.activation = EncoderArch::Act::kGeluErf;
    else if (act == "gelu_new") a.activation = EncoderArch::Act::kGeluTanh;
    else if (act == "relu") a.activation = EncoderArch::Act::kRelu;
    else return absl::InvalidArgumentError(dir + ": hidden_act " + act + " not benchmarked");
    return a;
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(dir + "/config.json: " + e.what());
  }
}

// Matmul parameters (weights only) of the transformer stack.
double MatmulParams(const EncoderArch& a) {
  const double H = a.hidden_size, I = a.intermediate_size;
  return a.num_layers * (4 * H * H + 2 * H * I);
}

double ModelFlops(const EncoderArch& a, int batch, int len) {
  const double tokens = static_cast<double>(batch) * len;
  const double attention = a.num_layers * 4.0 * batch * static_cast<double>(len) * len * a.hidden_size;
  return 2 * MatmulParams(a) * tokens + attention;
}

const char* DTypeName(MatmulDType d) { return d == MatmulDType::kF32 ? "f32" : "bf16"; }

// Our output against PyTorch's on NAME.check.json (a padded 2x20 batch made
// by export_onnx.py): proof that both sides compute the same model. The
// padding is trailing, so the real tokens of each row are one packed sequence.
absl::StatusOr<double> VerifyAgainstCheck(const Encoder& enc, const std::string& check_path) {
  std::ifstream in(check_path);
  if (!in) return absl::NotFoundError(check_path + " not found");
  try {
    const json j = json::parse(in);
    const auto ids = j.at("input_ids").get<std::vector<std::vector<int>>>();
    const auto mask = j.at("attention_mask").get<std::vector<std::vector<int>>>();
    const auto types = j.at("token_type_ids").get<std::vector<std::vector<int>>>();
    const auto want = j.at("last_hidden_state").get<std::vector<float>>();
    const int H = enc.hidden_size();
    std::vector<int32_t> tok, ty, cu = {0};
    std::vector<size_t> want_rows;
    for (size_t b = 0; b < ids.size(); ++b) {
      const size_t L = ids[b].size();
      for (size_t t = 0; t < L; ++t) {
        if (mask[b][t] == 0) continue;
        if (t > 0 && mask[b][t - 1] == 0) return absl::UnimplementedError("non-trailing padding");
        tok.push_back(ids[b][t]);
        ty.push_back(types[b][t]);
        want_rows.push_back(b * L + t);
      }
      cu.push_back(static_cast<int32_t>(tok.size()));
    }
    EncoderBatch batch;
    batch.token_ids = tok;
    batch.type_ids = ty;
    batch.cu_seqlens = cu;
    absl::StatusOr<maskserve::engine::EncoderOutput> out = enc.Encode(batch);
    if (!out.ok()) return out.status();
    double diff = 0;
    for (size_t r = 0; r < want_rows.size(); ++r) {
      for (int c = 0; c < H; ++c) {
        diff = std::max(diff, static_cast<double>(std::fabs(
                                  out->last_hidden_state[r * H + c] - want[want_rows[r] * H + c])));
      }
    }
    return diff;
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(check_path + ": " + e.what());
  }
}

// ---------------------------------------------------------------- bare GEMMs

// The four per-layer GEMM shapes of the model with random weights: what the
// encoder's matmuls could reach with nothing else around them.
struct BareLayer {
  PackedLinear qkv, out, up, down;
  int H = 0, I = 0;
  double FlopsPerRow() const { return 2.0 * (4.0 * H * H + 2.0 * H * I); }
};

BareLayer MakeBare(int H, int I, MatmulDType dtype) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> d(-0.05f, 0.05f);
  auto make = [&](int in, int out) {
    std::vector<float> w(static_cast<size_t>(in) * out), b(out);
    for (float& x : w) x = d(rng);
    for (float& x : b) x = d(rng);
    absl::StatusOr<PackedLinear> p = PackedLinear::Create(w, in, out, b, dtype);
    if (!p.ok()) Die("PackedLinear::Create: " + std::string(p.status().message()));
    return *std::move(p);
  };
  BareLayer l;
  l.H = H;
  l.I = I;
  l.qkv = make(H, 3 * H);
  l.out = make(H, H);
  l.up = make(H, I);
  l.down = make(I, H);
  return l;
}

// ---------------------------------------------------------------- ORT peer

struct PeerResult {
  double seqs_per_s = NAN;
  json row;  // the peer's JSON line
};

std::string Quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) {
    if (c == '\'') q += "'\\''";
    else q += c;
  }
  return q + "'";
}

// One `node ort_bench.js MODEL.onnx --grid BxL` child; its reps are capped
// like ours (max_reps from our own FP32 call time) so big points stay bounded.
// cold: one timed call without warm-up (ours was cold too, see Measure).
absl::StatusOr<PeerResult> RunOrt(const Flags& f, const ModelSpec& m, int batch, int len,
                                  int threads, int max_reps, bool cold, bool verify) {
  std::string cmd = absl::StrCat(
      Quote(f.node), " ", Quote(f.ort_bench), " ", Quote(m.onnx), " --grid ", batch, "x", len,
      " --threads ", threads, " --reps ", cold ? 1 : std::min(f.min_reps, max_reps), " --min-time ",
      cold ? 0.0 : f.min_time, " --max-reps ", cold ? 1 : max_reps, " --warmup ", cold ? 0 : 1,
      " --retries 0",
      verify ? " --verify" : "", " 2>&1");
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return absl::InternalError("popen failed: " + cmd);
  std::string output;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, p)) output.append(buf, n);
  const int rc = pclose(p);
  if (rc != 0) {
    return absl::InternalError(absl::StrCat("ort_bench exited with ", WEXITSTATUS(rc), ": ", output));
  }
  std::istringstream lines(output);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.empty() || line[0] != '{') continue;
    try {
      json j = json::parse(line);
      if (j.contains("verify")) {
        std::fprintf(stderr, "  ort verify vs torch: max abs diff %g (%s)\n",
                     j.value("max_abs_diff_last_hidden_state", -1.0),
                     j.value("ok", false) ? "ok" : "FAILED");
        continue;
      }
      if (j.contains("seqs_per_s")) {
        PeerResult r;
        r.seqs_per_s = j["seqs_per_s"].get<double>();
        r.row = std::move(j);
        return r;
      }
    } catch (const json::exception&) {
    }
  }
  return absl::InternalError("no result line from ort_bench: " + output);
}

// ---------------------------------------------------------------- results

struct PointResult {
  std::string model;
  MatmulDType dtype;
  int batch, len;
  std::vector<double> ours, peer, ratio, gflops, bare, e2e_over_bare;  // one per pass
};

std::string Fmt(double v, int prec) {
  if (std::isnan(v)) return "-";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", prec, v);
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  // libgomp reads OMP_WAIT_POLICY when it loads, so set it by re-executing:
  // spinning OpenMP workers steal the second vCPU from the peer (and from
  // each other), and the peers run spin-free too.
  if (std::getenv("OMP_WAIT_POLICY") == nullptr) {
    setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
    execv("/proc/self/exe", argv);
    Die("re-exec with OMP_WAIT_POLICY=PASSIVE failed");
  }
  Flags f = ParseFlags(argc, argv);
  const int threads = f.threads > 0 ? f.threads : CpuBudget();
  maskserve::engine::SetNumThreads(threads);

  if (!f.peers_work.empty()) {
    const std::string npm = f.peers_work + "/npm/node_modules";
    if (std::filesystem::exists(npm)) {
      const char* old = std::getenv("NODE_PATH");
      setenv("NODE_PATH", (old ? npm + ":" + old : npm).c_str(), 1);
    }
  }

  std::vector<ModelSpec> specs;
  for (const std::string& name : f.models) {
    ModelSpec m{name, "", ""};
    if (f.model_dirs.count(name)) m.dir = f.model_dirs[name];
    else if (!f.peers_work.empty() && std::filesystem::exists(f.peers_work + "/models/" + name + "/config.json"))
      m.dir = f.peers_work + "/models/" + name;
    if (f.onnx_files.count(name)) m.onnx = f.onnx_files[name];
    else if (!f.peers_work.empty() && std::filesystem::exists(f.peers_work + "/onnx/" + name + ".onnx"))
      m.onnx = f.peers_work + "/onnx/" + name + ".onnx";
    if (m.dir.empty()) {
      auto it = Presets().find(name);
      if (it == Presets().end()) Die("no checkpoint dir for " + name + " and no such preset");
      m.dir = f.gen_dir + "/" + name;
      std::fprintf(stderr, "writing random %s checkpoint to %s\n", name.c_str(), m.dir.c_str());
      if (absl::Status s = WriteRandomCheckpoint(m.dir, it->second); !s.ok()) Die(s.ToString());
      if (m.onnx.empty()) {
        std::fprintf(stderr, "  (no ONNX export of it: the peer is skipped for %s)\n", name.c_str());
      }
    }
    if (f.no_peer) m.onnx.clear();
    specs.push_back(m);
  }
  if (f.write_only) {
    for (const ModelSpec& m : specs) std::printf("%s\n", m.dir.c_str());
    return 0;
  }

  const std::string date = Today();
  const std::string cpu = CpuModel();
  std::fprintf(stderr,
               "encoder_bench %s | %s | oneDNN ISA %s, AMX-BF16 %s, AVX512-BF16 %s | kernels %s | "
               "threads %d\n",
               date.c_str(), cpu.c_str(), maskserve::engine::IsaDescription().c_str(),
               maskserve::engine::CpuHasAmxBf16() ? "yes" : "no",
               maskserve::engine::CpuHasAvx512Bf16() ? "yes" : "no",
               maskserve::engine::kernels::CpuFeatureSummary().c_str(), threads);
  // BF16 needs an AVX-512 CPU (no BF16 matmul in oneDNN 2.6 on AVX2): measure
  // what this machine can run rather than stop.
  for (auto it = f.dtypes.begin(); it != f.dtypes.end();) {
    if (absl::Status s = maskserve::engine::CheckMatmulDTypeSupported(*it); !s.ok()) {
      std::fprintf(stderr, "skipping %s: %s\n", DTypeName(*it), std::string(s.message()).c_str());
      it = f.dtypes.erase(it);
    } else {
      ++it;
    }
  }
  if (f.dtypes.empty()) Die("no dtype left to measure");
  if (f.json) {
    std::printf("%s\n", json({{"machine", cpu},
                              {"isa", maskserve::engine::IsaDescription()},
                              {"amx_bf16", maskserve::engine::CpuHasAmxBf16()},
                              {"kernels", maskserve::engine::kernels::CpuFeatureSummary()},
                              {"threads", threads},
                              {"time", date}})
                            .dump()
                            .c_str());
    std::fflush(stdout);
  }

  std::vector<PointResult> results;
  const double bench_start = Now();
  for (const ModelSpec& m : specs) {
    absl::StatusOr<EncoderArch> arch = ReadBertArch(m.dir);
    if (!arch.ok()) Die(arch.status().ToString());
    absl::StatusOr<std::unique_ptr<SafetensorsModel>> weights = SafetensorsModel::Open(m.dir);
    if (!weights.ok()) Die(weights.status().ToString());
    std::map<MatmulDType, std::unique_ptr<Encoder>> encoders;
    std::map<MatmulDType, BareLayer> bare;
    // The ORT peer is the FP32 reference; our FP32 call time caps its reps.
    std::vector<MatmulDType> run_dtypes = f.dtypes;
    for (MatmulDType d : run_dtypes) {
      const double t0 = Now();
      absl::StatusOr<std::unique_ptr<Encoder>> enc =
          Encoder::Create(*arch, **weights, EncoderOptions{.dtype = d, .load_mlm_head = false});
      if (!enc.ok()) Die(enc.status().ToString());
      encoders[d] = *std::move(enc);
      bare[d] = MakeBare(arch->hidden_size, arch->intermediate_size, d);
      std::fprintf(stderr, "%s %s: Encoder::Create %.1f s\n", m.name.c_str(), DTypeName(d), Now() - t0);
      if (!m.onnx.empty()) {
        const std::string check = m.onnx.substr(0, m.onnx.size() - 5) + ".check.json";
        absl::StatusOr<double> diff = VerifyAgainstCheck(*encoders[d], check);
        if (diff.ok()) {
          std::fprintf(stderr, "  %s vs torch on %s: max abs diff %.3g\n", DTypeName(d),
                       check.c_str(), *diff);
          if (d == MatmulDType::kF32 && *diff > 1e-3) {
            Die("FP32 output differs from the peer's model: not the same checkpoint?");
          }
        } else {
          std::fprintf(stderr, "  (no check against torch: %s)\n", diff.status().ToString().c_str());
        }
      }
    }
    bool peer_verified = false;
    std::map<std::pair<int, int>, std::map<MatmulDType, PointResult>> points;
    for (int pass = 1; pass <= f.passes; ++pass) {
      for (int len : f.seqs) {
        if (len > arch->max_sequence_length()) continue;
        for (int batch : f.batches) {
          std::mt19937 rng(static_cast<uint32_t>(batch * 1000 + len));
          std::uniform_int_distribution<int32_t> id(0, arch->vocab_size - 1);
          std::vector<int32_t> tokens(static_cast<size_t>(batch) * len);
          for (int32_t& t : tokens) t = id(rng);
          std::vector<int32_t> cu(batch + 1);
          for (int b = 0; b <= batch; ++b) cu[b] = b * len;
          EncoderBatch eb;
          eb.token_ids = tokens;
          eb.cu_seqlens = cu;
          const double flops = ModelFlops(*arch, batch, len);
          const int M = batch * len;
          const std::string tag = absl::StrCat("pass", pass);

          auto emit = [&](json row) {
            row["model"] = m.name;
            row["batch"] = batch;
            row["seq_len"] = len;
            row["threads"] = threads;
            row["tag"] = tag;
            if (f.json) {
              std::printf("%s\n", row.dump().c_str());
              std::fflush(stdout);
            }
          };
          std::map<MatmulDType, double> ours_sps, bare_gflops;
          double ours_f32_s = NAN;
          bool ours_f32_cold = false;
          auto run_ours = [&](MatmulDType d) {
            const Encoder& enc = *encoders[d];
            const Timing t = Measure(
                [&] {
                  absl::StatusOr<maskserve::engine::EncoderOutput> out = enc.Encode(eb);
                  if (!out.ok()) Die("Encode: " + out.status().ToString());
                },
                f);
            ours_sps[d] = batch / t.median_s;
            if (d == MatmulDType::kF32) {
              ours_f32_s = t.median_s;
              ours_f32_cold = t.cold;
            }
            std::fprintf(stderr, "  %-10s %s b%-2d L%-3d ours %9.2f seq/s  (%.1f ms, %d reps%s, other cpu %.2f)\n",
                         m.name.c_str(), DTypeName(d), batch, len, ours_sps[d], t.median_s * 1e3,
                         t.reps, t.cold ? " cold" : "", t.other_cpu);
            emit({{"peer", absl::StrCat("maskserve-encoder-", DTypeName(d))},
                  {"seqs_per_s", ours_sps[d]},
                  {"ms_per_batch_median", t.median_s * 1e3},
                  {"ms_per_batch_min", t.min_s * 1e3},
                  {"reps", t.reps},
                  {"gflops", flops / t.median_s * 1e-9},
                  {"cold", t.cold},
                  {"other_cpu_frac", t.other_cpu}});
          };
          auto run_bare = [&](MatmulDType d) {
            MatmulCache& mm = MatmulCache::Global();
            const BareLayer& l = bare[d];
            std::vector<float> x(static_cast<size_t>(M) * std::max(l.H, l.I), 0.01f);
            std::vector<float> y(static_cast<size_t>(M) * std::max(3 * l.H, l.I));
            auto check = [](absl::Status s) {
              if (!s.ok()) Die("Linear: " + s.ToString());
            };
            const Timing t = Measure(
                [&] {
                  check(mm.Linear(x.data(), M, l.qkv, y.data(), PostOp{}));
                  check(mm.Linear(x.data(), M, l.out, y.data(), PostOp{}));
                  check(mm.Linear(x.data(), M, l.up, y.data(), PostOp{}));
                  check(mm.Linear(x.data(), M, l.down, y.data(), PostOp{}));
                },
                f);
            bare_gflops[d] = l.FlopsPerRow() * M / t.median_s * 1e-9;
            emit({{"bare", absl::StrCat("onednn-matmul-", DTypeName(d))},
                  {"m", M},
                  {"shapes", absl::StrCat(l.H, "x", 3 * l.H, ",", l.H, "x", l.H, ",", l.H, "x", l.I,
                                          ",", l.I, "x", l.H)},
                  {"gflops", bare_gflops[d]},
                  {"reps", t.reps},
                  {"cold", t.cold},
                  {"other_cpu_frac", t.other_cpu}});
          };

          // Order: ours FP32, peer, ours BF16, bare GEMMs: the FP32 pair that
          // is compared directly sits back to back.
          double peer_sps = NAN;
          if (encoders.count(MatmulDType::kF32)) run_ours(MatmulDType::kF32);
          if (!m.onnx.empty()) {
            const double call_s = std::isnan(ours_f32_s) ? 1.0 : ours_f32_s;
            const int max_reps =
                std::clamp(static_cast<int>(f.max_time / std::max(call_s, 1e-6)), 1, 50);
            absl::StatusOr<PeerResult> r = RunOrt(f, m, batch, len, threads, max_reps, ours_f32_cold, !peer_verified);
            peer_verified = true;
            if (!r.ok()) Die(r.status().ToString());
            peer_sps = r->seqs_per_s;
            std::fprintf(stderr, "  %-10s ort  b%-2d L%-3d peer %9.2f seq/s  (%d reps, other cpu %s)\n",
                         m.name.c_str(), batch, len, peer_sps, r->row.value("reps", 0),
                         r->row.contains("other_cpu_frac") ? r->row["other_cpu_frac"].dump().c_str() : "?");
            emit(r->row);
          }
          for (MatmulDType d : run_dtypes) {
            if (d != MatmulDType::kF32) run_ours(d);
          }
          if (!f.no_bare) {
            for (MatmulDType d : run_dtypes) run_bare(d);
          }

          for (MatmulDType d : run_dtypes) {
            PointResult& p = points[{len, batch}][d];
            p.model = m.name;
            p.dtype = d;
            p.batch = batch;
            p.len = len;
            const double g = flops / (batch / ours_sps[d]) * 1e-9;
            p.ours.push_back(ours_sps[d]);
            p.peer.push_back(peer_sps);
            p.ratio.push_back(ours_sps[d] / peer_sps);
            p.gflops.push_back(g);
            const double bg = f.no_bare ? NAN : bare_gflops[d];
            p.bare.push_back(bg);
            p.e2e_over_bare.push_back(g / bg);
          }
        }
      }
    }
    // Table order within a model: dtype, len, batch.
    std::vector<PointResult> mine;
    for (auto& [shape, by_dtype] : points) {
      for (auto& [d, p] : by_dtype) mine.push_back(p);
    }
    std::sort(mine.begin(), mine.end(), [](const PointResult& a, const PointResult& b) {
      if (a.dtype != b.dtype) return a.dtype < b.dtype;
      if (a.len != b.len) return a.len < b.len;
      return a.batch < b.batch;
    });
    results.insert(results.end(), mine.begin(), mine.end());
  }

  std::string table = absl::StrCat(
      "| model | dtype | batch | len | ours seq/s | ORT fp32 seq/s | ours/ORT | ours GFLOP/s | "
      "bare GEMM GFLOP/s | e2e/bare |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const PointResult& p : results) {
    const double ratio = Median(p.ratio), e2e = Median(p.e2e_over_bare);
    absl::StrAppend(&table, "| ", p.model, " | ", DTypeName(p.dtype), " | ", p.batch, " | ", p.len,
                    " | ", Fmt(Median(p.ours), 1), " | ", Fmt(Median(p.peer), 1), " | ",
                    std::isnan(ratio) ? "-" : Fmt(ratio, 2) + "x", " | ", Fmt(Median(p.gflops), 0), " | ", Fmt(Median(p.bare), 0),
                    " | ", Fmt(100 * e2e, 0), "% |\n");
    if (f.json) {
      std::printf("%s\n", json({{"summary", true},
                                {"model", p.model},
                                {"dtype", DTypeName(p.dtype)},
                                {"batch", p.batch},
                                {"seq_len", p.len},
                                {"ours_seqs_per_s", Median(p.ours)},
                                {"peer_seqs_per_s", Median(p.peer)},
                                {"ratio_vs_ort_fp32", ratio},
                                {"ours_gflops", Median(p.gflops)},
                                {"bare_gflops", Median(p.bare)},
                                {"e2e_over_bare", e2e},
                                {"passes", p.ours.size()}})
                              .dump()
                              .c_str());
    }
  }

  // The issue's targets.
  std::string verdict = "\nTargets:\n";
  {
    int checked = 0, missed = 0;
    std::string misses;
    for (const PointResult& p : results) {
      if (p.dtype != MatmulDType::kF32 || p.batch < 8 || std::isnan(Median(p.ratio))) continue;
      ++checked;
      if (Median(p.ratio) < 1.0) {
        ++missed;
        absl::StrAppend(&misses, " ", p.model, " b", p.batch, " L", p.len, " (", Fmt(Median(p.ratio), 2), "x)");
      }
    }
    absl::StrAppend(&verdict, "  FP32 >= 1.0x ORT at batch >= 8: ", checked - missed, "/", checked,
                    " points", missed ? absl::StrCat(", missed:", misses) : std::string(), "\n");
    for (const PointResult& p : results) {
      if (p.dtype == MatmulDType::kBF16 && p.model == "bert-base" && p.batch == 32 && p.len == 128) {
        absl::StrAppend(&verdict, "  BF16 >= 4x ORT FP32 on bert-base b32 L128: ",
                        Fmt(Median(p.ratio), 2), "x (", Median(p.ratio) >= 4 ? "met" : "MISSED", ")\n");
      }
    }
    int bchecked = 0, bmet = 0;
    double lo = 1e30, hi = 0;
    for (const PointResult& p : results) {
      if (p.dtype != MatmulDType::kBF16) continue;
      const double e = Median(p.e2e_over_bare);
      ++bchecked;
      if (e >= 0.4) ++bmet;
      lo = std::min(lo, e);
      hi = std::max(hi, e);
    }
    if (bchecked > 0) {
      absl::StrAppend(&verdict, "  BF16 end-to-end >= 40% of bare BF16 GEMM: ", bmet, "/", bchecked,
                      " points (range ", Fmt(100 * lo, 0), "% .. ", Fmt(100 * hi, 0), "%)\n");
    }
  }
  const std::string header =
      absl::StrCat("encoder_bench ", date, " | ", cpu, " | oneDNN ISA ",
                   maskserve::engine::IsaDescription(), " | threads ", threads, " | passes ",
                   f.passes, " | ", Fmt(Now() - bench_start, 0), " s\n\n");
  if (f.json) {
    std::fprintf(stderr, "%s%s%s", header.c_str(), table.c_str(), verdict.c_str());
  } else {
    std::printf("%s%s%s", header.c_str(), table.c_str(), verdict.c_str());
  }
  return 0;
}
