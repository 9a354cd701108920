// Batch-invariant inference: a network's forward pass (training off) run
// over fixed-size tiles of rows, the last one padded with zeros, so that
// every layer only ever sees one input shape.
//
// Why: a layer picks its oneDNN kernel, blocking and thread partition by
// the shape it is given, and different kernels add in different orders, so
// the same example's logits could change with the examples it is batched
// with (seen with oneDNN capped at AVX2 for batch sizes of 7 and more). With
// one tile shape per layer, a row's output is a function of the weights and
// that row alone, on a given machine (instruction set, thread count),
// whatever batch it rides in and wherever it sits in it; and the layers
// keep one set of primitives, not one per batch size.
//
// The pass fuses where the layers allow (the Element types and Fusion
// sections of common/nn/layer.h): dropout is skipped, a batch norm after a
// layer that can apply its affine map as a post-op is skipped, so is a
// ReLU after a layer that can apply it, and a bf16 layer feeding another
// gives it bf16 activations. The layers' inference settings are
// restored to plain f32 outputs when Run returns.
//
// The price: a batch of n rows costs ceil(n / tile_rows) tiles, so small
// batches pay for a whole tile (bench/RESULTS.md has the figures).
//
// Thread-safety: one instance per thread (it keeps the tile's buffers), and
// the layers are used by that thread only during Run.
#ifndef DISTILLERY_COMMON_NN_TILED_INFERENCE_H_
#define DISTILLERY_COMMON_NN_TILED_INFERENCE_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "common/nn/layer.h"
#include "common/tensor/dnnl_context.h"
#include "common/tensor/tensor.h"

namespace distillery {

class TiledInference {
 public:
  // Rows per tile of the networks' inference paths (Network::Infer): the
  // training batch size of the recipes, so that in-process teachers and
  // evaluation share the training batch's primitives.
  static constexpr int64_t kDefaultTileRows = 128;

  explicit TiledInference(int64_t tile_rows = kDefaultTileRows) : tile_rows_(tile_rows) {}

  int64_t tile_rows() const { return tile_rows_; }

  // Runs Forward(training=false) of `layers`, in order, over `input`
  // (batch, ...) one tile at a time, and writes the last layer's output for
  // the input's rows into `output` (batch, ...), resized here. Only Forward
  // is called, with tensors of this class, so a network's activations of its
  // last training Forward stay as they were. InvalidArgument for an empty
  // input or no layers. `context` (the layers' own) converts layouts
  // between layers that need it (common/nn/layout_bridge.h).
  absl::Status Run(const std::vector<std::unique_ptr<Layer>>& layers, const Tensor& input,
                   DnnlContext* context, Tensor* output);

 private:
  // The layers a run calls, in order, and those whose inference output it
  // configured (reset when the plan goes).
  struct Plan {
    ~Plan();
    std::vector<size_t> steps;
    std::vector<Layer*> configured;
  };
  static void MakePlan(const std::vector<std::unique_ptr<Layer>>& layers, Plan* plan);

  int64_t tile_rows_;
  Tensor tile_;                       // one tile of input rows
  std::vector<Tensor> activations_;   // each layer's output for one tile
  std::vector<Tensor> plain_inputs_;  // plain copies of blocked inputs
};

}  // namespace distillery

#endif  // DISTILLERY_COMMON_NN_TILED_INFERENCE_H_
