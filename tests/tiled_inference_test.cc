// TiledInference (common/nn/tiled_inference.h): the tiled pass gives each
// row what the layers give it one by one; dropout is skipped; in bf16 a ReLU
// after a fully connected layer is fused into it and activations stay bf16
// between fully connected layers, which gives what the unfused bf16 layers
// give (they round their inputs to bf16 too); and the layers' inference
// settings are restored after the run.
#include "common/nn/tiled_inference.h"

#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "common/nn/layers/dropout_layer.h"
#include "common/nn/layers/linear_layer.h"
#include "common/nn/layers/relu_layer.h"
#include "common/tensor/dnnl_context.h"
#include "common/tensor/precision.h"
#include "gtest/gtest.h"
#include "tests/layer_test_util.h"
#include "tests/test_util.h"

namespace distillery {
namespace {

// x rounded to the nearest bf16 (ties to even), as oneDNN rounds.
float RoundToBf16(float x) { return FloatFromBf16(Bf16FromFloat(x)); }

// 40 -> 64 -> ReLU -> dropout -> 48 -> ReLU -> 10, with random weights;
// every layer a Spy.
std::vector<std::unique_ptr<Layer>> Stack(DnnlContext* context) {
  std::vector<std::unique_ptr<Layer>> layers;
  const int64_t sizes[] = {40, 64, 48, 10};
  for (int i = 0; i < 3; ++i) {
    auto linear = std::make_unique<Spy<LinearLayer>>(i, sizes[i], sizes[i + 1], false, context);
    linear->weight().value = RandomMatrix(sizes[i + 1], sizes[i], 10 + i, 0.3f);
    linear->bias().value = RandomMatrix(1, sizes[i + 1], 20 + i, 0.3f);
    layers.push_back(std::move(linear));
    if (i < 2) layers.push_back(std::make_unique<Spy<ReluLayer>>(context));
    if (i == 0) layers.push_back(std::make_unique<Spy<DropoutLayer>>(0.5f, 7));
  }
  return layers;
}

// The Forwards layer i saw, and the type of its last input.
int Forwards(const std::vector<std::unique_ptr<Layer>>& layers, size_t i) {
  if (auto* l = dynamic_cast<Spy<LinearLayer>*>(layers[i].get())) return l->forwards;
  if (auto* r = dynamic_cast<Spy<ReluLayer>*>(layers[i].get())) return r->forwards;
  return dynamic_cast<Spy<DropoutLayer>&>(*layers[i]).forwards;
}
DataType InputType(const std::vector<std::unique_ptr<Layer>>& layers, size_t i) {
  return dynamic_cast<Spy<LinearLayer>&>(*layers[i]).last_input_type;
}

// The layers' inference Forwards one after the other, unfused; with
// `round_hidden`, every activation a fully connected layer hands on is
// rounded to bf16 (what the fused bf16 pass stores).
Tensor OneByOne(const std::vector<std::unique_ptr<Layer>>& layers, const Tensor& input,
                bool round_hidden) {
  Tensor current = input, next;
  for (size_t i = 0; i < layers.size(); ++i) {
    EXPECT_TRUE(layers[i]->Forward(current, /*training=*/false, &next).ok());
    current = next;
    const bool hands_on_to_linear = i + 1 < layers.size() && layers[i]->IsRelu();
    if (round_hidden && hands_on_to_linear) {
      for (int64_t k = 0; k < current.size(); ++k) {
        current.data()[k] = RoundToBf16(current.data()[k]);
      }
    }
  }
  return current;
}

TEST(TiledInferenceTest, F32RunEqualsTheLayersOneByOne) {
  DnnlContext context;
  auto layers = Stack(&context);
  const Tensor input = RandomMatrix(150, 40, 3);  // two tiles, the last padded
  TiledInference inference(128);
  Tensor output;
  ASSERT_TRUE(inference.Run(layers, input, &context, &output).ok());
  // Two tiles through every layer but the dropout; f32 layers fuse nothing.
  const int want[] = {2, 2, 0, 2, 2, 2};
  for (size_t i = 0; i < layers.size(); ++i) EXPECT_EQ(Forwards(layers, i), want[i]) << i;
  // Dropout skipped or run, the identity gives the same bits; each tile is
  // computed on its own, so compare a tile-sized prefix and the rest.
  Tensor first(128, 40), rest(22, 40);
  std::copy(input.row(0), input.row(128), first.data());
  std::copy(input.row(128), input.row(150), rest.data());
  const Tensor a = OneByOne(layers, first, false);
  ASSERT_EQ(output.rows(), 150);
  for (int64_t r = 0; r < 128; ++r) {
    for (int64_t c = 0; c < 10; ++c) ASSERT_EQ(output.at(r, c), a.at(r, c)) << r << " " << c;
  }
  // The padded tile: the last 22 rows alone, padded to 128 with zeros.
  Tensor padded(128, 40);
  std::fill(padded.data(), padded.data() + padded.size(), 0.f);
  std::copy(rest.data(), rest.data() + rest.size(), padded.data());
  const Tensor b = OneByOne(layers, padded, false);
  for (int64_t r = 0; r < 22; ++r) {
    for (int64_t c = 0; c < 10; ++c) ASSERT_EQ(output.at(128 + r, c), b.at(r, c));
  }
}

TEST(TiledInferenceTest, Bf16RunFusesReluAndKeepsBf16ActivationsThenRestores) {
  if (!CpuHasNativeBf16()) {
    GTEST_SKIP() << "oneDNN ISA " << CpuIsaName() << " has no native bf16: nothing to test";
  }
  DnnlContext context;
  auto layers = Stack(&context);
  for (auto& layer : layers) layer->SetPrecision(Precision::kBF16);
  const Tensor input = RandomMatrix(128, 40, 4);
  TiledInference inference(128);
  Tensor fused;
  ASSERT_TRUE(inference.Run(layers, input, &context, &fused).ok());
  EXPECT_EQ(fused.dtype(), DataType::kF32);
  // The ReLUs are fused and the dropout skipped: only the fully connected
  // layers ran, the second and third on bf16 activations.
  const int want[] = {1, 0, 0, 1, 0, 1};
  for (size_t i = 0; i < layers.size(); ++i) EXPECT_EQ(Forwards(layers, i), want[i]) << i;
  EXPECT_EQ(InputType(layers, 0), DataType::kF32);
  EXPECT_EQ(InputType(layers, 3), DataType::kBF16);
  EXPECT_EQ(InputType(layers, 5), DataType::kBF16);
  // Unfused, one by one, each hidden activation rounded as the fused pass
  // stores it (the unfused bf16 layers round their inputs the same way):
  // the same up to the order of the kernels' f32 sums.
  const Tensor rounded = OneByOne(layers, input, true);
  double largest = 0, scale = 0;
  for (int64_t k = 0; k < fused.size(); ++k) {
    largest = std::max<double>(largest, std::abs(fused.data()[k] - rounded.data()[k]));
    scale = std::max<double>(scale, std::abs(rounded.data()[k]));
  }
  EXPECT_LE(largest, 1e-5 * scale + 1e-6) << "largest logit " << scale;

  // After the run every layer gives plain f32 again, unfused: the first
  // layer's output has negative entries (no ReLU) and is f32.
  Tensor after;
  ASSERT_TRUE(layers[0]->Forward(input, false, &after).ok());
  EXPECT_EQ(after.dtype(), DataType::kF32);
  EXPECT_LT(*std::min_element(after.data(), after.data() + after.size()), 0.f);
}

TEST(Bf16FusionTest, LinearGivesReluOfItsProductInBf16AndOnlyInInference) {
  if (!CpuHasNativeBf16()) {
    GTEST_SKIP() << "oneDNN ISA " << CpuIsaName() << " has no native bf16: nothing to test";
  }
  DnnlContext context;
  LinearLayer layer(0, 200, 30, false, &context);
  layer.weight().value = RandomMatrix(30, 200, 1, 0.2f);
  layer.bias().value = RandomMatrix(1, 30, 2);
  // f32 layers neither fuse nor give bf16, and refuse a bf16 input.
  EXPECT_FALSE(layer.SetInferenceOutput(true, DataType::kF32));
  EXPECT_FALSE(layer.SetInferenceOutput(false, DataType::kBF16));
  EXPECT_FALSE(layer.TakesBf16());
  const Tensor input = RandomMatrix(64, 200, 3);
  Tensor bf16_input({64, 200}, DataType::kBF16);
  EXPECT_EQ(layer.Forward(bf16_input, false, nullptr).code(), absl::StatusCode::kInvalidArgument);

  layer.SetPrecision(Precision::kBF16);
  EXPECT_TRUE(layer.TakesBf16());
  Tensor plain, fused;
  ASSERT_TRUE(layer.Forward(input, false, &plain).ok());
  ASSERT_TRUE(layer.SetInferenceOutput(true, DataType::kBF16));
  ASSERT_TRUE(layer.Forward(input, false, &fused).ok());
  ASSERT_EQ(fused.dtype(), DataType::kBF16);
  int64_t exact = 0;
  for (int64_t k = 0; k < plain.size(); ++k) {
    const float want = RoundToBf16(std::max(plain.data()[k], 0.f));
    const float got = FloatFromBf16(fused.bf16_data()[k]);
    EXPECT_NEAR(got, want, std::abs(want) / 128 + 1e-6) << k;  // one bf16 ulp
    exact += got == want;
  }
  EXPECT_GT(exact, plain.size() * 9 / 10);
  // Its bf16 output taken back as a bf16 input of a bf16 layer.
  LinearLayer next(1, 30, 5, false, &context);
  next.weight().value = RandomMatrix(5, 30, 4);
  next.SetPrecision(Precision::kBF16);
  Tensor logits;
  ASSERT_TRUE(next.Forward(fused, false, &logits).ok());
  EXPECT_EQ(logits.dtype(), DataType::kF32);
  // A training Forward ignores the inference settings and refuses bf16.
  Tensor trained;
  ASSERT_TRUE(layer.Forward(input, true, &trained).ok());
  EXPECT_EQ(trained.dtype(), DataType::kF32);
  EXPECT_LT(*std::min_element(trained.data(), trained.data() + trained.size()), 0.f);
  EXPECT_EQ(next.Forward(fused, true, &trained).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace distillery
