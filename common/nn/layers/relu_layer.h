// Rectified linear units on oneDNN eltwise primitives:
//   output = max(input, 0)
//   dL/dinput = dL/doutput where output > 0, else 0
// (computed from the output, oneDNN's eltwise_relu_use_dst_for_bwd).
// Element-wise, so it takes any layout and gives the input's.
#ifndef DISTILLERY_COMMON_NN_LAYERS_RELU_LAYER_H_
#define DISTILLERY_COMMON_NN_LAYERS_RELU_LAYER_H_

#include <utility>

#include "common/nn/layer.h"
#include "common/nn/primitive_cache.h"
#include "common/tensor/dnnl_context.h"

namespace distillery {

class ReluLayer : public Layer {
 public:
  // `context` is not owned and must outlive the layer.
  explicit ReluLayer(DnnlContext* context) : context_(context) {}

  std::string Describe() const override { return "ReLU"; }
  // Any shape; the output has the input's shape.
  absl::StatusOr<Shape> OutputShape(const Shape& example_shape) const override {
    return example_shape;
  }
  bool TakesBlocked() const override { return true; }
  absl::Status Forward(const Tensor& input, bool training, Tensor* output) override;
  absl::Status Backward(const Tensor& input, const Tensor& output, const Tensor& grad_output,
                        Tensor* grad_input) override;

 private:
  // The backward primitive is built on the first Backward of a shape only.
  struct Primitives {
    dnnl::eltwise_forward forward;
    bool has_backward = false;
    dnnl::eltwise_backward backward;
  };
  absl::Status GetPrimitives(int64_t rows, int64_t cols, bool backward, Primitives** primitives);

  DnnlContext* context_;
  // A few shapes at most (common/nn/primitive_cache.h).
  PrimitiveCache<std::pair<int64_t, int64_t>, Primitives> primitives_by_shape_;
};

}  // namespace distillery

#endif  // DISTILLERY_COMMON_NN_LAYERS_RELU_LAYER_H_
