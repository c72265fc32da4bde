// Include point for x86 SIMD intrinsics in engine/kernels and engine/onednn.
// GCC 12.2 (Debian 12) falsely reports -Wmaybe-uninitialized inside its own
// AVX-512 headers whenever an unmasked intrinsic is inlined (GCC PR105593,
// fixed in 12.3); the diagnostic is attributed to the header lines, so
// silencing it around the include keeps our code's warnings intact.
#pragma once

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
