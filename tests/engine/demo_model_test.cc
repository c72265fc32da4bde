#include "engine/demo_model.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "engine/model_config.h"
#include "engine/safetensors.h"
#include "tests/util/test_env.h"

namespace maskserve::engine {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;

std::map<std::string, std::string> ReadTree(const fs::path& root) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    if (e.is_regular_file()) {
      out[fs::relative(e.path(), root).string()] =
          maskserve::testing::ReadFileOrDie(e.path().string());
    }
  }
  return out;
}

TEST(DemoModelTest, VocabLayout) {
  std::vector<std::string> v = DemoModelVocab();
  ASSERT_GE(v.size(), 500u);
  ASSERT_LE(v.size(), 2000u);
  EXPECT_THAT(std::vector<std::string>(v.begin(), v.begin() + 5),
              ElementsAre("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"));
  std::set<std::string> unique(v.begin(), v.end());
  EXPECT_EQ(unique.size(), v.size());
  for (const char* t : {"a", "z", "0", ".", "##a", "##9", "the", "model", "##ing", "hello"}) {
    EXPECT_TRUE(unique.count(t)) << t;
  }
  for (const auto& t : v) {
    EXPECT_FALSE(t.empty());
    EXPECT_EQ(t.find_first_of(" \n\r\t"), std::string::npos) << t;
  }
  EXPECT_FALSE(unique.count("A"));  // lower-casing vocabulary
}

TEST(DemoModelTest, WritesSameBytesEveryTime) {
  const std::string base = maskserve::testing::MakeTempDir("demo_model_test");
  const std::string a = base + "/a", b = base + "/b/nested/";
  ASSERT_TRUE(WriteDemoModel(a).ok());
  ASSERT_TRUE(WriteDemoModel(b).ok());
  auto ta = ReadTree(a), tb = ReadTree(b);
  EXPECT_EQ(ta, tb);
  EXPECT_EQ(ta.size(), DemoModelFiles().size());
  for (const char* f : {"config.json", "vocab.txt", "tokenizer_config.json", "model.safetensors",
                        "modules.json", "1_Pooling/config.json", "generation_config.json",
                        "README.md", "sentence_bert_config.json", "special_tokens_map.json"}) {
    EXPECT_TRUE(ta.count(f)) << f;
  }
  // Re-writing over an existing copy gives the same bytes and leaves no temp dirs.
  ASSERT_TRUE(WriteDemoModel(a).ok());
  EXPECT_EQ(ReadTree(a), tb);
  int entries = 0;
  for (const auto& e : fs::directory_iterator(base)) {
    ++entries;
    EXPECT_THAT(e.path().filename().string(), ::testing::AnyOf("a", "b"));
  }
  EXPECT_EQ(entries, 2);
  EXPECT_THAT(ta["README.md"], ::testing::HasSubstr("random"));
}

TEST(DemoModelTest, UpToDateDetectsDamageAndEnsureRepairs) {
  const std::string dir = maskserve::testing::MakeTempDir("demo_model_test") + "/demo";
  EXPECT_FALSE(DemoModelUpToDate(dir));
  ASSERT_TRUE(EnsureDemoModel(dir).ok());
  EXPECT_TRUE(DemoModelUpToDate(dir));

  // Flip one byte of the weights.
  {
    std::fstream f(dir + "/model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(5000);
    f.put('\x42');
  }
  EXPECT_FALSE(DemoModelUpToDate(dir));
  ASSERT_TRUE(EnsureDemoModel(dir).ok());
  EXPECT_TRUE(DemoModelUpToDate(dir));

  fs::remove(dir + "/vocab.txt");
  EXPECT_FALSE(DemoModelUpToDate(dir));
  ASSERT_TRUE(EnsureDemoModel(dir).ok());
  EXPECT_TRUE(DemoModelUpToDate(dir));
}

TEST(DemoModelTest, LoadsAsBertForMaskedLM) {
  const std::string dir = maskserve::testing::MakeTempDir("demo_model_test") + "/demo";
  ASSERT_TRUE(WriteDemoModel(dir).ok());
  auto config = LoadModelConfig(dir);
  ASSERT_TRUE(config.ok()) << config.status();
  const int64_t V = static_cast<int64_t>(DemoModelVocab().size());
  EXPECT_EQ(config->family, ModelFamily::kBert);
  EXPECT_THAT(config->architectures, ElementsAre("BertForMaskedLM"));
  EXPECT_EQ(config->hidden_size, 128);
  EXPECT_EQ(config->num_hidden_layers, 2);
  EXPECT_EQ(config->num_attention_heads, 4);
  EXPECT_EQ(config->intermediate_size, 512);
  EXPECT_EQ(config->max_position_embeddings, 512);
  EXPECT_EQ(config->type_vocab_size, 2);
  EXPECT_EQ(config->vocab_size, V);
  EXPECT_DOUBLE_EQ(config->layer_norm_eps, 1e-12);
  EXPECT_EQ(config->activation, Activation::kGelu);
  EXPECT_EQ(config->default_pooling, PoolingMode::kMean);
  EXPECT_TRUE(config->normalize);

  const std::string vocab = maskserve::testing::ReadFileOrDie(dir + "/vocab.txt");
  EXPECT_EQ(std::count(vocab.begin(), vocab.end(), '\n'), V);

  auto model = SafetensorsModel::Open(dir);
  ASSERT_TRUE(model.ok()) << model.status();
  const int64_t H = 128, F = 512;
  EXPECT_TRUE((*model)->RequireShape("bert.embeddings.word_embeddings.weight", {V, H}).ok());
  EXPECT_TRUE((*model)->RequireShape("bert.embeddings.position_embeddings.weight", {512, H}).ok());
  EXPECT_TRUE((*model)->RequireShape("bert.embeddings.token_type_embeddings.weight", {2, H}).ok());
  EXPECT_TRUE((*model)->RequireShape("bert.encoder.layer.1.attention.self.query.weight", {H, H}).ok());
  EXPECT_TRUE((*model)->RequireShape("bert.encoder.layer.1.intermediate.dense.weight", {F, H}).ok());
  EXPECT_TRUE((*model)->RequireShape("bert.encoder.layer.1.output.dense.weight", {H, F}).ok());
  EXPECT_TRUE((*model)->RequireShape("cls.predictions.transform.dense.weight", {H, H}).ok());
  EXPECT_TRUE((*model)->RequireShape("cls.predictions.bias", {V}).ok());
  EXPECT_FALSE((*model)->Has("cls.predictions.decoder.weight"));  // tied, as HF writes it
  EXPECT_FALSE((*model)->Has("bert.pooler.dense.weight"));
  EXPECT_EQ((*model)->Find("cls.predictions.bias")->dtype, SafetensorsDtype::kF32);

  // Same tensor-name set as the golden bert-mini (modulo its third layer).
  if (auto golden = maskserve::testing::SharedPath("golden/models/bert-mini")) {
    auto g = SafetensorsModel::Open(*golden);
    ASSERT_TRUE(g.ok()) << g.status();
    std::vector<std::string> expected;
    for (const auto& n : (*g)->TensorNames()) {
      if (n.rfind("bert.encoder.layer.2.", 0) != 0) expected.push_back(n);
    }
    EXPECT_EQ((*model)->TensorNames(), expected);
  }

  // Init statistics: word embeddings ~ N(0, 1), linear ~ N(0, 1/fan_in),
  // LayerNorm weight ~ 1 + N(0, 0.1). Tolerances are ~6 standard errors.
  auto stats = [&](const std::string& name, double* mean, double* sd) {
    auto v = (*model)->ReadFloat32(name);
    ASSERT_TRUE(v.ok()) << v.status();
    double s = 0, s2 = 0;
    for (float x : *v) s += x;
    *mean = s / v->size();
    for (float x : *v) s2 += (x - *mean) * (x - *mean);
    *sd = std::sqrt(s2 / v->size());
  };
  double mean, sd;
  stats("bert.embeddings.word_embeddings.weight", &mean, &sd);
  EXPECT_NEAR(mean, 0.0, 0.02);
  EXPECT_NEAR(sd, 1.0, 0.02);
  stats("bert.encoder.layer.0.intermediate.dense.weight", &mean, &sd);
  EXPECT_NEAR(mean, 0.0, 0.003);
  EXPECT_NEAR(sd, 1.0 / std::sqrt(128.0), 0.003);
  stats("bert.encoder.layer.0.output.LayerNorm.weight", &mean, &sd);
  EXPECT_NEAR(mean, 1.0, 0.06);
  EXPECT_NEAR(sd, 0.1, 0.04);
  // Different tensors draw from different streams.
  auto q = (*model)->ReadFloat32("bert.encoder.layer.0.attention.self.query.weight");
  auto k = (*model)->ReadFloat32("bert.encoder.layer.0.attention.self.key.weight");
  ASSERT_TRUE(q.ok() && k.ok());
  EXPECT_NE(*q, *k);
}

}  // namespace
}  // namespace maskserve::engine
