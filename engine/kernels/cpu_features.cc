#include "engine/kernels/cpu_features.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace maskserve::engine::kernels {
namespace {

CpuFeatures Detect() {
  // Static initialisers (gtest parameter generators) may get here before
  // libgcc's own constructor has filled in the CPU model.
  __builtin_cpu_init();
  CpuFeatures f;
  f.avx2 = __builtin_cpu_supports("avx2");
  f.fma = __builtin_cpu_supports("fma");
  f.f16c = __builtin_cpu_supports("f16c");
  // libgcc reports AVX-512 features only when XCR0 says the OS saves the
  // opmask and ZMM state, so "supported" here means usable.
  f.avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  f.avx512bf16 = f.avx512 && __builtin_cpu_supports("avx512bf16");
  f.amx_bf16 = __builtin_cpu_supports("amx-bf16");
  return f;
}

const char* IsaRequest() { return std::getenv("MASKSERVE_ISA"); }

std::atomic<Isa>& ActiveSlot() {
  static std::atomic<Isa> slot{ChooseIsa(GetCpuFeatures(), IsaRequest())};
  return slot;
}

}  // namespace

const char* IsaName(Isa isa) { return isa == Isa::kAvx512 ? "avx512" : "avx2"; }

const CpuFeatures& GetCpuFeatures() {
  static const CpuFeatures features = Detect();
  return features;
}

absl::Status CheckCpuSupported() {
  const CpuFeatures& f = GetCpuFeatures();
  std::vector<const char*> missing;
  if (!f.avx2) missing.push_back("AVX2");
  if (!f.fma) missing.push_back("FMA");
  if (!f.f16c) missing.push_back("F16C");
  if (missing.empty()) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat("this CPU lacks ", absl::StrJoin(missing, ", "),
                   ": maskserve's engine needs an x86-64-v3 CPU (AVX2, FMA and F16C; Intel "
                   "Haswell / AMD Excavator or newer)"));
}

bool IsaSupported(Isa isa) {
  const CpuFeatures& f = GetCpuFeatures();
  switch (isa) {
    case Isa::kAvx2:
      return f.avx2 && f.fma && f.f16c;
    case Isa::kAvx512:
      return f.avx2 && f.fma && f.f16c && f.avx512;
  }
  return false;
}

std::vector<Isa> SupportedIsas() {
  std::vector<Isa> out;
  for (Isa isa : {Isa::kAvx2, Isa::kAvx512}) {
    if (IsaSupported(isa)) out.push_back(isa);
  }
  return out;
}

Isa ChooseIsa(const CpuFeatures& f, const char* request) {
  if (request != nullptr && std::strcmp(request, "avx2") == 0) return Isa::kAvx2;
  return f.avx512 ? Isa::kAvx512 : Isa::kAvx2;
}

Isa ActiveIsa() { return ActiveSlot().load(std::memory_order_relaxed); }

absl::Status SetActiveIsa(Isa isa) {
  if (!IsaSupported(isa)) {
    return absl::InvalidArgumentError(
        absl::StrCat("SetActiveIsa: this CPU cannot run the ", IsaName(isa), " kernels"));
  }
  ActiveSlot().store(isa, std::memory_order_relaxed);
  return absl::OkStatus();
}

bool UseHardwareBf16() { return ActiveIsa() == Isa::kAvx512 && GetCpuFeatures().avx512bf16; }

std::string CpuFeatureSummary() {
  const CpuFeatures& f = GetCpuFeatures();
  const Isa isa = ActiveIsa();
  std::string s = IsaName(isa);
  if (UseHardwareBf16()) s += " avx512bf16";
  if (f.amx_bf16) s += " amx-bf16";
  if (isa == Isa::kAvx2 && f.avx512) {
    const char* req = IsaRequest();
    const bool by_env = req != nullptr && std::strcmp(req, "avx2") == 0;
    absl::StrAppend(&s, " (", by_env ? "MASKSERVE_ISA=avx2" : "forced",
                    "; cpu has avx512", f.avx512bf16 ? " avx512bf16" : "", ")");
  }
  return s;
}

}  // namespace maskserve::engine::kernels
