// 2-D max and average pooling on oneDNN pooling primitives (f32; and bf16
// in bf16 passes), except the max pooling over 2x2 windows at stride 2
// without padding of a channels-last input, which runs on loops of its own
// with the same results (max_pool_2x2.h says why).
//
// Shapes (NCHW; the layer also takes channel-blocked inputs and then gives
// blocked outputs and gradients, common/nn/layer.h):
//   input  (batch, channels, rows, cols)
//   output (batch, channels, out_rows, out_cols), where per axis
//     out = (in + 2 * pad - window) / stride + 1   (floor mode)
//     out = ceil((in + 2 * pad - window) / stride) + 1, less 1 when the last
//           window would start beyond the left padding and the image
//                                                  (ceil mode, PyTorch's)
//   In ceil mode the last window may hang over the right/bottom edge: that
//   overhang is padding on the right/bottom only, which max pooling never
//   chooses and an average excluding padding never counts. An average with
//   count_include_pad whose last window overhangs is Unimplemented (PyTorch
//   divides it by the window clipped to the declared padding).
// Forward, over the window of output element (n, c, y, x): the input rows
// y * stride_rows - pad_rows + [0, window_rows) and the columns likewise:
//   max:     output = the largest input element of the window (padding is
//            never chosen)
//   average: output = (sum of the window's input elements) / count, where
//            count = window_rows * window_cols with count_include_pad (the
//            padding counts as zeros), else the number of the window's
//            elements inside the image.
// Backward:
//   max:     dL/dinput gets each dL/doutput at the position the window's
//            maximum came from (summed where windows overlap); this uses the
//            workspace of the last training Forward, so Backward after an
//            inference Forward (unless that one wrote another tensor than
//            the `output` Backward is given, as Network::Infer does), or
//            after its shape's cached primitives were evicted
//            (primitive_cache.h) since, is a FailedPrecondition.
//   average: dL/dinput gets dL/doutput / count at every element of the window.
// Padding may be at most half the window (PyTorch's rule).
#ifndef DISTILLERY_COMMON_NN_LAYERS_POOL2D_LAYER_H_
#define DISTILLERY_COMMON_NN_LAYERS_POOL2D_LAYER_H_

#include <array>
#include <vector>

#include "common/nn/layer.h"
#include "common/nn/primitive_cache.h"
#include "common/tensor/dnnl_context.h"

namespace distillery {

enum class PoolKind : uint8_t { kMax = 0, kAverage = 1 };

struct Pool2dOptions {
  PoolKind kind = PoolKind::kMax;
  int64_t window_rows = 2;
  int64_t window_cols = 2;
  int64_t stride_rows = 2;
  int64_t stride_cols = 2;
  int64_t pad_rows = 0;
  int64_t pad_cols = 0;
  // Average pooling: whether the padding counts in the divisor.
  bool count_include_pad = true;
  // PyTorch's ceil_mode (out rounded up, the last window hanging over the
  // bottom/right edge): extra right-hand padding given to oneDNN.
  bool ceil_mode = false;
};

class Pool2dLayer : public Layer {
 public:
  // `context` is not owned and must outlive the layer. Invalid options are
  // reported by OutputShape, Forward and Backward.
  Pool2dLayer(const Pool2dOptions& options, DnnlContext* context)
      : options_(options), context_(context) {}

  // "MaxPool2d(2x2, stride 2)", "AvgPool2d(3x3, stride 1, pad 1, exclude pad)".
  std::string Describe() const override;
  // Takes (channels, rows, cols), gives (channels, out_rows, out_cols).
  absl::StatusOr<Shape> OutputShape(const Shape& example_shape) const override;
  bool TakesBlocked() const override { return true; }
  absl::Status Forward(const Tensor& input, bool training, Tensor* output) override;
  absl::Status Backward(const Tensor& input, const Tensor& output, const Tensor& grad_output,
                        Tensor* grad_input) override;

  // In bf16 (SetPrecision) a Forward also takes a bf16 input (TakesBf16,
  // TakesBf16InTraining) and pools it in bf16, which loses nothing for max
  // pooling. A training Forward gives its output in the input's type, and
  // Backward then takes dL/doutput and gives dL/dinput in it; an inference
  // Forward gives the type SetInferenceOutput asked for (converted when that
  // is not the input's).
  void SetPrecision(Precision precision) override { precision_ = precision; }
  bool TakesBf16() const override { return precision_ == Precision::kBF16; }
  bool TakesBf16InTraining() const override { return precision_ == Precision::kBF16; }
  bool SetInferenceOutput(bool relu, DataType type) override;

  const Pool2dOptions& options() const { return options_; }

  // For tests and metrics: the input shapes with cached primitives (at most
  // PrimitiveCache::kDefaultCapacity), and how many of them have their
  // training primitives (forward_training and backward) built.
  size_t CachedShapes() const { return primitives_by_shape_.size(); }
  size_t CachedBackwardShapes() const {
    return primitives_by_shape_.CountIf([](const Primitives& p) { return p.has_training; });
  }

 private:
  // The primitives for one input shape, in a cache of a few shapes. An
  // inference Forward builds only
  // forward_inference; the first training Forward or Backward of the shape
  // builds forward_training, backward and the workspace.
  struct Primitives {
    dnnl::memory::desc src, dst;  // in the input's layout
    bool has_inference = false;
    dnnl::pooling_forward forward_inference;
    bool has_training = false;
    dnnl::pooling_forward forward_training;
    dnnl::pooling_backward backward;
    dnnl::memory workspace;  // max pooling: where each maximum came from
    bool has_workspace = false;
    bool workspace_filled = false;  // by a training Forward of this entry
    // The 2x2 loops (Direct) instead of the primitives, and their workspace.
    bool direct = false;
    std::vector<uint8_t> argmax;
  };
  using ShapeKey = std::array<int64_t, 6>;  // batch, channels, rows, cols, layout, type
  absl::Status CheckInput(const char* what, const Tensor& input) const;
  // Whether `input` is pooled by max_pool_2x2's loops rather than oneDNN.
  bool Direct(const Tensor& input) const;
  // Forward's pooling of `input` into `pooled` (shaped) with `p`'s loops or
  // primitives; a training pass fills the workspace.
  absl::Status Pool(Primitives& p, const Tensor& input, bool training, Tensor* pooled);
  // The entry for `input`'s shape with the inference or the training
  // primitives built. The pointer is valid until the next call.
  absl::Status GetPrimitives(const Tensor& input, bool training, Primitives** primitives);

  Pool2dOptions options_;
  DnnlContext* context_;
  // A few shapes at most (common/nn/primitive_cache.h).
  PrimitiveCache<ShapeKey, Primitives> primitives_by_shape_;
  bool last_forward_training_ = false;
  const void* last_training_output_ = nullptr;  // where the last training Forward wrote
  Precision precision_ = Precision::kF32;
  DataType inference_output_type_ = DataType::kF32;  // SetInferenceOutput's
  Tensor pooled_;                                    // an inference output before its conversion
};

}  // namespace distillery

#endif  // DISTILLERY_COMMON_NN_LAYERS_POOL2D_LAYER_H_
