// bf16 inference of convolution blocks (conv -> batch norm -> ReLU ->
// pooling), common/nn/layer.h's Fusion section:
//   - a bf16 convolution given a batch norm's affine map and a ReLU gives
//     max(batch_norm(conv(x)), 0) within the rounding bound of f32, in bf16;
//   - bf16 pooling and flattening of bf16 activations lose nothing (max
//     pooling picks one of its inputs; bf16 -> f32 is exact);
//   - TiledInference runs a LeNet-like network in bf16 as convolutions and
//     pools on bf16 activations, skipping the batch norms and ReLUs, within
//     the bf16 error of the unfused layers, and restores the layers after;
//   - bf16 inputs are refused by training passes and f32 layers.
//
// The bound, as in bf16_conv_test.cc: rounding the input and the (folded)
// weights to bf16 moves each product by at most about 2^-7 of itself, so the
// f32 sum by at most 2^-7 * sum |x w'|, and rounding the output to bf16 by
// at most 2^-8 of it more; ReLU does not widen a difference.
//
// Needs a CPU with native bf16 (oneDNN ISA avx512_core_bf16 or above);
// skipped, saying so, elsewhere.
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "common/nn/layers/batch_norm_layer.h"
#include "common/nn/layers/conv2d_layer.h"
#include "common/nn/layers/flatten_layer.h"
#include "common/nn/layers/linear_layer.h"
#include "common/nn/layers/pool2d_layer.h"
#include "common/nn/layers/relu_layer.h"
#include "common/nn/tiled_inference.h"
#include "common/tensor/dnnl_context.h"
#include "common/tensor/precision.h"
#include "gtest/gtest.h"
#include "tests/layer_test_util.h"

namespace distillery {
namespace {

// A plain f32 copy of `t` (any layout and type).
Tensor PlainF32(DnnlContext& context, const Tensor& t) {
  Tensor plain;
  EXPECT_TRUE(context.Convert(t, Layout::kPlain, DataType::kF32, &plain).ok());
  return plain;
}

// Random running statistics and affine parameters, so that the map is not
// near the identity.
void RandomiseBatchNorm(BatchNormLayer& bn, uint64_t seed) {
  bn.gamma().value = RandomMatrix(1, bn.channels(), seed, 1.5f);
  bn.beta().value = RandomMatrix(1, bn.channels(), seed + 1, 0.5f);
  bn.running_mean() = RandomMatrix(1, bn.channels(), seed + 2, 0.5f);
  bn.running_var() = RandomMatrix(1, bn.channels(), seed + 3, 0.5f);
  for (int64_t c = 0; c < bn.channels(); ++c) bn.running_var().data()[c] += 1.f;
}

Conv2dOptions ConvOptions(int64_t in, int64_t out) {
  Conv2dOptions o;
  o.in_channels = in;
  o.out_channels = out;
  o.kernel_rows = o.kernel_cols = 5;
  o.pad_rows = o.pad_cols = 2;
  return o;
}

TEST(Bf16ConvBlockTest, ConvolutionAppliesTheBatchNormAndReluWithinTheRoundingBound) {
  SKIP_WITHOUT_BF16();
  DnnlContext context;
  struct Case {
    const char* name;
    int64_t in, out;
    bool bf16_blocked_input;
  };
  for (const Case& c : {Case{"first layer 1->16, f32 plain input", 1, 16, false},
                        Case{"hidden 16->32, bf16 blocked input", 16, 32, true}}) {
    SCOPED_TRACE(c.name);
    const Conv2dOptions o = ConvOptions(c.in, c.out);
    Conv2dLayer conv(0, o, &context), twin(0, o, &context);
    BatchNormLayer bn(1, c.out, &context);
    RandomiseBatchNorm(bn, 5);
    conv.weight().value = RandomTensor(conv.weight().value.shape(), 1, 0.3f);
    conv.bias().value = RandomTensor(conv.bias().value.shape(), 2);
    Tensor input = RandomTensor({6, c.in, 12, 12}, 3);
    Tensor given = input;
    if (c.bf16_blocked_input) {
      ASSERT_TRUE(context.Convert(input, Layout::kBlocked16, DataType::kBF16, &given).ok());
      input = PlainF32(context, given);  // the values the layer sees
    }
    // f32: conv, batch norm (inference), ReLU, one by one.
    Tensor conv_out, exact;
    ASSERT_TRUE(conv.Forward(input, false, &conv_out).ok());
    ASSERT_TRUE(bn.Forward(conv_out, false, &exact).ok());
    for (int64_t i = 0; i < exact.size(); ++i) exact.data()[i] = std::max(exact.data()[i], 0.f);

    conv.SetPrecision(Precision::kBF16);
    conv.AllowBlockedOutput(true);
    Tensor scale, shift;
    ASSERT_TRUE(bn.InferenceAffine(&scale, &shift));
    ASSERT_TRUE(conv.SetInferenceAffine(&scale, &shift));
    ASSERT_TRUE(conv.SetInferenceOutput(true, DataType::kBF16));
    Tensor fused;
    ASSERT_TRUE(conv.Forward(given, false, &fused).ok());
    EXPECT_EQ(fused.dtype(), DataType::kBF16);
    EXPECT_NE(fused.layout(), Layout::kPlain) << "blocked output allowed";
    const Tensor rounded = PlainF32(context, fused);

    // sum |x w'|: the f32 twin on absolute values, w' = w * scale.
    Tensor magnitude_weights = conv.weight().value;
    const int64_t per_channel = magnitude_weights.size() / c.out;
    for (int64_t i = 0; i < magnitude_weights.size(); ++i) {
      magnitude_weights.data()[i] =
          std::abs(magnitude_weights.data()[i] * scale.data()[i / per_channel]);
    }
    twin.weight().value = magnitude_weights;
    Tensor abs_input = input, magnitude;
    for (int64_t i = 0; i < abs_input.size(); ++i) {
      abs_input.data()[i] = std::abs(abs_input.data()[i]);
    }
    ASSERT_TRUE(twin.Forward(abs_input, false, &magnitude).ok());
    ASSERT_EQ(rounded.shape(), exact.shape());
    int64_t zeros = 0;
    for (int64_t i = 0; i < exact.size(); ++i) {
      const double bound = magnitude.data()[i] / 128 + std::abs(exact.data()[i]) / 256 + 1e-4;
      ASSERT_NEAR(rounded.data()[i], exact.data()[i], bound) << "element " << i;
      zeros += rounded.data()[i] == 0.f;
    }
    EXPECT_GT(zeros, exact.size() / 10) << "the ReLU was applied";
    EXPECT_LT(zeros, exact.size() * 9 / 10);

    // Cleared, the layer gives its plain f32 output again.
    conv.SetInferenceAffine(nullptr, nullptr);
    conv.SetInferenceOutput(false, DataType::kF32);
    Tensor plain;
    ASSERT_TRUE(conv.Forward(input, false, &plain).ok());
    EXPECT_EQ(plain.dtype(), DataType::kF32);
    EXPECT_LT(*std::min_element(plain.data(), plain.data() + plain.size()), 0.f);
  }
}

TEST(Bf16ConvBlockTest, PoolingAndFlattenOfBf16ActivationsLoseNothing) {
  SKIP_WITHOUT_BF16();
  DnnlContext context;
  const Tensor values = RandomTensor({4, 16, 8, 8}, 7);
  Tensor bf16;
  ASSERT_TRUE(context.Convert(values, Layout::kBlocked16, DataType::kBF16, &bf16).ok());
  const Tensor widened = PlainF32(context, bf16);
  for (PoolKind kind : {PoolKind::kMax, PoolKind::kAverage}) {
    Pool2dOptions o;
    o.kind = kind;
    Pool2dLayer pool(o, &context);
    Tensor exact;
    ASSERT_TRUE(pool.Forward(widened, false, &exact).ok());
    pool.SetPrecision(Precision::kBF16);
    for (DataType type : {DataType::kBF16, DataType::kF32}) {
      ASSERT_TRUE(pool.SetInferenceOutput(false, type));
      Tensor pooled;
      ASSERT_TRUE(pool.Forward(bf16, false, &pooled).ok());
      EXPECT_EQ(pooled.dtype(), type);
      EXPECT_EQ(pooled.layout(), Layout::kBlocked16);
      const Tensor got = PlainF32(context, pooled);
      ASSERT_EQ(got.shape(), exact.shape());
      for (int64_t i = 0; i < exact.size(); ++i) {
        if (kind == PoolKind::kMax) {
          ASSERT_EQ(got.data()[i], exact.data()[i]) << "max pooling picks an input";
        } else {
          // The mean of four bf16 values, rounded to bf16 once at most.
          ASSERT_NEAR(got.data()[i], exact.data()[i], std::abs(exact.data()[i]) / 256 + 1e-6);
        }
      }
    }
    EXPECT_FALSE(pool.SetInferenceOutput(true, DataType::kBF16)) << "no fused ReLU";
  }

  FlattenLayer flatten;
  flatten.SetPrecision(Precision::kBF16);
  Tensor plain_bf16, flat;
  ASSERT_TRUE(context.Convert(bf16, Layout::kPlain, DataType::kBF16, &plain_bf16).ok());
  ASSERT_TRUE(flatten.SetInferenceOutput(false, DataType::kF32));
  ASSERT_TRUE(flatten.Forward(plain_bf16, false, &flat).ok());
  ASSERT_EQ(flat.shape(), (Shape{4, 16 * 8 * 8}));
  for (int64_t i = 0; i < flat.size(); ++i) ASSERT_EQ(flat.data()[i], widened.data()[i]);
  // f32 -> bf16 rounds to nearest even, as oneDNN's conversion does.
  ASSERT_TRUE(flatten.SetInferenceOutput(false, DataType::kBF16));
  Tensor narrowed, by_onednn;
  ASSERT_TRUE(flatten.Forward(values, false, &narrowed).ok());
  ASSERT_TRUE(context.Convert(values, Layout::kPlain, DataType::kBF16, &by_onednn).ok());
  ASSERT_EQ(narrowed.dtype(), DataType::kBF16);
  for (int64_t i = 0; i < values.size(); ++i) {
    ASSERT_EQ(narrowed.bf16_data()[i], by_onednn.bf16_data()[i]) << i;
  }
}

TEST(Bf16ConvBlockTest, F32LayersAndFlattenInTrainingRefuseBf16) {
  SKIP_WITHOUT_BF16();
  DnnlContext context;
  Tensor bf16;
  ASSERT_TRUE(
      context.Convert(RandomTensor({2, 16, 8, 8}, 1), Layout::kPlain, DataType::kBF16, &bf16).ok());
  Conv2dLayer conv(0, ConvOptions(16, 16), &context);
  Pool2dLayer pool(Pool2dOptions{}, &context);
  FlattenLayer flatten;
  Tensor out;
  // f32 layers: no bf16 input, output or fusion.
  EXPECT_FALSE(conv.TakesBf16());
  EXPECT_FALSE(conv.SetInferenceOutput(true, DataType::kF32));
  EXPECT_FALSE(pool.SetInferenceOutput(false, DataType::kBF16));
  EXPECT_FALSE(flatten.SetInferenceOutput(false, DataType::kBF16));
  Tensor scale(1, 16), shift(1, 16);
  EXPECT_FALSE(conv.SetInferenceAffine(&scale, &shift));
  for (Layer* layer : std::vector<Layer*>{&conv, &pool, &flatten}) {
    EXPECT_FALSE(layer->TakesBf16InTraining()) << layer->Describe();
    for (bool training : {false, true}) {
      EXPECT_EQ(layer->Forward(bf16, training, &out).code(), absl::StatusCode::kInvalidArgument)
          << layer->Describe();
    }
    layer->SetPrecision(Precision::kBF16);
    EXPECT_TRUE(layer->TakesBf16()) << layer->Describe();
  }
  // In bf16, convolutions and pooling train on bf16 too
  // (bf16_activations_test.cc); flattening is f32 in training.
  EXPECT_TRUE(conv.TakesBf16InTraining());
  EXPECT_TRUE(pool.TakesBf16InTraining());
  EXPECT_FALSE(flatten.TakesBf16InTraining());
  EXPECT_EQ(flatten.Forward(bf16, true, &out).code(), absl::StatusCode::kInvalidArgument);
  // An affine map of the wrong size.
  Tensor small(1, 8);
  EXPECT_FALSE(conv.SetInferenceAffine(&small, &small));
}

struct LeNet {
  std::vector<std::unique_ptr<Layer>> layers;
  std::vector<Spy<BatchNormLayer>*> batch_norms;
  std::vector<Spy<ReluLayer>*> relus;
  std::vector<Spy<Pool2dLayer>*> pools;
  Spy<FlattenLayer>* flatten = nullptr;
  Spy<LinearLayer>* linear = nullptr;
};

// conv5x5:8/same+bn, relu, pool2, conv5x5:16/same+bn, relu, pool2, flatten,
// fc:10 on (1, 12, 12) images, random weights and statistics.
LeNet MakeLeNet(DnnlContext* context) {
  LeNet net;
  int64_t channels = 1;
  for (int block = 0; block < 2; ++block) {
    const int64_t out = 8 << block;
    auto conv = std::make_unique<Conv2dLayer>(3 * block, ConvOptions(channels, out), context);
    conv->weight().value = RandomTensor(conv->weight().value.shape(), 10 + block, 0.3f);
    conv->bias().value = RandomTensor(conv->bias().value.shape(), 20 + block, 0.3f);
    conv->AllowBlockedOutput(true);
    auto bn = std::make_unique<Spy<BatchNormLayer>>(3 * block + 1, out, context);
    RandomiseBatchNorm(*bn, 30 + 10 * block);
    net.batch_norms.push_back(bn.get());
    auto relu = std::make_unique<Spy<ReluLayer>>(context);
    net.relus.push_back(relu.get());
    auto pool = std::make_unique<Spy<Pool2dLayer>>(Pool2dOptions{}, context);
    net.pools.push_back(pool.get());
    net.layers.push_back(std::move(conv));
    net.layers.push_back(std::move(bn));
    net.layers.push_back(std::move(relu));
    net.layers.push_back(std::move(pool));
    channels = out;
  }
  auto flatten = std::make_unique<Spy<FlattenLayer>>();
  net.flatten = flatten.get();
  net.layers.push_back(std::move(flatten));
  auto linear = std::make_unique<Spy<LinearLayer>>(6, 16 * 3 * 3, 10, false, context);
  linear->weight().value = RandomMatrix(10, 16 * 3 * 3, 40, 0.3f);
  linear->bias().value = RandomMatrix(1, 10, 41, 0.3f);
  net.linear = linear.get();
  net.layers.push_back(std::move(linear));
  return net;
}

double LargestDifference(const Tensor& a, const Tensor& b) {
  double largest = 0;
  for (int64_t i = 0; i < a.size(); ++i) {
    largest = std::max<double>(largest, std::abs(a.data()[i] - b.data()[i]));
  }
  return largest;
}

TEST(Bf16ConvBlockTest, TiledInferenceRunsConvolutionBlocksOnBf16Activations) {
  SKIP_WITHOUT_BF16();
  DnnlContext context;
  LeNet net = MakeLeNet(&context);
  const Tensor input = RandomTensor({40, 1, 12, 12}, 3);
  TiledInference inference(32);  // two tiles, the last padded
  Tensor exact, unfused, fused;
  ASSERT_TRUE(inference.Run(net.layers, input, &context, &exact).ok());
  // In f32 every layer runs, on f32 activations.
  EXPECT_EQ(net.batch_norms[0]->forwards, 2);
  EXPECT_EQ(net.relus[1]->forwards, 2);
  EXPECT_EQ(net.linear->last_input_type, DataType::kF32);

  for (auto& layer : net.layers) layer->SetPrecision(Precision::kBF16);
  // The bf16 layers one by one, without fusion: f32 between layers.
  Tensor current = input, next, first_unfused;
  for (auto& layer : net.layers) {
    Tensor seen = current.layout() == Layout::kPlain || layer->TakesBlocked()
                      ? current
                      : PlainF32(context, current);
    ASSERT_TRUE(layer->Forward(seen, false, &next).ok()) << layer->Describe();
    if (layer == net.layers.front()) first_unfused = next;
    current = next;
  }
  unfused = current;
  const int bn_before = net.batch_norms[0]->forwards, relu_before = net.relus[0]->forwards;
  ASSERT_TRUE(inference.Run(net.layers, input, &context, &fused).ok());
  EXPECT_EQ(fused.dtype(), DataType::kF32);
  // The batch norms and ReLUs were done by the convolutions; the pools,
  // the flatten and the fully connected layer took bf16 activations.
  EXPECT_EQ(net.batch_norms[0]->forwards, bn_before);
  EXPECT_EQ(net.batch_norms[1]->forwards, bn_before);
  EXPECT_EQ(net.relus[0]->forwards, relu_before);
  EXPECT_EQ(net.relus[1]->forwards, relu_before);
  for (auto* pool : net.pools) EXPECT_EQ(pool->last_input_type, DataType::kBF16);
  EXPECT_EQ(net.flatten->last_input_type, DataType::kBF16);
  EXPECT_EQ(net.linear->last_input_type, DataType::kBF16);

  // As close to f32 as the unfused bf16 layers, up to the rounding of the
  // activations they hand on in f32 (each within 2^-8 of itself).
  ASSERT_EQ(fused.shape(), exact.shape());
  double scale = 0;
  for (int64_t i = 0; i < exact.size(); ++i) {
    scale = std::max<double>(scale, std::abs(exact.data()[i]));
  }
  const double fused_error = LargestDifference(fused, exact);
  const double unfused_error = LargestDifference(unfused, exact);
  EXPECT_GT(fused_error, 0) << "the bf16 pass computed in f32";
  EXPECT_LE(fused_error, 2 * unfused_error + scale / 256)
      << "largest logit " << scale << ", unfused bf16 error " << unfused_error;
  EXPECT_LE(fused_error, scale / 16);

  // Afterwards the layers are as they were: the convolution gives its own
  // f32 output again (no batch norm, no ReLU: negative entries).
  Tensor after;
  ASSERT_TRUE(net.layers[0]->Forward(input, false, &after).ok());
  EXPECT_TRUE(after == first_unfused);
  const Tensor plain_after = PlainF32(context, after);
  EXPECT_LT(*std::min_element(plain_after.data(), plain_after.data() + plain_after.size()), 0.f);
}

}  // namespace
}  // namespace distillery
