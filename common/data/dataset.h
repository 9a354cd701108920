// In-memory image classification data sets and their splits: slices,
// ranges, appending, dropping labels or classes. Loading them from IDX files
// is common/data/idx_dataset.h (NumPy files: npy.h, npz.h); shuffling,
// jitter and batches are common/data/batches.h.
//
// Pixels stay uint8 in memory (60,000 MNIST images take 47 MB) and are scaled
// to [0, 1] floats only when a batch is gathered.
#ifndef DISTILLERY_COMMON_DATA_DATASET_H_
#define DISTILLERY_COMMON_DATA_DATASET_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "common/tensor/tensor.h"

namespace distillery {

// The scale from uint8 pixels to the engine's inputs: p / 255, in [0, 1].
// Every network trained here takes its inputs so (its checkpoint records it).
inline constexpr float kPixelScale = 1.f / 255.f;

// A set of equally sized images with optional labels. Each image is
// channels x image_rows x image_cols uint8 pixels in planar order: all of
// channel 0 row by row, then channel 1, ... (the (channels, rows, cols)
// row-major layout the engine's tensors use).
struct Dataset {
  int64_t num_examples = 0;
  int channels = 1;             // 1 for grayscale (MNIST), 3 for RGB
  int image_rows = 0;           // 28 for MNIST
  int image_cols = 0;           // 28 for MNIST
  std::vector<uint8_t> pixels;  // num_examples * input_size(), planar per image
  std::vector<uint8_t> labels;  // num_examples class ids, or empty when unlabeled
  int num_classes = 10;         // labels are in [0, num_classes)

  int64_t input_size() const { return int64_t{channels} * image_rows * image_cols; }
  // One example's shape: (channels, rows, cols).
  Shape example_shape() const { return {channels, image_rows, image_cols}; }
  bool has_labels() const { return !labels.empty(); }
  const uint8_t* image(int64_t i) const { return pixels.data() + i * input_size(); }
};

// A training set and a test set, as an MNIST-format directory
// (common/data/idx_dataset.h) or a NumPy archive (npy.h) holds them.
struct MnistFormatData {
  Dataset train;
  Dataset test;
};

// The examples [begin, end) of `data`, copied. InvalidArgument when the range
// is empty or out of bounds.
absl::StatusOr<Dataset> SliceDataset(const Dataset& data, int64_t begin, int64_t end);

// Parses "begin:end" into [begin, end) within [0, size]; an empty string
// gives [0, size).
absl::StatusOr<std::pair<int64_t, int64_t>> ParseRange(const std::string& text, int64_t size);

// The examples [range) of a data set split in two: [held_out) to validate on
// and the rest of [range), in order, to train on.
struct HeldOutSplit {
  Dataset train;
  Dataset validation;
};

// Splits [range) of `data` around [held_out). InvalidArgument unless
// held_out lies within range and leaves examples to train on; the message
// names both ranges.
absl::StatusOr<HeldOutSplit> SplitHeldOut(const Dataset& data, std::pair<int64_t, int64_t> range,
                                          std::pair<int64_t, int64_t> held_out);

// Appends the examples of `more` to `data`. Aborts unless both have the same
// image shape, classes and labeling (a programming error).
void AppendDataset(const Dataset& more, Dataset* data);

// A copy of `data` without its labels (a transfer set needs none).
Dataset WithoutLabels(const Dataset& data);

// A copy of `data` without the examples whose label is in `classes`, in the
// same order. InvalidArgument when the data is unlabeled.
absl::StatusOr<Dataset> WithoutClasses(const Dataset& data, const std::vector<int>& classes);

}  // namespace distillery

#endif  // DISTILLERY_COMMON_DATA_DATASET_H_
