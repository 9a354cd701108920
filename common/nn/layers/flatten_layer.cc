#include "common/nn/layers/flatten_layer.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace distillery {

absl::StatusOr<Shape> FlattenLayer::OutputShape(const Shape& example_shape) const {
  if (example_shape.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Flatten takes examples of at least one dimension, got ", ShapeString(example_shape)));
  }
  return Shape{ShapeSize(example_shape)};
}

bool FlattenLayer::SetInferenceOutput(bool relu, DataType type) {
  if (relu || (type == DataType::kBF16 && precision_ != Precision::kBF16)) return false;
  inference_output_type_ = type;
  return true;
}

absl::Status FlattenLayer::Forward(const Tensor& input, bool training, Tensor* output) {
  if (input.rank() < 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Flatten Forward: input must be (batch, ...), got ", ShapeString(input.shape())));
  }
  if (input.dtype() == DataType::kBF16 && (training || precision_ != Precision::kBF16)) {
    return absl::InvalidArgumentError("Flatten Forward: a bf16 input is for bf16 inference only");
  }
  // The output is a separate tensor, so one copy (a conversion when the
  // types differ); its storage is kept across calls.
  const DataType type = training ? DataType::kF32 : inference_output_type_;
  output->Reshape({input.rows(), input.cols()}, type);
  const int64_t n = input.size();
  if (input.dtype() == type) {
    std::memcpy(output->raw_data(), input.raw_data(),
                static_cast<size_t>(n) * (type == DataType::kF32 ? 4 : 2));
  } else if (type == DataType::kF32) {
    const uint16_t* from = input.bf16_data();
    std::transform(from, from + n, output->data(), FloatFromBf16);
  } else {
    const float* from = input.data();
    std::transform(from, from + n, output->bf16_data(), Bf16FromFloat);
  }
  return absl::OkStatus();
}

absl::Status FlattenLayer::Backward(const Tensor& input, const Tensor& /*output*/,
                                    const Tensor& grad_output, Tensor* grad_input) {
  if (input.rank() < 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Flatten Backward: input must be (batch, ...), got ", ShapeString(input.shape())));
  }
  if (grad_output.rank() != 2 || grad_output.rows() != input.rows() ||
      grad_output.cols() != input.cols()) {
    return absl::InvalidArgumentError(
        absl::StrCat("Flatten Backward: gradient shape ", ShapeString(grad_output.shape()),
                     " does not match output (", input.rows(), ", ", input.cols(), ")"));
  }
  if (grad_input == nullptr) return absl::OkStatus();
  grad_input->Reshape(input.shape());
  std::copy(grad_output.data(), grad_output.data() + grad_output.size(), grad_input->data());
  return absl::OkStatus();
}

}  // namespace distillery
