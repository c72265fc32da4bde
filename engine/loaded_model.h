// A model checkpoint loaded and ready to serve: its description, tokenizer,
// encoder (embeddings) and generator (text generation). Immutable after Load
// and shared by every request that uses it, so it is safe to use from many
// threads at once.
//
// What Load builds, by config.json model_type:
//   bert / roberta / roformer   Encoder (task EMBED); when the checkpoint has
//                               an MLM head also a UnilmModel on the same
//                               Encoder (task GENERATE), eos = [SEP]
//   gpt2 / llama / gpt_neox     CausalLm (task GENERATE only); eos from
//                               generation_config.json, else config.json
//   t5 / bart / mbart / marian  Seq2SeqModel (task GENERATE only); eos and
//   / opennmt_transformer       decoder start from generation_config.json,
//                               else config.json; source and target
//                               tokenizers (one object unless the model has
//                               two vocabularies: OpenNMT, Marian)
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/model_description.h"

namespace maskserve::engine {

class Encoder;
class GenerativeModel;
class Tokenizer;
struct ModelConfig;

struct LoadOptions {
  // HuggingFace checkpoint directory (config.json, model.safetensors, tokenizer files).
  std::string path;
  // Precision to pack weights in.
  ComputeDtype dtype = ComputeDtype::kFloat32;
};

// What `--dtype auto` means on this CPU: bfloat16 where oneDNN runs BF16
// matmuls on AMX tiles (several times FP32's speed), else float32 (AVX2-only
// CPUs have no BF16 matmul at all; see CheckMatmulDTypeSupported).
ComputeDtype AutoComputeDtype();

class LoadedModel {
 public:
  // Reads config, tokenizer and weights from options.path. Errors name the
  // file (and tensor) at fault; nothing here crashes on corrupt input. A CPU
  // that cannot run the engine (no AVX2/FMA/F16C) or options.dtype
  // (bfloat16 without AVX-512) fails first, with FailedPrecondition.
  static absl::StatusOr<std::unique_ptr<LoadedModel>> Load(const LoadOptions& options);

  // For tests and tools that assemble a model from parts.
  LoadedModel(ModelDescription description, std::unique_ptr<ModelConfig> config,
              std::unique_ptr<Tokenizer> tokenizer);
  LoadedModel(ModelDescription description, std::unique_ptr<ModelConfig> config,
              std::unique_ptr<Tokenizer> tokenizer, std::unique_ptr<Encoder> encoder);
  // `generator` may borrow `encoder` (UnilmModel): it is destroyed first.
  LoadedModel(ModelDescription description, std::unique_ptr<ModelConfig> config,
              std::unique_ptr<Tokenizer> tokenizer, std::unique_ptr<Encoder> encoder,
              std::unique_ptr<GenerativeModel> generator);
  ~LoadedModel();

  const ModelDescription& description() const { return description_; }
  // Parsed config.json.
  const ModelConfig& config() const { return *config_; }
  // Null when the checkpoint has no tokenizer files (then only ids are
  // accepted). Encoder-decoder models: the SOURCE side (prompt / source
  // text, Tokenize / Detokenize).
  const Tokenizer* tokenizer() const { return tokenizer_.get(); }
  // The tokenizer of generated text and target prefixes: tokenizer() except
  // for encoder-decoder models with a separate target vocabulary.
  const Tokenizer* target_tokenizer() const {
    return target_tokenizer_ != nullptr ? target_tokenizer_.get() : tokenizer_.get();
  }
  // The BERT-family forward pass (bert / roberta / roformer), packed in
  // description().dtype; null for other families.
  const Encoder* encoder() const { return encoder_.get(); }
  // The step model that generates text (CausalLm, or UnilmModel sharing
  // encoder()'s weights), packed in description().dtype; null when the
  // model cannot generate (then description().tasks lacks GENERATE).
  const GenerativeModel* generator() const { return generator_.get(); }

 private:
  ModelDescription description_;
  std::unique_ptr<ModelConfig> config_;
  std::shared_ptr<const Tokenizer> tokenizer_;
  std::shared_ptr<const Tokenizer> target_tokenizer_;  // null = tokenizer_
  std::unique_ptr<Encoder> encoder_;
  std::unique_ptr<GenerativeModel> generator_;  // declared last: may borrow encoder_
};

}  // namespace maskserve::engine
