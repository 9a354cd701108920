#include "common/formats/onnx_export.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/formats/checkpoint.h"
#include "common/nn/network.h"
#include "common/util/file_util.h"
#include "common/util/status_macros.h"

namespace distillery {
namespace {

// Verifies that `checkpoint` describes a network the export supports and
// that its contents are consistent (see BuildOnnxModel).
absl::Status ValidateForExport(const distill::v1::Checkpoint& checkpoint,
                               const OnnxExportOptions& /*options*/) {
  // Layers, tensors, shapes and finiteness: as for any checkpoint.
  RETURN_IF_ERROR(ValidateCheckpoint(checkpoint));
  // It also checks the preprocessing (scale, mean, std).
  return absl::OkStatus();
}

// Appends `values` to `out` as IEEE binary32 little-endian (ONNX raw_data).
void AppendFloatsLittleEndian(const float* values, int64_t count, std::string* out) {
  out->reserve(out->size() + 4 * static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    uint32_t bits;
    std::memcpy(&bits, &values[i], sizeof(bits));
    for (int b = 0; b < 4; ++b) out->push_back(static_cast<char>((bits >> (8 * b)) & 0xFF));
  }
}

void AddFloatInitializer(const std::string& name, std::vector<int64_t> dims, const float* values,
                         int64_t count, onnx::GraphProto* graph) {
  onnx::TensorProto* tensor = graph->add_initializer();
  tensor->set_name(name);
  tensor->set_data_type(onnx::TensorProto::FLOAT);
  for (int64_t d : dims) tensor->add_dims(d);
  AppendFloatsLittleEndian(values, count, tensor->mutable_raw_data());
}

// A float tensor of shape [batch, dims...] with a symbolic batch size.
void SetBatchTensorType(const std::string& name, const Shape& dims, const std::string& doc,
                        onnx::ValueInfoProto* value) {
  value->set_name(name);
  value->set_doc_string(doc);
  onnx::TypeProto::Tensor* tensor = value->mutable_type()->mutable_tensor_type();
  tensor->set_elem_type(onnx::TensorProto::FLOAT);
  tensor->mutable_shape()->add_dim()->set_dim_param("batch");
  for (int64_t d : dims) tensor->mutable_shape()->add_dim()->set_dim_value(d);
}

onnx::NodeProto* AddNode(const std::string& op_type, const std::string& name,
                         std::vector<std::string> inputs, const std::string& output,
                         onnx::GraphProto* graph) {
  onnx::NodeProto* node = graph->add_node();
  node->set_op_type(op_type);
  node->set_name(name);
  for (std::string& input : inputs) node->add_input(std::move(input));
  node->add_output(output);
  return node;
}

void AddIntAttribute(const std::string& name, int64_t value, onnx::NodeProto* node) {
  onnx::AttributeProto* attribute = node->add_attribute();
  attribute->set_name(name);
  attribute->set_type(onnx::AttributeProto::INT);
  attribute->set_i(value);
}

void AddIntsAttribute(const std::string& name, std::vector<int64_t> values, onnx::NodeProto* node) {
  onnx::AttributeProto* attribute = node->add_attribute();
  attribute->set_name(name);
  attribute->set_type(onnx::AttributeProto::INTS);
  for (int64_t v : values) attribute->add_ints(v);
}

void AddFloatAttribute(const std::string& name, float value, onnx::NodeProto* node) {
  onnx::AttributeProto* attribute = node->add_attribute();
  attribute->set_name(name);
  attribute->set_type(onnx::AttributeProto::FLOAT);
  attribute->set_f(value);
}

void AddTensorInitializer(const std::string& name, const Tensor& value, const Shape& dims,
                          onnx::GraphProto* graph) {
  AddFloatInitializer(name, dims, value.data(), value.size(), graph);
}

// Whether the network takes images (batch, channels, rows, cols) rather
// than flat vectors: its first layer that is not dropout is an image layer.
bool TakesImages(const NetworkSpec& spec) {
  for (const LayerSpec& layer : spec.layers) {
    if (layer.kind == LayerSpec::Kind::kDropout) continue;
    using Kind = LayerSpec::Kind;
    const bool elementwise = layer.kind == Kind::kRelu || layer.kind == Kind::kLeakyRelu ||
                             layer.kind == Kind::kSigmoid || layer.kind == Kind::kTanh;
    return layer.kind != Kind::kLinear && !elementwise && spec.input_shape.size() == 3;
  }
  return false;
}

// Appends the nodes of one layer, reading `current` and writing its output
// name back; `params` and `buffers` are the layer's own.
void AddLayerNodes(const LayerSpec& layer, int index, bool last, std::vector<Parameter*> params,
                   std::vector<Buffer> buffers, std::string* current, onnx::GraphProto* graph) {
  using Kind = LayerSpec::Kind;
  const std::string prefix = absl::StrCat("node", index);
  const std::string out = last ? std::string(kOnnxLogitsName) : prefix;
  auto window = [&layer](onnx::NodeProto* node) {
    AddIntsAttribute("kernel_shape", {layer.kernel_rows, layer.kernel_cols}, node);
    AddIntsAttribute("strides", {layer.stride_rows, layer.stride_cols}, node);
    AddIntsAttribute("pads", {layer.pad_rows, layer.pad_cols, layer.pad_rows, layer.pad_cols},
                     node);
  };
  switch (layer.kind) {
    case Kind::kLinear: {
      AddTensorInitializer(params[0]->name, params[0]->value, params[0]->value.shape(), graph);
      AddTensorInitializer(params[1]->name, params[1]->value, {params[1]->value.size()}, graph);
      onnx::NodeProto* gemm = AddNode("Gemm", prefix + ".gemm",
                                      {*current, params[0]->name, params[1]->name}, out, graph);
      AddIntAttribute("transB", 1, gemm);
      break;
    }
    case Kind::kConv2d: {
      AddTensorInitializer(params[0]->name, params[0]->value, params[0]->value.shape(), graph);
      AddTensorInitializer(params[1]->name, params[1]->value, {params[1]->value.size()}, graph);
      onnx::NodeProto* conv = AddNode("Conv", prefix + ".conv",
                                      {*current, params[0]->name, params[1]->name}, out, graph);
      window(conv);
      AddIntsAttribute(
          "dilations",
          {layer.dilation, layer.dilation_cols != 0 ? layer.dilation_cols : layer.dilation}, conv);
      AddIntAttribute("group", layer.groups, conv);
      break;
    }
    case Kind::kMaxPool2d: {
      onnx::NodeProto* pool = AddNode("MaxPool", prefix + ".maxpool", {*current}, out, graph);
      window(pool);
      if (layer.ceil_mode) AddIntAttribute("ceil_mode", 1, pool);
      break;
    }
    case Kind::kAvgPool2d: {
      onnx::NodeProto* pool = AddNode("AveragePool", prefix + ".avgpool", {*current}, out, graph);
      window(pool);
      AddIntAttribute("count_include_pad", layer.count_include_pad ? 1 : 0, pool);
      if (layer.ceil_mode) AddIntAttribute("ceil_mode", 1, pool);
      break;
    }
    case Kind::kBatchNorm: {
      std::vector<std::string> inputs = {*current};
      for (Parameter* p : params) {
        AddTensorInitializer(p->name, p->value, {p->value.size()}, graph);
        inputs.push_back(p->name);
      }
      for (const Buffer& b : buffers) {
        AddTensorInitializer(b.name, *b.value, {b.value->size()}, graph);
        inputs.push_back(b.name);
      }
      AddFloatAttribute("epsilon", kBatchNormEpsilon,
                        AddNode("BatchNormalization", prefix + ".batchnorm", inputs, out, graph));
      break;
    }
    case Kind::kFlatten:
      AddIntAttribute("axis", 1, AddNode("Flatten", prefix + ".flatten", {*current}, out, graph));
      break;
    case Kind::kRelu:
      AddNode("Relu", prefix + ".relu", {*current}, out, graph);
      break;
    case Kind::kLeakyRelu:
      AddFloatAttribute("alpha", layer.alpha,
                        AddNode("LeakyRelu", prefix + ".leakyrelu", {*current}, out, graph));
      break;
    case Kind::kSigmoid:
      AddNode("Sigmoid", prefix + ".sigmoid", {*current}, out, graph);
      break;
    case Kind::kTanh:
      AddNode("Tanh", prefix + ".tanh", {*current}, out, graph);
      break;
    case Kind::kGlobalAvgPool:
      AddNode("GlobalAveragePool", prefix + ".gap", {*current}, out, graph);
      break;
    case Kind::kDropout:
      return;  // the identity at inference: no node
  }
  *current = out;
}

void AddMetadata(const std::string& key, const std::string& value, onnx::ModelProto* model) {
  onnx::StringStringEntryProto* entry = model->add_metadata_props();
  entry->set_key(key);
  entry->set_value(value);
}

// "28x28" or "3x32x32": the image shape as the metadata gives it.
std::string ImageShapeText(const distill::v1::Architecture& arch) {
  return arch.image_channels() > 1
             ? absl::StrCat(arch.image_channels(), "x", arch.image_rows(), "x", arch.image_cols())
             : absl::StrCat(arch.image_rows(), "x", arch.image_cols());
}

// The model's header: opset, producer, and the distillery.* and checkpoint.*
// metadata (see onnx_export.h).
void AddModelHeader(const distill::v1::Checkpoint& checkpoint, const OnnxExportOptions& options,
                    const std::string& architecture, const Preprocessing& preprocessing,
                    onnx::ModelProto* model) {
  const std::string role = checkpoint.role().empty() ? "network" : checkpoint.role();
  model->set_ir_version(kOnnxIrVersion);
  onnx::OperatorSetIdProto* opset = model->add_opset_import();
  opset->set_domain("");
  opset->set_version(kOnnxOpsetVersion);
  model->set_producer_name(kOnnxProducerName);
  model->set_doc_string(absl::StrCat("Distillery ", role, " ", architecture));
  AddMetadata("distillery.role", checkpoint.role(), model);
  AddMetadata("distillery.architecture", architecture, model);
  AddMetadata("distillery.image_shape", ImageShapeText(checkpoint.architecture()), model);
  AddMetadata("distillery.input_scale", absl::StrCat(preprocessing.scale), model);
  if (!preprocessing.mean.empty()) {
    AddMetadata("distillery.input_mean", absl::StrJoin(preprocessing.mean, ","), model);
  }
  if (!preprocessing.std.empty()) {
    AddMetadata("distillery.input_std", absl::StrJoin(preprocessing.std, ","), model);
  }
  AddMetadata("distillery.input", options.scale_input ? "raw pixels" : "scaled pixels", model);
  AddMetadata("distillery.output", options.softmax ? kOnnxProbabilitiesName : kOnnxLogitsName,
              model);
  // The checkpoint's own provenance, in a stable (sorted) order so that the
  // same checkpoint always gives the same bytes.
  std::vector<std::pair<std::string, std::string>> metadata(checkpoint.metadata().begin(),
                                                            checkpoint.metadata().end());
  std::sort(metadata.begin(), metadata.end());
  for (const auto& [key, value] : metadata) AddMetadata("checkpoint." + key, value, model);
}

// The graph's input and output, with their documentation.
void AddGraphInterface(const distill::v1::Checkpoint& checkpoint, const OnnxExportOptions& options,
                       const Network& network, const Preprocessing& preprocessing,
                       onnx::GraphProto* graph) {
  const bool images_in = TakesImages(network.spec());
  const std::string images = absl::StrCat(ImageShapeText(checkpoint.architecture()), " images");
  const std::string layout = images_in ? "planar (channels, rows, cols)" : "flattened row-major";
  SetBatchTensorType(kOnnxInputName,
                     images_in ? network.input_shape() : Shape{network.input_size()},
                     options.scale_input
                         ? absl::StrCat("raw pixel values (0..255) of ", images, ", ", layout)
                         : absl::StrCat("preprocessed pixel values ((pixel x scale - mean) / std, ",
                                        preprocessing.Describe(), ") of ", images, ", ", layout),
                     graph->add_input());
  SetBatchTensorType(options.softmax ? kOnnxProbabilitiesName : kOnnxLogitsName,
                     {network.num_classes()},
                     options.softmax ? "class probabilities, softmax(logits) at T = 1"
                                     : "class logits (softmax at T = 1 gives probabilities)",
                     graph->add_output());
}

// The preprocessing as nodes on raw pixels: x scale, then the per-channel
// mean and std, broadcast over (C, 1, 1) for images or repeated over each
// channel's pixels for a flat input. `*current` names the running tensor.
void AddInputScaling(const Network& network, int image_channels, const Preprocessing& preprocessing,
                     std::string* current, onnx::GraphProto* graph) {
  const float scale = preprocessing.scale;
  AddFloatInitializer("input_scale", {}, &scale, 1, graph);
  AddNode("Mul", "scale_input", {*current, "input_scale"}, "scaled_pixels", graph);
  *current = "scaled_pixels";
  const bool images_in = TakesImages(network.spec());
  const int64_t channels = std::max(1, image_channels);
  const int64_t plane = network.input_size() / channels;
  const Shape dims = images_in ? Shape{channels, 1, 1} : Shape{network.input_size()};
  auto per_channel = [&](bool mean) {
    std::vector<float> values;
    for (int64_t c = 0; c < channels; ++c) {
      const float v = mean ? preprocessing.Mean(c) : preprocessing.Std(c);
      values.insert(values.end(), images_in ? 1 : plane, v);
    }
    return values;
  };
  if (!preprocessing.mean.empty()) {
    const std::vector<float> values = per_channel(true);
    AddFloatInitializer("input_mean", dims, values.data(), static_cast<int64_t>(values.size()),
                        graph);
    AddNode("Sub", "subtract_mean", {*current, "input_mean"}, "centred_pixels", graph);
    *current = "centred_pixels";
  }
  if (!preprocessing.std.empty()) {
    const std::vector<float> values = per_channel(false);
    AddFloatInitializer("input_std", dims, values.data(), static_cast<int64_t>(values.size()),
                        graph);
    AddNode("Div", "divide_std", {*current, "input_std"}, "normalised_pixels", graph);
    *current = "normalised_pixels";
  }
}

// Every layer's nodes, with its parameters and buffers as initializers; the
// last layer that leaves a node writes "logits".
void AddNetworkNodes(Network& network, std::string* current, onnx::GraphProto* graph) {
  const NetworkSpec& spec = network.spec();
  size_t last = spec.layers.size();
  while (last > 0 && spec.layers[last - 1].kind == LayerSpec::Kind::kDropout) --last;
  std::vector<Parameter*> params = network.Parameters();
  std::vector<Buffer> buffers = network.Buffers();
  size_t next_param = 0, next_buffer = 0;
  for (size_t i = 0; i < spec.layers.size(); ++i) {
    const LayerSpec& layer = spec.layers[i];
    const size_t num_params = layer.kind == LayerSpec::Kind::kLinear ||
                                      layer.kind == LayerSpec::Kind::kConv2d ||
                                      layer.kind == LayerSpec::Kind::kBatchNorm
                                  ? 2
                                  : 0;
    const size_t num_buffers = layer.kind == LayerSpec::Kind::kBatchNorm ? 2 : 0;
    AddLayerNodes(layer, static_cast<int>(i), i + 1 == last,
                  {params.begin() + next_param, params.begin() + next_param + num_params},
                  {buffers.begin() + next_buffer, buffers.begin() + next_buffer + num_buffers},
                  current, graph);
    next_param += num_params;
    next_buffer += num_buffers;
  }
}

}  // namespace

absl::StatusOr<onnx::ModelProto> BuildOnnxModel(const distill::v1::Checkpoint& checkpoint,
                                                const OnnxExportOptions& options) {
  RETURN_IF_ERROR(ValidateForExport(checkpoint, options));
  ASSIGN_OR_RETURN(std::unique_ptr<Network> network, NetworkFromCheckpoint(checkpoint));
  const std::string architecture = network->spec().ArchitectureString();
  const Preprocessing preprocessing = *CheckpointPreprocessing(checkpoint);  // validated
  onnx::ModelProto model;
  AddModelHeader(checkpoint, options, architecture, preprocessing, &model);
  onnx::GraphProto* graph = model.mutable_graph();
  const std::string role = checkpoint.role().empty() ? "network" : checkpoint.role();
  graph->set_name(options.graph_name.empty() ? absl::StrCat(role, "_", architecture)
                                             : options.graph_name);
  AddGraphInterface(checkpoint, options, *network, preprocessing, graph);
  std::string current = kOnnxInputName;
  if (options.scale_input) {
    AddInputScaling(*network, checkpoint.architecture().image_channels(), preprocessing, &current,
                    graph);
  }
  AddNetworkNodes(*network, &current, graph);
  if (options.softmax) {
    onnx::NodeProto* softmax =
        AddNode("Softmax", "softmax", {current}, kOnnxProbabilitiesName, graph);
    AddIntAttribute("axis", 1, softmax);
  }
  return model;
}

absl::Status ExportOnnx(const distill::v1::Checkpoint& checkpoint, const OnnxExportOptions& options,
                        const std::string& path) {
  absl::StatusOr<onnx::ModelProto> model = BuildOnnxModel(checkpoint, options);
  if (!model.ok()) return model.status();
  std::string bytes;
  if (!model->SerializeToString(&bytes)) {
    return absl::InternalError(
        absl::StrCat("cannot serialize the ONNX model for ", path, " (over 2 GiB?)"));
  }
  const absl::Status written = WriteFileAtomically(path, {bytes});
  if (!written.ok()) {
    return absl::Status(written.code(), absl::StrCat("ONNX model: ", written.message()));
  }
  return absl::OkStatus();
}

}  // namespace distillery
