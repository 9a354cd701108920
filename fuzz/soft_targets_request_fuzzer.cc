// libFuzzer target for the teacher server's request validation: the input is
// parsed as a distill.v1.SoftTargetsRequest (inputs that do not parse are
// skipped; gRPC would refuse them before the service sees them) and validated
// as GetSoftTargets does before batching: TeacherService::DecodeInputs, then
// ResolveTargetOptions. The service serves a 28x28, 10-class teacher with no
// batcher, transfer set or metrics (validation touches none of them).
// Accepted requests must decode to num_examples finite rows of 784 inputs and
// resolve to a contract with a finite temperature > 0 and top_k <= 10.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "common/formats/target_codec.h"
#include "common/tensor/tensor.h"
#include "distill/v1/teacher.pb.h"
#include "teacher_server/teacher_service.h"

namespace {

constexpr uint32_t kRows = 28, kCols = 28, kClasses = 10;
constexpr float kDefaultTemperature = 4.f;
const char kHash[] = "0123456789abcdef";

const distillery::TeacherService& Service() {
  static const auto* service = [] {
    distillery::TeacherServiceConfig config;
    config.default_temperature = kDefaultTemperature;
    config.max_batch_examples = 64;
    distillery::TeacherIdentity identity;
    identity.hash = kHash;
    identity.architecture = "784-16-10";
    identity.image_rows = kRows;
    identity.image_cols = kCols;
    identity.num_classes = kClasses;
    return new distillery::TeacherService(config, identity, /*batcher=*/nullptr,
                                          /*transfer_set=*/nullptr, /*metrics=*/nullptr);
  }();
  return *service;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  distill::v1::SoftTargetsRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;
  distillery::Tensor inputs;
  if (!Service().DecodeInputs(request, &inputs).ok()) return 0;
  if (inputs.rows() != request.num_examples() || inputs.cols() != kRows * kCols) std::abort();
  for (int64_t i = 0; i < inputs.size(); ++i) {
    if (!std::isfinite(inputs.data()[i])) std::abort();
  }
  absl::StatusOr<distill::v1::SoftTargetContract> contract =
      distillery::ResolveTargetOptions(request.options(), kClasses, kDefaultTemperature, kHash);
  if (!contract.ok()) return 0;
  if (!(std::isfinite(contract->temperature()) && contract->temperature() > 0.f) ||
      contract->top_k() > kClasses || contract->num_classes() != kClasses ||
      contract->teacher_hash() != kHash) {
    std::abort();
  }
  return 0;
}
