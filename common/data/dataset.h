// In-memory image classification data sets, their splits, shuffling and the
// input jitter of Hinton et al. (shifts of up to N pixels).
//
// Pixels stay uint8 in memory (60,000 MNIST images take 47 MB) and are scaled
// to [0, 1] floats only when a batch is gathered.
#ifndef DISTILLERY_COMMON_DATA_DATASET_H_
#define DISTILLERY_COMMON_DATA_DATASET_H_

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
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

// Loads an images file, of rank 3 (count, rows, cols: one channel) or rank 4
// (count, rows, cols, channels: interleaved channels, converted here to the
// planar layout), and, when `labels_path` is non-empty, a labels file
// (rank 1). Refused with a message naming the file: a labels count that
// differs from the images count, a label >= num_classes, plus every error of
// ReadIdxFile.
absl::StatusOr<Dataset> LoadIdxDataset(const std::string& images_path,
                                       const std::string& labels_path, int num_classes = 10);

// The four files of an MNIST-format directory (MNIST, Fashion-MNIST).
// Each name is looked up as "<dir>/<stem>" then "<dir>/<stem>.gz", stems being
// train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte,
// t10k-labels-idx1-ubyte.
struct MnistFormatData {
  Dataset train;
  Dataset test;
};
absl::StatusOr<MnistFormatData> LoadMnistFormatDirectory(const std::string& dir);

// The examples [begin, end) of `data`, copied. InvalidArgument when the range
// is empty or out of bounds.
absl::StatusOr<Dataset> SliceDataset(const Dataset& data, int64_t begin, int64_t end);

// Parses "begin:end" into [begin, end) within [0, size]; an empty string
// gives [0, size).
absl::StatusOr<std::pair<int64_t, int64_t>> ParseRange(const std::string& text, int64_t size);

// Appends the examples of `more` to `data`. Aborts unless both have the same
// image shape, classes and labeling (a programming error).
void AppendDataset(const Dataset& more, Dataset* data);

// A copy of `data` without its labels (a transfer set needs none).
Dataset WithoutLabels(const Dataset& data);

// A copy of `data` without the examples whose label is in `classes`, in the
// same order. InvalidArgument when the data is unlabeled.
absl::StatusOr<Dataset> WithoutClasses(const Dataset& data, const std::vector<int>& classes);

// The indices 0..n-1 in an order that depends only on (seed, epoch): the same
// pair gives the same order on every machine (std::mt19937_64 and a
// hand-written Fisher-Yates, not std::shuffle, whose algorithm is unspecified).
std::vector<int64_t> ShuffledIndices(int64_t n, uint64_t seed, int64_t epoch);

// Copies one rows x cols image plane shifted by (dx, dy) pixels (positive dx moves
// the content right, positive dy down), filling uncovered pixels with zero.
void ShiftImage(const uint8_t* src, int rows, int cols, int dx, int dy, uint8_t* dst);

// Gathers the examples `indices` of `data` into `inputs` (reshaped to
// (indices.size(), channels, rows, cols), pixels scaled by 1/255) and, when the data is
// labeled and `labels` is not null, their labels. When `max_shift` > 0 each
// image gets an independent uniform integer shift in [-max_shift, max_shift]
// in x and y drawn from `rng`, the same for every channel of the image; `shifts`, when not null,
// receives the (dx, dy) pairs drawn, in order, so another process can reproduce the view.
void GatherBatch(const Dataset& data, absl::Span<const int64_t> indices, int max_shift,
                 std::mt19937_64* rng, Tensor* inputs, std::vector<int>* labels,
                 std::vector<int>* shifts = nullptr);

}  // namespace distillery

#endif  // DISTILLERY_COMMON_DATA_DATASET_H_
