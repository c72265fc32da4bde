// Internal: the oneDNN objects behind PackedLinear. Only engine/onednn/*.cc
// include this (it pulls in oneDNN).
#pragma once

#include "engine/onednn/packed_weight.h"
#include "oneapi/dnnl/dnnl.hpp"

namespace maskserve::engine {

struct PackedLinear::Impl {
  int k = 0;
  int n = 0;
  MatmulDType dtype = MatmulDType::kF32;
  dnnl::memory weights;  // logical [K, N] in the packed (blocked) layout
  dnnl::memory bias;     // f32 [1, N]; empty handle when there is no bias
  bool has_bias = false;
};

}  // namespace maskserve::engine
