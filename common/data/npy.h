// Reading NumPy .npy arrays, and a data set held as .npy files in a directory.
// (The .npz archive of such arrays is common/data/npz.h.)
//
// A .npy file (NumPy's format.py, versions 1.0, 2.0 and 3.0) is:
//   bytes 0-5  the magic "\x93NUMPY"
//   byte  6    major version (1, 2 or 3); byte 7 minor version (0)
//   then       the header length L: a little-endian uint16 in version 1,
//              a little-endian uint32 in versions 2 and 3
//   L bytes    the header: a Python dict literal (ASCII; UTF-8 in version 3)
//              with exactly the keys 'descr' (a dtype string such as '|u1' or
//              '<i8'), 'fortran_order' (True or False) and 'shape' (a tuple of
//              non-negative integers), padded with spaces and ended by '\n'
//   then       the elements, C order, product(shape) * itemsize bytes
//              (column-major instead when fortran_order is True, as
//              np.asfortranarray and MATLAB-born arrays are saved)
// Accepted here: the integer dtypes |u1 |i1 <u2 <i2 <u4 <i4 <u8 <i8, in C or
// Fortran order (read into C order). Refused with a message naming the file:
// a wrong magic or version, a header that is not exactly such a dict,
// big-endian ('>') or non-integer dtypes, object arrays ('|O', which NumPy
// pickles: they are never loaded), structured dtypes, a zero dimension or
// more than 2^31 elements, and a payload shorter or longer than the shape
// says.
//
// A data set in NumPy form has four arrays: x_train, y_train, x_test, y_test
// (in an .npz, the members x_train.npy etc.; in a directory, the files
// x_train.npy etc.). Images are |u1 of shape (N, H, W) or (N, H, W, C)
// (channels last, converted to the planar layout of Dataset); labels are
// integers of shape (N,) within [0, num_classes). Train and test images must
// have the same (H, W, C).
#ifndef DISTILLERY_COMMON_DATA_NPY_H_
#define DISTILLERY_COMMON_DATA_NPY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/data/dataset.h"

namespace distillery {

// A decoded .npy array of an integer dtype.
struct NpyArray {
  std::string descr;            // the dtype as written, e.g. "|u1", "<i8"
  int item_bytes = 1;           // 1, 2, 4 or 8
  bool is_signed = false;       // 'i' rather than 'u'
  std::vector<uint64_t> shape;  // () for a scalar
  std::vector<uint8_t> data;    // product(shape) * item_bytes bytes, C order
  uint64_t num_elements() const { return data.size() / item_bytes; }
  // Element i as a signed 64-bit value; uint64 values above INT64_MAX come
  // out as -1 (negative is as out of range as too large for a label).
  int64_t Int(uint64_t i) const;
};

// Parses .npy bytes in memory. `name` is used in error messages only.
// DataLoss: wrong magic or version, truncated or malformed header, payload
// shorter or longer than the shape. InvalidArgument: a valid header of an
// unsupported array (dtype, zero or absurd dimensions).
absl::StatusOr<NpyArray> ParseNpy(const std::string& name, const std::vector<uint8_t>& bytes);

// Reads and parses the .npy file `path`. NotFound when it cannot be opened.
absl::StatusOr<NpyArray> ReadNpyFile(const std::string& path);

// A Dataset from an images array and a labels array (see the file comment).
// `labels` may be null for unlabeled data. The names are used in messages.
absl::StatusOr<Dataset> DatasetFromNpy(const std::string& images_name, const NpyArray& images,
                                       const std::string& labels_name, const NpyArray* labels,
                                       int num_classes = 10);

// Reads <dir>/x_train.npy, y_train.npy, x_test.npy and y_test.npy.
absl::StatusOr<MnistFormatData> LoadNpyDirectory(const std::string& dir);

}  // namespace distillery

#endif  // DISTILLERY_COMMON_DATA_NPY_H_
