// Optimizers and learning-rate schedules.
//
// Every optimizer applies the max-norm constraint of Srivastava et al. (2014)
// in the same pass as the update: after a weight row (one unit's incoming
// weights) is updated, it is rescaled to L2 norm `max_norm` if it is longer.
// Only parameters flagged `max_norm_applies` (hidden layers' weights) are
// constrained; the output layer and biases never are.
//
// Thread-safety: one optimizer per network, used by one thread (the update
// itself is parallel over rows with OpenMP).
#ifndef DISTILLERY_COMMON_NN_OPTIMIZER_H_
#define DISTILLERY_COMMON_NN_OPTIMIZER_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/nn/layer.h"
#include "common/tensor/tensor.h"

namespace distillery {

// How the learning rate moves over training, per step.
struct LearningRateSchedule {
  enum class Kind { kConstant, kCosine, kStep };
  // Peak learning rate (after warm-up).
  float base = 0.1f;
  // kConstant: base throughout; kCosine: from base down to base*final_fraction
  // along a half cosine over all steps after warm-up; kStep: multiplied by
  // step_gamma every step_every_epochs epochs.
  Kind kind = Kind::kCosine;
  // Floor of the cosine, as a fraction of base.
  float final_fraction = 0.f;
  // Linear warm-up from 0 to base over this many steps (0 = none).
  int64_t warmup_steps = 0;
  // kStep only.
  float step_gamma = 0.1f;
  int64_t step_every_epochs = 30;

  // The rate for `step` (0-based) of `total_steps`, with `steps_per_epoch`.
  float At(int64_t step, int64_t total_steps, int64_t steps_per_epoch) const;

  // Parses "constant", "cosine" or "step".
  static absl::StatusOr<Kind> ParseKind(const std::string& name);
};

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  // Updates every parameter from its gradient at learning rate
  // `learning_rate`; `step` is the 0-based update count (for momentum ramps
  // and Adam's bias correction).
  virtual void Step(const std::vector<Parameter*>& params, float learning_rate, int64_t step) = 0;
  // The optimizer's state tensors by name, for checkpoints. Pointers stay
  // valid until the next Step on new parameters.
  virtual std::map<std::string, Tensor*> State() = 0;
  // Replaces the state with `state` (as State() returned it, e.g. from a
  // checkpoint), so that training continues exactly where it stopped.
  virtual void RestoreState(std::map<std::string, Tensor> state) = 0;
  virtual std::string Describe() const = 0;
};

struct SgdConfig {
  // Momentum ramps linearly per step from momentum_start to momentum_end over
  // momentum_ramp_steps steps (0 = momentum_end from the start).
  float momentum_start = 0.9f;
  float momentum_end = 0.9f;
  int64_t momentum_ramp_steps = 0;
  // false: d <- p d - lr g (PyTorch's SGD with momentum, lr as given).
  // true:  d <- p d - (1 - p) lr g, the form of the dropout papers, which keeps
  //        the step size steady while the momentum ramps.
  bool dampened = false;
  // Max L2 norm of each hidden unit's incoming weights (0 = unconstrained).
  float max_norm = 0.f;
  // L2 weight decay: g <- g + weight_decay * w for the weights it applies
  // to (Parameter::weight_decay_applies: not biases or batch-norm terms).
  float weight_decay = 0.f;
};

struct AdamConfig {
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float epsilon = 1e-8f;
  // As in SgdConfig (L2 added to the gradient, PyTorch's Adam weight_decay).
  float max_norm = 0.f;
  float weight_decay = 0.f;
};

// Stochastic gradient descent with momentum: d <- p d - lr' g; w <- w + d.
std::unique_ptr<Optimizer> MakeSgd(const SgdConfig& config);
// Adam (Kingma & Ba 2015) with bias correction.
std::unique_ptr<Optimizer> MakeAdam(const AdamConfig& config);

// The momentum an SgdConfig gives at `step`.
float MomentumAt(const SgdConfig& config, int64_t step);

// Rescales each row of `weights` whose L2 norm exceeds `max_norm` to that
// norm. Exposed for tests; the optimizers fuse it into their update.
void ApplyMaxNorm(float max_norm, Tensor* weights);

}  // namespace distillery

#endif  // DISTILLERY_COMMON_NN_OPTIMIZER_H_
