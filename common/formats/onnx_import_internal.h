// The ONNX importer's internals (common/formats/onnx_import.h is the API),
// shared by its three parts:
//   onnx_import_graph.cc   graph parsing: tensors, attributes, opsets, the
//                          supported operators, constants, the input
//   onnx_import_layers.cc  layer conversion: Conv, pooling, Gemm/MatMul,
//                          BatchNormalization (folded), activations
//   onnx_import.cc         pattern matching along the chain (flattening
//                          reshapes, x.view's shape arithmetic, biases,
//                          a final softmax), building the checkpoint
// Not for use outside the importer.
#ifndef DISTILLERY_COMMON_FORMATS_ONNX_IMPORT_INTERNAL_H_
#define DISTILLERY_COMMON_FORMATS_ONNX_IMPORT_INTERNAL_H_

#include <cstdint>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/formats/onnx_import.h"
#include "common/nn/network_spec.h"
#include "onnx/onnx.pb.h"

namespace distillery {
namespace onnx_import_internal {

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

// "Conv \"conv1\"": a node's op type and name, for messages.
std::string NodeName(const onnx::NodeProto& node);
// A tensor's values (float32, or int64/int32 shapes). DataLoss for external
// data, other element types, non-finite floats or data that does not fit
// the dims.
absl::StatusOr<ConstTensor> DecodeTensor(const onnx::TensorProto& t);
// Attributes of `node`, or `fallback` / empty when absent.
const onnx::AttributeProto* FindAttr(const onnx::NodeProto& node, const std::string& name);
int64_t IntAttr(const onnx::NodeProto& node, const std::string& name, int64_t fallback);
float FloatAttr(const onnx::NodeProto& node, const std::string& name, float fallback);
std::vector<int64_t> IntsAttr(const onnx::NodeProto& node, const std::string& name);
std::string StringAttr(const onnx::NodeProto& node, const std::string& name);
// The operator types the importer takes (default domain).
const std::set<std::string>& SupportedOps();

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
  // The graph's one input that is not an initializer, a float32 tensor.
  absl::StatusOr<const onnx::ValueInfoProto*> FindInput() const;
  // input_shape_ and shape_ for an (N, C, H, W) input `name` whose sizes are
  // `fixed` (-1 where dynamic), or for an (N, F) one behind a flatten layer,
  // given options_.input_shape (`given`, empty when none).
  absl::Status SetImageInput(const std::string& name, const std::vector<int64_t>& fixed,
                             const Shape& given);
  absl::Status SetFlatInput(const std::string& name, const std::vector<int64_t>& fixed,
                            const Shape& given);
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
  // One converter per kind of node (Convert dispatches). A Constant's
  // tensor is kept; Shape, Gather and Concat on shapes compute the shape
  // arithmetic of x.view(x.size(0), -1); a final Softmax is stripped; an Add
  // is the bias of the MatMul or Conv before it.
  absl::Status ConvertConstant(const onnx::NodeProto& node);
  absl::Status ConvertShape(const onnx::NodeProto& node);
  absl::Status ConvertShapeGather(const onnx::NodeProto& node);
  absl::Status ConvertShapeConcat(const onnx::NodeProto& node);
  absl::Status ConvertSoftmax(const onnx::NodeProto& node, bool is_last);
  absl::Status ConvertBiasAdd(const onnx::NodeProto& node);
  absl::Status ConvertConv(const onnx::NodeProto& node);
  absl::Status ConvertPool(const onnx::NodeProto& node);
  absl::Status ConvertGemm(const onnx::NodeProto& node);
  absl::Status ConvertBatchNorm(const onnx::NodeProto& node);
  // A BatchNormalization's constants, checked (one value per channel,
  // variance + epsilon positive).
  struct BatchNormConstants {
    const std::vector<float>*gamma, *beta, *mean, *var;
    float epsilon;
    int64_t channels;
  };
  // ConvertBatchNorm's two outcomes: folded into the foldable layer before
  // it, or a batch-norm layer of its own.
  absl::Status FoldBatchNorm(const onnx::NodeProto& node, const BatchNormConstants& bn);
  absl::Status AddBatchNormLayer(const onnx::NodeProto& node, const BatchNormConstants& bn);
  absl::Status ConvertActivation(const onnx::NodeProto& node);
  absl::Status ConvertReshapeLike(const onnx::NodeProto& node);
  // Whether a Reshape or a Squeeze of the chain's (batch, ...) activation
  // of `rank` dimensions (with the batch) gives (batch, features).
  bool ReshapeFlattens(const onnx::NodeProto& node, int64_t rank) const;
  bool SqueezeFlattens(const onnx::NodeProto& node, int64_t rank) const;

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

}  // namespace onnx_import_internal
}  // namespace distillery

#endif  // DISTILLERY_COMMON_FORMATS_ONNX_IMPORT_INTERNAL_H_
