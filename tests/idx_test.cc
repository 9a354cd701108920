// Tests of the IDX reader and writer: round trips, plain and gzip, and every
// refusal of a malformed file (status code and a message naming the file).
#include "common/data/idx.h"

#include <zlib.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace distillery {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string TestDir() { return FreshTestDir("idx_test"); }

void WriteBytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr) << path;
  if (!bytes.empty()) {
    ASSERT_EQ(std::fwrite(bytes.data(), 1, bytes.size(), f), bytes.size());
  }
  ASSERT_EQ(std::fclose(f), 0);
}

std::vector<uint8_t> ReadBytes(const std::string& path) {
  std::vector<uint8_t> bytes(std::filesystem::file_size(path));
  std::FILE* f = std::fopen(path.c_str(), "rb");
  EXPECT_NE(f, nullptr) << path;
  if (f == nullptr) return {};
  EXPECT_EQ(std::fread(bytes.data(), 1, bytes.size(), f), bytes.size());
  std::fclose(f);
  return bytes;
}

// Writes `bytes` as a gzip file with zlib's own gz* API.
void WriteGzip(const std::string& path, const std::vector<uint8_t>& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr) << path;
  ASSERT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())),
            static_cast<int>(bytes.size()));
  ASSERT_EQ(gzclose(f), Z_OK);
}

// The IDX encoding of `dims` followed by `payload`, built by hand.
std::vector<uint8_t> IdxBytes(const std::vector<uint32_t>& dims,
                              const std::vector<uint8_t>& payload, uint8_t type = 0x08) {
  std::vector<uint8_t> bytes = {0, 0, type, static_cast<uint8_t>(dims.size())};
  for (uint32_t d : dims) {
    for (int shift = 24; shift >= 0; shift -= 8) bytes.push_back(static_cast<uint8_t>(d >> shift));
  }
  bytes.insert(bytes.end(), payload.begin(), payload.end());
  return bytes;
}

std::vector<uint8_t> Iota(size_t n) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(i * 7 + 3);
  return v;
}

// Expects `path` to be refused with `code` and a message naming the file and
// containing `fragment`.
void ExpectRefused(const std::string& path, absl::StatusCode code, const std::string& fragment) {
  absl::StatusOr<IdxArray> result = ReadIdxFile(path);
  ASSERT_FALSE(result.ok()) << path;
  EXPECT_EQ(result.status().code(), code) << result.status();
  EXPECT_THAT(result.status().message(), AllOf(HasSubstr(path), HasSubstr(fragment)));
}

TEST(IdxTest, WriteThenReadRoundTripsRank3) {
  const std::string path = TestDir() + "/images-idx3-ubyte";
  IdxArray array{{3, 2, 4}, Iota(24)};
  ASSERT_TRUE(WriteIdxFile(path, array).ok());
  // Header: magic 0x00000803, dims big-endian, then the payload.
  const std::vector<uint8_t> bytes = ReadBytes(path);
  ASSERT_EQ(bytes.size(), 16u + 24u);
  EXPECT_THAT(std::vector<uint8_t>(bytes.begin(), bytes.begin() + 16),
              ElementsAre(0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 4));

  absl::StatusOr<IdxArray> read = ReadIdxFile(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->dims, array.dims);
  EXPECT_EQ(read->data, array.data);
}

TEST(IdxTest, WriteThenReadRoundTripsRank1WithLargeDimension) {
  const std::string path = TestDir() + "/labels";
  IdxArray array{{70000}, Iota(70000)};  // a dimension above 2^16
  ASSERT_TRUE(WriteIdxFile(path, array).ok());
  absl::StatusOr<IdxArray> read = ReadIdxFile(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_THAT(read->dims, ElementsAre(70000u));
  EXPECT_EQ(read->data, array.data);
}

TEST(IdxTest, ParseIdxDecodesBytesInMemory) {
  absl::StatusOr<IdxArray> parsed = ParseIdx("mem", IdxBytes({2, 3}, {1, 2, 3, 4, 5, 6}));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_THAT(parsed->dims, ElementsAre(2u, 3u));
  EXPECT_THAT(parsed->data, ElementsAre(1, 2, 3, 4, 5, 6));
}

TEST(IdxTest, ParseIdxRefusesWithTheGivenName) {
  absl::StatusOr<IdxArray> parsed = ParseIdx("my-name", IdxBytes({2, 3}, {1, 2, 3}));
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(parsed.status().message(), AllOf(HasSubstr("my-name"), HasSubstr("truncated")));
  EXPECT_EQ(ParseIdx("x", {0, 0}).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(ParseIdx("x", IdxBytes({0}, {})).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(IdxTest, ReadsGzipFile) {
  const std::string path = TestDir() + "/images.gz";
  const std::vector<uint8_t> payload = Iota(5 * 28 * 28);
  WriteGzip(path, IdxBytes({5, 28, 28}, payload));
  absl::StatusOr<IdxArray> read = ReadIdxFile(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_THAT(read->dims, ElementsAre(5u, 28u, 28u));
  EXPECT_EQ(read->data, payload);
}

TEST(IdxTest, ReadsGzipPayloadLargerThanOneReadChunk) {
  const std::string path = TestDir() + "/big.gz";
  const std::vector<uint8_t> payload = Iota(3 * 1000 * 1000);  // spans several 1 MiB chunks
  WriteGzip(path, IdxBytes({3, 1000, 1000}, payload));
  absl::StatusOr<IdxArray> read = ReadIdxFile(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->data, payload);
}

TEST(IdxTest, ReadsConcatenatedGzipMembers) {
  const std::string dir = TestDir();
  const std::vector<uint8_t> bytes = IdxBytes({4, 5}, Iota(20));
  const std::vector<uint8_t> first(bytes.begin(), bytes.begin() + 9);
  const std::vector<uint8_t> second(bytes.begin() + 9, bytes.end());
  WriteGzip(dir + "/a.gz", first);
  WriteGzip(dir + "/b.gz", second);
  std::vector<uint8_t> joined = ReadBytes(dir + "/a.gz");
  const std::vector<uint8_t> b = ReadBytes(dir + "/b.gz");
  joined.insert(joined.end(), b.begin(), b.end());
  WriteBytes(dir + "/joined.gz", joined);
  absl::StatusOr<IdxArray> read = ReadIdxFile(dir + "/joined.gz");
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->data, Iota(20));
}

TEST(IdxTest, ParseGzipIdxDecodesCompressedBytesInMemory) {
  const std::string path = TestDir() + "/mem.gz";
  WriteGzip(path, IdxBytes({2, 3}, {1, 2, 3, 4, 5, 6}));
  const std::vector<uint8_t> compressed = ReadBytes(path);
  absl::StatusOr<IdxArray> parsed = ParseGzipIdx("mem", compressed);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_THAT(parsed->dims, ElementsAre(2u, 3u));
  EXPECT_THAT(parsed->data, ElementsAre(1, 2, 3, 4, 5, 6));
  // Cut short: the same error as for a truncated file, with the given name.
  const std::vector<uint8_t> cut(compressed.begin(), compressed.end() - 12);
  absl::StatusOr<IdxArray> truncated = ParseGzipIdx("my-name", cut);
  ASSERT_FALSE(truncated.ok());
  EXPECT_EQ(truncated.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(truncated.status().message(), AllOf(HasSubstr("my-name"), HasSubstr("truncated")));
  EXPECT_EQ(ParseGzipIdx("x", {}).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(ParseGzipIdx("x", IdxBytes({2}, {1, 2})).status().code(),
            absl::StatusCode::kDataLoss);  // plain bytes are not gzip
}

TEST(IdxTest, MissingFileIsNotFound) {
  const std::string dir = TestDir();
  ExpectRefused(dir + "/no-such-file", absl::StatusCode::kNotFound, "");
  ExpectRefused(dir + "/no-such-file.gz", absl::StatusCode::kNotFound, "");
}

TEST(IdxTest, DirectoryIsNotFound) {
  ExpectRefused(TestDir(), absl::StatusCode::kNotFound, "directory");
}

TEST(IdxTest, WrongMagicIsDataLoss) {
  const std::string path = TestDir() + "/magic";
  std::vector<uint8_t> bytes = IdxBytes({2}, {1, 2});
  bytes[0] = 0x1f;  // e.g. a gzip file under a plain name
  bytes[1] = 0x8b;
  WriteBytes(path, bytes);
  ExpectRefused(path, absl::StatusCode::kDataLoss, "magic");
}

TEST(IdxTest, UnsupportedElementTypeIsDataLoss) {
  const std::string path = TestDir() + "/floats";
  WriteBytes(path, IdxBytes({2}, {0, 0, 0, 0, 0, 0, 0, 0}, /*type=*/0x0D));
  ExpectRefused(path, absl::StatusCode::kDataLoss, "unsupported element type 0x0d");
}

TEST(IdxTest, RankZeroIsDataLoss) {
  const std::string path = TestDir() + "/rank0";
  WriteBytes(path, {0, 0, 8, 0, 42});
  ExpectRefused(path, absl::StatusCode::kDataLoss, "rank 0");
}

TEST(IdxTest, TruncatedHeaderIsDataLoss) {
  const std::string dir = TestDir();
  WriteBytes(dir + "/empty", {});
  ExpectRefused(dir + "/empty", absl::StatusCode::kDataLoss, "truncated header");
  WriteBytes(dir + "/short-dims", {0, 0, 8, 3, 0, 0, 0, 1, 0, 0});
  ExpectRefused(dir + "/short-dims", absl::StatusCode::kDataLoss, "truncated header");
}

TEST(IdxTest, TruncatedPayloadIsDataLoss) {
  const std::string path = TestDir() + "/truncated";
  WriteBytes(path, IdxBytes({2, 3, 3}, Iota(17)));
  ExpectRefused(path, absl::StatusCode::kDataLoss, "truncated payload: 17 bytes");
}

TEST(IdxTest, TrailingBytesAreDataLoss) {
  const std::string path = TestDir() + "/trailing";
  WriteBytes(path, IdxBytes({2, 3, 3}, Iota(20)));
  ExpectRefused(path, absl::StatusCode::kDataLoss, "2 trailing bytes");
}

TEST(IdxTest, ZeroDimensionIsInvalidArgument) {
  const std::string path = TestDir() + "/zero";
  WriteBytes(path, IdxBytes({4, 0, 28}, {}));
  ExpectRefused(path, absl::StatusCode::kInvalidArgument, "dimension 1");
}

TEST(IdxTest, AbsurdDimensionsAreInvalidArgumentBeforeAnyAllocation) {
  const std::string dir = TestDir();
  // 2^16 * 2^16 = 2^32 elements, announced by a 12-byte file.
  WriteBytes(dir + "/absurd", IdxBytes({65536, 65536}, {}));
  ExpectRefused(dir + "/absurd", absl::StatusCode::kInvalidArgument, "2^31");
  // A product that would overflow 64 bits if multiplied naively.
  WriteBytes(dir + "/overflow", IdxBytes({0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF}, {}));
  ExpectRefused(dir + "/overflow", absl::StatusCode::kInvalidArgument, "2^31");
  WriteGzip(dir + "/absurd.gz", IdxBytes({65536, 65536}, {}));
  ExpectRefused(dir + "/absurd.gz", absl::StatusCode::kInvalidArgument, "2^31");
}

TEST(IdxTest, LargestAllowedHeaderWithTinyPayloadIsTruncatedNotAllocated) {
  // 2^31 elements is allowed by the header check, but the file holds 3 bytes:
  // refused from the file size (plain) or the inflated size (gzip), quickly.
  const std::string dir = TestDir();
  const std::vector<uint8_t> bytes = IdxBytes({32768, 65536}, {1, 2, 3});
  WriteBytes(dir + "/huge", bytes);
  ExpectRefused(dir + "/huge", absl::StatusCode::kDataLoss, "truncated payload: 3 bytes");
  WriteGzip(dir + "/huge.gz", bytes);
  ExpectRefused(dir + "/huge.gz", absl::StatusCode::kDataLoss, "truncated payload: 3 bytes");
}

TEST(IdxTest, GzipPayloadErrorsMatchPlainOnes) {
  const std::string dir = TestDir();
  WriteGzip(dir + "/short.gz", IdxBytes({2, 3, 3}, Iota(17)));
  ExpectRefused(dir + "/short.gz", absl::StatusCode::kDataLoss, "truncated payload");
  WriteGzip(dir + "/long.gz", IdxBytes({2, 3, 3}, Iota(5000)));
  ExpectRefused(dir + "/long.gz", absl::StatusCode::kDataLoss, "4982 trailing bytes");
  std::vector<uint8_t> bad_magic = IdxBytes({2}, {1, 2});
  bad_magic[1] = 1;
  WriteGzip(dir + "/magic.gz", bad_magic);
  ExpectRefused(dir + "/magic.gz", absl::StatusCode::kDataLoss, "magic");
  WriteGzip(dir + "/type.gz", IdxBytes({2}, {1, 2}, /*type=*/0x09));
  ExpectRefused(dir + "/type.gz", absl::StatusCode::kDataLoss, "element type");
  WriteGzip(dir + "/header.gz", {0, 0, 8, 3, 0, 0});
  ExpectRefused(dir + "/header.gz", absl::StatusCode::kDataLoss, "truncated header");
}

TEST(IdxTest, TruncatedGzipIsDataLoss) {
  const std::string dir = TestDir();
  WriteGzip(dir + "/full.gz", IdxBytes({10, 28, 28}, Iota(10 * 28 * 28)));
  const std::vector<uint8_t> full = ReadBytes(dir + "/full.gz");
  // Cut in the deflate data, and cut only the 8-byte CRC/length trailer.
  for (size_t keep : {full.size() / 2, full.size() - 4, size_t{5}}) {
    const std::string path = dir + "/cut" + std::to_string(keep) + ".gz";
    WriteBytes(path, std::vector<uint8_t>(full.begin(), full.begin() + keep));
    ExpectRefused(path, absl::StatusCode::kDataLoss, "truncated gzip");
  }
}

TEST(IdxTest, EmptyGzipFileIsDataLoss) {
  const std::string path = TestDir() + "/empty.gz";
  WriteBytes(path, {});
  ExpectRefused(path, absl::StatusCode::kDataLoss, "gzip");
}

TEST(IdxTest, CorruptGzipIsDataLoss) {
  const std::string dir = TestDir();
  const std::vector<uint8_t> payload = Iota(10 * 28 * 28);
  WriteGzip(dir + "/full.gz", IdxBytes({10, 28, 28}, payload));
  const std::vector<uint8_t> full = ReadBytes(dir + "/full.gz");

  // Not gzip at all (a plain IDX file named .gz).
  WriteBytes(dir + "/plain.gz", IdxBytes({10, 28, 28}, payload));
  ExpectRefused(dir + "/plain.gz", absl::StatusCode::kDataLoss, "corrupt gzip");

  // A damaged CRC-32 in the trailer: the data inflates but fails the check.
  std::vector<uint8_t> bad_crc = full;
  bad_crc[bad_crc.size() - 8] ^= 0xFF;
  WriteBytes(dir + "/crc.gz", bad_crc);
  ExpectRefused(dir + "/crc.gz", absl::StatusCode::kDataLoss, "corrupt gzip");

  // Damaged deflate data: either invalid codes or a CRC mismatch, never a crash.
  std::vector<uint8_t> garbled = full;
  for (size_t i = 12; i < garbled.size() - 8; i += 3) garbled[i] ^= 0x5A;
  WriteBytes(dir + "/garbled.gz", garbled);
  ExpectRefused(dir + "/garbled.gz", absl::StatusCode::kDataLoss, "");

  // Garbage after a complete gzip member.
  std::vector<uint8_t> tail = full;
  tail.insert(tail.end(), {'j', 'u', 'n', 'k', '!', '!', '!', '!', '!', '!', '!', '!'});
  WriteBytes(dir + "/tail.gz", tail);
  ExpectRefused(dir + "/tail.gz", absl::StatusCode::kDataLoss, "not gzip");
}

TEST(IdxTest, WriteRefusesInconsistentArrays) {
  const std::string dir = TestDir();
  EXPECT_EQ(WriteIdxFile(dir + "/a", IdxArray{{2, 3}, Iota(5)}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WriteIdxFile(dir + "/b", IdxArray{{}, {}}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WriteIdxFile(dir + "/c", IdxArray{{2, 0}, {}}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WriteIdxFile(dir + "/d.gz", IdxArray{{2}, Iota(2)}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WriteIdxFile(dir + "/no-dir/e", IdxArray{{2}, Iota(2)}).code(),
            absl::StatusCode::kNotFound);
  EXPECT_FALSE(std::filesystem::exists(dir + "/a"));
}

TEST(IdxTest, ReadsRealMnistTestLabels) {
  const std::string path = std::string(DISTILLERY_MNIST_DIR) + "/t10k-labels-idx1-ubyte.gz";
  absl::StatusOr<IdxArray> read = ReadIdxFile(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_THAT(read->dims, ElementsAre(10000u));
  ASSERT_EQ(read->data.size(), 10000u);
  EXPECT_EQ(read->data[0], 7);  // the first MNIST test digit is a 7
}

}  // namespace
}  // namespace distillery
