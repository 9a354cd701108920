// The forward pass a teacher serves, at one batch size, for several
// checkpoints measured in alternating rounds (so that a shared machine's
// load falls on all of them alike): the examples/s of Network::Infer (the
// tiled inference the teacher server's batcher runs) on the inputs the
// checkpoint's own preprocessing makes of pixels. Not a test: the numbers
// go to bench/RESULTS.md (bench/run_onnx_import_bench.sh drives it).
//
//   onnx_import_bench --checkpoints=imported.ckpt,native.ckpt --batch=1024 --threads=2
//
// Prints one line per checkpoint: "<path> <median examples/s> <all rounds>".
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/data/preprocessing.h"
#include "common/formats/checkpoint.h"
#include "common/tensor/dnnl_context.h"

ABSL_FLAG(std::string, checkpoints, "", "Comma-separated checkpoints to measure");
ABSL_FLAG(int64_t, batch, 1024, "Examples per forward pass");
ABSL_FLAG(int32_t, threads, 2, "Compute threads");
ABSL_FLAG(int32_t, rounds, 5, "Alternating rounds per checkpoint");
ABSL_FLAG(double, seconds, 3, "Seconds per round");

namespace distillery {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

struct Subject {
  std::string path;
  std::unique_ptr<Network> network;
  Tensor inputs;
  std::vector<double> rates;
};

int Main() {
  SetComputeThreads(absl::GetFlag(FLAGS_threads));
  const int64_t batch = absl::GetFlag(FLAGS_batch);
  std::vector<Subject> subjects;
  for (absl::string_view path : absl::StrSplit(absl::GetFlag(FLAGS_checkpoints), ',')) {
    Subject s;
    s.path = std::string(path);
    auto checkpoint = LoadCheckpoint(s.path);
    if (!checkpoint.ok()) {
      std::fprintf(stderr, "%s\n", checkpoint.status().ToString().c_str());
      return 1;
    }
    auto network = NetworkFromCheckpoint(*checkpoint);
    auto preprocessing = CheckpointPreprocessing(*checkpoint);
    if (!network.ok() || !preprocessing.ok()) {
      std::fprintf(stderr, "%s: cannot build the network\n", s.path.c_str());
      return 1;
    }
    s.network = *std::move(network);
    const Shape& shape = s.network->input_shape();
    const int64_t channels = shape.size() == 3 ? shape[0] : 1;
    std::vector<uint8_t> pixels(static_cast<size_t>(batch * s.network->input_size()));
    for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<uint8_t>((i * 7) % 256);
    Shape batch_shape = shape;
    batch_shape.insert(batch_shape.begin(), batch);
    s.inputs = Tensor(batch_shape);
    ApplyPixelTable(preprocessing->Table(channels), channels, s.network->input_size() / channels,
                    batch, pixels.data(), s.inputs.data());
    const Tensor* logits = nullptr;
    for (int i = 0; i < 2; ++i) {
      if (absl::Status st = s.network->Infer(s.inputs, &logits); !st.ok()) {
        std::fprintf(stderr, "%s: %s\n", s.path.c_str(), st.ToString().c_str());
        return 1;
      }
    }
    subjects.push_back(std::move(s));
  }
  for (int round = 0; round < absl::GetFlag(FLAGS_rounds); ++round) {
    for (Subject& s : subjects) {
      const Tensor* logits = nullptr;
      int64_t examples = 0;
      const auto start = Clock::now();
      while (Seconds(start) < absl::GetFlag(FLAGS_seconds)) {
        (void)s.network->Infer(s.inputs, &logits);
        examples += batch;
      }
      s.rates.push_back(static_cast<double>(examples) / Seconds(start));
    }
  }
  for (Subject& s : subjects) {
    std::vector<double> sorted = s.rates;
    std::sort(sorted.begin(), sorted.end());
    std::vector<std::string> all;
    for (double r : s.rates) all.push_back(std::to_string(static_cast<int64_t>(r)));
    std::printf("%s %.0f %s\n", s.path.c_str(), sorted[sorted.size() / 2],
                absl::StrJoin(all, ",").c_str());
  }
  return 0;
}

}  // namespace
}  // namespace distillery

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return distillery::Main();
}
