// Finite-difference gradient checks for every layer, plus their forward
// semantics.
#include <numeric>

#include "common/nn/layers/dropout_layer.h"
#include "common/nn/layers/linear_layer.h"
#include "common/nn/layers/relu_layer.h"
#include "common/tensor/dnnl_context.h"
#include "tests/test_util.h"

namespace distillery {
namespace {

// The scalar loss sum(output .* weights) of a layer's forward pass; its
// gradient with respect to the output is `weights`.
double ProjectedOutput(Layer& layer, const Tensor& input, const Tensor& weights, bool training) {
  Tensor output;
  EXPECT_TRUE(layer.Forward(input, training, &output).ok());
  double sum = 0;
  for (int64_t i = 0; i < output.size(); ++i) sum += double{output.data()[i]} * weights.data()[i];
  return sum;
}

TEST(LinearLayerTest, ForwardComputesAffineMap) {
  DnnlContext context;
  LinearLayer layer(0, 3, 2, false, &context);
  // W = [[1, 2, 3], [-1, 0, 1]], b = [0.5, -0.5]
  const float w[] = {1, 2, 3, -1, 0, 1};
  std::copy(w, w + 6, layer.weight().value.data());
  layer.bias().value.at(0, 0) = 0.5f;
  layer.bias().value.at(0, 1) = -0.5f;
  Tensor input(1, 3);
  input.at(0, 0) = 1;
  input.at(0, 1) = 1;
  input.at(0, 2) = 2;
  Tensor output;
  ASSERT_TRUE(layer.Forward(input, false, &output).ok());
  ASSERT_EQ(output.rows(), 1);
  ASSERT_EQ(output.cols(), 2);
  EXPECT_FLOAT_EQ(output.at(0, 0), 1 + 2 + 6 + 0.5f);
  EXPECT_FLOAT_EQ(output.at(0, 1), -1 + 0 + 2 - 0.5f);
}

TEST(LinearLayerTest, RejectsWrongInputWidth) {
  DnnlContext context;
  LinearLayer layer(0, 3, 2, false, &context);
  Tensor input(4, 5), output;
  absl::Status s = layer.Forward(input, false, &output);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("5 features"), std::string::npos) << s;
}

TEST(LinearLayerTest, GradientsMatchFiniteDifferences) {
  DnnlContext context;
  LinearLayer layer(0, 7, 5, false, &context);
  layer.weight().value = RandomMatrix(5, 7, 1);
  layer.bias().value = RandomMatrix(1, 5, 2);
  Tensor input = RandomMatrix(4, 7, 3);
  const Tensor projection = RandomMatrix(4, 5, 4);
  Tensor output, grad_input;
  ASSERT_TRUE(layer.Forward(input, true, &output).ok());
  ASSERT_TRUE(layer.Backward(input, output, projection, &grad_input).ok());
  const Tensor grad_weight = layer.weight().grad, grad_bias = layer.bias().grad;
  auto loss = [&] { return ProjectedOutput(layer, input, projection, true); };
  ExpectGradientMatches(loss, &input, grad_input);
  ExpectGradientMatches(loss, &layer.weight().value, grad_weight);
  ExpectGradientMatches(loss, &layer.bias().value, grad_bias);
}

TEST(LinearLayerTest, WorksAcrossBatchSizes) {
  DnnlContext context;
  LinearLayer layer(0, 4, 3, false, &context);
  layer.weight().value = RandomMatrix(3, 4, 5);
  Tensor big = RandomMatrix(9, 4, 6), output;
  ASSERT_TRUE(layer.Forward(big, false, &output).ok());
  const float first_row = output.at(0, 0);
  Tensor small(1, 4);
  std::copy(big.row(0), big.row(0) + 4, small.data());
  ASSERT_TRUE(layer.Forward(small, false, &output).ok());
  EXPECT_EQ(output.rows(), 1);
  EXPECT_FLOAT_EQ(output.at(0, 0), first_row);
}

TEST(ReluLayerTest, ForwardAndGradient) {
  DnnlContext context;
  ReluLayer layer(&context);
  Tensor input = RandomMatrix(3, 6, 7);
  // Keep inputs away from the kink at zero, where the derivative jumps.
  for (int64_t i = 0; i < input.size(); ++i) {
    float& v = input.data()[i];
    if (std::abs(v) < 0.1f) v = v < 0 ? -0.1f : 0.1f;
  }
  Tensor output, grad_input;
  ASSERT_TRUE(layer.Forward(input, true, &output).ok());
  for (int64_t i = 0; i < input.size(); ++i) {
    EXPECT_FLOAT_EQ(output.data()[i], std::max(0.f, input.data()[i]));
  }
  const Tensor projection = RandomMatrix(3, 6, 8);
  ASSERT_TRUE(layer.Backward(input, output, projection, &grad_input).ok());
  auto loss = [&] { return ProjectedOutput(layer, input, projection, true); };
  ExpectGradientMatches(loss, &input, grad_input, 1e-3);
}

TEST(DropoutLayerTest, EvaluationIsIdentity) {
  DropoutLayer layer(0.5f, 42);
  Tensor input = RandomMatrix(4, 10, 9), output;
  ASSERT_TRUE(layer.Forward(input, false, &output).ok());
  EXPECT_EQ(output, input);
}

TEST(DropoutLayerTest, DropsAboutRateAndScalesSurvivors) {
  DropoutLayer layer(0.3f, 42);
  Tensor input(100, 1000);
  input.Fill(1.f);
  Tensor output;
  ASSERT_TRUE(layer.Forward(input, true, &output).ok());
  int64_t zeros = 0;
  for (int64_t i = 0; i < output.size(); ++i) {
    if (output.data()[i] == 0.f) {
      ++zeros;
    } else {
      EXPECT_FLOAT_EQ(output.data()[i], 1.f / 0.7f);
    }
  }
  EXPECT_NEAR(static_cast<double>(zeros) / output.size(), 0.3, 0.01);
}

TEST(DropoutLayerTest, MaskDependsOnStepAndIsReproducible) {
  DropoutLayer a(0.5f, 7), b(0.5f, 7);
  Tensor input(8, 64);
  input.Fill(1.f);
  Tensor out_a, out_b, out_c;
  a.SetNoiseStep(3);
  b.SetNoiseStep(3);
  ASSERT_TRUE(a.Forward(input, true, &out_a).ok());
  ASSERT_TRUE(b.Forward(input, true, &out_b).ok());
  EXPECT_EQ(out_a, out_b);
  b.SetNoiseStep(4);
  ASSERT_TRUE(b.Forward(input, true, &out_c).ok());
  EXPECT_FALSE(out_a == out_c);
}

TEST(DropoutLayerTest, GradientMatchesFiniteDifferences) {
  DropoutLayer layer(0.4f, 11);
  layer.SetNoiseStep(5);
  Tensor input = RandomMatrix(3, 20, 12);
  Tensor output, grad_input;
  ASSERT_TRUE(layer.Forward(input, true, &output).ok());
  const Tensor projection = RandomMatrix(3, 20, 13);
  ASSERT_TRUE(layer.Backward(input, output, projection, &grad_input).ok());
  // The mask is fixed by (seed, step), so the layer is linear in its input.
  auto loss = [&] { return ProjectedOutput(layer, input, projection, true); };
  ExpectGradientMatches(loss, &input, grad_input);
}

}  // namespace
}  // namespace distillery
