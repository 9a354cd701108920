// GlobalAvgPoolLayer: forward against the per-channel mean, gradients
// against finite differences, shapes and errors.
#include "common/nn/layers/global_avg_pool_layer.h"

#include "tests/layer_test_util.h"

namespace distillery {
namespace {

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
