#include "engine/attention_mask.h"

#include <cstdint>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/util/test_env.h"

namespace maskserve::engine {
namespace {

using ::testing::HasSubstr;

// Golden kind names ("CAUSAL+STRIDED_2_4") to specs.
MaskSpec SpecFromGoldenName(const std::string& name, std::vector<int32_t> segment_ids) {
  MaskSpec spec;
  spec.kind = MaskKind::kBidirectional;
  const std::vector<std::string> parts = absl::StrSplit(name, '+');
  for (const std::string& part : parts) {
    const std::vector<std::string> f = absl::StrSplit(part, '_');
    if (f[0] == "CAUSAL") {
      spec.causal = true;
      if (name == "CAUSAL") spec.kind = MaskKind::kCausal;
    } else if (f[0] == "BIDIRECTIONAL") {
      spec.kind = MaskKind::kBidirectional;
    } else if (f[0] == "UNILM") {
      spec.kind = MaskKind::kUnilm;
      spec.segment_ids = segment_ids;
    } else if (f[0] == "LOCAL") {
      spec.kind = MaskKind::kLocal;
      spec.window = std::stoi(f.at(1));
    } else if (f[0] == "DILATED") {
      spec.kind = MaskKind::kDilated;
      spec.rate = std::stoi(f.at(1));
    } else if (f[0] == "STRIDED") {
      spec.kind = MaskKind::kStrided;
      spec.window = std::stoi(f.at(1));
      spec.rate = std::stoi(f.at(2));
    } else {
      ADD_FAILURE() << "unknown golden mask kind " << name;
    }
  }
  return spec;
}

TEST(AttentionMaskTest, MatchesGoldenMasks) {
  // Tolerance: masks are compared exactly (README: "attention masks:
  // identical"), on real rows and real keys; golden keys past the length
  // (padding) must be 0.
  MASKSERVE_REQUIRE_SHARED(path, "golden/bert-mini/masks.json");
  const nlohmann::json golden = nlohmann::json::parse(::maskserve::testing::ReadFileOrDie(path));
  const std::vector<std::string> kinds = golden.at("mask_kinds");
  ASSERT_EQ(kinds.size(), 9u);
  int64_t compared = 0;
  for (const char* batch_name : {"no_padding", "padding"}) {
    const nlohmann::json& batch = golden.at("batches").at(batch_name);
    const std::vector<int> lengths = batch.at("lengths");
    for (const std::string& kind : kinds) {
      SCOPED_TRACE(std::string(batch_name) + " " + kind);
      const nlohmann::json& gm = batch.at("kinds").at(kind).at("mask");
      for (size_t b = 0; b < lengths.size(); ++b) {
        const int len = lengths[b];
        const std::vector<int32_t> types = batch.at("token_type_ids")[b];
        const std::vector<int32_t> segments(types.begin(), types.begin() + len);
        const MaskSpec spec = SpecFromGoldenName(kind, segments);
        absl::StatusOr<AttentionMask> mask = AttentionMask::Create(spec, len);
        ASSERT_TRUE(mask.ok()) << mask.status();
        const std::vector<uint8_t> ours = mask->Materialize();
        const int padded = static_cast<int>(gm[b].size());
        for (int i = 0; i < len; ++i) {
          for (int j = 0; j < padded; ++j) {
            const int want = gm[b][i][j].get<int>();
            if (j >= len) {
              ASSERT_EQ(want, 0) << "golden padded key " << j << " row " << i;
              continue;
            }
            ASSERT_EQ(ours[i * len + j], want)
                << "row " << i << " key " << j << " seq " << b << "\n"
                << mask->DebugString();
            ++compared;
          }
        }
      }
    }
  }
  // 9 kinds x (4 x 24^2 + 20^2 + 17^2 + 9^2 + 5^2).
  EXPECT_EQ(compared, 9 * (4 * 576 + 400 + 289 + 81 + 25));
}

struct HandWritten {
  std::string golden_name;
  std::string expected;
};

TEST(AttentionMaskTest, PrintsAndMatchesHandWrittenPatterns) {
  // L = 12; UNILM: first 5 tokens are segment 0.
  const std::vector<int32_t> segments = {0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1};
  const std::vector<HandWritten> cases = {
      {"BIDIRECTIONAL",
       "111111111111\n111111111111\n111111111111\n111111111111\n"
       "111111111111\n111111111111\n111111111111\n111111111111\n"
       "111111111111\n111111111111\n111111111111\n111111111111\n"},
      {"CAUSAL",
       "1...........\n11..........\n111.........\n1111........\n"
       "11111.......\n111111......\n1111111.....\n11111111....\n"
       "111111111...\n1111111111..\n11111111111.\n111111111111\n"},
      {"UNILM",
       "11111.......\n11111.......\n11111.......\n11111.......\n"
       "11111.......\n111111......\n1111111.....\n11111111....\n"
       "111111111...\n1111111111..\n11111111111.\n111111111111\n"},
      {"LOCAL_3",
       "1111........\n11111.......\n111111......\n1111111.....\n"
       ".1111111....\n..1111111...\n...1111111..\n....1111111.\n"
       ".....1111111\n......111111\n.......11111\n........1111\n"},
      {"DILATED_3",
       "1..1..1..1..\n.1..1..1..1.\n..1..1..1..1\n1..1..1..1..\n"
       ".1..1..1..1.\n..1..1..1..1\n1..1..1..1..\n.1..1..1..1.\n"
       "..1..1..1..1\n1..1..1..1..\n.1..1..1..1.\n..1..1..1..1\n"},
      {"STRIDED_2_4",
       "111.1...1...\n1111.1...1..\n11111.1...1.\n.11111.1...1\n"
       "1.11111.1...\n.1.11111.1..\n..1.11111.1.\n...1.11111.1\n"
       "1...1.11111.\n.1...1.11111\n..1...1.1111\n...1...1.111\n"},
      {"CAUSAL+LOCAL_3",
       "1...........\n11..........\n111.........\n1111........\n"
       ".1111.......\n..1111......\n...1111.....\n....1111....\n"
       ".....1111...\n......1111..\n.......1111.\n........1111\n"},
      {"CAUSAL+DILATED_3",
       "1...........\n.1..........\n..1.........\n1..1........\n"
       ".1..1.......\n..1..1......\n1..1..1.....\n.1..1..1....\n"
       "..1..1..1...\n1..1..1..1..\n.1..1..1..1.\n..1..1..1..1\n"},
      {"CAUSAL+STRIDED_2_4",
       "1...........\n11..........\n111.........\n.111........\n"
       "1.111.......\n.1.111......\n..1.111.....\n...1.111....\n"
       "1...1.111...\n.1...1.111..\n..1...1.111.\n...1...1.111\n"},
  };
  for (const HandWritten& c : cases) {
    const MaskSpec spec = SpecFromGoldenName(c.golden_name, segments);
    absl::StatusOr<AttentionMask> mask = AttentionMask::Create(spec, 12);
    ASSERT_TRUE(mask.ok()) << mask.status();
    std::cout << "mask " << c.golden_name << " = " << spec.ToString() << " (L=12):\n"
              << mask->DebugString();
    EXPECT_EQ(mask->DebugString(), c.expected) << c.golden_name;
  }
}

TEST(AttentionMaskTest, ToStringNamesKindAndParameters) {
  MaskSpec s;
  EXPECT_EQ(s.ToString(), "BIDIRECTIONAL");
  s.causal = true;
  EXPECT_EQ(s.ToString(), "CAUSAL");
  s = MaskSpec{};
  s.kind = MaskKind::kStrided;
  s.window = 2;
  s.rate = 4;
  s.causal = true;
  EXPECT_EQ(s.ToString(), "CAUSAL+STRIDED(2,4)");
  s = MaskSpec{};
  s.kind = MaskKind::kLocal;
  s.window = 3;
  EXPECT_EQ(s.ToString(), "LOCAL(3)");
  s = MaskSpec{};
  s.kind = MaskKind::kUnilm;
  s.prefix_length = 5;
  EXPECT_EQ(s.ToString(), "UNILM(prefix=5)");
  EXPECT_EQ(MaskKindName(MaskKind::kDilated), "DILATED");
}

TEST(AttentionMaskTest, UnilmPrefixLengthEqualsSegmentIds) {
  for (int len = 1; len <= 40; ++len) {
    for (int prefix = 1; prefix <= len; ++prefix) {
      MaskSpec by_prefix;
      by_prefix.kind = MaskKind::kUnilm;
      by_prefix.prefix_length = prefix;
      MaskSpec by_segments;
      by_segments.kind = MaskKind::kUnilm;
      by_segments.segment_ids.assign(len, 0);
      for (int t = prefix; t < len; ++t) by_segments.segment_ids[t] = 1;
      for (int q_offset : {0, prefix - 1, len - 1}) {
        auto a = AttentionMask::Create(by_prefix, len, q_offset);
        auto b = AttentionMask::Create(by_segments, len, q_offset);
        ASSERT_TRUE(a.ok() && b.ok());
        ASSERT_EQ(a->Materialize(), b->Materialize())
            << "len " << len << " prefix " << prefix << " q_offset " << q_offset;
        for (int q0 = 0; q0 < a->q_len(); ++q0) {
          for (int q1 = q0 + 1; q1 <= a->q_len(); ++q1) {
            ASSERT_EQ(a->KeyRange(q0, q1).end, b->KeyRange(q0, q1).end);
          }
        }
      }
    }
  }
}

// A random spec of any kind, with or without the causal flag.
MaskSpec RandomSpec(std::mt19937& rng, int len) {
  MaskSpec spec;
  spec.kind = static_cast<MaskKind>(rng() % 6);
  spec.causal = rng() % 2 == 0;
  spec.window = static_cast<int>(rng() % 6);
  spec.rate = 1 + static_cast<int>(rng() % 5);
  if (spec.kind == MaskKind::kUnilm) {
    if (rng() % 2 == 0) {
      spec.prefix_length = 1 + static_cast<int>(rng() % len);
    } else {
      // Any 0/1 sequence, not only "zeros then ones": c stays monotone.
      for (int t = 0; t < len; ++t) spec.segment_ids.push_back(rng() % 3 == 0);
    }
  }
  return spec;
}

TEST(AttentionMaskTest, ClassifyAndKeyRangeAgreeWithBruteForce) {
  std::mt19937 rng(1234);
  int64_t rectangles = 0;
  int64_t seen[3] = {0, 0, 0};
  for (int trial = 0; trial < 400; ++trial) {
    const int len = 1 + static_cast<int>(rng() % 18);
    const MaskSpec spec = RandomSpec(rng, len);
    const int q_offset = static_cast<int>(rng() % len);
    const int q_len = 1 + static_cast<int>(rng() % (len - q_offset));
    auto mask = AttentionMask::Create(spec, len, q_offset, q_len);
    ASSERT_TRUE(mask.ok()) << mask.status();
    SCOPED_TRACE(spec.ToString() + " len " + std::to_string(len) + " q_offset " +
                 std::to_string(q_offset));
    // Reference predicate straight from the definitions, on absolute i.
    std::vector<int> c(len, 0);
    for (int t = 0, acc = 0; t < len; ++t) {
      const int s =
          spec.segment_ids.empty() ? (t >= spec.prefix_length ? 1 : 0) : spec.segment_ids[t];
      acc += s;
      c[t] = acc;
    }
    auto ref = [&](int r, int j) {
      const int i = q_offset + r;
      const int d = i - j;
      const bool causal_ok = !(spec.causal || spec.kind == MaskKind::kCausal) || j <= i;
      const int ad = d < 0 ? -d : d;
      bool p = true;
      switch (spec.kind) {
        case MaskKind::kBidirectional:
        case MaskKind::kCausal:
          p = true;
          break;
        case MaskKind::kUnilm:
          p = c[j] <= c[i];
          break;
        case MaskKind::kLocal:
          p = ad <= spec.window;
          break;
        case MaskKind::kDilated:
          p = ad % spec.rate == 0;
          break;
        case MaskKind::kStrided:
          p = ad <= spec.window || ad % spec.rate == 0;
          break;
      }
      return causal_ok && p;
    };
    for (int r = 0; r < q_len; ++r) {
      for (int j = 0; j < len; ++j) {
        ASSERT_EQ(mask->Allowed(r, j), ref(r, j)) << "r " << r << " j " << j;
      }
    }
    for (int q0 = 0; q0 < q_len; ++q0) {
      for (int q1 = q0 + 1; q1 <= q_len; ++q1) {
        for (int k0 = 0; k0 < len; ++k0) {
          for (int k1 = k0 + 1; k1 <= len; ++k1) {
            int allowed = 0;
            for (int r = q0; r < q1; ++r) {
              for (int j = k0; j < k1; ++j) allowed += ref(r, j);
            }
            const int total = (q1 - q0) * (k1 - k0);
            const BlockState want = allowed == 0       ? BlockState::kEmpty
                                    : allowed == total ? BlockState::kFull
                                                       : BlockState::kPartial;
            ASSERT_EQ(mask->Classify(q0, q1, k0, k1), want)
                << "rows [" << q0 << "," << q1 << ") keys [" << k0 << "," << k1 << ")";
            ++seen[static_cast<int>(want)];
            ++rectangles;
          }
        }
        // KeyRange must contain every allowed key; for the band and UNILM
        // shapes it must also be tight (its ends are allowed keys).
        const KeySpan range = mask->KeyRange(q0, q1);
        int first = -1;
        int last = -1;
        for (int j = 0; j < len; ++j) {
          for (int r = q0; r < q1; ++r) {
            if (ref(r, j)) {
              if (first < 0) first = j;
              last = j;
            }
          }
        }
        if (first >= 0) {
          ASSERT_LE(range.begin, first);
          ASSERT_GT(range.end, last);
          if (spec.kind != MaskKind::kDilated && spec.kind != MaskKind::kStrided) {
            ASSERT_EQ(range.begin, first);
            ASSERT_EQ(range.end, last + 1);
          }
        }
      }
    }
  }
  // The property test must actually exercise all three states.
  EXPECT_GT(seen[0], 1000);
  EXPECT_GT(seen[1], 1000);
  EXPECT_GT(seen[2], 1000);
  std::cout << "checked " << rectangles << " rectangles\n";
}

TEST(AttentionMaskTest, DecodeOffsetRowsEqualFullMaskRows) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    const int len = 1 + static_cast<int>(rng() % 30);
    const MaskSpec spec = RandomSpec(rng, len);
    const int q_offset = static_cast<int>(rng() % len);
    auto full = AttentionMask::Create(spec, len);
    auto tail = AttentionMask::Create(spec, len, q_offset);
    ASSERT_TRUE(full.ok() && tail.ok());
    ASSERT_EQ(tail->q_len(), len - q_offset);
    const std::vector<uint8_t> f = full->Materialize();
    const std::vector<uint8_t> t = tail->Materialize();
    for (int r = 0; r < tail->q_len(); ++r) {
      for (int j = 0; j < len; ++j) {
        ASSERT_EQ(t[r * len + j], f[(q_offset + r) * len + j]) << spec.ToString();
      }
    }
    // Every real query may attend itself.
    for (int r = 0; r < tail->q_len(); ++r) {
      ASSERT_TRUE(tail->Allowed(r, q_offset + r)) << spec.ToString();
    }
  }
}

TEST(AttentionMaskTest, ValidationErrorsNameTheField) {
  MaskSpec s;
  s.kind = MaskKind::kLocal;
  s.window = -1;
  EXPECT_THAT(s.Validate(10).message(), HasSubstr("mask.window must be >= 0"));
  s.kind = MaskKind::kStrided;
  s.window = 1;
  s.rate = 0;
  EXPECT_THAT(s.Validate(10).message(), HasSubstr("mask.rate must be >= 1"));
  s.kind = MaskKind::kDilated;
  EXPECT_THAT(s.Validate(10).message(), HasSubstr("mask.rate"));
  s.rate = 2;
  EXPECT_TRUE(s.Validate(10).ok());

  MaskSpec u;
  u.kind = MaskKind::kUnilm;
  EXPECT_THAT(u.Validate(10).message(), HasSubstr("mask.prefix_length"));
  u.prefix_length = 11;
  EXPECT_THAT(u.Validate(10).message(), HasSubstr("mask.prefix_length"));
  u.prefix_length = 10;
  EXPECT_TRUE(u.Validate(10).ok());
  u.segment_ids = {0, 0, 1};
  EXPECT_THAT(u.Validate(10).message(), HasSubstr("mask.segment_ids"));
  u.segment_ids = {0, 0, 2};
  EXPECT_THAT(u.Validate(3).message(), HasSubstr("mask.segment_ids[2]"));
  u.segment_ids = {0, 0, 1};
  EXPECT_TRUE(u.Validate(3).ok());

  // Fields a kind does not use are not checked.
  MaskSpec c;
  c.kind = MaskKind::kCausal;
  c.window = -5;
  c.rate = -5;
  EXPECT_TRUE(c.Validate(4).ok());

  EXPECT_FALSE(AttentionMask::Create(s, 10, -1).ok());
  u.prefix_length = 2;
  u.segment_ids.clear();
  absl::StatusOr<AttentionMask> bad = AttentionMask::Create(u, 4, 3, 2);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("UNILM"));
  EXPECT_FALSE(MaterializeMask(s, -1).ok());
  s.window = -1;
  s.kind = MaskKind::kLocal;
  EXPECT_THAT(AttentionMask::Create(s, 4).status().message(), HasSubstr("mask.window"));
}

}  // namespace
}  // namespace maskserve::engine
