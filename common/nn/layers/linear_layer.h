// A fully connected layer on oneDNN inner-product primitives:
//   output = input * W^T + b
// input (batch x in), W (out x in), b (1 x out), output (batch x out).
// In bf16 (SetPrecision) the layer computes its products from bf16 copies
// of the input, the weights and dL/doutput, with f32 accumulation, f32 bias
// and f32 results: dL/dinput and the gradients in Parameter::grad are f32,
// and the f32 weights are the master copy that the optimizer updates and
// checkpoints hold. Training passes run oneDNN matmuls on a plain bf16 copy
// of the weights, made again after each ParametersChanged; the backward
// weights pass uses the bf16 copy of the input that the training Forward
// made. Inference passes run an inner product whose weights are in the
// layout oneDNN picks (format any), converted once while the weights stay
// as they are (a server's). There the layer also takes a bf16 input as it
// is, and (SetInferenceOutput) may apply a following ReLU as a post-op of
// its product and give its output in bf16, for the next bf16 layer to take:
// output = max(input * W^T + b, 0), rounded to bf16 once (TiledInference
// arranges this).
// Backward:
//   dL/dinput = dL/doutput * W            (skipped when not asked for)
//   dL/dW     = (dL/doutput)^T * input
//   dL/db     = column sums of dL/doutput
#ifndef DISTILLERY_COMMON_NN_LAYERS_LINEAR_LAYER_H_
#define DISTILLERY_COMMON_NN_LAYERS_LINEAR_LAYER_H_

#include <array>
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
  void SetPrecision(Precision precision) override {
    precision_ = precision;
    bf16_weights_valid_ = false;
  }
  void ParametersChanged() override { bf16_weights_valid_ = false; }
  bool TakesBf16() const override { return precision_ == Precision::kBF16; }
  // Fusing and bf16 output need bf16 precision; f32 asks nothing.
  bool SetInferenceOutput(bool relu, DataType type) override;

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

  // The bf16 inference pass for one Bf16Key (a batch size, the fused ReLU
  // and the output type): the input's conversion and a bf16 inner product
  // whose weights layout oneDNN chose (format any).
  struct Bf16InferencePrimitives {
    dnnl::reorder input_to_bf16;  // f32 (batch x in) -> bf16 (batch x in)
    dnnl::inner_product_forward forward;
    dnnl::memory::desc weights_desc;
  };
  // batch, ReLU post-op, bf16 output
  using Bf16Key = std::array<int64_t, 3>;
  absl::Status GetBf16InferencePrimitives(const Bf16Key& key, Bf16InferencePrimitives** primitives);

  // The bf16 training passes for one batch size: matmuls on the plain bf16
  // weights (out x in). Why not inner products, measured on AMX
  // (avx512_core_amx, 1 thread, a 1200x1200 layer at batch 128): their
  // weights layout costs a 778 us conversion at every step, and their
  // backward weights pass with plain f32 gradients is a non-AMX GEMM
  // (907 us); with matmuls the step's conversion and three products take
  // 1.87 ms instead of 2.57. The backward primitives are built on the first
  // Backward.
  struct Bf16TrainingPrimitives {
    dnnl::reorder input_to_bf16;  // f32 (batch x in) -> bf16 (batch x in)
    dnnl::matmul forward;         // input (batch x in) * W^T + b -> f32 (batch x out)
    bool has_backward = false;
    dnnl::reorder grad_to_bf16;             // f32 (batch x out) -> bf16 (batch x out)
    dnnl::reorder grad_to_bf16_transposed;  // f32 (batch x out) -> bf16 (out x batch)
    dnnl::matmul backward_data;             // dL/doutput (batch x out) * W -> f32 (batch x in)
    dnnl::matmul backward_weights;          // dL/doutput^T (out x batch) * input -> f32 (out x in)
  };
  absl::Status GetBf16TrainingPrimitives(int64_t batch, bool backward,
                                         Bf16TrainingPrimitives** primitives);
  absl::Status AddBf16Backward(int64_t batch, Bf16TrainingPrimitives* primitives);
  absl::Status ForwardBf16(const Tensor& input, bool training, Tensor* output);
  absl::Status InferBf16(const Tensor& input, Tensor* output);
  absl::Status BackwardBf16(const Tensor& input, const Tensor& grad_output, Tensor* grad_input);
  // Makes the bf16 operands of BackwardBf16: the weights, the input (if not
  // that of the training Forward) and dL/doutput^T; the data pass converts
  // dL/doutput itself, when dL/dinput is asked for.
  absl::Status PrepareBf16Backward(const Bf16TrainingPrimitives& p, const Tensor& input,
                                   const Tensor& grad_output);
  // Converts the plain rows x cols f32 matrix at `from` into `*to` (plain
  // bf16, or its cols x rows transpose when `transposed`) with `reorder`,
  // built for those shapes.
  absl::Status ToBf16(const char* what, const dnnl::reorder& reorder, const float* from,
                      int64_t rows, int64_t cols, Tensor* to, bool transposed = false);
  // Makes bf16_weights_ from the f32 weights in `desc`'s layout, unless
  // they are already that and still valid. The reorder is built once per
  // layout, not per conversion (a training step converts the weights).
  absl::Status ConvertWeights(const dnnl::memory::desc& desc);

  int64_t in_features_;
  int64_t out_features_;
  DnnlContext* context_;
  Parameter weight_;
  Parameter bias_;
  // A few batch sizes at most (common/nn/primitive_cache.h).
  PrimitiveCache<int64_t, Primitives> primitives_by_batch_;
  Tensor transposed_output_;  // out x batch scratch of the matmul path
  Precision precision_ = Precision::kF32;
  PrimitiveCache<Bf16Key, Bf16InferencePrimitives> bf16_inference_primitives_;  // a few keys
  PrimitiveCache<int64_t, Bf16TrainingPrimitives> bf16_training_primitives_;    // at most
  bool inference_relu_ = false;         // SetInferenceOutput's
  bool inference_bf16_output_ = false;  // choices
  Tensor bf16_input_;                   // an inference Forward's input converted to bf16
  // A training Forward's input converted to bf16, kept for Backward, and
  // which input it was (Infer between Forward and Backward leaves it alone).
  Tensor bf16_training_input_;
  const float* bf16_training_source_ = nullptr;
  int64_t bf16_training_rows_ = 0;
  Tensor bf16_grad_output_;             // Backward's dL/doutput converted to bf16
  Tensor bf16_grad_output_transposed_;  // and its transpose
  Tensor bf16_weights_;  // the weights in bf16, in bf16_weights_desc_'s layout (plain
                         // for training passes, oneDNN's choice for inference)
  dnnl::memory::desc bf16_weights_desc_;
  bool bf16_weights_valid_ = false;
  dnnl::reorder weights_to_bf16_;            // f32 plain weights -> bf16_weights_desc_
  dnnl::memory::desc weights_reorder_desc_;  // the layout weights_to_bf16_ writes
};

}  // namespace distillery

#endif  // DISTILLERY_COMMON_NN_LAYERS_LINEAR_LAYER_H_
