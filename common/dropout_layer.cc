#include "common/dropout_layer.h"

#include "absl/strings/str_cat.h"
#include "common/random.h"

namespace distillery {

std::string DropoutLayer::Describe() const { return absl::StrCat("Dropout(", rate_, ")"); }

absl::Status DropoutLayer::Forward(const Matrix& input, bool training, Matrix* output) {
  output->Resize(input.rows(), input.cols());
  const int64_t n = input.size();
  const float* in = input.data();
  float* out = output->data();
  last_forward_was_training_ = training && rate_ > 0.f;
  if (!last_forward_was_training_) {
    std::copy(in, in + n, out);
    return absl::OkStatus();
  }
  mask_.Resize(input.rows(), input.cols());
  float* mask = mask_.data();
  const float keep_scale = 1.f / (1.f - rate_);
  // A unit is dropped when the top 24 bits of its hash fall below rate * 2^24.
  const uint32_t drop_below = static_cast<uint32_t>(rate_ * 16777216.f);
  const uint64_t stream = HashCombine(seed_, step_);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t draw =
        static_cast<uint32_t>(SplitMix64(stream + static_cast<uint64_t>(i)) >> 40);
    mask[i] = draw < drop_below ? 0.f : keep_scale;
    out[i] = in[i] * mask[i];
  }
  return absl::OkStatus();
}

absl::Status DropoutLayer::Backward(const Matrix& /*input*/, const Matrix& output,
                                    const Matrix& grad_output, Matrix* grad_input) {
  if (grad_input == nullptr) return absl::OkStatus();
  if (grad_output.rows() != output.rows() || grad_output.cols() != output.cols()) {
    return absl::InvalidArgumentError("Dropout: gradient shape does not match its output");
  }
  grad_input->Resize(output.rows(), output.cols());
  const int64_t n = output.size();
  const float* g = grad_output.data();
  float* gi = grad_input->data();
  if (!last_forward_was_training_) {
    std::copy(g, g + n, gi);
    return absl::OkStatus();
  }
  const float* mask = mask_.data();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) gi[i] = g[i] * mask[i];
  return absl::OkStatus();
}

}  // namespace distillery
