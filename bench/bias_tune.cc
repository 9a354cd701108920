// The paper's bias fixes (Hinton et al. 2015, section 3): a student
// distilled on a transfer set without class 3 rarely predicts 3, and adding a
// constant to its logit repairs much of that; one distilled on 7s and 8s
// alone predicts them too often, and lowering both of their logits by one
// constant (the paper: 7.6) repairs it. The constant, added to every class
// of --bias_classes, is tuned in steps of 0.1 over [--min_bias, --max_bias]
// on a validation split of the training set (never on the test set), then
// the test errors are reported before and after.
//
//   bias_tune --checkpoint=student.ckpt --data_dir=DIR --validation_range=50000:60000
//   --bias_classes=3                            (raise: the missing 3)
//   --bias_classes=7,8 --min_bias=-10 --max_bias=0   (lower: only 7s and 8s)
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "common/cli/training_flags.h"
#include "common/data/idx_dataset.h"
#include "common/formats/checkpoint.h"
#include "common/train/evaluation.h"
#include "spdlog/spdlog.h"

// The student checkpoint, the data and the examples the bias is tuned on:
// --checkpoint, --data_dir and --validation_range, shared with the training
// flags (common/cli/training_flags.cc).
ABSL_DECLARE_FLAG(std::string, checkpoint);
ABSL_DECLARE_FLAG(std::string, data_dir);
ABSL_DECLARE_FLAG(std::string, validation_range);
ABSL_FLAG(std::vector<std::string>, bias_classes, {"3"},
          "The classes whose logits get the bias, comma-separated");
ABSL_FLAG(double, min_bias, 0, "Smallest bias tried (steps of 0.1)");
ABSL_FLAG(double, max_bias, 10, "Largest bias tried (steps of 0.1)");

namespace distillery {
namespace {

int Run() {
  auto data = LoadMnistFormatDirectory(absl::GetFlag(FLAGS_data_dir));
  auto checkpoint = LoadCheckpoint(absl::GetFlag(FLAGS_checkpoint));
  if (!data.ok() || !checkpoint.ok()) {
    spdlog::error("cannot load: {} {}", data.status().ToString(), checkpoint.status().ToString());
    return 1;
  }
  auto range = ParseRange(absl::GetFlag(FLAGS_validation_range), data->train.num_examples);
  if (!range.ok()) return 1;
  const Dataset validation = *SliceDataset(data->train, range->first, range->second);
  auto student = *NetworkFromCheckpoint(*checkpoint);
  std::vector<int> classes;
  for (const std::string& text : absl::GetFlag(FLAGS_bias_classes)) {
    int c = -1;
    if (!absl::SimpleAtoi(text, &c) || c < 0 || c >= student->num_classes()) {
      spdlog::error("--bias_classes: \"{}\" is not a class of the student", text);
      return 2;
    }
    classes.push_back(c);
  }
  std::vector<float> bias(student->num_classes(), 0.f);
  auto set_bias = [&](float b) {
    for (int c : classes) bias[c] = b;
  };
  float best_bias = 0.f;
  int64_t best_errors = Evaluate(*student, validation)->errors;
  const int64_t steps =
      std::llround((absl::GetFlag(FLAGS_max_bias) - absl::GetFlag(FLAGS_min_bias)) / 0.1);
  for (int64_t k = 0; k <= steps; ++k) {
    const float b = static_cast<float>(absl::GetFlag(FLAGS_min_bias) + 0.1 * k);
    set_bias(b);
    const int64_t errors = Evaluate(*student, validation, 1000, bias)->errors;
    if (errors < best_errors || (errors == best_errors && std::abs(b) < std::abs(best_bias))) {
      best_errors = errors;
      best_bias = b;
    }
  }
  const EvaluationResult before = *Evaluate(*student, data->test);
  set_bias(best_bias);
  const EvaluationResult after = *Evaluate(*student, data->test, 1000, bias);
  int64_t examples = 0, errors_before = 0, errors_after = 0;
  for (int c : classes) {
    for (int p = 0; p < before.num_classes; ++p)
      examples += before.confusion[c * before.num_classes + p];
    errors_before += before.ErrorsOnClass(c);
    errors_after += after.ErrorsOnClass(c);
  }
  std::printf(
      "bias_tune classes=%s tuned_bias=%.1f validation_errors=%ld test_errors_before=%ld "
      "class_errors_before=%ld test_errors_after=%ld class_errors_after=%ld class_examples=%ld\n",
      absl::StrJoin(absl::GetFlag(FLAGS_bias_classes), ",").c_str(), best_bias,
      static_cast<long>(best_errors), static_cast<long>(before.errors),
      static_cast<long>(errors_before), static_cast<long>(after.errors),
      static_cast<long>(errors_after), static_cast<long>(examples));
  return 0;
}

}  // namespace
}  // namespace distillery

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return distillery::Run();
}
