#include "common/cli/training_flags.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>

#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/data/npz.h"
#include "common/formats/checkpoint.h"
#include "common/formats/contract.h"
#include "common/tensor/dnnl_context.h"
#include "common/util/status_macros.h"
#include "spdlog/spdlog.h"

ABSL_FLAG(std::string, data_dir, "/usr/share/datasets/fashion-mnist",
          "MNIST-format directory (train-images-idx3-ubyte[.gz] etc.); the default is Debian's "
          "dataset-fashion-mnist");
ABSL_FLAG(std::string, data, "",
          "A NumPy .npz archive with x_train, y_train, x_test and y_test (np.savez); when set "
          "it replaces --data_dir, which also accepts a directory of x_train.npy etc.");
ABSL_FLAG(std::string, train_range, "",
          "Training examples to use, as begin:end (end exclusive); empty = the whole training "
          "set. Splits the training set between the teacher and the transfer set.");
ABSL_FLAG(std::string, architecture, "784-800-800-10",
          "The network: units per layer, input first (\"784-800-800-10\"), or a list of "
          "layers such as \"conv5x5:32,pool2,conv5x5:64,pool2,fc:1024,fc:10\" (tokens: "
          "conv<R>x<C>:<channels>[/s<stride>][/p<pad>|/same][+bn][:relu|:none], "
          "fc:<units>[+bn][:relu|:none], maxpool<K>[/s<S>][/p<P>], avgpool<K>[...][/inclpad], "
          "bn, relu, dropout:<rate>, flatten; conv and fc are followed by relu except the last "
          "fc; the input shape comes from the data)");
ABSL_FLAG(double, input_dropout, 0.0, "Dropout rate on the input units");
ABSL_FLAG(double, hidden_dropout, 0.0, "Dropout rate after each hidden layer");
ABSL_FLAG(double, weight_decay, 0.0,
          "L2 weight decay of the weights (not biases or batch-norm terms), both optimizers");
ABSL_FLAG(std::string, validation_range, "",
          "begin:end of the training set held out for validation (evaluated every epoch "
          "beside the test set; empty = none); must lie within --train_range");
ABSL_FLAG(std::string, best_checkpoint, "",
          "With --validation_range: keep the checkpoint of the epoch with the fewest "
          "validation errors here (early stopping; never chosen by the test set)");
ABSL_FLAG(double, max_norm, 0.0, "Max L2 norm of each hidden unit's incoming weights (0 = off)");
ABSL_FLAG(int32_t, jitter, 0, "Shift each training image by up to this many pixels (0 = off)");
ABSL_FLAG(double, elastic_alpha, 0.0,
          "Elastic distortion of each training image after its jitter (Simard et al. 2003): "
          "the scale, in pixels, of a random displacement field smoothed by a Gaussian of "
          "--elastic_sigma pixels (0 = off; 34 with sigma 4 is the usual MNIST setting, "
          "displacements of about 1.4 pixels)");
ABSL_FLAG(double, elastic_sigma, 4.0,
          "Elastic distortion: standard deviation, in pixels, of the Gaussian that smooths "
          "the displacement field");
ABSL_FLAG(double, temperature, 1.0, "Training temperature T of the hard-label loss softmax(z/T)");
ABSL_FLAG(int64_t, epochs, 30, "Passes over the training data");
ABSL_FLAG(int64_t, batch_size, 128, "Examples per update");
ABSL_FLAG(std::string, optimizer, "sgd", "sgd or adam");
ABSL_FLAG(double, lr, 0.1, "Peak learning rate");
ABSL_FLAG(std::string, lr_schedule, "cosine", "constant, cosine or step");
ABSL_FLAG(double, lr_final_fraction, 0.0, "Cosine floor as a fraction of --lr");
ABSL_FLAG(double, warmup_epochs, 0.0, "Linear learning-rate warm-up, in epochs");
ABSL_FLAG(double, lr_step_gamma, 0.1, "Step schedule: factor per drop");
ABSL_FLAG(int64_t, lr_step_epochs, 30, "Step schedule: epochs between drops");
ABSL_FLAG(double, momentum_start, 0.9, "SGD momentum at step 0");
ABSL_FLAG(double, momentum_end, 0.9, "SGD momentum after the ramp");
ABSL_FLAG(double, momentum_ramp_epochs, 0.0, "Epochs over which momentum ramps linearly");
ABSL_FLAG(bool, dampened_momentum, false,
          "Dropout-paper SGD form d <- p d - (1-p) lr g instead of d <- p d - lr g");
ABSL_FLAG(uint64_t, seed, 1, "Seed for initialisation, data order, jitter and dropout");
ABSL_FLAG(int64_t, average_last_epochs, 0,
          "Weight averaging: the trained weights are the mean of those after each of the last N "
          "epochs (stochastic weight averaging; 0 = the last epoch's). Not with batch norm");
ABSL_FLAG(int64_t, eval_every, 1, "Evaluate on the test set every N epochs");
ABSL_FLAG(std::string, checkpoint, "", "Checkpoint path, rewritten atomically every epoch");
ABSL_FLAG(std::string, metrics_csv, "", "CSV of per-epoch metrics");
ABSL_FLAG(bool, resume, false,
          "Continue from --checkpoint if it exists. Refused when a setting that shapes the "
          "trajectory (architecture, seed, optimizer and its hyperparameters, batch size, "
          "dropout, jitter, elastic distortion, schedule, epochs, temperatures, alpha, the data) "
          "differs from the "
          "checkpoint's, unless named in --resume_allow_changes; another CPU ISA or thread "
          "count only warns (the bits will differ from an uninterrupted run's)");
ABSL_FLAG(std::vector<std::string>, resume_allow_changes, {},
          "With --resume: settings that may differ from the checkpoint's, by flag name, e.g. "
          "epochs,lr (also: warmup_steps, momentum_ramp_steps, examples_per_epoch, "
          "batches_per_epoch, data). The optimizer kind can never change");
ABSL_FLAG(int32_t, threads, 2, "Compute threads (set explicitly when processes share cores)");
ABSL_FLAG(std::string, progress, "auto",
          "Progress within each epoch: auto (a line that rewrites itself when stdout is a "
          "terminal, plain per-epoch lines otherwise), line, or plain");
ABSL_FLAG(std::string, precision, "auto",
          "The arithmetic of the fully connected and convolution layers' products, in "
          "training (teacher_server train, student_trainer baseline and distill) and serving "
          "(teacher_server serve): f32; bf16 (bf16 products with f32 accumulation; training "
          "keeps f32 master weights, gradients and optimizer state, and checkpoints hold the "
          "f32 weights; needs a CPU with native bf16); or auto (bf16 where oneDNN has AMX and "
          "on the CPU families measured faster in bf16: AMD Zen 4 and Zen 5; "
          "else f32; the choice is logged). Batch norm and pooling train in f32. A resumed run "
          "keeps its checkpoint's precision: auto takes it, another explicit one is refused");

namespace distillery {

void SetTrainingFlagDefaults(const TrainerConfig& d, double momentum_ramp_epochs) {
  absl::SetFlag(&FLAGS_momentum_ramp_epochs, momentum_ramp_epochs);
  absl::SetFlag(&FLAGS_architecture, d.architecture);
  absl::SetFlag(&FLAGS_input_dropout, d.input_dropout);
  absl::SetFlag(&FLAGS_hidden_dropout, d.hidden_dropout);
  absl::SetFlag(&FLAGS_max_norm, d.sgd.max_norm);
  absl::SetFlag(&FLAGS_jitter, d.augmentation.max_shift);
  absl::SetFlag(&FLAGS_temperature, d.temperature);
  absl::SetFlag(&FLAGS_epochs, d.epochs);
  absl::SetFlag(&FLAGS_batch_size, d.batch_size);
  absl::SetFlag(&FLAGS_optimizer, d.optimizer);
  absl::SetFlag(&FLAGS_lr, d.schedule.base);
  absl::SetFlag(&FLAGS_momentum_start, d.sgd.momentum_start);
  absl::SetFlag(&FLAGS_momentum_end, d.sgd.momentum_end);
  absl::SetFlag(&FLAGS_dampened_momentum, d.sgd.dampened);
  absl::SetFlag(&FLAGS_seed, d.seed);
}

absl::StatusOr<TrainerConfig> TrainerConfigFromFlags() {
  TrainerConfig c;
  const std::string progress = absl::GetFlag(FLAGS_progress);
  if (progress != "auto" && progress != "line" && progress != "plain") {
    return absl::InvalidArgumentError(
        absl::StrCat("--progress must be auto, line or plain, got \"", progress, "\""));
  }
  c.progress_line = progress == "line" || (progress == "auto" && isatty(fileno(stdout)) == 1);
  c.architecture = absl::GetFlag(FLAGS_architecture);
  c.input_dropout = static_cast<float>(absl::GetFlag(FLAGS_input_dropout));
  c.hidden_dropout = static_cast<float>(absl::GetFlag(FLAGS_hidden_dropout));
  c.sgd.max_norm = c.adam.max_norm = static_cast<float>(absl::GetFlag(FLAGS_max_norm));
  c.augmentation.max_shift = absl::GetFlag(FLAGS_jitter);
  c.augmentation.elastic.alpha = static_cast<float>(absl::GetFlag(FLAGS_elastic_alpha));
  c.augmentation.elastic.sigma = static_cast<float>(absl::GetFlag(FLAGS_elastic_sigma));
  c.temperature = static_cast<float>(absl::GetFlag(FLAGS_temperature));
  c.epochs = absl::GetFlag(FLAGS_epochs);
  c.batch_size = absl::GetFlag(FLAGS_batch_size);
  c.optimizer = absl::GetFlag(FLAGS_optimizer);
  c.schedule.base = static_cast<float>(absl::GetFlag(FLAGS_lr));
  ASSIGN_OR_RETURN(c.schedule.kind,
                   LearningRateSchedule::ParseKind(absl::GetFlag(FLAGS_lr_schedule)));
  c.schedule.final_fraction = static_cast<float>(absl::GetFlag(FLAGS_lr_final_fraction));
  c.schedule.step_gamma = static_cast<float>(absl::GetFlag(FLAGS_lr_step_gamma));
  c.schedule.step_every_epochs = absl::GetFlag(FLAGS_lr_step_epochs);
  c.sgd.momentum_start = static_cast<float>(absl::GetFlag(FLAGS_momentum_start));
  c.sgd.momentum_end = static_cast<float>(absl::GetFlag(FLAGS_momentum_end));
  c.sgd.dampened = absl::GetFlag(FLAGS_dampened_momentum);
  c.seed = absl::GetFlag(FLAGS_seed);
  c.eval_every = absl::GetFlag(FLAGS_eval_every);
  c.average_last_epochs = absl::GetFlag(FLAGS_average_last_epochs);
  c.checkpoint_path = absl::GetFlag(FLAGS_checkpoint);
  c.metrics_csv_path = absl::GetFlag(FLAGS_metrics_csv);
  c.resume = absl::GetFlag(FLAGS_resume);
  c.weight_decay = static_cast<float>(absl::GetFlag(FLAGS_weight_decay));
  c.best_checkpoint_path = absl::GetFlag(FLAGS_best_checkpoint);
  c.resume_allow_changes = absl::GetFlag(FLAGS_resume_allow_changes);
  c.warmup_epochs = absl::GetFlag(FLAGS_warmup_epochs);
  c.momentum_ramp_epochs = absl::GetFlag(FLAGS_momentum_ramp_epochs);
  ASSIGN_OR_RETURN(c.precision, ParsePrecisionChoice(absl::GetFlag(FLAGS_precision)));
  return c;
}

int ThreadsFromFlags() { return absl::GetFlag(FLAGS_threads); }

absl::StatusOr<std::string> DataSourceFromFlags() {
  const std::string data = absl::GetFlag(FLAGS_data);
  if (data.empty()) return absl::GetFlag(FLAGS_data_dir);
  const absl::CommandLineFlag* data_dir = absl::FindCommandLineFlag("data_dir");
  // (This abseil hides whether a flag was on the command line: a --data_dir
  // other than its default is taken as given.)
  if (data_dir != nullptr && data_dir->CurrentValue() != data_dir->DefaultValue()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--data=", data, " and --data_dir=", absl::GetFlag(FLAGS_data_dir),
                     " both name the data: give one of them"));
  }
  return data;
}

absl::StatusOr<TrainingData> LoadDataFromFlags() {
  ASSIGN_OR_RETURN(const std::string source, DataSourceFromFlags());
  ASSIGN_OR_RETURN(MnistFormatData files, LoadDataSource(source));
  const int64_t n = files.train.num_examples;
  ASSIGN_OR_RETURN(auto range, ParseRange(absl::GetFlag(FLAGS_train_range), n));
  TrainingData data;
  data.test = std::move(files.test);
  const std::string validation_text = absl::GetFlag(FLAGS_validation_range);
  if (validation_text.empty()) {
    ASSIGN_OR_RETURN(data.train, SliceDataset(files.train, range.first, range.second));
    return data;
  }
  ASSIGN_OR_RETURN(auto held_out, ParseRange(validation_text, n));
  absl::StatusOr<HeldOutSplit> split = SplitHeldOut(files.train, range, held_out);
  if (!split.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--validation_range=", validation_text, ": ", split.status().message()));
  }
  data.train = std::move(split->train);
  data.validation = std::move(split->validation);
  return data;
}

namespace {

absl::Status RunTraining(const std::string& role) {
  const auto start = std::chrono::steady_clock::now();
  ASSIGN_OR_RETURN(TrainerConfig config, TrainerConfigFromFlags());
  config.role = role;
  SetComputeThreads(ThreadsFromFlags());
  ASSIGN_OR_RETURN(TrainingData data, LoadDataFromFlags());
  config.data_description = absl::StrCat("train set ", DatasetFingerprint(data.train));
  spdlog::info("{}: {} training images of {} from {} (range {}), {} validation, {} test images",
               role, data.train.num_examples, ShapeString(data.train.example_shape()),
               *DataSourceFromFlags(),
               absl::GetFlag(FLAGS_train_range).empty() ? "all" : absl::GetFlag(FLAGS_train_range),
               data.validation.num_examples, data.test.num_examples);
  ASSIGN_OR_RETURN(TrainingResult result,
                   Train(config, data.train, data.test, nullptr, data.validation));
  if (result.best_validation_epoch > 0) {
    spdlog::info("best validation epoch {}: {} errors of {}{}", result.best_validation_epoch,
                 result.best_validation_errors, data.validation.num_examples,
                 config.best_checkpoint_path.empty()
                     ? ""
                     : absl::StrCat(", checkpoint ", config.best_checkpoint_path));
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  spdlog::info("{} {} done: {} test errors out of {} ({:.2f}% accuracy), {} parameters, {:.0f} s",
               role, config.architecture, result.final_evaluation.errors,
               result.final_evaluation.examples, 100.0 * result.final_evaluation.accuracy,
               result.network->ParameterCount(), seconds);
  if (!config.checkpoint_path.empty()) spdlog::info("checkpoint: {}", config.checkpoint_path);
  if (!config.metrics_csv_path.empty()) spdlog::info("metrics: {}", config.metrics_csv_path);
  return absl::OkStatus();
}

}  // namespace

int InspectCheckpointFromFlags() {
  const std::string path = absl::GetFlag(FLAGS_checkpoint);
  absl::StatusOr<distill::v1::Checkpoint> checkpoint = LoadCheckpoint(path);
  absl::StatusOr<std::string> text =
      checkpoint.ok() ? DescribeCheckpoint(*checkpoint) : checkpoint.status();
  if (!text.ok()) {
    spdlog::error("inspect {}: {}", path, text.status().ToString());
    return 1;
  }
  std::printf("checkpoint:      %s\n%s", path.c_str(), text->c_str());
  return 0;
}

int RunTrainingFromFlags(const std::string& role) {
  if (absl::Status s = RunTraining(role); !s.ok()) {
    spdlog::error("{} training failed: {}", role, s.ToString());
    return 1;
  }
  return 0;
}

}  // namespace distillery
