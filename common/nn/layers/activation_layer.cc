#include "common/nn/layers/activation_layer.h"

#include "absl/strings/str_cat.h"

namespace distillery {

using dnnl::memory;

std::string ActivationLayer::Describe() const {
  switch (kind_) {
    case ActivationKind::kRelu:
      return "ReLU";
    case ActivationKind::kLeakyRelu:
      return absl::StrCat("LeakyReLU(", alpha_, ")");
    case ActivationKind::kSigmoid:
      return "Sigmoid";
    case ActivationKind::kTanh:
      return "Tanh";
  }
  return "Activation";
}

dnnl::algorithm ActivationLayer::Algorithm() const {
  switch (kind_) {
    case ActivationKind::kRelu:
      return dnnl::algorithm::eltwise_relu_use_dst_for_bwd;
    case ActivationKind::kLeakyRelu:
      return dnnl::algorithm::eltwise_relu;
    case ActivationKind::kSigmoid:
      return dnnl::algorithm::eltwise_logistic_use_dst_for_bwd;
    case ActivationKind::kTanh:
      return dnnl::algorithm::eltwise_tanh_use_dst_for_bwd;
  }
  return dnnl::algorithm::eltwise_relu;
}

absl::Status ActivationLayer::GetPrimitives(int64_t rows, int64_t cols, bool backward,
                                            Primitives** primitives) {
  const auto key = std::make_pair(rows, cols);
  Primitives* found = primitives_by_shape_.Find(key);
  if (found != nullptr && (!backward || found->has_backward)) {
    *primitives = found;
    return absl::OkStatus();
  }
  try {
    const dnnl::engine& engine = context_->engine();
    const memory::desc data = PlainMatrixDesc(rows, cols);
    if (found == nullptr) {
      Primitives built;
      built.forward_pd = dnnl::eltwise_forward::primitive_desc(
          dnnl::eltwise_forward::desc(dnnl::prop_kind::forward_training, Algorithm(), data, alpha_),
          engine);
      built.forward = dnnl::eltwise_forward(built.forward_pd);
      found = primitives_by_shape_.Insert(key, std::move(built));
    }
    if (backward) {
      dnnl::eltwise_backward::primitive_desc backward_pd(
          dnnl::eltwise_backward::desc(Algorithm(), data, data, alpha_), engine, found->forward_pd);
      found->backward = dnnl::eltwise_backward(backward_pd);
      found->has_backward = true;
    }
  } catch (const dnnl::error& e) {
    return DnnlErrorToStatus(absl::StrCat("building ", Describe(), " primitives").c_str(), e);
  }
  *primitives = found;
  return absl::OkStatus();
}

absl::Status ActivationLayer::Forward(const Tensor& input, bool /*training*/, Tensor* output) {
  if (input.rank() < 2 || input.size() == 0) {
    return absl::InvalidArgumentError(absl::StrCat(Describe(),
                                                   " Forward: input must be (batch, "
                                                   "...) and not empty, got ",
                                                   ShapeString(input.shape())));
  }
  Primitives* p = nullptr;
  if (absl::Status s = GetPrimitives(input.rows(), input.cols(), /*backward=*/false, &p); !s.ok())
    return s;
  output->Reshape(input.shape());
  output->SetLayout(input.layout());
  const memory::desc desc = PlainMatrixDesc(input.rows(), input.cols());
  memory src(desc, context_->engine(), const_cast<float*>(input.data()));
  memory dst(desc, context_->engine(), output->data());
  return context_->Execute("activation forward", p->forward,
                           {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}});
}

absl::Status ActivationLayer::Backward(const Tensor& input, const Tensor& output,
                                       const Tensor& grad_output, Tensor* grad_input) {
  if (grad_input == nullptr) return absl::OkStatus();
  if (grad_output.shape() != output.shape() || input.shape() != output.shape()) {
    return absl::InvalidArgumentError(
        absl::StrCat(Describe(), " Backward: input ", ShapeString(input.shape()), ", output ",
                     ShapeString(output.shape()), " and gradient ",
                     ShapeString(grad_output.shape()), " must have the same shape"));
  }
  if (grad_output.layout() != output.layout() || input.layout() != output.layout()) {
    return absl::InvalidArgumentError(absl::StrCat(Describe(),
                                                   " Backward: input, output and gradient must "
                                                   "have the same layout"));
  }
  Primitives* p = nullptr;
  if (absl::Status s = GetPrimitives(output.rows(), output.cols(), /*backward=*/true, &p); !s.ok())
    return s;
  grad_input->Reshape(output.shape());
  grad_input->SetLayout(output.layout());
  const memory::desc desc = PlainMatrixDesc(output.rows(), output.cols());
  const dnnl::engine& engine = context_->engine();
  memory data(desc, engine,
              const_cast<float*>(UsesOutputForBackward() ? output.data() : input.data()));
  memory diff_dst(desc, engine, const_cast<float*>(grad_output.data()));
  memory diff_src(desc, engine, grad_input->data());
  return context_->Execute("activation backward", p->backward,
                           {{UsesOutputForBackward() ? DNNL_ARG_DST : DNNL_ARG_SRC, data},
                            {DNNL_ARG_DIFF_DST, diff_dst},
                            {DNNL_ARG_DIFF_SRC, diff_src}});
}

}  // namespace distillery
