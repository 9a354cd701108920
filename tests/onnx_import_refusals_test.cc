// The ONNX importer's refusals (common/formats/onnx_import.h), on small
// models built with the ONNX protobuf API (tests/onnx_test_models.h): every
// input, output, operator, attribute and weight it cannot take gets a clear
// error naming what is wrong.
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/formats/onnx_import.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/onnx_test_models.h"

namespace distillery {
namespace {

using onnx_test::Import;
using onnx_test::ModelBuilder;
using onnx_test::Values;
using ::testing::HasSubstr;

TEST(OnnxImportTest, NamesEveryUnsupportedOperator) {
  ModelBuilder b({-1, 1, 4, 4});
  b.Node("Flatten", {""});
  b.Node("Elu", {""}, "smooth");
  b.Node("Softplus", {""}, "squash");
  b.Node("Gemm", {"", b.Weight("w", {2, 16}, Values(32, 1))});
  auto c = Import(b.Finish());
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr("Elu \"smooth\""));
  EXPECT_THAT(c.status().message(), HasSubstr("Softplus \"squash\""));
}

TEST(OnnxImportTest, RefusesDynamicSpatialShapeWithoutInputShape) {
  ModelBuilder b({-1, 1, -1, -1});
  b.Node("Flatten", {""});
  b.Node("Gemm", {"", b.Weight("w", {16, 2}, Values(32, 1))});
  const onnx::ModelProto model = b.Finish();
  auto c = Import(model);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr("--input_shape"));
  OnnxImportOptions options;
  options.input_shape = {1, 4, 4};
  EXPECT_TRUE(Import(model, options).ok());
  options.input_shape = {1, 5, 4};  // 20 features: the Gemm takes 16
  EXPECT_FALSE(Import(model, options).ok());
}

// The graph's input: exactly one, (N, C, H, W) with the given shape
// agreeing with its fixed sizes, or (N, F) with the image shape given.
TEST(OnnxImportTest, RefusesInputsItCannotRead) {
  auto refusal = [](const onnx::ModelProto& model, const Shape& given) {
    OnnxImportOptions options;
    options.input_shape = given;
    auto c = Import(model, options);
    EXPECT_FALSE(c.ok());
    return std::string(c.status().message());
  };
  {
    ModelBuilder b({-1, 4});
    b.Node("Gemm", {"", b.Weight("w", {4, 2}, Values(8, 1))});
    const onnx::ModelProto flat = b.Finish();
    EXPECT_THAT(refusal(flat, {}), HasSubstr("is flat (N, F); give the image shape"));
    EXPECT_THAT(refusal(flat, {1, 3, 3}), HasSubstr("does not have the model's 4 input features"));
    EXPECT_THAT(refusal(flat, {1, 0, 4}), HasSubstr("three positive sizes"));
    onnx::ModelProto two = flat;
    *two.mutable_graph()->add_input() = two.graph().input(0);
    two.mutable_graph()->mutable_input(1)->set_name("second");
    EXPECT_THAT(refusal(two, {1, 2, 2}), HasSubstr("more than one input"));
    onnx::ModelProto none = flat;
    none.mutable_graph()->clear_input();
    EXPECT_THAT(refusal(none, {1, 2, 2}), HasSubstr("no input"));
  }
  {
    ModelBuilder b({-1, 1, 2, 2});
    b.Node("Flatten", {""});
    b.Node("Gemm", {"", b.Weight("w", {4, 2}, Values(8, 1))});
    const onnx::ModelProto image = b.Finish();
    EXPECT_THAT(refusal(image, {1, 2, 3}), HasSubstr("does not match the model's input"));
    OnnxImportOptions matching;
    matching.input_shape = {1, 2, 2};
    EXPECT_TRUE(Import(image, matching).ok());
  }
  {
    ModelBuilder b({-1, 2, 2});
    b.Node("Flatten", {""});
    b.Node("Gemm", {"", b.Weight("w", {4, 2}, Values(8, 1))});
    EXPECT_THAT(refusal(b.Finish(), {1, 2, 2}), HasSubstr("has rank 3"));
  }
}

TEST(OnnxImportTest, RefusesMoreThanOneOutput) {
  ModelBuilder b({-1, 4});
  b.Node("Gemm", {"", b.Weight("w", {4, 2}, Values(8, 1))});
  onnx::ModelProto model = b.Finish();
  *model.mutable_graph()->add_output() = model.graph().output(0);
  model.mutable_graph()->mutable_output(1)->set_name("other");
  OnnxImportOptions options;
  options.input_shape = {1, 2, 2};
  auto c = Import(model, options);
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("2 graph outputs"));
}

TEST(OnnxImportTest, RefusesExternalDataNonFloatAndNonFiniteWeights) {
  OnnxImportOptions options;
  options.input_shape = {1, 2, 2};
  auto gemm_with = [](const onnx::TensorProto& w) {
    ModelBuilder b({-1, 4});
    b.Node("Gemm", {"", w.name()});
    *b.graph()->add_initializer() = w;
    return b.Finish();
  };
  onnx::TensorProto external = onnx_test::FloatTensor("w", {4, 2}, {});
  external.set_data_location(onnx::TensorProto::EXTERNAL);
  auto* entry = external.add_external_data();
  entry->set_key("location");
  entry->set_value("../../etc/passwd");
  auto c = Import(gemm_with(external), options);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(c.status().message(), HasSubstr("external data"));

  onnx::TensorProto doubles;
  doubles.set_name("w");
  doubles.set_data_type(onnx::TensorProto::DOUBLE);
  doubles.add_dims(4);
  doubles.add_dims(2);
  for (int k = 0; k < 8; ++k) doubles.add_double_data(0.5);
  c = Import(gemm_with(doubles), options);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(c.status().message(), HasSubstr("float32"));

  std::vector<float> values = Values(8, 1);
  values[5] = std::numeric_limits<float>::quiet_NaN();
  c = Import(gemm_with(onnx_test::FloatTensor("w", {4, 2}, values)), options);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(c.status().message(), HasSubstr("non-finite"));

  onnx::TensorProto short_raw = onnx_test::FloatTensor("w", {4, 2}, {});
  short_raw.set_raw_data(std::string(12, '\0'));  // 3 floats for 8
  c = Import(gemm_with(short_raw), options);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kDataLoss);
}

TEST(OnnxImportTest, RefusesMalformedAndTruncatedBytes) {
  auto c = ImportOnnxModel("not a model at all", {}, "junk.onnx");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kDataLoss);
  const std::string bytes = onnx_test::ConvBnModel().SerializeAsString();
  for (size_t cut : {size_t{0}, size_t{1}, bytes.size() / 3, bytes.size() / 2, bytes.size() - 1}) {
    c = ImportOnnxModel(std::string_view(bytes).substr(0, cut), {}, "cut.onnx");
    EXPECT_FALSE(c.ok()) << cut;
  }
  EXPECT_TRUE(ImportOnnxModel(bytes, {}, "whole.onnx").ok());
}

// A Conv's strides and dilations: two sizes each, in [1, 65536].
TEST(OnnxImportTest, RefusesConvStridesAndDilationsItCannotTake) {
  for (const auto& [attribute, values] : std::vector<std::pair<std::string, std::vector<int64_t>>>{
           {"strides", {0, 1}}, {"strides", {1, 1, 1}}, {"dilations", {1, 70000}}}) {
    SCOPED_TRACE(attribute);
    ModelBuilder b({-1, 1, 7, 7});
    onnx::NodeProto* conv = b.Node("Conv", {"", b.Weight("w", {1, 1, 3, 3}, Values(9, 41))});
    onnx_test::SetInts(conv, attribute, values);
    b.Node("Flatten", {""});
    onnx_test::SetInt(b.Node("Gemm", {"", b.Weight("fc", {1, 25}, std::vector<float>(25, 1.f))}),
                      "transB", 1);
    auto c = Import(b.Finish());
    ASSERT_FALSE(c.ok());
    EXPECT_THAT(c.status().message(), HasSubstr("needs 2-D positive strides and dilations"));
  }
}

}  // namespace
}  // namespace distillery
