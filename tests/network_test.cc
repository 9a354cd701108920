// The network as a whole: architecture parsing, seeded initialisation, and a
// finite-difference check of back-propagation through every layer type.
#include "common/nn/network.h"

#include "common/formats/checkpoint.h"
#include "common/nn/losses.h"
#include "common/nn/optimizer.h"
#include "common/tensor/precision.h"
#include "tests/test_util.h"

namespace distillery {
namespace {

TEST(NetworkSpecTest, ParsesTheMlpFormAndCounts) {
  absl::StatusOr<NetworkSpec> spec = NetworkSpec::Parse("784-1200-1200-10", {1, 28, 28});
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->ArchitectureString(), "784-1200-1200-10");
  auto network = *Network::Create(*spec, 1);
  EXPECT_EQ(network->ParameterCount(), 784 * 1200 + 1200 + 1200 * 1200 + 1200 + 1200 * 10 + 10);
  EXPECT_EQ(network->ForwardMacsPerExample(), 784 * 1200 + 1200 * 1200 + 1200 * 10);
  EXPECT_EQ(network->num_classes(), 10);
  for (const char* bad : {"", "784", "784-x-10", "784-0-10", "784--10", "784-100000-10"}) {
    EXPECT_EQ(NetworkSpec::Parse(bad, {1, 28, 28}).status().code(),
              absl::StatusCode::kInvalidArgument)
        << bad;
  }
  // The first size must be the data's.
  absl::Status wrong = NetworkSpec::Parse("784-10", {3, 28, 28}).status();
  EXPECT_EQ(wrong.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(wrong.message().find("(3, 28, 28) = 2352"), std::string::npos) << wrong;
}

TEST(NetworkSpecTest, ParsesTheLayerListForm) {
  absl::StatusOr<NetworkSpec> spec = NetworkSpec::Parse(
      "conv5x5:32/same+bn,pool2,conv3x3:64/s2:none,avgpool2/inclpad,fc:128,dropout:0.5,fc:10",
      {1, 28, 28});
  ASSERT_TRUE(spec.ok()) << spec.status();
  using Kind = LayerSpec::Kind;
  std::vector<Kind> kinds;
  for (const LayerSpec& layer : spec->layers) kinds.push_back(layer.kind);
  EXPECT_EQ(kinds,
            (std::vector<Kind>{Kind::kConv2d, Kind::kBatchNorm, Kind::kRelu, Kind::kMaxPool2d,
                               Kind::kConv2d, Kind::kAvgPool2d, Kind::kFlatten, Kind::kLinear,
                               Kind::kRelu, Kind::kDropout, Kind::kLinear}));
  const LayerSpec& conv = spec->layers[0];
  EXPECT_EQ(conv.units, 32);
  EXPECT_EQ(conv.kernel_rows, 5);
  EXPECT_EQ(conv.pad_rows, 2);
  EXPECT_TRUE(conv.max_norm);
  EXPECT_EQ(spec->layers[3].stride_rows, 2);  // pool stride defaults to its window
  EXPECT_EQ(spec->layers[4].stride_rows, 2);
  EXPECT_TRUE(spec->layers[5].count_include_pad);
  EXPECT_FALSE(spec->layers.back().max_norm);
  // The canonical text parses back to the same layers.
  const std::string canonical = spec->ArchitectureString();
  absl::StatusOr<NetworkSpec> again = NetworkSpec::Parse(canonical, {1, 28, 28});
  ASSERT_TRUE(again.ok()) << canonical << ": " << again.status();
  EXPECT_EQ(again->ArchitectureString(), canonical);
  ASSERT_EQ(again->layers.size(), spec->layers.size());
  for (size_t i = 0; i < spec->layers.size(); ++i) {
    EXPECT_EQ(again->layers[i].Token(), spec->layers[i].Token()) << canonical;
  }
}

TEST(NetworkSpecTest, RefusesTextThatDoesNotParseNamingTheToken) {
  for (const auto& [text, token] : std::vector<std::pair<std::string, std::string>>{
           {"conv5x5,fc:10", "conv5x5"},
           {"conv5x5:0,fc:10", "conv5x5:0"},
           {"convAxB:3,fc:10", "convAxB:3"},
           {"conv3x3:8/q2,fc:10", "conv3x3:8/q2"},
           {"conv4x4:8/same,fc:10", "conv4x4:8/same"},
           {"pool0,fc:10", "pool0"},
           {"maxpool2/inclpad,fc:10", "maxpool2/inclpad"},
           {"fc:10:softmax", "fc:10:softmax"},
           {"dropout:1.5,fc:10", "dropout:1.5"},
           {"lstm:32,fc:10", "lstm:32"},
           {"fc:10,,fc:10", ""},
       }) {
    absl::Status s = NetworkSpec::Parse(text, {1, 28, 28}).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_NE(s.message().find("\"" + token + "\""), std::string::npos) << text << ": " << s;
  }
}

TEST(NetworkTest, ShapesThatDoNotFitAreRefusedBeforeTraining) {
  // A 28x28 image cannot take a pooling window of 32, and a network must end
  // in a vector of classes.
  for (const char* text : {"maxpool32,fc:10", "fc:64,relu"}) {
    NetworkSpec spec = *NetworkSpec::Parse(text, {1, 28, 28});
    absl::StatusOr<std::unique_ptr<Network>> network = Network::Create(spec, 1);
    if (std::string(text) == "fc:64,relu") {
      // fc:64 is the last fc, so it gives logits: 64 classes is a valid network.
      ASSERT_TRUE(network.ok()) << network.status();
      EXPECT_EQ((*network)->num_classes(), 64);
      continue;
    }
    EXPECT_EQ(network.status().code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_NE(network.status().message().find("layer 1"), std::string::npos) << network.status();
  }
  // Absurd sizes are refused before anything is allocated.
  NetworkSpec huge = *NetworkSpec::Parse("fc:65536,fc:65536,fc:10", {1, 28, 28});
  absl::Status s = Network::Create(huge, 1).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("parameters"), std::string::npos) << s;
}

TEST(MlpTest, SameSeedSameWeightsWithinTheInitRange) {
  NetworkSpec spec = *NetworkSpec::Parse("16-8-4", {16});
  auto a = *Network::Create(spec, 9), b = *Network::Create(spec, 9), c = *Network::Create(spec, 10);
  EXPECT_EQ(a->Parameters()[0]->value, b->Parameters()[0]->value);
  EXPECT_FALSE(a->Parameters()[0]->value == c->Parameters()[0]->value);
  const Tensor& w = a->Parameters()[0]->value;
  for (int64_t i = 0; i < w.size(); ++i) EXPECT_LE(std::abs(w.data()[i]), 0.25f);  // 1/sqrt(16)
}

TEST(MlpTest, RejectsInputOfTheWrongWidth) {
  auto mlp = *Network::Create(*NetworkSpec::Parse("16-8-4", {16}), 1);
  Tensor input(2, 15);
  const Tensor* logits = nullptr;
  EXPECT_EQ(mlp->Predict(input, &logits).code(), absl::StatusCode::kInvalidArgument);
}

// d(loss)/d(weights) of the whole network, through Linear, ReLU and dropout
// (masks fixed by the noise step), against central differences. The step is
// 1e-2: oneDNN's log-softmax is accurate to ~2e-6, too coarse for smaller ones.
TEST(MlpTest, BackpropagationMatchesFiniteDifferences) {
  NetworkSpec spec = *NetworkSpec::Parse("6-5-4-3", {1, 2, 3}, 0.2f, 0.3f);
  auto mlp = *Network::Create(spec, 21);
  const Tensor input = RandomMatrix(4, 6, 22);
  const std::vector<int> labels = {0, 2, 1, 2};
  CrossEntropyLoss loss;
  auto value = [&] {
    const Tensor* logits = nullptr;
    EXPECT_TRUE(mlp->Forward(input, true, 77, &logits).ok());
    Tensor unused;
    return *loss.Compute(*logits, labels, 1.f, &unused);
  };
  const Tensor* logits = nullptr;
  ASSERT_TRUE(mlp->Forward(input, true, 77, &logits).ok());
  Tensor grad_logits;
  ASSERT_TRUE(loss.Compute(*logits, labels, 1.f, &grad_logits).ok());
  ASSERT_TRUE(mlp->Backward(grad_logits).ok());
  std::vector<Tensor> grads;
  for (Parameter* p : mlp->Parameters()) grads.push_back(p->grad);
  std::vector<Parameter*> params = mlp->Parameters();
  for (size_t i = 0; i < params.size(); ++i) {
    SCOPED_TRACE(params[i]->name);
    ExpectGradientMatches(value, &params[i]->value, grads[i], 1e-2, 3e-2, 1e-4,
                          /*skip_kinks=*/true);
  }
}

TEST(MlpTest, CloneHasTheSameOutputs) {
  auto mlp = *Network::Create(*NetworkSpec::Parse("10-6-3", {10}), 5);
  auto copy = *mlp->Clone();
  const Tensor input = RandomMatrix(3, 10, 6);
  const Tensor *a = nullptr, *b = nullptr;
  ASSERT_TRUE(mlp->Predict(input, &a).ok());
  ASSERT_TRUE(copy->Predict(input, &b).ok());
  EXPECT_EQ(*a, *b);
}

// A small convolutional network: trains a few steps (batch statistics move
// the running averages), then a checkpoint round trip gives bit-identical
// inference outputs, which use the saved running statistics.
TEST(NetworkTest, ConvolutionalCheckpointRoundTripIsBitIdentical) {
  NetworkSpec spec =
      *NetworkSpec::Parse("conv3x3:4/same+bn,maxpool2,conv3x3:6,avgpool2,fc:16+bn,fc:3", {2, 8, 8});
  auto network = *Network::Create(spec, 11);
  EXPECT_EQ(network->input_shape(), (Shape{2, 8, 8}));
  EXPECT_EQ(network->layer_shapes()[0], (Shape{4, 8, 8}));
  EXPECT_EQ(network->num_classes(), 3);
  EXPECT_EQ(network->Buffers().size(), 4u);  // two batch norms' mean and variance
  CrossEntropyLoss loss;
  std::unique_ptr<Optimizer> sgd = MakeSgd(SgdConfig());
  Tensor input = RandomMatrix(5, 2 * 8 * 8, 3);
  ASSERT_TRUE(input.Reinterpret({5, 2, 8, 8}));
  const std::vector<int> labels = {0, 1, 2, 1, 0};
  for (int step = 0; step < 3; ++step) {
    const Tensor* logits = nullptr;
    ASSERT_TRUE(network->Forward(input, true, step, &logits).ok());
    Tensor grad;
    ASSERT_TRUE(loss.Compute(*logits, labels, 1.f, &grad).ok());
    ASSERT_TRUE(network->Backward(grad).ok());
    sgd->Step(network->Parameters(), 0.1f, step);
  }
  const Tensor* running_var = network->Buffers()[1].value;
  EXPECT_NE(running_var->data()[0], 1.f) << "training did not update the running variance";
  const Tensor* before = nullptr;
  ASSERT_TRUE(network->Predict(input, &before).ok());
  const Tensor expected = *before;
  distill::v1::Checkpoint checkpoint = MakeCheckpoint(*network, "teacher");
  ASSERT_TRUE(ValidateCheckpoint(checkpoint).ok());
  auto restored = *NetworkFromCheckpoint(checkpoint);
  EXPECT_EQ(restored->spec().ArchitectureString(), spec.ArchitectureString());
  EXPECT_EQ(WeightsFingerprint(*restored), WeightsFingerprint(*network));
  const Tensor* after = nullptr;
  ASSERT_TRUE(restored->Predict(input, &after).ok());
  EXPECT_EQ(*after, expected);
  // A flat (batch, features) reading of the same inputs gives the same outputs.
  Tensor flat = input;
  ASSERT_TRUE(flat.Reinterpret({5, 2 * 8 * 8}));
  ASSERT_TRUE(restored->Predict(flat, &after).ok());
  EXPECT_EQ(*after, expected);
}

// Every parameter gradient of `network`'s cross-entropy back-propagation on
// (input, labels) against central differences (steps of 1e-3: batch
// normalization over 3 examples curves the loss too much for 5e-3; points
// near a ReLU or max-pooling kink are skipped).
void ExpectImageNetworkGradientsMatch(Network& network, const Tensor& input,
                                      const std::vector<int>& labels) {
  CrossEntropyLoss loss;
  auto value = [&] {
    const Tensor* logits = nullptr;
    EXPECT_TRUE(network.Forward(input, true, 1, &logits).ok());
    Tensor unused;
    return *loss.Compute(*logits, labels, 1.f, &unused);
  };
  const Tensor* logits = nullptr;
  ASSERT_TRUE(network.Forward(input, true, 1, &logits).ok());
  Tensor grad_logits;
  ASSERT_TRUE(loss.Compute(*logits, labels, 1.f, &grad_logits).ok());
  ASSERT_TRUE(network.Backward(grad_logits).ok());
  std::vector<Parameter*> params = network.Parameters();
  std::vector<Tensor> grads;
  for (Parameter* p : params) grads.push_back(p->grad);
  for (size_t i = 0; i < params.size(); ++i) {
    SCOPED_TRACE(params[i]->name);
    ExpectGradientMatches(value, &params[i]->value, grads[i], 1e-3, 3e-2, 1e-3,
                          /*skip_kinks=*/true);
  }
}

// The whole network's back-propagation through convolution, batch norm,
// pooling and flatten against central differences.
TEST(NetworkTest, ConvolutionalBackpropagationMatchesFiniteDifferences) {
  auto network =
      *Network::Create(*NetworkSpec::Parse("conv3x3:3/p1+bn,avgpool2,fc:4", {1, 6, 6}), 5);
  Tensor input = RandomMatrix(3, 36, 6);
  ASSERT_TRUE(input.Reinterpret({3, 1, 6, 6}));
  const std::vector<int> labels = {0, 3, 1};
  ExpectImageNetworkGradientsMatch(*network, input, labels);
}

// Infer between a training Forward and its Backward leaves the Backward as
// it was (network.h), batch norm's statistics and fused ReLU included.
TEST(NetworkTest, InferBetweenForwardAndBackwardChangesNothing) {
  for (const Precision precision : {Precision::kF32, Precision::kBF16}) {
    if (precision == Precision::kBF16 && !CpuHasNativeBf16()) continue;
    SCOPED_TRACE(PrecisionName(precision));
    auto network = *Network::Create(
        *NetworkSpec::Parse("conv3x3:16/p1+bn,maxpool2,fc:8+bn,fc:3", {1, 6, 6}), 5);
    network->SetPrecision(precision);
    const Tensor input = RandomMatrix(4, 36, 6), other = RandomMatrix(3, 36, 7);
    const Tensor grad_logits = RandomMatrix(4, 3, 8);
    auto gradients = [&](bool infer_between) {
      const Tensor* logits = nullptr;
      EXPECT_TRUE(network->Forward(input, /*training=*/true, 0, &logits).ok());
      if (infer_between) {
        EXPECT_TRUE(network->Infer(other, &logits).ok());
      }
      const absl::Status backward = network->Backward(grad_logits);
      EXPECT_TRUE(backward.ok()) << backward;
      std::vector<Tensor> grads;
      for (Parameter* p : network->Parameters()) grads.push_back(p->grad);
      return grads;
    };
    const std::vector<Tensor> alone = gradients(false), with_infer = gradients(true);
    ASSERT_EQ(alone.size(), with_infer.size());
    for (size_t i = 0; i < alone.size(); ++i) EXPECT_EQ(alone[i], with_infer[i]) << i;
  }
}

// The activation and global pooling tokens: parsed, built, trained a step,
// written to a checkpoint and read back bit for bit, and back-propagated
// through against finite differences.
TEST(NetworkTest, LeakyReluSigmoidTanhAndGlobalPoolingLayers) {
  NetworkSpec spec = *NetworkSpec::Parse(
      "conv3x3:4/p1:none,leakyrelu:0.1,conv3x3:3:none,tanh,gap,fc:5:none,"
      "sigmoid,fc:3",
      {2, 6, 6});
  EXPECT_EQ(spec.ArchitectureString(),
            "conv3x3/p1:4:none,leakyrelu:0.1,conv3x3:3:none,tanh,gap,flatten,fc:5:none,sigmoid,"
            "fc:3:none");
  auto network = *Network::Create(spec, 3);
  EXPECT_EQ(network->layer_shapes()[4], (Shape{3, 1, 1}));
  EXPECT_EQ(network->Describe().find("LeakyReLU(0.1) -> Conv2d") != std::string::npos, true)
      << network->Describe();
  EXPECT_EQ(NetworkSpec::Parse(spec.ArchitectureString(), {2, 6, 6})->ArchitectureString(),
            spec.ArchitectureString());
  Tensor input = RandomMatrix(3, 72, 8);
  ASSERT_TRUE(input.Reinterpret({3, 2, 6, 6}));
  const std::vector<int> labels = {2, 0, 1};
  ExpectImageNetworkGradientsMatch(*network, input, labels);
  const Tensor* before = nullptr;
  ASSERT_TRUE(network->Predict(input, &before).ok());
  const Tensor expected = *before;
  distill::v1::Checkpoint checkpoint = MakeCheckpoint(*network, "student");
  EXPECT_EQ(checkpoint.architecture().layers(1).kind(), "leakyrelu");
  EXPECT_FLOAT_EQ(checkpoint.architecture().layers(1).alpha(), 0.1f);
  EXPECT_EQ(checkpoint.architecture().layers(4).kind(), "globalavgpool");
  auto restored = *NetworkFromCheckpoint(checkpoint);
  EXPECT_EQ(restored->spec().ArchitectureString(), spec.ArchitectureString());
  const Tensor* after = nullptr;
  ASSERT_TRUE(restored->Predict(input, &after).ok());
  EXPECT_EQ(*after, expected);
  // A slope that is not a number is refused, naming the token.
  auto bad = NetworkSpec::Parse("leakyrelu:x,fc:3", {4});
  EXPECT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("\"leakyrelu:x\" needs a finite slope"),
            absl::string_view::npos)
      << bad.status();
  EXPECT_FALSE(NetworkSpec::Parse("leakyrelu:inf,fc:3", {4}).ok());
  // gap takes images only.
  EXPECT_FALSE(Network::Create(*NetworkSpec::Parse("gap,fc:3", {4}), 1).ok());
}

TEST(NetworkSpecTest, ConvDilationPerAxis) {
  NetworkSpec spec = *NetworkSpec::Parse("conv3x3:2/d3x1,fc:3", {1, 9, 9});
  EXPECT_EQ(spec.layers[0].dilation, 3);
  EXPECT_EQ(spec.layers[0].dilation_cols, 1);
  EXPECT_EQ(spec.ArchitectureString(), "conv3x3/d3x1:2:none,relu,flatten,fc:3:none");
  EXPECT_EQ(NetworkSpec::Parse("conv3x3:2/d2x2,fc:3", {1, 9, 9})->layers[0].Token(),
            "conv3x3/d2:2:none");
  auto network = *Network::Create(spec, 1);
  EXPECT_EQ(network->layer_shapes()[0], (Shape{2, 3, 7}));  // 9 - 3*2, 9 - 2
  auto restored = *NetworkFromCheckpoint(MakeCheckpoint(*network, "student"));
  EXPECT_EQ(restored->spec().ArchitectureString(), spec.ArchitectureString());
  EXPECT_FALSE(NetworkSpec::Parse("maxpool2/d2x1,fc:3", {1, 9, 9}).ok());
}

TEST(NetworkSpecTest, CeilModePoolingTokens) {
  NetworkSpec spec = *NetworkSpec::Parse("maxpool2/ceil,avgpool3/s2/p1/ceil,fc:3", {1, 7, 7});
  EXPECT_EQ(spec.ArchitectureString(), "maxpool2x2/ceil,avgpool3x3/s2/p1/ceil,flatten,fc:3:none");
  EXPECT_TRUE(spec.layers[0].ceil_mode);
  auto network = *Network::Create(spec, 1);
  EXPECT_EQ(network->layer_shapes()[0], (Shape{1, 4, 4}));  // 7 -> 4, not 3
  EXPECT_EQ(network->layer_shapes()[1], (Shape{1, 3, 3}));  // 4 + 2 - 3 = 3 -> 3 (2 + 1)
  auto restored = *NetworkFromCheckpoint(MakeCheckpoint(*network, "student"));
  EXPECT_EQ(restored->spec().ArchitectureString(), spec.ArchitectureString());
  EXPECT_FALSE(NetworkSpec::Parse("conv3x3:4/ceil,fc:3", {1, 7, 7}).ok());
}

}  // namespace
}  // namespace distillery
