// A multilayer perceptron of any depth and width: the network type of both
// the teacher and the students.
//
//   input (batch x sizes[0])
//   -> [Dropout(input_dropout)] -> Linear -> ReLU -> [Dropout(hidden_dropout)]
//   -> ... -> Linear -> logits (batch x sizes.back())
//
// Inference (Infer, Predict) runs in fixed tiles of TiledInference's rows
// (common/nn/tiled_inference.h), so that an example's logits do not depend
// on the batch it is in; training (Forward, Backward) runs the batch whole.
//
// Thread-safety: an Mlp keeps its activations between Forward and Backward,
// so it is used by one thread at a time. Forward-only users on several
// threads each need their own copy (Clone()).
#ifndef DISTILLERY_COMMON_NN_MLP_H_
#define DISTILLERY_COMMON_NN_MLP_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/nn/layer.h"
#include "common/nn/layers/linear_layer.h"
#include "common/nn/tiled_inference.h"
#include "common/tensor/dnnl_context.h"
#include "common/tensor/tensor.h"

namespace distillery {

// The architecture of an Mlp.
struct MlpSpec {
  // Units per layer, input first and classes last, e.g. {784, 1200, 1200, 10}.
  std::vector<int64_t> layer_sizes;
  // Probability of dropping an input unit in training (0 = no input dropout).
  float input_dropout = 0.f;
  // Probability of dropping a hidden unit in training (0 = no dropout).
  float hidden_dropout = 0.f;

  // Parses "784-1200-1200-10". InvalidArgument unless there are at least two
  // sizes, each a positive integer of at most 65536.
  static absl::StatusOr<MlpSpec> Parse(const std::string& text);
  // "784-1200-1200-10".
  std::string ArchitectureString() const;
  // Weights plus biases.
  int64_t ParameterCount() const;
  // Multiply-adds of one example's forward pass.
  int64_t ForwardMacsPerExample() const;
  // InvalidArgument when sizes or dropout rates are out of range.
  absl::Status Validate() const;
};

class Mlp {
 public:
  // A network with weights and biases drawn uniformly from
  // +-1/sqrt(fan_in) (PyTorch's default for Linear) using `seed`; the same
  // seed gives the same weights on every machine. `seed` also keys the
  // dropout masks.
  static absl::StatusOr<std::unique_ptr<Mlp>> Create(const MlpSpec& spec, uint64_t seed);

  const MlpSpec& spec() const { return spec_; }
  int64_t input_size() const { return spec_.layer_sizes.front(); }
  int64_t num_classes() const { return spec_.layer_sizes.back(); }

  // Runs the network on `input` (batch x input_size) and points `*logits` at
  // the result (batch x num_classes), owned by the network and valid until
  // the next Forward. `input` must stay alive and unchanged until Backward.
  // `training` turns dropout on; `noise_step` keys its masks.
  absl::Status Forward(const Tensor& input, bool training, uint64_t noise_step,
                       const Tensor** logits);
  // Batch-invariant inference: training off, run in tiles of
  // inference_tile_rows() rows (the last one padded), so that on a given
  // machine (instruction set, thread count) a row's logits depend on the
  // weights and that row only, not on the batch size or the other rows.
  // Points `*logits` at the result (batch x num_classes), owned by the
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

  // A deep copy with the same weights (fresh primitives and buffers).
  absl::StatusOr<std::unique_ptr<Mlp>> Clone() const;

  // One line per layer, for logs.
  std::string Describe() const;

 private:
  Mlp(const MlpSpec& spec, uint64_t seed);

  MlpSpec spec_;
  uint64_t seed_;
  std::unique_ptr<DnnlContext> context_;
  std::vector<std::unique_ptr<Layer>> layers_;
  std::vector<LinearLayer*> linear_layers_;
  size_t first_linear_ = 0;          // index in layers_ of the first Linear
  const Tensor* input_ = nullptr;    // the last Forward's input, not owned
  std::vector<Tensor> activations_;  // activations_[i] is layer i's output
  std::vector<Tensor> gradients_;    // scratch for back-propagation
  TiledInference inference_;
  Tensor inference_logits_;  // Infer's result
};

}  // namespace distillery

#endif  // DISTILLERY_COMMON_NN_MLP_H_
