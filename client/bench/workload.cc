#include "client/bench/workload.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace maskserve::client::bench {

absl::StatusOr<WorkloadKind> ParseWorkloadKind(const std::string& name) {
  if (name == "embed") return WorkloadKind::kEmbed;
  if (name == "generate") return WorkloadKind::kGenerate;
  if (name == "stream") return WorkloadKind::kStream;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown workload '", name, "' (embed|generate|stream)"));
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

Outcome Workload::Run(Client& client, uint64_t seq) const {
  Outcome out;
  CallOptions call;
  call.deadline = options_.deadline;
  const auto& s = options_.sentences;
  switch (options_.kind) {
    case WorkloadKind::kEmbed: {
      v1::EmbedRequest request;
      request.set_model(options_.model);
      request.set_truncate(true);
      for (int j = 0; j < options_.batch; ++j) {
        request.add_texts(s[(seq * options_.batch + j) % s.size()]);
      }
      auto response = client.Embed(request, call);
      out.status = response.status();
      out.inputs = options_.batch;
      if (response.ok() && response->has_timing()) {
        out.server_queue_ms = response->timing().queue_us() / 1000.0;
        out.server_inference_ms = response->timing().inference_us() / 1000.0;
      }
      break;
    }
    case WorkloadKind::kGenerate: {
      v1::GenerateRequest request;
      request.set_model(options_.model);
      request.set_prompt(s[seq % s.size()]);
      request.set_max_new_tokens(options_.max_new_tokens);
      auto response = client.Generate(request, call);
      out.status = response.status();
      out.inputs = 1;
      if (response.ok()) out.tokens = response->usage().completion_tokens();
      break;
    }
    case WorkloadKind::kStream: {
      v1::GenerateRequest request;
      request.set_model(options_.model);
      request.set_prompt(s[seq % s.size()]);
      request.set_max_new_tokens(options_.max_new_tokens);
      int64_t streamed_ids = 0;
      int64_t usage_tokens = -1;
      out.status = client.GenerateStream(
          request,
          [&](const v1::GenerateStreamResponse& m) {
            if (out.first_message == absl::InfinitePast()) out.first_message = absl::Now();
            streamed_ids += m.ids_size();
            if (m.has_usage()) usage_tokens = m.usage().completion_tokens();
            return true;
          },
          call);
      out.inputs = 1;
      out.tokens = usage_tokens >= 0 ? usage_tokens : streamed_ids;
      break;
    }
  }
  return out;
}

}  // namespace maskserve::client::bench
