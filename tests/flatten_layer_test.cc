// FlattenLayer: forward, backward and shapes.
#include "common/nn/layers/flatten_layer.h"

#include <algorithm>

#include "tests/layer_test_util.h"

namespace distillery {
namespace {

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

}  // namespace
}  // namespace distillery
