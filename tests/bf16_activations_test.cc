// bf16 image activations in training (common/nn/layer.h, Element types):
// a bf16 convolution gives its training output in bf16 when told, and batch
// norm and pooling train on bf16 inputs, giving their outputs and taking
// and giving gradients in bf16, each within one bf16 rounding of the same
// f32 pass on the same (bf16-representable) values; the layout bridge
// converts a bf16 activation for a layer that does not take it and its
// gradient back; a network trains on them reproducibly.
//
// Why one rounding: a layer that takes values already representable in
// bf16 computes in f32 as its f32 twin does and rounds its result once to
// nearest, which moves it by at most half a bf16 ulp (2^-8 of itself); the
// two kernels may sum in another order, so a result near a rounding
// boundary may land one ulp away: 2^-7 of itself, plus a little for f32.
//
// Needs a CPU with native bf16 (oneDNN ISA avx512_core_bf16 or above);
// skipped, saying so, elsewhere.
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "common/nn/layers/batch_norm_layer.h"
#include "common/nn/layers/conv2d_layer.h"
#include "common/nn/layers/flatten_layer.h"
#include "common/nn/layers/pool2d_layer.h"
#include "common/nn/layout_bridge.h"
#include "common/nn/network.h"
#include "common/tensor/dnnl_context.h"
#include "common/tensor/precision.h"
#include "gtest/gtest.h"
#include "tests/layer_test_util.h"

namespace distillery {
namespace {

constexpr Layout kImageLayouts[] = {Layout::kPlain, Layout::kBlocked16, Layout::kChannelsLast};

// `t` rounded to bf16, in `layout`.
Tensor Bf16Of(DnnlContext& context, const Tensor& t, Layout layout) {
  Tensor out;
  EXPECT_TRUE(context.Convert(t, layout, DataType::kBF16, &out).ok());
  return out;
}

// `t`'s values in plain f32 (exact for bf16).
Tensor PlainF32(DnnlContext& context, const Tensor& t) {
  Tensor out;
  EXPECT_TRUE(context.Convert(t, Layout::kPlain, DataType::kF32, &out).ok());
  return out;
}

// `t` in `layout`, f32.
Tensor F32In(DnnlContext& context, const Tensor& t, Layout layout) {
  Tensor out;
  EXPECT_TRUE(context.Convert(t, layout, DataType::kF32, &out).ok());
  return out;
}

// Every element of the bf16 tensor `rounded` within one bf16 rounding
// (see the file comment) of the f32 tensor `exact`, both in any layout.
void ExpectOneRounding(DnnlContext& context, const char* what, const Tensor& rounded,
                       const Tensor& exact) {
  ASSERT_EQ(rounded.dtype(), DataType::kBF16) << what;
  ASSERT_EQ(rounded.shape(), exact.shape()) << what;
  const Tensor r = PlainF32(context, rounded), e = PlainF32(context, exact);
  for (int64_t i = 0; i < e.size(); ++i) {
    ASSERT_NEAR(r.data()[i], e.data()[i], std::abs(e.data()[i]) / 128 + 1e-6)
        << what << " element " << i;
  }
}

TEST(Bf16ActivationsTest, BatchNormTrainsOnBf16WithinOneRoundingOfF32) {
  SKIP_WITHOUT_BF16();
  DnnlContext context;
  for (const Layout layout : kImageLayouts) {
    for (const bool relu : {false, true}) {
      SCOPED_TRACE(std::string(LayoutName(layout)) + (relu ? ", fused ReLU" : ""));
      BatchNormLayer f32(0, 16, &context), bf16(0, 16, &context);
      for (BatchNormLayer* bn : {&f32, &bf16}) {
        bn->gamma().value = RandomTensor({1, 16}, 1, 2.f);
        bn->beta().value = RandomTensor({1, 16}, 2);
        ASSERT_TRUE(bn->SetFusedRelu(relu));
      }
      EXPECT_TRUE(bf16.TakesBf16InTraining());
      const Tensor input = Bf16Of(context, RandomTensor({4, 16, 6, 6}, 3, 3.f), layout);
      const Tensor grad = Bf16Of(context, RandomTensor({4, 16, 6, 6}, 4), layout);
      const Tensor input_f32 = F32In(context, input, layout);
      const Tensor grad_f32 = F32In(context, grad, layout);
      Tensor exact, rounded, exact_grad, rounded_grad;
      ASSERT_TRUE(f32.Forward(input_f32, true, &exact).ok());
      ASSERT_TRUE(bf16.Forward(input, true, &rounded).ok());
      EXPECT_EQ(rounded.layout(), layout);
      ExpectOneRounding(context, "output", rounded, exact);
      ASSERT_TRUE(f32.Backward(input_f32, exact, grad_f32, &exact_grad).ok());
      const absl::Status s = bf16.Backward(input, rounded, grad, &rounded_grad);
      ASSERT_TRUE(s.ok()) << s;
      EXPECT_EQ(rounded_grad.layout(), layout);
      ExpectOneRounding(context, "dL/dinput", rounded_grad, exact_grad);
      // The statistics and the parameter gradients are f32 sums over the
      // same values.
      for (int64_t c = 0; c < 16; ++c) {
        EXPECT_NEAR(bf16.running_mean().data()[c], f32.running_mean().data()[c], 1e-5);
        EXPECT_NEAR(bf16.running_var().data()[c], f32.running_var().data()[c], 1e-4);
        EXPECT_NEAR(bf16.gamma().grad.data()[c], f32.gamma().grad.data()[c],
                    1e-4 * (1 + std::abs(f32.gamma().grad.data()[c])));
        EXPECT_NEAR(bf16.beta().grad.data()[c], f32.beta().grad.data()[c],
                    1e-4 * (1 + std::abs(f32.beta().grad.data()[c])));
      }
      // A gradient of the other type is refused.
      EXPECT_EQ(bf16.Backward(input, rounded, grad_f32, &rounded_grad).code(),
                absl::StatusCode::kInvalidArgument);
    }
  }
}

TEST(Bf16ActivationsTest, MaxPoolingTrainsOnBf16Exactly) {
  SKIP_WITHOUT_BF16();
  DnnlContext context;
  for (const Layout layout : kImageLayouts) {
    SCOPED_TRACE(LayoutName(layout));
    Pool2dLayer f32(Pool2dOptions{}, &context), bf16(Pool2dOptions{}, &context);
    bf16.SetPrecision(Precision::kBF16);
    const Tensor input = Bf16Of(context, DistinctTensor({3, 16, 8, 8}, 5), layout);
    const Tensor grad = Bf16Of(context, RandomTensor({3, 16, 4, 4}, 6), layout);
    const Tensor input_f32 = F32In(context, input, layout);
    Tensor exact, rounded, exact_grad, rounded_grad;
    ASSERT_TRUE(f32.Forward(input_f32, true, &exact).ok());
    ASSERT_TRUE(bf16.Forward(input, true, &rounded).ok());
    ASSERT_EQ(rounded.dtype(), DataType::kBF16);
    // The maxima and the routed gradients are values of the inputs.
    EXPECT_EQ(rounded, Bf16Of(context, exact, layout));
    ASSERT_TRUE(f32.Backward(input_f32, exact, F32In(context, grad, layout), &exact_grad).ok());
    const absl::Status s = bf16.Backward(input, rounded, grad, &rounded_grad);
    ASSERT_TRUE(s.ok()) << s;
    EXPECT_EQ(rounded_grad, Bf16Of(context, exact_grad, layout));
  }
}

TEST(Bf16ActivationsTest, ConvolutionGivesAndTakesBf16InTraining) {
  SKIP_WITHOUT_BF16();
  DnnlContext context;
  Conv2dOptions o;
  o.in_channels = 16;
  o.out_channels = 32;
  o.kernel_rows = o.kernel_cols = 3;
  o.pad_rows = o.pad_cols = 1;
  for (const Layout layout : kImageLayouts) {
    SCOPED_TRACE(LayoutName(layout));
    // `twin` computes the same bf16 products with an f32 output and f32
    // gradients around it.
    Conv2dLayer twin(0, o, &context), conv(0, o, &context);
    for (Conv2dLayer* c : {&twin, &conv}) {
      c->weight().value = RandomTensor(c->weight().value.shape(), 7, 0.3f);
      c->bias().value = RandomTensor(c->bias().value.shape(), 8);
      c->SetPrecision(Precision::kBF16);
      c->AllowBlockedOutput(true);
    }
    EXPECT_TRUE(conv.TakesBf16InTraining());
    ASSERT_TRUE(conv.SetTrainingOutputBf16(true));
    const Tensor input = Bf16Of(context, RandomTensor({4, 16, 7, 7}, 9), layout);
    const Tensor input_f32 = F32In(context, input, layout);
    Tensor exact, rounded;
    ASSERT_TRUE(twin.Forward(input_f32, true, &exact).ok());
    ASSERT_TRUE(conv.Forward(input, true, &rounded).ok());
    ExpectOneRounding(context, "output", rounded, exact);
    const Tensor grad = Bf16Of(context, RandomTensor({4, 32, 7, 7}, 10), rounded.layout());
    Tensor exact_grad, rounded_grad;
    ASSERT_TRUE(
        twin.Backward(input_f32, exact, F32In(context, grad, exact.layout()), &exact_grad).ok());
    const absl::Status s = conv.Backward(input, rounded, grad, &rounded_grad);
    ASSERT_TRUE(s.ok()) << s;
    EXPECT_EQ(rounded_grad.layout(), layout);
    ExpectOneRounding(context, "dL/dinput", rounded_grad, exact_grad);
    // The parameter gradients are f32 from the same bf16 operands.
    EXPECT_EQ(conv.weight().grad.dtype(), DataType::kF32);
    ExpectNear(conv.weight().grad, twin.weight().grad, 1e-4);
    ExpectNear(conv.bias().grad, twin.bias().grad, 1e-4);
    // An inference Forward is unchanged: f32 output unless asked otherwise.
    Tensor inferred;
    ASSERT_TRUE(conv.Forward(input, false, &inferred).ok());
    EXPECT_EQ(inferred.dtype(), DataType::kF32);
  }
  // In f32 a bf16 input is refused in both passes.
  Conv2dLayer f32(0, o, &context);
  const Tensor input = Bf16Of(context, RandomTensor({2, 16, 5, 5}, 11), Layout::kPlain);
  Tensor out;
  EXPECT_FALSE(f32.TakesBf16InTraining());
  EXPECT_EQ(f32.Forward(input, true, &out).code(), absl::StatusCode::kInvalidArgument);
}

TEST(Bf16ActivationsTest, TheBridgeConvertsForALayerThatTrainsInF32) {
  SKIP_WITHOUT_BF16();
  DnnlContext context;
  FlattenLayer flatten;
  flatten.SetPrecision(Precision::kBF16);
  ASSERT_FALSE(flatten.TakesBf16InTraining());
  const Tensor input = Bf16Of(context, RandomTensor({3, 16, 2, 2}, 12), Layout::kChannelsLast);
  Tensor plain_input, output, scratch, grad_input;
  const Tensor* seen = nullptr;
  ASSERT_TRUE(ForwardInLayout(flatten, input, true, &context, &plain_input, &seen, &output).ok());
  EXPECT_EQ(seen, &plain_input);
  EXPECT_EQ(output.dtype(), DataType::kF32);
  const Tensor widened = PlainF32(context, input);
  for (int64_t i = 0; i < output.size(); ++i) ASSERT_EQ(output.data()[i], widened.data()[i]);
  const Tensor grad = RandomTensor({3, 64}, 13);
  ASSERT_TRUE(
      BackwardInLayout(flatten, input, *seen, output, grad, &context, &scratch, &grad_input).ok());
  // The gradient comes back in the input's layout and type.
  EXPECT_EQ(grad_input.dtype(), DataType::kBF16);
  EXPECT_EQ(grad_input.layout(), Layout::kChannelsLast);
  Tensor grad_image = grad;
  ASSERT_TRUE(grad_image.Reinterpret({3, 16, 2, 2}));
  EXPECT_EQ(grad_input, Bf16Of(context, grad_image, Layout::kChannelsLast));
}

// A convolutional network trains on bf16 activations to the same bits
// twice, and its gradients point where f32's do.
TEST(Bf16ActivationsTest, NetworkTrainsReproduciblyCloseToF32) {
  SKIP_WITHOUT_BF16();
  const NetworkSpec spec =
      *NetworkSpec::Parse("conv5x5:16/same+bn,pool2,conv3x3:32/same+bn,pool2,fc:10", {1, 12, 12});
  Tensor input = RandomMatrix(16, 144, 14, 1.f);
  ASSERT_TRUE(input.Reinterpret({16, 1, 12, 12}));
  const Tensor grad_logits = RandomMatrix(16, 10, 15, 0.1f);
  auto gradients = [&](Precision precision) {
    auto network = *Network::Create(spec, 3);
    network->SetPrecision(precision);
    std::vector<Tensor> grads;
    for (int step = 0; step < 2; ++step) {  // the second on bf16 weights made again
      const Tensor* logits = nullptr;
      EXPECT_TRUE(network->Forward(input, true, step, &logits).ok());
      EXPECT_EQ(logits->dtype(), DataType::kF32);
      // conv, bn (its ReLU fused), relu, pool, conv, bn, relu, pool,
      // flatten, fc: the image activations are bf16 in bf16.
      const DataType image = precision == Precision::kBF16 ? DataType::kBF16 : DataType::kF32;
      for (size_t layer : {0, 1, 2, 3, 4, 5, 6, 7}) {
        EXPECT_EQ(network->ForwardOutputType(layer), image) << "layer " << layer;
      }
      EXPECT_EQ(network->ForwardOutputType(8), DataType::kF32);
      const absl::Status s = network->Backward(grad_logits);
      EXPECT_TRUE(s.ok()) << s;
    }
    for (Parameter* p : network->Parameters()) grads.push_back(p->grad);
    return grads;
  };
  const std::vector<Tensor> exact = gradients(Precision::kF32);
  const std::vector<Tensor> once = gradients(Precision::kBF16), twice = gradients(Precision::kBF16);
  ASSERT_EQ(once.size(), exact.size());
  for (size_t i = 0; i < once.size(); ++i) {
    EXPECT_EQ(once[i], twice[i]) << "parameter " << i;
    double dot = 0, ee = 0, rr = 0;
    for (int64_t k = 0; k < exact[i].size(); ++k) {
      dot += double{exact[i].data()[k]} * once[i].data()[k];
      ee += double{exact[i].data()[k]} * exact[i].data()[k];
      rr += double{once[i].data()[k]} * once[i].data()[k];
    }
    // The biases before batch norm have gradients of ~0 either way.
    if (ee > 1e-8) {
      EXPECT_GT(dot / std::sqrt(ee * rr), 0.98) << "parameter " << i;
    }
  }
}

}  // namespace
}  // namespace distillery
