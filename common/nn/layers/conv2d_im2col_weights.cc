#include "common/nn/layers/conv2d_im2col_weights.h"

#include <algorithm>

namespace distillery {
namespace {

using memory = dnnl::memory;

// floor(a / b) and ceil(a / b) for b > 0 and any a.
int64_t FloorDiv(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
int64_t CeilDiv(int64_t a, int64_t b) { return -FloorDiv(-a, b); }

// One output row of one tap: out[x] = in[x * stride + offset] where that is
// inside [0, cols), else 0.
void FillRow(const uint16_t* in, int64_t cols, int64_t stride, int64_t offset, int64_t out_cols,
             uint16_t* out) {
  const int64_t first = std::clamp<int64_t>(CeilDiv(-offset, stride), 0, out_cols);
  const int64_t end = std::clamp<int64_t>(FloorDiv(cols - 1 - offset, stride) + 1, first, out_cols);
  std::fill(out, out + first, uint16_t{0});
  if (stride == 1) {
    std::copy(in + first + offset, in + end + offset, out + first);
  } else {
    for (int64_t x = first; x < end; ++x) out[x] = in[x * stride + offset];
  }
  std::fill(out + end, out + out_cols, uint16_t{0});
}

// The largest divisor of `batch` that is at most `limit`.
int64_t ChunkImages(int64_t batch, int64_t limit) {
  for (int64_t images = std::min(batch, limit); images > 1; --images) {
    if (batch % images == 0) return images;
  }
  return 1;
}

}  // namespace

bool Im2colWeightGradient::Applies(const Conv2dOptions& options, DataType type, Layout layout) {
  return options.in_channels == 1 && options.groups == 1 && type == DataType::kBF16 &&
         layout == Layout::kChannelsLast;
}

Im2colWeightGradient::Im2colWeightGradient(const Conv2dOptions& options, const Shape& input_shape,
                                           const Shape& output_shape, DnnlContext* context)
    : options_(options),
      input_shape_(input_shape),
      output_shape_(output_shape),
      context_(context),
      taps_(options.kernel_rows * options.kernel_cols),
      chunk_images_(ChunkImages(input_shape[0], 8)),
      chunk_positions_(chunk_images_ * output_shape[2] * output_shape[3]) {
  const int64_t out_channels = output_shape[1];
  const int64_t chunks = input_shape[0] / chunk_images_;
  // Two chunks per matmul, one for each of 2 threads (oneDNN gives a single
  // small product one thread).
  parts_ = chunks % 2 == 0 ? 2 : 1;
  images_.Reshape({parts_ * chunk_images_, input_shape[2], input_shape[3]}, DataType::kBF16);
  columns_.Reshape({parts_, taps_ + 1, chunk_positions_}, DataType::kBF16);
  for (int64_t part = 0; part < parts_; ++part) {
    uint16_t* ones = columns_.bf16_data() + (part * (taps_ + 1) + taps_) * chunk_positions_;
    std::fill(ones, ones + chunk_positions_, Bf16FromFloat(1.f));
  }
  products_.Reshape({chunks, taps_ + 1, out_channels});
  columns_desc_ = memory::desc({parts_, taps_ + 1, chunk_positions_}, memory::data_type::bf16,
                               memory::format_tag::abc);
  grad_desc_ = memory::desc({parts_, chunk_positions_, out_channels}, memory::data_type::bf16,
                            memory::format_tag::abc);
  products_desc_ = memory::desc({parts_, taps_ + 1, out_channels}, memory::data_type::f32,
                                memory::format_tag::abc);
  matmul_ = dnnl::matmul(dnnl::matmul::primitive_desc(
      dnnl::matmul::desc(columns_desc_, grad_desc_, products_desc_), context->engine()));
}

void Im2colWeightGradient::FillColumns(const Tensor& input, int64_t first) {
  const Conv2dOptions& o = options_;
  const int64_t rows = input_shape_[2], cols = input_shape_[3];
  const int64_t out_rows = output_shape_[2], out_cols = output_shape_[3];
  const int64_t images = parts_ * chunk_images_, pixels = images * rows * cols;
  // The chunks' pixels in bf16: a bf16 input's own, an f32 one's rounded.
  const uint16_t* pixels_bf16 = nullptr;
  if (input.dtype() == DataType::kBF16) {
    pixels_bf16 = input.bf16_data() + first * rows * cols;
  } else {
    const float* in = input.data() + first * rows * cols;
    for (int64_t i = 0; i < pixels; ++i) images_.bf16_data()[i] = Bf16FromFloat(in[i]);
    pixels_bf16 = images_.bf16_data();
  }
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t n = 0; n < images; ++n) {
    for (int64_t tap = 0; tap < taps_; ++tap) {
      const int64_t part = n / chunk_images_, i = tap / o.kernel_cols, j = tap % o.kernel_cols;
      const int64_t col_offset = j * o.dilation_cols - o.pad_cols;
      uint16_t* out = columns_.bf16_data() + (part * (taps_ + 1) + tap) * chunk_positions_ +
                      (n % chunk_images_) * out_rows * out_cols;
      for (int64_t y = 0; y < out_rows; ++y, out += out_cols) {
        const int64_t r = y * o.stride_rows - o.pad_rows + i * o.dilation_rows;
        if (r < 0 || r >= rows) {
          std::fill(out, out + out_cols, uint16_t{0});
        } else {
          FillRow(pixels_bf16 + (n * rows + r) * cols, cols, o.stride_cols, col_offset, out_cols,
                  out);
        }
      }
    }
  }
}

absl::Status Im2colWeightGradient::Run(const Tensor& input, const Tensor& grad_output,
                                       float* weight_grad, float* bias_grad) {
  const dnnl::engine& engine = context_->engine();
  const int64_t out_channels = output_shape_[1];
  const int64_t chunks = input_shape_[0] / chunk_images_;
  const auto* grad = static_cast<const uint16_t*>(grad_output.raw_data());
  for (int64_t chunk = 0; chunk < chunks; chunk += parts_) {
    FillColumns(input, chunk * chunk_images_);
    const absl::Status s = context_->Execute(
        "convolution backward (weights, im2col)", matmul_,
        {{DNNL_ARG_SRC, memory(columns_desc_, engine, columns_.raw_data())},
         {DNNL_ARG_WEIGHTS,
          memory(grad_desc_, engine,
                 const_cast<uint16_t*>(grad + chunk * chunk_positions_ * out_channels))},
         {DNNL_ARG_DST,
          memory(products_desc_, engine, products_.data() + chunk * (taps_ + 1) * out_channels)}});
    if (!s.ok()) return s;
  }
  for (int64_t c = 0; c < out_channels; ++c) {
    for (int64_t t = 0; t <= taps_; ++t) {
      float sum = 0.f;
      for (int64_t k = 0; k < chunks; ++k) {
        sum += products_.data()[(k * (taps_ + 1) + t) * out_channels + c];
      }
      (t < taps_ ? weight_grad[c * taps_ + t] : bias_grad[c]) = sum;
    }
  }
  return absl::OkStatus();
}

}  // namespace distillery
