// --resume refuses what it cannot honour: a checkpoint of a run interrupted
// after its first epoch is resumed with changed settings (refused, naming
// the setting, unless allowed), unchanged (bit-identical to the
// uninterrupted run), and after a crash between the CSV row and the
// checkpoint (the row is not duplicated).
#include "common/train/resume.h"

#include <cstdio>
#include <fstream>

#include "common/formats/checkpoint.h"
#include "common/train/trainer.h"
#include "gtest/gtest.h"
#include "tests/interrupted_source.h"
#include "tests/mnist_slice_test.h"
#include "tests/test_util.h"

namespace distillery {
namespace {

std::vector<std::string> ReadLines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

class TrainerResumeTest : public MnistSliceTest<1500, 500> {
 protected:
  static TrainerConfig Config(const std::string& name) {
    TrainerConfig config;
    config.architecture = "784-64-10";
    config.epochs = 2;
    config.batch_size = 50;
    config.schedule.base = 0.1f;
    config.hidden_dropout = 0.2f;
    config.augmentation.max_shift = 1;
    config.log_progress = false;
    config.data_description = "mnist train[0,1500)";
    config.checkpoint_path = UniqueTempPath(name + ".ckpt");
    config.metrics_csv_path = UniqueTempPath(name + ".csv");
    std::remove(config.checkpoint_path.c_str());
    std::remove(config.metrics_csv_path.c_str());
    return config;
  }
  // Runs `config` until its second epoch fails: the checkpoint holds epoch 1.
  static void Interrupt(const TrainerConfig& config) {
    InterruptedSource source(*train_, config, /*fail_epoch=*/1);
    absl::StatusOr<TrainingResult> result = Train(config, source, *test_);
    ASSERT_EQ(result.status().code(), absl::StatusCode::kUnavailable) << result.status();
    auto checkpoint = LoadCheckpoint(config.checkpoint_path);
    ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
    ASSERT_EQ(checkpoint->training_state().epochs_completed(), 1);
  }
  static absl::StatusOr<TrainingResult> Resume(TrainerConfig config) {
    config.resume = true;
    return Train(config, *train_, *test_);
  }
  static void ExpectSameWeights(Network& a, Network& b) {
    std::vector<Parameter*> pa = a.Parameters(), pb = b.Parameters();
    ASSERT_EQ(pa.size(), pb.size());
    for (size_t i = 0; i < pa.size(); ++i) EXPECT_EQ(pa[i]->value, pb[i]->value) << pa[i]->name;
  }
};

TEST_F(TrainerResumeTest, CheckpointRecordsTheSettingsIsaAndThreads) {
  const TrainerConfig config = Config("record");
  Interrupt(config);
  auto checkpoint = LoadCheckpoint(config.checkpoint_path);
  ASSERT_TRUE(checkpoint.ok());
  const auto& state = checkpoint->training_state();
  EXPECT_FALSE(state.cpu_isa().empty());
  EXPECT_GT(state.compute_threads(), 0);
  EXPECT_EQ(state.settings().at("optimizer"), "sgd");
  EXPECT_EQ(state.settings().at("seed"), "1");
  EXPECT_EQ(state.settings().at("batch_size"), "50");
  EXPECT_EQ(state.settings().at("hidden_dropout"), "0.200000003");
  EXPECT_EQ(state.settings().at("jitter"), "1");
  EXPECT_EQ(state.settings().at("epochs"), "2");
  EXPECT_EQ(state.settings().at("data"), "mnist train[0,1500)");
  EXPECT_EQ(state.settings().at("examples_per_epoch"), "1500");
  // Off, elastic distortion is not recorded, as in checkpoints from before it.
  EXPECT_EQ(state.settings().count("elastic_alpha"), 0u);
  EXPECT_EQ(state.settings().count("elastic_sigma"), 0u);
}

TEST_F(TrainerResumeTest, ElasticDistortionIsRecordedAndResumedBitIdentically) {
  TrainerConfig straight = Config("elastic_straight");
  straight.augmentation.elastic.alpha = 34.f;
  auto reference = Train(straight, *train_, *test_);
  ASSERT_TRUE(reference.ok()) << reference.status();
  TrainerConfig config = Config("elastic");
  config.augmentation.elastic.alpha = 34.f;
  Interrupt(config);
  auto checkpoint = LoadCheckpoint(config.checkpoint_path);
  ASSERT_TRUE(checkpoint.ok());
  EXPECT_EQ(checkpoint->training_state().settings().at("elastic_alpha"), "34");
  EXPECT_EQ(checkpoint->training_state().settings().at("elastic_sigma"), "4");
  // Another distortion, or none, is another trajectory.
  TrainerConfig off = config;
  off.augmentation.elastic.alpha = 0.f;
  auto refused = Resume(off);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("elastic_alpha"), std::string::npos)
      << refused.status();
  auto resumed = Resume(config);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  ExpectSameWeights(*reference->network, *resumed->network);
  // And the distortion changed the trajectory.
  auto plain = Train(Config("elastic_plain"), *train_, *test_);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_FALSE(plain->network->Parameters()[0]->value ==
               reference->network->Parameters()[0]->value);
}

TEST_F(TrainerResumeTest, UnchangedResumeIsBitIdentical) {
  TrainerConfig straight = Config("straight");
  auto reference = Train(straight, *train_, *test_);
  ASSERT_TRUE(reference.ok()) << reference.status();
  const TrainerConfig config = Config("unchanged");
  Interrupt(config);
  auto resumed = Resume(config);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(resumed->history.size(), 1u);
  ExpectSameWeights(*reference->network, *resumed->network);
}

TEST_F(TrainerResumeTest, ChangedOptimizerIsRefusedEvenWhenAllowed) {
  TrainerConfig config = Config("optimizer");
  Interrupt(config);
  config.optimizer = "adam";
  auto resumed = Resume(config);
  EXPECT_EQ(resumed.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(resumed.status().message().find("optimizer sgd"), std::string::npos)
      << resumed.status();
  EXPECT_NE(resumed.status().message().find("--optimizer=adam"), std::string::npos)
      << resumed.status();
  config.resume_allow_changes = {"optimizer"};
  EXPECT_EQ(Resume(config).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(TrainerResumeTest, ChangedSeedOrBatchSizeIsRefusedNamingTheSetting) {
  TrainerConfig config = Config("seed");
  Interrupt(config);
  TrainerConfig seed = config;
  seed.seed = 2;
  auto resumed = Resume(seed);
  EXPECT_EQ(resumed.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(resumed.status().message().find("seed 1 -> 2"), std::string::npos) << resumed.status();
  TrainerConfig batch = config;
  batch.batch_size = 30;
  resumed = Resume(batch);
  EXPECT_EQ(resumed.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(resumed.status().message().find("batch_size 50 -> 30"), std::string::npos)
      << resumed.status();
  TrainerConfig dropout = config;
  dropout.hidden_dropout = 0.5f;
  resumed = Resume(dropout);
  EXPECT_NE(resumed.status().message().find("hidden_dropout"), std::string::npos)
      << resumed.status();
  // The checkpoint is untouched by the refusals: an unchanged resume goes on.
  EXPECT_TRUE(Resume(config).ok());
}

TEST_F(TrainerResumeTest, AllowedChangeGoesOn) {
  TrainerConfig config = Config("allowed");
  Interrupt(config);
  config.epochs = 3;
  config.schedule.base = 0.05f;
  auto refused = Resume(config);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("epochs 2 -> 3"), std::string::npos)
      << refused.status();
  EXPECT_NE(refused.status().message().find("lr 0.100000001 -> 0.0500000007"), std::string::npos)
      << refused.status();
  config.resume_allow_changes = {"epochs", "lr"};
  auto resumed = Resume(config);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(resumed->history.size(), 2u);
  // A name that is no setting is refused rather than silently ignored.
  config.resume_allow_changes = {"epoch"};
  EXPECT_EQ(Resume(config).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(TrainerResumeTest, ConstantScheduleRunIsExtendedWithoutAllowance) {
  TrainerConfig config = Config("extend");
  config.schedule.kind = LearningRateSchedule::Kind::kConstant;
  Interrupt(config);
  config.epochs = 3;
  auto resumed = Resume(config);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(resumed->history.size(), 2u);
}

TEST_F(TrainerResumeTest, CrashBetweenCsvRowAndCheckpointDuplicatesNoRow) {
  const TrainerConfig config = Config("crash");
  Interrupt(config);
  const std::string epoch1 = config.checkpoint_path + ".epoch1";
  {
    std::ifstream in(config.checkpoint_path, std::ios::binary);
    std::ofstream out(epoch1, std::ios::binary);
    out << in.rdbuf();
  }
  // Epoch 2 runs to the end (CSV row 2, then checkpoint 2); putting back the
  // checkpoint of epoch 1 leaves exactly what a crash after the row and
  // before the checkpoint leaves.
  ASSERT_TRUE(Resume(config).ok());
  ASSERT_EQ(ReadLines(config.metrics_csv_path).size(), 3u);
  ASSERT_EQ(std::rename(epoch1.c_str(), config.checkpoint_path.c_str()), 0);
  ASSERT_TRUE(Resume(config).ok());
  const std::vector<std::string> lines = ReadLines(config.metrics_csv_path);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0].rfind("epoch,", 0), 0u);
  EXPECT_EQ(lines[1].rfind("1,", 0), 0u);
  EXPECT_EQ(lines[2].rfind("2,", 0), 0u);
}

}  // namespace
}  // namespace distillery
