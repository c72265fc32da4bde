// What one load-generator request does: an Embed of `batch` sentences, a
// Generate, or a GenerateStream, built from a rotating list of sentences.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/lib/client.h"

namespace maskserve::client::bench {

enum class WorkloadKind { kEmbed, kGenerate, kStream };

absl::StatusOr<WorkloadKind> ParseWorkloadKind(const std::string& name);

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
};

// The result of one request.
struct Outcome {
  absl::Status status;
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

  // Sends request number `seq` (which selects the sentences) and waits for
  // it. Thread-safe.
  Outcome Run(Client& client, uint64_t seq) const;

 private:
  WorkloadOptions options_;
};

}  // namespace maskserve::client::bench
