// bf16 inference (common/tensor/precision.h): the choice of precision per
// CPU, a bf16 linear layer within the rounding bound of its f32 twin, a bf16
// network's answers close to f32's and as batch-invariant, and bf16 weights
// made again after the f32 weights change.
//
// The bf16 cases need a CPU with native bf16 (oneDNN ISA avx512_core_bf16 or
// above) and are skipped, saying so, elsewhere; ctest also runs this file
// with oneDNN capped at AVX512_CORE, where the refusals are what is tested.
#include <cmath>

#include "common/nn/layers/linear_layer.h"
#include "common/nn/network.h"
#include "common/tensor/dnnl_context.h"
#include "common/tensor/precision.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace distillery {
namespace {

TEST(PrecisionTest, AutoAndExplicitChoicesFollowTheIsa) {
  EXPECT_FALSE(ParsePrecisionChoice("fp16").ok());
  EXPECT_EQ(*ParsePrecisionChoice("auto"), PrecisionChoice::kAuto);
  std::string why;
  EXPECT_EQ(*ResolvePrecision(PrecisionChoice::kF32, PrecisionUse::kServing, &why),
            Precision::kF32);
  auto chosen = ResolvePrecision(PrecisionChoice::kAuto, PrecisionUse::kTraining, &why);
  ASSERT_TRUE(chosen.ok());
  EXPECT_NE(why.find(CpuIsaName()), std::string::npos) << why;
  // Training and serving alike: auto is bf16 when oneDNN has AMX, and on
  // AVX512_BF16 on Zen 4 and Zen 5 (AMD families 25 and 26); the log names
  // the CPU family whenever bf16 is native.
  const bool zen4 = CpuFamilyName().rfind("AMD family 25 ", 0) == 0;
  const bool zen5 = CpuFamilyName().rfind("AMD family 26 ", 0) == 0;
  EXPECT_EQ(*chosen == Precision::kBF16, CpuHasAmx() || (CpuHasNativeBf16() && (zen4 || zen5)))
      << why;
  auto serving = ResolvePrecision(PrecisionChoice::kAuto, PrecisionUse::kServing, &why);
  ASSERT_TRUE(serving.ok());
  EXPECT_EQ(*serving == Precision::kBF16, CpuHasAmx() || (CpuHasNativeBf16() && (zen4 || zen5)))
      << why;
  if (CpuHasNativeBf16() && !CpuHasAmx()) {
    EXPECT_NE(why.find(CpuFamilyName()), std::string::npos) << why;
  }
  auto bf16 = ResolvePrecision(PrecisionChoice::kBF16, PrecisionUse::kTraining, &why);
  if (CpuHasNativeBf16()) {
    EXPECT_TRUE(bf16.ok()) << bf16.status();
  } else {
    EXPECT_EQ(bf16.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_NE(bf16.status().message().find(CpuIsaName()), std::string::npos) << bf16.status();
    EXPECT_NE(why.find("no native bf16"), std::string::npos) << why;
  }
}

// bf16 keeps 8 significant bits: rounded to nearest, each operand of a
// product is off by at most 2^-8 of itself, so each product by at most about
// 2^-7, and the f32 sum of n products by at most 2^-7 * sum |w x| (plus f32
// rounding).
TEST(Bf16LinearTest, ForwardIsWithinTheRoundingBoundOfF32) {
  SKIP_WITHOUT_BF16();
  DnnlContext context;
  LinearLayer f32(0, 300, 40, false, &context), bf16(0, 300, 40, false, &context);
  f32.weight().value = RandomMatrix(40, 300, 1);
  f32.bias().value = RandomMatrix(1, 40, 2);
  bf16.weight().value = f32.weight().value;
  bf16.bias().value = f32.bias().value;
  bf16.SetPrecision(Precision::kBF16);
  const Tensor input = RandomMatrix(37, 300, 3);
  Tensor exact, rounded;
  ASSERT_TRUE(f32.Forward(input, false, &exact).ok());
  ASSERT_TRUE(bf16.Forward(input, false, &rounded).ok());
  int64_t differ = 0;
  for (int64_t r = 0; r < 37; ++r) {
    for (int64_t o = 0; o < 40; ++o) {
      double magnitude = 0;
      for (int64_t i = 0; i < 300; ++i) {
        magnitude += std::abs(input.at(r, i) * f32.weight().value.at(o, i));
      }
      EXPECT_NEAR(rounded.at(r, o), exact.at(r, o), magnitude / 128 + 1e-5) << r << " " << o;
      differ += rounded.at(r, o) != exact.at(r, o);
    }
  }
  EXPECT_GT(differ, 0) << "the bf16 path computed in f32";
}

std::unique_ptr<Network> Mlp(uint64_t seed) {
  auto network = Network::Create(*NetworkSpec::Parse("784-300-300-10", {1, 28, 28}), seed);
  EXPECT_TRUE(network.ok()) << network.status();
  return std::move(*network);
}

// The largest difference between `f32`'s and `bf16`'s logits for `inputs`
// (both are kept in *exact and *rounded), and the largest f32 logit.
struct Comparison {
  double largest = 0, scale = 0;
};
Comparison CompareInference(Network& f32, Network& bf16, const Tensor& inputs, Tensor* exact,
                            Tensor* rounded) {
  const Tensor* logits = nullptr;
  EXPECT_TRUE(f32.Infer(inputs, &logits).ok());
  *exact = *logits;
  EXPECT_TRUE(bf16.Infer(inputs, &logits).ok());
  *rounded = *logits;
  Comparison c;
  for (int64_t i = 0; i < exact->size(); ++i) {
    c.largest = std::max<double>(c.largest, std::abs(rounded->data()[i] - exact->data()[i]));
    c.scale = std::max<double>(c.scale, std::abs(exact->data()[i]));
  }
  return c;
}

TEST(Bf16NetworkTest, InferenceIsCloseToF32AndBatchInvariant) {
  SKIP_WITHOUT_BF16();
  std::unique_ptr<Network> f32 = Mlp(4);
  auto copy = f32->Clone();
  ASSERT_TRUE(copy.ok());
  std::unique_ptr<Network> bf16 = std::move(*copy);
  bf16->SetPrecision(Precision::kBF16);
  const Tensor inputs = RandomMatrix(300, 784, 5, 1.f);
  Tensor exact, rounded;
  const Comparison c = CompareInference(*f32, *bf16, inputs, &exact, &rounded);
  EXPECT_GT(c.largest, 0.0);
  EXPECT_LT(c.largest, 0.02 * c.scale) << "largest logit " << c.scale;
  const Tensor* logits = nullptr;
  // A row alone gives the bits it gives among 299 others.
  Tensor one(1, 784);
  std::copy(inputs.row(201), inputs.row(202), one.data());
  ASSERT_TRUE(bf16->Infer(one, &logits).ok());
  for (int64_t c = 0; c < 10; ++c) EXPECT_EQ(logits->at(0, c), rounded.at(201, c));
  // A clone keeps the precision.
  auto clone = bf16->Clone();
  ASSERT_TRUE(clone.ok());
  EXPECT_EQ((*clone)->precision(), Precision::kBF16);
  ASSERT_TRUE((*clone)->Infer(one, &logits).ok());
  for (int64_t c = 0; c < 10; ++c) EXPECT_EQ(logits->at(0, c), rounded.at(201, c));
}

TEST(Bf16NetworkTest, NewF32WeightsMakeNewBf16Copies) {
  SKIP_WITHOUT_BF16();
  std::unique_ptr<Network> network = Mlp(6);
  network->SetPrecision(Precision::kBF16);
  const Tensor inputs = RandomMatrix(8, 784, 7, 1.f);
  const Tensor* logits = nullptr;
  ASSERT_TRUE(network->Infer(inputs, &logits).ok());
  const Tensor before = *logits;
  // Through Parameters(), as the optimizer and checkpoint loading write.
  for (Parameter* p : network->Parameters()) {
    for (int64_t i = 0; i < p->value.size(); ++i) p->value.data()[i] *= 2.f;
  }
  ASSERT_TRUE(network->Infer(inputs, &logits).ok());
  // Doubled weights and biases in three layers: the logits change.
  double changed = 0;
  for (int64_t i = 0; i < before.size(); ++i) {
    changed = std::max<double>(changed, std::abs(logits->data()[i] - before.data()[i]));
  }
  EXPECT_GT(changed, 0.1);
  // And equal a fresh network's with those weights.
  auto fresh = network->Clone();
  ASSERT_TRUE(fresh.ok());
  const Tensor after = *logits;
  ASSERT_TRUE((*fresh)->Infer(inputs, &logits).ok());
  EXPECT_TRUE(*logits == after);
}

TEST(Bf16NetworkTest, ConvolutionalNetworksInferAndTrainInBf16) {
  SKIP_WITHOUT_BF16();
  auto spec = NetworkSpec::Parse("conv5x5:16/same+bn,pool2,conv3x3:32/same+bn,pool2,fc:64,fc:10",
                                 {1, 28, 28});
  ASSERT_TRUE(spec.ok()) << spec.status();
  auto created = Network::Create(*spec, 8);
  ASSERT_TRUE(created.ok()) << created.status();
  std::unique_ptr<Network> f32 = std::move(*created);
  auto copy = f32->Clone();
  ASSERT_TRUE(copy.ok());
  std::unique_ptr<Network> bf16 = std::move(*copy);
  bf16->SetPrecision(Precision::kBF16);
  Tensor inputs = RandomMatrix(130, 784, 9, 1.f);
  inputs.Reinterpret({130, 1, 28, 28});
  Tensor exact, rounded;
  const Comparison c = CompareInference(*f32, *bf16, inputs, &exact, &rounded);
  EXPECT_GT(c.largest, 0.0);
  EXPECT_LT(c.largest, 0.03 * c.scale) << "largest logit " << c.scale;
  const Tensor* logits = nullptr;
  // Batch-invariant in bf16 too.
  Tensor one({1, 1, 28, 28});
  std::copy(inputs.data() + 129 * 784, inputs.data() + 130 * 784, one.data());
  ASSERT_TRUE(bf16->Infer(one, &logits).ok());
  for (int64_t c = 0; c < 10; ++c) EXPECT_EQ(logits->at(0, c), rounded.at(129, c));
  // A training step: every weight gradient (convolutions, batch norm and
  // fully connected layers) points where f32's does (cosine above 0.98; on
  // random data the gradients are small sums of large terms, so rounding
  // moves them by up to ~10% of their norm), and the first convolution's
  // differs from f32's (it was computed in bf16). The biases before batch
  // norm get gradients of ~0 and are left out.
  const Tensor grad_logits = RandomMatrix(130, 10, 10, 0.01f);
  for (Network* network : {f32.get(), bf16.get()}) {
    const Tensor* trained = nullptr;
    ASSERT_TRUE(network->Forward(inputs, true, 1, &trained).ok());
    const absl::Status s = network->Backward(grad_logits);
    ASSERT_TRUE(s.ok()) << s;
  }
  std::vector<Parameter*> exact_params = f32->Parameters(), rounded_params = bf16->Parameters();
  ASSERT_EQ(exact_params.size(), rounded_params.size());
  for (size_t i = 0; i < exact_params.size(); ++i) {
    const std::string& name = exact_params[i]->name;
    if (name.size() < 7 || name.compare(name.size() - 7, 7, ".weight") != 0) continue;
    const Tensor& e = exact_params[i]->grad;
    const Tensor& r = rounded_params[i]->grad;
    double dot = 0, ee = 0, rr = 0;
    for (int64_t k = 0; k < e.size(); ++k) {
      dot += double{e.data()[k]} * r.data()[k];
      ee += double{e.data()[k]} * e.data()[k];
      rr += double{r.data()[k]} * r.data()[k];
    }
    EXPECT_GT(dot / std::sqrt(ee * rr), 0.98) << name;
    if (i == 0) {
      EXPECT_FALSE(e == r) << "the first convolution trained in f32";
    }
  }
}

}  // namespace
}  // namespace distillery
