// Which x86 features this CPU has, and which instruction set the engine's
// hand-written kernels (norms, activations, attention tiles, bf16
// conversion) run on.
//
// The engine is compiled for x86-64-v3 (AVX2, FMA, F16C); every kernel is
// additionally compiled for AVX-512 (see simd16.h) and picks its variant at
// run time through ActiveIsa(), so one binary runs on an AVX2-only Zen 3 and
// at full width on Zen 4 / Sapphire Rapids. The choice is made once, on first
// use: AVX-512 (F+BW+VL+DQ, with OS support for the register state) when the
// CPU has it, else AVX2. MASKSERVE_ISA=avx2 in the environment forces the
// AVX2 kernels on an AVX-512 machine (to compare both); MASKSERVE_ISA=avx512
// or auto (or unset) picks the best the CPU has.
//
// This file is compiled for baseline x86-64 (no AVX), so that
// CheckCpuSupported() can report a missing feature instead of dying of
// SIGILL inside the check itself.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace maskserve::engine::kernels {

enum class Isa : int {
  kAvx2 = 0,    // 2 x 8 lanes (AVX2 + FMA + F16C): the baseline every build needs
  kAvx512 = 1,  // 16 lanes (AVX-512 F, BW, VL, DQ)
};
inline constexpr int kNumIsas = 2;

// "avx2" / "avx512".
const char* IsaName(Isa isa);

struct CpuFeatures {
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;
  bool avx512 = false;      // F + BW + VL + DQ, all usable (OS saves the state)
  bool avx512bf16 = false;  // VCVTNE2PS2BF16 & co.
  bool amx_bf16 = false;    // AMX tiles (oneDNN uses them for BF16 matmuls)
};

// What the CPU reports (cached; safe to call from static initialisers).
const CpuFeatures& GetCpuFeatures();

// OK when the CPU can run the engine (AVX2, FMA and F16C); otherwise a
// FailedPrecondition naming what is missing. LoadedModel::Load and
// Encoder::Create call it before touching any kernel.
absl::Status CheckCpuSupported();

// Whether the kernels of `isa` can run on this CPU.
bool IsaSupported(Isa isa);
// Every supported ISA, ascending (tests run their kernels on each).
std::vector<Isa> SupportedIsas();

// The ISA the kernels dispatch to now: chosen once as described above.
Isa ActiveIsa();

// The choice ActiveIsa() starts with, for CPU `f` and the value of
// MASKSERVE_ISA (`request`, null when unset): "avx2" forces AVX2; anything
// else (null, "auto", "avx512", unknown) takes the widest ISA `f` runs.
Isa ChooseIsa(const CpuFeatures& f, const char* request);

// Switches every kernel to `isa` from its next call on (tests and
// benchmarks comparing paths). InvalidArgument when the CPU lacks it. Calls
// already running finish on the ISA they started with.
absl::Status SetActiveIsa(Isa isa);

// Whether float -> bf16 conversion uses the AVX512-BF16 instruction: the CPU
// has it and the active ISA is AVX-512. Otherwise an exact software
// round-to-nearest-even gives the same bits (see bf16.h).
bool UseHardwareBf16();

// One line for logs and benchmark headers: the active kernel ISA, then the
// extras in use, e.g. "avx512 avx512bf16 amx-bf16" or "avx2"; when
// MASKSERVE_ISA forced a narrower ISA it says so and what the CPU has.
std::string CpuFeatureSummary();

}  // namespace maskserve::engine::kernels
