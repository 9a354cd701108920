// The training losses. Each returns its value (mean over the batch) and
// writes its exact gradient with respect to the logits; tests/losses_test.cc
// checks every gradient against finite differences.
//
// Notation: z_n are the logits of example n (one row), N the batch size,
// p_n(T) = softmax(z_n / T), y_n a hard label, q_n a soft-target row.
//
// Thread-safety: one loss object per thread (each owns a TemperatureSoftmax).
#ifndef DISTILLERY_COMMON_NN_LOSSES_H_
#define DISTILLERY_COMMON_NN_LOSSES_H_

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/nn/softmax.h"
#include "common/tensor/tensor.h"

namespace distillery {

// Cross-entropy of hard labels at temperature T:
//   L       = -(1/N) sum_n log p_n(T)[y_n]
//   dL/dz_n = (p_n(T) - onehot(y_n)) / (N T)
// At T = 1 this is the usual classification loss.
class CrossEntropyLoss {
 public:
  // `logits` is N x K, `labels` has N entries in [0, K). `grad_logits` is
  // resized to N x K. InvalidArgument on a shape mismatch, a label out of
  // range or a bad temperature.
  absl::StatusOr<double> Compute(const Tensor& logits, absl::Span<const int> labels,
                                 float temperature, Tensor* grad_logits);

 private:
  TemperatureSoftmax softmax_;
  Tensor probs_, log_probs_;
};

// The distillation loss of Hinton et al. (2015):
//   L = alpha T^2 H(q, p(T)) + (1 - alpha) H(y, p(1))
// where H(q, p(T)) = -(1/N) sum_n sum_k q_nk log p_nk(T) is the cross-entropy
// with the teacher's soft targets q (rows summing to 1, produced at the same
// T) and H(y, p(1)) the hard-label cross-entropy at T = 1. The T^2 factor
// keeps the soft term's gradient magnitude independent of T:
//   dL/dz_n = alpha T (p_n(T) - q_n) / N + (1 - alpha) (p_n(1) - onehot(y_n)) / N
// Labels are optional: with none, the hard term is absent and alpha counts
// as 1 (a transfer set may be unlabeled).
class DistillationLoss {
 public:
  struct Terms {
    double total = 0;  // L
    double soft = 0;   // H(q, p(T)), without the alpha T^2 factor
    double hard = 0;   // H(y, p(1)), 0 without labels
  };

  // `logits` and `soft_targets` are N x K; `labels` has N entries or none.
  // InvalidArgument on shape mismatches, labels out of range, alpha outside
  // [0, 1], a bad temperature, or soft targets that are negative, not
  // finite, or whose rows do not sum to 1 (within 1e-3).
  absl::StatusOr<Terms> Compute(const Tensor& logits, const Tensor& soft_targets,
                                absl::Span<const int> labels, float temperature, float alpha,
                                Tensor* grad_logits);

 private:
  TemperatureSoftmax softmax_;
  Tensor probs_t_, log_probs_t_, probs_1_, log_probs_1_;
};

}  // namespace distillery

#endif  // DISTILLERY_COMMON_NN_LOSSES_H_
