// Load test on loopback: one teacher (the paper's 784-1200-1200-10 size,
// TLS and a bearer token, its default limits) and 8 student processes
// (bench/load_client) with 4 calls of 128 images in flight each, for a
// bounded time. Asserts zero failed (or retried) calls and the teacher's RSS
// after the warm-up and at the end within 10% of each other; prints p50 and
// p99 latency over every call of every student.
//
// A second run sends calls of 1..1024 images drawn at random (8 students, one
// call in flight each) and checks the same.
//
// LOAD_TEST_SECONDS (default 20) sets the measured time, after a 5 s warm-up;
// LOAD_TEST_RANDOM_SECONDS (default 20) that of the random-size run;
// LOAD_TEST_PLAINTEXT=1 runs without TLS and token (to measure their cost).
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <sstream>
#include <thread>

#include "common/formats/checkpoint.h"
#include "gtest/gtest.h"
#include "tests/server_process.h"

namespace distillery {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// VmRSS of `pid` in KiB, or -1.
int64_t RssKib(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6));
  }
  return -1;
}

double Percentile(const std::vector<int64_t>& sorted, double p) {
  const size_t rank = static_cast<size_t>(std::ceil(p * static_cast<double>(sorted.size())));
  return static_cast<double>(sorted[std::min(sorted.size(), std::max<size_t>(rank, 1)) - 1]);
}

// One load run: kStudents load_client processes with `concurrency` calls in
// flight each, of `batch` images (1..batch when `random_batch`), for
// `seconds` after the warm-up.
struct LoadRun {
  int concurrency;
  int batch;
  bool random_batch;
  int seconds;
  int warmup_seconds = 5;
};

void RunLoad(const LoadRun& run) {
  constexpr int kStudents = 8;
  const int warmup_seconds = run.warmup_seconds;
  const int seconds = run.seconds;
  ASSERT_GT(seconds, 0);
  ASSERT_LE(seconds, 600);  // bounded
  const char* env_plaintext = std::getenv("LOAD_TEST_PLAINTEXT");
  const bool tls = env_plaintext == nullptr || std::string(env_plaintext) != "1";
  const std::string dir = testing::TempDir() + "/load." + std::to_string(getpid());
  mkdir(dir.c_str(), 0700);
  ASSERT_EQ(
      ServerProcess::Run("/bin/bash", {DISTILLERY_TEST_CERTS_SCRIPT, dir}, dir + "/certs.log"), 0)
      << ReadFile(dir + "/certs.log");
  std::ofstream(dir + "/token") << "load-test-token\n";
  // Random weights cost the same as trained ones.
  auto mlp = *Network::Create(*NetworkSpec::Parse("784-1200-1200-10", {1, 28, 28}), 1);
  const std::string checkpoint = dir + "/teacher.ckpt";
  ASSERT_TRUE(SaveCheckpoint(checkpoint, MakeCheckpoint(*mlp, "teacher")).ok());

  setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
  setenv("OMP_NUM_THREADS", "2", 1);
  std::vector<std::string> teacher_args = {"--checkpoint=" + checkpoint, "--no_transfer_set",
                                           "--metrics_address=", "--threads=2"};
  std::vector<std::string> credentials;
  if (tls) {
    teacher_args.insert(teacher_args.end(), {"--tls_cert_file=" + dir + "/server.pem",
                                             "--tls_key_file=" + dir + "/server.key",
                                             "--auth_token_file=" + dir + "/token"});
    credentials = {"--tls_ca_file=" + dir + "/ca.pem", "--auth_token_file=" + dir + "/token"};
  }
  ServerProcess teacher;
  ASSERT_TRUE(teacher.Start(DISTILLERY_TEACHER_SERVER_BINARY, teacher_args, dir,
                            std::chrono::seconds(60), 0, dir + "/teacher.log"))
      << ReadFile(dir + "/teacher.log");
  const int64_t rss_idle = RssKib(teacher.pid());

  setenv("OMP_NUM_THREADS", "1", 1);
  std::vector<pid_t> students;
  for (int s = 0; s < kStudents; ++s) {
    const std::string name = dir + "/student" + std::to_string(s);
    std::vector<std::string> args = {"--teacher=" + teacher.target(),
                                     "--seconds=" + std::to_string(warmup_seconds + seconds),
                                     "--warmup_seconds=" + std::to_string(warmup_seconds),
                                     "--concurrency=" + std::to_string(run.concurrency),
                                     "--batch=" + std::to_string(run.batch),
                                     run.random_batch ? "--random_batch" : "--norandom_batch",
                                     "--seed=" + std::to_string(s + 1),
                                     "--latencies_file=" + name + ".latencies"};
    args.insert(args.end(), credentials.begin(), credentials.end());
    students.push_back(
        ServerProcess::SpawnLogged(DISTILLERY_LOAD_CLIENT_BINARY, args, name + ".log"));
    ASSERT_NE(students.back(), 0);
  }
  std::this_thread::sleep_for(std::chrono::seconds(warmup_seconds));
  const int64_t rss_before = RssKib(teacher.pid());
  // The teacher's RSS every 5 s until the students are done.
  std::vector<int64_t> rss_samples = {rss_before};
  std::vector<int> statuses(kStudents, -1);
  std::vector<bool> done(kStudents, false);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds + 60);
  for (int finished = 0, tick = 0; finished < kStudents;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (++tick % 50 == 0) rss_samples.push_back(RssKib(teacher.pid()));
    for (int s = 0; s < kStudents; ++s) {
      if (!done[s] && waitpid(students[s], &statuses[s], WNOHANG) == students[s]) {
        done[s] = true;
        ++finished;
      }
    }
    if (std::chrono::steady_clock::now() > deadline) {
      for (int s = 0; s < kStudents; ++s) {
        if (!done[s]) kill(students[s], SIGKILL);
      }
      ADD_FAILURE() << "students still running 60 s past their time: killed";
      break;
    }
  }
  const int64_t rss_after = RssKib(teacher.pid());
  rss_samples.push_back(rss_after);
  std::string samples;
  for (int64_t r : rss_samples) samples += " " + std::to_string(r);

  std::vector<int64_t> latencies;
  int64_t failed_students = 0;
  for (int s = 0; s < kStudents; ++s) {
    const std::string name = dir + "/student" + std::to_string(s);
    const std::string log = ReadFile(name + ".log");
    std::printf("student %d: %s", s, log.substr(log.find("load_client:")).c_str());
    if (!(done[s] && WIFEXITED(statuses[s]) && WEXITSTATUS(statuses[s]) == 0)) {
      ++failed_students;
      ADD_FAILURE() << "student " << s << " had failed or retried calls:\n" << log;
    }
    std::ifstream in(name + ".latencies");
    for (int64_t l; in >> l;) latencies.push_back(l);
  }
  ASSERT_FALSE(latencies.empty());
  std::sort(latencies.begin(), latencies.end());
  const double change = static_cast<double>(rss_after - rss_before) / rss_before;
  std::printf(
      "load test: %d students x %d in flight, batch %s%d, %d s after a %d s warm-up, %s\n"
      "  calls %zu (%.1f/s), failed students %lld\n"
      "  latency p50 %.2f ms, p99 %.2f ms, max %.2f ms\n"
      "  teacher RSS idle %lld KiB, after warm-up %lld KiB, at the end %lld KiB (%+.1f%%)\n"
      "  teacher RSS every 5 s from the warm-up's end (KiB):%s\n",
      kStudents, run.concurrency, run.random_batch ? "1.." : "", run.batch, seconds, warmup_seconds,
      tls ? "TLS + token" : "plaintext", latencies.size(),
      static_cast<double>(latencies.size()) / seconds, static_cast<long long>(failed_students),
      Percentile(latencies, 0.5) / 1000, Percentile(latencies, 0.99) / 1000,
      static_cast<double>(latencies.back()) / 1000, static_cast<long long>(rss_idle),
      static_cast<long long>(rss_before), static_cast<long long>(rss_after), 100 * change,
      samples.c_str());
  EXPECT_EQ(failed_students, 0);
  EXPECT_LE(std::abs(change), 0.10)
      << "teacher RSS " << rss_before << " -> " << rss_after << " KiB";
  // Still serving, and drains cleanly.
  const int exit_status = teacher.Stop(SIGTERM);
  EXPECT_TRUE(WIFEXITED(exit_status) && WEXITSTATUS(exit_status) == 0)
      << ReadFile(dir + "/teacher.log");
}

int EnvSeconds(const char* name, int fallback) {
  const char* value = std::getenv(name);
  return value != nullptr ? std::atoi(value) : fallback;
}

TEST(LoadTest, EightStudentsFourCallsInFlightEachNoFailuresSteadyMemory) {
  RunLoad({/*concurrency=*/4, /*batch=*/128, /*random_batch=*/false,
           EnvSeconds("LOAD_TEST_SECONDS", 20)});
}

// Every batch size from 1 to the teacher's --max_batch (1024), drawn at
// random: the teacher's memory stays flat (its layers keep one tile shape
// of primitives, not one per batch size).
TEST(LoadTest, RandomSizesOneTo1024NoFailuresSteadyMemory) {
  // A longer warm-up: gRPC's buffers grow for the first large messages.
  RunLoad({/*concurrency=*/1, /*batch=*/1024, /*random_batch=*/true,
           EnvSeconds("LOAD_TEST_RANDOM_SECONDS", 20), /*warmup_seconds=*/10});
}

}  // namespace
}  // namespace distillery
