// Checkpoints written by release 0.1 (format version 1, multilayer
// perceptrons only) still load, compute and serve the same outputs; and a
// convolutional teacher serves as an MLP does.
//
// tests/data/mlp_release1.ckpt was written by release 0.1 (commit f8124b6):
//   student_trainer baseline --data_dir=MNIST --train_range=0:5000
//       --architecture=784-32-10 --input_dropout=0.2 --hidden_dropout=0.5
//       --epochs=1 --seed=3 --threads=2 --checkpoint=mlp_release1.ckpt
// and mlp_release1.logits / .probabilities are that release's outputs for the
// first 100 MNIST test images (student_trainer export --dump_outputs=...,
// without and with --softmax): 100 x 10 little-endian float32.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <numeric>

#include "common/data/batches.h"
#include "common/data/idx_dataset.h"
#include "common/formats/checkpoint.h"
#include "common/formats/target_codec.h"
#include "common/nn/softmax.h"
#include "common/train/trainer.h"
#include "distill/v1/teacher.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/server_process.h"

namespace distillery {
namespace {

constexpr int kExamples = 100;
constexpr int kClasses = 10;

std::string DataPath(const std::string& name) {
  return std::string(DISTILLERY_TEST_DATA_DIR) + "/" + name;
}

std::vector<float> ReadFloats(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  std::vector<float> values(bytes.size() / 4);
  std::memcpy(values.data(), bytes.data(), values.size() * 4);
  return values;
}

Dataset TestImages() {
  absl::StatusOr<MnistFormatData> mnist = LoadMnistFormatDirectory(DISTILLERY_MNIST_DIR);
  EXPECT_TRUE(mnist.ok()) << mnist.status();
  return *SliceDataset(mnist->test, 0, kExamples);
}

// The reference outputs were computed on an AVX-512 CPU. oneDNN's kernels
// for another ISA (AVX2, say) sum the 784 products in another order, which
// moves a float32 logit by a few units in its last place: the bound is
// relative, 1e-6 of the value's magnitude (about 8 ulps), and never below 1e-6.
void ExpectNear(const float* actual, const std::vector<float>& expected, const char* what) {
  ASSERT_EQ(expected.size(), size_t{kExamples * kClasses});
  for (size_t i = 0; i < expected.size(); ++i) {
    ASSERT_NEAR(actual[i], expected[i], 1e-6 * std::max(1.0f, std::abs(expected[i])))
        << what << " value " << i;
  }
}

TEST(CompatTest, Release1CheckpointLoadsAndComputesTheSameOutputs) {
  absl::StatusOr<distill::v1::Checkpoint> checkpoint =
      LoadCheckpoint(DataPath("mlp_release1.ckpt"));
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  EXPECT_EQ(checkpoint->format_version(), 1u);
  absl::StatusOr<std::unique_ptr<Network>> network = NetworkFromCheckpoint(*checkpoint);
  ASSERT_TRUE(network.ok()) << network.status();
  EXPECT_EQ((*network)->spec().ArchitectureString(), "784-32-10");
  EXPECT_EQ((*network)->input_shape(), (Shape{1, 28, 28}));

  const Dataset test = TestImages();
  std::vector<int64_t> ids(kExamples);
  std::iota(ids.begin(), ids.end(), 0);
  Tensor inputs;
  GatherBatch(test, ids, 0, nullptr, &inputs, nullptr);
  const Tensor* logits = nullptr;
  ASSERT_TRUE((*network)->Predict(inputs, &logits).ok());
  ExpectNear(logits->data(), ReadFloats(DataPath("mlp_release1.logits")), "logits");
  TemperatureSoftmax softmax;
  Tensor probabilities;
  ASSERT_TRUE(softmax.Compute(*logits, 1.f, &probabilities).ok());
  ExpectNear(probabilities.data(), ReadFloats(DataPath("mlp_release1.probabilities")),
             "probabilities");

  // Rewritten by this release (format version 2), it stays the same network.
  distill::v1::Checkpoint rewritten = MakeCheckpoint(**network, checkpoint->role());
  EXPECT_EQ(rewritten.format_version(), kCheckpointFormatVersion);
  absl::StatusOr<std::unique_ptr<Network>> again = NetworkFromCheckpoint(rewritten);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(WeightsFingerprint(**again), WeightsFingerprint(**network));
}

TEST(CompatTest, Release1CheckpointServesTheSameSoftTargets) {
  ServerProcess server;
  ASSERT_TRUE(server.Start(DISTILLERY_TEACHER_SERVER_BINARY,
                           {"--checkpoint=" + DataPath("mlp_release1.ckpt"),
                            "--metrics_address=", "--threads=1", "--default_temperature=1"},
                           testing::TempDir()));
  auto stub = distill::v1::Teacher::NewStub(
      grpc::CreateChannel(server.target(), grpc::InsecureChannelCredentials()));
  const Dataset test = TestImages();
  distill::v1::SoftTargetsRequest request;
  request.set_num_examples(kExamples);
  request.set_pixels_u8(
      std::string(reinterpret_cast<const char*>(test.pixels.data()), test.pixels.size()));
  distill::v1::SoftTargetsResponse response;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  const grpc::Status status = stub->GetSoftTargets(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  Tensor probabilities;
  TemperatureSoftmax softmax;
  ASSERT_TRUE(
      DecodeTargets(response.targets(), response.contract(), &softmax, &probabilities).ok());
  ExpectNear(probabilities.data(), ReadFloats(DataPath("mlp_release1.probabilities")),
             "served probabilities");
}

// A convolutional teacher serves exactly as an MLP does: its channels in
// ModelInfo, soft targets equal to the in-process network's at the
// requested temperature, and its transfer set's precomputed targets.
TEST(ConvolutionalTeacherTest, ServesItsSoftTargetsAndTransferSet) {
  const std::string path = testing::TempDir() + "/conv_teacher." + std::to_string(getpid());
  auto network = *Network::Create(
      *NetworkSpec::Parse("conv5x5:6/same+bn,maxpool2,conv3x3:8,avgpool2,fc:10", {1, 28, 28}), 4);
  ASSERT_TRUE(SaveCheckpoint(path, MakeCheckpoint(*network, "teacher")).ok());
  ServerProcess server;
  ASSERT_TRUE(server.Start(DISTILLERY_TEACHER_SERVER_BINARY,
                           {"--checkpoint=" + path, "--data_dir=" DISTILLERY_MNIST_DIR,
                            "--transfer_range=0:300", "--metrics_address=", "--threads=1"},
                           testing::TempDir()));
  auto stub = distill::v1::Teacher::NewStub(
      grpc::CreateChannel(server.target(), grpc::InsecureChannelCredentials()));
  distill::v1::ModelInfo info;
  {
    grpc::ClientContext context;
    ASSERT_TRUE(stub->GetModelInfo(&context, {}, &info).ok());
  }
  EXPECT_EQ(info.image_channels(), 1u);
  EXPECT_EQ(info.architecture(), network->spec().ArchitectureString());

  const Dataset test = TestImages();
  std::vector<int64_t> ids(kExamples);
  std::iota(ids.begin(), ids.end(), 0);
  Tensor inputs;
  GatherBatch(test, ids, 0, nullptr, &inputs, nullptr);
  const Tensor* logits = nullptr;
  ASSERT_TRUE(network->Predict(inputs, &logits).ok());
  TemperatureSoftmax softmax;
  Tensor expected;
  ASSERT_TRUE(softmax.Compute(*logits, 4.f, &expected).ok());

  distill::v1::SoftTargetsRequest request;
  request.set_num_examples(kExamples);
  request.set_pixels_u8(
      std::string(reinterpret_cast<const char*>(test.pixels.data()), test.pixels.size()));
  request.mutable_options()->set_temperature(4.f);
  distill::v1::SoftTargetsResponse response;
  grpc::ClientContext context;
  ASSERT_TRUE(stub->GetSoftTargets(&context, request, &response).ok());
  Tensor served;
  ASSERT_TRUE(DecodeTargets(response.targets(), response.contract(), &softmax, &served).ok());
  ASSERT_EQ(served.size(), expected.size());
  for (int64_t i = 0; i < served.size(); ++i) {
    ASSERT_NEAR(served.data()[i], expected.data()[i], 1e-6) << i;
  }

  // The transfer set's first batch: targets for its own images.
  distill::v1::TransferSetRequest stream_request;
  stream_request.set_num_shards(1);
  stream_request.set_batch_size(50);
  stream_request.mutable_options()->set_temperature(4.f);
  grpc::ClientContext stream_context;
  auto reader = stub->StreamTransferSet(&stream_context, stream_request);
  distill::v1::TransferBatch batch;
  ASSERT_TRUE(reader->Read(&batch));
  stream_context.TryCancel();
  ASSERT_EQ(batch.example_ids_size(), 50);
  Dataset images;
  images.num_examples = 50;
  images.image_rows = images.image_cols = 28;
  images.pixels.assign(batch.pixels_u8().begin(), batch.pixels_u8().end());
  std::vector<int64_t> rows(50);
  std::iota(rows.begin(), rows.end(), 0);
  GatherBatch(images, rows, 0, nullptr, &inputs, nullptr);
  ASSERT_TRUE(network->Predict(inputs, &logits).ok());
  ASSERT_TRUE(softmax.Compute(*logits, 4.f, &expected).ok());
  ASSERT_TRUE(DecodeTargets(batch.targets(), batch.contract(), &softmax, &served).ok());
  for (int64_t i = 0; i < served.size(); ++i) {
    ASSERT_NEAR(served.data()[i], expected.data()[i], 1e-6) << i;
  }
}

}  // namespace
}  // namespace distillery
