// student_trainer: trains a small network.
//
//   student_trainer baseline [--flags]   train on hard labels alone (the
//                                         paper's 146-error baseline)
//
// `student_trainer --help` lists every flag.
#include <string>
#include <vector>

#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "common/trainer.h"
#include "common/training_flags.h"
#include "spdlog/spdlog.h"

namespace {

// The paper's student, 784-800-800-10 with no regularisation, trained with
// plain SGD (momentum 0.9, learning rate 0.1 along a cosine, 30 epochs).
distillery::TrainerConfig StudentRecipe() {
  distillery::TrainerConfig c;
  c.architecture = "784-800-800-10";
  c.epochs = 30;
  c.batch_size = 128;
  c.schedule.base = 0.1f;
  c.sgd.momentum_start = c.sgd.momentum_end = 0.9f;
  return c;
}

constexpr char kUsage[] =
    "student_trainer <command> [flags]\n"
    "commands:\n"
    "  baseline   train a student on the hard labels of --data_dir (within --train_range)\n";

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(kUsage);
  distillery::SetTrainingFlagDefaults(StudentRecipe());
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() < 2) {
    spdlog::error("no command given\n{}", kUsage);
    return 2;
  }
  const std::string command = args[1];
  if (command == "baseline") return distillery::RunTrainingFromFlags("student");
  spdlog::error("unknown command \"{}\"\n{}", command, kUsage);
  return 2;
}
