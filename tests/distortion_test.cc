// Tests of elastic distortion (common/data/distortion.h) and of gathering
// distorted batches.
#include "common/data/distortion.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "common/data/batches.h"
#include "gtest/gtest.h"
#include "tests/dataset_test_util.h"

namespace distillery {
namespace {

constexpr int kSide = 28;

ElasticDistortion Usual() {
  ElasticDistortion d;
  d.alpha = 34.f;
  d.sigma = 4.f;
  return d;
}

// A 28 x 28 plane whose pixel (r, c) is 8 * c (horizontal ramp) or 8 * r.
std::vector<uint8_t> Ramp(bool horizontal) {
  std::vector<uint8_t> plane(kSide * kSide);
  for (int r = 0; r < kSide; ++r) {
    for (int c = 0; c < kSide; ++c)
      plane[r * kSide + c] = static_cast<uint8_t>(8 * (horizontal ? c : r));
  }
  return plane;
}

TEST(ElasticDistortionTest, ValidatesItsSettings) {
  ElasticDistortion d;
  EXPECT_TRUE(ValidateElasticDistortion(d).ok());  // off
  d.sigma = 0.f;
  EXPECT_TRUE(ValidateElasticDistortion(d).ok());  // sigma unused while off
  for (float alpha : {-1.f, 101.f, std::numeric_limits<float>::quiet_NaN()}) {
    d.alpha = alpha;
    const absl::Status s = ValidateElasticDistortion(d);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << alpha;
    EXPECT_NE(s.message().find("alpha"), std::string::npos) << s;
  }
  d.alpha = 34.f;
  for (float sigma : {0.f, 0.4f, 17.f, std::numeric_limits<float>::quiet_NaN()}) {
    d.sigma = sigma;
    const absl::Status s = ValidateElasticDistortion(d);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << sigma;
    EXPECT_NE(s.message().find("sigma"), std::string::npos) << s;
  }
  d.sigma = 4.f;
  EXPECT_TRUE(ValidateElasticDistortion(d).ok());
}

TEST(ElasticDistortionTest, ReproducibleFromTheRngAndDifferentAcrossDraws) {
  const std::vector<uint8_t> image = Ramp(true);
  std::vector<uint8_t> a(image.size()), b(image.size()), c(image.size());
  std::mt19937_64 rng_a(5), rng_b(5);
  ElasticDistort(image.data(), 1, kSide, kSide, Usual(), &rng_a, a.data());
  ElasticDistort(image.data(), 1, kSide, kSide, Usual(), &rng_b, b.data());
  EXPECT_EQ(a, b);
  EXPECT_EQ(rng_a(), rng_b());  // both drew the same amount: 2 * 28 * 28 numbers
  ElasticDistort(image.data(), 1, kSide, kSide, Usual(), &rng_a, c.data());
  EXPECT_NE(a, c);
  EXPECT_NE(a, image);
}

TEST(ElasticDistortionTest, ATinyFieldLeavesTheImageAlone) {
  const Dataset data = MakeDataset(1, kSide, kSide);
  ElasticDistortion d = Usual();
  d.alpha = 1e-3f;  // displacements of about 4e-5 pixels: rounding restores every pixel
  std::vector<uint8_t> out(kSide * kSide);
  std::mt19937_64 rng(1);
  ElasticDistort(data.image(0), 1, kSide, kSide, d, &rng, out.data());
  EXPECT_EQ(out, std::vector<uint8_t>(data.image(0), data.image(0) + kSide * kSide));
}

// On a ramp, bilinear interpolation is exact: the output reads back the
// displacement of every pixel, which must be smooth, centred and about 1.4
// pixels wide for sigma 4 and alpha 34, in x and in y alike.
TEST(ElasticDistortionTest, DisplacementsAreSmoothCentredAndOfTheExpectedSize) {
  for (bool horizontal : {true, false}) {
    const std::vector<uint8_t> ramp = Ramp(horizontal);
    std::vector<uint8_t> out(ramp.size());
    std::mt19937_64 rng(11);
    double sum = 0, sum_sq = 0, sum_step = 0;
    int n = 0;
    for (int image = 0; image < 200; ++image) {
      ElasticDistort(ramp.data(), 1, kSide, kSide, Usual(), &rng, out.data());
      // Away from the borders, where a displacement could reach outside.
      for (int r = 8; r < 20; ++r) {
        for (int c = 8; c < 20; ++c) {
          const int p = r * kSide + c;
          const double displacement = out[p] / 8.0 - (horizontal ? c : r);
          sum += displacement;
          sum_sq += displacement * displacement;
          ++n;
          const int next = horizontal ? p + 1 : p + kSide;
          sum_step += std::abs(out[next] / 8.0 - out[p] / 8.0 - 1.0);
        }
      }
    }
    const double mean = sum / n;
    const double sd = std::sqrt(sum_sq / n - mean * mean);
    EXPECT_LT(std::abs(mean), 0.3) << horizontal;  // measured: 0.11 and -0.03
    EXPECT_GT(sd, 1.0) << horizontal;              // measured: 1.36 and 1.34
    EXPECT_LT(sd, 1.9) << horizontal;
    // Neighbours move together: the field is smooth. Independent per-pixel
    // displacements of this size would differ by about 1.6 pixels on average.
    EXPECT_LT(sum_step / n, 0.4) << horizontal;  // measured: 0.19 and 0.18
  }
}

TEST(ElasticDistortionTest, EveryChannelMovesWithTheSameField) {
  const std::vector<uint8_t> ramp = Ramp(true);
  std::vector<uint8_t> two(2 * ramp.size());
  std::copy(ramp.begin(), ramp.end(), two.begin());
  std::copy(ramp.begin(), ramp.end(), two.begin() + ramp.size());
  std::vector<uint8_t> out(two.size());
  std::mt19937_64 rng(3);
  ElasticDistort(two.data(), 2, kSide, kSide, Usual(), &rng, out.data());
  EXPECT_TRUE(std::equal(out.begin(), out.begin() + ramp.size(), out.begin() + ramp.size()));
  EXPECT_NE(std::vector<uint8_t>(out.begin(), out.begin() + ramp.size()), ramp);
}

TEST(ElasticDistortionTest, AConstantInteriorStaysConstant) {
  std::vector<uint8_t> flat(kSide * kSide, 200), out(flat.size());
  std::mt19937_64 rng(4);
  ElasticDistort(flat.data(), 1, kSide, kSide, Usual(), &rng, out.data());
  for (int r = 10; r < 18; ++r) {
    for (int c = 10; c < 18; ++c) EXPECT_EQ(out[r * kSide + c], 200) << r << "," << c;
  }
}

TEST(GatherBatchTest, ElasticDistortionIsDrawnAfterEachShift) {
  const Dataset data = MakeDataset(4, kSide, kSide);
  const std::vector<int64_t> ids = {2, 0, 3};
  Augmentation shift_only;
  shift_only.max_shift = 2;
  Augmentation both = shift_only;
  both.elastic = Usual();

  Tensor plain, shifted, distorted, again;
  std::vector<int> plain_shifts, shifts, shifts_again;
  std::mt19937_64 rng_plain(9), rng_a(9), rng_b(9), rng_c(9);
  GatherBatch(data, ids, 2, &rng_plain, &plain, nullptr, &plain_shifts);
  GatherBatch(data, ids, shift_only, &rng_a, &shifted, nullptr, &shifts);
  // Without distortion the two forms give the same views.
  EXPECT_EQ(plain_shifts, shifts);
  EXPECT_EQ(0, std::memcmp(plain.data(), shifted.data(), plain.size() * sizeof(float)));

  GatherBatch(data, ids, both, &rng_b, &distorted, nullptr, &shifts);
  GatherBatch(data, ids, both, &rng_c, &again, nullptr, &shifts_again);
  EXPECT_EQ(shifts, shifts_again);
  EXPECT_EQ(0, std::memcmp(distorted.data(), again.data(), distorted.size() * sizeof(float)));
  // The first image's shift comes first from the RNG; its field follows,
  // so the later shifts differ from the undistorted run's.
  EXPECT_EQ(shifts[0], plain_shifts[0]);
  EXPECT_EQ(shifts[1], plain_shifts[1]);
  EXPECT_NE(0, std::memcmp(distorted.data(), plain.data(), plain.size() * sizeof(float)));
  // The views stay on the 1/255 grid: another process gets the same pixels back.
  for (int64_t i = 0; i < distorted.size(); ++i) {
    const float p = distorted.data()[i] * 255.f;
    EXPECT_NEAR(p, std::round(p), 1e-3) << i;
  }
}

TEST(DescribeAugmentationTest, NamesWhatIsOn) {
  Augmentation a;
  EXPECT_EQ(DescribeAugmentation(a), "no augmentation");
  a.max_shift = 2;
  EXPECT_EQ(DescribeAugmentation(a), "jitter 2 px");
  a.elastic = Usual();
  EXPECT_EQ(DescribeAugmentation(a), "jitter 2 px, elastic distortion alpha 34 sigma 4");
  a.max_shift = 0;
  EXPECT_EQ(DescribeAugmentation(a), "elastic distortion alpha 34 sigma 4");
}

}  // namespace
}  // namespace distillery
