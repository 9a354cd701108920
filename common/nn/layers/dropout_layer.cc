#include "common/nn/layers/dropout_layer.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/util/random.h"

namespace distillery {
namespace {

// Applies the mask to elements [begin, end). Compiled for several
// instruction sets; the best one the CPU has is picked at load time.
__attribute__((target_clones("avx512f", "avx2", "default"))) void DropoutChunk(
    const float* in, float* out, float* mask, int64_t begin, int64_t end, uint64_t key,
    uint32_t drop_below, float keep_scale) {
  const uint32_t low = static_cast<uint32_t>(key), high = static_cast<uint32_t>(key >> 32);
  for (int64_t i = begin; i < end; ++i) {
    const uint32_t draw = Hash32(Hash32(static_cast<uint32_t>(i) + low) ^ high) >> 8;
    mask[i] = draw < drop_below ? 0.f : keep_scale;
    out[i] = in[i] * mask[i];
  }
}

}  // namespace

std::string DropoutLayer::Describe() const { return absl::StrCat("Dropout(", rate_, ")"); }

absl::Status DropoutLayer::Forward(const Tensor& input, bool training, Tensor* output) {
  output->Reshape(input.shape());
  const int64_t n = input.size();
  const float* in = input.data();
  float* out = output->data();
  last_forward_was_training_ = training && rate_ > 0.f;
  if (!last_forward_was_training_) {
    std::copy(in, in + n, out);
    return absl::OkStatus();
  }
  mask_.Reshape(input.shape());
  // A unit is dropped when the top 24 bits of its hash fall below
  // rate * 2^24. The hash of element i is Hash32(Hash32(i + low) ^ high),
  // (low, high) being the two halves of a 64-bit key of (seed, step).
  const uint64_t key = HashCombine(seed_, step_);
  const uint32_t drop_below = static_cast<uint32_t>(rate_ * 16777216.f);
  const float keep_scale = 1.f / (1.f - rate_);
  constexpr int64_t kChunk = 4096;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static)
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    const int64_t begin = chunk * kChunk;
    DropoutChunk(in, out, mask_.data(), begin, std::min(n, begin + kChunk), key, drop_below,
                 keep_scale);
  }
  return absl::OkStatus();
}

absl::Status DropoutLayer::Backward(const Tensor& /*input*/, const Tensor& output,
                                    const Tensor& grad_output, Tensor* grad_input) {
  if (grad_input == nullptr) return absl::OkStatus();
  if (grad_output.rows() != output.rows() || grad_output.cols() != output.cols()) {
    return absl::InvalidArgumentError("Dropout: gradient shape does not match its output");
  }
  grad_input->Reshape(output.shape());
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
