// Weight averaging over the tail of a run (stochastic weight averaging,
// Izmailov et al. 2018, arXiv 1803.05407): the running mean of a network's
// parameters, taken at the end of each of the run's last epochs. The mean
// of weights late in training tends to generalise better than the last
// weights alone, without a test set to pick an epoch by.
//
// The trainer (common/train/trainer.h, average_last_epochs) adds the
// parameters after each of the last K epochs, keeps the mean in every
// checkpoint so that --resume goes on averaging, and ends the run with the
// mean as the network's weights. Networks with batch normalization are
// refused there: their running statistics belong to the weights they were
// measured with, not to the mean.
#ifndef DISTILLERY_COMMON_TRAIN_WEIGHT_AVERAGE_H_
#define DISTILLERY_COMMON_TRAIN_WEIGHT_AVERAGE_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "common/nn/layer.h"
#include "common/tensor/tensor.h"

namespace distillery {

class WeightAverage {
 public:
  // Adds the parameters' current values: the mean of n snapshots becomes
  // the mean of n + 1 (mean += (value - mean) / (n + 1), in float, value by
  // value, so that the result is the same bits on every run).
  // InvalidArgument when the parameters are not those of earlier snapshots
  // (count or shapes).
  absl::Status Add(const std::vector<Parameter*>& params);

  // Snapshots averaged so far.
  int64_t count() const { return count_; }
  // The mean, one tensor per parameter in their order; empty before Add.
  const std::vector<Tensor>& means() const { return means_; }

  // Restarts from a recorded mean of `count` snapshots (a resumed run).
  void Reset(std::vector<Tensor> means, int64_t count);

  // Writes the mean into the parameters' values. InvalidArgument when there
  // is none or it does not fit them.
  absl::Status CopyTo(const std::vector<Parameter*>& params) const;

 private:
  absl::Status CheckFits(const std::vector<Parameter*>& params) const;

  std::vector<Tensor> means_;
  int64_t count_ = 0;
};

}  // namespace distillery

#endif  // DISTILLERY_COMMON_TRAIN_WEIGHT_AVERAGE_H_
