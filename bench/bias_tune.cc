// The paper's "raise the bias of the missing class" fix (Hinton et al. 2015,
// section 3): a student distilled on a transfer set without class c rarely
// predicts c; adding a constant to c's logit repairs much of that. The
// constant is tuned on a validation split of the training set (never on the
// test set), then the test errors are reported before and after.
//
//   bias_tune --checkpoint=student.ckpt --data_dir=DIR --validation_range=50000:60000
//   --bias_class=3
#include <cstdio>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "common/cli/training_flags.h"
#include "common/formats/checkpoint.h"
#include "common/train/evaluation.h"
#include "spdlog/spdlog.h"

// The student checkpoint, the data and the examples the bias is tuned on:
// --checkpoint, --data_dir and --validation_range, shared with the training
// flags (common/cli/training_flags.cc).
ABSL_DECLARE_FLAG(std::string, checkpoint);
ABSL_DECLARE_FLAG(std::string, data_dir);
ABSL_DECLARE_FLAG(std::string, validation_range);
ABSL_FLAG(int32_t, bias_class, 3, "The class that the transfer set lacked");
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
  const int c = absl::GetFlag(FLAGS_bias_class);
  std::vector<float> bias(student->num_classes(), 0.f);
  float best_bias = 0.f;
  int64_t best_errors = Evaluate(*student, validation)->errors;
  for (float b = 0.1f; b <= absl::GetFlag(FLAGS_max_bias) + 1e-6; b += 0.1f) {
    bias[c] = b;
    const int64_t errors = Evaluate(*student, validation, 1000, bias)->errors;
    if (errors < best_errors) {
      best_errors = errors;
      best_bias = b;
    }
  }
  const EvaluationResult before = *Evaluate(*student, data->test);
  bias[c] = best_bias;
  const EvaluationResult after = *Evaluate(*student, data->test, 1000, bias);
  int64_t class_total = 0;
  for (int p = 0; p < before.num_classes; ++p)
    class_total += before.confusion[c * before.num_classes + p];
  std::printf(
      "bias_tune class=%d tuned_bias=%.1f validation_errors=%ld test_errors_before=%ld "
      "class_errors_before=%ld test_errors_after=%ld class_errors_after=%ld class_examples=%ld\n",
      c, best_bias, static_cast<long>(best_errors), static_cast<long>(before.errors),
      static_cast<long>(before.ErrorsOnClass(c)), static_cast<long>(after.errors),
      static_cast<long>(after.ErrorsOnClass(c)), static_cast<long>(class_total));
  return 0;
}

}  // namespace
}  // namespace distillery

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return distillery::Run();
}
