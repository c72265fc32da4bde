// Row-wise normalisations over [rows, cols] float32 matrices, vectorised 16
// lanes at a time (AVX-512 or AVX2 per ActiveIsa(), see cpu_features.h), rows
// split across SyncThreadCount() OpenMP threads when the matrix is large
// enough to pay for the fork. Statistics are accumulated in
// float32 with a two-pass mean/variance, as PyTorch does on CPU.
#pragma once

namespace maskserve::engine::kernels {

// out[r] = (v - mean(v)) / sqrt(var(v) + eps) * gamma + beta, where
// v = x[r] + residual[r] (BERT's post-LN "LayerNorm(hidden + input)") or
// v = x[r] when residual is null. var is the biased (1/cols) variance.
// gamma/beta have cols entries. out may alias x or residual.
void LayerNorm(const float* x, const float* residual, const float* gamma, const float* beta,
               float eps, int rows, int cols, float* out);

// T5 / Llama RMSNorm: out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * weight.
// No mean subtraction, no bias. out may alias x.
void RmsNorm(const float* x, const float* weight, float eps, int rows, int cols, float* out);

}  // namespace maskserve::engine::kernels
