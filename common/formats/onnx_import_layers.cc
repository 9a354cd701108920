// ONNX import, part 2: layer conversion (onnx_import_internal.h).
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

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/formats/onnx_import_internal.h"
#include "common/nn/layer_factory.h"
#include "common/util/status_macros.h"

namespace distillery {
namespace onnx_import_internal {
namespace {

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

// A Conv's strides and dilations (1, 1 where absent): two sizes each, in
// [1, 65536].
absl::Status ReadStridesAndDilations(const onnx::NodeProto& node, int64_t stride[2],
                                     int64_t dilation[2]) {
  std::vector<int64_t> strides = IntsAttr(node, "strides");
  if (strides.empty()) strides = {1, 1};
  std::vector<int64_t> dilations = IntsAttr(node, "dilations");
  if (dilations.empty()) dilations = {1, 1};
  auto valid = [](const std::vector<int64_t>& v) {
    return v.size() == 2 && v[0] >= 1 && v[1] >= 1 && v[0] <= 65536 && v[1] <= 65536;
  };
  if (!valid(strides) || !valid(dilations)) {
    return absl::InvalidArgumentError(
        absl::StrCat(NodeName(node), ": needs 2-D positive strides and dilations"));
  }
  for (int k = 0; k < 2; ++k) stride[k] = strides[k], dilation[k] = dilations[k];
  return absl::OkStatus();
}

}  // namespace

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
  int64_t stride[2], dilation[2], pad[2];
  RETURN_IF_ERROR(ReadStridesAndDilations(node, stride, dilation));
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
  if (dilation[1] != dilation[0]) layer.spec.dilation_cols = static_cast<int>(dilation[1]);
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

namespace {

// The window of a MaxPool or AveragePool node on an input of shape `in`:
// kernel, strides and padding into `spec`; refuses anything but a 2-D
// kernel with positive strides and no dilation.
absl::Status ReadPoolWindow(const onnx::NodeProto& node, const Shape& in, LayerSpec* spec) {
  const std::vector<int64_t> ks = IntsAttr(node, "kernel_shape");
  std::vector<int64_t> strides = IntsAttr(node, "strides");
  if (strides.empty()) strides = {1, 1};
  std::vector<int64_t> dilations = IntsAttr(node, "dilations");
  if (dilations.empty()) dilations = {1, 1};
  if (ks.size() != 2 || ks[0] < 1 || ks[1] < 1 || ks[0] > in[1] + 65536 || ks[1] > in[2] + 65536 ||
      strides.size() != 2 || strides[0] < 1 || strides[1] < 1 || strides[0] > 65536 ||
      strides[1] > 65536 || dilations != std::vector<int64_t>{1, 1}) {
    return absl::InvalidArgumentError(absl::StrCat(
        NodeName(node), ": needs a 2-D kernel_shape, positive strides and no dilation"));
  }
  const int64_t kernel[2] = {ks[0], ks[1]};
  const int64_t stride[2] = {strides[0], strides[1]};
  const int64_t dilation[2] = {1, 1};
  int64_t pad[2];
  RETURN_IF_ERROR(ResolvePads(node, in, kernel, stride, dilation, pad));
  spec->kernel_rows = static_cast<int>(kernel[0]);
  spec->kernel_cols = static_cast<int>(kernel[1]);
  spec->stride_rows = static_cast<int>(stride[0]);
  spec->stride_cols = static_cast<int>(stride[1]);
  spec->pad_rows = static_cast<int>(pad[0]);
  spec->pad_cols = static_cast<int>(pad[1]);
  return absl::OkStatus();
}

// The output shape of pooling `spec` (a max or average pool) over `in`.
absl::StatusOr<Shape> PoolOutputShape(const onnx::NodeProto& node, const LayerSpec& spec,
                                      const Shape& in) {
  if (!spec.ceil_mode) {
    const int64_t rows = WindowOut(in[1], spec.kernel_rows, spec.stride_rows, spec.pad_rows, 1);
    const int64_t cols = WindowOut(in[2], spec.kernel_cols, spec.stride_cols, spec.pad_cols, 1);
    if (rows < 1 || cols < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(NodeName(node), ": its window does not fit the image"));
    }
    return Shape{in[0], rows, cols};
  }
  // The engine's own formula (and its refusals) for ceil mode.
  absl::StatusOr<Shape> out = [&]() -> absl::StatusOr<Shape> {
    ASSIGN_OR_RETURN(std::unique_ptr<Layer> pool, MakeLayer(spec, 0, in, 0, nullptr));
    return pool->OutputShape(in);
  }();
  if (!out.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(NodeName(node), ": ", out.status().message()));
  }
  return out;
}

}  // namespace

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
  const bool ceil_mode = IntAttr(node, "ceil_mode", 0) != 0;
  if (ceil_mode && absl::StartsWith(StringAttr(node, "auto_pad"), "SAME")) {
    return absl::InvalidArgumentError(absl::StrCat(NodeName(node), ": ceil_mode=1 with auto_pad ",
                                                   StringAttr(node, "auto_pad"),
                                                   " is not supported (give explicit pads)"));
  }
  if (is_max && IntAttr(node, "storage_order", 0) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(NodeName(node), ": storage_order must be 0"));
  }
  RETURN_IF_ERROR(ReadPoolWindow(node, shape_, &layer.spec));
  layer.spec.kind = is_max ? LayerSpec::Kind::kMaxPool2d : LayerSpec::Kind::kAvgPool2d;
  layer.spec.count_include_pad = !is_max && IntAttr(node, "count_include_pad", 0) != 0;
  layer.spec.ceil_mode = ceil_mode;
  ASSIGN_OR_RETURN(const Shape out, PoolOutputShape(node, layer.spec, shape_));
  layers_.push_back(layer);
  Advance(node, out);
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
  const BatchNormConstants bn = {&t[0]->f, &t[1]->f, &t[2]->f, &t[3]->f, eps, channels};
  for (int64_t c = 0; c < channels; ++c) {
    if (!(double{(*bn.var)[c]} + eps > 0.0)) {
      return absl::DataLossError(
          absl::StrCat(NodeName(node), ": variance + epsilon is not positive at ", c));
    }
  }
  if (!layers_.empty() && layers_.back().foldable && (layers_.back().spec.units == channels)) {
    return FoldBatchNorm(node, bn);
  }
  return AddBatchNormLayer(node, bn);
}

absl::Status Importer::FoldBatchNorm(const onnx::NodeProto& node, const BatchNormConstants& bn) {
  PendingLayer& l = layers_.back();
  const int64_t per_unit = static_cast<int64_t>(l.weight.size()) / bn.channels;
  for (int64_t c = 0; c < bn.channels; ++c) {
    const double s = double{(*bn.gamma)[c]} / std::sqrt(double{(*bn.var)[c]} + bn.epsilon);
    for (int64_t k = 0; k < per_unit; ++k) {
      float& wv = l.weight[c * per_unit + k];
      wv = static_cast<float>(wv * s);
    }
    l.bias[c] = static_cast<float>((double{l.bias[c]} - (*bn.mean)[c]) * s + (*bn.beta)[c]);
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

absl::Status Importer::AddBatchNormLayer(const onnx::NodeProto& node,
                                         const BatchNormConstants& bn) {
  // Its epsilon is the engine's, so the variance absorbs the difference.
  PendingLayer layer;
  layer.spec.kind = LayerSpec::Kind::kBatchNorm;
  layer.weight = *bn.gamma;
  layer.bias = *bn.beta;
  layer.mean = *bn.mean;
  layer.var.resize(bn.channels);
  for (int64_t c = 0; c < bn.channels; ++c) {
    const double v = double{(*bn.var)[c]} + bn.epsilon - kBatchNormEpsilon;
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

absl::Status Importer::ConvertActivation(const onnx::NodeProto& node) {
  const std::string& op = node.op_type();
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

}  // namespace onnx_import_internal
}  // namespace distillery
