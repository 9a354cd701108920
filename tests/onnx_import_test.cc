// The ONNX importer (common/formats/onnx_import.h) on small models built with
// the ONNX protobuf API (tests/onnx_test_models.h): batch-norm folding and
// the layers it produces (its refusals: onnx_import_refusals_test.cc).
#include "common/formats/onnx_import.h"

#include <cmath>
#include <string>
#include <vector>

#include "common/formats/checkpoint.h"
#include "common/nn/layers/pool2d_layer.h"
#include "common/tensor/dnnl_context.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/onnx_test_models.h"

namespace distillery {
namespace {

using onnx_test::Import;
using onnx_test::ModelBuilder;
using onnx_test::Values;
using ::testing::HasSubstr;

const distill::v1::Tensor& Param(const distill::v1::Checkpoint& c, const std::string& name) {
  for (const distill::v1::Tensor& t : c.parameters()) {
    if (t.name() == name) return t;
  }
  ADD_FAILURE() << "no parameter " << name;
  static const distill::v1::Tensor empty;
  return empty;
}

std::vector<std::string> Kinds(const distill::v1::Checkpoint& c) {
  std::vector<std::string> kinds;
  for (const distill::v1::Layer& l : c.architecture().layers()) kinds.push_back(l.kind());
  return kinds;
}

// Gemm (4 -> 3) followed by BatchNormalization with epsilon `eps`.
onnx::ModelProto GemmBnModel(float eps) {
  ModelBuilder b({-1, 4});
  onnx::NodeProto* gemm =
      b.Node("Gemm", {"", b.Weight("w", {3, 4}, Values(12, 1)), b.Weight("b", {3}, Values(3, 2))});
  onnx_test::SetInt(gemm, "transB", 1);
  onnx::NodeProto* bn =
      b.Node("BatchNormalization",
             {"", b.Weight("g", {3}, Values(3, 3, 0.5f)), b.Weight("beta", {3}, Values(3, 4)),
              b.Weight("m", {3}, Values(3, 5)), b.Weight("v", {3}, Values(3, 6, 0.1f))});
  onnx_test::SetFloat(bn, "epsilon", eps);
  return b.Finish();
}

TEST(OnnxImportTest, FoldsBatchNormIntoGemm) {
  OnnxImportOptions options;
  options.input_shape = {1, 2, 2};
  auto c = Import(GemmBnModel(1e-3f), options);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(Kinds(*c), ::testing::ElementsAre("flatten", "linear"));
  const std::vector<float> w = Values(12, 1), b = Values(3, 2), g = Values(3, 3, 0.5f),
                           beta = Values(3, 4), m = Values(3, 5), v = Values(3, 6, 0.1f);
  const distill::v1::Tensor& fw = Param(*c, "layer0.weight");
  const distill::v1::Tensor& fb = Param(*c, "layer0.bias");
  ASSERT_EQ(fw.values_size(), 12);
  ASSERT_EQ(fb.values_size(), 3);
  for (int o = 0; o < 3; ++o) {
    const double s = g[o] / std::sqrt(double{v[o]} + 1e-3);
    for (int i = 0; i < 4; ++i) EXPECT_NEAR(fw.values(o * 4 + i), w[o * 4 + i] * s, 1e-6);
    EXPECT_NEAR(fb.values(o), (b[o] - m[o]) * s + beta[o], 1e-6);
  }
  EXPECT_EQ(c->metadata().at("source"), "onnx:distillery-test 1.0");
  EXPECT_FLOAT_EQ(c->architecture().input_scale(), 1.f / 255.f);
  EXPECT_TRUE(ValidateCheckpoint(*c).ok());
}

TEST(OnnxImportTest, FoldsBatchNormIntoConvAndMatchesTheUnfoldedForward) {
  auto c = Import(onnx_test::ConvBnModel());
  ASSERT_TRUE(c.ok()) << c.status();
  // Both batch norms folded, Dropout dropped, Softmax stripped.
  EXPECT_THAT(Kinds(*c), ::testing::ElementsAre("conv2d", "relu", "maxpool2d", "flatten", "linear",
                                                "relu", "linear"));
  // Reference: the unfolded graph by hand for one input, against the engine.
  const std::vector<float> x = Values(32, 99);
  const std::vector<float> cw = Values(54, 1), cb = Values(3, 2), g = Values(3, 3, 0.5f),
                           be = Values(3, 4), mu = Values(3, 5), var = Values(3, 6, 0.25f);
  std::vector<double> conv(3 * 16);
  for (int o = 0; o < 3; ++o) {
    for (int r = 0; r < 4; ++r) {
      for (int q = 0; q < 4; ++q) {
        double sum = cb[o];
        for (int i = 0; i < 2; ++i) {
          for (int kr = 0; kr < 3; ++kr) {
            for (int kc = 0; kc < 3; ++kc) {
              const int rr = r + kr - 1, cc = q + kc - 1;
              if (rr < 0 || rr >= 4 || cc < 0 || cc >= 4) continue;
              sum += cw[((o * 2 + i) * 3 + kr) * 3 + kc] * x[(i * 4 + rr) * 4 + cc];
            }
          }
        }
        const double y = g[o] * (sum - mu[o]) / std::sqrt(var[o] + 1e-5) + be[o];
        conv[(o * 4 + r) * 4 + q] = std::max(0.0, y);
      }
    }
  }
  std::vector<double> pooled(12);
  for (int o = 0; o < 3; ++o) {
    for (int r = 0; r < 2; ++r) {
      for (int q = 0; q < 2; ++q) {
        double best = -1e30;
        for (int a = 0; a < 2; ++a) {
          for (int d = 0; d < 2; ++d) {
            best = std::max(best, conv[(o * 4 + 2 * r + a) * 4 + 2 * q + d]);
          }
        }
        pooled[(o * 2 + r) * 2 + q] = best;
      }
    }
  }
  const std::vector<float> w1 = Values(60, 7), b1 = Values(5, 8), g1 = Values(5, 9, 0.5f),
                           be1 = Values(5, 10), mu1 = Values(5, 11), v1 = Values(5, 12, 0.25f);
  std::vector<double> hidden(5);
  for (int o = 0; o < 5; ++o) {
    double sum = b1[o];
    for (int i = 0; i < 12; ++i) sum += w1[o * 12 + i] * pooled[i];
    hidden[o] = std::max(0.0, g1[o] * (sum - mu1[o]) / std::sqrt(v1[o] + 1e-3) + be1[o]);
  }
  const std::vector<float> w2 = Values(20, 13), b2 = Values(4, 14);
  auto network = NetworkFromCheckpoint(*c);
  ASSERT_TRUE(network.ok()) << network.status();
  Tensor input({1, 2, 4, 4});
  for (int k = 0; k < 32; ++k) input.data()[k] = x[k];
  const Tensor* logits = nullptr;
  ASSERT_TRUE((*network)->Predict(input, &logits).ok());
  ASSERT_EQ(logits->size(), 4);
  for (int o = 0; o < 4; ++o) {
    double sum = b2[o];
    for (int i = 0; i < 5; ++i) sum += w2[i * 4 + o] * hidden[i];  // transB = 0
    EXPECT_NEAR(logits->data()[o], sum, 1e-5) << o;
  }
}

TEST(OnnxImportTest, ImportsPyTorchViewPatternMatMulAddAndAveragePools) {
  auto c = Import(onnx_test::ViewModel());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(Kinds(*c), ::testing::ElementsAre("conv2d", "relu", "avgpool2d", "globalavgpool",
                                                "flatten", "linear"));
  const distill::v1::Layer& conv = c->architecture().layers(0);
  EXPECT_EQ(conv.pad_rows(), 1);  // SAME_UPPER, 3x3, stride 1
  EXPECT_TRUE(c->architecture().layers(2).count_include_pad());
  const distill::v1::Tensor& bias = Param(*c, "layer1.bias");
  ASSERT_EQ(bias.values_size(), 3);
  EXPECT_FLOAT_EQ(bias.values(1), Values(3, 23)[1]);
  EXPECT_FLOAT_EQ(Param(*c, "layer1.weight").values(1 * 4 + 2), Values(12, 22)[2 * 3 + 1]);
}

TEST(OnnxImportTest, BatchNormNotAfterALayerBecomesABatchNormLayer) {
  ModelBuilder b({-1, 2, 3, 3});
  b.Node("Relu", {""});
  onnx::NodeProto* bn =
      b.Node("BatchNormalization",
             {"", b.Weight("g", {2}, {1.5f, 0.5f}), b.Weight("beta", {2}, {0.1f, 0.2f}),
              b.Weight("m", {2}, {0.3f, 0.4f}), b.Weight("v", {2}, {2.f, 3.f})});
  onnx_test::SetFloat(bn, "epsilon", 1e-3f);
  b.Node("Flatten", {""});
  b.Node("Gemm", {"", b.Weight("w", {18, 2}, Values(36, 1))});
  auto c = Import(b.Finish());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(Kinds(*c), ::testing::ElementsAre("relu", "batchnorm", "flatten", "linear"));
  ASSERT_EQ(c->buffers_size(), 2);
  EXPECT_EQ(c->buffers(1).name(), "layer0.running_var");
  // The engine's epsilon is 1e-5: the variance absorbs the difference.
  EXPECT_NEAR(c->buffers(1).values(0), 2.f + 1e-3f - 1e-5f, 1e-6);
  EXPECT_FLOAT_EQ(c->buffers(0).values(1), 0.4f);
}

// Conv -> LeakyRelu(0.2) -> GlobalAveragePool -> Flatten -> Gemm -> Sigmoid
// -> Gemm -> Tanh -> LeakyRelu (ONNX's default alpha 0.01), computed by hand.
TEST(OnnxImportTest, ImportsLeakyReluSigmoidTanhAndGlobalAveragePool) {
  ModelBuilder b({-1, 1, 5, 5});
  onnx::NodeProto* conv = b.Node("Conv", {"", b.Weight("conv.w", {2, 1, 3, 3}, Values(18, 31)),
                                          b.Weight("conv.b", {2}, Values(2, 32))});
  onnx_test::SetInts(conv, "kernel_shape", {3, 3});
  onnx_test::SetFloat(b.Node("LeakyRelu", {""}), "alpha", 0.2f);
  b.Node("GlobalAveragePool", {""});
  b.Node("Flatten", {""});
  onnx_test::SetInt(b.Node("Gemm", {"", b.Weight("fc1.w", {3, 2}, Values(6, 33)),
                                    b.Weight("fc1.b", {3}, Values(3, 34))}),
                    "transB", 1);
  b.Node("Sigmoid", {""});
  onnx_test::SetInt(b.Node("Gemm", {"", b.Weight("fc2.w", {4, 3}, Values(12, 35)),
                                    b.Weight("fc2.b", {4}, Values(4, 36))}),
                    "transB", 1);
  b.Node("Tanh", {""});
  b.Node("LeakyRelu", {""});
  auto c = Import(b.Finish());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(Kinds(*c),
              ::testing::ElementsAre("conv2d", "leakyrelu", "globalavgpool", "flatten", "linear",
                                     "sigmoid", "linear", "tanh", "leakyrelu"));
  EXPECT_FLOAT_EQ(c->architecture().layers(1).alpha(), 0.2f);
  EXPECT_FLOAT_EQ(c->architecture().layers(8).alpha(), 0.01f);
  auto network = NetworkFromCheckpoint(*c);
  ASSERT_TRUE(network.ok()) << network.status();
  const std::vector<float> x = Values(25, 37, -1.f);
  Tensor input({1, 1, 5, 5});
  std::copy(x.begin(), x.end(), input.data());
  const Tensor* out = nullptr;
  ASSERT_TRUE((*network)->Infer(input, &out).ok());
  const std::vector<float> cw = Values(18, 31), cb = Values(2, 32), w1 = Values(6, 33),
                           b1 = Values(3, 34), w2 = Values(12, 35), b2 = Values(4, 36);
  double gap[2];
  for (int o = 0; o < 2; ++o) {
    double sum = 0;
    for (int y = 0; y < 3; ++y) {
      for (int xx = 0; xx < 3; ++xx) {
        double v = cb[o];
        for (int i = 0; i < 3; ++i) {
          for (int j = 0; j < 3; ++j) v += cw[o * 9 + i * 3 + j] * x[(y + i) * 5 + xx + j];
        }
        sum += v > 0 ? v : 0.2 * v;
      }
    }
    gap[o] = sum / 9;
  }
  double hidden[3];
  for (int h = 0; h < 3; ++h) {
    const double z = b1[h] + w1[h * 2] * gap[0] + w1[h * 2 + 1] * gap[1];
    hidden[h] = 1 / (1 + std::exp(-z));
  }
  for (int o = 0; o < 4; ++o) {
    double z = b2[o];
    for (int h = 0; h < 3; ++h) z += w2[o * 3 + h] * hidden[h];
    const double t = std::tanh(z);
    EXPECT_NEAR(out->data()[o], t > 0 ? t : 0.01 * t, 1e-5) << o;
  }
}

// Conv with dilations (2, 1): rows and columns dilated apart, against a
// direct loop; the checkpoint keeps both and the export gives them back.
TEST(OnnxImportTest, ConvWithDilationsPerAxis) {
  ModelBuilder b({-1, 1, 7, 7});
  onnx::NodeProto* conv = b.Node("Conv", {"", b.Weight("w", {1, 1, 3, 3}, Values(9, 41))});
  onnx_test::SetInts(conv, "kernel_shape", {3, 3});
  onnx_test::SetInts(conv, "dilations", {2, 1});
  b.Node("Flatten", {""});
  onnx_test::SetInt(b.Node("Gemm", {"", b.Weight("fc", {1, 15}, std::vector<float>(15, 1.f))}),
                    "transB", 1);
  auto c = Import(b.Finish());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architecture().layers(0).dilation(), 2);
  EXPECT_EQ(c->architecture().layers(0).dilation_cols(), 1);
  auto network = NetworkFromCheckpoint(*c);
  ASSERT_TRUE(network.ok()) << network.status();
  EXPECT_EQ((*network)->layer_shapes()[0], (Shape{1, 3, 5}));  // 7 - 2*2, 7 - 2
  EXPECT_EQ((*network)->spec().layers[0].Token(), "conv3x3/d2x1:1:none");
  const std::vector<float> x = Values(49, 42), w = Values(9, 41);
  Tensor input({1, 1, 7, 7});
  std::copy(x.begin(), x.end(), input.data());
  const Tensor* out = nullptr;
  ASSERT_TRUE((*network)->Infer(input, &out).ok());
  double sum = 0;  // the Gemm of ones sums the convolution's 15 outputs
  for (int y = 0; y < 3; ++y) {
    for (int xx = 0; xx < 5; ++xx) {
      for (int i = 0; i < 3; ++i) {
        for (int j = 0; j < 3; ++j) sum += w[i * 3 + j] * x[(y + 2 * i) * 7 + xx + j];
      }
    }
  }
  EXPECT_NEAR(out->data()[0], sum, 1e-4);
}

TEST(OnnxImportTest, CeilModePoolingAndRefusedOpsetsAndBranches) {
  {
    ModelBuilder b({-1, 1, 4, 4});
    onnx::NodeProto* pool = b.Node("MaxPool", {""}, "pool");
    onnx_test::SetInts(pool, "kernel_shape", {2, 2});
    onnx_test::SetInt(pool, "ceil_mode", 1);
    b.Node("Flatten", {""});
    b.Node("Gemm", {"", b.Weight("w", {4, 2}, Values(8, 1))});
    onnx_test::SetInts(pool, "strides", {2, 2});
    onnx_test::SetInt(pool, "count_include_pad", 1);
    pool->set_op_type("AveragePool");
    auto c = Import(b.Finish());
    // 4x4 -> 2x2 with no overhang: imported.
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_TRUE(c->architecture().layers(0).ceil_mode());
  }
  {
    // 5x5 -> 3x3 in ceil mode, the last windows overhanging: a max pooling
    // is imported, an average counting the padding refused.
    for (const bool average : {false, true}) {
      ModelBuilder b({-1, 1, 5, 5});
      onnx::NodeProto* pool = b.Node(average ? "AveragePool" : "MaxPool", {""}, "pool");
      onnx_test::SetInts(pool, "kernel_shape", {2, 2});
      onnx_test::SetInts(pool, "strides", {2, 2});
      onnx_test::SetInt(pool, "ceil_mode", 1);
      if (average) onnx_test::SetInt(pool, "count_include_pad", 1);
      b.Node("Flatten", {""});
      b.Node("Gemm", {"", b.Weight("w", {9, 2}, Values(18, 1))});
      auto c = Import(b.Finish());
      if (!average) {
        ASSERT_TRUE(c.ok()) << c.status();
        EXPECT_EQ(c->architecture().layers(0).kind(), "maxpool2d");
        EXPECT_TRUE(c->architecture().layers(0).ceil_mode());
        auto network = NetworkFromCheckpoint(*c);
        ASSERT_TRUE(network.ok());
        EXPECT_EQ((*network)->layer_shapes()[0], (Shape{1, 3, 3}));
        // The last row and column pool the image's edge alone.
        Tensor input({1, 1, 5, 5});
        for (int i = 0; i < 25; ++i) input.data()[i] = static_cast<float>(i);
        const distill::v1::Layer& l = c->architecture().layers(0);
        Pool2dOptions o;
        o.window_rows = l.kernel_rows();
        o.window_cols = l.kernel_cols();
        o.stride_rows = l.stride_rows();
        o.stride_cols = l.stride_cols();
        o.ceil_mode = l.ceil_mode();
        DnnlContext context;
        Pool2dLayer layer(o, &context);
        Tensor pooled;
        ASSERT_TRUE(layer.Forward(input, false, &pooled).ok());
        ASSERT_EQ(pooled.shape(), (Shape{1, 1, 3, 3}));
        EXPECT_EQ(pooled.data()[2], 9.f);   // rows 0-1, col 4
        EXPECT_EQ(pooled.data()[8], 24.f);  // row 4, col 4
      } else {
        ASSERT_FALSE(c.ok());
        EXPECT_THAT(c.status().message(), HasSubstr("AveragePool \"pool\""));
        EXPECT_THAT(c.status().message(), HasSubstr("hangs over the padding"));
      }
    }
  }
  {
    ModelBuilder b({-1, 4}, 10);
    b.Node("Gemm", {"", b.Weight("w", {4, 2}, Values(8, 1))});
    OnnxImportOptions options;
    options.input_shape = {1, 2, 2};
    auto c = Import(b.Finish(), options);
    ASSERT_FALSE(c.ok());
    EXPECT_THAT(c.status().message(), HasSubstr("opset"));
  }
  {
    // A residual connection: Add of two activations.
    ModelBuilder b({-1, 4});
    const std::string h = b.Node("Gemm", {"", b.Weight("w", {4, 4}, Values(16, 1))})->output(0);
    b.Node("Relu", {""});
    b.Node("Add", {"", h});
    OnnxImportOptions options;
    options.input_shape = {1, 2, 2};
    auto c = Import(b.Finish(), options);
    ASSERT_FALSE(c.ok());
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST(OnnxImportTest, SqueezeAfterGlobalPoolConstantNodesAndLogSoftmax) {
  ModelBuilder b({2, 3, 4, 4});  // a fixed batch
  b.Node("GlobalAveragePool", {""});
  // Opset 13: Squeeze's axes are an input, here from a Constant node.
  onnx::NodeProto* axes = b.graph()->add_node();
  axes->set_op_type("Constant");
  axes->set_name("axes");
  axes->add_output("axes_value");
  onnx::AttributeProto* value = axes->add_attribute();
  value->set_name("value");
  value->set_type(onnx::AttributeProto::TENSOR);
  *value->mutable_t() = onnx_test::IntTensor("", {2, 3});
  const std::string pooled = b.graph()->node(0).output(0);
  b.Node("Squeeze", {pooled, "axes_value"});
  b.Node("Gemm", {"", b.Weight("w", {3, 2}, Values(6, 1))});
  b.Node("LogSoftmax", {""});
  auto c = Import(b.Finish());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(Kinds(*c), ::testing::ElementsAre("globalavgpool", "flatten", "linear"));

  // A Softmax that is not the last node is refused.
  ModelBuilder s({-1, 4});
  s.Node("Softmax", {""}, "early");
  s.Node("Gemm", {"", s.Weight("w", {4, 2}, Values(8, 1))});
  OnnxImportOptions options;
  options.input_shape = {1, 2, 2};
  auto refused = Import(s.Finish(), options);
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(refused.status().message(), HasSubstr("Softmax \"early\""));
}

TEST(OnnxImportTest, ParsesInputShape) {
  auto s = ParseInputShape("3,32,32");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(*s, (Shape{3, 32, 32}));
  EXPECT_FALSE(ParseInputShape("3,32").ok());
  EXPECT_FALSE(ParseInputShape("3,0,32").ok());
  EXPECT_FALSE(ParseInputShape("a,b,c").ok());
}

}  // namespace
}  // namespace distillery
