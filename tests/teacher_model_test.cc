// TeacherModel and EncodeTeacherTargets: an ensemble's members see the
// inputs they would see served alone (their own preprocessing of the same
// pixels), and its answers are the arithmetic or geometric mean of theirs.
#include "teacher_server/teacher_model.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "common/formats/target_codec.h"
#include "gtest/gtest.h"

namespace distillery {
namespace {

constexpr int64_t kRows = 6;
constexpr float kTemperature = 3.f;

std::unique_ptr<Network> MakeNetwork(const std::string& architecture, uint64_t seed,
                                     const Shape& shape = {1, 28, 28}) {
  auto spec = NetworkSpec::Parse(architecture, shape);
  EXPECT_TRUE(spec.ok()) << spec.status();
  auto network = Network::Create(*spec, seed);
  EXPECT_TRUE(network.ok()) << network.status();
  return std::move(*network);
}

Preprocessing MnistNormalised() {
  Preprocessing p;
  p.mean = {0.1307f};
  p.std = {0.3081f};
  return p;
}

// Random pixels of kRows 28x28 images.
std::vector<uint8_t> Pixels(uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> pixels(kRows * 784);
  for (uint8_t& p : pixels) p = static_cast<uint8_t>(rng() % 256);
  return pixels;
}

// What the service gives the model for `pixels`: its input preprocessing.
Tensor ModelInput(const TeacherModel& model, const std::vector<uint8_t>& pixels) {
  Tensor input({kRows, 1, 28, 28});
  ApplyPixelTable(model.input_preprocessing().Table(1), 1, 784, kRows, pixels.data(), input.data());
  return input;
}

// A member's logits when it is served alone: its own preprocessing of the
// pixels, its own Infer.
Tensor AloneLogits(Network& network, const Preprocessing& preprocessing,
                   const std::vector<uint8_t>& pixels) {
  Tensor input({kRows, 1, 28, 28});
  ApplyPixelTable(preprocessing.Table(1), 1, 784, kRows, pixels.data(), input.data());
  const Tensor* logits = nullptr;
  EXPECT_TRUE(network.Infer(input, &logits).ok());
  return *logits;
}

std::vector<double> Softmax(const float* z, int64_t classes, double t) {
  double top = z[0];
  for (int64_t c = 1; c < classes; ++c) top = std::max<double>(top, z[c]);
  std::vector<double> p(classes);
  double sum = 0;
  for (int64_t c = 0; c < classes; ++c) sum += p[c] = std::exp((z[c] - top) / t);
  for (double& v : p) v /= sum;
  return p;
}

class EnsembleTest : public testing::Test {
 protected:
  void SetUp() override {
    std::vector<TeacherMember> members;
    members.push_back({MakeNetwork("784-32-10", 1), Preprocessing(), "mlp"});
    members.push_back(
        {MakeNetwork("conv3x3:4/same+bn,maxpool2,fc:10", 2), MnistNormalised(), "cnn"});
    members.push_back({MakeNetwork("784-16-10", 3), Preprocessing(), "small"});
    pixels_ = Pixels(7);
    for (TeacherMember& m : members) {
      alone_.push_back(AloneLogits(*m.network, m.preprocessing, pixels_));
    }
    ensemble_ = *TeacherModel::Ensemble(std::move(members), EnsembleRule::kGeometric);
  }

  // The targets of the ensemble's logits under `rule` with `options`.
  absl::StatusOr<Tensor> Targets(EnsembleRule rule, const distill::v1::TargetOptions& options) {
    const Tensor* logits = nullptr;
    absl::Status s = ensemble_->Infer(ModelInput(*ensemble_, pixels_), &logits);
    if (!s.ok()) return s;
    auto contract = ResolveTargetOptions(options, 10, kTemperature, "hash");
    if (!contract.ok()) return contract.status();
    TemperatureSoftmax softmax;
    distill::v1::Targets targets;
    s = EncodeTeacherTargets(*logits, 3, rule, *contract, &softmax, &targets);
    if (!s.ok()) return s;
    Tensor decoded;
    if (contract->representation() == distill::v1::LOGITS) {
      decoded.Resize(kRows, 10);
      std::copy(targets.values().begin(), targets.values().end(), decoded.data());
      return decoded;
    }
    s = DecodeTargets(targets, *contract, &softmax, &decoded);
    if (!s.ok()) return s;
    return decoded;
  }

  std::vector<uint8_t> pixels_;
  std::vector<Tensor> alone_;
  std::unique_ptr<TeacherModel> ensemble_;
};

TEST_F(EnsembleTest, MembersGiveTheBitsTheyGiveServedAlone) {
  EXPECT_EQ(ensemble_->num_members(), 3);
  EXPECT_EQ(ensemble_->input_preprocessing().scale, 1.f);
  const Tensor* logits = nullptr;
  ASSERT_TRUE(ensemble_->Infer(ModelInput(*ensemble_, pixels_), &logits).ok());
  ASSERT_EQ(logits->rows(), kRows);
  ASSERT_EQ(logits->cols(), 30);
  for (int64_t m = 0; m < 3; ++m) {
    for (int64_t r = 0; r < kRows; ++r) {
      for (int64_t c = 0; c < 10; ++c) {
        EXPECT_EQ(logits->row(r)[m * 10 + c], alone_[m].row(r)[c]) << m << " " << r << " " << c;
      }
    }
  }
}

TEST_F(EnsembleTest, ARowsLogitsDoNotDependOnItsBatchMates) {
  Tensor all = ModelInput(*ensemble_, pixels_);
  const Tensor* logits = nullptr;
  ASSERT_TRUE(ensemble_->Infer(all, &logits).ok());
  const Tensor batch = *logits;
  auto clone = ensemble_->Clone();
  ASSERT_TRUE(clone.ok());
  Tensor one({1, 1, 28, 28});
  std::copy(all.row(4), all.row(5), one.data());
  ASSERT_TRUE((*clone)->Infer(one, &logits).ok());
  for (int64_t c = 0; c < 30; ++c) EXPECT_EQ(logits->row(0)[c], batch.row(4)[c]);
}

TEST_F(EnsembleTest, GeometricIsTheSoftmaxOfTheMeanLogits) {
  distill::v1::TargetOptions options;
  auto got = Targets(EnsembleRule::kGeometric, options);
  ASSERT_TRUE(got.ok()) << got.status();
  options.set_representation(distill::v1::LOGITS);
  auto logits = Targets(EnsembleRule::kGeometric, options);
  ASSERT_TRUE(logits.ok()) << logits.status();
  for (int64_t r = 0; r < kRows; ++r) {
    std::vector<float> mean(10);
    for (int64_t c = 0; c < 10; ++c) {
      double sum = 0;
      for (const Tensor& z : alone_) sum += z.row(r)[c];
      mean[c] = static_cast<float>(sum / 3);
      EXPECT_NEAR(logits->row(r)[c], mean[c], 1e-6);
    }
    // The normalised geometric mean of the members' softmax(z/T).
    std::vector<double> geometric(10, 0.0);
    double norm = 0;
    for (int64_t c = 0; c < 10; ++c) {
      double log_sum = 0;
      for (const Tensor& z : alone_) log_sum += std::log(Softmax(z.row(r), 10, kTemperature)[c]);
      norm += geometric[c] = std::exp(log_sum / 3);
    }
    for (int64_t c = 0; c < 10; ++c) EXPECT_NEAR(got->row(r)[c], geometric[c] / norm, 1e-6);
  }
}

TEST_F(EnsembleTest, ArithmeticIsTheMeanOfTheMembersProbabilities) {
  distill::v1::TargetOptions options;
  auto got = Targets(EnsembleRule::kArithmetic, options);
  ASSERT_TRUE(got.ok()) << got.status();
  for (int64_t r = 0; r < kRows; ++r) {
    double total = 0;
    for (int64_t c = 0; c < 10; ++c) {
      double mean = 0;
      for (const Tensor& z : alone_) mean += Softmax(z.row(r), 10, kTemperature)[c] / 3;
      EXPECT_NEAR(got->row(r)[c], mean, 1e-6);
      total += got->row(r)[c];
    }
    EXPECT_NEAR(total, 1.0, 1e-5);
  }
  // Top-k keeps the k largest of the mean, with their classes.
  options.set_top_k(3);
  auto top = Targets(EnsembleRule::kArithmetic, options);
  ASSERT_TRUE(top.ok()) << top.status();
  for (int64_t r = 0; r < kRows; ++r) {
    std::vector<int> order(10);
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(),
              [&](int a, int b) { return got->row(r)[a] > got->row(r)[b]; });
    for (int j = 0; j < 3; ++j) EXPECT_NEAR(top->row(r)[order[j]], got->row(r)[order[j]], 1e-6);
  }
  // An arithmetic mean of probabilities has no logits.
  options.set_top_k(0);
  options.set_representation(distill::v1::LOGITS);
  EXPECT_EQ(Targets(EnsembleRule::kArithmetic, options).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(EnsembleRefusalTest, MembersMustShareTheInputShapeAndTheClasses) {
  auto make = [](const std::string& second, const Shape& shape) {
    std::vector<TeacherMember> members;
    members.push_back({MakeNetwork("784-8-10", 1), Preprocessing(), "a.ckpt"});
    members.push_back({MakeNetwork(second, 2, shape), Preprocessing(), "b.ckpt"});
    return TeacherModel::Ensemble(std::move(members), EnsembleRule::kArithmetic).status();
  };
  EXPECT_TRUE(make("784-8-10", {1, 28, 28}).ok());
  const absl::Status shape = make("196-8-10", {1, 14, 14});
  EXPECT_EQ(shape.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(shape.message().find("b.ckpt"), std::string::npos) << shape;
  EXPECT_NE(shape.message().find("input shape"), std::string::npos) << shape;
  const absl::Status classes = make("784-8-5", {1, 28, 28});
  EXPECT_EQ(classes.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(classes.message().find("classes"), std::string::npos) << classes;
  Preprocessing bad;
  bad.mean = {0.f, 0.f};  // two means for one channel
  std::vector<TeacherMember> members;
  members.push_back({MakeNetwork("784-8-10", 1), Preprocessing(), "a.ckpt"});
  members.push_back({MakeNetwork("784-8-10", 2), bad, "b.ckpt"});
  EXPECT_EQ(TeacherModel::Ensemble(std::move(members), EnsembleRule::kGeometric).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<TeacherMember> alone;
  alone.push_back({MakeNetwork("784-8-10", 1), Preprocessing(), "a.ckpt"});
  EXPECT_EQ(TeacherModel::Ensemble(std::move(alone), EnsembleRule::kGeometric).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(ParseEnsembleRule("harmonic").ok());
  EXPECT_EQ(*ParseEnsembleRule("geometric"), EnsembleRule::kGeometric);
}

}  // namespace
}  // namespace distillery
