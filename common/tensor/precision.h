// The arithmetic a network computes in, and how `--precision=auto` picks it
// for the CPU at hand.
//
//   f32   every product in binary32, as always;
//   bf16  the matrix products of fully connected and convolution layers
//         (forward, backward-data and backward-weights) with bfloat16
//         inputs and weights and f32 accumulation (oneDNN's bf16
//         primitives); the weights stay f32 (the bf16 copies are made from
//         them), and so do gradients and optimizer state; inference keeps
//         the activations in bf16 between fully connected layers (ReLU
//         fused) and through convolution blocks (batch norm folded into
//         the convolution, ReLU fused, bf16 pooling and flatten;
//         common/nn/tiled_inference.h); training passes keep batch norm,
//         pooling and the activations in f32, and the logits and the
//         softmax are always f32.
//
// `auto` chooses by the instruction set oneDNN reports (CpuIsaName) and the
// CPU family, never by timing at start-up, so that every replica on the same
// kind of CPU makes the same choice (bench/RESULTS.md has the measurements):
//   - bf16 when oneDNN dispatches to AMX (avx512_core_amx), whose bf16
//     matmuls run 2.5 to 3.8 times the f32 rate;
//   - bf16 on AVX512_BF16 without AMX on AMD family 25 (Zen 4), where bf16
//     inference ran 1.9 to 2.3 times f32 and training 1.04 to 1.25 times
//     (MLPs) and 1.2 to 1.5 times (a CNN);
//   - bf16 on AVX512_BF16 without AMX on AMD family 26 (Zen 5), where bf16
//     inference ran 1.5 to 2.2 times f32 (MLP and CNN teachers) and
//     training, on the linear layer's bf16 matmuls, 1.3 to 1.6 times (MLPs,
//     1 thread; 1.04 to 1.33 at 2) and 1.45 times (a CNN);
//   - f32 otherwise, including AVX512_BF16 on Intel without AMX, where
//     oneDNN 2.6's bf16 training ran at 0.5 to 0.7 times f32.
// `bf16` on a CPU whose oneDNN ISA has no native bf16 (below
// avx512_core_bf16) is refused rather than emulated.
#ifndef DISTILLERY_COMMON_TENSOR_PRECISION_H_
#define DISTILLERY_COMMON_TENSOR_PRECISION_H_

#include <string>

#include "absl/status/statusor.h"

namespace distillery {

enum class Precision { kF32, kBF16 };
enum class PrecisionChoice { kAuto, kF32, kBF16 };
// What the precision is for: `auto` may choose differently.
enum class PrecisionUse { kTraining, kServing };

// "f32" or "bf16".
const char* PrecisionName(Precision precision);

// "auto", "f32" or "bf16"; InvalidArgument naming the text otherwise.
absl::StatusOr<PrecisionChoice> ParsePrecisionChoice(const std::string& text);

// Whether oneDNN's ISA on this machine (after ONEDNN_MAX_CPU_ISA) has native
// bf16 arithmetic (avx512_core_bf16 or above), and AMX.
bool CpuHasNativeBf16();
bool CpuHasAmx();
// The CPU's vendor and family from cpuid, e.g. "AMD family 26" or "Intel
// family 6 model 207", for logs and the rule above.
std::string CpuFamilyName();

// The precision `choice` means on this machine for `use`, with the reason
// in `*reason` (for the log), e.g. "auto: oneDNN ISA avx512_core_bf16 has
// bf16 but no AMX, and AMD family 25 is not measured faster in bf16".
// FailedPrecondition for kBF16 without native bf16, naming the ISA.
absl::StatusOr<Precision> ResolvePrecision(PrecisionChoice choice, PrecisionUse use,
                                           std::string* reason);

}  // namespace distillery

#endif  // DISTILLERY_COMMON_TENSOR_PRECISION_H_
