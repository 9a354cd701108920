// The .npy reader (common/data/npy.h): a pickled array written by real NumPy
// at test time is refused; malformed .npy bytes written here are refused with
// their messages; arrays that do not make a data set are refused.
#include "common/data/npy.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/npy_test_util.h"

namespace distillery {
namespace {

using ::testing::HasSubstr;

TEST(NpyTest, PickledObjectArraysAreRefused) {
  const std::string dir = MakeTempDir();
  RunPython(dir,
            "np.save('obj.npy', np.array([{'a': 1}, None], dtype=object), allow_pickle=True)\n");
  auto array = ReadNpyFile(dir + "/obj.npy");
  ASSERT_FALSE(array.ok());
  EXPECT_THAT(array.status().message(), HasSubstr("object array"));
  EXPECT_THAT(array.status().message(), HasSubstr("never unpickled"));
  EXPECT_THAT(array.status().message(), HasSubstr("obj.npy"));
}

std::string ParseError(const std::vector<uint8_t>& bytes) {
  auto array = ParseNpy("bad.npy", bytes);
  if (array.ok()) return "accepted";
  EXPECT_THAT(array.status().message(), HasSubstr("bad.npy"));
  return std::string(array.status().message());
}

TEST(NpyTest, ValidHeadersParse) {
  for (int major : {1, 2, 3}) {
    auto a =
        ParseNpy("ok.npy", Npy(Dict("<i4", "(2,)"), {1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}, major));
    ASSERT_TRUE(a.ok()) << a.status();
    EXPECT_EQ(a->shape, (std::vector<uint64_t>{2}));
    EXPECT_EQ(a->Int(0), 1);
    EXPECT_EQ(a->Int(1), -1);
  }
}

TEST(NpyTest, FortranOrderIsReadIntoCOrder) {
  // (2, 3) in column-major order: 0 3 / 1 4 / 2 5 read down the columns.
  auto small = ParseNpy("f.npy", Npy(Dict("|u1", "(2, 3)", true), {0, 3, 1, 4, 2, 5}));
  ASSERT_TRUE(small.ok()) << small.status();
  EXPECT_EQ(small->data, (std::vector<uint8_t>{0, 1, 2, 3, 4, 5}));
  // Rank 3, two-byte items: the same arrays saved by NumPy in both orders.
  const std::string dir = MakeTempDir();
  RunPython(dir,
            "a = np.arange(2 * 3 * 4, dtype='<i2').reshape(2, 3, 4) * 257 - 1000\n"
            "np.save('c.npy', a)\n"
            "np.save('f.npy', np.asfortranarray(a))\n"
            "assert open('f.npy', 'rb').read().find(b\"'fortran_order': True\") > 0\n");
  auto c_order = ReadNpyFile(dir + "/c.npy");
  auto f_order = ReadNpyFile(dir + "/f.npy");
  ASSERT_TRUE(c_order.ok()) << c_order.status();
  ASSERT_TRUE(f_order.ok()) << f_order.status();
  EXPECT_EQ(f_order->shape, (std::vector<uint64_t>{2, 3, 4}));
  EXPECT_EQ(f_order->data, c_order->data);
  EXPECT_EQ(f_order->Int(5), 5 * 257 - 1000);
}

TEST(NpyTest, MalformedNpyIsRefused) {
  const std::vector<uint8_t> six(6, 1);
  std::vector<uint8_t> bad_magic = Npy(Dict("|u1", "(6,)"), six);
  bad_magic[1] = 'X';
  EXPECT_THAT(ParseError(bad_magic), HasSubstr("wrong magic"));
  std::vector<uint8_t> v4 = Npy(Dict("|u1", "(6,)"), six);
  v4[6] = 4;
  EXPECT_THAT(ParseError(v4), HasSubstr("unsupported .npy version 4.0"));
  std::vector<uint8_t> cut = Npy(Dict("|u1", "(6,)"), six);
  cut.resize(30);
  EXPECT_THAT(ParseError(cut), HasSubstr("truncated header"));
  EXPECT_THAT(ParseError(Npy(Dict("|u1", "(6,)"), {1, 2})), HasSubstr("truncated payload"));
  EXPECT_THAT(ParseError(Npy(Dict("|u1", "(2,)"), {1, 2, 3})), HasSubstr("1 trailing bytes"));
  EXPECT_THAT(ParseError(Npy(Dict(">i4", "(1,)"), {0, 0, 0, 1})), HasSubstr("big-endian"));
  EXPECT_THAT(ParseError(Npy(Dict("<f4", "(1,)"), {0, 0, 0, 0})),
              HasSubstr("only the integer dtypes"));
  EXPECT_THAT(ParseError(Npy(Dict("|O", "(1,)"), {0, 0, 0, 0, 0, 0, 0, 0})),
              HasSubstr("object array"));
  EXPECT_THAT(ParseError(Npy("{'descr': [('a', '<i4')], 'fortran_order': False, 'shape': (1,)}",
                             {0, 0, 0, 0})),
              HasSubstr("structured dtypes"));
  EXPECT_THAT(ParseError(Npy("{'descr': '|u1', 'shape': (6,)}", six)),
              HasSubstr("missing key 'fortran_order'"));
  EXPECT_THAT(
      ParseError(Npy("{'descr': '|u1', 'fortran_order': False, 'shape': (6,), 'x': 1}", six)),
      HasSubstr("unexpected key 'x'"));
  EXPECT_THAT(ParseError(Npy("{'descr': '|u1', 'descr': '|u1', 'fortran_order': False, "
                             "'shape': (6,)}",
                             six)),
              HasSubstr("duplicate key 'descr'"));
  EXPECT_THAT(ParseError(Npy(Dict("|u1", "(6)"), six)), HasSubstr("needs a comma"));
  EXPECT_THAT(ParseError(Npy(Dict("|u1", "(0, 6)"), {})), HasSubstr("is zero"));
  EXPECT_THAT(ParseError(Npy(Dict("|u1", "(65536, 65536)"), {})), HasSubstr("absurd shape"));
  EXPECT_THAT(ParseError(Npy(Dict("|u1", "(6,)") + " x", six)), HasSubstr("malformed"));
}

NpyArray Parsed(const std::string& descr, const std::string& shape,
                const std::vector<uint8_t>& payload) {
  auto a = ParseNpy("x.npy", Npy(Dict(descr, shape), payload));
  EXPECT_TRUE(a.ok()) << a.status();
  return *a;
}

TEST(NpyTest, BadDatasetArraysAreRefused) {
  const NpyArray images = Parsed("|u1", "(2, 2, 2)", std::vector<uint8_t>(8, 7));
  const NpyArray labels = Parsed("<i8", "(2,)", std::vector<uint8_t>(16, 0));
  EXPECT_TRUE(DatasetFromNpy("x", images, "y", &labels).ok());
  const NpyArray wide = Parsed("<u2", "(2, 2, 2)", std::vector<uint8_t>(16, 0));
  EXPECT_THAT(std::string(DatasetFromNpy("x", wide, "y", &labels).status().message()),
              HasSubstr("images must be |u1"));
  const NpyArray flat = Parsed("|u1", "(2, 4)", std::vector<uint8_t>(8, 0));
  EXPECT_THAT(std::string(DatasetFromNpy("x", flat, "y", &labels).status().message()),
              HasSubstr("rank 3"));
  const NpyArray three = Parsed("|u1", "(3,)", {0, 1, 2});
  EXPECT_THAT(std::string(DatasetFromNpy("x", images, "y", &three).status().message()),
              HasSubstr("3 labels, but x has 2 images"));
  const NpyArray big = Parsed("<i4", "(2,)", {1, 0, 0, 0, 10, 0, 0, 0});
  EXPECT_THAT(std::string(DatasetFromNpy("x", images, "y", &big).status().message()),
              HasSubstr("label 10 of example 1 is outside [0, 10)"));
  const NpyArray negative = Parsed("|i1", "(2,)", {0xff, 0});
  EXPECT_THAT(std::string(DatasetFromNpy("x", images, "y", &negative).status().message()),
              HasSubstr("label -1 of example 0"));
  const NpyArray matrix = Parsed("|u1", "(2, 1)", {0, 0});
  EXPECT_THAT(std::string(DatasetFromNpy("x", images, "y", &matrix).status().message()),
              HasSubstr("labels must have rank 1"));
}

}  // namespace
}  // namespace distillery
