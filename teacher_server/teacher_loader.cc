#include "teacher_server/teacher_loader.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/formats/checkpoint.h"
#include "common/formats/contract.h"
#include "common/util/status_macros.h"
#include "spdlog/spdlog.h"

namespace distillery {
namespace {

void SetInput(const Shape& shape, const Preprocessing& preprocessing,
              distill::v1::InputSpec* input) {
  input->set_channels(static_cast<uint32_t>(shape[0]));
  input->set_rows(static_cast<uint32_t>(shape[1]));
  input->set_cols(static_cast<uint32_t>(shape[2]));
  input->set_scale(preprocessing.scale);
  for (float m : preprocessing.mean) input->add_mean(m);
  for (float s : preprocessing.std) input->add_std(s);
}

// A checkpoint's network and preprocessing, with its identity served alone.
struct Loaded {
  TeacherMember member;
  TeacherIdentity identity;
};

distill::v1::Precision WirePrecision(Precision precision) {
  return precision == Precision::kBF16 ? distill::v1::PRECISION_BF16 : distill::v1::PRECISION_F32;
}

absl::StatusOr<Loaded> LoadOne(const std::string& path, const distill::v1::Checkpoint* in_memory,
                               Precision precision) {
  distill::v1::Checkpoint checkpoint;
  if (in_memory != nullptr) {
    RETURN_IF_ERROR(ValidateCheckpoint(*in_memory));
    checkpoint = *in_memory;
  } else {
    ASSIGN_OR_RETURN(checkpoint, LoadCheckpoint(path));
  }
  Loaded loaded;
  ASSIGN_OR_RETURN(loaded.member.network, NetworkFromCheckpoint(checkpoint));
  // Already validated with the checkpoint (ValidateCheckpoint).
  ASSIGN_OR_RETURN(loaded.member.preprocessing, CheckpointPreprocessing(checkpoint));
  loaded.member.name = path;
  Network& network = *loaded.member.network;
  network.SetPrecision(precision);
  loaded.identity = SingleTeacherIdentity(network, checkpoint, loaded.member.preprocessing);
  spdlog::info("teacher {} (weights {}, {}, {} parameters, {}, {}) from {}, {}",
               loaded.identity.hash, loaded.identity.terms.weights_hash(),
               loaded.identity.architecture, network.ParameterCount(),
               loaded.member.preprocessing.Describe(), PrecisionName(precision), path,
               loaded.identity.terms.source());
  return loaded;
}

TeacherIdentity EnsembleIdentity(const TeacherModel& model,
                                 const std::vector<TeacherIdentity>& members) {
  TeacherIdentity identity = members.front();
  identity.preprocessing = model.input_preprocessing();
  identity.rule = model.rule();
  identity.members = model.num_members();
  std::vector<std::string> weights, architectures, sources;
  distill::v1::TeacherIdentity& terms = identity.terms;
  terms.Clear();
  for (const TeacherIdentity& m : members) {
    weights.push_back(m.terms.weights_hash());
    architectures.push_back(m.architecture);
    sources.push_back(m.terms.source());
    distill::v1::EnsembleMember* member = terms.add_members();
    member->set_teacher_hash(m.hash);
    member->set_architecture(m.architecture);
    *member->mutable_input() = m.terms.input();
    member->set_precision(m.terms.precision());
  }
  identity.architecture = absl::StrCat(EnsembleRuleName(model.rule()),
                                       " ensemble: ", absl::StrJoin(architectures, " | "));
  terms.set_weights_hash(EnsembleWeightsHash(weights));
  terms.set_architecture(identity.architecture);
  SetInput(model.input_shape(), identity.preprocessing, terms.mutable_input());
  terms.set_precision(members.front().terms.precision());
  terms.set_ensemble_rule(EnsembleRuleName(model.rule()));
  terms.set_source(
      absl::StrCat("ensemble of ", members.size(), ": ", absl::StrJoin(sources, "; ")));
  identity.hash = TeacherHash(terms);
  return identity;
}

}  // namespace

TeacherIdentity SingleTeacherIdentity(Network& network, const distill::v1::Checkpoint& checkpoint,
                                      const Preprocessing& preprocessing) {
  TeacherIdentity identity;
  identity.architecture = network.spec().ArchitectureString();
  const Shape& shape = network.input_shape();
  identity.image_channels = static_cast<uint32_t>(shape[0]);
  identity.image_rows = static_cast<uint32_t>(shape[1]);
  identity.image_cols = static_cast<uint32_t>(shape[2]);
  identity.num_classes = static_cast<uint32_t>(network.num_classes());
  identity.preprocessing = preprocessing;
  identity.terms.set_weights_hash(WeightsFingerprint(network));
  identity.terms.set_architecture(identity.architecture);
  SetInput(shape, preprocessing, identity.terms.mutable_input());
  identity.terms.set_precision(WirePrecision(network.precision()));
  identity.terms.set_source(TeacherSource(checkpoint));
  identity.hash = TeacherHash(identity.terms);
  return identity;
}

absl::StatusOr<LoadedTeacher> LoadTeacher(const std::vector<std::string>& paths, EnsembleRule rule,
                                          const std::optional<distill::v1::Checkpoint>& in_memory,
                                          Precision precision) {
  if (paths.empty()) return absl::InvalidArgumentError("no teacher checkpoint given");
  if (paths.size() == 1 && rule != EnsembleRule::kNone) {
    return absl::InvalidArgumentError(
        absl::StrCat("--ensemble=", EnsembleRuleName(rule),
                     " needs several checkpoints (--checkpoint=a.ckpt,b.ckpt,...); one was given"));
  }
  if (paths.size() > 1 && rule == EnsembleRule::kNone) {
    return absl::InvalidArgumentError(
        absl::StrCat(paths.size(),
                     " checkpoints make an ensemble: choose how to combine them with "
                     "--ensemble=arithmetic or --ensemble=geometric"));
  }
  if (in_memory.has_value() && paths.size() != 1) {
    return absl::InvalidArgumentError("an in-memory checkpoint is served alone");
  }
  LoadedTeacher teacher;
  if (paths.size() == 1) {
    ASSIGN_OR_RETURN(Loaded one, LoadOne(paths[0], in_memory ? &*in_memory : nullptr, precision));
    teacher.identity = std::move(one.identity);
    teacher.model = TeacherModel::Single(std::move(one.member));
    return teacher;
  }
  std::vector<TeacherMember> members;
  std::vector<TeacherIdentity> identities;
  for (const std::string& path : paths) {
    ASSIGN_OR_RETURN(Loaded one, LoadOne(path, nullptr, precision));
    members.push_back(std::move(one.member));
    identities.push_back(std::move(one.identity));
  }
  ASSIGN_OR_RETURN(teacher.model, TeacherModel::Ensemble(std::move(members), rule));
  teacher.identity = EnsembleIdentity(*teacher.model, identities);
  spdlog::info("ensemble teacher {} ({} members, {} mean)", teacher.identity.hash, paths.size(),
               EnsembleRuleName(rule));
  return teacher;
}

}  // namespace distillery
