// The image layers (convolution, pooling, batch normalization, flatten):
// finite-difference gradient checks, forward semantics against direct loops,
// a small convolutional network checked end to end, shapes and errors.
#include <algorithm>
#include <cmath>
#include <memory>
#include <numeric>
#include <random>

#include "common/nn/layers/activation_layer.h"
#include "common/nn/layers/batch_norm_layer.h"
#include "common/nn/layers/conv2d_layer.h"
#include "common/nn/layers/flatten_layer.h"
#include "common/nn/layers/global_avg_pool_layer.h"
#include "common/nn/layers/linear_layer.h"
#include "common/nn/layers/pool2d_layer.h"
#include "common/nn/layers/relu_layer.h"
#include "common/nn/optimizer.h"
#include "common/nn/primitive_cache.h"
#include "common/tensor/dnnl_context.h"
#include "gmock/gmock.h"
#include "tests/test_util.h"

namespace distillery {
namespace {

using ::testing::HasSubstr;

// A tensor of `shape` with uniform values in [-scale, scale].
Tensor RandomTensor(const Shape& shape, uint64_t seed, float scale = 1.f) {
  Tensor t = RandomMatrix(shape[0], ShapeSize(shape) / shape[0], seed, scale);
  EXPECT_TRUE(t.Reinterpret(shape));
  return t;
}

// A tensor of `shape` whose values are all at least 0.05 apart (a shuffled
// ramp), so that a max pooling's choice never changes under a 0.01 step.
Tensor DistinctTensor(const Shape& shape, uint64_t seed) {
  Tensor t(shape);
  std::vector<int64_t> order(static_cast<size_t>(t.size()));
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 rng(seed);
  std::shuffle(order.begin(), order.end(), rng);
  for (int64_t i = 0; i < t.size(); ++i) {
    t.data()[i] = 0.05f * static_cast<float>(order[static_cast<size_t>(i)] - t.size() / 2);
  }
  return t;
}

// sum(output .* weights) of a layer's forward pass, accumulated in double;
// its gradient with respect to the output is `weights`.
double ProjectedOutput(Layer& layer, const Tensor& input, const Tensor& weights, bool training) {
  Tensor output;
  EXPECT_TRUE(layer.Forward(input, training, &output).ok());
  EXPECT_EQ(output.size(), weights.size());
  double sum = 0;
  for (int64_t i = 0; i < output.size(); ++i) sum += double{output.data()[i]} * weights.data()[i];
  return sum;
}

// Checks the input gradient and every parameter gradient of `layer` at
// `input` against central differences.
void ExpectLayerGradientsMatch(Layer& layer, Tensor input, bool training, uint64_t seed,
                               double step = 1e-2, double tolerance = 2e-2) {
  Tensor output, grad_input;
  ASSERT_TRUE(layer.Forward(input, training, &output).ok());
  const Tensor projection = RandomTensor(output.shape(), seed);
  absl::Status backward = layer.Backward(input, output, projection, &grad_input);
  ASSERT_TRUE(backward.ok()) << backward;
  ASSERT_EQ(grad_input.shape(), input.shape());
  std::vector<Tensor> grads;
  for (Parameter* p : layer.Parameters()) grads.push_back(p->grad);
  auto loss = [&] { return ProjectedOutput(layer, input, projection, training); };
  {
    SCOPED_TRACE("input");
    ExpectGradientMatches(loss, &input, grad_input, step, tolerance);
  }
  std::vector<Parameter*> params = layer.Parameters();
  for (size_t i = 0; i < params.size(); ++i) {
    SCOPED_TRACE(params[i]->name);
    ExpectGradientMatches(loss, &params[i]->value, grads[i], step, tolerance);
  }
}

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

// Pooling by direct loops (Pool2dLayer's header formula).
Tensor NaivePool(const Tensor& in, const Pool2dOptions& o) {
  const int64_t n = in.dim(0), ch = in.dim(1), rows = in.dim(2), cols = in.dim(3);
  // PyTorch's output size: floor, or ceil with the last window starting
  // inside the image or its left padding.
  auto size = [&o](int64_t in, int64_t window, int64_t stride, int64_t pad) {
    const int64_t span = in + 2 * pad - window;
    if (!o.ceil_mode) return span / stride + 1;
    const int64_t out = (span + stride - 1) / stride + 1;
    return (out - 1) * stride >= in + pad ? out - 1 : out;
  };
  const int64_t out_rows = size(rows, o.window_rows, o.stride_rows, o.pad_rows);
  const int64_t out_cols = size(cols, o.window_cols, o.stride_cols, o.pad_cols);
  Tensor out({n, ch, out_rows, out_cols});
  float* dst = out.data();
  for (int64_t e = 0; e < n * ch; ++e) {
    const float* plane = in.data() + e * rows * cols;
    for (int64_t y = 0; y < out_rows; ++y)
      for (int64_t x = 0; x < out_cols; ++x) {
        double sum = 0, best = -INFINITY;
        int64_t inside = 0;
        for (int64_t i = 0; i < o.window_rows; ++i)
          for (int64_t j = 0; j < o.window_cols; ++j) {
            const int64_t r = y * o.stride_rows - o.pad_rows + i;
            const int64_t s = x * o.stride_cols - o.pad_cols + j;
            if (r < 0 || r >= rows || s < 0 || s >= cols) continue;
            ++inside;
            sum += plane[r * cols + s];
            best = std::max(best, double{plane[r * cols + s]});
          }
        const double count =
            o.count_include_pad ? static_cast<double>(o.window_rows * o.window_cols) : inside;
        *dst++ = static_cast<float>(o.kind == PoolKind::kMax ? best : sum / count);
      }
  }
  return out;
}

// Batch normalization by direct loops, given per-channel statistics.
Tensor NaiveBatchNorm(const Tensor& in, const std::vector<double>& mean,
                      const std::vector<double>& var, const Tensor& gamma, const Tensor& beta) {
  const int64_t ch = in.dim(1), plane = in.size() / (in.dim(0) * ch);
  Tensor out(in.shape());
  for (int64_t i = 0; i < in.size(); ++i) {
    const int64_t c = (i / plane) % ch;
    const size_t cs = static_cast<size_t>(c);
    out.data()[i] = static_cast<float>(gamma.data()[c] * (in.data()[i] - mean[cs]) /
                                           std::sqrt(var[cs] + BatchNormLayer::kEpsilon) +
                                       beta.data()[c]);
  }
  return out;
}

// Per-channel batch mean and biased variance.
void ChannelStats(const Tensor& in, std::vector<double>* mean, std::vector<double>* var) {
  const int64_t ch = in.dim(1), plane = in.size() / (in.dim(0) * ch);
  const int64_t m = in.size() / ch;
  mean->assign(static_cast<size_t>(ch), 0.0);
  var->assign(static_cast<size_t>(ch), 0.0);
  for (int64_t i = 0; i < in.size(); ++i)
    (*mean)[static_cast<size_t>((i / plane) % ch)] += in.data()[i];
  for (double& v : *mean) v /= static_cast<double>(m);
  for (int64_t i = 0; i < in.size(); ++i) {
    const size_t c = static_cast<size_t>((i / plane) % ch);
    (*var)[c] += (in.data()[i] - (*mean)[c]) * (in.data()[i] - (*mean)[c]);
  }
  for (double& v : *var) v /= static_cast<double>(m);
}

void ExpectNear(const Tensor& actual, const Tensor& expected, double tolerance) {
  ASSERT_EQ(actual.shape(), expected.shape());
  for (int64_t i = 0; i < actual.size(); ++i) {
    EXPECT_NEAR(actual.data()[i], expected.data()[i], tolerance) << "element " << i;
  }
}

const ConvLayout kLayouts[] = {ConvLayout::kPlain, ConvLayout::kBlocked, ConvLayout::kAuto};

const char* LayoutName(ConvLayout layout) {
  switch (layout) {
    case ConvLayout::kPlain:
      return "plain";
    case ConvLayout::kBlocked:
      return "blocked";
    case ConvLayout::kAuto:
      return "auto";
  }
  return "?";
}

// ---- Convolution ----

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

// ---- Pooling ----

struct PoolCase {
  const char* name;
  Pool2dOptions options;
  Shape input;
};

std::vector<PoolCase> PoolCases() {
  std::vector<PoolCase> cases;
  Pool2dOptions max;
  cases.push_back({"max 2x2 stride 2", max, {2, 3, 6, 7}});
  max.window_rows = max.window_cols = 3;
  max.stride_rows = max.stride_cols = 2;
  max.pad_rows = max.pad_cols = 1;
  cases.push_back({"max 3x3 stride 2 pad 1 (overlapping)", max, {2, 2, 7, 6}});
  Pool2dOptions avg;
  avg.kind = PoolKind::kAverage;
  cases.push_back({"average 2x2 stride 2", avg, {2, 3, 6, 6}});
  avg.window_rows = avg.window_cols = 3;
  avg.stride_rows = 1;
  avg.stride_cols = 2;
  avg.pad_rows = avg.pad_cols = 1;
  avg.count_include_pad = true;
  cases.push_back({"average 3x3 pad 1 include pad", avg, {2, 2, 5, 6}});
  avg.count_include_pad = false;
  cases.push_back({"average 3x3 pad 1 exclude pad", avg, {2, 2, 5, 6}});
  // Ceil mode: the last window hangs over the right/bottom edge.
  Pool2dOptions ceil;
  ceil.ceil_mode = true;
  cases.push_back({"max 2x2 stride 2 ceil (7x5 -> 4x3)", ceil, {2, 2, 7, 5}});
  ceil.window_rows = ceil.window_cols = 3;
  ceil.stride_rows = ceil.stride_cols = 2;
  ceil.pad_rows = ceil.pad_cols = 1;
  cases.push_back({"max 3x3 stride 2 pad 1 ceil", ceil, {1, 2, 6, 8}});
  ceil.kind = PoolKind::kAverage;
  ceil.count_include_pad = false;
  cases.push_back({"average 3x3 stride 2 pad 1 ceil exclude pad", ceil, {1, 2, 6, 8}});
  ceil.pad_rows = ceil.pad_cols = 0;
  cases.push_back({"average 3x3 stride 2 ceil exclude pad", ceil, {2, 1, 8, 6}});
  // With count_include_pad only where no window overhangs (8 + 2 * 1 = 5 * 2).
  ceil.window_rows = ceil.window_cols = 2;
  ceil.pad_rows = ceil.pad_cols = 1;
  ceil.count_include_pad = true;
  cases.push_back({"average 2x2 stride 2 pad 1 ceil include pad, no overhang", ceil, {1, 2, 8, 8}});
  return cases;
}

TEST(Pool2dLayerTest, ForwardMatchesDirectLoops) {
  DnnlContext context;
  uint64_t seed = 300;
  for (const PoolCase& c : PoolCases()) {
    SCOPED_TRACE(c.name);
    Pool2dLayer layer(c.options, &context);
    const Tensor input = RandomTensor(c.input, ++seed);
    for (bool training : {true, false}) {
      Tensor output;
      const absl::Status forward = layer.Forward(input, training, &output);
      ASSERT_TRUE(forward.ok()) << forward;
      ExpectNear(output, NaivePool(input, c.options), 1e-6);
    }
  }
}

TEST(Pool2dLayerTest, GradientsMatchFiniteDifferences) {
  DnnlContext context;
  uint64_t seed = 400;
  for (const PoolCase& c : PoolCases()) {
    SCOPED_TRACE(c.name);
    Pool2dLayer layer(c.options, &context);
    // Values 0.05 apart: no ties, and no change of a window's maximum
    // within the 0.01 step.
    seed += 2;
    ExpectLayerGradientsMatch(layer, DistinctTensor(c.input, seed), true, seed + 1);
  }
}

TEST(Pool2dLayerTest, MaxBackwardNeedsTrainingForward) {
  DnnlContext context;
  Pool2dLayer layer(Pool2dOptions{}, &context);
  const Tensor input = RandomTensor({1, 1, 4, 4}, 1);
  Tensor output, grad;
  ASSERT_TRUE(layer.Forward(input, false, &output).ok());
  EXPECT_EQ(layer.Backward(input, output, output, &grad).code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(layer.Forward(input, true, &output).ok());
  EXPECT_TRUE(layer.Backward(input, output, output, &grad).ok());
}

TEST(Pool2dLayerTest, OutputShapeDescribeAndErrors) {
  DnnlContext context;
  Pool2dLayer max(Pool2dOptions{}, &context);
  EXPECT_EQ(max.Describe(), "MaxPool2d(2x2, stride 2)");
  EXPECT_EQ(*max.OutputShape({32, 24, 24}), (Shape{32, 12, 12}));
  EXPECT_EQ(*max.OutputShape({32, 7, 7}), (Shape{32, 3, 3}));  // floor mode
  Pool2dOptions o;
  o.kind = PoolKind::kAverage;
  o.window_rows = o.window_cols = 3;
  o.stride_rows = o.stride_cols = 1;
  o.pad_rows = o.pad_cols = 1;
  o.count_include_pad = false;
  Pool2dLayer avg(o, &context);
  EXPECT_EQ(avg.Describe(), "AvgPool2d(3x3, stride 1, pad 1, exclude pad)");
  EXPECT_EQ(*avg.OutputShape({4, 5, 6}), (Shape{4, 5, 6}));

  Pool2dOptions big;
  big.window_rows = big.window_cols = 5;
  Pool2dLayer too_big(big, &context);
  absl::StatusOr<Shape> s = too_big.OutputShape({1, 3, 3});
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.status().message(), HasSubstr("MaxPool2d(5x5"));
  EXPECT_THAT(s.status().message(), HasSubstr("(1, 3, 3)"));
  Tensor output, grad;
  EXPECT_EQ(too_big.Forward(Tensor({2, 1, 3, 3}), true, &output).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(max.Forward(Tensor(2, 16), true, &output).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(max.OutputShape({16}).status().code(), absl::StatusCode::kInvalidArgument);
  Tensor input({1, 1, 4, 4});
  ASSERT_TRUE(max.Forward(input, true, &output).ok());
  EXPECT_EQ(max.Backward(input, output, Tensor({1, 1, 3, 3}), &grad).code(),
            absl::StatusCode::kInvalidArgument);
  Pool2dOptions wide_pad;
  wide_pad.pad_rows = 2;
  EXPECT_EQ(Pool2dLayer(wide_pad, &context).OutputShape({1, 8, 8}).status().code(),
            absl::StatusCode::kInvalidArgument);
  Pool2dOptions ceil;
  ceil.ceil_mode = true;
  EXPECT_EQ(*Pool2dLayer(ceil, &context).OutputShape({1, 8, 8}), (Shape{1, 4, 4}));
  EXPECT_EQ(*Pool2dLayer(ceil, &context).OutputShape({1, 7, 9}), (Shape{1, 4, 5}));
  EXPECT_EQ(Pool2dLayer(ceil, &context).Describe(), "MaxPool2d(2x2, stride 2, ceil)");
  // No window may start in the right padding: 3x3 stride 2 pad 1 on 5 rows
  // gives 3, not ceil(4 / 2) + 1 = 3 ... and on 6 rows 4 (the 4th starts at 5).
  ceil.window_rows = ceil.window_cols = 3;
  ceil.pad_rows = ceil.pad_cols = 1;
  EXPECT_EQ(*Pool2dLayer(ceil, &context).OutputShape({1, 5, 6}), (Shape{1, 3, 4}));
  ceil.window_rows = ceil.window_cols = 2;
  ceil.pad_rows = ceil.pad_cols = 1;
  // 2x2 stride 2 pad 1 on 4: ceil(4 / 2) + 1 = 3 windows start at -1, 1, 3.
  EXPECT_EQ(*Pool2dLayer(ceil, &context).OutputShape({1, 4, 4}), (Shape{1, 3, 3}));
  // An average counting padding whose last window overhangs is refused.
  ceil.pad_rows = ceil.pad_cols = 0;
  ceil.kind = PoolKind::kAverage;
  ceil.count_include_pad = true;
  const absl::Status overhang = Pool2dLayer(ceil, &context).OutputShape({1, 7, 7}).status();
  EXPECT_EQ(overhang.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(overhang.message(), HasSubstr("hangs over the padding"));
  EXPECT_TRUE(Pool2dLayer(ceil, &context).OutputShape({1, 8, 8}).ok());
}

// ---- Batch normalization ----

TEST(BatchNormLayerTest, TrainingForwardUsesBatchStatisticsAndUpdatesRunningOnes) {
  DnnlContext context;
  for (const Shape& shape : {Shape{4, 3, 5, 2}, Shape{6, 5}}) {
    SCOPED_TRACE(ShapeString(shape));
    const int64_t ch = shape[1];
    BatchNormLayer layer(1, ch, &context);
    layer.gamma().value = RandomMatrix(1, ch, 1);
    layer.beta().value = RandomMatrix(1, ch, 2);
    Tensor input = RandomTensor(shape, 3, 2.f);
    for (int64_t i = 0; i < input.size(); ++i) input.data()[i] += 0.5f;  // a non-zero mean
    Tensor output;
    ASSERT_TRUE(layer.Forward(input, true, &output).ok());
    std::vector<double> mean, var;
    ChannelStats(input, &mean, &var);
    ExpectNear(output, NaiveBatchNorm(input, mean, var, layer.gamma().value, layer.beta().value),
               1e-5);
    const double m = static_cast<double>(input.size() / ch);
    for (int64_t c = 0; c < ch; ++c) {
      const size_t cs = static_cast<size_t>(c);
      EXPECT_NEAR(layer.running_mean().data()[c], 0.1 * mean[cs], 1e-6);
      EXPECT_NEAR(layer.running_var().data()[c], 0.9 + 0.1 * var[cs] * m / (m - 1), 1e-6);
    }
  }
}

TEST(BatchNormLayerTest, InferenceUsesRunningStatistics) {
  DnnlContext context;
  const int64_t ch = 3;
  BatchNormLayer layer(4, ch, &context);
  layer.gamma().value = RandomMatrix(1, ch, 10);
  layer.beta().value = RandomMatrix(1, ch, 11);
  for (uint64_t step = 0; step < 5; ++step) {
    Tensor batch = RandomTensor({4, ch, 3, 3}, 20 + step, 1.5f), output;
    for (int64_t i = 0; i < batch.size(); ++i) batch.data()[i] += 1.f;
    ASSERT_TRUE(layer.Forward(batch, true, &output).ok());
  }
  // The running statistics have moved away from (0, 1).
  EXPECT_GT(layer.running_mean().data()[0], 0.2f);
  const Tensor input = RandomTensor({2, ch, 3, 3}, 30);
  Tensor output;
  ASSERT_TRUE(layer.Forward(input, false, &output).ok());
  std::vector<double> mean(ch), var(ch);
  for (int64_t c = 0; c < ch; ++c) {
    mean[static_cast<size_t>(c)] = layer.running_mean().data()[c];
    var[static_cast<size_t>(c)] = layer.running_var().data()[c];
  }
  ExpectNear(output, NaiveBatchNorm(input, mean, var, layer.gamma().value, layer.beta().value),
             1e-5);
  // Inference leaves the buffers alone.
  const Tensor running_mean = layer.running_mean();
  ASSERT_TRUE(layer.Forward(input, false, &output).ok());
  EXPECT_EQ(layer.running_mean(), running_mean);

  // A fresh layer given the same parameters and buffers gives the same bits.
  BatchNormLayer copy(4, ch, &context);
  std::vector<Parameter*> from = layer.Parameters(), to = copy.Parameters();
  ASSERT_EQ(from.size(), to.size());
  for (size_t i = 0; i < from.size(); ++i) {
    EXPECT_EQ(from[i]->name, to[i]->name);
    to[i]->value = from[i]->value;
  }
  std::vector<Buffer> from_buffers = layer.Buffers(), to_buffers = copy.Buffers();
  ASSERT_EQ(from_buffers.size(), 2u);
  ASSERT_EQ(to_buffers.size(), 2u);
  for (size_t i = 0; i < from_buffers.size(); ++i) {
    EXPECT_EQ(from_buffers[i].name, to_buffers[i].name);
    *to_buffers[i].value = *from_buffers[i].value;
  }
  Tensor copied_output;
  ASSERT_TRUE(copy.Forward(input, false, &copied_output).ok());
  EXPECT_EQ(copied_output, output);
}

TEST(BatchNormLayerTest, NamesAndInitialValues) {
  DnnlContext context;
  BatchNormLayer layer(7, 2, &context);
  EXPECT_EQ(layer.Describe(), "BatchNorm(2)");
  std::vector<Parameter*> params = layer.Parameters();
  ASSERT_EQ(params.size(), 2u);
  EXPECT_EQ(params[0]->name, "layer7.weight");
  EXPECT_EQ(params[1]->name, "layer7.bias");
  for (Parameter* p : params) {
    EXPECT_FALSE(p->max_norm_applies);
    EXPECT_FALSE(p->weight_decay_applies);
  }
  EXPECT_EQ(params[0]->value.data()[0], 1.f);
  EXPECT_EQ(params[1]->value.data()[1], 0.f);
  std::vector<Buffer> buffers = layer.Buffers();
  ASSERT_EQ(buffers.size(), 2u);
  EXPECT_EQ(buffers[0].name, "layer7.running_mean");
  EXPECT_EQ(buffers[1].name, "layer7.running_var");
  EXPECT_EQ(buffers[0].value->data()[1], 0.f);
  EXPECT_EQ(buffers[1].value->data()[1], 1.f);
}

TEST(BatchNormLayerTest, TrainingGradientsMatchFiniteDifferences) {
  DnnlContext context;
  for (const Shape& shape : {Shape{3, 2, 3, 2}, Shape{5, 4}}) {
    SCOPED_TRACE(ShapeString(shape));
    BatchNormLayer layer(0, shape[1], &context);
    layer.gamma().value = RandomMatrix(1, shape[1], 1);
    layer.beta().value = RandomMatrix(1, shape[1], 2);
    ExpectLayerGradientsMatch(layer, RandomTensor(shape, 3), true, 4, 1e-3);
  }
}

TEST(BatchNormLayerTest, InferenceGradientsMatchFiniteDifferences) {
  DnnlContext context;
  BatchNormLayer layer(0, 2, &context);
  layer.gamma().value = RandomMatrix(1, 2, 1);
  layer.beta().value = RandomMatrix(1, 2, 2);
  layer.running_mean().data()[0] = 0.3f;
  layer.running_var().data()[1] = 0.5f;
  ExpectLayerGradientsMatch(layer, RandomTensor({3, 2, 2, 2}, 3), false, 4);
}

TEST(BatchNormLayerTest, RejectsInputsThatDoNotFit) {
  DnnlContext context;
  BatchNormLayer layer(0, 3, &context);
  EXPECT_EQ(*layer.OutputShape({3, 4, 4}), (Shape{3, 4, 4}));
  EXPECT_EQ(*layer.OutputShape({3}), (Shape{3}));
  absl::StatusOr<Shape> s = layer.OutputShape({4, 4, 4});
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.status().message(), HasSubstr("BatchNorm(3)"));
  EXPECT_THAT(s.status().message(), HasSubstr("(4, 4, 4)"));
  Tensor output, grad;
  EXPECT_EQ(layer.Forward(Tensor({2, 3, 4}), true, &output).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(layer.Forward(Tensor(2, 4), true, &output).code(), absl::StatusCode::kInvalidArgument);
  // One value per channel: no batch variance to train with.
  EXPECT_EQ(layer.Forward(Tensor(1, 3), true, &output).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(layer.Forward(Tensor(1, 3), false, &output).ok());
  Tensor input = RandomTensor({2, 3, 2, 2}, 1);
  ASSERT_TRUE(layer.Forward(input, true, &output).ok());
  EXPECT_EQ(layer.Backward(input, output, Tensor({2, 3, 2, 1}), &grad).code(),
            absl::StatusCode::kInvalidArgument);
}

// ---- Primitive caching ----

// The shapes a layer keeps primitives for.
constexpr size_t kCacheCapacity = PrimitiveCache<int, int>::kDefaultCapacity;

// Forwards of `batches` different batch sizes of (batch, channels, 6, 6).
template <typename L>
void ForwardBatchSizes(L& layer, int64_t channels, int batches, bool training) {
  Tensor output;
  for (int64_t batch = 1; batch <= batches; ++batch) {
    ASSERT_TRUE(
        layer
            .Forward(RandomTensor({batch, channels, 6, 6}, 50 + static_cast<uint64_t>(batch)),
                     training, &output)
            .ok());
    EXPECT_LE(layer.CachedShapes(), kCacheCapacity);
  }
}

Conv2dOptions CachingConvOptions(ConvLayout layout) {
  Conv2dOptions o;
  o.in_channels = 2;
  o.out_channels = 3;
  o.kernel_rows = o.kernel_cols = 3;
  o.pad_rows = o.pad_cols = 1;
  o.layout = layout;
  return o;
}

TEST(PrimitiveCachingTest, ConvInferenceBuildsNoBackwardAndKeepsAFewShapes) {
  DnnlContext context;
  for (ConvLayout layout : kLayouts) {
    SCOPED_TRACE(LayoutName(layout));
    const Conv2dOptions o = CachingConvOptions(layout);
    Conv2dLayer layer(0, o, &context);
    layer.weight().value = RandomTensor(layer.weight().value.shape(), 1, 0.5f);
    layer.bias().value = RandomMatrix(1, o.out_channels, 2);
    ForwardBatchSizes(layer, o.in_channels, 10, /*training=*/false);
    EXPECT_EQ(layer.CachedShapes(), kCacheCapacity);
    EXPECT_EQ(layer.CachedBackwardShapes(), 0u);
    ExpectLayerGradientsMatch(layer, RandomTensor({3, o.in_channels, 6, 6}, 3), true, 4);
    EXPECT_EQ(layer.CachedBackwardShapes(), 1u);
    EXPECT_LE(layer.CachedShapes(), kCacheCapacity);
  }
}

TEST(PrimitiveCachingTest, ConvBackwardAfterItsShapeWasEvictedMatchesAFreshLayer) {
  DnnlContext context;
  for (ConvLayout layout : kLayouts) {
    SCOPED_TRACE(LayoutName(layout));
    // 16 channels: blocked layouts, whose forward reorder of the input
    // Backward reuses.
    Conv2dOptions o = CachingConvOptions(layout);
    o.in_channels = o.out_channels = 16;
    Conv2dLayer evicted(0, o, &context), fresh(0, o, &context);
    evicted.weight().value = fresh.weight().value = RandomTensor(fresh.weight().value.shape(), 5);
    evicted.bias().value = fresh.bias().value = RandomMatrix(1, o.out_channels, 6);
    const Tensor input = RandomTensor({12, o.in_channels, 6, 6}, 7);
    Tensor out_evicted, out_fresh, grad_evicted, grad_fresh, other;
    ASSERT_TRUE(evicted.Forward(input, true, &out_evicted).ok());
    // Backwards of enough other shapes to evict the input's entry (and with
    // it the input's reordered copy) without another Forward.
    for (int64_t batch = 1; batch <= static_cast<int64_t>(kCacheCapacity); ++batch) {
      const Tensor x =
          RandomTensor({batch, o.in_channels, 6, 6}, 20 + static_cast<uint64_t>(batch));
      Tensor gx;
      ASSERT_TRUE(
          evicted.Backward(x, Tensor(), RandomTensor({batch, o.out_channels, 6, 6}, 30), &gx).ok());
    }
    ASSERT_TRUE(fresh.Forward(input, true, &out_fresh).ok());
    EXPECT_EQ(out_evicted, out_fresh);
    const Tensor projection = RandomTensor(out_fresh.shape(), 8);
    ASSERT_TRUE(evicted.Backward(input, out_evicted, projection, &grad_evicted).ok());
    ASSERT_TRUE(fresh.Backward(input, out_fresh, projection, &grad_fresh).ok());
    EXPECT_EQ(grad_evicted, grad_fresh);
    EXPECT_EQ(evicted.weight().grad, fresh.weight().grad);
    EXPECT_EQ(evicted.bias().grad, fresh.bias().grad);
  }
}

TEST(PrimitiveCachingTest, PoolInferenceBuildsNoBackwardAndKeepsAFewShapes) {
  DnnlContext context;
  for (const PoolCase& c : PoolCases()) {
    SCOPED_TRACE(c.name);
    Pool2dLayer layer(c.options, &context);
    ForwardBatchSizes(layer, c.input[1], 10, /*training=*/false);
    EXPECT_EQ(layer.CachedShapes(), kCacheCapacity);
    EXPECT_EQ(layer.CachedBackwardShapes(), 0u);
    ExpectLayerGradientsMatch(layer, DistinctTensor(c.input, 9), true, 10);
    EXPECT_EQ(layer.CachedBackwardShapes(), 1u);
    EXPECT_LE(layer.CachedShapes(), kCacheCapacity);
  }
}

TEST(PrimitiveCachingTest, MaxPoolBackwardRefusesAWorkspaceEvictedSinceItsForward) {
  DnnlContext context;
  Pool2dLayer layer(Pool2dOptions{}, &context);
  const Tensor input = RandomTensor({12, 1, 4, 4}, 1);
  Tensor output, grad;
  ASSERT_TRUE(layer.Forward(input, true, &output).ok());
  ForwardBatchSizes(layer, 1, 4, /*training=*/true);
  EXPECT_EQ(layer.Backward(input, output, output, &grad).code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(layer.Forward(input, true, &output).ok());
  EXPECT_TRUE(layer.Backward(input, output, output, &grad).ok());
}

TEST(PrimitiveCachingTest, BatchNormInferenceBuildsNoBackwardAndKeepsAFewShapes) {
  DnnlContext context;
  for (bool training_backward : {true, false}) {
    SCOPED_TRACE(training_backward ? "training backward" : "inference backward");
    BatchNormLayer layer(0, 2, &context);
    layer.gamma().value = RandomMatrix(1, 2, 1);
    layer.beta().value = RandomMatrix(1, 2, 2);
    layer.running_mean().data()[0] = 0.3f;
    layer.running_var().data()[1] = 0.5f;
    ForwardBatchSizes(layer, 2, 10, /*training=*/false);
    EXPECT_EQ(layer.CachedShapes(), kCacheCapacity);
    EXPECT_EQ(layer.CachedBackwardShapes(), 0u);
    ExpectLayerGradientsMatch(layer, RandomTensor({3, 2, 2, 2}, 3), training_backward, 4,
                              training_backward ? 1e-3 : 1e-2);
    EXPECT_EQ(layer.CachedBackwardShapes(), 1u);
    EXPECT_LE(layer.CachedShapes(), kCacheCapacity);
  }
}

// ---- Flatten ----

TEST(FlattenLayerTest, ForwardBackwardAndShapes) {
  FlattenLayer layer;
  EXPECT_EQ(*layer.OutputShape({3, 4, 5}), (Shape{60}));
  EXPECT_EQ(layer.OutputShape({}).status().code(), absl::StatusCode::kInvalidArgument);
  const Tensor input = RandomTensor({2, 3, 4, 5}, 1);
  Tensor output;
  ASSERT_TRUE(layer.Forward(input, true, &output).ok());
  EXPECT_EQ(output.shape(), (Shape{2, 60}));
  EXPECT_TRUE(std::equal(input.data(), input.data() + input.size(), output.data()));
  ExpectLayerGradientsMatch(layer, input, true, 2);
  Tensor grad;
  EXPECT_EQ(layer.Forward(Tensor({5}), true, &output).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(layer.Backward(input, output, Tensor(2, 59), &grad).code(),
            absl::StatusCode::kInvalidArgument);
}

// ---- A small network, end to end ----

// conv -> batch norm -> ReLU -> max pool -> flatten -> linear, chained by
// hand.
class SmallConvNet {
 public:
  explicit SmallConvNet(DnnlContext* context, ConvLayout layout) {
    Conv2dOptions conv;
    conv.in_channels = 2;
    conv.out_channels = 3;
    conv.kernel_rows = conv.kernel_cols = 3;
    conv.pad_rows = conv.pad_cols = 1;
    conv.layout = layout;
    conv_ = std::make_unique<Conv2dLayer>(0, conv, context);
    bn_ = std::make_unique<BatchNormLayer>(1, 3, context);
    relu_ = std::make_unique<ReluLayer>(context);
    pool_ = std::make_unique<Pool2dLayer>(Pool2dOptions{}, context);
    flatten_ = std::make_unique<FlattenLayer>();
    linear_ = std::make_unique<LinearLayer>(5, 3 * 3 * 3, 4, false, context);
    layers_ = {conv_.get(), bn_.get(), relu_.get(), pool_.get(), flatten_.get(), linear_.get()};
    conv_->weight().value = RandomTensor(conv_->weight().value.shape(), 1, 0.5f);
    conv_->bias().value = RandomMatrix(1, 3, 2, 0.2f);
    bn_->gamma().value = RandomMatrix(1, 3, 3);
    for (int c = 0; c < 3; ++c) bn_->gamma().value.data()[c] += 1.5f;
    bn_->beta().value = RandomMatrix(1, 3, 4, 0.3f);
    linear_->weight().value = RandomMatrix(4, 27, 5);
    linear_->bias().value = RandomMatrix(1, 4, 6);
  }

  const std::vector<Layer*>& layers() const { return layers_; }
  Conv2dLayer& conv() { return *conv_; }
  BatchNormLayer& bn() { return *bn_; }
  LinearLayer& linear() { return *linear_; }

  // Keeps every layer's output for Backward.
  absl::Status Forward(const Tensor& input) {
    outputs_.resize(layers_.size());
    const Tensor* x = &input;
    for (size_t i = 0; i < layers_.size(); ++i) {
      if (absl::Status s = layers_[i]->Forward(*x, true, &outputs_[i]); !s.ok()) return s;
      x = &outputs_[i];
    }
    return absl::OkStatus();
  }
  const Tensor& output() const { return outputs_.back(); }

  absl::Status Backward(const Tensor& input, const Tensor& grad_output, Tensor* grad_input) {
    Tensor grad = grad_output, next;
    for (size_t i = layers_.size(); i-- > 0;) {
      const Tensor& layer_input = i == 0 ? input : outputs_[i - 1];
      Tensor* target = i == 0 ? grad_input : &next;
      if (absl::Status s = layers_[i]->Backward(layer_input, outputs_[i], grad, target); !s.ok()) {
        return s;
      }
      if (i > 0) grad = next;
    }
    return absl::OkStatus();
  }

 private:
  std::unique_ptr<Conv2dLayer> conv_;
  std::unique_ptr<BatchNormLayer> bn_;
  std::unique_ptr<ReluLayer> relu_;
  std::unique_ptr<Pool2dLayer> pool_;
  std::unique_ptr<FlattenLayer> flatten_;
  std::unique_ptr<LinearLayer> linear_;
  std::vector<Layer*> layers_;
  std::vector<Tensor> outputs_;
};

TEST(SmallConvNetTest, ShapesChainThroughOutputShape) {
  DnnlContext context;
  SmallConvNet net(&context, ConvLayout::kPlain);
  Shape shape = {2, 6, 6};
  for (Layer* layer : net.layers()) {
    absl::StatusOr<Shape> next = layer->OutputShape(shape);
    ASSERT_TRUE(next.ok()) << layer->Describe() << ": " << next.status();
    shape = *next;
  }
  EXPECT_EQ(shape, (Shape{4}));
}

TEST(SmallConvNetTest, GradientsThroughTheWholeChainMatchFiniteDifferences) {
  for (ConvLayout layout : kLayouts) {
    SCOPED_TRACE(LayoutName(layout));
    DnnlContext context;
    SmallConvNet net(&context, layout);
    Tensor input = RandomTensor({3, 2, 6, 6}, 7);
    ASSERT_TRUE(net.Forward(input).ok());
    ASSERT_EQ(net.output().shape(), (Shape{3, 4}));
    const Tensor projection = RandomMatrix(3, 4, 8);
    Tensor grad_input;
    ASSERT_TRUE(net.Backward(input, projection, &grad_input).ok());
    auto loss = [&] {
      EXPECT_TRUE(net.Forward(input).ok());
      double sum = 0;
      for (int64_t i = 0; i < projection.size(); ++i) {
        sum += double{net.output().data()[i]} * projection.data()[i];
      }
      return sum;
    };
    // ReLU and max pooling are not differentiable everywhere: points where
    // the step crosses a kink are skipped (at most a quarter). A weight moves
    // every output of its channel, so a step there crosses a max-pool
    // switch far more often than one on an input: the weights get a smaller
    // step, whose float noise (~1e-3 here) the absolute floor covers.
    auto check = [&](const char* what, Tensor* x, const Tensor& analytic, double step,
                     double floor) {
      SCOPED_TRACE(what);
      ExpectGradientMatches(loss, x, analytic, step, 3e-2, floor, /*skip_kinks=*/true);
    };
    check("input", &input, grad_input, 3e-3, 2e-3);
    const Tensor conv_weight = net.conv().weight().grad, conv_bias = net.conv().bias().grad;
    const Tensor gamma = net.bn().gamma().grad, beta = net.bn().beta().grad;
    const Tensor linear_weight = net.linear().weight().grad;
    // The batch norm right after the convolution removes the bias's effect.
    for (int64_t i = 0; i < conv_bias.size(); ++i) EXPECT_NEAR(conv_bias.data()[i], 0.f, 1e-4);
    check("conv weight", &net.conv().weight().value, conv_weight, 1e-3, 5e-3);
    check("conv bias", &net.conv().bias().value, conv_bias, 1e-3, 5e-3);
    check("bn gamma", &net.bn().gamma().value, gamma, 1e-3, 5e-3);
    check("bn beta", &net.bn().beta().value, beta, 1e-3, 5e-3);
    check("linear weight", &net.linear().weight().value, linear_weight, 1e-3, 5e-3);
  }
}

// Leaky ReLU, sigmoid and tanh: the header's formulas, element by element,
// on image and flat tensors.
TEST(ActivationLayerTest, ForwardMatchesTheFormulas) {
  DnnlContext context;
  struct Case {
    ActivationKind kind;
    float alpha;
    double (*f)(double, double);
  };
  const Case cases[] = {
      {ActivationKind::kLeakyRelu, 0.1f, [](double x, double a) { return x > 0 ? x : a * x; }},
      {ActivationKind::kLeakyRelu, -0.3f, [](double x, double a) { return x > 0 ? x : a * x; }},
      {ActivationKind::kSigmoid, 0.f, [](double x, double) { return 1 / (1 + std::exp(-x)); }},
      {ActivationKind::kTanh, 0.f, [](double x, double) { return std::tanh(x); }},
  };
  uint64_t seed = 900;
  for (const Case& c : cases) {
    ActivationLayer layer(c.kind, c.alpha, &context);
    SCOPED_TRACE(layer.Describe());
    for (const Shape& shape : {Shape{3, 2, 4, 5}, Shape{7, 11}}) {
      const Tensor input = RandomTensor(shape, ++seed, 3.f);
      Tensor output;
      ASSERT_TRUE(layer.Forward(input, true, &output).ok());
      ASSERT_EQ(output.shape(), shape);
      for (int64_t i = 0; i < input.size(); ++i) {
        EXPECT_NEAR(output.data()[i], c.f(input.data()[i], c.alpha), 1e-6) << i;
      }
    }
  }
  EXPECT_EQ(ActivationLayer(ActivationKind::kLeakyRelu, 0.01f, &context).Describe(),
            "LeakyReLU(0.01)");
  EXPECT_EQ(ActivationLayer(ActivationKind::kSigmoid, 0.5f, &context).alpha(), 0.f);
}

TEST(ActivationLayerTest, GradientsMatchFiniteDifferences) {
  DnnlContext context;
  uint64_t seed = 950;
  for (const auto& [kind, alpha] :
       std::vector<std::pair<ActivationKind, float>>{{ActivationKind::kLeakyRelu, 0.01f},
                                                     {ActivationKind::kLeakyRelu, 0.2f},
                                                     {ActivationKind::kSigmoid, 0.f},
                                                     {ActivationKind::kTanh, 0.f}}) {
    ActivationLayer layer(kind, alpha, &context);
    SCOPED_TRACE(layer.Describe());
    // 0.05 apart and shifted by 0.025: no input within a step of the leaky
    // ReLU's kink at 0.
    Tensor input = DistinctTensor({2, 3, 3, 4}, seed += 2);
    for (int64_t i = 0; i < input.size(); ++i) input.data()[i] += 0.025f;
    ExpectLayerGradientsMatch(layer, input, true, seed + 1, 5e-3);
    // And through a second shape (primitives built per shape).
    Tensor flat = DistinctTensor({4, 9}, seed + 7);
    for (int64_t i = 0; i < flat.size(); ++i) flat.data()[i] += 0.025f;
    ExpectLayerGradientsMatch(layer, flat, false, seed + 8, 5e-3);
  }
}

TEST(ActivationLayerTest, BackwardRefusesMismatchedShapes) {
  DnnlContext context;
  ActivationLayer layer(ActivationKind::kTanh, 0.f, &context);
  const Tensor input = RandomTensor({2, 6}, 1);
  Tensor output, grad;
  ASSERT_TRUE(layer.Forward(input, true, &output).ok());
  const absl::Status s = layer.Backward(input, output, RandomTensor({2, 5}, 2), &grad);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("Tanh Backward"));
}

TEST(GlobalAvgPoolLayerTest, ForwardBackwardAndShapes) {
  GlobalAvgPoolLayer layer;
  EXPECT_EQ(*layer.OutputShape({5, 7, 3}), (Shape{5, 1, 1}));
  EXPECT_EQ(layer.OutputShape({12}).status().code(), absl::StatusCode::kInvalidArgument);
  const Tensor input = RandomTensor({2, 3, 4, 5}, 77);
  Tensor output;
  ASSERT_TRUE(layer.Forward(input, false, &output).ok());
  ASSERT_EQ(output.shape(), (Shape{2, 3, 1, 1}));
  for (int64_t k = 0; k < 6; ++k) {
    double sum = 0;
    for (int64_t i = 0; i < 20; ++i) sum += input.data()[k * 20 + i];
    EXPECT_NEAR(output.data()[k], sum / 20, 1e-6) << k;
  }
  ExpectLayerGradientsMatch(layer, RandomTensor({2, 3, 4, 5}, 78), true, 79);
  ExpectLayerGradientsMatch(layer, RandomTensor({1, 2, 7, 3}, 80), true, 81);
  Tensor flat = RandomTensor({2, 6}, 3);
  EXPECT_EQ(layer.Forward(flat, false, &output).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace distillery
