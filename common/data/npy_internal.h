// The NumPy readers' internals (common/data/npy.h and common/data/npz.h are
// the API), shared by npy.cc and npz.cc. Not for use outside them.
#ifndef DISTILLERY_COMMON_DATA_NPY_INTERNAL_H_
#define DISTILLERY_COMMON_DATA_NPY_INTERNAL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/data/dataset.h"

namespace distillery {
namespace npy_internal {

// The four arrays of a data set in NumPy form, as file or member names.
inline const char* const kMembers[] = {"x_train.npy", "y_train.npy", "x_test.npy", "y_test.npy"};

inline uint16_t Le16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
inline uint32_t Le32(const uint8_t* p) {
  return uint32_t{p[0]} | (uint32_t{p[1]} << 8) | (uint32_t{p[2]} << 16) | (uint32_t{p[3]} << 24);
}

// The bytes of the file `path`. NotFound when it is a directory or cannot be
// opened or sized; DataLoss when it reads short.
absl::StatusOr<std::vector<uint8_t>> ReadWholeFile(const std::string& path);

// InvalidArgument, naming `name`, unless the train and test images of `data`
// have the same (channels, rows, cols).
absl::Status CheckSameImageShape(const std::string& name, const MnistFormatData& data);

}  // namespace npy_internal
}  // namespace distillery

#endif  // DISTILLERY_COMMON_DATA_NPY_INTERNAL_H_
