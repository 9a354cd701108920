// A feed-forward network: a NetworkSpec's layers in order, the network type
// of both the teacher and the students (multilayer perceptrons and
// convolutional networks alike).
//
//   input (batch, input_shape...) -> layer 0 -> layer 1 -> ... -> logits
//   (batch, num_classes)
//
// Create checks every layer's shapes against the input shape before anything
// trains (Layer::OutputShape), and that the output is a vector of classes.
//
// Inference (Infer, Predict) runs in fixed tiles of TiledInference's rows
// (common/nn/tiled_inference.h), so that an example's logits do not depend
// on the batch it is in; training (Forward, Backward) runs the batch whole.
//
// Thread-safety: a Network keeps its activations between Forward and
// Backward, so it is used by one thread at a time. Forward-only users on
// several threads each need their own copy (Clone()).
#ifndef DISTILLERY_COMMON_NN_NETWORK_H_
#define DISTILLERY_COMMON_NN_NETWORK_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/nn/layer.h"
#include "common/nn/network_spec.h"
#include "common/nn/tiled_inference.h"
#include "common/tensor/dnnl_context.h"
#include "common/tensor/tensor.h"

namespace distillery {

class Network {
 public:
  // A network with weights and biases drawn uniformly from +-1/sqrt(fan_in)
  // (PyTorch's default for Linear and Conv2d) using `seed`, batch
  // normalization at scale 1 and shift 0; the same seed gives the same
  // weights on every machine. `seed` also keys the dropout masks.
  // InvalidArgument (naming the layer and the shapes) when a layer does not
  // fit the shape it gets, or the output is not a vector.
  static absl::StatusOr<std::unique_ptr<Network>> Create(const NetworkSpec& spec, uint64_t seed);

  const NetworkSpec& spec() const { return spec_; }
  // Values per example (the product of the input shape).
  int64_t input_size() const { return ShapeSize(spec_.input_shape); }
  const Shape& input_shape() const { return spec_.input_shape; }
  int64_t num_classes() const { return num_classes_; }
  // Weights plus biases (trainable values; not batch-norm statistics).
  int64_t ParameterCount() const { return parameter_count_; }
  // Multiply-adds of one example's forward pass in Linear and Conv2d layers.
  int64_t ForwardMacsPerExample() const { return forward_macs_; }
  // The shape each layer gives, per example (layer_shapes()[i] is layer i's).
  const std::vector<Shape>& layer_shapes() const { return layer_shapes_; }

  // Runs the network on `input` (batch x input_size values; any shape whose
  // 2-D reading is that, e.g. (batch, 784) or (batch, 1, 28, 28)) and points
  // `*logits` at the result (batch, num_classes), owned by the network and
  // valid until the next Forward. `input` must stay alive and unchanged
  // until Backward. `training` turns dropout on and makes batch
  // normalization use (and update) batch statistics; `noise_step` keys the
  // dropout masks.
  absl::Status Forward(const Tensor& input, bool training, uint64_t noise_step,
                       const Tensor** logits);
  // Batch-invariant inference: training off, run in tiles of
  // inference_tile_rows() rows (the last one padded), so that on a given
  // machine (instruction set, thread count) a row's logits depend on the
  // weights and that row only, not on the batch size or the other rows.
  // Points `*logits` at the result (batch, num_classes), owned by the
  // network and valid until the next Infer. The activations of the last
  // Forward (for Backward) are left alone.
  absl::Status Infer(const Tensor& input, const Tensor** logits);
  // The same as Infer (every inference path is batch-invariant).
  absl::Status Predict(const Tensor& input, const Tensor** logits) { return Infer(input, logits); }
  int64_t inference_tile_rows() const { return inference_.tile_rows(); }

  // Back-propagates d(loss)/d(logits) (batch x num_classes) through the last
  // Forward, overwriting every parameter's gradient.
  absl::Status Backward(const Tensor& grad_logits);

  // All trainable parameters in a fixed order (layer0.weight, layer0.bias,
  // layer1.weight, ...). Pointers stay valid for the network's lifetime.
  std::vector<Parameter*> Parameters();
  // All checkpointed non-trainable tensors (batch-norm running statistics),
  // in a fixed order.
  std::vector<Buffer> Buffers();

  // The arithmetic of the matrix products of Forward, Infer and Backward
  // (common/tensor/precision.h; f32 by default): in bf16 the fully connected
  // and convolution layers compute forward, backward-data and
  // backward-weights products in bf16 with f32 accumulation
  // (common/nn/layers/linear_layer.h, conv2d_layer.h), and in training the
  // image activations between convolutions, batch norms and poolings, and
  // their gradients, are bf16 (common/nn/layer.h); parameter gradients
  // stay f32, and every other layer computes in f32. bf16 copies of the
  // weights are made on the next Forward after Parameters() or Backward
  // (through which every change of weights goes: the optimizer and
  // checkpoint loading hold what Parameters() gave).
  void SetPrecision(Precision precision);
  Precision precision() const { return precision_; }

  // For tests and logs: the element type of layer i's output in the last
  // Forward (not Infer; a skipped ReLU's is its input's); f32 before any.
  DataType ForwardOutputType(size_t i) const {
    return i < outputs_.size() && outputs_[i] != nullptr ? outputs_[i]->dtype() : DataType::kF32;
  }

  // A deep copy with the same weights, buffers and precision (fresh
  // primitives).
  absl::StatusOr<std::unique_ptr<Network>> Clone() const;

  // One line per layer, for logs.
  std::string Describe() const;

 private:
  Network(const NetworkSpec& spec, uint64_t seed);
  absl::Status BuildLayers();
  // `input` read in the network's shape (batch, input_shape...): `input`
  // itself when it has that shape, else a copy of it in `scratch`.
  absl::StatusOr<const Tensor*> Shaped(const Tensor& input, Tensor* scratch) const;
  void InitializeParameters();

  // Tells every layer that its parameters may change.
  void MarkParametersChanged();

  NetworkSpec spec_;
  uint64_t seed_;
  Precision precision_ = Precision::kF32;
  std::unique_ptr<DnnlContext> context_;
  std::vector<std::unique_ptr<Layer>> layers_;
  std::vector<Shape> layer_shapes_;
  int64_t num_classes_ = 0;
  int64_t parameter_count_ = 0;
  int64_t forward_macs_ = 0;
  size_t first_trainable_ = 0;       // index in layers_ of the first layer with parameters
  const Tensor* input_ = nullptr;    // the last Forward's input, not owned
  Tensor shaped_input_;              // a copy of it, when its shape was another reading
  std::vector<Tensor> activations_;  // activations_[i] is layer i's output
  // Layers skipped in every pass: ReLUs that the layer before applies
  // (Layer::SetFusedRelu). outputs_[i] is layer i's output from the last
  // Forward: &activations_[i], or a skipped layer's input.
  std::vector<bool> fused_away_;
  std::vector<const Tensor*> outputs_;
  std::vector<Tensor> gradients_;  // scratch for back-propagation
  // Plain copies of blocked activations for layers that take only plain
  // tensors, and the tensor each layer's last Forward was given (its input
  // or that copy): common/nn/layout_bridge.h.
  std::vector<Tensor> plain_inputs_;
  std::vector<const Tensor*> seen_inputs_;
  Tensor grad_scratch_;  // a plain gradient before its conversion
  TiledInference inference_;
  Tensor inference_input_;   // Infer's input in the network's shape, when copied
  Tensor inference_logits_;  // Infer's result
};

}  // namespace distillery

#endif  // DISTILLERY_COMMON_NN_NETWORK_H_
