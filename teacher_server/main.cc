// teacher_server: trains the big network, and serves its soft targets.
//
//   teacher_server train [--flags]   train a teacher, write its checkpoint
//
// `teacher_server --help` lists every flag.
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "common/trainer.h"
#include "common/training_flags.h"
#include "spdlog/spdlog.h"

namespace {

// The teacher recipe of Hinton et al. (2015) section 3 and the dropout
// papers: 784-1200-1200-10, dropout 0.2 on the input and 0.5 on hidden
// units, max-norm 3.5, 2-pixel jitter, dampened SGD whose momentum ramps from
// 0.5 to 0.99 over 10 epochs, learning rate 0.5 along a cosine.
distillery::TrainerConfig TeacherRecipe() {
  distillery::TrainerConfig c;
  c.architecture = "784-1200-1200-10";
  c.input_dropout = 0.2f;
  c.hidden_dropout = 0.5f;
  c.sgd.max_norm = 3.5f;
  c.max_shift = 2;
  c.epochs = 60;
  c.batch_size = 128;
  c.schedule.base = 0.5f;
  c.sgd.momentum_start = 0.5f;
  c.sgd.momentum_end = 0.99f;
  c.sgd.dampened = true;
  return c;
}

constexpr char kUsage[] =
    "teacher_server <command> [flags]\n"
    "commands:\n"
    "  train   train a teacher on --data_dir (within --train_range) and write --checkpoint\n";

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(kUsage);
  distillery::SetTrainingFlagDefaults(TeacherRecipe(), /*momentum_ramp_epochs=*/10);
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() < 2) {
    spdlog::error("no command given\n{}", kUsage);
    return 2;
  }
  const std::string command = args[1];
  if (command == "train") return distillery::RunTrainingFromFlags("teacher");
  spdlog::error("unknown command \"{}\"\n{}", command, kUsage);
  return 2;
}
