// Input preprocessing as part of the teacher (common/data/preprocessing.h):
// the arithmetic and its exact inverse, the checkpoint fields and their
// compatibility, the import flags and their refusals, and a real
// `teacher_server serve --onnx --input_mean --input_std` whose pixels,
// float inputs, transfer set and ModelInfo all agree.
#include "common/data/preprocessing.h"

#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "common/data/batches.h"
#include "common/data/idx_dataset.h"
#include "common/formats/checkpoint.h"
#include "common/formats/contract.h"
#include "common/formats/onnx_import.h"
#include "common/formats/target_codec.h"
#include "common/nn/softmax.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "student_trainer/remote_sources.h"
#include "student_trainer/teacher_client.h"
#include "tests/onnx_test_models.h"
#include "tests/server_process.h"
#include "tests/test_util.h"

namespace distillery {
namespace {

using ::testing::HasSubstr;

constexpr float kMnistMean = 0.1307f;
constexpr float kMnistStd = 0.3081f;

Preprocessing Mnist() {
  Preprocessing p;
  p.mean = {kMnistMean};
  p.std = {kMnistStd};
  return p;
}

TEST(PreprocessingTest, DefaultIsGatherBatchsPixelsOver255) {
  const Preprocessing p;
  EXPECT_TRUE(p.IsDefault());
  EXPECT_TRUE(p.Validate(3).ok());
  for (int v = 0; v < 256; ++v) EXPECT_EQ(p.Value(0, v), static_cast<float>(v) / 255.f);
  EXPECT_FALSE(Mnist().IsDefault());
}

TEST(PreprocessingTest, ValueIsScaleThenMeanThenStdPerChannel) {
  Preprocessing p;
  p.scale = 0.5f;
  p.mean = {1.f, -2.f, 0.25f};
  p.std = {2.f, 0.5f, 4.f};
  ASSERT_TRUE(p.Validate(3).ok());
  EXPECT_FLOAT_EQ(p.Value(0, 10), (10 * 0.5f - 1.f) / 2.f);
  EXPECT_FLOAT_EQ(p.Value(1, 10), (10 * 0.5f + 2.f) / 0.5f);
  EXPECT_FLOAT_EQ(p.Value(2, 255), (255 * 0.5f - 0.25f) / 4.f);
  const std::vector<float> table = p.Table(3);
  ASSERT_EQ(table.size(), 3u * 256);
  EXPECT_EQ(table[1 * 256 + 7], p.Value(1, 7));
  // Planar images: channel c of every example through its own row.
  const std::vector<uint8_t> pixels = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};  // 2 x (3 x 2)
  std::vector<float> out(12);
  ApplyPixelTable(table, 3, 2, 2, pixels.data(), out.data());
  for (int i = 0; i < 12; ++i) EXPECT_EQ(out[i], p.Value((i / 2) % 3, pixels[i])) << i;
}

TEST(PreprocessingTest, PixelRebuildsEveryPixelExactly) {
  Preprocessing odd;
  odd.scale = 1.f / 127.5f;
  odd.mean = {1.f, 0.485f, -3.f};
  odd.std = {1.f, 0.229f, 7.f};
  for (const Preprocessing& p : {Preprocessing(), Mnist(), odd}) {
    const int64_t channels = static_cast<int64_t>(std::max<size_t>(p.mean.size(), 1));
    for (int64_t c = 0; c < channels; ++c) {
      for (int v = 0; v < 256; ++v) {
        ASSERT_EQ(p.Pixel(c, p.Value(c, v)), v) << p.Describe() << " channel " << c;
      }
    }
    // Out of range and NaN inputs clamp.
    EXPECT_EQ(p.Pixel(0, 1e9f), 255);
    EXPECT_EQ(p.Pixel(0, -1e9f), 0);
    EXPECT_EQ(p.Pixel(0, std::numeric_limits<float>::quiet_NaN()), 0);
  }
}

TEST(PreprocessingTest, InvalidValuesAreRefusedByName) {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  auto refused = [](Preprocessing p, int64_t channels) {
    absl::Status s = p.Validate(channels);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << p.Describe();
    return std::string(s.message());
  };
  Preprocessing p;
  p.scale = 0.f;
  EXPECT_THAT(refused(p, 1), HasSubstr("input scale 0 is not a finite number > 0"));
  p.scale = -1.f;
  EXPECT_THAT(refused(p, 1), HasSubstr("scale -1"));
  p.scale = inf;
  EXPECT_THAT(refused(p, 1), HasSubstr("scale inf"));
  p.scale = nan;
  EXPECT_THAT(refused(p, 1), HasSubstr("scale nan"));
  p = Preprocessing();
  p.std = {0.f};
  EXPECT_THAT(refused(p, 1), HasSubstr("input std 0 is not a finite number > 0"));
  p.std = {-0.5f};
  EXPECT_THAT(refused(p, 1), HasSubstr("std -0.5"));
  p.std = {inf};
  EXPECT_THAT(refused(p, 1), HasSubstr("std inf"));
  p = Preprocessing();
  p.mean = {nan};
  EXPECT_THAT(refused(p, 1), HasSubstr("input mean nan is not finite"));
  p.mean = {0.1f, 0.2f};
  EXPECT_THAT(refused(p, 3), HasSubstr("input mean has 2 values for 3 channels"));
  p = Preprocessing();
  p.std = {0.1f, 0.2f, 0.3f};
  EXPECT_THAT(refused(p, 1), HasSubstr("input std has 3 values for 1 channel"));
}

TEST(PreprocessingTest, ParseFloatList) {
  EXPECT_THAT(*ParseFloatList("0.485,0.456, 0.406", "--input_mean"),
              ::testing::ElementsAre(0.485f, 0.456f, 0.406f));
  EXPECT_TRUE(ParseFloatList("", "--input_mean")->empty());
  auto bad = ParseFloatList("0.1,x", "--input_std");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("--input_std: \"x\" is not a number"));
  EXPECT_FALSE(ParseFloatList("0.1,", "--input_std").ok());
}

// A small network's checkpoint on 1 x 28 x 28 inputs.
distill::v1::Checkpoint SmallCheckpoint() {
  auto spec = NetworkSpec::Parse("conv3x3:2,maxpool2,fc:10", {1, 28, 28});
  EXPECT_TRUE(spec.ok()) << spec.status();
  auto network = Network::Create(*spec, 7);
  EXPECT_TRUE(network.ok()) << network.status();
  return MakeCheckpoint(**network, "teacher");
}

TEST(PreprocessingCheckpointTest, RecordedReadBackAndDescribed) {
  distill::v1::Checkpoint c = SmallCheckpoint();
  // MakeCheckpoint records what training fed the network: pixels / 255.
  ASSERT_TRUE(c.architecture().has_input_scale());
  EXPECT_EQ(c.architecture().input_scale(), kPixelScale);
  EXPECT_TRUE(CheckpointPreprocessing(c)->IsDefault());
  SetCheckpointPreprocessing(Mnist(), &c);
  const std::string path = UniqueTempPath("preprocessing.ckpt");
  ASSERT_TRUE(SaveCheckpoint(path, c).ok());
  auto loaded = LoadCheckpoint(path);
  std::remove(path.c_str());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  auto p = CheckpointPreprocessing(*loaded);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->scale, kPixelScale);
  EXPECT_THAT(p->mean, ::testing::ElementsAre(kMnistMean));
  EXPECT_THAT(p->std, ::testing::ElementsAre(kMnistStd));
  EXPECT_THAT(*DescribeCheckpoint(*loaded),
              HasSubstr("preprocessing:   (pixel x scale - mean) / std: scale 0.00392157, mean "
                        "[0.1307], std [0.3081]"));
}

TEST(PreprocessingCheckpointTest, OldCheckpointsMeanPixelsOver255) {
  // A checkpoint without the fields (an absent scale, no mean or std).
  distill::v1::Checkpoint c = SmallCheckpoint();
  c.mutable_architecture()->clear_input_scale();
  ASSERT_TRUE(ValidateCheckpoint(c).ok());
  auto p = CheckpointPreprocessing(c);
  ASSERT_TRUE(p.ok());
  EXPECT_TRUE(p->IsDefault());
  EXPECT_EQ(p->scale, kPixelScale);
  // Release 0.1's MLP.
  auto release1 = LoadCheckpoint(DISTILLERY_TEST_DATA_DIR "/mlp_release1.ckpt");
  ASSERT_TRUE(release1.ok()) << release1.status();
  EXPECT_TRUE(CheckpointPreprocessing(*release1)->IsDefault());
}

TEST(PreprocessingCheckpointTest, InvalidPreprocessingIsDataLoss) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  struct Case {
    float scale;
    std::vector<float> mean, std;
    const char* message;
  };
  for (const Case& k : std::vector<Case>{
           {0.f, {}, {}, "input scale 0"},
           {-1.f, {}, {}, "input scale -1"},
           {nan, {}, {}, "input scale nan"},
           {kPixelScale, {}, {0.f}, "input std 0"},
           {kPixelScale, {nan}, {}, "input mean nan"},
           {kPixelScale, {0.1f, 0.2f}, {}, "input mean has 2 values for 1 channel"},
       }) {
    distill::v1::Checkpoint c = SmallCheckpoint();
    Preprocessing p;
    p.scale = k.scale;
    p.mean = k.mean;
    p.std = k.std;
    SetCheckpointPreprocessing(p, &c);
    absl::Status s = ValidateCheckpoint(c);
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << k.message;
    EXPECT_THAT(s.message(), HasSubstr(k.message));
    // And a file with it is refused when loaded.
    const std::string path = UniqueTempPath("bad_preprocessing.ckpt");
    ASSERT_TRUE(SaveCheckpoint(path, c).ok());
    EXPECT_EQ(LoadCheckpoint(path).status().code(), absl::StatusCode::kDataLoss);
    std::remove(path.c_str());
  }
}

// Conv(1 -> 3, 5x5) -> Relu -> MaxPool(2) -> Flatten -> Gemm(432 -> 10) on
// (N, 1, 28, 28): an MNIST-shaped exported classifier.
onnx::ModelProto MnistShapedModel() {
  onnx_test::ModelBuilder b({-1, 1, 28, 28});
  b.Producer("pytorch", "1.13.1");
  onnx::NodeProto* conv = b.Node("Conv",
                                 {"", b.Weight("conv.w", {3, 1, 5, 5}, onnx_test::Values(75, 1)),
                                  b.Weight("conv.b", {3}, onnx_test::Values(3, 2))},
                                 "conv");
  onnx_test::SetInts(conv, "kernel_shape", {5, 5});
  b.Node("Relu", {""});
  onnx::NodeProto* pool = b.Node("MaxPool", {""});
  onnx_test::SetInts(pool, "kernel_shape", {2, 2});
  onnx_test::SetInts(pool, "strides", {2, 2});
  b.Node("Flatten", {""});
  onnx::NodeProto* fc = b.Node("Gemm",
                               {"", b.Weight("fc.w", {10, 432}, onnx_test::Values(4320, 3)),
                                b.Weight("fc.b", {10}, onnx_test::Values(10, 4))},
                               "fc");
  onnx_test::SetInt(fc, "transB", 1);
  return b.Finish();
}

std::string WriteModel(const onnx::ModelProto& model, const std::string& name) {
  const std::string path = UniqueTempPath(name);
  std::ofstream(path, std::ios::binary) << model.SerializeAsString();
  return path;
}

bool FileExists(const std::string& path) { return std::ifstream(path).good(); }

int RunTeacherServer(const std::string& args) {
  const std::string command = std::string(DISTILLERY_TEACHER_SERVER_BINARY) + " " + args +
                              " --threads=1 --metrics_address= > /dev/null 2>&1";
  const int status = std::system(command.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(PreprocessingImportTest, TheImportRecordsTheFlagsAndRefusesBadOnesWithoutAFile) {
  const std::string model = WriteModel(MnistShapedModel(), "mnist_shaped.onnx");
  const std::string ckpt = UniqueTempPath("imported_preprocessing.ckpt");
  std::remove(ckpt.c_str());
  ASSERT_EQ(RunTeacherServer("import --onnx=" + model + " --checkpoint=" + ckpt +
                             " --input_mean=0.1307 --input_std=0.3081"),
            0);
  auto c = LoadCheckpoint(ckpt);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(c->architecture().input_mean(), ::testing::ElementsAre(kMnistMean));
  EXPECT_THAT(c->architecture().input_std(), ::testing::ElementsAre(kMnistStd));
  EXPECT_EQ(c->architecture().input_scale(), kPixelScale);
  std::remove(ckpt.c_str());
  for (const char* bad : {"--input_scale=0", "--input_scale=-0.5", "--input_scale=nan",
                          "--input_std=0", "--input_std=-1", "--input_mean=0.1,0.2",
                          "--input_std=0.3,0.3,0.3", "--input_mean=abc", "--input_mean=nan"}) {
    EXPECT_NE(RunTeacherServer("import --onnx=" + model + " --checkpoint=" + ckpt + " " +
                               std::string(bad)),
              0)
        << bad;
    EXPECT_FALSE(FileExists(ckpt)) << bad;
    // serve --onnx refuses them too, before serving.
    EXPECT_NE(RunTeacherServer("serve --onnx=" + model +
                               " --no_transfer_set --address=127.0.0.1:0 " + std::string(bad)),
              0)
        << bad;
  }
  // In the library: the count is checked against the model's channels.
  OnnxImportOptions options;
  options.preprocessing.mean = {0.f, 0.f, 0.f};
  auto refused = ImportOnnxFile(model, options);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.status().message(),
              HasSubstr("preprocessing: input mean has 3 values for 1 channel"));
  // serve --checkpoint takes the checkpoint's own preprocessing, never flags.
  const std::string native = UniqueTempPath("native.ckpt");
  ASSERT_TRUE(SaveCheckpoint(native, SmallCheckpoint()).ok());
  EXPECT_EQ(
      RunTeacherServer("serve --checkpoint=" + native + " --no_transfer_set --input_mean=0.5"), 2);
  std::remove(native.c_str());
  std::remove(model.c_str());
}

// serve --onnx with MNIST's mean and std, and a transfer set.
class PreprocessingServerTest : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto mnist = LoadMnistFormatDirectory(DISTILLERY_MNIST_DIR);
    ASSERT_TRUE(mnist.ok()) << mnist.status();
    train_ = new Dataset(*SliceDataset(mnist->train, 0, 64));
    model_path_ = new std::string(WriteModel(MnistShapedModel(), "served.onnx"));
    OnnxImportOptions options;
    options.preprocessing = Mnist();
    auto checkpoint = ImportOnnxFile(*model_path_, options);
    ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
    network_ = NetworkFromCheckpoint(*checkpoint)->release();
    server_ = new ServerProcess();
    ASSERT_TRUE(server_->Start(DISTILLERY_TEACHER_SERVER_BINARY,
                               {"--onnx=" + *model_path_, "--input_mean=0.1307",
                                "--input_std=0.3081", "--data_dir=" DISTILLERY_MNIST_DIR,
                                "--transfer_range=0:64", "--metrics_address=", "--threads=1"},
                               testing::TempDir()));
    TeacherClientConfig config;
    config.target = server_->target();
    auto client = TeacherClient::Connect(config);
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = client->release();
  }
  static void TearDownTestSuite() {
    delete client_;
    delete server_;
    delete network_;
    std::remove(model_path_->c_str());
    delete model_path_;
    delete train_;
  }

  // The teacher's logits for training images [0, n) sent as `request` fills.
  static Tensor ServedLogits(distill::v1::SoftTargetsRequest request, int64_t n) {
    request.set_num_examples(static_cast<uint32_t>(n));
    request.mutable_options()->set_representation(distill::v1::LOGITS);
    auto channel = grpc::CreateChannel(server_->target(), grpc::InsecureChannelCredentials());
    auto stub = distill::v1::Teacher::NewStub(channel);
    grpc::ClientContext context;
    distill::v1::SoftTargetsResponse response;
    const grpc::Status status = stub->GetSoftTargets(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    Tensor logits(n, 10);
    EXPECT_EQ(response.targets().values_size(), n * 10);
    for (int i = 0; i < response.targets().values_size() && i < n * 10; ++i) {
      logits.data()[i] = response.targets().values(i);
    }
    return logits;
  }

  static Dataset* train_;
  static std::string* model_path_;
  static Network* network_;
  static ServerProcess* server_;
  static TeacherClient* client_;
};
Dataset* PreprocessingServerTest::train_ = nullptr;
std::string* PreprocessingServerTest::model_path_ = nullptr;
Network* PreprocessingServerTest::network_ = nullptr;
ServerProcess* PreprocessingServerTest::server_ = nullptr;
TeacherClient* PreprocessingServerTest::client_ = nullptr;

TEST_F(PreprocessingServerTest, ModelInfoReportsThePreprocessingTheSourceAndHashesThem) {
  const distill::v1::ModelInfo& info = client_->info();
  const distill::v1::TeacherIdentity& teacher = info.contract().teacher();
  EXPECT_EQ(info.input_scale(), kPixelScale);
  EXPECT_EQ(teacher.input().scale(), kPixelScale);
  EXPECT_THAT(teacher.input().mean(), ::testing::ElementsAre(kMnistMean));
  EXPECT_THAT(teacher.input().std(), ::testing::ElementsAre(kMnistStd));
  EXPECT_EQ(teacher.source(), "imported from onnx:pytorch 1.13.1");
  EXPECT_EQ(info.teacher_hash(), TeacherHash(teacher));
  // The hash covers the preprocessing: the same weights normalised otherwise
  // (or not at all) are another teacher.
  for (auto change : std::vector<void (*)(distill::v1::InputSpec*)>{
           [](distill::v1::InputSpec* in) { in->clear_mean(); },
           [](distill::v1::InputSpec* in) { in->clear_std(); },
           [](distill::v1::InputSpec* in) { in->set_mean(0, 0.5f); },
           [](distill::v1::InputSpec* in) { in->set_std(0, 0.25f); },
           [](distill::v1::InputSpec* in) { in->set_scale(1.f); }}) {
    distill::v1::TeacherIdentity other = teacher;
    change(other.mutable_input());
    EXPECT_NE(TeacherHash(other), info.teacher_hash()) << other.input().DebugString();
  }
  // The source is informational.
  distill::v1::TeacherIdentity renamed = teacher;
  renamed.set_source(kSourceDistillery);
  EXPECT_EQ(TeacherHash(renamed), info.teacher_hash());
  auto p = client_->TeacherPreprocessing();
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->Describe(), Mnist().Describe());
}

TEST_F(PreprocessingServerTest, PixelsFloatInputsTransferSetAndTheLocalNetworkAgreeExactly) {
  constexpr int64_t n = 16;
  distill::v1::SoftTargetsRequest pixels;
  pixels.set_pixels_u8(std::string(reinterpret_cast<const char*>(train_->image(0)),
                                   static_cast<size_t>(n * train_->input_size())));
  const Tensor from_pixels = ServedLogits(pixels, n);
  // A student sending its own float inputs applies the teacher's
  // preprocessing (from ModelInfo): the same bits.
  const Preprocessing teacher = *client_->TeacherPreprocessing();
  const std::vector<float> table = teacher.Table(1);
  Tensor inputs({n, 1, 28, 28});
  ApplyPixelTable(table, 1, 784, n, train_->image(0), inputs.data());
  distill::v1::SoftTargetsRequest floats;
  for (int64_t i = 0; i < inputs.size(); ++i) floats.add_inputs_f32(inputs.data()[i]);
  const Tensor from_floats = ServedLogits(floats, n);
  // The same network here, on (p / 255 - 0.1307) / 0.3081.
  const Tensor* infer = nullptr;
  ASSERT_TRUE(network_->Infer(inputs, &infer).ok());
  const Tensor local = *infer;  // Infer's output is overwritten by the next
  for (int64_t i = 0; i < n * 10; ++i) {
    ASSERT_EQ(from_pixels.data()[i], from_floats.data()[i]) << i;
    ASSERT_EQ(from_pixels.data()[i], local.data()[i]) << i;
  }
  // Pixels / 255 alone would give other logits.
  Tensor unnormalised;
  std::vector<int64_t> ids(n);
  std::iota(ids.begin(), ids.end(), 0);
  GatherBatch(*train_, ids, 0, nullptr, &unnormalised, nullptr);
  const Tensor* other = nullptr;
  ASSERT_TRUE(network_->Infer(unnormalised, &other).ok());
  double differs = 0;
  for (int64_t i = 0; i < n * 10; ++i) differs += std::fabs(other->data()[i] - local.data()[i]);
  EXPECT_GT(differs, 1e-3);

  // The transfer set's targets are those of the same pixels sent.
  distill::v1::TransferSetRequest request;
  request.set_num_shards(1);
  request.set_batch_size(64);
  request.mutable_options()->set_representation(distill::v1::LOGITS);
  int batches = 0;
  ASSERT_TRUE(client_
                  ->StreamTransferSet(request,
                                      [&](const distill::v1::TransferBatch& batch) {
                                        ++batches;
                                        distill::v1::SoftTargetsRequest again;
                                        again.set_pixels_u8(batch.pixels_u8());
                                        const Tensor served =
                                            ServedLogits(again, batch.example_ids_size());
                                        EXPECT_EQ(batch.targets().values_size(), served.size());
                                        for (int i = 0; i < batch.targets().values_size(); ++i) {
                                          EXPECT_EQ(batch.targets().values(i), served.data()[i]);
                                        }
                                        return true;
                                      })
                  .ok());
  EXPECT_EQ(batches, 1);
}

TEST_F(PreprocessingServerTest, RemoteSoftTargetsRebuildsPixelsForAnyStudentPreprocessing) {
  constexpr int64_t n = 8;
  constexpr float kT = 2.f;
  distill::v1::SoftTargetsRequest pixels;
  pixels.set_pixels_u8(std::string(reinterpret_cast<const char*>(train_->image(0)),
                                   static_cast<size_t>(n * train_->input_size())));
  Tensor expected;
  ASSERT_TRUE(client_->SoftTargets(pixels.pixels_u8(), n, kT, &expected).ok());
  Preprocessing odd;
  odd.scale = 1.f / 127.5f;
  odd.mean = {1.f};
  odd.std = {0.7f};
  for (const Preprocessing& student : {Preprocessing(), Mnist(), odd}) {
    Tensor inputs({n, 1, 28, 28});
    ApplyPixelTable(student.Table(1), 1, 784, n, train_->image(0), inputs.data());
    RemoteSoftTargets remote(client_, kT, student);
    Tensor targets;
    ASSERT_TRUE(remote.GetSoftTargets(0, 0, {}, inputs, &targets).ok());
    ASSERT_EQ(targets.size(), expected.size());
    for (int64_t i = 0; i < targets.size(); ++i) {
      ASSERT_EQ(targets.data()[i], expected.data()[i]) << student.Describe() << " " << i;
    }
  }
}

}  // namespace
}  // namespace distillery
