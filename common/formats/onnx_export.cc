#include "common/formats/onnx_export.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/formats/checkpoint.h"
#include "common/nn/mlp.h"
#include "common/util/file_util.h"

namespace distillery {
namespace {

// Verifies that `checkpoint` describes a network the export supports and
// that its contents are consistent (see BuildOnnxModel).
absl::Status ValidateForExport(const distill::v1::Checkpoint& checkpoint,
                               const OnnxExportOptions& options) {
  if (checkpoint.format_version() != 1) {
    return absl::InvalidArgumentError(absl::StrCat("unsupported checkpoint payload version ",
                                                   checkpoint.format_version(),
                                                   " (the ONNX export reads version 1)"));
  }
  const distill::v1::Architecture& arch = checkpoint.architecture();
  if (arch.activation() != "relu") {
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported activation \"", arch.activation(),
                     "\": the ONNX export supports relu hidden layers only"));
  }
  // Sizes, tensors, shapes and finiteness: as for any checkpoint.
  if (absl::Status s = ValidateCheckpoint(checkpoint); !s.ok()) return s;
  const int64_t inputs = arch.layer_sizes(0);
  if (arch.image_rows() < 0 || arch.image_cols() < 0 ||
      (arch.image_rows() != 0 && int64_t{arch.image_rows()} * arch.image_cols() != inputs)) {
    return absl::DataLossError(absl::StrCat("image shape ", arch.image_rows(), "x",
                                            arch.image_cols(), " does not fit the ", inputs,
                                            " inputs"));
  }
  if (options.scale_input && !(std::isfinite(arch.input_scale()) && arch.input_scale() > 0.f)) {
    return absl::DataLossError(
        absl::StrCat("input scale ", arch.input_scale(), " is not a finite number > 0"));
  }
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

// A float tensor of shape [batch, features] with a symbolic batch size.
void SetBatchTensorType(const std::string& name, int64_t features, const std::string& doc,
                        onnx::ValueInfoProto* value) {
  value->set_name(name);
  value->set_doc_string(doc);
  onnx::TypeProto::Tensor* tensor = value->mutable_type()->mutable_tensor_type();
  tensor->set_elem_type(onnx::TensorProto::FLOAT);
  tensor->mutable_shape()->add_dim()->set_dim_param("batch");
  tensor->mutable_shape()->add_dim()->set_dim_value(features);
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

void AddMetadata(const std::string& key, const std::string& value, onnx::ModelProto* model) {
  onnx::StringStringEntryProto* entry = model->add_metadata_props();
  entry->set_key(key);
  entry->set_value(value);
}

}  // namespace

absl::StatusOr<onnx::ModelProto> BuildOnnxModel(const distill::v1::Checkpoint& checkpoint,
                                                const OnnxExportOptions& options) {
  if (absl::Status s = ValidateForExport(checkpoint, options); !s.ok()) return s;
  const distill::v1::Architecture& arch = checkpoint.architecture();
  MlpSpec spec;
  spec.layer_sizes.assign(arch.layer_sizes().begin(), arch.layer_sizes().end());
  const int64_t inputs = spec.layer_sizes.front();
  const int64_t classes = spec.layer_sizes.back();
  const size_t layers = spec.layer_sizes.size() - 1;
  const std::string role = checkpoint.role().empty() ? "network" : checkpoint.role();
  const std::string output_name = options.softmax ? kOnnxProbabilitiesName : kOnnxLogitsName;
  const std::string image_shape =
      arch.image_rows() > 0 ? absl::StrCat(arch.image_rows(), "x", arch.image_cols()) : "";

  onnx::ModelProto model;
  model.set_ir_version(kOnnxIrVersion);
  onnx::OperatorSetIdProto* opset = model.add_opset_import();
  opset->set_domain("");
  opset->set_version(kOnnxOpsetVersion);
  model.set_producer_name(kOnnxProducerName);
  model.set_doc_string(absl::StrCat("Distillery ", role, " ", spec.ArchitectureString(),
                                    " (fully connected, relu hidden layers)"));
  AddMetadata("distillery.role", checkpoint.role(), &model);
  AddMetadata("distillery.architecture", spec.ArchitectureString(), &model);
  AddMetadata("distillery.image_shape", image_shape, &model);
  AddMetadata("distillery.input_scale", absl::StrCat(arch.input_scale()), &model);
  AddMetadata("distillery.input", options.scale_input ? "raw pixels" : "scaled pixels", &model);
  AddMetadata("distillery.output", output_name, &model);
  // The checkpoint's own provenance, in a stable (sorted) order so that the
  // same checkpoint always gives the same bytes.
  std::vector<std::pair<std::string, std::string>> metadata(checkpoint.metadata().begin(),
                                                            checkpoint.metadata().end());
  std::sort(metadata.begin(), metadata.end());
  for (const auto& [key, value] : metadata) AddMetadata("checkpoint." + key, value, &model);

  onnx::GraphProto* graph = model.mutable_graph();
  graph->set_name(options.graph_name.empty() ? absl::StrCat(role, "_", spec.ArchitectureString())
                                             : options.graph_name);
  const std::string images = image_shape.empty() ? "images" : absl::StrCat(image_shape, " images");
  SetBatchTensorType(kOnnxInputName, inputs,
                     options.scale_input ? absl::StrCat("raw pixel values (0..255) of ", images,
                                                        ", flattened row-major")
                                         : absl::StrCat("pixel values times ", arch.input_scale(),
                                                        " of ", images, ", flattened row-major"),
                     graph->add_input());
  SetBatchTensorType(output_name, classes,
                     options.softmax ? "class probabilities, softmax(logits) at T = 1"
                                     : "class logits (softmax at T = 1 gives probabilities)",
                     graph->add_output());

  std::string current = kOnnxInputName;
  if (options.scale_input) {
    const float scale = arch.input_scale();
    AddFloatInitializer("input_scale", {}, &scale, 1, graph);
    AddNode("Mul", "scale_input", {current, "input_scale"}, "scaled_pixels", graph);
    current = "scaled_pixels";
  }
  for (size_t i = 0; i < layers; ++i) {
    const distill::v1::Tensor& weight = checkpoint.parameters(static_cast<int>(2 * i));
    const distill::v1::Tensor& bias = checkpoint.parameters(static_cast<int>(2 * i + 1));
    AddFloatInitializer(weight.name(), {weight.shape(0), weight.shape(1)}, weight.values().data(),
                        weight.values_size(), graph);
    AddFloatInitializer(bias.name(), {bias.shape(1)}, bias.values().data(), bias.values_size(),
                        graph);
    const bool last = i + 1 == layers;
    const std::string linear =
        last ? std::string(kOnnxLogitsName) : absl::StrCat("layer", i, ".linear");
    onnx::NodeProto* gemm = AddNode("Gemm", absl::StrCat("layer", i, ".gemm"),
                                    {current, weight.name(), bias.name()}, linear, graph);
    AddIntAttribute("transB", 1, gemm);
    current = linear;
    if (!last) {
      const std::string relu = absl::StrCat("layer", i, ".relu");
      AddNode("Relu", relu, {current}, relu, graph);
      current = relu;
    }
  }
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
