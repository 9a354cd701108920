#include "common/nn/layers/relu_layer.h"

#include "absl/strings/str_cat.h"

namespace distillery {

using dnnl::memory;

absl::Status ReluLayer::GetPrimitives(int64_t rows, int64_t cols, bool backward,
                                      Primitives** primitives) {
  const auto key = std::make_pair(rows, cols);
  Primitives* found = primitives_by_shape_.Find(key);
  if (found != nullptr && (!backward || found->has_backward)) {
    *primitives = found;
    return absl::OkStatus();
  }
  try {
    const dnnl::engine& engine = context_->engine();
    memory::desc data = PlainMatrixDesc(rows, cols);
    const auto algorithm = dnnl::algorithm::eltwise_relu_use_dst_for_bwd;
    dnnl::eltwise_forward::primitive_desc forward_pd(
        dnnl::eltwise_forward::desc(dnnl::prop_kind::forward_training, algorithm, data, 0.f),
        engine);
    if (found == nullptr) {
      Primitives built;
      built.forward = dnnl::eltwise_forward(forward_pd);
      found = primitives_by_shape_.Insert(key, std::move(built));
    }
    if (backward) {
      dnnl::eltwise_backward::primitive_desc backward_pd(
          dnnl::eltwise_backward::desc(algorithm, data, data, 0.f), engine, forward_pd);
      found->backward = dnnl::eltwise_backward(backward_pd);
      found->has_backward = true;
    }
  } catch (const dnnl::error& e) {
    return DnnlErrorToStatus("building ReLU primitives", e);
  }
  *primitives = found;
  return absl::OkStatus();
}

absl::Status ReluLayer::Forward(const Tensor& input, bool /*training*/, Tensor* output) {
  Primitives* p = nullptr;
  if (absl::Status s = GetPrimitives(input.rows(), input.cols(), /*backward=*/false, &p); !s.ok())
    return s;
  output->Reshape(input.shape());
  output->SetLayout(input.layout());
  const memory::desc desc = PlainMatrixDesc(input.rows(), input.cols());
  memory src(desc, context_->engine(), const_cast<float*>(input.data()));
  memory dst(desc, context_->engine(), output->data());
  return context_->Execute("ReLU forward", p->forward, {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}});
}

absl::Status ReluLayer::Backward(const Tensor& /*input*/, const Tensor& output,
                                 const Tensor& grad_output, Tensor* grad_input) {
  if (grad_input == nullptr) return absl::OkStatus();
  if (grad_output.rows() != output.rows() || grad_output.cols() != output.cols()) {
    return absl::InvalidArgumentError(absl::StrCat("ReLU: gradient shape ", grad_output.rows(), "x",
                                                   grad_output.cols(), " != output shape ",
                                                   output.rows(), "x", output.cols()));
  }
  if (grad_output.layout() != output.layout()) {
    return absl::InvalidArgumentError(
        absl::StrCat("ReLU: gradient layout ", LayoutName(grad_output.layout()),
                     " != output layout ", LayoutName(output.layout())));
  }
  Primitives* p = nullptr;
  if (absl::Status s = GetPrimitives(output.rows(), output.cols(), /*backward=*/true, &p); !s.ok())
    return s;
  grad_input->Reshape(output.shape());
  grad_input->SetLayout(output.layout());
  const memory::desc desc = PlainMatrixDesc(output.rows(), output.cols());
  const dnnl::engine& engine = context_->engine();
  memory dst(desc, engine, const_cast<float*>(output.data()));
  memory diff_dst(desc, engine, const_cast<float*>(grad_output.data()));
  memory diff_src(desc, engine, grad_input->data());
  return context_->Execute(
      "ReLU backward", p->backward,
      {{DNNL_ARG_DST, dst}, {DNNL_ARG_DIFF_DST, diff_dst}, {DNNL_ARG_DIFF_SRC, diff_src}});
}

}  // namespace distillery
