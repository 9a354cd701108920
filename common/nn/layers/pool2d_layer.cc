#include "common/nn/layers/pool2d_layer.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/nn/layers/max_pool_2x2.h"

namespace distillery {

using dnnl::memory;

namespace {

std::string Pair(int64_t rows, int64_t cols) {
  return rows == cols ? absl::StrCat(rows) : absl::StrCat(rows, "x", cols);
}

// Output size along one axis (the header's formulas).
int64_t PoolOut(int64_t in, int64_t window, int64_t stride, int64_t pad, bool ceil_mode) {
  const int64_t span = in + 2 * pad - window;
  if (!ceil_mode) return span / stride + 1;
  int64_t out = (span + stride - 1) / stride + 1;
  // The last window must start inside the image or its left padding.
  if ((out - 1) * stride >= in + pad) --out;
  return out;
}

// The padding beyond `pad` on the right/bottom that ceil mode's last window
// covers (0 in floor mode).
int64_t CeilExtra(int64_t in, int64_t window, int64_t stride, int64_t pad, int64_t out) {
  return std::max<int64_t>(0, (out - 1) * stride + window - (in + 2 * pad));
}

}  // namespace

std::string Pool2dLayer::Describe() const {
  const Pool2dOptions& o = options_;
  std::string s =
      absl::StrCat(o.kind == PoolKind::kMax ? "MaxPool2d(" : "AvgPool2d(", o.window_rows, "x",
                   o.window_cols, ", stride ", Pair(o.stride_rows, o.stride_cols));
  if (o.pad_rows != 0 || o.pad_cols != 0) {
    absl::StrAppend(&s, ", pad ", Pair(o.pad_rows, o.pad_cols));
    if (o.kind == PoolKind::kAverage && !o.count_include_pad) absl::StrAppend(&s, ", exclude pad");
  }
  if (o.ceil_mode) absl::StrAppend(&s, ", ceil");
  return s + ")";
}

absl::StatusOr<Shape> Pool2dLayer::OutputShape(const Shape& example_shape) const {
  const Pool2dOptions& o = options_;
  if (o.window_rows < 1 || o.window_cols < 1 || o.stride_rows < 1 || o.stride_cols < 1 ||
      o.pad_rows < 0 || o.pad_cols < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(Describe(), ": window and stride must be at least 1 and padding at least 0"));
  }
  if (2 * o.pad_rows > o.window_rows || 2 * o.pad_cols > o.window_cols) {
    return absl::InvalidArgumentError(
        absl::StrCat(Describe(), ": padding must be at most half the window"));
  }
  if (example_shape.size() != 3) {
    return absl::InvalidArgumentError(
        absl::StrCat(Describe(), " takes examples of shape (channels, rows, cols), got ",
                     ShapeString(example_shape)));
  }
  const int64_t rows = example_shape[1], cols = example_shape[2];
  if (example_shape[0] < 1 || rows + 2 * o.pad_rows < o.window_rows ||
      cols + 2 * o.pad_cols < o.window_cols) {
    return absl::InvalidArgumentError(absl::StrCat(Describe(), ": the ", o.window_rows, "x",
                                                   o.window_cols,
                                                   " window does not fit in the (padded) image "
                                                   "of example shape ",
                                                   ShapeString(example_shape)));
  }
  const int64_t out_rows = PoolOut(rows, o.window_rows, o.stride_rows, o.pad_rows, o.ceil_mode);
  const int64_t out_cols = PoolOut(cols, o.window_cols, o.stride_cols, o.pad_cols, o.ceil_mode);
  if (o.ceil_mode && o.kind == PoolKind::kAverage && o.count_include_pad &&
      (CeilExtra(rows, o.window_rows, o.stride_rows, o.pad_rows, out_rows) > 0 ||
       CeilExtra(cols, o.window_cols, o.stride_cols, o.pad_cols, out_cols) > 0)) {
    return absl::UnimplementedError(absl::StrCat(
        Describe(), ": on example shape ", ShapeString(example_shape),
        " the last window hangs over the padding, and averaging it with count_include_pad "
        "(whose divisor counts the padding but not the overhang) is not supported"));
  }
  return Shape{example_shape[0], out_rows, out_cols};
}

absl::Status Pool2dLayer::CheckInput(const char* what, const Tensor& input) const {
  if (input.rank() != 4) {
    return absl::InvalidArgumentError(absl::StrCat(Describe(), " ", what,
                                                   ": input must be (batch, channels, rows, "
                                                   "cols), got ",
                                                   ShapeString(input.shape())));
  }
  return OutputShape({input.dim(1), input.dim(2), input.dim(3)}).status();
}

bool Pool2dLayer::Direct(const Tensor& input) const {
  const Pool2dOptions& o = options_;
  // In ceil mode an odd size adds an overhanging window; even sizes pool
  // as in floor mode.
  return o.kind == PoolKind::kMax && o.window_rows == 2 && o.window_cols == 2 &&
         o.stride_rows == 2 && o.stride_cols == 2 && o.pad_rows == 0 && o.pad_cols == 0 &&
         (!o.ceil_mode || (input.dim(2) % 2 == 0 && input.dim(3) % 2 == 0)) &&
         input.layout() == Layout::kChannelsLast;
}

absl::Status Pool2dLayer::GetPrimitives(const Tensor& input, bool training,
                                        Primitives** primitives) {
  const ShapeKey key = {input.dim(0),
                        input.dim(1),
                        input.dim(2),
                        input.dim(3),
                        static_cast<int64_t>(input.layout()),
                        static_cast<int64_t>(input.dtype())};
  Primitives* found = primitives_by_shape_.Find(key);
  if (found != nullptr && (training ? found->has_training : found->has_inference)) {
    *primitives = found;
    return absl::OkStatus();
  }
  absl::StatusOr<Shape> out = OutputShape({key[1], key[2], key[3]});
  if (!out.ok()) return out.status();
  const Pool2dOptions& o = options_;
  const memory::dims strides = {o.stride_rows, o.stride_cols};
  const memory::dims kernel = {o.window_rows, o.window_cols};
  const memory::dims padding_l = {o.pad_rows, o.pad_cols};
  // Floor mode: the right-hand padding equals the left. Ceil mode enlarges
  // it to cover the last, overhanging window (never chosen by max pooling,
  // never counted by an average that excludes padding).
  const memory::dims padding_r = {
      o.pad_rows + CeilExtra(key[2], o.window_rows, o.stride_rows, o.pad_rows, (*out)[1]),
      o.pad_cols + CeilExtra(key[3], o.window_cols, o.stride_cols, o.pad_cols, (*out)[2])};
  const dnnl::algorithm algorithm = o.kind == PoolKind::kMax ? dnnl::algorithm::pooling_max
                                    : o.count_include_pad
                                        ? dnnl::algorithm::pooling_avg_include_padding
                                        : dnnl::algorithm::pooling_avg_exclude_padding;
  try {
    const dnnl::engine& engine = context_->engine();
    const memory::desc src =
        TensorDesc({key[0], key[1], key[2], key[3]}, input.layout(), input.dtype());
    const memory::desc dst =
        TensorDesc({key[0], key[1], (*out)[1], (*out)[2]}, input.layout(), input.dtype());
    Primitives built;
    built.direct = Direct(input);
    if (built.direct) {
      if (training) built.argmax.resize(static_cast<size_t>(ShapeSize(*out) * key[0]));
      built.has_workspace = training;
    } else if (training) {
      dnnl::pooling_forward::primitive_desc training_pd(
          dnnl::pooling_forward::desc(dnnl::prop_kind::forward_training, algorithm, src, dst,
                                      strides, kernel, padding_l, padding_r),
          engine);
      dnnl::pooling_backward::primitive_desc backward_pd(
          dnnl::pooling_backward::desc(algorithm, src, dst, strides, kernel, padding_l, padding_r),
          engine, training_pd);
      built.forward_training = dnnl::pooling_forward(training_pd);
      built.backward = dnnl::pooling_backward(backward_pd);
      built.has_workspace = training_pd.workspace_desc().get_size() != 0;
      if (built.has_workspace) built.workspace = memory(training_pd.workspace_desc(), engine);
    } else {
      dnnl::pooling_forward::primitive_desc inference_pd(
          dnnl::pooling_forward::desc(dnnl::prop_kind::forward_inference, algorithm, src, dst,
                                      strides, kernel, padding_l, padding_r),
          engine);
      built.forward_inference = dnnl::pooling_forward(inference_pd);
    }
    if (found == nullptr) {
      found = primitives_by_shape_.Insert(key, Primitives());
      found->src = src;
      found->dst = dst;
      found->direct = built.direct;
    }
    if (training) {
      found->argmax = std::move(built.argmax);
      found->forward_training = std::move(built.forward_training);
      found->backward = std::move(built.backward);
      found->workspace = std::move(built.workspace);
      found->has_workspace = built.has_workspace;
      found->workspace_filled = false;
      found->has_training = true;
    } else {
      found->forward_inference = std::move(built.forward_inference);
      found->has_inference = true;
    }
  } catch (const dnnl::error& e) {
    return DnnlErrorToStatus("building pooling primitives", e);
  }
  *primitives = found;
  return absl::OkStatus();
}

bool Pool2dLayer::SetInferenceOutput(bool relu, DataType type) {
  if (relu || (type == DataType::kBF16 && precision_ != Precision::kBF16)) return false;
  inference_output_type_ = type;
  return true;
}

absl::Status Pool2dLayer::Forward(const Tensor& input, bool training, Tensor* output) {
  if (absl::Status s = CheckInput("Forward", input); !s.ok()) return s;
  if (input.dtype() == DataType::kBF16 && precision_ != Precision::kBF16) {
    return absl::InvalidArgumentError(
        absl::StrCat(Describe(), " Forward: a bf16 input is for bf16 passes only"));
  }
  Primitives* p = nullptr;
  if (absl::Status s = GetPrimitives(input, training, &p); !s.ok()) return s;
  const memory::dims& d = p->dst.dims();
  // Pooling keeps the input's type; an inference output in another type is
  // converted from pooled_.
  const bool convert = !training && inference_output_type_ != input.dtype();
  Tensor* pooled = convert ? &pooled_ : output;
  pooled->Reshape({d[0], d[1], d[2], d[3]}, input.dtype());
  pooled->SetLayout(input.layout());
  last_forward_training_ = training;
  const absl::Status status = Pool(*p, input, training, pooled);
  if (training) {
    p->workspace_filled = status.ok();
    last_training_output_ = pooled->raw_data();
    return status;
  }
  // The training Forward's output, if this was it, is gone.
  if (output->raw_data() == last_training_output_) last_training_output_ = nullptr;
  if (!status.ok() || !convert) return status;
  return context_->Convert(pooled_, pooled_.layout(), inference_output_type_, output);
}

absl::Status Pool2dLayer::Pool(Primitives& p, const Tensor& input, bool training, Tensor* pooled) {
  if (p.direct) {
    max_pool_2x2::Forward(input, pooled, training ? p.argmax.data() : nullptr);
    return absl::OkStatus();
  }
  const dnnl::engine& engine = context_->engine();
  memory src(p.src, engine, const_cast<void*>(input.raw_data()));
  memory dst(p.dst, engine, pooled->raw_data());
  if (!training) {
    return context_->Execute("pooling forward (inference)", p.forward_inference,
                             {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}});
  }
  std::unordered_map<int, memory> args = {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}};
  if (p.has_workspace) args[DNNL_ARG_WORKSPACE] = p.workspace;
  return context_->Execute("pooling forward (training)", p.forward_training, args);
}

absl::Status Pool2dLayer::Backward(const Tensor& input, const Tensor& output,
                                   const Tensor& grad_output, Tensor* grad_input) {
  if (absl::Status s = CheckInput("Backward", input); !s.ok()) return s;
  if (grad_output.dtype() != input.dtype() ||
      (input.dtype() == DataType::kBF16 && precision_ != Precision::kBF16)) {
    return absl::InvalidArgumentError(
        absl::StrCat(Describe(),
                     " Backward: takes an input and gradient of one type (bf16 in bf16 passes "
                     "only), got ",
                     DataTypeName(input.dtype()), " and ", DataTypeName(grad_output.dtype())));
  }
  if (grad_input == nullptr) return absl::OkStatus();
  Primitives* p = nullptr;
  if (absl::Status s = GetPrimitives(input, /*training=*/true, &p); !s.ok()) return s;
  const memory::dims& d = p->dst.dims();
  const Shape out_shape = {d[0], d[1], d[2], d[3]};
  if (grad_output.shape() != out_shape) {
    return absl::InvalidArgumentError(
        absl::StrCat(Describe(), " Backward: gradient shape ", ShapeString(grad_output.shape()),
                     " does not match output ", ShapeString(out_shape)));
  }
  if (grad_output.layout() != input.layout()) {
    return absl::InvalidArgumentError(
        absl::StrCat(Describe(), " Backward: gradient layout ", LayoutName(grad_output.layout()),
                     " does not match the input's ", LayoutName(input.layout())));
  }
  // The workspace of this shape must come from the training Forward that
  // wrote `output` (not one since evicted from the cache): the last Forward,
  // or an inference one into another tensor came after it.
  const bool after_training =
      last_forward_training_ || (output.raw_data() == last_training_output_);
  if (p->has_workspace && (!after_training || !p->workspace_filled)) {
    return absl::FailedPreconditionError(
        absl::StrCat(Describe(), " Backward needs a training Forward before it"));
  }
  grad_input->Reshape(input.shape(), input.dtype());
  grad_input->SetLayout(input.layout());
  if (p->direct) {
    max_pool_2x2::Backward(grad_output, p->argmax.data(), grad_input);
    return absl::OkStatus();
  }
  const dnnl::engine& engine = context_->engine();
  memory diff_dst(p->dst, engine, const_cast<void*>(grad_output.raw_data()));
  memory diff_src(p->src, engine, grad_input->raw_data());
  std::unordered_map<int, memory> args = {{DNNL_ARG_DIFF_DST, diff_dst},
                                          {DNNL_ARG_DIFF_SRC, diff_src}};
  if (p->has_workspace) args[DNNL_ARG_WORKSPACE] = p->workspace;
  return context_->Execute("pooling backward", p->backward, args);
}

}  // namespace distillery
