// Epoch orders, jitter and batches. See batches.h for the contracts.
#include "common/data/batches.h"

#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"

namespace distillery {
namespace {

// Aborts with `message`: for broken preconditions of functions that return
// nothing (a programming error, never a data error).
[[noreturn]] void FailPrecondition(const std::string& message) {
  std::fprintf(stderr, "distillery: %s\n", message.c_str());
  std::abort();
}

// The SplitMix64 finaliser (Steele et al.): a bijective 64-bit mix.
uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// A uniform integer in [0, bound), bound >= 1, exactly unbiased: draws below
// 2^64 mod bound are rejected (at most one draw in two, in practice almost
// never), so the rest fall into whole periods of `bound`. Uses only the
// standard-specified output of std::mt19937_64, hence identical everywhere.
uint64_t UniformBelow(std::mt19937_64& rng, uint64_t bound) {
  const uint64_t threshold = (0 - bound) % bound;  // 2^64 mod bound
  while (true) {
    const uint64_t r = rng();
    if (r >= threshold) return r % bound;
  }
}

// PixelScale()[p] == p / 255.f, the [0, 1] float of pixel value p.
const std::array<float, 256>& PixelScale() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int p = 0; p < 256; ++p) t[p] = static_cast<float>(p) / 255.f;
    return t;
  }();
  return table;
}

}  // namespace

// The generator is seeded with SplitMix64(seed ^ SplitMix64(epoch)), so
// nearby (seed, epoch) pairs give unrelated streams. Then, for i = n-1 down
// to 1, element i is swapped with a uniform j in [0, i] (UniformBelow). An
// n <= 0 gives an empty vector.
std::vector<int64_t> ShuffledIndices(int64_t n, uint64_t seed, int64_t epoch) {
  if (n <= 0) return {};
  std::vector<int64_t> order(n);
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  std::mt19937_64 rng(SplitMix64(seed ^ SplitMix64(static_cast<uint64_t>(epoch))));
  for (int64_t i = n - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(UniformBelow(rng, static_cast<uint64_t>(i) + 1));
    std::swap(order[i], order[j]);
  }
  return order;
}

std::string DescribeAugmentation(const Augmentation& augmentation) {
  if (!augmentation.enabled()) return "no augmentation";
  std::string out;
  if (augmentation.max_shift > 0) absl::StrAppend(&out, "jitter ", augmentation.max_shift, " px");
  if (augmentation.elastic.enabled()) {
    absl::StrAppend(&out, out.empty() ? "" : ", ", "elastic distortion alpha ",
                    augmentation.elastic.alpha, " sigma ", augmentation.elastic.sigma);
  }
  return out;
}

// dst(r, c) = src(r - dy, c - dx) when that lies inside the image, else 0.
// `src` and `dst` must not overlap.
void ShiftImage(const uint8_t* src, int rows, int cols, int dx, int dy, uint8_t* dst) {
  std::memset(dst, 0, static_cast<size_t>(rows) * cols);
  // Shifts of the whole size or more leave nothing (and avoid overflow below).
  if (dx >= cols || dx <= -cols || dy >= rows || dy <= -rows) return;
  const int width = cols - (dx >= 0 ? dx : -dx);  // columns that stay inside
  const int src_col = dx >= 0 ? 0 : -dx;
  const int dst_col = dx >= 0 ? dx : 0;
  for (int r = 0; r < rows; ++r) {
    const int src_row = r - dy;
    if (src_row < 0 || src_row >= rows) continue;
    std::memcpy(dst + static_cast<size_t>(r) * cols + dst_col,
                src + static_cast<size_t>(src_row) * cols + src_col, width);
  }
}

// Jitter protocol (what another process must replay): for each example in
// order, dx = int(rng() % (2 * max_shift + 1)) - max_shift, then dy the same
// way. The modulo bias is below (2 * max_shift + 1) / 2^64, negligible. With
// max_shift <= 0 `rng` is not used (it may be null) and every shift is 0.
// `shifts`, when not null, is resized to 2 * indices.size(): dx0, dy0, dx1, ...
// `labels`, when not null, is cleared for unlabeled data.
// Aborts on an index outside [0, data.num_examples) or a null `inputs`, or a
// null `rng` with augmentation on.
void GatherBatch(const Dataset& data, absl::Span<const int64_t> indices, int max_shift,
                 std::mt19937_64* rng, Tensor* inputs, std::vector<int>* labels,
                 std::vector<int>* shifts) {
  Augmentation augmentation;
  augmentation.max_shift = max_shift;
  GatherBatch(data, indices, augmentation, rng, inputs, labels, shifts);
}

// With an elastic distortion, each image's field is drawn right after its
// shift (distortion.h gives the protocol).
void GatherBatch(const Dataset& data, absl::Span<const int64_t> indices,
                 const Augmentation& augmentation, std::mt19937_64* rng, Tensor* inputs,
                 std::vector<int>* labels, std::vector<int>* shifts) {
  const int max_shift = augmentation.max_shift;
  if (inputs == nullptr) FailPrecondition("GatherBatch: inputs is null");
  if (augmentation.enabled() && rng == nullptr) {
    FailPrecondition("GatherBatch: augmentation on, rng null");
  }
  const int64_t batch = static_cast<int64_t>(indices.size());
  const int64_t input_size = data.input_size();
  inputs->Reshape({batch, data.channels, data.image_rows, data.image_cols});
  if (shifts != nullptr) shifts->assign(2 * indices.size(), 0);
  if (labels != nullptr) {
    labels->clear();
    if (data.has_labels()) labels->resize(indices.size());
  }
  const std::array<float, 256>& scale = PixelScale();
  const uint64_t shift_range = 2 * static_cast<uint64_t>(max_shift > 0 ? max_shift : 0) + 1;
  std::vector<uint8_t> shifted(max_shift > 0 ? input_size : 0);
  std::vector<uint8_t> distorted(augmentation.elastic.enabled() ? input_size : 0);
  for (int64_t k = 0; k < batch; ++k) {
    const int64_t index = indices[k];
    if (index < 0 || index >= data.num_examples) {
      FailPrecondition(
          absl::StrCat("GatherBatch: index ", index, " outside [0, ", data.num_examples, ")"));
    }
    const uint8_t* image = data.image(index);
    if (max_shift > 0) {
      // In int64: 2 * max_shift may not fit int, the result does.
      const int dx = static_cast<int>(static_cast<int64_t>((*rng)() % shift_range) - max_shift);
      const int dy = static_cast<int>(static_cast<int64_t>((*rng)() % shift_range) - max_shift);
      if (shifts != nullptr) {
        (*shifts)[2 * k] = dx;
        (*shifts)[2 * k + 1] = dy;
      }
      const int64_t plane = int64_t{data.image_rows} * data.image_cols;
      for (int c = 0; c < data.channels; ++c) {
        ShiftImage(image + c * plane, data.image_rows, data.image_cols, dx, dy,
                   shifted.data() + c * plane);
      }
      image = shifted.data();
    }
    if (augmentation.elastic.enabled()) {
      ElasticDistort(image, data.channels, data.image_rows, data.image_cols, augmentation.elastic,
                     rng, distorted.data());
      image = distorted.data();
    }
    float* row = inputs->row(k);
    for (int64_t p = 0; p < input_size; ++p) row[p] = scale[image[p]];
    if (labels != nullptr && data.has_labels()) (*labels)[k] = data.labels[index];
  }
}

}  // namespace distillery
