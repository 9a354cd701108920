// A dense, row-major float matrix: the one tensor type of the engine.
//
// Shapes in this project are always (rows, cols) = (batch, features) for
// activations and (out_features, in_features) for weights, matching oneDNN's
// `nc` and `oi` plain layouts, so no reorders are needed.
//
// Thread-safety: a Matrix is a value; concurrent reads are safe, any write
// needs external synchronisation.
#ifndef DISTILLERY_COMMON_MATRIX_H_
#define DISTILLERY_COMMON_MATRIX_H_

#include <algorithm>
#include <cstdint>
#include <vector>

namespace distillery {

class Matrix {
 public:
  Matrix() = default;
  // A rows x cols matrix filled with zeros.
  Matrix(int64_t rows, int64_t cols) : rows_(rows), cols_(cols), data_(rows * cols, 0.0f) {}

  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  int64_t size() const { return rows_ * cols_; }

  float* data() { return data_.data(); }
  const float* data() const { return data_.data(); }
  float* row(int64_t r) { return data_.data() + r * cols_; }
  const float* row(int64_t r) const { return data_.data() + r * cols_; }
  float& at(int64_t r, int64_t c) { return data_[r * cols_ + c]; }
  float at(int64_t r, int64_t c) const { return data_[r * cols_ + c]; }

  // Changes the shape. Keeps the storage when the element count does not
  // grow, so reshaping to a smaller last batch costs nothing. Contents are
  // unspecified afterwards.
  void Resize(int64_t rows, int64_t cols) {
    rows_ = rows;
    cols_ = cols;
    if (static_cast<int64_t>(data_.size()) < rows * cols) data_.resize(rows * cols);
  }
  void Fill(float value) { std::fill(data_.begin(), data_.begin() + size(), value); }

  bool operator==(const Matrix& other) const {
    return rows_ == other.rows_ && cols_ == other.cols_ &&
           std::equal(data(), data() + size(), other.data());
  }

 private:
  int64_t rows_ = 0;
  int64_t cols_ = 0;
  std::vector<float> data_;
};

}  // namespace distillery

#endif  // DISTILLERY_COMMON_MATRIX_H_
