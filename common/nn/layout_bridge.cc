#include "common/nn/layout_bridge.h"

namespace distillery {

absl::Status ForwardInLayout(Layer& layer, const Tensor& input, bool training, DnnlContext* context,
                             Tensor* plain_input, const Tensor** seen, Tensor* output) {
  *seen = &input;
  const bool convert_layout = input.layout() != Layout::kPlain && !layer.TakesBlocked();
  const bool convert_type = input.dtype() == DataType::kBF16 &&
                            !(training ? layer.TakesBf16InTraining() : layer.TakesBf16());
  if (convert_layout || convert_type) {
    if (absl::Status s =
            context->Convert(input, convert_layout ? Layout::kPlain : input.layout(),
                             convert_type ? DataType::kF32 : input.dtype(), plain_input);
        !s.ok()) {
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
  return context->Convert(*scratch, input.layout(), input.dtype(), grad_input);
}

}  // namespace distillery
