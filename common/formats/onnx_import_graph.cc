// ONNX import, part 1: graph parsing (onnx_import_internal.h).
#include <algorithm>
#include <cmath>
#include <cstring>
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
#include "common/formats/onnx_import_internal.h"
#include "common/util/status_macros.h"

namespace distillery {
namespace onnx_import_internal {

std::string NodeName(const onnx::NodeProto& node) {
  return absl::StrCat(node.op_type(), " \"", node.name(), "\"");
}

constexpr int64_t kMaxTensorElements = int64_t{1} << 28;

namespace {

// The `count` float values of `t`, from its raw bytes or its float_data,
// all finite.
absl::Status DecodeFloats(const onnx::TensorProto& t, const std::string& tname, int64_t count,
                          ConstTensor* out) {
  out->is_float = true;
  const std::string& raw = t.raw_data();
  if (!raw.empty()) {
    if (raw.size() != static_cast<size_t>(count) * 4) {
      return absl::DataLossError(
          absl::StrCat(tname, " has ", raw.size(), " bytes of data for ", count, " floats"));
    }
    out->f.resize(count);
    if (count > 0) std::memcpy(out->f.data(), raw.data(), raw.size());
  } else {
    if (t.float_data_size() != count) {
      return absl::DataLossError(
          absl::StrCat(tname, " has ", t.float_data_size(), " values for ", count, " elements"));
    }
    out->f.assign(t.float_data().begin(), t.float_data().end());
  }
  for (size_t k = 0; k < out->f.size(); ++k) {
    if (!std::isfinite(out->f[k])) {
      return absl::DataLossError(absl::StrCat(tname, " holds a non-finite value at ", k));
    }
  }
  return absl::OkStatus();
}

// The `count` INT64 or INT32 values of `t`, from its raw bytes or its
// int64_data / int32_data, widened to int64.
absl::Status DecodeIntegers(const onnx::TensorProto& t, const std::string& tname, int64_t count,
                            ConstTensor* out) {
  const bool is64 = t.data_type() == onnx::TensorProto::INT64;
  const std::string& raw = t.raw_data();
  if (!raw.empty()) {
    if (raw.size() != static_cast<size_t>(count) * (is64 ? 8 : 4)) {
      return absl::DataLossError(
          absl::StrCat(tname, " has ", raw.size(), " bytes of data for ", count, " integers"));
    }
    for (int64_t k = 0; k < count; ++k) {
      if (is64) {
        int64_t v;
        std::memcpy(&v, raw.data() + k * 8, 8);
        out->i.push_back(v);
      } else {
        int32_t v;
        std::memcpy(&v, raw.data() + k * 4, 4);
        out->i.push_back(v);
      }
    }
    return absl::OkStatus();
  }
  const int size = is64 ? t.int64_data_size() : t.int32_data_size();
  if (size != count) {
    return absl::DataLossError(
        absl::StrCat(tname, " has ", size, " values for ", count, " elements"));
  }
  if (is64) {
    out->i.assign(t.int64_data().begin(), t.int64_data().end());
  } else {
    out->i.assign(t.int32_data().begin(), t.int32_data().end());
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ConstTensor> DecodeTensor(const onnx::TensorProto& t) {
  const std::string tname = absl::StrCat("tensor \"", t.name(), "\"");
  if (t.data_location() == onnx::TensorProto::EXTERNAL || t.external_data_size() > 0) {
    return absl::DataLossError(absl::StrCat(
        tname, " is stored in an external data file; import only self-contained models"));
  }
  if (t.has_segment()) return absl::DataLossError(absl::StrCat(tname, " is segmented"));
  ConstTensor out;
  int64_t count = 1;
  for (int64_t d : t.dims()) {
    if (d < 0 || (d > 0 && count > kMaxTensorElements / d)) {
      return absl::DataLossError(absl::StrCat(tname, " has an invalid or too large shape"));
    }
    count *= d;
    out.dims.push_back(d);
  }
  switch (t.data_type()) {
    case onnx::TensorProto::FLOAT:
      RETURN_IF_ERROR(DecodeFloats(t, tname, count, &out));
      return out;
    case onnx::TensorProto::INT64:
    case onnx::TensorProto::INT32:
      RETURN_IF_ERROR(DecodeIntegers(t, tname, count, &out));
      return out;
    default:
      return absl::DataLossError(absl::StrCat(tname, " has data type ", t.data_type(),
                                              "; weights must be float32 (and shapes int64)"));
  }
}

const onnx::AttributeProto* FindAttr(const onnx::NodeProto& node, const std::string& name) {
  for (const onnx::AttributeProto& a : node.attribute()) {
    if (a.name() == name) return &a;
  }
  return nullptr;
}

int64_t IntAttr(const onnx::NodeProto& node, const std::string& name, int64_t fallback) {
  const onnx::AttributeProto* a = FindAttr(node, name);
  return a == nullptr ? fallback : a->i();
}

float FloatAttr(const onnx::NodeProto& node, const std::string& name, float fallback) {
  const onnx::AttributeProto* a = FindAttr(node, name);
  return a == nullptr ? fallback : a->f();
}

std::vector<int64_t> IntsAttr(const onnx::NodeProto& node, const std::string& name) {
  const onnx::AttributeProto* a = FindAttr(node, name);
  if (a == nullptr) return {};
  return {a->ints().begin(), a->ints().end()};
}

std::string StringAttr(const onnx::NodeProto& node, const std::string& name) {
  const onnx::AttributeProto* a = FindAttr(node, name);
  return a == nullptr ? "" : a->s();
}

const std::set<std::string>& SupportedOps() {
  static const auto* ops = new std::set<std::string>{"Gemm",
                                                     "MatMul",
                                                     "Add",
                                                     "Conv",
                                                     "Relu",
                                                     "LeakyRelu",
                                                     "Sigmoid",
                                                     "Tanh",
                                                     "MaxPool",
                                                     "AveragePool",
                                                     "GlobalAveragePool",
                                                     "Flatten",
                                                     "Reshape",
                                                     "Squeeze",
                                                     "Unsqueeze",
                                                     "BatchNormalization",
                                                     "Dropout",
                                                     "Identity",
                                                     "Softmax",
                                                     "LogSoftmax",
                                                     "Constant",
                                                     "Shape",
                                                     "Gather",
                                                     "Concat"};
  return *ops;
}

absl::Status Importer::CheckOpsets() {
  for (const onnx::OperatorSetIdProto& o : model_.opset_import()) {
    if (o.domain().empty() || o.domain() == "ai.onnx") opset_ = o.version();
  }
  if (opset_ < kOnnxImportMinOpset || opset_ > kOnnxImportMaxOpset) {
    return absl::InvalidArgumentError(
        absl::StrCat("the model's opset is ", opset_, "; the import supports opsets ",
                     kOnnxImportMinOpset, " to ", kOnnxImportMaxOpset));
  }
  return absl::OkStatus();
}

absl::Status Importer::CheckSupported() {
  std::vector<std::string> unsupported;
  for (const onnx::NodeProto& node : graph_.node()) {
    const bool default_domain = node.domain().empty() || node.domain() == "ai.onnx";
    if (!default_domain || SupportedOps().count(node.op_type()) == 0) {
      unsupported.push_back(default_domain ? NodeName(node)
                                           : absl::StrCat(node.domain(), ".", NodeName(node)));
    }
  }
  if (!unsupported.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        unsupported.size(), " unsupported operator(s): ", absl::StrJoin(unsupported, ", ")));
  }
  return absl::OkStatus();
}

absl::Status Importer::CollectConstants() {
  for (const onnx::TensorProto& t : graph_.initializer()) {
    ASSIGN_OR_RETURN(consts_[t.name()], DecodeTensor(t));
  }
  if (graph_.sparse_initializer_size() > 0) {
    return absl::InvalidArgumentError("sparse initializers are not supported");
  }
  for (const onnx::NodeProto& node : graph_.node()) {
    for (const std::string& in : node.input()) read_.insert(in);
  }
  return absl::OkStatus();
}

absl::StatusOr<const onnx::ValueInfoProto*> Importer::FindInput() const {
  const onnx::ValueInfoProto* input = nullptr;
  for (const onnx::ValueInfoProto& v : graph_.input()) {
    if (consts_.count(v.name()) > 0) continue;  // older exporters list initializers
    if (input != nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("the model has more than one input (\"",
                                                     input->name(), "\", \"", v.name(), "\")"));
    }
    input = &v;
  }
  if (input == nullptr) return absl::InvalidArgumentError("the model has no input");
  if (!input->type().has_tensor_type() ||
      input->type().tensor_type().elem_type() != onnx::TensorProto::FLOAT) {
    return absl::InvalidArgumentError(
        absl::StrCat("input \"", input->name(), "\" is not a float32 tensor"));
  }
  return input;
}

absl::Status Importer::SetUpInput() {
  ASSIGN_OR_RETURN(const onnx::ValueInfoProto* input, FindInput());
  std::vector<int64_t> fixed;  // -1 where dynamic
  for (const onnx::TensorShapeProto::Dimension& d : input->type().tensor_type().shape().dim()) {
    fixed.push_back(d.has_dim_value() && d.dim_value() > 0 ? d.dim_value() : -1);
  }
  const Shape& given = options_.input_shape;
  if (!given.empty() && (given.size() != 3 || given[0] < 1 || given[1] < 1 || given[2] < 1)) {
    return absl::InvalidArgumentError("the input shape must be three positive sizes C,H,W");
  }
  if (fixed.size() == 4) {
    RETURN_IF_ERROR(SetImageInput(input->name(), fixed, given));
  } else if (fixed.size() == 2) {
    RETURN_IF_ERROR(SetFlatInput(input->name(), fixed, given));
  } else {
    return absl::InvalidArgumentError(absl::StrCat("input \"", input->name(), "\" has rank ",
                                                   fixed.size(),
                                                   "; expected (N, C, H, W) or (N, F)"));
  }
  if (input_shape_[0] > 4096 || input_shape_[1] > 65536 || input_shape_[2] > 65536) {
    return absl::InvalidArgumentError("the input shape is too large");
  }
  activation_ = input->name();
  return absl::OkStatus();
}

absl::Status Importer::SetImageInput(const std::string& name, const std::vector<int64_t>& fixed,
                                     const Shape& given) {
  if (given.empty()) {
    if (fixed[1] < 0 || fixed[2] < 0 || fixed[3] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("input \"", name,
                       "\" has a dynamic channel or spatial size; give the input shape "
                       "(--input_shape=C,H,W)"));
    }
    input_shape_ = {fixed[1], fixed[2], fixed[3]};
  } else {
    for (int k = 0; k < 3; ++k) {
      if (fixed[k + 1] >= 0 && fixed[k + 1] != given[k]) {
        return absl::InvalidArgumentError(
            absl::StrCat("the input shape ", absl::StrJoin(given, ","),
                         " does not match the model's input \"", name, "\""));
      }
    }
    input_shape_ = given;
  }
  shape_ = input_shape_;
  return absl::OkStatus();
}

absl::Status Importer::SetFlatInput(const std::string& name, const std::vector<int64_t>& fixed,
                                    const Shape& given) {
  if (given.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("input \"", name,
                     "\" is flat (N, F); give the image shape it flattens (--input_shape=C,H,W)"));
  }
  if (fixed[1] >= 0 && fixed[1] != ShapeSize(given)) {
    return absl::InvalidArgumentError(absl::StrCat("the input shape ", absl::StrJoin(given, ","),
                                                   " does not have the model's ", fixed[1],
                                                   " input features"));
  }
  input_shape_ = given;
  PendingLayer flatten;
  flatten.spec.kind = LayerSpec::Kind::kFlatten;
  layers_.push_back(flatten);
  shape_ = {ShapeSize(given)};
  return absl::OkStatus();
}

absl::Status Importer::ExpectActivation(const onnx::NodeProto& node, int k) const {
  if (node.input_size() <= k || node.input(k) != activation_) {
    return absl::InvalidArgumentError(
        absl::StrCat(NodeName(node),
                     " does not continue the chain of layers from the input "
                     "(branching graphs are not supported)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<const ConstTensor*> Importer::ExpectFloatConst(const onnx::NodeProto& node,
                                                              int k) const {
  const ConstTensor* c = node.input_size() > k ? Const(node.input(k)) : nullptr;
  if (c == nullptr || !c->is_float) {
    return absl::InvalidArgumentError(
        absl::StrCat(NodeName(node), ": input ", k, " must be a float32 constant (initializer)"));
  }
  return c;
}

absl::Status Importer::ExpectSingleOutput(const onnx::NodeProto& node) const {
  if (node.output_size() < 1 || node.output(0).empty()) {
    return absl::InvalidArgumentError(absl::StrCat(NodeName(node), " has no output"));
  }
  for (int k = 1; k < node.output_size(); ++k) {
    if (!node.output(k).empty() && read_.count(node.output(k)) > 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(NodeName(node), ": only its first output may be used"));
    }
  }
  return absl::OkStatus();
}

void Importer::FlattenTo(const onnx::NodeProto& node) {
  if (shape_.size() != 1) {
    PendingLayer flatten;
    flatten.spec.kind = LayerSpec::Kind::kFlatten;
    layers_.push_back(flatten);
  }
  Advance(node, {ShapeSize(shape_)});
}

}  // namespace onnx_import_internal
}  // namespace distillery
