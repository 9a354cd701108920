// ONNX import ("bring your own teacher"): an ONNX image classifier converted
// into a Distillery network with its weights, i.e. a checkpoint (format 2)
// that runs on Distillery's own engine.
//
// Supported (default domain, opsets 11 to 18), on a single chain of
// operators from the one graph input to the one graph output:
//   Gemm (alpha = beta = 1, transA = 0, transB 0 or 1)  -> linear
//   MatMul followed by Add (the bias)                    -> linear
//   Conv (2-D; symmetric pads, dilations, groups; auto_pad
//        NOTSET, VALID, or SAME_UPPER/SAME_LOWER where the padding is
//        symmetric)                                      -> conv2d
//   Relu, LeakyRelu (alpha), Sigmoid, Tanh               -> relu, leakyrelu,
//                                                           sigmoid, tanh
//   MaxPool, AveragePool (count_include_pad, ceil_mode; not an average with
//        count_include_pad whose ceil-mode last window overhangs)
//                                                        -> maxpool2d, avgpool2d
//   GlobalAveragePool                                    -> globalavgpool
//   Flatten (axis 1); Reshape, Squeeze and Unsqueeze where they flatten
//        (batch, ...) to (batch, features), including PyTorch's
//        Shape -> Gather -> Unsqueeze -> Concat -> Reshape of
//        x.view(x.size(0), -1)                           -> flatten
//   BatchNormalization: folded into the Conv or Gemm/MatMul right before it
//        (w' = w * gamma / sqrt(var + eps), b' = (b - mean) * gamma /
//        sqrt(var + eps) + beta); elsewhere a batchnorm layer
//   Dropout, Identity: dropped (inference)
//   Softmax, LogSoftmax: only as the last node, stripped (the teacher serves
//        logits)
//   Constant nodes and initializers (float32 weights; int64 shapes)
//
// Refused with InvalidArgument: unsupported operators (all of them named in
// one message with their op type and node name), an opset outside 11..18, a
// graph that branches, more than one graph output, a dynamic spatial input
// shape without an explicit input shape, a flat (N, F) input without one,
// attributes the engine cannot express, an invalid preprocessing. Refused with
// DataLoss: bytes that are not a model (malformed, truncated), tensors in
// external data files (a path out of the model is never followed), weights
// that are not float32, not finite, or whose data does not fit their shape.
//
// Preprocessing: the imported network takes what its exporter's training
// fed it. OnnxImportOptions::preprocessing says what that was, as a scale
// and per-channel mean and std (--input_scale, --input_mean, --input_std),
// e.g. scale 1/255, mean 0.1307, std 0.3081 for a model trained on
// torchvision's Normalize((0.1307,), (0.3081,)) of MNIST. It is recorded in
// the checkpoint; the teacher applies it to the raw pixels students send.
// An invalid one (scale <= 0, a std <= 0, a non-finite value, a mean or std
// list that is not one value per channel of the model's input) is refused
// with InvalidArgument.
#ifndef DISTILLERY_COMMON_FORMATS_ONNX_IMPORT_H_
#define DISTILLERY_COMMON_FORMATS_ONNX_IMPORT_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "common/data/preprocessing.h"
#include "common/tensor/tensor.h"
#include "distill/v1/checkpoint.pb.h"

namespace distillery {

inline constexpr int64_t kOnnxImportMinOpset = 11;
inline constexpr int64_t kOnnxImportMaxOpset = 18;
// Models larger than this are refused before parsing (protobuf's limit).
inline constexpr size_t kOnnxImportMaxBytes = (size_t{1} << 31) - 1;

struct OnnxImportOptions {
  // One example's (channels, rows, cols). Needed when the model's input is
  // flat, (N, F), or has dynamic spatial dimensions; when the model's input
  // has fixed dimensions they must agree. Empty = from the model.
  Shape input_shape;
  // How raw pixels become the network's inputs (recorded in the checkpoint).
  Preprocessing preprocessing;
  // The checkpoint's role.
  std::string role = "teacher";
};

// Parses "C,H,W" (three positive integers) into a shape. InvalidArgument
// otherwise.
absl::StatusOr<Shape> ParseInputShape(const std::string& text);

// Converts the serialized ONNX model `bytes` into a verified checkpoint
// (ValidateCheckpoint passes) whose metadata "source" is
// "onnx:<producer_name> <producer_version>". `name` is used in messages.
// Errors as described above; nothing is written anywhere.
absl::StatusOr<distill::v1::Checkpoint> ImportOnnxModel(std::string_view bytes,
                                                        const OnnxImportOptions& options,
                                                        const std::string& name = "model");

// Reads the file at `path` and imports it (NotFound when it cannot be read).
absl::StatusOr<distill::v1::Checkpoint> ImportOnnxFile(const std::string& path,
                                                       const OnnxImportOptions& options);

}  // namespace distillery

#endif  // DISTILLERY_COMMON_FORMATS_ONNX_IMPORT_H_
