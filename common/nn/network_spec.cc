#include "common/nn/network_spec.h"

#include <cmath>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/util/status_macros.h"

namespace distillery {
namespace {

using Kind = LayerSpec::Kind;

constexpr int64_t kMaxUnits = 65536;
constexpr int kMaxWindow = 64;

struct KindName {
  Kind kind;
  const char* name;
};
constexpr KindName kKindNames[] = {
    {Kind::kLinear, "linear"},       {Kind::kConv2d, "conv2d"},
    {Kind::kMaxPool2d, "maxpool2d"}, {Kind::kAvgPool2d, "avgpool2d"},
    {Kind::kBatchNorm, "batchnorm"}, {Kind::kFlatten, "flatten"},
    {Kind::kRelu, "relu"},           {Kind::kDropout, "dropout"},
    {Kind::kLeakyRelu, "leakyrelu"}, {Kind::kSigmoid, "sigmoid"},
    {Kind::kTanh, "tanh"},           {Kind::kGlobalAvgPool, "globalavgpool"},
};

absl::Status TokenError(const std::string& text, absl::string_view token, absl::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("architecture \"", text, "\": \"", token, "\" ", why));
}

bool ParseInt(absl::string_view s, int64_t lo, int64_t hi, int64_t* value) {
  return absl::SimpleAtoi(s, value) && *value >= lo && *value <= hi;
}

// The MLP form: "784-1200-1200-10".
absl::StatusOr<NetworkSpec> ParseMlp(const std::string& text, const Shape& input_shape,
                                     float input_dropout, float hidden_dropout) {
  std::vector<int64_t> sizes;
  for (absl::string_view part : absl::StrSplit(text, '-')) {
    int64_t size = 0;
    if (!ParseInt(part, 1, kMaxUnits, &size)) {
      return TokenError(text, part, absl::StrCat("is not a layer size in [1, ", kMaxUnits, "]"));
    }
    sizes.push_back(size);
  }
  if (sizes.size() < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("architecture \"", text, "\" needs at least an input and an output size"));
  }
  if (!input_shape.empty() && ShapeSize(input_shape) != sizes.front()) {
    return absl::InvalidArgumentError(
        absl::StrCat("architecture \"", text, "\" takes ", sizes.front(),
                     " inputs but the data's examples have ", ShapeString(input_shape), " = ",
                     ShapeSize(input_shape), " values"));
  }
  NetworkSpec spec;
  spec.mlp_form = true;
  spec.input_shape = input_shape.empty() ? Shape{sizes.front()} : input_shape;
  if (input_dropout > 0.f) {
    LayerSpec dropout{Kind::kDropout};
    dropout.rate = input_dropout;
    dropout.seed_salt = 1000;
    spec.layers.push_back(dropout);
  }
  for (size_t i = 0; i + 1 < sizes.size(); ++i) {
    const bool hidden = i + 2 < sizes.size();
    LayerSpec linear{Kind::kLinear};
    linear.units = sizes[i + 1];
    linear.max_norm = hidden;
    spec.layers.push_back(linear);
    if (!hidden) break;
    spec.layers.push_back(LayerSpec{Kind::kRelu});
    if (hidden_dropout > 0.f) {
      LayerSpec dropout{Kind::kDropout};
      dropout.rate = hidden_dropout;
      dropout.seed_salt = 1001 + i;
      spec.layers.push_back(dropout);
    }
  }
  return spec;
}

bool ParseWindow(absl::string_view s, int* rows, int* cols);

// Splits "body/opt1/opt2" options of a conv or pool token.
struct WindowOptions {
  int stride = 0;  // 0: the default
  int pad = 0;
  bool same = false;
  int dilation = 1;
  int dilation_cols = 0;  // 0: the same as dilation
  int groups = 1;
  bool include_pad = false;
  bool ceil = false;
};

absl::Status ParseWindowOptions(const std::string& text, absl::string_view token,
                                const std::vector<absl::string_view>& options, WindowOptions* out) {
  for (size_t i = 1; i < options.size(); ++i) {
    absl::string_view o = options[i];
    int64_t v = 0;
    if (o == "same") {
      out->same = true;
    } else if (o == "inclpad") {
      out->include_pad = true;
    } else if (o == "ceil") {
      out->ceil = true;
    } else if (absl::ConsumePrefix(&o, "s") && ParseInt(o, 1, kMaxWindow, &v)) {
      out->stride = static_cast<int>(v);
    } else if (absl::ConsumePrefix(&o, "p") && ParseInt(o, 0, kMaxWindow, &v)) {
      out->pad = static_cast<int>(v);
    } else if (absl::ConsumePrefix(&o, "d") && ParseInt(o, 1, kMaxWindow, &v)) {
      out->dilation = static_cast<int>(v);
    } else if (int r = 0, c = 0; absl::StartsWith(options[i], "d") &&
                                 absl::StrContains(options[i], "x") &&
                                 ParseWindow(options[i].substr(1), &r, &c)) {
      out->dilation = r;
      out->dilation_cols = c == r ? 0 : c;
    } else if (absl::ConsumePrefix(&o, "g") && ParseInt(o, 1, kMaxUnits, &v)) {
      out->groups = static_cast<int>(v);
    } else {
      return TokenError(
          text, token,
          absl::StrCat("has an unknown option \"", options[i],
                       "\" (s<stride>, p<pad>, same, d<dilation>, d<R>x<C>, g<groups>, "
                       "inclpad, ceil)"));
    }
  }
  return absl::OkStatus();
}

// "5x5" or "3" -> (rows, cols).
bool ParseWindow(absl::string_view s, int* rows, int* cols) {
  int64_t r = 0, c = 0;
  std::vector<absl::string_view> parts = absl::StrSplit(s, 'x');
  if (parts.size() == 1 && ParseInt(parts[0], 1, kMaxWindow, &r))
    c = r;
  else if (parts.size() != 2 || !ParseInt(parts[0], 1, kMaxWindow, &r) ||
           !ParseInt(parts[1], 1, kMaxWindow, &c)) {
    return false;
  }
  *rows = static_cast<int>(r);
  *cols = static_cast<int>(c);
  return true;
}

// Parses "<units>[+bn][:<activation>]" after "conv..:" or "fc:" into
// `layer` and what follows it.
absl::Status ParseUnitsTail(const std::string& text, absl::string_view token,
                            absl::string_view tail, bool last_fc, LayerSpec layer,
                            float hidden_dropout, std::vector<LayerSpec>* out) {
  std::vector<absl::string_view> parts = absl::StrSplit(tail, ':');
  if (parts.size() > 2) return TokenError(text, token, "has too many ':' parts");
  absl::string_view units_text = parts[0];
  const bool bn = absl::ConsumeSuffix(&units_text, "+bn");
  int64_t units = 0;
  if (!ParseInt(units_text, 1, kMaxUnits, &units)) {
    return TokenError(text, token, absl::StrCat("needs a unit count in [1, ", kMaxUnits, "]"));
  }
  bool relu = !last_fc;
  if (parts.size() == 2) {
    if (parts[1] == "relu")
      relu = true;
    else if (parts[1] == "none")
      relu = false;
    else
      return TokenError(text, token, "has an unknown activation (relu or none)");
  }
  layer.units = units;
  layer.max_norm = !last_fc;
  out->push_back(layer);
  if (bn) out->push_back(LayerSpec{Kind::kBatchNorm});
  if (relu) out->push_back(LayerSpec{Kind::kRelu});
  if (layer.kind == Kind::kLinear && !last_fc && hidden_dropout > 0.f) {
    LayerSpec dropout{Kind::kDropout};
    dropout.rate = hidden_dropout;
    out->push_back(dropout);
  }
  return absl::OkStatus();
}

absl::Status ParseConv(const std::string& text, absl::string_view token,
                       std::vector<LayerSpec>* out) {
  // "+bn" may stand after the channels or after the options.
  std::string body(token.substr(4));
  const size_t bn_at = body.find("+bn");
  const bool bn = bn_at != std::string::npos;
  if (bn) body.erase(bn_at, 3);
  absl::string_view rest = body;
  const size_t colon = rest.find(':');
  if (colon == absl::string_view::npos) {
    return TokenError(text, token, "needs its output channels, e.g. conv5x5:32");
  }
  std::vector<absl::string_view> options = absl::StrSplit(rest.substr(0, colon), '/');
  // Options may also follow the channels: "conv3x3:32/s2".
  absl::string_view tail = rest.substr(colon + 1);
  std::vector<absl::string_view> tail_parts = absl::StrSplit(tail, '/');
  std::string tail_head(tail_parts[0]);
  if (bn) tail_head += "+bn";
  // Activation may trail the options: "conv3x3:32/s2:none".
  std::string activation;
  for (size_t i = 1; i < tail_parts.size(); ++i) {
    absl::string_view o = tail_parts[i];
    const size_t c = o.find(':');
    if (c != absl::string_view::npos) {
      activation = std::string(o.substr(c));
      o = o.substr(0, c);
    }
    options.push_back(o);
  }
  LayerSpec conv{Kind::kConv2d};
  if (!ParseWindow(options[0], &conv.kernel_rows, &conv.kernel_cols)) {
    return TokenError(text, token, "needs a kernel size, e.g. conv5x5 or conv3");
  }
  WindowOptions o;
  RETURN_IF_ERROR(ParseWindowOptions(text, token, options, &o));
  conv.stride_rows = conv.stride_cols = o.stride == 0 ? 1 : o.stride;
  conv.pad_rows = conv.pad_cols = o.pad;
  if (o.same) {
    if (conv.kernel_rows % 2 == 0 || conv.kernel_cols % 2 == 0 || conv.stride_rows != 1) {
      return TokenError(text, token, "can be /same only with an odd kernel and stride 1");
    }
    conv.pad_rows = (conv.kernel_rows - 1) / 2;
    conv.pad_cols = (conv.kernel_cols - 1) / 2;
  }
  conv.dilation = o.dilation;
  conv.dilation_cols = o.dilation_cols;
  conv.groups = o.groups;
  if (o.include_pad || o.ceil) {
    return TokenError(text, token, "cannot take inclpad or ceil (pooling only)");
  }
  return ParseUnitsTail(text, token, tail_head + activation, false, conv, 0.f, out);
}

absl::Status ParsePool(const std::string& text, absl::string_view token, Kind kind,
                       absl::string_view body, std::vector<LayerSpec>* out) {
  std::vector<absl::string_view> options = absl::StrSplit(body, '/');
  LayerSpec pool{kind};
  if (!ParseWindow(options[0], &pool.kernel_rows, &pool.kernel_cols)) {
    return TokenError(text, token, "needs a window size, e.g. maxpool2 or avgpool3x3");
  }
  WindowOptions o;
  RETURN_IF_ERROR(ParseWindowOptions(text, token, options, &o));
  if (o.same || o.dilation != 1 || o.dilation_cols != 0 || o.groups != 1) {
    return TokenError(text, token, "takes only /s<stride>, /p<pad>, /inclpad and /ceil");
  }
  if (o.include_pad && kind != Kind::kAvgPool2d) {
    return TokenError(text, token, "takes /inclpad only for average pooling");
  }
  pool.stride_rows = o.stride == 0 ? pool.kernel_rows : o.stride;
  pool.stride_cols = o.stride == 0 ? pool.kernel_cols : o.stride;
  pool.pad_rows = pool.pad_cols = o.pad;
  pool.count_include_pad = o.include_pad;
  pool.ceil_mode = o.ceil;
  out->push_back(pool);
  return absl::OkStatus();
}

absl::Status ParseToken(const std::string& text, absl::string_view token, bool last_fc,
                        float hidden_dropout, std::vector<LayerSpec>* out) {
  absl::string_view body = token;
  if (absl::StartsWith(token, "conv")) return ParseConv(text, token, out);
  if (absl::ConsumePrefix(&body, "fc:")) {
    return ParseUnitsTail(text, token, body, last_fc, LayerSpec{Kind::kLinear}, hidden_dropout,
                          out);
  }
  if (absl::ConsumePrefix(&body, "maxpool") || absl::ConsumePrefix(&body, "pool")) {
    return ParsePool(text, token, Kind::kMaxPool2d, body, out);
  }
  if (absl::ConsumePrefix(&body, "avgpool")) {
    return ParsePool(text, token, Kind::kAvgPool2d, body, out);
  }
  if (token == "bn") return out->push_back(LayerSpec{Kind::kBatchNorm}), absl::OkStatus();
  if (token == "relu") return out->push_back(LayerSpec{Kind::kRelu}), absl::OkStatus();
  if (token == "flatten") return out->push_back(LayerSpec{Kind::kFlatten}), absl::OkStatus();
  if (token == "sigmoid") return out->push_back(LayerSpec{Kind::kSigmoid}), absl::OkStatus();
  if (token == "tanh") return out->push_back(LayerSpec{Kind::kTanh}), absl::OkStatus();
  if (token == "gap") return out->push_back(LayerSpec{Kind::kGlobalAvgPool}), absl::OkStatus();
  if (absl::ConsumePrefix(&body, "leakyrelu:")) {
    LayerSpec leaky{Kind::kLeakyRelu};
    if (!absl::SimpleAtof(body, &leaky.alpha) || !std::isfinite(leaky.alpha)) {
      return TokenError(text, token, "needs a finite slope, e.g. leakyrelu:0.01");
    }
    out->push_back(leaky);
    return absl::OkStatus();
  }
  if (absl::ConsumePrefix(&body, "dropout:")) {
    LayerSpec dropout{Kind::kDropout};
    if (!absl::SimpleAtof(body, &dropout.rate) || !(dropout.rate >= 0.f && dropout.rate < 1.f)) {
      return TokenError(text, token, "needs a rate in [0, 1)");
    }
    out->push_back(dropout);
    return absl::OkStatus();
  }
  return TokenError(text, token,
                    "is not a layer (conv<R>x<C>:<channels>, fc:<units>, maxpool<K>, "
                    "avgpool<K>, gap, bn, relu, leakyrelu:<alpha>, sigmoid, tanh, "
                    "dropout:<rate>, flatten)");
}

bool IsImageLayer(Kind kind) {
  return kind == Kind::kConv2d || kind == Kind::kMaxPool2d || kind == Kind::kAvgPool2d ||
         kind == Kind::kGlobalAvgPool;
}

absl::StatusOr<NetworkSpec> ParseLayerList(const std::string& text, const Shape& input_shape,
                                           float input_dropout, float hidden_dropout) {
  std::vector<absl::string_view> tokens = absl::StrSplit(text, ',');
  size_t last_fc = tokens.size();
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (absl::StartsWith(tokens[i], "fc:")) last_fc = i;
  }
  NetworkSpec spec;
  spec.input_shape = input_shape;
  if (input_dropout > 0.f) {
    LayerSpec dropout{Kind::kDropout};
    dropout.rate = input_dropout;
    spec.layers.push_back(dropout);
  }
  bool image = input_shape.size() == 3;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i].empty()) return TokenError(text, tokens[i], "is empty");
    std::vector<LayerSpec> parsed;
    RETURN_IF_ERROR(ParseToken(text, tokens[i], i == last_fc, hidden_dropout, &parsed));
    if (image && parsed.front().kind == Kind::kLinear) {
      spec.layers.push_back(LayerSpec{Kind::kFlatten});
    }
    for (const LayerSpec& layer : parsed) {
      if (IsImageLayer(layer.kind)) image = true;
      if (layer.kind == Kind::kLinear || layer.kind == Kind::kFlatten) image = false;
    }
    spec.layers.insert(spec.layers.end(), parsed.begin(), parsed.end());
  }
  // Dropout masks are keyed by their position among the layers.
  for (size_t i = 0; i < spec.layers.size(); ++i) {
    if (spec.layers[i].kind == Kind::kDropout) spec.layers[i].seed_salt = 1000 + i;
  }
  return spec;
}

}  // namespace

const char* LayerKindName(Kind kind) {
  for (const KindName& k : kKindNames) {
    if (k.kind == kind) return k.name;
  }
  return "unknown";
}

absl::StatusOr<Kind> LayerKindFromName(const std::string& name) {
  for (const KindName& k : kKindNames) {
    if (name == k.name) return k.kind;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown layer kind \"", name, "\""));
}

std::string LayerSpec::Token() const {
  auto window = [this](const char* name) {
    std::string t = absl::StrCat(name, kernel_rows, "x", kernel_cols);
    if (stride_rows != kernel_rows || kind == Kind::kConv2d) {
      if (!(kind == Kind::kConv2d && stride_rows == 1)) absl::StrAppend(&t, "/s", stride_rows);
    }
    if (pad_rows != 0) absl::StrAppend(&t, "/p", pad_rows);
    return t;
  };
  switch (kind) {
    case Kind::kLinear:
      return absl::StrCat("fc:", units, ":none");
    case Kind::kConv2d: {
      std::string t = window("conv");
      if (dilation_cols != 0 && dilation_cols != dilation) {
        absl::StrAppend(&t, "/d", dilation, "x", dilation_cols);
      } else if (dilation != 1) {
        absl::StrAppend(&t, "/d", dilation);
      }
      if (groups != 1) absl::StrAppend(&t, "/g", groups);
      return absl::StrCat(t, ":", units, ":none");
    }
    case Kind::kMaxPool2d:
      return absl::StrCat(window("maxpool"), ceil_mode ? "/ceil" : "");
    case Kind::kAvgPool2d:
      return absl::StrCat(window("avgpool"), count_include_pad ? "/inclpad" : "",
                          ceil_mode ? "/ceil" : "");
    case Kind::kBatchNorm:
      return "bn";
    case Kind::kFlatten:
      return "flatten";
    case Kind::kRelu:
      return "relu";
    case Kind::kDropout:
      return absl::StrCat("dropout:", rate);
    case Kind::kLeakyRelu:
      return absl::StrCat("leakyrelu:", alpha);
    case Kind::kSigmoid:
      return "sigmoid";
    case Kind::kTanh:
      return "tanh";
    case Kind::kGlobalAvgPool:
      return "gap";
  }
  return "unknown";
}

absl::StatusOr<NetworkSpec> NetworkSpec::Parse(const std::string& text, const Shape& input_shape,
                                               float input_dropout, float hidden_dropout) {
  if (!(input_dropout >= 0.f && input_dropout < 1.f) ||
      !(hidden_dropout >= 0.f && hidden_dropout < 1.f)) {
    return absl::InvalidArgumentError(absl::StrCat("dropout rates must be in [0, 1), got input ",
                                                   input_dropout, " and hidden ", hidden_dropout));
  }
  if (text.empty()) return absl::InvalidArgumentError("the architecture is empty");
  const bool mlp = text.find_first_not_of("0123456789-") == std::string::npos;
  if (mlp) return ParseMlp(text, input_shape, input_dropout, hidden_dropout);
  return ParseLayerList(text, input_shape, input_dropout, hidden_dropout);
}

std::vector<int64_t> NetworkSpec::MlpLayerSizes() const {
  if (!mlp_form) return {};
  std::vector<int64_t> sizes = {ShapeSize(input_shape)};
  for (const LayerSpec& layer : layers) {
    if (layer.kind == Kind::kLinear) sizes.push_back(layer.units);
  }
  return sizes;
}

std::string NetworkSpec::ArchitectureString() const {
  if (mlp_form) return absl::StrJoin(MlpLayerSizes(), "-");
  std::vector<std::string> tokens;
  for (const LayerSpec& layer : layers) tokens.push_back(layer.Token());
  return absl::StrJoin(tokens, ",");
}

}  // namespace distillery
