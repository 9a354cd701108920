// Elastic distortion of images: the augmentation of Simard, Steinkraus and
// Platt, "Best practices for convolutional neural networks applied to visual
// document analysis" (ICDAR 2003), which gave MNIST's fully connected nets
// their best results without a convolution. Each image is resampled through
// a random, smooth displacement field: strokes bend and thicken locally,
// as in handwriting, where a shift (GatherBatch's jitter) only moves them.
//
// The field for a rows x cols image is drawn and applied as follows (the
// protocol another process must follow to reproduce a view):
//   1. 2 * rows * cols uniform numbers in [-1, 1): first the x displacement
//      of every pixel in row-major order, then the y displacement. Each is
//      (rng() >> 11) * 2^-53 * 2 - 1, computed in double, stored as float.
//   2. Each field is smoothed by a Gaussian of standard deviation `sigma`
//      pixels, truncated at radius ceil(3 * sigma) and normalised to sum 1
//      (taps exp(-k^2 / (2 sigma^2)) in double, divided by their sum, then
//      stored as float), along rows and then along columns, with zeros
//      outside the image. Each output is a float sum over k from -radius
//      to radius, in that order, of tap(k) * input(k).
//   3. Both fields are multiplied by `alpha`.
//   4. Output pixel (r, c) is the bilinear interpolation of the input at
//      (r + dy(r, c), c + dx(r, c)), zero outside the image, rounded to the
//      nearest integer (halves up) and clamped to [0, 255]. Every channel of
//      the image moves with the same field.
// With the commonly used sigma 4 and alpha 34 the displacements have a
// standard deviation of about 1.4 pixels.
#ifndef DISTILLERY_COMMON_DATA_DISTORTION_H_
#define DISTILLERY_COMMON_DATA_DISTORTION_H_

#include <cstdint>
#include <random>

#include "absl/status/status.h"

namespace distillery {

struct ElasticDistortion {
  // Scale of the smoothed displacement field, in pixels (Simard's alpha);
  // 0 = off.
  float alpha = 0.f;
  // Standard deviation of the smoothing Gaussian, in pixels (sigma).
  float sigma = 4.f;

  bool enabled() const { return alpha > 0.f; }
};

// OK for alpha in [0, 100] and, when alpha > 0, sigma in [0.5, 16];
// InvalidArgument naming the value otherwise (NaN included).
absl::Status ValidateElasticDistortion(const ElasticDistortion& d);

// Distorts one image of `channels` planes of rows x cols pixels from `src`
// into `dst` (which must not overlap it) with a field drawn from `rng` by the
// protocol above. `d` must be valid and enabled, `rng` not null.
void ElasticDistort(const uint8_t* src, int channels, int rows, int cols,
                    const ElasticDistortion& d, std::mt19937_64* rng, uint8_t* dst);

}  // namespace distillery

#endif  // DISTILLERY_COMMON_DATA_DISTORTION_H_
