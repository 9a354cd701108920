// IDX reading and writing. See idx.h for the format and the error contract.
//
// Memory safety against hostile headers: the header is parsed and validated
// (rank, zero dimensions, element count <= 2^31) before any payload is read.
// A plain file's size is compared with the header before the payload buffer
// is allocated; a gzip stream's size is unknown in advance, so its payload
// buffer only grows as inflated bytes actually arrive and inflation stops one
// byte past what the header announces. No allocation is ever sized by the
// header alone.
#include "common/data/idx.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/util/status_macros.h"

namespace distillery {
namespace {

constexpr uint8_t kTypeUnsignedByte = 0x08;
// The largest element count accepted (idx.h: "more than 2^31 elements" is absurd).
constexpr uint64_t kMaxElements = uint64_t{1} << 31;
// Bytes 0-3 of every IDX file: two zeros, the type, the rank.
constexpr size_t kPrefixBytes = 4;
// Payload bytes read per step from a gzip stream.
constexpr size_t kReadChunkBytes = size_t{1} << 20;
// Compressed bytes read per step from a .gz file.
constexpr size_t kGzipInputBytes = size_t{1} << 16;

// What the header of an IDX file announces.
struct IdxHeader {
  std::vector<uint32_t> dims;
  size_t header_bytes = 0;     // 4 + 4 * rank
  uint64_t payload_bytes = 0;  // product(dims), one byte per element
};

uint32_t ReadBigEndian32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

void AppendBigEndian32(uint32_t v, std::vector<uint8_t>* out) {
  out->push_back(static_cast<uint8_t>(v >> 24));
  out->push_back(static_cast<uint8_t>(v >> 16));
  out->push_back(static_cast<uint8_t>(v >> 8));
  out->push_back(static_cast<uint8_t>(v));
}

std::string DimsString(const std::vector<uint32_t>& dims) {
  return absl::StrCat("[", absl::StrJoin(dims, ", "), "]");
}

// Validates the first 4 bytes of an IDX file (magic, type, rank) and returns
// the rank. `prefix` holds at least kPrefixBytes bytes.
absl::StatusOr<int> ParsePrefix(const std::string& name, const uint8_t* prefix) {
  if (prefix[0] != 0 || prefix[1] != 0) {
    return absl::DataLossError(absl::StrFormat(
        "%s: wrong magic 0x%02x%02x%02x%02x: not an IDX file (bytes 0-1 must be zero)", name,
        prefix[0], prefix[1], prefix[2], prefix[3]));
  }
  if (prefix[2] != kTypeUnsignedByte) {
    return absl::DataLossError(absl::StrFormat(
        "%s: unsupported element type 0x%02x (only 0x08, unsigned byte, is supported)", name,
        prefix[2]));
  }
  if (prefix[3] == 0) {
    return absl::DataLossError(absl::StrCat(name, ": wrong rank 0 (at least 1 dimension needed)"));
  }
  return int{prefix[3]};
}

// Validates the dimensions that follow the prefix. `dim_bytes` holds 4 * rank
// bytes.
absl::StatusOr<IdxHeader> ParseDims(const std::string& name, int rank, const uint8_t* dim_bytes) {
  IdxHeader header;
  header.header_bytes = kPrefixBytes + 4 * static_cast<size_t>(rank);
  header.dims.resize(rank);
  for (int d = 0; d < rank; ++d) header.dims[d] = ReadBigEndian32(dim_bytes + 4 * d);
  uint64_t elements = 1;
  for (int d = 0; d < rank; ++d) {
    if (header.dims[d] == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": dimension ", d, " of ", DimsString(header.dims), " is zero"));
    }
    // Both factors are <= 2^32 here, so the product cannot overflow 64 bits.
    elements *= header.dims[d];
    if (elements > kMaxElements) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": absurd dimensions ",
                                                     DimsString(header.dims), ": more than 2^31 (",
                                                     kMaxElements, ") elements"));
    }
  }
  header.payload_bytes = elements;
  return header;
}

absl::Status TruncatedHeader(const std::string& name, uint64_t have, uint64_t need) {
  return absl::DataLossError(
      absl::StrCat(name, ": truncated header: ", have, " bytes, the header needs ", need));
}

// Compares the payload size found with the one the header announces.
absl::Status CheckPayloadSize(const std::string& name, const IdxHeader& header, uint64_t found) {
  if (found < header.payload_bytes) {
    return absl::DataLossError(
        absl::StrCat(name, ": truncated payload: ", found, " bytes after the header, dimensions ",
                     DimsString(header.dims), " need ", header.payload_bytes));
  }
  if (found > header.payload_bytes) {
    return absl::DataLossError(absl::StrCat(
        name, ": ", found - header.payload_bytes, " trailing bytes after the ",
        header.payload_bytes, "-byte payload of dimensions ", DimsString(header.dims)));
  }
  return absl::OkStatus();
}

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
using FilePtr = std::unique_ptr<std::FILE, FileCloser>;

// Opens `path` for reading. NotFound when it is missing, not a regular file or
// unreadable.
absl::StatusOr<FilePtr> OpenForReading(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return absl::NotFoundError(absl::StrCat(path, ": is a directory, not an IDX file"));
  }
  FilePtr file(std::fopen(path.c_str(), "rb"));
  if (file == nullptr) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  }
  return file;
}

// Inflates a gzip stream, possibly made of several concatenated gzip members,
// read from a file or from bytes in memory. Every error is DataLoss and names
// the file.
class GzipReader {
 public:
  GzipReader(std::string name, FilePtr file) : name_(std::move(name)), file_(std::move(file)) {}
  // `bytes` must outlive the reader.
  GzipReader(std::string name, const std::vector<uint8_t>& bytes)
      : name_(std::move(name)), memory_(&bytes) {}
  ~GzipReader() {
    if (initialized_) inflateEnd(&stream_);
  }
  GzipReader(const GzipReader&) = delete;
  GzipReader& operator=(const GzipReader&) = delete;

  // Inflates up to `n` bytes into `out` and returns how many were produced:
  // fewer than `n` only at the clean end of the last gzip member.
  absl::StatusOr<size_t> Read(uint8_t* out, size_t n) {
    if (!initialized_) {
      // 15 + 16: the largest window, and a gzip (not zlib or raw) wrapper.
      if (inflateInit2(&stream_, 15 + 16) != Z_OK) {
        return absl::ResourceExhaustedError(absl::StrCat(name_, ": cannot initialise zlib"));
      }
      initialized_ = true;
    }
    stream_.next_out = out;
    stream_.avail_out = static_cast<uInt>(n);
    while (stream_.avail_out > 0) {
      if (stream_.avail_in == 0 && !eof_) RETURN_IF_ERROR(Refill());
      if (member_ended_) {
        // Between members: the end of the file is the clean end; anything
        // else must be another gzip member.
        if (stream_.avail_in == 0) break;
        if (inflateReset(&stream_) != Z_OK) {
          return absl::InternalError(absl::StrCat(name_, ": inflateReset failed"));
        }
        member_ended_ = false;
      }
      if (stream_.avail_in == 0) {
        return absl::DataLossError(absl::StrCat(name_, ": truncated gzip stream: the file ends (",
                                                compressed_bytes_,
                                                " compressed bytes) in the middle of a member"));
      }
      const int ret = inflate(&stream_, Z_NO_FLUSH);
      if (ret == Z_STREAM_END) {
        member_ended_ = true;
        ++members_;
      } else if (ret == Z_DATA_ERROR || ret == Z_NEED_DICT) {
        return absl::DataLossError(absl::StrCat(
            name_, ": corrupt gzip stream",
            members_ > 0 ? " (data after the end of the first member is not gzip)" : "", ": ",
            stream_.msg != nullptr ? stream_.msg : "invalid data"));
      } else if (ret == Z_MEM_ERROR) {
        return absl::ResourceExhaustedError(absl::StrCat(name_, ": out of memory in zlib"));
      } else if (ret != Z_OK && ret != Z_BUF_ERROR) {
        return absl::InternalError(absl::StrCat(name_, ": zlib inflate returned ", ret));
      }
    }
    return n - stream_.avail_out;
  }

 private:
  absl::Status Refill() {
    if (memory_ != nullptr) {
      // zlib only reads through next_in; it is not const for historical reasons.
      const size_t got = std::min(kGzipInputBytes, memory_->size() - memory_offset_);
      if (got == 0) eof_ = true;
      stream_.next_in = const_cast<uint8_t*>(memory_->data() + memory_offset_);
      stream_.avail_in = static_cast<uInt>(got);
      memory_offset_ += got;
      compressed_bytes_ += got;
      return absl::OkStatus();
    }
    const size_t got = std::fread(input_.data(), 1, input_.size(), file_.get());
    if (got == 0) {
      if (std::ferror(file_.get())) {
        return absl::DataLossError(absl::StrCat(name_, ": read error: ", std::strerror(errno)));
      }
      eof_ = true;
    }
    compressed_bytes_ += got;
    stream_.next_in = input_.data();
    stream_.avail_in = static_cast<uInt>(got);
    return absl::OkStatus();
  }

  std::string name_;
  // The source: a file (read in chunks into input_) or bytes in memory.
  FilePtr file_;
  const std::vector<uint8_t>* memory_ = nullptr;
  size_t memory_offset_ = 0;
  z_stream stream_{};
  bool initialized_ = false;
  bool eof_ = false;
  bool member_ended_ = false;
  int members_ = 0;
  uint64_t compressed_bytes_ = 0;
  std::vector<uint8_t> input_ = std::vector<uint8_t>(memory_ == nullptr ? kGzipInputBytes : 0);
};

// Decodes a gzip-compressed IDX stream, header first, then the payload in
// chunks. `path` names it in messages.
absl::StatusOr<IdxArray> ReadGzipIdx(const std::string& path, GzipReader* reader) {
  uint8_t prefix[kPrefixBytes];
  ASSIGN_OR_RETURN(size_t got, reader->Read(prefix, kPrefixBytes));
  if (got < kPrefixBytes) return TruncatedHeader(path, got, kPrefixBytes);
  ASSIGN_OR_RETURN(const int rank, ParsePrefix(path, prefix));
  std::vector<uint8_t> dim_bytes(4 * static_cast<size_t>(rank));
  ASSIGN_OR_RETURN(got, reader->Read(dim_bytes.data(), dim_bytes.size()));
  if (got < dim_bytes.size()) {
    return TruncatedHeader(path, kPrefixBytes + got, kPrefixBytes + dim_bytes.size());
  }
  ASSIGN_OR_RETURN(IdxHeader header, ParseDims(path, rank, dim_bytes.data()));

  // The buffer grows with the bytes actually inflated (see the file comment);
  // reading one byte past the announced payload detects trailing bytes.
  IdxArray array;
  const uint64_t limit = header.payload_bytes + 1;
  uint64_t size = 0;
  while (size < limit) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(kReadChunkBytes, limit - size));
    array.data.resize(size + want);
    ASSIGN_OR_RETURN(got, reader->Read(array.data.data() + size, want));
    size += got;
    if (got < want) break;
  }
  if (size > header.payload_bytes) {
    // Count every trailing byte for the message, without keeping them.
    uint8_t sink[4096];
    do {
      ASSIGN_OR_RETURN(got, reader->Read(sink, sizeof(sink)));
      size += got;
    } while (got == sizeof(sink));
  }
  RETURN_IF_ERROR(CheckPayloadSize(path, header, size));
  array.data.resize(size);
  array.data.shrink_to_fit();
  array.dims = std::move(header.dims);
  return array;
}

// Reads an uncompressed IDX file; its size is checked before the payload is
// allocated.
absl::StatusOr<IdxArray> ReadPlainIdx(const std::string& path, FilePtr file) {
  std::error_code ec;
  const uint64_t file_size = std::filesystem::file_size(path, ec);
  if (ec) return absl::NotFoundError(absl::StrCat(path, ": cannot stat: ", ec.message()));
  uint8_t prefix[kPrefixBytes];
  if (file_size < kPrefixBytes || std::fread(prefix, 1, kPrefixBytes, file.get()) != kPrefixBytes) {
    return TruncatedHeader(path, file_size, kPrefixBytes);
  }
  ASSIGN_OR_RETURN(const int rank, ParsePrefix(path, prefix));
  std::vector<uint8_t> dim_bytes(4 * static_cast<size_t>(rank));
  if (file_size < kPrefixBytes + dim_bytes.size() ||
      std::fread(dim_bytes.data(), 1, dim_bytes.size(), file.get()) != dim_bytes.size()) {
    return TruncatedHeader(path, file_size, kPrefixBytes + dim_bytes.size());
  }
  ASSIGN_OR_RETURN(IdxHeader header, ParseDims(path, rank, dim_bytes.data()));
  RETURN_IF_ERROR(CheckPayloadSize(path, header, file_size - header.header_bytes));
  IdxArray array;
  array.data.resize(header.payload_bytes);
  if (std::fread(array.data.data(), 1, array.data.size(), file.get()) != array.data.size()) {
    // The file shrank or failed between the size check and the read.
    return absl::DataLossError(absl::StrCat(path, ": read error or file truncated while reading ",
                                            header.payload_bytes, " payload bytes"));
  }
  array.dims = std::move(header.dims);
  return array;
}

}  // namespace

absl::StatusOr<IdxArray> ParseIdx(const std::string& name, const std::vector<uint8_t>& bytes) {
  if (bytes.size() < kPrefixBytes) return TruncatedHeader(name, bytes.size(), kPrefixBytes);
  ASSIGN_OR_RETURN(const int rank, ParsePrefix(name, bytes.data()));
  const size_t header_bytes = kPrefixBytes + 4 * static_cast<size_t>(rank);
  if (bytes.size() < header_bytes) return TruncatedHeader(name, bytes.size(), header_bytes);
  ASSIGN_OR_RETURN(IdxHeader header, ParseDims(name, rank, bytes.data() + kPrefixBytes));
  RETURN_IF_ERROR(CheckPayloadSize(name, header, bytes.size() - header_bytes));
  IdxArray array;
  array.dims = std::move(header.dims);
  array.data.assign(bytes.begin() + header_bytes, bytes.end());
  return array;
}

absl::StatusOr<IdxArray> ParseGzipIdx(const std::string& name,
                                      const std::vector<uint8_t>& compressed) {
  GzipReader reader(name, compressed);
  return ReadGzipIdx(name, &reader);
}

absl::StatusOr<IdxArray> ReadIdxFile(const std::string& path) {
  ASSIGN_OR_RETURN(FilePtr file, OpenForReading(path));
  if (absl::EndsWith(path, ".gz")) {
    GzipReader reader(path, std::move(file));
    return ReadGzipIdx(path, &reader);
  }
  return ReadPlainIdx(path, std::move(file));
}

// Refuses (InvalidArgument) an array whose data size differs from the product
// of its dims, a rank outside [1, 255], a zero dimension, and a ".gz" path
// (this writer does not compress, so ReadIdxFile could not read it back).
// NotFound when the file cannot be created; DataLoss when a write fails.
absl::Status WriteIdxFile(const std::string& path, const IdxArray& array) {
  if (absl::EndsWith(path, ".gz")) {
    return absl::InvalidArgumentError(
        absl::StrCat(path,
                     ": WriteIdxFile writes uncompressed IDX; a .gz name would not read "
                     "back"));
  }
  if (array.dims.empty() || array.dims.size() > 255) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": cannot write rank ", array.dims.size(), " (must be 1 to 255)"));
  }
  uint64_t elements = 1;
  for (uint32_t d : array.dims) {
    if (d == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": cannot write zero dimension in ", DimsString(array.dims)));
    }
    elements *= d;
    if (elements > kMaxElements) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": dimensions ", DimsString(array.dims), " exceed 2^31 elements"));
    }
  }
  if (elements != array.data.size()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": dimensions ", DimsString(array.dims),
                                                   " need ", elements, " bytes, data has ",
                                                   array.data.size()));
  }
  std::vector<uint8_t> header = {0, 0, kTypeUnsignedByte, static_cast<uint8_t>(array.dims.size())};
  for (uint32_t d : array.dims) AppendBigEndian32(d, &header);

  FilePtr file(std::fopen(path.c_str(), "wb"));
  if (file == nullptr) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot create: ", std::strerror(errno)));
  }
  if (std::fwrite(header.data(), 1, header.size(), file.get()) != header.size() ||
      std::fwrite(array.data.data(), 1, array.data.size(), file.get()) != array.data.size() ||
      std::fflush(file.get()) != 0) {
    return absl::DataLossError(absl::StrCat(path, ": write failed: ", std::strerror(errno)));
  }
  if (std::fclose(file.release()) != 0) {
    return absl::DataLossError(absl::StrCat(path, ": close failed: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace distillery
