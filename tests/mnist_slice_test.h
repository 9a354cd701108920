// A test suite on slices of MNIST (DISTILLERY_MNIST_DIR, never copied into
// the repo), loaded once for the whole suite: train_ holds the training
// images [0, kTrain) and test_ the test images [0, kTest), or all of them
// when kTest is kAllTestImages. A suite that needs more set-up defines its
// own SetUpTestSuite and calls this one's.
#ifndef DISTILLERY_TESTS_MNIST_SLICE_TEST_H_
#define DISTILLERY_TESTS_MNIST_SLICE_TEST_H_

#include <cstdint>
#include <utility>

#include "common/data/dataset.h"
#include "common/data/idx_dataset.h"
#include "gtest/gtest.h"

namespace distillery {

constexpr int64_t kAllTestImages = -1;

template <int64_t kTrain, int64_t kTest>
class MnistSliceTest : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<MnistFormatData> mnist = LoadMnistFormatDirectory(DISTILLERY_MNIST_DIR);
    ASSERT_TRUE(mnist.ok()) << mnist.status();
    train_ = new Dataset(*SliceDataset(mnist->train, 0, kTrain));
    test_ = new Dataset(kTest == kAllTestImages ? std::move(mnist->test)
                                                : *SliceDataset(mnist->test, 0, kTest));
  }
  static void TearDownTestSuite() {
    delete train_;
    delete test_;
    train_ = test_ = nullptr;
  }
  static inline Dataset* train_ = nullptr;
  static inline Dataset* test_ = nullptr;
};

}  // namespace distillery

#endif  // DISTILLERY_TESTS_MNIST_SLICE_TEST_H_
