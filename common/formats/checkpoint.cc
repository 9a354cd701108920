#include "common/formats/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/util/file_util.h"
#include "common/util/random.h"
#include "common/util/status_macros.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"

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

void FillTensor(const std::string& name, const Tensor& value, distill::v1::Tensor* tensor) {
  tensor->set_name(name);
  for (int64_t d : value.shape()) tensor->add_shape(d);
  tensor->mutable_values()->Assign(value.data(), value.data() + value.size());
}

absl::StatusOr<Tensor> TensorFromProto(const distill::v1::Tensor& tensor) {
  // The product of the shape must equal values_size(), checked by division:
  // the shape comes from the file and its product could overflow.
  int64_t remaining = tensor.values_size();
  bool fits = tensor.shape_size() >= 1 && tensor.shape_size() <= 4 && remaining > 0;
  Shape shape;
  for (int i = 0; fits && i < tensor.shape_size(); ++i) {
    const int64_t d = tensor.shape(i);
    fits = d >= 1 && d <= remaining && remaining % d == 0;
    if (fits) remaining /= d;
    shape.push_back(d);
  }
  if (!fits || remaining != 1) {
    return absl::DataLossError(absl::StrCat("tensor \"", tensor.name(), "\" has ",
                                            tensor.values_size(),
                                            " values, which does not fit its shape"));
  }
  Tensor value(shape);
  for (int i = 0; i < tensor.values_size(); ++i) {
    const float v = tensor.values(i);
    if (!std::isfinite(v)) {
      return absl::DataLossError(
          absl::StrCat("tensor \"", tensor.name(), "\" holds a non-finite value at ", i));
    }
    value.data()[i] = v;
  }
  return value;
}

void FillLayer(const LayerSpec& spec, distill::v1::Layer* layer) {
  layer->set_kind(LayerKindName(spec.kind));
  layer->set_units(spec.units);
  layer->set_kernel_rows(spec.kernel_rows);
  layer->set_kernel_cols(spec.kernel_cols);
  layer->set_stride_rows(spec.stride_rows);
  layer->set_stride_cols(spec.stride_cols);
  layer->set_pad_rows(spec.pad_rows);
  layer->set_pad_cols(spec.pad_cols);
  layer->set_dilation(spec.dilation);
  layer->set_groups(spec.groups);
  layer->set_count_include_pad(spec.count_include_pad);
  layer->set_rate(spec.rate);
  layer->set_seed_salt(spec.seed_salt);
  layer->set_max_norm(spec.max_norm);
  layer->set_alpha(spec.alpha);
  layer->set_ceil_mode(spec.ceil_mode);
  layer->set_dilation_cols(spec.dilation_cols);
}

absl::StatusOr<LayerSpec> LayerFromProto(const distill::v1::Layer& layer) {
  LayerSpec spec;
  ASSIGN_OR_RETURN(spec.kind, LayerKindFromName(layer.kind()));
  spec.units = layer.units();
  spec.kernel_rows = layer.kernel_rows();
  spec.kernel_cols = layer.kernel_cols();
  spec.stride_rows = layer.stride_rows();
  spec.stride_cols = layer.stride_cols();
  spec.pad_rows = layer.pad_rows();
  spec.pad_cols = layer.pad_cols();
  spec.dilation = layer.dilation();
  spec.groups = layer.groups();
  spec.count_include_pad = layer.count_include_pad();
  spec.rate = layer.rate();
  spec.seed_salt = layer.seed_salt();
  spec.max_norm = layer.max_norm();
  spec.alpha = layer.alpha();
  spec.ceil_mode = layer.ceil_mode();
  spec.dilation_cols = layer.dilation_cols();
  return spec;
}

// The network a checkpoint's architecture describes (either format).
absl::StatusOr<NetworkSpec> SpecFromArchitecture(uint32_t format_version,
                                                 const distill::v1::Architecture& arch) {
  const int channels = format_version == 1 ? 1 : arch.image_channels();
  if (channels < 1 || arch.image_rows() < 1 || arch.image_cols() < 1 || channels > 4096 ||
      arch.image_rows() > 65536 || arch.image_cols() > 65536) {
    return absl::InvalidArgumentError(absl::StrCat("invalid input shape ", channels, "x",
                                                   arch.image_rows(), "x", arch.image_cols()));
  }
  const Shape input = {channels, arch.image_rows(), arch.image_cols()};
  if (format_version == 1) {
    if (arch.activation() != "relu") {
      return absl::InvalidArgumentError(
          absl::StrCat("unsupported activation \"", arch.activation(), "\""));
    }
    return NetworkSpec::Parse(absl::StrJoin(arch.layer_sizes(), "-"), input, arch.input_dropout(),
                              arch.hidden_dropout());
  }
  NetworkSpec spec;
  spec.input_shape = input;
  spec.mlp_form = arch.mlp_form();
  for (const distill::v1::Layer& layer : arch.layers()) {
    ASSIGN_OR_RETURN(LayerSpec layer_spec, LayerFromProto(layer));
    spec.layers.push_back(layer_spec);
  }
  return spec;
}

// Checks that `stored` are exactly `expected`'s names and shapes, in order.
absl::Status CheckTensors(const char* what,
                          const google::protobuf::RepeatedPtrField<distill::v1::Tensor>& stored,
                          const std::vector<std::pair<std::string, const Tensor*>>& expected) {
  if (static_cast<size_t>(stored.size()) != expected.size()) {
    return absl::DataLossError(absl::StrCat("the network needs ", expected.size(), " ", what,
                                            " tensors, found ", stored.size()));
  }
  for (size_t i = 0; i < expected.size(); ++i) {
    const distill::v1::Tensor& tensor = stored[static_cast<int>(i)];
    const Shape shape(tensor.shape().begin(), tensor.shape().end());
    if (tensor.name() != expected[i].first || shape != expected[i].second->shape()) {
      return absl::DataLossError(absl::StrCat(
          what, " tensor ", i, " (\"", tensor.name(), "\" ", ShapeString(shape), ") is not ",
          expected[i].first, " of shape ", ShapeString(expected[i].second->shape())));
    }
    RETURN_IF_ERROR(TensorFromProto(tensor).status());
  }
  return absl::OkStatus();
}

// Builds the checkpoint's network with fresh weights; DataLoss naming the
// problem when the architecture is invalid.
absl::StatusOr<std::unique_ptr<Network>> BuildNetwork(const distill::v1::Checkpoint& checkpoint,
                                                      uint64_t seed) {
  const uint32_t version = checkpoint.format_version();
  if (version < 1 || version > kCheckpointFormatVersion) {
    return absl::DataLossError(absl::StrCat(
        "format version ", version, " is not one this release reads (1 to ",
        kCheckpointFormatVersion,
        version > kCheckpointFormatVersion ? "; it was written by a newer release)" : ")"));
  }
  absl::StatusOr<NetworkSpec> spec = SpecFromArchitecture(version, checkpoint.architecture());
  absl::StatusOr<std::unique_ptr<Network>> network =
      spec.ok() ? Network::Create(*spec, seed) : spec.status();
  if (!network.ok()) {
    return absl::DataLossError(absl::StrCat("invalid architecture: ", network.status().message()));
  }
  return network;
}

std::vector<std::pair<std::string, const Tensor*>> Named(Network& network) {
  std::vector<std::pair<std::string, const Tensor*>> named;
  for (Parameter* p : network.Parameters()) named.emplace_back(p->name, &p->value);
  return named;
}

std::vector<std::pair<std::string, const Tensor*>> NamedBuffers(Network& network) {
  std::vector<std::pair<std::string, const Tensor*>> named;
  for (const Buffer& b : network.Buffers()) named.emplace_back(b.name, b.value);
  return named;
}

}  // namespace

absl::Status ValidateCheckpoint(const distill::v1::Checkpoint& checkpoint) {
  ASSIGN_OR_RETURN(std::unique_ptr<Network> network, BuildNetwork(checkpoint, 0));
  RETURN_IF_ERROR(CheckTensors("parameter", checkpoint.parameters(), Named(*network)));
  RETURN_IF_ERROR(CheckTensors("buffer", checkpoint.buffers(), NamedBuffers(*network)));
  for (const distill::v1::Tensor& tensor : checkpoint.training_state().optimizer_state()) {
    RETURN_IF_ERROR(TensorFromProto(tensor).status());
  }
  if (!checkpoint.training_state().averaged_parameters().empty()) {
    RETURN_IF_ERROR(CheckTensors(
        "averaged parameter", checkpoint.training_state().averaged_parameters(), Named(*network)));
  }
  return CheckpointPreprocessing(checkpoint).status();
}

absl::StatusOr<Preprocessing> CheckpointPreprocessing(const distill::v1::Checkpoint& checkpoint) {
  const distill::v1::Architecture& arch = checkpoint.architecture();
  Preprocessing p;
  if (arch.has_input_scale()) p.scale = arch.input_scale();
  p.mean.assign(arch.input_mean().begin(), arch.input_mean().end());
  p.std.assign(arch.input_std().begin(), arch.input_std().end());
  const int64_t channels =
      checkpoint.format_version() >= 2 ? std::max(1, arch.image_channels()) : 1;
  if (absl::Status s = p.Validate(channels); !s.ok()) {
    return absl::DataLossError(absl::StrCat("invalid preprocessing: ", s.message()));
  }
  return p;
}

void SetCheckpointPreprocessing(const Preprocessing& preprocessing,
                                distill::v1::Checkpoint* checkpoint) {
  distill::v1::Architecture* arch = checkpoint->mutable_architecture();
  arch->set_input_scale(preprocessing.scale);
  arch->clear_input_mean();
  arch->clear_input_std();
  for (float m : preprocessing.mean) arch->add_input_mean(m);
  for (float s : preprocessing.std) arch->add_input_std(s);
}

distill::v1::Checkpoint MakeCheckpoint(Network& network, const std::string& role,
                                       Optimizer* optimizer, int64_t epochs_completed,
                                       int64_t steps_completed, uint64_t seed) {
  distill::v1::Checkpoint checkpoint;
  checkpoint.set_format_version(kCheckpointFormatVersion);
  checkpoint.set_role(role);
  distill::v1::Architecture* arch = checkpoint.mutable_architecture();
  const NetworkSpec& spec = network.spec();
  for (const LayerSpec& layer : spec.layers) FillLayer(layer, arch->add_layers());
  arch->set_mlp_form(spec.mlp_form);
  // The input is (channels, rows, cols); a vector input reads as 1 x 1 x n.
  const Shape& in = spec.input_shape;
  arch->set_image_channels(in.size() == 3 ? static_cast<int32_t>(in[0]) : 1);
  arch->set_image_rows(in.size() == 3 ? static_cast<int32_t>(in[1]) : 1);
  arch->set_image_cols(static_cast<int32_t>(in.back()));
  // What the trainer feeds every network (GatherBatch): pixels / 255.
  SetCheckpointPreprocessing(Preprocessing(), &checkpoint);
  for (Parameter* p : network.Parameters()) {
    FillTensor(p->name, p->value, checkpoint.add_parameters());
  }
  for (const Buffer& b : network.Buffers()) FillTensor(b.name, *b.value, checkpoint.add_buffers());
  if (optimizer != nullptr) {
    distill::v1::TrainingState* state = checkpoint.mutable_training_state();
    state->set_epochs_completed(epochs_completed);
    state->set_steps_completed(steps_completed);
    state->set_optimizer(optimizer->Describe());
    state->set_seed(seed);
    for (const auto& [name, value] : optimizer->State()) {
      FillTensor(name, *value, state->add_optimizer_state());
    }
  }
  return checkpoint;
}

absl::Status SaveCheckpoint(const std::string& path, const distill::v1::Checkpoint& checkpoint) {
  // Deterministic: the settings and metadata maps in key order, so that the
  // same run writes the same bytes.
  std::string payload;
  bool serialized = false;
  {
    google::protobuf::io::StringOutputStream stream(&payload);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    serialized = checkpoint.SerializeToCodedStream(&coded) && !coded.HadError();
  }
  if (!serialized) {
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

absl::StatusOr<std::unique_ptr<Network>> NetworkFromCheckpoint(
    const distill::v1::Checkpoint& checkpoint, uint64_t seed) {
  ASSIGN_OR_RETURN(std::unique_ptr<Network> network, BuildNetwork(checkpoint, seed));
  RETURN_IF_ERROR(CheckTensors("parameter", checkpoint.parameters(), Named(*network)));
  RETURN_IF_ERROR(CheckTensors("buffer", checkpoint.buffers(), NamedBuffers(*network)));
  std::vector<Parameter*> params = network->Parameters();
  for (size_t i = 0; i < params.size(); ++i) {
    ASSIGN_OR_RETURN(params[i]->value, TensorFromProto(checkpoint.parameters(static_cast<int>(i))));
  }
  std::vector<Buffer> buffers = network->Buffers();
  for (size_t i = 0; i < buffers.size(); ++i) {
    ASSIGN_OR_RETURN(*buffers[i].value, TensorFromProto(checkpoint.buffers(static_cast<int>(i))));
  }
  return network;
}

absl::Status RestoreOptimizerState(const distill::v1::Checkpoint& checkpoint, Network& mlp,
                                   Optimizer* optimizer) {
  if (!checkpoint.has_training_state()) {
    return absl::FailedPreconditionError("the checkpoint holds no training state to resume from");
  }
  std::map<std::string, const Tensor*> shapes;
  for (Parameter* p : mlp.Parameters()) shapes[p->name] = &p->value;
  std::map<std::string, Tensor> state;
  for (const distill::v1::Tensor& tensor : checkpoint.training_state().optimizer_state()) {
    absl::StatusOr<Tensor> value = TensorFromProto(tensor);
    if (!value.ok()) return value.status();
    const std::string::size_type dot = tensor.name().find_last_of('.');
    auto it = shapes.find(tensor.name().substr(0, dot == std::string::npos ? 0 : dot));
    if (it == shapes.end() || it->second->shape() != value->shape()) {
      return absl::DataLossError(absl::StrCat("optimizer state \"", tensor.name(),
                                              "\" does not match any parameter of the network"));
    }
    state[tensor.name()] = *std::move(value);
  }
  optimizer->RestoreState(std::move(state));
  return absl::OkStatus();
}

void SetAveragedParameters(Network& network, const std::vector<Tensor>& means, int64_t epochs,
                           distill::v1::Checkpoint* checkpoint) {
  if (epochs == 0) return;
  distill::v1::TrainingState* state = checkpoint->mutable_training_state();
  state->set_averaged_epochs(static_cast<int32_t>(epochs));
  const std::vector<std::pair<std::string, const Tensor*>> named = Named(network);
  for (size_t i = 0; i < named.size() && i < means.size(); ++i) {
    FillTensor(named[i].first, means[i], state->add_averaged_parameters());
  }
}

absl::Status RestoreAveragedParameters(const distill::v1::Checkpoint& checkpoint, Network& network,
                                       std::vector<Tensor>* means, int64_t* epochs) {
  means->clear();
  *epochs = 0;
  const distill::v1::TrainingState& state = checkpoint.training_state();
  if (state.averaged_epochs() == 0 && state.averaged_parameters().empty()) {
    return absl::OkStatus();
  }
  if (state.averaged_epochs() <= 0 || state.averaged_parameters().empty()) {
    return absl::DataLossError(absl::StrCat("the checkpoint's weight average covers ",
                                            state.averaged_epochs(), " epochs with ",
                                            state.averaged_parameters_size(), " tensors"));
  }
  RETURN_IF_ERROR(CheckTensors("averaged parameter", state.averaged_parameters(), Named(network)));
  for (const distill::v1::Tensor& tensor : state.averaged_parameters()) {
    ASSIGN_OR_RETURN(Tensor mean, TensorFromProto(tensor));
    means->push_back(std::move(mean));
  }
  *epochs = state.averaged_epochs();
  return absl::OkStatus();
}

absl::StatusOr<std::string> DescribeCheckpoint(const distill::v1::Checkpoint& checkpoint) {
  ASSIGN_OR_RETURN(std::unique_ptr<Network> network, NetworkFromCheckpoint(checkpoint));
  ASSIGN_OR_RETURN(Preprocessing preprocessing, CheckpointPreprocessing(checkpoint));
  std::string out = absl::StrCat("format version:  ", checkpoint.format_version(),
                                 checkpoint.format_version() == 1 ? " (release 0.1, MLP)" : "",
                                 "\nrole:            ", checkpoint.role(),
                                 "\narchitecture:    ", network->spec().ArchitectureString(),
                                 "\ninput shape:     ", ShapeString(network->input_shape()),
                                 " (channels, rows, cols)\npreprocessing:   (pixel x scale - "
                                 "mean) / std: ",
                                 preprocessing.Describe(), "\nlayers:\n");
  std::vector<Parameter*> params = network->Parameters();
  const std::vector<Shape>& shapes = network->layer_shapes();
  const std::vector<std::string> layers = absl::StrSplit(network->Describe(), " -> ");
  for (size_t i = 0; i < layers.size(); ++i) {
    absl::StrAppendFormat(&out, "  %2d  %-40s -> %s\n", i + 1, layers[i], ShapeString(shapes[i]));
  }
  absl::StrAppend(&out, "parameters:      ", network->ParameterCount(), " in ", params.size(),
                  " tensors, ", network->Buffers().size(), " buffers\n");
  absl::StrAppend(&out, "multiply-adds:   ", network->ForwardMacsPerExample(), " per example\n");
  absl::StrAppend(&out, "weights hash:    ", WeightsFingerprint(*network), "\n");
  if (checkpoint.has_training_state()) {
    const distill::v1::TrainingState& state = checkpoint.training_state();
    absl::StrAppend(&out, "training state:  ", state.epochs_completed(), " epochs, ",
                    state.steps_completed(), " steps, seed ", state.seed(), ", ", state.optimizer(),
                    ", precision ", state.precision().empty() ? "f32" : state.precision(), "\n");
  }
  std::vector<std::pair<std::string, std::string>> metadata(checkpoint.metadata().begin(),
                                                            checkpoint.metadata().end());
  std::sort(metadata.begin(), metadata.end());
  for (const auto& [key, value] : metadata)
    absl::StrAppend(&out, "metadata:        ", key, " = ", value, "\n");
  return out;
}

std::string WeightsFingerprint(Network& network) {
  uint64_t hash = SplitMix64(0x44697374696C6CULL);  // "Distill"
  const NetworkSpec& spec = network.spec();
  if (spec.mlp_form) {
    // Release 0.1's hash of an MLP: its units per layer, then the weights.
    for (int64_t size : spec.MlpLayerSizes()) hash = HashCombine(hash, static_cast<uint64_t>(size));
  } else {
    for (int64_t d : spec.input_shape) hash = HashCombine(hash, static_cast<uint64_t>(d));
    for (char c : spec.ArchitectureString()) hash = HashCombine(hash, static_cast<uint8_t>(c));
  }
  auto add = [&hash](const Tensor& value) {
    const float* v = value.data();
    for (int64_t i = 0; i < value.size(); ++i) {
      uint32_t bits;
      std::memcpy(&bits, &v[i], sizeof(bits));
      hash = HashCombine(hash, bits);
    }
  };
  for (Parameter* p : network.Parameters()) add(p->value);
  for (const Buffer& b : network.Buffers()) add(*b.value);
  return absl::StrFormat("%016x", hash);
}

}  // namespace distillery
