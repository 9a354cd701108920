#include "student_trainer/distill.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/data/dataset.h"
#include "common/data/npz.h"
#include "common/formats/checkpoint.h"
#include "common/formats/contract.h"
#include "common/util/status_macros.h"
#include "spdlog/spdlog.h"
#include "student_trainer/remote_sources.h"

namespace distillery {

namespace {

// The student's network spec and parameter count, refused (FailedPrecondition)
// before any training when it does not fit the teacher's input shape or
// classes.
struct CheckedStudent {
  NetworkSpec spec;
  int64_t parameters = 0;
};
absl::StatusOr<CheckedStudent> CheckStudent(const DistillConfig& config,
                                            const TeacherClient& client) {
  const Shape teacher_shape = client.example_shape();
  absl::StatusOr<NetworkSpec> spec =
      NetworkSpec::Parse(config.trainer.architecture, teacher_shape, config.trainer.input_dropout,
                         config.trainer.hidden_dropout);
  if (!spec.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the student does not fit the teacher's inputs: ", spec.status().message()));
  }
  absl::StatusOr<std::unique_ptr<Network>> probe = Network::Create(*spec, config.trainer.seed);
  if (!probe.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the student does not fit the teacher's inputs ", ShapeString(teacher_shape),
                     ": ", probe.status().message()));
  }
  if (client.info().num_classes() != (*probe)->num_classes()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the teacher has ", client.info().num_classes(), " classes; the student ",
                     spec->ArchitectureString(), " has ", (*probe)->num_classes()));
  }
  return CheckedStudent{*spec, (*probe)->ParameterCount()};
}

// --source=local: the student's own slice of --data_dir, its soft targets
// asked of the teacher batch by batch.
absl::StatusOr<TrainingResult> TrainOnLocalTransferSet(const DistillConfig& config,
                                                       TeacherClient* client,
                                                       const MnistFormatData& data) {
  ASSIGN_OR_RETURN(auto range, ParseRange(config.transfer_range, data.train.num_examples));
  Dataset transfer, validation;
  if (config.validation_range.empty()) {
    ASSIGN_OR_RETURN(transfer, SliceDataset(data.train, range.first, range.second));
  } else {
    ASSIGN_OR_RETURN(auto held_out, ParseRange(config.validation_range, data.train.num_examples));
    absl::StatusOr<HeldOutSplit> split = SplitHeldOut(data.train, range, held_out);
    if (!split.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--validation_range=", config.validation_range,
                                                     ": ", split.status().message()));
    }
    transfer = std::move(split->train);
    validation = std::move(split->validation);
    spdlog::info("validation: examples [{}, {}) held out of the transfer set", held_out.first,
                 held_out.second);
  }
  if (!config.exclude_classes.empty()) {
    ASSIGN_OR_RETURN(transfer, WithoutClasses(transfer, config.exclude_classes));
    spdlog::info("transfer set without classes {}: {} examples left",
                 absl::StrJoin(config.exclude_classes, ","), transfer.num_examples);
  }
  if (!config.use_labels) transfer = WithoutLabels(transfer);
  TrainerConfig trainer = config.trainer;
  trainer.data_description = absl::StrCat("local transfer set ", DatasetFingerprint(transfer));
  spdlog::info("local transfer set: {} examples [{}, {}){}, {}, T={}", transfer.num_examples,
               range.first, range.second, config.use_labels ? " with labels" : ", no labels",
               DescribeAugmentation(trainer.augmentation), trainer.distill_temperature);
  RemoteSoftTargets targets(client, trainer.distill_temperature);
  LocalBatchSource source(transfer, trainer.batch_size, trainer.augmentation, trainer.seed,
                          &targets);
  return Train(trainer, source, data.test, validation);
}

// --source=teacher: this shard of the teacher's transfer set, streamed with
// its targets.
absl::StatusOr<TrainingResult> TrainOnTeacherTransferSet(const DistillConfig& config,
                                                         TeacherClient* client,
                                                         const MnistFormatData& data) {
  if (config.trainer.augmentation.max_shift != 0) {
    return absl::InvalidArgumentError(
        "--jitter needs --source=local: the teacher's transfer set comes with targets for "
        "its own, unshifted images");
  }
  if (config.trainer.augmentation.elastic.enabled()) {
    return absl::InvalidArgumentError(
        "--elastic_alpha needs --source=local: the teacher's transfer set comes with targets "
        "for its own, undistorted images");
  }
  if (!config.validation_range.empty()) {
    return absl::InvalidArgumentError(
        "--validation_range needs --source=local: it is held out of the local transfer set, "
        "and the teacher's transfer set may hold the same images");
  }
  TransferStreamSource::Options options;
  options.seed = config.trainer.seed;
  options.shard_index = config.shard_index;
  options.num_shards = config.num_shards;
  options.batch_size = static_cast<uint32_t>(config.trainer.batch_size);
  options.temperature = config.trainer.distill_temperature;
  options.include_labels = config.use_labels;
  ASSIGN_OR_RETURN(std::unique_ptr<TransferStreamSource> source,
                   TransferStreamSource::Create(client, options));
  spdlog::info("teacher-side transfer set: shard {} of {}, {} examples, T={}", config.shard_index,
               config.num_shards, source->ExamplesPerEpoch(), config.trainer.distill_temperature);
  TrainerConfig trainer = config.trainer;
  trainer.data_description =
      absl::StrCat("teacher transfer set ", client->info().contract().transfer_set().fingerprint(),
                   " shard ", config.shard_index, "/", config.num_shards);
  return Train(trainer, *source, data.test);
}

}  // namespace

absl::Status RunDistillation(const DistillConfig& config) {
  const auto start = std::chrono::steady_clock::now();
  ASSIGN_OR_RETURN(std::unique_ptr<TeacherClient> client, TeacherClient::Connect(config.teacher));
  const distill::v1::ModelInfo& info = client->info();
  const Shape teacher_shape = client->example_shape();
  spdlog::info("teacher {} ({}) at {}: {} inputs, {} classes, transfer set of {}",
               info.teacher_hash(), info.architecture(), config.teacher.target,
               ShapeString(teacher_shape), info.num_classes(), info.transfer_set_size());
  if (config.source != "local" && config.source != "teacher") {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown --source \"", config.source, "\" (local or teacher)"));
  }
  ASSIGN_OR_RETURN(const CheckedStudent student, CheckStudent(config, *client));
  ASSIGN_OR_RETURN(MnistFormatData data, LoadDataSource(config.data_dir));
  if (data.test.example_shape() != teacher_shape) {
    return absl::FailedPreconditionError(
        absl::StrCat("the test images are ", ShapeString(data.test.example_shape()),
                     "; the teacher takes ", ShapeString(teacher_shape)));
  }
  ASSIGN_OR_RETURN(const TrainingResult result,
                   config.source == "local"
                       ? TrainOnLocalTransferSet(config, client.get(), data)
                       : TrainOnTeacherTransferSet(config, client.get(), data));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  spdlog::info(
      "distilled student {} done: {} test errors out of {} ({:.2f}% accuracy), {} parameters, "
      "{:.0f} s, {} calls retried",
      student.spec.ArchitectureString(), result.final_evaluation.errors,
      result.final_evaluation.examples, 100.0 * result.final_evaluation.accuracy,
      student.parameters, seconds, client->retries());
  if (result.best_validation_epoch > 0) {
    spdlog::info("best validation epoch {}: {} errors{}", result.best_validation_epoch,
                 result.best_validation_errors,
                 config.trainer.best_checkpoint_path.empty()
                     ? ""
                     : absl::StrCat(", checkpoint ", config.trainer.best_checkpoint_path));
  }
  // The weights' fingerprint, to compare runs (an interrupted and resumed one
  // with an uninterrupted one) without their checkpoints.
  spdlog::info("final weights {}", WeightsFingerprint(*result.network));
  if (!config.trainer.checkpoint_path.empty()) {
    spdlog::info("checkpoint: {}", config.trainer.checkpoint_path);
  }
  return absl::OkStatus();
}

}  // namespace distillery
