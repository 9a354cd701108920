#include "teacher_server/teacher_model.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/formats/target_codec.h"
#include "common/util/status_macros.h"

namespace distillery {

absl::StatusOr<EnsembleRule> ParseEnsembleRule(const std::string& text) {
  if (text == "arithmetic") return EnsembleRule::kArithmetic;
  if (text == "geometric") return EnsembleRule::kGeometric;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown ensemble rule \"", text, "\": use arithmetic or geometric"));
}

const char* EnsembleRuleName(EnsembleRule rule) {
  switch (rule) {
    case EnsembleRule::kArithmetic:
      return "arithmetic";
    case EnsembleRule::kGeometric:
      return "geometric";
    case EnsembleRule::kNone:
      break;
  }
  return "";
}

TeacherModel::TeacherModel(std::vector<TeacherMember> members, EnsembleRule rule)
    : members_(std::move(members)), rule_(rule) {
  if (rule_ == EnsembleRule::kNone) {
    input_preprocessing_ = members_.front().preprocessing;
  } else {
    input_preprocessing_.scale = 1.f;  // the pixel values themselves
  }
}

std::unique_ptr<TeacherModel> TeacherModel::Single(TeacherMember member) {
  std::vector<TeacherMember> members;
  members.push_back(std::move(member));
  return std::unique_ptr<TeacherModel>(new TeacherModel(std::move(members), EnsembleRule::kNone));
}

absl::StatusOr<std::unique_ptr<TeacherModel>> TeacherModel::Ensemble(
    std::vector<TeacherMember> members, EnsembleRule rule) {
  if (rule == EnsembleRule::kNone) {
    return absl::InvalidArgumentError("an ensemble needs a rule: arithmetic or geometric");
  }
  if (members.size() < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("an ensemble needs at least two members, got ", members.size()));
  }
  const TeacherMember& first = members.front();
  for (const TeacherMember& m : members) {
    if (m.network == nullptr) return absl::InvalidArgumentError("ensemble member without network");
    if (m.network->input_shape() != first.network->input_shape()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "ensemble member ", m.name, " takes images of ", ShapeString(m.network->input_shape()),
          ", member ", first.name, " takes ", ShapeString(first.network->input_shape()),
          ": members must share the input shape"));
    }
    if (m.network->num_classes() != first.network->num_classes()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "ensemble member ", m.name, " has ", m.network->num_classes(), " classes, member ",
          first.name, " has ", first.network->num_classes(), ": members must share the classes"));
    }
    if (absl::Status s = m.preprocessing.Validate(m.network->input_shape().front()); !s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("ensemble member ", m.name, ": ", s.message()));
    }
  }
  return std::unique_ptr<TeacherModel>(new TeacherModel(std::move(members), rule));
}

absl::StatusOr<std::unique_ptr<TeacherModel>> TeacherModel::Clone() const {
  std::vector<TeacherMember> copies;
  for (const TeacherMember& m : members_) {
    ASSIGN_OR_RETURN(std::unique_ptr<Network> network, m.network->Clone());
    copies.push_back({std::move(network), m.preprocessing, m.name});
  }
  return std::unique_ptr<TeacherModel>(new TeacherModel(std::move(copies), rule_));
}

absl::Status TeacherModel::Infer(const Tensor& input, const Tensor** member_logits) {
  if (rule_ == EnsembleRule::kNone) return members_.front().network->Infer(input, member_logits);
  const int64_t size = input_size();
  if (input.size() % size != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "input of ", input.size(), " values is not a batch of ", ShapeString(input_shape())));
  }
  const int64_t rows = input.size() / size;
  const int64_t classes = num_classes();
  const int64_t channels = input_shape().front();
  Shape shape = input_shape();
  shape.insert(shape.begin(), rows);
  member_logits_.Resize(rows, num_members() * classes);
  for (int64_t m = 0; m < num_members(); ++m) {
    member_input_.Reshape(shape);
    ApplyToValues(members_[m].preprocessing, channels, size / channels, rows, input.data(),
                  member_input_.data());
    const Tensor* logits = nullptr;
    RETURN_IF_ERROR(members_[m].network->Infer(member_input_, &logits));
    for (int64_t r = 0; r < rows; ++r) {
      std::copy(logits->row(r), logits->row(r) + classes, member_logits_.row(r) + m * classes);
    }
  }
  *member_logits = &member_logits_;
  return absl::OkStatus();
}

namespace {

// Member m's logits (rows x classes) out of the side-by-side block.
void MemberColumns(const Tensor& member_logits, int64_t m, int64_t classes, Tensor* out) {
  out->Resize(member_logits.rows(), classes);
  for (int64_t r = 0; r < member_logits.rows(); ++r) {
    const float* row = member_logits.row(r) + m * classes;
    std::copy(row, row + classes, out->row(r));
  }
}

}  // namespace

absl::Status EncodeTeacherTargets(const Tensor& member_logits, int64_t members, EnsembleRule rule,
                                  const distill::v1::SoftTargetContract& contract,
                                  TemperatureSoftmax* softmax, distill::v1::Targets* targets) {
  if (rule == EnsembleRule::kNone) return EncodeTargets(member_logits, contract, softmax, targets);
  const int64_t classes = member_logits.cols() / members;
  const int64_t rows = member_logits.rows();
  Tensor one, combined(rows, classes);
  combined.Fill(0.f);
  if (rule == EnsembleRule::kGeometric) {
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = member_logits.row(r);
      float* out = combined.row(r);
      for (int64_t m = 0; m < members; ++m) {
        for (int64_t c = 0; c < classes; ++c) out[c] += row[m * classes + c];
      }
      for (int64_t c = 0; c < classes; ++c) out[c] /= static_cast<float>(members);
    }
    return EncodeTargets(combined, contract, softmax, targets);
  }
  if (contract.representation() == distill::v1::LOGITS) {
    return absl::InvalidArgumentError(
        "an arithmetic ensemble has no logits (the mean of its members' probabilities is not "
        "the softmax of one set of logits): ask for PROBABILITIES, or serve --ensemble=geometric");
  }
  Tensor probabilities;
  for (int64_t m = 0; m < members; ++m) {
    MemberColumns(member_logits, m, classes, &one);
    RETURN_IF_ERROR(softmax->Compute(one, contract.temperature(), &probabilities));
    for (int64_t i = 0; i < combined.size(); ++i) {
      if (!std::isfinite(probabilities.data()[i])) {
        return absl::InvalidArgumentError(
            absl::StrCat("temperature ", contract.temperature(),
                         " is too small for these logits: their softmax is not finite"));
      }
      combined.data()[i] += probabilities.data()[i];
    }
  }
  for (int64_t i = 0; i < combined.size(); ++i) combined.data()[i] /= static_cast<float>(members);
  return EncodeTargetValues(combined, contract, targets);
}

}  // namespace distillery
