// Running the teacher server: load the checkpoint and the transfer set,
// start gRPC (with health, reflection and keepalive) and the metrics
// endpoint, serve until SIGTERM or SIGINT, then drain.
#ifndef DISTILLERY_TEACHER_SERVER_SERVER_H_
#define DISTILLERY_TEACHER_SERVER_SERVER_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/tensor/precision.h"
#include "distill/v1/checkpoint.pb.h"
#include "teacher_server/auth.h"
#include "teacher_server/dynamic_batcher.h"
#include "teacher_server/teacher_model.h"
#include "teacher_server/teacher_service.h"

namespace distillery {

struct ServeConfig {
  // The teacher checkpoint to serve (teacher_server train writes one), or
  // several, served as an ensemble combined by `ensemble`
  // (teacher_server/teacher_loader.h).
  std::vector<std::string> checkpoint_paths;
  EnsembleRule ensemble = EnsembleRule::kNone;
  // A checkpoint already in memory (e.g. imported from ONNX by `serve
  // --onnx`), served alone instead of reading checkpoint_paths (whose one
  // entry then only names it in logs). It is verified (ValidateCheckpoint)
  // before serving.
  std::optional<distill::v1::Checkpoint> checkpoint;
  // The arithmetic the teacher computes in (common/tensor/precision.h),
  // resolved for this CPU at start; the contract names the result.
  PrecisionChoice precision = PrecisionChoice::kAuto;
  // gRPC listening address; port 0 picks a free port (see port_file).
  std::string address = "0.0.0.0:50051";
  // When not empty, the chosen gRPC port is written here once serving.
  std::string port_file;
  // TLS on `address` (mutual TLS with a client CA); plaintext without.
  ServerTlsFiles tls;
  // When not empty, every Teacher call must carry "authorization: Bearer
  // <auth_token>" (the main port's health service stays open to probes).
  std::string auth_token;
  // When not empty, a second, plaintext port that serves only
  // grpc.health.v1.Health (and reflection, which lists only that), in step
  // with the main port's status (for probes that cannot speak TLS).
  std::string health_address;
  // Prometheus metrics address ("" = no metrics endpoint).
  std::string metrics_address = "0.0.0.0:9464";
  // MNIST-format directory whose training images form the transfer set,
  // restricted to transfer_range ("begin:end"; "" = all). Empty data_dir =
  // no transfer set.
  std::string data_dir;
  std::string transfer_range;
  // Send labels of the transfer set when students ask (false: never).
  bool serve_labels = true;
  // Service limits and defaults.
  TeacherServiceConfig service;
  // Dynamic batching.
  BatcherConfig batcher;
  // Compute threads of the batcher's forward passes.
  int threads = 2;
  // After SIGTERM, calls in flight get this long to finish.
  absl::Duration drain_deadline = absl::Seconds(10);
  // HTTP/2 keepalive pings every keepalive_time, dropped after
  // keepalive_timeout without an answer.
  absl::Duration keepalive_time = absl::Seconds(30);
  absl::Duration keepalive_timeout = absl::Seconds(10);
  // Connections are closed gracefully after this age so that clients
  // re-resolve and rebalance (0 = never).
  absl::Duration max_connection_age = absl::ZeroDuration();
};

// Serves until SIGTERM/SIGINT, then drains: health turns NOT_SERVING, new
// calls get UNAVAILABLE, calls in flight finish within drain_deadline.
// Returns OK after a clean drain, or the error that kept it from starting.
// Must be called from the main thread before any other thread exists (it
// blocks SIGTERM and SIGINT for the whole process to receive them itself).
absl::Status RunServer(const ServeConfig& config);

}  // namespace distillery

#endif  // DISTILLERY_TEACHER_SERVER_SERVER_H_
