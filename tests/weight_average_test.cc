// Weight averaging: the running mean itself, and the trainer's use of it
// (average_last_epochs): a run's weights are the mean of its last epochs'
// weights, a resumed run averages the same epochs bit for bit, and what
// cannot be averaged (batch norm, more epochs than the run has, a
// checkpoint whose average does not fit) is refused.
#include "common/train/weight_average.h"

#include <cmath>
#include <cstdio>

#include "common/formats/checkpoint.h"
#include "common/train/trainer.h"
#include "gtest/gtest.h"
#include "tests/interrupted_source.h"
#include "tests/mnist_slice_test.h"
#include "tests/test_util.h"

namespace distillery {
namespace {

Parameter MakeParameter(const std::string& name, std::vector<float> values) {
  Parameter p;
  p.name = name;
  p.value = Tensor(Shape{1, static_cast<int64_t>(values.size())});
  for (size_t i = 0; i < values.size(); ++i) p.value.data()[i] = values[i];
  p.max_norm_applies = false;
  return p;
}

TEST(WeightAverageTest, IsTheMeanOfTheSnapshots) {
  Parameter a = MakeParameter("a", {1, -2}), b = MakeParameter("b", {10});
  std::vector<Parameter*> params = {&a, &b};
  WeightAverage average;
  EXPECT_EQ(average.count(), 0);
  EXPECT_EQ(average.CopyTo(params).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(average.Add(params).ok());
  a.value.data()[0] = 4;
  a.value.data()[1] = 2;
  b.value.data()[0] = 40;
  ASSERT_TRUE(average.Add(params).ok());
  a.value.data()[0] = 7;
  a.value.data()[1] = 6;
  b.value.data()[0] = -50;
  ASSERT_TRUE(average.Add(params).ok());
  EXPECT_EQ(average.count(), 3);
  ASSERT_TRUE(average.CopyTo(params).ok());
  EXPECT_FLOAT_EQ(a.value.data()[0], 4.f);  // (1 + 4 + 7) / 3
  EXPECT_FLOAT_EQ(a.value.data()[1], 2.f);  // (-2 + 2 + 6) / 3
  EXPECT_FLOAT_EQ(b.value.data()[0], 0.f);  // (10 + 40 - 50) / 3
}

TEST(WeightAverageTest, RefusesParametersOfAnotherShape) {
  Parameter a = MakeParameter("a", {1, 2});
  WeightAverage average;
  std::vector<Parameter*> params = {&a};
  ASSERT_TRUE(average.Add(params).ok());
  Parameter wider = MakeParameter("a", {1, 2, 3});
  std::vector<Parameter*> other = {&wider};
  EXPECT_EQ(average.Add(other).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(average.CopyTo(other).code(), absl::StatusCode::kInvalidArgument);
  std::vector<Parameter*> more = {&a, &wider};
  EXPECT_EQ(average.Add(more).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(average.count(), 1);
}

class TrainerWeightAverageTest : public MnistSliceTest<1000, 500> {
 protected:
  // A constant learning rate: a run of n epochs is the first n epochs of a
  // longer one, so that shorter runs give the weights after each epoch.
  static TrainerConfig Config(const std::string& name, int64_t epochs, int64_t average) {
    TrainerConfig config;
    config.architecture = "784-32-10";
    config.epochs = epochs;
    config.average_last_epochs = average;
    config.batch_size = 50;
    config.schedule.base = 0.1f;
    config.schedule.kind = LearningRateSchedule::Kind::kConstant;
    config.hidden_dropout = 0.2f;
    config.augmentation.max_shift = 1;
    config.log_progress = false;
    config.data_description = "mnist train[0,1000)";
    config.checkpoint_path = UniqueTempPath(name + ".ckpt");
    std::remove(config.checkpoint_path.c_str());
    return config;
  }
  static std::vector<Tensor> Weights(Network& network) {
    std::vector<Tensor> weights;
    for (Parameter* p : network.Parameters()) weights.push_back(p->value);
    return weights;
  }
};

TEST_F(TrainerWeightAverageTest, WeightsAreTheMeanOfTheLastEpochs) {
  std::vector<std::vector<Tensor>> after;  // after epochs 3, 4 and 5
  for (int64_t epochs = 3; epochs <= 5; ++epochs) {
    absl::StatusOr<TrainingResult> run = Train(Config("plain", epochs, 0), *train_, *test_);
    ASSERT_TRUE(run.ok()) << run.status();
    after.push_back(Weights(*run->network));
  }
  TrainerConfig config = Config("averaged", 5, 3);
  absl::StatusOr<TrainingResult> averaged = Train(config, *train_, *test_);
  ASSERT_TRUE(averaged.ok()) << averaged.status();
  std::vector<Tensor> mean = Weights(*averaged->network);
  ASSERT_EQ(mean.size(), after[0].size());
  int64_t moved = 0;
  for (size_t i = 0; i < mean.size(); ++i) {
    for (int64_t k = 0; k < mean[i].size(); ++k) {
      const double expected =
          (double{after[0][i].data()[k]} + after[1][i].data()[k] + after[2][i].data()[k]) / 3;
      ASSERT_NEAR(mean[i].data()[k], expected, 1e-5 * (1 + std::fabs(expected)))
          << "parameter " << i << " value " << k;
      moved += after[2][i].data()[k] != mean[i].data()[k];
    }
  }
  EXPECT_GT(moved, 1000);  // the mean is not the last epoch's weights
  // The last epoch's evaluation is of the mean, and so is the checkpoint.
  EvaluationResult eval = *Evaluate(*averaged->network, *test_);
  EXPECT_EQ(averaged->final_evaluation.errors, eval.errors);
  EXPECT_EQ(averaged->history.back().test_errors, eval.errors);
  absl::StatusOr<distill::v1::Checkpoint> checkpoint = LoadCheckpoint(config.checkpoint_path);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  EXPECT_EQ(checkpoint->training_state().averaged_epochs(), 3);
  EXPECT_EQ(checkpoint->training_state().settings().at("average_last_epochs"), "3");
  absl::StatusOr<std::unique_ptr<Network>> saved = NetworkFromCheckpoint(*checkpoint);
  ASSERT_TRUE(saved.ok()) << saved.status();
  std::vector<Tensor> saved_weights = Weights(**saved);
  for (size_t i = 0; i < mean.size(); ++i) EXPECT_EQ(saved_weights[i], mean[i]);
}

TEST_F(TrainerWeightAverageTest, ResumedRunAveragesTheSameBits) {
  const TrainerConfig whole_config = Config("whole", 4, 3);
  absl::StatusOr<TrainingResult> whole = Train(whole_config, *train_, *test_);
  ASSERT_TRUE(whole.ok()) << whole.status();
  // Interrupted in epoch 4: the checkpoint after epoch 3 holds the mean of
  // epochs 2 and 3.
  TrainerConfig config = Config("interrupted", 4, 3);
  InterruptedSource source(*train_, config, /*fail_epoch=*/3);
  ASSERT_EQ(Train(config, source, *test_).status().code(), absl::StatusCode::kUnavailable);
  absl::StatusOr<distill::v1::Checkpoint> checkpoint = LoadCheckpoint(config.checkpoint_path);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  EXPECT_EQ(checkpoint->training_state().epochs_completed(), 3);
  EXPECT_EQ(checkpoint->training_state().averaged_epochs(), 2);
  config.resume = true;
  absl::StatusOr<TrainingResult> resumed = Train(config, *train_, *test_);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  std::vector<Tensor> a = Weights(*whole->network), b = Weights(*resumed->network);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i], b[i]) << "parameter " << i;
  // Another averaging window is another trajectory, and so are more epochs.
  TrainerConfig other = config;
  other.average_last_epochs = 2;
  EXPECT_EQ(Train(other, *train_, *test_).status().code(), absl::StatusCode::kFailedPrecondition);
  other = config;
  other.epochs = 6;
  other.average_last_epochs = 5;
  EXPECT_EQ(Train(other, *train_, *test_).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(TrainerWeightAverageTest, RefusesWhatCannotBeAveraged) {
  TrainerConfig config = Config("refused", 3, 4);
  absl::StatusOr<TrainingResult> run = Train(config, *train_, *test_);
  EXPECT_EQ(run.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(run.status().message().find("average_last_epochs must be in [0, epochs = 3]"),
            std::string::npos)
      << run.status();
  config = Config("negative", 3, -1);
  EXPECT_EQ(Train(config, *train_, *test_).status().code(), absl::StatusCode::kInvalidArgument);
  config = Config("batch_norm", 2, 1);
  config.architecture = "conv3x3:4+bn,pool2,fc:10";
  run = Train(config, *train_, *test_);
  EXPECT_EQ(run.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(run.status().message().find("without batch norm"), std::string::npos) << run.status();
}

TEST_F(TrainerWeightAverageTest, CheckpointWhoseAverageDoesNotFitIsRefused) {
  TrainerConfig config = Config("corrupt", 3, 2);
  InterruptedSource source(*train_, config, /*fail_epoch=*/2);
  ASSERT_EQ(Train(config, source, *test_).status().code(), absl::StatusCode::kUnavailable);
  absl::StatusOr<distill::v1::Checkpoint> checkpoint = LoadCheckpoint(config.checkpoint_path);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  ASSERT_EQ(checkpoint->training_state().averaged_epochs(), 1);
  config.resume = true;
  // A count that disagrees with the epochs done.
  distill::v1::Checkpoint wrong_count = *checkpoint;
  wrong_count.mutable_training_state()->set_averaged_epochs(2);
  ASSERT_TRUE(SaveCheckpoint(config.checkpoint_path, wrong_count).ok());
  absl::StatusOr<TrainingResult> run = Train(config, *train_, *test_);
  EXPECT_EQ(run.status().code(), absl::StatusCode::kDataLoss) << run.status();
  // A tensor of another shape.
  distill::v1::Checkpoint wrong_shape = *checkpoint;
  wrong_shape.mutable_training_state()->mutable_averaged_parameters(0)->set_shape(0, 16);
  ASSERT_TRUE(SaveCheckpoint(config.checkpoint_path, wrong_shape).ok());
  run = Train(config, *train_, *test_);
  EXPECT_EQ(run.status().code(), absl::StatusCode::kDataLoss) << run.status();
  // The average missing.
  distill::v1::Checkpoint missing = *checkpoint;
  missing.mutable_training_state()->clear_averaged_parameters();
  missing.mutable_training_state()->set_averaged_epochs(0);
  ASSERT_TRUE(SaveCheckpoint(config.checkpoint_path, missing).ok());
  run = Train(config, *train_, *test_);
  EXPECT_EQ(run.status().code(), absl::StatusCode::kDataLoss) << run.status();
}

}  // namespace
}  // namespace distillery
