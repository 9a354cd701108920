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

}  // namespace

absl::StatusOr<std::vector<std::pair<std::string, std::vector<uint8_t>>>> ParseZip(
    const std::string& name, const std::vector<uint8_t>& bytes) {
  const size_t size = bytes.size();
  const uint8_t* b = bytes.data();
  // The end of central directory record, searched backwards over a comment
  // of up to 65535 bytes; its comment must run exactly to the end.
  if (size < kZipEndBytes) {
    return absl::DataLossError(absl::StrCat(name, ": not a zip archive: ", size,
                                            " bytes, shorter than an end of central directory"));
  }
  size_t end = 0;
  bool found = false;
  for (size_t pos = size - kZipEndBytes + 1; pos-- > 0;) {
    if (size - pos > kZipEndBytes + 0xffff) break;
    if (Le32(b + pos) == kZipEndSignature && Le16(b + pos + 20) == size - pos - kZipEndBytes) {
      end = pos;
      found = true;
      break;
    }
  }
  if (!found) {
    return absl::DataLossError(
        absl::StrCat(name, ": not a zip archive or truncated: no end of central directory"));
  }
  if (end >= 20 && Le32(b + end - 20) == kZip64LocatorSignature) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": zip64 archives are not supported (members over 4 GiB)"));
  }
  const uint16_t disk = Le16(b + end + 4), cd_disk = Le16(b + end + 6);
  const uint16_t disk_entries = Le16(b + end + 8), entries = Le16(b + end + 10);
  const uint32_t cd_size = Le32(b + end + 12), cd_offset = Le32(b + end + 16);
  if (entries == 0xffff || cd_size == 0xffffffff || cd_offset == 0xffffffff) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": zip64 archives are not supported"));
  }
  if (disk != 0 || cd_disk != 0 || disk_entries != entries) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": multi-disk zip archives are not supported"));
  }
  if (uint64_t{cd_offset} + cd_size != end) {
    return absl::DataLossError(
        absl::StrCat(name, ": corrupt zip: the central directory (", cd_size, " bytes at ",
                     cd_offset, ") does not end where its end record starts (", end, ")"));
  }
  std::vector<std::pair<std::string, std::vector<uint8_t>>> members;
  std::set<std::string> names;
  size_t pos = cd_offset;
  for (int e = 0; e < entries; ++e) {
    if (end - pos < kZipCentralBytes || Le32(b + pos) != kZipCentralSignature) {
      return absl::DataLossError(
          absl::StrCat(name, ": corrupt zip: central directory entry ", e, " is malformed"));
    }
    const uint16_t flags = Le16(b + pos + 8), method = Le16(b + pos + 10);
    const uint32_t crc = Le32(b + pos + 16);
    const uint32_t compressed = Le32(b + pos + 20), uncompressed = Le32(b + pos + 24);
    const uint16_t name_len = Le16(b + pos + 28), extra_len = Le16(b + pos + 30),
                   comment_len = Le16(b + pos + 32);
    const uint16_t start_disk = Le16(b + pos + 34);
    const uint32_t local = Le32(b + pos + 42);
    const size_t entry_bytes = kZipCentralBytes + name_len + extra_len + comment_len;
    if (end - pos < entry_bytes) {
      return absl::DataLossError(
          absl::StrCat(name, ": corrupt zip: central directory entry ", e, " is truncated"));
    }
    const std::string member(reinterpret_cast<const char*>(b + pos + kZipCentralBytes), name_len);
    pos += entry_bytes;
    const std::string where = absl::StrCat(name, ": member '", member, "'");
    if (member.empty() || member == "." || member == ".." ||
        member.find_first_of(std::string("/\\\0", 3)) != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": unsafe or nested member name (paths are refused)"));
    }
    if (!names.insert(member).second) {
      return absl::InvalidArgumentError(absl::StrCat(where, " appears twice in the archive"));
    }
    if ((flags & 0x41) != 0) {
      return absl::InvalidArgumentError(absl::StrCat(where, " is encrypted: not supported"));
    }
    if (compressed == 0xffffffff || uncompressed == 0xffffffff || local == 0xffffffff ||
        start_disk == 0xffff) {
      return absl::InvalidArgumentError(absl::StrCat(where, " is zip64: not supported"));
    }
    if (method != 0 && method != 8) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": compression method ", method, " is not supported (only stored and deflate)"));
    }
    if (start_disk != 0) {
      return absl::InvalidArgumentError(absl::StrCat(where, " is on another disk"));
    }
    // The local header: same name and method; the data follows its name and
    // extra field (which may differ from the central ones) and must end
    // before the central directory.
    if (local > cd_offset || cd_offset - local < kZipLocalBytes ||
        Le32(b + local) != kZipLocalSignature) {
      return absl::DataLossError(absl::StrCat(where, ": corrupt zip: no local header at ", local));
    }
    const uint16_t local_method = Le16(b + local + 8);
    const uint16_t local_name_len = Le16(b + local + 26), local_extra_len = Le16(b + local + 28);
    const uint64_t data_start = uint64_t{local} + kZipLocalBytes + local_name_len + local_extra_len;
    if (data_start > cd_offset || cd_offset - data_start < compressed) {
      return absl::DataLossError(absl::StrCat(where, ": corrupt zip: the ", compressed,
                                              "-byte data at ", data_start,
                                              " runs into the central directory"));
    }
    if (local_method != method || local_name_len != name_len ||
        std::memcmp(b + local + kZipLocalBytes, member.data(), name_len) != 0) {
      return absl::DataLossError(
          absl::StrCat(where, ": corrupt zip: the local header disagrees with the directory"));
    }
    const uint8_t* data = b + data_start;
    std::vector<uint8_t> content;
    if (method == 0) {
      if (compressed != uncompressed) {
        return absl::DataLossError(absl::StrCat(where, ": stored member of ", compressed,
                                                " bytes claims ", uncompressed, " uncompressed"));
      }
      content.assign(data, data + compressed);
    } else {
      if (uncompressed > uint64_t{compressed} * kMaxDeflateRatio + kDeflateSlack) {
        return absl::DataLossError(absl::StrCat(where, ": ", compressed,
                                                " deflated bytes cannot inflate to the ",
                                                uncompressed, " bytes the directory claims"));
      }
      ASSIGN_OR_RETURN(content, Inflate(where, data, compressed, uncompressed));
    }
    const uint32_t actual_crc =
        static_cast<uint32_t>(crc32(0L, content.data(), static_cast<uInt>(content.size())));
    if (actual_crc != crc) {
      return absl::DataLossError(absl::StrCat(where, ": CRC-32 mismatch (corrupt data): 0x",
                                              absl::Hex(actual_crc), " computed, 0x",
                                              absl::Hex(crc), " recorded"));
    }
    members.emplace_back(member, std::move(content));
  }
  if (pos != end) {
    return absl::DataLossError(absl::StrCat(name, ": corrupt zip: ", end - pos,
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
