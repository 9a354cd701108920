#include "common/train/resume.h"

#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/tensor/dnnl_context.h"
#include "common/util/file_util.h"
#include "common/util/status_macros.h"
#include "spdlog/spdlog.h"

namespace distillery {
namespace {

std::string F(double v) { return absl::StrFormat("%.9g", v); }

const char* ScheduleName(LearningRateSchedule::Kind kind) {
  switch (kind) {
    case LearningRateSchedule::Kind::kConstant:
      return "constant";
    case LearningRateSchedule::Kind::kCosine:
      return "cosine";
    case LearningRateSchedule::Kind::kStep:
      return "step";
  }
  return "?";
}

// The kind of optimizer whose slots `checkpoint` holds: "sgd" (velocity),
// "adam" (adam_m, adam_v), "" (no state), or "mixed".
std::string StateKind(const distill::v1::Checkpoint& checkpoint) {
  std::set<std::string> kinds;
  for (const distill::v1::Tensor& t : checkpoint.training_state().optimizer_state()) {
    if (absl::EndsWith(t.name(), ".velocity")) {
      kinds.insert("sgd");
    } else if (absl::EndsWith(t.name(), ".adam_m") || absl::EndsWith(t.name(), ".adam_v")) {
      kinds.insert("adam");
    } else {
      kinds.insert("unknown");
    }
  }
  if (kinds.empty()) return "";
  return kinds.size() == 1 ? *kinds.begin() : "mixed";
}

}  // namespace

TrainingSettings DescribeTrainingSettings(const TrainerConfig& c, int64_t examples_per_epoch,
                                          int64_t batches_per_epoch) {
  TrainingSettings s;
  s["architecture"] = c.architecture;
  s["input_dropout"] = F(c.input_dropout);
  s["hidden_dropout"] = F(c.hidden_dropout);
  s["jitter"] = absl::StrCat(c.augmentation.max_shift);
  if (c.augmentation.elastic
          .enabled()) {  // absent when off, as in checkpoints from before it existed
    s["elastic_alpha"] = F(c.augmentation.elastic.alpha);
    s["elastic_sigma"] = F(c.augmentation.elastic.sigma);
  }
  s["seed"] = absl::StrCat(c.seed);
  s["epochs"] = absl::StrCat(c.epochs);
  s["batch_size"] = absl::StrCat(c.batch_size);
  s["optimizer"] = c.optimizer;
  s["lr"] = F(c.schedule.base);
  s["lr_schedule"] = ScheduleName(c.schedule.kind);
  s["lr_final_fraction"] = F(c.schedule.final_fraction);
  s["warmup_epochs"] = F(c.warmup_epochs);
  s["warmup_steps"] = absl::StrCat(c.schedule.warmup_steps);
  s["lr_step_gamma"] = F(c.schedule.step_gamma);
  s["lr_step_epochs"] = absl::StrCat(c.schedule.step_every_epochs);
  if (c.optimizer == "adam") {
    s["max_norm"] = F(c.adam.max_norm);
    s["adam_beta1"] = F(c.adam.beta1);
    s["adam_beta2"] = F(c.adam.beta2);
    s["adam_epsilon"] = F(c.adam.epsilon);
  } else {
    s["max_norm"] = F(c.sgd.max_norm);
    s["momentum_start"] = F(c.sgd.momentum_start);
    s["momentum_end"] = F(c.sgd.momentum_end);
    s["momentum_ramp_epochs"] = F(c.momentum_ramp_epochs);
    s["momentum_ramp_steps"] = absl::StrCat(c.sgd.momentum_ramp_steps);
    s["dampened_momentum"] = c.sgd.dampened ? "true" : "false";
  }
  s["temperature"] = F(c.temperature);
  s["distill_temperature"] = F(c.distill_temperature);
  s["alpha"] = F(c.alpha);
  s["weight_decay"] = F(c.weight_decay);
  // Recorded only when on, so that checkpoints from before it compare equal.
  if (c.average_last_epochs > 0) s["average_last_epochs"] = absl::StrCat(c.average_last_epochs);
  s["data"] = c.data_description;
  s["examples_per_epoch"] = absl::StrCat(examples_per_epoch);
  s["batches_per_epoch"] = absl::StrCat(batches_per_epoch);
  return s;
}

void RecordTrainingSettings(const TrainingSettings& settings, Precision precision,
                            distill::v1::Checkpoint* checkpoint) {
  distill::v1::TrainingState* state = checkpoint->mutable_training_state();
  state->mutable_settings()->clear();
  for (const auto& [name, value] : settings) (*state->mutable_settings())[name] = value;
  state->set_cpu_isa(CpuIsaName());
  state->set_compute_threads(ComputeThreads());
  state->set_precision(PrecisionName(precision));
}

absl::StatusOr<Precision> RecordedPrecision(const distill::v1::Checkpoint& checkpoint,
                                            const std::string& path) {
  const std::string& recorded = checkpoint.training_state().precision();
  if (recorded.empty() || recorded == "f32") return Precision::kF32;
  if (recorded == "bf16") return Precision::kBF16;
  return absl::DataLossError(
      absl::StrCat(path, " records an unknown training precision \"", recorded, "\""));
}

absl::StatusOr<Precision> ResumePrecision(const distill::v1::Checkpoint& checkpoint,
                                          const std::string& path, PrecisionChoice choice,
                                          std::string* reason) {
  ASSIGN_OR_RETURN(const Precision recorded, RecordedPrecision(checkpoint, path));
  const PrecisionChoice same =
      recorded == Precision::kBF16 ? PrecisionChoice::kBF16 : PrecisionChoice::kF32;
  if (choice != PrecisionChoice::kAuto && choice != same) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot resume from ", path, ": it was trained with --precision=", PrecisionName(recorded),
        ", this run asks for --precision=", choice == PrecisionChoice::kBF16 ? "bf16" : "f32",
        " (a resumed run keeps its precision: use --precision=auto or ", PrecisionName(recorded),
        ", or train from scratch)"));
  }
  if (recorded == Precision::kBF16 && !CpuHasNativeBf16()) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot resume from ", path,
                     ": it was trained in bf16, which needs a CPU with native bf16 (oneDNN ISA "
                     "avx512_core_bf16 or above); oneDNN reports ",
                     CpuIsaName(), " here (resume it on such a CPU, or train from scratch)"));
  }
  *reason = absl::StrCat("the checkpoint's, ",
                         choice == PrecisionChoice::kAuto ? "kept by auto" : "asked for",
                         "; oneDNN ISA ", CpuIsaName());
  return recorded;
}

absl::Status CheckResume(const distill::v1::Checkpoint& checkpoint, const std::string& path,
                         const TrainingSettings& settings,
                         const std::vector<std::string>& allowed) {
  for (const std::string& name : allowed) {
    if (settings.count(name) == 0) {
      std::vector<std::string> names;
      for (const auto& [known, value] : settings) names.push_back(known);
      return absl::InvalidArgumentError(
          absl::StrCat("--resume_allow_changes: \"", name,
                       "\" is not a setting (the settings: ", absl::StrJoin(names, ","), ")"));
    }
  }
  const distill::v1::TrainingState& state = checkpoint.training_state();
  auto configured = settings.find("optimizer");
  const std::string kind = configured == settings.end() ? "" : configured->second;
  // The optimizer's kind is never allowed to change: its state would seed
  // another optimizer's slots.
  const std::string state_kind = StateKind(checkpoint);
  if (!state_kind.empty() && state_kind != kind) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot resume from ", path, ": it holds the state of optimizer ", state_kind,
                     " (", state.optimizer(), "), this run uses --optimizer=", kind,
                     " (an optimizer cannot continue from another's state; train from scratch)"));
  }
  if (state.settings().empty()) {
    spdlog::warn(
        "{} records no training settings (an older checkpoint): only its architecture "
        "is checked, the run may not continue the trajectory it started",
        path);
    return absl::OkStatus();
  }
  if (auto it = state.settings().find("optimizer");
      it != state.settings().end() && it->second != kind) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot resume from ", path, ": it was trained with --optimizer=", it->second,
                     ", this run uses --optimizer=", kind,
                     " (an optimizer cannot continue from another's state)"));
  }
  const std::set<std::string> allowed_set(allowed.begin(), allowed.end());
  std::set<std::string> names;
  for (const auto& [name, value] : settings) names.insert(name);
  for (const auto& [name, value] : state.settings()) names.insert(name);
  auto value = [](const auto& map, const std::string& name) {
    auto it = map.find(name);
    return it == map.end() ? std::string("(unset)") : it->second;
  };
  // Under a schedule that does not depend on the total number of steps
  // (constant, step), more or fewer epochs change nothing of the epochs run,
  // unless the weights are averaged over the last epochs.
  const bool epochs_free = value(settings, "lr_schedule") != "cosine" &&
                           value(state.settings(), "lr_schedule") != "cosine" &&
                           value(settings, "average_last_epochs") == "(unset)" &&
                           value(state.settings(), "average_last_epochs") == "(unset)";
  std::vector<std::string> refused, accepted;
  for (const std::string& name : names) {
    const std::string now = value(settings, name);
    const std::string then = value(state.settings(), name);
    if (now == then || (name == "epochs" && epochs_free)) continue;
    const std::string change = absl::StrCat(name, " ", then, " -> ", now);
    (allowed_set.count(name) ? accepted : refused).push_back(change);
  }
  if (!refused.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot resume from ", path,
                     ": settings differ from the checkpoint's: ", absl::StrJoin(refused, ", "),
                     " (train from scratch, restore the settings, or name them in "
                     "--resume_allow_changes to continue anyway)"));
  }
  if (!accepted.empty()) {
    spdlog::warn("resuming {} with changed settings (--resume_allow_changes): {}", path,
                 absl::StrJoin(accepted, ", "));
  }
  const std::string isa = CpuIsaName();
  const int threads = ComputeThreads();
  if ((!state.cpu_isa().empty() && state.cpu_isa() != isa) ||
      (state.compute_threads() != 0 && state.compute_threads() != threads)) {
    spdlog::warn(
        "{} was written on ISA {} with {} threads, this run has {} with {}: it continues, but its "
        "bits will differ from an uninterrupted run's",
        path, state.cpu_isa(), state.compute_threads(), isa, threads);
  }
  return absl::OkStatus();
}

absl::Status TrimMetricsCsv(const std::string& path, int64_t epochs_completed) {
  std::ifstream in(path);
  if (!in) return absl::OkStatus();
  std::string line, kept;
  bool header = true, trimmed = false;
  while (std::getline(in, line)) {
    int64_t epoch = 0;
    const std::string first = line.substr(0, line.find(','));
    if (!header && absl::SimpleAtoi(first, &epoch) && epoch > epochs_completed) {
      trimmed = true;
      continue;
    }
    header = false;
    kept += line + "\n";
  }
  in.close();
  if (!trimmed) return absl::OkStatus();
  spdlog::info("{}: dropped the rows after epoch {} (written before the crash, not checkpointed)",
               path, epochs_completed);
  return WriteFileAtomically(path, {kept});
}

}  // namespace distillery
