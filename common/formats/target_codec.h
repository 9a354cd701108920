// Encoding and decoding of soft targets on the wire (distill.v1.Targets),
// shared by the teacher server (encode) and the students (decode).
//
// A teacher holds logits z. For a request it produces, per row:
//   PROBABILITIES: softmax(z / T);  LOGITS: z itself;
//   top_k = k > 0: only the k largest values of that row, with their classes;
//   FLOAT16: values rounded to IEEE binary16 (round to nearest even).
// Decoding always yields full probability rows at the contract's T: logits
// are put through softmax(z / T); a top-k row of probabilities keeps its k
// values and spreads the remaining mass 1 - sum evenly over the other
// classes (a top-k row of logits gives the missing classes the smallest
// logit sent, before the softmax).
#ifndef DISTILLERY_COMMON_FORMATS_TARGET_CODEC_H_
#define DISTILLERY_COMMON_FORMATS_TARGET_CODEC_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "common/nn/softmax.h"
#include "common/tensor/tensor.h"
#include "distill/v1/teacher.pb.h"

namespace distillery {

// IEEE binary16 conversions (round to nearest even; overflow to infinity).
uint16_t FloatToHalf(float value);
float HalfToFloat(uint16_t half);

// The options of a request with defaults filled in, validated against a
// teacher with `num_classes` classes and `default_temperature`.
// InvalidArgument when the temperature is not a finite number > 0, top_k
// exceeds num_classes, or an enum value is unknown.
absl::StatusOr<distill::v1::SoftTargetContract> ResolveTargetOptions(
    const distill::v1::TargetOptions& options, uint32_t num_classes, float default_temperature,
    const std::string& teacher_hash);

// Writes targets for `logits` (rows x num_classes) under `contract` into
// `targets`. `softmax` is scratch (one per thread).
absl::Status EncodeTargets(const Tensor& logits, const distill::v1::SoftTargetContract& contract,
                           TemperatureSoftmax* softmax, distill::v1::Targets* targets);

// Writes `values` (rows x num_classes), already in the contract's
// representation (probabilities at its T, or logits), into `targets`: its
// top_k and dtype applied. EncodeTargets is softmax(z / T) (for
// PROBABILITIES) followed by this; an ensemble's arithmetic mean of
// probabilities is encoded with it directly.
absl::Status EncodeTargetValues(const Tensor& values,
                                const distill::v1::SoftTargetContract& contract,
                                distill::v1::Targets* targets);

// Decodes `targets` (produced under `contract`) into full probability rows
// at the contract's temperature, resizing `probabilities` to
// num_examples x num_classes. DataLoss when the block is inconsistent
// (sizes, class indices out of range, non-finite or negative probabilities).
absl::Status DecodeTargets(const distill::v1::Targets& targets,
                           const distill::v1::SoftTargetContract& contract,
                           TemperatureSoftmax* softmax, Tensor* probabilities);

}  // namespace distillery

#endif  // DISTILLERY_COMMON_FORMATS_TARGET_CODEC_H_
