// The .npz reader and LoadDataSource (common/data/npz.h): files written by
// real NumPy at test time match the IDX data they came from; malformed
// archives written here are refused with their messages; student_trainer
// trains on an .npz.
#include "common/data/npz.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <zlib.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/data/dataset.h"
#include "common/data/idx.h"
#include "common/data/idx_dataset.h"
#include "tests/npy_test_util.h"

namespace distillery {
namespace {

using ::testing::HasSubstr;

// The first train and test examples of MNIST, as IDX files in `dir` for
// NumPy to read, and as the Datasets the IDX reader gives.
struct Fixture {
  std::string dir;
  Dataset train, test;
};
Fixture MakeFixture(int64_t train_count, int64_t test_count) {
  Fixture f;
  f.dir = MakeTempDir();
  auto mnist = LoadMnistFormatDirectory(DISTILLERY_MNIST_DIR);
  EXPECT_TRUE(mnist.ok()) << mnist.status();
  f.train = *SliceDataset(mnist->train, 0, train_count);
  f.test = *SliceDataset(mnist->test, 0, test_count);
  for (const auto& [name, data] : {std::make_pair("train", &f.train), {"test", &f.test}}) {
    IdxArray images{{static_cast<uint32_t>(data->num_examples), 28, 28}, data->pixels};
    IdxArray labels{{static_cast<uint32_t>(data->num_examples)}, data->labels};
    EXPECT_TRUE(WriteIdxFile(f.dir + "/" + name + "-images", images).ok());
    EXPECT_TRUE(WriteIdxFile(f.dir + "/" + name + "-labels", labels).ok());
  }
  return f;
}

constexpr char kReadIdx[] =
    "def idx(name, rank):\n"
    "  return np.fromfile(name, np.uint8, offset=4 + 4 * rank)\n"
    "x_train = idx('train-images', 3).reshape(-1, 28, 28)\n"
    "y_train = idx('train-labels', 1)\n"
    "x_test = idx('test-images', 3).reshape(-1, 28, 28)\n"
    "y_test = idx('test-labels', 1)\n";

void ExpectSame(const Dataset& expected, const Dataset& actual) {
  EXPECT_EQ(actual.num_examples, expected.num_examples);
  EXPECT_EQ(actual.example_shape(), expected.example_shape());
  EXPECT_EQ(actual.pixels, expected.pixels);
  EXPECT_EQ(actual.labels, expected.labels);
}

TEST(NpyTest, NumpyFilesMatchTheIdxData) {
  Fixture f = MakeFixture(300, 100);
  RunPython(f.dir, std::string(kReadIdx) +
                       "np.savez('plain.npz', x_train=x_train, y_train=y_train.astype(np.int64),"
                       " x_test=x_test, y_test=y_test)\n"
                       "np.savez_compressed('compressed.npz', x_train=x_train,"
                       " y_train=y_train.astype(np.int32), x_test=x_test,"
                       " y_test=y_test.astype(np.uint16))\n"
                       "os.mkdir('npydir')\n"
                       "np.save('npydir/x_train.npy', x_train)\n"
                       "np.save('npydir/y_train.npy', y_train)\n"
                       "np.save('npydir/x_test.npy', x_test)\n"
                       "np.save('npydir/y_test.npy', y_test.astype(np.int8))\n");
  for (const std::string source : {"plain.npz", "compressed.npz", "npydir"}) {
    SCOPED_TRACE(source);
    auto data = LoadDataSource(f.dir + "/" + source);
    ASSERT_TRUE(data.ok()) << data.status();
    ExpectSame(f.train, data->train);
    ExpectSame(f.test, data->test);
  }
  // An IDX directory still loads as before.
  auto idx = LoadDataSource(DISTILLERY_MNIST_DIR);
  ASSERT_TRUE(idx.ok()) << idx.status();
  EXPECT_EQ(idx->train.num_examples, 60000);
}

TEST(NpyTest, ChannelsLastBecomePlanar) {
  const std::string dir = MakeTempDir();
  RunPython(dir,
            "x = (np.arange(2 * 3 * 4 * 3) % 251).astype(np.uint8).reshape(2, 3, 4, 3)\n"
            "np.savez('rgb.npz', x_train=x, y_train=np.array([1, 2]), x_test=x[:1],"
            " y_test=np.array([0], np.uint8))\n"
            "x.transpose(0, 3, 1, 2).copy().tofile('planar.bin')\n");
  auto data = LoadDataSource(dir + "/rgb.npz");
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->train.example_shape(), (Shape{3, 3, 4}));
  std::ifstream in(dir + "/planar.bin", std::ios::binary);
  std::vector<uint8_t> planar((std::istreambuf_iterator<char>(in)),
                              std::istreambuf_iterator<char>());
  EXPECT_EQ(data->train.pixels, planar);
  EXPECT_EQ(data->train.labels, (std::vector<uint8_t>{1, 2}));
}

// A zip of stored members; `flags` is the general-purpose flag of every member.
std::vector<uint8_t> Zip(const std::vector<std::pair<std::string, std::vector<uint8_t>>>& members,
                         uint16_t flags = 0) {
  std::vector<uint8_t> out, central;
  auto le16 = [](std::vector<uint8_t>* v, uint32_t x) {
    v->push_back(static_cast<uint8_t>(x));
    v->push_back(static_cast<uint8_t>(x >> 8));
  };
  auto le32 = [&](std::vector<uint8_t>* v, uint32_t x) {
    le16(v, x & 0xffff);
    le16(v, x >> 16);
  };
  for (const auto& [name, data] : members) {
    const uint32_t crc =
        static_cast<uint32_t>(crc32(0L, data.data(), static_cast<uInt>(data.size())));
    const uint32_t offset = static_cast<uint32_t>(out.size());
    le32(&out, 0x04034b50);
    le16(&out, 20);
    le16(&out, flags);
    le16(&out, 0);
    le32(&out, 0);
    le32(&out, crc);
    le32(&out, static_cast<uint32_t>(data.size()));
    le32(&out, static_cast<uint32_t>(data.size()));
    le16(&out, static_cast<uint32_t>(name.size()));
    le16(&out, 0);
    out.insert(out.end(), name.begin(), name.end());
    out.insert(out.end(), data.begin(), data.end());
    le32(&central, 0x02014b50);
    le16(&central, 20);
    le16(&central, 20);
    le16(&central, flags);
    le16(&central, 0);
    le32(&central, 0);
    le32(&central, crc);
    le32(&central, static_cast<uint32_t>(data.size()));
    le32(&central, static_cast<uint32_t>(data.size()));
    le16(&central, static_cast<uint32_t>(name.size()));
    for (int i = 0; i < 4; ++i) le16(&central, 0);
    le32(&central, 0);
    le32(&central, offset);
    central.insert(central.end(), name.begin(), name.end());
  }
  const uint32_t cd_offset = static_cast<uint32_t>(out.size());
  out.insert(out.end(), central.begin(), central.end());
  le32(&out, 0x06054b50);
  le16(&out, 0);
  le16(&out, 0);
  le16(&out, static_cast<uint32_t>(members.size()));
  le16(&out, static_cast<uint32_t>(members.size()));
  le32(&out, static_cast<uint32_t>(central.size()));
  le32(&out, cd_offset);
  le16(&out, 0);
  return out;
}

std::string NpzError(const std::vector<uint8_t>& bytes) {
  auto data = ParseNpzDataset("bad.npz", bytes);
  if (data.ok()) return "accepted";
  EXPECT_THAT(data.status().message(), HasSubstr("bad.npz"));
  return std::string(data.status().message());
}

TEST(NpyTest, MalformedNpzIsRefused) {
  const auto x = Npy(Dict("|u1", "(2, 2, 2)"), std::vector<uint8_t>(8, 3));
  const auto y = Npy(Dict("|u1", "(2,)"), {4, 5});
  const auto x3 = Npy(Dict("|u1", "(2, 3, 2)"), std::vector<uint8_t>(12, 3));
  using Members = std::vector<std::pair<std::string, std::vector<uint8_t>>>;
  const Members good = {
      {"x_train.npy", x}, {"y_train.npy", y}, {"x_test.npy", x}, {"y_test.npy", y}};
  auto ok = ParseNpzDataset("good.npz", Zip(good));
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->test.labels, (std::vector<uint8_t>{4, 5}));

  Members missing(good.begin(), good.begin() + 3);
  EXPECT_THAT(NpzError(Zip(missing)), HasSubstr("missing member y_test.npy"));
  Members duplicate = good;
  duplicate.push_back(good[0]);
  EXPECT_THAT(NpzError(Zip(duplicate)), HasSubstr("appears twice"));
  Members unsafe = good;
  unsafe[0].first = "../x_train.npy";
  EXPECT_THAT(NpzError(Zip(unsafe)), HasSubstr("unsafe or nested member name"));
  Members extra = good;
  extra.push_back({"z.npy", y});
  EXPECT_THAT(NpzError(Zip(extra)), HasSubstr("unexpected member 'z.npy'"));
  Members shapes = good;
  shapes[2].second = x3;
  EXPECT_THAT(NpzError(Zip(shapes)), HasSubstr("but test images are"));
  EXPECT_THAT(NpzError(Zip(good, 1)), HasSubstr("encrypted"));
  std::vector<uint8_t> corrupt = Zip(good);
  corrupt[30 + 11 + x.size() - 1] ^= 0xff;  // the last pixel of x_train.npy
  EXPECT_THAT(NpzError(corrupt), HasSubstr("CRC-32 mismatch"));
  std::vector<uint8_t> truncated = Zip(good);
  truncated.resize(truncated.size() - 5);
  EXPECT_THAT(NpzError(truncated), HasSubstr("no end of central directory"));
  std::vector<uint8_t> method = Zip(good);
  method[8] = 12;  // bzip2, in the first local header
  EXPECT_THAT(NpzError(method), HasSubstr("local header disagrees"));
  Members bad_member = good;
  bad_member[1].second.push_back(0);
  EXPECT_THAT(NpzError(Zip(bad_member)), HasSubstr("bad.npz:y_train.npy: 1 trailing bytes"));
}

TEST(NpyTest, StudentTrainerTrainsOnAnNpz) {
  Fixture f = MakeFixture(2000, 500);
  RunPython(f.dir, std::string(kReadIdx) +
                       "np.savez('mnist.npz', x_train=x_train, y_train=y_train,"
                       " x_test=x_test, y_test=y_test)\n");
  const std::string log = f.dir + "/train.log";
  const std::string command = absl::StrCat(
      "OMP_NUM_THREADS=1 ", DISTILLERY_STUDENT_TRAINER_BINARY, " baseline --data=", f.dir,
      "/mnist.npz --epochs=1 --train_range=0:2000 --architecture=784-32-10 --threads=1 > ", log,
      " 2>&1");
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  std::ifstream in(log);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_THAT(text, HasSubstr("2000 training images of (1, 28, 28)"));
  EXPECT_THAT(text, HasSubstr("test errors out of 500"));
}

TEST(NpyTest, DataAndDataDirTogetherAreRefused) {
  Fixture f = MakeFixture(100, 100);
  const std::string log = f.dir + "/both.log";
  const std::string command =
      absl::StrCat("OMP_NUM_THREADS=1 ", DISTILLERY_STUDENT_TRAINER_BINARY,
                   " baseline --data=", f.dir, "/mnist.npz --data_dir=", f.dir,
                   " --epochs=1 --architecture=784-32-10 --threads=1 > ", log, " 2>&1");
  const int status = std::system(command.c_str());
  ASSERT_TRUE(WIFEXITED(status)) << command;
  EXPECT_NE(WEXITSTATUS(status), 0) << command;
  std::ifstream in(log);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_THAT(text, HasSubstr("both name the data: give one of them"));
}

}  // namespace
}  // namespace distillery
