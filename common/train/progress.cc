#include "common/train/progress.h"

#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace distillery {

std::string FormatDuration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "-";
  const int64_t total = static_cast<int64_t>(std::llround(seconds));
  const int64_t hours = total / 3600, minutes = total / 60 % 60, secs = total % 60;
  if (hours > 0) return absl::StrFormat("%d:%02d:%02d", hours, minutes, secs);
  return absl::StrFormat("%d:%02d", minutes, secs);
}

ProgressLine::ProgressLine(bool enabled, FILE* out, absl::Duration min_interval, Now now)
    : enabled_(enabled && out != nullptr),
      out_(out),
      min_interval_(min_interval),
      now_(std::move(now)) {}

void ProgressLine::StartEpoch(int64_t epoch, int64_t epochs, int64_t batches,
                              int64_t examples_per_batch) {
  epoch_ = epoch;
  epochs_ = epochs;
  batches_ = batches;
  examples_per_batch_ = examples_per_batch;
  epoch_start_ = now_();
  last_draw_ = epoch_start_;
}

std::string ProgressLine::Text(int64_t batches_done, double elapsed) const {
  std::string text =
      absl::StrCat("epoch ", epoch_ + 1, "/", epochs_, "  batch ", batches_done, "/", batches_);
  if (batches_done > 0 && elapsed > 0) {
    const double rate = static_cast<double>(batches_done * examples_per_batch_) / elapsed;
    const double left =
        elapsed / static_cast<double>(batches_done) * static_cast<double>(batches_ - batches_done);
    absl::StrAppend(
        &text, absl::StrFormat("  %.0f examples/s  epoch left %s", rate, FormatDuration(left)));
  }
  return text;
}

void ProgressLine::BatchDone(int64_t batches_done) {
  if (!enabled_) return;
  const absl::Time now = now_();
  if (now - last_draw_ < min_interval_ && batches_done < batches_) return;
  last_draw_ = now;
  const std::string text = Text(batches_done, absl::ToDoubleSeconds(now - epoch_start_));
  // \r back to the line's start, \033[K erases what a longer line left.
  std::fprintf(out_, "\r%s\033[K", text.c_str());
  std::fflush(out_);
  drawn_ = true;
}

void ProgressLine::Clear() {
  if (!enabled_ || !drawn_) return;
  std::fprintf(out_, "\r\033[K");
  std::fflush(out_);
  drawn_ = false;
}

}  // namespace distillery
