// The convolution's bf16 inference path (conv2d_layer.h: TakesBf16,
// SetInferenceOutput, SetInferenceAffine): its own primitive per input
// shape and setting, the batch norm folded into the weights and bias, the
// ReLU as a post-op, and bf16 channel-blocked output. The training path
// and the f32 forward are in conv2d_layer.cc.
#include <algorithm>
#include <optional>

#include "common/nn/layers/conv2d_internal.h"
#include "common/nn/layers/conv2d_layer.h"

namespace distillery {

using dnnl::memory;
using namespace conv2d_internal;  // NOLINT: the layer's own descriptor helpers

bool Conv2dLayer::SetInferenceOutput(bool relu, DataType type) {
  const bool bf16_output = type == DataType::kBF16;
  if ((relu || bf16_output) && precision_ != Precision::kBF16) return false;
  inference_relu_ = relu;
  inference_bf16_output_ = bf16_output;
  return true;
}

bool Conv2dLayer::SetInferenceAffine(const Tensor* scale, const Tensor* shift) {
  if (scale == nullptr || shift == nullptr) {
    inference_affine_ = false;
    return scale == nullptr;
  }
  const int64_t c = options_.out_channels;
  if (precision_ != Precision::kBF16 || scale->dtype() != DataType::kF32 ||
      shift->dtype() != DataType::kF32 || scale->size() != c || shift->size() != c) {
    return false;
  }
  inference_scale_.Reshape({1, c});
  inference_shift_.Reshape({1, c});
  std::copy(scale->data(), scale->data() + c, inference_scale_.data());
  std::copy(shift->data(), shift->data() + c, inference_shift_.data());
  inference_affine_ = true;
  return true;
}

ForwardPd Conv2dLayer::InferenceDesc(const memory::desc& src, const memory::desc& weights,
                                     const memory::desc& bias, const memory::desc& dst) const {
  const Geometry g(options_);
  dnnl::post_ops post_ops;
  if (inference_relu_) post_ops.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
  dnnl::primitive_attr attr;
  attr.set_post_ops(post_ops);
  return ForwardPd(dnnl::convolution_forward::desc(
                       dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, src,
                       weights, bias, dst, g.strides, g.dilates, g.padding, g.padding),
                   attr, context_->engine());
}

absl::StatusOr<Conv2dLayer::InferencePrimitives> Conv2dLayer::BuildInference(
    const Tensor& input) const {
  absl::StatusOr<Shape> out = OutputShape({input.dim(1), input.dim(2), input.dim(3)});
  if (!out.ok()) return out.status();
  const Conv2dOptions& o = options_;
  InferencePrimitives p;
  const Shape out_shape = {input.dim(0), o.out_channels, (*out)[1], (*out)[2]};
  const memory::desc plain_src = TensorDesc(input.shape());
  const memory::desc plain_dst = TensorDesc(out_shape);
  p.src = TensorDesc(input.shape(), input.layout(), input.dtype());
  p.weights = WeightsDesc();
  p.bias = PlainVectorDesc(o.out_channels);
  p.dst_type = inference_bf16_output_ ? DataType::kBF16 : DataType::kF32;
  const memory::data_type dst_type = DnnlType(p.dst_type);
  ForwardPd pd = o.layout == ConvLayout::kPlain
                     ? InferenceDesc(PlainOf(plain_src, kBf16), PlainOf(p.weights, kBf16), p.bias,
                                     PlainOf(plain_dst, dst_type))
                     : InferenceDesc(AnyOf(plain_src, kBf16), AnyOf(p.weights, kBf16), p.bias,
                                     AnyOf(plain_dst, dst_type));
  std::optional<Layout> chosen = LayoutOfDesc(pd.dst_desc());
  // Without AMX, nhwc (which brgconv picks there too) serves slower than the
  // channel blocks: the demo's CNN in bf16 on Zen 4, 1 thread, 27.9-28.8k
  // examples/s in nhwc against 31.4-33.4k in nChw16c (7.5k against 7.9k for
  // the MNIST CNN under ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 on the Xeon). On
  // AMX nhwc is kept: 47k against 8.7k.
  const bool blocks_faster = chosen == Layout::kChannelsLast && !CpuHasAmx();
  if (allow_blocked_output_ && (!chosen.has_value() || blocks_faster)) {
    // A layout the next layers do not take, or a slower one: ask for the
    // channel blocks instead, so that the activations are not reordered.
    for (Layout blocked : {Layout::kBlocked16, Layout::kBlocked8}) {
      if (o.out_channels % LayoutBlock(blocked) != 0) continue;
      pd = InferenceDesc(AnyOf(plain_src, kBf16), AnyOf(p.weights, kBf16), p.bias,
                         TensorDesc(out_shape, blocked, p.dst_type));
      chosen = blocked;
      break;
    }
  }
  p.dst_layout = allow_blocked_output_ && chosen.has_value() ? *chosen : Layout::kPlain;
  p.dst = p.dst_layout == Layout::kPlain ? PlainOf(plain_dst, dst_type) : pd.dst_desc();
  p.forward = dnnl::convolution_forward(pd);
  p.src_bridge = MakeBridge(p.src, pd.src_desc(), true);
  p.weights_bridge = MakeBridge(p.weights, pd.weights_desc(), true);
  p.dst_bridge = MakeBridge(p.dst, pd.dst_desc(), false);
  return p;
}

void Conv2dLayer::FoldAffine(const float** weights, const float** bias) {
  *weights = weight_.value.data();
  *bias = bias_.value.data();
  if (!inference_affine_) return;
  const int64_t channels = options_.out_channels;
  const int64_t per_channel = weight_.value.size() / channels;
  folded_weights_.Reshape(weight_.value.shape());
  folded_bias_.Reshape(bias_.value.shape());
  for (int64_t c = 0; c < channels; ++c) {
    const float scale = inference_scale_.data()[c];
    const float* from = weight_.value.data() + c * per_channel;
    std::transform(from, from + per_channel, folded_weights_.data() + c * per_channel,
                   [scale](float w) { return w * scale; });
    folded_bias_.data()[c] = bias_.value.data()[c] * scale + inference_shift_.data()[c];
  }
  *weights = folded_weights_.data();
  *bias = folded_bias_.data();
}

absl::Status Conv2dLayer::InferBf16(const Tensor& input, Tensor* output) {
  const InferenceKey key = {input.dim(0),
                            input.dim(2),
                            input.dim(3),
                            static_cast<int64_t>(input.layout()),
                            static_cast<int64_t>(input.dtype()),
                            allow_blocked_output_ ? 1 : 0,
                            inference_relu_ ? 1 : 0,
                            inference_bf16_output_ ? 1 : 0};
  InferencePrimitives* p = inference_primitives_.Find(key);
  if (p == nullptr) {
    try {
      absl::StatusOr<InferencePrimitives> built = BuildInference(input);
      if (!built.ok()) return built.status();
      p = inference_primitives_.Insert(key, std::move(*built));
    } catch (const dnnl::error& e) {
      return DnnlErrorToStatus("building convolution inference primitives", e);
    }
  }
  const memory::dims& dims = p->dst.dims();
  output->Reshape({dims[0], dims[1], dims[2], dims[3]}, p->dst_type);
  output->SetLayout(p->dst_layout);
  const float* weights_f32 = nullptr;
  const float* bias_f32 = nullptr;
  FoldAffine(&weights_f32, &bias_f32);
  const dnnl::engine& engine = context_->engine();
  return RunForward(p->forward, p->src_bridge, p->weights_bridge, p->dst_bridge,
                    memory(p->src, engine, const_cast<void*>(input.raw_data())),
                    memory(p->weights, engine, const_cast<float*>(weights_f32)),
                    memory(p->bias, engine, const_cast<float*>(bias_f32)),
                    memory(p->dst, engine, output->raw_data()));
}

}  // namespace distillery
