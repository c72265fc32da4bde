// What one load-generator request does: an Embed of `batch` sentences, a
// Generate, a GenerateStream, or (mixed) any of those and a stream the client
// cancels after its first message, built from a rotating list of sentences.
// With verification on, every answer is compared with a reference answer
// fetched one request at a time before the run: Embed vectors by cosine
// (>= 0.999: batching may change the last bits), generations (greedy) by
// their ids and text exactly, streams by their concatenated text.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/lib/client.h"

namespace maskserve::client::bench {

enum class WorkloadKind { kEmbed, kGenerate, kStream, kMixed };

absl::StatusOr<WorkloadKind> ParseWorkloadKind(const std::string& name);

// What a single request of a mixed workload is.
enum class RequestKind { kEmbed = 0, kGenerate = 1, kStream = 2, kCancel = 3 };
inline constexpr int kNumRequestKinds = 4;
const char* RequestKindName(RequestKind kind);

// Weights of the request kinds of a mixed workload, from
// "embed=4,generate=2,stream=2,cancel=1" (kinds left out weigh 0).
absl::StatusOr<std::array<int, kNumRequestKinds>> ParseMix(const std::string& text);

struct WorkloadOptions {
  // embed, generate or stream.
  WorkloadKind kind = WorkloadKind::kEmbed;
  // Model to address.
  std::string model = "demo";
  // Inputs sentences; requests cycle through them.
  std::vector<std::string> sentences;
  // Texts per Embed request.
  int batch = 1;
  // Tokens per generation request.
  int max_new_tokens = 32;
  // Deadline of each request.
  absl::Duration deadline = absl::Seconds(10);
  // kMixed: weights of embed, generate, stream, cancel (see ParseMix).
  std::array<int, kNumRequestKinds> mix = {4, 2, 2, 1};
  // Compare every answer with a reference (Prepare fetches them).
  bool verify = false;
};

// The result of one request.
struct Outcome {
  // The request's kind (mixed workloads pick one per request).
  RequestKind kind = RequestKind::kEmbed;
  absl::Status status;
  // A cancel request that was cancelled by the client as intended.
  bool cancelled_as_intended = false;
  // Verification: what was wrong with an OK answer ("" = nothing).
  std::string wrong;
  // Texts / prompts the request carried.
  int64_t inputs = 0;
  // Tokens generated (generate and stream).
  int64_t tokens = 0;
  // Stream: when the first message arrived (InfinitePast() if none).
  absl::Time first_message = absl::InfinitePast();
  // Embed: the server's own timing of the request (response `timing`):
  // queue wait, and compute of the batch it ran in; -1 when not reported.
  double server_queue_ms = -1;
  double server_inference_ms = -1;
};

// Sentences used when no --sentences_file is given.
std::vector<std::string> DefaultSentences();

class Workload {
 public:
  explicit Workload(WorkloadOptions options) : options_(std::move(options)) {}

  // With verification on: fetches the reference answers, one request at a
  // time. Call once before Run.
  absl::Status Prepare(Client& client);

  // Sends request number `seq` (which selects the sentences) and waits for
  // it. Thread-safe.
  Outcome Run(Client& client, uint64_t seq) const;

  // The kind of request number `seq`.
  RequestKind KindOf(uint64_t seq) const;

 private:
  v1::GenerateRequest GenerateRequestFor(uint64_t seq) const;
  Outcome RunEmbed(Client& client, uint64_t seq, const CallOptions& call) const;
  Outcome RunGenerate(Client& client, uint64_t seq, const CallOptions& call) const;
  Outcome RunStream(Client& client, uint64_t seq, const CallOptions& call, bool cancel) const;

  WorkloadOptions options_;
  // References per sentence (verification).
  std::vector<std::vector<float>> ref_embeddings_;
  std::vector<std::vector<int32_t>> ref_ids_;
  std::vector<std::string> ref_text_;
};

}  // namespace maskserve::client::bench
