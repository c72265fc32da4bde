// The encoder against HuggingFace transformers 4.31 (../shared/golden):
// bert-mini and roformer-mini hidden states, pooled vectors, a packed batch,
// every attention-mask kind, BF16, and tokenizer + encoder end to end.
//
// Tolerances (golden/README.md): FP32 last_hidden_state / hidden_states_1
// max|d| <= 1e-4; pooled vectors (raw and *_normalized) max|d| <= 1e-4 and
// cosine >= 0.99999; BF16 pooled cosine >= 0.999. Token ids are taken from
// the golden files (not the tokenizer) except in the end-to-end test, so the
// encoder is tested in isolation.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/encoder.h"
#include "engine/loaded_model.h"
#include "engine/model_config.h"
#include "engine/pooling.h"
#include "engine/safetensors.h"
#include "engine/tokenizer/tokenizer.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/util/golden_json.h"
#include "tests/util/test_env.h"

namespace maskserve::engine {
namespace {

using json = nlohmann::json;
using maskserve::testing::LoadJson;
using maskserve::testing::Ints;
using maskserve::testing::Floats;

constexpr double kHiddenTol = 1e-4;
constexpr double kPooledTol = 1e-4;
constexpr double kPooledCos = 0.99999;
constexpr double kBf16Cos = 0.999;



double MaxAbsDiff(const float* a, const float* b, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; ++i) m = std::max(m, std::abs(static_cast<double>(a[i]) - b[i]));
  return m;
}
double Cosine(const float* a, const float* b, size_t n) {
  double ab = 0, aa = 0, bb = 0;
  for (size_t i = 0; i < n; ++i) {
    ab += static_cast<double>(a[i]) * b[i];
    aa += static_cast<double>(a[i]) * a[i];
    bb += static_cast<double>(b[i]) * b[i];
  }
  return ab / std::sqrt(std::max(aa * bb, 1e-300));
}

// WorstPooled values seen by one check, printed at its end.
struct WorstPooled {
  double max_abs = 0;
  double min_cos = 1;
  void Print(const std::string& what) const {
    std::printf("[golden] %-48s worst max|d| = %.3g  min cosine = %.10f\n", what.c_str(), max_abs,
                min_cos);
  }
};

const char* const kPoolNames[] = {"cls", "mean", "first_last_avg", "max", "last_token"};
const PoolingMode kPoolModes[] = {PoolingMode::kCls, PoolingMode::kMean, PoolingMode::kFirstLastAvg,
                                  PoolingMode::kMax, PoolingMode::kLastToken};

struct Loaded {
  std::unique_ptr<SafetensorsModel> weights;
  std::unique_ptr<Encoder> f32;
  std::unique_ptr<Encoder> bf16;
};

// Packing costs a little, so each model is loaded once per process.
const Loaded& LoadModel(const std::string& dir) {
  static auto* cache = new std::map<std::string, Loaded>();
  auto it = cache->find(dir);
  if (it != cache->end()) return it->second;
  Loaded l;
  absl::StatusOr<ModelConfig> config = LoadModelConfig(dir);
  EXPECT_TRUE(config.ok()) << config.status();
  auto weights = SafetensorsModel::Open(dir);
  EXPECT_TRUE(weights.ok()) << weights.status();
  if (config.ok() && weights.ok()) {
    l.weights = std::move(*weights);
    auto f32 = Encoder::Create(*config, *l.weights, {.dtype = MatmulDType::kF32});
    EXPECT_TRUE(f32.ok()) << f32.status();
    if (f32.ok()) l.f32 = std::move(*f32);
    // Only where oneDNN has BF16 matmuls (AVX-512); Bf16PooledCosine skips
    // elsewhere.
    if (CheckMatmulDTypeSupported(MatmulDType::kBF16).ok()) {
      auto bf16 = Encoder::Create(*config, *l.weights, {.dtype = MatmulDType::kBF16});
      EXPECT_TRUE(bf16.ok()) << bf16.status();
      if (bf16.ok()) l.bf16 = std::move(*bf16);
    }
  }
  return cache->emplace(dir, std::move(l)).first->second;
}

// Runs one sequence (or a packed batch) with hidden_states_1.
EncoderOutput EncodeAll(const Encoder& enc, const std::vector<int32_t>& ids,
                        const std::vector<int32_t>& types, const std::vector<int32_t>& cu,
                        const std::vector<MaskSpec>& masks = {}) {
  EncoderBatch b;
  b.token_ids = ids;
  b.type_ids = types;
  b.cu_seqlens = cu;
  b.masks = masks;
  b.need_first_layer = true;
  absl::StatusOr<EncoderOutput> out = enc.Encode(b);
  EXPECT_TRUE(out.ok()) << out.status();
  return out.ok() ? std::move(*out) : EncoderOutput{};
}

// Pooled vectors of every mode, raw and normalized, keyed as in the files.
std::map<std::string, std::vector<float>> PoolAll(const EncoderOutput& out,
                                                  const std::vector<int32_t>& cu) {
  std::map<std::string, std::vector<float>> r;
  const int n = static_cast<int>(cu.size()) - 1, h = out.hidden_size;
  for (size_t m = 0; m < 5; ++m) {
    std::vector<float> v(static_cast<size_t>(n) * h);
    absl::Status s = Pool(kPoolModes[m], out.last_hidden_state.data(), out.hidden_states_1.data(),
                          cu, h, v.data());
    EXPECT_TRUE(s.ok()) << s;
    r[kPoolNames[m]] = v;
    L2Normalize(v.data(), n, h);
    r[std::string(kPoolNames[m]) + "_normalized"] = v;
  }
  return r;
}

class EncoderGoldenTest : public ::testing::TestWithParam<std::string> {};

TEST_P(EncoderGoldenTest, Fp32HiddenStatesAndPooledMatchHf) {
  MASKSERVE_REQUIRE_SHARED(golden, "golden/" + GetParam());
  MASKSERVE_REQUIRE_SHARED(model_dir, "golden/models/" + GetParam());
  const Loaded& m = LoadModel(model_dir);
  ASSERT_NE(m.f32, nullptr);
  WorstPooled hidden, pooled;
  int items = 0;
  for (const char* file : {"encoder_outputs.json", "encoder_outputs_long_300_words.json",
                           "encoder_outputs_long_600_words.json",
                           "encoder_outputs_long_1200_words.json", "pair_outputs.json"}) {
    const json g = LoadJson(golden + "/" + file);
    for (const json& item : g["items"]) {
      SCOPED_TRACE(std::string(file) + " item " + item["id"].get<std::string>());
      const std::vector<int32_t> ids = Ints(item["input_ids"]);
      const std::vector<int32_t> cu = {0, static_cast<int32_t>(ids.size())};
      EncoderOutput out = EncodeAll(*m.f32, ids, Ints(item["token_type_ids"]), cu);
      ASSERT_EQ(out.last_hidden_state.size(), ids.size() * out.hidden_size);
      for (const char* key : {"last_hidden_state", "hidden_states_1"}) {
        const std::vector<float> want = Floats(item[key]);
        const std::vector<float>& got =
            std::string(key) == "last_hidden_state" ? out.last_hidden_state : out.hidden_states_1;
        ASSERT_EQ(got.size(), want.size()) << key;
        const double d = MaxAbsDiff(got.data(), want.data(), want.size());
        hidden.max_abs = std::max(hidden.max_abs, d);
        EXPECT_LE(d, kHiddenTol) << key;
      }
      for (const auto& [name, got] : PoolAll(out, cu)) {
        const std::vector<float> want = Floats(item["pooled"][name]);
        ASSERT_EQ(got.size(), want.size()) << name;
        const double d = MaxAbsDiff(got.data(), want.data(), want.size());
        const double c = Cosine(got.data(), want.data(), want.size());
        pooled.max_abs = std::max(pooled.max_abs, d);
        pooled.min_cos = std::min(pooled.min_cos, c);
        EXPECT_LE(d, kPooledTol) << name;
        EXPECT_GE(c, kPooledCos) << name;
      }
      ++items;
    }
  }
  EXPECT_EQ(items, 17 + 3 + 10);  // 17 sentences, 3 long texts (one per file), 10 pairs
  hidden.Print(GetParam() + " fp32 hidden states");
  pooled.Print(GetParam() + " fp32 pooled");
}

TEST_P(EncoderGoldenTest, PackedBatchOfEightEqualsRealRows) {
  MASKSERVE_REQUIRE_SHARED(golden, "golden/" + GetParam() + "/batched_right_padding.json");
  MASKSERVE_REQUIRE_SHARED(model_dir, "golden/models/" + GetParam());
  const Loaded& m = LoadModel(model_dir);
  ASSERT_NE(m.f32, nullptr);
  const json g = LoadJson(golden);
  WorstPooled hidden, pooled;
  for (const char* which : {"sentences", "pairs"}) {
    SCOPED_TRACE(which);
    const json& b = g[which];
    ASSERT_EQ(b["input_ids"].size(), 8u);
    std::vector<int32_t> ids, types, cu = {0};
    for (size_t s = 0; s < 8; ++s) {
      const std::vector<int32_t> row = Ints(b["input_ids"][s]);
      const std::vector<int32_t> tt = Ints(b["token_type_ids"][s]);
      const std::vector<int32_t> mask = Ints(b["attention_mask"][s]);
      for (size_t t = 0; t < row.size(); ++t) {
        if (mask[t] == 0) continue;  // right padding: real rows are a prefix
        ids.push_back(row[t]);
        types.push_back(tt[t]);
      }
      cu.push_back(static_cast<int32_t>(ids.size()));
    }
    EncoderOutput out = EncodeAll(*m.f32, ids, types, cu);
    const int h = out.hidden_size;
    for (size_t s = 0; s < 8; ++s) {
      const std::vector<float> want = Floats(b["last_hidden_state"][s]);  // [L_pad][H]
      const size_t len = cu[s + 1] - cu[s];
      const double d = MaxAbsDiff(out.last_hidden_state.data() + cu[s] * h, want.data(), len * h);
      hidden.max_abs = std::max(hidden.max_abs, d);
      EXPECT_LE(d, kHiddenTol) << "sequence " << s;
    }
    for (const auto& [name, got] : PoolAll(out, cu)) {
      const std::vector<float> want = Floats(b["pooled"][name]);
      ASSERT_EQ(got.size(), want.size());
      for (size_t s = 0; s < 8; ++s) {
        const double d = MaxAbsDiff(got.data() + s * h, want.data() + s * h, h);
        const double c = Cosine(got.data() + s * h, want.data() + s * h, h);
        pooled.max_abs = std::max(pooled.max_abs, d);
        pooled.min_cos = std::min(pooled.min_cos, c);
        EXPECT_LE(d, kPooledTol) << name << " sequence " << s;
        EXPECT_GE(c, kPooledCos) << name << " sequence " << s;
      }
    }
  }
  hidden.Print(GetParam() + " packed batch hidden");
  pooled.Print(GetParam() + " packed batch pooled");
}

TEST_P(EncoderGoldenTest, Bf16PooledCosine) {
  if (absl::Status s = CheckMatmulDTypeSupported(MatmulDType::kBF16); !s.ok()) {
    GTEST_SKIP() << s.message();
  }
  MASKSERVE_REQUIRE_SHARED(golden, "golden/" + GetParam());
  MASKSERVE_REQUIRE_SHARED(model_dir, "golden/models/" + GetParam());
  const Loaded& m = LoadModel(model_dir);
  ASSERT_NE(m.bf16, nullptr);
  EXPECT_EQ(m.bf16->dtype(), MatmulDType::kBF16);
  WorstPooled pooled;
  for (const char* file : {"encoder_outputs.json", "encoder_outputs_long_300_words.json",
                           "encoder_outputs_long_600_words.json",
                           "encoder_outputs_long_1200_words.json", "pair_outputs.json"}) {
    const json g = LoadJson(golden + "/" + file);
    for (const json& item : g["items"]) {
      SCOPED_TRACE(std::string(file) + " item " + item["id"].get<std::string>());
      const std::vector<int32_t> ids = Ints(item["input_ids"]);
      const std::vector<int32_t> cu = {0, static_cast<int32_t>(ids.size())};
      EncoderOutput out = EncodeAll(*m.bf16, ids, Ints(item["token_type_ids"]), cu);
      for (const auto& [name, got] : PoolAll(out, cu)) {
        const std::vector<float> want = Floats(item["pooled"][name]);
        ASSERT_EQ(got.size(), want.size());
        const double c = Cosine(got.data(), want.data(), want.size());
        pooled.max_abs = std::max(pooled.max_abs, MaxAbsDiff(got.data(), want.data(), want.size()));
        pooled.min_cos = std::min(pooled.min_cos, c);
        EXPECT_GE(c, kBf16Cos) << name;
      }
    }
  }
  pooled.Print(GetParam() + " bf16 pooled");
}

INSTANTIATE_TEST_SUITE_P(Models, EncoderGoldenTest, ::testing::Values("bert-mini", "roformer-mini"),
                         [](const ::testing::TestParamInfo<std::string>& p) {
                           std::string n = p.param;
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

// masks.json kind name -> MaskSpec (UNILM takes its segments from the
// token type ids, the encoder's default).
MaskSpec SpecFor(const std::string& kind) {
  MaskSpec s;
  std::string base = kind;
  if (base.rfind("CAUSAL+", 0) == 0) {
    s.causal = true;
    base = base.substr(7);
  }
  if (base == "BIDIRECTIONAL") {
    s.kind = MaskKind::kBidirectional;
  } else if (base == "CAUSAL") {
    s.kind = MaskKind::kCausal;
  } else if (base == "UNILM") {
    s.kind = MaskKind::kUnilm;
  } else if (base == "LOCAL_3") {
    s.kind = MaskKind::kLocal;
    s.window = 3;
  } else if (base == "DILATED_3") {
    s.kind = MaskKind::kDilated;
    s.rate = 3;
  } else if (base == "STRIDED_2_4") {
    s.kind = MaskKind::kStrided;
    s.window = 2;
    s.rate = 4;
  } else {
    ADD_FAILURE() << "unknown mask kind " << kind;
  }
  return s;
}

TEST(EncoderGoldenMasksTest, EveryMaskKindMatchesHf) {
  MASKSERVE_REQUIRE_SHARED(golden, "golden/bert-mini/masks.json");
  MASKSERVE_REQUIRE_SHARED(model_dir, "golden/models/bert-mini");
  const Loaded& m = LoadModel(model_dir);
  ASSERT_NE(m.f32, nullptr);
  const json g = LoadJson(golden);
  int kinds_checked = 0;
  for (const char* batch_name : {"no_padding", "padding"}) {
    const json& b = g["batches"][batch_name];
    const std::vector<int32_t> lengths = Ints(b["lengths"]);
    ASSERT_EQ(lengths.size(), 4u);
    const size_t L = b["input_ids"][0].size();
    std::vector<int32_t> ids, types, cu = {0};
    for (size_t s = 0; s < 4; ++s) {
      const std::vector<int32_t> row = Ints(b["input_ids"][s]);
      const std::vector<int32_t> tt = Ints(b["token_type_ids"][s]);
      ids.insert(ids.end(), row.begin(), row.begin() + lengths[s]);
      types.insert(types.end(), tt.begin(), tt.begin() + lengths[s]);
      cu.push_back(static_cast<int32_t>(ids.size()));
    }
    for (const auto& [kind, data] : b["kinds"].items()) {
      SCOPED_TRACE(std::string(batch_name) + " " + kind);
      std::vector<MaskSpec> masks;
      for (size_t s = 0; s < 4; ++s) {
        masks.push_back(SpecFor(kind));
        // The spec must describe the golden matrix on real rows and keys.
        MaskSpec unilm = masks.back();
        if (unilm.kind == MaskKind::kUnilm) {
          const std::vector<int32_t> tt = Ints(b["token_type_ids"][s]);
          unilm.segment_ids.assign(tt.begin(), tt.begin() + lengths[s]);
        }
        absl::StatusOr<std::vector<uint8_t>> mat = MaterializeMask(unilm, lengths[s]);
        ASSERT_TRUE(mat.ok()) << mat.status();
        for (int i = 0; i < lengths[s]; ++i) {
          for (int j = 0; j < lengths[s]; ++j) {
            ASSERT_EQ((*mat)[i * lengths[s] + j], data["mask"][s][i][j].get<int>())
                << "sequence " << s << " i=" << i << " j=" << j;
          }
        }
      }
      EncoderOutput out = EncodeAll(*m.f32, ids, types, cu, masks);
      const std::vector<float> want = Floats(data["last_hidden_state"]);  // [4][L][H]
      const int h = out.hidden_size;
      WorstPooled w;
      for (size_t s = 0; s < 4; ++s) {
        const double d = MaxAbsDiff(out.last_hidden_state.data() + cu[s] * h,
                                    want.data() + s * L * h, static_cast<size_t>(lengths[s]) * h);
        w.max_abs = std::max(w.max_abs, d);
        EXPECT_LE(d, kHiddenTol) << "sequence " << s;
      }
      w.Print(std::string("bert-mini mask ") + batch_name + " " + kind);
      ++kinds_checked;
    }
  }
  EXPECT_EQ(kinds_checked, 18);
}

TEST(EncoderGoldenEndToEndTest, WordPieceTokenizerPlusEncoder) {
  MASKSERVE_REQUIRE_SHARED(golden, "golden/bert-mini/encoder_outputs.json");
  MASKSERVE_REQUIRE_SHARED(model_dir, "golden/models/bert-mini");
  LoadOptions lo;
  lo.path = model_dir;
  absl::StatusOr<std::unique_ptr<LoadedModel>> model = LoadedModel::Load(lo);
  ASSERT_TRUE(model.ok()) << model.status();
  ASSERT_NE((*model)->encoder(), nullptr);
  ASSERT_NE((*model)->tokenizer(), nullptr);
  EXPECT_TRUE((*model)->encoder()->has_mlm_head());
  const json g = LoadJson(golden);
  WorstPooled w;
  int n = 0;
  for (const json& item : g["items"]) {
    if (n == 6) break;
    SCOPED_TRACE(item["text"].get<std::string>());
    TruncationOptions trunc;
    trunc.max_length = 512;
    absl::StatusOr<Encoding> enc =
        (*model)->tokenizer()->Encode(item["text"].get<std::string>(), true, trunc);
    ASSERT_TRUE(enc.ok()) << enc.status();
    ASSERT_EQ(enc->ids, Ints(item["input_ids"]));
    const std::vector<int32_t> cu = {0, static_cast<int32_t>(enc->ids.size())};
    EncoderOutput out = EncodeAll(*(*model)->encoder(), enc->ids, enc->type_ids, cu);
    std::vector<float> mean(out.hidden_size);
    ASSERT_TRUE(Pool(PoolingMode::kMean, out.last_hidden_state.data(), nullptr, cu, out.hidden_size,
                     mean.data())
                    .ok());
    L2Normalize(mean.data(), 1, out.hidden_size);
    const std::vector<float> want = Floats(item["pooled"]["mean_normalized"]);
    const double d = MaxAbsDiff(mean.data(), want.data(), want.size());
    const double c = Cosine(mean.data(), want.data(), want.size());
    w.max_abs = std::max(w.max_abs, d);
    w.min_cos = std::min(w.min_cos, c);
    EXPECT_LE(d, kPooledTol);
    EXPECT_GE(c, kPooledCos);
    ++n;
  }
  EXPECT_EQ(n, 6);
  w.Print("bert-mini tokenizer+encoder mean_normalized");
}

}  // namespace
}  // namespace maskserve::engine
