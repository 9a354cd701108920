// libFuzzer target for the students' decoding of soft targets
// (DecodeTargets in common/target_codec.h): the input is parsed as a
// distill.v1.SoftTargetsResponse (skipped if it does not parse) and its
// targets decoded under its contract. A teacher's answer must never crash a
// student: anything inconsistent is DataLoss (or InvalidArgument for a bad
// temperature). Accepted targets are num_examples rows of num_classes finite,
// non-negative probabilities.
//
// The student compares the contract's num_classes with its own network's
// output size before decoding (TeacherClient::CheckContract), so contracts
// with more than kMaxClasses classes are skipped here.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "common/formats/target_codec.h"
#include "common/nn/softmax.h"
#include "common/tensor/tensor.h"
#include "distill/v1/teacher.pb.h"

namespace {
constexpr uint32_t kMaxClasses = 1024;
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  distill::v1::SoftTargetsResponse response;
  if (!response.ParseFromArray(data, static_cast<int>(size))) return 0;
  if (response.contract().num_classes() > kMaxClasses) return 0;
  static auto* softmax = new distillery::TemperatureSoftmax();
  distillery::Tensor probabilities;
  if (!distillery::DecodeTargets(response.targets(), response.contract(), softmax, &probabilities)
           .ok()) {
    return 0;
  }
  if (probabilities.rows() != response.targets().num_examples() ||
      probabilities.cols() != response.contract().num_classes()) {
    std::abort();
  }
  for (int64_t i = 0; i < probabilities.size(); ++i) {
    const float p = probabilities.data()[i];
    if (!std::isfinite(p) || p < 0.f) std::abort();
  }
  return 0;
}
