// A student's training speed when its soft targets come from a teacher
// server over loopback, against the same student trained in-process on
// precomputed teacher logits, in the same run.
//
//   student_bench --checkpoint=teacher.ckpt --server=build/teacher_server/teacher_server
//
// Both runs train 784-800-800-10 (by default) at batch 128 on the MNIST
// training set at T=20 for --epochs epochs and report the best epoch's
// examples/s:
//   in_process: logits of the teacher computed once before training; each
//               batch's targets are softmax(z/T) of its rows;
//   remote:     the teacher server's transfer set (logits precomputed on the
//               server), pulled over gRPC with the prefetch pipeline;
//   remote_own_inputs: the student's own inputs sent to the server, which
//               runs the teacher's forward pass per batch (more work: the
//               teacher shares the 2 cores).
#include <cstdio>
#include <numeric>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "common/data/batches.h"
#include "common/data/idx_dataset.h"
#include "common/formats/checkpoint.h"
#include "common/nn/softmax.h"
#include "common/tensor/dnnl_context.h"
#include "common/train/trainer.h"
#include "spdlog/spdlog.h"
#include "student_trainer/remote_sources.h"
#include "tests/server_process.h"

ABSL_FLAG(std::string, checkpoint, "", "Teacher checkpoint");
ABSL_FLAG(std::string, server, "build/teacher_server/teacher_server", "teacher_server binary");
ABSL_FLAG(std::string, mnist_dir, DISTILLERY_MNIST_DIR, "MNIST-format directory");
ABSL_FLAG(std::string, architecture, "784-800-800-10", "Student architecture");
ABSL_FLAG(int64_t, epochs, 2, "Epochs per run (the best one is reported)");
ABSL_FLAG(int32_t, threads, 2, "Student compute threads");

namespace distillery {
namespace {

// Soft targets from logits computed before training.
class PrecomputedTargets : public SoftTargetSource {
 public:
  PrecomputedTargets(const Tensor* logits, float t) : logits_(logits), t_(t) {}
  absl::Status GetSoftTargets(int64_t, int64_t, absl::Span<const int64_t> ids, const Tensor&,
                              Tensor* soft_targets) override {
    rows_.Resize(static_cast<int64_t>(ids.size()), logits_->cols());
    for (size_t r = 0; r < ids.size(); ++r) {
      std::copy(logits_->row(ids[r]), logits_->row(ids[r]) + logits_->cols(), rows_.row(r));
    }
    return softmax_.Compute(rows_, t_, soft_targets);
  }

 private:
  const Tensor* logits_;
  float t_;
  Tensor rows_;
  TemperatureSoftmax softmax_;
};

TrainerConfig StudentConfig() {
  TrainerConfig config;
  config.architecture = absl::GetFlag(FLAGS_architecture);
  config.epochs = absl::GetFlag(FLAGS_epochs);
  config.distill_temperature = 20.f;
  config.schedule.base = 0.03f;
  config.log_progress = false;
  return config;
}

double Best(const TrainingResult& result) {
  double best = 0;
  for (const EpochMetrics& m : result.history) best = std::max(best, m.examples_per_second);
  return best;
}

int Run() {
  SetComputeThreads(absl::GetFlag(FLAGS_threads));
  auto mnist = LoadMnistFormatDirectory(absl::GetFlag(FLAGS_mnist_dir));
  auto checkpoint = LoadCheckpoint(absl::GetFlag(FLAGS_checkpoint));
  if (!mnist.ok() || !checkpoint.ok()) {
    spdlog::error("cannot load the data or the checkpoint");
    return 1;
  }
  auto teacher = NetworkFromCheckpoint(*checkpoint);
  const Dataset transfer = WithoutLabels(mnist->train);
  const Dataset no_test;

  // In-process, precomputed logits (not timed).
  Tensor logits(transfer.num_examples, (*teacher)->num_classes());
  {
    std::vector<int64_t> ids(1000);
    Tensor inputs;
    for (int64_t begin = 0; begin < transfer.num_examples; begin += 1000) {
      std::iota(ids.begin(), ids.end(), begin);
      GatherBatch(transfer, ids, 0, nullptr, &inputs, nullptr);
      const Tensor* out = nullptr;
      (void)(*teacher)->Predict(inputs, &out);
      std::copy(out->data(), out->data() + out->size(), logits.row(begin));
    }
  }
  PrecomputedTargets precomputed(&logits, 20.f);
  auto local = Train(StudentConfig(), transfer, no_test, &precomputed);
  if (!local.ok()) {
    spdlog::error("{}", local.status().ToString());
    return 1;
  }
  const double in_process = Best(*local);

  ServerProcess server;
  if (!server.Start(
          absl::GetFlag(FLAGS_server),
          {"--checkpoint=" + absl::GetFlag(FLAGS_checkpoint),
           "--data_dir=" + absl::GetFlag(FLAGS_mnist_dir), "--metrics_address=", "--threads=2"},
          "/tmp")) {
    spdlog::error("cannot start the server");
    return 1;
  }
  TeacherClientConfig client_config;
  client_config.target = server.target();
  auto client = TeacherClient::Connect(client_config);
  if (!client.ok()) return 1;
  TrainerConfig remote_config = StudentConfig();
  remote_config.prefetch_batches = 4;
  TransferStreamSource::Options options;
  options.temperature = 20.f;
  options.seed = remote_config.seed;
  auto stream = TransferStreamSource::Create(client->get(), options);
  if (!stream.ok()) return 1;
  auto remote = Train(remote_config, **stream, no_test);
  if (!remote.ok()) {
    spdlog::error("{}", remote.status().ToString());
    return 1;
  }
  RemoteSoftTargets own_inputs(client->get(), 20.f);
  auto remote_own = Train(remote_config, transfer, no_test, &own_inputs);
  if (!remote_own.ok()) return 1;
  server.Stop();
  std::printf(
      "student arch=%s batch=128 in_process_examples_per_s=%.0f remote_examples_per_s=%.0f "
      "remote_over_in_process=%.3f remote_own_inputs_examples_per_s=%.0f\n",
      absl::GetFlag(FLAGS_architecture).c_str(), in_process, Best(*remote),
      Best(*remote) / in_process, Best(*remote_own));
  return 0;
}

}  // namespace
}  // namespace distillery

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return distillery::Run();
}
