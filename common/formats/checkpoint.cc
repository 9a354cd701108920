#include "common/formats/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/util/file_util.h"
#include "common/util/random.h"

namespace distillery {
namespace {

void PutLittleEndian(uint64_t value, int bytes, std::string* out) {
  for (int i = 0; i < bytes; ++i) out->push_back(static_cast<char>((value >> (8 * i)) & 0xFF));
}

uint64_t GetLittleEndian(const unsigned char* p, int bytes) {
  uint64_t value = 0;
  for (int i = 0; i < bytes; ++i) value |= uint64_t{p[i]} << (8 * i);
  return value;
}

void FillTensor(const std::string& name, const Tensor& matrix, distill::v1::Tensor* tensor) {
  tensor->set_name(name);
  tensor->add_shape(matrix.rows());
  tensor->add_shape(matrix.cols());
  tensor->mutable_values()->Assign(matrix.data(), matrix.data() + matrix.size());
}

absl::StatusOr<Tensor> TensorToMatrix(const distill::v1::Tensor& tensor) {
  // shape(0) * shape(1) == values_size(), without multiplying: the shape comes
  // from the file and its product could overflow.
  const int64_t values = tensor.values_size();
  if (tensor.shape_size() != 2 || tensor.shape(0) < 1 || tensor.shape(1) < 1 ||
      tensor.shape(0) > values || values % tensor.shape(0) != 0 ||
      tensor.shape(1) != values / tensor.shape(0)) {
    return absl::DataLossError(absl::StrCat("tensor \"", tensor.name(), "\" has ",
                                            tensor.values_size(),
                                            " values, which does not fit its shape"));
  }
  Tensor matrix(tensor.shape(0), tensor.shape(1));
  for (int i = 0; i < tensor.values_size(); ++i) {
    const float v = tensor.values(i);
    if (!std::isfinite(v)) {
      return absl::DataLossError(
          absl::StrCat("tensor \"", tensor.name(), "\" holds a non-finite value at ", i));
    }
    matrix.data()[i] = v;
  }
  return matrix;
}

MlpSpec SpecOf(const distill::v1::Architecture& arch) {
  MlpSpec spec;
  spec.layer_sizes.assign(arch.layer_sizes().begin(), arch.layer_sizes().end());
  spec.input_dropout = arch.input_dropout();
  spec.hidden_dropout = arch.hidden_dropout();
  return spec;
}

}  // namespace

absl::Status ValidateCheckpoint(const distill::v1::Checkpoint& checkpoint) {
  if (checkpoint.format_version() != 1) {
    return absl::DataLossError(
        absl::StrCat("unsupported payload version ", checkpoint.format_version()));
  }
  const MlpSpec spec = SpecOf(checkpoint.architecture());
  if (absl::Status s = spec.Validate(); !s.ok()) {
    return absl::DataLossError(absl::StrCat("invalid architecture: ", s.message()));
  }
  if (checkpoint.architecture().activation() != "relu") {
    return absl::DataLossError(
        absl::StrCat("unsupported activation \"", checkpoint.architecture().activation(), "\""));
  }
  const size_t layers = spec.layer_sizes.size() - 1;
  if (static_cast<size_t>(checkpoint.parameters_size()) != 2 * layers) {
    return absl::DataLossError(absl::StrCat("architecture ", spec.ArchitectureString(), " needs ",
                                            2 * layers, " tensors, found ",
                                            checkpoint.parameters_size()));
  }
  for (size_t i = 0; i < layers; ++i) {
    const int64_t rows = spec.layer_sizes[i + 1], cols = spec.layer_sizes[i];
    const auto& weight = checkpoint.parameters(2 * i);
    const auto& bias = checkpoint.parameters(2 * i + 1);
    if (weight.name() != absl::StrCat("layer", i, ".weight") || weight.shape_size() != 2 ||
        weight.shape(0) != rows || weight.shape(1) != cols) {
      return absl::DataLossError(absl::StrCat("tensor ", 2 * i, " (\"", weight.name(),
                                              "\") is not layer", i, ".weight of shape ", rows, "x",
                                              cols));
    }
    if (bias.name() != absl::StrCat("layer", i, ".bias") || bias.shape_size() != 2 ||
        bias.shape(0) != 1 || bias.shape(1) != rows) {
      return absl::DataLossError(absl::StrCat("tensor ", 2 * i + 1, " (\"", bias.name(),
                                              "\") is not layer", i, ".bias of shape 1x", rows));
    }
  }
  // Every tensor must hold exactly its shape's worth of finite values.
  for (const distill::v1::Tensor& tensor : checkpoint.parameters()) {
    if (absl::StatusOr<Tensor> m = TensorToMatrix(tensor); !m.ok()) return m.status();
  }
  for (const distill::v1::Tensor& tensor : checkpoint.training_state().optimizer_state()) {
    if (absl::StatusOr<Tensor> m = TensorToMatrix(tensor); !m.ok()) return m.status();
  }
  return absl::OkStatus();
}

distill::v1::Checkpoint MakeCheckpoint(Mlp& mlp, const std::string& role, int image_rows,
                                       int image_cols, Optimizer* optimizer,
                                       int64_t epochs_completed, int64_t steps_completed,
                                       uint64_t seed) {
  distill::v1::Checkpoint checkpoint;
  checkpoint.set_format_version(1);
  checkpoint.set_role(role);
  distill::v1::Architecture* arch = checkpoint.mutable_architecture();
  for (int64_t size : mlp.spec().layer_sizes) arch->add_layer_sizes(size);
  arch->set_activation("relu");
  arch->set_input_dropout(mlp.spec().input_dropout);
  arch->set_hidden_dropout(mlp.spec().hidden_dropout);
  arch->set_image_rows(image_rows);
  arch->set_image_cols(image_cols);
  arch->set_input_scale(1.f / 255.f);
  for (Parameter* p : mlp.Parameters()) FillTensor(p->name, p->value, checkpoint.add_parameters());
  if (optimizer != nullptr) {
    distill::v1::TrainingState* state = checkpoint.mutable_training_state();
    state->set_epochs_completed(epochs_completed);
    state->set_steps_completed(steps_completed);
    state->set_optimizer(optimizer->Describe());
    state->set_seed(seed);
    for (const auto& [name, matrix] : optimizer->State()) {
      FillTensor(name, *matrix, state->add_optimizer_state());
    }
  }
  return checkpoint;
}

absl::Status SaveCheckpoint(const std::string& path, const distill::v1::Checkpoint& checkpoint) {
  std::string payload;
  if (!checkpoint.SerializeToString(&payload)) {
    return absl::InternalError(absl::StrCat("cannot serialize the checkpoint for ", path));
  }
  std::string frame(kCheckpointMagic, sizeof(kCheckpointMagic));
  PutLittleEndian(kCheckpointFrameVersion, 4, &frame);
  const uLong crc = crc32(0L, reinterpret_cast<const Bytef*>(payload.data()), payload.size());
  PutLittleEndian(crc, 4, &frame);
  PutLittleEndian(payload.size(), 8, &frame);

  const absl::Status written = WriteFileAtomically(path, {frame, payload});
  if (!written.ok()) {
    return absl::Status(written.code(), absl::StrCat("checkpoint: ", written.message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<distill::v1::Checkpoint> LoadCheckpoint(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) return absl::NotFoundError(absl::StrCat("cannot open checkpoint ", path));
  const std::string bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  return DecodeCheckpoint(path, bytes);
}

absl::StatusOr<distill::v1::Checkpoint> DecodeCheckpoint(const std::string& name,
                                                         std::string_view file_bytes) {
  const auto* bytes = reinterpret_cast<const unsigned char*>(file_bytes.data());
  const size_t size = file_bytes.size();
  auto fail = [&name](const std::string& problem) {
    return absl::DataLossError(absl::StrCat("checkpoint ", name, ": ", problem));
  };
  if (size < kCheckpointHeaderSize) {
    return fail(absl::StrCat("truncated: ", size, " bytes, shorter than the header"));
  }
  if (std::memcmp(bytes, kCheckpointMagic, sizeof(kCheckpointMagic)) != 0) {
    return fail("not a Distillery checkpoint (wrong magic)");
  }
  const uint64_t version = GetLittleEndian(bytes + 8, 4);
  if (version != kCheckpointFrameVersion) {
    return fail(absl::StrCat("unsupported frame version ", version));
  }
  const uint64_t expected_crc = GetLittleEndian(bytes + 12, 4);
  const uint64_t length = GetLittleEndian(bytes + 16, 8);
  const uint64_t available = size - kCheckpointHeaderSize;
  if (length > kMaxCheckpointPayload) return fail(absl::StrCat("absurd payload length ", length));
  if (length > available) {
    return fail(absl::StrCat("truncated: header promises ", length, " payload bytes, file has ",
                             available));
  }
  if (length < available) {
    return fail(absl::StrCat(available - length, " unexpected bytes after the payload"));
  }
  const unsigned char* payload = bytes + kCheckpointHeaderSize;
  const uLong crc = crc32(0L, payload, static_cast<uInt>(length));
  if (crc != expected_crc) {
    return fail(absl::StrFormat("CRC mismatch (stored %08x, computed %08x): the file is corrupt",
                                expected_crc, crc));
  }
  distill::v1::Checkpoint checkpoint;
  if (!checkpoint.ParseFromArray(payload, static_cast<int>(length))) {
    return fail("payload does not parse as distill.v1.Checkpoint");
  }
  if (absl::Status s = ValidateCheckpoint(checkpoint); !s.ok())
    return fail(std::string(s.message()));
  return checkpoint;
}

absl::StatusOr<std::unique_ptr<Mlp>> MlpFromCheckpoint(const distill::v1::Checkpoint& checkpoint,
                                                       uint64_t seed) {
  if (absl::Status s = ValidateCheckpoint(checkpoint); !s.ok()) return s;
  absl::StatusOr<std::unique_ptr<Mlp>> mlp = Mlp::Create(SpecOf(checkpoint.architecture()), seed);
  if (!mlp.ok()) return mlp.status();
  std::vector<Parameter*> params = (*mlp)->Parameters();
  for (size_t i = 0; i < params.size(); ++i) {
    absl::StatusOr<Tensor> value = TensorToMatrix(checkpoint.parameters(static_cast<int>(i)));
    if (!value.ok()) return value.status();
    params[i]->value = *std::move(value);
  }
  return mlp;
}

absl::Status RestoreOptimizerState(const distill::v1::Checkpoint& checkpoint, Mlp& mlp,
                                   Optimizer* optimizer) {
  if (!checkpoint.has_training_state()) {
    return absl::FailedPreconditionError("the checkpoint holds no training state to resume from");
  }
  std::map<std::string, const Tensor*> shapes;
  for (Parameter* p : mlp.Parameters()) shapes[p->name] = &p->value;
  std::map<std::string, Tensor> state;
  for (const distill::v1::Tensor& tensor : checkpoint.training_state().optimizer_state()) {
    absl::StatusOr<Tensor> value = TensorToMatrix(tensor);
    if (!value.ok()) return value.status();
    const std::string::size_type dot = tensor.name().find_last_of('.');
    auto it = shapes.find(tensor.name().substr(0, dot == std::string::npos ? 0 : dot));
    if (it == shapes.end() || it->second->rows() != value->rows() ||
        it->second->cols() != value->cols()) {
      return absl::DataLossError(absl::StrCat("optimizer state \"", tensor.name(),
                                              "\" does not match any parameter of the network"));
    }
    state[tensor.name()] = *std::move(value);
  }
  optimizer->RestoreState(std::move(state));
  return absl::OkStatus();
}

std::string WeightsFingerprint(Mlp& mlp) {
  uint64_t hash = SplitMix64(0x44697374696C6CULL);  // "Distill"
  for (int64_t size : mlp.spec().layer_sizes) hash = HashCombine(hash, static_cast<uint64_t>(size));
  for (Parameter* p : mlp.Parameters()) {
    const float* v = p->value.data();
    for (int64_t i = 0; i < p->value.size(); ++i) {
      uint32_t bits;
      std::memcpy(&bits, &v[i], sizeof(bits));
      hash = HashCombine(hash, bits);
    }
  }
  return absl::StrFormat("%016x", hash);
}

}  // namespace distillery
