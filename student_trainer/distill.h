// `student_trainer distill`: a student trained on the soft targets of a
// remote teacher.
#ifndef DISTILLERY_STUDENT_TRAINER_DISTILL_H_
#define DISTILLERY_STUDENT_TRAINER_DISTILL_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/train/trainer.h"
#include "student_trainer/teacher_client.h"

namespace distillery {

struct DistillConfig {
  // The student network and its training (distill_temperature, alpha,
  // schedule, checkpoint, resume, prefetch...).
  TrainerConfig trainer;
  // How to reach the teacher.
  TeacherClientConfig teacher;
  // "local": the student's own transfer set from data_dir (within
  // transfer_range), soft targets requested for exactly its inputs.
  // "teacher": the teacher's transfer set, pulled shard by shard.
  std::string source = "local";
  // MNIST-format directory: the local transfer set (source "local") and the
  // test set used for evaluation (always).
  std::string data_dir;
  std::string transfer_range;
  // Source "local": "begin:end" of data_dir's training set held out of the
  // transfer set (it must lie within transfer_range) and evaluated every
  // epoch beside the test set; empty = none.
  std::string validation_range;
  // Train on the local transfer set's labels too, with weight 1 - alpha
  // (false: the transfer set is used without labels).
  bool use_labels = false;
  // Source "local": drop the examples of these classes from the transfer set
  // (the paper's "transfer set without any 3s" experiment; needs labels).
  std::vector<int> exclude_classes;
  // Source "teacher": this student's shard.
  uint32_t shard_index = 0;
  uint32_t num_shards = 1;
};

// Connects, checks that the teacher fits the student (input size, classes),
// trains, evaluates and writes the outputs. Returns the error that stopped
// it; the last checkpoint written stays on disk for --resume.
absl::Status RunDistillation(const DistillConfig& config);

}  // namespace distillery

#endif  // DISTILLERY_STUDENT_TRAINER_DISTILL_H_
