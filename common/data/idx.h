// Reading MNIST-format IDX files, plain or gzip-compressed.
//
// The IDX format (LeCun et al.) is a big-endian header followed by raw data:
//   bytes 0-1  zero
//   byte  2    element type: 0x08 = unsigned byte (the only type accepted here)
//   byte  3    number of dimensions D (1 for labels, 3 for images)
//   4*D bytes  each dimension's size, a big-endian uint32
//   then       the product of the dimensions, one byte per element
// A file whose name ends in ".gz" is inflated with zlib first; any other name
// is read as it is. Nothing about the data is assumed beyond the header: a
// file is refused when its magic, type, rank or size disagree with it.
#ifndef DISTILLERY_COMMON_DATA_IDX_H_
#define DISTILLERY_COMMON_DATA_IDX_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace distillery {

// The decoded contents of one IDX file of unsigned bytes.
struct IdxArray {
  std::vector<uint32_t> dims;  // e.g. {60000, 28, 28} or {60000}
  std::vector<uint8_t> data;   // product(dims) bytes, row-major
};

// Reads and validates `path`. Errors (each message names the file):
//   NotFound         the file does not exist or cannot be opened;
//   DataLoss         gzip stream corrupt or truncated, wrong magic, unsupported
//                    element type, payload shorter or longer than the header says;
//   InvalidArgument  a zero or absurd dimension (more than 2^31 elements).
absl::StatusOr<IdxArray> ReadIdxFile(const std::string& path);

// Parses IDX bytes already in memory. `name` is used in error messages only.
absl::StatusOr<IdxArray> ParseIdx(const std::string& name, const std::vector<uint8_t>& bytes);

// Parses a gzip-compressed IDX file already in memory (ReadIdxFile decodes a
// ".gz" file with the same code), with the same errors as ReadIdxFile.
absl::StatusOr<IdxArray> ParseGzipIdx(const std::string& name,
                                      const std::vector<uint8_t>& compressed);

// Writes `array` as an uncompressed IDX file (used by tests and tools).
absl::Status WriteIdxFile(const std::string& path, const IdxArray& array);

}  // namespace distillery

#endif  // DISTILLERY_COMMON_DATA_IDX_H_
