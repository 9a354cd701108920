// Tests of in-memory data sets: slicing and dropping labels.
#include "common/data/dataset.h"

#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/dataset_test_util.h"

namespace distillery {
namespace {

using ::testing::ElementsAre;

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

TEST(SplitHeldOutTest, HoldsOutTheRangeAndTrainsOnTheRest) {
  const Dataset data = MakeDataset(10, 2, 3);
  // In the middle: the training part is both sides, in order.
  absl::StatusOr<HeldOutSplit> split = SplitHeldOut(data, {1, 9}, {4, 6});
  ASSERT_TRUE(split.ok()) << split.status();
  EXPECT_THAT(split->validation.labels, ElementsAre(4, 5));
  EXPECT_THAT(split->train.labels, ElementsAre(1, 2, 3, 6, 7, 8));
  EXPECT_EQ(split->train.pixels.size(), 6u * 6);
  EXPECT_EQ(std::vector<uint8_t>(split->train.pixels.begin() + 3 * 6,
                                 split->train.pixels.begin() + 4 * 6),
            std::vector<uint8_t>(data.pixels.begin() + 6 * 6, data.pixels.begin() + 7 * 6));
  // At either end.
  split = SplitHeldOut(data, {0, 10}, {0, 3});
  ASSERT_TRUE(split.ok());
  EXPECT_THAT(split->train.labels, ElementsAre(3, 4, 5, 6, 7, 8, 9));
  split = SplitHeldOut(data, {0, 10}, {8, 10});
  ASSERT_TRUE(split.ok());
  EXPECT_THAT(split->validation.labels, ElementsAre(8, 9));
  EXPECT_EQ(split->train.num_examples, 8);
}

TEST(SplitHeldOutTest, RefusesRangesOutsideOrLeavingNothing) {
  const Dataset data = MakeDataset(10, 2, 3);
  for (auto [range, held_out] :
       std::vector<std::pair<std::pair<int64_t, int64_t>, std::pair<int64_t, int64_t>>>{
           {{2, 8}, {1, 4}}, {{2, 8}, {6, 9}}, {{2, 8}, {2, 8}}, {{2, 8}, {5, 5}}}) {
    absl::StatusOr<HeldOutSplit> split = SplitHeldOut(data, range, held_out);
    EXPECT_EQ(split.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(split.status().message()),
                ::testing::HasSubstr("must lie within the training range [2, 8)"));
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

}  // namespace
}  // namespace distillery
