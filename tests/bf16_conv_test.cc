// A bf16 convolution (Conv2dLayer::SetPrecision) within the rounding bound
// of its f32 twin, forward and backward, in every layout and on the shapes
// of a first layer (one input channel) and of hidden ones (several, and
// grouped); an inference pass between Forward and Backward changes nothing.
//
// The bound: rounding to bf16 (8 significant bits, to nearest) moves a
// value by at most 2^-8 of itself, so a product of two rounded operands by
// at most about 2^-7 of itself, and an f32 sum of such products by at most
// 2^-7 * sum |a b| (plus f32 rounding, in the 1e-5). The sums of |a b| are
// what the f32 layer computes from the operands' absolute values, since
// every output of a convolution and of its two gradients is a sum of
// products of one operand of each kind. The bias gradient sums rounded
// gradients only: at most 2^-8 * sum |g|.
//
// Needs a CPU with native bf16 (oneDNN ISA avx512_core_bf16 or above);
// skipped, saying so, elsewhere.
#include <cmath>
#include <string>
#include <vector>

#include "common/nn/layers/conv2d_layer.h"
#include "common/tensor/dnnl_context.h"
#include "common/tensor/precision.h"
#include "gtest/gtest.h"
#include "tests/layer_test_util.h"

namespace distillery {
namespace {

struct Pass {
  Tensor output, grad_input, grad_weight, grad_bias;
};

// Forward (training) then Backward of `layer` with `weight` and `bias` on
// `input` and `grad_output`; with `infer_between`, an inference Forward on
// other images of the same shape comes between them, as an evaluation may.
Pass TrainingPass(Conv2dLayer& layer, const Tensor& weight, const Tensor& bias, const Tensor& input,
                  const Tensor& grad_output, bool infer_between = false) {
  layer.weight().value = weight;
  layer.bias().value = bias;
  layer.ParametersChanged();
  Pass pass;
  EXPECT_TRUE(layer.Forward(input, /*training=*/true, &pass.output).ok());
  if (infer_between) {
    Tensor other;
    EXPECT_TRUE(layer.Forward(RandomTensor(input.shape(), 99), false, &other).ok());
  }
  const absl::Status s = layer.Backward(input, pass.output, grad_output, &pass.grad_input);
  EXPECT_TRUE(s.ok()) << s;
  pass.grad_weight = layer.weight().grad;
  pass.grad_bias = layer.bias().grad;
  return pass;
}

Tensor Abs(Tensor t) {
  for (int64_t i = 0; i < t.size(); ++i) t.data()[i] = std::abs(t.data()[i]);
  return t;
}

// How many elements of `rounded` differ from `exact`, each checked within
// bound[i] * `fraction` + 1e-5.
int64_t ExpectWithin(const char* what, const Tensor& rounded, const Tensor& exact,
                     const Tensor& bound, double fraction) {
  EXPECT_EQ(rounded.shape(), exact.shape()) << what;
  int64_t differ = 0;
  for (int64_t i = 0; i < exact.size() && i < rounded.size(); ++i) {
    EXPECT_NEAR(rounded.data()[i], exact.data()[i], bound.data()[i] * fraction + 1e-5)
        << what << " element " << i;
    differ += rounded.data()[i] != exact.data()[i];
  }
  return differ;
}

struct Case {
  const char* name;
  Conv2dOptions options;
  Shape input;
};

std::vector<Case> Cases() {
  Conv2dOptions first;  // LeNet's first layer: one channel, 5x5, pad 2
  first.out_channels = 16;
  first.kernel_rows = first.kernel_cols = 5;
  first.pad_rows = first.pad_cols = 2;
  Conv2dOptions hidden;
  hidden.in_channels = 16;
  hidden.out_channels = 32;
  hidden.kernel_rows = hidden.kernel_cols = 3;
  hidden.pad_rows = hidden.pad_cols = 1;
  Conv2dOptions strided = hidden;
  strided.stride_rows = strided.stride_cols = 2;
  strided.groups = 2;
  return {{"first layer 1->16 5x5", first, {6, 1, 14, 14}},
          {"hidden 16->32 3x3", hidden, {5, 16, 9, 9}},
          {"hidden 16->32 3x3 stride 2 groups 2", strided, {5, 16, 9, 9}}};
}

TEST(Bf16ConvTest, ForwardAndBackwardAreWithinTheRoundingBoundOfF32) {
  SKIP_WITHOUT_BF16();
  DnnlContext context;
  for (const Case& c : Cases()) {
    for (ConvLayout layout : {ConvLayout::kPlain, ConvLayout::kBlocked, ConvLayout::kAuto}) {
      SCOPED_TRACE(std::string(c.name) + ", " + LayoutName(layout));
      Conv2dOptions o = c.options;
      o.layout = layout;
      Conv2dLayer f32(0, o, &context), bf16(0, o, &context), bound(0, o, &context);
      bf16.SetPrecision(Precision::kBF16);
      const Tensor weight = RandomTensor(f32.weight().value.shape(), 1, 0.3f);
      const Tensor bias = RandomTensor(f32.bias().value.shape(), 2);
      const Tensor input = RandomTensor(c.input, 3);
      auto shape = f32.OutputShape({c.input[1], c.input[2], c.input[3]});
      ASSERT_TRUE(shape.ok()) << shape.status();
      const Tensor grad = RandomTensor({c.input[0], (*shape)[0], (*shape)[1], (*shape)[2]}, 4);
      const Pass exact = TrainingPass(f32, weight, bias, input, grad);
      const Pass rounded = TrainingPass(bf16, weight, bias, input, grad);
      // The sums of |a b|: the same passes on absolute values, bias zero.
      const Pass magnitude =
          TrainingPass(bound, Abs(weight), Tensor(bias.shape()), Abs(input), Abs(grad));
      int64_t differ = 0;
      differ += ExpectWithin("output", rounded.output, exact.output, magnitude.output, 1.0 / 128);
      differ += ExpectWithin("dL/dinput", rounded.grad_input, exact.grad_input,
                             magnitude.grad_input, 1.0 / 128);
      differ += ExpectWithin("dL/dW", rounded.grad_weight, exact.grad_weight, magnitude.grad_weight,
                             1.0 / 128);
      differ +=
          ExpectWithin("dL/db", rounded.grad_bias, exact.grad_bias, magnitude.grad_bias, 1.0 / 256);
      EXPECT_GT(differ, 0) << "the bf16 passes computed in f32";
      // An inference Forward between Forward and Backward changes nothing.
      Conv2dLayer again(0, o, &context);
      again.SetPrecision(Precision::kBF16);
      const Pass interleaved =
          TrainingPass(again, weight, bias, input, grad, /*infer_between=*/true);
      EXPECT_TRUE(interleaved.grad_input == rounded.grad_input);
      EXPECT_TRUE(interleaved.grad_weight == rounded.grad_weight);
      EXPECT_TRUE(interleaved.grad_bias == rounded.grad_bias);
    }
  }
}

}  // namespace
}  // namespace distillery
