#include "engine/safetensors.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include "absl/strings/str_cat.h"
#include "engine/safetensors_writer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/util/test_env.h"

namespace maskserve::engine {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

// Little-endian length + header + data, with no validation, for corrupt files.
std::string RawFile(const std::string& header, const std::string& data) {
  std::string out;
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  return out + header + data;
}

// Independent reference for F16 decoding: sign * mant * 2^(exp - 25) etc.
double F16Reference(uint16_t h) {
  const int sign = (h >> 15) ? -1 : 1;
  const int exp = (h >> 10) & 0x1f;
  const int mant = h & 0x3ff;
  if (exp == 0) return sign * std::ldexp(mant, -24);
  if (exp == 31) return mant ? std::numeric_limits<double>::quiet_NaN()
                             : sign * std::numeric_limits<double>::infinity();
  return sign * std::ldexp(1024 + mant, exp - 25);
}

TEST(SafetensorsConversionTest, F16ToF32ExactForAll65536Values) {
  std::vector<uint16_t> all(65536);
  for (int i = 0; i < 65536; ++i) all[i] = static_cast<uint16_t>(i);
  std::vector<float> vec(65536);
  ConvertF16ToF32(all.data(), vec.data(), all.size());  // vector path
  for (int i = 0; i < 65536; ++i) {
    const double ref = F16Reference(static_cast<uint16_t>(i));
    const float scalar = F16ToFloat32(static_cast<uint16_t>(i));
    if (std::isnan(ref)) {
      EXPECT_TRUE(std::isnan(vec[i]) && std::isnan(scalar)) << i;
      // Vector (F16C) and scalar paths agree bit for bit, NaNs included.
      EXPECT_EQ(Bits(vec[i]), Bits(scalar)) << std::hex << i;
    } else {
      ASSERT_EQ(static_cast<double>(vec[i]), ref) << std::hex << i;
      ASSERT_EQ(Bits(vec[i]), Bits(scalar)) << std::hex << i;
      // Round trip back to F16 is the identity (signed zero included).
      ASSERT_EQ(Float32ToF16(vec[i]), i) << std::hex << i;
    }
  }
}

TEST(SafetensorsConversionTest, F16SpecialValues) {
  EXPECT_EQ(F16ToFloat32(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(F16ToFloat32(0x03ff), 1023 * std::ldexp(1.0f, -24));  // largest subnormal
  EXPECT_EQ(F16ToFloat32(0x0400), std::ldexp(1.0f, -14));  // smallest normal
  EXPECT_EQ(F16ToFloat32(0x7bff), 65504.0f);
  EXPECT_EQ(F16ToFloat32(0x7c00), std::numeric_limits<float>::infinity());
  EXPECT_EQ(F16ToFloat32(0xfc00), -std::numeric_limits<float>::infinity());
  EXPECT_EQ(Bits(F16ToFloat32(0x8000)), 0x80000000u);  // -0
  EXPECT_TRUE(std::isnan(F16ToFloat32(0x7e00)));
  EXPECT_TRUE(std::isnan(F16ToFloat32(0x7c01)));  // signalling NaN stays NaN
}

TEST(SafetensorsConversionTest, F32ToF16RoundsToNearestEven) {
  // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even (1.0).
  EXPECT_EQ(Float32ToF16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
  // 1 + 3 * 2^-11 is halfway between 1+2^-10 (odd) and 1+2^-9: goes up.
  EXPECT_EQ(Float32ToF16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
  EXPECT_EQ(Float32ToF16(65519.0f), 0x7bff);
  EXPECT_EQ(Float32ToF16(65520.0f), 0x7c00);  // tie rounds to even = inf
  EXPECT_EQ(Float32ToF16(1e10f), 0x7c00);
  EXPECT_EQ(Float32ToF16(-1e10f), 0xfc00);
  EXPECT_EQ(Float32ToF16(std::ldexp(1.0f, -25)), 0x0000);  // tie to even (0)
  EXPECT_EQ(Float32ToF16(std::ldexp(1.5f, -25)), 0x0001);
  EXPECT_EQ(Float32ToF16(std::ldexp(3.0f, -25)), 0x0002);  // 1.5 ulp -> 2 (even)
  EXPECT_EQ(Float32ToF16(1e-30f), 0x0000);
  EXPECT_EQ(Float32ToF16(-1e-30f), 0x8000);
  EXPECT_EQ(Float32ToF16(std::numeric_limits<float>::quiet_NaN()) & 0x7e00, 0x7e00);
}

TEST(SafetensorsConversionTest, BF16ExactAndRounding) {
  for (uint32_t h = 0; h < 65536; ++h) {
    float f = BF16ToFloat32(static_cast<uint16_t>(h));
    ASSERT_EQ(Bits(f), h << 16);
    if (!std::isnan(f)) {
      ASSERT_EQ(Float32ToBF16(f), h);
    }
  }
  EXPECT_EQ(Float32ToBF16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);  // tie -> even
  EXPECT_EQ(Float32ToBF16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);
  EXPECT_TRUE(std::isnan(BF16ToFloat32(Float32ToBF16(std::nanf("")))));
  // Vector path on an odd-sized, unaligned buffer.
  std::vector<uint8_t> buf(2 * 37 + 1);
  std::vector<float> expect(37);
  for (int i = 0; i < 37; ++i) {
    expect[i] = static_cast<float>(i) - 18.5f;
    uint16_t b = Float32ToBF16(expect[i]);
    std::memcpy(buf.data() + 1 + 2 * i, &b, 2);
  }
  std::vector<float> got(37);
  ConvertBF16ToF32(buf.data() + 1, got.data(), 37);
  EXPECT_EQ(got, expect);
}

class SafetensorsFileTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = maskserve::testing::MakeTempDir("safetensors_test"); }
  std::string Path(const std::string& name) { return dir_ + "/" + name; }
  std::string dir_;
};

TEST_F(SafetensorsFileTest, RoundTripAllThreeDtypes) {
  std::vector<float> values = {0.0f, -0.0f, 1.0f, -2.5f, 0.1f, 65504.0f, 3.0e-5f,
                               std::numeric_limits<float>::infinity(), 1234.5678f};
  std::vector<float> big(1000);
  for (size_t i = 0; i < big.size(); ++i) big[i] = std::sin(static_cast<float>(i)) * 7.0f;
  SafetensorsWriter w;
  w.SetMetadata("format", "pt");
  ASSERT_TRUE(w.Add("a.f32", SafetensorsDtype::kF32, {3, 3}, values.data()).ok());
  ASSERT_TRUE(w.Add("b.f16", SafetensorsDtype::kF16, {9}, values.data()).ok());
  ASSERT_TRUE(w.Add("c.bf16", SafetensorsDtype::kBF16, {1, 9}, values.data()).ok());
  ASSERT_TRUE(w.Add("d.big16", SafetensorsDtype::kF16, {10, 100}, big.data()).ok());
  ASSERT_TRUE(w.Add("e.scalar", SafetensorsDtype::kF32, {}, values.data() + 2).ok());
  ASSERT_TRUE(w.Add("f.empty", SafetensorsDtype::kF32, {0, 4}, nullptr).ok());
  EXPECT_FALSE(w.Add("a.f32", SafetensorsDtype::kF32, {1}, values.data()).ok());  // duplicate
  EXPECT_FALSE(w.Add("x", SafetensorsDtype::kI64, {1}, values.data()).ok());
  ASSERT_TRUE(w.Write(Path("m.safetensors")).ok());

  auto file = SafetensorsFile::Open(Path("m.safetensors"));
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->tensors().size(), 6u);
  EXPECT_EQ((*file)->metadata().at("format"), "pt");

  auto f32 = (*file)->ReadFloat32("a.f32");
  ASSERT_TRUE(f32.ok());
  for (size_t i = 0; i < values.size(); ++i) EXPECT_EQ(Bits((*f32)[i]), Bits(values[i])) << i;

  auto f16 = (*file)->ReadFloat32("b.f16");
  ASSERT_TRUE(f16.ok());
  for (size_t i = 0; i < values.size(); ++i) {
    EXPECT_EQ(Bits((*f16)[i]), Bits(F16ToFloat32(Float32ToF16(values[i])))) << i;
  }
  EXPECT_EQ((*f16)[5], 65504.0f);
  EXPECT_NEAR((*f16)[4], 0.1f, 1e-4);

  auto bf16 = (*file)->ReadFloat32("c.bf16");
  ASSERT_TRUE(bf16.ok());
  for (size_t i = 0; i < values.size(); ++i) {
    EXPECT_EQ(Bits((*bf16)[i]), Bits(BF16ToFloat32(Float32ToBF16(values[i])))) << i;
  }
  auto big16 = (*file)->ReadFloat32("d.big16");
  ASSERT_TRUE(big16.ok());
  for (size_t i = 0; i < big.size(); ++i) ASSERT_NEAR((*big16)[i], big[i], 7.0 / 1024) << i;

  const TensorInfo* scalar = (*file)->Find("e.scalar");
  ASSERT_NE(scalar, nullptr);
  EXPECT_TRUE(scalar->shape.empty());
  EXPECT_EQ(scalar->num_elements(), 1);
  const TensorInfo* c = (*file)->Find("c.bf16");
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->dtype, SafetensorsDtype::kBF16);
  EXPECT_THAT(c->shape, ElementsAre(1, 9));
  EXPECT_EQ((*file)->RawBytes(*c).size(), 18u);
  auto empty = (*file)->ReadFloat32("f.empty");
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());

  // Size mismatch on the caller's buffer is an error naming the tensor.
  std::vector<float> small(3);
  absl::Status s = (*file)->ReadFloat32("a.f32", small.data(), small.size());
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(s.message(), HasSubstr("a.f32"));
}

TEST_F(SafetensorsFileTest, WriterOutputIsAlignedAndDeterministic) {
  std::vector<float> v(7, 1.0f);
  SafetensorsWriter w;
  ASSERT_TRUE(w.Add("odd16", SafetensorsDtype::kF16, {7}, v.data()).ok());
  ASSERT_TRUE(w.Add("z32", SafetensorsDtype::kF32, {7}, v.data()).ok());
  const std::string bytes = w.Serialize();
  EXPECT_EQ(bytes, w.Serialize());
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(bytes[i]);
  EXPECT_EQ(n % 8, 0u);
  auto header = ParseSafetensorsHeader(bytes.substr(8, n), bytes.size() - 8 - n);
  ASSERT_TRUE(header.ok()) << header.status();
  // F32 first, so the odd-sized F16 tensor cannot misalign it.
  EXPECT_EQ(header->Find("z32")->begin, 0u);
  EXPECT_EQ(header->Find("odd16")->begin, 28u);
}

TEST_F(SafetensorsFileTest, IntegerDtypesListButDoNotLoadAsFloat) {
  SafetensorsWriter w;
  std::string ids(8 * 4, '\0');
  ASSERT_TRUE(w.AddRaw("position_ids", SafetensorsDtype::kI64, {1, 4}, ids).ok());
  ASSERT_TRUE(w.AddRaw("flags", SafetensorsDtype::kBool, {3}, std::string(3, '\1')).ok());
  EXPECT_FALSE(w.AddRaw("bad", SafetensorsDtype::kI32, {3}, std::string(5, '\0')).ok());
  ASSERT_TRUE(w.Write(Path("ints.safetensors")).ok());
  auto file = SafetensorsFile::Open(Path("ints.safetensors"));
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_NE((*file)->Find("position_ids"), nullptr);
  EXPECT_EQ((*file)->Find("position_ids")->dtype, SafetensorsDtype::kI64);
  auto r = (*file)->ReadFloat32("position_ids");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("position_ids"));
  EXPECT_THAT(r.status().message(), HasSubstr("I64"));
  EXPECT_THAT(r.status().message(), HasSubstr("ints.safetensors"));
}

TEST_F(SafetensorsFileTest, TruncatedFiles) {
  std::vector<float> v(100, 0.5f);
  SafetensorsWriter w;
  ASSERT_TRUE(w.Add("w", SafetensorsDtype::kF32, {100}, v.data()).ok());
  const std::string good = w.Serialize();
  for (size_t cut : {size_t{0}, size_t{5}, size_t{12}, good.size() - 1}) {
    const std::string path = Path(absl::StrCat("cut", cut, ".safetensors"));
    WriteBytes(path, good.substr(0, cut));
    auto f = SafetensorsFile::Open(path);
    ASSERT_FALSE(f.ok()) << cut;
    EXPECT_THAT(f.status().message(), HasSubstr(path)) << cut;
  }
  auto missing = SafetensorsFile::Open(Path("nope.safetensors"));
  EXPECT_TRUE(absl::IsNotFound(missing.status()));
  EXPECT_THAT(missing.status().message(), HasSubstr("nope.safetensors"));
}

TEST_F(SafetensorsFileTest, HeaderLengthBeyondFileOrLimit) {
  std::string bytes = RawFile("{}", "");
  bytes[0] = 100;  // claims 100 header bytes, has 2
  WriteBytes(Path("long.safetensors"), bytes);
  auto f = SafetensorsFile::Open(Path("long.safetensors"));
  ASSERT_FALSE(f.ok());
  EXPECT_THAT(f.status().message(), HasSubstr("truncated"));
  EXPECT_THAT(f.status().message(), HasSubstr("long.safetensors"));

  std::string huge = RawFile("{}", "");
  huge[7] = 0x01;  // 2^56 bytes
  WriteBytes(Path("huge.safetensors"), huge);
  f = SafetensorsFile::Open(Path("huge.safetensors"));
  ASSERT_FALSE(f.ok());
  EXPECT_THAT(f.status().message(), HasSubstr("exceeds"));

  // An empty header object is a valid, empty file.
  WriteBytes(Path("empty.safetensors"), RawFile("{}", ""));
  f = SafetensorsFile::Open(Path("empty.safetensors"));
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_TRUE((*f)->tensors().empty());
}

TEST(SafetensorsHeaderTest, BadJsonAndBadEntries) {
  EXPECT_FALSE(ParseSafetensorsHeader("{", 0).ok());
  EXPECT_FALSE(ParseSafetensorsHeader("[]", 0).ok());
  EXPECT_FALSE(ParseSafetensorsHeader("", 0).ok());
  EXPECT_FALSE(ParseSafetensorsHeader(std::string(1000, '['), 0).ok());  // too deep
  EXPECT_TRUE(ParseSafetensorsHeader("{}   ", 0).ok());  // space padding
  EXPECT_FALSE(ParseSafetensorsHeader(R"({"__metadata__": {"a": 1}})", 0).ok());

  auto err = [](const std::string& json, uint64_t size) {
    auto h = ParseSafetensorsHeader(json, size);
    EXPECT_FALSE(h.ok()) << json;
    return h.ok() ? std::string() : std::string(h.status().message());
  };
  EXPECT_THAT(err(R"({"t": {"dtype":"F17","shape":[1],"data_offsets":[0,4]}})", 4),
              HasSubstr("'t'"));
  EXPECT_THAT(err(R"({"t": {"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4),
              HasSubstr("'t'"));
  EXPECT_THAT(err(R"({"t": {"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", 4),
              HasSubstr("'t'"));
  EXPECT_THAT(err(R"({"t": {"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", 4),
              HasSubstr("begin > end"));
  EXPECT_THAT(err(R"({"t": {"dtype":"F32","shape":[1],"data_offsets":[0]}})", 4),
              HasSubstr("'t'"));
  EXPECT_THAT(err(R"({"t": {"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 3),
              HasSubstr("past the data section"));
  EXPECT_THAT(err(R"({"t": {"dtype":"F32","shape":[4294967296,4294967296,4],"data_offsets":[0,4]}})",
                  4),
              HasSubstr("overflow"));
  EXPECT_THAT(err(R"({"t": 5})", 4), HasSubstr("'t'"));
}

TEST(SafetensorsHeaderTest, ShapeSizeMismatch) {
  auto h = ParseSafetensorsHeader(
      R"({"w": {"dtype":"F16","shape":[2,3],"data_offsets":[0,24]}})", 24);
  ASSERT_FALSE(h.ok());
  EXPECT_THAT(h.status().message(), HasSubstr("'w'"));
  EXPECT_THAT(h.status().message(), HasSubstr("[2, 3]"));
}

TEST(SafetensorsHeaderTest, OverlapsAndDuplicates) {
  auto h = ParseSafetensorsHeader(R"({"a": {"dtype":"F32","shape":[2],"data_offsets":[0,8]},
                                      "b": {"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                                  12);
  ASSERT_FALSE(h.ok());
  EXPECT_THAT(h.status().message(), HasSubstr("overlaps"));
  EXPECT_THAT(h.status().message(), HasSubstr("'a'"));
  EXPECT_THAT(h.status().message(), HasSubstr("'b'"));

  h = ParseSafetensorsHeader(R"({"a": {"dtype":"F32","shape":[2],"data_offsets":[0,8]},
                                 "a": {"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                             16);
  ASSERT_FALSE(h.ok());
  EXPECT_THAT(h.status().message(), HasSubstr("duplicate"));
  EXPECT_THAT(h.status().message(), HasSubstr("'a'"));

  // Adjacent, gapped and empty tensors are fine; a nested "a" key is no duplicate.
  h = ParseSafetensorsHeader(R"({"__metadata__": {"a": "x"},
                                 "a": {"dtype":"F32","shape":[2],"data_offsets":[0,8]},
                                 "b": {"dtype":"U8","shape":[0],"data_offsets":[4,4]},
                                 "c": {"dtype":"BF16","shape":[2],"data_offsets":[12,16]}})",
                             16);
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->tensors.size(), 3u);
  EXPECT_EQ(h->metadata.at("a"), "x");
  EXPECT_EQ(h->Find("zzz"), nullptr);
}

class SafetensorsModelTest : public SafetensorsFileTest {};

TEST_F(SafetensorsModelTest, SingleFileAndErrorsNameFileAndTensor) {
  std::vector<float> v(6, 2.0f);
  SafetensorsWriter w;
  ASSERT_TRUE(w.Add("enc.w", SafetensorsDtype::kF16, {2, 3}, v.data()).ok());
  ASSERT_TRUE(w.Write(Path("model.safetensors")).ok());
  auto m = SafetensorsModel::Open(dir_);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_TRUE((*m)->Has("enc.w"));
  EXPECT_FALSE((*m)->Has("enc.b"));
  EXPECT_THAT(*(*m)->Shape("enc.w"), ElementsAre(2, 3));
  EXPECT_TRUE((*m)->RequireShape("enc.w", {2, 3}).ok());

  absl::Status s = (*m)->RequireShape("enc.w", {3, 2});
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.message(), absl::StrCat("tensor 'enc.w' in file ", Path("model.safetensors"),
                                      " has shape [2, 3], expected [3, 2]"));
  auto missing = (*m)->ReadFloat32("enc.b");
  ASSERT_FALSE(missing.ok());
  EXPECT_TRUE(absl::IsNotFound(missing.status()));
  EXPECT_THAT(missing.status().message(), HasSubstr("'enc.b'"));
  EXPECT_THAT(missing.status().message(), HasSubstr("model.safetensors"));
  EXPECT_THAT(missing.status().message(), HasSubstr(dir_));
  EXPECT_FALSE((*m)->Shape("enc.b").ok());

  std::vector<float> out(5);
  s = (*m)->ReadFloat32("enc.w", out.data(), out.size());
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.message(), HasSubstr("'enc.w'"));
  EXPECT_THAT(s.message(), HasSubstr(Path("model.safetensors")));

  // A file path works too.
  auto single = SafetensorsModel::Open(Path("model.safetensors"));
  ASSERT_TRUE(single.ok()) << single.status();
  EXPECT_EQ(*(*single)->ReadFloat32("enc.w"), v);

  auto none = SafetensorsModel::Open(dir_ + "/nothing");
  EXPECT_FALSE(none.ok());
}

TEST_F(SafetensorsModelTest, ShardedIndex) {
  std::vector<float> a = {1, 2, 3, 4}, b = {5, 6};
  SafetensorsWriter w1, w2;
  ASSERT_TRUE(w1.Add("layer.0.w", SafetensorsDtype::kF32, {2, 2}, a.data()).ok());
  ASSERT_TRUE(w2.Add("layer.1.w", SafetensorsDtype::kBF16, {2}, b.data()).ok());
  ASSERT_TRUE(w2.Add("unlisted", SafetensorsDtype::kBF16, {2}, b.data()).ok());
  ASSERT_TRUE(w1.Write(Path("model-00001-of-00002.safetensors")).ok());
  ASSERT_TRUE(w2.Write(Path("model-00002-of-00002.safetensors")).ok());
  WriteBytes(Path("model.safetensors.index.json"),
             R"({"metadata": {"total_size": 20}, "weight_map": {
                 "layer.0.w": "model-00001-of-00002.safetensors",
                 "layer.1.w": "model-00002-of-00002.safetensors"}})");
  auto m = SafetensorsModel::Open(dir_);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ((*m)->files().size(), 2u);
  EXPECT_THAT((*m)->TensorNames(), ElementsAre("layer.0.w", "layer.1.w"));
  EXPECT_EQ(*(*m)->ReadFloat32("layer.0.w"), a);
  EXPECT_EQ(*(*m)->ReadFloat32("layer.1.w"), b);
  EXPECT_THAT((*m)->FileOf("layer.1.w")->path(), HasSubstr("00002"));
  absl::Status s = (*m)->RequireShape("layer.1.w", {3});
  EXPECT_THAT(s.message(), HasSubstr("model-00002-of-00002.safetensors has shape [2], expected [3]"));

  // Index naming a tensor its shard lacks: error names shard and tensor.
  WriteBytes(Path("model.safetensors.index.json"),
             R"({"weight_map": {"ghost": "model-00001-of-00002.safetensors"}})");
  auto bad = SafetensorsModel::Open(dir_);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("'ghost'"));
  EXPECT_THAT(bad.status().message(), HasSubstr("model-00001-of-00002.safetensors"));

  // Missing shard file.
  WriteBytes(Path("model.safetensors.index.json"),
             R"({"weight_map": {"x": "model-00009.safetensors"}})");
  bad = SafetensorsModel::Open(dir_);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("model-00009.safetensors"));

  WriteBytes(Path("model.safetensors.index.json"), R"({"weight_map": {"x": "../etc/passwd"}})");
  EXPECT_FALSE(SafetensorsModel::Open(dir_).ok());
  WriteBytes(Path("model.safetensors.index.json"), "{not json");
  bad = SafetensorsModel::Open(dir_);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("model.safetensors.index.json"));
}

TEST(SafetensorsGoldenTest, BertMiniF16) {
  MASKSERVE_REQUIRE_SHARED(path, "golden/models/bert-mini/model.safetensors");
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  // 5 embedding tensors + 3 layers x 16 + 5 MLM head tensors (no decoder weight: tied).
  EXPECT_EQ((*file)->tensors().size(), 5u + 3u * 16u + 5u);
  EXPECT_EQ((*file)->metadata().at("format"), "pt");
  EXPECT_EQ((*file)->Find("cls.predictions.decoder.weight"), nullptr);
  const TensorInfo* emb = (*file)->Find("bert.embeddings.word_embeddings.weight");
  ASSERT_NE(emb, nullptr);
  EXPECT_EQ(emb->dtype, SafetensorsDtype::kF16);
  EXPECT_THAT(emb->shape, ElementsAre(30522, 256));

  auto model = SafetensorsModel::Open(std::filesystem::path(path).parent_path().string());
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_TRUE((*model)->RequireShape("bert.encoder.layer.2.intermediate.dense.weight", {1024, 256}).ok());
  EXPECT_TRUE((*model)->RequireShape("cls.predictions.bias", {30522}).ok());
  EXPECT_TRUE((*model)->RequireShape("bert.embeddings.position_embeddings.weight", {512, 256}).ok());
  // LayerNorm weights were initialised 1 + N(0, 0.1): check the F16 decode
  // lands there (mean within 0.05 of 1 over 256 values).
  auto ln = (*model)->ReadFloat32("bert.embeddings.LayerNorm.weight");
  ASSERT_TRUE(ln.ok());
  double mean = 0;
  for (float x : *ln) mean += x;
  mean /= ln->size();
  EXPECT_NEAR(mean, 1.0, 0.05);
  // The whole embedding table decodes (exercises the vector path on 7.8M values).
  auto table = (*model)->ReadFloat32("bert.embeddings.word_embeddings.weight");
  ASSERT_TRUE(table.ok());
  EXPECT_EQ(table->size(), 30522u * 256u);
  for (float x : *table) ASSERT_TRUE(std::isfinite(x));
}

}  // namespace
}  // namespace maskserve::engine
