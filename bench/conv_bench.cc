// Forward + backward speed of Conv2dLayer in each of its layouts, on the
// convolutions of a LeNet-style MNIST network at batch 128:
//   conv1: 5x5, 1 -> 32 channels, 28x28 input, pad 2 (output 28x28)
//   conv2: 5x5, 32 -> 64 channels, 14x14 input, pad 2 (output 14x14)
//
//   OMP_NUM_THREADS=2 conv_bench [--iterations=20] [--batch=128] [--threads=2]
//
// For each, prints the best-of-iterations time of Forward, of Backward with
// the input gradient (a hidden layer) and without it (the first layer, whose
// input gradient nobody needs), and GFLOP/s counting 2 * MACs per pass
// (the MACs of the forward pass, the same for the data and weights
// gradients). The layout modes are ConvLayout::kPlain (no reorders),
// ConvLayout::kBlocked (oneDNN's chosen layouts, reorders at every call) and
// ConvLayout::kAuto (blocked per primitive unless it pads channels);
// ONEDNN_VERBOSE=1 shows which kernels oneDNN picked.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "common/nn/layers/conv2d_layer.h"
#include "common/tensor/dnnl_context.h"

ABSL_FLAG(int32_t, iterations, 20, "Timed iterations per measurement (the best one is kept)");
ABSL_FLAG(int64_t, batch, 128, "Batch size");
ABSL_FLAG(int32_t, threads, 2, "Compute threads");

namespace distillery {
namespace {

void FillRandom(Tensor* t, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> uniform(-1.f, 1.f);
  for (int64_t i = 0; i < t->size(); ++i) t->data()[i] = uniform(rng);
}

// The best time in seconds of `iterations` calls of `f`, after one warm-up.
template <typename F>
double BestSeconds(int iterations, F f) {
  f();
  double best = 1e30;
  for (int i = 0; i < iterations; ++i) {
    const auto start = std::chrono::steady_clock::now();
    f();
    const std::chrono::duration<double> d = std::chrono::steady_clock::now() - start;
    best = std::min(best, d.count());
  }
  return best;
}

int Run(const char* name, int64_t in_channels, int64_t out_channels, int64_t size,
        ConvLayout layout, DnnlContext* context) {
  const int iterations = absl::GetFlag(FLAGS_iterations);
  const int64_t batch = absl::GetFlag(FLAGS_batch);
  Conv2dOptions o;
  o.in_channels = in_channels;
  o.out_channels = out_channels;
  o.kernel_rows = o.kernel_cols = 5;
  o.pad_rows = o.pad_cols = 2;
  o.layout = layout;
  Conv2dLayer layer(0, o, context);
  FillRandom(&layer.weight().value, 1);
  Tensor input({batch, in_channels, size, size}), output, grad_output, grad_input;
  FillRandom(&input, 2);
  bool ok = true;
  auto check = [&ok](const absl::Status& s) {
    if (!s.ok()) {
      std::fprintf(stderr, "%s\n", s.ToString().c_str());
      ok = false;
    }
  };
  check(layer.Forward(input, true, &output));
  if (!ok) return 1;
  grad_output = output;
  FillRandom(&grad_output, 3);
  const double forward =
      BestSeconds(iterations, [&] { check(layer.Forward(input, true, &output)); });
  const double backward = BestSeconds(
      iterations, [&] { check(layer.Backward(input, output, grad_output, &grad_input)); });
  const double backward_weights =
      BestSeconds(iterations, [&] { check(layer.Backward(input, output, grad_output, nullptr)); });
  if (!ok) return 1;
  const double flop = 2.0 * batch * out_channels * output.dim(2) * output.dim(3) * in_channels *
                      o.kernel_rows * o.kernel_cols;
  std::printf(
      "%-28s %-8s fwd %7.2f ms (%6.1f GFLOP/s)  bwd data+weights %7.2f ms (%6.1f)  "
      "bwd weights %7.2f ms (%6.1f)  fwd+bwd %7.2f ms (%6.1f)  first-layer fwd+bwd %7.2f ms "
      "(%6.1f)\n",
      name,
      layout == ConvLayout::kPlain     ? "plain"
      : layout == ConvLayout::kBlocked ? "blocked"
                                       : "auto",
      forward * 1e3, flop / forward * 1e-9, backward * 1e3, 2 * flop / backward * 1e-9,
      backward_weights * 1e3, flop / backward_weights * 1e-9, (forward + backward) * 1e3,
      3 * flop / (forward + backward) * 1e-9, (forward + backward_weights) * 1e3,
      2 * flop / (forward + backward_weights) * 1e-9);
  return 0;
}

}  // namespace
}  // namespace distillery

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  distillery::SetComputeThreads(absl::GetFlag(FLAGS_threads));
  distillery::DnnlContext context;
  int failures = 0;
  for (auto layout : {distillery::ConvLayout::kPlain, distillery::ConvLayout::kBlocked,
                      distillery::ConvLayout::kAuto}) {
    failures += distillery::Run("conv1 5x5 1->32 28x28", 1, 32, 28, layout, &context);
    failures += distillery::Run("conv2 5x5 32->64 14x14", 32, 64, 14, layout, &context);
  }
  return failures == 0 ? 0 : 1;
}
