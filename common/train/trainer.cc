#include "common/train/trainer.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <optional>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/formats/checkpoint.h"
#include "common/nn/losses.h"
#include "common/nn/softmax.h"
#include "common/train/resume.h"
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
  if (c.max_shift < 0 || c.max_shift > 8) {
    return absl::InvalidArgumentError(
        absl::StrCat("jitter (max shift) must be in [0, 8] pixels, got ", c.max_shift));
  }
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
  return absl::OkStatus();
}

absl::Status AppendCsvRow(const std::string& path, const EpochMetrics& m, bool write_header) {
  std::ofstream out(path, write_header ? std::ios::trunc : std::ios::app);
  if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write metrics to ", path));
  if (write_header) {
    out << "epoch,train_loss,learning_rate,examples_per_second,epoch_seconds,test_errors,"
           "test_examples\n";
  }
  out << absl::StrFormat("%d,%.6f,%.6g,%.1f,%.3f,%d,%d\n", m.epoch, m.train_loss, m.learning_rate,
                         m.examples_per_second, m.epoch_seconds, m.test_errors, m.test_examples);
  out.flush();
  if (!out) return absl::DataLossError(absl::StrCat("writing metrics to ", path, " failed"));
  return absl::OkStatus();
}

}  // namespace

LocalBatchSource::LocalBatchSource(const Dataset& data, int64_t batch_size, int max_shift,
                                   uint64_t seed, SoftTargetSource* soft_targets)
    : data_(data),
      batch_size_(batch_size),
      max_shift_(max_shift),
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
    GatherBatch(data_, batch.ids, max_shift_, &jitter_rng, &batch.inputs,
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
                                     const Dataset& test, SoftTargetSource* soft_targets) {
  if (soft_targets == nullptr && !train.has_labels()) {
    return absl::InvalidArgumentError(
        "the training set has no labels and no teacher supplies soft targets");
  }
  if (train.num_examples < 1) return absl::InvalidArgumentError("the training set is empty");
  if (config.batch_size < 1) return absl::InvalidArgumentError("batch size must be at least 1");
  LocalBatchSource source(train, config.batch_size, config.max_shift, config.seed, soft_targets);
  return Train(config, source, test);
}

absl::StatusOr<TrainingResult> Train(const TrainerConfig& config, BatchSource& source,
                                     const Dataset& test) {
  RETURN_IF_ERROR(ValidateConfig(config));
  ASSIGN_OR_RETURN(MlpSpec spec, MlpSpec::Parse(config.architecture));
  spec.input_dropout = config.input_dropout;
  spec.hidden_dropout = config.hidden_dropout;
  RETURN_IF_ERROR(spec.Validate());
  if (source.ExamplesPerEpoch() < 1) return absl::InvalidArgumentError("the training set is empty");
  if (source.input_size() != spec.layer_sizes.front()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "architecture ", spec.ArchitectureString(), " takes ", spec.layer_sizes.front(),
        " inputs but the training images have ", source.input_size(), " pixels"));
  }
  if (test.num_examples > 0 && test.input_size() != source.input_size()) {
    return absl::InvalidArgumentError("test images and training images differ in size");
  }

  const int64_t n = source.ExamplesPerEpoch();
  const int64_t batches_per_epoch = source.BatchesPerEpoch();
  const int64_t total_steps = batches_per_epoch * config.epochs;
  LearningRateSchedule schedule = config.schedule;
  SgdConfig sgd = config.sgd;
  if (config.warmup_epochs > 0) {
    schedule.warmup_steps = std::llround(config.warmup_epochs * batches_per_epoch);
  }
  if (config.momentum_ramp_epochs > 0) {
    sgd.momentum_ramp_steps = std::llround(config.momentum_ramp_epochs * batches_per_epoch);
  }

  const TrainingSettings settings = DescribeTrainingSettings(config, n, batches_per_epoch);

  TrainingResult result;
  ASSIGN_OR_RETURN(result.network, Mlp::Create(spec, config.seed));
  Mlp& mlp = *result.network;
  std::unique_ptr<Optimizer> optimizer =
      config.optimizer == "adam" ? MakeAdam(config.adam) : MakeSgd(sgd);

  int64_t start_epoch = 0;
  int64_t step = 0;
  if (config.resume && !config.checkpoint_path.empty() &&
      std::ifstream(config.checkpoint_path).good()) {
    ASSIGN_OR_RETURN(distill::v1::Checkpoint checkpoint, LoadCheckpoint(config.checkpoint_path));
    ASSIGN_OR_RETURN(std::unique_ptr<Mlp> restored, MlpFromCheckpoint(checkpoint, config.seed));
    if (restored->spec().layer_sizes != spec.layer_sizes) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot resume: ", config.checkpoint_path, " holds ",
                       restored->spec().ArchitectureString(), ", not ", spec.ArchitectureString()));
    }
    RETURN_IF_ERROR(
        CheckResume(checkpoint, config.checkpoint_path, settings, config.resume_allow_changes));
    std::vector<Parameter*> from = restored->Parameters(), to = mlp.Parameters();
    for (size_t i = 0; i < to.size(); ++i) to[i]->value = from[i]->value;
    RETURN_IF_ERROR(RestoreOptimizerState(checkpoint, mlp, optimizer.get()));
    start_epoch = checkpoint.training_state().epochs_completed();
    step = checkpoint.training_state().steps_completed();
    RETURN_IF_ERROR(TrimMetricsCsv(config.metrics_csv_path, start_epoch));
    if (config.log_progress) {
      spdlog::info("resuming from {} after epoch {} (step {})", config.checkpoint_path, start_epoch,
                   step);
    }
  }

  std::vector<Parameter*> params = mlp.Parameters();
  CrossEntropyLoss cross_entropy;
  DistillationLoss distillation;
  Tensor grad_logits;
  const bool write_csv = !config.metrics_csv_path.empty();

  if (config.log_progress) {
    spdlog::info("training {} ({} parameters) on {} examples for {} epochs, batch {}, {}",
                 spec.ArchitectureString(), spec.ParameterCount(), n, config.epochs,
                 config.batch_size, optimizer->Describe());
  }
  for (int64_t epoch = start_epoch; epoch < config.epochs; ++epoch) {
    const auto epoch_start = Clock::now();
    double loss_sum = 0;
    float learning_rate = 0;
    int64_t batches_done = 0;
    // One update on one batch.
    auto train_step = [&](TrainingBatch& batch) -> absl::Status {
      const Tensor* logits = nullptr;
      RETURN_IF_ERROR(
          mlp.Forward(batch.inputs, /*training=*/true, static_cast<uint64_t>(step), &logits));
      double loss = 0;
      if (batch.soft_targets.size() == 0) {
        if (batch.labels.empty()) {
          return absl::InvalidArgumentError("a batch has neither labels nor soft targets");
        }
        ASSIGN_OR_RETURN(
            loss, cross_entropy.Compute(*logits, batch.labels, config.temperature, &grad_logits));
      } else {
        ASSIGN_OR_RETURN(
            DistillationLoss::Terms terms,
            distillation.Compute(*logits, batch.soft_targets, batch.labels,
                                 config.distill_temperature, config.alpha, &grad_logits));
        loss = terms.total;
      }
      if (!std::isfinite(loss)) {
        return absl::AbortedError(absl::StrCat(
            "training diverged: the loss is ", loss, " at epoch ", epoch + 1, ", step ", step,
            " (learning rate ", learning_rate, "); try a lower learning rate or a warm-up"));
      }
      loss_sum += loss;
      RETURN_IF_ERROR(mlp.Backward(grad_logits));
      learning_rate = schedule.At(step, total_steps, batches_per_epoch);
      optimizer->Step(params, learning_rate, step);
      ++step;
      ++batches_done;
      return absl::OkStatus();
    };
    absl::Status train_status, produce_status;
    if (config.prefetch_batches > 0) {
      BoundedQueue<TrainingBatch> queue(static_cast<size_t>(config.prefetch_batches));
      std::thread producer([&] {
        produce_status = source.ProduceEpoch(
            epoch, [&queue](TrainingBatch&& batch) { return queue.Push(std::move(batch)); });
        queue.Close();
      });
      while (std::optional<TrainingBatch> batch = queue.Pop()) {
        train_status = train_step(*batch);
        if (!train_status.ok()) break;
      }
      queue.Close();  // unblocks the producer if training stopped early
      producer.join();
    } else {
      produce_status = source.ProduceEpoch(epoch, [&](TrainingBatch&& batch) {
        train_status = train_step(batch);
        return train_status.ok();
      });
    }
    RETURN_IF_ERROR(train_status);
    RETURN_IF_ERROR(produce_status);
    if (batches_done != batches_per_epoch) {
      return absl::DataLossError(absl::StrCat("epoch ", epoch + 1, " delivered ", batches_done,
                                              " batches instead of ", batches_per_epoch));
    }
    EpochMetrics metrics;
    metrics.epoch = epoch + 1;
    metrics.train_loss = loss_sum / static_cast<double>(batches_per_epoch);
    metrics.learning_rate = learning_rate;
    metrics.epoch_seconds = std::chrono::duration<double>(Clock::now() - epoch_start).count();
    metrics.examples_per_second = static_cast<double>(n) / metrics.epoch_seconds;
    const bool last = epoch + 1 == config.epochs;
    if (test.num_examples > 0 && (last || (epoch + 1) % config.eval_every == 0)) {
      ASSIGN_OR_RETURN(EvaluationResult eval, Evaluate(mlp, test));
      metrics.test_errors = eval.errors;
      metrics.test_examples = eval.examples;
      if (last) result.final_evaluation = eval;
    }
    if (config.log_progress) {
      spdlog::info("epoch {:>4}/{}  loss {:.4f}  lr {:.4g}  {:.0f} examples/s  test errors {}",
                   metrics.epoch, config.epochs, metrics.train_loss, metrics.learning_rate,
                   metrics.examples_per_second,
                   metrics.test_errors < 0
                       ? std::string("-")
                       : absl::StrCat(metrics.test_errors, "/", metrics.test_examples));
    }
    if (write_csv) {
      RETURN_IF_ERROR(AppendCsvRow(config.metrics_csv_path, metrics,
                                   /*write_header=*/epoch == start_epoch && start_epoch == 0));
    }
    if (!config.checkpoint_path.empty()) {
      distill::v1::Checkpoint checkpoint =
          MakeCheckpoint(mlp, config.role, source.image_rows(), source.image_cols(),
                         optimizer.get(), epoch + 1, step, config.seed);
      (*checkpoint.mutable_metadata())["test_errors"] = absl::StrCat(metrics.test_errors);
      RecordTrainingSettings(settings, &checkpoint);
      RETURN_IF_ERROR(SaveCheckpoint(config.checkpoint_path, checkpoint));
    }
    result.history.push_back(metrics);
  }
  if (start_epoch >= config.epochs && test.num_examples > 0) {
    ASSIGN_OR_RETURN(result.final_evaluation, Evaluate(mlp, test));
  }
  return result;
}

InProcessTeacher::InProcessTeacher(Mlp* teacher, float temperature)
    : teacher_(teacher), temperature_(temperature) {}

absl::Status InProcessTeacher::GetSoftTargets(int64_t /*epoch*/, int64_t /*batch*/,
                                              absl::Span<const int64_t> /*ids*/,
                                              const Tensor& inputs, Tensor* soft_targets) {
  const Tensor* logits = nullptr;
  RETURN_IF_ERROR(teacher_->Predict(inputs, &logits));
  return softmax_.Compute(*logits, temperature_, soft_targets);
}

}  // namespace distillery
