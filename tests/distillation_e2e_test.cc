// End to end on loopback with real processes: a teacher server, students
// distilling from it at the same time (their requests merged by the dynamic
// batcher), a teacher killed and restarted in the middle of a run, failover
// between replicas of the transfer set (seamless when identical, refused when
// the data differs), a student killed and resumed, and the refusals.
#include <arpa/inet.h>

#include <fstream>
#include <iterator>
#include <map>
#include <regex>
#include <sstream>
#include <thread>

#include "common/data/idx_dataset.h"
#include "common/formats/checkpoint.h"
#include "common/train/trainer.h"
#include "gtest/gtest.h"
#include "tests/server_process.h"

namespace distillery {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

bool FileExists(const std::string& path) { return std::ifstream(path).good(); }

bool ExitedZero(int status) { return status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0; }

// The body of GET http://127.0.0.1:<port>/metrics (empty on failure).
std::string FetchMetrics(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string response;
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0) {
    const std::string request = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (write(fd, request.data(), request.size()) == static_cast<ssize_t>(request.size())) {
      char buffer[4096];
      for (ssize_t n; (n = read(fd, buffer, sizeof(buffer))) > 0;) response.append(buffer, n);
    }
  }
  close(fd);
  return response;
}

// The value of the Prometheus sample `name` (with its labels) in `metrics`,
// or -1.
double Sample(const std::string& metrics, const std::string& name) {
  for (size_t at = metrics.find(name + " "); at != std::string::npos;
       at = metrics.find(name + " ", at + 1)) {
    if (at == 0 || metrics[at - 1] == '\n') return std::stod(metrics.substr(at + name.size() + 1));
  }
  return -1;
}

// The epochs a checkpoint has completed (-1 when it does not load).
int64_t EpochsCompleted(const std::string& path) {
  auto checkpoint = LoadCheckpoint(path);
  return checkpoint.ok() ? checkpoint->training_state().epochs_completed() : -1;
}

class DistillationE2eTest : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(testing::TempDir() + "/e2e." + std::to_string(getpid()));
    mkdir(dir_->c_str(), 0755);
    // A small teacher trained on MNIST [0, 5000).
    const int status = ServerProcess::Run(
        DISTILLERY_TEACHER_SERVER_BINARY,
        {"train", "--data_dir=" DISTILLERY_MNIST_DIR, "--train_range=0:5000",
         "--architecture=784-128-10", "--input_dropout=0", "--hidden_dropout=0", "--jitter=0",
         "--epochs=2", "--threads=1", "--checkpoint=" + TeacherCheckpoint()},
        *dir_ + "/teacher_train.log");
    ASSERT_TRUE(ExitedZero(status)) << ReadFile(*dir_ + "/teacher_train.log");
  }
  static void TearDownTestSuite() { delete dir_; }

  static std::string TeacherCheckpoint() { return *dir_ + "/teacher.ckpt"; }

  // Starts the teacher server; its transfer set is MNIST [5000, 8000) unless
  // `extra` (flags added last, so they win) says otherwise.
  static bool StartTeacher(ServerProcess* server, int port = 0,
                           const std::string& checkpoint = TeacherCheckpoint(),
                           const std::vector<std::string>& extra = {}) {
    std::vector<std::string> args = {
        "--checkpoint=" + checkpoint, "--data_dir=" DISTILLERY_MNIST_DIR,
        "--transfer_range=5000:8000", "--metrics_address=", "--threads=1"};
    args.insert(args.end(), extra.begin(), extra.end());
    return server->Start(DISTILLERY_TEACHER_SERVER_BINARY, args, *dir_, std::chrono::seconds(60),
                         port);
  }

  // Arguments of a student pulling shard 0 of 1 of the teacher's transfer set.
  static std::vector<std::string> StreamingStudentArgs(const std::string& target,
                                                       const std::string& name) {
    ServerProcess unused;
    std::vector<std::string> args = StudentArgs(unused, name, "784-32-10", 3.f);
    args.erase(std::remove(args.begin(), args.end(), "--jitter=1"), args.end());
    for (std::string& arg : args) {
      if (arg.rfind("--teacher=", 0) == 0) arg = "--teacher=" + target;
    }
    args.push_back("--source=teacher");
    args.push_back("--give_up_seconds=60");
    return args;
  }

  // Arguments of a distilling student on the local transfer set [5000, 8000).
  static std::vector<std::string> StudentArgs(const ServerProcess& teacher, const std::string& name,
                                              const std::string& architecture, float t) {
    return {"distill",
            "--teacher=" + teacher.target(),
            "--data_dir=" DISTILLERY_MNIST_DIR,
            "--train_range=5000:8000",
            "--architecture=" + architecture,
            "--distill_temperature=" + std::to_string(t),
            "--epochs=4",
            "--jitter=1",
            "--lr=0.05",
            "--threads=1",
            "--seed=11",
            "--call_deadline_seconds=5",
            "--give_up_seconds=30",
            "--checkpoint=" + *dir_ + "/" + name + ".ckpt",
            "--metrics_csv=" + *dir_ + "/" + name + ".csv"};
  }

  static std::vector<Tensor> Weights(const std::string& checkpoint_path) {
    std::vector<Tensor> weights;
    auto checkpoint = LoadCheckpoint(checkpoint_path);
    EXPECT_TRUE(checkpoint.ok()) << checkpoint.status();
    if (!checkpoint.ok()) return weights;
    auto mlp = NetworkFromCheckpoint(*checkpoint);
    for (Parameter* p : (*mlp)->Parameters()) weights.push_back(p->value);
    return weights;
  }

  static std::string* dir_;
};
std::string* DistillationE2eTest::dir_ = nullptr;

TEST_F(DistillationE2eTest, TwoStudentsDistillAtOnce) {
  ServerProcess teacher;
  ASSERT_TRUE(StartTeacher(&teacher));
  // One student on its own transfer set, one pulling the teacher's: different
  // widths and temperatures, running at the same time.
  std::vector<std::string> narrow = StudentArgs(teacher, "narrow", "784-32-10", 4.f);
  std::vector<std::string> wide = StudentArgs(teacher, "wide", "784-64-64-10", 8.f);
  wide.erase(std::remove(wide.begin(), wide.end(), "--jitter=1"), wide.end());
  wide.push_back("--source=teacher");
  wide.push_back("--epochs=12");  // its shard is half the transfer set
  wide.push_back("--num_shards=2");
  wide.push_back("--shard_index=1");
  const pid_t a =
      ServerProcess::SpawnLogged(DISTILLERY_STUDENT_TRAINER_BINARY, narrow, *dir_ + "/narrow.log");
  const pid_t b =
      ServerProcess::SpawnLogged(DISTILLERY_STUDENT_TRAINER_BINARY, wide, *dir_ + "/wide.log");
  ASSERT_NE(a, 0);
  ASSERT_NE(b, 0);
  EXPECT_TRUE(ExitedZero(ServerProcess::WaitWithTimeout(a, std::chrono::seconds(300))))
      << ReadFile(*dir_ + "/narrow.log");
  EXPECT_TRUE(ExitedZero(ServerProcess::WaitWithTimeout(b, std::chrono::seconds(300))))
      << ReadFile(*dir_ + "/wide.log");
  for (const std::string name : {"narrow", "wide"}) {
    const std::string log = ReadFile(*dir_ + "/" + name + ".log");
    EXPECT_NE(log.find("test errors out of 10000"), std::string::npos) << log;
    auto checkpoint = LoadCheckpoint(*dir_ + "/" + name + ".ckpt");
    ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
    auto student = NetworkFromCheckpoint(*checkpoint);
    ASSERT_TRUE(student.ok());
    // Evaluated on its own at T = 1, each student classifies far better
    // than chance (9,000 errors).
    auto mnist = LoadMnistFormatDirectory(DISTILLERY_MNIST_DIR);
    auto eval = Evaluate(**student, mnist->test);
    ASSERT_TRUE(eval.ok());
    EXPECT_LT(eval->errors, 2500) << name << "\n" << log;
  }
}

// Two students distil from one teacher at the same time, their requests
// merged into shared forward passes; the teacher is SIGKILLed after their
// first epoch and restarted on the same port. Both end with the weights of
// the same two students run one after the other on a fresh teacher.
TEST_F(DistillationE2eTest, MergedStudentsSurviveATeacherKillBitIdentical) {
  const int port = PickFreePort();
  const std::vector<std::string> names = {"calm", "brisk"};
  auto args_of = [&](const ServerProcess& teacher, size_t i) {
    std::vector<std::string> args = StudentArgs(teacher, names[i], "784-32-10", 5.f);
    args.push_back("--seed=" + std::to_string(21 + i));
    return args;
  };
  // One after the other, on a fresh teacher.
  std::map<std::string, std::vector<Tensor>> reference;
  {
    ServerProcess teacher;
    ASSERT_TRUE(StartTeacher(&teacher, port));
    for (size_t i = 0; i < names.size(); ++i) {
      const std::string log = *dir_ + "/" + names[i] + ".alone.log";
      ASSERT_TRUE(ExitedZero(
          ServerProcess::Run(DISTILLERY_STUDENT_TRAINER_BINARY, args_of(teacher, i), log)))
          << ReadFile(log);
      reference[names[i]] = Weights(*dir_ + "/" + names[i] + ".ckpt");
    }
  }
  // Together, through the dynamic batcher (a 20 ms batching wait), with
  // the teacher killed mid-run.
  const int metrics_port = PickFreePort();
  ServerProcess teacher;
  ASSERT_TRUE(StartTeacher(
      &teacher, port, TeacherCheckpoint(),
      {"--metrics_address=127.0.0.1:" + std::to_string(metrics_port), "--batch_wait_ms=20"}));
  std::vector<pid_t> students;
  for (size_t i = 0; i < names.size(); ++i) {
    const std::string checkpoint = *dir_ + "/" + names[i] + ".ckpt";
    std::remove(checkpoint.c_str());
    students.push_back(ServerProcess::SpawnLogged(DISTILLERY_STUDENT_TRAINER_BINARY,
                                                  args_of(teacher, i),
                                                  *dir_ + "/" + names[i] + ".together.log"));
    ASSERT_NE(students.back(), 0);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  for (const std::string& name : names) {
    while (!FileExists(*dir_ + "/" + name + ".ckpt") &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  // The batcher merged the two students' requests: more requests than
  // forward passes, and passes of more examples than one request holds (128).
  const std::string metrics = FetchMetrics(metrics_port);
  const double passes = Sample(metrics, "distill_forward_pass_requests_count");
  const double requests = Sample(metrics, "distill_forward_pass_requests_sum");
  const double small_passes = Sample(metrics, "distill_forward_pass_examples_bucket{le=\"128\"}");
  EXPECT_GT(passes, 0) << metrics;
  EXPECT_GT(requests, passes) << metrics;
  EXPECT_LT(small_passes, passes) << metrics;
  teacher.Stop(SIGKILL);
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  ServerProcess restarted;
  ASSERT_TRUE(StartTeacher(&restarted, port));
  for (size_t i = 0; i < names.size(); ++i) {
    const int status = ServerProcess::WaitWithTimeout(students[i], std::chrono::seconds(300));
    const std::string log = ReadFile(*dir_ + "/" + names[i] + ".together.log");
    ASSERT_TRUE(ExitedZero(status)) << log;
    EXPECT_NE(log.find("retrying"), std::string::npos) << "the teacher was never missed:\n" << log;
    const std::vector<Tensor> weights = Weights(*dir_ + "/" + names[i] + ".ckpt");
    ASSERT_EQ(weights.size(), reference[names[i]].size());
    for (size_t t = 0; t < weights.size(); ++t) {
      EXPECT_EQ(weights[t], reference[names[i]][t]) << names[i] << " tensor " << t;
    }
  }
}

// Failover between replicas of the transfer set: seamless between
// identical ones (the student ends with the weights of an uninterrupted
// run); refused, naming the difference, when the replica the stream fails
// over to serves another range of the data with the same checkpoint.
TEST_F(DistillationE2eTest, StreamFailsOverOnlyToTheSameTransferSet) {
  std::vector<Tensor> reference;
  {
    ServerProcess teacher;
    ASSERT_TRUE(StartTeacher(&teacher));
    const std::string log = *dir_ + "/stream_straight.log";
    ASSERT_TRUE(ExitedZero(
        ServerProcess::Run(DISTILLERY_STUDENT_TRAINER_BINARY,
                           StreamingStudentArgs(teacher.target(), "stream_straight"), log)))
        << ReadFile(log);
    reference = Weights(*dir_ + "/stream_straight.ckpt");
  }
  for (const bool same : {true, false}) {
    const std::string name = same ? "stream_same" : "stream_other";
    ServerProcess first, second;
    ASSERT_TRUE(StartTeacher(&first));
    ASSERT_TRUE(
        StartTeacher(&second, 0, TeacherCheckpoint(),
                     {same ? "--transfer_range=5000:8000" : "--transfer_range=8000:11000"}));
    const std::string checkpoint = *dir_ + "/" + name + ".ckpt";
    std::remove(checkpoint.c_str());
    const pid_t student = ServerProcess::SpawnLogged(
        DISTILLERY_STUDENT_TRAINER_BINARY,
        StreamingStudentArgs(first.target() + "," + second.target(), name),
        *dir_ + "/" + name + ".log");
    ASSERT_NE(student, 0);
    while (!FileExists(checkpoint)) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    first.Stop(SIGKILL);
    const int status = ServerProcess::WaitWithTimeout(student, std::chrono::seconds(300));
    const std::string log = ReadFile(*dir_ + "/" + name + ".log");
    if (same) {
      ASSERT_TRUE(ExitedZero(status)) << log;
      const std::vector<Tensor> weights = Weights(checkpoint);
      ASSERT_EQ(weights.size(), reference.size());
      for (size_t t = 0; t < weights.size(); ++t) EXPECT_EQ(weights[t], reference[t]) << t;
      continue;
    }
    EXPECT_FALSE(ExitedZero(status)) << log;
    EXPECT_NE(log.find("transfer set range [8000,11000) differs from [5000,8000)"),
              std::string::npos)
        << log;
    // Not a single batch of the other replica was trained on: the epoch it
    // broke off is not in the checkpoint, which still holds exactly the
    // epochs the student logged before the refusal, and the run did not end.
    const int64_t epochs = EpochsCompleted(checkpoint);
    EXPECT_GE(epochs, 1);
    EXPECT_LT(epochs, 4);
    EXPECT_EQ(log.find("epoch    " + std::to_string(epochs + 1) + "/4"), std::string::npos) << log;
    EXPECT_EQ(log.find("distilled student"), std::string::npos) << log;
  }
}

TEST_F(DistillationE2eTest, StudentFailsOverToAnotherReplica) {
  // Two replicas of the same teacher; the one the student uses first dies
  // after the first epoch and never comes back.
  ServerProcess first, second;
  ASSERT_TRUE(StartTeacher(&first));
  ASSERT_TRUE(StartTeacher(&second));
  std::vector<std::string> args = StudentArgs(first, "failover", "784-32-10", 3.f);
  for (std::string& arg : args) {
    if (arg.rfind("--teacher=", 0) == 0) arg += "," + second.target();
  }
  args.push_back("--give_up_seconds=60");
  const std::string checkpoint = *dir_ + "/failover.ckpt";
  std::remove(checkpoint.c_str());
  const pid_t student =
      ServerProcess::SpawnLogged(DISTILLERY_STUDENT_TRAINER_BINARY, args, *dir_ + "/failover.log");
  ASSERT_NE(student, 0);
  while (!FileExists(checkpoint)) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  first.Stop(SIGKILL);
  const int status = ServerProcess::WaitWithTimeout(student, std::chrono::seconds(300));
  const std::string log = ReadFile(*dir_ + "/failover.log");
  ASSERT_TRUE(ExitedZero(status)) << log;
  EXPECT_NE(log.find("test errors out of 10000"), std::string::npos) << log;
}

TEST_F(DistillationE2eTest, KilledStudentResumesToTheSameWeights) {
  ServerProcess teacher;
  ASSERT_TRUE(StartTeacher(&teacher));
  std::vector<std::string> args = StudentArgs(teacher, "resumed", "784-32-10", 3.f);
  const std::string checkpoint = *dir_ + "/resumed.ckpt";
  std::remove(checkpoint.c_str());
  ASSERT_TRUE(ExitedZero(ServerProcess::Run(DISTILLERY_STUDENT_TRAINER_BINARY,
                                            StudentArgs(teacher, "straight", "784-32-10", 3.f),
                                            *dir_ + "/straight.log")));
  // Kill the student once its first checkpoint exists, then resume it.
  const pid_t student =
      ServerProcess::SpawnLogged(DISTILLERY_STUDENT_TRAINER_BINARY, args, *dir_ + "/killed.log");
  while (!FileExists(checkpoint)) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  kill(student, SIGKILL);
  ServerProcess::WaitWithTimeout(student, std::chrono::seconds(30));
  args.push_back("--resume");
  const int status =
      ServerProcess::Run(DISTILLERY_STUDENT_TRAINER_BINARY, args, *dir_ + "/resumed.log");
  ASSERT_TRUE(ExitedZero(status)) << ReadFile(*dir_ + "/resumed.log");
  EXPECT_NE(ReadFile(*dir_ + "/resumed.log").find("resuming"), std::string::npos);
  const auto a = Weights(*dir_ + "/straight.ckpt"), b = Weights(checkpoint);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i], b[i]) << "tensor " << i;
}

// --validation_range holds examples out of the local transfer set and
// evaluates the student on them every epoch; --best_checkpoint keeps the epoch
// they choose. Ranges that leave nothing to train on, a held-out range with
// the teacher's transfer set, and a best checkpoint without validation are
// refused before training.
TEST_F(DistillationE2eTest, ValidationIsHeldOutOfTheLocalTransferSet) {
  ServerProcess teacher;
  ASSERT_TRUE(StartTeacher(&teacher));
  std::vector<std::string> args = StudentArgs(teacher, "validated", "784-32-10", 3.f);
  const std::string best = *dir_ + "/validated_best.ckpt";
  args.push_back("--validation_range=7000:8000");
  args.push_back("--best_checkpoint=" + best);
  const std::string log = *dir_ + "/validated.log";
  ASSERT_TRUE(ExitedZero(ServerProcess::Run(DISTILLERY_STUDENT_TRAINER_BINARY, args, log)))
      << ReadFile(log);
  // Trained on [5000, 7000): 2000 examples, not 3000.
  EXPECT_NE(ReadFile(log).find("local transfer set: 2000 examples"), std::string::npos)
      << ReadFile(log);
  std::istringstream csv(ReadFile(*dir_ + "/validated.csv"));
  std::string line;
  std::getline(csv, line);
  ASSERT_NE(line.find("validation_errors,validation_examples"), std::string::npos) << line;
  int rows = 0;
  int64_t fewest = -1;
  while (std::getline(csv, line)) {
    const int64_t examples = std::stoll(line.substr(line.rfind(',') + 1));
    const std::string before = line.substr(0, line.rfind(','));
    const int64_t errors = std::stoll(before.substr(before.rfind(',') + 1));
    EXPECT_EQ(examples, 1000) << line;
    EXPECT_GE(errors, 0);
    EXPECT_LT(errors, 500) << "a distilled student should beat chance: " << line;
    if (fewest < 0 || errors < fewest) fewest = errors;
    ++rows;
  }
  EXPECT_EQ(rows, 4);
  auto kept = LoadCheckpoint(best);
  ASSERT_TRUE(kept.ok()) << kept.status();
  EXPECT_EQ(kept->metadata().at("validation_errors"), std::to_string(fewest));
  EXPECT_EQ(kept->metadata().at("validation_examples"), "1000");

  struct Refusal {
    std::vector<std::string> extra;
    std::string message;
  };
  const std::vector<Refusal> refusals = {
      {{"--validation_range=4000:6000"}, "must lie within the training range [5000, 8000)"},
      {{"--validation_range=5000:8000"}, "leave examples to train on"},
      {{"--validation_range=7000:8000", "--source=teacher", "--jitter=0"},
       "--validation_range needs --source=local"},
      {{"--source=teacher", "--jitter=0", "--elastic_alpha=34"},
       "--elastic_alpha needs --source=local"},
      {{"--elastic_alpha=-1"}, "elastic distortion alpha must be in [0, 100]"},
      {{"--best_checkpoint=" + *dir_ + "/unvalidated.ckpt"},
       "a best checkpoint is chosen by validation errors"},
  };
  for (const Refusal& r : refusals) {
    std::vector<std::string> refused = StudentArgs(teacher, "refused", "784-32-10", 3.f);
    refused.erase(std::remove(refused.begin(), refused.end(), "--jitter=1"), refused.end());
    refused.insert(refused.end(), r.extra.begin(), r.extra.end());
    const std::string refused_log = *dir_ + "/refused.log";
    EXPECT_FALSE(
        ExitedZero(ServerProcess::Run(DISTILLERY_STUDENT_TRAINER_BINARY, refused, refused_log)));
    EXPECT_NE(ReadFile(refused_log).find(r.message), std::string::npos) << r.message << "\n"
                                                                        << ReadFile(refused_log);
  }
}

TEST_F(DistillationE2eTest, StudentRefusesAMismatchedTeacher) {
  // A teacher of 14x14 images: the student's 784 inputs do not fit.
  auto small = *Network::Create(*NetworkSpec::Parse("196-16-10", {1, 14, 14}), 1);
  const std::string small_checkpoint = *dir_ + "/small_teacher.ckpt";
  ASSERT_TRUE(SaveCheckpoint(small_checkpoint, MakeCheckpoint(*small, "teacher")).ok());
  ServerProcess server;
  ASSERT_TRUE(server.Start(DISTILLERY_TEACHER_SERVER_BINARY,
                           {"--checkpoint=" + small_checkpoint, "--no_transfer_set",
                            "--metrics_address=", "--threads=1"},
                           *dir_));
  const int status =
      ServerProcess::Run(DISTILLERY_STUDENT_TRAINER_BINARY,
                         StudentArgs(server, "misfit", "784-32-10", 2.f), *dir_ + "/misfit.log");
  EXPECT_FALSE(ExitedZero(status));
  EXPECT_NE(
      ReadFile(*dir_ + "/misfit.log").find("the data's examples have (1, 14, 14) = 196 values"),
      std::string::npos)
      << ReadFile(*dir_ + "/misfit.log");
  // Wrong class count.
  ServerProcess teacher;
  ASSERT_TRUE(StartTeacher(&teacher));
  EXPECT_FALSE(ExitedZero(ServerProcess::Run(DISTILLERY_STUDENT_TRAINER_BINARY,
                                             StudentArgs(teacher, "classes", "784-32-5", 2.f),
                                             *dir_ + "/classes.log")));
  EXPECT_NE(ReadFile(*dir_ + "/classes.log").find("has 10 classes"), std::string::npos);
}

TEST_F(DistillationE2eTest, StudentRefusesATeacherWhoseHashChanged) {
  const int port = PickFreePort();
  auto other = *Network::Create(*NetworkSpec::Parse("784-16-10", {1, 28, 28}), 99);
  const std::string other_checkpoint = *dir_ + "/other_teacher.ckpt";
  ASSERT_TRUE(SaveCheckpoint(other_checkpoint, MakeCheckpoint(*other, "teacher")).ok());
  ServerProcess teacher;
  ASSERT_TRUE(StartTeacher(&teacher, port));
  const std::string checkpoint = *dir_ + "/loyal.ckpt";
  std::remove(checkpoint.c_str());
  const pid_t student = ServerProcess::SpawnLogged(DISTILLERY_STUDENT_TRAINER_BINARY,
                                                   StudentArgs(teacher, "loyal", "784-32-10", 2.f),
                                                   *dir_ + "/loyal.log");
  while (!FileExists(checkpoint)) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  teacher.Stop(SIGKILL);
  ServerProcess impostor;
  ASSERT_TRUE(StartTeacher(&impostor, port, other_checkpoint));
  const int status = ServerProcess::WaitWithTimeout(student, std::chrono::seconds(120));
  const std::string log = ReadFile(*dir_ + "/loyal.log");
  EXPECT_FALSE(ExitedZero(status)) << log;
  EXPECT_NE(log.find("the teacher changed"), std::string::npos) << log;
  // The last checkpoint is kept.
  EXPECT_TRUE(LoadCheckpoint(checkpoint).ok());
}

}  // namespace
}  // namespace distillery
