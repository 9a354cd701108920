// Inverted dropout (Srivastava et al. 2014): in training each unit is kept
// with probability 1 - rate and scaled by 1 / (1 - rate), so evaluation is
// the identity.
//   output = input * mask,  mask_ij in {0, 1/(1-rate)}
//   dL/dinput = dL/doutput * mask
// oneDNN 2.6 has no dropout primitive, so this one is written by hand. The
// mask is a pure function of (seed, noise step, element index), hashed
// (common/random.h): the same on any thread count and CPU, and reproducible
// after a resume.
#ifndef DISTILLERY_COMMON_NN_LAYERS_DROPOUT_LAYER_H_
#define DISTILLERY_COMMON_NN_LAYERS_DROPOUT_LAYER_H_

#include "common/nn/layer.h"

namespace distillery {

class DropoutLayer : public Layer {
 public:
  // `rate` in [0, 1) is the probability of dropping a unit.
  DropoutLayer(float rate, uint64_t seed) : rate_(rate), seed_(seed) {}

  std::string Describe() const override;
  // Any shape; the output has the input's shape.
  absl::StatusOr<Shape> OutputShape(const Shape& example_shape) const override {
    return example_shape;
  }
  absl::Status Forward(const Tensor& input, bool training, Tensor* output) override;
  absl::Status Backward(const Tensor& input, const Tensor& output, const Tensor& grad_output,
                        Tensor* grad_input) override;
  void SetNoiseStep(uint64_t step) override { step_ = step; }
  bool IdentityInInference() const override { return true; }

  float rate() const { return rate_; }

 private:
  float rate_;
  uint64_t seed_;
  uint64_t step_ = 0;
  bool last_forward_was_training_ = false;
  Tensor mask_;  // scale per element from the last training Forward
};

}  // namespace distillery

#endif  // DISTILLERY_COMMON_NN_LAYERS_DROPOUT_LAYER_H_
