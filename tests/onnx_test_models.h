// Small ONNX models built with the ONNX protobuf API, for the importer's
// tests (tests/onnx_import_test.cc, onnx_import_refusals_test.cc) and the
// fuzzer's seed corpus (fuzz/fuzz_seed_corpus.cc). Weights are deterministic
// made-up values.
#ifndef DISTILLERY_TESTS_ONNX_TEST_MODELS_H_
#define DISTILLERY_TESTS_ONNX_TEST_MODELS_H_

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/formats/onnx_import.h"
#include "onnx/onnx.pb.h"

namespace distillery::onnx_test {

// Imports `model` as the importer reads a file's bytes.
inline absl::StatusOr<distill::v1::Checkpoint> Import(const onnx::ModelProto& model,
                                                      const OnnxImportOptions& options = {}) {
  return ImportOnnxModel(model.SerializeAsString(), options, "test.onnx");
}

// Made-up values in [-0.5, 0.5) (or [lo, lo + 1) with `lo`), the same on
// every machine.
inline std::vector<float> Values(int64_t n, int64_t salt, float lo = -0.5f) {
  std::vector<float> v(n);
  for (int64_t k = 0; k < n; ++k) {
    v[k] = lo + static_cast<float>(((k + 1) * 7919 + salt * 104729) % 1000) / 1000.f;
  }
  return v;
}

inline onnx::TensorProto FloatTensor(const std::string& name, const std::vector<int64_t>& dims,
                                     const std::vector<float>& values) {
  onnx::TensorProto t;
  t.set_name(name);
  t.set_data_type(onnx::TensorProto::FLOAT);
  for (int64_t d : dims) t.add_dims(d);
  for (float v : values) t.add_float_data(v);
  return t;
}

inline onnx::TensorProto IntTensor(const std::string& name, const std::vector<int64_t>& values) {
  onnx::TensorProto t;
  t.set_name(name);
  t.set_data_type(onnx::TensorProto::INT64);
  t.add_dims(static_cast<int64_t>(values.size()));
  for (int64_t v : values) t.add_int64_data(v);
  return t;
}

// A model of opset `opset` with one float input of `input_dims` (-1 =
// dynamic) and one output.
class ModelBuilder {
 public:
  explicit ModelBuilder(const std::vector<int64_t>& input_dims, int64_t opset = 13) {
    model_.set_ir_version(8);
    model_.set_producer_name("distillery-test");
    model_.set_producer_version("1.0");
    onnx::OperatorSetIdProto* o = model_.add_opset_import();
    o->set_domain("");
    o->set_version(opset);
    graph()->set_name("test");
    onnx::ValueInfoProto* in = graph()->add_input();
    in->set_name("input");
    auto* type = in->mutable_type()->mutable_tensor_type();
    type->set_elem_type(onnx::TensorProto::FLOAT);
    for (int64_t d : input_dims) {
      auto* dim = type->mutable_shape()->add_dim();
      if (d < 0) {
        dim->set_dim_param("batch");
      } else {
        dim->set_dim_value(d);
      }
    }
    last_ = "input";
  }

  onnx::GraphProto* graph() { return model_.mutable_graph(); }
  void Producer(const std::string& name, const std::string& version) {
    model_.set_producer_name(name);
    model_.set_producer_version(version);
  }
  // The output of the last node added.
  const std::string& last() const { return last_; }

  // Adds a node reading `inputs` ("" = the last node's output) and writing
  // one fresh output; returns it for attributes.
  onnx::NodeProto* Node(const std::string& op, std::vector<std::string> inputs,
                        const std::string& name = "") {
    onnx::NodeProto* node = graph()->add_node();
    node->set_op_type(op);
    node->set_name(name.empty() ? op + std::to_string(graph()->node_size()) : name);
    for (std::string& in : inputs) node->add_input(in.empty() ? last_ : in);
    last_ = node->name() + "_out";
    node->add_output(last_);
    return node;
  }
  std::string Weight(const std::string& name, const std::vector<int64_t>& dims,
                     const std::vector<float>& values) {
    *graph()->add_initializer() = FloatTensor(name, dims, values);
    return name;
  }
  std::string Ints(const std::string& name, const std::vector<int64_t>& values) {
    *graph()->add_initializer() = IntTensor(name, values);
    return name;
  }

  // Marks the last node's output as the graph output and returns the model.
  onnx::ModelProto Finish() {
    onnx::ValueInfoProto* out = graph()->add_output();
    out->set_name(last_);
    out->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
    return model_;
  }

 private:
  onnx::ModelProto model_;
  std::string last_;
};

inline void SetInts(onnx::NodeProto* node, const std::string& name,
                    const std::vector<int64_t>& values) {
  onnx::AttributeProto* a = node->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INTS);
  for (int64_t v : values) a->add_ints(v);
}
inline void SetInt(onnx::NodeProto* node, const std::string& name, int64_t value) {
  onnx::AttributeProto* a = node->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(value);
}
inline void SetFloat(onnx::NodeProto* node, const std::string& name, float value) {
  onnx::AttributeProto* a = node->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::FLOAT);
  a->set_f(value);
}

// Conv(2 -> 3, 3x3, pad 1) -> BatchNormalization -> Relu -> MaxPool(2) ->
// Flatten -> Gemm(transB=1) -> BatchNormalization -> Relu -> Dropout ->
// Gemm(transB=0) -> Softmax, on (N, 2, 4, 4) inputs.
inline onnx::ModelProto ConvBnModel() {
  ModelBuilder b({-1, 2, 4, 4});
  onnx::NodeProto* conv = b.Node(
      "Conv",
      {"", b.Weight("conv.w", {3, 2, 3, 3}, Values(54, 1)), b.Weight("conv.b", {3}, Values(3, 2))},
      "conv");
  SetInts(conv, "pads", {1, 1, 1, 1});
  SetInts(conv, "kernel_shape", {3, 3});
  b.Node("BatchNormalization",
         {"", b.Weight("bn.gamma", {3}, Values(3, 3, 0.5f)), b.Weight("bn.beta", {3}, Values(3, 4)),
          b.Weight("bn.mean", {3}, Values(3, 5)), b.Weight("bn.var", {3}, Values(3, 6, 0.25f))},
         "bn");
  b.Node("Relu", {""});
  onnx::NodeProto* pool = b.Node("MaxPool", {""});
  SetInts(pool, "kernel_shape", {2, 2});
  SetInts(pool, "strides", {2, 2});
  b.Node("Flatten", {""});
  onnx::NodeProto* fc1 = b.Node(
      "Gemm", {"", b.Weight("fc1.w", {5, 12}, Values(60, 7)), b.Weight("fc1.b", {5}, Values(5, 8))},
      "fc1");
  SetInt(fc1, "transB", 1);
  onnx::NodeProto* bn1 = b.Node(
      "BatchNormalization",
      {"", b.Weight("bn1.gamma", {5}, Values(5, 9, 0.5f)), b.Weight("bn1.beta", {5}, Values(5, 10)),
       b.Weight("bn1.mean", {5}, Values(5, 11)), b.Weight("bn1.var", {5}, Values(5, 12, 0.25f))},
      "bn1");
  SetFloat(bn1, "epsilon", 1e-3f);
  b.Node("Relu", {""});
  b.Node("Dropout", {""});
  b.Node("Gemm",
         {"", b.Weight("fc2.w", {5, 4}, Values(20, 13)), b.Weight("fc2.b", {4}, Values(4, 14))},
         "fc2");
  b.Node("Softmax", {""});
  return b.Finish();
}

// PyTorch's x.view(x.size(0), -1) after AveragePool and GlobalAveragePool,
// then MatMul + Add, on (N, 1, 6, 6).
inline onnx::ModelProto ViewModel() {
  ModelBuilder b({-1, 1, 6, 6}, 11);
  onnx::NodeProto* conv =
      b.Node("Conv", {"", b.Weight("conv.w", {4, 1, 3, 3}, Values(36, 21))}, "conv");
  onnx::AttributeProto* a = conv->add_attribute();
  a->set_name("auto_pad");
  a->set_type(onnx::AttributeProto::STRING);
  a->set_s("SAME_UPPER");
  b.Node("Relu", {""});
  onnx::NodeProto* pool = b.Node("AveragePool", {""});
  SetInts(pool, "kernel_shape", {3, 3});
  SetInts(pool, "pads", {1, 1, 1, 1});
  SetInt(pool, "count_include_pad", 1);
  const std::string x = b.Node("GlobalAveragePool", {""})->output(0);
  const std::string shape = b.Node("Shape", {x})->output(0);
  const std::string zero = b.Ints("zero", {0});
  onnx::TensorProto scalar = IntTensor("index", {0});
  scalar.clear_dims();
  *b.graph()->add_initializer() = scalar;
  const std::string batch = b.Node("Gather", {shape, "index"})->output(0);
  onnx::NodeProto* unsq = b.Node("Unsqueeze", {batch});
  SetInts(unsq, "axes", {0});
  const std::string concat_in = unsq->output(0);
  onnx::NodeProto* concat = b.Node("Concat", {concat_in, b.Ints("minus_one", {-1})});
  SetInt(concat, "axis", 0);
  b.Node("Reshape", {x, concat->output(0)});
  b.Node("MatMul", {"", b.Weight("fc.w", {4, 3}, Values(12, 22))});
  b.Node("Add", {"", b.Weight("fc.b", {3}, Values(3, 23))});
  (void)zero;
  return b.Finish();
}

}  // namespace distillery::onnx_test

#endif  // DISTILLERY_TESTS_ONNX_TEST_MODELS_H_
