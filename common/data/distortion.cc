// Elastic distortion. See distortion.h for the protocol.
#include "common/data/distortion.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"

namespace distillery {
namespace {

// The Gaussian's taps g[0..2 * radius], normalised to sum 1.
std::vector<float> GaussianKernel(float sigma) {
  const int radius = static_cast<int>(std::ceil(3.f * sigma));
  std::vector<float> g(2 * radius + 1);
  double sum = 0;
  for (int k = -radius; k <= radius; ++k) {
    g[k + radius] = static_cast<float>(std::exp(-0.5 * k * k / (double{sigma} * sigma)));
    sum += g[k + radius];
  }
  for (float& v : g) v = static_cast<float>(v / sum);
  return g;
}

// `field` smoothed along rows, then along columns, with zeros outside. Each
// sum adds its taps in order of k from -radius, zeros included (adding a
// zero changes no sum), in loops of fixed length that vectorise. `padded`
// is scratch.
void Smooth(const std::vector<float>& g, int rows, int cols, float* field,
            std::vector<float>* padded) {
  const int radius = static_cast<int>(g.size() / 2);
  const int taps = static_cast<int>(g.size());
  // Along rows: each row zero-padded by `radius` on both sides.
  const int wide = cols + 2 * radius;
  padded->assign(static_cast<size_t>(wide) * rows, 0.f);
  for (int r = 0; r < rows; ++r) {
    std::copy(field + r * cols, field + (r + 1) * cols, padded->data() + r * wide + radius);
  }
  for (int r = 0; r < rows; ++r) {
    float* out = field + r * cols;
    const float* in = padded->data() + r * wide;
    std::fill(out, out + cols, 0.f);
    for (int k = 0; k < taps; ++k) {
      for (int c = 0; c < cols; ++c) out[c] += g[k] * in[c + k];
    }
  }
  // Along columns: `radius` zero rows above and below.
  padded->assign(static_cast<size_t>(rows + 2 * radius) * cols, 0.f);
  std::copy(field, field + rows * cols, padded->data() + radius * cols);
  for (int r = 0; r < rows; ++r) {
    float* out = field + r * cols;
    std::fill(out, out + cols, 0.f);
    for (int k = 0; k < taps; ++k) {
      const float* in = padded->data() + (r + k) * cols;
      for (int c = 0; c < cols; ++c) out[c] += g[k] * in[c];
    }
  }
}

// Bilinear interpolation at (y, x), zero outside the image, as uint8.
// `padded` is the plane with a border of one zero pixel: (rows + 2) x
// (cols + 2), the image's (r, c) at (r + 1, c + 1).
uint8_t Sample(const float* padded, int rows, int cols, float y, float x) {
  const float y0f = std::floor(y);
  const float x0f = std::floor(x);
  // Wholly outside (or NaN): the four neighbours are all zero, and the
  // indices below stay inside the border.
  if (!(y0f > -2.f && y0f < static_cast<float>(rows) && x0f > -2.f &&
        x0f < static_cast<float>(cols))) {
    return 0;
  }
  const int wide = cols + 2;
  const float* p = padded + (static_cast<int>(y0f) + 1) * wide + static_cast<int>(x0f) + 1;
  const float fy = y - y0f;
  const float fx = x - x0f;
  const float top = (1.f - fx) * p[0] + fx * p[1];
  const float bottom = (1.f - fx) * p[wide] + fx * p[wide + 1];
  const float v = std::floor((1.f - fy) * top + fy * bottom + 0.5f);
  return static_cast<uint8_t>(std::min(255.f, std::max(0.f, v)));
}

}  // namespace

absl::Status ValidateElasticDistortion(const ElasticDistortion& d) {
  if (!(d.alpha >= 0.f && d.alpha <= 100.f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("elastic distortion alpha must be in [0, 100] pixels, got ", d.alpha));
  }
  if (d.enabled() && !(d.sigma >= 0.5f && d.sigma <= 16.f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("elastic distortion sigma must be in [0.5, 16] pixels, got ", d.sigma));
  }
  return absl::OkStatus();
}

void ElasticDistort(const uint8_t* src, int channels, int rows, int cols,
                    const ElasticDistortion& d, std::mt19937_64* rng, uint8_t* dst) {
  const int plane = rows * cols;
  std::vector<float> dx(plane), dy(plane), scratch;
  for (std::vector<float>* field : {&dx, &dy}) {
    for (float& v : *field) {
      v = static_cast<float>(static_cast<double>((*rng)() >> 11) * 0x1.0p-53 * 2.0 - 1.0);
    }
  }
  const std::vector<float> g = GaussianKernel(d.sigma);
  Smooth(g, rows, cols, dx.data(), &scratch);
  Smooth(g, rows, cols, dy.data(), &scratch);
  std::vector<float> padded(static_cast<size_t>(rows + 2) * (cols + 2));
  for (int ch = 0; ch < channels; ++ch) {
    const uint8_t* in = src + static_cast<size_t>(ch) * plane;
    uint8_t* out = dst + static_cast<size_t>(ch) * plane;
    std::fill(padded.begin(), padded.end(), 0.f);
    for (int r = 0; r < rows; ++r) {
      std::copy(in + r * cols, in + (r + 1) * cols, padded.begin() + (r + 1) * (cols + 2) + 1);
    }
    for (int r = 0; r < rows; ++r) {
      for (int c = 0; c < cols; ++c) {
        const int p = r * cols + c;
        out[p] = Sample(padded.data(), rows, cols, static_cast<float>(r) + d.alpha * dy[p],
                        static_cast<float>(c) + d.alpha * dx[p]);
      }
    }
  }
}

}  // namespace distillery
