// Helpers shared by the unit tests: random matrices and a central-difference
// gradient check.
#ifndef DISTILLERY_TESTS_TEST_UTIL_H_
#define DISTILLERY_TESTS_TEST_UTIL_H_

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <functional>
#include <random>
#include <string>

#include "common/tensor/dnnl_context.h"
#include "common/tensor/precision.h"
#include "common/tensor/tensor.h"
#include "gtest/gtest.h"

// Skips the calling test, saying why, on a CPU without native bf16 (oneDNN
// ISA below avx512_core_bf16), where the bf16 paths are refused.
#define SKIP_WITHOUT_BF16()                                     \
  if (!::distillery::CpuHasNativeBf16()) {                      \
    GTEST_SKIP() << "oneDNN ISA " << ::distillery::CpuIsaName() \
                 << " has no native bf16: nothing to test";     \
  }

namespace distillery {

// A path in the test temp directory unique to this process: ctest runs
// tests in parallel processes, which must not share files.
inline std::string UniqueTempPath(const std::string& name) {
  return testing::TempDir() + "/" + std::to_string(getpid()) + "." + name;
}

// A fresh, empty directory under the test temp directory, unique to the
// running test ("<suite>.<test>" under `folder`).
inline std::string FreshTestDir(const std::string& folder) {
  const testing::TestInfo* info = testing::UnitTest::GetInstance()->current_test_info();
  std::filesystem::path dir = std::filesystem::path(testing::TempDir()) / folder /
                              (std::string(info->test_suite_name()) + "." + info->name());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

// A rows x cols matrix of uniform values in [-scale, scale].
inline Tensor RandomMatrix(int64_t rows, int64_t cols, uint64_t seed, float scale = 1.f) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> uniform(-scale, scale);
  Tensor m(rows, cols);
  for (int64_t i = 0; i < m.size(); ++i) m.data()[i] = uniform(rng);
  return m;
}

// Checks analytic gradient `analytic` of scalar function `loss` with respect
// to `x` by central differences on every element (x is perturbed in place and
// restored). Float arithmetic: the tolerance is relative to the larger of the
// two values, with an absolute floor.
//
// With `skip_kinks`, an element where the one-sided differences disagree
// (a ReLU switching inside the step: the function is not differentiable
// there) is skipped; at most a quarter of the elements may be.
inline void ExpectGradientMatches(const std::function<double()>& loss, Tensor* x,
                                  const Tensor& analytic, double step = 1e-2,
                                  double tolerance = 2e-2, double floor = 1e-3,
                                  bool skip_kinks = false) {
  ASSERT_EQ(x->rows(), analytic.rows());
  ASSERT_EQ(x->cols(), analytic.cols());
  const double center = loss();
  int64_t skipped = 0;
  for (int64_t i = 0; i < x->size(); ++i) {
    const float original = x->data()[i];
    x->data()[i] = original + static_cast<float>(step);
    const double plus = loss();
    x->data()[i] = original - static_cast<float>(step);
    const double minus = loss();
    x->data()[i] = original;
    const double numeric = (plus - minus) / (2 * step);
    const double exact = analytic.data()[i];
    const double scale = std::max({std::abs(numeric), std::abs(exact), floor / tolerance});
    if (skip_kinks && std::abs(numeric - exact) > tolerance * scale) {
      // A kink makes the one-sided slopes jump by a sizeable part of the
      // gradient itself; smooth curvature moves them far less.
      const double forward = (plus - center) / step, backward = (center - minus) / step;
      if (std::abs(forward - backward) > 0.2 * scale) {
        ++skipped;
        continue;
      }
    }
    EXPECT_NEAR(numeric, exact, tolerance * scale) << "element " << i;
  }
  EXPECT_LE(skipped * 4, x->size()) << "too many non-differentiable points";
}

}  // namespace distillery

#endif  // DISTILLERY_TESTS_TEST_UTIL_H_
