// Dynamic batching: requests from many students are queued and merged into
// shared forward passes of the teacher, up to a largest batch or a longest
// wait, whichever comes first.
//
// Forward passes go through TeacherModel::Infer (Network::Infer, fixed tiles), so a request's
// answer does not depend on the requests it is merged with. Requests whose
// deadline has passed, or whose caller has gone, when their batch is formed
// are answered DEADLINE_EXCEEDED or CANCELLED without being computed.
//
// Thread-safety: Submit may be called from any thread. Callbacks run on the
// batcher's own worker thread, one at a time, and must not block for long.
#ifndef DISTILLERY_TEACHER_SERVER_DYNAMIC_BATCHER_H_
#define DISTILLERY_TEACHER_SERVER_DYNAMIC_BATCHER_H_

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/tensor/tensor.h"
#include "teacher_server/teacher_model.h"

namespace distillery {

struct BatcherConfig {
  // Examples in one merged forward pass at most.
  int64_t max_batch_examples = 1024;
  // How long the first queued request may wait for others to join it.
  absl::Duration max_wait = absl::Milliseconds(2);
  // Examples waiting in the queue at most; beyond, Submit answers
  // RESOURCE_EXHAUSTED instead of queueing without end.
  int64_t max_queued_examples = 65536;
  // Compute threads of the worker's forward passes (0 = the process
  // default). Set on the worker thread itself: OpenMP's thread count is
  // per thread, and the transfer set's logits, computed on the main thread
  // with the same count, must be the same bits.
  int compute_threads = 0;
};

// Observations for metrics; any member may be empty.
struct BatcherObserver {
  std::function<void(int64_t examples, int64_t requests)> on_forward_pass;
  std::function<void(int64_t queued_examples)> on_queue_depth;
  // Requests dropped unanswered: their deadline passed or they were cancelled.
  std::function<void(int64_t requests)> on_dropped;
};

class DynamicBatcher {
 public:
  // Called once per request with its logits (rows x the model's members *
  // classes, as TeacherModel::Infer gives them, the request's rows in
  // order), or with an error status and null logits.
  using Callback = std::function<void(const absl::Status& status, const Tensor* logits)>;

  // Takes ownership of `model` (used only by the worker thread) and starts
  // the worker.
  DynamicBatcher(std::unique_ptr<TeacherModel> model, const BatcherConfig& config,
                 BatcherObserver observer = {});
  // Stops the worker; requests still queued get UNAVAILABLE.
  ~DynamicBatcher();

  // Queues `inputs` (rows x input_size, 1 <= rows <= max_batch_examples).
  // Returns RESOURCE_EXHAUSTED (queue full) or UNAVAILABLE (stopping)
  // without calling `done`; otherwise `done` is called exactly once later.
  // When the batch is formed after `deadline`, or `cancelled` (may be empty;
  // called on the worker thread) returns true, the request is not computed
  // and `done` gets DEADLINE_EXCEEDED or CANCELLED.
  absl::Status Submit(Tensor inputs, Callback done, absl::Time deadline = absl::InfiniteFuture(),
                      std::function<bool()> cancelled = {});

  // Stops accepting requests, finishes those queued, and joins the worker.
  void Stop();

 private:
  struct Request {
    Tensor inputs;
    Callback done;
    absl::Time arrival;
    absl::Time deadline;
    std::function<bool()> cancelled;
  };
  void WorkerLoop();
  void RunBatch(std::vector<Request>& batch);

  std::unique_ptr<TeacherModel> model_;
  const BatcherConfig config_;
  BatcherObserver observer_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Request> queue_;    // guarded by mutex_
  int64_t queued_examples_ = 0;  // guarded by mutex_
  bool stopping_ = false;        // guarded by mutex_
  std::thread worker_;
  Tensor merged_;  // worker thread only
  Tensor slice_;   // worker thread only
};

}  // namespace distillery

#endif  // DISTILLERY_TEACHER_SERVER_DYNAMIC_BATCHER_H_
