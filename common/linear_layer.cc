#include "common/linear_layer.h"

#include "absl/strings/str_cat.h"

namespace distillery {

using dnnl::memory;

LinearLayer::LinearLayer(int index, int64_t in_features, int64_t out_features,
                         bool max_norm_applies, DnnlContext* context)
    : in_features_(in_features), out_features_(out_features), context_(context) {
  weight_.name = absl::StrCat("layer", index, ".weight");
  weight_.value = Matrix(out_features, in_features);
  weight_.grad = Matrix(out_features, in_features);
  weight_.max_norm_applies = max_norm_applies;
  bias_.name = absl::StrCat("layer", index, ".bias");
  bias_.value = Matrix(1, out_features);
  bias_.grad = Matrix(1, out_features);
  bias_.max_norm_applies = false;
}

std::string LinearLayer::Describe() const {
  return absl::StrCat("Linear(", in_features_, "->", out_features_, ")");
}

absl::Status LinearLayer::GetPrimitives(int64_t batch, Primitives** primitives) {
  auto it = primitives_by_batch_.find(batch);
  if (it != primitives_by_batch_.end()) {
    *primitives = &it->second;
    return absl::OkStatus();
  }
  try {
    const dnnl::engine& engine = context_->engine();
    memory::desc src = PlainMatrixDesc(batch, in_features_);
    memory::desc weights = PlainMatrixDesc(out_features_, in_features_);
    memory::desc bias = PlainVectorDesc(out_features_);
    memory::desc dst = PlainMatrixDesc(batch, out_features_);
    dnnl::inner_product_forward::primitive_desc forward_pd(
        dnnl::inner_product_forward::desc(dnnl::prop_kind::forward_training, src, weights, bias,
                                          dst),
        engine);
    dnnl::inner_product_backward_data::primitive_desc backward_data_pd(
        dnnl::inner_product_backward_data::desc(src, weights, dst), engine, forward_pd);
    dnnl::inner_product_backward_weights::primitive_desc backward_weights_pd(
        dnnl::inner_product_backward_weights::desc(src, weights, bias, dst), engine, forward_pd);
    Primitives built{dnnl::inner_product_forward(forward_pd),
                     dnnl::inner_product_backward_data(backward_data_pd),
                     dnnl::inner_product_backward_weights(backward_weights_pd)};
    *primitives = &primitives_by_batch_.emplace(batch, std::move(built)).first->second;
  } catch (const dnnl::error& e) {
    return DnnlErrorToStatus("building inner-product primitives", e);
  }
  return absl::OkStatus();
}

absl::Status LinearLayer::Forward(const Matrix& input, bool /*training*/, Matrix* output) {
  if (input.cols() != in_features_) {
    return absl::InvalidArgumentError(absl::StrCat(Describe(), ": input has ", input.cols(),
                                                   " features, expected ", in_features_));
  }
  const int64_t batch = input.rows();
  Primitives* p = nullptr;
  if (absl::Status s = GetPrimitives(batch, &p); !s.ok()) return s;
  output->Resize(batch, out_features_);
  const dnnl::engine& engine = context_->engine();
  memory src(PlainMatrixDesc(batch, in_features_), engine, const_cast<float*>(input.data()));
  memory weights(PlainMatrixDesc(out_features_, in_features_), engine, weight_.value.data());
  memory bias(PlainVectorDesc(out_features_), engine, bias_.value.data());
  memory dst(PlainMatrixDesc(batch, out_features_), engine, output->data());
  return context_->Execute("inner-product forward", p->forward,
                           {{DNNL_ARG_SRC, src},
                            {DNNL_ARG_WEIGHTS, weights},
                            {DNNL_ARG_BIAS, bias},
                            {DNNL_ARG_DST, dst}});
}

absl::Status LinearLayer::Backward(const Matrix& input, const Matrix& /*output*/,
                                   const Matrix& grad_output, Matrix* grad_input) {
  const int64_t batch = input.rows();
  if (grad_output.rows() != batch || grad_output.cols() != out_features_) {
    return absl::InvalidArgumentError(
        absl::StrCat(Describe(), ": gradient shape ", grad_output.rows(), "x", grad_output.cols(),
                     " does not match output ", batch, "x", out_features_));
  }
  Primitives* p = nullptr;
  if (absl::Status s = GetPrimitives(batch, &p); !s.ok()) return s;
  const dnnl::engine& engine = context_->engine();
  memory src(PlainMatrixDesc(batch, in_features_), engine, const_cast<float*>(input.data()));
  memory diff_dst(PlainMatrixDesc(batch, out_features_), engine,
                  const_cast<float*>(grad_output.data()));
  memory diff_weights(PlainMatrixDesc(out_features_, in_features_), engine, weight_.grad.data());
  memory diff_bias(PlainVectorDesc(out_features_), engine, bias_.grad.data());
  if (absl::Status s = context_->Execute("inner-product backward (weights)", p->backward_weights,
                                         {{DNNL_ARG_SRC, src},
                                          {DNNL_ARG_DIFF_DST, diff_dst},
                                          {DNNL_ARG_DIFF_WEIGHTS, diff_weights},
                                          {DNNL_ARG_DIFF_BIAS, diff_bias}});
      !s.ok()) {
    return s;
  }
  if (grad_input == nullptr) return absl::OkStatus();
  grad_input->Resize(batch, in_features_);
  memory weights(PlainMatrixDesc(out_features_, in_features_), engine, weight_.value.data());
  memory diff_src(PlainMatrixDesc(batch, in_features_), engine, grad_input->data());
  return context_->Execute(
      "inner-product backward (data)", p->backward_data,
      {{DNNL_ARG_DIFF_DST, diff_dst}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DIFF_SRC, diff_src}});
}

}  // namespace distillery
