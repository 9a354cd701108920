#include "common/nn/layers/linear_layer.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/util/status_macros.h"

namespace distillery {
namespace {

// output[r][j] += bias[j] for every row r. Compiled for several instruction
// sets; the best one the CPU has is picked at load time.
__attribute__((target_clones("avx512f", "avx2", "default"))) void AddBias(const float* bias,
                                                                          int64_t rows,
                                                                          int64_t cols,
                                                                          float* output) {
  for (int64_t r = 0; r < rows; ++r) {
    float* row = output + r * cols;
    for (int64_t c = 0; c < cols; ++c) row[c] += bias[c];
  }
}

// sums[c] = the sum over rows r of matrix[r][c].
__attribute__((target_clones("avx512f", "avx2", "default"))) void ColumnSums(const float* matrix,
                                                                             int64_t rows,
                                                                             int64_t cols,
                                                                             float* sums) {
  std::fill(sums, sums + cols, 0.f);
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = matrix + r * cols;
    for (int64_t c = 0; c < cols; ++c) sums[c] += row[c];
  }
}

// A plain (rows x cols) bf16 matrix.
dnnl::memory::desc Bf16MatrixDesc(int64_t rows, int64_t cols) {
  return dnnl::memory::desc({rows, cols}, dnnl::memory::data_type::bf16,
                            dnnl::memory::format_tag::ab);
}

}  // namespace

using dnnl::memory;

LinearLayer::LinearLayer(int index, int64_t in_features, int64_t out_features,
                         bool max_norm_applies, DnnlContext* context)
    : in_features_(in_features), out_features_(out_features), context_(context) {
  weight_.name = absl::StrCat("layer", index, ".weight");
  weight_.value = Tensor(out_features, in_features);
  weight_.grad = Tensor(out_features, in_features);
  weight_.max_norm_applies = max_norm_applies;
  weight_.weight_decay_applies = true;
  bias_.name = absl::StrCat("layer", index, ".bias");
  bias_.value = Tensor(1, out_features);
  bias_.grad = Tensor(1, out_features);
  bias_.max_norm_applies = false;
}

std::string LinearLayer::Describe() const {
  return absl::StrCat("Linear(", in_features_, "->", out_features_, ")");
}

absl::Status LinearLayer::GetPrimitives(int64_t batch, bool backward, Primitives** primitives) {
  Primitives* found = primitives_by_batch_.Find(batch);
  if (found != nullptr && (!backward || found->has_backward)) {
    *primitives = found;
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
    if (found != nullptr) {  // the forward primitives exist: add the backward ones
      dnnl::inner_product_backward_data::primitive_desc backward_data_pd(
          dnnl::inner_product_backward_data::desc(src, weights, dst), engine, forward_pd);
      dnnl::inner_product_backward_weights::primitive_desc backward_weights_pd(
          dnnl::inner_product_backward_weights::desc(src, weights, bias, dst), engine, forward_pd);
      found->backward_data = dnnl::inner_product_backward_data(backward_data_pd);
      found->backward_weights = dnnl::inner_product_backward_weights(backward_weights_pd);
      found->has_backward = true;
      *primitives = found;
      return absl::OkStatus();
    }
    Primitives built;
    // The matmul path: W (out x in) times input read as (in x batch).
    const memory::desc input_transposed({in_features_, batch}, memory::data_type::f32,
                                        memory::format_tag::ba);
    const memory::desc product = PlainMatrixDesc(out_features_, batch);
    dnnl::matmul::primitive_desc matmul_pd(dnnl::matmul::desc(weights, input_transposed, product),
                                           engine);
    if (std::string(matmul_pd.impl_info_str()).rfind("ref", 0) != 0) {
      const memory::desc product_as_output({batch, out_features_}, memory::data_type::f32,
                                           memory::format_tag::ba);
      built.forward_matmul = dnnl::matmul(matmul_pd);
      built.transpose =
          dnnl::reorder(dnnl::reorder::primitive_desc(engine, product_as_output, engine, dst));
      built.use_matmul = true;
    } else {
      built.forward = dnnl::inner_product_forward(forward_pd);
    }
    found = primitives_by_batch_.Insert(batch, std::move(built));
  } catch (const dnnl::error& e) {
    return DnnlErrorToStatus("building inner-product primitives", e);
  }
  if (backward) return GetPrimitives(batch, true, primitives);
  *primitives = found;
  return absl::OkStatus();
}

absl::StatusOr<Shape> LinearLayer::OutputShape(const Shape& example_shape) const {
  if (ShapeSize(example_shape) != in_features_) {
    return absl::InvalidArgumentError(
        absl::StrCat(Describe(), " takes ", in_features_, " inputs per example, got ",
                     ShapeString(example_shape), " = ", ShapeSize(example_shape)));
  }
  return Shape{out_features_};
}

bool LinearLayer::SetInferenceOutput(bool relu, DataType type) {
  const bool bf16_output = type == DataType::kBF16;
  if ((relu || bf16_output) && precision_ != Precision::kBF16) return false;
  inference_relu_ = relu;
  inference_bf16_output_ = bf16_output;
  return true;
}

absl::Status LinearLayer::GetBf16InferencePrimitives(const Bf16Key& key,
                                                     Bf16InferencePrimitives** primitives) {
  if (Bf16InferencePrimitives* found = bf16_inference_primitives_.Find(key); found != nullptr) {
    *primitives = found;
    return absl::OkStatus();
  }
  const int64_t batch = key[0];
  try {
    const dnnl::engine& engine = context_->engine();
    const memory::desc src = Bf16MatrixDesc(batch, in_features_);
    const memory::desc weights({out_features_, in_features_}, memory::data_type::bf16,
                               memory::format_tag::any);
    const memory::desc dst =
        key[2] != 0 ? Bf16MatrixDesc(batch, out_features_) : PlainMatrixDesc(batch, out_features_);
    dnnl::primitive_attr attr;
    if (key[1] != 0) {
      dnnl::post_ops ops;
      ops.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
      attr.set_post_ops(ops);
    }
    dnnl::inner_product_forward::primitive_desc pd(
        dnnl::inner_product_forward::desc(dnnl::prop_kind::forward_inference, src, weights,
                                          PlainVectorDesc(out_features_), dst),
        attr, engine);
    Bf16InferencePrimitives built;
    built.input_to_bf16 = dnnl::reorder(
        dnnl::reorder::primitive_desc(engine, PlainMatrixDesc(batch, in_features_), engine, src));
    built.forward = dnnl::inner_product_forward(pd);
    built.weights_desc = pd.weights_desc();
    *primitives = bf16_inference_primitives_.Insert(key, std::move(built));
  } catch (const dnnl::error& e) {
    return DnnlErrorToStatus("building bf16 inner-product primitives", e);
  }
  return absl::OkStatus();
}

absl::Status LinearLayer::GetBf16TrainingPrimitives(int64_t batch, bool backward,
                                                    Bf16TrainingPrimitives** primitives) {
  Bf16TrainingPrimitives* found = bf16_training_primitives_.Find(batch);
  if (found == nullptr) {
    try {
      const dnnl::engine& engine = context_->engine();
      // W (out x in) read as W^T (in x out).
      const memory::desc weights_transposed({in_features_, out_features_}, memory::data_type::bf16,
                                            memory::format_tag::ba);
      dnnl::matmul::primitive_desc pd(
          dnnl::matmul::desc(Bf16MatrixDesc(batch, in_features_), weights_transposed,
                             PlainMatrixDesc(1, out_features_),
                             PlainMatrixDesc(batch, out_features_)),
          engine);
      Bf16TrainingPrimitives built;
      built.input_to_bf16 =
          dnnl::reorder(dnnl::reorder::primitive_desc(engine, PlainMatrixDesc(batch, in_features_),
                                                      engine, Bf16MatrixDesc(batch, in_features_)));
      built.forward = dnnl::matmul(pd);
      found = bf16_training_primitives_.Insert(batch, std::move(built));
    } catch (const dnnl::error& e) {
      return DnnlErrorToStatus("building bf16 matmul primitives", e);
    }
  }
  if (backward && !found->has_backward) RETURN_IF_ERROR(AddBf16Backward(batch, found));
  *primitives = found;
  return absl::OkStatus();
}

absl::Status LinearLayer::AddBf16Backward(int64_t batch, Bf16TrainingPrimitives* p) {
  try {
    const dnnl::engine& engine = context_->engine();
    // dL/doutput^T (out x batch), from a transposing conversion: a matmul
    // reading dL/doutput as its transpose (format ba) took 1.11 ms against
    // 0.86 on the AMX Xeon (a 3136 -> 512 layer at batch 128, 2 threads).
    const memory::desc grad_transposed = Bf16MatrixDesc(out_features_, batch);
    dnnl::matmul::primitive_desc data_pd(
        dnnl::matmul::desc(Bf16MatrixDesc(batch, out_features_),
                           Bf16MatrixDesc(out_features_, in_features_),
                           PlainMatrixDesc(batch, in_features_)),
        engine);
    dnnl::matmul::primitive_desc weights_pd(
        dnnl::matmul::desc(grad_transposed, Bf16MatrixDesc(batch, in_features_),
                           PlainMatrixDesc(out_features_, in_features_)),
        engine);
    p->grad_to_bf16 =
        dnnl::reorder(dnnl::reorder::primitive_desc(engine, PlainMatrixDesc(batch, out_features_),
                                                    engine, Bf16MatrixDesc(batch, out_features_)));
    p->grad_to_bf16_transposed = dnnl::reorder(dnnl::reorder::primitive_desc(
        engine, PlainMatrixDesc(batch, out_features_), engine,
        memory::desc({batch, out_features_}, memory::data_type::bf16, memory::format_tag::ba)));
    p->backward_data = dnnl::matmul(data_pd);
    p->backward_weights = dnnl::matmul(weights_pd);
    p->has_backward = true;
  } catch (const dnnl::error& e) {
    return DnnlErrorToStatus("building bf16 matmul backward primitives", e);
  }
  return absl::OkStatus();
}

absl::Status LinearLayer::ConvertWeights(const memory::desc& desc) {
  if (bf16_weights_valid_ && desc == bf16_weights_desc_) return absl::OkStatus();
  const dnnl::engine& engine = context_->engine();
  bf16_weights_.Reshape({static_cast<int64_t>(desc.get_size() / sizeof(uint16_t))},
                        DataType::kBF16);
  try {
    memory from(PlainMatrixDesc(out_features_, in_features_), engine, weight_.value.data());
    memory to(desc, engine, bf16_weights_.raw_data());
    if (!weights_to_bf16_ || desc != weights_reorder_desc_) {
      weights_to_bf16_ =
          dnnl::reorder(dnnl::reorder::primitive_desc(engine, from.get_desc(), engine, desc));
      weights_reorder_desc_ = desc;
    }
    RETURN_IF_ERROR(context_->Execute("bf16 weights", weights_to_bf16_,
                                      {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}}));
  } catch (const dnnl::error& e) {
    return DnnlErrorToStatus("converting weights to bf16", e);
  }
  bf16_weights_desc_ = desc;
  bf16_weights_valid_ = true;
  return absl::OkStatus();
}

absl::Status LinearLayer::ToBf16(const char* what, const dnnl::reorder& reorder, const float* from,
                                 int64_t rows, int64_t cols, Tensor* to, bool transposed) {
  const dnnl::engine& engine = context_->engine();
  to->Reshape(transposed ? Shape{cols, rows} : Shape{rows, cols}, DataType::kBF16);
  memory source(PlainMatrixDesc(rows, cols), engine, const_cast<float*>(from));
  memory target(memory::desc({rows, cols}, memory::data_type::bf16,
                             transposed ? memory::format_tag::ba : memory::format_tag::ab),
                engine, to->raw_data());
  return context_->Execute(what, reorder, {{DNNL_ARG_FROM, source}, {DNNL_ARG_TO, target}});
}

absl::Status LinearLayer::InferBf16(const Tensor& input, Tensor* output) {
  const int64_t batch = input.rows();
  Bf16InferencePrimitives* p = nullptr;
  RETURN_IF_ERROR(GetBf16InferencePrimitives(
      {batch, inference_relu_ ? 1 : 0, inference_bf16_output_ ? 1 : 0}, &p));
  RETURN_IF_ERROR(ConvertWeights(p->weights_desc));
  const Tensor* converted = &input;  // a bf16 input is taken as it is
  if (input.dtype() != DataType::kBF16) {
    RETURN_IF_ERROR(
        ToBf16("bf16 input", p->input_to_bf16, input.data(), batch, in_features_, &bf16_input_));
    converted = &bf16_input_;
  }
  const dnnl::engine& engine = context_->engine();
  output->Reshape({batch, out_features_},
                  inference_bf16_output_ ? DataType::kBF16 : DataType::kF32);
  memory src(Bf16MatrixDesc(batch, in_features_), engine, const_cast<void*>(converted->raw_data()));
  memory weights(bf16_weights_desc_, engine, bf16_weights_.raw_data());
  memory bias(PlainVectorDesc(out_features_), engine, bias_.value.data());
  memory dst(inference_bf16_output_ ? Bf16MatrixDesc(batch, out_features_)
                                    : PlainMatrixDesc(batch, out_features_),
             engine, output->raw_data());
  return context_->Execute("bf16 inner-product forward", p->forward,
                           {{DNNL_ARG_SRC, src},
                            {DNNL_ARG_WEIGHTS, weights},
                            {DNNL_ARG_BIAS, bias},
                            {DNNL_ARG_DST, dst}});
}

absl::Status LinearLayer::ForwardBf16(const Tensor& input, bool training, Tensor* output) {
  if (!training) return InferBf16(input, output);
  const int64_t batch = input.rows();
  Bf16TrainingPrimitives* p = nullptr;
  RETURN_IF_ERROR(GetBf16TrainingPrimitives(batch, /*backward=*/false, &p));
  RETURN_IF_ERROR(ConvertWeights(Bf16MatrixDesc(out_features_, in_features_)));
  RETURN_IF_ERROR(ToBf16("bf16 input", p->input_to_bf16, input.data(), batch, in_features_,
                         &bf16_training_input_));
  bf16_training_source_ = input.data();
  bf16_training_rows_ = batch;
  const dnnl::engine& engine = context_->engine();
  output->Resize(batch, out_features_);
  memory src(Bf16MatrixDesc(batch, in_features_), engine, bf16_training_input_.raw_data());
  memory weights(
      memory::desc({in_features_, out_features_}, memory::data_type::bf16, memory::format_tag::ba),
      engine, bf16_weights_.raw_data());
  memory bias(PlainMatrixDesc(1, out_features_), engine, bias_.value.data());
  memory dst(PlainMatrixDesc(batch, out_features_), engine, output->data());
  return context_->Execute("bf16 matmul forward", p->forward,
                           {{DNNL_ARG_SRC, src},
                            {DNNL_ARG_WEIGHTS, weights},
                            {DNNL_ARG_BIAS, bias},
                            {DNNL_ARG_DST, dst}});
}

absl::Status LinearLayer::PrepareBf16Backward(const Bf16TrainingPrimitives& p, const Tensor& input,
                                              const Tensor& grad_output) {
  const int64_t batch = input.rows();
  // The weights the Forward used, unless they changed since or an inference
  // pass came between (then anew, from the same master weights).
  RETURN_IF_ERROR(ConvertWeights(Bf16MatrixDesc(out_features_, in_features_)));
  if (bf16_training_source_ != input.data() || bf16_training_rows_ != batch) {
    // Not the input of the last training Forward: convert this one.
    RETURN_IF_ERROR(ToBf16("bf16 input", p.input_to_bf16, input.data(), batch, in_features_,
                           &bf16_training_input_));
    bf16_training_source_ = input.data();
    bf16_training_rows_ = batch;
  }
  return ToBf16("bf16 gradient", p.grad_to_bf16_transposed, grad_output.data(), batch,
                out_features_, &bf16_grad_output_transposed_, /*transposed=*/true);
}

absl::Status LinearLayer::BackwardBf16(const Tensor& input, const Tensor& grad_output,
                                       Tensor* grad_input) {
  const int64_t batch = input.rows();
  Bf16TrainingPrimitives* p = nullptr;
  RETURN_IF_ERROR(GetBf16TrainingPrimitives(batch, /*backward=*/true, &p));
  RETURN_IF_ERROR(PrepareBf16Backward(*p, input, grad_output));
  const dnnl::engine& engine = context_->engine();
  memory grad_transposed(Bf16MatrixDesc(out_features_, batch), engine,
                         bf16_grad_output_transposed_.raw_data());
  memory src(Bf16MatrixDesc(batch, in_features_), engine, bf16_training_input_.raw_data());
  memory diff_weights(PlainMatrixDesc(out_features_, in_features_), engine, weight_.grad.data());
  RETURN_IF_ERROR(context_->Execute(
      "bf16 matmul backward (weights)", p->backward_weights,
      {{DNNL_ARG_SRC, grad_transposed}, {DNNL_ARG_WEIGHTS, src}, {DNNL_ARG_DST, diff_weights}}));
  // The bias gradient from the f32 dL/doutput: exact, not rounded.
  ColumnSums(grad_output.data(), batch, out_features_, bias_.grad.data());
  if (grad_input == nullptr) return absl::OkStatus();
  // dL/doutput as it is (the weights pass read its transpose), in bf16.
  RETURN_IF_ERROR(ToBf16("bf16 gradient", p->grad_to_bf16, grad_output.data(), batch, out_features_,
                         &bf16_grad_output_));
  grad_input->Reshape(input.shape());
  memory diff_dst(Bf16MatrixDesc(batch, out_features_), engine, bf16_grad_output_.raw_data());
  memory weights(Bf16MatrixDesc(out_features_, in_features_), engine, bf16_weights_.raw_data());
  memory diff_src(PlainMatrixDesc(batch, in_features_), engine, grad_input->data());
  return context_->Execute(
      "bf16 matmul backward (data)", p->backward_data,
      {{DNNL_ARG_SRC, diff_dst}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, diff_src}});
}

absl::Status LinearLayer::Forward(const Tensor& input, bool training, Tensor* output) {
  if (input.cols() != in_features_) {
    return absl::InvalidArgumentError(absl::StrCat(Describe(), ": input has ", input.cols(),
                                                   " features, expected ", in_features_));
  }
  if (input.dtype() == DataType::kBF16 && (training || precision_ != Precision::kBF16)) {
    return absl::InvalidArgumentError(
        absl::StrCat(Describe(), ": a bf16 input is taken by bf16 inference passes only"));
  }
  if (precision_ == Precision::kBF16) return ForwardBf16(input, training, output);
  const int64_t batch = input.rows();
  Primitives* p = nullptr;
  if (absl::Status s = GetPrimitives(batch, /*backward=*/false, &p); !s.ok()) return s;
  output->Resize(batch, out_features_);
  const dnnl::engine& engine = context_->engine();
  memory weights(PlainMatrixDesc(out_features_, in_features_), engine, weight_.value.data());
  if (p->use_matmul) {
    transposed_output_.Resize(out_features_, batch);
    memory input_transposed(
        memory::desc({in_features_, batch}, memory::data_type::f32, memory::format_tag::ba), engine,
        const_cast<float*>(input.data()));
    memory product(PlainMatrixDesc(out_features_, batch), engine, transposed_output_.data());
    if (absl::Status s = context_->Execute("matmul forward", p->forward_matmul,
                                           {{DNNL_ARG_SRC, weights},
                                            {DNNL_ARG_WEIGHTS, input_transposed},
                                            {DNNL_ARG_DST, product}});
        !s.ok()) {
      return s;
    }
    memory product_as_output(
        memory::desc({batch, out_features_}, memory::data_type::f32, memory::format_tag::ba),
        engine, transposed_output_.data());
    memory dst(PlainMatrixDesc(batch, out_features_), engine, output->data());
    if (absl::Status s = context_->Execute(
            "transpose", p->transpose, {{DNNL_ARG_FROM, product_as_output}, {DNNL_ARG_TO, dst}});
        !s.ok()) {
      return s;
    }
    AddBias(bias_.value.data(), batch, out_features_, output->data());
    return absl::OkStatus();
  }
  memory src(PlainMatrixDesc(batch, in_features_), engine, const_cast<float*>(input.data()));
  memory bias(PlainVectorDesc(out_features_), engine, bias_.value.data());
  memory dst(PlainMatrixDesc(batch, out_features_), engine, output->data());
  return context_->Execute("inner-product forward", p->forward,
                           {{DNNL_ARG_SRC, src},
                            {DNNL_ARG_WEIGHTS, weights},
                            {DNNL_ARG_BIAS, bias},
                            {DNNL_ARG_DST, dst}});
}

absl::Status LinearLayer::Backward(const Tensor& input, const Tensor& /*output*/,
                                   const Tensor& grad_output, Tensor* grad_input) {
  const int64_t batch = input.rows();
  if (grad_output.rows() != batch || grad_output.cols() != out_features_) {
    return absl::InvalidArgumentError(
        absl::StrCat(Describe(), ": gradient shape ", grad_output.rows(), "x", grad_output.cols(),
                     " does not match output ", batch, "x", out_features_));
  }
  if (precision_ == Precision::kBF16) return BackwardBf16(input, grad_output, grad_input);
  Primitives* p = nullptr;
  if (absl::Status s = GetPrimitives(batch, /*backward=*/true, &p); !s.ok()) return s;
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
  grad_input->Reshape(input.shape());
  memory weights(PlainMatrixDesc(out_features_, in_features_), engine, weight_.value.data());
  memory diff_src(PlainMatrixDesc(batch, in_features_), engine, grad_input->data());
  return context_->Execute(
      "inner-product backward (data)", p->backward_data,
      {{DNNL_ARG_DIFF_DST, diff_dst}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DIFF_SRC, diff_src}});
}

}  // namespace distillery
