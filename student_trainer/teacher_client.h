// A student's connection to its teacher(s): model information, soft targets
// for the student's own inputs, and the teacher-side transfer set, with a
// deadline on every call and retries with backoff across replicas.
//
// Fault tolerance: a call that fails with UNAVAILABLE, DEADLINE_EXCEEDED,
// ABORTED, CANCELLED, or RESOURCE_EXHAUSTED marked transient by the teacher
// (common/util/transient_marker.h: a full queue, too many calls, the stream
// time limit; not a message over the size limit, which fails at once) is
// retried (on the next replica
// when there are several) with exponential backoff and jitter, re-requesting
// exactly the same batch, until `give_up_after` has passed without a single
// successful call; then the call fails with UNAVAILABLE. A stream that made
// progress before it broke (e.g. the teacher's --max_stream_seconds) resumes
// with a fresh give-up time.
//
// The contract (docs/architecture.md, "The wire contract") is checked on
// every answer and every transfer batch, term by term, against the terms
// GetModelInfo gave at connection time, and each refusal is
// FAILED_PRECONDITION naming the term: a contract_version newer than
// kContractVersion; another teacher (any term of TeacherIdentity, or
// teacher_hash) unless allow_teacher_change; a temperature or class count
// other than asked for; on the stream, another transfer set (range, order
// scheme, fingerprint: never allowed, since resuming at start_batch of other
// data would repeat or skip examples). Each transfer batch's num_batches and
// example_ids must be the ones the order scheme gives for the request
// (DATA_LOSS otherwise); under an order scheme this client does not know,
// num_batches must stay what the first batch said. A refused answer never
// reaches the caller.
//
// Credentials: TLS when tls_ca_file is set (mutual TLS with a client
// certificate and key), a bearer token on every call when auth_token is set
// (only over TLS: Connect refuses to send a token in clear text). Refused
// credentials are not retried: UNAUTHENTICATED / PERMISSION_DENIED and a TLS
// handshake failure end the call at once with a message naming the problem,
// and so does a teacher that closes the connection 3 times in a row before it
// ever answered this client (a client certificate refused under mutual TLS
// shows only as that).
//
// Thread-safety: all methods may be called from several threads.
#ifndef DISTILLERY_STUDENT_TRAINER_TEACHER_CLIENT_H_
#define DISTILLERY_STUDENT_TRAINER_TEACHER_CLIENT_H_

#include <algorithm>
#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/data/preprocessing.h"
#include "common/tensor/tensor.h"
#include "distill/v1/teacher.grpc.pb.h"
#include "grpcpp/grpcpp.h"

namespace distillery {

// Whether the client retries a call that ended with `status` (see above).
bool IsRetryableStatus(const grpc::Status& status);

struct TeacherClientConfig {
  // Comma-separated replicas ("10.0.0.5:50051,10.0.0.6:50051"), or one gRPC
  // target such as "dns:///teacher:50051", which is resolved to all its
  // addresses and balanced with round_robin.
  std::string target = "127.0.0.1:50051";
  // Deadline of each unary call, and of each whole transfer-set stream.
  absl::Duration call_deadline = absl::Seconds(30);
  absl::Duration stream_deadline = absl::Minutes(30);
  // Stop retrying once no call has succeeded for this long.
  absl::Duration give_up_after = absl::Seconds(120);
  // Backoff between retries: starts here, doubles, capped at max_backoff.
  absl::Duration initial_backoff = absl::Milliseconds(100);
  absl::Duration max_backoff = absl::Seconds(5);
  // Accept answers from a teacher whose hash differs from the first one.
  bool allow_teacher_change = false;
  // Largest message accepted, in bytes.
  int max_message_bytes = 64 << 20;
  // PEM CA certificates that signed the teacher's certificate: TLS. Empty:
  // plaintext.
  std::string tls_ca_file;
  // PEM client certificate chain and key, for a teacher with mutual TLS.
  std::string tls_cert_file;
  std::string tls_key_file;
  // The name the teacher's certificate must carry, when it is not the
  // target's host (e.g. connecting by IP address to a certificate for a name).
  std::string tls_server_name;
  // Bearer token sent as "authorization: Bearer <token>" on every call
  // (empty: none). The token itself, read by ReadBearerToken; never a flag.
  std::string auth_token;
};

class TeacherClient {
 public:
  // Connects and fetches the model information (with the retry policy).
  static absl::StatusOr<std::unique_ptr<TeacherClient>> Connect(const TeacherClientConfig& config);

  // The information read at connection time.
  const distill::v1::ModelInfo& info() const { return info_; }
  // One example's shape, (channels, rows, cols); a release-1 teacher, which
  // does not send its channels, has one.
  Shape example_shape() const {
    const int64_t channels = info_.image_channels() == 0 ? 1 : info_.image_channels();
    return {channels, info_.image_rows(), info_.image_cols()};
  }
  int64_t input_size() const { return ShapeSize(example_shape()); }
  // The teacher's preprocessing of raw pixels (its InputSpec's scale, mean
  // and std; a release-1 teacher's input_scale alone), which a student that
  // sends its own inputs_f32 must apply to its pixels. InvalidArgument when
  // the teacher reports an invalid one.
  absl::StatusOr<Preprocessing> TeacherPreprocessing() const;

  // Soft targets (probabilities at `temperature`) for `rows` examples whose
  // raw uint8 pixels are `pixels` (rows x input_size). `probabilities` is
  // resized to rows x num_classes.
  absl::Status SoftTargets(const std::string& pixels, int64_t rows, float temperature,
                           Tensor* probabilities);

  // Streams batches [start_batch, end) of a transfer-set shard into `sink`
  // (which returns false to stop). On a failure it reconnects and resumes at
  // the first batch not yet delivered, so none is skipped or repeated.
  absl::Status StreamTransferSet(
      distill::v1::TransferSetRequest request,
      const std::function<bool(const distill::v1::TransferBatch&)>& sink);

  // Successful calls after at least one retry (for tests and logs).
  int64_t retries() const { return retries_; }

 private:
  explicit TeacherClient(const TeacherClientConfig& config);

  // Makes one channel per replica with the configured credentials.
  absl::Status CreateChannels();
  // A context for one call: deadline and bearer token.
  void PrepareContext(grpc::ClientContext* context, absl::Duration deadline) const;
  // Runs `attempt` on replica stubs until it succeeds, fails with a
  // non-retryable status, or the give-up time passes. When `progressed`
  // says a failed attempt still made progress, the give-up time and the
  // backoff start again.
  absl::Status WithRetries(const char* what,
                           const std::function<grpc::Status(distill::v1::Teacher::Stub*)>& attempt,
                           const std::function<bool()>& progressed = nullptr);
  // Checks an answer's contract against what the student expects. `stream`:
  // the answer is a TransferBatch (whose transfer set is checked too).
  absl::Status CheckContract(const distill::v1::SoftTargetContract& contract, float temperature,
                             bool stream);
  // Checks a transfer batch's place in the shard: its num_batches and
  // example_ids against `expected_ids` (the shard's ids under the order
  // scheme, or empty when the scheme is unknown: then num_batches against
  // `*seen_num_batches`, set by the first batch).
  static absl::Status CheckBatchPlace(const distill::v1::TransferSetRequest& request,
                                      const std::vector<int64_t>& expected_ids,
                                      uint64_t* seen_num_batches,
                                      const distill::v1::TransferBatch& batch);

  const TeacherClientConfig config_;
  std::vector<std::unique_ptr<distill::v1::Teacher::Stub>> stubs_;
  std::atomic<size_t> next_stub_{0};
  distill::v1::ModelInfo info_;
  std::mutex hash_mutex_;
  // The terms answers must carry: ModelInfo.contract (the teacher_hash and,
  // from version 2, the teacher and transfer set); the transfer set is taken
  // from the first batch when ModelInfo had none. Guarded by hash_mutex_.
  distill::v1::SoftTargetContract expected_;
  std::atomic<int64_t> retries_{0};
  // Whether any teacher has answered this client (a call that was not
  // UNAVAILABLE): then its credentials were accepted.
  std::atomic<bool> ever_answered_{false};
  static constexpr int kClosedConnectionsBeforeGivingUp = 3;
};

}  // namespace distillery

#endif  // DISTILLERY_STUDENT_TRAINER_TEACHER_CLIENT_H_
