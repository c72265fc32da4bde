// Whitening profiles on disk: the store's CRUD, crash safety (torn, corrupt,
// leftover and misplaced files), name safety, concurrency, and the binary and
// JSON formats.
#include "server/whitening_store.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "server/crc32c.h"
#include "server/whitening_profile_file.h"
#include "server/whitening_profile_json.h"
#include "tests/util/test_env.h"

namespace maskserve::server {
namespace {

namespace fs = std::filesystem;
using engine::PoolingMode;

constexpr int kDim = 16;

engine::WhiteningParams FitRandom(int dim, uint64_t seed, int n = 200) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> g;
  std::vector<float> x(static_cast<size_t>(n) * dim);
  for (int i = 0; i < n; ++i) {
    float shared = g(rng);
    for (int c = 0; c < dim; ++c) x[i * dim + c] = g(rng) * (1.0f + c) + 0.5f * shared + 3.0f;
  }
  engine::WhiteningAccumulator acc(dim);
  EXPECT_TRUE(acc.Add(x.data(), n, dim).ok());
  auto params = engine::Fit(acc);
  EXPECT_TRUE(params.ok()) << params.status();
  return *params;
}

std::shared_ptr<const StoredProfile> MakeProfile(const std::string& model, const std::string& name,
                                                 float beta = 1.0f, uint64_t seed = 1,
                                                 int k = 8) {
  WhiteningProfileInfo info;
  info.model = model;
  info.name = name;
  info.pooling = PoolingMode::kFirstLastAvg;
  info.k = k;
  info.beta = beta;
  info.gamma = 0.75f;
  info.created_unix_s = 1700000000;
  auto p = StoredProfile::Create(info, FitRandom(kDim, seed));
  EXPECT_TRUE(p.ok()) << p.status();
  return *p;
}

std::unique_ptr<WhiteningStore> OpenOrDie(const std::string& dir) {
  auto store = WhiteningStore::Open(dir);
  EXPECT_TRUE(store.ok()) << store.status();
  return std::move(*store);
}

bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

bool SameBits(const std::vector<double>& a, const std::vector<double>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(double)) == 0;
}

void ExpectIdentical(const StoredProfile& a, const StoredProfile& b) {
  EXPECT_EQ(a.model(), b.model());
  EXPECT_EQ(a.name(), b.name());
  EXPECT_EQ(a.info().pooling, b.info().pooling);
  EXPECT_EQ(a.info().k, b.info().k);
  EXPECT_EQ(a.info().beta, b.info().beta);
  EXPECT_EQ(a.info().gamma, b.info().gamma);
  EXPECT_EQ(a.info().created_unix_s, b.info().created_unix_s);
  EXPECT_EQ(a.dim(), b.dim());
  EXPECT_EQ(a.num_samples(), b.num_samples());
  EXPECT_TRUE(SameBits(a.params().mean, b.params().mean));
  EXPECT_TRUE(SameBits(a.params().eigenvalues, b.params().eigenvalues));
  EXPECT_TRUE(SameBits(a.params().eigenvectors, b.params().eigenvectors));
  EXPECT_TRUE(SameBits(a.transform().weights(), b.transform().weights()));
  EXPECT_TRUE(SameBits(a.transform().bias(), b.transform().bias()));
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

bool AnyWarningContains(const WhiteningStore& store, const std::string& a, const std::string& b) {
  for (const std::string& w : store.open_warnings()) {
    if (w.find(a) != std::string::npos && w.find(b) != std::string::npos) return true;
  }
  return false;
}

std::string Warnings(const WhiteningStore& store) {
  std::string out;
  for (const std::string& w : store.open_warnings()) out += w + "\n";
  return out;
}

TEST(Crc32cTest, KnownVectorAndIncremental) {
  EXPECT_EQ(Crc32c("123456789"), 0xE3069283u);
  EXPECT_EQ(Crc32c(""), 0u);
  const std::string text = "The quick brown fox jumps over the lazy dog, twice over.";
  for (size_t cut : {0, 1, 7, 8, 9, 30}) {
    EXPECT_EQ(Crc32c(text.substr(cut), Crc32c(text.substr(0, cut))), Crc32c(text)) << cut;
  }
}

TEST(WhiteningStoreTest, PutGetListDelete) {
  const std::string dir = testing::MakeTempDir("wstore");
  auto store = OpenOrDie(dir);
  EXPECT_TRUE(store->open_warnings().empty());
  EXPECT_TRUE(store->List("bert").empty());

  auto nli = MakeProfile("bert", "nli");
  auto sts = MakeProfile("bert", "sts-b.v2", 0.5f, 2);
  auto other = MakeProfile("e5", "nli", 1.0f, 3);
  ASSERT_TRUE(store->Put(sts).ok());
  ASSERT_TRUE(store->Put(nli).ok());
  ASSERT_TRUE(store->Put(other).ok());
  EXPECT_TRUE(fs::is_regular_file(dir + "/whitening/bert/nli.wprof"));
  EXPECT_EQ(store->ProfilePath("bert", "nli"), dir + "/whitening/bert/nli.wprof");

  auto got = store->Get("bert", "nli");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->get(), nli.get());  // the same immutable object, no copy

  auto list = store->List("bert");
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0]->name(), "nli");
  EXPECT_EQ(list[1]->name(), "sts-b.v2");
  EXPECT_EQ(store->List("e5").size(), 1u);

  absl::Status s = store->Put(MakeProfile("bert", "nli", 0.25f), /*overwrite=*/false);
  EXPECT_EQ(s.code(), absl::StatusCode::kAlreadyExists) << s;
  EXPECT_EQ(store->Get("bert", "nli")->get(), nli.get());
  auto replacement = MakeProfile("bert", "nli", 0.25f);
  ASSERT_TRUE(store->Put(replacement).ok());
  EXPECT_EQ(store->Get("bert", "nli")->get(), replacement.get());

  ASSERT_TRUE(store->Delete("bert", "nli").ok());
  EXPECT_FALSE(fs::exists(dir + "/whitening/bert/nli.wprof"));
  got = store->Get("bert", "nli");
  EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(got.status().message(), "whitening profile 'nli' not found for model 'bert'");
  EXPECT_EQ(store->Delete("bert", "nli").code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(store->Get("e5", "nli").ok());  // same name, other model untouched
  EXPECT_EQ(store->List("bert").size(), 1u);

  // Deletion is durable.
  auto reopened = OpenOrDie(dir);
  EXPECT_EQ(reopened->Get("bert", "nli").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(reopened->List("bert").size(), 1u);
  EXPECT_TRUE(reopened->open_warnings().empty()) << Warnings(*reopened);
}

TEST(WhiteningStoreTest, ReopenGivesBitIdenticalTransforms) {
  const std::string dir = testing::MakeTempDir("wstore");
  auto profile = MakeProfile("bert", "nli", 0.3f, 7, kDim);
  {
    auto store = OpenOrDie(dir);
    ASSERT_TRUE(store->Put(profile).ok());
  }
  auto store = OpenOrDie(dir);
  EXPECT_TRUE(store->open_warnings().empty()) << Warnings(*store);
  auto got = store->Get("bert", "nli");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_NE(got->get(), profile.get());
  ExpectIdentical(**got, *profile);

  std::vector<float> x(3 * kDim);
  for (size_t i = 0; i < x.size(); ++i) x[i] = 0.1f * static_cast<float>(i) - 2.0f;
  std::vector<float> a(3 * kDim), b(3 * kDim);
  profile->transform().Apply(x.data(), 3, a.data());
  (*got)->transform().Apply(x.data(), 3, b.data());
  EXPECT_TRUE(SameBits(a, b));
}

TEST(WhiteningStoreTest, CorruptByteIsSkippedWithWarning) {
  const std::string dir = testing::MakeTempDir("wstore");
  {
    auto store = OpenOrDie(dir);
    ASSERT_TRUE(store->Put(MakeProfile("bert", "bad")).ok());
    ASSERT_TRUE(store->Put(MakeProfile("bert", "good")).ok());
  }
  const std::string path = dir + "/whitening/bert/bad.wprof";
  std::string bytes = testing::ReadFileOrDie(path);
  // One flipped bit in an eigenvector: the file still parses, only the
  // checksum tells.
  bytes[bytes.size() - 100] ^= 0x01;
  WriteFile(path, bytes);

  auto store = OpenOrDie(dir);
  EXPECT_EQ(store->Get("bert", "bad").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(store->Get("bert", "good").ok());
  ASSERT_EQ(store->open_warnings().size(), 1u) << Warnings(*store);
  EXPECT_TRUE(AnyWarningContains(*store, path, "checksum mismatch")) << Warnings(*store);
}

TEST(WhiteningStoreTest, TruncatedFilesAreSkipped) {
  const std::string dir = testing::MakeTempDir("wstore");
  {
    auto store = OpenOrDie(dir);
    ASSERT_TRUE(store->Put(MakeProfile("bert", "half")).ok());
    ASSERT_TRUE(store->Put(MakeProfile("bert", "tiny")).ok());
    ASSERT_TRUE(store->Put(MakeProfile("bert", "empty")).ok());
    ASSERT_TRUE(store->Put(MakeProfile("bert", "ok")).ok());
  }
  const std::string base = dir + "/whitening/bert/";
  const std::string full = testing::ReadFileOrDie(base + "half.wprof");
  WriteFile(base + "half.wprof", full.substr(0, full.size() / 2));
  WriteFile(base + "tiny.wprof", full.substr(0, 3));
  WriteFile(base + "empty.wprof", "");

  auto store = OpenOrDie(dir);
  EXPECT_EQ(store->List("bert").size(), 1u);
  EXPECT_TRUE(store->Get("bert", "ok").ok());
  EXPECT_EQ(store->open_warnings().size(), 3u) << Warnings(*store);
  EXPECT_TRUE(AnyWarningContains(*store, base + "half.wprof", "checksum")) << Warnings(*store);
  EXPECT_TRUE(AnyWarningContains(*store, base + "tiny.wprof", "truncated")) << Warnings(*store);
  EXPECT_TRUE(AnyWarningContains(*store, base + "empty.wprof", "truncated")) << Warnings(*store);
}

TEST(WhiteningStoreTest, CrashMidWriteKeepsOldProfile) {
  const std::string dir = testing::MakeTempDir("wstore");
  auto old_profile = MakeProfile("bert", "nli", 1.0f, 1);
  {
    auto store = OpenOrDie(dir);
    ASSERT_TRUE(store->Put(old_profile).ok());
  }
  // The replacement died after writing part of its temp file, before the
  // rename (what WriteFileAtomically would have left: <file>.tmp.XXXXXX).
  const std::string new_bytes = EncodeWhiteningProfile(*MakeProfile("bert", "nli", 0.5f, 2));
  const std::string tmp = dir + "/whitening/bert/nli.wprof.tmp.Ab12Cd";
  WriteFile(tmp, new_bytes.substr(0, new_bytes.size() / 3));

  auto store = OpenOrDie(dir);
  auto got = store->Get("bert", "nli");
  ASSERT_TRUE(got.ok()) << got.status();
  ExpectIdentical(**got, *old_profile);
  EXPECT_EQ(store->List("bert").size(), 1u);
  EXPECT_TRUE(AnyWarningContains(*store, tmp, "leftover temporary file")) << Warnings(*store);
  EXPECT_FALSE(fs::exists(tmp)) << "leftover temporary files are removed at start-up";
}

TEST(WhiteningStoreTest, LeftoverTempFileIsIgnoredEvenWhenComplete) {
  // A complete temp file is still not a profile: it was never committed.
  const std::string dir = testing::MakeTempDir("wstore");
  fs::create_directories(dir + "/whitening/bert");
  const std::string tmp = dir + "/whitening/bert/new.wprof.tmp.zzzzzz";
  WriteFile(tmp, EncodeWhiteningProfile(*MakeProfile("bert", "new")));
  auto store = OpenOrDie(dir);
  EXPECT_TRUE(store->List("bert").empty());
  EXPECT_EQ(store->Get("bert", "new").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(AnyWarningContains(*store, tmp, "leftover temporary file")) << Warnings(*store);
}

TEST(WhiteningStoreTest, StrayAndMisplacedFilesAreSkipped) {
  const std::string dir = testing::MakeTempDir("wstore");
  {
    auto store = OpenOrDie(dir);
    ASSERT_TRUE(store->Put(MakeProfile("bert", "nli")).ok());
  }
  const std::string root = dir + "/whitening/";
  fs::create_directories(root + "e5");
  fs::copy_file(root + "bert/nli.wprof", root + "e5/nli.wprof");      // wrong model
  fs::copy_file(root + "bert/nli.wprof", root + "bert/other.wprof");  // wrong name
  WriteFile(root + "bert/notes.txt", "hello");
  WriteFile(root + "README", "stray file");
  fs::create_directories(root + "bad name");

  auto store = OpenOrDie(dir);
  EXPECT_TRUE(store->Get("bert", "nli").ok());
  EXPECT_EQ(store->List("bert").size(), 1u);
  EXPECT_TRUE(store->List("e5").empty());
  EXPECT_EQ(store->open_warnings().size(), 5u) << Warnings(*store);
  EXPECT_TRUE(AnyWarningContains(*store, root + "e5/nli.wprof", "of model 'bert'"));
  EXPECT_TRUE(AnyWarningContains(*store, root + "bert/other.wprof", "profile 'nli'"));
  EXPECT_TRUE(AnyWarningContains(*store, root + "bert/notes.txt", "not a .wprof"));
  EXPECT_TRUE(AnyWarningContains(*store, root + "README", "not a model directory"));
  EXPECT_TRUE(AnyWarningContains(*store, root + "bad name", "not a valid model name"));
}

TEST(WhiteningStoreTest, PathTraversalNamesAreRejected) {
  const std::string dir = testing::MakeTempDir("wstore");
  auto store = OpenOrDie(dir);
  const std::vector<std::string> bad = {"",    ".",   "..",  "../x", "a/b", "/abs",
                                        "a b", "a\\b", "é",  std::string(65, 'a'),
                                        std::string("a\0b", 3)};
  for (const std::string& name : bad) {
    WhiteningProfileInfo info;
    info.model = "bert";
    info.name = name;
    info.k = 4;
    auto p = StoredProfile::Create(info, FitRandom(kDim, 1));
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument) << name;
    EXPECT_NE(p.status().message().find("profile name"), std::string::npos) << p.status();
    info.model = name;
    info.name = "ok";
    p = StoredProfile::Create(info, FitRandom(kDim, 1));
    EXPECT_NE(p.status().message().find("model name"), std::string::npos) << p.status();
    EXPECT_EQ(store->Get("bert", name).status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(store->Get(name, "ok").status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(store->Delete("bert", name).code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(store->Delete(name, "ok").code(), absl::StatusCode::kInvalidArgument);
  }
  EXPECT_TRUE(IsValidWhiteningName(std::string(64, 'a')));
  EXPECT_TRUE(IsValidWhiteningName("A-z_0.9"));
  EXPECT_TRUE(IsValidWhiteningName("..."));  // not a path component of its own
  // Nothing was created outside the root.
  size_t entries = 0;
  for (auto it = fs::recursive_directory_iterator(dir); it != fs::recursive_directory_iterator();
       ++it) {
    ++entries;
  }
  EXPECT_EQ(entries, 1u);  // just whitening/
}

TEST(WhiteningStoreTest, ConcurrentGetAndPut) {
  const std::string dir = testing::MakeTempDir("wstore");
  auto store = OpenOrDie(dir);
  // Two versions of one profile, told apart by beta; Put alternates them.
  const std::vector<std::shared_ptr<const StoredProfile>> versions = {
      MakeProfile("bert", "hot", 1.0f, 1), MakeProfile("bert", "hot", 0.5f, 2)};
  ASSERT_TRUE(store->Put(versions[0]).ok());
  std::vector<std::shared_ptr<const StoredProfile>> extra;
  for (int i = 0; i < 4; ++i) extra.push_back(MakeProfile("bert", "p" + std::to_string(i)));

  std::atomic<int> failures{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      // Few iterations: every Put/Delete pays real fsyncs.
      for (int i = 0; i < 8; ++i) {
        if (!store->Put(versions[(i + t) % 2]).ok()) ++failures;
        if (!store->Put(extra[t]).ok()) ++failures;
        if (i % 4 == 3 && !store->Delete("bert", extra[t]->name()).ok()) ++failures;
      }
    });
  }
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      std::vector<float> x(kDim, 1.0f), y(8);
      while (!stop.load()) {
        auto got = store->Get("bert", "hot");
        if (!got.ok()) {
          ++failures;
          continue;
        }
        const StoredProfile& p = **got;
        // Either version, complete: its transform belongs to its params.
        const auto& expected = p.info().beta == 1.0f ? versions[0] : versions[1];
        if (!SameBits(p.transform().weights(), expected->transform().weights())) ++failures;
        p.transform().Apply(x.data(), 1, y.data());
        for (const auto& listed : store->List("bert")) {
          if (listed->model() != "bert") ++failures;
        }
      }
    });
  }
  for (int t = 0; t < 4; ++t) threads[t].join();
  stop.store(true);
  for (size_t t = 4; t < threads.size(); ++t) threads[t].join();
  EXPECT_EQ(failures.load(), 0);

  // Memory and disk agree.
  auto reopened = OpenOrDie(dir);
  EXPECT_TRUE(reopened->open_warnings().empty()) << Warnings(*reopened);
  const auto mem = store->List("bert");
  const auto disk = reopened->List("bert");
  ASSERT_EQ(mem.size(), disk.size());
  for (size_t i = 0; i < mem.size(); ++i) ExpectIdentical(*mem[i], *disk[i]);
  // Nothing left behind but profiles.
  for (const auto& e : fs::directory_iterator(dir + "/whitening/bert")) {
    EXPECT_EQ(e.path().extension(), ".wprof") << e.path();
  }
}

TEST(WhiteningStoreTest, OpenFailsWhenDataDirIsAFile) {
  const std::string dir = testing::MakeTempDir("wstore");
  WriteFile(dir + "/file", "x");
  auto store = WhiteningStore::Open(dir + "/file");
  EXPECT_FALSE(store.ok());
}

TEST(WhiteningProfileFileTest, LayoutIsAsDocumented) {
  auto profile = MakeProfile("bert", "nli", 0.5f, 3, 5);
  const std::string bytes = EncodeWhiteningProfile(*profile);
  ASSERT_EQ(bytes.substr(0, 8), "MSWHTN01");
  uint32_t header_len;
  std::memcpy(&header_len, bytes.data() + 8, 4);
  const size_t d = kDim;
  ASSERT_EQ(bytes.size(), 8 + 4 + header_len + 4 * (2 * d + d * d) + 4);
  const auto header = nlohmann::json::parse(bytes.substr(12, header_len));
  EXPECT_EQ(header["model"], "bert");
  EXPECT_EQ(header["name"], "nli");
  EXPECT_EQ(header["pooling"], "first_last_avg");
  EXPECT_EQ(header["k"], 5);
  EXPECT_EQ(header["beta"], 0.5);
  EXPECT_EQ(header["gamma"], 0.75);
  EXPECT_EQ(header["dim"], kDim);
  EXPECT_EQ(header["num_samples"], 200);
  EXPECT_EQ(header["created_unix_s"], 1700000000);
  // eigenvectors[r*d + c] = U(r, c), float32 little-endian.
  const char* u = bytes.data() + 12 + header_len + 8 * d;
  for (size_t i : {size_t{0}, size_t{1}, d, d * d - 1}) {
    float f;
    std::memcpy(&f, u + 4 * i, 4);
    EXPECT_EQ(f, static_cast<float>(profile->params().eigenvectors[i])) << i;
  }
  uint32_t crc;
  std::memcpy(&crc, bytes.data() + bytes.size() - 4, 4);
  EXPECT_EQ(crc, Crc32c(absl::string_view(bytes.data(), bytes.size() - 4)));
  // Encoding is deterministic, decoding gives the same profile back.
  EXPECT_EQ(EncodeWhiteningProfile(*profile), bytes);
  auto decoded = DecodeWhiteningProfile(bytes);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  ExpectIdentical(**decoded, *profile);

  std::string other_version = bytes;
  other_version[7] = '2';
  auto bad = DecodeWhiteningProfile(other_version);
  EXPECT_NE(bad.status().message().find("unsupported format version '02'"), std::string::npos)
      << bad.status();
  bad = DecodeWhiteningProfile(std::string(100, 'x'));
  EXPECT_NE(bad.status().message().find("bad magic"), std::string::npos) << bad.status();
  bad = DecodeWhiteningProfile(bytes + "x");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kDataLoss);
}

TEST(WhiteningProfileJsonTest, ExportImportRoundTripIsBitwise) {
  for (bool pretty : {false, true}) {
    auto profile = MakeProfile("bert", "nli", 0.3f, 11, 12);
    const std::string text = ExportWhiteningJson(*profile, pretty);
    auto imported = ImportWhiteningJson(text);
    ASSERT_TRUE(imported.ok()) << imported.status();
    ExpectIdentical(**imported, *profile);
    EXPECT_EQ(ExportWhiteningJson(**imported, pretty), text);
    const auto j = nlohmann::json::parse(text);
    EXPECT_EQ(j["format"], "maskserve-whitening/v1");
    EXPECT_EQ(j["eigenvectors"].size(), static_cast<size_t>(kDim * kDim));
  }
}

// The document maskserve-cli writes (client/lib/whitening_json.cc): no
// "format" key, flat eigenvectors, optional created_unix_s.
nlohmann::json ClientStyleJson(const StoredProfile& p) {
  nlohmann::json j = nlohmann::json::parse(ExportWhiteningJson(p));
  j.erase("format");
  j.erase("created_unix_s");
  return j;
}

TEST(WhiteningProfileJsonTest, ImportsClientAndNumpyStyleDocuments) {
  auto profile = MakeProfile("bert", "nli", 1.0f, 4, 6);
  nlohmann::json j = ClientStyleJson(*profile);
  auto imported = ImportWhiteningJson(j.dump());
  ASSERT_TRUE(imported.ok()) << imported.status();
  EXPECT_TRUE(SameBits((*imported)->transform().weights(), profile->transform().weights()));
  EXPECT_GT((*imported)->info().created_unix_s, 0);  // absent = now

  // numpy: U.tolist() gives rows; k = 0 means all dimensions.
  nlohmann::json rows = nlohmann::json::array();
  for (int r = 0; r < kDim; ++r) {
    nlohmann::json row = nlohmann::json::array();
    for (int c = 0; c < kDim; ++c) row.push_back(profile->params().eigenvectors[r * kDim + c]);
    rows.push_back(row);
  }
  j["eigenvectors"] = rows;
  j["k"] = 0;
  j["pooling"] = "POOLING_FIRST-LAST-AVG";  // the CLI's lenient spellings
  imported = ImportWhiteningJson(j.dump());
  ASSERT_TRUE(imported.ok()) << imported.status();
  EXPECT_EQ((*imported)->info().k, kDim);
  EXPECT_EQ((*imported)->info().pooling, PoolingMode::kFirstLastAvg);
  EXPECT_TRUE(SameBits((*imported)->params().eigenvectors, profile->params().eigenvectors));
}

TEST(WhiteningProfileJsonTest, ImportValidationNamesTheField) {
  auto profile = MakeProfile("bert", "nli");
  const nlohmann::json good = nlohmann::json::parse(ExportWhiteningJson(*profile));
  struct Case {
    const char* what;
    std::function<void(nlohmann::json&)> edit;
    const char* message;
  };
  const std::vector<Case> cases = {
      {"format", [](auto& j) { j["format"] = "maskserve-whitening/v2"; }, "field 'format'"},
      {"no model", [](auto& j) { j.erase("model"); }, "field 'model' must be a string"},
      {"bad name", [](auto& j) { j["name"] = "../etc"; }, "profile name '../etc' is invalid"},
      {"pooling", [](auto& j) { j["pooling"] = "avg"; }, "field 'pooling'"},
      {"k float", [](auto& j) { j["k"] = 2.5; }, "field 'k' must be an integer"},
      {"k range", [](auto& j) { j["k"] = 17; }, "field 'k' must be in [0, 16], got 17"},
      {"dim", [](auto& j) { j["dim"] = 15; }, "mean has 16 entries, expected dim = 15"},
      {"beta", [](auto& j) { j["beta"] = 2; }, "beta must be a finite number in [0, 1], got 2"},
      {"gamma", [](auto& j) { j["gamma"] = "1"; }, "field 'gamma' must be a number"},
      {"mean type", [](auto& j) { j["mean"][3] = "x"; }, "field 'mean' entry 3 is not a number"},
      {"mean size", [](auto& j) { j["mean"].erase(0); }, "mean has 15 entries"},
      {"no eigenvalues", [](auto& j) { j.erase("eigenvalues"); }, "'eigenvalues' is missing"},
      {"ascending", [](auto& j) { std::reverse(j["eigenvalues"].begin(), j["eigenvalues"].end()); },
       "eigenvalues must be descending"},
      {"vectors size", [](auto& j) { j["eigenvectors"].erase(0); }, "eigenvectors has 255 entries"},
      {"not orthonormal", [](auto& j) { j["eigenvectors"][0] = 5.0; }, "not orthonormal"},
      {"float overflow", [](auto& j) { j["mean"][2] = 1e39; }, "mean[2] is not finite"},
      {"not json", [](auto& j) { j = "x"; }, "not an object"},
  };
  for (const Case& c : cases) {
    nlohmann::json j = good;
    c.edit(j);
    auto imported = ImportWhiteningJson(j.dump());
    EXPECT_EQ(imported.status().code(), absl::StatusCode::kInvalidArgument) << c.what;
    EXPECT_NE(imported.status().message().find(c.message), std::string::npos)
        << c.what << ": " << imported.status();
  }
  auto imported = ImportWhiteningJson("{not json");
  EXPECT_EQ(imported.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace maskserve::server
