// student_trainer: trains a small network.
//
//   student_trainer baseline [--flags]   train on hard labels alone (the
//                                         paper's 146-error baseline)
//   student_trainer distill [--flags]    train on a remote teacher's soft
//                                         targets
//   student_trainer export --checkpoint=C --onnx=M [--softmax]
//                                         write any checkpoint (student or
//                                         teacher) as an ONNX model and report
//                                         parameters, file size and test errors
//
// `student_trainer --help` lists every flag.
#include <sys/stat.h>

#include <cstring>
#include <fstream>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/cli/training_flags.h"
#include "common/data/npz.h"
#include "common/formats/checkpoint.h"
#include "common/formats/onnx_export.h"
#include "common/nn/softmax.h"
#include "common/tensor/dnnl_context.h"
#include "common/train/evaluation.h"
#include "common/train/trainer.h"
#include "common/util/status_macros.h"
#include "spdlog/spdlog.h"
#include "student_trainer/distill.h"
#include "student_trainer/teacher_client_flags.h"

ABSL_DECLARE_FLAG(std::string, data_dir);
ABSL_DECLARE_FLAG(std::string, train_range);
ABSL_DECLARE_FLAG(std::string, validation_range);
ABSL_DECLARE_FLAG(std::string, checkpoint);

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
          "distill: keep training when the teacher changes mid-run (another teacher_hash or "
          "term of its identity: weights, architecture, input, precision); another transfer "
          "set or a newer contract version is refused regardless");
ABSL_FLAG(std::string, onnx, "", "export: path of the ONNX model to write");
ABSL_FLAG(bool, softmax, false,
          "export: end the model with Softmax (output \"probabilities\") instead of "
          "\"logits\"");
ABSL_FLAG(std::string, dump_outputs, "",
          "export: also write the C++ forward pass's outputs (what the ONNX model outputs: "
          "logits, or probabilities with --softmax) for the first --dump_count test images of "
          "--data_dir to this file, as raw little-endian float32, row-major, dump_count x "
          "classes (for cross-checking a runtime)");
ABSL_FLAG(int64_t, dump_count, 1000, "export: test images in --dump_outputs");

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
    "  distill    train a student on the soft targets of the teacher at --teacher\n"
    "  export     write --checkpoint (student or teacher) as the ONNX model --onnx and report\n"
    "             its parameters, file size and errors at T=1 on the test set of --data_dir\n"
    "  inspect    print the network in --checkpoint: layers, shapes, parameters, input shape\n"
    "             and preprocessing, format version\n";

int Distill() {
  absl::StatusOr<distillery::TrainerConfig> trainer = distillery::TrainerConfigFromFlags();
  if (!trainer.ok()) {
    spdlog::error("{}", trainer.status().ToString());
    return 2;
  }
  absl::StatusOr<distillery::TeacherClientConfig> teacher =
      distillery::TeacherClientConfigFromFlags();
  if (!teacher.ok()) {
    spdlog::error("{}", teacher.status().ToString());
    return 2;
  }
  distillery::DistillConfig config;
  config.trainer = *trainer;
  config.teacher = *teacher;
  config.trainer.role = "student";
  config.trainer.distill_temperature = static_cast<float>(absl::GetFlag(FLAGS_distill_temperature));
  config.trainer.alpha = static_cast<float>(absl::GetFlag(FLAGS_alpha));
  config.trainer.prefetch_batches = absl::GetFlag(FLAGS_prefetch);
  config.teacher.call_deadline = absl::Seconds(absl::GetFlag(FLAGS_call_deadline_seconds));
  config.teacher.give_up_after = absl::Seconds(absl::GetFlag(FLAGS_give_up_seconds));
  config.teacher.allow_teacher_change = absl::GetFlag(FLAGS_allow_teacher_change);
  config.source = absl::GetFlag(FLAGS_source);
  absl::StatusOr<std::string> data = distillery::DataSourceFromFlags();
  if (!data.ok()) {
    spdlog::error("{}", data.status().ToString());
    return 2;
  }
  config.data_dir = *data;
  config.transfer_range = absl::GetFlag(FLAGS_train_range);
  config.validation_range = absl::GetFlag(FLAGS_validation_range);
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
  distillery::SetComputeThreads(distillery::ThreadsFromFlags());
  if (absl::Status s = distillery::RunDistillation(config); !s.ok()) {
    spdlog::error("distillation failed: {}", s.ToString());
    return 1;
  }
  return 0;
}

// Writes the outputs of `mlp` (softmax'ed when `softmax`) for the first
// `count` examples of `data` to `path` as raw little-endian float32.
absl::Status DumpOutputs(distillery::Network& mlp, const distillery::Dataset& data,
                         const distillery::Preprocessing& preprocessing, int64_t count,
                         bool softmax, const std::string& path) {
  if (count < 1 || count > data.num_examples) {
    return absl::InvalidArgumentError(
        absl::StrCat("--dump_count=", count, " is not in [1, ", data.num_examples, "]"));
  }
  std::vector<int64_t> indices(static_cast<size_t>(count));
  std::iota(indices.begin(), indices.end(), 0);
  distillery::Tensor inputs;
  distillery::GatherPreprocessedBatch(data, indices, preprocessing, &inputs, nullptr);
  const distillery::Tensor* logits = nullptr;
  RETURN_IF_ERROR(mlp.Predict(inputs, &logits));
  distillery::Tensor probabilities;
  if (softmax) {
    distillery::TemperatureSoftmax temperature_softmax;
    RETURN_IF_ERROR(temperature_softmax.Compute(*logits, 1.f, &probabilities));
  }
  const distillery::Tensor& outputs = softmax ? probabilities : *logits;
  std::string bytes;
  bytes.reserve(4 * static_cast<size_t>(outputs.size()));
  for (int64_t i = 0; i < outputs.size(); ++i) {
    uint32_t bits;
    std::memcpy(&bits, outputs.data() + i, sizeof(bits));
    for (int b = 0; b < 4; ++b) bytes.push_back(static_cast<char>((bits >> (8 * b)) & 0xFF));
  }
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  file.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  file.close();
  if (!file) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

// `student_trainer export`: the checkpoint as an ONNX model, and what that
// model is worth on a device.
absl::Status ExportCommand() {
  const std::string checkpoint_path = absl::GetFlag(FLAGS_checkpoint);
  const std::string onnx_path = absl::GetFlag(FLAGS_onnx);
  ASSIGN_OR_RETURN(const distill::v1::Checkpoint checkpoint,
                   distillery::LoadCheckpoint(checkpoint_path));
  distillery::OnnxExportOptions options;
  options.softmax = absl::GetFlag(FLAGS_softmax);
  RETURN_IF_ERROR(distillery::ExportOnnx(checkpoint, options, onnx_path));
  struct stat file_stat;
  if (stat(onnx_path.c_str(), &file_stat) != 0) {
    return absl::InternalError(absl::StrCat("cannot stat ", onnx_path));
  }
  distillery::SetComputeThreads(distillery::ThreadsFromFlags());
  ASSIGN_OR_RETURN(std::unique_ptr<distillery::Network> mlp,
                   distillery::NetworkFromCheckpoint(checkpoint));
  const distillery::NetworkSpec& spec = mlp->spec();
  const std::string role = checkpoint.role().empty() ? "network" : checkpoint.role();
  const char* output =
      options.softmax ? distillery::kOnnxProbabilitiesName : distillery::kOnnxLogitsName;
  absl::PrintF("ONNX export of %s %s: %s\n", role, spec.ArchitectureString(), onnx_path);
  absl::PrintF(
      "  graph:             opset %d, %s [batch, %s] raw pixels (preprocessed in the graph: "
      "%s) -> %s [batch, %d]\n",
      distillery::kOnnxOpsetVersion, distillery::kOnnxInputName,
      distillery::ShapeString(mlp->input_shape()),
      distillery::CheckpointPreprocessing(checkpoint)->Describe(), output, mlp->num_classes());
  absl::PrintF("  parameters:        %d\n", mlp->ParameterCount());
  absl::PrintF("  file size:         %d bytes (%.2f MiB)\n", file_stat.st_size,
               static_cast<double>(file_stat.st_size) / (1 << 20));
  absl::PrintF("  multiply-adds:     %d per image\n", mlp->ForwardMacsPerExample());
  ASSIGN_OR_RETURN(const std::string data_dir, distillery::DataSourceFromFlags());
  if (data_dir.empty()) {
    absl::PrintF("  test errors (T=1): not evaluated (no --data_dir)\n");
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(const distillery::MnistFormatData data, distillery::LoadDataSource(data_dir));
  // An imported network takes its own preprocessing of the pixels.
  ASSIGN_OR_RETURN(const distillery::Preprocessing preprocessing,
                   distillery::CheckpointPreprocessing(checkpoint));
  ASSIGN_OR_RETURN(const distillery::EvaluationResult eval,
                   distillery::Evaluate(*mlp, data.test, 1000, {}, preprocessing));
  absl::PrintF("  test errors (T=1): %d of %d (%.2f%% accuracy) on %s\n", eval.errors,
               eval.examples, 100.0 * eval.accuracy, data_dir);
  // Training records the last epoch's test errors: a different count means
  // another data set than the one the network was trained for.
  if (auto it = checkpoint.metadata().find("test_errors");
      it != checkpoint.metadata().end() && !absl::StartsWith(it->second, "-") &&
      it->second != absl::StrCat(eval.errors)) {
    spdlog::warn(
        "the checkpoint recorded {} test errors in training, {} has {}: is --data_dir the "
        "data set it was trained on?",
        it->second, data_dir, eval.errors);
  }
  if (const std::string dump = absl::GetFlag(FLAGS_dump_outputs); !dump.empty()) {
    RETURN_IF_ERROR(DumpOutputs(*mlp, data.test, preprocessing, absl::GetFlag(FLAGS_dump_count),
                                options.softmax, dump));
    absl::PrintF("  C++ outputs:       %d x %d float32 (%s) in %s\n",
                 absl::GetFlag(FLAGS_dump_count), mlp->num_classes(), output, dump);
  }
  return absl::OkStatus();
}

int Export() {
  if (absl::GetFlag(FLAGS_checkpoint).empty() || absl::GetFlag(FLAGS_onnx).empty()) {
    spdlog::error("export needs --checkpoint=FILE and --onnx=FILE");
    return 2;
  }
  if (!absl::GetFlag(FLAGS_dump_outputs).empty() && absl::GetFlag(FLAGS_data_dir).empty()) {
    spdlog::error("--dump_outputs needs the test set of --data_dir");
    return 2;
  }
  if (absl::Status s = ExportCommand(); !s.ok()) {
    spdlog::error("export failed: {}", s.ToString());
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
  if (command == "inspect") return distillery::InspectCheckpointFromFlags();
  if (command == "distill") return Distill();
  if (command == "export") return Export();
  spdlog::error("unknown command \"{}\"\n{}", command, kUsage);
  return 2;
}
