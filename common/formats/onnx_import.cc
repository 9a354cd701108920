#include "common/formats/onnx_import.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/formats/checkpoint.h"
#include "common/nn/network.h"
#include "common/util/status_macros.h"
#include "onnx/onnx.pb.h"

namespace distillery {
namespace {

// A constant tensor of the graph (initializer or Constant node).
struct ConstTensor {
  std::vector<int64_t> dims;
  bool is_float = false;
  std::vector<float> f;    // float32 values
  std::vector<int64_t> i;  // int64/int32 values
  int64_t size() const { return static_cast<int64_t>(is_float ? f.size() : i.size()); }
};

// A shape computed from the activation (Shape -> Gather -> ...): its values,
// kBatchDim where the value is the batch size.
constexpr int64_t kBatchDim = std::numeric_limits<int64_t>::min();
struct ShapeValue {
  std::vector<int64_t> values;
};

// A layer being built, with its weights in the engine's layout.
struct PendingLayer {
  LayerSpec spec;
  std::vector<float> weight, bias;  // linear/conv: weight and bias; batchnorm: gamma, beta
  std::vector<float> mean, var;     // batchnorm only
  bool foldable = false;            // a Conv/Gemm whose output nothing else touched yet
};

std::string NodeName(const onnx::NodeProto& node) {
  return absl::StrCat(node.op_type(), " \"", node.name(), "\"");
}

constexpr int64_t kMaxTensorElements = int64_t{1} << 28;

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
  const std::string& raw = t.raw_data();
  switch (t.data_type()) {
    case onnx::TensorProto::FLOAT: {
      out.is_float = true;
      if (!raw.empty()) {
        if (raw.size() != static_cast<size_t>(count) * 4) {
          return absl::DataLossError(
              absl::StrCat(tname, " has ", raw.size(), " bytes of data for ", count, " floats"));
        }
        out.f.resize(count);
        if (count > 0) std::memcpy(out.f.data(), raw.data(), raw.size());
      } else {
        if (t.float_data_size() != count) {
          return absl::DataLossError(absl::StrCat(tname, " has ", t.float_data_size(),
                                                  " values for ", count, " elements"));
        }
        out.f.assign(t.float_data().begin(), t.float_data().end());
      }
      for (size_t k = 0; k < out.f.size(); ++k) {
        if (!std::isfinite(out.f[k])) {
          return absl::DataLossError(absl::StrCat(tname, " holds a non-finite value at ", k));
        }
      }
      return out;
    }
    case onnx::TensorProto::INT64:
    case onnx::TensorProto::INT32: {
      const bool is64 = t.data_type() == onnx::TensorProto::INT64;
      const size_t width = is64 ? 8 : 4;
      if (!raw.empty()) {
        if (raw.size() != static_cast<size_t>(count) * width) {
          return absl::DataLossError(
              absl::StrCat(tname, " has ", raw.size(), " bytes of data for ", count, " integers"));
        }
        for (int64_t k = 0; k < count; ++k) {
          if (is64) {
            int64_t v;
            std::memcpy(&v, raw.data() + k * 8, 8);
            out.i.push_back(v);
          } else {
            int32_t v;
            std::memcpy(&v, raw.data() + k * 4, 4);
            out.i.push_back(v);
          }
        }
      } else if (is64) {
        if (t.int64_data_size() != count) {
          return absl::DataLossError(absl::StrCat(tname, " has ", t.int64_data_size(),
                                                  " values for ", count, " elements"));
        }
        out.i.assign(t.int64_data().begin(), t.int64_data().end());
      } else {
        if (t.int32_data_size() != count) {
          return absl::DataLossError(absl::StrCat(tname, " has ", t.int32_data_size(),
                                                  " values for ", count, " elements"));
        }
        out.i.assign(t.int32_data().begin(), t.int32_data().end());
      }
      return out;
    }
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

class Importer {
 public:
  Importer(const onnx::ModelProto& model, const OnnxImportOptions& options)
      : model_(model), graph_(model.graph()), options_(options) {}

  absl::StatusOr<distill::v1::Checkpoint> Run();

 private:
  absl::Status CheckOpsets();
  absl::Status CheckSupported();
  absl::Status CollectConstants();
  absl::Status SetUpInput();
  absl::Status Convert(const onnx::NodeProto& node, bool is_last);
  absl::StatusOr<distill::v1::Checkpoint> Build();

  // The constant named `name`, or null.
  const ConstTensor* Const(const std::string& name) const {
    auto it = consts_.find(name);
    return it == consts_.end() ? nullptr : &it->second;
  }
  // The node's input k must be the chain's activation.
  absl::Status ExpectActivation(const onnx::NodeProto& node, int k) const;
  absl::StatusOr<const ConstTensor*> ExpectFloatConst(const onnx::NodeProto& node, int k) const;
  // Outputs other than the first must be unused (empty names or never read).
  absl::Status ExpectSingleOutput(const onnx::NodeProto& node) const;
  void Advance(const onnx::NodeProto& node, Shape shape) {
    activation_ = node.output(0);
    shape_ = std::move(shape);
  }
  // Sets the chain to flat (features) via a flatten layer when needed.
  void FlattenTo(const onnx::NodeProto& node);
  absl::Status ConvertConv(const onnx::NodeProto& node);
  absl::Status ConvertPool(const onnx::NodeProto& node);
  absl::Status ConvertGemm(const onnx::NodeProto& node);
  absl::Status ConvertBatchNorm(const onnx::NodeProto& node);
  absl::Status ConvertReshapeLike(const onnx::NodeProto& node);

  const onnx::ModelProto& model_;
  const onnx::GraphProto& graph_;
  const OnnxImportOptions& options_;
  int64_t opset_ = 0;
  std::map<std::string, ConstTensor> consts_;
  std::map<std::string, ShapeValue> shapes_;
  std::set<std::string> read_;  // every name a node reads, and the graph output
  Shape input_shape_;           // (C, H, W)
  std::string activation_;      // the chain's current tensor
  Shape shape_;                 // its per-example shape
  std::vector<PendingLayer> layers_;
};

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

absl::Status Importer::SetUpInput() {
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
  const auto& dims = input->type().tensor_type().shape().dim();
  std::vector<int64_t> fixed;  // -1 where dynamic
  for (const onnx::TensorShapeProto::Dimension& d : dims) {
    fixed.push_back(d.has_dim_value() && d.dim_value() > 0 ? d.dim_value() : -1);
  }
  const Shape& given = options_.input_shape;
  if (!given.empty() && (given.size() != 3 || given[0] < 1 || given[1] < 1 || given[2] < 1)) {
    return absl::InvalidArgumentError("the input shape must be three positive sizes C,H,W");
  }
  if (fixed.size() == 4) {
    if (given.empty()) {
      if (fixed[1] < 0 || fixed[2] < 0 || fixed[3] < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("input \"", input->name(),
                         "\" has a dynamic channel or spatial size; give the input shape "
                         "(--input_shape=C,H,W)"));
      }
      input_shape_ = {fixed[1], fixed[2], fixed[3]};
    } else {
      for (int k = 0; k < 3; ++k) {
        if (fixed[k + 1] >= 0 && fixed[k + 1] != given[k]) {
          return absl::InvalidArgumentError(
              absl::StrCat("the input shape ", absl::StrJoin(given, ","),
                           " does not match the model's input \"", input->name(), "\""));
        }
      }
      input_shape_ = given;
    }
    shape_ = input_shape_;
  } else if (fixed.size() == 2) {
    if (given.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input \"", input->name(),
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

// Output size of a window along one axis (floor mode).
int64_t WindowOut(int64_t in, int64_t window, int64_t stride, int64_t pad, int64_t dilation) {
  return (in + 2 * pad - dilation * (window - 1) - 1) / stride + 1;
}

// Resolves auto_pad and pads into symmetric (rows, cols) padding.
absl::Status ResolvePads(const onnx::NodeProto& node, const Shape& in, const int64_t kernel[2],
                         const int64_t stride[2], const int64_t dilation[2], int64_t pad[2]) {
  const std::string auto_pad = StringAttr(node, "auto_pad");
  std::vector<int64_t> pads = IntsAttr(node, "pads");
  if (auto_pad.empty() || auto_pad == "NOTSET") {
    if (pads.empty()) pads = {0, 0, 0, 0};
    if (pads.size() != 4 || pads[0] != pads[2] || pads[1] != pads[3] || pads[0] < 0 ||
        pads[1] < 0 || pads[0] > 65536 || pads[1] > 65536) {
      return absl::InvalidArgumentError(absl::StrCat(
          NodeName(node), ": pads must be symmetric (top = bottom, left = right), got [",
          absl::StrJoin(pads, ","), "]"));
    }
    pad[0] = pads[0];
    pad[1] = pads[1];
  } else if (auto_pad == "VALID") {
    pad[0] = pad[1] = 0;
  } else if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
    for (int a = 0; a < 2; ++a) {
      const int64_t size = in[1 + a];
      const int64_t out = (size + stride[a] - 1) / stride[a];
      const int64_t total =
          std::max<int64_t>(0, (out - 1) * stride[a] + dilation[a] * (kernel[a] - 1) + 1 - size);
      if (total % 2 != 0) {
        return absl::InvalidArgumentError(
            absl::StrCat(NodeName(node), ": auto_pad ", auto_pad,
                         " needs asymmetric padding here, which the engine does not support"));
      }
      pad[a] = total / 2;
    }
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat(NodeName(node), ": unknown auto_pad \"", auto_pad, "\""));
  }
  return absl::OkStatus();
}

absl::Status Importer::ConvertConv(const onnx::NodeProto& node) {
  RETURN_IF_ERROR(ExpectActivation(node, 0));
  ASSIGN_OR_RETURN(const ConstTensor* w, ExpectFloatConst(node, 1));
  if (w->dims.size() != 4 || shape_.size() != 3) {
    return absl::InvalidArgumentError(
        absl::StrCat(NodeName(node), ": only 2-D convolutions of images are supported"));
  }
  const int64_t group = IntAttr(node, "group", 1);
  const int64_t out_channels = w->dims[0];
  if (group < 1 || out_channels < 1 || out_channels % group != 0 ||
      w->dims[1] * group != shape_[0] || w->dims[2] < 1 || w->dims[3] < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(NodeName(node), ": its weight (", absl::StrJoin(w->dims, "x"), ", group ",
                     group, ") does not fit its input of ", shape_[0], " channels"));
  }
  const int64_t kernel[2] = {w->dims[2], w->dims[3]};
  if (const std::vector<int64_t> ks = IntsAttr(node, "kernel_shape");
      !ks.empty() && (ks.size() != 2 || ks[0] != kernel[0] || ks[1] != kernel[1])) {
    return absl::InvalidArgumentError(
        absl::StrCat(NodeName(node), ": kernel_shape does not match its weight"));
  }
  std::vector<int64_t> strides = IntsAttr(node, "strides");
  if (strides.empty()) strides = {1, 1};
  std::vector<int64_t> dilations = IntsAttr(node, "dilations");
  if (dilations.empty()) dilations = {1, 1};
  if (strides.size() != 2 || strides[0] < 1 || strides[1] < 1 || strides[0] > 65536 ||
      strides[1] > 65536 || dilations.size() != 2 || dilations[0] != dilations[1] ||
      dilations[0] < 1 || dilations[0] > 65536) {
    return absl::InvalidArgumentError(absl::StrCat(
        NodeName(node), ": strides must be positive and dilations equal on both axes"));
  }
  const int64_t stride[2] = {strides[0], strides[1]};
  const int64_t dilation[2] = {dilations[0], dilations[1]};
  int64_t pad[2];
  RETURN_IF_ERROR(ResolvePads(node, shape_, kernel, stride, dilation, pad));
  PendingLayer layer;
  layer.spec.kind = LayerSpec::Kind::kConv2d;
  layer.spec.units = out_channels;
  layer.spec.kernel_rows = static_cast<int>(kernel[0]);
  layer.spec.kernel_cols = static_cast<int>(kernel[1]);
  layer.spec.stride_rows = static_cast<int>(stride[0]);
  layer.spec.stride_cols = static_cast<int>(stride[1]);
  layer.spec.pad_rows = static_cast<int>(pad[0]);
  layer.spec.pad_cols = static_cast<int>(pad[1]);
  layer.spec.dilation = static_cast<int>(dilation[0]);
  layer.spec.groups = static_cast<int>(group);
  layer.weight = w->f;
  layer.bias.assign(out_channels, 0.f);
  if (node.input_size() > 2 && !node.input(2).empty()) {
    ASSIGN_OR_RETURN(const ConstTensor* b, ExpectFloatConst(node, 2));
    if (b->size() != out_channels) {
      return absl::InvalidArgumentError(absl::StrCat(NodeName(node), ": its bias has ", b->size(),
                                                     " values, expected ", out_channels));
    }
    layer.bias = b->f;
  }
  layer.foldable = true;
  const int64_t rows = WindowOut(shape_[1], kernel[0], stride[0], pad[0], dilation[0]);
  const int64_t cols = WindowOut(shape_[2], kernel[1], stride[1], pad[1], dilation[1]);
  if (rows < 1 || cols < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(NodeName(node), ": its window does not fit the image"));
  }
  layers_.push_back(std::move(layer));
  Advance(node, {out_channels, rows, cols});
  return absl::OkStatus();
}

absl::Status Importer::ConvertPool(const onnx::NodeProto& node) {
  RETURN_IF_ERROR(ExpectActivation(node, 0));
  RETURN_IF_ERROR(ExpectSingleOutput(node));
  if (shape_.size() != 3) {
    return absl::InvalidArgumentError(
        absl::StrCat(NodeName(node), ": pooling needs an image (channels, rows, cols)"));
  }
  PendingLayer layer;
  if (node.op_type() == "GlobalAveragePool") {
    layer.spec.kind = LayerSpec::Kind::kGlobalAvgPool;
    layers_.push_back(layer);
    Advance(node, {shape_[0], 1, 1});
    return absl::OkStatus();
  }
  const bool is_max = node.op_type() == "MaxPool";
  if (IntAttr(node, "ceil_mode", 0) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(NodeName(node),
                     ": ceil_mode=1 pooling is not supported by the engine yet (export "
                     "with ceil_mode=False)"));
  }
  if (is_max && IntAttr(node, "storage_order", 0) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(NodeName(node), ": storage_order must be 0"));
  }
  const std::vector<int64_t> ks = IntsAttr(node, "kernel_shape");
  std::vector<int64_t> strides = IntsAttr(node, "strides");
  if (strides.empty()) strides = {1, 1};
  std::vector<int64_t> dilations = IntsAttr(node, "dilations");
  if (dilations.empty()) dilations = {1, 1};
  if (ks.size() != 2 || ks[0] < 1 || ks[1] < 1 || ks[0] > shape_[1] + 65536 ||
      ks[1] > shape_[2] + 65536 || strides.size() != 2 || strides[0] < 1 || strides[1] < 1 ||
      strides[0] > 65536 || strides[1] > 65536 || dilations != std::vector<int64_t>{1, 1}) {
    return absl::InvalidArgumentError(absl::StrCat(
        NodeName(node), ": needs a 2-D kernel_shape, positive strides and no dilation"));
  }
  const int64_t kernel[2] = {ks[0], ks[1]};
  const int64_t stride[2] = {strides[0], strides[1]};
  const int64_t dilation[2] = {1, 1};
  int64_t pad[2];
  RETURN_IF_ERROR(ResolvePads(node, shape_, kernel, stride, dilation, pad));
  layer.spec.kind = is_max ? LayerSpec::Kind::kMaxPool2d : LayerSpec::Kind::kAvgPool2d;
  layer.spec.kernel_rows = static_cast<int>(kernel[0]);
  layer.spec.kernel_cols = static_cast<int>(kernel[1]);
  layer.spec.stride_rows = static_cast<int>(stride[0]);
  layer.spec.stride_cols = static_cast<int>(stride[1]);
  layer.spec.pad_rows = static_cast<int>(pad[0]);
  layer.spec.pad_cols = static_cast<int>(pad[1]);
  layer.spec.count_include_pad = !is_max && IntAttr(node, "count_include_pad", 0) != 0;
  const int64_t rows = WindowOut(shape_[1], kernel[0], stride[0], pad[0], 1);
  const int64_t cols = WindowOut(shape_[2], kernel[1], stride[1], pad[1], 1);
  if (rows < 1 || cols < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(NodeName(node), ": its window does not fit the image"));
  }
  layers_.push_back(layer);
  Advance(node, {shape_[0], rows, cols});
  return absl::OkStatus();
}

absl::Status Importer::ConvertGemm(const onnx::NodeProto& node) {
  RETURN_IF_ERROR(ExpectActivation(node, 0));
  ASSIGN_OR_RETURN(const ConstTensor* b, ExpectFloatConst(node, 1));
  const bool matmul = node.op_type() == "MatMul";
  const bool trans_b = !matmul && IntAttr(node, "transB", 0) != 0;
  if (!matmul && (IntAttr(node, "transA", 0) != 0 || FloatAttr(node, "alpha", 1.f) != 1.f ||
                  FloatAttr(node, "beta", 1.f) != 1.f)) {
    return absl::InvalidArgumentError(
        absl::StrCat(NodeName(node), ": only alpha = beta = 1 and transA = 0 are supported"));
  }
  if (shape_.size() != 1 || b->dims.size() != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat(NodeName(node), ": needs a flat (batch, features) input and a 2-D weight"));
  }
  const int64_t in = trans_b ? b->dims[1] : b->dims[0];
  const int64_t out = trans_b ? b->dims[0] : b->dims[1];
  if (in != shape_[0] || out < 1) {
    return absl::InvalidArgumentError(absl::StrCat(NodeName(node), ": its weight (",
                                                   absl::StrJoin(b->dims, "x"), ") does not take ",
                                                   shape_[0], " features"));
  }
  PendingLayer layer;
  layer.spec.kind = LayerSpec::Kind::kLinear;
  layer.spec.units = out;
  // The engine's layout is (out, in).
  if (trans_b) {
    layer.weight = b->f;
  } else {
    layer.weight.resize(b->f.size());
    for (int64_t r = 0; r < in; ++r) {
      for (int64_t c = 0; c < out; ++c) layer.weight[c * in + r] = b->f[r * out + c];
    }
  }
  layer.bias.assign(out, 0.f);
  if (!matmul && node.input_size() > 2 && !node.input(2).empty()) {
    ASSIGN_OR_RETURN(const ConstTensor* c, ExpectFloatConst(node, 2));
    if (c->size() == out) {
      layer.bias = c->f;
    } else if (c->size() == 1) {
      layer.bias.assign(out, c->f[0]);
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat(NodeName(node), ": its bias has ", c->size(), " values, expected ", out));
    }
  }
  layer.foldable = true;
  layers_.push_back(std::move(layer));
  Advance(node, {out});
  return absl::OkStatus();
}

absl::Status Importer::ConvertBatchNorm(const onnx::NodeProto& node) {
  RETURN_IF_ERROR(ExpectActivation(node, 0));
  RETURN_IF_ERROR(ExpectSingleOutput(node));
  if (IntAttr(node, "training_mode", 0) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(NodeName(node), ": training_mode must be 0 (export in eval mode)"));
  }
  const float eps = FloatAttr(node, "epsilon", 1e-5f);
  if (!(eps >= 0.f) || !std::isfinite(eps)) {
    return absl::InvalidArgumentError(absl::StrCat(NodeName(node), ": invalid epsilon"));
  }
  const int64_t channels = shape_.empty() ? 0 : shape_[0];
  const ConstTensor* t[4];
  for (int k = 0; k < 4; ++k) {
    ASSIGN_OR_RETURN(t[k], ExpectFloatConst(node, k + 1));
    if (t[k]->size() != channels) {
      return absl::InvalidArgumentError(absl::StrCat(NodeName(node), ": input ", k + 1, " has ",
                                                     t[k]->size(), " values for ", channels,
                                                     " channels"));
    }
  }
  const std::vector<float>&gamma = t[0]->f, &beta = t[1]->f, &mean = t[2]->f, &var = t[3]->f;
  for (int64_t c = 0; c < channels; ++c) {
    if (!(double{var[c]} + eps > 0.0)) {
      return absl::DataLossError(
          absl::StrCat(NodeName(node), ": variance + epsilon is not positive at ", c));
    }
  }
  if (!layers_.empty() && layers_.back().foldable && (layers_.back().spec.units == channels)) {
    PendingLayer& l = layers_.back();
    const int64_t per_unit = static_cast<int64_t>(l.weight.size()) / channels;
    for (int64_t c = 0; c < channels; ++c) {
      const double s = double{gamma[c]} / std::sqrt(double{var[c]} + eps);
      for (int64_t k = 0; k < per_unit; ++k) {
        float& wv = l.weight[c * per_unit + k];
        wv = static_cast<float>(wv * s);
      }
      l.bias[c] = static_cast<float>((double{l.bias[c]} - mean[c]) * s + beta[c]);
    }
    for (float v : l.weight) {
      if (!std::isfinite(v)) {
        return absl::DataLossError(
            absl::StrCat(NodeName(node), ": folding it gives non-finite weights"));
      }
    }
    Advance(node, shape_);
    return absl::OkStatus();
  }
  // A batch normalization layer; its epsilon is the engine's, so the
  // variance absorbs the difference.
  PendingLayer layer;
  layer.spec.kind = LayerSpec::Kind::kBatchNorm;
  layer.weight = gamma;
  layer.bias = beta;
  layer.mean = mean;
  layer.var.resize(channels);
  for (int64_t c = 0; c < channels; ++c) {
    const double v = double{var[c]} + eps - kBatchNormEpsilon;
    if (!(v >= 0.0)) {
      return absl::InvalidArgumentError(
          absl::StrCat(NodeName(node), ": its epsilon cannot be expressed with the engine's ",
                       kBatchNormEpsilon));
    }
    layer.var[c] = static_cast<float>(v);
  }
  layers_.push_back(std::move(layer));
  Advance(node, shape_);
  return absl::OkStatus();
}

// Reshape, Squeeze, Unsqueeze and Flatten on the chain: a flatten to
// (batch, features), or no change at all.
absl::Status Importer::ConvertReshapeLike(const onnx::NodeProto& node) {
  RETURN_IF_ERROR(ExpectActivation(node, 0));
  const int64_t features = ShapeSize(shape_);
  const int64_t rank = static_cast<int64_t>(shape_.size()) + 1;  // with the batch
  const std::string& op = node.op_type();
  auto refuse = [&]() {
    return absl::InvalidArgumentError(absl::StrCat(
        NodeName(node), " is supported only where it flattens (batch, ...) to (batch, features)"));
  };
  if (op == "Flatten") {
    int64_t axis = IntAttr(node, "axis", 1);
    if (axis < 0) axis += rank;
    if (axis != 1) return refuse();
    FlattenTo(node);
    return absl::OkStatus();
  }
  if (op == "Reshape") {
    if (node.input_size() < 2) return refuse();
    std::vector<int64_t> target;
    if (const ConstTensor* c = Const(node.input(1)); c != nullptr && !c->is_float) {
      target = c->i;
    } else if (auto it = shapes_.find(node.input(1)); it != shapes_.end()) {
      target = it->second.values;
    } else {
      return refuse();
    }
    if (target.size() != 2) return refuse();
    const bool allow_zero = IntAttr(node, "allowzero", 0) != 0;
    // The batch dimension: kBatchDim, 0 (copy), or -1 with the features given.
    const bool batch_ok = target[0] == kBatchDim || (target[0] == 0 && !allow_zero) ||
                          (target[0] == -1 && target[1] == features);
    const bool features_ok = target[1] == features || (target[1] == -1 && target[0] != -1) ||
                             (target[1] == 0 && !allow_zero && rank == 2);
    if (!batch_ok || !features_ok) return refuse();
    FlattenTo(node);
    return absl::OkStatus();
  }
  // Squeeze / Unsqueeze: the axes from the attribute (opset < 13) or input 1.
  std::vector<int64_t> axes = IntsAttr(node, "axes");
  if (node.input_size() > 1 && !node.input(1).empty()) {
    const ConstTensor* c = Const(node.input(1));
    if (c == nullptr || c->is_float) return refuse();
    axes = c->i;
  }
  std::vector<int64_t> full = {-1};  // -1 = batch
  full.insert(full.end(), shape_.begin(), shape_.end());
  if (op == "Squeeze") {
    std::set<int64_t> drop;
    for (int64_t a : axes) {
      if (a < -rank || a >= rank) return refuse();
      drop.insert(a < 0 ? a + rank : a);
    }
    if (axes.empty()) {
      for (int64_t k = 1; k < rank; ++k) {
        if (full[k] == 1) drop.insert(k);
      }
    }
    std::vector<int64_t> kept;
    for (int64_t k = 0; k < rank; ++k) {
      if (drop.count(k) == 0) {
        kept.push_back(full[k]);
      } else if (k == 0 || full[k] != 1) {
        return refuse();
      }
    }
    if (drop.empty() || *drop.rbegin() >= rank) return refuse();
    if (kept.size() != 2) return refuse();
    FlattenTo(node);
    return absl::OkStatus();
  }
  // Unsqueeze on the chain never flattens.
  return refuse();
}

absl::Status Importer::Convert(const onnx::NodeProto& node, bool is_last) {
  const std::string& op = node.op_type();
  if (node.output_size() < 1 || node.output(0).empty()) {
    return absl::InvalidArgumentError(absl::StrCat(NodeName(node), " has no output"));
  }
  if (op == "Constant") {
    const onnx::AttributeProto* value = FindAttr(node, "value");
    if (value == nullptr || !value->has_t() || node.output_size() != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(NodeName(node), ": only Constant nodes with a tensor value are supported"));
    }
    ASSIGN_OR_RETURN(ConstTensor c, DecodeTensor(value->t()));
    consts_[node.output(0)] = std::move(c);
    return absl::OkStatus();
  }
  // The shape arithmetic of x.view(x.size(0), -1).
  if (op == "Shape") {
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
  const bool on_shape = node.input_size() > 0 && shapes_.count(node.input(0)) > 0;
  if (op == "Gather" && on_shape) {
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
  if (op == "Unsqueeze" && on_shape) {
    shapes_[node.output(0)] = shapes_[node.input(0)];
    return absl::OkStatus();
  }
  if (op == "Concat") {
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
  if (op == "Gather") {
    return absl::InvalidArgumentError(
        absl::StrCat(NodeName(node), ": only Gather on a shape is supported"));
  }
  if (op == "Softmax" || op == "LogSoftmax") {
    RETURN_IF_ERROR(ExpectActivation(node, 0));
    int64_t axis = IntAttr(node, "axis", opset_ >= 13 ? -1 : 1);
    if (!is_last || shape_.size() != 1 || (axis != 1 && axis != -1)) {
      return absl::InvalidArgumentError(
          absl::StrCat(NodeName(node), " is supported only as the last node, over the classes"));
    }
    Advance(node, shape_);  // stripped: the teacher serves logits
    return absl::OkStatus();
  }
  if (op == "Dropout" || op == "Identity") {
    RETURN_IF_ERROR(ExpectActivation(node, 0));
    RETURN_IF_ERROR(ExpectSingleOutput(node));
    Advance(node, shape_);
    return absl::OkStatus();
  }
  if (op == "Relu" || op == "LeakyRelu" || op == "Sigmoid" || op == "Tanh") {
    RETURN_IF_ERROR(ExpectActivation(node, 0));
    PendingLayer layer;
    layer.spec.kind = op == "Relu"      ? LayerSpec::Kind::kRelu
                      : op == "Sigmoid" ? LayerSpec::Kind::kSigmoid
                      : op == "Tanh"    ? LayerSpec::Kind::kTanh
                                        : LayerSpec::Kind::kLeakyRelu;
    if (op == "LeakyRelu") {
      layer.spec.alpha = FloatAttr(node, "alpha", 0.01f);  // ONNX's default
      if (!std::isfinite(layer.spec.alpha)) {
        return absl::InvalidArgumentError(
            absl::StrCat(NodeName(node), ": alpha ", layer.spec.alpha, " is not finite"));
      }
    }
    layers_.push_back(layer);
    Advance(node, shape_);
    return absl::OkStatus();
  }
  if (op == "Add") {
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

}  // namespace

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
