// Softmax at a temperature, and gradient checks of both losses at several
// temperatures, including the closed form of the distillation gradient.
#include "common/nn/losses.h"

#include <numeric>

#include "common/nn/softmax.h"
#include "tests/test_util.h"

namespace distillery {
namespace {

constexpr float kTemperatures[] = {1.f, 2.f, 5.f, 20.f};

double Entropy(const float* p, int64_t k) {
  double h = 0;
  for (int64_t j = 0; j < k; ++j) h -= p[j] > 0 ? p[j] * std::log(p[j]) : 0;
  return h;
}

int64_t Argmax(const float* p, int64_t k) { return std::max_element(p, p + k) - p; }

TEST(TemperatureSoftmaxTest, RowsSumToOneAndFlattenAsTemperatureGrows) {
  TemperatureSoftmax softmax;
  const Tensor logits = RandomMatrix(6, 10, 1, 8.f);
  Tensor previous;
  for (float t : {0.5f, 1.f, 2.f, 5.f, 20.f, 100.f}) {
    Tensor probs, log_probs;
    ASSERT_TRUE(softmax.Compute(logits, t, &probs, &log_probs).ok());
    for (int64_t n = 0; n < probs.rows(); ++n) {
      const float* p = probs.row(n);
      EXPECT_NEAR(std::accumulate(p, p + 10, 0.0), 1.0, 1e-5) << "T=" << t;
      EXPECT_EQ(Argmax(p, 10), Argmax(logits.row(n), 10)) << "T=" << t;
      for (int j = 0; j < 10; ++j) EXPECT_NEAR(std::log(p[j]), log_probs.at(n, j), 1e-4);
      if (previous.size() > 0) {
        EXPECT_GT(Entropy(p, 10), Entropy(previous.row(n), 10)) << "T=" << t;
        EXPECT_LT(*std::max_element(p, p + 10),
                  *std::max_element(previous.row(n), previous.row(n) + 10));
      }
    }
    previous = probs;
  }
  // At a very high temperature the distribution is nearly uniform.
  EXPECT_NEAR(previous.at(0, 3), 0.1, 0.01);
}

TEST(TemperatureSoftmaxTest, MatchesTheFormula) {
  TemperatureSoftmax softmax;
  Tensor logits(1, 3);
  logits.at(0, 0) = 1;
  logits.at(0, 1) = 2;
  logits.at(0, 2) = 4;
  Tensor probs;
  ASSERT_TRUE(softmax.Compute(logits, 2.f, &probs).ok());
  const double z = std::exp(0.5) + std::exp(1.0) + std::exp(2.0);
  // oneDNN's exp is accurate to a few ulp.
  EXPECT_NEAR(probs.at(0, 0), std::exp(0.5) / z, 1e-5);
  EXPECT_NEAR(probs.at(0, 2), std::exp(2.0) / z, 1e-5);
}

TEST(TemperatureSoftmaxTest, StaysFiniteForHugeLogits) {
  TemperatureSoftmax softmax;
  Tensor logits(1, 2);
  logits.at(0, 0) = 1e4f;
  logits.at(0, 1) = -1e4f;
  Tensor probs, log_probs;
  ASSERT_TRUE(softmax.Compute(logits, 1.f, &probs, &log_probs).ok());
  EXPECT_NEAR(probs.at(0, 0), 1.f, 1e-5);
  EXPECT_TRUE(std::isfinite(log_probs.at(0, 1)));
}

TEST(TemperatureSoftmaxTest, RejectsBadTemperatures) {
  TemperatureSoftmax softmax;
  Tensor logits = RandomMatrix(2, 3, 2), probs;
  for (float t : {0.f, -1.f, std::nanf(""), INFINITY}) {
    EXPECT_EQ(softmax.Compute(logits, t, &probs).code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST(CrossEntropyLossTest, GradientMatchesFiniteDifferencesAtSeveralTemperatures) {
  for (float t : kTemperatures) {
    CrossEntropyLoss loss;
    Tensor logits = RandomMatrix(4, 10, 3, 3.f);
    const std::vector<int> labels = {3, 0, 9, 3};
    Tensor grad;
    ASSERT_TRUE(loss.Compute(logits, labels, t, &grad).ok());
    auto value = [&] {
      Tensor unused;
      return *loss.Compute(logits, labels, t, &unused);
    };
    SCOPED_TRACE(testing::Message() << "T=" << t);
    ExpectGradientMatches(value, &logits, grad, 1e-2 * t, 3e-2, 1e-4);
  }
}

TEST(CrossEntropyLossTest, ValueIsNegativeLogLikelihood) {
  CrossEntropyLoss loss;
  Tensor logits(1, 2);  // zeros: p = (0.5, 0.5)
  Tensor grad;
  absl::StatusOr<double> value = loss.Compute(logits, std::vector<int>{1}, 1.f, &grad);
  ASSERT_TRUE(value.ok());
  EXPECT_NEAR(*value, std::log(2.0), 1e-5);
  EXPECT_NEAR(grad.at(0, 1), -0.5, 1e-6);
}

TEST(CrossEntropyLossTest, RejectsBadLabels) {
  CrossEntropyLoss loss;
  Tensor logits = RandomMatrix(2, 3, 4), grad;
  EXPECT_EQ(loss.Compute(logits, std::vector<int>{0, 3}, 1.f, &grad).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(loss.Compute(logits, std::vector<int>{0}, 1.f, &grad).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Soft targets: a softmax of other random logits at temperature t.
Tensor SoftTargets(int64_t rows, int64_t cols, uint64_t seed, float t) {
  TemperatureSoftmax softmax;
  Tensor probs;
  EXPECT_TRUE(softmax.Compute(RandomMatrix(rows, cols, seed, 5.f), t, &probs).ok());
  return probs;
}

// The distillation loss written out in double precision, straight from its
// formula, as the reference for the finite differences: float rounding in
// T^2-scaled values would otherwise swamp the differences at high T.
double ReferenceDistillationLoss(const Tensor& logits, const Tensor& q,
                                 const std::vector<int>& labels, double t, double alpha) {
  const int64_t n_rows = logits.rows(), k = logits.cols();
  double soft = 0, hard = 0;
  for (int64_t n = 0; n < n_rows; ++n) {
    double max_t = -1e300, max_1 = -1e300;
    for (int64_t j = 0; j < k; ++j) {
      max_t = std::max(max_t, logits.at(n, j) / t);
      max_1 = std::max(max_1, double{logits.at(n, j)});
    }
    double sum_t = 0, sum_1 = 0;
    for (int64_t j = 0; j < k; ++j) {
      sum_t += std::exp(logits.at(n, j) / t - max_t);
      sum_1 += std::exp(logits.at(n, j) - max_1);
    }
    for (int64_t j = 0; j < k; ++j) {
      soft -= q.at(n, j) * (logits.at(n, j) / t - max_t - std::log(sum_t));
    }
    if (!labels.empty()) hard -= logits.at(n, labels[n]) - max_1 - std::log(sum_1);
  }
  if (labels.empty()) alpha = 1;
  return (alpha * t * t * soft + (1 - alpha) * hard) / static_cast<double>(n_rows);
}

TEST(DistillationLossTest, GradientMatchesFiniteDifferencesAtSeveralTemperatures) {
  for (float t : kTemperatures) {
    for (bool with_labels : {false, true}) {
      DistillationLoss loss;
      Tensor logits = RandomMatrix(4, 10, 5, 3.f);
      const Tensor q = SoftTargets(4, 10, 6, t);
      std::vector<int> labels;
      if (with_labels) labels = {1, 2, 3, 4};
      Tensor grad;
      absl::StatusOr<DistillationLoss::Terms> terms =
          loss.Compute(logits, q, labels, t, 0.7f, &grad);
      ASSERT_TRUE(terms.ok());
      const double reference = ReferenceDistillationLoss(logits, q, labels, t, 0.7);
      EXPECT_NEAR(terms->total, reference, 1e-4 * std::abs(reference));
      // Finite differences of the double-precision formula, one logit at a
      // time (the perturbation is applied to a double copy).
      for (int64_t i = 0; i < logits.size(); ++i) {
        const double h = 1e-3;
        Tensor plus = logits, minus = logits;
        // Tensor holds floats; perturb by an exactly representable step.
        plus.data()[i] += static_cast<float>(h);
        minus.data()[i] -= static_cast<float>(h);
        const double actual_step = double{plus.data()[i]} - double{minus.data()[i]};
        const double numeric = (ReferenceDistillationLoss(plus, q, labels, t, 0.7) -
                                ReferenceDistillationLoss(minus, q, labels, t, 0.7)) /
                               actual_step;
        EXPECT_NEAR(grad.data()[i], numeric, 1e-3 * std::abs(numeric) + 2e-5)
            << "T=" << t << " labels=" << with_labels << " element " << i;
      }
    }
  }
}

TEST(DistillationLossTest, GradientHasTheClosedForm) {
  // With no hard term, dL/dz = alpha T (p - q) / N exactly.
  for (float t : kTemperatures) {
    DistillationLoss loss;
    const Tensor logits = RandomMatrix(5, 10, 7, 4.f);
    const Tensor q = SoftTargets(5, 10, 8, t);
    Tensor grad, p;
    ASSERT_TRUE(loss.Compute(logits, q, {}, t, 1.f, &grad).ok());
    TemperatureSoftmax softmax;
    ASSERT_TRUE(softmax.Compute(logits, t, &p).ok());
    for (int64_t i = 0; i < grad.size(); ++i) {
      EXPECT_NEAR(grad.data()[i], t * (p.data()[i] - q.data()[i]) / 5.f, 1e-6) << "T=" << t;
    }
    // With labels and alpha < 1 the soft part keeps the same form and the
    // hard part is (1 - alpha)(p(1) - y) / N.
    const float alpha = 0.6f;
    const std::vector<int> labels = {0, 1, 2, 3, 4};
    ASSERT_TRUE(loss.Compute(logits, q, labels, t, alpha, &grad).ok());
    Tensor p1;
    ASSERT_TRUE(softmax.Compute(logits, 1.f, &p1).ok());
    for (int64_t n = 0; n < 5; ++n) {
      for (int64_t j = 0; j < 10; ++j) {
        const float hard = (1 - alpha) * (p1.at(n, j) - (j == labels[n] ? 1.f : 0.f)) / 5.f;
        const float soft = alpha * t * (p.at(n, j) - q.at(n, j)) / 5.f;
        EXPECT_NEAR(grad.at(n, j), soft + hard, 1e-6);
      }
    }
  }
}

TEST(DistillationLossTest, ValueCarriesTheTSquaredFactor) {
  DistillationLoss loss;
  const Tensor logits = RandomMatrix(3, 10, 9);
  const Tensor q = SoftTargets(3, 10, 10, 4.f);
  Tensor grad;
  absl::StatusOr<DistillationLoss::Terms> terms = loss.Compute(logits, q, {}, 4.f, 0.5f, &grad);
  ASSERT_TRUE(terms.ok());
  // Without labels alpha counts as 1.
  EXPECT_NEAR(terms->total, 16.0 * terms->soft, 1e-9);
  EXPECT_EQ(terms->hard, 0.0);
}

TEST(DistillationLossTest, RejectsInvalidSoftTargets) {
  DistillationLoss loss;
  const Tensor logits = RandomMatrix(2, 3, 11);
  Tensor grad;
  Tensor not_normalised(2, 3);
  not_normalised.Fill(0.5f);
  EXPECT_EQ(loss.Compute(logits, not_normalised, {}, 2.f, 1.f, &grad).status().code(),
            absl::StatusCode::kInvalidArgument);
  Tensor with_nan = SoftTargets(2, 3, 12, 1.f);
  with_nan.at(1, 1) = std::nanf("");
  EXPECT_EQ(loss.Compute(logits, with_nan, {}, 2.f, 1.f, &grad).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(loss.Compute(logits, SoftTargets(3, 3, 13, 1.f), {}, 2.f, 1.f, &grad).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(loss.Compute(logits, SoftTargets(2, 3, 14, 1.f), {}, 2.f, 1.5f, &grad).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace distillery
