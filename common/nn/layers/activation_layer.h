// Element-wise activations on oneDNN eltwise primitives (f32), any shape:
//   ReLU:               output = max(x, 0)
//                       dL/dx = dL/dy where y > 0, else 0
//   leaky ReLU (alpha): output = x if x > 0, else alpha * x
//                       dL/dx = dL/dy if x > 0, else alpha * dL/dy
//   sigmoid:            output = 1 / (1 + exp(-x))
//                       dL/dx = dL/dy * y * (1 - y)
//   tanh:               output = tanh(x)
//                       dL/dx = dL/dy * (1 - y^2)
// The ReLU, sigmoid and tanh gradients are computed from the output (oneDNN's
// *_use_dst_for_bwd algorithms), the leaky ReLU's from the input (alpha may
// be any finite number, as in ONNX). The forward primitive of a shape is built
// on its first Forward, the backward one on its first Backward, both kept in
// a bounded cache (common/nn/primitive_cache.h). Element-wise, so they take
// any layout and give the input's (common/nn/layer.h).
#ifndef DISTILLERY_COMMON_NN_LAYERS_ACTIVATION_LAYER_H_
#define DISTILLERY_COMMON_NN_LAYERS_ACTIVATION_LAYER_H_

#include <string>
#include <utility>

#include "common/nn/layer.h"
#include "common/nn/primitive_cache.h"
#include "common/tensor/dnnl_context.h"

namespace distillery {

enum class ActivationKind : uint8_t { kLeakyRelu = 0, kSigmoid = 1, kTanh = 2, kRelu = 3 };

class ActivationLayer : public Layer {
 public:
  // `context` is not owned and must outlive the layer. `alpha` is the leaky
  // ReLU's negative slope (ignored by the others).
  ActivationLayer(ActivationKind kind, float alpha, DnnlContext* context)
      : kind_(kind), alpha_(kind == ActivationKind::kLeakyRelu ? alpha : 0.f), context_(context) {}

  // "ReLU", "LeakyReLU(0.01)", "Sigmoid", "Tanh".
  std::string Describe() const override;
  // Any shape; the output has the input's shape.
  absl::StatusOr<Shape> OutputShape(const Shape& example_shape) const override {
    return example_shape;
  }
  bool TakesBlocked() const override { return true; }
  absl::Status Forward(const Tensor& input, bool training, Tensor* output) override;
  absl::Status Backward(const Tensor& input, const Tensor& output, const Tensor& grad_output,
                        Tensor* grad_input) override;

  bool IsRelu() const override { return kind_ == ActivationKind::kRelu; }
  ActivationKind kind() const { return kind_; }
  float alpha() const { return alpha_; }

 private:
  struct Primitives {
    dnnl::eltwise_forward::primitive_desc forward_pd;
    dnnl::eltwise_forward forward;
    bool has_backward = false;
    dnnl::eltwise_backward backward;
  };
  absl::Status GetPrimitives(int64_t rows, int64_t cols, bool backward, Primitives** primitives);
  dnnl::algorithm Algorithm() const;
  bool UsesOutputForBackward() const { return kind_ != ActivationKind::kLeakyRelu; }

  ActivationKind kind_;
  float alpha_;
  DnnlContext* context_;
  PrimitiveCache<std::pair<int64_t, int64_t>, Primitives> primitives_by_shape_;
};

}  // namespace distillery

#endif  // DISTILLERY_COMMON_NN_LAYERS_ACTIVATION_LAYER_H_
