// A dense tensor with a shape and an element type: the one value type that
// layers, losses and optimizers pass to each other.
//
// Shape: dimensions outermost first, at least one. Activations are
// (batch, features) for fully connected layers and (batch, channels, rows,
// cols) for image layers; weights are (out_features, in_features) or
// (out_channels, in_channels, kernel_rows, kernel_cols); biases (1, out).
// Elements are stored plain and row-major: the last dimension varies
// fastest. That is oneDNN's `ab`/`nc`/`oi` layout for rank 2 and `abcd` =
// `nchw`/`oihw` for rank 4, and PyTorch's and ONNX's layout too, so a
// (batch, channels, rows, cols) tensor read as (batch, channels*rows*cols)
// is the flattening every framework uses.
//
// Layouts: a rank-4 (batch, channels, rows, cols) tensor may also hold its
// elements channel-blocked, as oneDNN's nChw8c or nChw16c (channels in
// blocks of 8 or 16 vary fastest, then cols, rows, channel blocks, batch),
// or channels-last, as oneDNN's nhwc (channels vary fastest, then cols,
// rows, batch: the layout oneDNN's AMX convolutions work in). Such tensors
// only pass between image layers that say they take them (common/nn/layer.h),
// and blocked ones only when the channels are a multiple of the block, so
// that the element count, size() and the storage are those of the plain
// tensor. Reading a non-plain tensor's elements by the row-major index
// above (row(), at(), copies out) is a programming error; ConvertLayout
// (common/tensor/dnnl_context.h) makes a plain copy.
//
// Element types: f32 (IEEE binary32), the default, and bf16 (bfloat16, the
// upper 16 bits of a binary32), for the bf16 compute path. data() is the f32
// view and bf16_data() the bf16 one; using the view of the other type is a
// programming error (checked in debug builds).
//
// "rows" and "cols" are the 2-D reading every tensor has: rows = dim(0)
// (the batch), cols = everything else (features per example).
//
// Thread-safety: a Tensor is a value; concurrent reads are safe, any write
// needs external synchronisation.
#ifndef DISTILLERY_COMMON_TENSOR_TENSOR_H_
#define DISTILLERY_COMMON_TENSOR_TENSOR_H_

#include <algorithm>
#include <cassert>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "common/tensor/aligned_allocator.h"

namespace distillery {

// bf16 <-> f32, one element: widening is exact; narrowing rounds to nearest
// even, as oneDNN does, and keeps NaN a (quiet) NaN.
inline float FloatFromBf16(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float x;
  std::memcpy(&x, &bits, sizeof(x));
  return x;
}
inline uint16_t Bf16FromFloat(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

enum class DataType : uint8_t {
  kF32 = 0,
  kBF16 = 1,
};

// The memory layout of a tensor's elements (see the file comment).
enum class Layout : uint8_t {
  kPlain = 0,         // row-major: nchw for rank 4
  kBlocked8 = 1,      // nChw8c (rank 4, channels a multiple of 8)
  kBlocked16 = 2,     // nChw16c (rank 4, channels a multiple of 16)
  kChannelsLast = 3,  // nhwc (rank 4): all channels of a pixel together
};

// "plain", "nChw8c", "nChw16c" or "nhwc".
const char* LayoutName(Layout layout);
// The channel block of a layout: 8 or 16 for the blocked ones, 1 for kPlain
// and kChannelsLast.
inline int64_t LayoutBlock(Layout layout) {
  return layout == Layout::kBlocked16 ? 16 : layout == Layout::kBlocked8 ? 8 : 1;
}

// "f32" or "bf16".
const char* DataTypeName(DataType type);

// Dimensions, outermost first.
using Shape = std::vector<int64_t>;

// The product of the dimensions (1 for an empty shape).
inline int64_t ShapeSize(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// "(128, 1, 28, 28)".
std::string ShapeString(const Shape& shape);

class Tensor {
 public:
  Tensor() = default;
  // A rows x cols f32 tensor filled with zeros.
  Tensor(int64_t rows, int64_t cols) { Reshape({rows, cols}); }
  // A tensor of `shape` and `type` filled with zeros.
  explicit Tensor(const Shape& shape, DataType type = DataType::kF32) { Reshape(shape, type); }

  const Shape& shape() const { return shape_; }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int i) const { return shape_[static_cast<size_t>(i)]; }
  DataType dtype() const { return dtype_; }
  Layout layout() const { return layout_; }
  // Declares the layout the elements are in (the writer of the elements
  // calls it after Reshape). Returns false, changing nothing, for a
  // non-plain layout that does not fit the shape (rank 4, channels a
  // multiple of the block).
  bool SetLayout(Layout layout) {
    if (layout != Layout::kPlain && (rank() != 4 || dim(1) % LayoutBlock(layout) != 0)) {
      return false;
    }
    layout_ = layout;
    return true;
  }

  // The 2-D reading: rows = dim(0), cols = the product of the others.
  int64_t rows() const { return shape_.empty() ? 0 : shape_[0]; }
  int64_t cols() const {
    int64_t n = 1;
    for (size_t i = 1; i < shape_.size(); ++i) n *= shape_[i];
    return shape_.empty() ? 0 : n;
  }
  int64_t size() const { return size_; }

  float* data() {
    assert(dtype_ == DataType::kF32);
    return f32_.data();
  }
  const float* data() const {
    assert(dtype_ == DataType::kF32);
    return f32_.data();
  }
  uint16_t* bf16_data() {
    assert(dtype_ == DataType::kBF16);
    return bf16_.data();
  }
  const uint16_t* bf16_data() const {
    assert(dtype_ == DataType::kBF16);
    return bf16_.data();
  }
  // The storage whatever the type, for oneDNN memory objects.
  void* raw_data() {
    return dtype_ == DataType::kF32 ? static_cast<void*>(f32_.data()) : bf16_.data();
  }
  const void* raw_data() const {
    return dtype_ == DataType::kF32 ? static_cast<const void*>(f32_.data()) : bf16_.data();
  }

  float* row(int64_t r) { return data() + r * cols(); }
  const float* row(int64_t r) const { return data() + r * cols(); }
  float& at(int64_t r, int64_t c) { return data()[r * cols() + c]; }
  float at(int64_t r, int64_t c) const { return data()[r * cols() + c]; }

  // Changes the shape (and type). Keeps the storage when the element count
  // does not grow, so reshaping to a smaller last batch costs nothing.
  // Contents are unspecified afterwards, and the layout is plain.
  void Reshape(const Shape& shape, DataType type = DataType::kF32) {
    shape_ = shape;
    dtype_ = type;
    layout_ = Layout::kPlain;
    size_ = ShapeSize(shape);
    const size_t n = static_cast<size_t>(size_);
    if (type == DataType::kF32) {
      if (f32_.size() < n) f32_.resize(n);
    } else if (bf16_.size() < n) {
      bf16_.resize(n);
    }
  }
  // Reshape to a rows x cols f32 tensor.
  void Resize(int64_t rows, int64_t cols) { Reshape({rows, cols}); }
  // Gives the same elements another shape of the same size (a flatten, or
  // its inverse); contents are kept. Returns false, changing nothing, when
  // the sizes differ or the tensor is not plain.
  bool Reinterpret(const Shape& shape) {
    if (ShapeSize(shape) != size_ || layout_ != Layout::kPlain) return false;
    shape_ = shape;
    return true;
  }
  // Sets every element to `value` (f32 tensors).
  void Fill(float value) { std::fill(data(), data() + size_, value); }

  // Same shape, type, layout and element bits.
  bool operator==(const Tensor& other) const {
    if (shape_ != other.shape_ || dtype_ != other.dtype_ || layout_ != other.layout_) return false;
    if (dtype_ == DataType::kF32) {
      return std::equal(data(), data() + size_, other.data());
    }
    return std::equal(bf16_data(), bf16_data() + size_, other.bf16_data());
  }

 private:
  Shape shape_;
  DataType dtype_ = DataType::kF32;
  Layout layout_ = Layout::kPlain;
  int64_t size_ = 0;
  // Cache-line aligned, for oneDNN (aligned_allocator.h).
  std::vector<float, AlignedAllocator<float>> f32_;
  std::vector<uint16_t, AlignedAllocator<uint16_t>> bf16_;
};

}  // namespace distillery

#endif  // DISTILLERY_COMMON_TENSOR_TENSOR_H_
