#include "common/train/weight_average.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace distillery {

absl::Status WeightAverage::CheckFits(const std::vector<Parameter*>& params) const {
  if (params.size() != means_.size()) {
    return absl::InvalidArgumentError(absl::StrCat("the weight average holds ", means_.size(),
                                                   " tensors, the network has ", params.size(),
                                                   " parameters"));
  }
  for (size_t i = 0; i < params.size(); ++i) {
    if (params[i]->value.shape() != means_[i].shape()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the weight average of ", params[i]->name, " is ", ShapeString(means_[i].shape()),
          ", the parameter ", ShapeString(params[i]->value.shape())));
    }
  }
  return absl::OkStatus();
}

absl::Status WeightAverage::Add(const std::vector<Parameter*>& params) {
  if (count_ == 0) {
    means_.clear();
    for (const Parameter* p : params) means_.push_back(p->value);
    count_ = 1;
    return absl::OkStatus();
  }
  if (absl::Status s = CheckFits(params); !s.ok()) return s;
  ++count_;
  const float n = static_cast<float>(count_);
  for (size_t i = 0; i < params.size(); ++i) {
    float* mean = means_[i].data();
    const float* value = params[i]->value.data();
    for (int64_t k = 0; k < means_[i].size(); ++k) mean[k] += (value[k] - mean[k]) / n;
  }
  return absl::OkStatus();
}

void WeightAverage::Reset(std::vector<Tensor> means, int64_t count) {
  means_ = std::move(means);
  count_ = means_.empty() ? 0 : count;
}

absl::Status WeightAverage::CopyTo(const std::vector<Parameter*>& params) const {
  if (count_ == 0) return absl::InvalidArgumentError("no weights have been averaged");
  if (absl::Status s = CheckFits(params); !s.ok()) return s;
  for (size_t i = 0; i < params.size(); ++i) params[i]->value = means_[i];
  return absl::OkStatus();
}

}  // namespace distillery
