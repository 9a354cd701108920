// One load-generating student: `--concurrency` callers, each with one
// GetSoftTargets call of `--batch` images in flight at a time, against the
// teacher at --teacher for --seconds, through the project's TeacherClient
// (TLS, mutual TLS and bearer token as a student's). Every call's latency
// after --warmup_seconds is recorded; a call that failed, or that succeeded
// only after the client retried it, counts as failed.
//
//   load_client --teacher=127.0.0.1:50051 --seconds=20 [--latencies_file=F]
//               [--tls_ca_file=ca.pem --auth_token_file=token ...]
//
// With --random_batch, each call carries 1..--batch images, drawn uniformly.
//
// Prints one line "load_client: calls N failed F retried R p50_ms X p99_ms Y
// calls_per_s Z examples_per_s E" and exits 1 when any call failed or was retried.
// tests/load_test.cc starts 8 of these against one teacher.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "common/tensor/dnnl_context.h"
#include "spdlog/spdlog.h"
#include "student_trainer/teacher_client.h"
#include "student_trainer/teacher_client_flags.h"

ABSL_FLAG(double, seconds, 20, "How long to send calls (warm-up included)");
ABSL_FLAG(double, warmup_seconds, 0, "Calls in the first this many seconds are not recorded");
ABSL_FLAG(int32_t, concurrency, 4, "Calls in flight at once (one caller thread each)");
ABSL_FLAG(int32_t, batch, 128, "Images per call (with --random_batch, the largest)");
ABSL_FLAG(bool, random_batch, false,
          "Draw each call's number of images uniformly from 1..--batch (every batch size the "
          "teacher serves, for its memory)");
ABSL_FLAG(double, temperature, 20, "Temperature of the soft targets asked for");
ABSL_FLAG(uint64_t, seed, 1, "Seed of the random images");
ABSL_FLAG(std::string, latencies_file, "",
          "Write every recorded latency here, in microseconds, one a line");

namespace distillery {
namespace {

double Percentile(std::vector<int64_t> sorted, double p) {
  if (sorted.empty()) return 0;
  const size_t rank = static_cast<size_t>(std::ceil(p * static_cast<double>(sorted.size())));
  return static_cast<double>(sorted[std::min(sorted.size(), std::max<size_t>(rank, 1)) - 1]);
}

int Run() {
  SetComputeThreads(1);
  absl::StatusOr<TeacherClientConfig> config = TeacherClientConfigFromFlags();
  if (!config.ok()) {
    spdlog::error("{}", config.status().ToString());
    return 2;
  }
  auto connected = TeacherClient::Connect(*config);
  if (!connected.ok()) {
    spdlog::error("cannot connect: {}", connected.status().ToString());
    return 1;
  }
  TeacherClient& client = **connected;
  const int64_t batch = absl::GetFlag(FLAGS_batch);
  const bool random_batch = absl::GetFlag(FLAGS_random_batch);
  const int concurrency = absl::GetFlag(FLAGS_concurrency);
  const float temperature = static_cast<float>(absl::GetFlag(FLAGS_temperature));
  const auto start = std::chrono::steady_clock::now();
  const auto warm = start + std::chrono::microseconds(
                                static_cast<int64_t>(absl::GetFlag(FLAGS_warmup_seconds) * 1e6));
  const auto end =
      start + std::chrono::microseconds(static_cast<int64_t>(absl::GetFlag(FLAGS_seconds) * 1e6));

  std::mutex mutex;
  std::vector<int64_t> latencies;  // guarded by mutex
  std::atomic<int64_t> failed{0}, examples{0};
  std::vector<std::thread> callers;
  for (int c = 0; c < concurrency; ++c) {
    callers.emplace_back([&, c] {
      std::mt19937_64 rng(absl::GetFlag(FLAGS_seed) * 1000 + static_cast<uint64_t>(c));
      std::string pixels(static_cast<size_t>(batch * client.input_size()), '\0');
      for (char& p : pixels) p = static_cast<char>(rng() & 0xFF);
      std::vector<int64_t> mine;
      Tensor probabilities;
      while (std::chrono::steady_clock::now() < end) {
        pixels[rng() % pixels.size()] = static_cast<char>(rng() & 0xFF);  // no two alike
        const int64_t rows = random_batch ? 1 + static_cast<int64_t>(rng() % batch) : batch;
        const std::string call_pixels =
            rows == batch ? pixels
                          : pixels.substr(0, static_cast<size_t>(rows * client.input_size()));
        const auto before = std::chrono::steady_clock::now();
        const absl::Status status =
            client.SoftTargets(call_pixels, rows, temperature, &probabilities);
        const auto after = std::chrono::steady_clock::now();
        if (!status.ok()) {
          ++failed;
          spdlog::error("call failed: {}", status.ToString());
          continue;
        }
        if (before >= warm) {
          examples += rows;
          mine.push_back(
              std::chrono::duration_cast<std::chrono::microseconds>(after - before).count());
        }
      }
      std::lock_guard<std::mutex> lock(mutex);
      latencies.insert(latencies.end(), mine.begin(), mine.end());
    });
  }
  for (std::thread& t : callers) t.join();
  const double measured =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - warm).count();
  std::sort(latencies.begin(), latencies.end());
  if (const std::string path = absl::GetFlag(FLAGS_latencies_file); !path.empty()) {
    std::ofstream out(path);
    for (int64_t l : latencies) out << l << "\n";
  }
  const int64_t retried = client.retries();
  std::printf(
      "load_client: calls %zu failed %lld retried %lld p50_ms %.2f p99_ms %.2f calls_per_s %.1f "
      "examples_per_s %.0f\n",
      latencies.size(), static_cast<long long>(failed.load()), static_cast<long long>(retried),
      Percentile(latencies, 0.50) / 1000, Percentile(latencies, 0.99) / 1000,
      static_cast<double>(latencies.size()) / measured,
      static_cast<double>(examples.load()) / measured);
  return failed == 0 && retried == 0 && !latencies.empty() ? 0 : 1;
}

}  // namespace
}  // namespace distillery

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return distillery::Run();
}
