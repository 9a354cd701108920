#include "common/nn/optimizer.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace distillery {
namespace {

constexpr double kPi = 3.14159265358979323846;

// Rescales one row of n weights, whose squared L2 norm is `squared`, to norm
// `max_norm` if it is longer.
inline void ClipRow(float max_norm, float squared, float* row, int64_t n) {
  if (squared > max_norm * max_norm) {
    const float scale = max_norm / std::sqrt(squared);
    for (int64_t c = 0; c < n; ++c) row[c] *= scale;
  }
}

// One row of SGD: d <- momentum d - rate g; w <- w + d. Returns the squared
// norm of the updated row. Compiled for several instruction sets.
__attribute__((target_clones("avx512f", "avx2", "default"))) float SgdRow(
    float* __restrict__ w, float* __restrict__ d, const float* __restrict__ g, int64_t n,
    float momentum, float rate, float decay) {
  float squared = 0;
#pragma omp simd reduction(+ : squared)
  for (int64_t c = 0; c < n; ++c) {
    d[c] = momentum * d[c] - rate * (g[c] + decay * w[c]);
    w[c] += d[c];
    squared += w[c] * w[c];
  }
  return squared;
}

// One row of Adam with bias-corrected moments. Compiled for several
// instruction sets.
__attribute__((target_clones("avx512f", "avx2", "default"))) void AdamRow(
    float* __restrict__ w, float* __restrict__ m, float* __restrict__ v,
    const float* __restrict__ g, int64_t n, float b1, float b2, float step_size,
    float inverse_sqrt_c2, float eps, float decay) {
  for (int64_t c = 0; c < n; ++c) {
    const float gc = g[c] + decay * w[c];
    m[c] = b1 * m[c] + (1.f - b1) * gc;
    v[c] = b2 * v[c] + (1.f - b2) * gc * gc;
    w[c] -= step_size * m[c] / (std::sqrt(v[c]) * inverse_sqrt_c2 + eps);
  }
}

inline float SquaredNorm(const float* row, int64_t n) {
  float squared = 0;
#pragma omp simd reduction(+ : squared)
  for (int64_t c = 0; c < n; ++c) squared += row[c] * row[c];
  return squared;
}

// Matrices keyed by parameter name, created on first use with the
// parameter's shape and zero-filled.
class SlotStore {
 public:
  Tensor& Get(const std::string& key, const Tensor& like) {
    auto it = slots_.find(key);
    if (it == slots_.end()) it = slots_.emplace(key, Tensor(like.shape())).first;
    return it->second;
  }
  void Replace(std::map<std::string, Tensor> slots) { slots_ = std::move(slots); }
  std::map<std::string, Tensor*> All() {
    std::map<std::string, Tensor*> all;
    for (auto& [key, matrix] : slots_) all[key] = &matrix;
    return all;
  }

 private:
  std::map<std::string, Tensor> slots_;
};

class Sgd : public Optimizer {
 public:
  explicit Sgd(const SgdConfig& config) : config_(config) {}

  void Step(const std::vector<Parameter*>& params, float learning_rate, int64_t step) override {
    const float momentum = MomentumAt(config_, step);
    const float rate = config_.dampened ? (1.f - momentum) * learning_rate : learning_rate;
    for (Parameter* p : params) {
      Tensor& velocity = slots_.Get(p->name + ".velocity", p->value);
      const int64_t rows = p->value.rows(), cols = p->value.cols();
      const bool clip = p->max_norm_applies && config_.max_norm > 0.f;
      const float decay = p->weight_decay_applies ? config_.weight_decay : 0.f;
#pragma omp parallel for schedule(static)
      for (int64_t r = 0; r < rows; ++r) {
        float* w = p->value.row(r);
        const float squared =
            SgdRow(w, velocity.row(r), p->grad.row(r), cols, momentum, rate, decay);
        if (clip) ClipRow(config_.max_norm, squared, w, cols);
      }
    }
  }
  std::map<std::string, Tensor*> State() override { return slots_.All(); }
  void RestoreState(std::map<std::string, Tensor> state) override {
    slots_.Replace(std::move(state));
  }
  std::string Describe() const override {
    return absl::StrCat(
        "SGD(momentum ", config_.momentum_start, "->", config_.momentum_end, " over ",
        config_.momentum_ramp_steps, " steps", config_.dampened ? ", dampened" : "", ", max-norm ",
        config_.max_norm,
        config_.weight_decay > 0.f ? absl::StrCat(", weight decay ", config_.weight_decay) : "",
        ")");
  }

 private:
  SgdConfig config_;
  SlotStore slots_;
};

class Adam : public Optimizer {
 public:
  explicit Adam(const AdamConfig& config) : config_(config) {}

  void Step(const std::vector<Parameter*>& params, float learning_rate, int64_t step) override {
    const double t = static_cast<double>(step + 1);
    const float correction1 = static_cast<float>(1.0 - std::pow(config_.beta1, t));
    const float correction2 = static_cast<float>(1.0 - std::pow(config_.beta2, t));
    const float step_size = learning_rate / correction1;
    const float inverse_sqrt_c2 = 1.f / std::sqrt(correction2);
    const float b1 = config_.beta1, b2 = config_.beta2, eps = config_.epsilon;
    for (Parameter* p : params) {
      Tensor& m = slots_.Get(p->name + ".adam_m", p->value);
      Tensor& v = slots_.Get(p->name + ".adam_v", p->value);
      const int64_t rows = p->value.rows(), cols = p->value.cols();
      const bool clip = p->max_norm_applies && config_.max_norm > 0.f;
      const float decay = p->weight_decay_applies ? config_.weight_decay : 0.f;
#pragma omp parallel for schedule(static)
      for (int64_t r = 0; r < rows; ++r) {
        float* w = p->value.row(r);
        AdamRow(w, m.row(r), v.row(r), p->grad.row(r), cols, b1, b2, step_size, inverse_sqrt_c2,
                eps, decay);
        if (clip) ClipRow(config_.max_norm, SquaredNorm(w, cols), w, cols);
      }
    }
  }
  std::map<std::string, Tensor*> State() override { return slots_.All(); }
  void RestoreState(std::map<std::string, Tensor> state) override {
    slots_.Replace(std::move(state));
  }
  std::string Describe() const override {
    return absl::StrCat(
        "Adam(beta1 ", config_.beta1, ", beta2 ", config_.beta2, ", max-norm ", config_.max_norm,
        config_.weight_decay > 0.f ? absl::StrCat(", weight decay ", config_.weight_decay) : "",
        ")");
  }

 private:
  AdamConfig config_;
  SlotStore slots_;
};

}  // namespace

float LearningRateSchedule::At(int64_t step, int64_t total_steps, int64_t steps_per_epoch) const {
  if (warmup_steps > 0 && step < warmup_steps) {
    return base * static_cast<float>(step + 1) / static_cast<float>(warmup_steps);
  }
  switch (kind) {
    case Kind::kConstant:
      return base;
    case Kind::kStep: {
      const int64_t epoch = steps_per_epoch > 0 ? step / steps_per_epoch : 0;
      const int64_t drops = step_every_epochs > 0 ? epoch / step_every_epochs : 0;
      return base * static_cast<float>(std::pow(step_gamma, static_cast<double>(drops)));
    }
    case Kind::kCosine: {
      const int64_t span = std::max<int64_t>(1, total_steps - warmup_steps);
      const double progress = std::clamp(
          static_cast<double>(step - warmup_steps) / static_cast<double>(span), 0.0, 1.0);
      const double floor = base * final_fraction;
      return static_cast<float>(floor + (base - floor) * 0.5 * (1.0 + std::cos(kPi * progress)));
    }
  }
  return base;
}

absl::StatusOr<LearningRateSchedule::Kind> LearningRateSchedule::ParseKind(
    const std::string& name) {
  if (name == "constant") return Kind::kConstant;
  if (name == "cosine") return Kind::kCosine;
  if (name == "step") return Kind::kStep;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown learning-rate schedule \"", name, "\" (constant, cosine or step)"));
}

float MomentumAt(const SgdConfig& config, int64_t step) {
  if (config.momentum_ramp_steps <= 0 || step >= config.momentum_ramp_steps) {
    return config.momentum_end;
  }
  const float progress = static_cast<float>(step) / static_cast<float>(config.momentum_ramp_steps);
  return config.momentum_start + (config.momentum_end - config.momentum_start) * progress;
}

void ApplyMaxNorm(float max_norm, Tensor* weights) {
  for (int64_t r = 0; r < weights->rows(); ++r) {
    ClipRow(max_norm, SquaredNorm(weights->row(r), weights->cols()), weights->row(r),
            weights->cols());
  }
}

std::unique_ptr<Optimizer> MakeSgd(const SgdConfig& config) {
  return std::make_unique<Sgd>(config);
}
std::unique_ptr<Optimizer> MakeAdam(const AdamConfig& config) {
  return std::make_unique<Adam>(config);
}

}  // namespace distillery
