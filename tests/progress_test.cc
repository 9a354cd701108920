// The progress line (common/train/progress.h): its text, when it is drawn,
// that off a terminal nothing is written within an epoch, and the time-left
// estimate; and that a training run prints its time left per epoch.
#include "common/train/progress.h"

#include <cstdio>
#include <string>

#include "gmock/gmock.h"

namespace distillery {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// What was written to a temporary FILE*.
std::string Contents(FILE* f) {
  std::fflush(f);
  std::string text(static_cast<size_t>(std::ftell(f)), '\0');
  std::rewind(f);
  const size_t read = std::fread(text.data(), 1, text.size(), f);
  text.resize(read);
  return text;
}

TEST(FormatDurationTest, MinutesAndHours) {
  EXPECT_EQ(FormatDuration(0), "0:00");
  EXPECT_EQ(FormatDuration(65), "1:05");
  EXPECT_EQ(FormatDuration(3723), "1:02:03");
  EXPECT_EQ(FormatDuration(-1), "-");
}

TEST(RunClockTest, MeanEpochTimesEpochsLeft) {
  RunClock clock;
  EXPECT_LT(clock.SecondsLeft(5), 0);  // unknown before the first epoch
  clock.EpochDone(10);
  clock.EpochDone(20);
  EXPECT_DOUBLE_EQ(clock.SecondsLeft(4), 60);
  EXPECT_DOUBLE_EQ(clock.SecondsLeft(0), 0);
}

TEST(ProgressLineTest, TextHasBatchesRateAndTimeLeft) {
  ProgressLine line(true, nullptr);
  line.StartEpoch(/*epoch=*/2, /*epochs=*/20, /*batches=*/400, /*examples_per_batch=*/128);
  // 100 of 400 batches of 128 in 4 s: 3200 examples/s, 12 s left.
  EXPECT_EQ(line.Text(100, 4.0), "epoch 3/20  batch 100/400  3200 examples/s  epoch left 0:12");
  EXPECT_EQ(line.Text(0, 0.0), "epoch 3/20  batch 0/400");
}

TEST(ProgressLineTest, RewritesItselfAtMostEveryIntervalAndClears) {
  FILE* out = std::tmpfile();
  ASSERT_NE(out, nullptr);
  absl::Time now = absl::UnixEpoch();
  {
    ProgressLine line(true, out, absl::Seconds(1), [&now] { return now; });
    line.StartEpoch(0, 1, 10, 100);
    now += absl::Milliseconds(500);
    line.BatchDone(1);  // too soon: not drawn
    EXPECT_EQ(Contents(out), "");
    now += absl::Milliseconds(600);
    line.BatchDone(2);
    const std::string drawn = Contents(out);
    EXPECT_THAT(drawn, StartsWith("\repoch 1/1  batch 2/10"));
    EXPECT_THAT(drawn, HasSubstr("examples/s"));
    line.BatchDone(10);  // the last batch is always drawn
    EXPECT_THAT(Contents(out), HasSubstr("batch 10/10"));
    line.Clear();
    EXPECT_THAT(Contents(out), testing::EndsWith("\r\033[K"));
  }
  std::fclose(out);
}

TEST(ProgressLineTest, WritesNothingOffATerminal) {
  FILE* out = std::tmpfile();
  ASSERT_NE(out, nullptr);
  absl::Time now = absl::UnixEpoch();
  {
    ProgressLine line(false, out, absl::ZeroDuration(), [&now] { return now; });
    line.StartEpoch(0, 3, 5, 10);
    for (int b = 1; b <= 5; ++b) {
      now += absl::Seconds(1);
      line.BatchDone(b);
    }
    line.Clear();
  }
  EXPECT_EQ(Contents(out), "");
  std::fclose(out);
}

}  // namespace
}  // namespace distillery
