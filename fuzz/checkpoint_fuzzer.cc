// libFuzzer target for the checkpoint loader (common/checkpoint.h). The input
// is the bytes of a checkpoint file:
//  1. DecodeCheckpoint (what LoadCheckpoint runs on a file's bytes) checks the
//     frame as it is: magic, version, CRC, length.
//  2. Mutated bytes almost never keep a valid CRC, which would stop the fuzzer
//     at the frame. So when the input starts with the magic, its CRC and
//     length fields are recomputed for the bytes after the header and it is
//     decoded again: that reaches the protobuf parser and ValidateCheckpoint.
// A checkpoint that passes must build its network (NetworkFromCheckpoint) and
// restore its optimizer state, if any, into an optimizer of its kind.
#include <zlib.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "common/formats/checkpoint.h"
#include "common/nn/optimizer.h"

namespace {

void PutLittleEndian(uint64_t value, int bytes, char* out) {
  for (int i = 0; i < bytes; ++i) out[i] = static_cast<char>((value >> (8 * i)) & 0xFF);
}

void CheckAccepted(const distill::v1::Checkpoint& checkpoint) {
  if (!distillery::ValidateCheckpoint(checkpoint).ok()) std::abort();
  absl::StatusOr<std::unique_ptr<distillery::Network>> mlp =
      distillery::NetworkFromCheckpoint(checkpoint);
  if (!mlp.ok()) std::abort();  // validated, so it must build
  distillery::WeightsFingerprint(**mlp);
  if (checkpoint.has_training_state()) {
    const std::string& kind = checkpoint.training_state().optimizer();
    std::unique_ptr<distillery::Optimizer> optimizer =
        kind.rfind("Adam", 0) == 0 ? distillery::MakeAdam({}) : distillery::MakeSgd({});
    // May refuse (state of another network), must not crash.
    (void)distillery::RestoreOptimizerState(checkpoint, **mlp, optimizer.get());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string bytes(reinterpret_cast<const char*>(data), size);
  if (auto decoded = distillery::DecodeCheckpoint("fuzz", bytes); decoded.ok()) {
    CheckAccepted(*decoded);
  }
  if (size < distillery::kCheckpointHeaderSize ||
      std::memcmp(data, distillery::kCheckpointMagic, sizeof(distillery::kCheckpointMagic)) != 0) {
    return 0;
  }
  const size_t length = size - distillery::kCheckpointHeaderSize;
  const uLong crc = crc32(0L, data + distillery::kCheckpointHeaderSize, static_cast<uInt>(length));
  PutLittleEndian(crc, 4, &bytes[12]);
  PutLittleEndian(length, 8, &bytes[16]);
  if (auto decoded = distillery::DecodeCheckpoint("fuzz", bytes); decoded.ok()) {
    CheckAccepted(*decoded);
  }
  return 0;
}
