// A synthetic data set for the data tests (dataset_test, batches_test).
#ifndef DISTILLERY_TESTS_DATASET_TEST_UTIL_H_
#define DISTILLERY_TESTS_DATASET_TEST_UTIL_H_

#include <cstdint>

#include "common/data/dataset.h"

namespace distillery {

// A small labeled data set built in memory: n images of rows x cols.
inline Dataset MakeDataset(int64_t n, int rows, int cols) {
  Dataset d;
  d.num_examples = n;
  d.image_rows = rows;
  d.image_cols = cols;
  d.pixels.resize(n * rows * cols);
  for (size_t i = 0; i < d.pixels.size(); ++i) d.pixels[i] = static_cast<uint8_t>(i * 37 % 256);
  for (int64_t i = 0; i < n; ++i) d.labels.push_back(static_cast<uint8_t>(i % 10));
  return d;
}

}  // namespace distillery

#endif  // DISTILLERY_TESTS_DATASET_TEST_UTIL_H_
