// Soft-target serving throughput: the teacher server over gRPC on loopback
// against the teacher's in-process forward pass, in the same run, and the
// gain of dynamic batching when many small clients call at once.
//
//   serving_bench --checkpoint=teacher.ckpt --server=build/teacher_server/teacher_server
//
// Prints one line per measurement (examples/s) and the ratios, and for an
// MLP teacher the in-process forward pass at batch 1024 against a oneDNN
// matmul on the same shapes in the same precision (bench/matmul_rate.h):
// the fraction of the machine's product rate the forward pass reaches.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "bench/matmul_rate.h"
#include "common/formats/checkpoint.h"
#include "common/formats/target_codec.h"
#include "common/nn/softmax.h"
#include "common/tensor/dnnl_context.h"
#include "common/tensor/precision.h"
#include "distill/v1/teacher.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "spdlog/spdlog.h"
#include "tests/server_process.h"

ABSL_FLAG(std::string, checkpoint, "", "Teacher checkpoint to serve");
ABSL_FLAG(std::string, server, "build/teacher_server/teacher_server", "teacher_server binary");
ABSL_FLAG(int32_t, threads, 2, "Compute threads (in-process and server)");
ABSL_FLAG(double, seconds, 4, "Seconds per measurement");
ABSL_FLAG(double, temperature, 20, "Temperature of the soft targets");
ABSL_FLAG(std::string, precision, "f32",
          "The teacher's arithmetic, in process and in the server: f32, bf16 or auto");

namespace distillery {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

// In-process: forward pass + softmax(z/T) on `batch` examples, repeated.
double InProcessRate(Network& teacher, int64_t batch, double seconds) {
  Tensor inputs(batch, teacher.input_size());
  for (int64_t i = 0; i < inputs.size(); ++i) inputs.data()[i] = static_cast<float>(i % 255) / 255;
  TemperatureSoftmax softmax;
  Tensor probs;
  const Tensor* logits = nullptr;
  for (int i = 0; i < 3; ++i) (void)teacher.Predict(inputs, &logits);
  int64_t examples = 0;
  const auto start = Clock::now();
  while (Seconds(start) < seconds) {
    (void)teacher.Predict(inputs, &logits);
    (void)softmax.Compute(*logits, 20.f, &probs);
    examples += batch;
  }
  return examples / Seconds(start);
}

// `clients` threads, each on its own channel, sending requests of `batch`
// uint8 images back to back for `seconds`. Returns examples/s; counts
// failed calls into `failures`.
double GrpcRate(const std::string& target, int clients, int64_t batch, int64_t input_size,
                double seconds, int64_t* failures) {
  std::atomic<int64_t> examples{0}, failed{0};
  std::vector<std::thread> threads;
  const auto start = Clock::now();
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      grpc::ChannelArguments args;
      args.SetMaxReceiveMessageSize(64 << 20);
      args.SetInt("distillery.channel", c);  // distinct channels, distinct connections
      auto channel = grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
      auto stub = distill::v1::Teacher::NewStub(channel);
      distill::v1::SoftTargetsRequest request;
      request.set_num_examples(static_cast<uint32_t>(batch));
      std::string pixels(static_cast<size_t>(batch * input_size), '\0');
      for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<char>((i * 7 + c) % 256);
      request.set_pixels_u8(pixels);
      request.mutable_options()->set_temperature(absl::GetFlag(FLAGS_temperature));
      distill::v1::SoftTargetsResponse response;
      while (Seconds(start) < seconds) {
        grpc::ClientContext context;
        context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
        if (stub->GetSoftTargets(&context, request, &response).ok()) {
          examples += batch;
        } else {
          ++failed;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  *failures += failed;
  return examples / Seconds(start);
}

// GFLOP/s of a oneDNN matmul on the forward products of the MLP `sizes`
// at `batch`, in `precision` (a bf16 layer feeding another gives bf16, as
// in the engine's inference pass), and the flops of one example.
double ForwardMatmulGflops(const std::vector<int64_t>& sizes, int64_t batch, Precision precision,
                           double* flops_per_example) {
  const auto type =
      precision == Precision::kBF16 ? dnnl::memory::data_type::bf16 : dnnl::memory::data_type::f32;
  double flops = 0, seconds = 0;
  for (size_t i = 0; i + 1 < sizes.size(); ++i) {
    flops += 2.0 * batch * sizes[i] * sizes[i + 1];
    seconds += MatmulSeconds(batch, sizes[i + 1], sizes[i], true, type,
                             /*bf16_output=*/i + 2 < sizes.size());
  }
  *flops_per_example = flops / batch;
  return flops / seconds / 1e9;
}

// Starts a teacher server on the benchmark's checkpoint with `extra` flags
// besides the common ones; false (logged) when it does not start.
bool StartServer(ServerProcess* server, int threads, const std::vector<std::string>& extra) {
  std::vector<std::string> args = {"--checkpoint=" + absl::GetFlag(FLAGS_checkpoint),
                                   "--no_transfer_set",
                                   "--metrics_address=", "--threads=" + std::to_string(threads),
                                   "--precision=" + absl::GetFlag(FLAGS_precision)};
  args.insert(args.end(), extra.begin(), extra.end());
  if (server->Start(absl::GetFlag(FLAGS_server), args, "/tmp")) return true;
  spdlog::error("cannot start the server");
  return false;
}

// In-process and over gRPC at batches of 128 and 1024; returns the
// in-process rate at 1024, or a negative number when a server fails.
double MeasureLargeBatches(Network& teacher, int threads, double seconds, int64_t* failures) {
  double local_1024 = 0;
  for (int64_t batch : {128, 1024}) {
    const double local = InProcessRate(teacher, batch, seconds);
    if (batch == 1024) local_1024 = local;
    ServerProcess server;
    if (!StartServer(&server, threads, {"--max_batch=1024", "--batch_wait_ms=0"})) return -1;
    // Two clients on two channels keep the server busy while a response
    // travels back (one client would leave it idle half the time).
    const double remote =
        GrpcRate(server.target(), 2, batch, teacher.input_size(), seconds, failures);
    server.Stop();
    std::printf(
        "serving batch=%ld in_process_examples_per_s=%.0f grpc_examples_per_s=%.0f "
        "grpc_over_in_process=%.3f\n",
        static_cast<long>(batch), local, remote, remote / local);
    std::fflush(stdout);
  }
  return local_1024;
}

// Dynamic batching: 16 clients sending 8 examples each, without and with.
bool MeasureDynamicBatching(int64_t input_size, int threads, double seconds, int64_t* failures) {
  double rates[2];
  for (int batching = 0; batching < 2; ++batching) {
    ServerProcess server;
    const std::vector<std::string> limits =
        batching ? std::vector<std::string>{"--max_batch=1024", "--batch_wait_ms=2"}
                 : std::vector<std::string>{"--max_batch=8", "--batch_wait_ms=0"};
    if (!StartServer(&server, threads, limits)) return false;
    rates[batching] = GrpcRate(server.target(), 16, 8, input_size, seconds, failures);
    server.Stop();
  }
  std::printf(
      "batching clients=16 batch=8 without_examples_per_s=%.0f with_examples_per_s=%.0f "
      "gain=%.2f\n",
      rates[0], rates[1], rates[1] / rates[0]);
  return true;
}

int Run() {
  const int threads = absl::GetFlag(FLAGS_threads);
  const double seconds = absl::GetFlag(FLAGS_seconds);
  SetComputeThreads(threads);
  auto checkpoint = LoadCheckpoint(absl::GetFlag(FLAGS_checkpoint));
  if (!checkpoint.ok()) {
    spdlog::error("{}", checkpoint.status().ToString());
    return 1;
  }
  auto teacher = NetworkFromCheckpoint(*checkpoint);
  if (!teacher.ok()) {
    spdlog::error("{}", teacher.status().ToString());
    return 1;
  }
  auto choice = ParsePrecisionChoice(absl::GetFlag(FLAGS_precision));
  std::string why;
  auto precision =
      choice.ok() ? ResolvePrecision(*choice, PrecisionUse::kServing, &why) : choice.status();
  if (!precision.ok()) {
    spdlog::error("{}", precision.status().ToString());
    return 1;
  }
  (*teacher)->SetPrecision(*precision);
  std::printf("# teacher %s, %d compute threads, %.0f s per measurement, precision %s (%s)\n",
              (*teacher)->spec().ArchitectureString().c_str(), threads, seconds,
              PrecisionName(*precision), why.c_str());
  int64_t failures = 0;
  const double local_1024 = MeasureLargeBatches(**teacher, threads, seconds, &failures);
  if (local_1024 < 0) return 1;
  if (const std::vector<int64_t> sizes = (*teacher)->spec().MlpLayerSizes(); !sizes.empty()) {
    double flops_per_example = 0;
    const double matmul = ForwardMatmulGflops(sizes, 1024, *precision, &flops_per_example);
    const double ours = local_1024 * flops_per_example / 1e9;
    std::printf(
        "matmul batch=1024 precision=%s isa=%s matmul_gflops=%.1f in_process_gflops=%.1f "
        "in_process_over_matmul=%.3f\n",
        PrecisionName(*precision), CpuIsaName().c_str(), matmul, ours, ours / matmul);
    std::fflush(stdout);
  }
  if (!MeasureDynamicBatching((*teacher)->input_size(), threads, seconds, &failures)) return 1;
  std::printf("failed_calls=%ld\n", static_cast<long>(failures));
  return failures == 0 ? 0 : 1;
}

}  // namespace
}  // namespace distillery

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return distillery::Run();
}
