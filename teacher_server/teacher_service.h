// The distill.v1.Teacher gRPC service (callback API): a thin adapter that
// validates each request, hands the work to the dynamic batcher or the
// transfer set, encodes the answer and finishes the call.
//
// Thread-safety: the service is called concurrently by gRPC's threads; its
// own state is atomics and immutable members.
#ifndef DISTILLERY_TEACHER_SERVER_TEACHER_SERVICE_H_
#define DISTILLERY_TEACHER_SERVER_TEACHER_SERVICE_H_

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/data/preprocessing.h"
#include "distill/v1/teacher.grpc.pb.h"
#include "teacher_server/auth.h"
#include "teacher_server/dynamic_batcher.h"
#include "teacher_server/metrics.h"
#include "teacher_server/teacher_model.h"
#include "teacher_server/transfer_set.h"

namespace distillery {

struct TeacherServiceConfig {
  // Temperature for requests that name none.
  float default_temperature = 1.f;
  // Examples per request or per transfer-set batch at most.
  uint32_t max_batch_examples = 1024;
  // Largest gRPC message in bytes (reported in ModelInfo). With the
  // in-flight limit it bounds what calls can hold: 256 x 16 MiB = 4 GiB.
  uint64_t max_message_bytes = 16 << 20;
  // Calls served at once at most; beyond, RESOURCE_EXHAUSTED (transient).
  int64_t max_inflight_calls = 256;
  // A transfer-set stream is ended with RESOURCE_EXHAUSTED (marked
  // transient, common/util/transient_marker.h) after this long (the student
  // resumes it at the next batch).
  absl::Duration max_stream_duration = absl::Minutes(5);
  // A stream whose latest write gRPC has not taken after this long (its
  // reader stopped reading) is cancelled, freeing its in-flight slot.
  absl::Duration stream_stall_timeout = absl::Seconds(5);
};

// What the service knows about the teacher it serves.
struct TeacherIdentity {
  // TeacherHash(terms), the contract's teacher_hash.
  std::string hash;
  // The contract's TeacherIdentity (weights_hash = WeightsFingerprint). When
  // its weights_hash is empty (tests, fuzzing) answers carry `hash` alone, as
  // a release-1 server's do.
  distill::v1::TeacherIdentity terms;
  std::string architecture;  // "784-1200-1200-10"
  uint32_t image_channels = 1;
  uint32_t image_rows = 0;
  uint32_t image_cols = 0;
  uint32_t num_classes = 0;
  // What the teacher does to raw pixels (pixels_u8) before its model
  // (TeacherModel::input_preprocessing); the same as terms.input's scale,
  // mean and std.
  Preprocessing preprocessing;
  // An ensemble's rule and size (kNone and 1 for a single network): the
  // batcher's logits hold `members` blocks of num_classes per row.
  EnsembleRule rule = EnsembleRule::kNone;
  int64_t members = 1;
};

class TeacherService final : public distill::v1::Teacher::CallbackService {
 public:
  // None of the pointers is owned; all must outlive the service.
  // `transfer_set` may be null (StreamTransferSet then answers
  // FAILED_PRECONDITION). With `auth`, every call must carry its bearer
  // token (else UNAUTHENTICATED).
  TeacherService(const TeacherServiceConfig& config, const TeacherIdentity& identity,
                 DynamicBatcher* batcher, const TransferSet* transfer_set, TeacherMetrics* metrics,
                 const BearerTokenAuth* auth = nullptr);

  // From now on new calls get UNAVAILABLE; calls in flight continue.
  void StartDraining() { draining_ = true; }

  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const distill::v1::GetModelInfoRequest* request,
                                         distill::v1::ModelInfo* response) override;
  grpc::ServerUnaryReactor* GetSoftTargets(grpc::CallbackServerContext* context,
                                           const distill::v1::SoftTargetsRequest* request,
                                           distill::v1::SoftTargetsResponse* response) override;
  grpc::ServerWriteReactor<distill::v1::TransferBatch>* StreamTransferSet(
      grpc::CallbackServerContext* context,
      const distill::v1::TransferSetRequest* request) override;

  // Validates a SoftTargetsRequest and decodes its inputs into `inputs`
  // (num_examples x input size, scaled). Public for tests and fuzzing.
  absl::Status DecodeInputs(const distill::v1::SoftTargetsRequest& request, Tensor* inputs) const;

  // Called by reactors when a call ends.
  void CallFinished(const char* method, const absl::Status& status, int64_t examples,
                    absl::Time started);

 private:
  class TransferStream;
  // Admission: UNAVAILABLE while draining, RESOURCE_EXHAUSTED over the
  // in-flight limit; on OK the caller must call CallFinished later.
  absl::Status Admit();
  // The bearer-token check (OK without `auth_`); a refusal is counted in the
  // metrics under `method`.
  absl::Status Authenticate(const grpc::CallbackServerContext& context, const char* method);
  // The contract of an answer for `options`: ResolveTargetOptions plus the
  // version-2 terms (contract_version, teacher). InvalidArgument for LOGITS
  // from an arithmetic ensemble, which has none.
  absl::StatusOr<distill::v1::SoftTargetContract> ResolveContract(
      const distill::v1::TargetOptions& options) const;
  // The targets of the model's logits (one row per example, every member's
  // logits side by side) under `contract`.
  absl::Status Encode(const Tensor& logits, const distill::v1::SoftTargetContract& contract,
                      distill::v1::Targets* targets) const;

  const TeacherServiceConfig config_;
  const TeacherIdentity identity_;
  DynamicBatcher* batcher_;
  const TransferSet* transfer_set_;
  TeacherMetrics* metrics_;
  const BearerTokenAuth* auth_;
  // The network input of each pixel value of each channel
  // (Preprocessing::Table: channels * 256 values), which for the default
  // preprocessing is what training, evaluation and the transfer set compute
  // (GatherBatch), so that an image sent as pixels gives the same bits as
  // the same image in the transfer set. Empty, and pixels refused, when the
  // identity's preprocessing is invalid (preprocessing_status_ says why;
  // RunServer refuses to start with one).
  std::vector<float> pixel_table_;
  absl::Status preprocessing_status_;
  std::atomic<bool> draining_{false};
  std::atomic<int64_t> inflight_{0};
};

// grpc::Status from absl::Status (same codes, same message).
grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace distillery

#endif  // DISTILLERY_TEACHER_SERVER_TEACHER_SERVICE_H_
