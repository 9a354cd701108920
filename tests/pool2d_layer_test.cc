// Pool2dLayer: max and average pooling (padding, ceil mode) against direct
// loops, gradients against finite differences, the channels-last 2x2 loops
// against oneDNN bit for bit, shapes and errors.
#include "common/nn/layers/pool2d_layer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "absl/strings/str_cat.h"
#include "common/tensor/dnnl_context.h"
#include "common/tensor/precision.h"
#include "gmock/gmock.h"
#include "tests/layer_test_util.h"

namespace distillery {
namespace {

using ::testing::HasSubstr;

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
  // An inference pass into another tensor in between (Network::Infer) leaves
  // the training Forward's Backward as it was; one into the same tensor
  // replaces that Forward.
  Tensor other_output, grad_between;
  ASSERT_TRUE(layer.Forward(RandomTensor({1, 1, 4, 4}, 2), false, &other_output).ok());
  ASSERT_TRUE(layer.Backward(input, output, output, &grad_between).ok());
  EXPECT_EQ(grad_between, grad);
  ASSERT_TRUE(layer.Forward(input, false, &output).ok());
  EXPECT_EQ(layer.Backward(input, output, output, &grad).code(),
            absl::StatusCode::kFailedPrecondition);
}

// Whether two tensors hold the same bytes (so -0 is not 0) in one shape,
// type and layout.
bool SameBits(const Tensor& a, const Tensor& b) {
  const size_t bytes = static_cast<size_t>(a.size()) * (a.dtype() == DataType::kF32 ? 4 : 2);
  return a.shape() == b.shape() && a.dtype() == b.dtype() && a.layout() == b.layout() &&
         std::memcmp(a.raw_data(), b.raw_data(), bytes) == 0;
}

// Values with many ties, as after a ReLU: zeros (of both signs), a few
// repeated values and some random ones.
Tensor TiedTensor(const Shape& shape, uint64_t seed) {
  Tensor t(shape);
  std::mt19937_64 rng(seed);
  const float choices[] = {0.f, -0.f, 0.f, 0.5f, 1.f, -1.f, 0.5f};
  std::uniform_real_distribution<float> uniform(-2.f, 2.f);
  for (int64_t i = 0; i < t.size(); ++i) {
    const uint64_t r = rng() % 9;
    t.data()[i] = r < 7 ? choices[r] : uniform(rng);
  }
  return t;
}

// Max pooling 2x2 at stride 2 of a channels-last input runs on loops of the
// layer's own (max_pool_2x2.h); every other layout goes to oneDNN. Both give
// the same bits, forward and backward, ties (the first of the window wins)
// and odd sizes included, in f32 and in bf16.
TEST(Pool2dLayerTest, ChannelsLastMax2x2IsBitIdenticalToOneDnn) {
  DnnlContext context;
  uint64_t seed = 500;
  for (const Shape& shape :
       {Shape{3, 32, 28, 28}, Shape{2, 16, 7, 9}, Shape{1, 3, 2, 2}, Shape{130, 64, 14, 14}}) {
    for (DataType type : {DataType::kF32, DataType::kBF16}) {
      // oneDNN pools bf16 only where the CPU has native bf16 (as do the
      // bf16 passes that would use these loops).
      if (type == DataType::kBF16 && !CpuHasNativeBf16()) continue;
      for (bool ceil_mode : {false, true}) {
        SCOPED_TRACE(
            absl::StrCat(ShapeString(shape), " ", DataTypeName(type), ceil_mode ? " ceil" : ""));
        Pool2dOptions options;
        options.ceil_mode = ceil_mode;
        Pool2dLayer direct(options, &context), reference(options, &context);
        for (Pool2dLayer* layer : {&direct, &reference}) layer->SetPrecision(Precision::kBF16);
        Tensor plain, last;
        ASSERT_TRUE(context.Convert(TiedTensor(shape, ++seed), Layout::kPlain, type, &plain).ok());
        ASSERT_TRUE(context.Convert(plain, Layout::kChannelsLast, type, &last).ok());
        Tensor out_last, out_plain, out_plain_as_last;
        ASSERT_TRUE(direct.Forward(last, /*training=*/true, &out_last).ok());
        ASSERT_TRUE(reference.Forward(plain, /*training=*/true, &out_plain).ok());
        ASSERT_TRUE(
            context.ConvertLayout(out_plain, Layout::kChannelsLast, &out_plain_as_last).ok());
        EXPECT_TRUE(SameBits(out_last, out_plain_as_last));

        Tensor grad_plain, grad_last;
        ASSERT_TRUE(
            context
                .Convert(RandomTensor(out_plain.shape(), ++seed), Layout::kPlain, type, &grad_plain)
                .ok());
        ASSERT_TRUE(context.ConvertLayout(grad_plain, Layout::kChannelsLast, &grad_last).ok());
        // Garbage in the gradients' storage: every element must be written.
        Tensor in_grad_last = last, in_grad_plain = plain, in_grad_plain_as_last;
        ASSERT_TRUE(direct.Backward(last, out_last, grad_last, &in_grad_last).ok());
        ASSERT_TRUE(reference.Backward(plain, out_plain, grad_plain, &in_grad_plain).ok());
        ASSERT_TRUE(
            context.ConvertLayout(in_grad_plain, Layout::kChannelsLast, &in_grad_plain_as_last)
                .ok());
        EXPECT_TRUE(SameBits(in_grad_last, in_grad_plain_as_last));

        // An inference pass (in the input's type) gives the training pass's
        // output, and leaves its Backward as it was.
        ASSERT_TRUE(direct.SetInferenceOutput(false, type));
        Tensor inferred, in_grad_again = last;
        ASSERT_TRUE(direct.Forward(last, /*training=*/false, &inferred).ok());
        EXPECT_TRUE(SameBits(inferred, out_last));
        ASSERT_TRUE(direct.Backward(last, out_last, grad_last, &in_grad_again).ok());
        EXPECT_TRUE(SameBits(in_grad_again, in_grad_last));
      }
    }
  }
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

}  // namespace
}  // namespace distillery
