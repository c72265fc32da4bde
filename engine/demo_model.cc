#include "engine/demo_model.h"

#include <stdlib.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "engine/safetensors_writer.h"
#include "nlohmann/json.hpp"

namespace maskserve::engine {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using Spec = DemoModelSpec;

// Common English words and WordPiece continuation pieces, enough for smoke
// test sentences to tokenise into real words instead of characters.
constexpr const char kWords[] =
    "the of and to a in is it you that he was for on are with as i his they be at one have this "
    "from or had by not word but what some we can out other were all there when up use your how "
    "said an each she which do their time if will way about many then them write would like so "
    "these her long make thing see him two has look more day could go come did number sound no "
    "most people my over know water than call first who may down side been now find any new "
    "work part take get place made live where after back little only round man year came show "
    "every good me give our under name very through just form sentence great think say help low "
    "line differ turn cause much mean before move right boy old too same tell does set three want "
    "air well also play small end put home read hand port large spell add even land here must big "
    "high such follow act why ask men change went light kind off need house picture try us again "
    "animal point mother world near build self earth father head stand own page should country "
    "found answer school grow study still learn plant cover food sun four between state keep eye "
    "never last let thought city tree cross farm hard start might story saw far sea draw left late "
    "run while press close night real life few north open seem together next white children begin "
    "got walk example ease paper group always music those both mark often letter until mile river "
    "car feet care second book carry took science eat room friend began idea fish mountain stop "
    "once base hear horse cut sure watch color face wood main enough plain girl usual young ready "
    "above ever red list though feel talk bird soon body dog family direct pose leave song measure "
    "door product black short numeral class wind question happen complete ship area half rock "
    "order fire south problem piece told knew pass since top whole king space heard best hour "
    "better true during hundred five remember step early hold west ground interest reach fast verb "
    "sing listen six table travel less morning ten simple several vowel toward war lay against "
    "pattern slow center love person money serve appear road map rain rule govern pull cold notice "
    "voice unit power town fine certain fly fall lead cry dark machine note wait plan figure star "
    "box noun field rest correct able pound done beauty drive stood contain front teach week final "
    "gave green oh quick develop ocean warm free minute strong special mind behind clear tail "
    "produce fact street inch multiply nothing course stay wheel full force blue object decide "
    "surface deep moon island foot system busy test record boat common gold possible plane stead "
    "dry wonder laugh thousand ago ran check game shape equate hot miss brought heat snow tire "
    "bring yes distant fill east paint language among model text search vector server request "
    "token mask query data cat sat mat hello today weather nice translate english german house "
    "wonderful he she they them him her its our their mine yours ours theirs myself yourself "
    "himself herself itself ourselves themselves am being having doing done gone went seen been "
    "made said told asked gave taken got found thought knew felt left kept began seemed let "
    "meant brought heard stood understood held wrote spoke became shown sent built paid lost met "
    "sat spent led ran across along around behind below beside beyond inside outside onto upon "
    "within without because although unless whether however therefore perhaps maybe quite rather "
    "almost already yet soon later today tomorrow yesterday tonight monday tuesday wednesday "
    "thursday friday saturday sunday january february march april june july august september "
    "october november december spring summer autumn winter zero seven eight nine eleven twelve "
    "twenty thirty forty fifty sixty seventy eighty ninety million billion percent first second "
    "third fourth fifth last next new old good bad best worst big small long short high low "
    "early late young easy hard happy sad hungry tired angry afraid beautiful pretty ugly clean "
    "dirty rich poor cheap expensive safe dangerous quiet loud soft bright heavy thin thick wide "
    "narrow hot cold wet empty full true false wrong right public private local national "
    "international political social economic important different similar available popular "
    "general personal human natural medical legal financial recent major minor single double "
    "government company business market price cost job office school student teacher university "
    "college class lesson homework question answer problem solution result reason method process "
    "history future past present news report information knowledge computer software hardware "
    "internet network website email phone screen keyboard program code file folder memory "
    "machine learning network neural language sentence paragraph document article translation "
    "meaning similarity embedding encoder decoder attention layer weight input output example "
    "doctor nurse hospital patient health disease medicine police army law court judge minister "
    "president party election vote team player match goal score coach season league club fan "
    "movie film actor actress director theater television radio camera photo picture art artist "
    "painting museum library church temple garden park forest beach lake hill valley desert field "
    "village bridge station airport train bus plane bike truck ticket hotel restaurant kitchen "
    "bedroom bathroom window floor wall roof chair bed desk lamp cup glass plate bottle bag shoe "
    "shirt dress coat hat clothes bread butter cheese milk coffee tea sugar salt rice meat chicken "
    "egg apple banana orange fruit vegetable soup cake dinner lunch breakfast meal friend brother "
    "sister son daughter husband wife baby child kid parent uncle aunt cousin neighbor guest "
    "stranger everyone someone anyone nobody everything something anything happen happened enjoy "
    "hope wish believe agree decide explain describe discuss suggest expect allow prefer prepare "
    "remember forget understand consider continue provide include receive return require spend "
    "travel visit wait win lose buy sell pay send share finish arrive leave stay sleep wake dream "
    "smile cry shout whisper jump swim dance sing cook clean wash drink drive fly ride climb";
constexpr const char kSuffixes[] =
    "s es ed ing ly er est ion tion sion ness ment able ible ful less ous ive al ial ic ical ity "
    "ty ism ist ize ise en ent ant ence ance ure age ery ory ary ship hood dom ward wise like "
    "y ie ee un re pre dis";

uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Standard normal samples from splitmix64 via Box-Muller, computed in double
// and rounded to float, so last-bit differences in libm or in the compiler's
// arithmetic contraction almost never show in the stored weights.
class Normal {
 public:
  explicit Normal(uint64_t seed) : state_(seed) {}
  double Next() {
    if (have_spare_) {
      have_spare_ = false;
      return spare_;
    }
    // 53-bit uniforms; u1 in (0, 1] so the log is finite.
    double u1 = (static_cast<double>(SplitMix64(state_) >> 11) + 1.0) * 0x1p-53;
    double u2 = static_cast<double>(SplitMix64(state_) >> 11) * 0x1p-53;
    double r = std::sqrt(-2.0 * std::log(u1));
    double theta = 6.283185307179586 * u2;
    spare_ = r * std::sin(theta);
    have_spare_ = true;
    return r * std::cos(theta);
  }

 private:
  uint64_t state_;
  bool have_spare_ = false;
  double spare_ = 0;
};

uint64_t Fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char ch : s) {
    h ^= ch;
    h *= 0x100000001b3ull;
  }
  return h;
}

enum class Init { kEmbedding, kLinear, kBias, kLnWeight, kLnBias };

// The golden checkpoints' init (shared/golden/README.md): embeddings N(0,1),
// Linear N(0, 1/fan_in), biases N(0, 0.02), LayerNorm 1 + N(0, 0.1) / N(0, 0.1).
// Each tensor draws from its own stream keyed by name, so adding a tensor
// never changes the others.
std::vector<float> RandomTensor(const std::string& name, const std::vector<int64_t>& shape,
                                Init init) {
  size_t n = 1;
  for (int64_t d : shape) n *= static_cast<size_t>(d);
  Normal rng(Spec::kSeed ^ Fnv1a(name));
  std::vector<float> out(n);
  double scale = 1.0, offset = 0.0;
  switch (init) {
    case Init::kEmbedding:
      break;
    case Init::kLinear:
      scale = 1.0 / std::sqrt(static_cast<double>(shape[1]));
      break;
    case Init::kBias:
      scale = 0.02;
      break;
    case Init::kLnWeight:
      scale = 0.1;
      offset = 1.0;
      break;
    case Init::kLnBias:
      scale = 0.1;
      break;
  }
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<float>(offset + scale * rng.Next());
  return out;
}

std::string DumpJson(const json& j) { return j.dump(2) + "\n"; }

std::string BuildSafetensors(int64_t vocab_size) {
  const int64_t H = Spec::kHiddenSize, F = Spec::kIntermediateSize;
  SafetensorsWriter w;
  w.SetMetadata("format", "pt");
  auto add = [&](const std::string& name, std::vector<int64_t> shape, Init init) {
    std::vector<float> v = RandomTensor(name, shape, init);
    // Names and shapes are fixed here, so Add cannot fail.
    (void)w.Add(name, SafetensorsDtype::kF32, std::move(shape), v.data());
  };
  add("bert.embeddings.word_embeddings.weight", {vocab_size, H}, Init::kEmbedding);
  add("bert.embeddings.position_embeddings.weight", {Spec::kMaxPositions, H}, Init::kEmbedding);
  add("bert.embeddings.token_type_embeddings.weight", {Spec::kTypeVocabSize, H}, Init::kEmbedding);
  add("bert.embeddings.LayerNorm.weight", {H}, Init::kLnWeight);
  add("bert.embeddings.LayerNorm.bias", {H}, Init::kLnBias);
  for (int64_t i = 0; i < Spec::kNumLayers; ++i) {
    const std::string p = absl::StrCat("bert.encoder.layer.", i, ".");
    for (const char* lin : {"attention.self.query", "attention.self.key", "attention.self.value",
                            "attention.output.dense"}) {
      add(p + lin + ".weight", {H, H}, Init::kLinear);
      add(p + lin + ".bias", {H}, Init::kBias);
    }
    add(p + "attention.output.LayerNorm.weight", {H}, Init::kLnWeight);
    add(p + "attention.output.LayerNorm.bias", {H}, Init::kLnBias);
    add(p + "intermediate.dense.weight", {F, H}, Init::kLinear);
    add(p + "intermediate.dense.bias", {F}, Init::kBias);
    add(p + "output.dense.weight", {H, F}, Init::kLinear);
    add(p + "output.dense.bias", {H}, Init::kBias);
    add(p + "output.LayerNorm.weight", {H}, Init::kLnWeight);
    add(p + "output.LayerNorm.bias", {H}, Init::kLnBias);
  }
  // MLM head as transformers writes it: the decoder weight is tied to the
  // word embeddings and not stored; its bias is cls.predictions.bias.
  add("cls.predictions.transform.dense.weight", {H, H}, Init::kLinear);
  add("cls.predictions.transform.dense.bias", {H}, Init::kBias);
  add("cls.predictions.transform.LayerNorm.weight", {H}, Init::kLnWeight);
  add("cls.predictions.transform.LayerNorm.bias", {H}, Init::kLnBias);
  add("cls.predictions.bias", {vocab_size}, Init::kBias);
  return w.Serialize();
}

constexpr const char kReadme[] =
    "# maskserve demo model\n"
    "\n"
    "A tiny BERT (`BertForMaskedLM`: hidden 128, 2 layers, 4 heads, FFN 512, max 512 positions)\n"
    "that maskserve writes and serves when no model is named.\n"
    "\n"
    "**Its weights are random** (fixed seed; embeddings N(0,1), linear N(0,1/fan_in), biases\n"
    "N(0,0.02), LayerNorm 1+N(0,0.1) / N(0,0.1)). Its embeddings, masked-token predictions and\n"
    "generations are meaningless. It exists for smoke tests and for trying the API; point the\n"
    "server at a real checkpoint for real results.\n"
    "\n"
    "The layout is HuggingFace's (config.json, vocab.txt, tokenizer_config.json,\n"
    "model.safetensors in F32, plus sentence-transformers modules.json / 1_Pooling with mean\n"
    "pooling and normalisation). The vocabulary is a small generated WordPiece list: the BERT\n"
    "special tokens, printable ASCII characters, their ## forms and a few hundred common words.\n"
    "\n"
    "maskserve regenerates this directory when any file differs from what it would write, so\n"
    "do not edit it.\n";

absl::StatusOr<std::string> ReadWholeFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(path.string());
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

// "dir/" and "dir" name the same directory; the rename dance needs its name.
fs::path Normalised(const std::string& dir) {
  fs::path p = fs::path(dir).lexically_normal();
  if (!p.has_filename() && p.has_parent_path()) p = p.parent_path();
  return p;
}

}  // namespace

std::vector<std::string> DemoModelVocab() {
  std::vector<std::string> vocab = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
  std::set<std::string> seen(vocab.begin(), vocab.end());
  auto push = [&](const std::string& t) {
    if (seen.insert(t).second) vocab.push_back(t);
  };
  // Upper case never reaches the vocabulary of a lower-casing tokenizer.
  for (int c = 33; c < 127; ++c) {
    if (c >= 'A' && c <= 'Z') continue;
    push(std::string(1, static_cast<char>(c)));
  }
  for (int c = 33; c < 127; ++c) {
    const bool word_char = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    if (word_char) push("##" + std::string(1, static_cast<char>(c)));
  }
  for (absl::string_view w : absl::StrSplit(kWords, ' ', absl::SkipEmpty())) push(std::string(w));
  for (absl::string_view s : absl::StrSplit(kSuffixes, ' ', absl::SkipEmpty())) {
    push(absl::StrCat("##", s));
  }
  return vocab;
}

std::vector<DemoModelFile> DemoModelFiles() {
  const std::vector<std::string> vocab = DemoModelVocab();
  const int64_t vocab_size = static_cast<int64_t>(vocab.size());
  std::vector<DemoModelFile> files;

  json config = {
      {"architectures", {"BertForMaskedLM"}},
      {"attention_probs_dropout_prob", 0.1},
      {"classifier_dropout", nullptr},
      {"hidden_act", "gelu"},
      {"hidden_dropout_prob", 0.1},
      {"hidden_size", Spec::kHiddenSize},
      {"initializer_range", 0.02},
      {"intermediate_size", Spec::kIntermediateSize},
      {"layer_norm_eps", 1e-12},
      {"max_position_embeddings", Spec::kMaxPositions},
      {"model_type", "bert"},
      {"num_attention_heads", Spec::kNumHeads},
      {"num_hidden_layers", Spec::kNumLayers},
      {"pad_token_id", 0},
      {"position_embedding_type", "absolute"},
      {"torch_dtype", "float32"},
      {"type_vocab_size", Spec::kTypeVocabSize},
      {"use_cache", true},
      {"vocab_size", vocab_size},
  };
  files.push_back({"config.json", DumpJson(config)});

  std::string vocab_txt;
  for (const auto& t : vocab) absl::StrAppend(&vocab_txt, t, "\n");
  files.push_back({"vocab.txt", vocab_txt});

  json tok = {
      {"clean_up_tokenization_spaces", true}, {"cls_token", "[CLS]"},
      {"do_basic_tokenize", true},            {"do_lower_case", true},
      {"mask_token", "[MASK]"},               {"model_max_length", Spec::kMaxPositions},
      {"never_split", nullptr},               {"pad_token", "[PAD]"},
      {"sep_token", "[SEP]"},                 {"strip_accents", nullptr},
      {"tokenize_chinese_chars", true},       {"tokenizer_class", "BertTokenizer"},
      {"unk_token", "[UNK]"},
  };
  files.push_back({"tokenizer_config.json", DumpJson(tok)});
  json special = {{"cls_token", "[CLS]"}, {"mask_token", "[MASK]"}, {"pad_token", "[PAD]"},
                  {"sep_token", "[SEP]"}, {"unk_token", "[UNK]"}};
  files.push_back({"special_tokens_map.json", DumpJson(special)});

  files.push_back({"model.safetensors", BuildSafetensors(vocab_size)});

  files.push_back({"generation_config.json", DumpJson({{"_from_model_config", true}, {"pad_token_id", 0}})});
  json modules = json::array({
      {{"idx", 0}, {"name", "0"}, {"path", ""}, {"type", "sentence_transformers.models.Transformer"}},
      {{"idx", 1}, {"name", "1"}, {"path", "1_Pooling"}, {"type", "sentence_transformers.models.Pooling"}},
      {{"idx", 2}, {"name", "2"}, {"path", "2_Normalize"}, {"type", "sentence_transformers.models.Normalize"}},
  });
  files.push_back({"modules.json", DumpJson(modules)});
  json pooling = {{"word_embedding_dimension", Spec::kHiddenSize},
                  {"pooling_mode_cls_token", false},
                  {"pooling_mode_mean_tokens", true},
                  {"pooling_mode_max_tokens", false},
                  {"pooling_mode_mean_sqrt_len_tokens", false}};
  files.push_back({"1_Pooling/config.json", DumpJson(pooling)});
  files.push_back({"sentence_bert_config.json",
                   DumpJson({{"max_seq_length", Spec::kMaxPositions}, {"do_lower_case", false}})});
  files.push_back({"README.md", kReadme});
  return files;
}

bool DemoModelUpToDate(const std::string& dir) {
  const fs::path root = Normalised(dir);
  for (const auto& f : DemoModelFiles()) {
    auto contents = ReadWholeFile(root / f.relative_path);
    if (!contents.ok() || *contents != f.contents) return false;
  }
  return true;
}

absl::Status WriteDemoModel(const std::string& dir) {
  const fs::path target = Normalised(dir);
  if (!target.has_filename()) {
    return absl::InvalidArgumentError(absl::StrCat("bad demo model directory '", dir, "'"));
  }
  fs::path parent = target.parent_path();
  if (parent.empty()) parent = ".";
  std::error_code ec;
  fs::create_directories(parent, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot create directory ", parent.string(), ": ", ec.message()));
  }
  std::string tmpl = (parent / (target.filename().string() + ".tmp.XXXXXX")).string();
  if (mkdtemp(tmpl.data()) == nullptr) {
    return absl::InternalError(absl::StrCat("cannot create a temp directory in ", parent.string()));
  }
  const fs::path tmp(tmpl);
  auto cleanup = [&] { fs::remove_all(tmp, ec); };
  for (const auto& f : DemoModelFiles()) {
    const fs::path p = tmp / f.relative_path;
    fs::create_directories(p.parent_path(), ec);
    absl::Status s = WriteFileAtomically(p.string(), f.contents);
    if (!s.ok()) {
      cleanup();
      return s;
    }
  }
  fs::permissions(tmp, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                           fs::perms::others_read | fs::perms::others_exec, ec);

  // Move any old (damaged) copy out of the way first: rename() cannot replace
  // a non-empty directory.
  fs::path old;
  if (fs::exists(target, ec)) {
    std::string old_tmpl = (parent / (target.filename().string() + ".old.XXXXXX")).string();
    if (mkdtemp(old_tmpl.data()) == nullptr) {
      cleanup();
      return absl::InternalError(absl::StrCat("cannot create a temp directory in ", parent.string()));
    }
    old = old_tmpl;
    fs::rename(target, old, ec);  // onto the empty placeholder
    if (ec) {
      fs::remove(old, ec);
      cleanup();
      return absl::InternalError(absl::StrCat("cannot move old ", target.string(), " aside"));
    }
  }
  fs::rename(tmp, target, ec);
  if (ec) {
    const std::string why = ec.message();
    std::error_code ignored;
    cleanup();
    // Another process may have put a complete copy there meanwhile.
    if (DemoModelUpToDate(target.string())) {
      if (!old.empty()) fs::remove_all(old, ignored);
      return absl::OkStatus();
    }
    return absl::InternalError(
        absl::StrCat("cannot rename demo model into ", target.string(), ": ", why));
  }
  if (!old.empty()) fs::remove_all(old, ec);
  return absl::OkStatus();
}

absl::Status EnsureDemoModel(const std::string& dir) {
  if (DemoModelUpToDate(dir)) return absl::OkStatus();
  return WriteDemoModel(dir);
}

}  // namespace maskserve::engine
