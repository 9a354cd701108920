// End to end on loopback with real processes: a teacher server, students
// distilling from it at the same time, a teacher killed and restarted in the
// middle of a run, a student killed and resumed, and the refusals.
#include <fstream>
#include <iterator>
#include <thread>

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

  // Starts the teacher server; its transfer set is MNIST [5000, 8000).
  static bool StartTeacher(ServerProcess* server, int port = 0,
                           const std::string& checkpoint = TeacherCheckpoint()) {
    return server->Start(DISTILLERY_TEACHER_SERVER_BINARY,
                         {"--checkpoint=" + checkpoint, "--data_dir=" DISTILLERY_MNIST_DIR,
                          "--transfer_range=5000:8000", "--metrics_address=", "--threads=1"},
                         *dir_, std::chrono::seconds(60), port);
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

TEST_F(DistillationE2eTest, TeacherKilledAndRestartedMidRunChangesNothing) {
  const int port = PickFreePort();
  // The uninterrupted run.
  std::vector<Tensor> reference;
  {
    ServerProcess teacher;
    ASSERT_TRUE(StartTeacher(&teacher, port));
    const int status =
        ServerProcess::Run(DISTILLERY_STUDENT_TRAINER_BINARY,
                           StudentArgs(teacher, "calm", "784-32-10", 5.f), *dir_ + "/calm.log");
    ASSERT_TRUE(ExitedZero(status)) << ReadFile(*dir_ + "/calm.log");
    reference = Weights(*dir_ + "/calm.ckpt");
  }
  // The same run with the teacher killed after the first epoch and
  // restarted a second later on the same port.
  ServerProcess teacher;
  ASSERT_TRUE(StartTeacher(&teacher, port));
  const std::string checkpoint = *dir_ + "/stormy.ckpt";
  std::remove(checkpoint.c_str());
  const pid_t student = ServerProcess::SpawnLogged(DISTILLERY_STUDENT_TRAINER_BINARY,
                                                   StudentArgs(teacher, "stormy", "784-32-10", 5.f),
                                                   *dir_ + "/stormy.log");
  ASSERT_NE(student, 0);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (!FileExists(checkpoint) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  teacher.Stop(SIGKILL);
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  ServerProcess restarted;
  ASSERT_TRUE(StartTeacher(&restarted, port));
  const int status = ServerProcess::WaitWithTimeout(student, std::chrono::seconds(300));
  const std::string log = ReadFile(*dir_ + "/stormy.log");
  ASSERT_TRUE(ExitedZero(status)) << log;
  EXPECT_NE(log.find("retrying"), std::string::npos) << "the teacher was never missed:\n" << log;
  const std::vector<Tensor> weights = Weights(checkpoint);
  ASSERT_EQ(weights.size(), reference.size());
  for (size_t i = 0; i < weights.size(); ++i) EXPECT_EQ(weights[i], reference[i]) << "tensor " << i;
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
