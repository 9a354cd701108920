// Helpers shared by the image layers' tests (conv2d_layer_test,
// pool2d_layer_test, batch_norm_layer_test, activation_layer_test,
// flatten_layer_test, global_avg_pool_layer_test, primitive_caching_test,
// conv_chain_test, and the inference passes' tiled_inference_test and
// bf16_conv_block_test): random and distinct tensors, a central-difference
// check of a layer's input and parameter gradients, element-wise
// comparison, the convolution layouts, the pooling cases, and a spy layer.
#ifndef DISTILLERY_TESTS_LAYER_TEST_UTIL_H_
#define DISTILLERY_TESTS_LAYER_TEST_UTIL_H_

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "common/nn/layer.h"
#include "common/nn/layers/conv2d_layer.h"
#include "common/nn/layers/pool2d_layer.h"
#include "common/tensor/tensor.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace distillery {

// A tensor of `shape` with uniform values in [-scale, scale].
inline Tensor RandomTensor(const Shape& shape, uint64_t seed, float scale = 1.f) {
  Tensor t = RandomMatrix(shape[0], ShapeSize(shape) / shape[0], seed, scale);
  EXPECT_TRUE(t.Reinterpret(shape));
  return t;
}

// A tensor of `shape` whose values are all at least 0.05 apart (a shuffled
// ramp), so that a max pooling's choice never changes under a 0.01 step.
inline Tensor DistinctTensor(const Shape& shape, uint64_t seed) {
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
inline double ProjectedOutput(Layer& layer, const Tensor& input, const Tensor& weights,
                              bool training) {
  Tensor output;
  EXPECT_TRUE(layer.Forward(input, training, &output).ok());
  EXPECT_EQ(output.size(), weights.size());
  double sum = 0;
  for (int64_t i = 0; i < output.size(); ++i) sum += double{output.data()[i]} * weights.data()[i];
  return sum;
}

// Checks the input gradient and every parameter gradient of `layer` at
// `input` against central differences.
inline void ExpectLayerGradientsMatch(Layer& layer, Tensor input, bool training, uint64_t seed,
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

inline void ExpectNear(const Tensor& actual, const Tensor& expected, double tolerance) {
  ASSERT_EQ(actual.shape(), expected.shape());
  for (int64_t i = 0; i < actual.size(); ++i) {
    EXPECT_NEAR(actual.data()[i], expected.data()[i], tolerance) << "element " << i;
  }
}

inline constexpr ConvLayout kLayouts[] = {ConvLayout::kPlain, ConvLayout::kBlocked,
                                          ConvLayout::kAuto};

inline const char* LayoutName(ConvLayout layout) {
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

struct PoolCase {
  const char* name;
  Pool2dOptions options;
  Shape input;
};

inline std::vector<PoolCase> PoolCases() {
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

// A layer that counts its Forwards and records the element type of its
// last input, to see what an inference pass ran and fed it.
template <typename Base>
class Spy : public Base {
 public:
  using Base::Base;
  absl::Status Forward(const Tensor& input, bool training, Tensor* output) override {
    ++forwards;
    last_input_type = input.dtype();
    return Base::Forward(input, training, output);
  }
  int forwards = 0;
  DataType last_input_type = DataType::kF32;
};

}  // namespace distillery

#endif  // DISTILLERY_TESTS_LAYER_TEST_UTIL_H_
