// student_trainer: trains a small network.
//
//   student_trainer baseline [--flags]   train on hard labels alone (the
//                                         paper's 146-error baseline)
//   student_trainer distill [--flags]    train on a remote teacher's soft
//                                         targets
//
// `student_trainer --help` lists every flag.
#include <string>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "common/dnnl_context.h"
#include "common/trainer.h"
#include "common/training_flags.h"
#include "spdlog/spdlog.h"
#include "student_trainer/distill.h"

ABSL_DECLARE_FLAG(std::string, data_dir);
ABSL_DECLARE_FLAG(std::string, train_range);

ABSL_FLAG(std::string, teacher, "127.0.0.1:50051",
          "distill: teacher replicas \"host:port,host:port\" or a gRPC target such as "
          "dns:///teacher:50051 (balanced round_robin)");
ABSL_FLAG(std::string, source, "local",
          "distill: local = own transfer set from --data_dir within --train_range, soft targets "
          "asked for its (jittered) inputs; teacher = pull the teacher's transfer set");
ABSL_FLAG(double, distill_temperature, 20, "distill: temperature T of the soft targets");
ABSL_FLAG(double, alpha, 0.9,
          "distill: weight of the soft term (T^2-scaled); 1 - alpha weighs hard labels");
ABSL_FLAG(bool, use_labels, false,
          "distill: also train on the transfer set's labels (default: unlabeled transfer set)");
ABSL_FLAG(std::vector<std::string>, exclude_classes, {},
          "distill --source=local: drop these classes from the transfer set, e.g. 3");
ABSL_FLAG(uint32_t, shard_index, 0, "distill --source=teacher: this student's shard");
ABSL_FLAG(uint32_t, num_shards, 1, "distill --source=teacher: number of shards");
ABSL_FLAG(int64_t, prefetch, 4, "distill: batches whose soft targets are fetched ahead");
ABSL_FLAG(double, call_deadline_seconds, 30, "distill: deadline of each call to the teacher");
ABSL_FLAG(double, give_up_seconds, 120,
          "distill: stop with an error when no teacher answered for this long");
ABSL_FLAG(bool, allow_teacher_change, false,
          "distill: keep training when the teacher's weights hash changes mid-run");

namespace {

// The paper's student, 784-800-800-10 with no regularisation, trained with
// plain SGD (momentum 0.9, learning rate 0.1 along a cosine, 30 epochs).
distillery::TrainerConfig StudentRecipe() {
  distillery::TrainerConfig c;
  c.architecture = "784-800-800-10";
  c.epochs = 30;
  c.batch_size = 128;
  c.schedule.base = 0.1f;
  c.sgd.momentum_start = c.sgd.momentum_end = 0.9f;
  return c;
}

constexpr char kUsage[] =
    "student_trainer <command> [flags]\n"
    "commands:\n"
    "  baseline   train a student on the hard labels of --data_dir (within --train_range)\n"
    "  distill    train a student on the soft targets of the teacher at --teacher\n";

int Distill() {
  absl::StatusOr<distillery::TrainerConfig> trainer = distillery::TrainerConfigFromFlags();
  if (!trainer.ok()) {
    spdlog::error("{}", trainer.status().ToString());
    return 2;
  }
  distillery::DistillConfig config;
  config.trainer = *trainer;
  config.trainer.role = "student";
  config.trainer.distill_temperature = static_cast<float>(absl::GetFlag(FLAGS_distill_temperature));
  config.trainer.alpha = static_cast<float>(absl::GetFlag(FLAGS_alpha));
  config.trainer.prefetch_batches = absl::GetFlag(FLAGS_prefetch);
  config.teacher.target = absl::GetFlag(FLAGS_teacher);
  config.teacher.call_deadline = absl::Seconds(absl::GetFlag(FLAGS_call_deadline_seconds));
  config.teacher.give_up_after = absl::Seconds(absl::GetFlag(FLAGS_give_up_seconds));
  config.teacher.allow_teacher_change = absl::GetFlag(FLAGS_allow_teacher_change);
  config.source = absl::GetFlag(FLAGS_source);
  config.data_dir = absl::GetFlag(FLAGS_data_dir);
  config.transfer_range = absl::GetFlag(FLAGS_train_range);
  config.use_labels = absl::GetFlag(FLAGS_use_labels);
  for (const std::string& c : absl::GetFlag(FLAGS_exclude_classes)) {
    int label = 0;
    if (!absl::SimpleAtoi(c, &label)) {
      spdlog::error("--exclude_classes: \"{}\" is not a class number", c);
      return 2;
    }
    config.exclude_classes.push_back(label);
  }
  config.shard_index = absl::GetFlag(FLAGS_shard_index);
  config.num_shards = absl::GetFlag(FLAGS_num_shards);
  // Epoch-denominated flags: an epoch here is the transfer set (or shard)
  // in batches; an estimate from --train_range is exact for source=local.
  int64_t examples = 60000;
  if (auto range = distillery::ParseRange(config.transfer_range, 1 << 30);
      range.ok() && !config.transfer_range.empty()) {
    examples = range->second - range->first;
  }
  if (config.source == "teacher") examples /= std::max<uint32_t>(1, config.num_shards);
  distillery::ApplyEpochFlags(
      (examples + config.trainer.batch_size - 1) / std::max<int64_t>(1, config.trainer.batch_size),
      &config.trainer);
  distillery::SetComputeThreads(distillery::ThreadsFromFlags());
  if (absl::Status s = distillery::RunDistillation(config); !s.ok()) {
    spdlog::error("distillation failed: {}", s.ToString());
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(kUsage);
  distillery::SetTrainingFlagDefaults(StudentRecipe());
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() < 2) {
    spdlog::error("no command given\n{}", kUsage);
    return 2;
  }
  const std::string command = args[1];
  if (command == "baseline") return distillery::RunTrainingFromFlags("student");
  if (command == "distill") return Distill();
  spdlog::error("unknown command \"{}\"\n{}", command, kUsage);
  return 2;
}
