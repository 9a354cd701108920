// Training throughput of the engine against the machine's fp32 GEMM rate.
//
// For each architecture (default 784-1200-1200-10 and 784-800-800-10) at
// batch 128 this prints:
//   - examples/s over one whole training epoch on MNIST (dropout 0.2/0.5,
//     max-norm 3.5, SGD with momentum: the same work bench/torch_peer.py does);
//   - the GFLOP/s that represents (the GEMMs of forward and backward);
//   - a oneDNN matmul's GFLOP/s on exactly those GEMM shapes, measured in the
//     same run: the stand-in for the machine's peak;
//   - the fraction of that peak the whole epoch reaches.
// With --precision=bf16 the epoch trains in bf16 mixed precision
// (common/tensor/precision.h); the peak stays the f32 matmul's.
// Usage: train_bench [--mnist_dir=DIR] [--threads=2] [--archs=a,b] [--epochs=1]
//                    [--precision=f32|bf16|auto]
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_split.h"
#include "bench/matmul_rate.h"
#include "common/data/idx_dataset.h"
#include "common/tensor/dnnl_context.h"
#include "common/train/trainer.h"
#include "dnnl.hpp"
#include "spdlog/spdlog.h"

ABSL_FLAG(std::string, mnist_dir, DISTILLERY_MNIST_DIR, "MNIST-format directory");
ABSL_FLAG(int32_t, threads, 2, "Compute threads");
ABSL_FLAG(std::string, archs, "784-1200-1200-10,784-800-800-10", "Architectures to time");
ABSL_FLAG(int64_t, batch, 128, "Batch size");
ABSL_FLAG(int64_t, epochs, 1, "Epochs to time (the first is included)");
ABSL_FLAG(std::string, precision, "f32", "Training precision: f32, bf16 or auto");

namespace distillery {
namespace {

using Clock = std::chrono::steady_clock;

struct PeakEstimate {
  double flops_per_example = 0;  // GEMM flops of one training example
  double gflops = 0;             // matmul rate on the same shapes
};

// The GEMMs of one training step, as the engine runs them: per layer a
// forward (batch x in) * (in x out), a weight gradient (out x batch) *
// (batch x in), and a data gradient (batch x out) * (out x in) except for the
// first layer.
PeakEstimate MatmulPeak(const NetworkSpec& spec, int64_t batch) {
  const std::vector<int64_t> sizes = spec.MlpLayerSizes();
  double flops = 0, seconds = 0;
  for (size_t i = 0; i + 1 < sizes.size(); ++i) {
    const int64_t in = sizes[i], out = sizes[i + 1];
    const double gemm_flops = 2.0 * batch * in * out;
    flops += 2 * gemm_flops;
    seconds += MatmulSeconds(batch, out, in, true) + MatmulSeconds(out, in, batch, false);
    if (i > 0) {
      flops += gemm_flops;
      seconds += MatmulSeconds(batch, in, out, false);
    }
  }
  return {flops / batch, flops / seconds / 1e9};
}

int Run() {
  SetComputeThreads(absl::GetFlag(FLAGS_threads));
  absl::StatusOr<MnistFormatData> mnist = LoadMnistFormatDirectory(absl::GetFlag(FLAGS_mnist_dir));
  if (!mnist.ok()) {
    spdlog::error("{}", mnist.status().ToString());
    return 1;
  }
  const int64_t batch = absl::GetFlag(FLAGS_batch);
  absl::StatusOr<PrecisionChoice> precision = ParsePrecisionChoice(absl::GetFlag(FLAGS_precision));
  if (!precision.ok()) {
    spdlog::error("{}", precision.status().ToString());
    return 1;
  }
  for (const std::string& arch :
       std::vector<std::string>(absl::StrSplit(absl::GetFlag(FLAGS_archs), ','))) {
    TrainerConfig config;
    config.architecture = arch;
    config.input_dropout = 0.2f;
    config.hidden_dropout = 0.5f;
    config.sgd.max_norm = 3.5f;
    config.batch_size = batch;
    config.epochs = absl::GetFlag(FLAGS_epochs);
    config.schedule.base = 0.05f;
    config.log_progress = false;
    config.precision = *precision;
    Dataset no_test;
    absl::StatusOr<TrainingResult> result = Train(config, mnist->train, no_test);
    if (!result.ok()) {
      spdlog::error("{}", result.status().ToString());
      return 1;
    }
    double best = 0;
    for (const EpochMetrics& m : result->history) best = std::max(best, m.examples_per_second);
    const PeakEstimate peak = MatmulPeak(result->network->spec(), batch);
    const double achieved = best * peak.flops_per_example / 1e9;
    std::printf(
        "distillery arch=%s batch=%ld examples_per_s=%.1f gemm_gflops=%.1f "
        "matmul_peak_gflops=%.1f fraction_of_peak=%.3f threads=%d precision=%s isa=%s\n",
        arch.c_str(), static_cast<long>(batch), best, achieved, peak.gflops, achieved / peak.gflops,
        absl::GetFlag(FLAGS_threads), PrecisionName(result->network->precision()),
        CpuIsaName().c_str());
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace
}  // namespace distillery

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return distillery::Run();
}
