// Training progress for people: a line within each epoch that rewrites
// itself on a terminal (batches done, examples/s, time left), and the time
// left of the whole run for the per-epoch log lines.
//
// On a terminal (TrainerConfig::progress_line), the line is written at most
// every `min_interval` with a carriage return and cleared before the next
// log line; off a terminal (CI, log files) nothing is written within an
// epoch, so that logs hold plain lines only.
//
// Thread-safety: one instance per training run, used by its thread.
#ifndef DISTILLERY_COMMON_TRAIN_PROGRESS_H_
#define DISTILLERY_COMMON_TRAIN_PROGRESS_H_

#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace distillery {

// "1:05" for 65 s, "1:02:03" for 3,723 s; "-" for a negative or non-finite
// duration.
std::string FormatDuration(double seconds);

// The estimate of the time left of a run of `epochs` epochs: the mean epoch
// time of those done in this process (a resumed run counts only its own),
// times the epochs left. Negative until one epoch is done.
class RunClock {
 public:
  void EpochDone(double epoch_seconds) {
    seconds_ += epoch_seconds;
    ++epochs_;
  }
  double SecondsLeft(int64_t epochs_left) const {
    return epochs_ == 0 ? -1.0 : seconds_ / static_cast<double>(epochs_) * epochs_left;
  }

 private:
  double seconds_ = 0;
  int64_t epochs_ = 0;
};

class ProgressLine {
 public:
  using Now = std::function<absl::Time()>;
  // Writes to `out` (not owned) when `enabled`; `now` is the clock (tests
  // pass their own).
  ProgressLine(
      bool enabled, FILE* out, absl::Duration min_interval = absl::Milliseconds(250),
      Now now = [] { return absl::Now(); });
  ~ProgressLine() { Clear(); }

  // A new epoch of `batches` batches of `examples_per_batch`.
  void StartEpoch(int64_t epoch, int64_t epochs, int64_t batches, int64_t examples_per_batch);
  // After each batch: redraws the line if min_interval has passed.
  void BatchDone(int64_t batches_done);
  // Erases the line (before a log line, and at the end of an epoch).
  void Clear();

  // The text of the line after `batches_done` batches in `elapsed` seconds,
  // e.g. "epoch 3/20  batch 120/390  2950 examples/s  epoch left 0:09".
  std::string Text(int64_t batches_done, double elapsed) const;

 private:
  bool enabled_;
  FILE* out_;
  absl::Duration min_interval_;
  Now now_;
  int64_t epoch_ = 0, epochs_ = 0, batches_ = 0, examples_per_batch_ = 0;
  absl::Time epoch_start_, last_draw_;
  bool drawn_ = false;
};

}  // namespace distillery

#endif  // DISTILLERY_COMMON_TRAIN_PROGRESS_H_
