// Input preprocessing: how raw uint8 pixels become a network's inputs.
//
// For pixel p of channel c:
//   input = (p * scale - mean[c]) / std[c]
// `mean` and `std` hold one value per channel, or are empty (mean 0, std 1).
// Every network trained here takes pixels / 255 (kPixelScale, mean 0, std
// 1); an imported one takes what its exporter's training fed it (e.g. MNIST's
// mean 0.1307 and std 0.3081 after the scale). The preprocessing is part of a
// teacher: its checkpoint records it, ModelInfo's InputSpec reports it and
// the teacher hash covers it.
//
// With the default scale, p * scale is computed as p / 255.f, which is what
// GatherBatch computes (p * (1/255.f) differs from p / 255.f in the last bit
// for some p), so that an image sent as pixels gives the same bits as the
// same image in a transfer set or a training batch.
#ifndef DISTILLERY_COMMON_DATA_PREPROCESSING_H_
#define DISTILLERY_COMMON_DATA_PREPROCESSING_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/data/dataset.h"

namespace distillery {

struct Preprocessing {
  float scale = kPixelScale;
  std::vector<float> mean;  // one per channel, or empty (all 0)
  std::vector<float> std;   // one per channel, or empty (all 1)

  // InvalidArgument naming the value: a scale that is not a finite number
  // > 0, a mean that is not finite, a std that is not a finite number > 0,
  // or a mean or std list that is neither empty nor `channels` long.
  absl::Status Validate(int64_t channels) const;
  // Scale 1/255, every mean 0 and every std 1: what GatherBatch computes.
  bool IsDefault() const;
  // The mean and std of channel c (0 and 1 when empty, or when c is beyond
  // a list that Validate would refuse).
  float Mean(int64_t c) const {
    return c >= 0 && static_cast<size_t>(c) < mean.size() ? mean[static_cast<size_t>(c)] : 0.f;
  }
  float Std(int64_t c) const {
    return c >= 0 && static_cast<size_t>(c) < std.size() ? std[static_cast<size_t>(c)] : 1.f;
  }
  // The network input of pixel value p of channel c, as described above.
  float Value(int64_t c, int p) const { return ValueOf(c, static_cast<float>(p)); }
  // The same formula for any value x on the pixel scale (0..255): Value(c, p)
  // is ValueOf(c, p), bit for bit. An ensemble's members apply it to the
  // raw-scale inputs they share.
  float ValueOf(int64_t c, float x) const;
  // Value(c, p) for every channel and pixel value: channels * 256 floats,
  // channel-major. `channels` must have passed Validate.
  std::vector<float> Table(int64_t channels) const;
  // The pixel value whose Value(c, .) is nearest to `input`, clamped to
  // [0, 255]: rebuilds the exact pixel from a network input made by Value.
  uint8_t Pixel(int64_t c, float input) const;
  // "scale 0.00392157, mean [0.1307], std [0.3081]".
  std::string Describe() const;
};

// Parses a comma-separated list of floats ("0.485,0.456,0.406").
// InvalidArgument naming `what` and the bad item (an empty text gives an
// empty list).
absl::StatusOr<std::vector<float>> ParseFloatList(const std::string& text, const std::string& what);

// Writes the network inputs of `examples` images of `channels` planes of
// `plane` pixels each (planar order) into `out`, with `table` from
// Preprocessing::Table(channels).
void ApplyPixelTable(const std::vector<float>& table, int64_t channels, int64_t plane,
                     int64_t examples, const uint8_t* pixels, float* out);

// Writes ValueOf(c, x) of every value x of `examples` examples of
// `channels` planes of `plane` values each (planar order) into `out` (which
// may be `in`).
void ApplyToValues(const Preprocessing& preprocessing, int64_t channels, int64_t plane,
                   int64_t examples, const float* in, float* out);

// GatherBatch without jitter, then `preprocessing` (GatherBatch itself for
// the default one, so the same bits): `inputs` becomes (indices.size(),
// channels, rows, cols). Aborts as GatherBatch does on a bad index.
void GatherPreprocessedBatch(const Dataset& data, absl::Span<const int64_t> indices,
                             const Preprocessing& preprocessing, Tensor* inputs,
                             std::vector<int>* labels);

}  // namespace distillery

#endif  // DISTILLERY_COMMON_DATA_PREPROCESSING_H_
