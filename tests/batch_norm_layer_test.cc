// BatchNormLayer: training and inference forward against direct loops, the
// running statistics, names, gradients against finite differences, the
// fused ReLU against the ReLU layer, errors.
#include "common/nn/layers/batch_norm_layer.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/nn/layers/relu_layer.h"
#include "common/tensor/dnnl_context.h"
#include "gmock/gmock.h"
#include "tests/layer_test_util.h"
#include "tests/test_util.h"

namespace distillery {
namespace {

using ::testing::HasSubstr;

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

// Batch norm with its fused ReLU against the pair BatchNormLayer, ReluLayer:
// the same bits forward and backward, in every layout, after training and
// inference Forwards.
TEST(BatchNormLayerTest, FusedReluGivesTheBitsOfBatchNormThenRelu) {
  DnnlContext context;
  const int64_t ch = 16;
  for (const Layout layout : {Layout::kPlain, Layout::kBlocked16, Layout::kChannelsLast}) {
    for (const bool training : {true, false}) {
      SCOPED_TRACE(absl::StrCat(LayoutName(layout), training ? " training" : " inference"));
      BatchNormLayer fused(0, ch, &context), unfused(0, ch, &context);
      ReluLayer relu(&context);
      ASSERT_TRUE(fused.SetFusedRelu(true));
      EXPECT_TRUE(fused.FusedRelu());
      EXPECT_FALSE(unfused.FusedRelu());
      for (BatchNormLayer* layer : {&fused, &unfused}) {
        layer->gamma().value = RandomMatrix(1, ch, 1);
        layer->beta().value = RandomMatrix(1, ch, 2);
        layer->running_mean().data()[3] = 0.4f;
        layer->running_var().data()[5] = 0.6f;
      }
      Tensor input, grad_output;
      ASSERT_TRUE(context.ConvertLayout(RandomTensor({4, ch, 5, 3}, 3), layout, &input).ok());
      ASSERT_TRUE(context.ConvertLayout(RandomTensor({4, ch, 5, 3}, 4), layout, &grad_output).ok());
      Tensor bn_out, relu_out, relu_grad, unfused_grad, fused_out, fused_grad;
      ASSERT_TRUE(unfused.Forward(input, training, &bn_out).ok());
      ASSERT_TRUE(relu.Forward(bn_out, training, &relu_out).ok());
      ASSERT_TRUE(relu.Backward(bn_out, relu_out, grad_output, &relu_grad).ok());
      ASSERT_TRUE(unfused.Backward(input, bn_out, relu_grad, &unfused_grad).ok());
      ASSERT_TRUE(fused.Forward(input, training, &fused_out).ok());
      ASSERT_TRUE(fused.Backward(input, fused_out, grad_output, &fused_grad).ok());
      EXPECT_EQ(fused_out, relu_out);
      EXPECT_EQ(fused_grad, unfused_grad);
      EXPECT_EQ(fused.gamma().grad, unfused.gamma().grad);
      EXPECT_EQ(fused.beta().grad, unfused.beta().grad);
      EXPECT_EQ(fused.running_mean(), unfused.running_mean());
      // The ReLU did mask something.
      EXPECT_FALSE(relu_out == bn_out);
    }
  }
  // Unfusing gives the plain batch norm again.
  BatchNormLayer layer(0, 2, &context);
  ASSERT_TRUE(layer.SetFusedRelu(true));
  ASSERT_TRUE(layer.SetFusedRelu(false));
  Tensor out;
  ASSERT_TRUE(layer.Forward(RandomTensor({4, 2, 2, 2}, 6), true, &out).ok());
  EXPECT_LT(*std::min_element(out.data(), out.data() + out.size()), 0.f);
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

}  // namespace
}  // namespace distillery
