// ONNX export: the written file re-parsed with the ONNX schema's generated
// classes (opset, nodes, attributes, initializers, input and output), the
// graph interpreted here against the C++ forward pass, and clear errors for
// unsupported or inconsistent checkpoints. tests/python/onnx_runtime_test.py
// runs an exported model in ONNX Runtime.
#include "common/formats/onnx_export.h"

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <set>

#include "common/formats/checkpoint.h"
#include "gmock/gmock.h"
#include "tests/test_util.h"

namespace distillery {
namespace {

using ::testing::HasSubstr;

std::string TempPath(const std::string& name) { return UniqueTempPath(name); }

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

bool FileExists(const std::string& path) { return access(path.c_str(), F_OK) == 0; }

// A 12-7-5-3 network on 3x4 images with random weights.
distill::v1::Checkpoint SmallCheckpoint(const std::string& role = "student", uint64_t seed = 3) {
  // Dropout is training only: it must leave no trace in the graph.
  NetworkSpec spec = *NetworkSpec::Parse("12-7-5-3", {1, 3, 4}, 0.f, 0.5f);
  std::unique_ptr<Network> mlp = *Network::Create(spec, seed);
  return MakeCheckpoint(*mlp, role);
}

onnx::ModelProto ExportAndParse(const distill::v1::Checkpoint& checkpoint,
                                const OnnxExportOptions& options, const std::string& name) {
  const std::string path = TempPath(name);
  const absl::Status status = ExportOnnx(checkpoint, options, path);
  EXPECT_TRUE(status.ok()) << status;
  onnx::ModelProto model;
  EXPECT_TRUE(model.ParseFromString(ReadBytes(path))) << path << " is not an onnx.ModelProto";
  return model;
}

const onnx::TensorProto* FindInitializer(const onnx::GraphProto& graph, const std::string& name) {
  for (const onnx::TensorProto& t : graph.initializer()) {
    if (t.name() == name) return &t;
  }
  return nullptr;
}

std::vector<float> FloatsOf(const onnx::TensorProto& tensor) {
  EXPECT_EQ(tensor.data_type(), onnx::TensorProto::FLOAT) << tensor.name();
  EXPECT_EQ(tensor.raw_data().size() % 4, 0u) << tensor.name();
  std::vector<float> values(tensor.raw_data().size() / 4);
  for (size_t i = 0; i < values.size(); ++i) {
    uint32_t bits = 0;
    for (int b = 0; b < 4; ++b) {
      bits |= uint32_t{static_cast<unsigned char>(tensor.raw_data()[4 * i + b])} << (8 * b);
    }
    std::memcpy(&values[i], &bits, sizeof(bits));
  }
  return values;
}

int64_t IntAttribute(const onnx::NodeProto& node, const std::string& name, int64_t missing) {
  for (const onnx::AttributeProto& a : node.attribute()) {
    if (a.name() == name) {
      EXPECT_EQ(a.type(), onnx::AttributeProto::INT) << node.name() << "." << name;
      return a.i();
    }
  }
  return missing;
}

void ExpectBatchTensor(const onnx::ValueInfoProto& value, const std::string& name,
                       int64_t features) {
  EXPECT_EQ(value.name(), name);
  ASSERT_TRUE(value.type().has_tensor_type());
  const onnx::TypeProto::Tensor& tensor = value.type().tensor_type();
  EXPECT_EQ(tensor.elem_type(), onnx::TensorProto::FLOAT);
  ASSERT_EQ(tensor.shape().dim_size(), 2);
  EXPECT_EQ(tensor.shape().dim(0).dim_param(), "batch");
  EXPECT_EQ(tensor.shape().dim(1).dim_value(), features);
}

// A minimal interpreter for the operators the export emits (Mul by a scalar,
// Gemm with transB, Relu, Softmax on axis 1), in double precision, on a
// (rows x cols) input: an independent reading of the graph's semantics.
struct Value {
  int64_t rows = 0, cols = 0;
  std::vector<double> data;
};

Value RunGraph(const onnx::GraphProto& graph, const Value& input) {
  std::map<std::string, Value> values;
  values[graph.input(0).name()] = input;
  for (const onnx::TensorProto& t : graph.initializer()) {
    Value v;
    const std::vector<float> floats = FloatsOf(t);
    v.data.assign(floats.begin(), floats.end());
    v.rows = t.dims_size() == 2 ? t.dims(0) : 1;
    v.cols = t.dims_size() == 0 ? 1 : t.dims(t.dims_size() - 1);
    values[t.name()] = v;
  }
  for (const onnx::NodeProto& node : graph.node()) {
    for (const std::string& in : node.input()) {
      EXPECT_TRUE(values.count(in)) << node.name() << " reads \"" << in << "\" before it exists";
      if (!values.count(in)) return {};
    }
    const Value& a = values[node.input(0)];
    Value out;
    if (node.op_type() == "Mul") {
      const Value& b = values[node.input(1)];
      EXPECT_EQ(b.data.size(), 1u);
      out = a;
      for (double& x : out.data) x *= b.data[0];
    } else if (node.op_type() == "Gemm") {
      EXPECT_EQ(IntAttribute(node, "transB", 0), 1);
      EXPECT_EQ(IntAttribute(node, "transA", 0), 0);
      const Value& w = values[node.input(1)];
      const Value& c = values[node.input(2)];
      EXPECT_EQ(w.cols, a.cols) << node.name();
      EXPECT_EQ(c.data.size(), static_cast<size_t>(w.rows)) << node.name();
      out.rows = a.rows;
      out.cols = w.rows;
      out.data.assign(out.rows * out.cols, 0.0);
      for (int64_t n = 0; n < a.rows; ++n) {
        for (int64_t o = 0; o < w.rows; ++o) {
          double sum = c.data[o];
          for (int64_t i = 0; i < a.cols; ++i)
            sum += a.data[n * a.cols + i] * w.data[o * w.cols + i];
          out.data[n * out.cols + o] = sum;
        }
      }
    } else if (node.op_type() == "Relu") {
      out = a;
      for (double& x : out.data) x = std::max(x, 0.0);
    } else if (node.op_type() == "Softmax") {
      EXPECT_EQ(IntAttribute(node, "axis", -1), 1);
      out = a;
      for (int64_t n = 0; n < a.rows; ++n) {
        double* row = out.data.data() + n * a.cols;
        const double top = *std::max_element(row, row + a.cols);
        double total = 0;
        for (int64_t j = 0; j < a.cols; ++j) total += (row[j] = std::exp(row[j] - top));
        for (int64_t j = 0; j < a.cols; ++j) row[j] /= total;
      }
    } else {
      ADD_FAILURE() << "unexpected operator " << node.op_type();
      return {};
    }
    values[node.output(0)] = out;
  }
  return values[graph.output(0).name()];
}

TEST(OnnxExportTest, WritesOpset13GemmReluGraphWithScaledPixelInput) {
  const distill::v1::Checkpoint checkpoint = SmallCheckpoint();
  const onnx::ModelProto model = ExportAndParse(checkpoint, {}, "small.onnx");
  EXPECT_EQ(model.ir_version(), 8);
  ASSERT_EQ(model.opset_import_size(), 1);
  EXPECT_EQ(model.opset_import(0).domain(), "");
  EXPECT_EQ(model.opset_import(0).version(), 13);
  EXPECT_EQ(model.producer_name(), "distillery");

  const onnx::GraphProto& graph = model.graph();
  EXPECT_EQ(graph.name(), "student_12-7-5-3");
  ASSERT_EQ(graph.input_size(), 1);
  ExpectBatchTensor(graph.input(0), "pixels", 12);
  ASSERT_EQ(graph.output_size(), 1);
  ExpectBatchTensor(graph.output(0), "logits", 3);

  std::vector<std::string> ops;
  for (const onnx::NodeProto& node : graph.node()) ops.push_back(node.op_type());
  EXPECT_EQ(ops, (std::vector<std::string>{"Mul", "Gemm", "Relu", "Gemm", "Relu", "Gemm"}));
  EXPECT_EQ(graph.node(0).input(0), "pixels");
  EXPECT_EQ(graph.node(5).output(0), "logits");
  for (const onnx::NodeProto& node : graph.node()) {
    if (node.op_type() == "Gemm") {
      EXPECT_EQ(IntAttribute(node, "transB", 0), 1) << node.name();
    }
  }

  // Initializers: the input scale, then every weight (out x in) and bias
  // (out) with the checkpoint's exact bits.
  ASSERT_EQ(graph.initializer_size(), 7);
  const onnx::TensorProto* scale = FindInitializer(graph, "input_scale");
  ASSERT_NE(scale, nullptr);
  EXPECT_EQ(scale->dims_size(), 0);
  EXPECT_EQ(FloatsOf(*scale), std::vector<float>{1.f / 255.f});
  const std::vector<std::vector<int64_t>> shapes = {{7, 12}, {7}, {5, 7}, {5}, {3, 5}, {3}};
  for (int i = 0; i < checkpoint.parameters_size(); ++i) {
    const distill::v1::Tensor& param = checkpoint.parameters(i);
    const onnx::TensorProto* t = FindInitializer(graph, param.name());
    ASSERT_NE(t, nullptr) << param.name();
    EXPECT_EQ(std::vector<int64_t>(t->dims().begin(), t->dims().end()), shapes[i]) << param.name();
    const std::vector<float> values = FloatsOf(*t);
    ASSERT_EQ(values.size(), static_cast<size_t>(param.values_size())) << param.name();
    EXPECT_EQ(std::memcmp(values.data(), param.values().data(), values.size() * 4), 0)
        << param.name();
  }
  // Names are unique and no temporary file is left behind.
  std::set<std::string> names;
  for (const onnx::TensorProto& t : graph.initializer()) EXPECT_TRUE(names.insert(t.name()).second);
  for (const onnx::NodeProto& n : graph.node()) EXPECT_TRUE(names.insert(n.output(0)).second);
  EXPECT_FALSE(FileExists(TempPath("small.onnx") + ".tmp." + std::to_string(getpid())));
  // Provenance travels along.
  std::map<std::string, std::string> metadata;
  for (const auto& entry : model.metadata_props()) metadata[entry.key()] = entry.value();
  EXPECT_EQ(metadata["distillery.role"], "student");
  EXPECT_EQ(metadata["distillery.architecture"], "12-7-5-3");
  EXPECT_EQ(metadata["distillery.image_shape"], "3x4");
}

TEST(OnnxExportTest, GraphComputesTheForwardPassOnRawPixels) {
  const distill::v1::Checkpoint checkpoint = SmallCheckpoint("teacher", 11);
  std::unique_ptr<Network> mlp = *NetworkFromCheckpoint(checkpoint);
  constexpr int kBatch = 9;
  Value pixels{kBatch, 12, {}};
  Tensor scaled(kBatch, 12);
  for (int64_t i = 0; i < scaled.size(); ++i) {
    const int raw = static_cast<int>((i * 37 + 11) % 256);
    pixels.data.push_back(raw);
    scaled.data()[i] = static_cast<float>(raw) / 255.f;
  }
  const Tensor* logits = nullptr;
  ASSERT_TRUE(mlp->Predict(scaled, &logits).ok());
  for (const bool softmax : {false, true}) {
    OnnxExportOptions options;
    options.softmax = softmax;
    const onnx::ModelProto model = ExportAndParse(checkpoint, options, "forward.onnx");
    EXPECT_EQ(model.graph().name(), "teacher_12-7-5-3");
    const Value out = RunGraph(model.graph(), pixels);
    ASSERT_EQ(out.rows, kBatch);
    ASSERT_EQ(out.cols, 3);
    for (int64_t n = 0; n < kBatch; ++n) {
      double total = 0;
      for (int64_t j = 0; j < 3; ++j) total += std::exp(logits->at(n, j));
      for (int64_t j = 0; j < 3; ++j) {
        const double expected =
            softmax ? std::exp(logits->at(n, j)) / total : double{logits->at(n, j)};
        EXPECT_NEAR(out.data[n * 3 + j], expected, 1e-5) << "softmax " << softmax << " row " << n;
      }
    }
  }
}

TEST(OnnxExportTest, ThePreprocessingMeanAndStdFollowTheScale) {
  distill::v1::Checkpoint checkpoint = SmallCheckpoint("teacher", 5);
  Preprocessing p;
  p.mean = {0.1307f};
  p.std = {0.3081f};
  SetCheckpointPreprocessing(p, &checkpoint);
  const onnx::ModelProto model = ExportAndParse(checkpoint, {}, "normalised.onnx");
  const onnx::GraphProto& graph = model.graph();
  ASSERT_GE(graph.node_size(), 4);
  EXPECT_EQ(graph.node(0).op_type(), "Mul");
  EXPECT_EQ(graph.node(1).op_type(), "Sub");
  EXPECT_EQ(graph.node(1).input(0), graph.node(0).output(0));
  EXPECT_EQ(graph.node(1).input(1), "input_mean");
  EXPECT_EQ(graph.node(2).op_type(), "Div");
  EXPECT_EQ(graph.node(2).input(0), graph.node(1).output(0));
  EXPECT_EQ(graph.node(2).input(1), "input_std");
  EXPECT_EQ(graph.node(3).input(0), graph.node(2).output(0));
  // A flat input (this MLP takes [batch, 12]): one value per input element.
  const onnx::TensorProto* mean = FindInitializer(graph, "input_mean");
  const onnx::TensorProto* std = FindInitializer(graph, "input_std");
  ASSERT_NE(mean, nullptr);
  ASSERT_NE(std, nullptr);
  EXPECT_EQ(FloatsOf(*mean), std::vector<float>(12, 0.1307f));
  EXPECT_EQ(FloatsOf(*std), std::vector<float>(12, 0.3081f));
  // The default preprocessing adds neither.
  const onnx::ModelProto plain = ExportAndParse(SmallCheckpoint("teacher", 5), {}, "plain.onnx");
  EXPECT_EQ(FindInitializer(plain.graph(), "input_mean"), nullptr);
  EXPECT_EQ(FindInitializer(plain.graph(), "input_std"), nullptr);
}

TEST(OnnxExportTest, ConvDilationsPerAxisAndCeilModePooling) {
  NetworkSpec spec = *NetworkSpec::Parse("conv3x3:2/d2x1,maxpool2/ceil,fc:3", {1, 9, 9});
  std::unique_ptr<Network> network = *Network::Create(spec, 2);
  const onnx::ModelProto model =
      ExportAndParse(MakeCheckpoint(*network, "student"), {}, "dilated.onnx");
  bool conv_seen = false, pool_seen = false;
  for (const onnx::NodeProto& node : model.graph().node()) {
    for (const onnx::AttributeProto& a : node.attribute()) {
      if (node.op_type() == "Conv" && a.name() == "dilations") {
        conv_seen = true;
        EXPECT_EQ(std::vector<int64_t>(a.ints().begin(), a.ints().end()),
                  (std::vector<int64_t>{2, 1}));
      }
      if (node.op_type() == "MaxPool" && a.name() == "ceil_mode") {
        pool_seen = true;
        EXPECT_EQ(a.i(), 1);
      }
    }
  }
  EXPECT_TRUE(conv_seen);
  EXPECT_TRUE(pool_seen);
}

TEST(OnnxExportTest, SoftmaxOptionEndsInProbabilities) {
  OnnxExportOptions options;
  options.softmax = true;
  const onnx::ModelProto model = ExportAndParse(SmallCheckpoint(), options, "softmax.onnx");
  const onnx::GraphProto& graph = model.graph();
  ASSERT_EQ(graph.output_size(), 1);
  ExpectBatchTensor(graph.output(0), "probabilities", 3);
  const onnx::NodeProto& last = graph.node(graph.node_size() - 1);
  EXPECT_EQ(last.op_type(), "Softmax");
  EXPECT_EQ(IntAttribute(last, "axis", -1), 1);
  EXPECT_EQ(last.input(0), "logits");
  EXPECT_EQ(last.output(0), "probabilities");
}

TEST(OnnxExportTest, WithoutInputScalingTheFirstNodeIsGemm) {
  OnnxExportOptions options;
  options.scale_input = false;
  options.graph_name = "custom";
  const onnx::ModelProto model = ExportAndParse(SmallCheckpoint(), options, "unscaled.onnx");
  EXPECT_EQ(model.graph().name(), "custom");
  EXPECT_EQ(model.graph().node(0).op_type(), "Gemm");
  EXPECT_EQ(model.graph().node(0).input(0), "pixels");
  EXPECT_EQ(FindInitializer(model.graph(), "input_scale"), nullptr);
}

TEST(OnnxExportTest, SameCheckpointGivesSameBytes) {
  distill::v1::Checkpoint checkpoint = SmallCheckpoint();
  (*checkpoint.mutable_metadata())["b"] = "2";
  (*checkpoint.mutable_metadata())["a"] = "1";
  (*checkpoint.mutable_metadata())["test_errors"] = "42";
  ASSERT_TRUE(ExportOnnx(checkpoint, {}, TempPath("same1.onnx")).ok());
  ASSERT_TRUE(ExportOnnx(checkpoint, {}, TempPath("same2.onnx")).ok());
  EXPECT_EQ(ReadBytes(TempPath("same1.onnx")), ReadBytes(TempPath("same2.onnx")));
}

TEST(OnnxExportTest, ReplacesAnExistingFile) {
  const std::string path = TempPath("replace.onnx");
  std::ofstream(path, std::ios::binary | std::ios::trunc) << "old contents";
  ASSERT_TRUE(ExportOnnx(SmallCheckpoint(), {}, path).ok());
  onnx::ModelProto model;
  EXPECT_TRUE(model.ParseFromString(ReadBytes(path)));
  EXPECT_EQ(model.graph().node_size(), 6);
}

// Each case breaks one thing and expects `code` with `message` in the text;
// nothing is written.
void ExpectRefused(const distill::v1::Checkpoint& checkpoint, absl::StatusCode code,
                   const std::string& message) {
  const std::string path = TempPath("refused.onnx");
  std::remove(path.c_str());
  const absl::Status status = ExportOnnx(checkpoint, {}, path);
  EXPECT_EQ(status.code(), code) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr(message));
  EXPECT_FALSE(FileExists(path));
}

TEST(OnnxExportTest, UnsupportedCheckpointsAreRefused) {
  distill::v1::Checkpoint c = SmallCheckpoint();
  c.mutable_architecture()->mutable_layers(1)->set_kind("softplus");
  ExpectRefused(c, absl::StatusCode::kDataLoss, "unknown layer kind \"softplus\"");

  c = SmallCheckpoint();
  c.set_format_version(3);
  ExpectRefused(c, absl::StatusCode::kDataLoss,
                "format version 3 is not one this release reads (1 to 2; it was written by a "
                "newer release)");
}

TEST(OnnxExportTest, InconsistentCheckpointsAreDataLoss) {
  const absl::StatusCode kDataLoss = absl::StatusCode::kDataLoss;
  distill::v1::Checkpoint c = SmallCheckpoint();
  c.mutable_parameters()->RemoveLast();
  ExpectRefused(c, kDataLoss, "the network needs 6 parameter tensors, found 5");

  c = SmallCheckpoint();
  c.mutable_parameters(2)->set_name("layer1.gamma");
  ExpectRefused(
      c, kDataLoss,
      "parameter tensor 2 (\"layer1.gamma\" (5, 7)) is not layer1.weight of shape (5, 7)");

  c = SmallCheckpoint();
  c.mutable_parameters(0)->set_shape(1, 13);
  ExpectRefused(c, kDataLoss, "is not layer0.weight of shape (7, 12)");

  c = SmallCheckpoint();
  c.mutable_parameters(3)->mutable_values()->RemoveLast();
  ExpectRefused(c, kDataLoss, "tensor \"layer1.bias\" has 4 values, which does not fit its shape");

  c = SmallCheckpoint();
  c.mutable_parameters(4)->set_values(6, std::nanf(""));
  ExpectRefused(c, kDataLoss, "tensor \"layer2.weight\" holds a non-finite value at 6");

  c = SmallCheckpoint();
  c.mutable_architecture()->mutable_layers(0)->set_units(0);
  ExpectRefused(c, kDataLoss, "invalid architecture");

  c = SmallCheckpoint();
  c.mutable_architecture()->set_image_cols(5);
  ExpectRefused(c, kDataLoss, "is not layer0.weight of shape (7, 15)");

  c = SmallCheckpoint();
  c.mutable_architecture()->set_input_scale(0.f);
  ExpectRefused(c, kDataLoss, "input scale 0 is not a finite number > 0");

  ExpectRefused(distill::v1::Checkpoint(), kDataLoss, "format version 0");
}

TEST(OnnxExportTest, UnwritablePathIsAnError) {
  const std::string path = TempPath("no/such/dir/model.onnx");
  const absl::Status status = ExportOnnx(SmallCheckpoint(), {}, path);
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr("no/such/dir/model.onnx"));
}

}  // namespace
}  // namespace distillery
