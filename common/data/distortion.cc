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

// out = `field` smoothed along rows, then along columns; zeros outside.
void Smooth(const std::vector<float>& g, int rows, int cols, float* field, float* scratch) {
  const int radius = static_cast<int>(g.size() / 2);
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < cols; ++c) {
      float s = 0.f;
      for (int k = std::max(-radius, -c); k <= std::min(radius, cols - 1 - c); ++k) {
        s += g[k + radius] * field[r * cols + c + k];
      }
      scratch[r * cols + c] = s;
    }
  }
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < cols; ++c) {
      float s = 0.f;
      for (int k = std::max(-radius, -r); k <= std::min(radius, rows - 1 - r); ++k) {
        s += g[k + radius] * scratch[(r + k) * cols + c];
      }
      field[r * cols + c] = s;
    }
  }
}

// The plane's pixel at (r, c), 0 outside it.
float PixelOrZero(const uint8_t* plane, int rows, int cols, int r, int c) {
  if (r < 0 || r >= rows || c < 0 || c >= cols) return 0.f;
  return plane[r * cols + c];
}

// Bilinear interpolation of `plane` at (y, x), zero outside, as uint8.
uint8_t Sample(const uint8_t* plane, int rows, int cols, float y, float x) {
  const float y0f = std::floor(y);
  const float x0f = std::floor(x);
  // Far outside (or NaN): nothing to interpolate, and no int overflow below.
  if (!(y0f > -2.f && y0f < static_cast<float>(rows) && x0f > -2.f &&
        x0f < static_cast<float>(cols))) {
    return 0;
  }
  const int y0 = static_cast<int>(y0f);
  const int x0 = static_cast<int>(x0f);
  const float fy = y - y0f;
  const float fx = x - x0f;
  const float top = (1.f - fx) * PixelOrZero(plane, rows, cols, y0, x0) +
                    fx * PixelOrZero(plane, rows, cols, y0, x0 + 1);
  const float bottom = (1.f - fx) * PixelOrZero(plane, rows, cols, y0 + 1, x0) +
                       fx * PixelOrZero(plane, rows, cols, y0 + 1, x0 + 1);
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
  std::vector<float> dx(plane), dy(plane), scratch(plane);
  for (std::vector<float>* field : {&dx, &dy}) {
    for (float& v : *field) {
      v = static_cast<float>(static_cast<double>((*rng)() >> 11) * 0x1.0p-53 * 2.0 - 1.0);
    }
  }
  const std::vector<float> g = GaussianKernel(d.sigma);
  Smooth(g, rows, cols, dx.data(), scratch.data());
  Smooth(g, rows, cols, dy.data(), scratch.data());
  for (int ch = 0; ch < channels; ++ch) {
    const uint8_t* in = src + static_cast<size_t>(ch) * plane;
    uint8_t* out = dst + static_cast<size_t>(ch) * plane;
    for (int r = 0; r < rows; ++r) {
      for (int c = 0; c < cols; ++c) {
        const int p = r * cols + c;
        out[p] = Sample(in, rows, cols, static_cast<float>(r) + d.alpha * dy[p],
                        static_cast<float>(c) + d.alpha * dx[p]);
      }
    }
  }
}

}  // namespace distillery
