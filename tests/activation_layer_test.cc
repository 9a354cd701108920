// ActivationLayer (leaky ReLU, sigmoid, tanh): forward against the formulas,
// gradients against finite differences, errors.
#include "common/nn/layers/activation_layer.h"

#include <cmath>
#include <utility>
#include <vector>

#include "common/tensor/dnnl_context.h"
#include "gmock/gmock.h"
#include "tests/layer_test_util.h"

namespace distillery {
namespace {

using ::testing::HasSubstr;

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

}  // namespace
}  // namespace distillery
