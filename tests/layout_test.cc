// Tensor storage and channel-blocked layouts (common/tensor/tensor.h,
// common/nn/layer.h): the storage's alignment, the tensor's layout rules,
// ConvertLayout against the nChw<B>c index formula, and a convolutional
// chain that keeps its activations blocked giving the same outputs and
// gradients as the same chain kept plain.
// CTest runs it again with oneDNN capped at AVX2, where the block is 8.
#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/nn/layer.h"
#include "common/nn/layers/activation_layer.h"
#include "common/nn/layers/batch_norm_layer.h"
#include "common/nn/layers/conv2d_layer.h"
#include "common/nn/layers/flatten_layer.h"
#include "common/nn/layers/linear_layer.h"
#include "common/nn/layers/pool2d_layer.h"
#include "common/nn/layers/relu_layer.h"
#include "common/nn/layout_bridge.h"
#include "common/tensor/dnnl_context.h"
#include "gmock/gmock.h"
#include "tests/test_util.h"

namespace distillery {
namespace {

using ::testing::HasSubstr;

Tensor RandomImages(const Shape& shape, uint64_t seed) {
  Tensor t = RandomMatrix(shape[0], ShapeSize(shape) / shape[0], seed);
  EXPECT_TRUE(t.Reinterpret(shape));
  return t;
}

// oneDNN's AVX-512 and AMX kernels load whole cache lines: storage that
// starts inside one makes every load touch two (aligned_allocator.h).
TEST(TensorStorageTest, StorageStartsOnACacheLineInEitherTypeAndAfterGrowing) {
  auto aligned = [](const void* p) {
    return reinterpret_cast<uintptr_t>(p) % kTensorAlignment == 0;
  };
  for (int64_t cols : {1, 3, 784, 100000}) {
    Tensor t(1, cols);
    EXPECT_TRUE(aligned(t.raw_data())) << cols;
    t.Reshape({7, cols}, DataType::kBF16);
    EXPECT_TRUE(aligned(t.raw_data())) << cols;
    t.Reshape({9, cols});  // grows the f32 storage
    EXPECT_TRUE(aligned(t.raw_data())) << cols;
    Tensor copy = t;
    EXPECT_TRUE(aligned(copy.raw_data())) << cols;
  }
}

TEST(TensorLayoutTest, BlockedLayoutsNeedRankFourAndWholeChannelBlocks) {
  Tensor t({2, 32, 3, 3});
  EXPECT_EQ(t.layout(), Layout::kPlain);
  EXPECT_TRUE(t.SetLayout(Layout::kBlocked16));
  EXPECT_EQ(t.layout(), Layout::kBlocked16);
  // A blocked tensor cannot be re-read in another shape.
  EXPECT_FALSE(t.Reinterpret({2, 288}));
  // Reshape starts plain again.
  t.Reshape({2, 24, 3, 3});
  EXPECT_EQ(t.layout(), Layout::kPlain);
  EXPECT_TRUE(t.SetLayout(Layout::kBlocked8));
  EXPECT_FALSE(t.SetLayout(Layout::kBlocked16));  // 24 channels
  EXPECT_EQ(t.layout(), Layout::kBlocked8);
  Tensor matrix(4, 32);
  EXPECT_FALSE(matrix.SetLayout(Layout::kBlocked16));
  EXPECT_EQ(matrix.layout(), Layout::kPlain);
  EXPECT_STREQ(LayoutName(Layout::kBlocked16), "nChw16c");
}

TEST(TensorLayoutTest, EqualityComparesLayouts) {
  Tensor a({1, 16, 1, 1});
  Tensor b = a;
  EXPECT_TRUE(a == b);
  ASSERT_TRUE(b.SetLayout(Layout::kBlocked16));
  EXPECT_FALSE(a == b);
}

TEST(ConvertLayoutTest, PlacesElementsAsNChwBlockedOrNhwcAndRoundTrips) {
  DnnlContext context;
  const int64_t n = 2, c = 32, h = 3, w = 5;
  const Tensor plain = RandomImages({n, c, h, w}, 11);
  for (Layout layout : {Layout::kBlocked8, Layout::kBlocked16, Layout::kChannelsLast}) {
    SCOPED_TRACE(LayoutName(layout));
    // nhwc is nChw<B>c with one block of all the channels.
    const int64_t block = layout == Layout::kChannelsLast ? c : LayoutBlock(layout);
    Tensor blocked;
    ASSERT_TRUE(context.ConvertLayout(plain, layout, &blocked).ok());
    EXPECT_EQ(blocked.layout(), layout);
    EXPECT_EQ(blocked.shape(), plain.shape());
    for (int64_t in = 0; in < n; ++in) {
      for (int64_t ic = 0; ic < c; ++ic) {
        for (int64_t y = 0; y < h; ++y) {
          for (int64_t x = 0; x < w; ++x) {
            const int64_t at =
                (((in * (c / block) + ic / block) * h + y) * w + x) * block + ic % block;
            ASSERT_EQ(blocked.data()[at], plain.data()[((in * c + ic) * h + y) * w + x]);
          }
        }
      }
    }
    Tensor back;
    ASSERT_TRUE(context.ConvertLayout(blocked, Layout::kPlain, &back).ok());
    EXPECT_TRUE(back == plain);
  }
  Tensor odd = RandomImages({1, 12, 2, 2}, 3), out;
  const absl::Status refused = context.ConvertLayout(odd, Layout::kBlocked16, &out);
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.message(), HasSubstr("nChw16c"));
}

TEST(ConvertLayoutTest, DescriptorsNameTheirLayouts) {
  EXPECT_EQ(LayoutOfDesc(TensorDesc({2, 16, 4, 4}, Layout::kBlocked16)), Layout::kBlocked16);
  EXPECT_EQ(LayoutOfDesc(TensorDesc({2, 16, 4, 4}, Layout::kBlocked8)), Layout::kBlocked8);
  EXPECT_EQ(LayoutOfDesc(TensorDesc({2, 16, 4, 4})), Layout::kPlain);
  EXPECT_EQ(LayoutOfDesc(TensorDesc({2, 7})), Layout::kPlain);
  const dnnl::memory::desc nhwc({2, 16, 4, 4}, dnnl::memory::data_type::bf16,
                                dnnl::memory::format_tag::nhwc);
  EXPECT_EQ(LayoutOfDesc(nhwc), Layout::kChannelsLast);
  EXPECT_STREQ(LayoutName(Layout::kChannelsLast), "nhwc");
  const dnnl::memory::desc blocked4({2, 16, 4, 4}, dnnl::memory::data_type::f32,
                                    dnnl::memory::format_tag::nChw4c);
  EXPECT_FALSE(LayoutOfDesc(blocked4).has_value());
}

// conv 5x5 3->16, bn, relu, max pool, conv 3x3 16->32, bn, tanh, avg pool,
// flatten, fc 10: every image layer, and the edge to a plain-only layer.
std::vector<std::unique_ptr<Layer>> Chain(DnnlContext* context, bool blocked) {
  std::vector<std::unique_ptr<Layer>> layers;
  Conv2dOptions first;
  first.in_channels = 3;
  first.out_channels = 16;
  first.kernel_rows = first.kernel_cols = 5;
  first.pad_rows = first.pad_cols = 2;
  layers.push_back(std::make_unique<Conv2dLayer>(0, first, context));
  layers.push_back(std::make_unique<BatchNormLayer>(1, 16, context));
  layers.push_back(std::make_unique<ReluLayer>(context));
  Pool2dOptions max_pool;
  max_pool.window_rows = max_pool.window_cols = max_pool.stride_rows = max_pool.stride_cols = 2;
  layers.push_back(std::make_unique<Pool2dLayer>(max_pool, context));
  Conv2dOptions second;
  second.in_channels = 16;
  second.out_channels = 32;
  second.kernel_rows = second.kernel_cols = 3;
  second.pad_rows = second.pad_cols = 1;
  layers.push_back(std::make_unique<Conv2dLayer>(4, second, context));
  layers.push_back(std::make_unique<BatchNormLayer>(5, 32, context));
  layers.push_back(std::make_unique<ActivationLayer>(ActivationKind::kTanh, 0.f, context));
  Pool2dOptions avg_pool = max_pool;
  avg_pool.kind = PoolKind::kAverage;
  layers.push_back(std::make_unique<Pool2dLayer>(avg_pool, context));
  layers.push_back(std::make_unique<FlattenLayer>());
  layers.push_back(std::make_unique<LinearLayer>(9, 32 * 3 * 3, 10, false, context));
  uint64_t seed = 100;
  for (auto& layer : layers) {
    for (Parameter* p : layer->Parameters()) {
      p->value = RandomMatrix(p->value.rows(), p->value.cols(), ++seed, 0.3f);
      EXPECT_TRUE(p->value.Reinterpret(p->grad.shape()));
    }
  }
  for (size_t i = 0; i + 1 < layers.size(); ++i) {
    layers[i]->AllowBlockedOutput(blocked && layers[i + 1]->TakesBlocked());
  }
  return layers;
}

struct ChainRun {
  std::vector<Tensor> outputs;  // each layer's output, converted to plain
  std::vector<Layout> layouts;  // and its layout as the layer gave it
  std::vector<Tensor> grads;    // every parameter gradient, in order
};

ChainRun RunChain(std::vector<std::unique_ptr<Layer>>& layers, DnnlContext* context,
                  const Tensor& input, bool training) {
  ChainRun run;
  std::vector<Tensor> activations(layers.size()), plain(layers.size());
  std::vector<const Tensor*> seen(layers.size());
  const Tensor* current = &input;
  for (size_t i = 0; i < layers.size(); ++i) {
    const absl::Status s = ForwardInLayout(*layers[i], *current, training, context, &plain[i],
                                           &seen[i], &activations[i]);
    EXPECT_TRUE(s.ok()) << i << ": " << s;
    run.layouts.push_back(activations[i].layout());
    Tensor as_plain;
    EXPECT_TRUE(context->ConvertLayout(activations[i], Layout::kPlain, &as_plain).ok());
    run.outputs.push_back(as_plain);
    current = &activations[i];
  }
  // A max pooling's Backward needs a training Forward.
  if (!training) return run;
  Tensor grad = RandomMatrix(current->rows(), current->cols(), 77);
  Tensor grads[2], scratch;
  const Tensor* grad_output = &grad;
  for (size_t i = layers.size(); i-- > 0;) {
    const Tensor& layer_input = i == 0 ? input : activations[i - 1];
    Tensor* grad_input = i == 0 ? nullptr : &grads[i % 2];
    const absl::Status s = BackwardInLayout(*layers[i], layer_input, *seen[i], activations[i],
                                            *grad_output, context, &scratch, grad_input);
    EXPECT_TRUE(s.ok()) << i << ": " << s;
    if (grad_input != nullptr) {
      EXPECT_EQ(grad_input->layout(), layer_input.layout()) << i;
    }
    grad_output = grad_input;
  }
  for (auto& layer : layers) {
    for (Parameter* p : layer->Parameters()) run.grads.push_back(p->grad);
  }
  return run;
}

void ExpectNear(const Tensor& actual, const Tensor& expected, double tolerance) {
  ASSERT_EQ(actual.shape(), expected.shape());
  for (int64_t i = 0; i < actual.size(); ++i) {
    ASSERT_NEAR(actual.data()[i], expected.data()[i],
                tolerance * (1.0 + std::abs(double{expected.data()[i]})))
        << "element " << i;
  }
}

TEST(BlockedChainTest, MatchesThePlainChainForwardAndBackward) {
  for (bool training : {true, false}) {
    SCOPED_TRACE(training ? "training" : "inference");
    DnnlContext blocked_context, plain_context;
    auto blocked = Chain(&blocked_context, /*blocked=*/true);
    auto plain = Chain(&plain_context, /*blocked=*/false);
    const Tensor input = RandomImages({8, 3, 12, 12}, 5);
    const ChainRun b = RunChain(blocked, &blocked_context, input, training);
    const ChainRun p = RunChain(plain, &plain_context, input, training);
    ASSERT_EQ(b.outputs.size(), p.outputs.size());
    for (size_t i = 0; i < b.outputs.size(); ++i) {
      SCOPED_TRACE(i);
      EXPECT_EQ(p.layouts[i], Layout::kPlain);
      ExpectNear(b.outputs[i], p.outputs[i], 1e-4);
    }
    ASSERT_EQ(b.grads.size(), p.grads.size());
    for (size_t i = 0; i < b.grads.size(); ++i) {
      SCOPED_TRACE(absl::StrCat("gradient ", i));
      ExpectNear(b.grads[i], p.grads[i], 1e-3);
    }
    // The image layers after a convolution keep its layout; the flatten
    // before the linear layer is given a plain copy, and gives plain.
    const Layout first = b.layouts[0];
    for (size_t i = 1; i < 4; ++i) EXPECT_EQ(b.layouts[i], first) << i;
    EXPECT_EQ(b.layouts[8], Layout::kPlain);
    EXPECT_EQ(b.layouts[9], Layout::kPlain);
    // oneDNN blocks channels on the ISAs CI runs (AVX2: 8, AVX-512: 16).
    const std::string isa = CpuIsaName();
    if (isa.rfind("avx2", 0) == 0 || isa.rfind("avx512", 0) == 0) {
      EXPECT_NE(first, Layout::kPlain) << isa;
    }
  }
}

// AMX's convolutions give nhwc: the image layers after one keep it, and
// compute what they compute on plain tensors.
TEST(BlockedChainTest, ChannelsLastInputsMatchPlainOnesForwardAndBackward) {
  DnnlContext nhwc_context, plain_context;
  auto nhwc = Chain(&nhwc_context, /*blocked=*/false);
  auto plain = Chain(&plain_context, /*blocked=*/false);
  nhwc.erase(nhwc.begin());  // from the batch norm on: 16 channels in
  plain.erase(plain.begin());
  const Tensor input = RandomImages({8, 16, 12, 12}, 6);
  Tensor nhwc_input;
  ASSERT_TRUE(nhwc_context.ConvertLayout(input, Layout::kChannelsLast, &nhwc_input).ok());
  const ChainRun n = RunChain(nhwc, &nhwc_context, nhwc_input, /*training=*/true);
  const ChainRun p = RunChain(plain, &plain_context, input, /*training=*/true);
  // Batch norm, ReLU and max pooling keep nhwc; the convolution, told to
  // give plain, does.
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(n.layouts[i], Layout::kChannelsLast) << i;
  EXPECT_EQ(n.layouts[3], Layout::kPlain);
  ASSERT_EQ(n.outputs.size(), p.outputs.size());
  for (size_t i = 0; i < n.outputs.size(); ++i) {
    SCOPED_TRACE(i);
    ExpectNear(n.outputs[i], p.outputs[i], 1e-4);
  }
  ASSERT_EQ(n.grads.size(), p.grads.size());
  for (size_t i = 0; i < n.grads.size(); ++i) {
    SCOPED_TRACE(absl::StrCat("gradient ", i));
    ExpectNear(n.grads[i], p.grads[i], 1e-3);
  }
}

TEST(BlockedChainTest, LayersRefuseAGradientInAnotherLayout) {
  DnnlContext context;
  const Tensor input = RandomImages({4, 16, 4, 4}, 9);
  Tensor blocked_input;
  ASSERT_TRUE(context.ConvertLayout(input, Layout::kBlocked16, &blocked_input).ok());
  Pool2dOptions pool;
  pool.window_rows = pool.window_cols = pool.stride_rows = pool.stride_cols = 2;
  std::vector<std::unique_ptr<Layer>> layers;
  layers.push_back(std::make_unique<BatchNormLayer>(0, 16, &context));
  layers.push_back(std::make_unique<ReluLayer>(&context));
  layers.push_back(std::make_unique<Pool2dLayer>(pool, &context));
  for (auto& layer : layers) {
    SCOPED_TRACE(layer->Describe());
    ASSERT_TRUE(layer->TakesBlocked());
    Tensor output, grad_input;
    ASSERT_TRUE(layer->Forward(blocked_input, /*training=*/true, &output).ok());
    EXPECT_EQ(output.layout(), Layout::kBlocked16);
    Tensor plain_grad = RandomImages(output.shape(), 4);  // plain, not the output's layout
    const absl::Status s = layer->Backward(blocked_input, output, plain_grad, &grad_input);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(s.message(), HasSubstr("layout"));
  }
}

}  // namespace
}  // namespace distillery
