#include "common/nn/layers/global_avg_pool_layer.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace distillery {

absl::StatusOr<Shape> GlobalAvgPoolLayer::OutputShape(const Shape& example_shape) const {
  if (example_shape.size() != 3 || ShapeSize(example_shape) == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "GlobalAvgPool takes images (channels, rows, cols), got ", ShapeString(example_shape)));
  }
  return Shape{example_shape[0], 1, 1};
}

absl::Status GlobalAvgPoolLayer::Forward(const Tensor& input, bool /*training*/, Tensor* output) {
  if (input.rank() != 4 || input.size() == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("GlobalAvgPool Forward: input must be (batch, channels, rows, cols), got ",
                     ShapeString(input.shape())));
  }
  const Shape& s = input.shape();
  const int64_t planes = s[0] * s[1], plane = s[2] * s[3];
  output->Reshape({s[0], s[1], 1, 1});
  const float inverse = 1.f / static_cast<float>(plane);
  const float* in = input.data();
  float* out = output->data();
  for (int64_t k = 0; k < planes; ++k) {
    float sum = 0.f;
    for (int64_t i = 0; i < plane; ++i) sum += in[k * plane + i];
    out[k] = sum * inverse;
  }
  return absl::OkStatus();
}

absl::Status GlobalAvgPoolLayer::Backward(const Tensor& input, const Tensor& /*output*/,
                                          const Tensor& grad_output, Tensor* grad_input) {
  if (grad_input == nullptr) return absl::OkStatus();
  if (input.rank() != 4 || grad_output.size() != input.shape()[0] * input.shape()[1]) {
    return absl::InvalidArgumentError(
        absl::StrCat("GlobalAvgPool Backward: gradient ", ShapeString(grad_output.shape()),
                     " does not fit input ", ShapeString(input.shape())));
  }
  const Shape& s = input.shape();
  const int64_t planes = s[0] * s[1], plane = s[2] * s[3];
  grad_input->Reshape(s);
  const float inverse = 1.f / static_cast<float>(plane);
  for (int64_t k = 0; k < planes; ++k) {
    std::fill_n(grad_input->data() + k * plane, plane, grad_output.data()[k] * inverse);
  }
  return absl::OkStatus();
}

}  // namespace distillery
