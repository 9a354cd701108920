#include "student_trainer/distill.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/data/dataset.h"
#include "common/formats/checkpoint.h"
#include "common/formats/contract.h"
#include "common/util/status_macros.h"
#include "spdlog/spdlog.h"
#include "student_trainer/remote_sources.h"

namespace distillery {

absl::Status RunDistillation(const DistillConfig& config) {
  const auto start = std::chrono::steady_clock::now();
  ASSIGN_OR_RETURN(MlpSpec spec, MlpSpec::Parse(config.trainer.architecture));
  ASSIGN_OR_RETURN(std::unique_ptr<TeacherClient> client, TeacherClient::Connect(config.teacher));
  const distill::v1::ModelInfo& info = client->info();
  spdlog::info("teacher {} ({}) at {}: {}x{} inputs, {} classes, transfer set of {}",
               info.teacher_hash(), info.architecture(), config.teacher.target, info.image_rows(),
               info.image_cols(), info.num_classes(), info.transfer_set_size());
  if (client->input_size() != spec.layer_sizes.front()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the teacher takes ", info.image_rows(), "x", info.image_cols(), " = ",
                     client->input_size(), " inputs; the student ", spec.ArchitectureString(),
                     " takes ", spec.layer_sizes.front()));
  }
  if (info.num_classes() != spec.layer_sizes.back()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the teacher has ", info.num_classes(), " classes; the student ",
                     spec.ArchitectureString(), " has ", spec.layer_sizes.back()));
  }
  ASSIGN_OR_RETURN(MnistFormatData data, LoadMnistFormatDirectory(config.data_dir));
  if (data.test.input_size() != client->input_size()) {
    return absl::FailedPreconditionError("the test images do not have the teacher's input shape");
  }

  absl::StatusOr<TrainingResult> result;
  TrainerConfig trainer = config.trainer;
  if (config.source == "local") {
    ASSIGN_OR_RETURN(auto range, ParseRange(config.transfer_range, data.train.num_examples));
    ASSIGN_OR_RETURN(Dataset transfer, SliceDataset(data.train, range.first, range.second));
    if (!config.exclude_classes.empty()) {
      ASSIGN_OR_RETURN(transfer, WithoutClasses(transfer, config.exclude_classes));
      spdlog::info("transfer set without classes {}: {} examples left",
                   absl::StrJoin(config.exclude_classes, ","), transfer.num_examples);
    }
    if (!config.use_labels) transfer = WithoutLabels(transfer);
    trainer.data_description = absl::StrCat("local transfer set ", DatasetFingerprint(transfer));
    spdlog::info("local transfer set: {} examples [{}, {}){}, jitter {} px, T={}",
                 transfer.num_examples, range.first, range.second,
                 config.use_labels ? " with labels" : ", no labels", config.trainer.max_shift,
                 config.trainer.distill_temperature);
    RemoteSoftTargets targets(client.get(), config.trainer.distill_temperature);
    LocalBatchSource source(transfer, config.trainer.batch_size, config.trainer.max_shift,
                            config.trainer.seed, &targets);
    result = Train(trainer, source, data.test);
  } else if (config.source == "teacher") {
    if (config.trainer.max_shift != 0) {
      return absl::InvalidArgumentError(
          "--jitter needs --source=local: the teacher's transfer set comes with targets for "
          "its own, unshifted images");
    }
    TransferStreamSource::Options options;
    options.seed = config.trainer.seed;
    options.shard_index = config.shard_index;
    options.num_shards = config.num_shards;
    options.batch_size = static_cast<uint32_t>(config.trainer.batch_size);
    options.temperature = config.trainer.distill_temperature;
    options.include_labels = config.use_labels;
    ASSIGN_OR_RETURN(std::unique_ptr<TransferStreamSource> source,
                     TransferStreamSource::Create(client.get(), options));
    spdlog::info("teacher-side transfer set: shard {} of {}, {} examples, T={}", config.shard_index,
                 config.num_shards, source->ExamplesPerEpoch(), config.trainer.distill_temperature);
    trainer.data_description =
        absl::StrCat("teacher transfer set ", info.contract().transfer_set().fingerprint(),
                     " shard ", config.shard_index, "/", config.num_shards);
    result = Train(trainer, *source, data.test);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown --source \"", config.source, "\" (local or teacher)"));
  }
  RETURN_IF_ERROR(result.status());
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  spdlog::info(
      "distilled student {} done: {} test errors out of {} ({:.2f}% accuracy), {} parameters, "
      "{:.0f} s, {} calls retried",
      spec.ArchitectureString(), result->final_evaluation.errors, result->final_evaluation.examples,
      100.0 * result->final_evaluation.accuracy, spec.ParameterCount(), seconds, client->retries());
  // The weights' fingerprint, to compare runs (an interrupted and resumed one
  // with an uninterrupted one) without their checkpoints.
  spdlog::info("final weights {}", WeightsFingerprint(*result->network));
  if (!config.trainer.checkpoint_path.empty()) {
    spdlog::info("checkpoint: {}", config.trainer.checkpoint_path);
  }
  return absl::OkStatus();
}

}  // namespace distillery
