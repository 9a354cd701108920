// Rectified linear units on oneDNN eltwise primitives:
//   output = max(input, 0)
//   dL/dinput = dL/doutput where output > 0, else 0
// (computed from the output, oneDNN's eltwise_relu_use_dst_for_bwd).
#ifndef DISTILLERY_COMMON_RELU_LAYER_H_
#define DISTILLERY_COMMON_RELU_LAYER_H_

#include <map>

#include "common/dnnl_context.h"
#include "common/layer.h"

namespace distillery {

class ReluLayer : public Layer {
 public:
  // `context` is not owned and must outlive the layer.
  explicit ReluLayer(DnnlContext* context) : context_(context) {}

  std::string Describe() const override { return "ReLU"; }
  absl::Status Forward(const Matrix& input, bool training, Matrix* output) override;
  absl::Status Backward(const Matrix& input, const Matrix& output, const Matrix& grad_output,
                        Matrix* grad_input) override;

 private:
  struct Primitives {
    dnnl::eltwise_forward forward;
    dnnl::eltwise_backward backward;
  };
  absl::Status GetPrimitives(int64_t rows, int64_t cols, Primitives** primitives);

  DnnlContext* context_;
  std::map<std::pair<int64_t, int64_t>, Primitives> primitives_by_shape_;
};

}  // namespace distillery

#endif  // DISTILLERY_COMMON_RELU_LAYER_H_
