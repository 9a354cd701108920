// libFuzzer target for the IDX reader (common/idx.h): the input is the bytes
// of an IDX file, decoded both as plain IDX (ParseIdx) and as gzip-compressed
// IDX (ParseGzipIdx, the code ReadIdxFile uses for ".gz" files). Whatever the
// bytes, decoding must return a status without crashing, and an accepted
// array must be as large as its dimensions say.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "common/data/idx.h"

namespace {

// An accepted array: rank 1 to 255, no zero dimension, exactly one byte per
// element.
void CheckAccepted(const distillery::IdxArray& array) {
  if (array.dims.empty() || array.dims.size() > 255) std::abort();
  uint64_t elements = 1;
  for (uint32_t d : array.dims) {
    if (d == 0) std::abort();
    elements *= d;
  }
  if (elements != array.data.size()) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::vector<uint8_t> bytes(data, data + size);
  if (auto plain = distillery::ParseIdx("fuzz", bytes); plain.ok()) CheckAccepted(*plain);
  if (auto gzip = distillery::ParseGzipIdx("fuzz.gz", bytes); gzip.ok()) CheckAccepted(*gzip);
  return 0;
}
