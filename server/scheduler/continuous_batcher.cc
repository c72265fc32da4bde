#include "server/scheduler/continuous_batcher.h"

#include <pthread.h>

#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "server/retry_hint.h"

namespace maskserve::server {
namespace {

// Families are shared by every model's batcher (and maskserve_tokens_total
// and maskserve_requests_rejected_total with the dynamic batcher); children
// carry {model}.
constexpr const char* kKvBlocksUsed = "maskserve_kv_cache_blocks_used";
constexpr const char* kKvBlocksFree = "maskserve_kv_cache_blocks_free";
constexpr const char* kSequences = "maskserve_generation_sequences";
constexpr const char* kPreemptions = "maskserve_generation_preemptions_total";
constexpr const char* kTokensTotal = "maskserve_tokens_total";
constexpr const char* kStepBatchSize = "maskserve_generation_step_batch_size";
constexpr const char* kStepTokens = "maskserve_generation_step_tokens";
constexpr const char* kStepSeconds = "maskserve_generation_step_seconds";
constexpr const char* kTimeToFirstToken = "maskserve_time_to_first_token_seconds";
constexpr const char* kRejected = "maskserve_requests_rejected_total";

std::string ThreadName(const std::string& model) {
  // Linux limits thread names to 15 characters.
  return absl::StrCat("gen-", model).substr(0, 15);
}

}  // namespace

struct ContinuousBatcher::Request {
  uint64_t id = 0;
  std::unique_ptr<engine::RequestDecoder> decoder;
  GenerationCallbacks callbacks;
  absl::Time arrival;
  absl::Time deadline;
  absl::Time admitted;     // first admission
  absl::Time first_token;  // first generated token
  bool ever_admitted = false;
  bool has_first_token = false;
  // Back in the queue after a preemption.
  bool preempted = false;
  int preemptions = 0;
  // Preempted or failed during the current step: its planned chunks are skipped.
  bool dropped = false;
};

// One prepared chunk of the current step.
struct ContinuousBatcher::Entry {
  Request* request = nullptr;
  int slot = 0;
  int n = 0;
  engine::StepSequence seq;
};

struct ContinuousBatcher::Metrics {
  metrics::Gauge* kv_used = nullptr;
  metrics::Gauge* kv_free = nullptr;
  metrics::Gauge* running = nullptr;
  metrics::Gauge* waiting = nullptr;
  metrics::Gauge* preempted = nullptr;
  metrics::Counter* preemptions = nullptr;
  metrics::Counter* prompt_tokens = nullptr;
  metrics::Counter* generated_tokens = nullptr;
  metrics::Histogram* step_batch_size = nullptr;
  metrics::Histogram* step_tokens = nullptr;
  metrics::Histogram* step_seconds = nullptr;
  metrics::Histogram* ttft = nullptr;
  metrics::Counter* rejected_queue_full = nullptr;
  metrics::Counter* rejected_deadline = nullptr;
  metrics::Counter* rejected_cancelled = nullptr;

  static absl::StatusOr<std::unique_ptr<Metrics>> Create(metrics::MetricsRegistry* registry,
                                                         const std::string& model) {
    auto m = std::make_unique<Metrics>();
    const std::vector<std::string> labels = {model};
    auto used = registry->AddGauge(kKvBlocksUsed, "KV-cache blocks held by sequences.", {"model"});
    if (!used.ok()) return used.status();
    m->kv_used = (*used)->WithLabels(labels);
    auto free = registry->AddGauge(kKvBlocksFree, "KV-cache blocks on the free list.", {"model"});
    if (!free.ok()) return free.status();
    m->kv_free = (*free)->WithLabels(labels);
    auto seqs = registry->AddGauge(
        kSequences,
        "Generation sequences by state: running (in the step loop), waiting (not admitted yet), "
        "preempted (blocks freed, waiting to resume by recompute).",
        {"model", "state"});
    if (!seqs.ok()) return seqs.status();
    m->running = (*seqs)->WithLabels({model, "running"});
    m->waiting = (*seqs)->WithLabels({model, "waiting"});
    m->preempted = (*seqs)->WithLabels({model, "preempted"});
    auto pre = registry->AddCounter(
        kPreemptions, "Requests preempted because KV blocks ran out (later recomputed).",
        {"model"});
    if (!pre.ok()) return pre.status();
    m->preemptions = (*pre)->WithLabels(labels);
    auto tokens = registry->AddCounter(kTokensTotal, "Tokens processed.", {"model", "kind"});
    if (!tokens.ok()) return tokens.status();
    m->prompt_tokens = (*tokens)->WithLabels({model, "prompt"});
    m->generated_tokens = (*tokens)->WithLabels({model, "generated"});
    auto size = registry->AddHistogram(kStepBatchSize, "Sequences in one generation step.",
                                       {"model"}, {1, 2, 4, 8, 16, 32, 64, 128, 256});
    if (!size.ok()) return size.status();
    m->step_batch_size = (*size)->WithLabels(labels);
    auto step_tokens = registry->AddHistogram(
        kStepTokens, "Tokens (decode + prefill chunks) in one generation step.", {"model"},
        metrics::ExponentialBuckets(1, 2, 12));
    if (!step_tokens.ok()) return step_tokens.status();
    m->step_tokens = (*step_tokens)->WithLabels(labels);
    auto secs = registry->AddHistogram(kStepSeconds, "Time of one generation step (model Forward).",
                                       {"model"});
    if (!secs.ok()) return secs.status();
    m->step_seconds = (*secs)->WithLabels(labels);
    auto ttft = registry->AddHistogram(
        kTimeToFirstToken, "Arrival to the first generated token of a request.", {"model"});
    if (!ttft.ok()) return ttft.status();
    m->ttft = (*ttft)->WithLabels(labels);
    auto rejected = registry->AddCounter(
        kRejected, "Requests refused or dropped by the batching queue.", {"model", "reason"});
    if (!rejected.ok()) return rejected.status();
    m->rejected_queue_full = (*rejected)->WithLabels({model, "queue_full"});
    m->rejected_deadline = (*rejected)->WithLabels({model, "deadline"});
    m->rejected_cancelled = (*rejected)->WithLabels({model, "cancelled"});
    return m;
  }
};

absl::StatusOr<std::unique_ptr<ContinuousBatcher>> ContinuousBatcher::Create(
    std::shared_ptr<const engine::GenerativeModel> model, const ContinuousBatcherOptions& options) {
  const std::string what = absl::StrCat("ContinuousBatcher(", options.model, "): ");
  if (model == nullptr) return absl::InvalidArgumentError(absl::StrCat(what, "model is null"));
  if (options.kv_block_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat(what, "kv_block_size must be >= 1"));
  }
  if (options.max_step_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat(what, "max_step_tokens must be >= 1"));
  }
  if (options.max_running_sequences < 1) {
    return absl::InvalidArgumentError(absl::StrCat(what, "max_running_sequences must be >= 1"));
  }
  if (options.max_queue_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat(what, "max_queue_size must be >= 1"));
  }
  const engine::KvLayout layout = model->kv_layout();
  engine::KvCacheOptions ko;
  ko.total_bytes = options.kv_cache_bytes;
  ko.block_size_tokens = options.kv_block_size;
  ko.num_layers = layout.num_layers;
  ko.num_kv_heads = layout.num_kv_heads;
  ko.head_dim = layout.head_dim;
  absl::StatusOr<std::unique_ptr<engine::KvCachePool>> pool = engine::KvCachePool::Create(ko);
  if (!pool.ok()) {
    return absl::Status(
        pool.status().code(),
        absl::StrCat(what, "KV cache (--kv_cache_bytes): ", pool.status().message()));
  }
  std::unique_ptr<ContinuousBatcher> b(
      new ContinuousBatcher(std::move(model), options, std::move(*pool)));
  if (options.registry != nullptr) {
    absl::StatusOr<std::unique_ptr<Metrics>> m = Metrics::Create(options.registry, options.model);
    if (!m.ok()) return m.status();
    b->metrics_ = std::move(*m);
    b->UpdateGauges();
  }
  if (options.start_thread) {
    b->thread_ = std::thread([p = b.get()] { p->Loop(); });
    pthread_setname_np(b->thread_.native_handle(), ThreadName(options.model).c_str());
  }
  return b;
}

ContinuousBatcher::ContinuousBatcher(std::shared_ptr<const engine::GenerativeModel> model,
                                     const ContinuousBatcherOptions& options,
                                     std::unique_ptr<engine::KvCachePool> pool)
    : model_(std::move(model)),
      options_(options),
      clock_(options.clock != nullptr ? options.clock : RealClock::Get()),
      pool_(std::move(pool)) {}

ContinuousBatcher::~ContinuousBatcher() { Shutdown(); }

absl::StatusOr<GenerationHandle> ContinuousBatcher::Submit(
    std::unique_ptr<engine::RequestDecoder> decoder, absl::Time deadline,
    GenerationCallbacks callbacks) {
  if (decoder == nullptr) return absl::InvalidArgumentError("no request to generate");
  const int64_t need = decoder->MaxBlocks(pool_->options().block_size_tokens);
  if (need > pool_->num_blocks()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the request needs up to ", need, " KV-cache blocks (", decoder->planned_sequences(),
        " sequences of prompt + max_new_tokens) but model '", options_.model, "' has ",
        pool_->num_blocks(), " (--kv_cache_bytes); ask for fewer tokens or sequences"));
  }
  const absl::Time now = clock_->Now();
  if (deadline <= now) {
    if (metrics_) metrics_->rejected_deadline->Inc();
    return absl::DeadlineExceededError("the deadline passed before generation started");
  }
  auto r = std::make_unique<Request>();
  r->decoder = std::move(decoder);
  r->callbacks = std::move(callbacks);
  r->arrival = now;
  r->deadline = deadline;
  std::lock_guard<std::mutex> lock(mu_);
  if (stopping_) return absl::UnavailableError("the server is shutting down");
  if (queued_new_ >= options_.max_queue_size) {
    if (metrics_) metrics_->rejected_queue_full->Inc();
    return WithRetryAfter(
        absl::ResourceExhaustedError(
            absl::StrCat("model '", options_.model, "' has ", queued_new_,
                         " generation requests waiting (--max_queue_size); retry later")),
        absl::Milliseconds(100));
  }
  r->id = next_id_++;
  const GenerationHandle handle{r->id};
  live_.insert(r->id);
  ++queued_new_;
  incoming_.push_back(std::move(r));
  cv_.notify_all();
  return handle;
}

bool ContinuousBatcher::Cancel(GenerationHandle handle) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!live_.contains(handle.id)) return false;
  cancels_.insert(handle.id);
  cv_.notify_all();
  return true;
}

ContinuousBatcher::Counts ContinuousBatcher::counts() const {
  std::lock_guard<std::mutex> lock(mu_);
  return counts_;
}

void ContinuousBatcher::AwaitIdleForTesting() {
  std::unique_lock<std::mutex> lock(mu_);
  idle_cv_.wait(lock,
                [this] { return stopping_ || (idle_ && incoming_.empty() && cancels_.empty()); });
}

void ContinuousBatcher::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    // running_ / waiting_ belong to this thread; reading them here is safe.
    const bool work =
        !incoming_.empty() || !cancels_.empty() || !running_.empty() || !waiting_.empty();
    if (!work) {
      idle_ = true;
      idle_cv_.notify_all();
      clock_->WaitUntil(lock, cv_, clock_->Now(), absl::InfiniteFuture());
      idle_ = false;
      continue;
    }
    lock.unlock();
    RunStep();
    lock.lock();
  }
  idle_cv_.notify_all();
}

namespace {

// Inserts `r` keeping `v` sorted by request id (arrival order).
template <typename T>
void InsertByArrival(std::vector<std::unique_ptr<T>>* v, std::unique_ptr<T> r) {
  auto pos = std::upper_bound(v->begin(), v->end(), r->id,
                              [](uint64_t id, const std::unique_ptr<T>& x) { return id < x->id; });
  v->insert(pos, std::move(r));
}

template <typename T>
std::unique_ptr<T> ExtractFrom(std::vector<std::unique_ptr<T>>* v, T* r) {
  for (auto it = v->begin(); it != v->end(); ++it) {
    if (it->get() == r) {
      std::unique_ptr<T> out = std::move(*it);
      v->erase(it);
      return out;
    }
  }
  return nullptr;
}

}  // namespace

void ContinuousBatcher::TakeIncoming() {
  std::vector<std::unique_ptr<Request>> incoming;
  {
    std::lock_guard<std::mutex> lock(mu_);
    incoming.swap(incoming_);
  }
  for (auto& r : incoming) InsertByArrival(&waiting_, std::move(r));
}

void ContinuousBatcher::Preempt(Request* r) {
  r->decoder->ReleaseKv(pool_.get());
  r->dropped = true;
  r->preempted = true;
  ++r->preemptions;
  if (metrics_) metrics_->preemptions->Inc();
  std::unique_ptr<Request> owned = ExtractFrom(&running_, r);
  if (owned) InsertByArrival(&waiting_, std::move(owned));
}

void ContinuousBatcher::Admit(absl::Time now) {
  int sequences = 0;
  int64_t reserved = 0;
  for (const auto& r : running_) {
    sequences += r->decoder->planned_sequences();
    reserved += r->decoder->BlocksToRun(*pool_);
  }
  while (!waiting_.empty()) {
    Request* c = waiting_.front().get();
    const int seqs = c->decoder->planned_sequences();
    const int64_t need = c->decoder->BlocksToRun(*pool_);
    const int64_t free = pool_->Stats().blocks_free;
    const bool fits = running_.empty() || (sequences + seqs <= options_.max_running_sequences &&
                                           reserved + need <= free);
    if (!fits) break;
    std::unique_ptr<Request> owned = std::move(waiting_.front());
    waiting_.erase(waiting_.begin());
    owned->preempted = false;
    if (!owned->ever_admitted) {
      owned->ever_admitted = true;
      owned->admitted = now;
      if (metrics_) metrics_->prompt_tokens->Inc(owned->decoder->prompt_tokens());
      std::lock_guard<std::mutex> lock(mu_);
      --queued_new_;
    }
    sequences += seqs;
    reserved += need;
    InsertByArrival(&running_, std::move(owned));
  }
}

void ContinuousBatcher::UpdateGauges() {
  Counts c;
  int waiting_seqs = 0, preempted_seqs = 0;
  for (const auto& r : running_) {
    ++c.running_requests;
    c.running_sequences += r->decoder->live_sequences();
  }
  for (const auto& r : waiting_) {
    if (r->preempted) {
      ++c.preempted_requests;
      preempted_seqs += r->decoder->planned_sequences();
    } else {
      ++c.waiting_requests;
      waiting_seqs += r->decoder->planned_sequences();
    }
  }
  if (metrics_) {
    const engine::KvCacheStats s = pool_->Stats();
    metrics_->kv_used->Set(static_cast<double>(s.blocks_used));
    metrics_->kv_free->Set(static_cast<double>(s.blocks_free));
    metrics_->running->Set(c.running_sequences);
    metrics_->waiting->Set(waiting_seqs);
    metrics_->preempted->Set(preempted_seqs);
  }
  std::lock_guard<std::mutex> lock(mu_);
  counts_ = c;
}

bool ContinuousBatcher::RunStep() {
  const absl::Time now = clock_->Now();
  std::vector<uint64_t> cancels;
  bool did = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    did = !incoming_.empty() || !cancels_.empty();
    cancels.assign(cancels_.begin(), cancels_.end());
    cancels_.clear();
  }
  TakeIncoming();

  struct Done {
    std::unique_ptr<Request> request;
    absl::StatusOr<GenerationResult> result;
  };
  std::vector<Done> done;
  std::vector<std::pair<Request*, engine::StepOutput>> outputs;
  // Ends `r` (in running_ or waiting_) now: frees its blocks, reports later.
  auto end = [&](Request* r, absl::StatusOr<GenerationResult> result) {
    r->decoder->ReleaseKv(pool_.get());
    r->dropped = true;
    std::unique_ptr<Request> owned = ExtractFrom(&running_, r);
    if (!owned) owned = ExtractFrom(&waiting_, r);
    done.push_back({std::move(owned), std::move(result)});
  };
  auto all_requests = [&] {
    std::vector<Request*> all;
    for (auto& r : waiting_) all.push_back(r.get());
    for (auto& r : running_) all.push_back(r.get());
    return all;
  };

  // 1. Cancellations and deadlines.
  if (!cancels.empty()) {
    const absl::flat_hash_set<uint64_t> ids(cancels.begin(), cancels.end());
    for (Request* r : all_requests()) {
      if (!ids.contains(r->id)) continue;
      if (metrics_) metrics_->rejected_cancelled->Inc();
      end(r, absl::CancelledError("the call was cancelled"));
    }
  }
  for (Request* r : all_requests()) {
    if (now < r->deadline) continue;
    if (metrics_) metrics_->rejected_deadline->Inc();
    end(r, absl::DeadlineExceededError(absl::StrCat(
               "the deadline passed after ", r->decoder->tokens_generated(), " generated tokens")));
    did = true;
  }

  // 2. Admission.
  for (Request* r : all_requests()) r->dropped = false;
  Admit(now);

  // 3. Plan: decode tokens first (every running sequence advances), then
  // prefill chunks, oldest request first, within the token budget.
  struct Planned {
    Request* request;
    int slot;
    int n;
  };
  std::vector<Planned> plan;
  int budget = options_.max_step_tokens;
  std::vector<engine::RequestDecoder::PendingInput> pending;
  for (int pass = 0; pass < 2 && budget > 0; ++pass) {
    for (auto& r : running_) {
      r->decoder->PendingInputs(&pending);
      for (const auto& p : pending) {
        if (budget == 0) break;
        if ((pass == 0) != (p.tokens == 1)) continue;
        const int n = std::min(p.tokens, budget);
        plan.push_back({r.get(), p.slot, n});
        budget -= n;
      }
    }
  }

  // 3b. Encoder-decoder models: the sources of every planned request that
  // has no encoder state yet run through ONE packed encoder pass.
  {
    std::vector<Request*> need;
    std::vector<absl::Span<const int32_t>> sources;
    for (const Planned& p : plan) {
      Request* r = p.request;
      if (!r->decoder->needs_encoder() ||
          std::find(need.begin(), need.end(), r) != need.end()) {
        continue;
      }
      need.push_back(r);
      sources.push_back(r->decoder->source_ids());
    }
    if (!need.empty()) {
      absl::StatusOr<std::vector<std::shared_ptr<const engine::EncoderState>>> states =
          model_->EncodeSources(sources);
      if (states.ok() && states->size() == need.size()) {
        for (size_t i = 0; i < need.size(); ++i) {
          need[i]->decoder->SetEncoderState(std::move((*states)[i]));
        }
      }
      // On failure each request's first PrepareChunk encodes its own source
      // and reports its own error.
    }
  }

  // 4. Reserve KV positions; preempt the newest request when blocks run out.
  std::vector<Entry> entries;
  auto drop_entries = [&entries](Request* r) {
    entries.erase(std::remove_if(entries.begin(), entries.end(),
                                 [r](const Entry& e) { return e.request == r; }),
                  entries.end());
  };
  for (const Planned& p : plan) {
    Request* r = p.request;
    while (!r->dropped) {
      absl::StatusOr<engine::StepSequence> seq = r->decoder->PrepareChunk(pool_.get(), p.slot, p.n);
      if (seq.ok()) {
        entries.push_back({r, p.slot, p.n, std::move(*seq)});
        break;
      }
      if (!absl::IsResourceExhausted(seq.status())) {
        drop_entries(r);
        end(r, seq.status());
        break;
      }
      Request* victim = running_.back().get();
      drop_entries(victim);
      Preempt(victim);
    }
  }

  // 5. One model step, then each request's tokens, text and finishes.
  if (!entries.empty()) {
    did = true;
    std::vector<engine::StepSequence> seqs;
    seqs.reserve(entries.size());
    int step_tokens = 0;
    for (const Entry& e : entries) {
      seqs.push_back(e.seq);
      step_tokens += e.n;
    }
    std::vector<float> logits;
    const absl::Time t0 = clock_->Now();
    const absl::Status forward = model_->Forward(seqs, pool_.get(), &logits);
    const absl::Time t1 = clock_->Now();
    if (metrics_) {
      metrics_->step_batch_size->Observe(static_cast<double>(entries.size()));
      metrics_->step_tokens->Observe(step_tokens);
      metrics_->step_seconds->Observe(absl::ToDoubleSeconds(t1 - t0));
    }
    std::vector<Request*> stepped;
    for (const Entry& e : entries) {
      if (std::find(stepped.begin(), stepped.end(), e.request) == stepped.end()) {
        stepped.push_back(e.request);
      }
    }
    if (!forward.ok()) {
      for (Request* r : stepped) end(r, forward);
    } else {
      const int vocab = model_->vocab_size();
      size_t row = 0;
      for (const Entry& e : entries) {
        absl::Span<const float> l;
        if (e.seq.want_logits) {
          if ((row + 1) * vocab > logits.size()) {
            l = {};
          } else {
            l = absl::MakeConstSpan(logits).subspan(row * vocab, vocab);
          }
          ++row;
        }
        if (e.request->dropped) continue;
        if (absl::Status s = e.request->decoder->CompleteChunk(e.slot, e.n, l); !s.ok()) {
          end(e.request, s);
        }
      }
      for (Request* r : stepped) {
        if (r->dropped) continue;
        absl::StatusOr<engine::StepOutput> out = r->decoder->Advance(pool_.get());
        if (!out.ok()) {
          end(r, out.status());
          continue;
        }
        if (out->new_tokens > 0) {
          if (metrics_) metrics_->generated_tokens->Inc(out->new_tokens);
          if (!r->has_first_token) {
            r->has_first_token = true;
            r->first_token = t1;
            if (metrics_) metrics_->ttft->Observe(absl::ToDoubleSeconds(t1 - r->arrival));
          }
        }
        if (!out->deltas.empty() && r->callbacks.on_step) outputs.emplace_back(r, std::move(*out));
        if (r->decoder->done()) {
          GenerationResult g;
          g.sequences = r->decoder->TakeResults();
          g.prompt_tokens = r->decoder->prompt_tokens();
          g.completion_tokens = r->decoder->completion_tokens();
          g.preemptions = r->preemptions;
          const absl::Time finish = t1;
          const absl::Time first = r->has_first_token ? r->first_token : finish;
          g.times.queue = r->admitted - r->arrival;
          g.times.prefill = first - r->admitted;
          g.times.decode = finish - first;
          g.times.first_token = first - r->arrival;
          g.times.total = finish - r->arrival;
          end(r, std::move(g));
        }
      }
    }
  }
  UpdateGauges();

  // 6. Callbacks, on no lock: every step's output before the request's end.
  for (auto& [r, out] : outputs) r->callbacks.on_step(out);
  if (!done.empty()) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const Done& d : done) {
        live_.erase(d.request->id);
        if (!d.request->ever_admitted) --queued_new_;
      }
    }
    for (Done& d : done) {
      if (d.request->callbacks.on_done) d.request->callbacks.on_done(std::move(d.result));
    }
  }
  return did || !done.empty();
}

void ContinuousBatcher::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    cv_.notify_all();
  }
  std::lock_guard<std::mutex> join_lock(join_mu_);
  if (thread_.joinable()) thread_.join();
  // The scheduler is gone: this thread owns its state now.
  TakeIncoming();
  std::vector<std::unique_ptr<Request>> left;
  for (auto& r : waiting_) left.push_back(std::move(r));
  for (auto& r : running_) left.push_back(std::move(r));
  waiting_.clear();
  running_.clear();
  for (auto& r : left) r->decoder->ReleaseKv(pool_.get());
  if (left.empty()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& r : left) {
      live_.erase(r->id);
      if (!r->ever_admitted) --queued_new_;
    }
    cancels_.clear();
  }
  UpdateGauges();
  for (auto& r : left) {
    if (r->callbacks.on_done) {
      r->callbacks.on_done(absl::UnavailableError("the server is shutting down"));
    }
  }
}

}  // namespace maskserve::server
