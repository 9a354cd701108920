// Internal to the pooling layer (pool2d_layer.cc): max pooling over 2x2
// windows at stride 2, without padding, on channels-last (nhwc) tensors in
// f32 or bf16. That is the pooling of the convolutional networks here, and
// on it oneDNN 2.6's nhwc pooling kernels run 4 to 7 times slower than
// these loops: on the AMX Xeon, 2 threads, batch 128 of 32x28x28 bf16,
// 1.15 ms forward and 1.06 ms backward against 0.25 and 0.16 ms
// (bench/RESULTS.md). Every other pooling goes to oneDNN.
//
// Shapes: input (batch, channels, rows, cols) in Layout::kChannelsLast,
// output (batch, channels, rows / 2, cols / 2) in the same layout and type
// (floor mode: an odd last row or column is in no window).
//
// Forward: output (n, c, y, x) is the largest of input (n, c, 2y + i,
// 2x + j) for i, j in {0, 1}, the first in the order (0,0), (0,1), (1,0),
// (1,1) among equals, as oneDNN's pooling_max chooses; argmax gets that
// window position, 2i + j, one byte per output element in the output's
// element order. For finite inputs both the output and the gradients below
// are bit-identical to oneDNN's (pool2d_layer_test checks this with ties);
// a NaN in a window is not ordered the way oneDNN orders it.
// Backward: dL/dinput at each window's argmax position is dL/doutput, and
// 0 elsewhere (windows do not overlap, so nothing is summed); rows and
// columns in no window get 0.
//
// Threads: OpenMP, over output rows.
#ifndef DISTILLERY_COMMON_NN_LAYERS_MAX_POOL_2X2_H_
#define DISTILLERY_COMMON_NN_LAYERS_MAX_POOL_2X2_H_

#include <cstdint>

#include "common/tensor/tensor.h"

namespace distillery {
namespace max_pool_2x2 {

// Requires: input rank 4 in kChannelsLast with at least 2 rows and 2
// columns; output reshaped to the output shape in input's type and layout;
// argmax null (an inference pass) or holding output.size() bytes.
void Forward(const Tensor& input, Tensor* output, uint8_t* argmax);

// Requires: grad_output in the output shape, grad_input in the input shape,
// both in one type and kChannelsLast; argmax as the matching Forward left
// it.
void Backward(const Tensor& grad_output, const uint8_t* argmax, Tensor* grad_input);

}  // namespace max_pool_2x2
}  // namespace distillery

#endif  // DISTILLERY_COMMON_NN_LAYERS_MAX_POOL_2X2_H_
