// Test-set evaluation in the paper's unit: the number of misclassified
// examples, plus accuracy and the confusion matrix.
#ifndef DISTILLERY_COMMON_TRAIN_EVALUATION_H_
#define DISTILLERY_COMMON_TRAIN_EVALUATION_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/data/dataset.h"
#include "common/data/preprocessing.h"
#include "common/nn/network.h"

namespace distillery {

struct EvaluationResult {
  int64_t examples = 0;
  int64_t errors = 0;   // argmax(logits) != label
  double accuracy = 0;  // 1 - errors / examples
  int num_classes = 0;
  // confusion[true_class * num_classes + predicted_class] = count.
  std::vector<int64_t> confusion;

  // Errors among examples whose true class is `label`.
  int64_t ErrorsOnClass(int label) const;
  // A printable table, rows = true class, columns = predicted class.
  std::string ConfusionTable() const;
};

// Classifies every example of `data` (which must be labeled) at T = 1 in
// batches of `batch_size`, with dropout off. `class_bias`, when not empty,
// is added to the logits first (one value per class; the paper's "raise the
// bias of class 3" experiment). InvalidArgument when the data is unlabeled
// or its shape does not fit the network. The network takes the images
// after `preprocessing` (an imported teacher's own; every network trained
// here takes the default, pixels / 255).
absl::StatusOr<EvaluationResult> Evaluate(Network& mlp, const Dataset& data,
                                          int64_t batch_size = 1000,
                                          const std::vector<float>& class_bias = {},
                                          const Preprocessing& preprocessing = Preprocessing());

}  // namespace distillery

#endif  // DISTILLERY_COMMON_TRAIN_EVALUATION_H_
