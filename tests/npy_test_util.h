// Helpers shared by npy_test and npz_test: temporary directories, Python
// (NumPy) scripts run in them, and .npy bytes built by hand.
#ifndef DISTILLERY_TESTS_NPY_TEST_UTIL_H_
#define DISTILLERY_TESTS_NPY_TEST_UTIL_H_

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>
#include <vector>

#include "absl/strings/str_cat.h"

namespace distillery {

// The temporary directories made by the tests, removed when they end.
inline std::vector<std::string>& TempDirs() {
  static auto* dirs = new std::vector<std::string>;
  return *dirs;
}
class RemoveTempDirs : public ::testing::Environment {
 public:
  void TearDown() override {
    std::error_code ec;
    for (const std::string& dir : TempDirs()) std::filesystem::remove_all(dir, ec);
  }
};
inline ::testing::Environment* const kRemoveTempDirs =
    ::testing::AddGlobalTestEnvironment(new RemoveTempDirs);

inline std::string MakeTempDir() {
  std::string templ = (std::filesystem::temp_directory_path() / "npy_test_XXXXXX").string();
  const char* dir = mkdtemp(templ.data());
  EXPECT_NE(dir, nullptr);
  TempDirs().push_back(templ);
  return templ;
}

// Runs a Python script (numpy imported as np) in `dir`.
inline void RunPython(const std::string& dir, const std::string& script) {
  const std::string path = dir + "/script.py";
  std::ofstream(path) << "import numpy as np, os\nos.chdir(" << '"' << dir << '"' << ")\n"
                      << script;
  ASSERT_EQ(std::system(("python3 " + path).c_str()), 0) << script;
}

// A .npy file with `dict` as its header (padded, newline-terminated).
inline std::vector<uint8_t> Npy(const std::string& dict, const std::vector<uint8_t>& payload,
                                int major = 1) {
  std::string header = dict;
  const size_t prefix = major == 1 ? 10 : 12;
  while ((prefix + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::vector<uint8_t> bytes = {0x93, 'N', 'U', 'M', 'P', 'Y', static_cast<uint8_t>(major), 0};
  const size_t n = header.size();
  bytes.push_back(static_cast<uint8_t>(n));
  bytes.push_back(static_cast<uint8_t>(n >> 8));
  if (major != 1) bytes.insert(bytes.end(), {0, 0});
  bytes.insert(bytes.end(), header.begin(), header.end());
  bytes.insert(bytes.end(), payload.begin(), payload.end());
  return bytes;
}

inline std::string Dict(const std::string& descr, const std::string& shape, bool fortran = false) {
  return absl::StrCat("{'descr': '", descr, "', 'fortran_order': ", fortran ? "True" : "False",
                      ", 'shape': ", shape, ", }");
}

}  // namespace distillery

#endif  // DISTILLERY_TESTS_NPY_TEST_UTIL_H_
