#include "common/nn/layer_factory.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/nn/layers/activation_layer.h"
#include "common/nn/layers/batch_norm_layer.h"
#include "common/nn/layers/conv2d_layer.h"
#include "common/nn/layers/dropout_layer.h"
#include "common/nn/layers/flatten_layer.h"
#include "common/nn/layers/global_avg_pool_layer.h"
#include "common/nn/layers/linear_layer.h"
#include "common/nn/layers/pool2d_layer.h"
#include "common/nn/layers/relu_layer.h"
#include "common/util/random.h"
#include "common/util/status_macros.h"

namespace distillery {

using Kind = LayerSpec::Kind;

namespace {

constexpr int64_t kMaxLayerUnits = 65536;
constexpr int kMaxLayerWindow = 64;

absl::Status ValidateHyperparameters(const LayerSpec& spec) {
  auto out_of_range = [&spec](const char* what, int64_t value) {
    return absl::InvalidArgumentError(
        absl::StrCat(spec.Token(), ": ", what, " ", value, " is out of range"));
  };
  if (spec.kind == Kind::kLinear || spec.kind == Kind::kConv2d) {
    if (spec.units < 1 || spec.units > kMaxLayerUnits) return out_of_range("units", spec.units);
  }
  if (spec.kind == Kind::kConv2d || spec.kind == Kind::kMaxPool2d ||
      spec.kind == Kind::kAvgPool2d) {
    for (int v : {spec.kernel_rows, spec.kernel_cols, spec.stride_rows, spec.stride_cols}) {
      if (v < 1 || v > kMaxLayerWindow) return out_of_range("window or stride", v);
    }
    for (int v : {spec.pad_rows, spec.pad_cols}) {
      if (v < 0 || v > kMaxLayerWindow) return out_of_range("padding", v);
    }
  }
  if (spec.kind == Kind::kConv2d) {
    if (spec.dilation < 1 || spec.dilation > kMaxLayerWindow) {
      return out_of_range("dilation", spec.dilation);
    }
    if (spec.dilation_cols < 0 || spec.dilation_cols > kMaxLayerWindow) {
      return out_of_range("column dilation", spec.dilation_cols);
    }
    if (spec.groups < 1 || spec.units % spec.groups != 0)
      return out_of_range("groups", spec.groups);
  }
  if (spec.kind == Kind::kLeakyRelu && !std::isfinite(spec.alpha)) {
    return absl::InvalidArgumentError(
        absl::StrCat("leaky ReLU slope must be finite, got ", spec.alpha));
  }
  if (spec.kind == Kind::kDropout && !(spec.rate >= 0.f && spec.rate < 1.f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("dropout rate must be in [0, 1), got ", spec.rate));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Layer>> MakeLayer(const LayerSpec& spec, int parameter_index,
                                                 const Shape& input_shape, uint64_t seed,
                                                 DnnlContext* context) {
  RETURN_IF_ERROR(ValidateHyperparameters(spec));
  switch (spec.kind) {
    case Kind::kLinear:
      return std::make_unique<LinearLayer>(parameter_index, ShapeSize(input_shape), spec.units,
                                           spec.max_norm, context);
    case Kind::kRelu:
      return std::make_unique<ReluLayer>(context);
    case Kind::kDropout:
      return std::make_unique<DropoutLayer>(spec.rate, HashCombine(seed, spec.seed_salt));
    case Kind::kFlatten:
      return std::make_unique<FlattenLayer>();
    case Kind::kLeakyRelu:
      return std::make_unique<ActivationLayer>(ActivationKind::kLeakyRelu, spec.alpha, context);
    case Kind::kSigmoid:
      return std::make_unique<ActivationLayer>(ActivationKind::kSigmoid, 0.f, context);
    case Kind::kTanh:
      return std::make_unique<ActivationLayer>(ActivationKind::kTanh, 0.f, context);
    case Kind::kGlobalAvgPool:
      if (input_shape.size() != 3) break;
      return std::make_unique<GlobalAvgPoolLayer>();
    case Kind::kConv2d: {
      if (input_shape.size() != 3) break;
      Conv2dOptions o;
      o.in_channels = input_shape[0];
      o.out_channels = spec.units;
      o.kernel_rows = spec.kernel_rows;
      o.kernel_cols = spec.kernel_cols;
      o.stride_rows = spec.stride_rows;
      o.stride_cols = spec.stride_cols;
      o.pad_rows = spec.pad_rows;
      o.pad_cols = spec.pad_cols;
      o.dilation_rows = spec.dilation;
      o.dilation_cols = spec.dilation_cols != 0 ? spec.dilation_cols : spec.dilation;
      o.groups = spec.groups;
      o.max_norm_applies = spec.max_norm;
      return std::make_unique<Conv2dLayer>(parameter_index, o, context);
    }
    case Kind::kMaxPool2d:
    case Kind::kAvgPool2d: {
      if (input_shape.size() != 3) break;
      Pool2dOptions o;
      o.kind = spec.kind == Kind::kMaxPool2d ? PoolKind::kMax : PoolKind::kAverage;
      o.window_rows = spec.kernel_rows;
      o.window_cols = spec.kernel_cols;
      o.stride_rows = spec.stride_rows;
      o.stride_cols = spec.stride_cols;
      o.pad_rows = spec.pad_rows;
      o.pad_cols = spec.pad_cols;
      o.count_include_pad = spec.count_include_pad;
      o.ceil_mode = spec.ceil_mode;
      return std::make_unique<Pool2dLayer>(o, context);
    }
    case Kind::kBatchNorm:
      if (input_shape.size() != 3 && input_shape.size() != 1) break;
      return std::make_unique<BatchNormLayer>(parameter_index, input_shape[0], context);
  }
  return absl::InvalidArgumentError(absl::StrCat(
      spec.Token(), " takes images (channels, rows, cols), got ", ShapeString(input_shape)));
}

int64_t LayerParameterCount(const LayerSpec& spec, const Shape& input_shape) {
  // In double, saturated: the hyperparameters may come from a file.
  const double units = static_cast<double>(std::max<int64_t>(spec.units, 0));
  double count = 0;
  if (spec.kind == Kind::kLinear) {
    count = units * static_cast<double>(ShapeSize(input_shape)) + units;
  } else if (spec.kind == Kind::kConv2d && !input_shape.empty() && spec.groups > 0) {
    count = units * static_cast<double>(input_shape[0] / spec.groups) * spec.kernel_rows *
                spec.kernel_cols +
            units;
  } else if (spec.kind == Kind::kBatchNorm && !input_shape.empty()) {
    count = 2.0 * static_cast<double>(input_shape[0]);
  }
  const double cap = static_cast<double>(kMaxNetworkParameters) + 1;
  return static_cast<int64_t>(std::min(count, cap));
}

int64_t LayerMacsPerExample(const LayerSpec& spec, const Shape& input_shape,
                            const Shape& output_shape) {
  if (spec.kind == Kind::kLinear) return ShapeSize(input_shape) * ShapeSize(output_shape);
  if (spec.kind == Kind::kConv2d && !input_shape.empty()) {
    return ShapeSize(output_shape) * (input_shape[0] / spec.groups) * spec.kernel_rows *
           spec.kernel_cols;
  }
  return 0;
}

}  // namespace distillery
