// Generation speed: CausalLm decode and prefill tokens/s, the memory-bandwidth
// bound of single-stream decode, and the PyTorch peer
// (../shared/peers/torch_gen_bench.py) on the same checkpoint, interleaved.
//
// What it measures, per model (GPT-2-small shaped random checkpoint that the
// bench writes itself, 124M parameters; and the real stories260K) and dtype
// (FP32; BF16 only where the CPU / oneDNN has BF16 matmuls):
//   decode b1    one sequence: prefill a 128-token prompt, then single-token
//                steps; tokens/s = 1 / median step time
//   decode b16   16 sequences: each step is ONE packed Forward over all 16;
//                tokens/s = 16 / median step time
//   prefill      one 512-token prompt (and 128 for the peer ratio) as one
//                step; tokens/s = prompt / median call time
//   bound        packed weight bytes streamed per decode step (every linear
//                layer and the LM head) / read bandwidth measured in the same
//                run by streaming a 1 GiB buffer: the best batch-1 decode
//                tokens/s the memory system allows
// and, for the GPT-2 checkpoint, the peer in a child process (FP32, batches
// 1 and 16, prompt 128, same threads) right after ours in every pass, so that
// ratios come from the same minute of this machine's drifting speed
// (stories260K is a Llama; the peer only runs GPT-2).
//
// Encoder-decoder models (Seq2SeqModel, FP32; the real OpenNMT
// transliteration model and the golden t5-mini from ../shared): batch 1 and
// 16 sources of --s2s_source random ids, ONE packed EncodeSources, then
// greedy single-token packed decoder steps; tokens/s = batch / median step.
// Their peer is bench/torch_seq2seq_peer.py (a standalone PyTorch 1.13
// re-statement of the two models, checked against their reference outputs
// with --verify), run on the same checkpoint right after ours in every pass.
//
//   generate_bench                   2 passes, GPT-2-small + stories260K, peer if torch is there
//   generate_bench --passes 3 --new_tokens 48 --no_peer --json
//   generate_bench --help
#include <immintrin.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "engine/causal_lm.h"
#include "engine/causal_lm_arch.h"
#include "engine/generative_model.h"
#include "engine/kv_cache.h"
#include "engine/model_config.h"
#include "engine/onednn/engine_context.h"
#include "engine/safetensors.h"
#include "engine/safetensors_writer.h"
#include "engine/seq2seq_arch.h"
#include "engine/seq2seq_model.h"

namespace {

using maskserve::engine::CausalLm;
using maskserve::engine::CausalLmArch;
using maskserve::engine::CausalLmOptions;
using maskserve::engine::KvCacheOptions;
using maskserve::engine::KvCachePool;
using maskserve::engine::LinearKernel;
using maskserve::engine::MaskKind;
using maskserve::engine::MaskSpec;
using maskserve::engine::MatmulDType;
using maskserve::engine::SafetensorsDtype;
using maskserve::engine::SafetensorsModel;
using maskserve::engine::SafetensorsWriter;
using maskserve::engine::Seq2SeqModel;
using maskserve::engine::SeqId;
using maskserve::engine::StepSequence;
using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

struct Flags {
  int passes = 2;           // interleaved repetitions of the whole set
  int new_tokens = 64;      // decode steps timed per run
  int prompt = 128;         // decode prompt length (peer's too)
  int prefill = 512;        // long prefill prompt
  int batch = 16;           // concurrent sequences of the packed decode
  int threads = 0;          // 0 = CPU budget (affinity mask)
  bool peer = true;         // run torch_gen_bench.py when python3 + torch exist
  bool json_out = false;    // JSON lines on stdout (table on stderr)
  bool stories = true;      // also stories260K (../shared/models/stories260K)
  std::string shared = "";  // ../shared (default: next to the source tree)
  std::string python = "/usr/bin/python3";
  bool seq2seq = true;        // also the encoder-decoder models (OpenNMT, t5-mini)
  bool causal = true;         // the causal LMs (GPT-2 small, stories260K)
  int s2s_source = 24;        // source tokens per encoder-decoder stream
  std::string s2s_peer = "";  // torch_seq2seq_peer.py (default: bench/ of this checkout)
};

[[noreturn]] void Die(const std::string& msg) {
  std::fprintf(stderr, "generate_bench: %s\n", msg.c_str());
  std::exit(1);
}

int CpuBudget() {
  cpu_set_t set;
  CPU_ZERO(&set);
  int n = 1;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) n = std::max(1, CPU_COUNT(&set));
  return n;
}

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

double Median(std::vector<double> v) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// ------------------------------------------------------------- bandwidth

// Sum of p[0, n) read as `streams` interleaved sequential streams (n a
// multiple of 32 * streams): several streams keep more cache misses in
// flight per core, which is how PanelLinear reads weights at batch 1.
__attribute__((target("avx2,fma"))) double SumStreams(const float* p, size_t n, int streams) {
  const size_t part = n / streams;
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                   _mm256_setzero_ps()};
  for (size_t i = 0; i < part; i += 16) {
    for (int s = 0; s < streams; ++s) {
      const float* q = p + s * part + i;
      acc[s] = _mm256_add_ps(acc[s], _mm256_add_ps(_mm256_load_ps(q), _mm256_load_ps(q + 8)));
    }
  }
  float t[8];
  _mm256_storeu_ps(t, _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
  double r = 0;
  for (float x : t) r += x;
  return r;
}

// Read bandwidth (bytes/s): the best over `reps` passes of a `bytes` buffer
// split across `threads` threads, with 1 and with 4 streams per thread (the
// bound must not be beaten by a kernel that reads smarter than the probe).
double ReadBandwidth(size_t bytes, int threads, int reps) {
  const size_t unit = size_t{32} * 4 * threads;
  const size_t n = bytes / sizeof(float) / unit * unit;
  float* buf = static_cast<float*>(std::aligned_alloc(64, n * sizeof(float)));
  if (buf == nullptr) Die("cannot allocate the bandwidth buffer");
  std::fill(buf, buf + n, 1.0f);
  double best = 0, sink = 0;
  std::vector<double> sums(threads);
  for (int r = 0; r < reps; ++r) {
    for (int streams : {1, 4}) {
      const auto t0 = Clock::now();
      std::vector<std::thread> pool;
      const size_t chunk = n / threads;
      for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] { sums[t] = SumStreams(buf + chunk * t, chunk, streams); });
      }
      for (std::thread& t : pool) t.join();
      const double sec = Seconds(t0, Clock::now());
      for (double v : sums) sink += v;
      best = std::max(best, static_cast<double>(n * sizeof(float)) / sec);
    }
  }
  std::free(buf);
  if (sink == 42.0) std::printf(" ");  // keep the sums alive
  return best;
}

// ------------------------------------------------------------- checkpoint

// A GPT-2 small (HF GPT2LMHeadModel layout, F32, random weights with the
// peer kit's scales; uniform instead of normal, which is faster to draw and
// irrelevant to speed) written into `dir`.
void WriteGpt2Small(const std::string& dir) {
  const int H = 768, L = 12, I = 3072, V = 50257, P = 1024;
  std::mt19937 rng(1234);
  SafetensorsWriter w;
  std::vector<float> buf;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, double mean, double sd) {
    size_t n = 1;
    for (int64_t d : shape) n *= static_cast<size_t>(d);
    buf.resize(n);
    std::uniform_real_distribution<float> u(static_cast<float>(mean - sd * std::sqrt(3.0)),
                                            static_cast<float>(mean + sd * std::sqrt(3.0)));
    for (float& x : buf) x = u(rng);
    if (absl::Status s = w.Add(name, SafetensorsDtype::kF32, shape, buf.data()); !s.ok()) {
      Die(std::string(s.message()));
    }
  };
  add("transformer.wte.weight", {V, H}, 0, 0.3);
  add("transformer.wpe.weight", {P, H}, 0, 0.3);
  for (int l = 0; l < L; ++l) {
    const std::string p = absl::StrCat("transformer.h.", l, ".");
    add(p + "ln_1.weight", {H}, 1, 0.1);
    add(p + "ln_1.bias", {H}, 0, 0.1);
    add(p + "attn.c_attn.weight", {H, 3 * H}, 0, 1 / std::sqrt(H));
    add(p + "attn.c_attn.bias", {3 * H}, 0, 0.02);
    add(p + "attn.c_proj.weight", {H, H}, 0, 1 / std::sqrt(H));
    add(p + "attn.c_proj.bias", {H}, 0, 0.02);
    add(p + "ln_2.weight", {H}, 1, 0.1);
    add(p + "ln_2.bias", {H}, 0, 0.1);
    add(p + "mlp.c_fc.weight", {H, I}, 0, 1 / std::sqrt(H));
    add(p + "mlp.c_fc.bias", {I}, 0, 0.02);
    add(p + "mlp.c_proj.weight", {I, H}, 0, 1 / std::sqrt(I));
    add(p + "mlp.c_proj.bias", {H}, 0, 0.02);
  }
  add("transformer.ln_f.weight", {H}, 1, 0.1);
  add("transformer.ln_f.bias", {H}, 0, 0.1);
  if (absl::Status s = w.Write(dir + "/model.safetensors"); !s.ok()) Die(std::string(s.message()));
  const std::string config = R"({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
 "n_embd": 768, "n_layer": 12, "n_head": 12, "n_inner": null, "vocab_size": 50257,
 "n_positions": 1024, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-05,
 "bos_token_id": 50256, "eos_token_id": 50256})";
  if (absl::Status s = maskserve::engine::WriteFileAtomically(dir + "/config.json", config);
      !s.ok()) {
    Die(std::string(s.message()));
  }
}

// ------------------------------------------------------------- our side

struct Model {
  std::string name;
  std::string dir;
  std::unique_ptr<CausalLm> lm;
  MatmulDType dtype;
  std::string label;  // "gpt2-small fp32 panel", ...
};

absl::StatusOr<std::unique_ptr<CausalLm>> LoadLm(const std::string& dir, MatmulDType dtype,
                                                 LinearKernel kernel) {
  absl::StatusOr<maskserve::engine::ModelConfig> config = maskserve::engine::LoadModelConfig(dir);
  if (!config.ok()) return config.status();
  absl::StatusOr<CausalLmArch> arch = maskserve::engine::CausalLmArchFromConfig(*config);
  if (!arch.ok()) return arch.status();
  absl::StatusOr<std::unique_ptr<SafetensorsModel>> w = SafetensorsModel::Open(dir);
  if (!w.ok()) return w.status();
  CausalLmOptions o;
  o.dtype = dtype;
  o.linear_kernel = kernel;
  return CausalLm::Create(*arch, **w, o);
}

std::unique_ptr<KvCachePool> Pool(const CausalLm& lm, int tokens) {
  const maskserve::engine::KvLayout l = lm.kv_layout();
  KvCacheOptions o;
  o.block_size_tokens = 16;
  o.num_layers = l.num_layers;
  o.num_kv_heads = l.num_kv_heads;
  o.head_dim = l.head_dim;
  o.total_bytes = int64_t{tokens / 16 + 64} * 2 * l.num_layers * l.num_kv_heads * 16 * l.head_dim *
                  static_cast<int64_t>(sizeof(float));
  absl::StatusOr<std::unique_ptr<KvCachePool>> p = KvCachePool::Create(o);
  if (!p.ok()) Die(std::string(p.status().message()));
  return std::move(*p);
}

MaskSpec Causal() {
  MaskSpec m;
  m.kind = MaskKind::kCausal;
  return m;
}

struct DecodeResult {
  double step_s = 0;     // median seconds per decode step
  double tokens_s = 0;   // batch / step_s
  double prefill_s = 0;  // the prompt prefill of all sequences (one packed step)
};

// batch sequences: prefill `prompt` random tokens each (one packed step),
// then `steps` greedy single-token packed steps.
DecodeResult Decode(const CausalLm& lm, int batch, int prompt, int steps, uint32_t seed) {
  const int V = lm.vocab_size();
  std::unique_ptr<KvCachePool> pool = Pool(lm, batch * (prompt + steps + 16));
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> tok(0, V - 1);
  std::vector<std::vector<int32_t>> inputs(batch);
  std::vector<SeqId> seqs(batch);
  std::vector<StepSequence> step(batch);
  for (int b = 0; b < batch; ++b) {
    inputs[b].resize(prompt);
    for (int32_t& t : inputs[b]) t = tok(rng);
    seqs[b] = pool->AllocateSequence();
  }
  std::vector<float> logits;
  std::vector<double> times;
  DecodeResult r;
  int cached = 0;
  for (int s = 0; s <= steps; ++s) {
    for (int b = 0; b < batch; ++b) {
      const int n = static_cast<int>(inputs[b].size());
      if (absl::Status st = pool->Append(seqs[b], n); !st.ok()) Die(std::string(st.message()));
      step[b].kv_seq = seqs[b];
      step[b].num_cached = cached;
      step[b].tokens = inputs[b];
      step[b].mask = Causal();
    }
    const auto t0 = Clock::now();
    if (absl::Status st = lm.Forward(step, pool.get(), &logits); !st.ok()) {
      Die(std::string(st.message()));
    }
    const double sec = Seconds(t0, Clock::now());
    if (s == 0) {
      r.prefill_s = sec;
    } else {
      times.push_back(sec);
    }
    cached += static_cast<int>(inputs[0].size());
    for (int b = 0; b < batch; ++b) {
      const float* row = logits.data() + static_cast<size_t>(b) * V;
      inputs[b] = {static_cast<int32_t>(std::max_element(row, row + V) - row)};
    }
  }
  r.step_s = Median(times);
  r.tokens_s = batch / r.step_s;
  return r;
}

// Median seconds of one `len`-token prefill (fresh sequence each call).
double Prefill(const CausalLm& lm, int len, int reps) {
  std::unique_ptr<KvCachePool> pool = Pool(lm, len + 32);
  std::mt19937 rng(7);
  std::uniform_int_distribution<int32_t> tok(0, lm.vocab_size() - 1);
  std::vector<int32_t> ids(len);
  for (int32_t& t : ids) t = tok(rng);
  std::vector<double> times;
  std::vector<float> logits;
  for (int r = 0; r <= reps; ++r) {
    const SeqId seq = pool->AllocateSequence();
    if (absl::Status st = pool->Append(seq, len); !st.ok()) Die(std::string(st.message()));
    StepSequence s;
    s.kv_seq = seq;
    s.tokens = ids;
    s.mask = Causal();
    const auto t0 = Clock::now();
    if (absl::Status st = lm.Forward({&s, 1}, pool.get(), &logits); !st.ok()) {
      Die(std::string(st.message()));
    }
    if (r > 0) times.push_back(Seconds(t0, Clock::now()));
    (void)pool->Free(seq);
  }
  return Median(times);
}

// ------------------------------------------------------------- the peer

struct PeerRow {
  double decode_tokens_s = NAN;
  double prefill_ms = NAN;
};

// torch_gen_bench.py on `dir`, FP32; returns batch -> row.
std::map<int, PeerRow> RunPeer(const Flags& f, const std::string& script, const std::string& dir,
                               int threads, int batch) {
  std::map<int, PeerRow> rows;
  const std::string cmd =
      absl::StrCat(f.python, " ", script, " ", dir, " --batches 1,", batch, " --prompt-len ",
                   f.prompt, " --new-tokens ", f.new_tokens, " --variants fp32 --reps 2 --threads ",
                   threads, " --no-verify 2>/dev/null");
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return rows;
  std::string out;
  char line[4096];
  while (std::fgets(line, sizeof(line), p) != nullptr) out += line;
  pclose(p);
  size_t start = 0;
  while (start < out.size()) {
    size_t end = out.find('\n', start);
    if (end == std::string::npos) end = out.size();
    json j = json::parse(out.substr(start, end - start), nullptr, false);
    start = end + 1;
    if (j.is_discarded() || !j.contains("peer") || !j.contains("batch")) continue;
    PeerRow r;
    r.decode_tokens_s = j.value("decode_tokens_per_s", NAN);
    r.prefill_ms = j.value("prefill_ms_median", NAN);
    rows[j["batch"].get<int>()] = r;
  }
  return rows;
}

bool PeerAvailable(const Flags& f, const std::string& script) {
  if (!std::filesystem::exists(script)) return false;
  const std::string cmd = f.python + " -c 'import torch' >/dev/null 2>&1";
  return std::system(cmd.c_str()) == 0;
}

// ------------------------------------------------------------- encoder-decoder

absl::StatusOr<std::unique_ptr<Seq2SeqModel>> LoadS2S(const std::string& dir) {
  absl::StatusOr<maskserve::engine::ModelConfig> config = maskserve::engine::LoadModelConfig(dir);
  if (!config.ok()) return config.status();
  absl::StatusOr<maskserve::engine::Seq2SeqArch> arch =
      maskserve::engine::Seq2SeqArchFromConfig(*config);
  if (!arch.ok()) return arch.status();
  absl::StatusOr<std::unique_ptr<SafetensorsModel>> w = SafetensorsModel::Open(dir);
  if (!w.ok()) return w.status();
  return Seq2SeqModel::Create(*arch, **w, {});
}

struct S2SResult {
  double encode_s = 0;  // one packed encoder pass over every source
  double step_s = 0;    // median seconds per decoder step (after the first)
  double tokens_s = 0;  // batch / step_s
};

// `batch` random sources of `src_len` ids: one EncodeSources, the decoder
// start token of every stream as one packed step, then `steps` greedy
// single-token packed steps (EOS ignored).
S2SResult DecodeS2S(const Seq2SeqModel& m, int batch, int src_len, int steps, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> tok(3, m.arch().source_vocab_size - 1);
  std::vector<std::vector<int32_t>> src(batch, std::vector<int32_t>(src_len));
  for (auto& s : src) {
    for (int32_t& t : s) t = tok(rng);
  }
  std::vector<absl::Span<const int32_t>> spans(src.begin(), src.end());
  S2SResult r;
  const auto e0 = Clock::now();
  absl::StatusOr<std::vector<std::shared_ptr<const maskserve::engine::EncoderState>>> states =
      m.EncodeSources(spans);
  r.encode_s = Seconds(e0, Clock::now());
  if (!states.ok()) Die(std::string(states.status().message()));
  const maskserve::engine::KvLayout l = m.kv_layout();
  KvCacheOptions o;
  o.block_size_tokens = 16;
  o.num_layers = l.num_layers;
  o.num_kv_heads = l.num_kv_heads;
  o.head_dim = l.head_dim;
  o.total_bytes = int64_t{batch} * ((steps + 2) / 16 + 2) * 2 * l.num_layers * l.num_kv_heads * 16 *
                  l.head_dim * static_cast<int64_t>(sizeof(float));
  absl::StatusOr<std::unique_ptr<KvCachePool>> pool = KvCachePool::Create(o);
  if (!pool.ok()) Die(std::string(pool.status().message()));
  const int V = m.vocab_size();
  std::vector<SeqId> seqs(batch);
  std::vector<int32_t> next(batch, m.decoder_start_token_id());
  std::vector<StepSequence> step(batch);
  for (int b = 0; b < batch; ++b) seqs[b] = (*pool)->AllocateSequence();
  std::vector<float> logits;
  std::vector<double> times;
  for (int s = 0; s <= steps; ++s) {
    for (int b = 0; b < batch; ++b) {
      if (absl::Status st = (*pool)->Append(seqs[b], 1); !st.ok()) Die(std::string(st.message()));
      step[b].kv_seq = seqs[b];
      step[b].num_cached = s;
      step[b].tokens = absl::MakeConstSpan(&next[b], 1);
      step[b].mask = Causal();
      step[b].encoder = (*states)[b].get();
    }
    const auto t0 = Clock::now();
    if (absl::Status st = m.Forward(step, pool->get(), &logits); !st.ok()) {
      Die(std::string(st.message()));
    }
    if (s > 0) times.push_back(Seconds(t0, Clock::now()));
    for (int b = 0; b < batch; ++b) {
      const float* row = logits.data() + static_cast<size_t>(b) * V;
      next[b] = static_cast<int32_t>(std::max_element(row, row + V) - row);
    }
  }
  r.step_s = Median(times);
  r.tokens_s = batch / r.step_s;
  return r;
}

struct S2SPeerRow {
  double decode_tokens_s = NAN;
  double encode_ms = NAN;
};

// torch_seq2seq_peer.py on `dir`: batch -> row; `verified` gets its
// --verify result (false when it did not report one).
std::map<int, S2SPeerRow> RunS2SPeer(const Flags& f, const std::string& dir, int threads,
                                     bool verify, bool* verified) {
  std::map<int, S2SPeerRow> rows;
  const std::string cmd =
      absl::StrCat(f.python, " ", f.s2s_peer, " ", dir, " --batches 1,", f.batch, " --source-len ",
                   f.s2s_source, " --new-tokens ", f.new_tokens, " --reps 2 --threads ", threads,
                   verify ? " --verify" : "", " 2>/dev/null");
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return rows;
  std::string out;
  char line[4096];
  while (std::fgets(line, sizeof(line), p) != nullptr) out += line;
  pclose(p);
  size_t start = 0;
  while (start < out.size()) {
    size_t end = out.find('\n', start);
    if (end == std::string::npos) end = out.size();
    json j = json::parse(out.substr(start, end - start), nullptr, false);
    start = end + 1;
    if (j.is_discarded()) continue;
    if (j.contains("verify") && verified != nullptr) *verified = j["verify"].get<bool>();
    if (!j.contains("peer") || !j.contains("batch")) continue;
    S2SPeerRow r;
    r.decode_tokens_s = j.value("decode_tokens_per_s", NAN);
    r.encode_ms = j.value("encode_ms_median", NAN);
    rows[j["batch"].get<int>()] = r;
  }
  return rows;
}

void Usage() {
  std::printf(
      "generate_bench: CausalLm decode / prefill tokens/s, bandwidth bound, PyTorch peer\n"
      "  --passes N        interleaved passes (2)\n"
      "  --new_tokens N    decode steps per run (64)\n"
      "  --prompt N        decode prompt length (128)\n"
      "  --prefill N       long prefill length (512)\n"
      "  --batch N         concurrent sequences of the packed decode (16)\n"
      "  --threads N       OpenMP threads (CPU budget)\n"
      "  --no_peer         skip torch_gen_bench.py\n"
      "  --no_stories      skip stories260K\n"
      "  --no_causal       skip the causal LMs (GPT-2 small, stories260K)\n"
      "  --no_seq2seq      skip the encoder-decoder models (OpenNMT, t5-mini)\n"
      "  --s2s_source N    source tokens per encoder-decoder stream (24)\n"
      "  --s2s_peer FILE   torch_seq2seq_peer.py (bench/ of this checkout)\n"
      "Rows: model, dtype, matmul kernel (panel = PanelLinear, the FP32 default on AVX2-only "
      "CPUs;\n"
      "onednn = MatmulCache), each measured back to back in every pass.\n"
      "  --shared DIR      the shared data dir (../shared next to the sources)\n"
      "  --json            JSON lines on stdout\n");
}

}  // namespace

int main(int argc, char** argv) {
  // libgomp reads OMP_WAIT_POLICY when it loads: set it by re-executing.
  if (std::getenv("OMP_WAIT_POLICY") == nullptr) {
    setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
    execv("/proc/self/exe", argv);
    Die("re-exec with OMP_WAIT_POLICY=PASSIVE failed");
  }
  Flags f;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) Die("missing value for " + a);
      return argv[++i];
    };
    if (a == "--passes")
      f.passes = std::stoi(next());
    else if (a == "--new_tokens")
      f.new_tokens = std::stoi(next());
    else if (a == "--prompt")
      f.prompt = std::stoi(next());
    else if (a == "--prefill")
      f.prefill = std::stoi(next());
    else if (a == "--batch")
      f.batch = std::stoi(next());
    else if (a == "--threads")
      f.threads = std::stoi(next());
    else if (a == "--no_peer")
      f.peer = false;
    else if (a == "--no_stories")
      f.stories = false;
    else if (a == "--no_causal")
      f.causal = false;
    else if (a == "--no_seq2seq")
      f.seq2seq = false;
    else if (a == "--s2s_source")
      f.s2s_source = std::stoi(next());
    else if (a == "--s2s_peer")
      f.s2s_peer = next();
    else if (a == "--shared")
      f.shared = next();
    else if (a == "--json")
      f.json_out = true;
    else if (a == "--help" || a == "-h") {
      Usage();
      return 0;
    } else {
      Die("unknown flag " + a + " (--help)");
    }
  }
  if (f.shared.empty()) {
    // $MASKSERVE_SHARED, else the first "<ancestor>/shared" of this binary
    // (build trees live under the checkout, ../shared next to it).
    if (const char* env = std::getenv("MASKSERVE_SHARED")) {
      f.shared = env;
    } else {
      std::error_code ec;
      std::filesystem::path p = std::filesystem::read_symlink("/proc/self/exe", ec);
      for (; !ec && p.has_parent_path() && p != p.parent_path(); p = p.parent_path()) {
        if (std::filesystem::exists(p / "shared" / "golden", ec)) {
          f.shared = (p / "shared").string();
          break;
        }
      }
    }
  }
  if (f.s2s_peer.empty()) {
    // bench/torch_seq2seq_peer.py of the first ancestor of this binary that
    // has it (build trees live under the checkout).
    std::error_code ec;
    std::filesystem::path p = std::filesystem::read_symlink("/proc/self/exe", ec);
    for (; !ec && p.has_parent_path() && p != p.parent_path(); p = p.parent_path()) {
      if (std::filesystem::exists(p / "bench" / "torch_seq2seq_peer.py", ec)) {
        f.s2s_peer = (p / "bench" / "torch_seq2seq_peer.py").string();
        break;
      }
    }
  }
  const int threads = f.threads > 0 ? f.threads : CpuBudget();
  maskserve::engine::SetNumThreads(threads);
  FILE* table = f.json_out ? stderr : stdout;

  // Models.
  char tmpl[] = "/tmp/generate_bench.XXXXXX";
  const char* tmp = mkdtemp(tmpl);
  if (tmp == nullptr) Die("mkdtemp failed");
  const std::string gpt2_dir = std::string(tmp) + "/gpt2-small";
  std::filesystem::create_directories(gpt2_dir);
  if (f.causal) {
    std::fprintf(table, "writing a random GPT-2 small checkpoint to %s ...\n", gpt2_dir.c_str());
    WriteGpt2Small(gpt2_dir);
  }
  // Per model and dtype: the default kernel choice (kAuto), plus the other
  // kernel when kAuto picked PanelLinear, to show what it buys.
  std::vector<Model> models;
  const std::string stories = f.shared + "/models/stories260K";
  for (const std::string& name : {std::string("gpt2-small"), std::string("stories260K")}) {
    if (!f.causal) break;
    const std::string dir = name == "gpt2-small" ? gpt2_dir : stories;
    if (name == "stories260K" &&
        (!f.stories || !std::filesystem::exists(dir + "/model.safetensors"))) {
      continue;
    }
    for (MatmulDType dt : {MatmulDType::kF32, MatmulDType::kBF16}) {
      const char* dn = dt == MatmulDType::kF32 ? "fp32" : "bf16";
      absl::StatusOr<std::unique_ptr<CausalLm>> lm = LoadLm(dir, dt, LinearKernel::kAuto);
      if (!lm.ok()) {
        std::fprintf(table, "%s %s: skipped (%s)\n", name.c_str(), dn,
                     std::string(lm.status().message()).c_str());
        continue;
      }
      const bool panel = (*lm)->uses_panel_linear();
      models.push_back({name, dir, std::move(*lm), dt,
                        absl::StrCat(name, " ", dn, panel ? " panel" : " onednn")});
      if (panel) {
        absl::StatusOr<std::unique_ptr<CausalLm>> o = LoadLm(dir, dt, LinearKernel::kOneDnn);
        if (o.ok()) {
          models.push_back({name, dir, std::move(*o), dt, absl::StrCat(name, " ", dn, " onednn")});
        }
      }
    }
  }
  const std::string peer_script = f.shared + "/peers/torch_gen_bench.py";
  const bool peer = f.peer && PeerAvailable(f, peer_script);
  if (f.peer && !peer) {
    std::fprintf(table,
                 "peer: skipped (%s or python3 torch missing; scripts/install-deps.sh --bench)\n",
                 peer_script.c_str());
  }
  struct S2S {
    std::string name;
    std::string dir;
    std::unique_ptr<Seq2SeqModel> m;
  };
  std::vector<S2S> s2s;
  if (f.seq2seq) {
    for (const auto& [name, rel] : {std::pair<std::string, std::string>{
                                        "opennmt-aren", "models/opennmt-aren-transliteration"},
                                    {"t5-mini", "golden/models/t5-mini"}}) {
      const std::string dir = f.shared + "/" + rel;
      if (!std::filesystem::exists(dir + "/model.safetensors")) {
        std::fprintf(table, "%s: skipped (%s not found)\n", name.c_str(), dir.c_str());
        continue;
      }
      absl::StatusOr<std::unique_ptr<Seq2SeqModel>> m = LoadS2S(dir);
      if (!m.ok()) Die(std::string(m.status().message()));
      s2s.push_back({name, dir, std::move(*m)});
    }
  }
  const bool s2s_peer = !s2s.empty() && f.peer && std::filesystem::exists(f.s2s_peer) &&
                        std::system((f.python + " -c 'import torch' >/dev/null 2>&1").c_str()) == 0;
  if (!s2s.empty() && f.peer && !s2s_peer) {
    std::fprintf(table, "seq2seq peer: skipped (%s or python3 torch missing)\n",
                 f.s2s_peer.c_str());
  }
  std::fprintf(table, "threads %d, oneDNN ISA %s, prompt %d, %d decode steps, packed batch %d\n",
               threads, maskserve::engine::IsaDescription().c_str(), f.prompt, f.new_tokens,
               f.batch);

  // Per (model, dtype): per-pass values.
  struct Acc {
    std::vector<double> b1, bn, prefill_long, prefill_short, bound, bw, peer_b1, peer_bn,
        peer_prefill, r_b1, r_bn, r_prefill, frac;
  };
  std::map<std::string, Acc> acc;
  for (int pass = 0; pass < f.passes; ++pass) {
    std::fprintf(table, "\n--- pass %d/%d\n", pass + 1, f.passes);
    for (const Model& m : models) {
      const std::string& key = m.label;
      Acc& a = acc[key];
      const double bw = ReadBandwidth(size_t{1} << 30, threads, 3);
      const double bytes = static_cast<double>(m.lm->packed_weight_bytes());
      const double bound = bw / bytes;
      const DecodeResult d1 = Decode(*m.lm, 1, f.prompt, f.new_tokens, 11 + pass);
      const DecodeResult dn = Decode(*m.lm, f.batch, f.prompt, f.new_tokens, 12 + pass);
      const int long_reps = m.name == "gpt2-small" ? 2 : 5;
      const double pl = Prefill(*m.lm, f.prefill, long_reps);
      const double ps = Prefill(*m.lm, f.prompt, 3);
      a.bw.push_back(bw / 1e9);
      a.bound.push_back(bound);
      a.b1.push_back(d1.tokens_s);
      a.bn.push_back(dn.tokens_s);
      a.prefill_long.push_back(f.prefill / pl);
      a.prefill_short.push_back(f.prompt / ps);
      a.frac.push_back(100 * d1.tokens_s / bound);
      std::fprintf(table,
                   "%-18s decode b1 %8.1f tok/s (%.2f ms/step) | bound %7.1f tok/s (%.0f MB/token "
                   "@ %.1f GB/s) = %3.0f%% | decode b%d %8.1f tok/s (x%.1f) | prefill %d: %8.0f "
                   "tok/s, %d: %8.0f tok/s\n",
                   key.c_str(), d1.tokens_s, d1.step_s * 1e3, bound, bytes / 1e6, bw / 1e9,
                   100 * d1.tokens_s / bound, f.batch, dn.tokens_s, dn.tokens_s / d1.tokens_s,
                   f.prefill, f.prefill / pl, f.prompt, f.prompt / ps);
      json row = {{"model", m.name},
                  {"kernel", m.lm->uses_panel_linear() ? "panel" : "onednn"},
                  {"dtype", m.dtype == MatmulDType::kF32 ? "fp32" : "bf16"},
                  {"pass", pass},
                  {"decode_b1_tokens_per_s", d1.tokens_s},
                  {"decode_b" + std::to_string(f.batch) + "_tokens_per_s", dn.tokens_s},
                  {"prefill_" + std::to_string(f.prefill) + "_tokens_per_s", f.prefill / pl},
                  {"prefill_" + std::to_string(f.prompt) + "_tokens_per_s", f.prompt / ps},
                  {"bandwidth_gb_per_s", bw / 1e9},
                  {"weight_bytes_per_token", bytes},
                  {"bound_tokens_per_s", bound},
                  {"threads", threads}};
      // The peer once per pass, after our default (first) GPT-2 FP32 entry.
      if (peer && m.name == "gpt2-small" && m.dtype == MatmulDType::kF32 && &m == &models.front()) {
        std::map<int, PeerRow> pr = RunPeer(f, peer_script, m.dir, threads, f.batch);
        if (pr.count(1) && pr.count(f.batch)) {
          const double p1 = pr[1].decode_tokens_s, pn = pr[f.batch].decode_tokens_s;
          const double pp = f.prompt / (pr[1].prefill_ms / 1e3);
          a.peer_b1.push_back(p1);
          a.peer_bn.push_back(pn);
          a.peer_prefill.push_back(pp);
          a.r_b1.push_back(d1.tokens_s / p1);
          a.r_bn.push_back(dn.tokens_s / pn);
          a.r_prefill.push_back((f.prompt / ps) / pp);
          std::fprintf(table,
                       "%-18s decode b1 %8.1f tok/s | decode b%d %8.1f tok/s | prefill %d %8.0f "
                       "tok/s  => ours/peer: b1 x%.2f, b%d x%.2f, prefill x%.2f\n",
                       "  torch-1.13 fp32", p1, f.batch, pn, f.prompt, pp, d1.tokens_s / p1,
                       f.batch, dn.tokens_s / pn, (f.prompt / ps) / pp);
          row["peer_decode_b1_tokens_per_s"] = p1;
          row["peer_decode_bn_tokens_per_s"] = pn;
          row["peer_prefill_tokens_per_s"] = pp;
        } else {
          std::fprintf(table, "  peer: no result\n");
        }
      }
      if (f.json_out) std::printf("%s\n", row.dump().c_str());
    }
    for (const S2S& m : s2s) {
      Acc& a = acc["s2s " + m.name];
      const S2SResult d1 = DecodeS2S(*m.m, 1, f.s2s_source, f.new_tokens, 21 + pass);
      const S2SResult dn = DecodeS2S(*m.m, f.batch, f.s2s_source, f.new_tokens, 22 + pass);
      a.b1.push_back(d1.tokens_s);
      a.bn.push_back(dn.tokens_s);
      a.prefill_long.push_back(dn.encode_s * 1e3);
      std::fprintf(table,
                   "%-18s decode b1 %8.1f tok/s (%.2f ms/step) | decode b%d %8.1f tok/s (x%.1f) | "
                   "encode %d x %d: %.2f ms\n",
                   m.name.c_str(), d1.tokens_s, d1.step_s * 1e3, f.batch, dn.tokens_s,
                   dn.tokens_s / d1.tokens_s, f.batch, f.s2s_source, dn.encode_s * 1e3);
      json row = {{"model", m.name},
                  {"kind", "seq2seq"},
                  {"kernel", m.m->uses_panel_linear() ? "panel" : "onednn"},
                  {"dtype", "fp32"},
                  {"pass", pass},
                  {"source_len", f.s2s_source},
                  {"decode_b1_tokens_per_s", d1.tokens_s},
                  {"decode_b" + std::to_string(f.batch) + "_tokens_per_s", dn.tokens_s},
                  {"encode_b" + std::to_string(f.batch) + "_ms", dn.encode_s * 1e3},
                  {"threads", threads}};
      if (s2s_peer) {
        bool verified = false;
        std::map<int, S2SPeerRow> pr = RunS2SPeer(f, m.dir, threads, pass == 0, &verified);
        if (pass == 0) {
          std::fprintf(table, "  torch peer re-statement vs %s reference outputs: %s\n",
                       m.name.c_str(), verified ? "identical ids" : "MISMATCH or no answer");
        }
        if (pr.count(1) && pr.count(f.batch)) {
          const double p1 = pr[1].decode_tokens_s, pn = pr[f.batch].decode_tokens_s;
          a.peer_b1.push_back(p1);
          a.peer_bn.push_back(pn);
          a.r_b1.push_back(d1.tokens_s / p1);
          a.r_bn.push_back(dn.tokens_s / pn);
          std::fprintf(table,
                       "%-18s decode b1 %8.1f tok/s | decode b%d %8.1f tok/s | encode %.2f ms  "
                       "=> ours/peer: b1 x%.2f, b%d x%.2f\n",
                       "  torch-1.13 fp32", p1, f.batch, pn, pr[f.batch].encode_ms,
                       d1.tokens_s / p1, f.batch, dn.tokens_s / pn);
          row["peer_decode_b1_tokens_per_s"] = p1;
          row["peer_decode_bn_tokens_per_s"] = pn;
          row["peer_encode_bn_ms"] = pr[f.batch].encode_ms;
        } else {
          std::fprintf(table, "  seq2seq peer: no result\n");
        }
      }
      if (f.json_out) std::printf("%s\n", row.dump().c_str());
    }
  }

  std::fprintf(table,
               "\n=== medians over %d passes (ours/peer: per-pass ratios of the first row)\n",
               f.passes);
  std::fprintf(table,
               "| model | decode b1 tok/s | bound tok/s | b1 / bound | decode b%d tok/s | b%d / b1 "
               "| prefill %d tok/s | prefill %d tok/s | peer b1 | peer b%d | ours/peer b1 | "
               "ours/peer b%d | ours/peer prefill %d |\n",
               f.batch, f.batch, f.prefill, f.prompt, f.batch, f.batch, f.prompt);
  std::fprintf(table, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const Model& m : models) {
    const std::string& key = m.label;
    Acc& a = acc[key];
    std::vector<double> scale;
    for (size_t i = 0; i < a.b1.size(); ++i) scale.push_back(a.bn[i] / a.b1[i]);
    auto fmt = [](const std::vector<double>& v, const char* spec) {
      if (v.empty()) return std::string("—");
      char b[64];
      std::snprintf(b, sizeof(b), spec, Median(v));
      return std::string(b);
    };
    std::fprintf(table, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
                 key.c_str(), fmt(a.b1, "%.1f").c_str(), fmt(a.bound, "%.1f").c_str(),
                 fmt(a.frac, "%.0f%%").c_str(), fmt(a.bn, "%.1f").c_str(),
                 fmt(scale, "x%.1f").c_str(), fmt(a.prefill_long, "%.0f").c_str(),
                 fmt(a.prefill_short, "%.0f").c_str(), fmt(a.peer_b1, "%.1f").c_str(),
                 fmt(a.peer_bn, "%.1f").c_str(), fmt(a.r_b1, "x%.2f").c_str(),
                 fmt(a.r_bn, "x%.2f").c_str(), fmt(a.r_prefill, "x%.2f").c_str());
  }
  if (!s2s.empty()) {
    std::fprintf(table,
                 "\n| encoder-decoder (fp32, source %d) | decode b1 tok/s | decode b%d tok/s | "
                 "b%d / b1 | encode b%d ms | peer b1 | peer b%d | ours/peer b1 | ours/peer b%d |\n",
                 f.s2s_source, f.batch, f.batch, f.batch, f.batch, f.batch);
    std::fprintf(table, "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (const S2S& m : s2s) {
      Acc& a = acc["s2s " + m.name];
      std::vector<double> scale;
      for (size_t i = 0; i < a.b1.size(); ++i) scale.push_back(a.bn[i] / a.b1[i]);
      auto fmt = [](const std::vector<double>& v, const char* spec) {
        if (v.empty()) return std::string("—");
        char b[64];
        std::snprintf(b, sizeof(b), spec, Median(v));
        return std::string(b);
      };
      std::fprintf(table, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", m.name.c_str(),
                   fmt(a.b1, "%.1f").c_str(), fmt(a.bn, "%.1f").c_str(),
                   fmt(scale, "x%.1f").c_str(), fmt(a.prefill_long, "%.2f").c_str(),
                   fmt(a.peer_b1, "%.1f").c_str(), fmt(a.peer_bn, "%.1f").c_str(),
                   fmt(a.r_b1, "x%.2f").c_str(), fmt(a.r_bn, "x%.2f").c_str());
    }
  }
  std::error_code ec;
  std::filesystem::remove_all(tmp, ec);
  return 0;
}
