// NumPy .npz reading: the zip container and the data sets held in one. See
// npz.h for the format and the contract.
//
// Memory safety against hostile input: a zip member's uncompressed size is
// bounded by its compressed size (deflate cannot expand beyond about 1032:1),
// so no allocation is ever sized by a header alone, and every offset is
// checked against the archive's size before it is read.
#include "common/data/npz.h"

#include <zlib.h>

#include <cstring>
#include <filesystem>
#include <optional>
#include <set>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/data/idx_dataset.h"
#include "common/data/npy.h"
#include "common/data/npy_internal.h"
#include "common/util/status_macros.h"

namespace distillery {
namespace {

using npy_internal::CheckSameImageShape;
using npy_internal::kMembers;
using npy_internal::Le16;
using npy_internal::Le32;
using npy_internal::ReadWholeFile;

// Deflate's largest expansion is 1032:1; the slack covers tiny members.
constexpr uint64_t kMaxDeflateRatio = 1032;
constexpr uint64_t kDeflateSlack = 1024;

constexpr uint32_t kZipLocalSignature = 0x04034b50;
constexpr uint32_t kZipCentralSignature = 0x02014b50;
constexpr uint32_t kZipEndSignature = 0x06054b50;
constexpr uint32_t kZip64LocatorSignature = 0x07064b50;
constexpr size_t kZipEndBytes = 22;
constexpr size_t kZipCentralBytes = 46;
constexpr size_t kZipLocalBytes = 30;

// Inflates a raw deflate stream of exactly `compressed` into exactly `size`
// bytes.
absl::StatusOr<std::vector<uint8_t>> Inflate(const std::string& name, const uint8_t* compressed,
                                             size_t compressed_size, uint32_t size) {
  z_stream stream{};
  if (inflateInit2(&stream, -15) != Z_OK) {
    return absl::ResourceExhaustedError(absl::StrCat(name, ": cannot initialise zlib"));
  }
  // One byte more than announced, to detect a member that inflates larger.
  std::vector<uint8_t> out(uint64_t{size} + 1);
  stream.next_in = const_cast<uint8_t*>(compressed);  // zlib does not write through it
  stream.avail_in = static_cast<uInt>(compressed_size);
  stream.next_out = out.data();
  stream.avail_out = static_cast<uInt>(out.size());
  const int ret = inflate(&stream, Z_FINISH);
  const uint64_t produced = stream.total_out;
  const uInt left_in = stream.avail_in;
  const std::string message = stream.msg != nullptr ? stream.msg : "";
  inflateEnd(&stream);
  if (ret == Z_DATA_ERROR || ret == Z_NEED_DICT) {
    return absl::DataLossError(absl::StrCat(name, ": corrupt deflate data: ", message));
  }
  if (ret == Z_MEM_ERROR) {
    return absl::ResourceExhaustedError(absl::StrCat(name, ": out of memory in zlib"));
  }
  if (ret != Z_STREAM_END) {
    return absl::DataLossError(absl::StrCat(
        name, produced > size ? ": inflates to more than the " : ": truncated deflate data: ",
        produced > size ? absl::StrCat(size, " bytes the directory says")
                        : "the stream ends early"));
  }
  if (produced != size) {
    return absl::DataLossError(
        absl::StrCat(name, ": inflates to ", produced, " bytes, the directory says ", size));
  }
  if (left_in != 0) {
    return absl::DataLossError(
        absl::StrCat(name, ": ", left_in, " bytes after the end of the deflate stream"));
  }
  out.resize(size);
  return out;
}

// Where the central directory lies, from the end of central directory record.
struct ZipDirectory {
  size_t end = 0;  // offset of the end record, where the directory must stop
  uint32_t offset = 0;
  uint32_t size = 0;
  uint16_t entries = 0;
};

// A central directory entry: what it says about its member.
struct ZipEntry {
  std::string member;
  std::string where;  // "<archive>: member '<member>'", for messages
  uint16_t method = 0;
  uint32_t crc = 0;
  uint32_t compressed = 0;
  uint32_t uncompressed = 0;
  uint32_t local = 0;  // offset of its local header
};

// Finds the end of central directory record, searched backwards over a
// comment of up to 65535 bytes (the comment must run exactly to the end), and
// checks that the directory is one plain (not zip64, single-disk) block ending
// where the record starts.
absl::StatusOr<ZipDirectory> FindDirectory(const std::string& name,
                                           const std::vector<uint8_t>& bytes) {
  const size_t size = bytes.size();
  const uint8_t* b = bytes.data();
  if (size < kZipEndBytes) {
    return absl::DataLossError(absl::StrCat(name, ": not a zip archive: ", size,
                                            " bytes, shorter than an end of central directory"));
  }
  std::optional<size_t> found;
  for (size_t pos = size - kZipEndBytes + 1; pos-- > 0;) {
    if (size - pos > kZipEndBytes + 0xffff) break;
    if (Le32(b + pos) == kZipEndSignature && Le16(b + pos + 20) == size - pos - kZipEndBytes) {
      found = pos;
      break;
    }
  }
  if (!found) {
    return absl::DataLossError(
        absl::StrCat(name, ": not a zip archive or truncated: no end of central directory"));
  }
  ZipDirectory dir;
  dir.end = *found;
  const uint8_t* e = b + dir.end;
  if (dir.end >= 20 && Le32(e - 20) == kZip64LocatorSignature) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": zip64 archives are not supported (members over 4 GiB)"));
  }
  const uint16_t disk = Le16(e + 4), cd_disk = Le16(e + 6), disk_entries = Le16(e + 8);
  dir.entries = Le16(e + 10);
  dir.size = Le32(e + 12);
  dir.offset = Le32(e + 16);
  if (dir.entries == 0xffff || dir.size == 0xffffffff || dir.offset == 0xffffffff) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": zip64 archives are not supported"));
  }
  if (disk != 0 || cd_disk != 0 || disk_entries != dir.entries) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": multi-disk zip archives are not supported"));
  }
  if (uint64_t{dir.offset} + dir.size != dir.end) {
    return absl::DataLossError(
        absl::StrCat(name, ": corrupt zip: the central directory (", dir.size, " bytes at ",
                     dir.offset, ") does not end where its end record starts (", dir.end, ")"));
  }
  return dir;
}

// Reads central directory entry `e` at `*pos` (advanced past it) and refuses
// what this reader does not take: unsafe names, encryption, zip64, other
// disks and compression methods other than stored and deflate.
absl::StatusOr<ZipEntry> ReadEntry(const std::string& name, const std::vector<uint8_t>& bytes,
                                   const ZipDirectory& dir, int e, size_t* pos) {
  const uint8_t* p = bytes.data() + *pos;
  if (dir.end - *pos < kZipCentralBytes || Le32(p) != kZipCentralSignature) {
    return absl::DataLossError(
        absl::StrCat(name, ": corrupt zip: central directory entry ", e, " is malformed"));
  }
  ZipEntry entry;
  const uint16_t flags = Le16(p + 8);
  entry.method = Le16(p + 10);
  entry.crc = Le32(p + 16);
  entry.compressed = Le32(p + 20);
  entry.uncompressed = Le32(p + 24);
  const uint16_t name_len = Le16(p + 28), extra_len = Le16(p + 30), comment_len = Le16(p + 32);
  const uint16_t start_disk = Le16(p + 34);
  entry.local = Le32(p + 42);
  const size_t entry_bytes = kZipCentralBytes + name_len + extra_len + comment_len;
  if (dir.end - *pos < entry_bytes) {
    return absl::DataLossError(
        absl::StrCat(name, ": corrupt zip: central directory entry ", e, " is truncated"));
  }
  entry.member.assign(reinterpret_cast<const char*>(p + kZipCentralBytes), name_len);
  *pos += entry_bytes;
  entry.where = absl::StrCat(name, ": member '", entry.member, "'");
  const std::string& member = entry.member;
  if (member.empty() || member == "." || member == ".." ||
      member.find_first_of(std::string("/\\\0", 3)) != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(entry.where, ": unsafe or nested member name (paths are refused)"));
  }
  if ((flags & 0x41) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(entry.where, " is encrypted: not supported"));
  }
  if (entry.compressed == 0xffffffff || entry.uncompressed == 0xffffffff ||
      entry.local == 0xffffffff || start_disk == 0xffff) {
    return absl::InvalidArgumentError(absl::StrCat(entry.where, " is zip64: not supported"));
  }
  if (entry.method != 0 && entry.method != 8) {
    return absl::InvalidArgumentError(absl::StrCat(entry.where, ": compression method ",
                                                   entry.method,
                                                   " is not supported (only stored and deflate)"));
  }
  if (start_disk != 0) {
    return absl::InvalidArgumentError(absl::StrCat(entry.where, " is on another disk"));
  }
  return entry;
}

// The member's content: its local header must agree with the directory (same
// name and method), and its data, which follows the local name and extra
// field (these may differ from the central ones), must end before the
// central directory. Stored or inflated, then checked against the CRC-32.
absl::StatusOr<std::vector<uint8_t>> ReadContent(const std::vector<uint8_t>& bytes,
                                                 const ZipDirectory& dir, const ZipEntry& entry) {
  const uint8_t* b = bytes.data();
  const uint32_t local = entry.local;
  if (local > dir.offset || dir.offset - local < kZipLocalBytes ||
      Le32(b + local) != kZipLocalSignature) {
    return absl::DataLossError(
        absl::StrCat(entry.where, ": corrupt zip: no local header at ", local));
  }
  const uint16_t local_method = Le16(b + local + 8);
  const uint16_t local_name_len = Le16(b + local + 26), local_extra_len = Le16(b + local + 28);
  const uint64_t data_start = uint64_t{local} + kZipLocalBytes + local_name_len + local_extra_len;
  if (data_start > dir.offset || dir.offset - data_start < entry.compressed) {
    return absl::DataLossError(absl::StrCat(entry.where, ": corrupt zip: the ", entry.compressed,
                                            "-byte data at ", data_start,
                                            " runs into the central directory"));
  }
  if (local_method != entry.method || local_name_len != entry.member.size() ||
      std::memcmp(b + local + kZipLocalBytes, entry.member.data(), local_name_len) != 0) {
    return absl::DataLossError(
        absl::StrCat(entry.where, ": corrupt zip: the local header disagrees with the directory"));
  }
  const uint8_t* data = b + data_start;
  std::vector<uint8_t> content;
  if (entry.method == 0) {
    if (entry.compressed != entry.uncompressed) {
      return absl::DataLossError(absl::StrCat(entry.where, ": stored member of ", entry.compressed,
                                              " bytes claims ", entry.uncompressed,
                                              " uncompressed"));
    }
    content.assign(data, data + entry.compressed);
  } else {
    if (entry.uncompressed > uint64_t{entry.compressed} * kMaxDeflateRatio + kDeflateSlack) {
      return absl::DataLossError(absl::StrCat(entry.where, ": ", entry.compressed,
                                              " deflated bytes cannot inflate to the ",
                                              entry.uncompressed, " bytes the directory claims"));
    }
    ASSIGN_OR_RETURN(content, Inflate(entry.where, data, entry.compressed, entry.uncompressed));
  }
  const uint32_t actual_crc =
      static_cast<uint32_t>(crc32(0L, content.data(), static_cast<uInt>(content.size())));
  if (actual_crc != entry.crc) {
    return absl::DataLossError(absl::StrCat(entry.where, ": CRC-32 mismatch (corrupt data): 0x",
                                            absl::Hex(actual_crc), " computed, 0x",
                                            absl::Hex(entry.crc), " recorded"));
  }
  return content;
}

}  // namespace

absl::StatusOr<std::vector<std::pair<std::string, std::vector<uint8_t>>>> ParseZip(
    const std::string& name, const std::vector<uint8_t>& bytes) {
  ASSIGN_OR_RETURN(const ZipDirectory dir, FindDirectory(name, bytes));
  std::vector<std::pair<std::string, std::vector<uint8_t>>> members;
  std::set<std::string> names;
  size_t pos = dir.offset;
  for (int e = 0; e < dir.entries; ++e) {
    ASSIGN_OR_RETURN(ZipEntry entry, ReadEntry(name, bytes, dir, e, &pos));
    if (!names.insert(entry.member).second) {
      return absl::InvalidArgumentError(absl::StrCat(entry.where, " appears twice in the archive"));
    }
    ASSIGN_OR_RETURN(std::vector<uint8_t> content, ReadContent(bytes, dir, entry));
    members.emplace_back(std::move(entry.member), std::move(content));
  }
  if (pos != dir.end) {
    return absl::DataLossError(absl::StrCat(name, ": corrupt zip: ", dir.end - pos,
                                            " unexplained bytes in the central directory"));
  }
  return members;
}

absl::StatusOr<MnistFormatData> ParseNpzDataset(const std::string& name,
                                                const std::vector<uint8_t>& bytes) {
  ASSIGN_OR_RETURN(auto members, ParseZip(name, bytes));
  const std::vector<uint8_t>* found[4] = {nullptr, nullptr, nullptr, nullptr};
  for (const auto& [member, content] : members) {
    bool known = false;
    for (int k = 0; k < 4; ++k) {
      if (member == kMembers[k]) {
        found[k] = &content;
        known = true;
      }
    }
    if (!known) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": unexpected member '", member,
                       "' (the archive must hold exactly x_train, y_train, x_test and y_test)"));
    }
  }
  NpyArray arrays[4];
  std::string names[4];
  for (int k = 0; k < 4; ++k) {
    names[k] = absl::StrCat(name, ":", kMembers[k]);
    if (found[k] == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": missing member ", kMembers[k],
                       " (the archive must hold x_train, y_train, x_test and y_test)"));
    }
    ASSIGN_OR_RETURN(arrays[k], ParseNpy(names[k], *found[k]));
  }
  MnistFormatData data;
  ASSIGN_OR_RETURN(data.train, DatasetFromNpy(names[0], arrays[0], names[1], &arrays[1]));
  ASSIGN_OR_RETURN(data.test, DatasetFromNpy(names[2], arrays[2], names[3], &arrays[3]));
  RETURN_IF_ERROR(CheckSameImageShape(name, data));
  return data;
}

absl::StatusOr<MnistFormatData> LoadNpzDataset(const std::string& path) {
  ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, ReadWholeFile(path));
  return ParseNpzDataset(path, bytes);
}

absl::StatusOr<MnistFormatData> LoadDataSource(const std::string& path) {
  std::error_code ec;
  if (absl::EndsWith(path, ".npz")) return LoadNpzDataset(path);
  if (std::filesystem::is_regular_file(path, ec)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": a data file must be an .npz archive (or give a directory)"));
  }
  if (std::filesystem::exists(std::filesystem::path(path) / "x_train.npy", ec)) {
    return LoadNpyDirectory(path);
  }
  return LoadMnistFormatDirectory(path);
}

}  // namespace distillery
