#include "common/nn/layout_bridge.h"

namespace distillery {

absl::Status ForwardInLayout(Layer& layer, const Tensor& input, bool training, DnnlContext* context,
                             Tensor* plain_input, const Tensor** seen, Tensor* output) {
  *seen = &input;
  if (input.layout() != Layout::kPlain && !layer.TakesBlocked()) {
    if (absl::Status s = context->ConvertLayout(input, Layout::kPlain, plain_input); !s.ok()) {
      return s;
    }
    *seen = plain_input;
  }
  return layer.Forward(**seen, training, output);
}

absl::Status BackwardInLayout(Layer& layer, const Tensor& input, const Tensor& seen,
                              const Tensor& output, const Tensor& grad_output, DnnlContext* context,
                              Tensor* scratch, Tensor* grad_input) {
  if (&seen == &input || grad_input == nullptr) {
    return layer.Backward(seen, output, grad_output, grad_input);
  }
  if (absl::Status s = layer.Backward(seen, output, grad_output, scratch); !s.ok()) return s;
  return context->ConvertLayout(*scratch, input.layout(), grad_input);
}

}  // namespace distillery
