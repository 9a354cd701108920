// An ensemble teacher end to end: two small teachers (an MLP and a CNN whose
// checkpoint normalises its inputs) served alone and together as real
// processes. The ensemble's arithmetic and geometric answers are what this
// test computes from the members' own answers; its transfer set gives the
// bits its requests give; a student distils from it; bad ensembles are
// refused at start.
#include <cmath>
#include <fstream>
#include <iterator>

#include "common/data/idx_dataset.h"
#include "common/formats/checkpoint.h"
#include "common/nn/softmax.h"
#include "common/train/evaluation.h"
#include "common/train/trainer.h"
#include "distill/v1/teacher.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/server_process.h"
#include "tests/test_util.h"

namespace distillery {
namespace {

using distill::v1::SoftTargetsRequest;
using distill::v1::SoftTargetsResponse;

constexpr float kTemperature = 2.5f;
constexpr int64_t kRows = 64;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

bool ExitedWith(int status, int code) {
  return status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == code;
}

class EnsembleE2eTest : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto mnist = LoadMnistFormatDirectory(DISTILLERY_MNIST_DIR);
    ASSERT_TRUE(mnist.ok()) << mnist.status();
    test_ = new Dataset(*SliceDataset(mnist->test, 0, kRows));
    const Dataset train = *SliceDataset(mnist->train, 0, 5000);
    mlp_ = new std::string(UniqueTempPath("ensemble_mlp.ckpt"));
    cnn_ = new std::string(UniqueTempPath("ensemble_cnn.ckpt"));
    normalised_ = new std::string(UniqueTempPath("ensemble_cnn_normalised.ckpt"));
    for (const auto& [path, architecture] :
         {std::pair{*mlp_, "784-64-10"}, {*cnn_, "conv5x5:8/same+bn,pool2,fc:10"}}) {
      TrainerConfig config;
      config.architecture = architecture;
      config.epochs = 3;
      config.log_progress = false;
      config.checkpoint_path = path;
      std::remove(path.c_str());
      auto trained = Train(config, train, Dataset());
      ASSERT_TRUE(trained.ok()) << trained.status();
    }
    // The CNN's weights under another preprocessing: a member that sees
    // other inputs than its partner for the same pixels.
    auto checkpoint = LoadCheckpoint(*cnn_);
    ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
    Preprocessing normalised;
    normalised.mean = {0.1307f};
    normalised.std = {0.3081f};
    SetCheckpointPreprocessing(normalised, &*checkpoint);
    ASSERT_TRUE(SaveCheckpoint(*normalised_, *checkpoint).ok());
  }
  static void TearDownTestSuite() {
    delete test_;
    delete mlp_;
    delete cnn_;
    delete normalised_;
  }

  // Starts `serve` with `args` (no transfer set unless `args` names one).
  static bool Serve(ServerProcess* server, std::vector<std::string> args) {
    args.insert(args.end(), {"--metrics_address=", "--threads=1", "--max_batch=256"});
    if (std::find_if(args.begin(), args.end(), [](const std::string& a) {
          return a.rfind("--data_dir", 0) == 0;
        }) == args.end()) {
      args.push_back("--no_transfer_set");
    }
    return server->Start(DISTILLERY_TEACHER_SERVER_BINARY, args, testing::TempDir());
  }

  // Targets for the test images, as full rows (values only: no top-k).
  static grpc::Status Ask(const ServerProcess& server, distill::v1::Representation representation,
                          SoftTargetsResponse* response) {
    auto stub = distill::v1::Teacher::NewStub(
        grpc::CreateChannel(server.target(), grpc::InsecureChannelCredentials()));
    SoftTargetsRequest request;
    request.set_num_examples(kRows);
    request.set_pixels_u8(std::string(reinterpret_cast<const char*>(test_->image(0)),
                                      static_cast<size_t>(kRows * test_->input_size())));
    request.mutable_options()->set_temperature(kTemperature);
    request.mutable_options()->set_representation(representation);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    return stub->GetSoftTargets(&context, request, response);
  }

  static distill::v1::ModelInfo Info(const ServerProcess& server) {
    auto stub = distill::v1::Teacher::NewStub(
        grpc::CreateChannel(server.target(), grpc::InsecureChannelCredentials()));
    grpc::ClientContext context;
    distill::v1::ModelInfo info;
    EXPECT_TRUE(stub->GetModelInfo(&context, {}, &info).ok());
    return info;
  }

  // A member's answer for the test images, served alone.
  struct Answers {
    std::vector<float> logits, probabilities;
  };
  static Answers Alone(const std::string& checkpoint) {
    ServerProcess server;
    EXPECT_TRUE(Serve(&server, {"--checkpoint=" + checkpoint}));
    Answers answers;
    for (auto representation : {distill::v1::LOGITS, distill::v1::PROBABILITIES}) {
      SoftTargetsResponse response;
      EXPECT_TRUE(Ask(server, representation, &response).ok());
      (representation == distill::v1::LOGITS ? answers.logits : answers.probabilities)
          .assign(response.targets().values().begin(), response.targets().values().end());
    }
    return answers;
  }

  static Dataset* test_;
  static std::string* mlp_;
  static std::string* cnn_;
  static std::string* normalised_;
};
Dataset* EnsembleE2eTest::test_ = nullptr;
std::string* EnsembleE2eTest::mlp_ = nullptr;
std::string* EnsembleE2eTest::cnn_ = nullptr;
std::string* EnsembleE2eTest::normalised_ = nullptr;

// softmax(z / T) of one row of 10 logits, in double.
std::vector<double> Softmax(const float* z) {
  const double top = *std::max_element(z, z + 10);
  std::vector<double> p(10);
  double sum = 0;
  for (int c = 0; c < 10; ++c) sum += p[c] = std::exp((z[c] - top) / kTemperature);
  for (double& v : p) v /= sum;
  return p;
}

TEST_F(EnsembleE2eTest, AnswersAreTheMeanOfTheMembersOwnAnswers) {
  const Answers a = Alone(*mlp_);
  const Answers b = Alone(*normalised_);
  ASSERT_EQ(a.logits.size(), static_cast<size_t>(kRows * 10));
  ASSERT_EQ(b.probabilities.size(), a.logits.size());
  const std::string members = "--checkpoint=" + *mlp_ + "," + *normalised_;
  ServerProcess arithmetic, geometric;
  ASSERT_TRUE(Serve(&arithmetic, {members, "--ensemble=arithmetic"}));
  ASSERT_TRUE(Serve(&geometric, {members, "--ensemble=geometric"}));

  SoftTargetsResponse mean_p, geo_p, geo_z, refused;
  ASSERT_TRUE(Ask(arithmetic, distill::v1::PROBABILITIES, &mean_p).ok());
  ASSERT_TRUE(Ask(geometric, distill::v1::PROBABILITIES, &geo_p).ok());
  ASSERT_TRUE(Ask(geometric, distill::v1::LOGITS, &geo_z).ok());
  const grpc::Status no_logits = Ask(arithmetic, distill::v1::LOGITS, &refused);
  EXPECT_EQ(no_logits.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(no_logits.error_message().find("no logits"), std::string::npos);
  // What the test computes from the members' answers: the mean of their
  // probabilities, and the softmax at T (the project's, as the members' own
  // answers use) of the mean of their logits.
  Tensor mean_z(kRows, 10), expected_geometric;
  for (int64_t i = 0; i < mean_z.size(); ++i) mean_z.data()[i] = (a.logits[i] + b.logits[i]) / 2.f;
  TemperatureSoftmax softmax;
  ASSERT_TRUE(softmax.Compute(mean_z, kTemperature, &expected_geometric).ok());
  double largest_difference = 0;  // between the members, so the test is not vacuous
  for (int i = 0; i < kRows * 10; ++i) {
    largest_difference =
        std::max<double>(largest_difference, std::abs(a.probabilities[i] - b.probabilities[i]));
    EXPECT_NEAR(mean_p.targets().values(i), (a.probabilities[i] + b.probabilities[i]) / 2, 1e-6)
        << i;
    EXPECT_NEAR(geo_p.targets().values(i), expected_geometric.data()[i], 1e-6) << i;
    EXPECT_NEAR(geo_z.targets().values(i), mean_z.data()[i], 1e-6) << i;
  }
  EXPECT_GT(largest_difference, 0.05);
  // And both are the exact means, computed in double, to the accuracy of a
  // float softmax.
  for (int64_t r = 0; r < kRows; ++r) {
    const std::vector<double> pa = Softmax(&a.logits[r * 10]), pb = Softmax(&b.logits[r * 10]);
    const std::vector<double> pg = Softmax(mean_z.row(r));
    for (int c = 0; c < 10; ++c) {
      const int i = static_cast<int>(r * 10 + c);
      EXPECT_NEAR(mean_p.targets().values(i), (pa[c] + pb[c]) / 2, 2e-5) << r << " " << c;
      EXPECT_NEAR(geo_p.targets().values(i), pg[c], 2e-5) << r << " " << c;
    }
  }

  // ModelInfo lists the members as each is served alone; the rule is part
  // of the identity.
  ServerProcess alone;
  ASSERT_TRUE(Serve(&alone, {"--checkpoint=" + *normalised_}));
  const distill::v1::ModelInfo info = Info(arithmetic), other = Info(geometric);
  const distill::v1::TeacherIdentity& terms = info.contract().teacher();
  EXPECT_EQ(terms.ensemble_rule(), "arithmetic");
  ASSERT_EQ(terms.members_size(), 2);
  EXPECT_EQ(terms.members(1).teacher_hash(), Info(alone).teacher_hash());
  EXPECT_EQ(terms.members(1).input().mean_size(), 1);
  EXPECT_FLOAT_EQ(terms.members(1).input().mean(0), 0.1307f);
  EXPECT_EQ(terms.input().scale(), 1.f);  // the ensemble takes raw pixel values
  EXPECT_NE(info.architecture().find(" | "), std::string::npos) << info.architecture();
  EXPECT_NE(info.teacher_hash(), other.teacher_hash());
  EXPECT_EQ(mean_p.contract().teacher_hash(), info.teacher_hash());
}

TEST_F(EnsembleE2eTest, TransferSetGivesTheRequestBitsAndAStudentDistils) {
  ServerProcess teacher;
  ASSERT_TRUE(Serve(&teacher, {"--checkpoint=" + *mlp_ + "," + *cnn_, "--ensemble=arithmetic",
                               "--data_dir=" DISTILLERY_MNIST_DIR, "--transfer_range=5000:8000"}));
  // The first batch of the stream, and the same pixels asked for directly.
  auto stub = distill::v1::Teacher::NewStub(
      grpc::CreateChannel(teacher.target(), grpc::InsecureChannelCredentials()));
  distill::v1::TransferSetRequest stream_request;
  stream_request.set_num_shards(1);
  stream_request.set_batch_size(32);
  stream_request.mutable_options()->set_temperature(kTemperature);
  grpc::ClientContext stream_context;
  auto reader = stub->StreamTransferSet(&stream_context, stream_request);
  distill::v1::TransferBatch batch;
  ASSERT_TRUE(reader->Read(&batch));
  stream_context.TryCancel();
  reader->Finish();
  SoftTargetsRequest request;
  request.set_num_examples(32);
  request.set_pixels_u8(batch.pixels_u8());
  request.mutable_options()->set_temperature(kTemperature);
  SoftTargetsResponse response;
  grpc::ClientContext context;
  ASSERT_TRUE(stub->GetSoftTargets(&context, request, &response).ok());
  ASSERT_EQ(response.targets().values_size(), batch.targets().values_size());
  for (int i = 0; i < batch.targets().values_size(); ++i) {
    ASSERT_EQ(response.targets().values(i), batch.targets().values(i)) << i;
  }
  EXPECT_EQ(batch.contract().teacher().members_size(), 2);

  // A student distils from it, pulling the transfer set.
  const std::string student = UniqueTempPath("ensemble_student.ckpt");
  const std::string log = UniqueTempPath("ensemble_student.log");
  std::remove(student.c_str());
  const int status = ServerProcess::Run(
      DISTILLERY_STUDENT_TRAINER_BINARY,
      {"distill", "--teacher=" + teacher.target(), "--data_dir=" DISTILLERY_MNIST_DIR,
       "--source=teacher", "--architecture=784-32-10", "--distill_temperature=2.5", "--epochs=10",
       "--lr=0.1", "--threads=1", "--seed=5", "--give_up_seconds=60", "--checkpoint=" + student},
      log);
  ASSERT_TRUE(ExitedWith(status, 0)) << ReadFile(log);
  auto checkpoint = LoadCheckpoint(student);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  auto network = NetworkFromCheckpoint(*checkpoint);
  ASSERT_TRUE(network.ok()) << network.status();
  auto mnist = LoadMnistFormatDirectory(DISTILLERY_MNIST_DIR);
  auto eval = Evaluate(**network, mnist->test);
  ASSERT_TRUE(eval.ok()) << eval.status();
  // Far better than chance (9,000 errors) after 10 epochs of 3,000 examples.
  EXPECT_LT(eval->errors, 1500) << ReadFile(log);
}

TEST_F(EnsembleE2eTest, BadEnsemblesAreRefusedAtStart) {
  const std::string log = UniqueTempPath("ensemble_refused.log");
  auto run = [&](std::vector<std::string> args) {
    args.insert(args.begin(), "serve");
    args.insert(args.end(), {"--no_transfer_set", "--metrics_address=", "--address=127.0.0.1:0"});
    return ServerProcess::Run(DISTILLERY_TEACHER_SERVER_BINARY, args, log,
                              std::chrono::seconds(60));
  };
  const std::string two = "--checkpoint=" + *mlp_ + "," + *cnn_;
  EXPECT_FALSE(ExitedWith(run({two}), 0));
  EXPECT_NE(ReadFile(log).find("--ensemble=arithmetic or --ensemble=geometric"), std::string::npos)
      << ReadFile(log);
  EXPECT_FALSE(ExitedWith(run({"--checkpoint=" + *mlp_, "--ensemble=geometric"}), 0));
  EXPECT_NE(ReadFile(log).find("needs several checkpoints"), std::string::npos) << ReadFile(log);
  EXPECT_TRUE(ExitedWith(run({two, "--ensemble=harmonic"}), 2));
  EXPECT_NE(ReadFile(log).find("unknown ensemble rule"), std::string::npos) << ReadFile(log);
  EXPECT_FALSE(ExitedWith(run({two + ",/nonexistent.ckpt", "--ensemble=geometric"}), 0));
  EXPECT_NE(ReadFile(log).find("/nonexistent.ckpt"), std::string::npos) << ReadFile(log);
}

}  // namespace
}  // namespace distillery
