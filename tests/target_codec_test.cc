// fp16 conversion and the soft-target encodings round trip.
#include "common/formats/target_codec.h"

#include <cmath>

#include "tests/test_util.h"

namespace distillery {
namespace {

TEST(HalfTest, KnownValuesAndRounding) {
  EXPECT_EQ(FloatToHalf(1.f), 0x3C00);
  EXPECT_EQ(FloatToHalf(-2.f), 0xC000);
  EXPECT_EQ(FloatToHalf(0.f), 0x0000);
  EXPECT_EQ(FloatToHalf(65504.f), 0x7BFF);
  EXPECT_EQ(FloatToHalf(1e6f), 0x7C00);              // overflow to infinity
  EXPECT_EQ(FloatToHalf(5.96046448e-8f), 0x0001);    // smallest subnormal
  EXPECT_EQ(FloatToHalf(1.f + 1.f / 2048), 0x3C00);  // tie rounds to even
  EXPECT_EQ(FloatToHalf(1.f + 3.f / 2048), 0x3C02);
  EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(std::nanf("")))));
  for (uint32_t h = 0; h < 0x7C00; ++h) {  // every finite positive half survives
    EXPECT_EQ(FloatToHalf(HalfToFloat(static_cast<uint16_t>(h))), h);
  }
}

distill::v1::SoftTargetContract Contract(distill::v1::Representation representation,
                                         distill::v1::DType dtype, uint32_t top_k, float t) {
  distill::v1::TargetOptions options;
  options.set_representation(representation);
  options.set_dtype(dtype);
  options.set_top_k(top_k);
  options.set_temperature(t);
  return *ResolveTargetOptions(options, 10, 1.f, "abc");
}

TEST(TargetCodecTest, EveryEncodingDecodesToTheSameProbabilities) {
  const Tensor logits = RandomMatrix(5, 10, 1, 6.f);
  TemperatureSoftmax softmax;
  Tensor reference;
  ASSERT_TRUE(softmax.Compute(logits, 2.5f, &reference).ok());
  for (auto representation : {distill::v1::PROBABILITIES, distill::v1::LOGITS}) {
    for (auto dtype : {distill::v1::FLOAT32, distill::v1::FLOAT16}) {
      const auto contract = Contract(representation, dtype, 0, 2.5f);
      distill::v1::Targets targets;
      ASSERT_TRUE(EncodeTargets(logits, contract, &softmax, &targets).ok());
      Tensor decoded;
      ASSERT_TRUE(DecodeTargets(targets, contract, &softmax, &decoded).ok());
      for (int64_t i = 0; i < reference.size(); ++i) {
        EXPECT_NEAR(decoded.data()[i], reference.data()[i], 5e-3 * reference.data()[i] + 1e-6)
            << representation << " " << dtype;
      }
    }
  }
}

TEST(TargetCodecTest, TopKKeepsTheLargestAndSpreadsTheRest) {
  const Tensor logits = RandomMatrix(3, 10, 2, 6.f);
  TemperatureSoftmax softmax;
  Tensor reference;
  ASSERT_TRUE(softmax.Compute(logits, 1.f, &reference).ok());
  const auto contract = Contract(distill::v1::PROBABILITIES, distill::v1::FLOAT32, 4, 1.f);
  distill::v1::Targets targets;
  ASSERT_TRUE(EncodeTargets(logits, contract, &softmax, &targets).ok());
  EXPECT_EQ(targets.width(), 4u);
  Tensor decoded;
  ASSERT_TRUE(DecodeTargets(targets, contract, &softmax, &decoded).ok());
  for (int64_t n = 0; n < 3; ++n) {
    double sum = 0;
    for (int j = 0; j < 10; ++j) sum += decoded.at(n, j);
    EXPECT_NEAR(sum, 1.0, 1e-5);
    for (int j = 0; j < 4; ++j) {
      const uint32_t c = targets.class_indices(static_cast<int>(n * 4 + j));
      EXPECT_FLOAT_EQ(decoded.at(n, c), reference.at(n, c));
    }
  }
}

TEST(TargetCodecTest, OptionsAreValidated) {
  distill::v1::TargetOptions options;
  EXPECT_FLOAT_EQ(ResolveTargetOptions(options, 10, 4.f, "h")->temperature(), 4.f);
  options.set_temperature(-1.f);
  EXPECT_EQ(ResolveTargetOptions(options, 10, 4.f, "h").status().code(),
            absl::StatusCode::kInvalidArgument);
  options.set_temperature(1.f);
  options.set_top_k(11);
  EXPECT_EQ(ResolveTargetOptions(options, 10, 4.f, "h").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(TargetCodecTest, InconsistentBlocksAreDataLoss) {
  TemperatureSoftmax softmax;
  const auto contract = Contract(distill::v1::PROBABILITIES, distill::v1::FLOAT32, 0, 1.f);
  distill::v1::Targets targets;
  targets.set_num_examples(2);
  targets.set_width(10);
  for (int i = 0; i < 19; ++i) targets.add_values(0.1f);
  Tensor decoded;
  EXPECT_EQ(DecodeTargets(targets, contract, &softmax, &decoded).code(),
            absl::StatusCode::kDataLoss);
  targets.add_values(std::nanf(""));
  EXPECT_EQ(DecodeTargets(targets, contract, &softmax, &decoded).code(),
            absl::StatusCode::kDataLoss);
}

TEST(TargetCodecTest, HugeSizesAreDataLossWithoutAllocating) {
  // 2^32 - 1 rows of 2^32 - 1 values: the count overflows int64_t and could
  // not be allocated; only a few values are sent (undefined behaviour and a
  // failed allocation before the fix).
  TemperatureSoftmax softmax;
  for (distill::v1::DType dtype : {distill::v1::FLOAT32, distill::v1::FLOAT16}) {
    auto contract = Contract(distill::v1::PROBABILITIES, dtype, 0, 1.f);
    contract.set_num_classes(0xFFFFFFFFu);
    distill::v1::Targets targets;
    targets.set_num_examples(0xFFFFFFFFu);
    targets.set_width(0xFFFFFFFFu);
    targets.add_values(1.f);
    targets.set_values_f16(std::string(2, '\0'));
    Tensor decoded;
    const absl::Status status = DecodeTargets(targets, contract, &softmax, &decoded);
    EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
  }
}

TEST(TargetCodecTest, LogitsThatOverflowAtATinyTemperatureAreDataLoss) {
  // Found by fuzz/target_codec_fuzzer: a valid T of 6e-39 turned finite
  // logits into infinities and the decoded probabilities into NaN.
  TemperatureSoftmax softmax;
  const auto contract = Contract(distill::v1::LOGITS, distill::v1::FLOAT32, 0, 6e-39f);
  distill::v1::Targets targets;
  targets.set_num_examples(1);
  targets.set_width(10);
  for (int i = 0; i < 10; ++i) targets.add_values(static_cast<float>(i));
  Tensor decoded;
  const absl::Status status = DecodeTargets(targets, contract, &softmax, &decoded);
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
}

TEST(TargetCodecTest, EncodingAtATemperatureTooSmallForTheLogitsIsInvalidArgument) {
  // A teacher asked for probabilities at T = 6e-39 must refuse rather than
  // send NaN (which a student refuses) or top-k-sort NaN.
  TemperatureSoftmax softmax;
  Tensor logits(1, 10);
  for (int i = 0; i < 10; ++i) logits.data()[i] = static_cast<float>(i);
  for (uint32_t top_k : {0u, 3u}) {
    const auto contract = Contract(distill::v1::PROBABILITIES, distill::v1::FLOAT32, top_k, 6e-39f);
    distill::v1::Targets targets;
    const absl::Status status = EncodeTargets(logits, contract, &softmax, &targets);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  }
}

}  // namespace
}  // namespace distillery
