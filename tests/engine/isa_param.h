// Runs a test once per kernel ISA this CPU supports (AVX2 everywhere, AVX-512
// where the CPU has it), switching the kernels' dispatch for its duration:
//
//   class NormsTest : public maskserve::testing::IsaTest {};
//   TEST_P(NormsTest, Foo) { ... kernels::LayerNorm(...) ... }
//   MASKSERVE_INSTANTIATE_ISA_TESTS(NormsTest);
//
// Test names end in /avx2 or /avx512. CpuFeaturesTest skips visibly when
// this CPU cannot exercise the AVX-512 kernels.
#pragma once

#include <string>

#include "engine/kernels/cpu_features.h"
#include "gtest/gtest.h"

namespace maskserve::testing {

class IsaTest : public ::testing::TestWithParam<engine::kernels::Isa> {
 protected:
  void SetUp() override {
    saved_ = engine::kernels::ActiveIsa();
    ASSERT_TRUE(engine::kernels::SetActiveIsa(GetParam()).ok());
  }
  void TearDown() override { (void)engine::kernels::SetActiveIsa(saved_); }

 private:
  engine::kernels::Isa saved_ = engine::kernels::Isa::kAvx2;
};

inline std::string IsaParamName(const ::testing::TestParamInfo<engine::kernels::Isa>& info) {
  return engine::kernels::IsaName(info.param);
}

}  // namespace maskserve::testing

#define MASKSERVE_INSTANTIATE_ISA_TESTS(Suite)                                          \
  INSTANTIATE_TEST_SUITE_P(Isa, Suite,                                                  \
                           ::testing::ValuesIn(::maskserve::engine::kernels::SupportedIsas()), \
                           ::maskserve::testing::IsaParamName)
