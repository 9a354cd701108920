// Flattens each example: (batch, d1, d2, ...) -> (batch, d1 * d2 * ...), in
// row-major order (for images (batch, C, H, W) -> (batch, C*H*W), the
// flattening of PyTorch and ONNX). The elements are not moved: the output
// holds the same values in the same order under the new shape.
// Backward: dL/dinput = dL/doutput under the input's shape.
#ifndef DISTILLERY_COMMON_NN_LAYERS_FLATTEN_LAYER_H_
#define DISTILLERY_COMMON_NN_LAYERS_FLATTEN_LAYER_H_

#include "common/nn/layer.h"

namespace distillery {

class FlattenLayer : public Layer {
 public:
  FlattenLayer() = default;

  std::string Describe() const override { return "Flatten"; }
  // Takes any non-empty example shape and gives (its element count).
  absl::StatusOr<Shape> OutputShape(const Shape& example_shape) const override;
  absl::Status Forward(const Tensor& input, bool training, Tensor* output) override;
  absl::Status Backward(const Tensor& input, const Tensor& output, const Tensor& grad_output,
                        Tensor* grad_input) override;
};

}  // namespace distillery

#endif  // DISTILLERY_COMMON_NN_LAYERS_FLATTEN_LAYER_H_
