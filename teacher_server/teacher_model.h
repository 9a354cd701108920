// What a teacher server computes: one network, or an ensemble of networks
// whose distributions are combined by a rule (Hinton et al. 2015, section 1:
// "an arithmetic or geometric mean of their individual predictive
// distributions").
//
// Inputs. A single network takes its own preprocessed inputs, as it always
// has: the service applies the network's preprocessing to raw pixels. An
// ensemble takes raw-scale inputs (the pixel values 0..255 as floats; its
// InputSpec says scale 1, no mean, no std), and each member applies its own
// preprocessing to them (Preprocessing::ValueOf), so that a member's logits
// are the bits it gives when served alone with the same pixels.
//
// Outputs. Infer gives every member's logits side by side: row r holds
// member 0's num_classes() logits, then member 1's, and so on (for a single
// network, just its logits). EncodeTeacherTargets combines them as the rule
// says for the contract's temperature:
//   geometric:  softmax(mean_m z_m / T), the normalised geometric mean of the
//               members' softmax(z_m / T); its LOGITS are the mean logits;
//   arithmetic: mean_m softmax(z_m / T); it has no logits (LOGITS is refused
//               by the service).
// Members are combined in their command-line order, in float, so the answer
// is deterministic.
//
// Thread-safety: Infer uses scratch state; one instance per thread (Clone).
#ifndef DISTILLERY_TEACHER_SERVER_TEACHER_MODEL_H_
#define DISTILLERY_TEACHER_SERVER_TEACHER_MODEL_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/data/preprocessing.h"
#include "common/nn/network.h"
#include "common/nn/softmax.h"
#include "common/tensor/tensor.h"
#include "distill/v1/teacher.pb.h"

namespace distillery {

enum class EnsembleRule { kNone, kArithmetic, kGeometric };

// "arithmetic" or "geometric"; InvalidArgument for anything else.
absl::StatusOr<EnsembleRule> ParseEnsembleRule(const std::string& text);
// "arithmetic", "geometric", or "" for kNone (TeacherIdentity.ensemble_rule).
const char* EnsembleRuleName(EnsembleRule rule);

// One network of a teacher, with the preprocessing it applies to raw pixels.
struct TeacherMember {
  std::unique_ptr<Network> network;
  Preprocessing preprocessing;
  // For messages: the checkpoint it came from.
  std::string name;
};

class TeacherModel {
 public:
  // A single network; Infer takes its preprocessed inputs.
  static std::unique_ptr<TeacherModel> Single(TeacherMember member);
  // An ensemble of at least two members under `rule` (not kNone). Refused
  // with InvalidArgument, naming the member, when the members differ in
  // input shape or in classes, or a preprocessing is invalid for the input.
  static absl::StatusOr<std::unique_ptr<TeacherModel>> Ensemble(std::vector<TeacherMember> members,
                                                                EnsembleRule rule);

  // A deep copy (fresh primitives), for another thread.
  absl::StatusOr<std::unique_ptr<TeacherModel>> Clone() const;

  EnsembleRule rule() const { return rule_; }
  int64_t num_members() const { return static_cast<int64_t>(members_.size()); }
  const TeacherMember& member(int64_t m) const { return members_[static_cast<size_t>(m)]; }
  int64_t num_classes() const { return members_.front().network->num_classes(); }
  // One example's shape (channels, rows, cols) and its number of values.
  const Shape& input_shape() const { return members_.front().network->input_shape(); }
  int64_t input_size() const { return members_.front().network->input_size(); }
  // What the service applies to raw pixels before Infer: the network's own
  // preprocessing for a single network; scale 1 (the pixel values
  // themselves) for an ensemble.
  const Preprocessing& input_preprocessing() const { return input_preprocessing_; }

  // Runs every member on `input` (batch x input_size values, read as in
  // Network::Infer) and points `*member_logits` at the result, batch x
  // (num_members * num_classes), owned by the model and valid until the next
  // Infer. Batch-invariant, as Network::Infer is.
  absl::Status Infer(const Tensor& input, const Tensor** member_logits);

 private:
  TeacherModel(std::vector<TeacherMember> members, EnsembleRule rule);

  std::vector<TeacherMember> members_;
  EnsembleRule rule_;
  Preprocessing input_preprocessing_;
  Tensor member_input_;   // one member's preprocessed input (ensembles)
  Tensor member_logits_;  // the members' logits side by side (ensembles)
};

// Writes the targets of `member_logits` (rows x members * classes, as
// TeacherModel::Infer gives them) under `contract` into `targets`,
// combining the members by `rule` as the file comment says (with one
// member and kNone: EncodeTargets of its logits). InvalidArgument for LOGITS
// under the arithmetic rule, or when the softmax is not finite. `softmax` is
// scratch (one per thread).
absl::Status EncodeTeacherTargets(const Tensor& member_logits, int64_t members, EnsembleRule rule,
                                  const distill::v1::SoftTargetContract& contract,
                                  TemperatureSoftmax* softmax, distill::v1::Targets* targets);

}  // namespace distillery

#endif  // DISTILLERY_TEACHER_SERVER_TEACHER_MODEL_H_
