// The teacher's limits, each refused with its status code while the teacher
// keeps serving: the largest message, the largest batch, the number of calls
// in flight and the longest transfer-set stream (which the student's client
// resumes where it stopped).
#include <sys/stat.h>

#include <thread>

#include "common/formats/checkpoint.h"
#include "common/util/transient_marker.h"
#include "distill/v1/teacher.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "student_trainer/teacher_client.h"
#include "tests/server_process.h"
#include "tests/test_util.h"

namespace distillery {
namespace {

using distill::v1::SoftTargetsRequest;
using distill::v1::SoftTargetsResponse;
using distill::v1::Teacher;

class LimitsTest : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    checkpoint_ = new std::string(UniqueTempPath("limits_teacher.ckpt"));
    auto mlp = *Network::Create(*NetworkSpec::Parse("784-32-10", {1, 28, 28}), 1);
    ASSERT_TRUE(SaveCheckpoint(*checkpoint_, MakeCheckpoint(*mlp, "teacher")).ok());
  }
  static void TearDownTestSuite() { delete checkpoint_; }

  // A teacher with `flags` on top of a small transfer set and one thread.
  void StartTeacher(std::vector<std::string> flags) {
    flags.insert(flags.end(), {"--checkpoint=" + *checkpoint_, "--data_dir=" DISTILLERY_MNIST_DIR,
                               "--metrics_address=", "--threads=1"});
    ASSERT_TRUE(server_.Start(DISTILLERY_TEACHER_SERVER_BINARY, flags, testing::TempDir()));
    // The client's flow-control window stays small and fixed, so that the
    // teacher can run ahead of a slow reader by a few batches only.
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
    args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 16 << 10);
    args.SetMaxReceiveMessageSize(64 << 20);
    args.SetMaxSendMessageSize(64 << 20);
    stub_ = Teacher::NewStub(
        grpc::CreateCustomChannel(server_.target(), grpc::InsecureChannelCredentials(), args));
  }

  static SoftTargetsRequest Request(int64_t n) {
    SoftTargetsRequest request;
    request.set_num_examples(static_cast<uint32_t>(n));
    request.set_pixels_u8(std::string(static_cast<size_t>(n * 784), '\x20'));
    return request;
  }
  grpc::Status Call(const SoftTargetsRequest& request, int seconds = 20) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
    SoftTargetsResponse response;
    return stub_->GetSoftTargets(&context, request, &response);
  }
  void ExpectStillServing() { EXPECT_TRUE(Call(Request(2)).ok()) << "the teacher stopped"; }

  static std::string* checkpoint_;
  ServerProcess server_;
  std::unique_ptr<Teacher::Stub> stub_;
};
std::string* LimitsTest::checkpoint_ = nullptr;

TEST_F(LimitsTest, LargestMessageIsResourceExhausted) {
  // 256 float inputs of 784 values are 0.8 MB: the largest valid request fits.
  StartTeacher({"--max_message_mb=1", "--max_batch=256", "--transfer_range=0:100"});
  // 2000 images of 784 bytes: 1.5 MiB, over the 1 MiB limit.
  const grpc::Status status = Call(Request(2000));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
  // Deterministic: not marked transient, and the client does not retry it.
  EXPECT_FALSE(IsMarkedTransient(status.error_message())) << status.error_message();
  EXPECT_FALSE(IsRetryableStatus(status)) << status.error_message();
  EXPECT_TRUE(Call(Request(256)).ok());
  ExpectStillServing();
}

TEST_F(LimitsTest, MaxBatchThatCannotFitTheMessageLimitIsRefusedAtStart) {
  // 4096 float inputs of 784 values take 12.8 MB, more than 1 MiB.
  ServerProcess server;
  EXPECT_FALSE(server.Start(DISTILLERY_TEACHER_SERVER_BINARY,
                            {"--checkpoint=" + *checkpoint_, "--metrics_address=", "--threads=1",
                             "--max_message_mb=1", "--max_batch=4096"},
                            testing::TempDir()));
}

TEST_F(LimitsTest, ClientDoesNotRetryAMessageOverTheLimit) {
  StartTeacher({"--max_message_mb=1", "--max_batch=256", "--transfer_range=0:100"});
  TeacherClientConfig config;
  config.target = server_.target();
  // A retrying client would keep at it for a minute, then answer UNAVAILABLE.
  config.give_up_after = absl::Seconds(60);
  auto client = TeacherClient::Connect(config);
  ASSERT_TRUE(client.ok()) << client.status();
  Tensor probabilities;
  const absl::Status status =
      (*client)->SoftTargets(std::string(2000 * 784, '\x20'), 2000, 1.f, &probabilities);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
  EXPECT_EQ((*client)->retries(), 0);
  EXPECT_TRUE((*client)->SoftTargets(std::string(10 * 784, '\x20'), 10, 1.f, &probabilities).ok());
}

TEST(LimitsRetryTest, OnlyMarkedResourceExhaustedIsRetried) {
  EXPECT_TRUE(IsRetryableStatus(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                             MarkTransient("the teacher's queue is full"))));
  EXPECT_FALSE(IsRetryableStatus(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                              "Received message larger than max (1 vs. 0)")));
  EXPECT_TRUE(IsRetryableStatus(grpc::Status(grpc::StatusCode::UNAVAILABLE, "down")));
  EXPECT_FALSE(IsRetryableStatus(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "bad")));
}

TEST_F(LimitsTest, LargestBatchIsInvalidArgument) {
  StartTeacher({"--max_batch=64", "--transfer_range=0:100"});
  EXPECT_EQ(Call(Request(65)).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  grpc::ClientContext context;
  distill::v1::TransferSetRequest request;
  request.set_num_shards(1);
  request.set_batch_size(65);
  auto reader = stub_->StreamTransferSet(&context, request);
  distill::v1::TransferBatch batch;
  EXPECT_FALSE(reader->Read(&batch));
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  ExpectStillServing();
}

TEST_F(LimitsTest, CallsInFlightOverTheLimitAreResourceExhausted) {
  // The batcher waits 3 s for a batch of 128 to fill: calls stay in flight.
  StartTeacher({"--max_inflight_calls=2", "--batch_wait_ms=3000", "--max_batch=128",
                "--transfer_range=0:100"});
  std::vector<grpc::Status> statuses(2);
  std::vector<std::thread> callers;
  for (int i = 0; i < 2; ++i) {
    callers.emplace_back([&, i] { statuses[i] = Call(Request(8)); });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  const grpc::Status third = Call(Request(8));
  for (auto& t : callers) t.join();
  EXPECT_EQ(third.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << third.error_message();
  EXPECT_TRUE(IsMarkedTransient(third.error_message())) << third.error_message();
  EXPECT_TRUE(statuses[0].ok()) << statuses[0].error_message();
  EXPECT_TRUE(statuses[1].ok()) << statuses[1].error_message();
  ExpectStillServing();
}

TEST_F(LimitsTest, LongestStreamEndsWithResourceExhaustedAndTheClientResumes) {
  StartTeacher({"--max_stream_seconds=0.3", "--transfer_range=0:20000", "--max_batch=256"});
  distill::v1::TransferSetRequest request;
  request.set_num_shards(1);
  request.set_batch_size(40);  // 500 batches
  // A slow reader: 500 batches at 4 ms each take 2 s, far past 0.3 s.
  {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    auto reader = stub_->StreamTransferSet(&context, request);
    distill::v1::TransferBatch batch;
    int batches = 0;
    while (reader->Read(&batch)) {
      ++batches;
      std::this_thread::sleep_for(std::chrono::milliseconds(4));
    }
    const grpc::Status status = reader->Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
    EXPECT_TRUE(IsRetryableStatus(status)) << status.error_message();
    EXPECT_NE(status.error_message().find("start_batch=" + std::to_string(batches)),
              std::string::npos)
        << status.error_message() << " after " << batches << " batches";
    EXPECT_LT(batches, 500);
  }
  // The student's client (whose window grows to megabytes) resumes each cut
  // stream at the next batch: every batch arrives once, in order. 79 batches
  // of 200 KiB read at 25 ms each.
  request.set_batch_size(256);
  TeacherClientConfig config;
  config.target = server_.target();
  // Less than the ~2 s the stream takes: only renewed by progress.
  config.give_up_after = absl::Seconds(1);
  auto client = TeacherClient::Connect(config);
  ASSERT_TRUE(client.ok()) << client.status();
  uint64_t expected = 0;
  const absl::Time start = absl::Now();
  const absl::Status status =
      (*client)->StreamTransferSet(request, [&](const distill::v1::TransferBatch& batch) {
        EXPECT_EQ(batch.batch_index(), expected);
        ++expected;
        std::this_thread::sleep_for(std::chrono::milliseconds(25));
        return true;
      });
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_EQ(expected, 79u);
  // The whole run took longer than the client's give-up time: progress
  // renewed it.
  EXPECT_GT(absl::Now() - start, config.give_up_after);
  EXPECT_GE((*client)->retries(), 1);
  ExpectStillServing();
}

TEST_F(LimitsTest, StalledStreamIsCancelledAndItsSlotFreed) {
  // One call in flight at most: while the stalled stream holds the slot,
  // other calls are refused; once the teacher cancels it (5 s after its
  // last write stalled, --stream_stall_seconds; not --max_stream_seconds,
  // 300 s here, plus 5 s) they are served again.
  StartTeacher({"--max_stream_seconds=300", "--transfer_range=0:2000", "--max_batch=256",
                "--max_inflight_calls=1"});
  distill::v1::TransferSetRequest request;
  request.set_num_shards(1);
  request.set_batch_size(64);  // 32 batches of 50 KiB: far more than the window
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  auto reader = stub_->StreamTransferSet(&context, request);
  distill::v1::TransferBatch batch;
  ASSERT_TRUE(reader->Read(&batch));
  EXPECT_EQ(Call(Request(2)).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  grpc::Status later;
  while (std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    later = Call(Request(2));
    if (later.ok()) break;
  }
  EXPECT_TRUE(later.ok()) << "the stalled stream kept its slot: " << later.error_message();
  while (reader->Read(&batch)) {
  }
  const grpc::Status status = reader->Finish();
  EXPECT_FALSE(status.ok());
  EXPECT_EQ(status.error_code(), grpc::StatusCode::CANCELLED) << status.error_message();
}

}  // namespace
}  // namespace distillery
