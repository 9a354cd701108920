// What --resume may continue, and the record that lets it decide.
//
// A checkpoint written during training records, in TrainingState.settings,
// every setting that shapes the trajectory, under the name of its flag:
//   architecture, input_dropout, hidden_dropout, jitter, seed, epochs,
//   batch_size, optimizer, lr, lr_schedule, lr_final_fraction, warmup_epochs,
//   warmup_steps, lr_step_gamma, lr_step_epochs, max_norm,
//   momentum_start, momentum_end, momentum_ramp_epochs, momentum_ramp_steps,
//   dampened_momentum (SGD), adam_beta1, adam_beta2, adam_epsilon (Adam),
//   temperature, distill_temperature, alpha, data (what the data is),
//   examples_per_epoch, batches_per_epoch, and average_last_epochs,
//   elastic_alpha and elastic_sigma when on
// plus the ISA oneDNN dispatched to, the compute threads and the precision
// (TrainingState.precision; f32 in checkpoints that record none). A resume
//   - is refused (FailedPrecondition naming every setting that differs, with
//     both values) when a setting differs, unless it is named in
//     --resume_allow_changes (then it goes on with a warning);
//   - is always refused when the optimizer kind differs, or when the
//     optimizer state in the checkpoint is not of the configured kind (the
//     state of SGD cannot seed Adam's moments);
//   - accepts another number of epochs under a schedule that does not depend
//     on the total number of steps (constant, step: extending or shortening
//     the run changes nothing of the epochs it shares), but not under cosine
//     nor with weight averaging (its epochs are the last ones);
//   - goes on with a warning on another ISA or thread count: the run is
//     valid, but its bits differ from an uninterrupted run's.
//   - keeps the checkpoint's precision: --precision=auto takes it, another
//     explicit precision is always refused (like the optimizer kind), and a
//     recorded bf16 on a CPU without native bf16 is refused.
// Checkpoints from before the record exist carry no settings: only their
// architecture is checked (by the trainer), with a warning.
#ifndef DISTILLERY_COMMON_TRAIN_RESUME_H_
#define DISTILLERY_COMMON_TRAIN_RESUME_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/tensor/precision.h"
#include "common/train/trainer.h"
#include "distill/v1/checkpoint.pb.h"

namespace distillery {

// Setting name -> canonical value (floats with every bit: %.9g).
using TrainingSettings = std::map<std::string, std::string>;

// The settings of a run of `config` on data of `examples_per_epoch` examples
// in `batches_per_epoch` batches.
TrainingSettings DescribeTrainingSettings(const TrainerConfig& config, int64_t examples_per_epoch,
                                          int64_t batches_per_epoch);

// Writes `settings`, this process's ISA and compute threads, and the run's
// `precision` into the checkpoint's training state.
void RecordTrainingSettings(const TrainingSettings& settings, Precision precision,
                            distill::v1::Checkpoint* checkpoint);

// The precision a checkpoint's run trained in: its TrainingState.precision,
// f32 when it records none. DataLoss naming an unknown value.
absl::StatusOr<Precision> RecordedPrecision(const distill::v1::Checkpoint& checkpoint,
                                            const std::string& path);

// The precision a run asking for `choice` trains in when it resumes from
// `checkpoint` (read from `path`, for messages): the recorded one, by the
// rules above (FailedPrecondition naming both precisions, or the ISA, when
// refused), with the reason for the log in `*reason`.
absl::StatusOr<Precision> ResumePrecision(const distill::v1::Checkpoint& checkpoint,
                                          const std::string& path, PrecisionChoice choice,
                                          std::string* reason);

// Whether a run with `settings` may resume from `checkpoint` (read from
// `path`, for messages), by the rules above. `allowed` holds setting names
// (unknown names are InvalidArgument, so that a typo does not pass silently).
absl::Status CheckResume(const distill::v1::Checkpoint& checkpoint, const std::string& path,
                         const TrainingSettings& settings, const std::vector<std::string>& allowed);

// Makes the metrics CSV at `path` agree with a resume after
// `epochs_completed` epochs: rows of later epochs (written before a crash
// that came before their checkpoint) are dropped, so the resumed run's rows
// are never duplicated. A missing file is left missing.
absl::Status TrimMetricsCsv(const std::string& path, int64_t epochs_completed);

}  // namespace distillery

#endif  // DISTILLERY_COMMON_TRAIN_RESUME_H_
