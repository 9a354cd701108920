// Training batches from a data set: the order of each epoch, the input
// jitter of Hinton et al. (shifts of up to N pixels) and elastic distortion
// (common/data/distortion.h), and gathering examples into a float tensor
// (pixels scaled to [0, 1]).
#ifndef DISTILLERY_COMMON_DATA_BATCHES_H_
#define DISTILLERY_COMMON_DATA_BATCHES_H_

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/types/span.h"
#include "common/data/dataset.h"
#include "common/data/distortion.h"
#include "common/tensor/tensor.h"

namespace distillery {

// The indices 0..n-1 in an order that depends only on (seed, epoch): the same
// pair gives the same order on every machine (std::mt19937_64 and a
// hand-written Fisher-Yates, not std::shuffle, whose algorithm is unspecified).
std::vector<int64_t> ShuffledIndices(int64_t n, uint64_t seed, int64_t epoch);

// Copies one rows x cols image plane shifted by (dx, dy) pixels (positive dx moves
// the content right, positive dy down), filling uncovered pixels with zero.
void ShiftImage(const uint8_t* src, int rows, int cols, int dx, int dy, uint8_t* dst);

// How each image is changed as it is drawn: shifted by up to `max_shift`
// pixels in x and y (0 = off), then elastically distorted (off by default).
struct Augmentation {
  int max_shift = 0;
  ElasticDistortion elastic;

  bool enabled() const { return max_shift > 0 || elastic.enabled(); }
};

// For logs: "jitter 2 px, elastic distortion alpha 34 sigma 4", "jitter 2 px",
// or "no augmentation".
std::string DescribeAugmentation(const Augmentation& augmentation);

// Gathers the examples `indices` of `data` into `inputs` (reshaped to
// (indices.size(), channels, rows, cols), pixels scaled by 1/255) and, when the data is
// labeled and `labels` is not null, their labels. When `max_shift` > 0 each
// image gets an independent uniform integer shift in [-max_shift, max_shift]
// in x and y drawn from `rng`, the same for every channel of the image; `shifts`, when not null,
// receives the (dx, dy) pairs drawn, in order, so another process can reproduce the view.
void GatherBatch(const Dataset& data, absl::Span<const int64_t> indices, int max_shift,
                 std::mt19937_64* rng, Tensor* inputs, std::vector<int>* labels,
                 std::vector<int>* shifts = nullptr);

// The same with an elastic distortion after the shift: for each image its
// shift is drawn first, then its displacement field (distortion.h), from
// the same `rng`. Without distortion, the same views as the form above.
// `augmentation.elastic` must be valid (ValidateElasticDistortion).
void GatherBatch(const Dataset& data, absl::Span<const int64_t> indices,
                 const Augmentation& augmentation, std::mt19937_64* rng, Tensor* inputs,
                 std::vector<int>* labels, std::vector<int>* shifts = nullptr);

}  // namespace distillery

#endif  // DISTILLERY_COMMON_DATA_BATCHES_H_
