// What a network is: its input shape and its list of typed layers, and the
// architecture syntax a person types to describe one.
//
// Two syntaxes are accepted by NetworkSpec::Parse:
//
//  1. The multilayer-perceptron form of earlier releases, units per layer
//     joined by '-', input first and classes last: "784-1200-1200-10". Every
//     hidden Linear is followed by a ReLU (and by dropout when the hidden
//     dropout rate is > 0); the input gets dropout when its rate is > 0.
//
//  2. The layer-list form, tokens joined by ',', e.g.
//       "conv5x5:32,pool2,conv5x5:64,pool2,fc:1024,fc:10"
//     Tokens:
//       conv<R>x<C>:<channels>[/s<stride>][/p<pad>|/same][/d<dilation>|/d<R>x<C>]
//           [/g<groups>][+bn][:<activation>]
//                          2-D convolution with an R x C kernel; "same"
//                          pads (R-1)/2 and (C-1)/2 (odd kernels, stride 1);
//                          "+bn" puts batch normalization after it. The
//                          activation (relu, the default, or none) follows.
//       fc:<units>[+bn][:<activation>]
//                          fully connected; the last fc's activation
//                          defaults to none (its outputs are the logits),
//                          every other one's to relu, followed by dropout
//                          at the hidden rate when that is > 0.
//       maxpool<K>[/s<stride>][/p<pad>][/ceil]   (or pool<K>) max pooling, K x K
//       avgpool<K>[/s<stride>][/p<pad>][/inclpad][/ceil]
//                          average pooling (padding excluded from the
//                          average unless /inclpad); stride defaults to K;
//                          /ceil rounds the output size up (ceil_mode)
//       bn                 batch normalization
//       relu               rectified linear unit
//       leakyrelu:<alpha>  leaky ReLU, slope alpha below 0 (e.g. leakyrelu:0.01)
//       sigmoid, tanh      the logistic sigmoid and the hyperbolic tangent
//       gap                global average pooling: (channels, rows, cols) ->
//                          (channels, 1, 1), any image size
//       dropout:<rate>     inverted dropout
//       flatten            (channels, rows, cols) -> (channels*rows*cols);
//                          inserted by itself before the first fc that
//                          follows image layers
//     The input shape is not part of the text: it comes from the data.
//
// ArchitectureString() gives a canonical layer-list text that parses back to
// the same spec (one token per layer, every activation explicit).
#ifndef DISTILLERY_COMMON_NN_NETWORK_SPEC_H_
#define DISTILLERY_COMMON_NN_NETWORK_SPEC_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/tensor/tensor.h"

namespace distillery {

// Batch normalization's epsilon: y = gamma (x - mean) / sqrt(var + eps) + beta.
inline constexpr float kBatchNormEpsilon = 1e-5f;

// One layer and its hyperparameters.
struct LayerSpec {
  enum class Kind {
    kLinear,
    kConv2d,
    kMaxPool2d,
    kAvgPool2d,
    kBatchNorm,
    kFlatten,
    kRelu,
    kDropout,
    kLeakyRelu,
    kSigmoid,
    kTanh,
    kGlobalAvgPool,
  };
  Kind kind = Kind::kLinear;
  // Linear: output features; Conv2d: output channels.
  int64_t units = 0;
  // Conv2d and pooling: window (rows, cols), stride, symmetric padding.
  int kernel_rows = 0, kernel_cols = 0;
  int stride_rows = 1, stride_cols = 1;
  int pad_rows = 0, pad_cols = 0;
  // Conv2d only: the dilation of the rows, and of the columns when
  // dilation_cols is not 0 (else the same).
  int dilation = 1;
  int dilation_cols = 0;
  int groups = 1;
  // AvgPool2d: whether padded elements count in the average.
  bool count_include_pad = false;
  // Pooling: the output size rounded up (PyTorch's ceil_mode).
  bool ceil_mode = false;
  // Dropout: the probability of dropping a unit, and the salt that keys its
  // masks with the network's seed.
  float rate = 0.f;
  uint64_t seed_salt = 0;
  // LeakyRelu: the slope for negative inputs.
  float alpha = 0.f;
  // Linear and Conv2d: whether max-norm applies to the weights (hidden
  // layers: true; the output layer: false).
  bool max_norm = false;

  // The layer's token in the canonical architecture text, e.g. "conv5x5:32:none".
  std::string Token() const;
};

// "linear", "conv2d", "maxpool2d", "avgpool2d", "batchnorm", "flatten",
// "relu", "dropout", "leakyrelu", "sigmoid", "tanh", "globalavgpool": the
// kind's name in checkpoints.
const char* LayerKindName(LayerSpec::Kind kind);
// The inverse of LayerKindName; InvalidArgument for an unknown name.
absl::StatusOr<LayerSpec::Kind> LayerKindFromName(const std::string& name);

struct NetworkSpec {
  // One example's input shape: (channels, rows, cols) for images, or
  // (features).
  Shape input_shape;
  std::vector<LayerSpec> layers;
  // Set by the MLP form: the text was "784-1200-1200-10" style (kept so that
  // ArchitectureString() and checkpoints keep that form for MLPs).
  bool mlp_form = false;

  // Parses `text` (either syntax above) for inputs of `input_shape`, with
  // the given dropout rates (the MLP form's input and hidden dropout; the
  // layer-list form's hidden dropout after every hidden fc, and input
  // dropout before the first layer). InvalidArgument naming the token for
  // text that does not parse, and for an MLP form whose first size is not
  // the input's element count. Shapes are checked by Network::Create.
  static absl::StatusOr<NetworkSpec> Parse(const std::string& text, const Shape& input_shape,
                                           float input_dropout = 0.f, float hidden_dropout = 0.f);

  // The MLP form ("784-1200-1200-10") when mlp_form, else the canonical
  // layer-list text.
  std::string ArchitectureString() const;
  // The units of the MLP form, input first (empty unless mlp_form).
  std::vector<int64_t> MlpLayerSizes() const;
};

}  // namespace distillery

#endif  // DISTILLERY_COMMON_NN_NETWORK_SPEC_H_
