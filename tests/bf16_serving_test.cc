// The teacher server's --precision: bf16 answers close to f32's under
// another teacher identity (same weights), and the choice of auto, logged,
// when oneDNN is capped below native bf16 (a real process each time).
#include <cstdlib>
#include <fstream>
#include <iterator>

#include "absl/strings/str_cat.h"
#include "common/data/dataset.h"
#include "common/data/idx_dataset.h"
#include "common/tensor/precision.h"
#include "common/train/trainer.h"
#include "distill/v1/teacher.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/server_process.h"
#include "tests/test_util.h"

namespace distillery {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

class Bf16ServingTest : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto mnist = LoadMnistFormatDirectory(DISTILLERY_MNIST_DIR);
    ASSERT_TRUE(mnist.ok()) << mnist.status();
    test_ = new Dataset(*SliceDataset(mnist->test, 0, 200));
    TrainerConfig config;
    config.architecture = "784-256-10";
    config.epochs = 1;
    config.log_progress = false;
    checkpoint_ = new std::string(UniqueTempPath("bf16_teacher.ckpt"));
    config.checkpoint_path = *checkpoint_;
    std::remove(checkpoint_->c_str());
    ASSERT_TRUE(Train(config, *SliceDataset(mnist->train, 0, 3000), Dataset()).ok());
  }
  static void TearDownTestSuite() {
    delete test_;
    delete checkpoint_;
  }

  // Starts a server in `precision`, its log at `log`.
  static bool Serve(ServerProcess* server, const std::string& precision, const std::string& log) {
    return server->Start(DISTILLERY_TEACHER_SERVER_BINARY,
                         {"--checkpoint=" + *checkpoint_, "--no_transfer_set",
                          "--metrics_address=", "--threads=1", "--precision=" + precision},
                         testing::TempDir(), std::chrono::seconds(60), 0, log);
  }

  static distill::v1::SoftTargetsResponse Ask(const ServerProcess& server) {
    auto stub = distill::v1::Teacher::NewStub(
        grpc::CreateChannel(server.target(), grpc::InsecureChannelCredentials()));
    distill::v1::SoftTargetsRequest request;
    request.set_num_examples(200);
    request.set_pixels_u8(std::string(reinterpret_cast<const char*>(test_->image(0)),
                                      static_cast<size_t>(200 * test_->input_size())));
    request.mutable_options()->set_temperature(2.f);
    distill::v1::SoftTargetsResponse response;
    grpc::ClientContext context;
    EXPECT_TRUE(stub->GetSoftTargets(&context, request, &response).ok());
    return response;
  }

  static Dataset* test_;
  static std::string* checkpoint_;
};
Dataset* Bf16ServingTest::test_ = nullptr;
std::string* Bf16ServingTest::checkpoint_ = nullptr;

TEST_F(Bf16ServingTest, Bf16AnswersAreCloseUnderItsOwnIdentity) {
  if (!CpuHasNativeBf16()) GTEST_SKIP() << "oneDNN ISA " << CpuIsaName() << " has no bf16";
  ServerProcess f32, bf16;
  ASSERT_TRUE(Serve(&f32, "f32", UniqueTempPath("f32_server.log")));
  const std::string log = UniqueTempPath("bf16_server.log");
  ASSERT_TRUE(Serve(&bf16, "bf16", log));
  EXPECT_NE(ReadFile(log).find("precision bf16 (asked for"), std::string::npos) << ReadFile(log);
  const distill::v1::SoftTargetsResponse exact = Ask(f32), rounded = Ask(bf16);
  const distill::v1::TeacherIdentity& a = exact.contract().teacher();
  const distill::v1::TeacherIdentity& b = rounded.contract().teacher();
  EXPECT_EQ(a.precision(), distill::v1::PRECISION_F32);
  EXPECT_EQ(b.precision(), distill::v1::PRECISION_BF16);
  EXPECT_EQ(a.weights_hash(), b.weights_hash());
  EXPECT_NE(exact.contract().teacher_hash(), rounded.contract().teacher_hash());
  ASSERT_EQ(exact.targets().values_size(), rounded.targets().values_size());
  double largest = 0;
  int agree = 0;
  for (int r = 0; r < 200; ++r) {
    int top_a = 0, top_b = 0;
    for (int c = 0; c < 10; ++c) {
      const float pa = exact.targets().values(r * 10 + c),
                  pb = rounded.targets().values(r * 10 + c);
      largest = std::max<double>(largest, std::abs(pa - pb));
      if (pa > exact.targets().values(r * 10 + top_a)) top_a = c;
      if (pb > rounded.targets().values(r * 10 + top_b)) top_b = c;
    }
    agree += top_a == top_b;
  }
  EXPECT_GT(largest, 0.0);
  EXPECT_LT(largest, 0.01);
  EXPECT_GE(agree, 198);
}

TEST_F(Bf16ServingTest, AutoIsF32BelowNativeBf16AndBf16IsRefused) {
  setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE", 1);
  ServerProcess server;
  const std::string log = UniqueTempPath("capped_server.log");
  const bool started = Serve(&server, "auto", log);
  unsetenv("ONEDNN_MAX_CPU_ISA");
  ASSERT_TRUE(started) << ReadFile(log);
  // The cap is an upper bound: an AVX2 CPU reports avx2 under it.
  const std::string served_log = ReadFile(log);
  const std::string prefix = "precision f32 (auto: oneDNN ISA ";
  const size_t at = served_log.find(prefix);
  ASSERT_NE(at, std::string::npos) << served_log;
  const size_t isa_start = at + prefix.size();
  const std::string isa = served_log.substr(isa_start, served_log.find(' ', isa_start) - isa_start);
  EXPECT_TRUE(isa == "avx512_core" || isa == "avx2" || isa == "avx" || isa == "sse41") << isa;
  EXPECT_NE(served_log.find(absl::StrCat(prefix, isa, " has no native bf16)")), std::string::npos)
      << ReadFile(log);
  EXPECT_EQ(Ask(server).contract().teacher().precision(), distill::v1::PRECISION_F32);
  server.Stop();
  setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE", 1);
  ServerProcess refused;
  const std::string refused_log = UniqueTempPath("refused_server.log");
  EXPECT_FALSE(Serve(&refused, "bf16", refused_log));
  unsetenv("ONEDNN_MAX_CPU_ISA");
  EXPECT_NE(ReadFile(refused_log).find("--precision=bf16 needs a CPU with native bf16"),
            std::string::npos)
      << ReadFile(refused_log);
}

}  // namespace
}  // namespace distillery
