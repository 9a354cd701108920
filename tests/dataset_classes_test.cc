// Dropping whole classes from a data set (the paper's "no 3s" transfer set).
#include "common/data/dataset.h"
#include "gtest/gtest.h"

namespace distillery {
namespace {

TEST(WithoutClassesTest, DropsExactlyTheNamedClassesInOrder) {
  Dataset data;
  data.num_examples = 5;
  data.image_rows = 1;
  data.image_cols = 2;
  data.pixels = {0, 1, 10, 11, 20, 21, 30, 31, 40, 41};
  data.labels = {3, 1, 3, 2, 0};
  absl::StatusOr<Dataset> kept = WithoutClasses(data, {3});
  ASSERT_TRUE(kept.ok());
  EXPECT_EQ(kept->num_examples, 3);
  EXPECT_EQ(kept->labels, (std::vector<uint8_t>{1, 2, 0}));
  EXPECT_EQ(kept->pixels, (std::vector<uint8_t>{10, 11, 30, 31, 40, 41}));
  EXPECT_EQ(WithoutClasses(WithoutLabels(data), {3}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace distillery
