#include "common/nn/layers/max_pool_2x2.h"

#include <algorithm>

namespace distillery {
namespace max_pool_2x2 {
namespace {

// The value compared: the element itself, or the f32 a bf16 widens to
// (exactly). The elements are copied as they are, never converted back.
inline float Key(float x) { return x; }
inline float Key(uint16_t b) { return FloatFromBf16(b); }

// One row of output pixels from the input rows `top` and `bottom`
// (cols_out pixels of `channels` elements each).
template <typename T>
__attribute__((always_inline)) inline void PoolRow(const T* __restrict top,
                                                   const T* __restrict bottom, int64_t cols_out,
                                                   int64_t channels, T* __restrict out,
                                                   uint8_t* __restrict argmax) {
  for (int64_t x = 0; x < cols_out; ++x) {
    const T* t = top + 2 * x * channels;
    const T* b = bottom + 2 * x * channels;
    T* o = out + x * channels;
#pragma omp simd
    for (int64_t c = 0; c < channels; ++c) {
      T v = t[c];
      float best = Key(v);
      uint8_t at = 0;
      if (Key(t[channels + c]) > best) v = t[channels + c], best = Key(v), at = 1;
      if (Key(b[c]) > best) v = b[c], best = Key(v), at = 2;
      if (Key(b[channels + c]) > best) v = b[channels + c], at = 3;
      o[c] = v;
      if (argmax != nullptr) argmax[x * channels + c] = at;
    }
  }
}

// dL/dinput for the input rows `top` and `bottom` from one row of
// dL/doutput; an odd last column gets 0.
template <typename T>
__attribute__((always_inline)) inline void UnpoolRow(const T* __restrict grad,
                                                     const uint8_t* __restrict argmax,
                                                     int64_t cols_out, int64_t cols,
                                                     int64_t channels, T* __restrict top,
                                                     T* __restrict bottom) {
  for (int64_t x = 0; x < cols_out; ++x) {
    const T* g = grad + x * channels;
    const uint8_t* a = argmax + x * channels;
    T* t = top + 2 * x * channels;
    T* b = bottom + 2 * x * channels;
#pragma omp simd
    for (int64_t c = 0; c < channels; ++c) {
      const T value = g[c], zero = 0;
      const uint8_t at = a[c];
      t[c] = at == 0 ? value : zero;
      t[channels + c] = at == 1 ? value : zero;
      b[c] = at == 2 ? value : zero;
      b[channels + c] = at == 3 ? value : zero;
    }
  }
  if (cols % 2 != 0) {
    std::fill(top + 2 * cols_out * channels, top + cols * channels, T(0));
    std::fill(bottom + 2 * cols_out * channels, bottom + cols * channels, T(0));
  }
}

// The instruction-set clones (target_clones does not take templates).
__attribute__((target_clones("avx512f", "avx2", "default"))) void PoolRowF32(
    const float* top, const float* bottom, int64_t cols_out, int64_t channels, float* out,
    uint8_t* argmax) {
  PoolRow(top, bottom, cols_out, channels, out, argmax);
}
__attribute__((target_clones("avx512f", "avx2", "default"))) void PoolRowBf16(
    const uint16_t* top, const uint16_t* bottom, int64_t cols_out, int64_t channels, uint16_t* out,
    uint8_t* argmax) {
  PoolRow(top, bottom, cols_out, channels, out, argmax);
}
__attribute__((target_clones("avx512f", "avx2", "default"))) void UnpoolRowF32(
    const float* grad, const uint8_t* argmax, int64_t cols_out, int64_t cols, int64_t channels,
    float* top, float* bottom) {
  UnpoolRow(grad, argmax, cols_out, cols, channels, top, bottom);
}
__attribute__((target_clones("avx512f", "avx2", "default"))) void UnpoolRowBf16(
    const uint16_t* grad, const uint8_t* argmax, int64_t cols_out, int64_t cols, int64_t channels,
    uint16_t* top, uint16_t* bottom) {
  UnpoolRow(grad, argmax, cols_out, cols, channels, top, bottom);
}

// The pointer to an element of a tensor's storage, by its type.
inline const uint16_t* Bf16At(const Tensor& t, int64_t i) { return t.bf16_data() + i; }
inline uint16_t* Bf16At(Tensor* t, int64_t i) { return t->bf16_data() + i; }

}  // namespace

void Forward(const Tensor& input, Tensor* output, uint8_t* argmax) {
  const int64_t batch = input.dim(0), channels = input.dim(1);
  const int64_t rows = input.dim(2), cols = input.dim(3);
  const int64_t rows_out = rows / 2, cols_out = cols / 2;
  const int64_t in_row = cols * channels, out_row = cols_out * channels;
  const bool bf16 = input.dtype() == DataType::kBF16;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < batch * rows_out; ++r) {
    const int64_t top = ((r / rows_out) * rows + 2 * (r % rows_out)) * in_row;
    uint8_t* at = argmax == nullptr ? nullptr : argmax + r * out_row;
    if (bf16) {
      PoolRowBf16(Bf16At(input, top), Bf16At(input, top + in_row), cols_out, channels,
                  Bf16At(output, r * out_row), at);
    } else {
      PoolRowF32(input.data() + top, input.data() + top + in_row, cols_out, channels,
                 output->data() + r * out_row, at);
    }
  }
}

void Backward(const Tensor& grad_output, const uint8_t* argmax, Tensor* grad_input) {
  const int64_t batch = grad_input->dim(0), channels = grad_input->dim(1);
  const int64_t rows = grad_input->dim(2), cols = grad_input->dim(3);
  const int64_t rows_out = rows / 2, cols_out = cols / 2;
  const int64_t in_row = cols * channels, out_row = cols_out * channels;
  const bool bf16 = grad_output.dtype() == DataType::kBF16;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < batch * rows_out; ++r) {
    const int64_t n = r / rows_out;
    const int64_t top = (n * rows + 2 * (r % rows_out)) * in_row;
    if (bf16) {
      UnpoolRowBf16(Bf16At(grad_output, r * out_row), argmax + r * out_row, cols_out, cols,
                    channels, Bf16At(grad_input, top), Bf16At(grad_input, top + in_row));
    } else {
      UnpoolRowF32(grad_output.data() + r * out_row, argmax + r * out_row, cols_out, cols, channels,
                   grad_input->data() + top, grad_input->data() + top + in_row);
    }
    // An odd last row is in no window.
    if (rows % 2 != 0 && r % rows_out == rows_out - 1) {
      const int64_t last = (n * rows + rows - 1) * in_row;
      if (bf16) {
        std::fill(Bf16At(grad_input, last), Bf16At(grad_input, last + in_row), uint16_t{0});
      } else {
        std::fill(grad_input->data() + last, grad_input->data() + last + in_row, 0.f);
      }
    }
  }
}

}  // namespace max_pool_2x2
}  // namespace distillery
