#include "common/nn/network.h"

#include <cmath>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/nn/layer_factory.h"
#include "common/nn/layout_bridge.h"
#include "common/util/random.h"
#include "common/util/status_macros.h"

namespace distillery {

using Kind = LayerSpec::Kind;

Network::Network(const NetworkSpec& spec, uint64_t seed)
    : spec_(spec), seed_(seed), context_(std::make_unique<DnnlContext>()) {}

absl::Status Network::BuildLayers() {
  Shape shape = spec_.input_shape;
  int parameter_index = 0;
  first_trainable_ = spec_.layers.size();
  for (size_t i = 0; i < spec_.layers.size(); ++i) {
    const LayerSpec& layer_spec = spec_.layers[i];
    const int64_t count = LayerParameterCount(layer_spec, shape);
    if (count < 0 || count > kMaxNetworkParameters - parameter_count_) {
      return absl::InvalidArgumentError(absl::StrCat(
          "architecture \"", spec_.ArchitectureString(), "\" has more than ", kMaxNetworkParameters,
          " parameters (at layer ", i + 1, ", ", layer_spec.Token(), ")"));
    }
    ASSIGN_OR_RETURN(std::unique_ptr<Layer> layer,
                     MakeLayer(layer_spec, parameter_index, shape, seed_, context_.get()));
    absl::StatusOr<Shape> next = layer->OutputShape(shape);
    if (!next.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("architecture \"", spec_.ArchitectureString(),
                                                     "\", layer ", i + 1, " (", layer_spec.Token(),
                                                     "): ", next.status().message()));
    }
    forward_macs_ += LayerMacsPerExample(layer_spec, shape, *next);
    if (!layer->Parameters().empty()) {
      ++parameter_index;
      if (first_trainable_ == spec_.layers.size()) first_trainable_ = i;
      for (Parameter* p : layer->Parameters()) parameter_count_ += p->value.size();
    }
    shape = *next;
    layer_shapes_.push_back(shape);
    layers_.push_back(std::move(layer));
  }
  if (layers_.empty() || shape.size() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("architecture \"", spec_.ArchitectureString(), "\" gives ", ShapeString(shape),
                     " per example, not a vector of classes: end it with fc:<classes>"));
  }
  num_classes_ = shape[0];
  // Image activations stay channel-blocked from a convolution on through
  // the layers that take them (common/nn/layer.h).
  for (size_t i = 0; i + 1 < layers_.size(); ++i) {
    layers_[i]->AllowBlockedOutput(layers_[i + 1]->TakesBlocked());
  }
  // A ReLU that the layer before it applies itself is skipped in every pass.
  fused_away_.assign(layers_.size(), false);
  for (size_t i = 0; i + 1 < layers_.size(); ++i) {
    if (layers_[i + 1]->IsRelu() && layers_[i]->SetFusedRelu(true)) {
      fused_away_[i + 1] = true;
    }
  }
  outputs_.assign(layers_.size(), nullptr);
  activations_.resize(layers_.size());
  plain_inputs_.resize(layers_.size());
  seen_inputs_.assign(layers_.size(), nullptr);
  gradients_.resize(2);
  return absl::OkStatus();
}

void Network::InitializeParameters() {
  std::mt19937_64 rng(HashCombine(seed_, 7));
  for (size_t i = 0; i < layers_.size(); ++i) {
    const LayerSpec& layer_spec = spec_.layers[i];
    if (layer_spec.kind != Kind::kLinear && layer_spec.kind != Kind::kConv2d) continue;
    std::vector<Parameter*> params = layers_[i]->Parameters();
    // fan_in: the weight's elements per output unit (its 2-D reading).
    const float bound = 1.f / std::sqrt(static_cast<float>(params[0]->value.cols()));
    for (Parameter* p : params) {
      float* v = p->value.data();
      for (int64_t j = 0; j < p->value.size(); ++j) v[j] = (2.f * UnitFloat(rng()) - 1.f) * bound;
    }
  }
}

absl::StatusOr<std::unique_ptr<Network>> Network::Create(const NetworkSpec& spec, uint64_t seed) {
  if (spec.input_shape.empty() || ShapeSize(spec.input_shape) < 1) {
    return absl::InvalidArgumentError("the network's input shape is empty");
  }
  std::unique_ptr<Network> network;
  try {
    network.reset(new Network(spec, seed));
  } catch (const dnnl::error& e) {
    return DnnlErrorToStatus("creating the CPU engine", e);
  }
  RETURN_IF_ERROR(network->BuildLayers());
  network->InitializeParameters();
  return network;
}

absl::StatusOr<const Tensor*> Network::Shaped(const Tensor& input, Tensor* scratch) const {
  if (input.cols() != input_size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "network ", spec_.ArchitectureString(), " takes ", input_size(), " inputs per example (",
        ShapeString(spec_.input_shape), "), got ", input.cols()));
  }
  // Layers see the input in the network's shape: (batch, channels, rows,
  // cols) for images, whatever 2-D or 4-D reading the caller gave.
  Shape shape = {input.rows()};
  shape.insert(shape.end(), spec_.input_shape.begin(), spec_.input_shape.end());
  if (input.shape() == shape) return &input;
  *scratch = input;
  scratch->Reinterpret(shape);
  return scratch;
}

absl::Status Network::Infer(const Tensor& input, const Tensor** logits) {
  ASSIGN_OR_RETURN(const Tensor* shaped, Shaped(input, &inference_input_));
  RETURN_IF_ERROR(inference_.Run(layers_, *shaped, context_.get(), &inference_logits_));
  *logits = &inference_logits_;
  return absl::OkStatus();
}

absl::Status Network::Forward(const Tensor& input, bool training, uint64_t noise_step,
                              const Tensor** logits) {
  ASSIGN_OR_RETURN(input_, Shaped(input, &shaped_input_));
  const Tensor* current = input_;
  for (size_t i = 0; i < layers_.size(); ++i) {
    if (!fused_away_[i]) {
      if (training) layers_[i]->SetNoiseStep(noise_step);
      RETURN_IF_ERROR(ForwardInLayout(*layers_[i], *current, training, context_.get(),
                                      &plain_inputs_[i], &seen_inputs_[i], &activations_[i]));
      current = &activations_[i];
    }
    outputs_[i] = current;
  }
  *logits = current;
  return absl::OkStatus();
}

absl::Status Network::Backward(const Tensor& grad_logits) {
  if (input_ == nullptr) return absl::FailedPreconditionError("Backward called before Forward");
  const Tensor* grad_output = &grad_logits;
  size_t slot = 0;  // gradients_[slot] is free to write
  // Layers before the first trainable one have no parameters, and nothing
  // needs the gradient of the input: stop there and skip its data pass.
  // A fused-away ReLU's gradient is its producer's to apply.
  for (size_t i = layers_.size(); i-- > first_trainable_;) {
    if (fused_away_[i]) continue;
    const Tensor& layer_input = i == 0 ? *input_ : *outputs_[i - 1];
    Tensor* grad_input = i == first_trainable_ ? nullptr : &gradients_[slot];
    RETURN_IF_ERROR(BackwardInLayout(*layers_[i], layer_input, *seen_inputs_[i], activations_[i],
                                     *grad_output, context_.get(), &grad_scratch_, grad_input));
    grad_output = grad_input;
    slot ^= 1;
  }
  MarkParametersChanged();  // an optimizer step follows
  return absl::OkStatus();
}

void Network::SetPrecision(Precision precision) {
  precision_ = precision;
  for (const auto& layer : layers_) layer->SetPrecision(precision);
  // In bf16, a producer gives its training output in bf16 when the next
  // layer that runs takes it (common/nn/layer.h).
  for (size_t i = 0; i < layers_.size(); ++i) {
    size_t next = i + 1;
    while (next < layers_.size() && fused_away_[next]) ++next;
    const bool bf16 = precision == Precision::kBF16 && next < layers_.size() &&
                      layers_[next]->TakesBf16InTraining();
    layers_[i]->SetTrainingOutputBf16(bf16);
  }
}

void Network::MarkParametersChanged() {
  for (const auto& layer : layers_) layer->ParametersChanged();
}

std::vector<Parameter*> Network::Parameters() {
  MarkParametersChanged();  // the caller may write through the pointers
  std::vector<Parameter*> params;
  for (const auto& layer : layers_) {
    for (Parameter* p : layer->Parameters()) params.push_back(p);
  }
  return params;
}

std::vector<Buffer> Network::Buffers() {
  std::vector<Buffer> buffers;
  for (const auto& layer : layers_) {
    for (const Buffer& b : layer->Buffers()) buffers.push_back(b);
  }
  return buffers;
}

absl::StatusOr<std::unique_ptr<Network>> Network::Clone() const {
  ASSIGN_OR_RETURN(std::unique_ptr<Network> copy, Create(spec_, seed_));
  for (size_t i = 0; i < layers_.size(); ++i) {
    std::vector<Parameter*> from = layers_[i]->Parameters(), to = copy->layers_[i]->Parameters();
    for (size_t j = 0; j < from.size(); ++j) to[j]->value = from[j]->value;
    std::vector<Buffer> from_b = layers_[i]->Buffers(), to_b = copy->layers_[i]->Buffers();
    for (size_t j = 0; j < from_b.size(); ++j) *to_b[j].value = *from_b[j].value;
  }
  copy->SetPrecision(precision_);
  return copy;
}

std::string Network::Describe() const {
  std::vector<std::string> parts;
  for (const auto& layer : layers_) parts.push_back(layer->Describe());
  return absl::StrJoin(parts, " -> ");
}

}  // namespace distillery
