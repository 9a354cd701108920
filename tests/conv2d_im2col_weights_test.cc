// Im2colWeightGradient: a one-channel convolution's weight and bias
// gradients from a bf16 channels-last dL/doutput, against sums in double
// over every output position, for padding, strides, dilation and batches
// that do and do not split into even chunks; and Applies' conditions.
#include "common/nn/layers/conv2d_im2col_weights.h"

#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/tensor/dnnl_context.h"
#include "common/tensor/precision.h"
#include "gtest/gtest.h"
#include "tests/layer_test_util.h"

namespace distillery {
namespace {

struct Case {
  const char* name;
  int64_t batch, rows, cols, out_channels, kernel, stride, pad, dilation;
};

// Output size along one axis (Conv2dLayer's formula).
int64_t OutSize(int64_t in, const Case& c) {
  return (in + 2 * c.pad - c.dilation * (c.kernel - 1) - 1) / c.stride + 1;
}

TEST(Im2colWeightGradientTest, MatchesSumsOverEveryPosition) {
  // Only bf16 passes use it, and they need native bf16.
  if (!CpuHasNativeBf16()) GTEST_SKIP() << "oneDNN ISA " << CpuIsaName() << " has no bf16";
  DnnlContext context;
  uint64_t seed = 700;
  for (const Case& c : {Case{"MNIST's first layer", 16, 28, 28, 32, 5, 1, 2, 1},
                        Case{"odd batch and sizes", 7, 9, 11, 5, 3, 1, 1, 1},
                        Case{"stride 2, wide padding", 6, 10, 9, 4, 3, 2, 2, 1},
                        Case{"dilation 2, no padding", 10, 12, 12, 3, 3, 1, 0, 2},
                        Case{"batch of one", 1, 6, 6, 2, 2, 2, 0, 1}}) {
    SCOPED_TRACE(c.name);
    Conv2dOptions o;
    o.out_channels = c.out_channels;
    o.kernel_rows = o.kernel_cols = c.kernel;
    o.stride_rows = o.stride_cols = c.stride;
    o.pad_rows = o.pad_cols = c.pad;
    o.dilation_rows = o.dilation_cols = c.dilation;
    const int64_t out_rows = OutSize(c.rows, c), out_cols = OutSize(c.cols, c);
    const Shape in_shape = {c.batch, 1, c.rows, c.cols};
    const Shape out_shape = {c.batch, c.out_channels, out_rows, out_cols};
    const Tensor input = RandomTensor(in_shape, ++seed);
    Tensor grad_plain, grad;
    ASSERT_TRUE(
        context
            .Convert(RandomTensor(out_shape, ++seed), Layout::kPlain, DataType::kBF16, &grad_plain)
            .ok());
    ASSERT_TRUE(context.ConvertLayout(grad_plain, Layout::kChannelsLast, &grad).ok());
    ASSERT_TRUE(Im2colWeightGradient::Applies(o, grad.dtype(), grad.layout()));

    Im2colWeightGradient gradient(o, in_shape, out_shape, &context);
    std::vector<float> weight_grad(static_cast<size_t>(c.out_channels * c.kernel * c.kernel), 7.f);
    std::vector<float> bias_grad(static_cast<size_t>(c.out_channels), 7.f);
    ASSERT_TRUE(gradient.Run(input, grad, weight_grad.data(), bias_grad.data()).ok());

    // The sums in double of the same bf16 factors; the tolerance is f32
    // rounding over the sum of the terms' magnitudes.
    for (int64_t ch = 0; ch < c.out_channels; ++ch) {
      double bias = 0, bias_magnitude = 0;
      for (int64_t t = 0; t < c.kernel * c.kernel; ++t) {
        const int64_t i = t / c.kernel, j = t % c.kernel;
        double sum = 0, magnitude = 0;
        for (int64_t n = 0; n < c.batch; ++n) {
          for (int64_t y = 0; y < out_rows; ++y) {
            for (int64_t x = 0; x < out_cols; ++x) {
              const float g = FloatFromBf16(
                  grad_plain
                      .bf16_data()[((n * c.out_channels + ch) * out_rows + y) * out_cols + x]);
              if (t == 0) bias += g, bias_magnitude += std::fabs(g);
              const int64_t r = y * c.stride - c.pad + i * c.dilation;
              const int64_t s = x * c.stride - c.pad + j * c.dilation;
              if (r < 0 || r >= c.rows || s < 0 || s >= c.cols) continue;
              const double v =
                  FloatFromBf16(Bf16FromFloat(input.data()[(n * c.rows + r) * c.cols + s]));
              sum += v * g;
              magnitude += std::fabs(v * g);
            }
          }
        }
        EXPECT_NEAR(weight_grad[static_cast<size_t>(ch * c.kernel * c.kernel + t)], sum,
                    1e-6 * magnitude + 1e-30)
            << "channel " << ch << " tap " << t;
      }
      EXPECT_NEAR(bias_grad[static_cast<size_t>(ch)], bias, 1e-6 * bias_magnitude + 1e-30)
          << "channel " << ch;
    }

    // A bf16 input gives the same bits: the columns hold the f32 input
    // rounded to bf16.
    Tensor input_bf16;
    ASSERT_TRUE(context.Convert(input, Layout::kPlain, DataType::kBF16, &input_bf16).ok());
    std::vector<float> weight_again(weight_grad.size()), bias_again(bias_grad.size());
    ASSERT_TRUE(gradient.Run(input_bf16, grad, weight_again.data(), bias_again.data()).ok());
    EXPECT_EQ(weight_again, weight_grad);
    EXPECT_EQ(bias_again, bias_grad);
  }
}

TEST(Im2colWeightGradientTest, AppliesToOneChannelBf16ChannelsLastOnly) {
  Conv2dOptions o;
  o.out_channels = 8;
  EXPECT_TRUE(Im2colWeightGradient::Applies(o, DataType::kBF16, Layout::kChannelsLast));
  EXPECT_FALSE(Im2colWeightGradient::Applies(o, DataType::kF32, Layout::kChannelsLast));
  EXPECT_FALSE(Im2colWeightGradient::Applies(o, DataType::kBF16, Layout::kBlocked16));
  EXPECT_FALSE(Im2colWeightGradient::Applies(o, DataType::kBF16, Layout::kPlain));
  o.in_channels = 2;
  EXPECT_FALSE(Im2colWeightGradient::Applies(o, DataType::kBF16, Layout::kChannelsLast));
}

}  // namespace
}  // namespace distillery
