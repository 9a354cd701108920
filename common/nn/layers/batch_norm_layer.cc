#include "common/nn/layers/batch_norm_layer.h"

#include <cmath>
#include <unordered_map>

#include "absl/strings/str_cat.h"

namespace distillery {

using dnnl::memory;

BatchNormLayer::BatchNormLayer(int index, int64_t channels, DnnlContext* context)
    : channels_(channels), context_(context) {
  gamma_.name = absl::StrCat("layer", index, ".weight");
  gamma_.value = Tensor(1, channels);
  gamma_.value.Fill(1.f);
  gamma_.grad = Tensor(1, channels);
  gamma_.max_norm_applies = false;
  gamma_.weight_decay_applies = false;
  beta_.name = absl::StrCat("layer", index, ".bias");
  beta_.value = Tensor(1, channels);
  beta_.grad = Tensor(1, channels);
  beta_.max_norm_applies = false;
  beta_.weight_decay_applies = false;
  running_mean_name_ = absl::StrCat("layer", index, ".running_mean");
  running_var_name_ = absl::StrCat("layer", index, ".running_var");
  running_mean_ = Tensor(1, channels);
  running_var_ = Tensor(1, channels);
  running_var_.Fill(1.f);
  batch_mean_ = Tensor(1, channels);
  batch_var_ = Tensor(1, channels);
}

bool BatchNormLayer::InferenceAffine(Tensor* scale, Tensor* shift) const {
  scale->Reshape({1, channels_});
  shift->Reshape({1, channels_});
  for (int64_t c = 0; c < channels_; ++c) {
    const float s = gamma_.value.data()[c] / std::sqrt(running_var_.data()[c] + kEpsilon);
    scale->data()[c] = s;
    shift->data()[c] = beta_.value.data()[c] - running_mean_.data()[c] * s;
  }
  return true;
}

bool BatchNormLayer::SetFusedRelu(bool fuse) {
  if (fuse != fused_relu_) primitives_by_shape_.Clear();  // they compute something else
  fused_relu_ = fuse;
  return true;
}

std::string BatchNormLayer::Describe() const { return absl::StrCat("BatchNorm(", channels_, ")"); }

absl::StatusOr<Shape> BatchNormLayer::OutputShape(const Shape& example_shape) const {
  const bool fits = (example_shape.size() == 3 || example_shape.size() == 1) &&
                    example_shape[0] == channels_ && ShapeSize(example_shape) > 0;
  if (!fits) {
    return absl::InvalidArgumentError(absl::StrCat(Describe(), " takes examples of shape (",
                                                   channels_, ", rows, cols) or (", channels_,
                                                   "), got ", ShapeString(example_shape)));
  }
  return example_shape;
}

absl::Status BatchNormLayer::CheckInput(const char* what, const Tensor& input) const {
  if (input.rank() != 4 && input.rank() != 2) {
    return absl::InvalidArgumentError(absl::StrCat(Describe(), " ", what,
                                                   ": input must be (batch, C, rows, cols) or "
                                                   "(batch, C), got ",
                                                   ShapeString(input.shape())));
  }
  Shape example(input.shape().begin() + 1, input.shape().end());
  absl::Status s = OutputShape(example).status();
  if (!s.ok()) return s;
  if (input.dim(0) < 1) {
    return absl::InvalidArgumentError(absl::StrCat(Describe(), " ", what, ": empty batch"));
  }
  return absl::OkStatus();
}

void BatchNormLayer::Build(Kind kind, Primitives* entry) const {
  const dnnl::engine& engine = context_->engine();
  using flags = dnnl::normalization_flags;
  const flags affine =
      flags::use_scale | flags::use_shift | (fused_relu_ ? flags::fuse_norm_relu : flags::none);
  const flags global = affine | flags::use_global_stats;
  using ForwardPd = dnnl::batch_normalization_forward::primitive_desc;
  using BackwardPd = dnnl::batch_normalization_backward::primitive_desc;
  auto forward_pd = [&](dnnl::prop_kind prop, flags f) {
    return ForwardPd(dnnl::batch_normalization_forward::desc(prop, entry->data, kEpsilon, f),
                     engine);
  };
  auto backward = [&](flags f) {
    // The backward pass after an inference Forward, too, needs a
    // training-kind forward hint (with global statistics).
    return dnnl::batch_normalization_backward(
        BackwardPd(dnnl::batch_normalization_backward::desc(dnnl::prop_kind::backward, entry->data,
                                                            entry->data, kEpsilon, f),
                   engine, forward_pd(dnnl::prop_kind::forward_training, f)));
  };
  switch (kind) {
    case kForwardTraining: {
      const ForwardPd pd = forward_pd(dnnl::prop_kind::forward_training, affine);
      entry->workspace = pd.workspace_desc();
      entry->forward_training = dnnl::batch_normalization_forward(pd);
      break;
    }
    case kForwardInference: {
      // A fused ReLU's mask comes from the training kind only (see the header).
      const ForwardPd pd = forward_pd(
          fused_relu_ ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference,
          global);
      entry->workspace = pd.workspace_desc();
      entry->forward_inference = dnnl::batch_normalization_forward(pd);
      break;
    }
    case kBackwardTraining:
      entry->backward_training = backward(affine);
      break;
    case kBackwardInference:
      entry->backward_inference = backward(global);
      break;
    case kKinds:
      return;
  }
  entry->has[kind] = true;
}

absl::Status BatchNormLayer::GetPrimitives(const Tensor& input, Kind kind,
                                           Primitives** primitives) {
  const ShapeKey key = {input.dim(0), input.rank() == 4 ? input.dim(2) : 1,
                        input.rank() == 4 ? input.dim(3) : 1, static_cast<int64_t>(input.layout()),
                        static_cast<int64_t>(input.dtype())};
  Primitives* found = primitives_by_shape_.Find(key);
  if (found == nullptr || !found->has[kind]) {
    // Built in a copy (primitives are handles), so that a failure leaves the
    // entry as it was.
    Primitives built;
    if (found != nullptr) {
      built = *found;
    } else {
      built.data = TensorDesc({key[0], channels_, key[1], key[2]}, input.layout(), input.dtype());
      built.stats = PlainVectorDesc(channels_);
    }
    try {
      Build(kind, &built);
    } catch (const dnnl::error& e) {
      return DnnlErrorToStatus("building batch-normalization primitives", e);
    }
    if (!built.has[kind]) return absl::InternalError("BatchNormLayer: no such primitive");
    if (found == nullptr) {
      found = primitives_by_shape_.Insert(key, std::move(built));
    } else {
      *found = std::move(built);
    }
  }
  *primitives = found;
  return absl::OkStatus();
}

absl::Status BatchNormLayer::Forward(const Tensor& input, bool training, Tensor* output) {
  if (absl::Status s = CheckInput("Forward", input); !s.ok()) return s;
  const int64_t per_channel = input.size() / channels_;
  if (training && per_channel < 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        Describe(), " Forward: training needs more than one value per channel, got input ",
        ShapeString(input.shape())));
  }
  Primitives* p = nullptr;
  if (absl::Status s = GetPrimitives(input, training ? kForwardTraining : kForwardInference, &p);
      !s.ok()) {
    return s;
  }
  output->Reshape(input.shape(), input.dtype());
  output->SetLayout(input.layout());
  const dnnl::engine& engine = context_->engine();
  memory src(p->data, engine, const_cast<void*>(input.raw_data()));
  memory dst(p->data, engine, output->raw_data());
  memory scale(p->stats, engine, gamma_.value.data());
  memory shift(p->stats, engine, beta_.value.data());
  last_forward_training_ = training;
  Tensor& mean_tensor = training ? batch_mean_ : running_mean_;
  Tensor& var_tensor = training ? batch_var_ : running_var_;
  memory mean(p->stats, engine, mean_tensor.data());
  memory variance(p->stats, engine, var_tensor.data());
  std::unordered_map<int, memory> args = {{DNNL_ARG_SRC, src},     {DNNL_ARG_DST, dst},
                                          {DNNL_ARG_SCALE, scale}, {DNNL_ARG_SHIFT, shift},
                                          {DNNL_ARG_MEAN, mean},   {DNNL_ARG_VARIANCE, variance}};
  ForwardRecord& record = forwards_[training ? 1 : 0];
  record.output = output->raw_data();
  if (fused_relu_) {
    record.mask.resize(p->workspace.get_size());
    args.insert({DNNL_ARG_WORKSPACE, memory(p->workspace, engine, record.mask.data())});
  }
  if (!training) {
    return context_->Execute("batch-normalization forward (inference)", p->forward_inference, args);
  }
  if (absl::Status s =
          context_->Execute("batch-normalization forward (training)", p->forward_training, args);
      !s.ok()) {
    return s;
  }
  const float unbias = static_cast<float>(static_cast<double>(per_channel) / (per_channel - 1));
  for (int64_t c = 0; c < channels_; ++c) {
    float& rm = running_mean_.data()[c];
    float& rv = running_var_.data()[c];
    rm = (1.f - kMomentum) * rm + kMomentum * batch_mean_.data()[c];
    rv = (1.f - kMomentum) * rv + kMomentum * batch_var_.data()[c] * unbias;
  }
  return absl::OkStatus();
}

absl::Status BatchNormLayer::Backward(const Tensor& input, const Tensor& output,
                                      const Tensor& grad_output, Tensor* grad_input) {
  if (absl::Status s = CheckInput("Backward", input); !s.ok()) return s;
  if (grad_output.shape() != input.shape()) {
    return absl::InvalidArgumentError(
        absl::StrCat(Describe(), " Backward: gradient shape ", ShapeString(grad_output.shape()),
                     " does not match output ", ShapeString(input.shape())));
  }
  if (grad_output.layout() != input.layout() || grad_output.dtype() != input.dtype()) {
    return absl::InvalidArgumentError(absl::StrCat(
        Describe(), " Backward: gradient layout and type ", LayoutName(grad_output.layout()), " ",
        DataTypeName(grad_output.dtype()), " do not match the input's ", LayoutName(input.layout()),
        " ", DataTypeName(input.dtype())));
  }
  // The Forward that wrote `output` (see the header).
  bool training = last_forward_training_;
  if (forwards_[training ? 1 : 0].output != output.raw_data() &&
      forwards_[training ? 0 : 1].output == output.raw_data()) {
    training = !training;
  }
  Primitives* p = nullptr;
  if (absl::Status s = GetPrimitives(input, training ? kBackwardTraining : kBackwardInference, &p);
      !s.ok()) {
    return s;
  }
  // oneDNN always computes the data gradient.
  Tensor* diff_src_tensor = grad_input != nullptr ? grad_input : &scratch_grad_input_;
  diff_src_tensor->Reshape(input.shape(), input.dtype());
  diff_src_tensor->SetLayout(input.layout());
  const dnnl::engine& engine = context_->engine();
  memory src(p->data, engine, const_cast<void*>(input.raw_data()));
  memory diff_dst(p->data, engine, const_cast<void*>(grad_output.raw_data()));
  memory diff_src(p->data, engine, diff_src_tensor->raw_data());
  memory scale(p->stats, engine, gamma_.value.data());
  // oneDNN 2.6's backward pass checks for the shift too (it does not use it).
  memory shift(p->stats, engine, beta_.value.data());
  memory diff_scale(p->stats, engine, gamma_.grad.data());
  memory diff_shift(p->stats, engine, beta_.grad.data());
  Tensor& mean_tensor = training ? batch_mean_ : running_mean_;
  Tensor& var_tensor = training ? batch_var_ : running_var_;
  memory mean(p->stats, engine, mean_tensor.data());
  memory variance(p->stats, engine, var_tensor.data());
  std::unordered_map<int, memory> args = {{DNNL_ARG_SRC, src},
                                          {DNNL_ARG_MEAN, mean},
                                          {DNNL_ARG_VARIANCE, variance},
                                          {DNNL_ARG_DIFF_DST, diff_dst},
                                          {DNNL_ARG_SCALE, scale},
                                          {DNNL_ARG_SHIFT, shift},
                                          {DNNL_ARG_DIFF_SRC, diff_src},
                                          {DNNL_ARG_DIFF_SCALE, diff_scale},
                                          {DNNL_ARG_DIFF_SHIFT, diff_shift}};
  if (fused_relu_) {
    std::vector<uint8_t>& mask = forwards_[training ? 1 : 0].mask;
    if (mask.size() != p->workspace.get_size()) {
      return absl::FailedPreconditionError(
          absl::StrCat(Describe(), " Backward: no Forward of this shape before it"));
    }
    args.insert({DNNL_ARG_WORKSPACE, memory(p->workspace, engine, mask.data())});
  }
  return context_->Execute("batch-normalization backward",
                           training ? p->backward_training : p->backward_inference, args);
}

}  // namespace distillery
