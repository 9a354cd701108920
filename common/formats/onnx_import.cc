// ONNX import, part 3: pattern matching along the chain and the checkpoint
// (onnx_import_internal.h); the public API of onnx_import.h.
#include "common/formats/onnx_import.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/formats/checkpoint.h"
#include "common/formats/onnx_import_internal.h"
#include "common/nn/network.h"
#include "common/util/status_macros.h"

namespace distillery {
namespace onnx_import_internal {

// Reshape, Squeeze, Unsqueeze and Flatten on the chain: a flatten to
// (batch, features), or no change at all.
absl::Status Importer::ConvertReshapeLike(const onnx::NodeProto& node) {
  RETURN_IF_ERROR(ExpectActivation(node, 0));
  const int64_t rank = static_cast<int64_t>(shape_.size()) + 1;  // with the batch
  const std::string& op = node.op_type();
  bool flattens = false;
  if (op == "Flatten") {
    const int64_t axis = IntAttr(node, "axis", 1);
    flattens = (axis < 0 ? axis + rank : axis) == 1;
  } else if (op == "Reshape") {
    flattens = ReshapeFlattens(node, rank);
  } else if (op == "Squeeze") {
    flattens = SqueezeFlattens(node, rank);
  }  // an Unsqueeze on the chain never flattens
  if (!flattens) {
    return absl::InvalidArgumentError(absl::StrCat(
        NodeName(node), " is supported only where it flattens (batch, ...) to (batch, features)"));
  }
  FlattenTo(node);
  return absl::OkStatus();
}

bool Importer::ReshapeFlattens(const onnx::NodeProto& node, int64_t rank) const {
  if (node.input_size() < 2) return false;
  std::vector<int64_t> target;
  if (const ConstTensor* c = Const(node.input(1)); c != nullptr && !c->is_float) {
    target = c->i;
  } else if (auto it = shapes_.find(node.input(1)); it != shapes_.end()) {
    target = it->second.values;
  } else {
    return false;
  }
  if (target.size() != 2) return false;
  const int64_t features = ShapeSize(shape_);
  const bool allow_zero = IntAttr(node, "allowzero", 0) != 0;
  // The batch dimension: kBatchDim, 0 (copy), or -1 with the features given.
  const bool batch_ok = target[0] == kBatchDim || (target[0] == 0 && !allow_zero) ||
                        (target[0] == -1 && target[1] == features);
  const bool features_ok = target[1] == features || (target[1] == -1 && target[0] != -1) ||
                           (target[1] == 0 && !allow_zero && rank == 2);
  return batch_ok && features_ok;
}

bool Importer::SqueezeFlattens(const onnx::NodeProto& node, int64_t rank) const {
  // The axes from the attribute (opset < 13) or input 1; none means every
  // axis of size 1.
  std::vector<int64_t> axes = IntsAttr(node, "axes");
  if (node.input_size() > 1 && !node.input(1).empty()) {
    const ConstTensor* c = Const(node.input(1));
    if (c == nullptr || c->is_float) return false;
    axes = c->i;
  }
  std::vector<int64_t> full = {-1};  // -1 = batch
  full.insert(full.end(), shape_.begin(), shape_.end());
  std::set<int64_t> drop;
  for (int64_t a : axes) {
    if (a < -rank || a >= rank) return false;
    drop.insert(a < 0 ? a + rank : a);
  }
  if (axes.empty()) {
    for (int64_t k = 1; k < rank; ++k) {
      if (full[k] == 1) drop.insert(k);
    }
  }
  int64_t kept = 0;
  for (int64_t k = 0; k < rank; ++k) {
    if (drop.count(k) == 0) {
      ++kept;
    } else if (k == 0 || full[k] != 1) {
      return false;  // the batch, or an axis that is not of size 1
    }
  }
  return !drop.empty() && kept == 2;
}

absl::Status Importer::Convert(const onnx::NodeProto& node, bool is_last) {
  const std::string& op = node.op_type();
  if (node.output_size() < 1 || node.output(0).empty()) {
    return absl::InvalidArgumentError(absl::StrCat(NodeName(node), " has no output"));
  }
  if (op == "Constant") return ConvertConstant(node);
  // The shape arithmetic of x.view(x.size(0), -1).
  const bool on_shape = node.input_size() > 0 && shapes_.count(node.input(0)) > 0;
  if (op == "Shape") return ConvertShape(node);
  if (op == "Gather" && on_shape) return ConvertShapeGather(node);
  if (op == "Unsqueeze" && on_shape) {
    shapes_[node.output(0)] = shapes_[node.input(0)];
    return absl::OkStatus();
  }
  if (op == "Concat") return ConvertShapeConcat(node);
  if (op == "Gather") {
    return absl::InvalidArgumentError(
        absl::StrCat(NodeName(node), ": only Gather on a shape is supported"));
  }
  if (op == "Softmax" || op == "LogSoftmax") return ConvertSoftmax(node, is_last);
  if (op == "Dropout" || op == "Identity") {
    RETURN_IF_ERROR(ExpectActivation(node, 0));
    RETURN_IF_ERROR(ExpectSingleOutput(node));
    Advance(node, shape_);
    return absl::OkStatus();
  }
  if (op == "Relu" || op == "LeakyRelu" || op == "Sigmoid" || op == "Tanh") {
    return ConvertActivation(node);
  }
  if (op == "Add") return ConvertBiasAdd(node);
  if (op == "Conv") return ConvertConv(node);
  if (op == "MaxPool" || op == "AveragePool" || op == "GlobalAveragePool") {
    return ConvertPool(node);
  }
  if (op == "Gemm" || op == "MatMul") return ConvertGemm(node);
  if (op == "BatchNormalization") return ConvertBatchNorm(node);
  if (op == "Flatten" || op == "Reshape" || op == "Squeeze" || op == "Unsqueeze") {
    return ConvertReshapeLike(node);
  }
  return absl::InvalidArgumentError(absl::StrCat("unsupported operator ", NodeName(node)));
}

absl::Status Importer::ConvertConstant(const onnx::NodeProto& node) {
  const onnx::AttributeProto* value = FindAttr(node, "value");
  if (value == nullptr || !value->has_t() || node.output_size() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(NodeName(node), ": only Constant nodes with a tensor value are supported"));
  }
  ASSIGN_OR_RETURN(ConstTensor c, DecodeTensor(value->t()));
  consts_[node.output(0)] = std::move(c);
  return absl::OkStatus();
}

absl::Status Importer::ConvertShape(const onnx::NodeProto& node) {
  if (node.input_size() < 1 || node.input(0) != activation_ || node.output_size() != 1 ||
      FindAttr(node, "start") != nullptr || FindAttr(node, "end") != nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(NodeName(node), ": only the shape of the current activation is supported"));
  }
  ShapeValue v;
  v.values.push_back(kBatchDim);
  v.values.insert(v.values.end(), shape_.begin(), shape_.end());
  shapes_[node.output(0)] = v;
  return absl::OkStatus();
}

absl::Status Importer::ConvertShapeGather(const onnx::NodeProto& node) {
  const ConstTensor* idx = node.input_size() > 1 ? Const(node.input(1)) : nullptr;
  const std::vector<int64_t>& src = shapes_[node.input(0)].values;
  if (idx == nullptr || idx->is_float || IntAttr(node, "axis", 0) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(NodeName(node), ": only constant indices into a shape are supported"));
  }
  ShapeValue v;
  for (int64_t k : idx->i) {
    const int64_t n = static_cast<int64_t>(src.size());
    if (k < -n || k >= n) {
      return absl::InvalidArgumentError(absl::StrCat(NodeName(node), ": index out of range"));
    }
    v.values.push_back(src[k < 0 ? k + n : k]);
  }
  shapes_[node.output(0)] = v;
  return absl::OkStatus();
}

absl::Status Importer::ConvertShapeConcat(const onnx::NodeProto& node) {
  ShapeValue v;
  for (const std::string& in : node.input()) {
    if (auto it = shapes_.find(in); it != shapes_.end()) {
      v.values.insert(v.values.end(), it->second.values.begin(), it->second.values.end());
    } else if (const ConstTensor* c = Const(in); c != nullptr && !c->is_float) {
      v.values.insert(v.values.end(), c->i.begin(), c->i.end());
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat(NodeName(node), ": only the concatenation of shapes is supported"));
    }
  }
  shapes_[node.output(0)] = v;
  return absl::OkStatus();
}

absl::Status Importer::ConvertSoftmax(const onnx::NodeProto& node, bool is_last) {
  RETURN_IF_ERROR(ExpectActivation(node, 0));
  int64_t axis = IntAttr(node, "axis", opset_ >= 13 ? -1 : 1);
  if (!is_last || shape_.size() != 1 || (axis != 1 && axis != -1)) {
    return absl::InvalidArgumentError(
        absl::StrCat(NodeName(node), " is supported only as the last node, over the classes"));
  }
  Advance(node, shape_);  // stripped: the teacher serves logits
  return absl::OkStatus();
}

absl::Status Importer::ConvertBiasAdd(const onnx::NodeProto& node) {
  // The bias of the MatMul (or bias-less Conv) right before it.
  if (node.input_size() != 2) return absl::InvalidArgumentError(NodeName(node));
  const int k = node.input(0) == activation_ ? 0 : 1;
  RETURN_IF_ERROR(ExpectActivation(node, k));
  const ConstTensor* c = Const(node.input(1 - k));
  const int64_t units = shape_.empty() ? 0 : shape_[0];
  if (c == nullptr || !c->is_float || layers_.empty() || !layers_.back().foldable ||
      c->size() != units) {
    return absl::InvalidArgumentError(absl::StrCat(
        NodeName(node), " is supported only as the bias of the MatMul or Conv before it"));
  }
  // Its shape must broadcast per unit: (units), (1, units) for a linear
  // layer; (units, 1, 1) or (1, units, 1, 1) for a convolution.
  std::vector<int64_t> dims;
  for (int64_t d : c->dims) {
    if (!(dims.empty() && d == 1)) dims.push_back(d);
  }
  const bool conv = layers_.back().spec.kind == LayerSpec::Kind::kConv2d;
  const bool fits = conv ? dims == std::vector<int64_t>{units, 1, 1}
                         : dims == std::vector<int64_t>{units} || (units == 1 && dims.empty());
  if (!fits) {
    return absl::InvalidArgumentError(
        absl::StrCat(NodeName(node), ": its constant does not broadcast as a bias"));
  }
  for (int64_t u = 0; u < units; ++u) layers_.back().bias[u] += c->f[u];
  Advance(node, shape_);
  return absl::OkStatus();
}

absl::StatusOr<distill::v1::Checkpoint> Importer::Build() {
  NetworkSpec spec;
  spec.input_shape = input_shape_;
  for (const PendingLayer& l : layers_) spec.layers.push_back(l.spec);
  ASSIGN_OR_RETURN(std::unique_ptr<Network> network, Network::Create(spec, /*seed=*/0));
  // Parameters and buffers come in layer order: weight then bias for each
  // layer that has them; running_mean, running_var for batch norm.
  std::vector<const std::vector<float>*> params, buffers;
  for (const PendingLayer& l : layers_) {
    if (l.spec.kind == LayerSpec::Kind::kLinear || l.spec.kind == LayerSpec::Kind::kConv2d ||
        l.spec.kind == LayerSpec::Kind::kBatchNorm) {
      params.push_back(&l.weight);
      params.push_back(&l.bias);
    }
    if (l.spec.kind == LayerSpec::Kind::kBatchNorm) {
      buffers.push_back(&l.mean);
      buffers.push_back(&l.var);
    }
  }
  std::vector<Parameter*> net_params = network->Parameters();
  std::vector<Buffer> net_buffers = network->Buffers();
  if (net_params.size() != params.size() || net_buffers.size() != buffers.size()) {
    return absl::InternalError("the imported network's parameters do not match its layers");
  }
  for (size_t k = 0; k < params.size(); ++k) {
    Tensor& value = net_params[k]->value;
    if (static_cast<size_t>(value.size()) != params[k]->size()) {
      return absl::InvalidArgumentError(absl::StrCat("parameter ", net_params[k]->name, " has ",
                                                     params[k]->size(), " values, the layer needs ",
                                                     value.size()));
    }
    std::copy(params[k]->begin(), params[k]->end(), value.data());
  }
  for (size_t k = 0; k < buffers.size(); ++k) {
    Tensor& value = *net_buffers[k].value;
    if (static_cast<size_t>(value.size()) != buffers[k]->size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("buffer ", net_buffers[k].name, " does not fit its layer"));
    }
    std::copy(buffers[k]->begin(), buffers[k]->end(), value.data());
  }
  distill::v1::Checkpoint checkpoint = MakeCheckpoint(*network, options_.role);
  if (absl::Status s = options_.preprocessing.Validate(input_shape_[0]); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("preprocessing: ", s.message()));
  }
  SetCheckpointPreprocessing(options_.preprocessing, &checkpoint);
  (*checkpoint.mutable_metadata())["source"] =
      absl::StrCat("onnx:", model_.producer_name(), " ", model_.producer_version());
  if (!graph_.name().empty()) (*checkpoint.mutable_metadata())["onnx_graph"] = graph_.name();
  (*checkpoint.mutable_metadata())["onnx_opset"] = absl::StrCat(opset_);
  if (absl::Status s = ValidateCheckpoint(checkpoint); !s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the imported network is not valid: ", s.message()));
  }
  return checkpoint;
}

absl::StatusOr<distill::v1::Checkpoint> Importer::Run() {
  RETURN_IF_ERROR(CheckOpsets());
  RETURN_IF_ERROR(CheckSupported());
  if (graph_.output_size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat("the model has ", graph_.output_size(),
                                                   " graph outputs; the import needs exactly one"));
  }
  RETURN_IF_ERROR(CollectConstants());
  read_.insert(graph_.output(0).name());
  RETURN_IF_ERROR(SetUpInput());
  // The last node that touches the chain (for a final Softmax).
  int last = graph_.node_size() - 1;
  while (last >= 0 && graph_.node(last).op_type() == "Constant") --last;
  for (int k = 0; k < graph_.node_size(); ++k) {
    RETURN_IF_ERROR(Convert(graph_.node(k), k == last));
  }
  if (activation_ != graph_.output(0).name()) {
    return absl::InvalidArgumentError(absl::StrCat("the graph output \"", graph_.output(0).name(),
                                                   "\" is not the end of the chain of layers"));
  }
  if (shape_.size() != 1) {
    return absl::InvalidArgumentError("the graph output is not a vector of classes per example");
  }
  bool any = false;
  for (const PendingLayer& l : layers_) {
    any = any || l.spec.kind == LayerSpec::Kind::kLinear || l.spec.kind == LayerSpec::Kind::kConv2d;
  }
  if (!any) return absl::InvalidArgumentError("the model has no Gemm, MatMul or Conv layer");
  return Build();
}

}  // namespace onnx_import_internal

using onnx_import_internal::Importer;

absl::StatusOr<Shape> ParseInputShape(const std::string& text) {
  Shape shape;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    int64_t d = 0;
    if (!absl::SimpleAtoi(part, &d) || d < 1 || d > 65536) {
      return absl::InvalidArgumentError(
          absl::StrCat("input shape \"", text, "\": expected C,H,W (three positive sizes)"));
    }
    shape.push_back(d);
  }
  if (shape.size() != 3) {
    return absl::InvalidArgumentError(
        absl::StrCat("input shape \"", text, "\": expected C,H,W (three positive sizes)"));
  }
  return shape;
}

absl::StatusOr<distill::v1::Checkpoint> ImportOnnxModel(std::string_view bytes,
                                                        const OnnxImportOptions& options,
                                                        const std::string& name) {
  if (bytes.size() > kOnnxImportMaxBytes) {
    return absl::DataLossError(absl::StrCat(name, ": larger than 2 GiB"));
  }
  onnx::ModelProto model;
  if (bytes.empty() || !model.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return absl::DataLossError(
        absl::StrCat(name, ": not an ONNX model (malformed or truncated protobuf)"));
  }
  if (!model.has_graph())
    return absl::DataLossError(absl::StrCat(name, ": the model has no graph"));
  Importer importer(model, options);
  absl::StatusOr<distill::v1::Checkpoint> checkpoint = importer.Run();
  if (!checkpoint.ok()) {
    return absl::Status(checkpoint.status().code(),
                        absl::StrCat(name, ": ", checkpoint.status().message()));
  }
  return checkpoint;
}

absl::StatusOr<distill::v1::Checkpoint> ImportOnnxFile(const std::string& path,
                                                       const OnnxImportOptions& options) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return absl::DataLossError(absl::StrCat("error reading ", path));
  return ImportOnnxModel(bytes, options, path);
}

}  // namespace distillery
