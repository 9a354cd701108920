#include "teacher_server/teacher_service.h"

#include <cmath>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "common/formats/contract.h"
#include "common/formats/target_codec.h"
#include "common/nn/softmax.h"
#include "common/util/status_macros.h"
#include "common/util/transient_marker.h"
#include "grpcpp/alarm.h"

namespace distillery {
namespace {

// One softmax scratch per thread (the batcher's worker, gRPC's threads).
TemperatureSoftmax& ThreadSoftmax() {
  thread_local TemperatureSoftmax softmax;
  return softmax;
}

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

TeacherService::TeacherService(const TeacherServiceConfig& config, const TeacherIdentity& identity,
                               DynamicBatcher* batcher, const TransferSet* transfer_set,
                               TeacherMetrics* metrics, const BearerTokenAuth* auth)
    : config_(config),
      identity_(identity),
      batcher_(batcher),
      transfer_set_(transfer_set),
      metrics_(metrics),
      auth_(auth) {
  preprocessing_status_ = identity.preprocessing.Validate(identity.image_channels);
  if (preprocessing_status_.ok()) {
    pixel_table_ = identity.preprocessing.Table(identity.image_channels);
  }
}

absl::Status TeacherService::Authenticate(const grpc::CallbackServerContext& context,
                                          const char* method) {
  if (auth_ == nullptr) return absl::OkStatus();
  absl::Status status = auth_->Check(context, method);
  if (!status.ok() && metrics_ != nullptr) {
    metrics_->RecordCall(method, absl::StatusCodeToString(status.code()), 0, 0);
  }
  return status;
}

absl::StatusOr<distill::v1::SoftTargetContract> TeacherService::ResolveContract(
    const distill::v1::TargetOptions& options) const {
  ASSIGN_OR_RETURN(distill::v1::SoftTargetContract contract,
                   ResolveTargetOptions(options, identity_.num_classes, config_.default_temperature,
                                        identity_.hash));
  if (identity_.rule == EnsembleRule::kArithmetic &&
      contract.representation() == distill::v1::LOGITS) {
    return absl::InvalidArgumentError(
        "this teacher is an arithmetic ensemble, which has no logits (the mean of its members' "
        "probabilities is not the softmax of one set of logits): ask for PROBABILITIES");
  }
  if (!identity_.terms.weights_hash().empty()) {
    contract.set_contract_version(kContractVersion);
    *contract.mutable_teacher() = identity_.terms;
  }
  return contract;
}

absl::Status TeacherService::Encode(const Tensor& logits,
                                    const distill::v1::SoftTargetContract& contract,
                                    distill::v1::Targets* targets) const {
  return EncodeTeacherTargets(logits, identity_.members, identity_.rule, contract, &ThreadSoftmax(),
                              targets);
}

absl::Status TeacherService::Admit() {
  if (draining_) return absl::UnavailableError("the teacher is draining; use another replica");
  const int64_t now = ++inflight_;
  if (now > config_.max_inflight_calls) {
    --inflight_;
    return absl::ResourceExhaustedError(MarkTransient(absl::StrCat(
        "the teacher serves ", config_.max_inflight_calls, " calls at most; retry with backoff")));
  }
  if (metrics_ != nullptr) metrics_->SetInflightCalls(now);
  return absl::OkStatus();
}

void TeacherService::CallFinished(const char* method, const absl::Status& status, int64_t examples,
                                  absl::Time started) {
  const int64_t now = --inflight_;
  if (metrics_ == nullptr) return;
  metrics_->SetInflightCalls(now);
  metrics_->RecordCall(method, absl::StatusCodeToString(status.code()), status.ok() ? examples : 0,
                       absl::ToDoubleSeconds(absl::Now() - started));
}

grpc::ServerUnaryReactor* TeacherService::GetModelInfo(
    grpc::CallbackServerContext* context, const distill::v1::GetModelInfoRequest* /*request*/,
    distill::v1::ModelInfo* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (absl::Status s = Authenticate(*context, "GetModelInfo"); !s.ok()) {
    reactor->Finish(ToGrpcStatus(s));
    return reactor;
  }
  // Model information stays available while draining (it is cheap and lets
  // a student tell a draining teacher from a wrong one); it is counted in
  // the metrics like every call.
  if (metrics_ != nullptr) metrics_->RecordCall("GetModelInfo", "OK", 0, 0);
  response->set_teacher_hash(identity_.hash);
  response->set_architecture(identity_.architecture);
  response->set_image_channels(identity_.image_channels);
  response->set_image_rows(identity_.image_rows);
  response->set_image_cols(identity_.image_cols);
  response->set_input_scale(identity_.preprocessing.scale);
  response->set_num_classes(identity_.num_classes);
  response->set_default_temperature(config_.default_temperature);
  response->set_max_batch_size(config_.max_batch_examples);
  response->set_max_message_bytes(config_.max_message_bytes);
  if (transfer_set_ != nullptr) {
    response->set_transfer_set_size(static_cast<uint64_t>(transfer_set_->size()));
    response->set_transfer_set_has_labels(transfer_set_->data().has_labels());
  }
  if (!identity_.terms.weights_hash().empty()) {
    response->set_image_channels(identity_.terms.input().channels());
    absl::StatusOr<distill::v1::SoftTargetContract> contract = ResolveContract({});
    if (contract.ok()) {
      *response->mutable_contract() = *std::move(contract);
      if (transfer_set_ != nullptr) {
        *response->mutable_contract()->mutable_transfer_set() = transfer_set_->identity();
      }
    }
  }
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

absl::Status TeacherService::DecodeInputs(const distill::v1::SoftTargetsRequest& request,
                                          Tensor* inputs) const {
  const int64_t n = request.num_examples();
  if (n < 1 || n > config_.max_batch_examples) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_examples must be in [1, ", config_.max_batch_examples, "], got ", n));
  }
  const int64_t width =
      int64_t{identity_.image_channels} * identity_.image_rows * identity_.image_cols;
  const bool has_pixels = !request.pixels_u8().empty();
  const bool has_floats = request.inputs_f32_size() > 0;
  if (has_pixels == has_floats) {
    return absl::InvalidArgumentError("send exactly one of pixels_u8 and inputs_f32");
  }
  const int64_t got = has_pixels ? static_cast<int64_t>(request.pixels_u8().size())
                                 : static_cast<int64_t>(request.inputs_f32_size());
  if (got != n * width) {
    return absl::InvalidArgumentError(
        absl::StrCat(has_pixels ? "pixels_u8" : "inputs_f32", " holds ", got, " values; ", n,
                     " examples of ", identity_.image_channels, "x", identity_.image_rows, "x",
                     identity_.image_cols, " (channels x rows x cols) need ", n * width));
  }
  inputs->Reshape({n, identity_.image_channels, identity_.image_rows, identity_.image_cols});
  float* out = inputs->data();
  if (has_pixels) {
    if (!preprocessing_status_.ok()) {
      return absl::FailedPreconditionError(absl::StrCat("the teacher's preprocessing is invalid: ",
                                                        preprocessing_status_.message()));
    }
    ApplyPixelTable(pixel_table_, identity_.image_channels,
                    int64_t{identity_.image_rows} * identity_.image_cols, n,
                    reinterpret_cast<const uint8_t*>(request.pixels_u8().data()), out);
    return absl::OkStatus();
  }
  for (int64_t i = 0; i < n * width; ++i) {
    const float v = request.inputs_f32(static_cast<int>(i));
    if (!std::isfinite(v)) {
      return absl::InvalidArgumentError(absl::StrCat("inputs_f32[", i, "] (example ", i / width,
                                                     ") is ", v, "; inputs must be finite"));
    }
    out[i] = v;
  }
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* TeacherService::GetSoftTargets(
    grpc::CallbackServerContext* context, const distill::v1::SoftTargetsRequest* request,
    distill::v1::SoftTargetsResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const absl::Time started = absl::Now();
  if (absl::Status s = Authenticate(*context, "GetSoftTargets"); !s.ok()) {
    reactor->Finish(ToGrpcStatus(s));
    return reactor;
  }
  if (absl::Status admitted = Admit(); !admitted.ok()) {
    if (metrics_ != nullptr) {
      metrics_->RecordCall("GetSoftTargets", absl::StatusCodeToString(admitted.code()), 0, 0);
    }
    reactor->Finish(ToGrpcStatus(admitted));
    return reactor;
  }
  auto fail = [&](const absl::Status& status) {
    CallFinished("GetSoftTargets", status, 0, started);
    reactor->Finish(ToGrpcStatus(status));
    return reactor;
  };
  Tensor inputs;
  if (absl::Status s = DecodeInputs(*request, &inputs); !s.ok()) return fail(s);
  absl::StatusOr<distill::v1::SoftTargetContract> contract = ResolveContract(request->options());
  if (!contract.ok()) return fail(contract.status());
  const int64_t examples = inputs.rows();
  *response->mutable_contract() = *contract;
  // A call whose deadline passes, or that the client cancels, while queued
  // is answered without a forward pass.
  absl::Status submitted = batcher_->Submit(
      std::move(inputs),
      [this, reactor, response, examples, started](const absl::Status& status,
                                                   const Tensor* logits) {
        absl::Status result = status;
        if (result.ok()) {
          result = Encode(*logits, response->contract(), response->mutable_targets());
        }
        CallFinished("GetSoftTargets", result, examples, started);
        reactor->Finish(ToGrpcStatus(result));
      },
      absl::FromChrono(context->deadline()), [context] { return context->IsCancelled(); });
  if (!submitted.ok()) return fail(submitted);
  return reactor;
}

// Writes the batches of one shard of one epoch, one at a time: the next is
// built and written only when gRPC has taken the previous (flow control).
// After max_stream_duration the stream ends with RESOURCE_EXHAUSTED (the
// student resumes at the next batch); a stream whose reader stalls, so that
// a write is not taken within stream_stall_timeout, is cancelled by an alarm.
class TeacherService::TransferStream : public grpc::ServerWriteReactor<distill::v1::TransferBatch> {
 public:
  TransferStream(TeacherService* service, grpc::CallbackServerContext* context,
                 const distill::v1::TransferSetRequest& request)
      : service_(service),
        request_(request),
        started_(absl::Now()),
        deadline_(started_ + service->config_.max_stream_duration),
        guard_(std::make_shared<StallGuard>()) {
    guard_->context = context;
  }

  // Validates and starts writing, or finishes with the error.
  void Start() {
    absl::Status status = Prepare();
    if (!status.ok()) {
      Finish(status);
      return;
    }
    WriteNext();
  }

  void OnWriteDone(bool ok) override {
    stall_alarm_.reset();  // the write completed: disarm its guard
    if (!ok) {
      Finish(absl::CancelledError("the student stopped reading the stream"));
      return;
    }
    WriteNext();
  }
  void OnDone() override {
    {
      std::lock_guard<std::recursive_mutex> lock(guard_->mutex);
      guard_->context = nullptr;
    }
    stall_alarm_.reset();
    delete this;
  }

 private:
  struct StallGuard {
    std::recursive_mutex mutex;                      // TryCancel might end the call inline
    grpc::CallbackServerContext* context = nullptr;  // null once the call is done
  };

  absl::Status Prepare() {
    const TransferSet* set = service_->transfer_set_;
    if (set == nullptr) {
      return absl::FailedPreconditionError("this teacher serves no transfer set");
    }
    const uint32_t batch = request_.batch_size();
    if (batch < 1 || batch > service_->config_.max_batch_examples) {
      return absl::InvalidArgumentError(absl::StrCat(
          "batch_size must be in [1, ", service_->config_.max_batch_examples, "], got ", batch));
    }
    ASSIGN_OR_RETURN(ids_, set->ShardExamples(request_.epoch(), request_.seed(),
                                              request_.shard_index(), request_.num_shards()));
    num_batches_ = (ids_.size() + batch - 1) / batch;
    if (request_.start_batch() > num_batches_) {
      return absl::InvalidArgumentError(absl::StrCat("start_batch ", request_.start_batch(),
                                                     " is past the shard's ", num_batches_,
                                                     " batches"));
    }
    next_batch_ = request_.start_batch();
    ASSIGN_OR_RETURN(contract_, service_->ResolveContract(request_.options()));
    if (contract_.contract_version() >= 2) *contract_.mutable_transfer_set() = set->identity();
    return absl::OkStatus();
  }

  void WriteNext() {
    if (next_batch_ >= num_batches_) {
      Finish(absl::OkStatus());
      return;
    }
    if (absl::Now() >= deadline_) {
      Finish(absl::ResourceExhaustedError(
          MarkTransient(absl::StrCat("the stream reached the teacher's limit of ",
                                     absl::FormatDuration(service_->config_.max_stream_duration),
                                     " (--max_stream_seconds); ", next_batch_, " of ", num_batches_,
                                     " batches sent: resume with start_batch=", next_batch_))));
      return;
    }
    const TransferSet& set = *service_->transfer_set_;
    const Dataset& data = set.data();
    const uint64_t begin = next_batch_ * request_.batch_size();
    const uint64_t end = std::min<uint64_t>(ids_.size(), begin + request_.batch_size());
    const int64_t rows = static_cast<int64_t>(end - begin);
    message_.Clear();
    *message_.mutable_contract() = contract_;
    message_.set_batch_index(next_batch_);
    message_.set_num_batches(num_batches_);
    std::string* pixels = message_.mutable_pixels_u8();
    pixels->resize(static_cast<size_t>(rows * data.input_size()));
    logits_.Resize(rows, set.logits().cols());
    const bool labels = request_.include_labels() && data.has_labels();
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t id = ids_[begin + r];
      message_.add_example_ids(static_cast<uint64_t>(id));
      std::copy(data.image(id), data.image(id) + data.input_size(),
                pixels->begin() + r * data.input_size());
      std::copy(set.logits().row(id), set.logits().row(id) + set.logits().cols(), logits_.row(r));
      if (labels) message_.mutable_labels()->push_back(static_cast<char>(data.labels[id]));
    }
    absl::Status encoded = service_->Encode(logits_, contract_, message_.mutable_targets());
    if (!encoded.ok()) {
      Finish(encoded);
      return;
    }
    examples_ += rows;
    ++next_batch_;
    ArmStallGuard();
    StartWrite(&message_);
  }

  // A write that gRPC has not taken stream_stall_timeout after it started
  // means the reader stopped reading: the stream is cancelled, freeing its
  // in-flight slot. The alarm's callback may run after this reactor is
  // gone: it holds the guard, which OnDone disarms. Replacing (or
  // destroying) a pending alarm cancels it.
  void ArmStallGuard() {
    std::shared_ptr<StallGuard> guard = guard_;
    stall_alarm_ = std::make_unique<grpc::Alarm>();
    stall_alarm_->Set(absl::ToChronoTime(absl::Now() + service_->config_.stream_stall_timeout),
                      [guard](bool fired) {
                        if (!fired) return;
                        std::lock_guard<std::recursive_mutex> lock(guard->mutex);
                        if (guard->context != nullptr) guard->context->TryCancel();
                      });
  }

  void Finish(const absl::Status& status) {
    service_->CallFinished("StreamTransferSet", status, examples_, started_);
    grpc::ServerWriteReactor<distill::v1::TransferBatch>::Finish(ToGrpcStatus(status));
  }

  TeacherService* service_;
  const distill::v1::TransferSetRequest request_;
  const absl::Time started_;
  const absl::Time deadline_;
  std::shared_ptr<StallGuard> guard_;
  std::unique_ptr<grpc::Alarm> stall_alarm_;  // armed while a write is pending
  std::vector<int64_t> ids_;
  uint64_t num_batches_ = 0;
  uint64_t next_batch_ = 0;
  int64_t examples_ = 0;
  distill::v1::SoftTargetContract contract_;
  distill::v1::TransferBatch message_;
  Tensor logits_;
};

grpc::ServerWriteReactor<distill::v1::TransferBatch>* TeacherService::StreamTransferSet(
    grpc::CallbackServerContext* context, const distill::v1::TransferSetRequest* request) {
  // A reactor that only reports a refusal.
  class Refusal : public grpc::ServerWriteReactor<distill::v1::TransferBatch> {
   public:
    explicit Refusal(const absl::Status& status) { Finish(ToGrpcStatus(status)); }
    void OnDone() override { delete this; }
  };
  if (absl::Status s = Authenticate(*context, "StreamTransferSet"); !s.ok()) {
    return new Refusal(s);
  }
  if (absl::Status admitted = Admit(); !admitted.ok()) return new Refusal(admitted);
  auto* stream = new TransferStream(this, context, *request);
  stream->Start();
  return stream;
}

}  // namespace distillery
