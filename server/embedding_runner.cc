#include "server/embedding_runner.h"

#include "absl/strings/str_cat.h"
#include "engine/encoder.h"
#include "engine/onednn/engine_context.h"
#include "engine/pooling.h"

namespace maskserve::server {

absl::StatusOr<std::unique_ptr<EmbeddingRunner>> EmbeddingRunner::Create(
    std::shared_ptr<const engine::LoadedModel> model, const EmbeddingRunnerOptions& options) {
  if (model == nullptr || model->encoder() == nullptr) {
    return absl::FailedPreconditionError("EmbeddingRunner: the model has no encoder");
  }
  std::unique_ptr<EmbeddingRunner> runner(new EmbeddingRunner());
  runner->model_ = std::move(model);
  const engine::LoadedModel* m = runner->model_.get();
  const int threads = options.threads_per_worker;
  absl::StatusOr<std::unique_ptr<EmbedBatcher>> batcher = EmbedBatcher::Create(
      options.batching, [m, threads](absl::Span<EmbedBatcher::Item* const> items) {
        // A thread-local compare after the first batch of each worker.
        if (threads > 0) engine::SetCallingThreadNumThreads(threads);
        return RunBatch(*m, items);
      });
  if (!batcher.ok()) return batcher.status();
  runner->batcher_ = std::move(*batcher);
  return runner;
}

absl::StatusOr<RequestHandle> EmbeddingRunner::Submit(std::vector<EmbedInput> inputs,
                                                      absl::Time deadline,
                                                      EmbedBatcher::DoneFn on_done) {
  std::vector<BatchInput<EmbedInput>> batch_inputs;
  batch_inputs.reserve(inputs.size());
  for (EmbedInput& in : inputs) {
    const int64_t tokens = static_cast<int64_t>(in.ids.size());
    batch_inputs.push_back({std::move(in), tokens});
  }
  return batcher_->Submit(std::move(batch_inputs), deadline, std::move(on_done));
}

absl::Status EmbeddingRunner::RunBatch(const engine::LoadedModel& model,
                                       absl::Span<EmbedBatcher::Item* const> items) {
  const engine::Encoder* encoder = model.encoder();
  std::vector<int32_t> ids, type_ids, cu_seqlens = {0};
  std::vector<engine::MaskSpec> masks;
  masks.reserve(items.size());
  bool need_first_layer = false;
  bool any_types = false;
  for (const EmbedBatcher::Item* item : items) {
    if (!item->input.type_ids.empty()) any_types = true;
  }
  for (const EmbedBatcher::Item* item : items) {
    const EmbedInput& in = item->input;
    ids.insert(ids.end(), in.ids.begin(), in.ids.end());
    if (any_types) {
      if (in.type_ids.empty()) {
        type_ids.insert(type_ids.end(), in.ids.size(), 0);
      } else {
        type_ids.insert(type_ids.end(), in.type_ids.begin(), in.type_ids.end());
      }
    }
    cu_seqlens.push_back(static_cast<int32_t>(ids.size()));
    masks.push_back(in.mask);
    if (in.pooling == engine::PoolingMode::kFirstLastAvg) need_first_layer = true;
  }
  engine::EncoderBatch batch;
  batch.token_ids = ids;
  batch.type_ids = type_ids;
  batch.cu_seqlens = cu_seqlens;
  batch.masks = masks;
  batch.need_first_layer = need_first_layer;
  absl::StatusOr<engine::EncoderOutput> out = encoder->Encode(batch);
  if (!out.ok()) return out.status();
  const int hidden = out->hidden_size;
  for (size_t i = 0; i < items.size(); ++i) {
    EmbedBatcher::Item* item = items[i];
    const int64_t offset = static_cast<int64_t>(cu_seqlens[i]) * hidden;
    const int32_t local[2] = {0, cu_seqlens[i + 1] - cu_seqlens[i]};
    item->output.pooled.resize(hidden);
    item->output.tokens = local[1];
    item->status = engine::Pool(
        item->input.pooling, out->last_hidden_state.data() + offset,
        need_first_layer ? out->hidden_states_1.data() + offset : nullptr, local, hidden,
        item->output.pooled.data());
  }
  return absl::OkStatus();
}

}  // namespace maskserve::server
