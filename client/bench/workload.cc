#include "client/bench/workload.h"

#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"

namespace maskserve::client::bench {
namespace {

// Cosine similarity; -2 when the sizes differ or a vector is not finite.
double Cosine(const std::vector<float>& a, const google::protobuf::RepeatedField<float>& b) {
  if (static_cast<int>(a.size()) != b.size() || a.empty()) return -2;
  double dot = 0, na = 0, nb = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(b[static_cast<int>(i)])) return -2;
    dot += double{a[i]} * b[static_cast<int>(i)];
    na += double{a[i]} * a[i];
    nb += double{b[static_cast<int>(i)]} * b[static_cast<int>(i)];
  }
  if (na == 0 || nb == 0) return na == nb ? 1 : -2;
  return dot / std::sqrt(na * nb);
}

}  // namespace

absl::StatusOr<WorkloadKind> ParseWorkloadKind(const std::string& name) {
  if (name == "embed") return WorkloadKind::kEmbed;
  if (name == "generate") return WorkloadKind::kGenerate;
  if (name == "stream") return WorkloadKind::kStream;
  if (name == "mixed") return WorkloadKind::kMixed;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown workload '", name, "' (embed|generate|stream|mixed)"));
}

const char* RequestKindName(RequestKind kind) {
  switch (kind) {
    case RequestKind::kEmbed:
      return "embed";
    case RequestKind::kGenerate:
      return "generate";
    case RequestKind::kStream:
      return "stream";
    case RequestKind::kCancel:
      return "cancel";
  }
  return "?";
}

absl::StatusOr<std::array<int, kNumRequestKinds>> ParseMix(const std::string& text) {
  std::array<int, kNumRequestKinds> mix = {0, 0, 0, 0};
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(part, '=');
    int weight = 0;
    if (!absl::SimpleAtoi(kv.second, &weight) || weight < 0 || weight > 1000) {
      return absl::InvalidArgumentError(absl::StrCat("--mix: bad weight in '", part, "'"));
    }
    bool found = false;
    for (int k = 0; k < kNumRequestKinds; ++k) {
      if (kv.first == RequestKindName(static_cast<RequestKind>(k))) {
        mix[k] = weight;
        found = true;
      }
    }
    if (!found) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--mix: unknown kind '", kv.first, "' (embed, generate, stream, cancel)"));
    }
  }
  if (mix[0] + mix[1] + mix[2] + mix[3] == 0) {
    return absl::InvalidArgumentError("--mix: every weight is 0");
  }
  return mix;
}

std::vector<std::string> DefaultSentences() {
  return {
      "The quick brown fox jumps over the lazy dog.",
      "A man is playing a guitar on the street corner.",
      "Transformers process every token of a sentence in parallel.",
      "The weather today is sunny with a light breeze from the west.",
      "She ordered a cup of coffee and opened her laptop.",
      "Sparse attention patterns reduce the quadratic cost of self-attention.",
      "Two dogs are running through a field of tall grass.",
      "The committee will announce its decision next Tuesday.",
      "Machine translation quality has improved dramatically in recent years.",
      "He forgot his umbrella and got soaked on the way home.",
      "The library closes at nine in the evening on weekdays.",
      "A child is building a sandcastle on the beach.",
      "Sentence embeddings map text to points in a vector space.",
      "The train to the airport leaves every fifteen minutes.",
      "Whitening the embeddings makes their covariance the identity.",
      "An old woman is feeding pigeons in the park.",
  };
}

RequestKind Workload::KindOf(uint64_t seq) const {
  switch (options_.kind) {
    case WorkloadKind::kEmbed:
      return RequestKind::kEmbed;
    case WorkloadKind::kGenerate:
      return RequestKind::kGenerate;
    case WorkloadKind::kStream:
      return RequestKind::kStream;
    case WorkloadKind::kMixed:
      break;
  }
  const auto& m = options_.mix;
  // A fixed, well-spread order: seq * a large odd constant, modulo the total.
  const uint64_t total = static_cast<uint64_t>(m[0] + m[1] + m[2] + m[3]);
  uint64_t r = (seq * 0x9E3779B97F4A7C15ull >> 17) % total;
  for (int k = 0; k < kNumRequestKinds; ++k) {
    if (r < static_cast<uint64_t>(m[k])) return static_cast<RequestKind>(k);
    r -= static_cast<uint64_t>(m[k]);
  }
  return RequestKind::kEmbed;
}

v1::GenerateRequest Workload::GenerateRequestFor(uint64_t seq) const {
  v1::GenerateRequest request;
  request.set_model(options_.model);
  request.set_prompt(options_.sentences[seq % options_.sentences.size()]);
  request.set_max_new_tokens(options_.max_new_tokens);
  // Verified answers must be reproducible: greedy.
  if (options_.verify) request.set_strategy(v1::STRATEGY_GREEDY);
  return request;
}

absl::Status Workload::Prepare(Client& client) {
  if (!options_.verify) return absl::OkStatus();
  const auto& s = options_.sentences;
  bool embeds = false, generates = false;
  for (uint64_t seq = 0; seq < 64; ++seq) {
    const RequestKind k = KindOf(seq);
    embeds |= k == RequestKind::kEmbed;
    generates |= k != RequestKind::kEmbed;
  }
  CallOptions call;
  call.deadline = absl::Seconds(60);
  for (size_t i = 0; i < s.size(); ++i) {
    if (embeds) {
      v1::EmbedRequest request;
      request.set_model(options_.model);
      request.set_truncate(true);
      request.add_texts(s[i]);
      auto r = client.Embed(request, call);
      if (!r.ok()) return r.status();
      const auto& v = r->embeddings(0).values();
      ref_embeddings_.emplace_back(v.begin(), v.end());
    }
    if (generates) {
      auto r = client.Generate(GenerateRequestFor(i), call);
      if (!r.ok()) return r.status();
      const auto& ids = r->sequences(0).ids();
      ref_ids_.emplace_back(ids.begin(), ids.end());
      ref_text_.push_back(r->sequences(0).text());
    }
  }
  return absl::OkStatus();
}

Outcome Workload::RunEmbed(Client& client, uint64_t seq, const CallOptions& call) const {
  Outcome out;
  const auto& s = options_.sentences;
  v1::EmbedRequest request;
  request.set_model(options_.model);
  request.set_truncate(true);
  for (int j = 0; j < options_.batch; ++j) {
    request.add_texts(s[(seq * options_.batch + j) % s.size()]);
  }
  auto response = client.Embed(request, call);
  out.status = response.status();
  out.inputs = options_.batch;
  if (!response.ok()) return out;
  if (response->has_timing()) {
    out.server_queue_ms = response->timing().queue_us() / 1000.0;
    out.server_inference_ms = response->timing().inference_us() / 1000.0;
  }
  if (!ref_embeddings_.empty()) {
    if (response->embeddings_size() != options_.batch) {
      out.wrong = absl::StrCat("embed: ", response->embeddings_size(), " vectors for ",
                               options_.batch, " texts");
      return out;
    }
    for (int j = 0; j < options_.batch; ++j) {
      const size_t i = (seq * options_.batch + j) % s.size();
      const double cos = Cosine(ref_embeddings_[i], response->embeddings(j).values());
      if (cos < 0.999) {
        out.wrong = absl::StrCat("embed: sentence ", i, " cosine to its reference ", cos);
        return out;
      }
    }
  }
  return out;
}

Outcome Workload::RunGenerate(Client& client, uint64_t seq, const CallOptions& call) const {
  Outcome out;
  auto response = client.Generate(GenerateRequestFor(seq), call);
  out.status = response.status();
  out.inputs = 1;
  if (!response.ok()) return out;
  out.tokens = response->usage().completion_tokens();
  if (!ref_ids_.empty()) {
    const size_t i = seq % options_.sentences.size();
    const auto& ids = response->sequences(0).ids();
    if (std::vector<int32_t>(ids.begin(), ids.end()) != ref_ids_[i] ||
        response->sequences(0).text() != ref_text_[i]) {
      out.wrong = absl::StrCat("generate: prompt ", i, " gave other ids than its reference");
    }
  }
  return out;
}

Outcome Workload::RunStream(Client& client, uint64_t seq, const CallOptions& call,
                            bool cancel) const {
  Outcome out;
  int64_t streamed_ids = 0;
  int64_t usage_tokens = -1;
  std::string text;
  std::vector<int32_t> ids;
  out.status = client.GenerateStream(
      GenerateRequestFor(seq),
      [&](const v1::GenerateStreamResponse& m) {
        if (out.first_message == absl::InfinitePast()) out.first_message = absl::Now();
        streamed_ids += m.ids_size();
        ids.insert(ids.end(), m.ids().begin(), m.ids().end());
        text += m.text();
        if (m.has_usage()) usage_tokens = m.usage().completion_tokens();
        // A cancel request walks away after the first message.
        return !cancel;
      },
      call);
  out.inputs = 1;
  out.tokens = usage_tokens >= 0 ? usage_tokens : streamed_ids;
  if (cancel) {
    // The stream may have ended by itself before the client hung up.
    if (absl::IsCancelled(out.status)) {
      out.cancelled_as_intended = true;
      out.status = absl::OkStatus();
    }
    return out;
  }
  if (out.status.ok() && !ref_ids_.empty()) {
    const size_t i = seq % options_.sentences.size();
    if (ids != ref_ids_[i] || text != ref_text_[i]) {
      out.wrong = absl::StrCat("stream: prompt ", i, " streamed other ids or text than its "
                               "reference");
    }
  }
  return out;
}

Outcome Workload::Run(Client& client, uint64_t seq) const {
  CallOptions call;
  call.deadline = options_.deadline;
  const RequestKind kind = KindOf(seq);
  Outcome out;
  switch (kind) {
    case RequestKind::kEmbed:
      out = RunEmbed(client, seq, call);
      break;
    case RequestKind::kGenerate:
      out = RunGenerate(client, seq, call);
      break;
    case RequestKind::kStream:
      out = RunStream(client, seq, call, /*cancel=*/false);
      break;
    case RequestKind::kCancel:
      out = RunStream(client, seq, call, /*cancel=*/true);
      break;
  }
  out.kind = kind;
  return out;
}

}  // namespace maskserve::client::bench
