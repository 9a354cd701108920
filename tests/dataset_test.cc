// Tests of data set loading (synthetic IDX files and the real MNIST), slicing,
// shuffling, image shifts and batch gathering.
#include "common/data/dataset.h"

#include <zlib.h>

#include <algorithm>
#include <array>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/data/idx.h"
#include "common/tensor/tensor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace distillery {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

// A fresh directory under the test temp dir, unique per test.
std::string TestDir() {
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::filesystem::path dir = std::filesystem::path(::testing::TempDir()) / "dataset_test" /
                              (std::string(info->test_suite_name()) + "." + info->name());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

// `count` images of rows x cols whose pixel p of image i is (i * 16 + p) % 256.
IdxArray Images(uint32_t count, uint32_t rows, uint32_t cols) {
  IdxArray a{{count, rows, cols}, std::vector<uint8_t>(size_t{count} * rows * cols)};
  for (size_t i = 0; i < a.data.size(); ++i) {
    a.data[i] = static_cast<uint8_t>((i / (rows * cols)) * 16 + i % (rows * cols));
  }
  return a;
}

IdxArray Labels(std::vector<uint8_t> labels) {
  return IdxArray{{static_cast<uint32_t>(labels.size())}, std::move(labels)};
}

void Write(const std::string& path, const IdxArray& array) {
  absl::Status status = WriteIdxFile(path, array);
  ASSERT_TRUE(status.ok()) << status;
}

// Writes `array` as a gzip-compressed IDX file at `path` (ending in .gz).
void WriteGz(const std::string& path, const IdxArray& array) {
  const std::string plain = path + ".plain";
  Write(plain, array);
  std::vector<uint8_t> bytes(std::filesystem::file_size(plain));
  std::FILE* f = std::fopen(plain.c_str(), "rb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(std::fread(bytes.data(), 1, bytes.size(), f), bytes.size());
  std::fclose(f);
  std::filesystem::remove(plain);
  gzFile gz = gzopen(path.c_str(), "wb");
  ASSERT_NE(gz, nullptr);
  ASSERT_EQ(gzwrite(gz, bytes.data(), static_cast<unsigned>(bytes.size())),
            static_cast<int>(bytes.size()));
  ASSERT_EQ(gzclose(gz), Z_OK);
}

// A small labeled data set built in memory: n images of rows x cols.
Dataset MakeDataset(int64_t n, int rows, int cols) {
  Dataset d;
  d.num_examples = n;
  d.image_rows = rows;
  d.image_cols = cols;
  d.pixels.resize(n * rows * cols);
  for (size_t i = 0; i < d.pixels.size(); ++i) d.pixels[i] = static_cast<uint8_t>(i * 37 % 256);
  for (int64_t i = 0; i < n; ++i) d.labels.push_back(static_cast<uint8_t>(i % 10));
  return d;
}

// ---------------------------------------------------------------------------
// LoadIdxDataset

TEST(LoadIdxDatasetTest, LoadsImagesAndLabels) {
  const std::string dir = TestDir();
  Write(dir + "/images", Images(4, 3, 2));
  Write(dir + "/labels", Labels({3, 1, 4, 1}));
  absl::StatusOr<Dataset> data = LoadIdxDataset(dir + "/images", dir + "/labels");
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->num_examples, 4);
  EXPECT_EQ(data->image_rows, 3);
  EXPECT_EQ(data->image_cols, 2);
  EXPECT_EQ(data->input_size(), 6);
  EXPECT_EQ(data->num_classes, 10);
  EXPECT_EQ(data->pixels, Images(4, 3, 2).data);
  EXPECT_THAT(data->labels, ElementsAre(3, 1, 4, 1));
  EXPECT_EQ(data->image(2)[0], 32);
}

TEST(LoadIdxDatasetTest, WithoutLabelsPathIsUnlabeled) {
  const std::string dir = TestDir();
  WriteGz(dir + "/images.gz", Images(4, 3, 2));
  absl::StatusOr<Dataset> data = LoadIdxDataset(dir + "/images.gz", "");
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->num_examples, 4);
  EXPECT_FALSE(data->has_labels());
  EXPECT_EQ(data->pixels, Images(4, 3, 2).data);
}

TEST(LoadIdxDatasetTest, WrongRanksAreRefusedNamingTheFile) {
  const std::string dir = TestDir();
  Write(dir + "/images", Images(4, 3, 2));
  Write(dir + "/labels", Labels({0, 1, 2, 3}));
  Write(dir + "/flat-images", IdxArray{{4, 6}, std::vector<uint8_t>(24)});
  Write(dir + "/matrix-labels", IdxArray{{4, 1}, {0, 1, 2, 3}});

  absl::StatusOr<Dataset> data = LoadIdxDataset(dir + "/flat-images", dir + "/labels");
  EXPECT_EQ(data.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(data.status().message(), AllOf(HasSubstr(dir + "/flat-images"), HasSubstr("rank")));

  // A labels file given as images, and images given as labels.
  data = LoadIdxDataset(dir + "/labels", "");
  EXPECT_EQ(data.status().code(), absl::StatusCode::kInvalidArgument);
  data = LoadIdxDataset(dir + "/images", dir + "/matrix-labels");
  EXPECT_EQ(data.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(data.status().message(),
              AllOf(HasSubstr(dir + "/matrix-labels"), HasSubstr("rank 2")));
}

TEST(LoadIdxDatasetTest, LabelCountMismatchIsRefused) {
  const std::string dir = TestDir();
  Write(dir + "/images", Images(4, 3, 2));
  Write(dir + "/labels", Labels({0, 1, 2}));
  absl::StatusOr<Dataset> data = LoadIdxDataset(dir + "/images", dir + "/labels");
  EXPECT_EQ(data.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(data.status().message(),
              AllOf(HasSubstr(dir + "/labels"), HasSubstr("3 labels"), HasSubstr("4 images")));
}

TEST(LoadIdxDatasetTest, LabelOutOfRangeIsRefused) {
  const std::string dir = TestDir();
  Write(dir + "/images", Images(4, 3, 2));
  Write(dir + "/labels", Labels({0, 9, 10, 3}));
  absl::StatusOr<Dataset> data = LoadIdxDataset(dir + "/images", dir + "/labels");
  EXPECT_EQ(data.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(data.status().message(),
              AllOf(HasSubstr(dir + "/labels"), HasSubstr("label 10 of example 2")));
  // The same file is fine with 11 classes, and refused with 5 at the 9.
  data = LoadIdxDataset(dir + "/images", dir + "/labels", /*num_classes=*/11);
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->num_classes, 11);
  data = LoadIdxDataset(dir + "/images", dir + "/labels", /*num_classes=*/5);
  EXPECT_THAT(data.status().message(), HasSubstr("label 9 of example 1"));
  EXPECT_EQ(LoadIdxDataset(dir + "/images", "", 0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(LoadIdxDatasetTest, ReaderErrorsPassThrough) {
  const std::string dir = TestDir();
  Write(dir + "/images", Images(4, 3, 2));
  absl::StatusOr<Dataset> data = LoadIdxDataset(dir + "/missing", "");
  EXPECT_EQ(data.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(data.status().message(), HasSubstr(dir + "/missing"));
  data = LoadIdxDataset(dir + "/images", dir + "/missing-labels");
  EXPECT_EQ(data.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(data.status().message(), HasSubstr(dir + "/missing-labels"));
}

// ---------------------------------------------------------------------------
// LoadMnistFormatDirectory on synthetic directories

void WriteMnistDir(const std::string& dir, uint8_t first_label, bool gz) {
  auto write = gz ? WriteGz : Write;
  const std::string ext = gz ? ".gz" : "";
  write(dir + "/train-images-idx3-ubyte" + ext, Images(3, 4, 4));
  write(dir + "/train-labels-idx1-ubyte" + ext, Labels({first_label, 0, 0}));
  write(dir + "/t10k-images-idx3-ubyte" + ext, Images(2, 4, 4));
  write(dir + "/t10k-labels-idx1-ubyte" + ext, Labels({first_label, 1}));
}

TEST(LoadMnistFormatDirectoryTest, PrefersUncompressedThenGz) {
  const std::string dir = TestDir();
  WriteMnistDir(dir, /*first_label=*/7, /*gz=*/true);
  absl::StatusOr<MnistFormatData> data = LoadMnistFormatDirectory(dir);
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->train.num_examples, 3);
  EXPECT_EQ(data->test.num_examples, 2);
  EXPECT_EQ(data->train.labels[0], 7);

  WriteMnistDir(dir, /*first_label=*/2, /*gz=*/false);  // now both exist
  data = LoadMnistFormatDirectory(dir);
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->train.labels[0], 2);
  EXPECT_EQ(data->test.labels[0], 2);
}

TEST(LoadMnistFormatDirectoryTest, MissingFileIsNotFoundNamingTheStem) {
  const std::string dir = TestDir();
  WriteMnistDir(dir, 0, /*gz=*/false);
  std::filesystem::remove(dir + "/t10k-labels-idx1-ubyte");
  absl::StatusOr<MnistFormatData> data = LoadMnistFormatDirectory(dir);
  EXPECT_EQ(data.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(data.status().message(), HasSubstr("t10k-labels-idx1-ubyte"));
}

// ---------------------------------------------------------------------------
// The real MNIST, loaded once for the suite.

class MnistTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<MnistFormatData> data = LoadMnistFormatDirectory(DISTILLERY_MNIST_DIR);
    ASSERT_TRUE(data.ok()) << data.status();
    mnist_ = new MnistFormatData(*std::move(data));
  }
  static void TearDownTestSuite() {
    delete mnist_;
    mnist_ = nullptr;
  }
  void SetUp() override { ASSERT_NE(mnist_, nullptr); }

  static MnistFormatData* mnist_;
};
MnistFormatData* MnistTest::mnist_ = nullptr;

std::array<int64_t, 10> LabelCounts(const Dataset& d) {
  std::array<int64_t, 10> counts{};
  for (uint8_t label : d.labels) ++counts[label];
  return counts;
}

TEST_F(MnistTest, ShapesAndFirstLabels) {
  const Dataset& train = mnist_->train;
  const Dataset& test = mnist_->test;
  EXPECT_EQ(train.num_examples, 60000);
  EXPECT_EQ(train.image_rows, 28);
  EXPECT_EQ(train.image_cols, 28);
  EXPECT_EQ(train.pixels.size(), 60000u * 28 * 28);
  EXPECT_EQ(train.labels.size(), 60000u);
  EXPECT_EQ(test.num_examples, 10000);
  EXPECT_EQ(test.image_rows, 28);
  EXPECT_EQ(test.image_cols, 28);
  EXPECT_EQ(test.labels.size(), 10000u);
  EXPECT_EQ(train.labels[0], 5);
  EXPECT_EQ(test.labels[0], 7);
  // MNIST images have a blank border: the top-left pixel is 0, some are 255.
  EXPECT_EQ(train.image(0)[0], 0);
  EXPECT_EQ(*std::max_element(train.image(0), train.image(1)), 255);
}

TEST_F(MnistTest, LabelCountsMatchThePublishedOnes) {
  EXPECT_EQ(LabelCounts(mnist_->train)[1], 6742);
  EXPECT_THAT(LabelCounts(mnist_->train),
              ElementsAre(5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949));
  EXPECT_THAT(LabelCounts(mnist_->test),
              ElementsAre(980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009));
}

TEST_F(MnistTest, SplitIntoTrainAndValidation) {
  absl::StatusOr<Dataset> train = SliceDataset(mnist_->train, 0, 55000);
  absl::StatusOr<Dataset> valid = SliceDataset(mnist_->train, 55000, 60000);
  ASSERT_TRUE(train.ok() && valid.ok());
  EXPECT_EQ(train->num_examples + valid->num_examples, 60000);
  EXPECT_EQ(valid->labels[0], mnist_->train.labels[55000]);
  EXPECT_TRUE(std::equal(valid->image(0), valid->image(1), mnist_->train.image(55000)));
}

// ---------------------------------------------------------------------------
// SliceDataset, WithoutLabels

TEST(SliceDatasetTest, CopiesTheRange) {
  const Dataset data = MakeDataset(10, 2, 3);
  absl::StatusOr<Dataset> slice = SliceDataset(data, 3, 7);
  ASSERT_TRUE(slice.ok()) << slice.status();
  EXPECT_EQ(slice->num_examples, 4);
  EXPECT_EQ(slice->image_rows, 2);
  EXPECT_EQ(slice->image_cols, 3);
  EXPECT_EQ(slice->num_classes, data.num_classes);
  EXPECT_THAT(slice->labels, ElementsAre(3, 4, 5, 6));
  EXPECT_EQ(slice->pixels,
            std::vector<uint8_t>(data.pixels.begin() + 3 * 6, data.pixels.begin() + 7 * 6));

  absl::StatusOr<Dataset> whole = SliceDataset(data, 0, 10);
  ASSERT_TRUE(whole.ok());
  EXPECT_EQ(whole->pixels, data.pixels);

  absl::StatusOr<Dataset> unlabeled = SliceDataset(WithoutLabels(data), 0, 2);
  ASSERT_TRUE(unlabeled.ok());
  EXPECT_FALSE(unlabeled->has_labels());
}

TEST(SliceDatasetTest, RefusesEmptyOrOutOfBoundsRanges) {
  const Dataset data = MakeDataset(10, 2, 3);
  for (auto [begin, end] : std::vector<std::pair<int64_t, int64_t>>{
           {5, 5}, {6, 5}, {-1, 3}, {0, 11}, {10, 11}, {10, 10}}) {
    absl::StatusOr<Dataset> slice = SliceDataset(data, begin, end);
    EXPECT_EQ(slice.status().code(), absl::StatusCode::kInvalidArgument)
        << "[" << begin << ", " << end << ")";
  }
}

TEST(WithoutLabelsTest, DropsOnlyTheLabels) {
  const Dataset data = MakeDataset(5, 2, 2);
  const Dataset copy = WithoutLabels(data);
  EXPECT_FALSE(copy.has_labels());
  EXPECT_EQ(copy.num_examples, 5);
  EXPECT_EQ(copy.pixels, data.pixels);
  EXPECT_TRUE(data.has_labels());
}

// ---------------------------------------------------------------------------
// ShuffledIndices

TEST(ShuffledIndicesTest, IsAPermutation) {
  std::vector<int64_t> order = ShuffledIndices(1000, 42, 0);
  ASSERT_EQ(order.size(), 1000u);
  std::vector<int64_t> sorted = order;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 1000; ++i) EXPECT_EQ(sorted[i], i);
  EXPECT_NE(order, sorted);  // actually shuffled
}

TEST(ShuffledIndicesTest, DependsOnlyOnSeedAndEpoch) {
  EXPECT_EQ(ShuffledIndices(500, 7, 3), ShuffledIndices(500, 7, 3));
  EXPECT_NE(ShuffledIndices(500, 7, 3), ShuffledIndices(500, 7, 4));
  EXPECT_NE(ShuffledIndices(500, 7, 3), ShuffledIndices(500, 8, 3));
  // Swapping seed and epoch must not give the same order.
  EXPECT_NE(ShuffledIndices(500, 3, 7), ShuffledIndices(500, 7, 3));
}

TEST(ShuffledIndicesTest, SmallSizes) {
  EXPECT_TRUE(ShuffledIndices(0, 1, 0).empty());
  EXPECT_TRUE(ShuffledIndices(-5, 1, 0).empty());
  EXPECT_THAT(ShuffledIndices(1, 1, 0), ElementsAre(0));
}

// ShuffledIndices(10, 42, 0), also obtained from an independent Python
// re-implementation of SplitMix64 + mt19937_64 + this Fisher-Yates.
constexpr int64_t kGolden42Epoch0[] = {9, 6, 2, 0, 1, 4, 3, 8, 5, 7};

TEST(ShuffledIndicesTest, GoldenOrderIsStable) {
  // Pins the algorithm (SplitMix64 seed mix, std::mt19937_64, rejection
  // sampling, Fisher-Yates from the end): a change here breaks the
  // reproducibility of past runs.
  EXPECT_THAT(ShuffledIndices(10, 42, 0), ElementsAreArray(kGolden42Epoch0));
}

TEST(ShuffledIndicesTest, RoughlyUniformFirstPosition) {
  // Over 2000 epochs each of 4 values lands first about 500 times.
  std::array<int, 4> first{};
  for (int64_t epoch = 0; epoch < 2000; ++epoch) ++first[ShuffledIndices(4, 1, epoch)[0]];
  for (int count : first) {
    EXPECT_GT(count, 400);
    EXPECT_LT(count, 600);
  }
}

// ---------------------------------------------------------------------------
// ShiftImage

TEST(ShiftImageTest, MovesASingleLitPixelInEveryDirection) {
  constexpr int kRows = 5, kCols = 6, kR = 2, kC = 3;
  std::vector<uint8_t> src(kRows * kCols, 0);
  src[kR * kCols + kC] = 200;
  std::vector<uint8_t> dst(kRows * kCols, 99);
  for (int dy = -6; dy <= 6; ++dy) {
    for (int dx = -7; dx <= 7; ++dx) {
      std::fill(dst.begin(), dst.end(), 99);  // must all be overwritten
      ShiftImage(src.data(), kRows, kCols, dx, dy, dst.data());
      std::vector<uint8_t> want(kRows * kCols, 0);
      const int r = kR + dy, c = kC + dx;
      if (r >= 0 && r < kRows && c >= 0 && c < kCols) want[r * kCols + c] = 200;
      EXPECT_EQ(dst, want) << "dx=" << dx << " dy=" << dy;
    }
  }
}

TEST(ShiftImageTest, ZeroFillsUncoveredPixels) {
  constexpr int kRows = 3, kCols = 4;
  const std::vector<uint8_t> src(kRows * kCols, 255);
  std::vector<uint8_t> dst(kRows * kCols);
  ShiftImage(src.data(), kRows, kCols, /*dx=*/1, /*dy=*/-1, dst.data());
  // Right by one: column 0 empty; up by one: the last row empty.
  EXPECT_THAT(dst, ElementsAre(0, 255, 255, 255,  //
                               0, 255, 255, 255,  //
                               0, 0, 0, 0));
  ShiftImage(src.data(), kRows, kCols, /*dx=*/-2, /*dy=*/2, dst.data());
  EXPECT_THAT(dst, ElementsAre(0, 0, 0, 0,  //
                               0, 0, 0, 0,  //
                               255, 255, 0, 0));
  ShiftImage(src.data(), kRows, kCols, 0, 0, dst.data());
  EXPECT_EQ(dst, src);
}

// ---------------------------------------------------------------------------
// GatherBatch

TEST(GatherBatchTest, ScalesPixelsAndGathersLabels) {
  Dataset data;
  data.num_examples = 3;
  data.image_rows = 1;
  data.image_cols = 3;
  data.pixels = {0, 255, 51, 1, 2, 3, 128, 64, 32};
  data.labels = {4, 5, 6};
  Tensor inputs;
  std::vector<int> labels = {9, 9, 9, 9, 9};
  std::vector<int> shifts;
  const std::vector<int64_t> indices = {2, 0, 2};
  GatherBatch(data, indices, /*max_shift=*/0, nullptr, &inputs, &labels, &shifts);
  ASSERT_EQ(inputs.rows(), 3);
  ASSERT_EQ(inputs.cols(), 3);
  for (int k = 0; k < 3; ++k) {
    for (int p = 0; p < 3; ++p) {
      EXPECT_EQ(inputs.at(k, p), data.image(indices[k])[p] / 255.f) << k << "," << p;
    }
  }
  EXPECT_EQ(inputs.at(1, 1), 1.0f);
  EXPECT_EQ(inputs.at(1, 0), 0.0f);
  EXPECT_FLOAT_EQ(inputs.at(1, 2), 0.2f);
  EXPECT_THAT(labels, ElementsAre(6, 4, 6));
  EXPECT_THAT(shifts, ElementsAre(0, 0, 0, 0, 0, 0));

  // A smaller batch reuses the matrix; unlabeled data clears the labels.
  GatherBatch(WithoutLabels(data), std::vector<int64_t>{1}, 0, nullptr, &inputs, &labels);
  EXPECT_EQ(inputs.rows(), 1);
  EXPECT_EQ(inputs.at(0, 2), 3 / 255.f);
  EXPECT_TRUE(labels.empty());
}

TEST(GatherBatchTest, NoShiftEqualsTheOriginalAndLeavesTheRngAlone) {
  const Dataset data = MakeDataset(8, 5, 5);
  std::mt19937_64 rng(123);
  const std::mt19937_64 before = rng;
  Tensor inputs;
  GatherBatch(data, std::vector<int64_t>{7, 3, 0}, /*max_shift=*/0, &rng, &inputs, nullptr);
  EXPECT_EQ(rng, before);
  Tensor plain;
  GatherBatch(data, std::vector<int64_t>{7, 3, 0}, 0, nullptr, &plain, nullptr);
  EXPECT_EQ(inputs, plain);
  for (int p = 0; p < 25; ++p) EXPECT_EQ(inputs.at(0, p), data.image(7)[p] / 255.f);
}

TEST(GatherBatchTest, JitterFollowsTheDocumentedDrawsAndIsReproducible) {
  const Dataset data = MakeDataset(6, 7, 7);
  const std::vector<int64_t> indices = {0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5};
  constexpr int kMaxShift = 2;
  std::mt19937_64 rng(99);
  Tensor inputs;
  std::vector<int> shifts;
  GatherBatch(data, indices, kMaxShift, &rng, &inputs, nullptr, &shifts);
  ASSERT_EQ(shifts.size(), 2 * indices.size());

  // The draws: dx then dy per example, int(rng() % 5) - 2.
  std::mt19937_64 replay(99);
  bool any_nonzero = false;
  for (size_t k = 0; k < indices.size(); ++k) {
    const int dx = static_cast<int>(replay() % (2 * kMaxShift + 1)) - kMaxShift;
    const int dy = static_cast<int>(replay() % (2 * kMaxShift + 1)) - kMaxShift;
    EXPECT_EQ(shifts[2 * k], dx);
    EXPECT_EQ(shifts[2 * k + 1], dy);
    any_nonzero |= dx != 0 || dy != 0;
    // Another process can rebuild the view from the shifts.
    std::vector<uint8_t> shifted(49);
    ShiftImage(data.image(indices[k]), 7, 7, dx, dy, shifted.data());
    for (int p = 0; p < 49; ++p) ASSERT_EQ(inputs.at(k, p), shifted[p] / 255.f) << k;
  }
  EXPECT_TRUE(any_nonzero);
  EXPECT_EQ(rng, replay);

  std::mt19937_64 again(99);
  Tensor inputs2;
  GatherBatch(data, indices, kMaxShift, &again, &inputs2, nullptr);
  EXPECT_EQ(inputs, inputs2);
}

TEST(GatherBatchDeathTest, OutOfRangeIndexAborts) {
  const Dataset data = MakeDataset(3, 2, 2);
  Tensor inputs;
  EXPECT_DEATH(GatherBatch(data, std::vector<int64_t>{3}, 0, nullptr, &inputs, nullptr),
               "index 3 outside");
}

// Rank-4 IDX images are (count, rows, cols, channels), interleaved; the data
// set holds them planar, (channels, rows, cols) per image.
TEST(LoadIdxDatasetTest, RankFourImagesAreConvertedToPlanarChannels) {
  const std::string dir = TestDir();
  IdxArray rgb{{2, 2, 3, 3}, std::vector<uint8_t>(2 * 2 * 3 * 3)};
  // Pixel (r, c) of image i, channel k, is 100 i + 10 k + 3 r + c.
  for (int i = 0; i < 2; ++i) {
    for (int r = 0; r < 2; ++r) {
      for (int c = 0; c < 3; ++c) {
        for (int k = 0; k < 3; ++k) {
          rgb.data[((i * 2 + r) * 3 + c) * 3 + k] =
              static_cast<uint8_t>(100 * i + 10 * k + 3 * r + c);
        }
      }
    }
  }
  Write(dir + "/rgb", rgb);
  absl::StatusOr<Dataset> data = LoadIdxDataset(dir + "/rgb", "");
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->channels, 3);
  EXPECT_EQ(data->example_shape(), (Shape{3, 2, 3}));
  EXPECT_EQ(data->input_size(), 18);
  for (int i = 0; i < 2; ++i) {
    for (int k = 0; k < 3; ++k) {
      for (int p = 0; p < 6; ++p) {
        EXPECT_EQ(data->image(i)[k * 6 + p], 100 * i + 10 * k + p) << i << " " << k << " " << p;
      }
    }
  }
  // Gathered batches are (batch, channels, rows, cols); a jittered image has
  // every channel shifted alike.
  std::mt19937_64 rng(5);
  Tensor inputs;
  std::vector<int> shifts;
  const std::vector<int64_t> ids = {1, 0, 1, 1};
  GatherBatch(*data, ids, 1, &rng, &inputs, nullptr, &shifts);
  EXPECT_EQ(inputs.shape(), (Shape{4, 3, 2, 3}));
  for (size_t b = 0; b < ids.size(); ++b) {
    for (int k = 0; k < 3; ++k) {
      std::vector<uint8_t> expected(6);
      ShiftImage(data->image(ids[b]) + k * 6, 2, 3, shifts[2 * b], shifts[2 * b + 1],
                 expected.data());
      for (int p = 0; p < 6; ++p) {
        EXPECT_FLOAT_EQ(inputs.data()[(b * 3 + k) * 6 + p], expected[p] / 255.f);
      }
    }
  }
}
}  // namespace
}  // namespace distillery
