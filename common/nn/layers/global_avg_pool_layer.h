// Global average pooling: the mean of each channel's image.
//   input  (batch, channels, rows, cols)
//   output (batch, channels, 1, 1), output[n, c] = sum over (y, x) of
//          input[n, c, y, x] / (rows * cols)
//   dL/dinput[n, c, y, x] = dL/doutput[n, c] / (rows * cols)
// Unlike an average pooling whose window is the image, it takes any image
// size (ONNX's GlobalAveragePool). Plain loops: it reads each input once.
#ifndef DISTILLERY_COMMON_NN_LAYERS_GLOBAL_AVG_POOL_LAYER_H_
#define DISTILLERY_COMMON_NN_LAYERS_GLOBAL_AVG_POOL_LAYER_H_

#include <string>

#include "common/nn/layer.h"

namespace distillery {

class GlobalAvgPoolLayer : public Layer {
 public:
  std::string Describe() const override { return "GlobalAvgPool"; }
  // Takes (channels, rows, cols), gives (channels, 1, 1).
  absl::StatusOr<Shape> OutputShape(const Shape& example_shape) const override;
  absl::Status Forward(const Tensor& input, bool training, Tensor* output) override;
  absl::Status Backward(const Tensor& input, const Tensor& output, const Tensor& grad_output,
                        Tensor* grad_input) override;
};

}  // namespace distillery

#endif  // DISTILLERY_COMMON_NN_LAYERS_GLOBAL_AVG_POOL_LAYER_H_
