// Reading NumPy .npz archives: the zip container, and the data sets held in
// one (the .npy arrays themselves are common/data/npy.h).
//
// A .npz file (np.savez, np.savez_compressed) is a zip archive whose members
// are .npy files. It is read through its central directory: each member must
// be stored (method 0) or deflated (method 8, inflated with zlib), not
// encrypted, not zip64, with a plain name (no '/', '\\' or ".."), a CRC-32
// that matches, and no name may appear twice. Members are only ever held in
// memory; nothing is written to disk from an archive.
//
// A data set in an .npz is the four arrays of npy.h's data set in NumPy form,
// as the members x_train.npy, y_train.npy, x_test.npy and y_test.npy.
#ifndef DISTILLERY_COMMON_DATA_NPZ_H_
#define DISTILLERY_COMMON_DATA_NPZ_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "common/data/dataset.h"

namespace distillery {

// The members of a zip archive in memory, as (name, uncompressed bytes), in
// central-directory order. DataLoss for a corrupt or truncated archive or a
// CRC mismatch; InvalidArgument for zip64, encryption, an unsupported
// compression method, an unsafe member name or a duplicate name.
absl::StatusOr<std::vector<std::pair<std::string, std::vector<uint8_t>>>> ParseZip(
    const std::string& name, const std::vector<uint8_t>& bytes);

// The train and test sets of an .npz archive in memory with exactly the
// members x_train.npy, y_train.npy, x_test.npy and y_test.npy (a missing or
// unexpected member is InvalidArgument).
absl::StatusOr<MnistFormatData> ParseNpzDataset(const std::string& name,
                                                const std::vector<uint8_t>& bytes);

// Reads the .npz file `path` (ParseNpzDataset).
absl::StatusOr<MnistFormatData> LoadNpzDataset(const std::string& path);

// The data behind --data_dir or --data: a file ending in ".npz" is an .npz
// archive; a directory holding x_train.npy is a NumPy directory; anything
// else is an MNIST-format IDX directory (LoadMnistFormatDirectory).
absl::StatusOr<MnistFormatData> LoadDataSource(const std::string& path);

}  // namespace distillery

#endif  // DISTILLERY_COMMON_DATA_NPZ_H_
