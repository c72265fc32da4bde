#include "engine/model_config.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"

namespace maskserve::engine {
namespace {

using json = nlohmann::json;

// Larger dimensions are treated as corrupt: keeps derived products (4 * n,
// heads * head_dim) far from overflow.
constexpr int64_t kMaxDim = int64_t{1} << 31;
constexpr int kMaxConfigJsonDepth = 64;
struct ConfigTooDeep {};

absl::StatusOr<json> ParseJson(absl::string_view text, absl::string_view source) {
  try {
    json::parser_callback_t cb = [](int depth, json::parse_event_t, json&) {
      if (depth > kMaxConfigJsonDepth) throw ConfigTooDeep{};
      return true;
    };
    return json::parse(text.begin(), text.end(), cb);
  } catch (const ConfigTooDeep&) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": JSON nested too deeply"));
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, " is not valid JSON: ", e.what()));
  }
}

// Typed access to a config object; a present key of the wrong type is an
// error (recorded once), null counts as absent, as HF treats it.
class Reader {
 public:
  Reader(const json& j, absl::string_view source) : j_(j), source_(source) {}

  const json* Get(std::initializer_list<const char*> keys, const char** which = nullptr) const {
    for (const char* k : keys) {
      auto it = j_.find(k);
      if (it != j_.end() && !it->is_null()) {
        if (which) *which = k;
        return &*it;
      }
    }
    return nullptr;
  }

  std::optional<int64_t> Int(std::initializer_list<const char*> keys) {
    const char* k = nullptr;
    const json* v = Get(keys, &k);
    if (v == nullptr) return std::nullopt;
    if (v->is_number_integer()) return v->get<int64_t>();
    // Some writers emit 12.0 for integers.
    if (v->is_number_float()) {
      double d = v->get<double>();
      if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e15) {
        return static_cast<int64_t>(d);
      }
    }
    Fail(absl::StrCat("key \"", k, "\" must be an integer, got ", v->dump()));
    return std::nullopt;
  }

  std::optional<double> Double(std::initializer_list<const char*> keys) {
    const char* k = nullptr;
    const json* v = Get(keys, &k);
    if (v == nullptr) return std::nullopt;
    if (v->is_number()) return v->get<double>();
    Fail(absl::StrCat("key \"", k, "\" must be a number, got ", v->dump()));
    return std::nullopt;
  }

  std::optional<bool> Bool(std::initializer_list<const char*> keys) {
    const char* k = nullptr;
    const json* v = Get(keys, &k);
    if (v == nullptr) return std::nullopt;
    if (v->is_boolean()) return v->get<bool>();
    Fail(absl::StrCat("key \"", k, "\" must be true or false, got ", v->dump()));
    return std::nullopt;
  }

  std::optional<std::string> String(std::initializer_list<const char*> keys) {
    const char* k = nullptr;
    const json* v = Get(keys, &k);
    if (v == nullptr) return std::nullopt;
    if (v->is_string()) return v->get<std::string>();
    Fail(absl::StrCat("key \"", k, "\" must be a string, got ", v->dump()));
    return std::nullopt;
  }

  // A positive dimension that must be present.
  int64_t RequiredDim(std::initializer_list<const char*> keys) {
    std::optional<int64_t> v = Int(keys);
    if (!v.has_value()) {
      if (ok()) {
        std::vector<std::string> rest(keys.begin() + 1, keys.end());
        Fail(absl::StrCat("missing required key \"", *keys.begin(), "\"",
                          rest.empty() ? std::string()
                                       : absl::StrCat(" (also accepted: \"",
                                                      absl::StrJoin(rest, "\", \""), "\")")));
      }
      return 0;
    }
    return CheckDim(*keys.begin(), *v, /*allow_zero=*/false);
  }

  int64_t OptionalDim(std::initializer_list<const char*> keys, int64_t dflt, bool allow_zero) {
    std::optional<int64_t> v = Int(keys);
    return v ? CheckDim(*keys.begin(), *v, allow_zero) : dflt;
  }

  int64_t CheckDim(const char* key, int64_t v, bool allow_zero) {
    if (v < (allow_zero ? 0 : 1) || v > kMaxDim) {
      Fail(absl::StrCat("key \"", key, "\" has out-of-range value ", v));
      return 0;
    }
    return v;
  }

  void Fail(const std::string& msg) {
    if (status_.ok()) status_ = absl::InvalidArgumentError(absl::StrCat(source_, ": ", msg));
  }
  bool ok() const { return status_.ok(); }
  const absl::Status& status() const { return status_; }

 private:
  const json& j_;
  std::string source_;
  absl::Status status_;
};

struct FamilyName {
  ModelFamily family;
  const char* name;
};
constexpr FamilyName kFamilies[] = {
    {ModelFamily::kBert, "bert"},       {ModelFamily::kRoberta, "roberta"},
    {ModelFamily::kRoformer, "roformer"}, {ModelFamily::kGpt2, "gpt2"},
    {ModelFamily::kLlama, "llama"},     {ModelFamily::kGptNeox, "gpt_neox"},
    {ModelFamily::kT5, "t5"},           {ModelFamily::kBart, "bart"},
    {ModelFamily::kMarian, "marian"},   {ModelFamily::kOpenNmtTransformer, "opennmt_transformer"},
};

ModelFamily FamilyOf(const std::string& model_type) {
  if (model_type == "mbart" || model_type == "xlm-roberta" || model_type == "camembert") {
    return model_type == "mbart" ? ModelFamily::kBart : ModelFamily::kRoberta;
  }
  for (const auto& f : kFamilies) {
    if (model_type == f.name) return f.family;
  }
  return ModelFamily::kUnknown;
}

// For configs without "model_type" (very old files): the architecture name's
// prefix decides.
std::string ModelTypeFromArchitecture(const std::string& arch) {
  static const std::pair<const char*, const char*> kPrefixes[] = {
      {"XLMRoberta", "xlm-roberta"}, {"Roberta", "roberta"}, {"RoFormer", "roformer"},
      {"Bert", "bert"},   {"GPT2", "gpt2"},   {"Llama", "llama"},   {"GPTNeoX", "gpt_neox"},
      {"T5", "t5"},       {"MBart", "mbart"}, {"Bart", "bart"},     {"Marian", "marian"},
      {"OpenNMT", "opennmt_transformer"},
  };
  for (const auto& [prefix, type] : kPrefixes) {
    if (absl::StartsWith(arch, prefix)) return type;
  }
  return "";
}

absl::StatusOr<std::string> ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path.string()));
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

}  // namespace

absl::string_view ModelFamilyName(ModelFamily family) {
  for (const auto& f : kFamilies) {
    if (f.family == family) return f.name;
  }
  return "unknown";
}

absl::string_view ActivationName(Activation act) {
  switch (act) {
    case Activation::kGelu:
      return "gelu";
    case Activation::kGeluTanh:
      return "gelu_tanh";
    case Activation::kQuickGelu:
      return "quick_gelu";
    case Activation::kRelu:
      return "relu";
    case Activation::kSilu:
      return "silu";
  }
  return "unknown";
}

absl::string_view PositionEmbeddingKindName(PositionEmbeddingKind kind) {
  switch (kind) {
    case PositionEmbeddingKind::kLearned:
      return "learned";
    case PositionEmbeddingKind::kSinusoidal:
      return "sinusoidal";
    case PositionEmbeddingKind::kRotary:
      return "rotary";
    case PositionEmbeddingKind::kRelativeBuckets:
      return "relative_buckets";
    case PositionEmbeddingKind::kRelativeKey:
      return "relative_key";
    case PositionEmbeddingKind::kRelativeKeyQuery:
      return "relative_key_query";
  }
  return "unknown";
}

absl::StatusOr<Activation> ParseActivation(absl::string_view name) {
  if (name == "gelu" || name == "gelu_python") return Activation::kGelu;
  if (name == "gelu_new" || name == "gelu_pytorch_tanh" || name == "gelu_fast" ||
      name == "gelu_accurate") {
    return Activation::kGeluTanh;
  }
  if (name == "quick_gelu") return Activation::kQuickGelu;
  if (name == "relu") return Activation::kRelu;
  if (name == "silu" || name == "swish") return Activation::kSilu;
  return absl::InvalidArgumentError(absl::StrCat("unsupported activation \"", name, "\""));
}

absl::StatusOr<ModelConfig> ParseModelConfig(absl::string_view text, absl::string_view source) {
  auto parsed = ParseJson(text, source);
  if (!parsed.ok()) return parsed.status();
  const json& j = *parsed;
  if (!j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": top level is not a JSON object"));
  }
  Reader r(j, source);
  ModelConfig c;

  if (const json* a = r.Get({"architectures"})) {
    if (!a->is_array()) r.Fail("key \"architectures\" must be a list of strings");
    for (const json& s : *a) {
      if (!s.is_string()) {
        r.Fail("key \"architectures\" must be a list of strings");
        break;
      }
      c.architectures.push_back(s.get<std::string>());
    }
  }
  c.model_type = r.String({"model_type"}).value_or("");
  if (!r.ok()) return r.status();
  if (c.model_type.empty() && !c.architectures.empty()) {
    c.model_type = ModelTypeFromArchitecture(c.architectures[0]);
  }
  if (c.model_type.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": missing required key \"model_type\""));
  }
  c.family = FamilyOf(c.model_type);
  const ModelFamily f = c.family;
  const bool enc_dec_family = f == ModelFamily::kT5 || f == ModelFamily::kBart ||
                              f == ModelFamily::kMarian || f == ModelFamily::kOpenNmtTransformer;

  // --- shape
  c.hidden_size = r.RequiredDim({"hidden_size", "n_embd", "d_model"});
  c.num_hidden_layers = r.RequiredDim({"num_hidden_layers", "n_layer", "num_layers", "encoder_layers"});
  c.num_attention_heads =
      r.RequiredDim({"num_attention_heads", "n_head", "num_heads", "encoder_attention_heads"});
  c.vocab_size = r.RequiredDim({"vocab_size", "tgt_vocab_size"});
  if (!r.ok()) return r.status();
  c.embedding_size = r.OptionalDim({"embedding_size"}, c.hidden_size, false);
  c.source_vocab_size = r.OptionalDim({"src_vocab_size"}, c.vocab_size, false);
  c.num_key_value_heads = r.OptionalDim({"num_key_value_heads"}, c.num_attention_heads, false);
  if (std::optional<int64_t> hd = r.Int({"head_dim", "d_kv", "key_size"})) {
    c.head_dim = r.CheckDim("head_dim", *hd, false);
  } else {
    if (c.hidden_size % c.num_attention_heads != 0) {
      r.Fail(absl::StrCat("hidden size ", c.hidden_size, " is not divisible by ",
                          c.num_attention_heads, " attention heads and no \"head_dim\" is given"));
    }
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  if (!r.ok()) return r.status();
  if (c.num_attention_heads % c.num_key_value_heads != 0) {
    r.Fail(absl::StrCat("num_attention_heads ", c.num_attention_heads,
                        " is not a multiple of num_key_value_heads ", c.num_key_value_heads));
  }

  if (f == ModelFamily::kGpt2) {
    c.intermediate_size = r.OptionalDim({"n_inner", "intermediate_size"}, 4 * c.hidden_size, false);
  } else if (f == ModelFamily::kUnknown) {
    c.intermediate_size =
        r.OptionalDim({"intermediate_size", "n_inner", "d_ff", "encoder_ffn_dim", "ffn_dim"},
                      4 * c.hidden_size, false);
  } else {
    c.intermediate_size =
        r.RequiredDim({"intermediate_size", "n_inner", "d_ff", "encoder_ffn_dim", "ffn_dim"});
  }
  if (!r.ok()) return r.status();

  c.is_encoder_decoder = r.Bool({"is_encoder_decoder"}).value_or(enc_dec_family);
  if (c.is_encoder_decoder) {
    c.num_decoder_layers = r.OptionalDim({"num_decoder_layers", "decoder_layers"},
                                         c.num_hidden_layers, false);
    c.num_decoder_attention_heads =
        r.OptionalDim({"decoder_attention_heads"}, c.num_attention_heads, false);
    c.decoder_intermediate_size = r.OptionalDim({"decoder_ffn_dim"}, c.intermediate_size, false);
  }

  // --- family defaults (HF class defaults where the key is absent)
  int64_t default_max_pos = 512;
  double default_eps = 1e-12;
  std::string default_act = "gelu";
  switch (f) {
    case ModelFamily::kBert:
    case ModelFamily::kRoberta:
    case ModelFamily::kRoformer:
      c.norm_placement = NormPlacement::kPostLN;
      c.type_vocab_size = r.OptionalDim({"type_vocab_size"}, 2, true);
      if (f == ModelFamily::kRoformer) {
        default_max_pos = 1536;
        c.position_embedding = PositionEmbeddingKind::kRotary;
        c.rotary_value = r.Bool({"rotary_value"}).value_or(false);
      }
      break;
    case ModelFamily::kGpt2:
      default_max_pos = 1024;
      default_eps = 1e-5;
      default_act = "gelu_new";
      c.norm_placement = NormPlacement::kPreLN;
      c.final_layer_norm = true;
      c.scale_attn_weights = r.Bool({"scale_attn_weights"}).value_or(true);
      c.scale_attn_by_inverse_layer_idx =
          r.Bool({"scale_attn_by_inverse_layer_idx"}).value_or(false);
      break;
    case ModelFamily::kLlama:
      default_max_pos = 2048;
      default_eps = 1e-6;
      default_act = "silu";
      c.norm_placement = NormPlacement::kPreLN;
      c.norm_kind = NormKind::kRmsNorm;
      c.final_layer_norm = true;
      c.gated_ffn = true;
      c.position_embedding = PositionEmbeddingKind::kRotary;
      c.attention_bias = r.Bool({"attention_bias"}).value_or(false);
      c.mlp_bias = r.Bool({"mlp_bias"}).value_or(false);
      if (const json* rs = r.Get({"rope_scaling"})) {
        r.Fail(absl::StrCat("\"rope_scaling\" ", rs->dump(), " is not supported"));
      }
      break;
    case ModelFamily::kGptNeox:
      default_max_pos = 2048;
      default_eps = 1e-5;
      c.norm_placement = NormPlacement::kPreLN;
      c.final_layer_norm = true;
      c.position_embedding = PositionEmbeddingKind::kRotary;
      c.rotary_pct = r.Double({"rotary_pct"}).value_or(0.25);
      c.parallel_residual = r.Bool({"use_parallel_residual"}).value_or(true);
      c.attention_bias = r.Bool({"attention_bias"}).value_or(true);
      break;
    case ModelFamily::kT5:
      default_max_pos = 0;
      default_eps = 1e-6;
      default_act = "relu";
      c.norm_placement = NormPlacement::kPreLN;
      c.norm_kind = NormKind::kRmsNorm;
      c.final_layer_norm = true;
      c.attention_bias = false;
      c.mlp_bias = false;
      c.position_embedding = PositionEmbeddingKind::kRelativeBuckets;
      c.relative_attention_num_buckets = r.OptionalDim({"relative_attention_num_buckets"}, 32, false);
      c.relative_attention_max_distance =
          r.OptionalDim({"relative_attention_max_distance"}, 128, false);
      break;
    case ModelFamily::kBart:
    case ModelFamily::kMarian:
      default_max_pos = 1024;
      default_eps = 1e-5;
      c.position_embedding = f == ModelFamily::kBart ? PositionEmbeddingKind::kLearned
                                                     : PositionEmbeddingKind::kSinusoidal;
      if (f == ModelFamily::kBart) c.position_offset = 2;
      if (c.model_type == "mbart") {
        c.norm_placement = NormPlacement::kPreLN;
        c.final_layer_norm = true;
      }
      break;
    case ModelFamily::kOpenNmtTransformer:
      default_eps = 1e-5;
      default_act = "relu";
      c.norm_placement = NormPlacement::kPreLN;
      c.final_layer_norm = true;
      c.position_embedding = PositionEmbeddingKind::kSinusoidal;
      c.tie_word_embeddings = false;
      c.shared_encoder_decoder_embeddings = false;
      break;
    case ModelFamily::kUnknown:
      break;
  }
  if (!r.ok()) return r.status();

  c.max_position_embeddings =
      r.OptionalDim({"max_position_embeddings", "n_positions", "n_ctx"}, default_max_pos, true);
  c.layer_norm_eps =
      r.Double({"layer_norm_eps", "layer_norm_epsilon", "rms_norm_eps"}).value_or(default_eps);
  if (!(c.layer_norm_eps >= 0) || !std::isfinite(c.layer_norm_eps)) {
    r.Fail(absl::StrCat("layer norm epsilon ", c.layer_norm_eps, " is out of range"));
  }

  // --- activation
  if (f == ModelFamily::kT5) {
    // T5: "relu", "gated-gelu" (HF maps gelu to gelu_new here), "gated-silu".
    std::string proj = r.String({"feed_forward_proj"}).value_or(default_act);
    c.hidden_act = proj;
    std::string act = proj;
    if (absl::StartsWith(proj, "gated-")) {
      c.gated_ffn = true;
      act = proj.substr(6);
    }
    if (act == "gelu") act = "gelu_new";
    auto a = ParseActivation(act);
    if (!a.ok()) {
      r.Fail(absl::StrCat("key \"feed_forward_proj\": ", a.status().message()));
    } else {
      c.activation = *a;
    }
  } else {
    c.hidden_act = r.String({"hidden_act", "activation_function"}).value_or(default_act);
    auto a = ParseActivation(c.hidden_act);
    if (!a.ok()) {
      r.Fail(absl::StrCat("key \"hidden_act\": ", a.status().message()));
    } else {
      c.activation = *a;
    }
  }

  // --- norm placement overrides
  if (std::optional<bool> nb = r.Bool({"normalize_before", "pre_norm"})) {
    c.norm_placement = *nb ? NormPlacement::kPreLN : NormPlacement::kPostLN;
    c.final_layer_norm = *nb;
  }
  if (std::optional<bool> fe = r.Bool({"final_layer_norm_encoder", "final_layer_norm_decoder"})) {
    c.final_layer_norm = *fe;
  }

  // --- positions
  if (std::optional<std::string> pet = r.String({"position_embedding_type"})) {
    c.position_embedding_type = *pet;
    if (*pet == "absolute") {
      if (f != ModelFamily::kRoformer) c.position_embedding = PositionEmbeddingKind::kLearned;
    } else if (*pet == "relative_key") {
      c.position_embedding = PositionEmbeddingKind::kRelativeKey;
    } else if (*pet == "relative_key_query") {
      c.position_embedding = PositionEmbeddingKind::kRelativeKeyQuery;
    } else if (absl::StartsWith(*pet, "sinusoidal")) {
      c.position_embedding = PositionEmbeddingKind::kSinusoidal;
    } else if (*pet == "rotary" || *pet == "rope") {
      c.position_embedding = PositionEmbeddingKind::kRotary;
    } else {
      r.Fail(absl::StrCat("unsupported position_embedding_type \"", *pet, "\""));
    }
  }
  c.rope_theta = r.Double({"rope_theta", "rotary_emb_base"}).value_or(10000.0);
  if (!(c.rope_theta > 0) || !std::isfinite(c.rope_theta)) {
    r.Fail(absl::StrCat("rope_theta ", c.rope_theta, " is out of range"));
  }
  if (!(c.rotary_pct > 0 && c.rotary_pct <= 1)) {
    r.Fail(absl::StrCat("rotary_pct ", c.rotary_pct, " is out of range"));
  }
  if (const json* pe = r.Get({"position_encoding"})) {
    if (pe->is_object()) {
      Reader pr(*pe, absl::StrCat(source, " position_encoding"));
      c.position_offset = pr.OptionalDim({"first_position_index"}, c.position_offset, true);
      if (!pr.ok()) return pr.status();
    }
  }

  // --- embeddings / heads
  c.tie_word_embeddings = r.Bool({"tie_word_embeddings"})
                              .value_or(f == ModelFamily::kLlama || f == ModelFamily::kGptNeox
                                            ? false
                                            : c.tie_word_embeddings);
  c.scale_embedding = r.Bool({"scale_embedding"}).value_or(false);
  c.embedding_scale = r.Double({"embedding_scale"})
                          .value_or(c.scale_embedding ? std::sqrt(static_cast<double>(c.hidden_size))
                                                      : 1.0);
  c.lm_head_bias = r.Bool({"lm_head_bias"}).value_or(false);
  c.shared_encoder_decoder_embeddings =
      r.Bool({"shared_encoder_decoder_embeddings"}).value_or(c.shared_encoder_decoder_embeddings);
  c.source_adds_bos_eos = r.Bool({"source_adds_bos_eos"}).value_or(true);

  // --- special tokens
  c.pad_token_id = r.Int({"pad_token_id"});
  if (!c.pad_token_id && f == ModelFamily::kRoberta) c.pad_token_id = 1;
  c.bos_token_id = r.Int({"bos_token_id"});
  c.decoder_start_token_id = r.Int({"decoder_start_token_id"});
  c.unk_token_id = r.Int({"tgt_unk_token_id", "unk_token_id"});
  c.source_unk_token_id = r.Int({"src_unk_token_id"});
  if (const json* eos = r.Get({"eos_token_id"})) {
    if (eos->is_number_integer()) {
      c.eos_token_ids.push_back(eos->get<int64_t>());
    } else if (eos->is_array()) {
      for (const json& e : *eos) {
        if (!e.is_number_integer()) {
          r.Fail("key \"eos_token_id\" must be an integer or a list of integers");
          break;
        }
        c.eos_token_ids.push_back(e.get<int64_t>());
      }
    } else {
      r.Fail("key \"eos_token_id\" must be an integer or a list of integers");
    }
  }
  if (f == ModelFamily::kRoberta) {
    // RoBERTa positions count from padding_idx + 1.
    if (*c.pad_token_id < 0 || *c.pad_token_id > kMaxDim) {
      r.Fail(absl::StrCat("pad_token_id ", *c.pad_token_id, " is out of range"));
    } else {
      c.position_offset = *c.pad_token_id + 1;
    }
  }
  if (c.is_encoder_decoder && !c.decoder_start_token_id) {
    // T5 and Marian start decoding from the pad token.
    if (f == ModelFamily::kT5 || f == ModelFamily::kMarian) c.decoder_start_token_id = c.pad_token_id;
  }
  c.torch_dtype = r.String({"torch_dtype"}).value_or("");
  if (!r.ok()) return r.status();
  return c;
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& dir) {
  namespace fs = std::filesystem;
  const fs::path root(dir);
  const fs::path config_path = root / "config.json";
  auto text = ReadFile(config_path);
  if (!text.ok()) return text.status();
  auto config = ParseModelConfig(*text, config_path.string());
  if (!config.ok()) return config.status();

  // sentence-transformers: modules.json lists Transformer -> Pooling ->
  // (Normalize); without it, a bare 1_Pooling/ directory is honoured too.
  std::error_code ec;
  fs::path pooling_dir;
  const fs::path modules_path = root / "modules.json";
  if (fs::exists(modules_path, ec)) {
    auto mtext = ReadFile(modules_path);
    if (!mtext.ok()) return mtext.status();
    auto modules = ParseJson(*mtext, modules_path.string());
    if (!modules.ok()) return modules.status();
    if (!modules->is_array()) {
      return absl::InvalidArgumentError(absl::StrCat(modules_path.string(), ": not a JSON list"));
    }
    for (const json& m : *modules) {
      if (!m.is_object() || !m.contains("type") || !m["type"].is_string()) {
        return absl::InvalidArgumentError(
            absl::StrCat(modules_path.string(), ": module without a string key \"type\""));
      }
      const std::string type = m["type"].get<std::string>();
      const std::string path = m.contains("path") && m["path"].is_string() ? m["path"].get<std::string>()
                                                                           : "";
      if (absl::EndsWith(type, ".Transformer")) continue;
      if (absl::EndsWith(type, ".Pooling")) {
        if (path.empty() || path.find("..") != std::string::npos || path[0] == '/') {
          return absl::InvalidArgumentError(absl::StrCat(
              modules_path.string(), ": Pooling module has bad key \"path\" \"", path, "\""));
        }
        pooling_dir = root / path;
      } else if (absl::EndsWith(type, ".Normalize")) {
        config->normalize = true;
      } else {
        // Dense projections and the like change the embedding; ignoring them
        // would serve silently wrong vectors.
        return absl::UnimplementedError(absl::StrCat(
            modules_path.string(), ": sentence-transformers module type \"", type,
            "\" is not supported"));
      }
    }
  } else if (fs::exists(root / "1_Pooling" / "config.json", ec)) {
    pooling_dir = root / "1_Pooling";
  }

  if (!pooling_dir.empty()) {
    const fs::path pool_path = pooling_dir / "config.json";
    auto ptext = ReadFile(pool_path);
    if (!ptext.ok()) return ptext.status();
    auto pj = ParseJson(*ptext, pool_path.string());
    if (!pj.ok()) return pj.status();
    if (!pj->is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(pool_path.string(), ": not a JSON object"));
    }
    Reader pr(*pj, pool_path.string());
    std::vector<PoolingMode> modes;
    if (std::optional<std::string> mode = pr.String({"pooling_mode"})) {
      // Newer sentence-transformers may carry the mode as a string.
      if (*mode == "cls") modes.push_back(PoolingMode::kCls);
      else if (*mode == "mean") modes.push_back(PoolingMode::kMean);
      else if (*mode == "max") modes.push_back(PoolingMode::kMax);
      else if (*mode == "lasttoken") modes.push_back(PoolingMode::kLastToken);
      else pr.Fail(absl::StrCat("pooling_mode \"", *mode, "\" is not supported"));
    }
    if (pr.Bool({"pooling_mode_cls_token"}).value_or(false)) modes.push_back(PoolingMode::kCls);
    if (pr.Bool({"pooling_mode_mean_tokens"}).value_or(false)) modes.push_back(PoolingMode::kMean);
    if (pr.Bool({"pooling_mode_max_tokens"}).value_or(false)) modes.push_back(PoolingMode::kMax);
    if (pr.Bool({"pooling_mode_lasttoken"}).value_or(false)) {
      modes.push_back(PoolingMode::kLastToken);
    }
    for (const char* unsupported :
         {"pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens"}) {
      if (pr.Bool({unsupported}).value_or(false)) {
        pr.Fail(absl::StrCat("key \"", unsupported, "\" is true; that pooling is not supported"));
      }
    }
    if (!pr.ok()) return pr.status();
    if (modes.size() > 1) {
      return absl::UnimplementedError(absl::StrCat(
          pool_path.string(), ": several pooling modes are enabled (concatenated pooling is not "
          "supported)"));
    }
    if (modes.size() == 1) config->default_pooling = modes[0];
  }

  const fs::path sbert_path = root / "sentence_bert_config.json";
  if (fs::exists(sbert_path, ec)) {
    auto stext = ReadFile(sbert_path);
    if (!stext.ok()) return stext.status();
    auto sj = ParseJson(*stext, sbert_path.string());
    if (!sj.ok()) return sj.status();
    if (!sj->is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(sbert_path.string(), ": not a JSON object"));
    }
    Reader sr(*sj, sbert_path.string());
    if (std::optional<int64_t> msl = sr.Int({"max_seq_length"})) {
      config->max_seq_length = sr.CheckDim("max_seq_length", *msl, false);
    }
    if (!sr.ok()) return sr.status();
  }
  return config;
}

absl::StatusOr<int> ConfigDimension(int64_t v, const char* what) {
  if (v < 0 || v > std::numeric_limits<int32_t>::max() / 4) {
    return absl::InvalidArgumentError(absl::StrCat(what, " ", v, " is out of range"));
  }
  return static_cast<int>(v);
}

}  // namespace maskserve::engine
