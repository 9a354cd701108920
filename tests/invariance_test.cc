// Batch-invariant soft targets (issue 13): a row's logits are a function of
// the weights and that row alone, whatever batch it rides in and wherever
// it sits in it, for a given instruction set and thread count. CTest runs
// these under the machine's best instruction set and again with oneDNN
// capped at AVX2 (ONEDNN_MAX_CPU_ISA=AVX2), where plain per-batch-size
// primitives gave different bits for batches of 7 and more.
//
// Also: the bounded primitive cache, and the dynamic batcher's handling of
// requests nobody waits for any more.
#include <atomic>
#include <cstring>
#include <future>
#include <string>
#include <vector>

#include "common/nn/network.h"
#include "common/nn/primitive_cache.h"
#include "common/nn/softmax.h"
#include "common/tensor/dnnl_context.h"
#include "common/util/transient_marker.h"
#include "gtest/gtest.h"
#include "teacher_server/dynamic_batcher.h"
#include "tests/test_util.h"

namespace distillery {
namespace {

bool SameBits(const float* a, const float* b, int64_t n) {
  return std::memcmp(a, b, static_cast<size_t>(n) * sizeof(float)) == 0;
}

// `n` rows of random inputs (seeded by n) with `row` at `position`.
Tensor BatchWithRowAt(const Tensor& row, int64_t n, int64_t position) {
  Tensor batch = RandomMatrix(n, row.cols(), 1000 + static_cast<uint64_t>(n), 1.f);
  std::copy(row.data(), row.data() + row.cols(), batch.row(position));
  return batch;
}

class InvarianceTest : public testing::TestWithParam<int> {
 protected:
  void SetUp() override { SetComputeThreads(GetParam()); }
  void TearDown() override { SetComputeThreads(2); }
};

TEST_P(InvarianceTest, LogitsOfARowAreTheSameBitsInEveryBatchSizeAndPosition) {
  // The teacher's size: the kernels chosen depend on the shapes.
  auto mlp = Network::Create(*NetworkSpec::Parse("784-1200-1200-10", {1, 28, 28}), 3);
  ASSERT_TRUE(mlp.ok()) << mlp.status();
  const Tensor row = RandomMatrix(1, 784, 77, 1.f);
  const Tensor* logits = nullptr;
  ASSERT_TRUE((*mlp)->Infer(row, &logits).ok());
  const Tensor alone = *logits;
  ASSERT_EQ(alone.rows(), 1);
  ASSERT_EQ(alone.cols(), 10);
  for (int64_t n : {1, 7, 128, 1000, 1024}) {
    for (int64_t position : {int64_t{0}, n / 2, n - 1}) {
      const Tensor batch = BatchWithRowAt(row, n, position);
      ASSERT_TRUE((*mlp)->Infer(batch, &logits).ok());
      ASSERT_EQ(logits->rows(), n);
      EXPECT_TRUE(SameBits(logits->row(position), alone.data(), 10))
          << "batch " << n << ", row at " << position << ", " << GetParam()
          << " threads: " << logits->at(position, 0) << " vs " << alone.at(0, 0);
    }
  }
  // Predict is the same path, and a clone gives the same bits.
  auto copy = (*mlp)->Clone();
  ASSERT_TRUE(copy.ok());
  const Tensor batch = BatchWithRowAt(row, 300, 299);
  ASSERT_TRUE((*copy)->Predict(batch, &logits).ok());
  EXPECT_TRUE(SameBits(logits->row(299), alone.data(), 10));
}

TEST_P(InvarianceTest, SoftmaxOfARowIsTheSameBitsInEveryBatchSize) {
  const Tensor row = RandomMatrix(1, 10, 5, 8.f);
  TemperatureSoftmax softmax;
  Tensor alone, alone_log, probs, log_probs;
  ASSERT_TRUE(softmax.Compute(row, 3.f, &alone, &alone_log).ok());
  for (int64_t n : {1, 7, 128, 1000, 1024}) {
    for (int64_t position : {int64_t{0}, n - 1}) {
      Tensor batch = RandomMatrix(n, 10, static_cast<uint64_t>(n), 8.f);
      std::copy(row.data(), row.data() + 10, batch.row(position));
      ASSERT_TRUE(softmax.Compute(batch, 3.f, &probs, &log_probs).ok());
      EXPECT_TRUE(SameBits(probs.row(position), alone.data(), 10)) << "batch " << n;
      EXPECT_TRUE(SameBits(log_probs.row(position), alone_log.data(), 10)) << "batch " << n;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Threads, InvarianceTest, testing::Values(1, 2),
                         [](const testing::TestParamInfo<int>& info) {
                           return std::to_string(info.param) + "Threads";
                         });

TEST(InvariancePrimitiveCacheTest, KeepsTheMostRecentlyUsedEntriesUpToItsCapacity) {
  PrimitiveCache<int64_t, std::string> cache(3);
  for (int64_t k = 1; k <= 3; ++k) cache.Insert(k, std::to_string(k));
  ASSERT_NE(cache.Find(1), nullptr);  // 1 becomes the most recent
  cache.Insert(4, "4");               // evicts 2, the least recent
  EXPECT_EQ(cache.size(), 3u);
  EXPECT_EQ(cache.Find(2), nullptr);
  ASSERT_NE(cache.Find(1), nullptr);
  EXPECT_EQ(*cache.Find(1), "1");
  EXPECT_NE(cache.Find(3), nullptr);
  EXPECT_NE(cache.Find(4), nullptr);
  for (int64_t k = 5; k < 1000; ++k) cache.Insert(k, "x");
  EXPECT_EQ(cache.size(), 3u);
}

TEST(InvarianceNetworkTest, InferenceOfEverySizeLeavesTrainingIntact) {
  // Inference of many batch sizes between a Forward and its Backward: the
  // Backward still sees its own Forward (the tiles use separate buffers),
  // and the gradients are those of an undisturbed run.
  auto a = Network::Create(*NetworkSpec::Parse("20-16-4", {20}), 9);
  auto b = Network::Create(*NetworkSpec::Parse("20-16-4", {20}), 9);
  ASSERT_TRUE(a.ok() && b.ok());
  const Tensor input = RandomMatrix(32, 20, 1);
  const Tensor grad = RandomMatrix(32, 4, 2);
  const Tensor* logits = nullptr;
  ASSERT_TRUE((*a)->Forward(input, true, 0, &logits).ok());
  ASSERT_TRUE((*a)->Backward(grad).ok());
  ASSERT_TRUE((*b)->Forward(input, true, 0, &logits).ok());
  for (int64_t n = 1; n <= 300; n += 13) {
    const Tensor other = RandomMatrix(n, 20, static_cast<uint64_t>(n));
    const Tensor* out = nullptr;
    ASSERT_TRUE((*b)->Infer(other, &out).ok());
    EXPECT_EQ(out->rows(), n);
  }
  ASSERT_TRUE((*b)->Backward(grad).ok());
  const auto pa = (*a)->Parameters();
  const auto pb = (*b)->Parameters();
  for (size_t i = 0; i < pa.size(); ++i) EXPECT_TRUE(pa[i]->grad == pb[i]->grad) << pa[i]->name;
}

// The batcher: requests whose deadline passed or whose caller went away
// while queued are answered without being computed.
TEST(InvarianceBatcherTest, ExpiredAndCancelledRequestsAreNotComputed) {
  auto mlp = Network::Create(*NetworkSpec::Parse("8-4-3", {8}), 1);
  ASSERT_TRUE(mlp.ok());
  std::atomic<int64_t> computed{0}, dropped{0};
  BatcherObserver observer;
  observer.on_forward_pass = [&](int64_t examples, int64_t) { computed += examples; };
  observer.on_dropped = [&](int64_t requests) { dropped += requests; };
  BatcherConfig config;
  config.max_wait = absl::Milliseconds(200);  // all three share one batch
  DynamicBatcher batcher(TeacherModel::Single({std::move(*mlp), Preprocessing(), "mlp"}), config,
                         observer);
  std::promise<absl::Status> expired, cancelled, live;
  auto record = [](std::promise<absl::Status>* p) {
    return [p](const absl::Status& s, const Tensor* logits) {
      EXPECT_EQ(s.ok(), logits != nullptr);
      p->set_value(s);
    };
  };
  ASSERT_TRUE(batcher.Submit(RandomMatrix(5, 8, 1), record(&expired), absl::Now()).ok());
  ASSERT_TRUE(batcher
                  .Submit(RandomMatrix(6, 8, 2), record(&cancelled), absl::InfiniteFuture(),
                          [] { return true; })
                  .ok());
  ASSERT_TRUE(batcher
                  .Submit(RandomMatrix(7, 8, 3), record(&live), absl::Now() + absl::Seconds(60),
                          [] { return false; })
                  .ok());
  EXPECT_EQ(expired.get_future().get().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(cancelled.get_future().get().code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(live.get_future().get().ok());
  batcher.Stop();
  EXPECT_EQ(computed.load(), 7);
  EXPECT_EQ(dropped.load(), 2);
}

TEST(InvarianceBatcherTest, FullQueueIsMarkedTransient) {
  auto mlp = Network::Create(*NetworkSpec::Parse("8-4-3", {8}), 1);
  ASSERT_TRUE(mlp.ok());
  BatcherConfig config;
  config.max_wait = absl::Seconds(2);
  config.max_batch_examples = 64;
  config.max_queued_examples = 10;
  DynamicBatcher batcher(TeacherModel::Single({std::move(*mlp), Preprocessing(), "mlp"}), config);
  ASSERT_TRUE(
      batcher.Submit(RandomMatrix(8, 8, 1), [](const absl::Status&, const Tensor*) {}).ok());
  const absl::Status full =
      batcher.Submit(RandomMatrix(8, 8, 2), [](const absl::Status&, const Tensor*) {});
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(IsMarkedTransient(full.message())) << full;
}

}  // namespace
}  // namespace distillery
