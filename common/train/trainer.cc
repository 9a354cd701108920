#include "common/train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <optional>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/data/batches.h"
#include "common/formats/checkpoint.h"
#include "common/nn/losses.h"
#include "common/nn/softmax.h"
#include "common/train/progress.h"
#include "common/train/resume.h"
#include "common/train/weight_average.h"
#include "common/util/bounded_queue.h"
#include "common/util/random.h"
#include "common/util/status_macros.h"
#include "spdlog/spdlog.h"

namespace distillery {
namespace {

using Clock = std::chrono::steady_clock;

absl::Status ValidateConfig(const TrainerConfig& c) {
  if (c.epochs < 1) return absl::InvalidArgumentError("epochs must be at least 1");
  if (c.batch_size < 1 || c.batch_size > 65536) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch size must be in [1, 65536], got ", c.batch_size));
  }
  if (c.augmentation.max_shift < 0 || c.augmentation.max_shift > 8) {
    return absl::InvalidArgumentError(absl::StrCat(
        "jitter (max shift) must be in [0, 8] pixels, got ", c.augmentation.max_shift));
  }
  RETURN_IF_ERROR(ValidateElasticDistortion(c.augmentation.elastic));
  if (!(std::isfinite(c.schedule.base) && c.schedule.base > 0.f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("learning rate must be a finite number > 0, got ", c.schedule.base));
  }
  if (c.optimizer != "sgd" && c.optimizer != "adam") {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown optimizer \"", c.optimizer, "\" (sgd or adam)"));
  }
  for (float m : {c.sgd.momentum_start, c.sgd.momentum_end}) {
    if (!(m >= 0.f && m < 1.f)) {
      return absl::InvalidArgumentError(absl::StrCat("momentum must be in [0, 1), got ", m));
    }
  }
  if (c.sgd.max_norm < 0.f || c.adam.max_norm < 0.f) {
    return absl::InvalidArgumentError("max-norm must be >= 0");
  }
  RETURN_IF_ERROR(ValidateTemperature(c.temperature));
  RETURN_IF_ERROR(ValidateTemperature(c.distill_temperature));
  if (!(c.alpha >= 0.f && c.alpha <= 1.f)) {
    return absl::InvalidArgumentError(absl::StrCat("alpha must be in [0, 1], got ", c.alpha));
  }
  if (c.eval_every < 1) return absl::InvalidArgumentError("eval_every must be at least 1");
  if (c.average_last_epochs < 0 || c.average_last_epochs > c.epochs) {
    return absl::InvalidArgumentError(absl::StrCat("average_last_epochs must be in [0, epochs = ",
                                                   c.epochs, "], got ", c.average_last_epochs));
  }
  if (!(c.weight_decay >= 0.f && c.weight_decay < 1.f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("weight decay must be in [0, 1), got ", c.weight_decay));
  }
  return absl::OkStatus();
}

absl::Status AppendCsvRow(const std::string& path, const EpochMetrics& m, bool write_header) {
  std::ofstream out(path, write_header ? std::ios::trunc : std::ios::app);
  if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write metrics to ", path));
  if (write_header) {
    out << "epoch,train_loss,learning_rate,examples_per_second,epoch_seconds,test_errors,"
           "test_examples,validation_errors,validation_examples\n";
  }
  out << absl::StrFormat("%d,%.6f,%.6g,%.1f,%.3f,%d,%d,%d,%d\n", m.epoch, m.train_loss,
                         m.learning_rate, m.examples_per_second, m.epoch_seconds, m.test_errors,
                         m.test_examples, m.validation_errors, m.validation_examples);
  out.flush();
  if (!out) return absl::DataLossError(absl::StrCat("writing metrics to ", path, " failed"));
  return absl::OkStatus();
}

std::string ErrorsText(int64_t errors, int64_t examples) {
  return errors < 0 ? std::string("-") : absl::StrCat(errors, "/", examples);
}

// One run of Train: the network, its optimizer and where training stands.
class TrainingRun {
 public:
  TrainingRun(const TrainerConfig& config, BatchSource& source, const Dataset& test,
              const Dataset& validation)
      : config_(config),
        source_(source),
        test_(test),
        validation_(validation),
        progress_(config.log_progress && config.progress_line, stdout) {}

  absl::StatusOr<TrainingResult> Run();

 private:
  absl::Status Setup();
  absl::Status Resume();
  // Resolves the precision (the checkpoint's when `resumed` is not null),
  // logs it and sets it on the network.
  absl::Status ApplyPrecision(const distill::v1::Checkpoint* resumed);
  absl::Status RunEpoch(int64_t epoch, EpochMetrics* metrics);
  absl::Status TrainStep(TrainingBatch& batch, int64_t epoch, double* loss);
  absl::Status FinishEpoch(int64_t epoch, EpochMetrics& metrics);
  absl::Status SaveBestCheckpoint(const EpochMetrics& metrics);
  // Adds the weights to the average in the last average_last_epochs
  // epochs, and after the last one makes the mean the network's weights.
  absl::Status AverageWeights(int64_t epoch);

  const TrainerConfig& config_;
  BatchSource& source_;
  const Dataset& test_;
  const Dataset& validation_;
  TrainingResult result_;
  NetworkSpec spec_;
  TrainingSettings settings_;
  LearningRateSchedule schedule_;
  std::unique_ptr<Optimizer> optimizer_;
  std::vector<Parameter*> params_;
  WeightAverage average_;
  Precision precision_ = Precision::kF32;
  int64_t batches_per_epoch_ = 0;
  int64_t total_steps_ = 0;
  int64_t start_epoch_ = 0;
  int64_t step_ = 0;
  float learning_rate_ = 0;
  CrossEntropyLoss cross_entropy_;
  DistillationLoss distillation_;
  Tensor grad_logits_;
  ProgressLine progress_;
  RunClock clock_;  // epoch times, evaluation included, for the time left
  Clock::time_point epoch_start_;
};

absl::Status TrainingRun::Setup() {
  RETURN_IF_ERROR(ValidateConfig(config_));
  if (source_.ExamplesPerEpoch() < 1)
    return absl::InvalidArgumentError("the training set is empty");
  ASSIGN_OR_RETURN(spec_, NetworkSpec::Parse(config_.architecture, source_.example_shape(),
                                             config_.input_dropout, config_.hidden_dropout));
  for (const Dataset* eval : {&test_, &validation_}) {
    if (eval->num_examples > 0 && eval->example_shape() != source_.example_shape()) {
      return absl::InvalidArgumentError(
          absl::StrCat("evaluation images are ", ShapeString(eval->example_shape()),
                       " but training images are ", ShapeString(source_.example_shape())));
    }
  }
  batches_per_epoch_ = source_.BatchesPerEpoch();
  total_steps_ = batches_per_epoch_ * config_.epochs;
  settings_ = DescribeTrainingSettings(config_, source_.ExamplesPerEpoch(), batches_per_epoch_);
  schedule_ = config_.schedule;
  SgdConfig sgd = config_.sgd;
  AdamConfig adam = config_.adam;
  sgd.weight_decay = adam.weight_decay = config_.weight_decay;
  if (config_.warmup_epochs > 0) {
    schedule_.warmup_steps = std::llround(config_.warmup_epochs * batches_per_epoch_);
  }
  if (config_.momentum_ramp_epochs > 0) {
    sgd.momentum_ramp_steps = std::llround(config_.momentum_ramp_epochs * batches_per_epoch_);
  }
  ASSIGN_OR_RETURN(result_.network, Network::Create(spec_, config_.seed));
  if (config_.average_last_epochs > 0 && !result_.network->Buffers().empty()) {
    return absl::InvalidArgumentError(
        "weight averaging (average_last_epochs) needs a network without batch norm: the "
        "running statistics belong to the weights they were measured with, not to their mean");
  }
  optimizer_ = config_.optimizer == "adam" ? MakeAdam(adam) : MakeSgd(sgd);
  if (config_.resume && !config_.checkpoint_path.empty() &&
      std::ifstream(config_.checkpoint_path).good()) {
    RETURN_IF_ERROR(Resume());
  } else {
    RETURN_IF_ERROR(ApplyPrecision(nullptr));
  }
  params_ = result_.network->Parameters();
  return absl::OkStatus();
}

absl::Status TrainingRun::Resume() {
  ASSIGN_OR_RETURN(distill::v1::Checkpoint checkpoint, LoadCheckpoint(config_.checkpoint_path));
  ASSIGN_OR_RETURN(std::unique_ptr<Network> restored,
                   NetworkFromCheckpoint(checkpoint, config_.seed));
  Network& network = *result_.network;
  if (restored->spec().ArchitectureString() != spec_.ArchitectureString() ||
      restored->input_shape() != network.input_shape()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot resume: ", config_.checkpoint_path, " holds ",
        restored->spec().ArchitectureString(), " on ", ShapeString(restored->input_shape()),
        ", not ", spec_.ArchitectureString(), " on ", ShapeString(network.input_shape())));
  }
  RETURN_IF_ERROR(
      CheckResume(checkpoint, config_.checkpoint_path, settings_, config_.resume_allow_changes));
  RETURN_IF_ERROR(ApplyPrecision(&checkpoint));
  std::vector<Parameter*> from = restored->Parameters(), to = network.Parameters();
  for (size_t i = 0; i < to.size(); ++i) to[i]->value = from[i]->value;
  std::vector<Buffer> from_b = restored->Buffers(), to_b = network.Buffers();
  for (size_t i = 0; i < to_b.size(); ++i) *to_b[i].value = *from_b[i].value;
  RETURN_IF_ERROR(RestoreOptimizerState(checkpoint, network, optimizer_.get()));
  start_epoch_ = checkpoint.training_state().epochs_completed();
  std::vector<Tensor> means;
  int64_t averaged = 0;
  RETURN_IF_ERROR(RestoreAveragedParameters(checkpoint, network, &means, &averaged));
  const int64_t expected =
      config_.average_last_epochs == 0
          ? 0
          : std::max<int64_t>(0, start_epoch_ - (config_.epochs - config_.average_last_epochs));
  if (averaged != expected) {
    return absl::DataLossError(absl::StrCat(
        "cannot resume from ", config_.checkpoint_path, ": it holds a weight average of ", averaged,
        " epochs, a run averaging the last ", config_.average_last_epochs, " of ", config_.epochs,
        " needs one of ", expected, " after epoch ", start_epoch_));
  }
  average_.Reset(std::move(means), averaged);
  step_ = checkpoint.training_state().steps_completed();
  RETURN_IF_ERROR(TrimMetricsCsv(config_.metrics_csv_path, start_epoch_));
  if (config_.log_progress) {
    spdlog::info("resuming from {} after epoch {} (step {})", config_.checkpoint_path, start_epoch_,
                 step_);
  }
  return absl::OkStatus();
}

absl::Status TrainingRun::ApplyPrecision(const distill::v1::Checkpoint* resumed) {
  std::string why;
  ASSIGN_OR_RETURN(
      precision_,
      resumed == nullptr
          ? ResolvePrecision(config_.precision, PrecisionUse::kTraining, &why)
          : ResumePrecision(*resumed, config_.checkpoint_path, config_.precision, &why));
  result_.network->SetPrecision(precision_);
  if (config_.log_progress) spdlog::info("precision {} ({})", PrecisionName(precision_), why);
  return absl::OkStatus();
}

absl::Status TrainingRun::TrainStep(TrainingBatch& batch, int64_t epoch, double* loss) {
  Network& network = *result_.network;
  const Tensor* logits = nullptr;
  RETURN_IF_ERROR(
      network.Forward(batch.inputs, /*training=*/true, static_cast<uint64_t>(step_), &logits));
  if (batch.soft_targets.size() == 0) {
    if (batch.labels.empty()) {
      return absl::InvalidArgumentError("a batch has neither labels nor soft targets");
    }
    ASSIGN_OR_RETURN(
        *loss, cross_entropy_.Compute(*logits, batch.labels, config_.temperature, &grad_logits_));
  } else {
    ASSIGN_OR_RETURN(
        DistillationLoss::Terms terms,
        distillation_.Compute(*logits, batch.soft_targets, batch.labels,
                              config_.distill_temperature, config_.alpha, &grad_logits_));
    *loss = terms.total;
  }
  if (!std::isfinite(*loss)) {
    return absl::AbortedError(absl::StrCat(
        "training diverged: the loss is ", *loss, " at epoch ", epoch + 1, ", step ", step_,
        " (learning rate ", learning_rate_, "); try a lower learning rate or a warm-up"));
  }
  RETURN_IF_ERROR(network.Backward(grad_logits_));
  learning_rate_ = schedule_.At(step_, total_steps_, batches_per_epoch_);
  optimizer_->Step(params_, learning_rate_, step_);
  ++step_;
  return absl::OkStatus();
}

absl::Status TrainingRun::RunEpoch(int64_t epoch, EpochMetrics* metrics) {
  const auto epoch_start = Clock::now();
  epoch_start_ = epoch_start;
  double loss_sum = 0;
  int64_t batches_done = 0;
  absl::Status train_status, produce_status;
  progress_.StartEpoch(epoch, config_.epochs, batches_per_epoch_, config_.batch_size);
  auto train = [&](TrainingBatch& batch) {
    double loss = 0;
    train_status = TrainStep(batch, epoch, &loss);
    loss_sum += loss;
    ++batches_done;
    progress_.BatchDone(batches_done);
    return train_status.ok();
  };
  if (config_.prefetch_batches > 0) {
    BoundedQueue<TrainingBatch> queue(static_cast<size_t>(config_.prefetch_batches));
    std::thread producer([&] {
      produce_status = source_.ProduceEpoch(
          epoch, [&queue](TrainingBatch&& batch) { return queue.Push(std::move(batch)); });
      queue.Close();
    });
    while (std::optional<TrainingBatch> batch = queue.Pop()) {
      if (!train(*batch)) break;
    }
    queue.Close();  // unblocks the producer if training stopped early
    producer.join();
  } else {
    produce_status =
        source_.ProduceEpoch(epoch, [&](TrainingBatch&& batch) { return train(batch); });
  }
  progress_.Clear();
  RETURN_IF_ERROR(train_status);
  RETURN_IF_ERROR(produce_status);
  if (batches_done != batches_per_epoch_) {
    return absl::DataLossError(absl::StrCat("epoch ", epoch + 1, " delivered ", batches_done,
                                            " batches instead of ", batches_per_epoch_));
  }
  metrics->epoch = epoch + 1;
  metrics->train_loss = loss_sum / static_cast<double>(batches_per_epoch_);
  metrics->learning_rate = learning_rate_;
  metrics->epoch_seconds = std::chrono::duration<double>(Clock::now() - epoch_start).count();
  metrics->examples_per_second =
      static_cast<double>(source_.ExamplesPerEpoch()) / metrics->epoch_seconds;
  return absl::OkStatus();
}

absl::Status TrainingRun::SaveBestCheckpoint(const EpochMetrics& metrics) {
  if (metrics.validation_errors < 0) return absl::OkStatus();
  if (result_.best_validation_errors >= 0 &&
      metrics.validation_errors >= result_.best_validation_errors) {
    return absl::OkStatus();
  }
  result_.best_validation_errors = metrics.validation_errors;
  result_.best_validation_epoch = metrics.epoch;
  if (config_.best_checkpoint_path.empty()) return absl::OkStatus();
  distill::v1::Checkpoint best = MakeCheckpoint(*result_.network, config_.role);
  (*best.mutable_metadata())["epoch"] = absl::StrCat(metrics.epoch);
  (*best.mutable_metadata())["validation_errors"] = absl::StrCat(metrics.validation_errors);
  (*best.mutable_metadata())["validation_examples"] = absl::StrCat(metrics.validation_examples);
  (*best.mutable_metadata())["precision"] = PrecisionName(precision_);
  return SaveCheckpoint(config_.best_checkpoint_path, best);
}

absl::Status TrainingRun::AverageWeights(int64_t epoch) {
  const int64_t k = config_.average_last_epochs;
  if (k == 0 || epoch < config_.epochs - k) return absl::OkStatus();
  RETURN_IF_ERROR(average_.Add(params_));
  if (epoch + 1 < config_.epochs) return absl::OkStatus();
  std::string own;  // the last epoch's own weights, for the log (never chosen by)
  if (config_.log_progress && test_.num_examples > 0) {
    ASSIGN_OR_RETURN(EvaluationResult eval, Evaluate(*result_.network, test_));
    own = absl::StrCat("; the last epoch's own weights: test errors ",
                       ErrorsText(eval.errors, eval.examples));
  }
  // Parameters() tells the layers that their weights change (bf16 copies).
  RETURN_IF_ERROR(average_.CopyTo(result_.network->Parameters()));
  if (config_.log_progress) {
    spdlog::info("weights: the mean of those after epochs {} to {} (average_last_epochs {}){}",
                 config_.epochs - k + 1, config_.epochs, k, own);
  }
  return absl::OkStatus();
}

absl::Status TrainingRun::FinishEpoch(int64_t epoch, EpochMetrics& metrics) {
  Network& network = *result_.network;
  const bool last = epoch + 1 == config_.epochs;
  RETURN_IF_ERROR(AverageWeights(epoch));
  if (last || (epoch + 1) % config_.eval_every == 0) {
    if (test_.num_examples > 0) {
      ASSIGN_OR_RETURN(EvaluationResult eval, Evaluate(network, test_));
      metrics.test_errors = eval.errors;
      metrics.test_examples = eval.examples;
      if (last) result_.final_evaluation = eval;
    }
    if (validation_.num_examples > 0) {
      ASSIGN_OR_RETURN(EvaluationResult eval, Evaluate(network, validation_));
      metrics.validation_errors = eval.errors;
      metrics.validation_examples = eval.examples;
    }
  }
  clock_.EpochDone(std::chrono::duration<double>(Clock::now() - epoch_start_).count());
  if (config_.log_progress) {
    spdlog::info(
        "epoch {:>4}/{}  loss {:.4f}  lr {:.4g}  {:.0f} examples/s  test errors {}{}  left {}",
        metrics.epoch, config_.epochs, metrics.train_loss, metrics.learning_rate,
        metrics.examples_per_second, ErrorsText(metrics.test_errors, metrics.test_examples),
        validation_.num_examples > 0
            ? absl::StrCat("  validation errors ",
                           ErrorsText(metrics.validation_errors, metrics.validation_examples))
            : "",
        FormatDuration(clock_.SecondsLeft(config_.epochs - metrics.epoch)));
  }
  RETURN_IF_ERROR(SaveBestCheckpoint(metrics));
  if (!config_.checkpoint_path.empty()) {
    distill::v1::Checkpoint checkpoint =
        MakeCheckpoint(network, config_.role, optimizer_.get(), epoch + 1, step_, config_.seed);
    (*checkpoint.mutable_metadata())["test_errors"] = absl::StrCat(metrics.test_errors);
    SetAveragedParameters(network, average_.means(), average_.count(), &checkpoint);
    RecordTrainingSettings(settings_, precision_, &checkpoint);
    RETURN_IF_ERROR(SaveCheckpoint(config_.checkpoint_path, checkpoint));
  }
  if (!config_.metrics_csv_path.empty()) {
    RETURN_IF_ERROR(AppendCsvRow(config_.metrics_csv_path, metrics,
                                 /*write_header=*/epoch == start_epoch_ && start_epoch_ == 0));
  }
  result_.history.push_back(metrics);
  return absl::OkStatus();
}

absl::StatusOr<TrainingResult> TrainingRun::Run() {
  RETURN_IF_ERROR(Setup());
  Network& network = *result_.network;
  if (config_.log_progress) {
    spdlog::info("training {} ({} parameters) on {} examples of {} for {} epochs, batch {}, {}, {}",
                 spec_.ArchitectureString(), network.ParameterCount(), source_.ExamplesPerEpoch(),
                 ShapeString(source_.example_shape()), config_.epochs, config_.batch_size,
                 optimizer_->Describe(), DescribeAugmentation(config_.augmentation));
  }
  for (int64_t epoch = start_epoch_; epoch < config_.epochs; ++epoch) {
    EpochMetrics metrics;
    RETURN_IF_ERROR(RunEpoch(epoch, &metrics));
    RETURN_IF_ERROR(FinishEpoch(epoch, metrics));
  }
  if (start_epoch_ >= config_.epochs && test_.num_examples > 0) {
    ASSIGN_OR_RETURN(result_.final_evaluation, Evaluate(network, test_));
  }
  return std::move(result_);
}

}  // namespace

LocalBatchSource::LocalBatchSource(const Dataset& data, int64_t batch_size,
                                   const Augmentation& augmentation, uint64_t seed,
                                   SoftTargetSource* soft_targets)
    : data_(data),
      batch_size_(batch_size),
      augmentation_(augmentation),
      seed_(seed),
      soft_targets_(soft_targets) {}

int64_t LocalBatchSource::BatchesPerEpoch() const {
  return (data_.num_examples + batch_size_ - 1) / batch_size_;
}

absl::Status LocalBatchSource::ProduceEpoch(int64_t epoch,
                                            const std::function<bool(TrainingBatch&&)>& sink) {
  const int64_t n = data_.num_examples;
  const std::vector<int64_t> order = ShuffledIndices(n, seed_, epoch);
  std::mt19937_64 jitter_rng(HashCombine(seed_, 0x4A17 + epoch));
  for (int64_t b = 0; b < BatchesPerEpoch(); ++b) {
    const int64_t begin = b * batch_size_;
    const int64_t end = std::min(n, begin + batch_size_);
    TrainingBatch batch;
    batch.ids.assign(order.begin() + begin, order.begin() + end);
    GatherBatch(data_, batch.ids, augmentation_, &jitter_rng, &batch.inputs,
                data_.has_labels() ? &batch.labels : nullptr);
    if (soft_targets_ != nullptr) {
      RETURN_IF_ERROR(
          soft_targets_->GetSoftTargets(epoch, b, batch.ids, batch.inputs, &batch.soft_targets));
    }
    if (!sink(std::move(batch))) break;
  }
  return absl::OkStatus();
}

absl::StatusOr<TrainingResult> Train(const TrainerConfig& config, const Dataset& train,
                                     const Dataset& test, SoftTargetSource* soft_targets,
                                     const Dataset& validation) {
  if (soft_targets == nullptr && !train.has_labels()) {
    return absl::InvalidArgumentError(
        "the training set has no labels and no teacher supplies soft targets");
  }
  if (train.num_examples < 1) return absl::InvalidArgumentError("the training set is empty");
  if (config.batch_size < 1) return absl::InvalidArgumentError("batch size must be at least 1");
  LocalBatchSource source(train, config.batch_size, config.augmentation, config.seed, soft_targets);
  return Train(config, source, test, validation);
}

absl::StatusOr<TrainingResult> Train(const TrainerConfig& config, BatchSource& source,
                                     const Dataset& test, const Dataset& validation) {
  if (!config.best_checkpoint_path.empty() && validation.num_examples == 0) {
    return absl::InvalidArgumentError(
        "a best checkpoint is chosen by validation errors: give a validation set "
        "(--validation_range) or no --best_checkpoint");
  }
  return TrainingRun(config, source, test, validation).Run();
}

InProcessTeacher::InProcessTeacher(Network* teacher, float temperature)
    : teacher_(teacher), temperature_(temperature) {}

absl::Status InProcessTeacher::GetSoftTargets(int64_t /*epoch*/, int64_t /*batch*/,
                                              absl::Span<const int64_t> /*ids*/,
                                              const Tensor& inputs, Tensor* soft_targets) {
  const Tensor* logits = nullptr;
  RETURN_IF_ERROR(teacher_->Predict(inputs, &logits));
  return softmax_.Compute(*logits, temperature_, soft_targets);
}

}  // namespace distillery
