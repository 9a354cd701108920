// The interface every layer implements, and the trainable parameter type.
//
// A layer maps a (batch x in_features) matrix to a (batch x out_features)
// matrix. Backward receives the same input and output the last Forward saw,
// plus d(loss)/d(output), and produces d(loss)/d(input) while *overwriting*
// the gradients of its parameters (one Backward per Forward; no accumulation).
//
// Thread-safety: a layer keeps per-batch-size oneDNN primitives and scratch
// buffers, so one layer is used by one thread at a time.
#ifndef DISTILLERY_COMMON_LAYER_H_
#define DISTILLERY_COMMON_LAYER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/matrix.h"

namespace distillery {

// A trainable tensor and its gradient, of the same shape.
struct Parameter {
  std::string name;       // e.g. "layer0.weight"; stable, used in checkpoints
  Matrix value;           // weights are (out_features x in_features), biases (1 x out)
  Matrix grad;            // d(loss)/d(value) from the last Backward
  bool max_norm_applies;  // true for hidden layers' weights: rows get clipped to a max L2 norm
};

class Layer {
 public:
  virtual ~Layer() = default;

  // A short description, e.g. "Linear(784->1200)".
  virtual std::string Describe() const = 0;

  // Computes `output` (resized here) from `input`. When `training` is false,
  // stochastic layers (dropout) are the identity.
  virtual absl::Status Forward(const Matrix& input, bool training, Matrix* output) = 0;

  // Given the `input` and `output` of the last Forward and `grad_output`,
  // writes d(loss)/d(input) into `grad_input` (resized here) unless it is
  // null, and overwrites the parameters' gradients.
  virtual absl::Status Backward(const Matrix& input, const Matrix& output,
                                const Matrix& grad_output, Matrix* grad_input) = 0;

  // The layer's trainable parameters, owned by the layer. Empty by default.
  virtual std::vector<Parameter*> Parameters() { return {}; }

  // Sets the step number that seeds the layer's randomness (dropout masks)
  // for the next Forward, so that a run resumed at step s draws the same
  // masks as an uninterrupted one. No-op for deterministic layers.
  virtual void SetNoiseStep(uint64_t /*step*/) {}
};

}  // namespace distillery

#endif  // DISTILLERY_COMMON_LAYER_H_
