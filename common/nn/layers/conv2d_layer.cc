#include "common/nn/layers/conv2d_layer.h"

#include <algorithm>
#include <initializer_list>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/nn/layers/conv2d_im2col_weights.h"
#include "common/nn/layers/conv2d_internal.h"
#include "common/util/status_macros.h"

namespace distillery {

using dnnl::memory;

namespace {

// "5" or "5x3".
std::string Pair(int64_t rows, int64_t cols) {
  return rows == cols ? absl::StrCat(rows) : absl::StrCat(rows, "x", cols);
}

int64_t OutputSize(int64_t in, int64_t kernel, int64_t stride, int64_t pad, int64_t dilation) {
  return (in + 2 * pad - dilation * (kernel - 1) - 1) / stride + 1;
}

memory::desc Nchw(const memory::dims& dims) {
  return memory::desc(dims, memory::data_type::f32, memory::format_tag::nchw);
}

}  // namespace

Conv2dLayer::Conv2dLayer(int index, const Conv2dOptions& options, DnnlContext* context)
    : options_(options), context_(context) {
  const int64_t per_group = options.groups > 0 ? options.in_channels / options.groups : 0;
  const Shape weight_shape = {options.out_channels, per_group, options.kernel_rows,
                              options.kernel_cols};
  weight_.name = absl::StrCat("layer", index, ".weight");
  weight_.value = Tensor(weight_shape);
  weight_.grad = Tensor(weight_shape);
  weight_.max_norm_applies = options.max_norm_applies;
  weight_.weight_decay_applies = true;
  bias_.name = absl::StrCat("layer", index, ".bias");
  bias_.value = Tensor(1, options.out_channels);
  bias_.grad = Tensor(1, options.out_channels);
  bias_.max_norm_applies = false;
}

std::string Conv2dLayer::Describe() const {
  const Conv2dOptions& o = options_;
  std::string s = absl::StrCat("Conv2d(", o.in_channels, "->", o.out_channels, ", ", o.kernel_rows,
                               "x", o.kernel_cols, ", stride ", Pair(o.stride_rows, o.stride_cols),
                               ", pad ", Pair(o.pad_rows, o.pad_cols));
  if (o.dilation_rows != 1 || o.dilation_cols != 1) {
    absl::StrAppend(&s, ", dilation ", Pair(o.dilation_rows, o.dilation_cols));
  }
  if (o.groups != 1) absl::StrAppend(&s, ", groups ", o.groups);
  return s + ")";
}

absl::Status Conv2dLayer::CheckOptions() const {
  const Conv2dOptions& o = options_;
  if (o.in_channels < 1 || o.out_channels < 1 || o.kernel_rows < 1 || o.kernel_cols < 1 ||
      o.stride_rows < 1 || o.stride_cols < 1 || o.dilation_rows < 1 || o.dilation_cols < 1 ||
      o.pad_rows < 0 || o.pad_cols < 0 || o.groups < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(Describe(),
                     ": channels, kernel, stride, dilation and groups must be at "
                     "least 1 and padding at least 0"));
  }
  if (o.in_channels % o.groups != 0 || o.out_channels % o.groups != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        Describe(), ": in_channels and out_channels must be multiples of groups ", o.groups));
  }
  return absl::OkStatus();
}

absl::StatusOr<Shape> Conv2dLayer::OutputShape(const Shape& example_shape) const {
  if (absl::Status s = CheckOptions(); !s.ok()) return s;
  const Conv2dOptions& o = options_;
  if (example_shape.size() != 3 || example_shape[0] != o.in_channels) {
    return absl::InvalidArgumentError(absl::StrCat(Describe(), " takes examples of shape (",
                                                   o.in_channels, ", rows, cols), got ",
                                                   ShapeString(example_shape)));
  }
  const int64_t rows = example_shape[1], cols = example_shape[2];
  const int64_t span_rows = o.dilation_rows * (o.kernel_rows - 1) + 1;
  const int64_t span_cols = o.dilation_cols * (o.kernel_cols - 1) + 1;
  if (rows < 1 || cols < 1 || rows + 2 * o.pad_rows < span_rows ||
      cols + 2 * o.pad_cols < span_cols) {
    return absl::InvalidArgumentError(
        absl::StrCat(Describe(), ": a ", span_rows, "x", span_cols,
                     " kernel span does not fit in the padded image of example shape ",
                     ShapeString(example_shape)));
  }
  return Shape{o.out_channels,
               OutputSize(rows, o.kernel_rows, o.stride_rows, o.pad_rows, o.dilation_rows),
               OutputSize(cols, o.kernel_cols, o.stride_cols, o.pad_cols, o.dilation_cols)};
}

absl::Status Conv2dLayer::CheckInput(const char* what, const Tensor& input) const {
  if (input.rank() != 4) {
    return absl::InvalidArgumentError(
        absl::StrCat(Describe(), " ", what, ": input must be (batch, ", options_.in_channels,
                     ", rows, cols), got ", ShapeString(input.shape())));
  }
  return OutputShape({input.dim(1), input.dim(2), input.dim(3)}).status();
}

using namespace conv2d_internal;  // NOLINT: the layer's own descriptor helpers

Conv2dLayer::Bridge Conv2dLayer::MakeBridge(const memory::desc& plain, const memory::desc& inner,
                                            bool to_inner) const {
  const dnnl::engine& engine = context_->engine();
  Bridge b;
  b.inner = inner;
  b.needed = inner != plain;
  if (b.needed) {
    b.buffer = memory(inner, engine);
    b.reorder = to_inner
                    ? dnnl::reorder(dnnl::reorder::primitive_desc(engine, plain, engine, inner))
                    : dnnl::reorder(dnnl::reorder::primitive_desc(engine, inner, engine, plain));
  }
  return b;
}

absl::Status Conv2dLayer::GetPrimitives(const Tensor& input, bool backward, bool bf16,
                                        bool bf16_output, Primitives** primitives) {
  const ShapeKey key = {input.dim(0),
                        input.dim(2),
                        input.dim(3),
                        static_cast<int64_t>(input.layout()),
                        allow_blocked_output_ ? 1 : 0,
                        bf16 ? 1 : 0,
                        static_cast<int64_t>(input.dtype()),
                        bf16_output ? 1 : 0};
  Primitives* found = primitives_by_shape_.Find(key);
  if (found != nullptr && (!backward || found->has_backward)) {
    *primitives = found;
    return absl::OkStatus();
  }
  try {
    if (found == nullptr) {
      absl::StatusOr<Primitives> built = BuildForward(input, bf16, bf16_output);
      if (!built.ok()) return built.status();
      found = primitives_by_shape_.Insert(key, std::move(*built));
      // Whatever entry held the last Forward's reordered input may be gone.
      last_input_ = nullptr;
    }
    if (backward) AddBackward(bf16, found);
  } catch (const dnnl::error& e) {
    return DnnlErrorToStatus("building convolution primitives", e);
  }
  *primitives = found;
  return absl::OkStatus();
}

ForwardPd Conv2dLayer::ForwardDesc(const Primitives& p, const memory::desc& src,
                                   const memory::desc& weights, const memory::desc& dst) const {
  const Geometry g(options_);
  return ForwardPd(dnnl::convolution_forward::desc(
                       dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, src,
                       weights, p.bias, dst, g.strides, g.dilates, g.padding, g.padding),
                   context_->engine());
}

memory::desc Conv2dLayer::WeightsDesc() const {
  const Conv2dOptions& o = options_;
  if (o.groups == 1) return Nchw({o.out_channels, o.in_channels, o.kernel_rows, o.kernel_cols});
  // (groups, out/groups, in/groups, kr, kc) in goihw: the same bytes as the
  // plain (out, in/groups, kr, kc) tensor.
  return memory::desc(
      {o.groups, o.out_channels / o.groups, o.in_channels / o.groups, o.kernel_rows, o.kernel_cols},
      kF32, memory::format_tag::goihw);
}

absl::StatusOr<Conv2dLayer::Primitives> Conv2dLayer::BuildForward(const Tensor& input, bool bf16,
                                                                  bool bf16_output) const {
  absl::StatusOr<Shape> out = OutputShape({input.dim(1), input.dim(2), input.dim(3)});
  if (!out.ok()) return out.status();
  const Conv2dOptions& o = options_;
  const int64_t batch = input.dim(0), rows = input.dim(2), cols = input.dim(3);
  Primitives p;
  p.plain_src = Nchw({batch, o.in_channels, rows, cols});
  p.plain_dst = Nchw({batch, o.out_channels, (*out)[1], (*out)[2]});
  p.src = TensorDesc({batch, o.in_channels, rows, cols}, input.layout(), input.dtype());
  p.bias = PlainVectorDesc(o.out_channels);
  p.weights = WeightsDesc();
  // bf16: the bridges convert the input (unless bf16 already) and weights
  // into bf16; the output is f32 unless bf16_output.
  const auto type = bf16 ? kBf16 : kF32;
  const auto dst_type = bf16_output ? kBf16 : kF32;
  ForwardPd forward_pd = o.layout != ConvLayout::kPlain
                             ? ForwardDesc(p, AnyOf(p.plain_src, type), AnyOf(p.weights, type),
                                           AnyOf(p.plain_dst, dst_type))
                             : ForwardDesc(p, PlainOf(p.plain_src, type), PlainOf(p.weights, type),
                                           PlainOf(p.plain_dst, dst_type));
  // kAuto's fallback to plain applies to f32 only: the bf16 forward keeps
  // oneDNN's layouts, whose one padding on MNIST's shapes is a 1-channel
  // layer's small weights to channel pairs (16x1x5x5 to 16x2x5x5); the
  // backward passes below fall back in either precision.
  if (!bf16 && o.layout == ConvLayout::kAuto &&
      !Compact({{forward_pd.src_desc(), p.plain_src},
                {forward_pd.weights_desc(), p.weights},
                {forward_pd.dst_desc(), p.plain_dst}})) {
    forward_pd = ForwardDesc(p, p.plain_src, p.weights, p.plain_dst);
  }
  // The output stays in oneDNN's layout when that is a channel-blocked one
  // the next layer takes.
  const std::optional<Layout> chosen = LayoutOfDesc(forward_pd.dst_desc());
  p.dst_layout = allow_blocked_output_ && chosen.has_value() ? *chosen : Layout::kPlain;
  p.dst = p.dst_layout == Layout::kPlain ? PlainOf(p.plain_dst, dst_type) : forward_pd.dst_desc();
  p.forward = dnnl::convolution_forward(forward_pd);
  p.forward_src = MakeBridge(p.src, forward_pd.src_desc(), true);
  p.forward_weights = MakeBridge(p.weights, forward_pd.weights_desc(), true);
  p.forward_dst = MakeBridge(p.dst, forward_pd.dst_desc(), false);
  p.forward_pd = std::move(forward_pd);
  return p;
}

// In bf16 the products read bf16 copies of the input, the weights and
// dL/doutput, and write dL/dinput in the input's type.
DataPd Conv2dLayer::BackwardDataPd(bool bf16, const Primitives& p) const {
  const Geometry g(options_);
  const auto type = bf16 ? kBf16 : kF32;
  const auto diff_src_type = p.src.data_type();
  auto data_of = [&](const memory::desc& diff_src, const memory::desc& weights,
                     const memory::desc& diff_dst) {
    return DataPd(dnnl::convolution_backward_data::desc(dnnl::algorithm::convolution_direct,
                                                        diff_src, weights, diff_dst, g.strides,
                                                        g.dilates, g.padding, g.padding),
                  context_->engine(), p.forward_pd);
  };
  if (options_.layout == ConvLayout::kPlain) {
    return data_of(PlainOf(p.plain_src, diff_src_type), PlainOf(p.weights, type),
                   PlainOf(p.plain_dst, type));
  }
  DataPd pd =
      data_of(AnyOf(p.plain_src, diff_src_type), AnyOf(p.weights, type), AnyOf(p.plain_dst, type));
  if (options_.layout == ConvLayout::kAuto && !Compact({{pd.diff_src_desc(), p.plain_src},
                                                        {pd.weights_desc(), p.weights},
                                                        {pd.diff_dst_desc(), p.plain_dst}})) {
    pd = data_of(PlainOf(p.plain_src, diff_src_type), PlainOf(p.weights, type),
                 PlainOf(p.plain_dst, type));
  }
  return pd;
}

// In bf16 the products read bf16 copies of the input and dL/doutput and
// write f32 weight gradients.
WeightsPd Conv2dLayer::BackwardWeightsPd(bool bf16, const Primitives& p) const {
  const Geometry g(options_);
  const auto type = bf16 ? kBf16 : kF32;
  auto weights_of = [&](const memory::desc& src, const memory::desc& diff_weights,
                        const memory::desc& diff_dst) {
    return WeightsPd(dnnl::convolution_backward_weights::desc(
                         dnnl::algorithm::convolution_direct, src, diff_weights, p.bias, diff_dst,
                         g.strides, g.dilates, g.padding, g.padding),
                     context_->engine(), p.forward_pd);
  };
  if (options_.layout == ConvLayout::kPlain) {
    return weights_of(PlainOf(p.plain_src, type), PlainOf(p.weights, kF32),
                      PlainOf(p.plain_dst, type));
  }
  auto compact = [&p](const WeightsPd& pd) {
    return Compact({{pd.src_desc(), p.plain_src},
                    {pd.diff_weights_desc(), p.weights},
                    {pd.diff_dst_desc(), p.plain_dst}});
  };
  WeightsPd pd =
      weights_of(AnyOf(p.plain_src, type), AnyOf(p.weights, kF32), AnyOf(p.plain_dst, type));
  if (options_.layout == ConvLayout::kAuto && bf16 && !compact(pd)) {
    // oneDNN 2.6's bf16 weight-gradient kernels pad a layer with few input
    // channels (a first layer) past Compact, and in plain layouts they fall
    // to a gemm that is not AMX's: on the AMX Xeon, MNIST's 1->32 5x5 layer
    // took 7.2 ms per batch of 128 in plain bf16 and 0.9 ms in f32. Such a
    // pass runs in f32, from the f32 input and dL/doutput.
    pd = weights_of(AnyOf(p.plain_src, kF32), AnyOf(p.weights, kF32), AnyOf(p.plain_dst, kF32));
  }
  if (options_.layout == ConvLayout::kAuto && !compact(pd)) {
    const auto used = pd.src_desc().data_type();
    pd = weights_of(PlainOf(p.plain_src, used), p.weights, PlainOf(p.plain_dst, used));
  }
  return pd;
}

void Conv2dLayer::AddBackward(bool bf16, Primitives* entry) const {
  Primitives& p = *entry;
  const DataPd data_pd = BackwardDataPd(bf16, p);
  // Built aside and moved in at the end, so that a failure leaves the entry
  // without backward primitives rather than half of them.
  dnnl::convolution_backward_data backward_data(data_pd);
  Bridge data_diff_dst = MakeBridge(p.dst, data_pd.diff_dst_desc(), true);
  Bridge data_weights = MakeBridge(p.weights, data_pd.weights_desc(), true);
  Bridge data_diff_src = MakeBridge(p.src, data_pd.diff_src_desc(), false);
  std::shared_ptr<Im2colWeightGradient> im2col_weights;
  dnnl::convolution_backward_weights backward_weights;
  Bridge weights_src, weights_diff_dst, weights_diff_weights;
  const DataType grad_type = p.dst.data_type() == kBf16 ? DataType::kBF16 : DataType::kF32;
  if (bf16 && Im2colWeightGradient::Applies(options_, grad_type, p.dst_layout)) {
    const memory::dims& in = p.plain_src.dims();
    const memory::dims& out = p.plain_dst.dims();
    im2col_weights = std::make_shared<Im2colWeightGradient>(
        options_, Shape(in.begin(), in.end()), Shape(out.begin(), out.end()), context_);
  } else {
    const WeightsPd weights_pd = BackwardWeightsPd(bf16, p);
    backward_weights = dnnl::convolution_backward_weights(weights_pd);
    weights_src = MakeBridge(p.src, weights_pd.src_desc(), true);
    weights_diff_dst = MakeBridge(p.dst, weights_pd.diff_dst_desc(), true);
    weights_diff_weights = MakeBridge(p.weights, weights_pd.diff_weights_desc(), false);
  }
  p.backward_data = std::move(backward_data);
  p.backward_weights = std::move(backward_weights);
  p.data_diff_dst = std::move(data_diff_dst);
  p.data_weights = std::move(data_weights);
  p.data_diff_src = std::move(data_diff_src);
  p.weights_src = std::move(weights_src);
  p.weights_diff_dst = std::move(weights_diff_dst);
  p.weights_diff_weights = std::move(weights_diff_weights);
  p.im2col_weights = std::move(im2col_weights);
  p.has_backward = true;
}

absl::StatusOr<memory> Conv2dLayer::ToInner(const char* what, const Bridge& bridge,
                                            const memory& plain) const {
  if (!bridge.needed) return plain;
  RETURN_IF_ERROR(context_->Execute(what, bridge.reorder,
                                    {{DNNL_ARG_FROM, plain}, {DNNL_ARG_TO, bridge.buffer}}));
  return bridge.buffer;
}

absl::Status Conv2dLayer::FromInner(const char* what, const Bridge& bridge, const memory& inner,
                                    const memory& plain) const {
  if (!bridge.needed) return absl::OkStatus();
  return context_->Execute(what, bridge.reorder, {{DNNL_ARG_FROM, inner}, {DNNL_ARG_TO, plain}});
}

absl::Status Conv2dLayer::RunForward(const dnnl::convolution_forward& forward, Bridge& src_bridge,
                                     Bridge& weights_bridge, Bridge& dst_bridge, memory src,
                                     memory weights, memory bias, memory dst) const {
  ASSIGN_OR_RETURN(const memory src_used, ToInner("convolution src reorder", src_bridge, src));
  ASSIGN_OR_RETURN(const memory weights_used,
                   ToInner("convolution weights reorder", weights_bridge, weights));
  const memory dst_used = dst_bridge.needed ? dst_bridge.buffer : dst;
  RETURN_IF_ERROR(context_->Execute("convolution forward", forward,
                                    {{DNNL_ARG_SRC, src_used},
                                     {DNNL_ARG_WEIGHTS, weights_used},
                                     {DNNL_ARG_BIAS, bias},
                                     {DNNL_ARG_DST, dst_used}}));
  return FromInner("convolution dst reorder", dst_bridge, dst_used, dst);
}

absl::Status Conv2dLayer::Forward(const Tensor& input, bool training, Tensor* output) {
  if (absl::Status s = CheckInput("Forward", input); !s.ok()) return s;
  const bool bf16 = precision_ == Precision::kBF16;
  if (input.dtype() == DataType::kBF16 && !bf16) {
    return absl::InvalidArgumentError(
        absl::StrCat(Describe(), " Forward: a bf16 input is for bf16 passes only"));
  }
  if (bf16 && !training) return InferBf16(input, output);
  const bool bf16_output = bf16 && training_output_bf16_;
  Primitives* p = nullptr;
  if (absl::Status s = GetPrimitives(input, /*backward=*/false, bf16, bf16_output, &p); !s.ok()) {
    return s;
  }
  const memory::dims& dst_dims = p->dst.dims();
  output->Reshape({dst_dims[0], dst_dims[1], dst_dims[2], dst_dims[3]},
                  bf16_output ? DataType::kBF16 : DataType::kF32);
  output->SetLayout(p->dst_layout);
  const dnnl::engine& engine = context_->engine();
  const absl::Status s = RunForward(p->forward, p->forward_src, p->forward_weights, p->forward_dst,
                                    memory(p->src, engine, const_cast<void*>(input.raw_data())),
                                    memory(p->weights, engine, weight_.value.data()),
                                    memory(p->bias, engine, bias_.value.data()),
                                    memory(p->dst, engine, output->raw_data()));
  // Backward may reuse this reordered input (same precision: the same
  // entry), once the forward pass has made it.
  last_input_ = s.ok() ? input.raw_data() : nullptr;
  last_input_shape_ = input.shape();
  last_input_bf16_ = bf16;
  return s;
}

absl::Status Conv2dLayer::Backward(const Tensor& input, const Tensor& /*output*/,
                                   const Tensor& grad_output, Tensor* grad_input) {
  RETURN_IF_ERROR(CheckInput("Backward", input));
  const bool bf16 = precision_ == Precision::kBF16;
  if (!bf16 && (input.dtype() != DataType::kF32 || grad_output.dtype() != DataType::kF32)) {
    return absl::InvalidArgumentError(
        absl::StrCat(Describe(), " Backward: takes f32 input and gradient in f32"));
  }
  // dL/doutput has the type of the output of the Forward it differentiates.
  const bool bf16_output = grad_output.dtype() == DataType::kBF16;
  Primitives* p = nullptr;
  RETURN_IF_ERROR(GetPrimitives(input, /*backward=*/true, bf16, bf16_output, &p));
  const memory::dims& dst_dims = p->dst.dims();
  const Shape out_shape = {dst_dims[0], dst_dims[1], dst_dims[2], dst_dims[3]};
  if (grad_output.shape() != out_shape) {
    return absl::InvalidArgumentError(
        absl::StrCat(Describe(), " Backward: gradient shape ", ShapeString(grad_output.shape()),
                     " does not match output ", ShapeString(out_shape)));
  }
  if (grad_output.layout() != p->dst_layout) {
    return absl::InvalidArgumentError(
        absl::StrCat(Describe(), " Backward: gradient layout ", LayoutName(grad_output.layout()),
                     " does not match the output's ", LayoutName(p->dst_layout)));
  }
  const memory diff_dst(p->dst, context_->engine(), const_cast<void*>(grad_output.raw_data()));
  memory diff_dst_for_weights;
  RETURN_IF_ERROR(BackwardWeights(*p, input, grad_output, diff_dst, &diff_dst_for_weights));
  if (grad_input == nullptr) return absl::OkStatus();
  return BackwardData(*p, input, diff_dst, diff_dst_for_weights, grad_input);
}

absl::Status Conv2dLayer::BackwardWeights(const Primitives& p, const Tensor& input,
                                          const Tensor& grad_output, const memory& diff_dst,
                                          memory* diff_dst_used) {
  if (p.im2col_weights != nullptr) {
    *diff_dst_used = diff_dst;
    return p.im2col_weights->Run(input, grad_output, weight_.grad.data(), bias_.grad.data());
  }
  const dnnl::engine& engine = context_->engine();
  const memory src(p.src, engine, const_cast<void*>(input.raw_data()));
  // The forward pass reordered this very input already when it wanted the
  // same layout.
  const bool reuse = p.weights_src.needed && p.forward_src.needed &&
                     p.forward_src.inner == p.weights_src.inner &&
                     last_input_ == input.raw_data() && last_input_shape_ == input.shape() &&
                     last_input_bf16_ == (precision_ == Precision::kBF16);
  memory src_used = p.forward_src.buffer;
  if (!reuse) {
    ASSIGN_OR_RETURN(src_used, ToInner("convolution src reorder", p.weights_src, src));
  }
  ASSIGN_OR_RETURN(*diff_dst_used,
                   ToInner("convolution diff_dst reorder", p.weights_diff_dst, diff_dst));
  const memory diff_weights(p.weights, engine, weight_.grad.data());
  const memory diff_weights_used =
      p.weights_diff_weights.needed ? p.weights_diff_weights.buffer : diff_weights;
  RETURN_IF_ERROR(
      context_->Execute("convolution backward (weights)", p.backward_weights,
                        {{DNNL_ARG_SRC, src_used},
                         {DNNL_ARG_DIFF_DST, *diff_dst_used},
                         {DNNL_ARG_DIFF_WEIGHTS, diff_weights_used},
                         {DNNL_ARG_DIFF_BIAS, memory(p.bias, engine, bias_.grad.data())}}));
  return FromInner("convolution diff_weights reorder", p.weights_diff_weights, diff_weights_used,
                   diff_weights);
}

absl::Status Conv2dLayer::BackwardData(const Primitives& p, const Tensor& input,
                                       const memory& diff_dst, const memory& diff_dst_for_weights,
                                       Tensor* grad_input) {
  const dnnl::engine& engine = context_->engine();
  grad_input->Reshape(input.shape(), input.dtype());
  grad_input->SetLayout(input.layout());
  const memory diff_src(p.src, engine, grad_input->raw_data());
  // The weights pass's reordered dL/doutput, when it is in the same layout.
  memory diff_dst_used = diff_dst_for_weights;
  if (!p.data_diff_dst.needed || !p.weights_diff_dst.needed ||
      p.data_diff_dst.inner != p.weights_diff_dst.inner) {
    ASSIGN_OR_RETURN(diff_dst_used,
                     ToInner("convolution diff_dst reorder", p.data_diff_dst, diff_dst));
  }
  ASSIGN_OR_RETURN(const memory weights_used,
                   ToInner("convolution weights reorder", p.data_weights,
                           memory(p.weights, engine, weight_.value.data())));
  const memory diff_src_used = p.data_diff_src.needed ? p.data_diff_src.buffer : diff_src;
  RETURN_IF_ERROR(context_->Execute("convolution backward (data)", p.backward_data,
                                    {{DNNL_ARG_DIFF_DST, diff_dst_used},
                                     {DNNL_ARG_WEIGHTS, weights_used},
                                     {DNNL_ARG_DIFF_SRC, diff_src_used}}));
  return FromInner("convolution diff_src reorder", p.data_diff_src, diff_src_used, diff_src);
}

}  // namespace distillery
