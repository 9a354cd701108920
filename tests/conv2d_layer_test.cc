// Conv2dLayer: forward against direct loops and gradients against finite
// differences in every layout, parameters, max-norm, shapes and errors.
#include "common/nn/layers/conv2d_layer.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "common/nn/optimizer.h"
#include "common/tensor/dnnl_context.h"
#include "gmock/gmock.h"
#include "tests/layer_test_util.h"
#include "tests/test_util.h"

namespace distillery {
namespace {

using ::testing::HasSubstr;

// The convolution by direct loops (Conv2dLayer's header formula).
Tensor NaiveConv(const Tensor& in, const Tensor& w, const Tensor& b, const Conv2dOptions& o) {
  const int64_t n = in.dim(0), rows = in.dim(2), cols = in.dim(3);
  const int64_t out_rows =
      (rows + 2 * o.pad_rows - o.dilation_rows * (o.kernel_rows - 1) - 1) / o.stride_rows + 1;
  const int64_t out_cols =
      (cols + 2 * o.pad_cols - o.dilation_cols * (o.kernel_cols - 1) - 1) / o.stride_cols + 1;
  const int64_t cg = o.in_channels / o.groups, og = o.out_channels / o.groups;
  Tensor out({n, o.out_channels, out_rows, out_cols});
  auto at = [](const Tensor& t, int64_t a, int64_t bb, int64_t c, int64_t d) {
    return t.data()[((a * t.dim(1) + bb) * t.dim(2) + c) * t.dim(3) + d];
  };
  for (int64_t e = 0; e < n; ++e)
    for (int64_t f = 0; f < o.out_channels; ++f)
      for (int64_t y = 0; y < out_rows; ++y)
        for (int64_t x = 0; x < out_cols; ++x) {
          double sum = b.data()[f];
          const int64_t g = f / og;
          for (int64_t c = 0; c < cg; ++c)
            for (int64_t i = 0; i < o.kernel_rows; ++i)
              for (int64_t j = 0; j < o.kernel_cols; ++j) {
                const int64_t r = y * o.stride_rows - o.pad_rows + i * o.dilation_rows;
                const int64_t s = x * o.stride_cols - o.pad_cols + j * o.dilation_cols;
                if (r < 0 || r >= rows || s < 0 || s >= cols) continue;
                sum += double{at(w, f, c, i, j)} * at(in, e, g * cg + c, r, s);
              }
          out.data()[((e * o.out_channels + f) * out_rows + y) * out_cols + x] =
              static_cast<float>(sum);
        }
  return out;
}

struct ConvCase {
  const char* name;
  Conv2dOptions options;
  Shape input;
};

std::vector<ConvCase> ConvCases() {
  std::vector<ConvCase> cases;
  Conv2dOptions o;
  o.in_channels = 2;
  o.out_channels = 3;
  o.kernel_rows = 3;
  o.kernel_cols = 3;
  cases.push_back({"stride 1, no padding", o, {2, 2, 6, 5}});
  o.pad_rows = o.pad_cols = 1;
  cases.push_back({"stride 1, padding 1", o, {2, 2, 5, 5}});
  o.stride_rows = o.stride_cols = 2;
  cases.push_back({"stride 2, padding 1", o, {2, 2, 7, 6}});
  o.pad_rows = o.pad_cols = 0;
  cases.push_back({"stride 2, no padding", o, {2, 2, 7, 7}});
  Conv2dOptions g;
  g.in_channels = 4;
  g.out_channels = 6;
  g.kernel_rows = 3;
  g.kernel_cols = 2;
  g.stride_rows = 2;
  g.pad_rows = 1;
  g.groups = 2;
  cases.push_back({"groups 2, 3x2 kernel, stride 2x1, pad 1x0", g, {2, 4, 6, 5}});
  Conv2dOptions d;
  d.in_channels = 2;
  d.out_channels = 2;
  d.kernel_rows = d.kernel_cols = 3;
  d.dilation_rows = d.dilation_cols = 2;
  d.pad_rows = d.pad_cols = 1;
  cases.push_back({"dilation 2, padding 1", d, {2, 2, 7, 7}});
  return cases;
}

TEST(Conv2dLayerTest, ForwardMatchesDirectLoops) {
  DnnlContext context;
  uint64_t seed = 100;
  for (const ConvCase& c : ConvCases()) {
    for (ConvLayout layout : kLayouts) {
      SCOPED_TRACE(std::string(c.name) + " " + LayoutName(layout));
      Conv2dOptions o = c.options;
      o.layout = layout;
      Conv2dLayer layer(0, o, &context);
      layer.weight().value = RandomTensor(layer.weight().value.shape(), ++seed);
      layer.bias().value = RandomMatrix(1, o.out_channels, ++seed);
      const Tensor input = RandomTensor(c.input, ++seed);
      Tensor output;
      ASSERT_TRUE(layer.Forward(input, true, &output).ok());
      ExpectNear(output, NaiveConv(input, layer.weight().value, layer.bias().value, o), 1e-5);
      // Again through the cached primitives, with a smaller batch.
      Tensor one({1, c.input[1], c.input[2], c.input[3]});
      std::copy(input.data(), input.data() + one.size(), one.data());
      ASSERT_TRUE(layer.Forward(one, false, &output).ok());
      ExpectNear(output, NaiveConv(one, layer.weight().value, layer.bias().value, o), 1e-5);
    }
  }
}

TEST(Conv2dLayerTest, GradientsMatchFiniteDifferences) {
  DnnlContext context;
  uint64_t seed = 200;
  for (const ConvCase& c : ConvCases()) {
    for (ConvLayout layout : kLayouts) {
      SCOPED_TRACE(std::string(c.name) + " " + LayoutName(layout));
      Conv2dOptions o = c.options;
      o.layout = layout;
      Conv2dLayer layer(3, o, &context);
      layer.weight().value = RandomTensor(layer.weight().value.shape(), ++seed, 0.5f);
      layer.bias().value = RandomMatrix(1, o.out_channels, ++seed);
      seed += 2;
      ExpectLayerGradientsMatch(layer, RandomTensor(c.input, seed), true, seed + 1);
    }
  }
}

TEST(Conv2dLayerTest, BackwardWithoutInputGradientStillGivesWeightGradients) {
  DnnlContext context;
  Conv2dOptions o = ConvCases()[2].options;
  Conv2dLayer a(0, o, &context), b(0, o, &context);
  a.weight().value = b.weight().value = RandomTensor(a.weight().value.shape(), 1);
  const Tensor input = RandomTensor({2, 2, 7, 6}, 2);
  Tensor out_a, out_b, grad_input;
  ASSERT_TRUE(a.Forward(input, true, &out_a).ok());
  ASSERT_TRUE(b.Forward(input, true, &out_b).ok());
  const Tensor projection = RandomTensor(out_a.shape(), 3);
  ASSERT_TRUE(a.Backward(input, out_a, projection, &grad_input).ok());
  ASSERT_TRUE(b.Backward(input, out_b, projection, nullptr).ok());
  EXPECT_EQ(a.weight().grad, b.weight().grad);
  EXPECT_EQ(a.bias().grad, b.bias().grad);
}

TEST(Conv2dLayerTest, ParametersAreNamedAndFlagged) {
  DnnlContext context;
  Conv2dOptions o;
  o.in_channels = 4;
  o.out_channels = 8;
  o.kernel_rows = 5;
  o.kernel_cols = 3;
  o.groups = 2;
  o.max_norm_applies = true;
  Conv2dLayer layer(2, o, &context);
  std::vector<Parameter*> params = layer.Parameters();
  ASSERT_EQ(params.size(), 2u);
  EXPECT_EQ(params[0]->name, "layer2.weight");
  EXPECT_EQ(params[0]->value.shape(), (Shape{8, 2, 5, 3}));
  EXPECT_EQ(params[0]->grad.shape(), (Shape{8, 2, 5, 3}));
  EXPECT_TRUE(params[0]->max_norm_applies);
  EXPECT_TRUE(params[0]->weight_decay_applies);
  EXPECT_EQ(params[1]->name, "layer2.bias");
  EXPECT_EQ(params[1]->value.shape(), (Shape{1, 8}));
  EXPECT_FALSE(params[1]->max_norm_applies);
  EXPECT_FALSE(params[1]->weight_decay_applies);
}

TEST(Conv2dLayerTest, MaxNormClipsEachFiltersIncomingWeights) {
  DnnlContext context;
  Conv2dOptions o;
  o.in_channels = 4;
  o.out_channels = 3;
  o.kernel_rows = o.kernel_cols = 3;
  o.groups = 2;
  o.max_norm_applies = true;
  Conv2dLayer layer(0, o, &context);
  Tensor& w = layer.weight().value;
  w = RandomTensor(w.shape(), 5);
  // Filter 1 short enough to keep, the others longer than the limit.
  for (int64_t j = 0; j < w.cols(); ++j) w.at(1, j) *= 0.01f;
  const Tensor before = w;
  ApplyMaxNorm(1.f, &w);
  ASSERT_EQ(w.cols(), 2 * 3 * 3);  // a filter's incoming weights
  for (int64_t f = 0; f < 3; ++f) {
    double norm = 0, norm_before = 0;
    for (int64_t j = 0; j < w.cols(); ++j) {
      norm += double{w.at(f, j)} * w.at(f, j);
      norm_before += double{before.at(f, j)} * before.at(f, j);
    }
    EXPECT_NEAR(std::sqrt(norm), std::min(1.0, std::sqrt(norm_before)), 1e-5) << "filter " << f;
  }
}

TEST(Conv2dLayerTest, OutputShapeAndDescribe) {
  DnnlContext context;
  Conv2dOptions o;
  o.in_channels = 1;
  o.out_channels = 32;
  o.kernel_rows = o.kernel_cols = 5;
  Conv2dLayer valid(0, o, &context);
  EXPECT_EQ(valid.Describe(), "Conv2d(1->32, 5x5, stride 1, pad 0)");
  EXPECT_EQ(*valid.OutputShape({1, 28, 28}), (Shape{32, 24, 24}));
  o.pad_rows = o.pad_cols = 2;
  Conv2dLayer same(0, o, &context);
  EXPECT_EQ(same.Describe(), "Conv2d(1->32, 5x5, stride 1, pad 2)");
  EXPECT_EQ(*same.OutputShape({1, 28, 28}), (Shape{32, 28, 28}));
  o.stride_rows = 2;
  o.stride_cols = 3;
  o.dilation_rows = o.dilation_cols = 2;
  Conv2dLayer odd(0, o, &context);
  EXPECT_EQ(odd.Describe(), "Conv2d(1->32, 5x5, stride 2x3, pad 2, dilation 2)");
  // Span 9: (28 + 4 - 9) / 2 + 1 = 12, (28 + 4 - 9) / 3 + 1 = 8.
  EXPECT_EQ(*odd.OutputShape({1, 28, 28}), (Shape{32, 12, 8}));
}

TEST(Conv2dLayerTest, RejectsInputsThatDoNotFit) {
  DnnlContext context;
  Conv2dOptions o;
  o.in_channels = 1;
  o.out_channels = 4;
  o.kernel_rows = o.kernel_cols = 5;
  Conv2dLayer layer(0, o, &context);
  // A 5x5 kernel on a 3x3 image.
  absl::StatusOr<Shape> small = layer.OutputShape({1, 3, 3});
  EXPECT_EQ(small.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(small.status().message(), HasSubstr("Conv2d(1->4, 5x5"));
  EXPECT_THAT(small.status().message(), HasSubstr("(1, 3, 3)"));
  // Wrong channel count, and a 2-D example.
  EXPECT_THAT(layer.OutputShape({3, 28, 28}).status().message(), HasSubstr("(3, 28, 28)"));
  EXPECT_EQ(layer.OutputShape({784}).status().code(), absl::StatusCode::kInvalidArgument);
  Tensor output, grad;
  // A 2-D input to Forward and Backward.
  Tensor flat(2, 784);
  absl::Status s = layer.Forward(flat, true, &output);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("(2, 784)"));
  EXPECT_EQ(layer.Backward(flat, output, output, &grad).code(), absl::StatusCode::kInvalidArgument);
  // An image too small.
  EXPECT_EQ(layer.Forward(Tensor({2, 1, 3, 3}), true, &output).code(),
            absl::StatusCode::kInvalidArgument);
  // A gradient of the wrong shape.
  Tensor input({2, 1, 8, 8});
  ASSERT_TRUE(layer.Forward(input, true, &output).ok());
  s = layer.Backward(input, output, Tensor({2, 4, 3, 3}), &grad);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("(2, 4, 4, 4)"));
  // Channels not a multiple of the groups.
  Conv2dOptions bad = o;
  bad.in_channels = 3;
  bad.groups = 2;
  Conv2dLayer grouped(0, bad, &context);
  EXPECT_EQ(grouped.OutputShape({3, 8, 8}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(grouped.Forward(Tensor({1, 3, 8, 8}), true, &output).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace distillery
