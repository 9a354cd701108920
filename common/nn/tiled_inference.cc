#include "common/nn/tiled_inference.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/nn/layout_bridge.h"

namespace distillery {
namespace {

// The index of the first layer from `i` on that an inference pass runs
// (dropout is skipped), or layers.size().
size_t NextRun(const std::vector<std::unique_ptr<Layer>>& layers, size_t i) {
  while (i < layers.size() && layers[i]->IdentityInInference()) ++i;
  return i;
}

}  // namespace

TiledInference::Plan::~Plan() {
  for (Layer* layer : configured) {
    layer->SetInferenceAffine(nullptr, nullptr);
    layer->SetInferenceOutput(false, DataType::kF32);
  }
}

void TiledInference::MakePlan(const std::vector<std::unique_ptr<Layer>>& layers, Plan* plan) {
  plan->steps.clear();
  if (NextRun(layers, 0) == layers.size()) {
    // Only identities: run them as they are.
    for (size_t i = 0; i < layers.size(); ++i) plan->steps.push_back(i);
    return;
  }
  Tensor scale, shift;
  for (size_t i = NextRun(layers, 0); i < layers.size(); i = NextRun(layers, i + 1)) {
    plan->steps.push_back(i);
    Layer& layer = *layers[i];
    plan->configured.push_back(&layer);  // resetting an unconfigured layer is harmless
    size_t next = NextRun(layers, i + 1);
    if (next < layers.size() && layers[next]->InferenceAffine(&scale, &shift) &&
        layer.SetInferenceAffine(&scale, &shift)) {
      next = NextRun(layers, next + 1);  // the affine map is done
    }
    // A ReLU that the layer applies in every pass (Layer::SetFusedRelu), or
    // as an inference post-op.
    const bool relu = next < layers.size() && layers[next]->IsRelu() &&
                      (layer.FusedRelu() || layer.SetInferenceOutput(true, DataType::kF32));
    if (relu) next = NextRun(layers, next + 1);  // the ReLU is done
    if (next < layers.size() && layers[next]->TakesBf16()) {
      layer.SetInferenceOutput(relu, DataType::kBF16);
    }
    i = next - 1;  // continue after the fused layers and any identities
  }
}

absl::Status TiledInference::Run(const std::vector<std::unique_ptr<Layer>>& layers,
                                 const Tensor& input, DnnlContext* context, Tensor* output) {
  if (layers.empty()) return absl::InvalidArgumentError("inference through no layers");
  if (input.rank() < 1 || input.rows() < 1 || input.size() == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("inference on an empty batch ", ShapeString(input.shape())));
  }
  if (tile_rows_ < 1) {
    return absl::InvalidArgumentError(absl::StrCat("tile of ", tile_rows_, " rows"));
  }
  const int64_t rows = input.rows();
  const int64_t in_width = input.cols();
  Shape tile_shape = input.shape();
  tile_shape[0] = tile_rows_;
  Plan plan;
  MakePlan(layers, &plan);
  activations_.resize(layers.size());
  plain_inputs_.resize(layers.size());
  for (int64_t begin = 0; begin < rows; begin += tile_rows_) {
    const int64_t count = std::min(tile_rows_, rows - begin);
    // Every tile is a copy, padded with zeros: the layers see one shape, and
    // the padding rows cannot affect the others (each row is computed on its
    // own within a tile).
    tile_.Reshape(tile_shape);
    std::copy(input.row(begin), input.row(begin) + count * in_width, tile_.data());
    std::fill(tile_.data() + count * in_width, tile_.data() + tile_rows_ * in_width, 0.f);
    const Tensor* current = &tile_;
    for (size_t i : plan.steps) {
      const Tensor* seen = nullptr;
      if (absl::Status s = ForwardInLayout(*layers[i], *current, /*training=*/false, context,
                                           &plain_inputs_[i], &seen, &activations_[i]);
          !s.ok()) {
        return s;
      }
      current = &activations_[i];
    }
    if (current->rows() != tile_rows_) {
      return absl::InternalError(absl::StrCat("the last layer gave ", current->rows(),
                                              " rows for a tile of ", tile_rows_));
    }
    const int64_t out_width = current->cols();
    if (begin == 0) {
      Shape out_shape = current->shape();
      out_shape[0] = rows;
      output->Reshape(out_shape);
    }
    std::copy(current->data(), current->data() + count * out_width, output->row(begin));
  }
  return absl::OkStatus();
}

}  // namespace distillery
