// Batch normalization over channels on oneDNN batch-normalization
// primitives, with PyTorch's conventions. The data (input, output and their
// gradients) are f32, or bf16 in bf16 training passes (TakesBf16InTraining:
// the output and dL/dinput in the input's type); the statistics, the
// arithmetic and gamma, beta and their gradients are f32 either way.
//
// Shapes:
//   input (batch, C, rows, cols) or (batch, C) (read as (batch, C, 1, 1));
//   output the input's shape; gamma ("weight"), beta ("bias"), running_mean
//   and running_var (1, C).
// Forward, for channel c over its m = batch * rows * cols elements x:
//   training:  mean = sum(x) / m,  var = sum((x - mean)^2) / m  (biased)
//              output = gamma[c] * (x - mean) / sqrt(var + eps) + beta[c]
//              running_mean = (1 - momentum) * running_mean + momentum * mean
//              running_var  = (1 - momentum) * running_var
//                             + momentum * var * m / (m - 1)   (unbiased)
//              (m must be at least 2)
//   inference: output = gamma[c] * (x - running_mean) / sqrt(running_var + eps)
//                       + beta[c]
// Takes channel-blocked inputs (common/nn/layer.h), where oneDNN runs its
// JIT kernels rather than the plain layout's slower reference-style ones.
// eps = 1e-5, momentum = 0.1. The statistics of the last training Forward
// are kept for Backward, which differentiates the Forward that wrote the
// `output` it is given: the last training or the last inference one.
// Backward, with xhat = (x - mean) / sqrt(var + eps) and g = dL/doutput:
//   dL/dbeta  = sum(g)
//   dL/dgamma = sum(g * xhat)
//   dL/dinput = gamma / sqrt(var + eps) * (g - dL/dbeta / m - xhat * dL/dgamma / m)
//   after a training Forward; after an inference Forward the statistics are
//   constants: dL/dinput = gamma / sqrt(running_var + eps) * g, and
//   dL/dgamma uses xhat from the running statistics.
// Fused ReLU (SetFusedRelu(true), which Network sets when a ReLU follows):
//   output = max(the above, 0) in both passes, and Backward takes g as
//   d(loss)/d(that output), using g where output > 0 and 0 elsewhere, as the
//   ReLU layer would (oneDNN's fuse_norm_relu: Forward keeps the mask in a
//   workspace for Backward, so inference Forwards run the training-kind
//   primitive on the running statistics). The bits are those of the
//   unfused pair; the ReLU's own pass over memory, both ways, is saved.
#ifndef DISTILLERY_COMMON_NN_LAYERS_BATCH_NORM_LAYER_H_
#define DISTILLERY_COMMON_NN_LAYERS_BATCH_NORM_LAYER_H_

#include <array>
#include <cstdint>
#include <vector>

#include "common/nn/layer.h"
#include "common/nn/primitive_cache.h"
#include "common/tensor/dnnl_context.h"

namespace distillery {

class BatchNormLayer : public Layer {
 public:
  static constexpr float kEpsilon = 1e-5f;
  static constexpr float kMomentum = 0.1f;

  // gamma starts at 1, beta at 0, running_mean at 0 and running_var at 1.
  // `index` names the parameters "layer<index>.weight" (gamma) and
  // "layer<index>.bias" (beta), and the buffers "layer<index>.running_mean"
  // and "layer<index>.running_var". `context` is not owned and must outlive
  // the layer.
  BatchNormLayer(int index, int64_t channels, DnnlContext* context);

  // "BatchNorm(32)".
  std::string Describe() const override;
  // Takes (C, rows, cols) or (C) and gives the same shape.
  absl::StatusOr<Shape> OutputShape(const Shape& example_shape) const override;
  bool TakesBlocked() const override { return true; }
  bool TakesBf16InTraining() const override { return true; }
  bool SetFusedRelu(bool fuse) override;
  bool FusedRelu() const override { return fused_relu_; }
  absl::Status Forward(const Tensor& input, bool training, Tensor* output) override;
  absl::Status Backward(const Tensor& input, const Tensor& output, const Tensor& grad_output,
                        Tensor* grad_input) override;
  std::vector<Parameter*> Parameters() override { return {&gamma_, &beta_}; }
  // In inference the layer is the per-channel affine map
  //   scale = gamma / sqrt(running_var + eps), shift = beta - running_mean * scale,
  // which a convolution before it may apply instead (common/nn/layer.h).
  bool InferenceAffine(Tensor* scale, Tensor* shift) const override;
  std::vector<Buffer> Buffers() override {
    return {{running_mean_name_, &running_mean_}, {running_var_name_, &running_var_}};
  }

  int64_t channels() const { return channels_; }
  Parameter& gamma() { return gamma_; }
  Parameter& beta() { return beta_; }
  Tensor& running_mean() { return running_mean_; }
  Tensor& running_var() { return running_var_; }

  // For tests and metrics: the input shapes with cached primitives (at most
  // PrimitiveCache::kDefaultCapacity), and how many of them have a backward
  // primitive built.
  size_t CachedShapes() const { return primitives_by_shape_.size(); }
  size_t CachedBackwardShapes() const {
    return primitives_by_shape_.CountIf(
        [](const Primitives& p) { return p.has[kBackwardTraining] || p.has[kBackwardInference]; });
  }

 private:
  // The primitives of one input shape, each built on its first use: an
  // inference-only network builds forward_inference alone.
  enum Kind { kForwardTraining, kForwardInference, kBackwardTraining, kBackwardInference, kKinds };
  struct Primitives {
    dnnl::memory::desc data, stats;
    dnnl::memory::desc workspace;       // the fused ReLU's mask (empty when unfused)
    std::array<bool, kKinds> has = {};  // which of the four are built
    dnnl::batch_normalization_forward forward_training;
    dnnl::batch_normalization_forward forward_inference;  // use_global_stats
    dnnl::batch_normalization_backward backward_training;
    dnnl::batch_normalization_backward backward_inference;  // use_global_stats
  };
  using ShapeKey = std::array<int64_t, 5>;  // batch, rows, cols, layout, type
  absl::Status CheckInput(const char* what, const Tensor& input) const;
  // The entry for `input`'s shape with primitive `kind` built. The pointer
  // is valid until the next call.
  absl::Status GetPrimitives(const Tensor& input, Kind kind, Primitives** primitives);
  // Builds primitive `kind` into `entry` (whose data and stats are set) and
  // marks it built. Throws dnnl::error.
  void Build(Kind kind, Primitives* entry) const;

  int64_t channels_;
  DnnlContext* context_;
  Parameter gamma_;
  Parameter beta_;
  std::string running_mean_name_, running_var_name_;
  Tensor running_mean_, running_var_;
  Tensor batch_mean_, batch_var_;  // (1, C), from the last training Forward
  Tensor scratch_grad_input_;      // when Backward is not asked for it
  bool last_forward_training_ = false;
  bool fused_relu_ = false;
  // The last inference and training Forwards ([0] and [1]): the output each
  // wrote and, when fused, its ReLU mask. Backward differentiates the one
  // whose output it is given (the later one if both wrote the same tensor),
  // so that an inference pass between a training Forward and its Backward
  // (Network::Infer) changes nothing.
  struct ForwardRecord {
    const void* output = nullptr;
    std::vector<uint8_t> mask;
  };
  std::array<ForwardRecord, 2> forwards_;
  // A few shapes at most (common/nn/primitive_cache.h).
  PrimitiveCache<ShapeKey, Primitives> primitives_by_shape_;
};

}  // namespace distillery

#endif  // DISTILLERY_COMMON_NN_LAYERS_BATCH_NORM_LAYER_H_
