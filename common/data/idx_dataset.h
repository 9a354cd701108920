// Data sets from IDX files (the format of MNIST and Fashion-MNIST; the files
// themselves are read by common/data/idx.h): one images file with its labels,
// or the four files of an MNIST-format directory.
#ifndef DISTILLERY_COMMON_DATA_IDX_DATASET_H_
#define DISTILLERY_COMMON_DATA_IDX_DATASET_H_

#include <string>

#include "absl/status/statusor.h"
#include "common/data/dataset.h"

namespace distillery {

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
absl::StatusOr<MnistFormatData> LoadMnistFormatDirectory(const std::string& dir);

}  // namespace distillery

#endif  // DISTILLERY_COMMON_DATA_IDX_DATASET_H_
