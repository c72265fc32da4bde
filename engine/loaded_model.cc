#include "engine/loaded_model.h"

#include <filesystem>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/causal_lm.h"
#include "engine/causal_lm_arch.h"
#include "engine/encoder.h"
#include "engine/generation_config.h"
#include "engine/generative_model.h"
#include "engine/kernels/cpu_features.h"
#include "engine/model_config.h"
#include "engine/onednn/engine_context.h"
#include "engine/onednn/packed_weight.h"
#include "engine/safetensors.h"
#include "engine/seq2seq_arch.h"
#include "engine/seq2seq_model.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer/tokenizer_factory.h"
#include "engine/unilm_model.h"

namespace maskserve::engine {
namespace {

bool IsEncoderFamily(ModelFamily f) {
  return f == ModelFamily::kBert || f == ModelFamily::kRoberta || f == ModelFamily::kRoformer;
}

bool IsCausalLmFamily(ModelFamily f) {
  return f == ModelFamily::kGpt2 || f == ModelFamily::kLlama || f == ModelFamily::kGptNeox;
}

bool IsSeq2SeqFamily(ModelFamily f) {
  return f == ModelFamily::kT5 || f == ModelFamily::kBart || f == ModelFamily::kMarian ||
         f == ModelFamily::kOpenNmtTransformer;
}

// generation_config.json's eos ids, checked against the vocabulary.
absl::Status GenerationEos(const std::string& dir, const std::optional<GenerationConfig>& gen,
                           int vocab_size, std::vector<int32_t>* out) {
  if (!gen.has_value() || !gen->eos_token_ids.has_value()) return absl::OkStatus();
  for (int64_t id : *gen->eos_token_ids) {
    if (id < 0 || id >= vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(dir, "/generation_config.json: eos_token_id ",
                                                     id, " is outside the vocabulary [0, ",
                                                     vocab_size, ")"));
    }
    out->push_back(static_cast<int32_t>(id));
  }
  return absl::OkStatus();
}

ModelDescription Describe(const ModelConfig& c, const SafetensorsModel& weights,
                          ComputeDtype dtype) {
  ModelDescription d;
  d.architecture = c.model_type;
  if (IsEncoderFamily(c.family)) d.tasks.push_back(ModelTask::kEmbed);
  d.max_sequence_length = static_cast<int>(c.max_position_embeddings);
  if (c.family == ModelFamily::kRoberta && c.pad_token_id.has_value() &&
      d.max_sequence_length > *c.pad_token_id + 1) {
    // RoBERTa positions start after padding_idx, so two table rows are unusable.
    d.max_sequence_length -= static_cast<int>(*c.pad_token_id + 1);
  }
  if (c.max_seq_length.has_value() && *c.max_seq_length > 0 &&
      (d.max_sequence_length == 0 || *c.max_seq_length < d.max_sequence_length)) {
    d.max_sequence_length = static_cast<int>(*c.max_seq_length);
  }
  d.dtype = dtype;
  d.hidden_size = static_cast<int>(c.hidden_size);
  d.vocab_size = static_cast<int>(c.vocab_size);
  d.num_layers = static_cast<int>(c.num_hidden_layers);
  d.num_heads = static_cast<int>(c.num_attention_heads);
  for (const auto& f : weights.files()) {
    for (const TensorInfo& t : f->tensors()) d.num_parameters += t.num_elements();
  }
  d.default_pooling = c.default_pooling.value_or(PoolingMode::kCls);
  d.default_normalize = c.normalize;
  return d;
}

}  // namespace

ComputeDtype AutoComputeDtype() {
  return CpuHasAmxBf16() && CheckMatmulDTypeSupported(MatmulDType::kBF16).ok()
             ? ComputeDtype::kBFloat16
             : ComputeDtype::kFloat32;
}

LoadedModel::LoadedModel(ModelDescription description, std::unique_ptr<ModelConfig> config,
                         std::unique_ptr<Tokenizer> tokenizer)
    : description_(std::move(description)),
      config_(std::move(config)),
      tokenizer_(std::move(tokenizer)) {}

LoadedModel::LoadedModel(ModelDescription description, std::unique_ptr<ModelConfig> config,
                         std::unique_ptr<Tokenizer> tokenizer, std::unique_ptr<Encoder> encoder)
    : description_(std::move(description)),
      config_(std::move(config)),
      tokenizer_(std::move(tokenizer)),
      encoder_(std::move(encoder)) {}

LoadedModel::LoadedModel(ModelDescription description, std::unique_ptr<ModelConfig> config,
                         std::unique_ptr<Tokenizer> tokenizer, std::unique_ptr<Encoder> encoder,
                         std::unique_ptr<GenerativeModel> generator)
    : description_(std::move(description)),
      config_(std::move(config)),
      tokenizer_(std::move(tokenizer)),
      encoder_(std::move(encoder)),
      generator_(std::move(generator)) {}

LoadedModel::~LoadedModel() = default;

absl::StatusOr<std::unique_ptr<LoadedModel>> LoadedModel::Load(const LoadOptions& options) {
  // The CPU first: a clear error instead of SIGILL or oneDNN's "could not
  // create a primitive descriptor" half-way through packing.
  if (absl::Status s = kernels::CheckCpuSupported(); !s.ok()) return s;
  if (absl::Status s = CheckMatmulDTypeSupported(
          options.dtype == ComputeDtype::kBFloat16 ? MatmulDType::kBF16 : MatmulDType::kF32);
      !s.ok()) {
    return s;
  }
  std::error_code ec;
  if (!std::filesystem::is_directory(options.path, ec)) {
    return absl::NotFoundError(
        absl::StrCat("model directory '", options.path, "' does not exist or is not a directory"));
  }
  absl::StatusOr<ModelConfig> config = LoadModelConfig(options.path);
  if (!config.ok()) return config.status();
  absl::StatusOr<std::unique_ptr<SafetensorsModel>> weights = SafetensorsModel::Open(options.path);
  if (!weights.ok()) return weights.status();
  std::shared_ptr<const Tokenizer> tokenizer, target_tokenizer;
  if (IsSeq2SeqFamily(config->family)) {
    absl::StatusOr<Seq2SeqTokenizers> t = LoadSeq2SeqTokenizers(options.path);
    if (!t.ok()) return t.status();
    tokenizer = t->source;
    if (t->target != t->source) target_tokenizer = t->target;
  } else {
    absl::StatusOr<std::unique_ptr<Tokenizer>> t = LoadTokenizer(options.path);
    if (!t.ok()) return t.status();
    tokenizer = std::move(*t);
  }
  ModelDescription description = Describe(*config, **weights, options.dtype);
  const MatmulDType mdt =
      options.dtype == ComputeDtype::kBFloat16 ? MatmulDType::kBF16 : MatmulDType::kF32;
  std::unique_ptr<Encoder> encoder;
  std::unique_ptr<GenerativeModel> generator;
  if (IsEncoderFamily(config->family)) {
    EncoderOptions eo;
    eo.dtype = mdt;
    absl::StatusOr<std::unique_ptr<Encoder>> e = Encoder::Create(*config, **weights, eo);
    if (!e.ok()) return e.status();
    encoder = std::move(*e);
    if (encoder->has_mlm_head()) {
      // UniLM seq2seq on the same packed weights; a target ends at [SEP].
      UnilmModelOptions uo;
      if (tokenizer != nullptr && tokenizer->special_ids().sep.has_value()) {
        uo.eos_token_ids.push_back(*tokenizer->special_ids().sep);
      }
      absl::StatusOr<std::unique_ptr<UnilmModel>> u = UnilmModel::Create(encoder.get(), uo);
      if (!u.ok()) return u.status();
      generator = std::move(*u);
      description.tasks.push_back(ModelTask::kGenerate);
    }
  } else if (IsCausalLmFamily(config->family)) {
    absl::StatusOr<CausalLmArch> arch = CausalLmArchFromConfig(*config);
    if (!arch.ok()) {
      return absl::Status(arch.status().code(),
                          absl::StrCat(options.path, "/config.json: ", arch.status().message()));
    }
    CausalLmOptions co;
    co.dtype = mdt;
    absl::StatusOr<std::optional<GenerationConfig>> gen = LoadGenerationConfig(options.path);
    if (!gen.ok()) return gen.status();
    if (absl::Status s = GenerationEos(options.path, *gen, arch->vocab_size, &co.eos_token_ids);
        !s.ok()) {
      return s;
    }
    absl::StatusOr<std::unique_ptr<CausalLm>> lm = CausalLm::Create(*arch, **weights, co);
    if (!lm.ok()) return lm.status();
    generator = std::move(*lm);
    description.tasks.push_back(ModelTask::kGenerate);
  } else if (IsSeq2SeqFamily(config->family)) {
    absl::StatusOr<Seq2SeqArch> arch = Seq2SeqArchFromConfig(*config);
    if (!arch.ok()) {
      return absl::Status(arch.status().code(),
                          absl::StrCat(options.path, "/config.json: ", arch.status().message()));
    }
    Seq2SeqModelOptions so;
    so.dtype = mdt;
    absl::StatusOr<std::optional<GenerationConfig>> gen = LoadGenerationConfig(options.path);
    if (!gen.ok()) return gen.status();
    if (absl::Status s = GenerationEos(options.path, *gen, arch->vocab_size, &so.eos_token_ids);
        !s.ok()) {
      return s;
    }
    if (gen->has_value() && (*gen)->decoder_start_token_id.has_value()) {
      const int64_t id = *(*gen)->decoder_start_token_id;
      if (id < 0 || id >= arch->vocab_size) {
        return absl::InvalidArgumentError(
            absl::StrCat(options.path, "/generation_config.json: decoder_start_token_id ", id,
                         " is outside the vocabulary [0, ", arch->vocab_size, ")"));
      }
      so.decoder_start_token_id = static_cast<int32_t>(id);
    }
    absl::StatusOr<std::unique_ptr<Seq2SeqModel>> s2s = Seq2SeqModel::Create(*arch, **weights, so);
    if (!s2s.ok()) return s2s.status();
    description.max_sequence_length = (*s2s)->max_source_length();
    generator = std::move(*s2s);
    description.tasks.push_back(ModelTask::kGenerate);
  }
  auto loaded = std::make_unique<LoadedModel>(std::move(description),
                                              std::make_unique<ModelConfig>(std::move(*config)),
                                              nullptr, std::move(encoder), std::move(generator));
  loaded->tokenizer_ = std::move(tokenizer);
  loaded->target_tokenizer_ = std::move(target_tokenizer);
  return loaded;
}

}  // namespace maskserve::engine
