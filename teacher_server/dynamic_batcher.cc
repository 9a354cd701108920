#include "teacher_server/dynamic_batcher.h"

#include "absl/strings/str_cat.h"
#include "common/tensor/dnnl_context.h"
#include "common/util/transient_marker.h"

namespace distillery {

DynamicBatcher::DynamicBatcher(std::unique_ptr<TeacherModel> model, const BatcherConfig& config,
                               BatcherObserver observer)
    : model_(std::move(model)), config_(config), observer_(std::move(observer)) {
  worker_ = std::thread([this] { WorkerLoop(); });
}

DynamicBatcher::~DynamicBatcher() { Stop(); }

void DynamicBatcher::Stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (worker_.joinable()) worker_.join();
}

absl::Status DynamicBatcher::Submit(Tensor inputs, Callback done, absl::Time deadline,
                                    std::function<bool()> cancelled) {
  const int64_t rows = inputs.rows();
  if (rows < 1 || rows > config_.max_batch_examples) {
    return absl::InvalidArgumentError(
        absl::StrCat("a request holds 1 to ", config_.max_batch_examples, " examples, got ", rows));
  }
  int64_t depth = 0;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) return absl::UnavailableError("the teacher is shutting down");
    if (queued_examples_ + rows > config_.max_queued_examples) {
      return absl::ResourceExhaustedError(MarkTransient(absl::StrCat(
          "the teacher's queue is full (", queued_examples_, " examples waiting, limit ",
          config_.max_queued_examples, "); retry with backoff")));
    }
    queue_.push_back(
        Request{std::move(inputs), std::move(done), absl::Now(), deadline, std::move(cancelled)});
    queued_examples_ += rows;
    depth = queued_examples_;
  }
  if (observer_.on_queue_depth) observer_.on_queue_depth(depth);
  wake_.notify_one();
  return absl::OkStatus();
}

void DynamicBatcher::WorkerLoop() {
  SetComputeThreads(config_.compute_threads);
  std::vector<Request> batch;
  while (true) {
    int64_t depth = 0;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, nothing left
      // Wait for more requests to join until the batch is full or the
      // oldest request has waited max_wait.
      const absl::Time deadline = queue_.front().arrival + config_.max_wait;
      while (!stopping_ && queued_examples_ < config_.max_batch_examples) {
        const absl::Duration left = deadline - absl::Now();
        if (left <= absl::ZeroDuration()) break;
        wake_.wait_for(lock, absl::ToChronoNanoseconds(left));
      }
      int64_t rows = 0;
      while (!queue_.empty() && rows + queue_.front().inputs.rows() <= config_.max_batch_examples) {
        rows += queue_.front().inputs.rows();
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      queued_examples_ -= rows;
      depth = queued_examples_;
    }
    if (observer_.on_queue_depth) observer_.on_queue_depth(depth);
    RunBatch(batch);
    batch.clear();
  }
}

void DynamicBatcher::RunBatch(std::vector<Request>& batch) {
  // Answer, without computing them, the requests nobody waits for any more.
  const absl::Time now = absl::Now();
  int64_t dropped = 0;
  size_t kept = 0;
  for (size_t i = 0; i < batch.size(); ++i) {
    Request& r = batch[i];
    if (r.cancelled && r.cancelled()) {
      r.done(absl::CancelledError("the call was cancelled while queued"), nullptr);
      ++dropped;
    } else if (now >= r.deadline) {
      r.done(absl::DeadlineExceededError(absl::StrCat("the call's deadline passed after ",
                                                      absl::FormatDuration(now - r.arrival),
                                                      " in the teacher's queue")),
             nullptr);
      ++dropped;
    } else {
      if (kept != i) batch[kept] = std::move(r);
      ++kept;
    }
  }
  batch.resize(kept);
  if (dropped > 0 && observer_.on_dropped) observer_.on_dropped(dropped);
  if (batch.empty()) return;
  int64_t rows = 0;
  for (const Request& r : batch) rows += r.inputs.rows();
  const Tensor* inputs = &batch.front().inputs;
  if (batch.size() > 1) {
    Shape shape = model_->input_shape();
    shape.insert(shape.begin(), rows);
    merged_.Reshape(shape);
    int64_t offset = 0;
    for (const Request& r : batch) {
      std::copy(r.inputs.data(), r.inputs.data() + r.inputs.size(), merged_.row(offset));
      offset += r.inputs.rows();
    }
    inputs = &merged_;
  }
  const Tensor* logits = nullptr;
  const absl::Status status = model_->Infer(*inputs, &logits);
  if (observer_.on_forward_pass) {
    observer_.on_forward_pass(rows, static_cast<int64_t>(batch.size()));
  }
  if (!status.ok()) {
    for (Request& r : batch) r.done(status, nullptr);
    return;
  }
  if (batch.size() == 1) {
    batch.front().done(absl::OkStatus(), logits);
    return;
  }
  const int64_t classes = logits->cols();
  int64_t offset = 0;
  for (Request& r : batch) {
    slice_.Resize(r.inputs.rows(), classes);
    std::copy(logits->row(offset), logits->row(offset + r.inputs.rows()), slice_.data());
    offset += r.inputs.rows();
    r.done(absl::OkStatus(), &slice_);
  }
}

}  // namespace distillery
