// Internal to the convolution layer (conv2d_layer.cc): the weight and bias
// gradients of a bf16 training pass of a convolution with one input channel
// (an image network's first layer), as one batched oneDNN matmul over a
// column copy of the input ("im2col").
//
// Why: oneDNN 2.6's bf16 weight-gradient kernels pad one input channel to
// 16 and fall to a kernel that is not AMX's, so the layer ran that pass in
// f32, after converting the bf16 dL/doutput to f32 in a channel-blocked
// layout: on the AMX Xeon, MNIST's 5x5 1->32 layer at batch 128 spent
// 0.75 ms converting and 0.65 ms in the pass. Here the pass reads the bf16
// dL/doutput where it is (channels-last), and the input is small enough
// to copy into columns (bench/RESULTS.md has the figures).
//
// The products: with T = kernel_rows * kernel_cols taps and the batch cut
// into chunks of a few images (at most 8, so that a chunk's columns stay
// in the core's cache), each chunk of K = images * out_rows * out_cols
// output positions has columns (T + 1, K): in row t = (i, j), the input
// element each position reads through tap (i, j) (0 in the padding),
// rounded to bf16 as the forward pass rounds it, and in row T ones.
// dL/doutput in channels-last is the matrix (positions, out_channels), so
//   columns x (the chunk's rows of dL/doutput) = (T + 1, out_channels)
// holds the chunk's weight gradient (transposed) and, in its last row, its
// bias gradient: f32 sums of bf16 products, by a oneDNN matmul batched over
// two chunks at a time (one per thread).
// The chunks' results are added in order: the same bits on a given machine
// and thread count.
#ifndef DISTILLERY_COMMON_NN_LAYERS_CONV2D_IM2COL_WEIGHTS_H_
#define DISTILLERY_COMMON_NN_LAYERS_CONV2D_IM2COL_WEIGHTS_H_

#include "absl/status/status.h"
#include "common/nn/layers/conv2d_layer.h"
#include "common/tensor/dnnl_context.h"
#include "common/tensor/tensor.h"

namespace distillery {

class Im2colWeightGradient {
 public:
  // Whether it computes the gradients of a convolution with `options`
  // from a dL/doutput of `type` in `layout`: one input channel, no groups,
  // a bf16 dL/doutput in channels-last.
  static bool Applies(const Conv2dOptions& options, DataType type, Layout layout);

  // For inputs of `input_shape` (batch, 1, rows, cols) and outputs of
  // `output_shape`, as the layer computes it from `options`. Throws
  // dnnl::error (the layer converts it).
  Im2colWeightGradient(const Conv2dOptions& options, const Shape& input_shape,
                       const Shape& output_shape, DnnlContext* context);

  // Writes dL/dweights (out_channels, 1, kernel_rows, kernel_cols) into
  // `weight_grad` and dL/dbias (out_channels) into `bias_grad` for `input`
  // (f32 or bf16; with one channel its layouts hold the same order) and
  // `grad_output` (bf16, channels-last), both of the constructor's shapes.
  absl::Status Run(const Tensor& input, const Tensor& grad_output, float* weight_grad,
                   float* bias_grad);

 private:
  // Rows 0..T-1 of columns_ for the parts_ chunks of images from `first` on
  // (row T is ones from the start).
  void FillColumns(const Tensor& input, int64_t first);

  Conv2dOptions options_;
  Shape input_shape_, output_shape_;
  DnnlContext* context_;
  int64_t taps_, chunk_images_, chunk_positions_;
  int64_t parts_;    // chunks per matmul
  Tensor images_;    // parts_ chunks of an f32 input, rounded to bf16
  Tensor columns_;   // (parts, taps + 1, chunk_positions), bf16
  Tensor products_;  // (chunks, taps + 1, out_channels), f32
  dnnl::memory::desc columns_desc_, grad_desc_, products_desc_;
  dnnl::matmul matmul_;
};

}  // namespace distillery

#endif  // DISTILLERY_COMMON_NN_LAYERS_CONV2D_IM2COL_WEIGHTS_H_
