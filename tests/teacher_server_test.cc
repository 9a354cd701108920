// The teacher server as a real process on a loopback port, driven by a real
// gRPC client: soft targets, their encodings, the transfer set, bad input,
// overload and a graceful drain.
#include <cmath>
#include <cstring>
#include <numeric>
#include <set>
#include <thread>

#include "common/data/batches.h"
#include "common/data/idx_dataset.h"
#include "common/formats/checkpoint.h"
#include "common/formats/contract.h"
#include "common/formats/target_codec.h"
#include "common/nn/softmax.h"
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
using distill::v1::Teacher;

class TeacherServerTest : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto mnist = LoadMnistFormatDirectory(DISTILLERY_MNIST_DIR);
    ASSERT_TRUE(mnist.ok()) << mnist.status();
    test_ = new Dataset(*SliceDataset(mnist->test, 0, 500));
    // A quickly trained small teacher.
    TrainerConfig config;
    config.architecture = "784-128-10";
    config.epochs = 1;
    config.log_progress = false;
    checkpoint_path_ = new std::string(UniqueTempPath("server_teacher.ckpt"));
    config.checkpoint_path = *checkpoint_path_;
    std::remove(checkpoint_path_->c_str());
    auto trained = Train(config, *SliceDataset(mnist->train, 0, 5000), Dataset());
    ASSERT_TRUE(trained.ok()) << trained.status();
    teacher_ = trained->network.release();
    server_ = new ServerProcess();
    ASSERT_TRUE(
        server_->Start(DISTILLERY_TEACHER_SERVER_BINARY,
                       {"--checkpoint=" + *checkpoint_path_, "--data_dir=" DISTILLERY_MNIST_DIR,
                        "--transfer_range=0:2000", "--metrics_address=", "--max_batch=256",
                        "--threads=1", "--default_temperature=3"},
                       testing::TempDir()));
  }
  static void TearDownTestSuite() {
    delete server_;
    delete teacher_;
    delete test_;
    delete checkpoint_path_;
  }
  void SetUp() override {
    ASSERT_NE(server_->port(), 0);
    channel_ = grpc::CreateChannel(server_->target(), grpc::InsecureChannelCredentials());
    stub_ = Teacher::NewStub(channel_);
  }

  // A request for test images [begin, begin + n) as uint8 pixels.
  static SoftTargetsRequest PixelRequest(int64_t begin, int64_t n) {
    SoftTargetsRequest request;
    request.set_num_examples(static_cast<uint32_t>(n));
    request.set_pixels_u8(std::string(reinterpret_cast<const char*>(test_->image(begin)),
                                      static_cast<size_t>(n * test_->input_size())));
    return request;
  }

  grpc::Status Call(const SoftTargetsRequest& request, SoftTargetsResponse* response) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    return stub_->GetSoftTargets(&context, request, response);
  }

  // The teacher's own softmax(z / T) for test images [begin, begin + n).
  static Tensor LocalProbabilities(int64_t begin, int64_t n, float t) {
    std::vector<int64_t> ids(n);
    std::iota(ids.begin(), ids.end(), begin);
    Tensor inputs;
    GatherBatch(*test_, ids, 0, nullptr, &inputs, nullptr);
    const Tensor* logits = nullptr;
    EXPECT_TRUE(teacher_->Predict(inputs, &logits).ok());
    TemperatureSoftmax softmax;
    Tensor probs;
    EXPECT_TRUE(softmax.Compute(*logits, t, &probs).ok());
    return probs;
  }

  static Tensor Decode(const SoftTargetsResponse& response) {
    TemperatureSoftmax softmax;
    Tensor probs;
    EXPECT_TRUE(DecodeTargets(response.targets(), response.contract(), &softmax, &probs).ok());
    return probs;
  }

  void ExpectStillServing() {
    SoftTargetsResponse response;
    EXPECT_TRUE(Call(PixelRequest(0, 2), &response).ok()) << "the server stopped answering";
  }

  static Dataset* test_;
  static Network* teacher_;
  static std::string* checkpoint_path_;
  static ServerProcess* server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<Teacher::Stub> stub_;
};
Dataset* TeacherServerTest::test_ = nullptr;
Network* TeacherServerTest::teacher_ = nullptr;
std::string* TeacherServerTest::checkpoint_path_ = nullptr;
ServerProcess* TeacherServerTest::server_ = nullptr;

TEST_F(TeacherServerTest, ModelInfoDescribesTheTeacher) {
  grpc::ClientContext context;
  distill::v1::ModelInfo info;
  ASSERT_TRUE(stub_->GetModelInfo(&context, {}, &info).ok());
  // Contract version 2: the teacher's terms, its hash summarising them, and
  // the transfer set every batch will name.
  const distill::v1::SoftTargetContract& contract = info.contract();
  EXPECT_EQ(contract.contract_version(), kContractVersion);
  EXPECT_EQ(contract.teacher().weights_hash(), WeightsFingerprint(*teacher_));
  EXPECT_EQ(contract.teacher().architecture(), "784-128-10");
  EXPECT_EQ(contract.teacher().input().channels(), 1u);
  EXPECT_EQ(contract.teacher().input().rows(), 28u);
  EXPECT_EQ(contract.teacher().input().cols(), 28u);
  EXPECT_FLOAT_EQ(contract.teacher().input().scale(), 1.f / 255.f);
  EXPECT_EQ(contract.teacher().precision(), distill::v1::PRECISION_F32);
  EXPECT_EQ(contract.teacher().source(), kSourceDistillery);
  EXPECT_EQ(info.teacher_hash(), TeacherHash(contract.teacher()));
  EXPECT_EQ(contract.teacher_hash(), info.teacher_hash());
  EXPECT_NE(info.teacher_hash(), contract.teacher().weights_hash());
  EXPECT_EQ(contract.transfer_set().range_begin(), 0u);
  EXPECT_EQ(contract.transfer_set().range_end(), 2000u);
  EXPECT_EQ(contract.transfer_set().order_scheme(), kOrderScheme);
  auto mnist = LoadMnistFormatDirectory(DISTILLERY_MNIST_DIR);
  ASSERT_TRUE(mnist.ok());
  EXPECT_EQ(contract.transfer_set().fingerprint(),
            DatasetFingerprint(*SliceDataset(mnist->train, 0, 2000)));
  EXPECT_EQ(info.image_channels(), 1u);
  EXPECT_EQ(info.architecture(), "784-128-10");
  EXPECT_EQ(info.image_rows(), 28u);
  EXPECT_EQ(info.image_cols(), 28u);
  EXPECT_EQ(info.num_classes(), 10u);
  EXPECT_FLOAT_EQ(info.default_temperature(), 3.f);
  EXPECT_EQ(info.max_batch_size(), 256u);
  EXPECT_EQ(info.transfer_set_size(), 2000u);
  EXPECT_TRUE(info.transfer_set_has_labels());
}

TEST_F(TeacherServerTest, SoftTargetsMatchTheTeachersForwardPassAndFlattenWithT) {
  std::vector<double> entropy;
  for (float t : {1.f, 2.f, 5.f, 20.f}) {
    SoftTargetsRequest request = PixelRequest(10, 64);
    request.mutable_options()->set_temperature(t);
    SoftTargetsResponse response;
    ASSERT_TRUE(Call(request, &response).ok());
    EXPECT_FLOAT_EQ(response.contract().temperature(), t);
    EXPECT_EQ(response.contract().teacher().weights_hash(), WeightsFingerprint(*teacher_));
    EXPECT_EQ(response.contract().teacher_hash(), TeacherHash(response.contract().teacher()));
    EXPECT_FALSE(response.contract().has_transfer_set());
    EXPECT_EQ(response.contract().representation(), distill::v1::PROBABILITIES);
    const Tensor served = Decode(response);
    const Tensor local = LocalProbabilities(10, 64, t);
    ASSERT_EQ(served.rows(), 64);
    double h = 0;
    for (int64_t n = 0; n < 64; ++n) {
      const float* p = served.row(n);
      EXPECT_NEAR(std::accumulate(p, p + 10, 0.0), 1.0, 1e-5);
      EXPECT_EQ(std::max_element(p, p + 10) - p,
                std::max_element(local.row(n), local.row(n) + 10) - local.row(n));
      for (int j = 0; j < 10; ++j) {
        EXPECT_NEAR(p[j], local.at(n, j), 1e-6);
        if (p[j] > 0) h -= p[j] * std::log(p[j]);
      }
    }
    entropy.push_back(h);
  }
  for (size_t i = 1; i < entropy.size(); ++i) EXPECT_GT(entropy[i], entropy[i - 1]);
}

TEST_F(TeacherServerTest, DefaultTemperatureAndFloatInputs) {
  SoftTargetsRequest request;
  request.set_num_examples(3);
  for (int64_t i = 0; i < 3 * 784; ++i) request.add_inputs_f32(test_->pixels[i] / 255.f);
  SoftTargetsResponse response;
  ASSERT_TRUE(Call(request, &response).ok());
  EXPECT_FLOAT_EQ(response.contract().temperature(), 3.f);
  const Tensor served = Decode(response), local = LocalProbabilities(0, 3, 3.f);
  for (int64_t i = 0; i < served.size(); ++i) EXPECT_NEAR(served.data()[i], local.data()[i], 1e-6);
}

TEST_F(TeacherServerTest, LogitsTopKAndFp16AgreeWithFullFp32) {
  SoftTargetsRequest base = PixelRequest(100, 32);
  base.mutable_options()->set_temperature(4.f);
  SoftTargetsResponse full;
  ASSERT_TRUE(Call(base, &full).ok());
  const Tensor reference = Decode(full);

  SoftTargetsRequest logits_request = base;
  logits_request.mutable_options()->set_representation(distill::v1::LOGITS);
  SoftTargetsResponse logits;
  ASSERT_TRUE(Call(logits_request, &logits).ok());
  EXPECT_EQ(logits.contract().representation(), distill::v1::LOGITS);
  const Tensor from_logits = Decode(logits);
  for (int64_t i = 0; i < reference.size(); ++i) {
    EXPECT_NEAR(from_logits.data()[i], reference.data()[i], 1e-6);
  }

  SoftTargetsRequest half_request = base;
  half_request.mutable_options()->set_dtype(distill::v1::FLOAT16);
  SoftTargetsResponse half;
  ASSERT_TRUE(Call(half_request, &half).ok());
  EXPECT_EQ(half.targets().values_size(), 0);
  EXPECT_EQ(half.targets().values_f16().size(), 32u * 10 * 2);
  const Tensor from_half = Decode(half);
  for (int64_t i = 0; i < reference.size(); ++i) {
    // binary16 keeps 11 significant bits: relative error <= 2^-11.
    EXPECT_NEAR(from_half.data()[i], reference.data()[i], reference.data()[i] * 1e-3 + 1e-7);
  }

  SoftTargetsRequest top_request = base;
  top_request.mutable_options()->set_top_k(3);
  SoftTargetsResponse top;
  ASSERT_TRUE(Call(top_request, &top).ok());
  ASSERT_EQ(top.targets().width(), 3u);
  for (int64_t n = 0; n < 32; ++n) {
    const float* row = reference.row(n);
    std::vector<int> order(10);
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [row](int a, int b) { return row[a] > row[b]; });
    for (int j = 0; j < 3; ++j) {
      EXPECT_EQ(top.targets().class_indices(static_cast<int>(n * 3 + j)),
                static_cast<uint32_t>(order[j]));
      EXPECT_NEAR(top.targets().values(static_cast<int>(n * 3 + j)), row[order[j]], 1e-6);
    }
  }
}

TEST_F(TeacherServerTest, BadInputGetsInvalidArgumentAndTheServerStaysUp) {
  struct Case {
    const char* what;
    std::function<void(SoftTargetsRequest*)> spoil;
  };
  const std::vector<Case> cases = {
      {"wrong input size", [](SoftTargetsRequest* r) { r->mutable_pixels_u8()->pop_back(); }},
      {"no inputs", [](SoftTargetsRequest* r) { r->clear_pixels_u8(); }},
      {"both encodings", [](SoftTargetsRequest* r) { r->add_inputs_f32(0.f); }},
      {"zero examples", [](SoftTargetsRequest* r) { r->set_num_examples(0); }},
      {"NaN input",
       [](SoftTargetsRequest* r) {
         r->clear_pixels_u8();
         for (int i = 0; i < 2 * 784; ++i) r->add_inputs_f32(i == 5 ? std::nanf("") : 0.5f);
       }},
      {"infinite input",
       [](SoftTargetsRequest* r) {
         r->clear_pixels_u8();
         for (int i = 0; i < 2 * 784; ++i) r->add_inputs_f32(i == 9 ? INFINITY : 0.5f);
       }},
      {"zero temperature", [](SoftTargetsRequest* r) { r->mutable_options()->set_temperature(0); }},
      {"negative temperature",
       [](SoftTargetsRequest* r) { r->mutable_options()->set_temperature(-2); }},
      {"NaN temperature",
       [](SoftTargetsRequest* r) { r->mutable_options()->set_temperature(std::nanf("")); }},
      {"infinite temperature",
       [](SoftTargetsRequest* r) { r->mutable_options()->set_temperature(INFINITY); }},
      {"top_k over the classes",
       [](SoftTargetsRequest* r) { r->mutable_options()->set_top_k(11); }},
      {"unknown representation",
       [](SoftTargetsRequest* r) {
         r->mutable_options()->set_representation(static_cast<distill::v1::Representation>(7));
       }},
  };
  for (const Case& c : cases) {
    SoftTargetsRequest request = PixelRequest(0, 2);
    c.spoil(&request);
    SoftTargetsResponse response;
    grpc::Status status = Call(request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.what;
    EXPECT_FALSE(status.error_message().empty()) << c.what;
    ExpectStillServing();
  }
  // A batch over the limit (256 here).
  SoftTargetsRequest big = PixelRequest(0, 257);
  SoftTargetsResponse response;
  grpc::Status status = Call(big, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("256"), std::string::npos) << status.error_message();
  ExpectStillServing();
}

std::vector<distill::v1::TransferBatch> ReadStream(Teacher::Stub* stub,
                                                   const distill::v1::TransferSetRequest& request,
                                                   grpc::Status* status) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  auto reader = stub->StreamTransferSet(&context, request);
  std::vector<distill::v1::TransferBatch> batches;
  distill::v1::TransferBatch batch;
  while (reader->Read(&batch)) batches.push_back(batch);
  *status = reader->Finish();
  return batches;
}

// Batch invariance through the real server (issue 13): one transfer-set
// image's logits, asked alone, inside batches merged with other students'
// rows (two threads calling at once against a teacher that waits 100 ms to
// merge), at several positions, and precomputed in the transfer set, are the
// same bits. CTest runs this again under ONEDNN_MAX_CPU_ISA=AVX2.
TEST_F(TeacherServerTest, InvarianceOneRowAloneMergedAndPrecomputedGivesTheSameBits) {
  auto mnist = LoadMnistFormatDirectory(DISTILLERY_MNIST_DIR);
  ASSERT_TRUE(mnist.ok()) << mnist.status();
  const Dataset& train = mnist->train;  // the transfer set is [0, 2000)
  constexpr int64_t kImage = 1234;
  ServerProcess merging;
  ASSERT_TRUE(merging.Start(
      DISTILLERY_TEACHER_SERVER_BINARY,
      {"--checkpoint=" + *checkpoint_path_, "--data_dir=" DISTILLERY_MNIST_DIR,
       "--transfer_range=0:2000", "--metrics_address=", "--max_batch=1024", "--batch_wait_ms=100",
       // not OMP_NUM_THREADS (2): the batcher's thread
       // must use this count too
       "--threads=1"},
      testing::TempDir()));
  auto stub =
      Teacher::NewStub(grpc::CreateChannel(merging.target(), grpc::InsecureChannelCredentials()));
  // A request of `n` training images starting at `first`, with kImage at
  // `position`, asking for float32 logits.
  auto request_with = [&](int64_t first, int64_t n, int64_t position) {
    SoftTargetsRequest request;
    request.set_num_examples(static_cast<uint32_t>(n));
    std::string pixels;
    for (int64_t r = 0; r < n; ++r) {
      const int64_t id = r == position ? kImage : first + r;
      pixels.append(reinterpret_cast<const char*>(train.image(id)),
                    static_cast<size_t>(train.input_size()));
    }
    request.set_pixels_u8(pixels);
    request.mutable_options()->set_representation(distill::v1::LOGITS);
    request.mutable_options()->set_dtype(distill::v1::FLOAT32);
    return request;
  };
  auto row_of = [](const SoftTargetsResponse& response, int64_t position) {
    const auto& values = response.targets().values();
    const int64_t width = response.targets().width();
    return std::vector<float>(values.begin() + position * width,
                              values.begin() + (position + 1) * width);
  };
  auto call = [&](const SoftTargetsRequest& request, SoftTargetsResponse* response) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    return stub->GetSoftTargets(&context, request, response);
  };
  SoftTargetsResponse response;
  ASSERT_TRUE(call(request_with(0, 1, 0), &response).ok());
  const std::vector<float> alone = row_of(response, 0);
  ASSERT_EQ(alone.size(), 10u);

  // Two students at once, each batch holding kImage at another position.
  struct Case {
    int64_t first, n, position;
  };
  const std::vector<std::vector<Case>> students = {
      {{0, 7, 3}, {100, 300, 299}, {500, 129, 128}, {700, 1, 0}},
      {{40, 200, 0}, {900, 600, 417}, {1500, 33, 32}, {1600, 128, 64}}};
  std::vector<std::vector<std::vector<float>>> answers(2);
  std::vector<std::thread> threads;
  for (int s = 0; s < 2; ++s) {
    threads.emplace_back([&, s] {
      for (const Case& c : students[s]) {
        SoftTargetsResponse r;
        const grpc::Status status = call(request_with(c.first, c.n, c.position), &r);
        EXPECT_TRUE(status.ok()) << status.error_message();
        answers[s].push_back(status.ok() ? row_of(r, c.position) : std::vector<float>());
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int s = 0; s < 2; ++s) {
    for (size_t i = 0; i < students[s].size(); ++i) {
      ASSERT_EQ(answers[s][i].size(), alone.size());
      EXPECT_EQ(std::memcmp(answers[s][i].data(), alone.data(), alone.size() * sizeof(float)), 0)
          << "student " << s << " batch of " << students[s][i].n << ", row at "
          << students[s][i].position << ": " << answers[s][i][0] << " vs " << alone[0];
    }
  }

  // The transfer set's precomputed logits of the same image.
  distill::v1::TransferSetRequest stream;
  stream.set_num_shards(1);
  stream.set_batch_size(1000);
  stream.mutable_options()->set_representation(distill::v1::LOGITS);
  stream.mutable_options()->set_dtype(distill::v1::FLOAT32);
  grpc::Status status;
  const auto batches = ReadStream(stub.get(), stream, &status);
  ASSERT_TRUE(status.ok()) << status.error_message();
  bool found = false;
  for (const auto& b : batches) {
    for (int r = 0; r < b.example_ids_size(); ++r) {
      if (b.example_ids(r) != static_cast<uint64_t>(kImage)) continue;
      found = true;
      const float* precomputed = b.targets().values().data() + r * b.targets().width();
      EXPECT_EQ(std::memcmp(precomputed, alone.data(), alone.size() * sizeof(float)), 0)
          << precomputed[0] << " vs " << alone[0];
    }
  }
  EXPECT_TRUE(found);
  merging.Stop();
}

TEST_F(TeacherServerTest, TransferSetShardsPartitionTheEpochDeterministically) {
  distill::v1::TransferSetRequest request;
  request.set_epoch(3);
  request.set_seed(7);
  request.set_num_shards(3);
  request.set_batch_size(100);
  request.set_include_labels(true);
  request.mutable_options()->set_temperature(2.f);
  std::set<uint64_t> seen;
  for (uint32_t shard = 0; shard < 3; ++shard) {
    request.set_shard_index(shard);
    grpc::Status status;
    auto batches = ReadStream(stub_.get(), request, &status);
    ASSERT_TRUE(status.ok()) << status.error_message();
    ASSERT_EQ(batches.size(), 7u);  // ceil(667 / 100)
    // The ids are the order scheme's, which a student computes itself.
    auto expected = ShardExampleIds(2000, 3, 7, shard, 3);
    ASSERT_TRUE(expected.ok());
    size_t position = 0;
    for (const auto& b : batches) {
      EXPECT_EQ(b.num_batches(), 7u);
      EXPECT_EQ(b.contract().contract_version(), kContractVersion);
      EXPECT_EQ(b.contract().transfer_set().range_end(), 2000u);
      EXPECT_EQ(b.contract().transfer_set().order_scheme(), kOrderScheme);
      for (uint64_t id : b.example_ids()) {
        EXPECT_EQ(id, static_cast<uint64_t>((*expected)[position++]));
      }
      EXPECT_FLOAT_EQ(b.contract().temperature(), 2.f);
      EXPECT_EQ(b.labels().size(), static_cast<size_t>(b.example_ids_size()));
      EXPECT_EQ(b.pixels_u8().size(), static_cast<size_t>(b.example_ids_size()) * 784);
      for (uint64_t id : b.example_ids()) EXPECT_TRUE(seen.insert(id).second) << id;
    }
    // The same request again gives the same batches; start_batch resumes.
    request.set_start_batch(5);
    auto again = ReadStream(stub_.get(), request, &status);
    ASSERT_TRUE(status.ok());
    ASSERT_EQ(again.size(), 2u);
    EXPECT_EQ(again[0].example_ids(0), batches[5].example_ids(0));
    request.set_start_batch(0);
  }
  EXPECT_EQ(seen.size(), 2000u);
}

TEST_F(TeacherServerTest, TransferSetTargetsMatchPixelRequests) {
  distill::v1::TransferSetRequest request;
  request.set_num_shards(1);
  request.set_batch_size(16);
  request.mutable_options()->set_temperature(5.f);
  grpc::Status status;
  grpc::ClientContext context;
  auto reader = stub_->StreamTransferSet(&context, request);
  distill::v1::TransferBatch batch;
  ASSERT_TRUE(reader->Read(&batch));
  context.TryCancel();
  // Ask for the same pixels directly: the answers agree.
  SoftTargetsRequest direct;
  direct.set_num_examples(16);
  direct.set_pixels_u8(batch.pixels_u8());
  direct.mutable_options()->set_temperature(5.f);
  SoftTargetsResponse response;
  ASSERT_TRUE(Call(direct, &response).ok());
  for (int i = 0; i < 160; ++i) {
    EXPECT_NEAR(batch.targets().values(i), response.targets().values(i), 1e-6);
  }
  EXPECT_TRUE(batch.labels().empty());  // not asked for
}

TEST_F(TeacherServerTest, BadTransferRequestsAreRefused) {
  distill::v1::TransferSetRequest request;
  request.set_num_shards(2);
  request.set_shard_index(2);
  request.set_batch_size(10);
  grpc::Status status;
  ReadStream(stub_.get(), request, &status);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  request.set_shard_index(0);
  request.set_batch_size(0);
  ReadStream(stub_.get(), request, &status);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  request.set_batch_size(10);
  request.set_num_shards(0);
  ReadStream(stub_.get(), request, &status);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  request.set_num_shards(1);
  request.set_start_batch(1000);
  ReadStream(stub_.get(), request, &status);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  ExpectStillServing();
}

// A second server whose batcher waits long, so that calls stay in flight:
// overload is refused with RESOURCE_EXHAUSTED, and on SIGTERM the calls in
// flight complete, a new call is refused and the process exits 0.
TEST(TeacherServerDrainTest, OverloadIsRefusedAndDrainFinishesCallsInFlight) {
  auto mnist = LoadMnistFormatDirectory(DISTILLERY_MNIST_DIR);
  ASSERT_TRUE(mnist.ok());
  auto mlp = *Network::Create(*NetworkSpec::Parse("784-32-10", {1, 28, 28}), 1);
  const std::string checkpoint = UniqueTempPath("drain_teacher.ckpt");
  ASSERT_TRUE(SaveCheckpoint(checkpoint, MakeCheckpoint(*mlp, "teacher")).ok());
  ServerProcess server;
  ASSERT_TRUE(server.Start(DISTILLERY_TEACHER_SERVER_BINARY,
                           {"--checkpoint=" + checkpoint, "--no_transfer_set",
                            "--metrics_address=", "--batch_wait_ms=4000", "--max_batch=128",
                            "--max_queued_examples=64", "--drain_seconds=20", "--threads=1"},
                           testing::TempDir()));
  auto channel = grpc::CreateChannel(server.target(), grpc::InsecureChannelCredentials());
  auto stub = Teacher::NewStub(channel);
  SoftTargetsRequest request;
  request.set_num_examples(32);
  request.set_pixels_u8(std::string(reinterpret_cast<const char*>(mnist->test.image(0)), 32 * 784));

  // Three calls of 32 examples against a queue of 64 (the batch of 128 does
  // not fill, so they wait): one is refused.
  std::vector<grpc::Status> statuses(3);
  std::vector<std::thread> callers;
  for (int i = 0; i < 3; ++i) {
    callers.emplace_back([&, i] {
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
      SoftTargetsResponse response;
      statuses[i] = stub->GetSoftTargets(&context, request, &response);
    });
  }
  // The batch waits 4 s for more requests: the calls are in flight after
  // 1.5 s even on a busy machine. Start draining then.
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  server.SendSignal(SIGTERM);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  grpc::ClientContext late_context;
  late_context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  SoftTargetsResponse late_response;
  const grpc::Status late = stub->GetSoftTargets(&late_context, request, &late_response);
  for (auto& t : callers) t.join();
  int ok = 0, exhausted = 0;
  for (const grpc::Status& s : statuses) {
    if (s.ok()) ++ok;
    if (s.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) ++exhausted;
  }
  EXPECT_EQ(ok, 2);
  EXPECT_EQ(exhausted, 1);
  EXPECT_FALSE(late.ok());
  EXPECT_EQ(late.error_code(), grpc::StatusCode::UNAVAILABLE) << late.error_message();
  const int wait_status = server.Wait();
  EXPECT_TRUE(WIFEXITED(wait_status));
  EXPECT_EQ(WEXITSTATUS(wait_status), 0);
}

}  // namespace
}  // namespace distillery
