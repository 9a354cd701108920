// Loading what a teacher server serves: one checkpoint, or several combined
// into an ensemble (teacher_server/teacher_model.h), with the identity every
// answer's contract names.
#ifndef DISTILLERY_TEACHER_SERVER_TEACHER_LOADER_H_
#define DISTILLERY_TEACHER_SERVER_TEACHER_LOADER_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "distill/v1/checkpoint.pb.h"
#include "teacher_server/teacher_model.h"
#include "teacher_server/teacher_service.h"

namespace distillery {

struct LoadedTeacher {
  std::unique_ptr<TeacherModel> model;
  // What the service reports and every contract carries. For an ensemble:
  //   weights_hash  EnsembleWeightsHash of the members' weights hashes;
  //   architecture  "<rule> ensemble: <member 0> | <member 1> | ...";
  //   input         the shared shape, scale 1, no mean or std (the model
  //                 takes raw pixel values; each member preprocesses them);
  //   ensemble_rule and members (each member's teacher_hash as if it were
  //                 served alone, its architecture, input and precision).
  TeacherIdentity identity;
};

// The identity of `network`, loaded from `checkpoint`, served alone (its
// precision is network.precision()).
TeacherIdentity SingleTeacherIdentity(Network& network, const distill::v1::Checkpoint& checkpoint,
                                      const Preprocessing& preprocessing);

// Loads the checkpoints at `paths` (or, when `in_memory` is set, that one
// checkpoint, named paths[0] in messages; ValidateCheckpoint is run on it).
// Every network computes in `precision` (common/tensor/precision.h),
// which the identity names. One path and kNone: a single network. Several paths: an ensemble under
// `rule`, which must then not be kNone. InvalidArgument for a rule with one
// checkpoint, several checkpoints with no rule, or members that differ in
// input shape or classes; the errors of LoadCheckpoint for a bad file.
absl::StatusOr<LoadedTeacher> LoadTeacher(const std::vector<std::string>& paths, EnsembleRule rule,
                                          const std::optional<distill::v1::Checkpoint>& in_memory,
                                          Precision precision = Precision::kF32);

}  // namespace distillery

#endif  // DISTILLERY_TEACHER_SERVER_TEACHER_LOADER_H_
