// Data sets in memory: loading IDX files, slicing, shuffling and jitter.
// See dataset.h for the contracts.
#include "common/data/dataset.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/data/idx.h"
#include "common/util/status_macros.h"

namespace distillery {
namespace {

// Aborts with `message`: for broken preconditions of functions that return
// nothing (a programming error, never a data error).
[[noreturn]] void FailPrecondition(const std::string& message) {
  std::fprintf(stderr, "distillery: %s\n", message.c_str());
  std::abort();
}

std::string DimsString(const std::vector<uint32_t>& dims) {
  return absl::StrCat("[", absl::StrJoin(dims, ", "), "]");
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

// Returns "<dir>/<stem>" when it exists, else "<dir>/<stem>.gz" when that
// exists, else NotFound.
absl::StatusOr<std::string> FindMnistFile(const std::string& dir, const std::string& stem) {
  const std::string plain = (std::filesystem::path(dir) / stem).string();
  const std::string gz = plain + ".gz";
  std::error_code ec;
  if (std::filesystem::exists(plain, ec)) return plain;
  if (std::filesystem::exists(gz, ec)) return gz;
  return absl::NotFoundError(
      absl::StrCat(dir, ": neither ", stem, " nor ", stem, ".gz found in this directory"));
}

// Interleaved (count, rows, cols, channels) pixels in `data`'s shape, as
// planar (count, channels, rows, cols).
std::vector<uint8_t> ToPlanar(const std::vector<uint8_t>& interleaved, const Dataset& data) {
  std::vector<uint8_t> planar(interleaved.size());
  const int64_t plane = int64_t{data.image_rows} * data.image_cols;
  const int channels = data.channels;
  for (int64_t i = 0; i < data.num_examples; ++i) {
    const uint8_t* src = interleaved.data() + i * plane * channels;
    uint8_t* dst = planar.data() + i * plane * channels;
    for (int64_t p = 0; p < plane; ++p) {
      for (int c = 0; c < channels; ++c) dst[c * plane + p] = src[p * channels + c];
    }
  }
  return planar;
}

// A dataset with `data`'s image shape and classes and no examples.
Dataset EmptyLike(const Dataset& data) {
  Dataset empty;
  empty.channels = data.channels;
  empty.image_rows = data.image_rows;
  empty.image_cols = data.image_cols;
  empty.num_classes = data.num_classes;
  return empty;
}

}  // namespace

absl::StatusOr<Dataset> LoadIdxDataset(const std::string& images_path,
                                       const std::string& labels_path, int num_classes) {
  if (num_classes < 1 || num_classes > 256) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_classes ", num_classes, " must be in [1, 256] for uint8 labels"));
  }
  ASSIGN_OR_RETURN(IdxArray images, ReadIdxFile(images_path));
  if (images.dims.size() != 3 && images.dims.size() != 4) {
    return absl::InvalidArgumentError(absl::StrCat(
        images_path,
        ": an images file must have rank 3 (count, rows, cols) or 4 (count, rows, cols, "
        "channels), this one has rank ",
        images.dims.size(), " with dimensions ", DimsString(images.dims)));
  }
  // ReadIdxFile bounds the element count by 2^31, so the product fits int64;
  // rows, cols and channels must also fit int.
  constexpr uint32_t kIntMax = std::numeric_limits<int>::max();
  for (size_t d = 1; d < images.dims.size(); ++d) {
    if (images.dims[d] > kIntMax) {
      return absl::InvalidArgumentError(
          absl::StrCat(images_path, ": image size ", DimsString(images.dims), " too large"));
    }
  }
  Dataset data;
  data.num_examples = images.dims[0];
  data.image_rows = static_cast<int>(images.dims[1]);
  data.image_cols = static_cast<int>(images.dims[2]);
  data.channels = images.dims.size() == 4 ? static_cast<int>(images.dims[3]) : 1;
  data.pixels = data.channels == 1 ? std::move(images.data) : ToPlanar(images.data, data);
  data.num_classes = num_classes;
  if (labels_path.empty()) return data;

  ASSIGN_OR_RETURN(IdxArray labels, ReadIdxFile(labels_path));
  if (labels.dims.size() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(labels_path, ": a labels file must have rank 1, this one has rank ",
                     labels.dims.size(), " with dimensions ", DimsString(labels.dims)));
  }
  if (labels.dims[0] != data.num_examples) {
    return absl::InvalidArgumentError(absl::StrCat(labels_path, ": ", labels.dims[0],
                                                   " labels, but ", images_path, " has ",
                                                   data.num_examples, " images"));
  }
  for (size_t i = 0; i < labels.data.size(); ++i) {
    if (labels.data[i] >= num_classes) {
      return absl::InvalidArgumentError(absl::StrCat(labels_path, ": label ", labels.data[i],
                                                     " of example ", i, " is outside [0, ",
                                                     num_classes, ")"));
    }
  }
  data.labels = std::move(labels.data);
  return data;
}

absl::StatusOr<MnistFormatData> LoadMnistFormatDirectory(const std::string& dir) {
  ASSIGN_OR_RETURN(const std::string train_images, FindMnistFile(dir, "train-images-idx3-ubyte"));
  ASSIGN_OR_RETURN(const std::string train_labels, FindMnistFile(dir, "train-labels-idx1-ubyte"));
  ASSIGN_OR_RETURN(const std::string test_images, FindMnistFile(dir, "t10k-images-idx3-ubyte"));
  ASSIGN_OR_RETURN(const std::string test_labels, FindMnistFile(dir, "t10k-labels-idx1-ubyte"));
  MnistFormatData result;
  ASSIGN_OR_RETURN(result.train, LoadIdxDataset(train_images, train_labels));
  ASSIGN_OR_RETURN(result.test, LoadIdxDataset(test_images, test_labels));
  if (result.train.example_shape() != result.test.example_shape()) {
    return absl::InvalidArgumentError(
        absl::StrCat(dir, ": train images are ", ShapeString(result.train.example_shape()),
                     " but test images are ", ShapeString(result.test.example_shape())));
  }
  return result;
}

absl::StatusOr<Dataset> SliceDataset(const Dataset& data, int64_t begin, int64_t end) {
  if (begin < 0 || begin >= end || end > data.num_examples) {
    return absl::InvalidArgumentError(absl::StrCat(
        "slice [", begin, ", ", end, ") is empty or outside [0, ", data.num_examples, ")"));
  }
  Dataset slice = EmptyLike(data);
  slice.num_examples = end - begin;
  slice.pixels.assign(data.image(begin), data.image(end));
  if (data.has_labels())
    slice.labels.assign(data.labels.begin() + begin, data.labels.begin() + end);
  return slice;
}

absl::StatusOr<Dataset> WithoutClasses(const Dataset& data, const std::vector<int>& classes) {
  if (!data.has_labels()) {
    return absl::InvalidArgumentError("cannot drop classes from unlabeled data");
  }
  Dataset kept = EmptyLike(data);
  for (int64_t i = 0; i < data.num_examples; ++i) {
    if (std::find(classes.begin(), classes.end(), data.labels[i]) != classes.end()) continue;
    kept.pixels.insert(kept.pixels.end(), data.image(i), data.image(i) + data.input_size());
    kept.labels.push_back(data.labels[i]);
    ++kept.num_examples;
  }
  return kept;
}

void AppendDataset(const Dataset& more, Dataset* data) {
  if (more.example_shape() != data->example_shape() || more.num_classes != data->num_classes ||
      more.has_labels() != data->has_labels()) {
    FailPrecondition("AppendDataset: the data sets differ in shape, classes or labeling");
  }
  data->pixels.insert(data->pixels.end(), more.pixels.begin(), more.pixels.end());
  data->labels.insert(data->labels.end(), more.labels.begin(), more.labels.end());
  data->num_examples += more.num_examples;
}

Dataset WithoutLabels(const Dataset& data) {
  Dataset copy = EmptyLike(data);
  copy.num_examples = data.num_examples;
  copy.pixels = data.pixels;
  return copy;
}

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
// null `rng` with max_shift > 0.
void GatherBatch(const Dataset& data, absl::Span<const int64_t> indices, int max_shift,
                 std::mt19937_64* rng, Tensor* inputs, std::vector<int>* labels,
                 std::vector<int>* shifts) {
  if (inputs == nullptr) FailPrecondition("GatherBatch: inputs is null");
  if (max_shift > 0 && rng == nullptr) FailPrecondition("GatherBatch: max_shift > 0, rng null");
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
    float* row = inputs->row(k);
    for (int64_t p = 0; p < input_size; ++p) row[p] = scale[image[p]];
    if (labels != nullptr && data.has_labels()) (*labels)[k] = data.labels[index];
  }
}

absl::StatusOr<std::pair<int64_t, int64_t>> ParseRange(const std::string& text, int64_t size) {
  if (text.empty()) return std::make_pair(int64_t{0}, size);
  std::vector<std::string> parts = absl::StrSplit(text, ':');
  int64_t begin = 0, end = 0;
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &begin) ||
      !absl::SimpleAtoi(parts[1], &end) || begin < 0 || end > size || begin >= end) {
    return absl::InvalidArgumentError(
        absl::StrCat("range \"", text, "\" is not begin:end with 0 <= begin < end <= ", size));
  }
  return std::make_pair(begin, end);
}

}  // namespace distillery
