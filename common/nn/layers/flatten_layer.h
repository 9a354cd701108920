// Flattens each example: (batch, d1, d2, ...) -> (batch, d1 * d2 * ...), in
// row-major order (for images (batch, C, H, W) -> (batch, C*H*W), the
// flattening of PyTorch and ONNX). The elements are not moved: the output
// holds the same values in the same order under the new shape.
// Backward: dL/dinput = dL/doutput under the input's shape.
// In bf16 (SetPrecision) inference passes the layer also takes a bf16 input
// (TakesBf16) and gives its output in the type SetInferenceOutput asked for
// (f32 -> bf16 rounds to nearest even, bf16 -> f32 is exact).
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
  void SetPrecision(Precision precision) override { precision_ = precision; }
  bool TakesBf16() const override { return precision_ == Precision::kBF16; }
  bool SetInferenceOutput(bool relu, DataType type) override;

 private:
  Precision precision_ = Precision::kF32;
  DataType inference_output_type_ = DataType::kF32;  // SetInferenceOutput's
};

}  // namespace distillery

#endif  // DISTILLERY_COMMON_NN_LAYERS_FLATTEN_LAYER_H_
