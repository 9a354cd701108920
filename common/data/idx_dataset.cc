// Data sets from IDX files. See idx_dataset.h for the contracts.
#include "common/data/idx_dataset.h"

#include <filesystem>
#include <limits>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/data/idx.h"
#include "common/util/status_macros.h"

namespace distillery {
namespace {

std::string DimsString(const std::vector<uint32_t>& dims) {
  return absl::StrCat("[", absl::StrJoin(dims, ", "), "]");
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

}  // namespace distillery
