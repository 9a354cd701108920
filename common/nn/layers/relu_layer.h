// Rectified linear units: the ReLU kind of ActivationLayer
// (common/nn/layers/activation_layer.h), under the name the network, the
// checkpoint and the tests use.
//   output = max(input, 0)
//   dL/dinput = dL/doutput where output > 0, else 0
// (computed from the output, oneDNN's eltwise_relu_use_dst_for_bwd).
// Element-wise, so it takes any layout and gives the input's.
#ifndef DISTILLERY_COMMON_NN_LAYERS_RELU_LAYER_H_
#define DISTILLERY_COMMON_NN_LAYERS_RELU_LAYER_H_

#include "common/nn/layers/activation_layer.h"

namespace distillery {

class ReluLayer : public ActivationLayer {
 public:
  // `context` is not owned and must outlive the layer.
  explicit ReluLayer(DnnlContext* context) : ActivationLayer(ActivationKind::kRelu, 0.f, context) {}
};

}  // namespace distillery

#endif  // DISTILLERY_COMMON_NN_LAYERS_RELU_LAYER_H_
