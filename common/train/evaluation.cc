#include "common/train/evaluation.h"

#include <algorithm>
#include <limits>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/util/status_macros.h"

namespace distillery {

int64_t EvaluationResult::ErrorsOnClass(int label) const {
  int64_t errors = 0;
  for (int p = 0; p < num_classes; ++p) {
    if (p != label) errors += confusion[label * num_classes + p];
  }
  return errors;
}

std::string EvaluationResult::ConfusionTable() const {
  std::string out = "true\\pred";
  for (int p = 0; p < num_classes; ++p) absl::StrAppendFormat(&out, "%7d", p);
  out += "\n";
  for (int t = 0; t < num_classes; ++t) {
    absl::StrAppendFormat(&out, "%9d", t);
    for (int p = 0; p < num_classes; ++p) {
      absl::StrAppendFormat(&out, "%7d", confusion[t * num_classes + p]);
    }
    out += "\n";
  }
  return out;
}

absl::StatusOr<EvaluationResult> Evaluate(Network& mlp, const Dataset& data, int64_t batch_size,
                                          const std::vector<float>& class_bias,
                                          const Preprocessing& preprocessing) {
  RETURN_IF_ERROR(preprocessing.Validate(data.channels));
  if (!data.has_labels()) return absl::InvalidArgumentError("cannot evaluate on unlabeled data");
  if (data.input_size() != mlp.input_size()) {
    return absl::InvalidArgumentError(absl::StrCat("data has ", data.input_size(),
                                                   " inputs per example, the network takes ",
                                                   mlp.input_size()));
  }
  const int k = static_cast<int>(mlp.num_classes());
  if (!class_bias.empty() && static_cast<int>(class_bias.size()) != k) {
    return absl::InvalidArgumentError(
        absl::StrCat("class bias has ", class_bias.size(), " values for ", k, " classes"));
  }
  EvaluationResult result;
  result.num_classes = k;
  result.confusion.assign(static_cast<size_t>(k) * k, 0);
  Tensor inputs;
  std::vector<int> labels;
  std::vector<int64_t> indices;
  for (int64_t begin = 0; begin < data.num_examples; begin += batch_size) {
    const int64_t end = std::min(data.num_examples, begin + batch_size);
    indices.resize(end - begin);
    std::iota(indices.begin(), indices.end(), begin);
    GatherPreprocessedBatch(data, indices, preprocessing, &inputs, &labels);
    const Tensor* logits = nullptr;
    if (absl::Status s = mlp.Infer(inputs, &logits); !s.ok()) return s;
    for (int64_t n = 0; n < logits->rows(); ++n) {
      int best = 0;
      float best_value = -std::numeric_limits<float>::infinity();
      for (int j = 0; j < k; ++j) {
        const float v = logits->at(n, j) + (class_bias.empty() ? 0.f : class_bias[j]);
        if (v > best_value) {
          best_value = v;
          best = j;
        }
      }
      const int truth = labels[n];
      if (truth < 0 || truth >= k) {
        return absl::InvalidArgumentError(
            absl::StrCat("label ", truth, " of example ", begin + n, " is not in [0, ", k, ")"));
      }
      ++result.confusion[truth * k + best];
      if (best != truth) ++result.errors;
    }
  }
  result.examples = data.num_examples;
  result.accuracy =
      result.examples > 0 ? 1.0 - static_cast<double>(result.errors) / result.examples : 0.0;
  return result;
}

}  // namespace distillery
