// Elementwise activations on float32 buffers, vectorised 16 lanes at a time
// (AVX-512 or AVX2, whichever ActiveIsa() says; see cpu_features.h) and
// split across SyncThreadCount() OpenMP threads for large buffers. Accuracy: within
// ~1e-6 relative of a double-precision reference over the range where the
// result is not vanishingly small (GELU tails are computed via erfc /
// sigmoid, not 1 + erf / 1 + tanh, so they keep relative accuracy instead of
// cancelling to 0).
#pragma once

#include <cstddef>

namespace maskserve::engine::kernels {

// BERT "gelu": x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)). In place.
void GeluErf(float* x, size_t n);

// GPT-2 "gelu_new": 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). In place.
void GeluTanh(float* x, size_t n);

// max(x, 0). In place.
void Relu(float* x, size_t n);

// x * sigmoid(x) (a.k.a. swish). In place.
void Silu(float* x, size_t n);

// e^x in place: the vector exp behind the activations (relative error
// ~1e-7; exactly 0 for x <= -104 and +inf for x >= 88.73, where float ends).
void Exp(float* x, size_t n);

// out[i] = silu(gate[i]) * up[i]. out may alias gate or up.
void SwiGlu(const float* gate, const float* up, float* out, size_t n);

// Llama-style fused gate/up projection output: gate_up is [rows, 2*inner]
// with the gate in the first `inner` columns and up in the last `inner`;
// out is [rows, inner] = silu(gate) * up. out must not overlap gate_up.
void SwiGluFused(const float* gate_up, int rows, int inner, float* out);

}  // namespace maskserve::engine::kernels
