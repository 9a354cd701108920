#include "student_trainer/teacher_client.h"

#include <random>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/formats/contract.h"
#include "common/formats/target_codec.h"
#include "common/nn/softmax.h"
#include "common/security/secret.h"
#include "common/util/status_macros.h"
#include "common/util/transient_marker.h"
#include "spdlog/spdlog.h"

namespace distillery {
namespace {

// gRPC reports a failed TLS handshake as UNAVAILABLE, like a teacher that is
// down; its message is the only way to tell them apart. Retrying does not
// mend a certificate.
bool LooksLikeTlsFailure(const grpc::Status& status) {
  if (status.error_code() != grpc::StatusCode::UNAVAILABLE) return false;
  const std::string& m = status.error_message();
  for (const char* needle : {"andshake", "SSL", "ssl", "CERTIFICATE", "certificate", "TLS"}) {
    if (absl::StrContains(m, needle)) return true;
  }
  return false;
}

// The weights' own hash: a release-1 server's teacher_hash, a version-2
// server's teacher.weights_hash.
const std::string& WeightsHashOf(const distill::v1::SoftTargetContract& contract) {
  return contract.contract_version() >= 2 ? contract.teacher().weights_hash()
                                          : contract.teacher_hash();
}

absl::Status CheckVersion(uint32_t version) {
  if (version > kContractVersion) {
    return absl::FailedPreconditionError(absl::StrCat("the teacher speaks contract version ",
                                                      version, ", newer than this student knows (",
                                                      kContractVersion, "): upgrade the student"));
  }
  return absl::OkStatus();
}

absl::Status ToAbslStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

TemperatureSoftmax& ThreadSoftmax() {
  thread_local TemperatureSoftmax softmax;
  return softmax;
}

}  // namespace

bool IsRetryableStatus(const grpc::Status& status) {
  switch (status.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
    case grpc::StatusCode::ABORTED:
    case grpc::StatusCode::CANCELLED:
      return true;
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      // Only the teacher's overload answers; a message over the size limit
      // (gRPC's own answer, unmarked) fails the same way every time.
      return IsMarkedTransient(status.error_message());
    default:
      return false;
  }
}

TeacherClient::TeacherClient(const TeacherClientConfig& config) : config_(config) {}

absl::Status TeacherClient::CreateChannels() {
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  const bool tls = !config_.tls_ca_file.empty();
  if (!tls && (!config_.tls_cert_file.empty() || !config_.tls_key_file.empty() ||
               !config_.tls_server_name.empty())) {
    return absl::InvalidArgumentError(
        "--tls_cert_file, --tls_key_file and --tls_server_name need --tls_ca_file (TLS)");
  }
  if (!tls && !config_.auth_token.empty()) {
    return absl::InvalidArgumentError(
        "a bearer token is configured but the channel is plaintext, where anyone on the network "
        "could read it: pass --tls_ca_file (or unset the token)");
  }
  if (config_.tls_cert_file.empty() != config_.tls_key_file.empty()) {
    return absl::InvalidArgumentError("--tls_cert_file and --tls_key_file go together");
  }
  if (tls) {
    grpc::SslCredentialsOptions options;
    ASSIGN_OR_RETURN(options.pem_root_certs,
                     ReadFileContents(config_.tls_ca_file, "--tls_ca_file"));
    if (!config_.tls_cert_file.empty()) {
      ASSIGN_OR_RETURN(options.pem_cert_chain,
                       ReadFileContents(config_.tls_cert_file, "--tls_cert_file"));
      ASSIGN_OR_RETURN(options.pem_private_key,
                       ReadFileContents(config_.tls_key_file, "--tls_key_file"));
    }
    credentials = grpc::SslCredentials(options);
    if (credentials == nullptr) {
      return absl::InvalidArgumentError("cannot make TLS credentials from the --tls_* files");
    }
  }
  grpc::ChannelArguments args;
  if (!config_.tls_server_name.empty()) args.SetSslTargetNameOverride(config_.tls_server_name);
  args.SetMaxReceiveMessageSize(config_.max_message_bytes);
  args.SetMaxSendMessageSize(config_.max_message_bytes);
  args.SetLoadBalancingPolicyName("round_robin");
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 30000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  // Reconnect quickly after a teacher restarts.
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  for (absl::string_view replica : absl::StrSplit(config_.target, ',', absl::SkipEmpty())) {
    stubs_.push_back(distill::v1::Teacher::NewStub(
        grpc::CreateCustomChannel(std::string(replica), credentials, args)));
  }
  return absl::OkStatus();
}

void TeacherClient::PrepareContext(grpc::ClientContext* context, absl::Duration deadline) const {
  context->set_deadline(absl::ToChronoTime(absl::Now() + deadline));
  if (!config_.auth_token.empty()) {
    context->AddMetadata("authorization", absl::StrCat("Bearer ", config_.auth_token));
  }
}

absl::StatusOr<std::unique_ptr<TeacherClient>> TeacherClient::Connect(
    const TeacherClientConfig& config) {
  std::unique_ptr<TeacherClient> client(new TeacherClient(config));
  RETURN_IF_ERROR(client->CreateChannels());
  if (client->stubs_.empty()) {
    return absl::InvalidArgumentError("no teacher address given");
  }
  distill::v1::ModelInfo info;
  TeacherClient* raw = client.get();
  RETURN_IF_ERROR(
      client->WithRetries("GetModelInfo", [&info, raw](distill::v1::Teacher::Stub* stub) {
        grpc::ClientContext context;
        raw->PrepareContext(&context, absl::Seconds(10));
        return stub->GetModelInfo(&context, {}, &info);
      }));
  RETURN_IF_ERROR(CheckVersion(info.contract().contract_version()));
  client->info_ = info;
  client->expected_ = info.contract();
  client->expected_.set_teacher_hash(info.teacher_hash());
  return client;
}

absl::Status TeacherClient::WithRetries(
    const char* what, const std::function<grpc::Status(distill::v1::Teacher::Stub*)>& attempt,
    const std::function<bool()>& progressed) {
  absl::Duration backoff = config_.initial_backoff;
  absl::Time give_up = absl::Now() + config_.give_up_after;
  std::mt19937_64 rng(std::hash<std::thread::id>()(std::this_thread::get_id()));
  bool retried = false;
  int closed_before_answer = 0;
  size_t index = next_stub_ % stubs_.size();
  while (true) {
    const grpc::Status status = attempt(stubs_[index].get());
    if (status.ok() || status.error_code() != grpc::StatusCode::UNAVAILABLE) ever_answered_ = true;
    if (status.ok()) {
      if (retried) ++retries_;
      return absl::OkStatus();
    }
    const std::string replica = stubs_.size() > 1 ? "a teacher replica" : config_.target;
    if (status.error_code() == grpc::StatusCode::UNAUTHENTICATED ||
        status.error_code() == grpc::StatusCode::PERMISSION_DENIED) {
      return ToAbslStatus(
          grpc::Status(status.error_code(),
                       absl::StrCat(replica, " refused ", what, ": ", status.error_message())));
    }
    const char* hint = config_.tls_ca_file.empty()
                           ? " (is the teacher serving TLS? then pass --tls_ca_file)"
                           : " (check that --tls_ca_file signed the teacher's certificate, "
                             "--tls_server_name, and for mutual TLS that --tls_cert_file and "
                             "--tls_key_file hold a certificate the teacher's CA signed)";
    if (LooksLikeTlsFailure(status)) {
      return absl::UnavailableError(absl::StrCat("TLS handshake with ", replica, " failed (", what,
                                                 "): ", status.error_message(), hint));
    }
    // A teacher that closes every connection right after it is opened, before
    // this client ever got an answer, is refusing the handshake: a client
    // certificate it does not accept under mutual TLS (TLS 1.3 reports that
    // only as a closed socket), or a plaintext client at a TLS port.
    if (!ever_answered_ && absl::StrContains(status.error_message(), "Socket closed")) {
      if (++closed_before_answer >= kClosedConnectionsBeforeGivingUp) {
        return absl::UnavailableError(absl::StrCat(
            replica, " closed the connection ", closed_before_answer, " times without answering ",
            what, ": it refuses this client's TLS handshake", hint,
            "; last error: ", status.error_message()));
      }
    } else {
      closed_before_answer = 0;
    }
    if (!IsRetryableStatus(status)) return ToAbslStatus(status);
    if (progressed != nullptr && progressed()) {
      give_up = absl::Now() + config_.give_up_after;
      backoff = config_.initial_backoff;
    }
    if (absl::Now() + backoff > give_up) {
      return absl::UnavailableError(absl::StrCat(
          "no teacher answered ", what, " for ", absl::FormatDuration(config_.give_up_after), " (",
          config_.target, "); last error: ", status.error_message()));
    }
    spdlog::warn("{} failed ({}: {}); retrying in {}{}", what,
                 static_cast<int>(status.error_code()), status.error_message(),
                 absl::FormatDuration(backoff), stubs_.size() > 1 ? " on another replica" : "");
    // Full jitter keeps many students from retrying in lockstep.
    const double fraction = 0.5 + 0.5 * static_cast<double>(rng() % 1000) / 1000.0;
    absl::SleepFor(backoff * fraction);
    backoff = std::min(backoff * 2, config_.max_backoff);
    retried = true;
    index = ++next_stub_ % stubs_.size();
  }
}

absl::Status TeacherClient::CheckContract(const distill::v1::SoftTargetContract& contract,
                                          float temperature, bool stream) {
  RETURN_IF_ERROR(CheckVersion(contract.contract_version()));
  {
    std::lock_guard<std::mutex> lock(hash_mutex_);
    // The teacher: term by term when both speak version 2; otherwise (a
    // release-1 replica next to an upgraded one) by the weights' hash, the
    // one term both versions name.
    absl::Status same_teacher;
    const bool both_v2 = contract.contract_version() >= 2 && expected_.contract_version() >= 2;
    if (both_v2) {
      same_teacher = CompareTeacherIdentity(expected_.teacher(), contract.teacher());
      if (same_teacher.ok() && contract.teacher_hash() != expected_.teacher_hash()) {
        same_teacher = absl::FailedPreconditionError(absl::StrCat(
            "teacher_hash ", contract.teacher_hash(), " differs from ", expected_.teacher_hash()));
      }
    } else if (contract.contract_version() == expected_.contract_version()
                   ? contract.teacher_hash() != expected_.teacher_hash()
                   : WeightsHashOf(contract) != WeightsHashOf(expected_)) {
      same_teacher = absl::FailedPreconditionError(absl::StrCat(
          "its hash is now ", contract.teacher_hash(), ", it was ", expected_.teacher_hash()));
    }
    if (!same_teacher.ok()) {
      if (!config_.allow_teacher_change) {
        return absl::FailedPreconditionError(
            absl::StrCat("the teacher changed: ", same_teacher.message(),
                         " (restart the student or pass --allow_teacher_change)"));
      }
      spdlog::warn("the teacher changed ({}); continuing (--allow_teacher_change)",
                   std::string(same_teacher.message()));
      expected_.set_teacher_hash(contract.teacher_hash());
      expected_.set_contract_version(contract.contract_version());
      *expected_.mutable_teacher() = contract.teacher();
    }
    if (stream && contract.contract_version() >= 2) {
      if (!contract.has_transfer_set()) {
        return absl::FailedPreconditionError(
            "a transfer batch of a version-2 teacher names no transfer set");
      }
      if (!expected_.has_transfer_set()) {
        *expected_.mutable_transfer_set() = contract.transfer_set();
      } else if (absl::Status s =
                     CompareTransferSet(expected_.transfer_set(), contract.transfer_set());
                 !s.ok()) {
        return absl::FailedPreconditionError(absl::StrCat(
            "a teacher replica streams another transfer set: ", s.message(),
            "; resuming on it would repeat or skip examples (give every replica the same "
            "--data_dir and --transfer_range)"));
      }
    } else if (!stream && contract.has_transfer_set()) {
      return absl::FailedPreconditionError(
          "the targets of the student's own inputs name a transfer set");
    }
  }
  if (contract.temperature() != temperature) {
    return absl::FailedPreconditionError(
        absl::StrCat("asked for targets at T=", temperature, ", got T=", contract.temperature()));
  }
  if (contract.num_classes() != info_.num_classes()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the teacher's class count changed: ", contract.num_classes(),
                     " classes, it was ", info_.num_classes()));
  }
  return absl::OkStatus();
}

absl::Status TeacherClient::CheckBatchPlace(const distill::v1::TransferSetRequest& request,
                                            const std::vector<int64_t>& expected_ids,
                                            uint64_t* seen_num_batches,
                                            const distill::v1::TransferBatch& batch) {
  const uint64_t b = batch.batch_index();
  if (expected_ids.empty()) {
    if (*seen_num_batches == 0) *seen_num_batches = batch.num_batches();
    if (batch.num_batches() != *seen_num_batches) {
      return absl::DataLossError(
          absl::StrCat("transfer batch ", b, " says the shard has ", batch.num_batches(),
                       " batches; earlier batches said ", *seen_num_batches));
    }
    return absl::OkStatus();
  }
  const uint64_t size = request.batch_size();
  const uint64_t num_batches = (expected_ids.size() + size - 1) / size;
  if (batch.num_batches() != num_batches) {
    return absl::DataLossError(absl::StrCat("transfer batch ", b, " says the shard has ",
                                            batch.num_batches(),
                                            " batches; its order scheme gives ", num_batches));
  }
  const uint64_t begin = b * size;
  const uint64_t end = std::min<uint64_t>(expected_ids.size(), begin + size);
  if (begin >= end || static_cast<uint64_t>(batch.example_ids_size()) != end - begin) {
    return absl::DataLossError(absl::StrCat("transfer batch ", b, " holds ",
                                            batch.example_ids_size(), " examples, not ",
                                            end > begin ? end - begin : 0));
  }
  for (uint64_t i = begin; i < end; ++i) {
    const uint64_t got = batch.example_ids(static_cast<int>(i - begin));
    if (got != static_cast<uint64_t>(expected_ids[i])) {
      return absl::DataLossError(
          absl::StrCat("transfer batch ", b, " of epoch ", request.epoch(), ", shard ",
                       request.shard_index(), "/", request.num_shards(), ": example ", i - begin,
                       " is id ", got, ", the order scheme gives ", expected_ids[i]));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Preprocessing> TeacherClient::TeacherPreprocessing() const {
  Preprocessing p;
  p.scale = info_.input_scale();
  if (info_.has_contract() && info_.contract().has_teacher()) {
    const distill::v1::InputSpec& input = info_.contract().teacher().input();
    p.scale = input.scale();
    p.mean.assign(input.mean().begin(), input.mean().end());
    p.std.assign(input.std().begin(), input.std().end());
  }
  if (absl::Status s = p.Validate(example_shape()[0]); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("the teacher's preprocessing: ", s.message()));
  }
  return p;
}

absl::Status TeacherClient::SoftTargets(const std::string& pixels, int64_t rows, float temperature,
                                        Tensor* probabilities) {
  distill::v1::SoftTargetsRequest request;
  request.set_num_examples(static_cast<uint32_t>(rows));
  request.set_pixels_u8(pixels);
  request.mutable_options()->set_temperature(temperature);
  distill::v1::SoftTargetsResponse response;
  RETURN_IF_ERROR(WithRetries("GetSoftTargets", [&](distill::v1::Teacher::Stub* stub) {
    grpc::ClientContext context;
    PrepareContext(&context, config_.call_deadline);
    return stub->GetSoftTargets(&context, request, &response);
  }));
  RETURN_IF_ERROR(CheckContract(response.contract(), temperature, /*stream=*/false));
  if (response.targets().num_examples() != rows) {
    return absl::DataLossError(absl::StrCat("asked for ", rows, " rows of targets, got ",
                                            response.targets().num_examples()));
  }
  return DecodeTargets(response.targets(), response.contract(), &ThreadSoftmax(), probabilities);
}

absl::Status TeacherClient::StreamTransferSet(
    distill::v1::TransferSetRequest request,
    const std::function<bool(const distill::v1::TransferBatch&)>& sink) {
  const float temperature = request.options().has_temperature() ? request.options().temperature()
                                                                : info_.default_temperature();
  // The shard's example ids under the order scheme, when this client knows
  // it (every release-1 server used it too, unnamed).
  std::vector<int64_t> expected_ids;
  uint64_t seen_num_batches = 0;
  {
    std::string scheme;
    int64_t size = static_cast<int64_t>(info_.transfer_set_size());
    {
      std::lock_guard<std::mutex> lock(hash_mutex_);
      if (expected_.has_transfer_set()) {
        scheme = expected_.transfer_set().order_scheme();
        size = static_cast<int64_t>(expected_.transfer_set().range_end() -
                                    expected_.transfer_set().range_begin());
      } else if (expected_.contract_version() < 2) {
        scheme = kOrderScheme;
      }
    }
    if (scheme == kOrderScheme) {
      ASSIGN_OR_RETURN(expected_ids, ShardExampleIds(size, request.epoch(), request.seed(),
                                                     request.shard_index(), request.num_shards()));
    } else {
      spdlog::warn(
          "the teacher's order scheme \"{}\" is unknown to this student: example ids "
          "are not checked, only the batch count",
          scheme);
    }
  }
  uint64_t next = request.start_batch();
  bool finished = false;
  absl::Status sink_status;
  uint64_t attempt_start = next;
  auto attempt = [&](distill::v1::Teacher::Stub* stub) {
    attempt_start = next;
    request.set_start_batch(next);
    grpc::ClientContext context;
    // The whole stream gets stream_deadline; a teacher that dies without
    // closing the connection is detected sooner by keepalive. Either way the
    // stream is retried from the first batch not yet delivered.
    PrepareContext(&context, config_.stream_deadline);
    auto reader = stub->StreamTransferSet(&context, request);
    distill::v1::TransferBatch batch;
    while (reader->Read(&batch)) {
      if (batch.batch_index() != next) {
        context.TryCancel();
        sink_status = absl::DataLossError(
            absl::StrCat("expected batch ", next, ", got ", batch.batch_index()));
        reader->Finish();
        return grpc::Status(grpc::StatusCode::DATA_LOSS, "out of order");
      }
      absl::Status s = CheckContract(batch.contract(), temperature, /*stream=*/true);
      if (s.ok()) s = CheckBatchPlace(request, expected_ids, &seen_num_batches, batch);
      if (!s.ok()) {
        sink_status = s;
        context.TryCancel();
        reader->Finish();
        return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
      }
      ++next;
      if (!sink(batch)) {
        finished = true;
        context.TryCancel();
        reader->Finish();
        return grpc::Status::OK;
      }
    }
    grpc::Status status = reader->Finish();
    if (status.ok()) finished = true;
    return status;
  };
  RETURN_IF_ERROR(WithRetries("StreamTransferSet", attempt, [&] { return next > attempt_start; }));
  RETURN_IF_ERROR(sink_status);
  if (!finished) return absl::DataLossError("the transfer-set stream ended early");
  return absl::OkStatus();
}

}  // namespace distillery
