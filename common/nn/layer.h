// The interface every layer implements, and the trainable parameter type.
//
// A layer maps an input tensor of shape (batch, ...) to an output tensor of
// shape (batch, ...): (batch, features) for fully connected layers,
// (batch, channels, rows, cols) for image layers (common/tensor/tensor.h).
// The batch is always dimension 0 and never changes; OutputShape gives the
// rest. Backward receives the same input and output the last Forward saw,
// plus d(loss)/d(output), and produces d(loss)/d(input) while *overwriting*
// the gradients of its parameters (one Backward per Forward; no accumulation).
// Each layer's header states the shapes it takes and gives.
//
// Layouts (common/tensor/tensor.h): layers take and give plain tensors,
// unless TakesBlocked() says that a layer also takes rank-4 inputs in
// oneDNN's image layouts (channel-blocked or channels-last; "blocked" below
// means either). Such a layer, given a blocked input, gives its output,
// takes grad_output and gives grad_input in the input's layout; a producer
// (a convolution) gives its output in a blocked layout of oneDNN's choosing
// when AllowBlockedOutput(true) was called, and Backward then takes
// grad_output in that layout. Keeping image activations blocked between
// convolution, batch-norm, ReLU and pooling layers saves a reorder at each
// edge and lets oneDNN run its fast kernels for that layout (nChw16c for
// the AVX-512 ones, nhwc for AMX's); ForwardInLayout and BackwardInLayout
// (common/nn/layout_bridge.h) convert for the other layers.
//
// Element types: layers take and give f32 tensors. A layer told to compute
// in bf16 (SetPrecision, common/tensor/precision.h) converts at its edges,
// so that its neighbours never see the difference, and keeps f32 master
// weights, from which it makes bf16 copies when ParametersChanged says they
// are stale. Inference passes may keep activations in bf16 between bf16
// layers instead: a layer whose TakesBf16() is true takes a bf16 input in
// an inference Forward, and one told so by SetInferenceOutput gives a bf16
// output (TiledInference arranges both, and restores f32 after its run).
// Training passes may too, between image layers: a layer whose
// TakesBf16InTraining() is true takes a bf16 input in a training Forward,
// and a producer (a convolution) told so by SetTrainingOutputBf16 gives a
// bf16 output there; layers that take bf16 but produce nothing of their
// own (batch norm, pooling) give their output in their input's type
// (Network arranges this, ForwardInLayout converts for the other layers).
// In every Backward grad_output has the type of `output`, and grad_input is
// given in the type of `input`.
//
// Fusion, in inference passes only: a layer that can apply the ReLU after
// it as a post-op of its own product (SetInferenceOutput(relu=true)) lets
// the pass skip the ReLU layer; one that can apply the per-channel affine
// map of the layer after it (batch norm with its running statistics,
// InferenceAffine) as a post-op (SetInferenceAffine) lets the pass skip
// that layer; and layers that are the identity in inference (dropout) are
// skipped too. In bf16 a convolution block (convolution, batch norm, ReLU,
// pooling) thus runs as one convolution with bf16 output and a bf16
// pooling. In every pass, training included, a layer may apply the ReLU
// after it itself (SetFusedRelu: batch norm, whose backward pass then masks
// the gradient), and the ReLU layer is skipped.
//
// Thread-safety: a layer keeps per-shape oneDNN primitives and scratch
// buffers, so one layer is used by one thread at a time.
#ifndef DISTILLERY_COMMON_NN_LAYER_H_
#define DISTILLERY_COMMON_NN_LAYER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/tensor/precision.h"
#include "common/tensor/tensor.h"

namespace distillery {

// A trainable tensor and its gradient, of the same shape.
struct Parameter {
  std::string name;  // e.g. "layer0.weight"; stable, used in checkpoints
  Tensor value;      // weights are (out_features, in_features) or (out_channels,
                     // in_channels, kernel_rows, kernel_cols); biases (1, out)
  Tensor grad;       // d(loss)/d(value) from the last Backward
  // True for hidden layers' weights: each output unit's (or filter's)
  // incoming weights, the value's rows in its 2-D reading, are clipped to a
  // max L2 norm.
  bool max_norm_applies;
  // True for weights that L2 weight decay applies to (not biases, not
  // batch-norm scales and shifts).
  bool weight_decay_applies = false;
};

// A non-trainable tensor that a checkpoint must keep, such as batch
// normalization's running mean and variance.
struct Buffer {
  std::string name;  // e.g. "layer1.running_mean"; stable, used in checkpoints
  Tensor* value;     // owned by the layer
};

class Layer {
 public:
  virtual ~Layer() = default;

  // A short description, e.g. "Linear(784->1200)".
  virtual std::string Describe() const = 0;

  // The shape of one example's output for one example's input shape (both
  // without the batch dimension), e.g. (1, 28, 28) -> (32, 24, 24) for a
  // 5x5 convolution with 32 filters. InvalidArgument, naming the layer and
  // both shapes, when an input of that shape does not fit the layer. Networks
  // call it for every layer before training starts.
  virtual absl::StatusOr<Shape> OutputShape(const Shape& example_shape) const = 0;

  // Computes `output` (resized here) from `input`. When `training` is false,
  // stochastic layers (dropout) are the identity.
  virtual absl::Status Forward(const Tensor& input, bool training, Tensor* output) = 0;

  // Given the `input` and `output` of the last Forward and `grad_output`,
  // writes d(loss)/d(input) into `grad_input` (resized here) unless it is
  // null, and overwrites the parameters' gradients.
  virtual absl::Status Backward(const Tensor& input, const Tensor& output,
                                const Tensor& grad_output, Tensor* grad_input) = 0;

  // The layer's trainable parameters, owned by the layer. Empty by default.
  virtual std::vector<Parameter*> Parameters() { return {}; }

  // The layer's non-trainable state kept in checkpoints. Empty by default.
  virtual std::vector<Buffer> Buffers() { return {}; }

  // Whether the layer takes channel-blocked inputs (see Layouts above).
  virtual bool TakesBlocked() const { return false; }
  // Lets a producer of image activations give its output blocked (false,
  // the default: plain). Layers that never produce blocked tensors of their
  // own choosing ignore it.
  virtual void AllowBlockedOutput(bool /*allow*/) {}

  // The arithmetic of the layer's matrix products. Layers without any (or
  // without a bf16 path yet) ignore it and compute in f32.
  virtual void SetPrecision(Precision /*precision*/) {}
  // Whether the layer computes max(x, 0), in every pass (the ReLU that
  // the layer before may fuse, see Fusion above).
  virtual bool IsRelu() const { return false; }
  // Inference (Forward with training off) only; see Element types and
  // Fusion above. Whether the layer is the identity there:
  virtual bool IdentityInInference() const { return false; }
  // whether it takes a bf16 input there:
  virtual bool TakesBf16() const { return false; }
  // whether it is a per-channel affine map there, output[n][c][...] =
  // input[n][c][...] * scale[c] + shift[c], and if so its scale and shift,
  // each (1, channels) (resized here):
  virtual bool InferenceAffine(Tensor* /*scale*/, Tensor* /*shift*/) const { return false; }
  // and whether its next inference Forwards apply such a map to their
  // product, before the ReLU of SetInferenceOutput (scale and shift as
  // InferenceAffine gives them, copied; nullptrs clear it). Returns false,
  // changing nothing, when the layer cannot; clearing it always succeeds.
  virtual bool SetInferenceAffine(const Tensor* scale, const Tensor* /*shift*/) {
    return scale == nullptr;
  }
  // and how its next inference Forwards give their output: with a ReLU
  // applied (max(output, 0)) and in `type`. Returns false, changing
  // nothing, when the layer cannot; (false, kF32), the default, it always
  // accepts.
  virtual bool SetInferenceOutput(bool relu, DataType type) {
    return !relu && type == DataType::kF32;
  }

  // Training (Forward with training on) in bf16 only; see Element types
  // above. Whether the layer takes a bf16 input there:
  virtual bool TakesBf16InTraining() const { return false; }
  // and whether its next training Forwards give a bf16 output (a producer
  // of activations whose next layer takes it). Returns false, changing
  // nothing, when the layer cannot; SetTrainingOutputBf16(false) always
  // succeeds.
  virtual bool SetTrainingOutputBf16(bool bf16) { return !bf16; }

  // Every pass, training and inference: whether the layer applies the ReLU
  // after it to its own output, max(output, 0), in Forward, and Backward
  // then takes the gradient with respect to that ReLU's output, so that a
  // network skips the ReLU layer (Network, TiledInference). Returns false,
  // changing nothing, when the layer cannot; SetFusedRelu(false) always
  // succeeds.
  virtual bool SetFusedRelu(bool fuse) { return !fuse; }
  virtual bool FusedRelu() const { return false; }

  // The parameters' values may have changed since the last Forward: copies
  // made from them (bf16 weights) must be made again.
  virtual void ParametersChanged() {}

  // Sets the step number that seeds the layer's randomness (dropout masks)
  // for the next Forward, so that a run resumed at step s draws the same
  // masks as an uninterrupted one. No-op for deterministic layers.
  virtual void SetNoiseStep(uint64_t /*step*/) {}
};

}  // namespace distillery

#endif  // DISTILLERY_COMMON_NN_LAYER_H_
