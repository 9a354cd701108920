#include "common/nn/layers/flatten_layer.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace distillery {

absl::StatusOr<Shape> FlattenLayer::OutputShape(const Shape& example_shape) const {
  if (example_shape.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Flatten takes examples of at least one dimension, got ", ShapeString(example_shape)));
  }
  return Shape{ShapeSize(example_shape)};
}

absl::Status FlattenLayer::Forward(const Tensor& input, bool /*training*/, Tensor* output) {
  if (input.rank() < 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Flatten Forward: input must be (batch, ...), got ", ShapeString(input.shape())));
  }
  // The output is a separate tensor, so one copy; its storage is kept
  // across calls.
  output->Reshape({input.rows(), input.cols()});
  std::copy(input.data(), input.data() + input.size(), output->data());
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
