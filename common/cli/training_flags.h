// Command-line flags shared by `teacher_server train` and
// `student_trainer baseline`: every hyperparameter of TrainerConfig, the data
// source and the outputs. Each binary sets its role's defaults (the paper's
// teacher or student recipe) before parsing with SetTrainingFlagDefaults.
#ifndef DISTILLERY_COMMON_CLI_TRAINING_FLAGS_H_
#define DISTILLERY_COMMON_CLI_TRAINING_FLAGS_H_

#include <string>

#include "absl/status/statusor.h"
#include "common/data/dataset.h"
#include "common/train/trainer.h"

namespace distillery {

// Overrides the flags' built-in defaults with `defaults` (call before
// absl::ParseCommandLine so that the command line still wins).
void SetTrainingFlagDefaults(const TrainerConfig& defaults, double momentum_ramp_epochs = 0);

// The TrainerConfig the flags describe. InvalidArgument for malformed values.
absl::StatusOr<TrainerConfig> TrainerConfigFromFlags();

// The data source the flags name: --data when set, else --data_dir (see
// LoadDataSource in common/data/npz.h). InvalidArgument when --data is set
// and --data_dir is not its default: one of them would be ignored.
absl::StatusOr<std::string> DataSourceFromFlags();

// The data the flags name: DataSourceFromFlags() (an MNIST-format directory,
// a directory of .npy files or an .npz archive), the
// training part restricted to --train_range ("begin:end", end exclusive;
// empty = all of it) less the --validation_range held out for validation.
struct TrainingData {
  Dataset train;
  Dataset validation;  // empty without --validation_range
  Dataset test;
};
absl::StatusOr<TrainingData> LoadDataFromFlags();

// The value of --threads (compute threads for oneDNN/OpenMP).
int ThreadsFromFlags();

// Trains with the flags' configuration on the flags' data and logs a summary
// (test errors, parameters, outputs, wall time). Returns the process exit
// code: 0 on success, 1 with the error logged otherwise.
int RunTrainingFromFlags(const std::string& role);

// `inspect`: prints DescribeCheckpoint of --checkpoint. Returns the exit code
// (0, or 1 with the error logged).
int InspectCheckpointFromFlags();

}  // namespace distillery

#endif  // DISTILLERY_COMMON_CLI_TRAINING_FLAGS_H_
