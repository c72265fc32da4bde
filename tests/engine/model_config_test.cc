#include "engine/model_config.h"

#include <filesystem>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/util/test_env.h"

namespace maskserve::engine {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

void WriteText(const std::string& path, const std::string& text) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  ASSERT_TRUE(out.good()) << path;
}

TEST(ModelConfigGoldenTest, BertMini) {
  MASKSERVE_REQUIRE_SHARED(dir, "golden/models/bert-mini");
  auto c = LoadModelConfig(dir);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->model_type, "bert");
  EXPECT_EQ(c->family, ModelFamily::kBert);
  EXPECT_THAT(c->architectures, ElementsAre("BertForMaskedLM"));
  EXPECT_EQ(c->hidden_size, 256);
  EXPECT_EQ(c->embedding_size, 256);
  EXPECT_EQ(c->num_hidden_layers, 3);
  EXPECT_EQ(c->num_attention_heads, 4);
  EXPECT_EQ(c->num_key_value_heads, 4);
  EXPECT_EQ(c->head_dim, 64);
  EXPECT_EQ(c->intermediate_size, 1024);
  EXPECT_EQ(c->vocab_size, 30522);
  EXPECT_EQ(c->max_position_embeddings, 512);
  EXPECT_EQ(c->type_vocab_size, 2);
  EXPECT_DOUBLE_EQ(c->layer_norm_eps, 1e-12);
  EXPECT_EQ(c->activation, Activation::kGelu);
  EXPECT_EQ(c->position_embedding, PositionEmbeddingKind::kLearned);
  EXPECT_EQ(c->position_offset, 0);
  EXPECT_EQ(c->norm_placement, NormPlacement::kPostLN);
  EXPECT_EQ(c->norm_kind, NormKind::kLayerNorm);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_FALSE(c->is_encoder_decoder);
  EXPECT_EQ(c->pad_token_id, 0);
  EXPECT_TRUE(c->eos_token_ids.empty());
  EXPECT_EQ(c->torch_dtype, "float16");
  // sentence-transformers files: mean pooling, Normalize, max_seq_length 512.
  ASSERT_TRUE(c->default_pooling.has_value());
  EXPECT_EQ(*c->default_pooling, PoolingMode::kMean);
  EXPECT_TRUE(c->normalize);
  EXPECT_EQ(c->max_seq_length, 512);
}

TEST(ModelConfigGoldenTest, RoformerMini) {
  MASKSERVE_REQUIRE_SHARED(dir, "golden/models/roformer-mini");
  auto c = LoadModelConfig(dir);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->family, ModelFamily::kRoformer);
  EXPECT_EQ(c->hidden_size, 128);
  EXPECT_EQ(c->embedding_size, 128);
  EXPECT_EQ(c->num_hidden_layers, 2);
  EXPECT_EQ(c->num_attention_heads, 2);
  EXPECT_EQ(c->head_dim, 64);
  EXPECT_EQ(c->intermediate_size, 512);
  EXPECT_EQ(c->position_embedding, PositionEmbeddingKind::kRotary);
  EXPECT_FALSE(c->rotary_value);
  EXPECT_EQ(c->max_position_embeddings, 512);
  EXPECT_EQ(c->norm_placement, NormPlacement::kPostLN);
  EXPECT_EQ(c->type_vocab_size, 2);
  EXPECT_FALSE(c->default_pooling.has_value());
  EXPECT_FALSE(c->normalize);
  EXPECT_FALSE(c->max_seq_length.has_value());
}

TEST(ModelConfigGoldenTest, Gpt2Mini) {
  MASKSERVE_REQUIRE_SHARED(dir, "golden/models/gpt2-mini");
  auto c = LoadModelConfig(dir);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->family, ModelFamily::kGpt2);
  EXPECT_EQ(c->hidden_size, 128);
  EXPECT_EQ(c->num_hidden_layers, 2);
  EXPECT_EQ(c->num_attention_heads, 2);
  EXPECT_EQ(c->head_dim, 64);
  EXPECT_EQ(c->intermediate_size, 512);  // n_inner null -> 4 * n_embd
  EXPECT_EQ(c->vocab_size, 50257);
  EXPECT_EQ(c->max_position_embeddings, 512);
  EXPECT_EQ(c->hidden_act, "gelu_new");
  EXPECT_EQ(c->activation, Activation::kGeluTanh);
  EXPECT_DOUBLE_EQ(c->layer_norm_eps, 1e-5);
  EXPECT_EQ(c->norm_placement, NormPlacement::kPreLN);
  EXPECT_TRUE(c->final_layer_norm);
  EXPECT_EQ(c->position_embedding, PositionEmbeddingKind::kLearned);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_TRUE(c->scale_attn_weights);
  EXPECT_FALSE(c->scale_attn_by_inverse_layer_idx);
  EXPECT_EQ(c->bos_token_id, 50256);
  EXPECT_THAT(c->eos_token_ids, ElementsAre(50256));
  EXPECT_FALSE(c->pad_token_id.has_value());
  EXPECT_EQ(c->type_vocab_size, 0);
}

TEST(ModelConfigGoldenTest, T5Mini) {
  MASKSERVE_REQUIRE_SHARED(dir, "golden/models/t5-mini");
  auto c = LoadModelConfig(dir);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->family, ModelFamily::kT5);
  EXPECT_TRUE(c->is_encoder_decoder);
  EXPECT_EQ(c->hidden_size, 128);
  EXPECT_EQ(c->num_hidden_layers, 2);
  EXPECT_EQ(c->num_decoder_layers, 2);
  EXPECT_EQ(c->num_attention_heads, 2);
  EXPECT_EQ(c->num_decoder_attention_heads, 2);
  EXPECT_EQ(c->head_dim, 64);
  EXPECT_EQ(c->intermediate_size, 512);
  EXPECT_EQ(c->decoder_intermediate_size, 512);
  EXPECT_EQ(c->vocab_size, 32128);
  EXPECT_EQ(c->activation, Activation::kRelu);
  EXPECT_FALSE(c->gated_ffn);
  EXPECT_EQ(c->norm_kind, NormKind::kRmsNorm);
  EXPECT_EQ(c->norm_placement, NormPlacement::kPreLN);
  EXPECT_DOUBLE_EQ(c->layer_norm_eps, 1e-6);
  EXPECT_EQ(c->position_embedding, PositionEmbeddingKind::kRelativeBuckets);
  EXPECT_EQ(c->relative_attention_num_buckets, 32);
  EXPECT_EQ(c->relative_attention_max_distance, 128);
  EXPECT_EQ(c->max_position_embeddings, 0);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_FALSE(c->attention_bias);
  EXPECT_EQ(c->pad_token_id, 0);
  EXPECT_THAT(c->eos_token_ids, ElementsAre(1));
  EXPECT_EQ(c->decoder_start_token_id, 0);
}

TEST(ModelConfigGoldenTest, Stories260K) {
  MASKSERVE_REQUIRE_SHARED(dir, "models/stories260K");
  auto c = LoadModelConfig(dir);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->family, ModelFamily::kLlama);
  EXPECT_EQ(c->hidden_size, 64);
  EXPECT_EQ(c->intermediate_size, 172);
  EXPECT_EQ(c->num_hidden_layers, 5);
  EXPECT_EQ(c->num_attention_heads, 8);
  EXPECT_EQ(c->num_key_value_heads, 4);
  EXPECT_EQ(c->head_dim, 8);
  EXPECT_EQ(c->vocab_size, 512);
  EXPECT_EQ(c->max_position_embeddings, 512);
  EXPECT_DOUBLE_EQ(c->layer_norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(c->rope_theta, 10000.0);
  EXPECT_EQ(c->activation, Activation::kSilu);
  EXPECT_TRUE(c->gated_ffn);
  EXPECT_EQ(c->norm_kind, NormKind::kRmsNorm);
  EXPECT_EQ(c->norm_placement, NormPlacement::kPreLN);
  EXPECT_EQ(c->position_embedding, PositionEmbeddingKind::kRotary);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_FALSE(c->attention_bias);
  EXPECT_FALSE(c->mlp_bias);
  EXPECT_EQ(c->bos_token_id, 1);
  EXPECT_THAT(c->eos_token_ids, ElementsAre(2));
  EXPECT_FALSE(c->pad_token_id.has_value());  // "pad_token_id": null
  EXPECT_EQ(c->torch_dtype, "float32");
}

TEST(ModelConfigGoldenTest, OpenNmtTransliteration) {
  MASKSERVE_REQUIRE_SHARED(dir, "models/opennmt-aren-transliteration");
  auto c = LoadModelConfig(dir);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->family, ModelFamily::kOpenNmtTransformer);
  EXPECT_TRUE(c->is_encoder_decoder);
  EXPECT_EQ(c->hidden_size, 32);
  EXPECT_EQ(c->num_hidden_layers, 6);
  EXPECT_EQ(c->num_decoder_layers, 6);
  EXPECT_EQ(c->num_attention_heads, 8);
  EXPECT_EQ(c->num_decoder_attention_heads, 8);
  EXPECT_EQ(c->head_dim, 4);
  EXPECT_EQ(c->intermediate_size, 128);
  EXPECT_EQ(c->decoder_intermediate_size, 128);
  EXPECT_EQ(c->vocab_size, 43);
  EXPECT_EQ(c->source_vocab_size, 51);
  EXPECT_EQ(c->activation, Activation::kRelu);
  EXPECT_EQ(c->norm_placement, NormPlacement::kPreLN);
  EXPECT_EQ(c->norm_kind, NormKind::kLayerNorm);
  EXPECT_TRUE(c->final_layer_norm);
  EXPECT_DOUBLE_EQ(c->layer_norm_eps, 1e-5);
  EXPECT_TRUE(c->scale_embedding);
  EXPECT_DOUBLE_EQ(c->embedding_scale, 5.656854249492381);
  EXPECT_EQ(c->position_embedding, PositionEmbeddingKind::kSinusoidal);
  EXPECT_EQ(c->position_embedding_type, "sinusoidal_concat_sin_cos");
  EXPECT_EQ(c->position_offset, 1);
  EXPECT_EQ(c->max_position_embeddings, 500);
  EXPECT_FALSE(c->tie_word_embeddings);
  EXPECT_FALSE(c->shared_encoder_decoder_embeddings);
  EXPECT_TRUE(c->lm_head_bias);
  EXPECT_FALSE(c->source_adds_bos_eos);
  EXPECT_EQ(c->pad_token_id, 0);
  EXPECT_EQ(c->bos_token_id, 1);
  EXPECT_THAT(c->eos_token_ids, ElementsAre(2));
  EXPECT_EQ(c->decoder_start_token_id, 1);
  EXPECT_EQ(c->unk_token_id, 42);
  EXPECT_EQ(c->source_unk_token_id, 50);
}

TEST(ModelConfigGoldenTest, MiniLmTokenizerOnly) {
  MASKSERVE_REQUIRE_SHARED(dir, "models/tokenizer-only/all-MiniLM-L6-v2");
  auto c = LoadModelConfig(dir);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->family, ModelFamily::kBert);
  EXPECT_EQ(c->hidden_size, 384);
  EXPECT_EQ(c->num_hidden_layers, 6);
  EXPECT_EQ(c->num_attention_heads, 12);
  EXPECT_EQ(c->head_dim, 32);
  EXPECT_EQ(c->intermediate_size, 1536);
  EXPECT_EQ(c->default_pooling, PoolingMode::kMean);
  EXPECT_TRUE(c->normalize);
  EXPECT_EQ(c->max_seq_length, 256);
}

TEST(ModelConfigTest, EosListAndFamilyDefaults) {
  auto c = ParseModelConfig(R"({"model_type":"llama","hidden_size":64,"num_hidden_layers":1,
      "num_attention_heads":4,"intermediate_size":100,"vocab_size":10,"eos_token_id":[1,2]})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(c->eos_token_ids, ElementsAre(1, 2));
  EXPECT_FALSE(c->tie_word_embeddings);  // LlamaConfig default
  EXPECT_EQ(c->num_key_value_heads, 4);
  EXPECT_DOUBLE_EQ(c->layer_norm_eps, 1e-6);
  EXPECT_EQ(c->max_position_embeddings, 2048);

  c = ParseModelConfig(R"({"model_type":"roberta","hidden_size":8,"num_hidden_layers":1,
      "num_attention_heads":2,"intermediate_size":16,"vocab_size":10})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->pad_token_id, 1);
  EXPECT_EQ(c->position_offset, 2);
  EXPECT_EQ(c->norm_placement, NormPlacement::kPostLN);

  c = ParseModelConfig(R"({"model_type":"t5","d_model":8,"num_layers":2,"num_decoder_layers":3,
      "num_heads":2,"d_kv":4,"d_ff":16,"vocab_size":10,"feed_forward_proj":"gated-gelu",
      "tie_word_embeddings":false})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->gated_ffn);
  EXPECT_EQ(c->activation, Activation::kGeluTanh);  // HF maps gated-gelu to gelu_new
  EXPECT_EQ(c->num_decoder_layers, 3);
  EXPECT_FALSE(c->tie_word_embeddings);
  EXPECT_TRUE(c->is_encoder_decoder);

  c = ParseModelConfig(R"({"model_type":"gpt_neox","hidden_size":8,"num_hidden_layers":1,
      "num_attention_heads":2,"intermediate_size":32,"vocab_size":10,"rotary_pct":0.5,
      "rotary_emb_base":500})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_DOUBLE_EQ(c->rotary_pct, 0.5);
  EXPECT_DOUBLE_EQ(c->rope_theta, 500);
  EXPECT_TRUE(c->parallel_residual);

  c = ParseModelConfig(R"({"model_type":"bart","d_model":16,"encoder_layers":2,"decoder_layers":1,
      "encoder_attention_heads":4,"decoder_attention_heads":2,"encoder_ffn_dim":32,
      "decoder_ffn_dim":48,"vocab_size":10,"activation_function":"gelu","scale_embedding":true})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->is_encoder_decoder);
  EXPECT_EQ(c->num_decoder_layers, 1);
  EXPECT_EQ(c->num_decoder_attention_heads, 2);
  EXPECT_EQ(c->decoder_intermediate_size, 48);
  EXPECT_EQ(c->position_offset, 2);
  EXPECT_DOUBLE_EQ(c->embedding_scale, 4.0);

  c = ParseModelConfig(R"({"model_type":"marian","d_model":16,"encoder_layers":1,
      "encoder_attention_heads":4,"encoder_ffn_dim":32,"vocab_size":10,"pad_token_id":9,
      "activation_function":"swish"})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->position_embedding, PositionEmbeddingKind::kSinusoidal);
  EXPECT_EQ(c->activation, Activation::kSilu);
  EXPECT_EQ(c->decoder_start_token_id, 9);
  EXPECT_EQ(c->num_decoder_layers, 1);

  // No model_type: inferred from the architecture.
  c = ParseModelConfig(R"({"architectures":["BertModel"],"hidden_size":8,"num_hidden_layers":1,
      "num_attention_heads":2,"intermediate_size":16,"vocab_size":10,
      "position_embedding_type":"relative_key"})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->family, ModelFamily::kBert);
  EXPECT_EQ(c->position_embedding, PositionEmbeddingKind::kRelativeKey);
}

TEST(ModelConfigTest, Errors) {
  auto err = [](const std::string& json) {
    auto c = ParseModelConfig(json, "/m/config.json");
    EXPECT_FALSE(c.ok()) << json;
    return c.ok() ? std::string() : std::string(c.status().message());
  };
  EXPECT_THAT(err("{"), HasSubstr("/m/config.json"));
  EXPECT_THAT(err("[1]"), HasSubstr("not a JSON object"));
  EXPECT_THAT(err(R"({"hidden_size":8})"), HasSubstr("\"model_type\""));
  std::string m = err(R"({"model_type":"bert","num_hidden_layers":1,"num_attention_heads":2,
      "intermediate_size":16,"vocab_size":10})");
  EXPECT_THAT(m, HasSubstr("/m/config.json"));
  EXPECT_THAT(m, HasSubstr("\"hidden_size\""));
  EXPECT_THAT(err(R"({"model_type":"bert","hidden_size":8,"num_hidden_layers":1,
      "num_attention_heads":2,"vocab_size":10})"),
              HasSubstr("\"intermediate_size\""));
  EXPECT_THAT(err(R"({"model_type":"bert","hidden_size":"8","num_hidden_layers":1,
      "num_attention_heads":2,"intermediate_size":16,"vocab_size":10})"),
              HasSubstr("must be an integer"));
  EXPECT_THAT(err(R"({"model_type":"bert","hidden_size":10,"num_hidden_layers":1,
      "num_attention_heads":3,"intermediate_size":16,"vocab_size":10})"),
              HasSubstr("divisible"));
  EXPECT_THAT(err(R"({"model_type":"bert","hidden_size":8,"num_hidden_layers":0,
      "num_attention_heads":2,"intermediate_size":16,"vocab_size":10})"),
              HasSubstr("num_hidden_layers"));
  EXPECT_THAT(err(R"({"model_type":"bert","hidden_size":8,"num_hidden_layers":1,
      "num_attention_heads":2,"intermediate_size":16,"vocab_size":10,"hidden_act":"tanhh"})"),
              HasSubstr("tanhh"));
  EXPECT_THAT(err(R"({"model_type":"llama","hidden_size":8,"num_hidden_layers":1,
      "num_attention_heads":4,"num_key_value_heads":3,"intermediate_size":16,"vocab_size":10})"),
              HasSubstr("num_key_value_heads"));
  EXPECT_THAT(err(R"({"model_type":"llama","hidden_size":8,"num_hidden_layers":1,
      "num_attention_heads":4,"num_key_value_heads":0,"intermediate_size":16,"vocab_size":10})"),
              HasSubstr("num_key_value_heads"));
  EXPECT_THAT(err(R"({"model_type":"llama","hidden_size":8,"num_hidden_layers":1,
      "num_attention_heads":4,"intermediate_size":16,"vocab_size":10,
      "rope_scaling":{"type":"linear","factor":2}})"),
              HasSubstr("rope_scaling"));
  EXPECT_THAT(err(R"({"model_type":"gpt2","n_embd":8,"n_layer":1,"n_head":2,"vocab_size":10,
      "eos_token_id":"x"})"),
              HasSubstr("eos_token_id"));
}

class ModelConfigFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = maskserve::testing::MakeTempDir("model_config_test");
    WriteText(dir_ + "/config.json", R"({"model_type":"bert","hidden_size":8,"num_hidden_layers":1,
        "num_attention_heads":2,"intermediate_size":16,"vocab_size":10})");
  }
  std::string dir_;
};

TEST_F(ModelConfigFilesTest, MissingConfigNamesFile) {
  auto c = LoadModelConfig(dir_ + "/absent");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("absent/config.json"));
}

TEST_F(ModelConfigFilesTest, BareConfigHasNoPooling) {
  auto c = LoadModelConfig(dir_);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->default_pooling.has_value());
  EXPECT_FALSE(c->normalize);
}

TEST_F(ModelConfigFilesTest, PoolingModes) {
  WriteText(dir_ + "/modules.json",
            R"([{"type":"sentence_transformers.models.Transformer","path":""},
                {"type":"sentence_transformers.models.Pooling","path":"pool"}])");
  WriteText(dir_ + "/pool/config.json", R"({"pooling_mode_cls_token": true})");
  auto c = LoadModelConfig(dir_);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->default_pooling, PoolingMode::kCls);
  EXPECT_FALSE(c->normalize);

  WriteText(dir_ + "/pool/config.json", R"({"pooling_mode_lasttoken": true})");
  c = LoadModelConfig(dir_);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->default_pooling, PoolingMode::kLastToken);

  WriteText(dir_ + "/pool/config.json", R"({"pooling_mode_max_tokens": true})");
  c = LoadModelConfig(dir_);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->default_pooling, PoolingMode::kMax);

  WriteText(dir_ + "/pool/config.json",
            R"({"pooling_mode_mean_tokens": true, "pooling_mode_max_tokens": true})");
  c = LoadModelConfig(dir_);
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("pool/config.json"));

  WriteText(dir_ + "/pool/config.json", R"({"pooling_mode_mean_sqrt_len_tokens": true})");
  c = LoadModelConfig(dir_);
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("pooling_mode_mean_sqrt_len_tokens"));

  WriteText(dir_ + "/pool/config.json", R"({"pooling_mode_cls_token": "yes"})");
  c = LoadModelConfig(dir_);
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("pooling_mode_cls_token"));

  // A Dense module would change the embedding: refused, not ignored.
  WriteText(dir_ + "/modules.json",
            R"([{"type":"sentence_transformers.models.Dense","path":"2_Dense"}])");
  c = LoadModelConfig(dir_);
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("Dense"));

  WriteText(dir_ + "/modules.json", "{broken");
  c = LoadModelConfig(dir_);
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("modules.json"));
}

TEST_F(ModelConfigFilesTest, SentenceBertConfig) {
  WriteText(dir_ + "/sentence_bert_config.json", R"({"max_seq_length": 128})");
  auto c = LoadModelConfig(dir_);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->max_seq_length, 128);
  WriteText(dir_ + "/sentence_bert_config.json", R"({"max_seq_length": -3})");
  c = LoadModelConfig(dir_);
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("sentence_bert_config.json"));
}

}  // namespace
}  // namespace maskserve::engine
