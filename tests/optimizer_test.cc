// Optimizer updates against their formulas, max-norm, and the schedules.
#include "common/nn/optimizer.h"

#include "tests/test_util.h"

namespace distillery {
namespace {

Parameter MakeParameter(const std::string& name, Tensor value, Tensor grad, bool max_norm) {
  Parameter p;
  p.name = name;
  p.value = std::move(value);
  p.grad = std::move(grad);
  p.max_norm_applies = max_norm;
  return p;
}

TEST(SgdTest, MomentumUpdateFollowsTheFormula) {
  SgdConfig config;
  config.momentum_start = config.momentum_end = 0.9f;
  auto sgd = MakeSgd(config);
  Parameter p = MakeParameter("w", RandomMatrix(2, 3, 1), RandomMatrix(2, 3, 2), false);
  const Tensor w0 = p.value, g = p.grad;
  sgd->Step({&p}, 0.1f, 0);  // d1 = -0.1 g
  sgd->Step({&p}, 0.1f, 1);  // d2 = 0.9 d1 - 0.1 g
  for (int64_t i = 0; i < w0.size(); ++i) {
    const float d1 = -0.1f * g.data()[i];
    const float d2 = 0.9f * d1 - 0.1f * g.data()[i];
    EXPECT_NEAR(p.value.data()[i], w0.data()[i] + d1 + d2, 1e-6);
  }
  EXPECT_EQ(sgd->State().count("w.velocity"), 1u);
}

TEST(SgdTest, DampenedFormScalesTheStepByOneMinusMomentum) {
  SgdConfig config;
  config.momentum_start = config.momentum_end = 0.5f;
  config.dampened = true;
  auto sgd = MakeSgd(config);
  Parameter p = MakeParameter("w", Tensor(1, 1), Tensor(1, 1), false);
  p.grad.at(0, 0) = 2.f;
  sgd->Step({&p}, 1.f, 0);
  EXPECT_FLOAT_EQ(p.value.at(0, 0), -(1.f - 0.5f) * 1.f * 2.f);
}

TEST(SgdTest, MomentumRampsLinearly) {
  SgdConfig config;
  config.momentum_start = 0.5f;
  config.momentum_end = 0.99f;
  config.momentum_ramp_steps = 100;
  EXPECT_FLOAT_EQ(MomentumAt(config, 0), 0.5f);
  EXPECT_NEAR(MomentumAt(config, 50), 0.745f, 1e-6);
  EXPECT_FLOAT_EQ(MomentumAt(config, 100), 0.99f);
  EXPECT_FLOAT_EQ(MomentumAt(config, 1000), 0.99f);
}

TEST(SgdTest, MaxNormClipsOnlyFlaggedLongRows) {
  SgdConfig config;
  config.max_norm = 1.f;
  auto sgd = MakeSgd(config);
  Tensor w(2, 2);
  w.at(0, 0) = 3.f;  // norm 5 -> clipped to 1
  w.at(0, 1) = 4.f;
  w.at(1, 0) = 0.3f;  // norm 0.5 -> untouched
  w.at(1, 1) = 0.4f;
  Parameter hidden = MakeParameter("hidden", w, Tensor(2, 2), true);
  Parameter output = MakeParameter("output", w, Tensor(2, 2), false);
  sgd->Step({&hidden, &output}, 0.1f, 0);
  EXPECT_NEAR(hidden.value.at(0, 0), 0.6f, 1e-6);
  EXPECT_NEAR(hidden.value.at(0, 1), 0.8f, 1e-6);
  EXPECT_FLOAT_EQ(hidden.value.at(1, 0), 0.3f);
  EXPECT_FLOAT_EQ(output.value.at(0, 0), 3.f);
}

TEST(AdamTest, FirstStepMovesEachWeightByTheLearningRate) {
  auto adam = MakeAdam(AdamConfig{});
  Parameter p = MakeParameter("w", Tensor(1, 3), Tensor(1, 3), false);
  p.grad.at(0, 0) = 5.f;
  p.grad.at(0, 1) = -0.01f;
  p.grad.at(0, 2) = 0.f;
  adam->Step({&p}, 0.1f, 0);
  // With bias correction the first step is lr * g / |g|.
  EXPECT_NEAR(p.value.at(0, 0), -0.1f, 1e-5);
  EXPECT_NEAR(p.value.at(0, 1), 0.1f, 1e-4);
  EXPECT_FLOAT_EQ(p.value.at(0, 2), 0.f);
  EXPECT_EQ(adam->State().size(), 2u);
}

TEST(AdamTest, MinimisesAQuadratic) {
  auto adam = MakeAdam(AdamConfig{});
  Parameter p = MakeParameter("w", RandomMatrix(1, 4, 3, 5.f), Tensor(1, 4), false);
  for (int step = 0; step < 2000; ++step) {
    for (int i = 0; i < 4; ++i) p.grad.data()[i] = 2.f * (p.value.data()[i] - 1.f);
    adam->Step({&p}, 0.05f, step);
  }
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(p.value.data()[i], 1.f, 1e-2);
}

TEST(OptimizerTest, RestoredStateContinuesIdentically) {
  SgdConfig config;
  auto a = MakeSgd(config);
  Parameter pa = MakeParameter("w", RandomMatrix(3, 3, 4), RandomMatrix(3, 3, 5), false);
  a->Step({&pa}, 0.1f, 0);
  auto b = MakeSgd(config);
  Parameter pb = pa;
  std::map<std::string, Tensor> state;
  for (auto& [name, m] : a->State()) state[name] = *m;
  b->RestoreState(state);
  a->Step({&pa}, 0.1f, 1);
  b->Step({&pb}, 0.1f, 1);
  EXPECT_EQ(pa.value, pb.value);
}

TEST(ScheduleTest, CosineWarmupAndStep) {
  LearningRateSchedule cosine;
  cosine.base = 1.f;
  cosine.kind = LearningRateSchedule::Kind::kCosine;
  EXPECT_FLOAT_EQ(cosine.At(0, 100, 10), 1.f);
  EXPECT_NEAR(cosine.At(50, 100, 10), 0.5f, 1e-6);
  EXPECT_NEAR(cosine.At(100, 100, 10), 0.f, 1e-6);
  cosine.warmup_steps = 10;
  EXPECT_FLOAT_EQ(cosine.At(0, 110, 10), 0.1f);
  EXPECT_FLOAT_EQ(cosine.At(9, 110, 10), 1.f);
  LearningRateSchedule step;
  step.base = 1.f;
  step.kind = LearningRateSchedule::Kind::kStep;
  step.step_gamma = 0.5f;
  step.step_every_epochs = 2;
  EXPECT_FLOAT_EQ(step.At(19, 1000, 10), 1.f);
  EXPECT_FLOAT_EQ(step.At(20, 1000, 10), 0.5f);
  EXPECT_FLOAT_EQ(step.At(45, 1000, 10), 0.25f);
  EXPECT_FALSE(LearningRateSchedule::ParseKind("linear").ok());
}

}  // namespace
}  // namespace distillery
