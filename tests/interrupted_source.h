// A training batch source that fails at one epoch: a run interrupted there,
// with the checkpoint of the epochs before (for resume tests).
#ifndef DISTILLERY_TESTS_INTERRUPTED_SOURCE_H_
#define DISTILLERY_TESTS_INTERRUPTED_SOURCE_H_

#include <functional>

#include "common/train/trainer.h"

namespace distillery {

// The batches of a LocalBatchSource, except that epoch `fail_epoch` fails
// with UNAVAILABLE.
class InterruptedSource : public BatchSource {
 public:
  InterruptedSource(const Dataset& data, const TrainerConfig& config, int64_t fail_epoch)
      : inner_(data, config.batch_size, config.augmentation, config.seed),
        fail_epoch_(fail_epoch) {}
  Shape example_shape() const override { return inner_.example_shape(); }
  int64_t BatchesPerEpoch() const override { return inner_.BatchesPerEpoch(); }
  int64_t ExamplesPerEpoch() const override { return inner_.ExamplesPerEpoch(); }
  absl::Status ProduceEpoch(int64_t epoch,
                            const std::function<bool(TrainingBatch&&)>& sink) override {
    if (epoch == fail_epoch_) return absl::UnavailableError("interrupted");
    return inner_.ProduceEpoch(epoch, sink);
  }

 private:
  LocalBatchSource inner_;
  const int64_t fail_epoch_;
};

}  // namespace distillery

#endif  // DISTILLERY_TESTS_INTERRUPTED_SOURCE_H_
