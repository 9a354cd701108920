// libFuzzer target for the NumPy readers (common/data/npy.h and npz.h): the
// input is decoded both as a .npy file (ParseNpy) and as an .npz archive
// (ParseNpzDataset, which runs ParseZip, ParseNpy on each member and
// DatasetFromNpy). Whatever the bytes, decoding must return a status without
// crashing, and what is accepted must be as large as its shape says.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "common/data/npy.h"
#include "common/data/npz.h"

namespace {

void CheckAccepted(const distillery::NpyArray& array) {
  uint64_t elements = 1;
  for (uint64_t d : array.shape) {
    if (d == 0) std::abort();
    elements *= d;
  }
  if (elements * static_cast<uint64_t>(array.item_bytes) != array.data.size()) std::abort();
  for (uint64_t i = 0; i < elements; ++i) (void)array.Int(i);
}

void CheckAccepted(const distillery::Dataset& data) {
  if (data.pixels.size() != static_cast<size_t>(data.num_examples * data.input_size())) {
    std::abort();
  }
  if (data.labels.size() != static_cast<size_t>(data.num_examples)) std::abort();
  for (uint8_t label : data.labels) {
    if (label >= data.num_classes) std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::vector<uint8_t> bytes(data, data + size);
  if (auto npy = distillery::ParseNpy("fuzz.npy", bytes); npy.ok()) CheckAccepted(*npy);
  if (auto npz = distillery::ParseNpzDataset("fuzz.npz", bytes); npz.ok()) {
    CheckAccepted(npz->train);
    CheckAccepted(npz->test);
  }
  return 0;
}
