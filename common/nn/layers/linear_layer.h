// A fully connected layer on oneDNN inner-product primitives:
//   output = input * W^T + b
// input (batch x in), W (out x in), b (1 x out), output (batch x out).
// Backward:
//   dL/dinput = dL/doutput * W            (skipped when not asked for)
//   dL/dW     = (dL/doutput)^T * input
//   dL/db     = column sums of dL/doutput
#ifndef DISTILLERY_COMMON_NN_LAYERS_LINEAR_LAYER_H_
#define DISTILLERY_COMMON_NN_LAYERS_LINEAR_LAYER_H_

#include <memory>

#include "common/nn/layer.h"
#include "common/nn/primitive_cache.h"
#include "common/tensor/dnnl_context.h"

namespace distillery {

class LinearLayer : public Layer {
 public:
  // Weights and biases start at zero; the network initialises them.
  // `index` names the parameters "layer<index>.weight" / "layer<index>.bias".
  // `context` is not owned and must outlive the layer.
  LinearLayer(int index, int64_t in_features, int64_t out_features, bool max_norm_applies,
              DnnlContext* context);

  std::string Describe() const override;
  // Takes any example shape of in_features elements (an image is read
  // flattened, in row-major order) and gives (out_features).
  absl::StatusOr<Shape> OutputShape(const Shape& example_shape) const override;
  absl::Status Forward(const Tensor& input, bool training, Tensor* output) override;
  absl::Status Backward(const Tensor& input, const Tensor& output, const Tensor& grad_output,
                        Tensor* grad_input) override;
  std::vector<Parameter*> Parameters() override { return {&weight_, &bias_}; }

  int64_t in_features() const { return in_features_; }
  int64_t out_features() const { return out_features_; }
  Parameter& weight() { return weight_; }
  Parameter& bias() { return bias_; }

 private:
  // The primitives for one batch size, built once and then reused.
  //
  // The forward pass has two implementations. oneDNN's inner product runs
  // output = input * W^T as a GEMM with a transposed operand, which on
  // AVX-512 reaches ~175 GFLOP/s here; the same product computed as
  // output^T = W * input^T (a matmul reading `input` as its transpose) and
  // transposed back by a reorder reaches ~210 including the reorder. The
  // matmul path is used whenever oneDNN has an optimised kernel for it (not
  // its reference one); the bias is then added by hand.
  //
  // The backward primitives are built on the first Backward of a batch size
  // only, so that an inference-only network (a teacher server) holds none.
  struct Primitives {
    dnnl::inner_product_forward forward;
    bool use_matmul = false;
    dnnl::matmul forward_matmul;  // (out x in) * (in x batch) -> (out x batch)
    dnnl::reorder transpose;      // (out x batch) -> (batch x out)
    bool has_backward = false;
    dnnl::inner_product_backward_data backward_data;
    dnnl::inner_product_backward_weights backward_weights;
  };
  absl::Status GetPrimitives(int64_t batch, bool backward, Primitives** primitives);

  int64_t in_features_;
  int64_t out_features_;
  DnnlContext* context_;
  Parameter weight_;
  Parameter bias_;
  // A few batch sizes at most (common/nn/primitive_cache.h).
  PrimitiveCache<int64_t, Primitives> primitives_by_batch_;
  Tensor transposed_output_;  // out x batch scratch of the matmul path
};

}  // namespace distillery

#endif  // DISTILLERY_COMMON_NN_LAYERS_LINEAR_LAYER_H_
