#include "common/tensor/precision.h"

#include <cpuid.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/tensor/dnnl_context.h"
#include "dnnl.hpp"

namespace distillery {
namespace {

// oneDNN's ISA values are bit masks: each level contains the ones below it.
bool EffectiveIsaContains(dnnl::cpu_isa level) {
  const auto effective = static_cast<unsigned>(dnnl::get_effective_cpu_isa());
  const auto wanted = static_cast<unsigned>(level);
  return (effective & wanted) == wanted;
}

struct CpuId {
  std::string vendor;  // "AMD", "Intel" or cpuid's vendor string
  unsigned family = 0, model = 0;
};

CpuId ReadCpuId() {
  CpuId id;
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid(0, &eax, &ebx, &ecx, &edx) == 0) return id;
  char vendor[13] = {};
  std::memcpy(vendor, &ebx, 4);
  std::memcpy(vendor + 4, &edx, 4);
  std::memcpy(vendor + 8, &ecx, 4);
  id.vendor = std::strcmp(vendor, "AuthenticAMD") == 0   ? "AMD"
              : std::strcmp(vendor, "GenuineIntel") == 0 ? "Intel"
                                                         : vendor;
  if (__get_cpuid(1, &eax, &ebx, &ecx, &edx) == 0) return id;
  // The displayed family and model (Intel SDM and AMD APM, CPUID leaf 1).
  const unsigned base_family = (eax >> 8) & 0xf, base_model = (eax >> 4) & 0xf;
  id.family = base_family == 0xf ? base_family + ((eax >> 20) & 0xff) : base_family;
  id.model =
      base_family == 0xf || base_family == 6 ? (((eax >> 16) & 0xf) << 4) | base_model : base_model;
  return id;
}

// CPU families whose bf16 measured faster than f32 without AMX, for serving
// and training alike (bench/RESULTS.md): AMD family 25 with AVX512_BF16
// (Zen 4; its Zen 3 members have no bf16) serves 1.9-2.3x and trains
// 1.04-1.5x faster; AMD family 26 (Zen 5) serves 1.5-2.2x and, since the
// linear layer trains on bf16 matmuls, trains 1.3-1.6x (MLPs, 1 thread) and
// 1.45x (a CNN) faster.
bool Bf16FasterWithoutAmx() {
  const CpuId id = ReadCpuId();
  return id.vendor == "AMD" && (id.family == 25 || id.family == 26);
}

}  // namespace

std::string CpuFamilyName() {
  const CpuId id = ReadCpuId();
  return absl::StrCat(id.vendor.empty() ? "unknown" : id.vendor, " family ", id.family, " model ",
                      id.model);
}

const char* PrecisionName(Precision precision) {
  return precision == Precision::kBF16 ? "bf16" : "f32";
}

absl::StatusOr<PrecisionChoice> ParsePrecisionChoice(const std::string& text) {
  if (text == "auto") return PrecisionChoice::kAuto;
  if (text == "f32") return PrecisionChoice::kF32;
  if (text == "bf16") return PrecisionChoice::kBF16;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown precision \"", text, "\": use auto, f32 or bf16"));
}

bool CpuHasNativeBf16() { return EffectiveIsaContains(dnnl::cpu_isa::avx512_core_bf16); }
bool CpuHasAmx() { return EffectiveIsaContains(dnnl::cpu_isa::avx512_core_amx); }

absl::StatusOr<Precision> ResolvePrecision(PrecisionChoice choice, PrecisionUse use,
                                           std::string* reason) {
  const std::string isa = CpuIsaName();
  switch (choice) {
    case PrecisionChoice::kF32:
      *reason = "asked for";
      return Precision::kF32;
    case PrecisionChoice::kBF16:
      if (!CpuHasNativeBf16()) {
        return absl::FailedPreconditionError(absl::StrCat(
            "--precision=bf16 needs a CPU with native bf16 (oneDNN ISA avx512_core_bf16 or "
            "avx512_core_amx); oneDNN reports ",
            isa, " here: use --precision=auto or f32"));
      }
      *reason = absl::StrCat("asked for; oneDNN ISA ", isa);
      return Precision::kBF16;
    case PrecisionChoice::kAuto:
      break;
  }
  if (CpuHasAmx()) {
    *reason = absl::StrCat("auto: oneDNN ISA ", isa, " has AMX");
    return Precision::kBF16;
  }
  if (!CpuHasNativeBf16()) {
    *reason = absl::StrCat("auto: oneDNN ISA ", isa, " has no native bf16");
    return Precision::kF32;
  }
  const std::string cpu = CpuFamilyName();
  if (Bf16FasterWithoutAmx()) {
    *reason =
        absl::StrCat("auto: oneDNN ISA ", isa, " has bf16 but no AMX, and ", cpu,
                     use == PrecisionUse::kServing ? " serves" : " trains", " faster in bf16");
    return Precision::kBF16;
  }
  *reason = absl::StrCat("auto: oneDNN ISA ", isa, " has bf16 but no AMX, and ", cpu, " is not ",
                         use == PrecisionUse::kServing ? "measured to serve" : "measured to train",
                         " faster in bf16");
  return Precision::kF32;
}

}  // namespace distillery
