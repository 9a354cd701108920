// Checkpoints: a network's architecture and weights (plus the optimizer's
// state when saved during training), stored as a distill.v1.Checkpoint
// protobuf inside a verified frame.
//
// File format (all integers little-endian):
//   offset  0  8 bytes   magic "DSTLCKPT"
//   offset  8  uint32    frame version, kCheckpointFrameVersion
//   offset 12  uint32    CRC-32 (zlib polynomial) of the payload
//   offset 16  uint64    payload length in bytes
//   offset 24  payload   the serialized Checkpoint message
// Files are written to a temporary name in the same directory, fsync'ed and
// renamed over the target, so a crash leaves either the old file or the new
// one, never a torn one.
#ifndef DISTILLERY_COMMON_FORMATS_CHECKPOINT_H_
#define DISTILLERY_COMMON_FORMATS_CHECKPOINT_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "common/data/preprocessing.h"
#include "common/nn/network.h"
#include "common/nn/optimizer.h"
#include "distill/v1/checkpoint.pb.h"

namespace distillery {

inline constexpr char kCheckpointMagic[8] = {'D', 'S', 'T', 'L', 'C', 'K', 'P', 'T'};
inline constexpr uint32_t kCheckpointFrameVersion = 1;
inline constexpr size_t kCheckpointHeaderSize = 24;
// Refuse payloads over 2 GiB (protobuf's own limit) before reading them.
inline constexpr uint64_t kMaxCheckpointPayload = (uint64_t{1} << 31) - 1;

// The payload schema version MakeCheckpoint writes (Checkpoint.format_version):
// 2, a list of typed layers. Version 1 (release 0.1's MLPs) is still read.
inline constexpr uint32_t kCheckpointFormatVersion = 2;

// Builds a checkpoint of `network`'s weights and buffers. `optimizer` may be
// null; when not, its state and `epochs_completed`/`steps_completed`/`seed`
// are included so training can resume.
distill::v1::Checkpoint MakeCheckpoint(Network& network, const std::string& role,
                                       Optimizer* optimizer = nullptr, int64_t epochs_completed = 0,
                                       int64_t steps_completed = 0, uint64_t seed = 0);

// Writes `checkpoint` to `path` atomically (see the format above).
absl::Status SaveCheckpoint(const std::string& path, const distill::v1::Checkpoint& checkpoint);

// Reads and verifies a checkpoint. NotFound when the file is missing;
// DataLoss (the message names the file and the problem) for a wrong magic or
// version, a truncated or overlong file, a CRC mismatch, an unparsable
// payload, or contents that do not describe a valid network (missing or
// misshapen tensors, non-finite weights).
absl::StatusOr<distill::v1::Checkpoint> LoadCheckpoint(const std::string& path);

// The same verification for the bytes of a checkpoint file already in memory
// (LoadCheckpoint reads the file and calls it). `name` is used in error
// messages only, in place of the path.
absl::StatusOr<distill::v1::Checkpoint> DecodeCheckpoint(const std::string& name,
                                                         std::string_view bytes);

// Checks that a parsed checkpoint describes a network that can be built: a
// payload version this release reads (a newer one is refused, naming it), a
// valid architecture whose layers fit its input shape, every parameter and
// buffer present with its exact name and shape, every value finite, a valid preprocessing. DataLoss
// naming the problem otherwise. (LoadCheckpoint already calls it.)
absl::Status ValidateCheckpoint(const distill::v1::Checkpoint& checkpoint);

// The input preprocessing a checkpoint records (common/data/preprocessing.h):
// an absent input_scale reads as 1/255, absent means and stds as 0 and 1.
// DataLoss naming the value for an invalid one (ValidateCheckpoint calls it).
absl::StatusOr<Preprocessing> CheckpointPreprocessing(const distill::v1::Checkpoint& checkpoint);

// Records `preprocessing` in the checkpoint's architecture (MakeCheckpoint
// records the default, pixels / 255, which every network trained here takes).
void SetCheckpointPreprocessing(const Preprocessing& preprocessing,
                                distill::v1::Checkpoint* checkpoint);

// The network a verified checkpoint describes, with its weights.
absl::StatusOr<std::unique_ptr<Network>> NetworkFromCheckpoint(
    const distill::v1::Checkpoint& checkpoint, uint64_t seed = 0);

// Loads the optimizer state of a checkpoint into `optimizer` (which must be
// of the same kind that wrote it) for the parameters of `mlp`.
// FailedPrecondition when the checkpoint holds no training state; DataLoss
// when a state tensor names no parameter of `mlp` or has another shape.
absl::Status RestoreOptimizerState(const distill::v1::Checkpoint& checkpoint, Network& mlp,
                                   Optimizer* optimizer);

// Weight averaging's state (TrainingState.averaged_epochs and
// averaged_parameters): the mean of `network`'s parameters over `epochs`
// epochs, in its parameter order and shapes (`means`). Nothing is written
// when `epochs` is 0.
void SetAveragedParameters(Network& network, const std::vector<Tensor>& means, int64_t epochs,
                           distill::v1::Checkpoint* checkpoint);

// Reads that state back for `network`: `*means` empty and `*epochs` 0 when
// the checkpoint holds none. DataLoss when the tensors are not `network`'s
// parameters (names, shapes, count) or their count disagrees with
// averaged_epochs.
absl::Status RestoreAveragedParameters(const distill::v1::Checkpoint& checkpoint, Network& network,
                                       std::vector<Tensor>* means, int64_t* epochs);

// A human-readable summary of a verified checkpoint: format version, role,
// input shape and preprocessing, the network layer by layer with each
// layer's output shape and parameters, the parameter count, the weights'
// fingerprint, training state and metadata. (`teacher_server inspect` and
// `student_trainer inspect` print it.)
absl::StatusOr<std::string> DescribeCheckpoint(const distill::v1::Checkpoint& checkpoint);

// A 64-bit fingerprint of a network's architecture and exact weight bits,
// printed as 16 hex digits: the teacher's identity on the wire.
std::string WeightsFingerprint(Network& mlp);

}  // namespace distillery

#endif  // DISTILLERY_COMMON_FORMATS_CHECKPOINT_H_
