// The primitives the convolution, pooling and batch normalization layers
// cache per shape (common/nn/primitive_cache.h): inference builds no backward
// primitives, a few shapes are kept, and a Backward whose shape was evicted
// still matches a fresh layer (or refuses a lost max-pooling workspace).
#include "common/nn/layers/batch_norm_layer.h"
#include "common/nn/layers/conv2d_layer.h"
#include "common/nn/layers/pool2d_layer.h"
#include "common/nn/primitive_cache.h"
#include "common/tensor/dnnl_context.h"
#include "tests/layer_test_util.h"
#include "tests/test_util.h"

namespace distillery {
namespace {

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

}  // namespace
}  // namespace distillery
