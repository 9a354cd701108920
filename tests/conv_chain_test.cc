// A small convolutional network chained by hand (conv -> batch norm -> ReLU
// -> max pool -> flatten -> linear): shapes through OutputShape, and the
// gradients through the whole chain against finite differences.
#include <memory>
#include <vector>

#include "common/nn/layers/batch_norm_layer.h"
#include "common/nn/layers/conv2d_layer.h"
#include "common/nn/layers/flatten_layer.h"
#include "common/nn/layers/linear_layer.h"
#include "common/nn/layers/pool2d_layer.h"
#include "common/nn/layers/relu_layer.h"
#include "common/tensor/dnnl_context.h"
#include "tests/layer_test_util.h"
#include "tests/test_util.h"

namespace distillery {
namespace {

// conv -> batch norm -> ReLU -> max pool -> flatten -> linear, chained by
// hand.
class SmallConvNet {
 public:
  explicit SmallConvNet(DnnlContext* context, ConvLayout layout) {
    Conv2dOptions conv;
    conv.in_channels = 2;
    conv.out_channels = 3;
    conv.kernel_rows = conv.kernel_cols = 3;
    conv.pad_rows = conv.pad_cols = 1;
    conv.layout = layout;
    conv_ = std::make_unique<Conv2dLayer>(0, conv, context);
    bn_ = std::make_unique<BatchNormLayer>(1, 3, context);
    relu_ = std::make_unique<ReluLayer>(context);
    pool_ = std::make_unique<Pool2dLayer>(Pool2dOptions{}, context);
    flatten_ = std::make_unique<FlattenLayer>();
    linear_ = std::make_unique<LinearLayer>(5, 3 * 3 * 3, 4, false, context);
    layers_ = {conv_.get(), bn_.get(), relu_.get(), pool_.get(), flatten_.get(), linear_.get()};
    conv_->weight().value = RandomTensor(conv_->weight().value.shape(), 1, 0.5f);
    conv_->bias().value = RandomMatrix(1, 3, 2, 0.2f);
    bn_->gamma().value = RandomMatrix(1, 3, 3);
    for (int c = 0; c < 3; ++c) bn_->gamma().value.data()[c] += 1.5f;
    bn_->beta().value = RandomMatrix(1, 3, 4, 0.3f);
    linear_->weight().value = RandomMatrix(4, 27, 5);
    linear_->bias().value = RandomMatrix(1, 4, 6);
  }

  const std::vector<Layer*>& layers() const { return layers_; }
  Conv2dLayer& conv() { return *conv_; }
  BatchNormLayer& bn() { return *bn_; }
  LinearLayer& linear() { return *linear_; }

  // Keeps every layer's output for Backward.
  absl::Status Forward(const Tensor& input) {
    outputs_.resize(layers_.size());
    const Tensor* x = &input;
    for (size_t i = 0; i < layers_.size(); ++i) {
      if (absl::Status s = layers_[i]->Forward(*x, true, &outputs_[i]); !s.ok()) return s;
      x = &outputs_[i];
    }
    return absl::OkStatus();
  }
  const Tensor& output() const { return outputs_.back(); }

  absl::Status Backward(const Tensor& input, const Tensor& grad_output, Tensor* grad_input) {
    Tensor grad = grad_output, next;
    for (size_t i = layers_.size(); i-- > 0;) {
      const Tensor& layer_input = i == 0 ? input : outputs_[i - 1];
      Tensor* target = i == 0 ? grad_input : &next;
      if (absl::Status s = layers_[i]->Backward(layer_input, outputs_[i], grad, target); !s.ok()) {
        return s;
      }
      if (i > 0) grad = next;
    }
    return absl::OkStatus();
  }

 private:
  std::unique_ptr<Conv2dLayer> conv_;
  std::unique_ptr<BatchNormLayer> bn_;
  std::unique_ptr<ReluLayer> relu_;
  std::unique_ptr<Pool2dLayer> pool_;
  std::unique_ptr<FlattenLayer> flatten_;
  std::unique_ptr<LinearLayer> linear_;
  std::vector<Layer*> layers_;
  std::vector<Tensor> outputs_;
};

TEST(SmallConvNetTest, ShapesChainThroughOutputShape) {
  DnnlContext context;
  SmallConvNet net(&context, ConvLayout::kPlain);
  Shape shape = {2, 6, 6};
  for (Layer* layer : net.layers()) {
    absl::StatusOr<Shape> next = layer->OutputShape(shape);
    ASSERT_TRUE(next.ok()) << layer->Describe() << ": " << next.status();
    shape = *next;
  }
  EXPECT_EQ(shape, (Shape{4}));
}

TEST(SmallConvNetTest, GradientsThroughTheWholeChainMatchFiniteDifferences) {
  for (ConvLayout layout : kLayouts) {
    SCOPED_TRACE(LayoutName(layout));
    DnnlContext context;
    SmallConvNet net(&context, layout);
    Tensor input = RandomTensor({3, 2, 6, 6}, 7);
    ASSERT_TRUE(net.Forward(input).ok());
    ASSERT_EQ(net.output().shape(), (Shape{3, 4}));
    const Tensor projection = RandomMatrix(3, 4, 8);
    Tensor grad_input;
    ASSERT_TRUE(net.Backward(input, projection, &grad_input).ok());
    auto loss = [&] {
      EXPECT_TRUE(net.Forward(input).ok());
      double sum = 0;
      for (int64_t i = 0; i < projection.size(); ++i) {
        sum += double{net.output().data()[i]} * projection.data()[i];
      }
      return sum;
    };
    // ReLU and max pooling are not differentiable everywhere: points where
    // the step crosses a kink are skipped (at most a quarter). A weight moves
    // every output of its channel, so a step there crosses a max-pool
    // switch far more often than one on an input: the weights get a smaller
    // step, whose float noise (~1e-3 here) the absolute floor covers.
    auto check = [&](const char* what, Tensor* x, const Tensor& analytic, double step,
                     double floor) {
      SCOPED_TRACE(what);
      ExpectGradientMatches(loss, x, analytic, step, 3e-2, floor, /*skip_kinks=*/true);
    };
    check("input", &input, grad_input, 3e-3, 2e-3);
    const Tensor conv_weight = net.conv().weight().grad, conv_bias = net.conv().bias().grad;
    const Tensor gamma = net.bn().gamma().grad, beta = net.bn().beta().grad;
    const Tensor linear_weight = net.linear().weight().grad;
    // The batch norm right after the convolution removes the bias's effect.
    for (int64_t i = 0; i < conv_bias.size(); ++i) EXPECT_NEAR(conv_bias.data()[i], 0.f, 1e-4);
    check("conv weight", &net.conv().weight().value, conv_weight, 1e-3, 5e-3);
    check("conv bias", &net.conv().bias().value, conv_bias, 1e-3, 5e-3);
    check("bn gamma", &net.bn().gamma().value, gamma, 1e-3, 5e-3);
    check("bn beta", &net.bn().beta().value, beta, 1e-3, 5e-3);
    check("linear weight", &net.linear().weight().value, linear_weight, 1e-3, 5e-3);
  }
}

}  // namespace
}  // namespace distillery
