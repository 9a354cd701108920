#include "common/tensor/precision.h"

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

}  // namespace

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

absl::StatusOr<Precision> ResolvePrecision(PrecisionChoice choice, std::string* reason) {
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
  *reason = CpuHasNativeBf16() ? absl::StrCat("auto: oneDNN ISA ", isa,
                                              " has bf16 but no AMX, where bf16 is slower than f32")
                               : absl::StrCat("auto: oneDNN ISA ", isa, " has no native bf16");
  return Precision::kF32;
}

}  // namespace distillery
