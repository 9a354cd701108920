// Tests of loading data sets from IDX files: synthetic files (plain and
// gzip, ranks 3 and 4, every refusal), MNIST-format directories, and the
// real MNIST.
#include "common/data/idx_dataset.h"

#include <zlib.h>

#include <algorithm>
#include <array>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/data/batches.h"
#include "common/data/idx.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace distillery {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string TestDir() { return FreshTestDir("idx_dataset_test"); }

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
