// bf16 mixed-precision training (common/tensor/precision.h, TrainerConfig::
// precision): a bf16 linear layer's backward pass within the rounding bound
// of its f32 twin, a short MNIST training in bf16 about as accurate as in
// f32 and as reproducible (the same bits twice, and after an interrupted and
// resumed run), the precision recorded in the checkpoint and kept on resume.
//
// The bf16 cases need a CPU with native bf16 (oneDNN ISA avx512_core_bf16 or
// above) and are skipped, saying so, elsewhere; ctest also runs the refusal
// with oneDNN capped at AVX512_CORE.
#include <cmath>
#include <cstdio>

#include "common/formats/checkpoint.h"
#include "common/nn/layers/linear_layer.h"
#include "common/tensor/dnnl_context.h"
#include "common/tensor/precision.h"
#include "common/train/resume.h"
#include "common/train/trainer.h"
#include "gtest/gtest.h"
#include "tests/interrupted_source.h"
#include "tests/mnist_slice_test.h"
#include "tests/test_util.h"

namespace distillery {
namespace {

constexpr int64_t kBatch = 37, kIn = 300, kOut = 40;

struct LinearGradients {
  Tensor grad_input, grad_weight, grad_bias;
};

// A training Forward then Backward of `layer` (weights and biases from
// seeds 1 and 2) on `input` with `grad_output`. With `infer_between`, an
// inference Forward on other rows comes between them, as an evaluation may.
LinearGradients Gradients(LinearLayer& layer, const Tensor& input, const Tensor& grad_output,
                          bool infer_between = false) {
  layer.weight().value = RandomMatrix(kOut, kIn, 1);
  layer.bias().value = RandomMatrix(1, kOut, 2);
  layer.ParametersChanged();
  Tensor output, other;
  EXPECT_TRUE(layer.Forward(input, /*training=*/true, &output).ok());
  if (infer_between) {
    EXPECT_TRUE(layer.Forward(RandomMatrix(9, kIn, 9), false, &other).ok());
  }
  LinearGradients g;
  EXPECT_TRUE(layer.Backward(input, output, grad_output, &g.grad_input).ok());
  g.grad_weight = layer.weight().grad;
  g.grad_bias = layer.bias().grad;
  return g;
}

// Rounding to bf16 (8 significant bits, to nearest) moves a value by at most
// 2^-8 of itself, so a product of two rounded operands by at most about
// 2^-7 of itself, and an f32 sum of such products by at most
// 2^-7 * sum |a b| (plus f32 rounding, in the 1e-5). The bias gradient sums
// rounded gradients only: at most 2^-8 * sum |g|.
TEST(Bf16LinearTest, BackwardIsWithinTheRoundingBoundOfF32) {
  SKIP_WITHOUT_BF16();
  DnnlContext context;
  LinearLayer f32(0, kIn, kOut, false, &context), bf16(0, kIn, kOut, false, &context);
  bf16.SetPrecision(Precision::kBF16);
  const Tensor input = RandomMatrix(kBatch, kIn, 3), grad = RandomMatrix(kBatch, kOut, 4);
  const LinearGradients exact = Gradients(f32, input, grad);
  const LinearGradients rounded = Gradients(bf16, input, grad);
  const Tensor& w = f32.weight().value;
  int64_t differ = 0;
  for (int64_t r = 0; r < kBatch; ++r) {
    for (int64_t i = 0; i < kIn; ++i) {
      double magnitude = 0;
      for (int64_t o = 0; o < kOut; ++o) magnitude += std::abs(grad.at(r, o) * w.at(o, i));
      EXPECT_NEAR(rounded.grad_input.at(r, i), exact.grad_input.at(r, i), magnitude / 128 + 1e-5);
      differ += rounded.grad_input.at(r, i) != exact.grad_input.at(r, i);
    }
  }
  for (int64_t o = 0; o < kOut; ++o) {
    double bias_magnitude = 0;
    for (int64_t r = 0; r < kBatch; ++r) bias_magnitude += std::abs(grad.at(r, o));
    EXPECT_NEAR(rounded.grad_bias.at(0, o), exact.grad_bias.at(0, o), bias_magnitude / 256 + 1e-5);
    for (int64_t i = 0; i < kIn; ++i) {
      double magnitude = 0;
      for (int64_t r = 0; r < kBatch; ++r) magnitude += std::abs(grad.at(r, o) * input.at(r, i));
      EXPECT_NEAR(rounded.grad_weight.at(o, i), exact.grad_weight.at(o, i), magnitude / 128 + 1e-5);
      differ += rounded.grad_weight.at(o, i) != exact.grad_weight.at(o, i);
    }
  }
  EXPECT_GT(differ, 0) << "the bf16 backward computed in f32";
  // An inference Forward between Forward and Backward changes nothing.
  LinearLayer again(0, kIn, kOut, false, &context);
  again.SetPrecision(Precision::kBF16);
  const LinearGradients interleaved = Gradients(again, input, grad, /*infer_between=*/true);
  EXPECT_TRUE(interleaved.grad_input == rounded.grad_input);
  EXPECT_TRUE(interleaved.grad_weight == rounded.grad_weight);
  EXPECT_TRUE(interleaved.grad_bias == rounded.grad_bias);
}

class Bf16TrainingTest : public MnistSliceTest<5000, kAllTestImages> {
 protected:
  static void SetUpTestSuite() {
    SetComputeThreads(2);
    MnistSliceTest::SetUpTestSuite();
  }
  // 784-256-10 for 2 epochs on 5,000 examples, with dropout and max-norm
  // (which stay exact in bf16).
  static TrainerConfig Config(PrecisionChoice precision, const std::string& name = "") {
    TrainerConfig config;
    config.architecture = "784-256-10";
    config.epochs = 2;
    config.batch_size = 100;
    config.schedule.base = 0.1f;
    config.hidden_dropout = 0.2f;
    config.sgd.max_norm = 3.5f;
    config.log_progress = false;
    config.precision = precision;
    config.data_description = "mnist train[0,5000)";
    if (!name.empty()) {
      config.checkpoint_path = UniqueTempPath(name + ".ckpt");
      std::remove(config.checkpoint_path.c_str());
    }
    return config;
  }
  static TrainingResult TrainOrDie(const TrainerConfig& config) {
    absl::StatusOr<TrainingResult> result = Train(config, *train_, *test_);
    EXPECT_TRUE(result.ok()) << result.status();
    return result.ok() ? std::move(*result) : TrainingResult();
  }
  // Runs `config` until its second epoch fails: the checkpoint holds epoch 1.
  static void Interrupt(const TrainerConfig& config) {
    InterruptedSource source(*train_, config, /*fail_epoch=*/1);
    absl::StatusOr<TrainingResult> result = Train(config, source, *test_);
    ASSERT_EQ(result.status().code(), absl::StatusCode::kUnavailable) << result.status();
  }
  static absl::StatusOr<TrainingResult> Resume(TrainerConfig config, PrecisionChoice precision) {
    config.resume = true;
    config.precision = precision;
    return Train(config, *train_, *test_);
  }
  static bool SameWeights(Network& a, Network& b) {
    std::vector<Parameter*> pa = a.Parameters(), pb = b.Parameters();
    for (size_t i = 0; i < pa.size(); ++i) {
      if (!(pa[i]->value == pb[i]->value)) return false;
    }
    return pa.size() == pb.size();
  }
};

// The same seed in f32 and bf16: the same initial weights, example order
// and dropout masks, so the runs differ by rounding only. On the Xeon with
// avx512_core_bf16 (2 threads) f32 makes 971 errors of 10,000 and bf16 972;
// 30 is the margin.
TEST_F(Bf16TrainingTest, MnistInBf16IsAsAccurateAsF32AndReproducible) {
  SKIP_WITHOUT_BF16();
  TrainingResult f32 = TrainOrDie(Config(PrecisionChoice::kF32));
  TrainingResult bf16 = TrainOrDie(Config(PrecisionChoice::kBF16));
  ASSERT_NE(bf16.network, nullptr);
  EXPECT_EQ(bf16.network->precision(), Precision::kBF16);
  EXPECT_EQ(f32.network->precision(), Precision::kF32);
  EXPECT_LE(bf16.final_evaluation.errors, f32.final_evaluation.errors + 30)
      << "f32 " << f32.final_evaluation.errors << ", bf16 " << bf16.final_evaluation.errors;
  EXPECT_FALSE(SameWeights(*f32.network, *bf16.network)) << "the bf16 run computed in f32";
  TrainingResult again = TrainOrDie(Config(PrecisionChoice::kBF16));
  EXPECT_TRUE(SameWeights(*bf16.network, *again.network)) << "bf16 training is not reproducible";
  EXPECT_EQ(again.final_evaluation.errors, bf16.final_evaluation.errors);
}

// A small convolutional network (convolutions, batch norm, pooling) for 2
// epochs on the same 5,000 examples: its convolutions train in bf16 too. On
// an AMD Zen 4 (family 25 model 17, avx512_core_bf16, 2 threads) f32 and
// bf16 both make 396 errors of 10,000; 30 is the margin.
TEST_F(Bf16TrainingTest, ConvolutionalMnistInBf16IsAsAccurateAsF32AndReproducible) {
  SKIP_WITHOUT_BF16();
  auto config = [](PrecisionChoice precision) {
    TrainerConfig c = Config(precision);
    c.architecture = "conv5x5:8/same+bn,pool2,conv3x3:16/same+bn,pool2,fc:10";
    c.hidden_dropout = 0;
    c.sgd.max_norm = 0;
    c.schedule.base = 0.05f;
    return c;
  };
  TrainingResult f32 = TrainOrDie(config(PrecisionChoice::kF32));
  TrainingResult bf16 = TrainOrDie(config(PrecisionChoice::kBF16));
  ASSERT_NE(bf16.network, nullptr);
  EXPECT_EQ(bf16.network->precision(), Precision::kBF16);
  EXPECT_LE(bf16.final_evaluation.errors, f32.final_evaluation.errors + 30)
      << "f32 " << f32.final_evaluation.errors << ", bf16 " << bf16.final_evaluation.errors;
  EXPECT_FALSE(SameWeights(*f32.network, *bf16.network)) << "the bf16 run computed in f32";
  TrainingResult again = TrainOrDie(config(PrecisionChoice::kBF16));
  EXPECT_TRUE(SameWeights(*bf16.network, *again.network)) << "bf16 training is not reproducible";
}

TEST_F(Bf16TrainingTest, CheckpointRecordsBf16AndResumeKeepsIt) {
  SKIP_WITHOUT_BF16();
  const TrainingResult straight = TrainOrDie(Config(PrecisionChoice::kBF16, "bf16_straight"));
  ASSERT_NE(straight.network, nullptr);
  const TrainerConfig config = Config(PrecisionChoice::kBF16, "bf16_resumed");
  Interrupt(config);
  auto checkpoint = LoadCheckpoint(config.checkpoint_path);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  EXPECT_EQ(checkpoint->training_state().precision(), "bf16");
  auto text = DescribeCheckpoint(*checkpoint);
  ASSERT_TRUE(text.ok());
  EXPECT_NE(text->find("precision bf16"), std::string::npos) << *text;
  // Another explicit precision is refused, naming both.
  auto refused = Resume(config, PrecisionChoice::kF32);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("trained with --precision=bf16, this run asks for "
                                            "--precision=f32"),
            std::string::npos)
      << refused.status();
  // auto keeps bf16, and the resumed run ends with the uninterrupted one's bits.
  auto resumed = Resume(config, PrecisionChoice::kAuto);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(resumed->history.size(), 1u);
  EXPECT_EQ(resumed->network->precision(), Precision::kBF16);
  EXPECT_TRUE(SameWeights(*straight.network, *resumed->network));
}

// Checkpoints without the field (older ones) are f32: resuming one in bf16
// is refused, on any CPU.
TEST_F(Bf16TrainingTest, CheckpointWithoutPrecisionIsF32) {
  TrainerConfig config = Config(PrecisionChoice::kF32, "f32_unrecorded");
  config.epochs = 1;
  TrainOrDie(config);
  auto checkpoint = LoadCheckpoint(config.checkpoint_path);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  EXPECT_EQ(checkpoint->training_state().precision(), "f32");
  checkpoint->mutable_training_state()->clear_precision();
  EXPECT_EQ(*RecordedPrecision(*checkpoint, "old.ckpt"), Precision::kF32);
  std::string why;
  EXPECT_EQ(*ResumePrecision(*checkpoint, "old.ckpt", PrecisionChoice::kAuto, &why),
            Precision::kF32);
  auto refused = ResumePrecision(*checkpoint, "old.ckpt", PrecisionChoice::kBF16, &why);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("--precision=f32"), std::string::npos)
      << refused.status();
}

// Under ONEDNN_MAX_CPU_ISA=AVX512_CORE (ctest's Bf16Train_under_AVX512_CORE).
TEST_F(Bf16TrainingTest, Bf16IsRefusedWithoutNativeBf16) {
  if (CpuHasNativeBf16()) GTEST_SKIP() << "oneDNN ISA " << CpuIsaName() << " has native bf16";
  auto refused = Train(Config(PrecisionChoice::kBF16), *train_, *test_);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("needs a CPU with native bf16"), std::string::npos)
      << refused.status();
}

}  // namespace
}  // namespace distillery
