// ONNX export: any trained checkpoint, teacher or student, as an ONNX model
// that a runtime (ONNX Runtime, a phone, a browser) can run on raw pixels.
//
// The graph, opset 13 of the default domain, IR version 8:
//
//   pixels           float [batch, input_size]   raw pixel values, 0..255,
//                                                 images flattened row-major
//   -> Mul(input_scale)                           the scale the network was
//                                                 trained with (1/255)
//   -> Gemm(layer0.weight, layer0.bias, transB=1) -> Relu
//   -> ...
//   -> Gemm(layer<L-1>.weight, layer<L-1>.bias, transB=1)
//   [-> Softmax(axis=1)]                          only with `softmax`
//   -> logits (or probabilities)   float [batch, num_classes]
//
// Weights are initializers of shape (out x in), exactly the checkpoint's
// layout (hence transB=1), biases of shape (out); values are IEEE binary32
// bit for bit. Dropout is an identity at inference (inverted dropout) and
// leaves no node. The model is built from the ONNX protobuf schema (onnx.proto
// of Debian's libonnx-dev, compiled with the project's protoc), not from
// hand-assembled bytes.
#ifndef DISTILLERY_COMMON_FORMATS_ONNX_EXPORT_H_
#define DISTILLERY_COMMON_FORMATS_ONNX_EXPORT_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "distill/v1/checkpoint.pb.h"
#include "onnx/onnx.pb.h"

namespace distillery {

inline constexpr int64_t kOnnxIrVersion = 8;
inline constexpr int64_t kOnnxOpsetVersion = 13;
inline constexpr char kOnnxProducerName[] = "distillery";
inline constexpr char kOnnxInputName[] = "pixels";
inline constexpr char kOnnxLogitsName[] = "logits";
inline constexpr char kOnnxProbabilitiesName[] = "probabilities";

struct OnnxExportOptions {
  // Ends the graph with Softmax(axis=1) at T = 1: the output is
  // "probabilities" instead of the raw "logits" (the default).
  bool softmax = false;
  // Writes the checkpoint's input scale into the graph as a Mul on the
  // input, so that the model takes raw pixel values (0..255). When false the
  // model takes inputs already scaled (pixels * input_scale, [0, 1]).
  bool scale_input = true;
  // Name of the graph; empty = "<role>_<architecture>", e.g.
  // "student_784-800-800-10".
  std::string graph_name;
};

// The ONNX model of `checkpoint`. The checkpoint is verified first, since it
// may come from anywhere and not only from LoadCheckpoint: InvalidArgument
// when it describes something the export does not support (an activation
// other than relu, a payload version other than 1); DataLoss when it is
// inconsistent (invalid layer sizes, an image shape or input scale that does
// not fit, a missing, misnamed, misshapen or extra tensor, a non-finite
// value). Messages name the tensor or field at fault.
absl::StatusOr<onnx::ModelProto> BuildOnnxModel(const distill::v1::Checkpoint& checkpoint,
                                                const OnnxExportOptions& options);

// Builds the model (errors as BuildOnnxModel) and writes it to `path`
// atomically: a temporary file in the same directory, fsync'ed and renamed
// over the target, so a crash never leaves a torn model. Internal error
// naming the file when it cannot be written.
absl::Status ExportOnnx(const distill::v1::Checkpoint& checkpoint, const OnnxExportOptions& options,
                        const std::string& path);

}  // namespace distillery

#endif  // DISTILLERY_COMMON_FORMATS_ONNX_EXPORT_H_
