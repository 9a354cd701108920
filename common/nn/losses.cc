#include "common/nn/losses.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace distillery {
namespace {

absl::Status ValidateLabels(absl::Span<const int> labels, const Tensor& logits) {
  if (static_cast<int64_t>(labels.size()) != logits.rows()) {
    return absl::InvalidArgumentError(
        absl::StrCat("got ", labels.size(), " labels for ", logits.rows(), " rows of logits"));
  }
  for (size_t n = 0; n < labels.size(); ++n) {
    if (labels[n] < 0 || labels[n] >= logits.cols()) {
      return absl::InvalidArgumentError(absl::StrCat("label ", labels[n], " of example ", n,
                                                     " is not in [0, ", logits.cols(), ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<double> CrossEntropyLoss::Compute(const Tensor& logits, absl::Span<const int> labels,
                                                 float temperature, Tensor* grad_logits) {
  if (absl::Status s = ValidateLabels(labels, logits); !s.ok()) return s;
  if (absl::Status s = softmax_.Compute(logits, temperature, &probs_, &log_probs_); !s.ok()) {
    return s;
  }
  const int64_t n_rows = logits.rows(), k = logits.cols();
  const float scale = 1.f / (static_cast<float>(n_rows) * temperature);
  grad_logits->Resize(n_rows, k);
  double loss = 0;
  for (int64_t n = 0; n < n_rows; ++n) {
    loss -= log_probs_.at(n, labels[n]);
    for (int64_t j = 0; j < k; ++j) {
      const float target = j == labels[n] ? 1.f : 0.f;
      grad_logits->at(n, j) = (probs_.at(n, j) - target) * scale;
    }
  }
  return loss / static_cast<double>(n_rows);
}

absl::StatusOr<DistillationLoss::Terms> DistillationLoss::Compute(const Tensor& logits,
                                                                  const Tensor& soft_targets,
                                                                  absl::Span<const int> labels,
                                                                  float temperature, float alpha,
                                                                  Tensor* grad_logits) {
  if (soft_targets.rows() != logits.rows() || soft_targets.cols() != logits.cols()) {
    return absl::InvalidArgumentError(absl::StrCat("soft targets are ", soft_targets.rows(), "x",
                                                   soft_targets.cols(), " but logits are ",
                                                   logits.rows(), "x", logits.cols()));
  }
  if (!(alpha >= 0.f && alpha <= 1.f)) {
    return absl::InvalidArgumentError(absl::StrCat("alpha must be in [0, 1], got ", alpha));
  }
  const bool has_labels = !labels.empty();
  if (has_labels) {
    if (absl::Status s = ValidateLabels(labels, logits); !s.ok()) return s;
  } else {
    alpha = 1.f;
  }
  const int64_t n_rows = logits.rows(), k = logits.cols();
  for (int64_t n = 0; n < n_rows; ++n) {
    double row_sum = 0;
    for (int64_t j = 0; j < k; ++j) {
      const float q = soft_targets.at(n, j);
      if (!std::isfinite(q) || q < 0.f) {
        return absl::InvalidArgumentError(absl::StrCat("soft target ", q, " at example ", n,
                                                       " class ", j, " is not a probability"));
      }
      row_sum += q;
    }
    if (std::abs(row_sum - 1.0) > 1e-3) {
      return absl::InvalidArgumentError(
          absl::StrCat("soft targets of example ", n, " sum to ", row_sum, ", not 1"));
    }
  }
  if (absl::Status s = softmax_.Compute(logits, temperature, &probs_t_, &log_probs_t_); !s.ok()) {
    return s;
  }
  Terms terms;
  grad_logits->Resize(n_rows, k);
  const float inverse_n = 1.f / static_cast<float>(n_rows);
  const float soft_scale = alpha * temperature * inverse_n;
  for (int64_t n = 0; n < n_rows; ++n) {
    for (int64_t j = 0; j < k; ++j) {
      const float q = soft_targets.at(n, j);
      if (q > 0.f) terms.soft -= q * log_probs_t_.at(n, j);
      grad_logits->at(n, j) = soft_scale * (probs_t_.at(n, j) - q);
    }
  }
  terms.soft /= static_cast<double>(n_rows);
  terms.total = alpha * temperature * temperature * terms.soft;
  if (has_labels && alpha < 1.f) {
    if (absl::Status s = softmax_.Compute(logits, 1.f, &probs_1_, &log_probs_1_); !s.ok()) return s;
    const float hard_scale = (1.f - alpha) * inverse_n;
    for (int64_t n = 0; n < n_rows; ++n) {
      terms.hard -= log_probs_1_.at(n, labels[n]);
      for (int64_t j = 0; j < k; ++j) {
        const float target = j == labels[n] ? 1.f : 0.f;
        grad_logits->at(n, j) += hard_scale * (probs_1_.at(n, j) - target);
      }
    }
    terms.hard /= static_cast<double>(n_rows);
    terms.total += (1.0 - alpha) * terms.hard;
  }
  return terms;
}

}  // namespace distillery
