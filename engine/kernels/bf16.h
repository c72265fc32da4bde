// float32 <-> bfloat16 conversion. bf16 is stored as the upper 16 bits of an
// IEEE float in a uint16_t. Used to feed BF16 matmuls and to store BF16
// weights; conversions round to nearest, ties to even (what PyTorch does).
//
// Denormal float32 inputs become signed zero: the AVX512-BF16 instruction
// (VCVTNE2PS2BF16) flushes them, and the scalar path does the same so that a
// value converts identically whatever its position in a buffer. NaN stays NaN
// (quiet); +-Inf stays +-Inf.
#pragma once

#include <cstddef>
#include <cstdint>

#include "engine/kernels/cpu_features.h"

namespace maskserve::engine::kernels {

uint16_t FloatToBf16(float x);
float Bf16ToFloat(uint16_t b);

// n values; src and dst must not overlap. Vectorised: the AVX512-BF16
// instruction when the CPU has it (and the active ISA is AVX-512), else the
// same rounding done with integer lane operations (AVX-512 or AVX2); every
// path gives the bits of the scalar FloatToBf16 above.
void FloatToBf16(const float* src, uint16_t* dst, size_t n);
void Bf16ToFloat(const uint16_t* src, float* dst, size_t n);

// One conversion path, for tests that compare them: the software rounding
// on `isa`'s lanes (hardware = false) or the AVX512-BF16 instruction
// (hardware = true; isa must be kAvx512). False, and nothing written, when
// this CPU cannot run that path.
bool FloatToBf16Via(Isa isa, bool hardware, const float* src, uint16_t* dst, size_t n);

// Rounds each value through bf16 in place (x = float(bf16(x))); handy for
// building references that see the same inputs as a BF16 matmul.
void RoundToBf16(float* x, size_t n);

}  // namespace maskserve::engine::kernels
