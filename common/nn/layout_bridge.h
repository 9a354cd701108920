// Runs a layer's Forward and Backward whatever the layout and element type
// of the tensors around it: a channel-blocked input given to a layer that
// takes only plain tensors is converted to plain first, a bf16 input given
// to a layer that does not take bf16 in that pass to f32, and the gradient
// it gives back is converted to the input's layout and type (the Layouts
// and Element types sections of common/nn/layer.h).
// Network and TiledInference call layers through these two functions only.
#ifndef DISTILLERY_COMMON_NN_LAYOUT_BRIDGE_H_
#define DISTILLERY_COMMON_NN_LAYOUT_BRIDGE_H_

#include "absl/status/status.h"
#include "common/nn/layer.h"
#include "common/tensor/dnnl_context.h"
#include "common/tensor/tensor.h"

namespace distillery {

// Calls layer.Forward(input or its converted copy, training, output) and
// sets *seen to the tensor the layer was given: `input` itself, or
// `plain_input` holding the copy. The layer's Backward must be given *seen again.
absl::Status ForwardInLayout(Layer& layer, const Tensor& input, bool training, DnnlContext* context,
                             Tensor* plain_input, const Tensor** seen, Tensor* output);

// Calls layer.Backward(*seen, output, grad_output, ...) for the `input` and
// `seen` of ForwardInLayout, and writes d(loss)/d(input) into `grad_input`
// (unless null) in input's layout and type, through `scratch` when a
// conversion is needed.
absl::Status BackwardInLayout(Layer& layer, const Tensor& input, const Tensor& seen,
                              const Tensor& output, const Tensor& grad_output, DnnlContext* context,
                              Tensor* scratch, Tensor* grad_input);

}  // namespace distillery

#endif  // DISTILLERY_COMMON_NN_LAYOUT_BRIDGE_H_
