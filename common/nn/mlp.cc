#include "common/nn/mlp.h"

#include <cmath>
#include <random>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/nn/layers/dropout_layer.h"
#include "common/nn/layers/relu_layer.h"
#include "common/util/random.h"

namespace distillery {

absl::StatusOr<MlpSpec> MlpSpec::Parse(const std::string& text) {
  MlpSpec spec;
  for (absl::string_view part : absl::StrSplit(text, '-')) {
    int64_t size = 0;
    if (!absl::SimpleAtoi(part, &size)) {
      return absl::InvalidArgumentError(
          absl::StrCat("architecture \"", text, "\": \"", part, "\" is not a layer size"));
    }
    spec.layer_sizes.push_back(size);
  }
  if (absl::Status s = spec.Validate(); !s.ok()) return s;
  return spec;
}

absl::Status MlpSpec::Validate() const {
  const std::string arch = ArchitectureString();
  if (layer_sizes.size() < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("architecture \"", arch, "\" needs at least an input and an output size"));
  }
  for (int64_t size : layer_sizes) {
    if (size < 1 || size > 65536) {
      return absl::InvalidArgumentError(
          absl::StrCat("architecture \"", arch, "\": layer size ", size, " is not in [1, 65536]"));
    }
  }
  if (!(input_dropout >= 0.f && input_dropout < 1.f) ||
      !(hidden_dropout >= 0.f && hidden_dropout < 1.f)) {
    return absl::InvalidArgumentError(absl::StrCat("dropout rates must be in [0, 1), got input ",
                                                   input_dropout, " and hidden ", hidden_dropout));
  }
  return absl::OkStatus();
}

std::string MlpSpec::ArchitectureString() const { return absl::StrJoin(layer_sizes, "-"); }

int64_t MlpSpec::ParameterCount() const {
  int64_t count = 0;
  for (size_t i = 0; i + 1 < layer_sizes.size(); ++i) {
    count += layer_sizes[i] * layer_sizes[i + 1] + layer_sizes[i + 1];
  }
  return count;
}

int64_t MlpSpec::ForwardMacsPerExample() const {
  int64_t macs = 0;
  for (size_t i = 0; i + 1 < layer_sizes.size(); ++i) macs += layer_sizes[i] * layer_sizes[i + 1];
  return macs;
}

Mlp::Mlp(const MlpSpec& spec, uint64_t seed)
    : spec_(spec), seed_(seed), context_(std::make_unique<DnnlContext>()) {
  const size_t num_linear = spec.layer_sizes.size() - 1;
  if (spec.input_dropout > 0.f) {
    layers_.push_back(std::make_unique<DropoutLayer>(spec.input_dropout, HashCombine(seed, 1000)));
  }
  for (size_t i = 0; i < num_linear; ++i) {
    const bool hidden = i + 1 < num_linear;
    if (i == 0) first_linear_ = layers_.size();
    auto linear = std::make_unique<LinearLayer>(static_cast<int>(i), spec.layer_sizes[i],
                                                spec.layer_sizes[i + 1], hidden, context_.get());
    linear_layers_.push_back(linear.get());
    layers_.push_back(std::move(linear));
    if (hidden) {
      layers_.push_back(std::make_unique<ReluLayer>(context_.get()));
      if (spec.hidden_dropout > 0.f) {
        layers_.push_back(
            std::make_unique<DropoutLayer>(spec.hidden_dropout, HashCombine(seed, 1001 + i)));
      }
    }
  }
  activations_.resize(layers_.size());
  gradients_.resize(2);
}

absl::StatusOr<std::unique_ptr<Mlp>> Mlp::Create(const MlpSpec& spec, uint64_t seed) {
  if (absl::Status s = spec.Validate(); !s.ok()) return s;
  std::unique_ptr<Mlp> mlp;
  try {
    mlp.reset(new Mlp(spec, seed));
  } catch (const dnnl::error& e) {
    return DnnlErrorToStatus("creating the CPU engine", e);
  }
  std::mt19937_64 rng(HashCombine(seed, 7));
  for (LinearLayer* linear : mlp->linear_layers_) {
    const float bound = 1.f / std::sqrt(static_cast<float>(linear->in_features()));
    for (Parameter* p : linear->Parameters()) {
      float* v = p->value.data();
      for (int64_t i = 0; i < p->value.size(); ++i) v[i] = (2.f * UnitFloat(rng()) - 1.f) * bound;
    }
  }
  return mlp;
}

absl::Status Mlp::Forward(const Tensor& input, bool training, uint64_t noise_step,
                          const Tensor** logits) {
  if (input.cols() != input_size()) {
    return absl::InvalidArgumentError(absl::StrCat("network ", spec_.ArchitectureString(),
                                                   " takes ", input_size(),
                                                   " inputs per example, got ", input.cols()));
  }
  input_ = &input;
  const Tensor* current = &input;
  for (size_t i = 0; i < layers_.size(); ++i) {
    if (training) layers_[i]->SetNoiseStep(noise_step);
    if (absl::Status s = layers_[i]->Forward(*current, training, &activations_[i]); !s.ok()) {
      return s;
    }
    current = &activations_[i];
  }
  *logits = current;
  return absl::OkStatus();
}

absl::Status Mlp::Infer(const Tensor& input, const Tensor** logits) {
  if (input.cols() != input_size()) {
    return absl::InvalidArgumentError(absl::StrCat("network ", spec_.ArchitectureString(),
                                                   " takes ", input_size(),
                                                   " inputs per example, got ", input.cols()));
  }
  if (absl::Status s = inference_.Run(layers_, input, &inference_logits_); !s.ok()) return s;
  *logits = &inference_logits_;
  return absl::OkStatus();
}

absl::Status Mlp::Backward(const Tensor& grad_logits) {
  if (input_ == nullptr) return absl::FailedPreconditionError("Backward called before Forward");
  const Tensor* grad_output = &grad_logits;
  // Layers before the first Linear have no parameters, and nothing needs the
  // gradient of the input: stop there and skip the first Linear's data pass.
  for (size_t i = layers_.size(); i-- > first_linear_;) {
    const Tensor& layer_input = i == 0 ? *input_ : activations_[i - 1];
    Tensor* grad_input = i == first_linear_ ? nullptr : &gradients_[i % 2];
    if (absl::Status s =
            layers_[i]->Backward(layer_input, activations_[i], *grad_output, grad_input);
        !s.ok()) {
      return s;
    }
    grad_output = grad_input;
  }
  return absl::OkStatus();
}

std::vector<Parameter*> Mlp::Parameters() {
  std::vector<Parameter*> params;
  for (LinearLayer* linear : linear_layers_) {
    for (Parameter* p : linear->Parameters()) params.push_back(p);
  }
  return params;
}

absl::StatusOr<std::unique_ptr<Mlp>> Mlp::Clone() const {
  absl::StatusOr<std::unique_ptr<Mlp>> copy = Create(spec_, seed_);
  if (!copy.ok()) return copy.status();
  for (size_t i = 0; i < linear_layers_.size(); ++i) {
    (*copy)->linear_layers_[i]->weight().value = linear_layers_[i]->weight().value;
    (*copy)->linear_layers_[i]->bias().value = linear_layers_[i]->bias().value;
  }
  return copy;
}

std::string Mlp::Describe() const {
  std::vector<std::string> parts;
  for (const auto& layer : layers_) parts.push_back(layer->Describe());
  return absl::StrJoin(parts, " -> ");
}

}  // namespace distillery
