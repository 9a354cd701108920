// The network as a whole: architecture parsing, seeded initialisation, and a
// finite-difference check of back-propagation through every layer type.
#include "common/nn/mlp.h"

#include "common/nn/losses.h"
#include "tests/test_util.h"

namespace distillery {
namespace {

TEST(MlpSpecTest, ParsesAndCounts) {
  absl::StatusOr<MlpSpec> spec = MlpSpec::Parse("784-1200-1200-10");
  ASSERT_TRUE(spec.ok());
  EXPECT_EQ(spec->ParameterCount(), 784 * 1200 + 1200 + 1200 * 1200 + 1200 + 1200 * 10 + 10);
  EXPECT_EQ(spec->ArchitectureString(), "784-1200-1200-10");
  for (const char* bad : {"", "784", "784-x-10", "784-0-10", "784--10", "784-100000-10"}) {
    EXPECT_EQ(MlpSpec::Parse(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(MlpTest, SameSeedSameWeightsWithinTheInitRange) {
  MlpSpec spec = *MlpSpec::Parse("16-8-4");
  auto a = *Mlp::Create(spec, 9), b = *Mlp::Create(spec, 9), c = *Mlp::Create(spec, 10);
  EXPECT_EQ(a->Parameters()[0]->value, b->Parameters()[0]->value);
  EXPECT_FALSE(a->Parameters()[0]->value == c->Parameters()[0]->value);
  const Tensor& w = a->Parameters()[0]->value;
  for (int64_t i = 0; i < w.size(); ++i) EXPECT_LE(std::abs(w.data()[i]), 0.25f);  // 1/sqrt(16)
}

TEST(MlpTest, RejectsInputOfTheWrongWidth) {
  auto mlp = *Mlp::Create(*MlpSpec::Parse("16-8-4"), 1);
  Tensor input(2, 15);
  const Tensor* logits = nullptr;
  EXPECT_EQ(mlp->Predict(input, &logits).code(), absl::StatusCode::kInvalidArgument);
}

// d(loss)/d(weights) of the whole network, through Linear, ReLU and dropout
// (masks fixed by the noise step), against central differences. The step is
// 1e-2: oneDNN's log-softmax is accurate to ~2e-6, too coarse for smaller ones.
TEST(MlpTest, BackpropagationMatchesFiniteDifferences) {
  MlpSpec spec = *MlpSpec::Parse("6-5-4-3");
  spec.input_dropout = 0.2f;
  spec.hidden_dropout = 0.3f;
  auto mlp = *Mlp::Create(spec, 21);
  const Tensor input = RandomMatrix(4, 6, 22);
  const std::vector<int> labels = {0, 2, 1, 2};
  CrossEntropyLoss loss;
  auto value = [&] {
    const Tensor* logits = nullptr;
    EXPECT_TRUE(mlp->Forward(input, true, 77, &logits).ok());
    Tensor unused;
    return *loss.Compute(*logits, labels, 1.f, &unused);
  };
  const Tensor* logits = nullptr;
  ASSERT_TRUE(mlp->Forward(input, true, 77, &logits).ok());
  Tensor grad_logits;
  ASSERT_TRUE(loss.Compute(*logits, labels, 1.f, &grad_logits).ok());
  ASSERT_TRUE(mlp->Backward(grad_logits).ok());
  std::vector<Tensor> grads;
  for (Parameter* p : mlp->Parameters()) grads.push_back(p->grad);
  std::vector<Parameter*> params = mlp->Parameters();
  for (size_t i = 0; i < params.size(); ++i) {
    SCOPED_TRACE(params[i]->name);
    ExpectGradientMatches(value, &params[i]->value, grads[i], 1e-2, 3e-2, 1e-4,
                          /*skip_kinks=*/true);
  }
}

TEST(MlpTest, CloneHasTheSameOutputs) {
  auto mlp = *Mlp::Create(*MlpSpec::Parse("10-6-3"), 5);
  auto copy = *mlp->Clone();
  const Tensor input = RandomMatrix(3, 10, 6);
  const Tensor *a = nullptr, *b = nullptr;
  ASSERT_TRUE(mlp->Predict(input, &a).ok());
  ASSERT_TRUE(copy->Predict(input, &b).ok());
  EXPECT_EQ(*a, *b);
}

}  // namespace
}  // namespace distillery
