// The training loop shared by the teacher and the students: mini-batch SGD
// (or Adam) over a data set, with jitter, dropout and max-norm, evaluation on
// a test set after every epoch, a CSV of per-epoch metrics, and a checkpoint
// (with the optimizer's state) after every epoch for --resume.
//
// Targets are the hard labels (CrossEntropyLoss at `temperature`) or, when a
// SoftTargetSource is given, the teacher's soft targets (DistillationLoss).
// Everything random is keyed by the seed: the example order by
// (seed, epoch), jitter by (seed, epoch), dropout masks by (seed, step), so a
// resumed run ends with the same weights as an uninterrupted one.
#ifndef DISTILLERY_COMMON_TRAIN_TRAINER_H_
#define DISTILLERY_COMMON_TRAIN_TRAINER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/data/batches.h"
#include "common/data/dataset.h"
#include "common/nn/network.h"
#include "common/nn/optimizer.h"
#include "common/nn/softmax.h"
#include "common/tensor/precision.h"
#include "common/tensor/tensor.h"
#include "common/train/evaluation.h"

namespace distillery {

struct TrainerConfig {
  // Network, in the architecture syntax of common/nn/network_spec.h: the
  // MLP form "784-800-800-10" or a layer list such as
  // "conv5x5:32,pool2,conv5x5:64,pool2,fc:1024,fc:10". The input shape comes
  // from the data.
  std::string architecture = "784-800-800-10";
  // Dropout on the input units and after every hidden layer (0 = off).
  float input_dropout = 0.f;
  float hidden_dropout = 0.f;
  // How each drawn image is changed (common/data/batches.h): jitter, a
  // uniform integer shift in [-max_shift, max_shift] pixels in x and y, then
  // elastic distortion (common/data/distortion.h). Off by default.
  Augmentation augmentation;
  // Epochs over the training data and examples per update.
  int64_t epochs = 30;
  int64_t batch_size = 128;
  // "sgd" or "adam".
  std::string optimizer = "sgd";
  // Learning rate over time (per step). SGD's momentum and max-norm are in
  // `sgd`; Adam's betas in `adam`.
  LearningRateSchedule schedule;
  SgdConfig sgd;
  AdamConfig adam;
  // L2 weight decay of both optimizers (weights only; 0 = off). Copied into
  // sgd.weight_decay and adam.weight_decay.
  float weight_decay = 0.f;
  // The same warm-up and momentum ramp in epochs of the batch source; when
  // > 0 they replace schedule.warmup_steps and sgd.momentum_ramp_steps.
  double warmup_epochs = 0;
  double momentum_ramp_epochs = 0;
  // Hard-label training: cross-entropy of softmax(z / temperature).
  float temperature = 1.f;
  // Distillation (when a SoftTargetSource is given): the temperature of the
  // soft targets and the weight of the soft term; 1 - alpha weighs the hard
  // labels when the data has them.
  float distill_temperature = 20.f;
  float alpha = 0.9f;
  // Keys initialisation, example order, jitter, distortion and dropout.
  uint64_t seed = 1;
  // Evaluate on the test set every this many epochs (and after the last).
  int64_t eval_every = 1;
  // Outputs; empty = not written. The checkpoint is rewritten atomically
  // after every epoch; the CSV gets one row per epoch.
  std::string checkpoint_path;
  std::string metrics_csv_path;
  // With a validation set: the checkpoint of the epoch with the fewest
  // validation errors so far (the earliest on ties), for early stopping.
  // Chosen by the validation set only, never by the test set.
  std::string best_checkpoint_path;
  // "teacher" or "student", recorded in the checkpoint.
  std::string role = "student";
  // Continue from checkpoint_path if it exists. Every setting that shapes the
  // trajectory must equal the checkpoint's (common/train/resume.h) except
  // those named in resume_allow_changes.
  bool resume = false;
  std::vector<std::string> resume_allow_changes;
  // What the training data is (e.g. "train[0,5000)"), recorded in the
  // checkpoint and compared on resume like a setting ("data").
  std::string data_description;
  // Print a line per epoch (spdlog info), with the run's time left.
  bool log_progress = true;
  // Also a progress line within each epoch that rewrites itself on stdout
  // (common/train/progress.h). The programs set it when stdout is a
  // terminal; off a terminal logs get plain lines only.
  bool progress_line = false;
  // The arithmetic of the fully connected and convolution layers' products
  // (common/tensor/precision.h): kF32; kBF16, mixed precision (bf16 copies
  // of the weights and activations for the forward, backward-data and
  // backward-weights products; f32 master weights, gradients, optimizer
  // state, dropout, max-norm and update; refused without native bf16); or
  // kAuto (ResolvePrecision's rule for training: bf16 with AMX and on the
  // CPU families measured faster, else f32). Resolved and logged at the
  // start of training and recorded in the checkpoint; a resumed run keeps
  // the checkpoint's (common/train/resume.h). Other layers compute in f32;
  // evaluation during training runs in the run's precision.
  PrecisionChoice precision = PrecisionChoice::kF32;
  // Weight averaging (common/train/weight_average.h): the run's weights are
  // the mean of the weights at the end of each of its last
  // average_last_epochs epochs (0 = off: the last epoch's). The last epoch's
  // evaluation, the final evaluation and the checkpoint written after it are
  // of the mean. In [0, epochs]; networks with batch norm are refused.
  int64_t average_last_epochs = 0;
  // Batches prepared ahead of training (gathering, jitter and the teacher's
  // soft targets) by a producer thread, through a bounded queue, so that the
  // data and a remote teacher stay off the critical path. 0 = inline.
  int64_t prefetch_batches = 0;
};

// One row of the metrics CSV.
struct EpochMetrics {
  int64_t epoch = 0;               // 1-based
  double train_loss = 0;           // mean loss over the epoch's batches
  double learning_rate = 0;        // at the epoch's last step
  double examples_per_second = 0;  // training only, evaluation excluded
  double epoch_seconds = 0;
  int64_t test_errors = -1;  // -1 when not evaluated this epoch
  int64_t test_examples = 0;
  int64_t validation_errors = -1;  // -1 without a validation set
  int64_t validation_examples = 0;
};

// One batch, ready to train on.
struct TrainingBatch {
  std::vector<int64_t> ids;  // example ids in the source's data
  Tensor inputs;             // (rows, channels, image rows, image cols), pixels
                             // scaled to [0, 1]
  std::vector<int> labels;   // rows labels, or empty (unlabeled transfer set)
  Tensor soft_targets;       // rows x classes probabilities at the distillation
                             // temperature, or empty (hard-label training)
};

// Where training batches come from. A source gives the same batches for the
// same epoch every time it is asked (that is what makes --resume exact).
class BatchSource {
 public:
  virtual ~BatchSource() = default;
  // One example's shape, (channels, rows, cols).
  virtual Shape example_shape() const = 0;
  int64_t input_size() const { return ShapeSize(example_shape()); }
  virtual int64_t BatchesPerEpoch() const = 0;
  virtual int64_t ExamplesPerEpoch() const = 0;
  // Produces the batches of `epoch` (0-based) in order, handing each to
  // `sink`; stops early, returning OK, when `sink` returns false.
  virtual absl::Status ProduceEpoch(int64_t epoch,
                                    const std::function<bool(TrainingBatch&&)>& sink) = 0;
};

// Supplies the soft targets of the batch about to be trained on.
class SoftTargetSource {
 public:
  virtual ~SoftTargetSource() = default;
  // Fills `soft_targets` (ids.size() x classes; rows are probabilities at the
  // trainer's distill_temperature) for the training examples `ids`, whose
  // network inputs (jittered when jitter is on) are `inputs`. `epoch` and
  // `batch` (both 0-based) identify the batch within the deterministic plan.
  virtual absl::Status GetSoftTargets(int64_t epoch, int64_t batch, absl::Span<const int64_t> ids,
                                      const Tensor& inputs, Tensor* soft_targets) = 0;
};

struct TrainingResult {
  std::unique_ptr<Network> network;
  std::vector<EpochMetrics> history;  // this run's epochs (not resumed ones)
  EvaluationResult final_evaluation;  // on the test set, after the last epoch
  // The best validation epoch (1-based) and its errors; 0 and -1 without a
  // validation set.
  int64_t best_validation_epoch = 0;
  int64_t best_validation_errors = -1;
};

// The batches of a local data set: examples in the order of
// ShuffledIndices(n, seed, epoch), augmented (jitter, elastic distortion)
// with an RNG keyed by (seed, epoch), with soft targets from `soft_targets`
// when it is not null.
class LocalBatchSource : public BatchSource {
 public:
  // `data` and `soft_targets` are not owned and must outlive the source.
  LocalBatchSource(const Dataset& data, int64_t batch_size, const Augmentation& augmentation,
                   uint64_t seed, SoftTargetSource* soft_targets = nullptr);
  Shape example_shape() const override { return data_.example_shape(); }
  int64_t BatchesPerEpoch() const override;
  int64_t ExamplesPerEpoch() const override { return data_.num_examples; }
  absl::Status ProduceEpoch(int64_t epoch,
                            const std::function<bool(TrainingBatch&&)>& sink) override;

 private:
  const Dataset& data_;
  const int64_t batch_size_;
  const Augmentation augmentation_;
  const uint64_t seed_;
  SoftTargetSource* soft_targets_;
};

// Trains a network on the batches of `source` and evaluates it on `test`
// (which may be empty: no evaluation) and on `validation` (likewise) after
// every eval_every epochs. Batches with soft targets train with the
// DistillationLoss (their labels, when present, weigh 1 - alpha); batches
// without train on their labels with the CrossEntropyLoss.
absl::StatusOr<TrainingResult> Train(const TrainerConfig& config, BatchSource& source,
                                     const Dataset& test, const Dataset& validation = Dataset());

// Trains a network on `train` and evaluates it on `test` (which may be
// empty: no evaluation). Hard labels are required without a soft-target
// source. Errors: InvalidArgument for bad configuration or data that does not
// fit the architecture; Aborted when the loss stops being finite (the message
// says at which epoch and step and suggests a lower learning rate); any
// error of the soft-target source or of writing the outputs.
absl::StatusOr<TrainingResult> Train(const TrainerConfig& config, const Dataset& train,
                                     const Dataset& test, SoftTargetSource* soft_targets = nullptr,
                                     const Dataset& validation = Dataset());

// A SoftTargetSource that runs a teacher network in this process: the
// teacher's softmax(z / T) on exactly the inputs the student sees.
class InProcessTeacher : public SoftTargetSource {
 public:
  // `teacher` is not owned and must outlive this object.
  InProcessTeacher(Network* teacher, float temperature);
  absl::Status GetSoftTargets(int64_t epoch, int64_t batch, absl::Span<const int64_t> ids,
                              const Tensor& inputs, Tensor* soft_targets) override;

 private:
  Network* teacher_;
  float temperature_;
  TemperatureSoftmax softmax_;
};

}  // namespace distillery

#endif  // DISTILLERY_COMMON_TRAIN_TRAINER_H_
