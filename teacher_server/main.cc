// teacher_server: trains the big network, and serves its soft targets.
//
//   teacher_server train [--flags]   train a teacher, write its checkpoint
//   teacher_server serve [--flags]   serve a trained teacher's soft targets
//   teacher_server import [--flags]  convert an ONNX classifier into a checkpoint
//   teacher_server probe [--flags]   ask a server's gRPC health service (exit 0 = serving)
//
// `teacher_server --help` lists every flag.
#include <algorithm>
#include <string>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "common/cli/training_flags.h"
#include "common/formats/checkpoint.h"
#include "common/formats/onnx_import.h"
#include "common/nn/softmax.h"
#include "common/security/secret.h"
#include "common/train/trainer.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "spdlog/spdlog.h"
#include "teacher_server/server.h"

// Shared with training (common/training_flags.cc).
ABSL_DECLARE_FLAG(std::string, checkpoint);
ABSL_DECLARE_FLAG(std::string, data_dir);
ABSL_DECLARE_FLAG(int32_t, threads);
ABSL_DECLARE_FLAG(std::string, precision);

ABSL_FLAG(std::string, address, "0.0.0.0:50051", "serve: gRPC address; port 0 picks a free one");
ABSL_FLAG(std::string, port_file, "", "serve: write the chosen gRPC port to this file");
ABSL_FLAG(std::string, metrics_address, "0.0.0.0:9464",
          "serve: Prometheus metrics address (empty = none)");
ABSL_FLAG(std::string, transfer_range, "",
          "serve: training examples (begin:end) that form the transfer set; empty = all");
ABSL_FLAG(bool, no_transfer_set, false, "serve: serve no transfer set (inputs from students only)");
ABSL_FLAG(bool, serve_labels, true, "serve: send transfer-set labels to students that ask");
ABSL_FLAG(double, default_temperature, 1.0, "serve: temperature when a request names none");
ABSL_FLAG(int32_t, max_batch, 1024, "serve: examples per request and per forward pass at most");
ABSL_FLAG(double, batch_wait_ms, 2.0,
          "serve: how long a request may wait for others to share its forward pass");
ABSL_FLAG(int64_t, max_queued_examples, 65536,
          "serve: examples waiting for the teacher at most (then RESOURCE_EXHAUSTED)");
ABSL_FLAG(int64_t, max_inflight_calls, 256, "serve: calls served at once at most");
ABSL_FLAG(int32_t, max_message_mb, 16,
          "serve: largest gRPC message, MiB (larger ones get RESOURCE_EXHAUSTED; a request of "
          "1024 MNIST images as float inputs is 3.2 MB)");
ABSL_FLAG(double, max_stream_seconds, 300,
          "serve: a transfer-set stream ends with RESOURCE_EXHAUSTED after this long (students "
          "resume at the next batch)");
ABSL_FLAG(double, stream_stall_seconds, 5,
          "serve: a transfer-set stream whose reader has not taken a batch for this long is "
          "cancelled (frees its in-flight slot)");
ABSL_FLAG(std::string, tls_cert_file, "",
          "serve: PEM certificate chain: serve TLS on --address (needs --tls_key_file)");
ABSL_FLAG(std::string, tls_key_file, "", "serve: PEM private key of --tls_cert_file");
ABSL_FLAG(std::string, tls_client_ca_file, "",
          "serve: PEM CA certificates: mutual TLS, clients must present a certificate they "
          "signed");
ABSL_FLAG(std::string, auth_token_file, "",
          "serve: file holding the bearer token every Teacher call must carry (else "
          "UNAUTHENTICATED); without it, $DISTILLERY_AUTH_TOKEN if set. Never pass a token on "
          "the command line");
ABSL_FLAG(std::string, health_address, "",
          "serve: also serve grpc.health.v1 alone on this plaintext address (for probes when "
          "--address is TLS); empty = none");
ABSL_FLAG(double, drain_seconds, 10, "serve: after SIGTERM, calls in flight get this long");
ABSL_FLAG(double, keepalive_seconds, 30, "serve: HTTP/2 keepalive ping interval");
ABSL_FLAG(double, max_connection_age_seconds, 0,
          "serve: close connections after this age so clients rebalance (0 = never)");
ABSL_FLAG(std::string, onnx, "",
          "import, serve: an ONNX image classifier (opsets 11-18) to convert into a Distillery "
          "network; serve --onnx imports it in memory instead of reading --checkpoint");
ABSL_FLAG(std::string, input_shape, "",
          "import, serve --onnx: one example's C,H,W, needed when the model's input is flat (N, "
          "F) or has dynamic spatial sizes");
// The preprocessing of an imported model: network input =
// (pixel * --input_scale - mean[c]) / std[c], recorded in its checkpoint.
ABSL_FLAG(double, input_scale, 1.0 / 255.0,
          "import, serve --onnx: the scale from raw 0..255 pixels to what the model was trained "
          "on before its mean and std (1/255: [0, 1]); > 0");
ABSL_FLAG(std::string, input_mean, "",
          "import, serve --onnx: per-channel means subtracted after the scale, comma-separated "
          "(e.g. 0.1307 for MNIST, 0.485,0.456,0.406 for ImageNet); empty = 0");
ABSL_FLAG(std::string, input_std, "",
          "import, serve --onnx: per-channel standard deviations divided by after the mean, "
          "comma-separated (e.g. 0.3081 for MNIST); empty = 1; each > 0");
ABSL_FLAG(std::string, ensemble, "",
          "serve: with several --checkpoint files (comma-separated), how their distributions "
          "combine: arithmetic (the mean of their softmax(z/T); no LOGITS) or geometric "
          "(softmax of their mean logits at T)");
ABSL_FLAG(std::string, probe_target, "127.0.0.1:50051", "probe: gRPC address of the server");
ABSL_FLAG(std::string, probe_service, "",
          "probe: service whose health is asked (empty = the server as a whole)");
ABSL_FLAG(double, probe_timeout_seconds, 3, "probe: deadline of the health check");

namespace {

// The teacher recipe of Hinton et al. (2015) section 3 and the dropout
// papers: 784-1200-1200-10, dropout 0.2 on the input and 0.5 on hidden
// units, max-norm 3.5, 2-pixel jitter, dampened SGD whose momentum ramps from
// 0.5 to 0.99 over 10 epochs, learning rate 0.5 along a cosine.
distillery::TrainerConfig TeacherRecipe() {
  distillery::TrainerConfig c;
  c.architecture = "784-1200-1200-10";
  c.input_dropout = 0.2f;
  c.hidden_dropout = 0.5f;
  c.sgd.max_norm = 3.5f;
  c.augmentation.max_shift = 2;
  c.epochs = 60;
  c.batch_size = 128;
  c.schedule.base = 0.5f;
  c.sgd.momentum_start = 0.5f;
  c.sgd.momentum_end = 0.99f;
  c.sgd.dampened = true;
  return c;
}

constexpr char kUsage[] =
    "teacher_server <command> [flags]\n"
    "commands:\n"
    "  train   train a teacher on --data_dir (within --train_range) and write --checkpoint\n"
    "  serve   serve the teacher in --checkpoint; its transfer set is --data_dir's training\n"
    "          images within --transfer_range\n"
    "  import  convert the ONNX classifier --onnx into the checkpoint --checkpoint; the model\n"
    "          takes (pixels x --input_scale - --input_mean) / --input_std (per channel;\n"
    "          default pixels / 255); --input_shape=C,H,W for flat or dynamic inputs\n"
    "  inspect print the network in --checkpoint: layers, shapes, parameters, input shape and\n"
    "          preprocessing, format version\n";

// The import options of --input_shape and the preprocessing flags (false
// after logging a bad flag). The mean and std counts are checked against the
// model's channels by the import.
bool ImportOptionsFromFlags(distillery::OnnxImportOptions* options) {
  if (const std::string text = absl::GetFlag(FLAGS_input_shape); !text.empty()) {
    auto shape = distillery::ParseInputShape(text);
    if (!shape.ok()) {
      spdlog::error("bad --input_shape: {}", shape.status().ToString());
      return false;
    }
    options->input_shape = *shape;
  }
  distillery::Preprocessing& p = options->preprocessing;
  p.scale = static_cast<float>(absl::GetFlag(FLAGS_input_scale));
  auto mean = distillery::ParseFloatList(absl::GetFlag(FLAGS_input_mean), "--input_mean");
  auto std = distillery::ParseFloatList(absl::GetFlag(FLAGS_input_std), "--input_std");
  if (!mean.ok() || !std.ok()) {
    spdlog::error("bad preprocessing flags: {}",
                  (mean.ok() ? std.status() : mean.status()).ToString());
    return false;
  }
  p.mean = *std::move(mean);
  p.std = *std::move(std);
  // The counts are checked by the import, which knows the channels.
  const int64_t channels = std::max(p.mean.size(), p.std.size());
  if (absl::Status s = p.Validate(std::max<int64_t>(channels, 1)); !s.ok()) {
    spdlog::error("bad preprocessing flags: {}", s.ToString());
    return false;
  }
  return true;
}

// teacher_server import --onnx=model.onnx --checkpoint=teacher.ckpt
int Import() {
  const std::string onnx = absl::GetFlag(FLAGS_onnx);
  const std::string path = absl::GetFlag(FLAGS_checkpoint);
  if (onnx.empty() || path.empty()) {
    spdlog::error("import needs --onnx and --checkpoint");
    return 2;
  }
  distillery::OnnxImportOptions options;
  if (!ImportOptionsFromFlags(&options)) return 2;
  auto checkpoint = distillery::ImportOnnxFile(onnx, options);
  if (!checkpoint.ok()) {
    spdlog::error("import failed: {}", checkpoint.status().ToString());
    return 1;
  }
  if (absl::Status s = distillery::SaveCheckpoint(path, *checkpoint); !s.ok()) {
    spdlog::error("import failed: {}", s.ToString());
    return 1;
  }
  auto summary = distillery::DescribeCheckpoint(*checkpoint);
  spdlog::info("imported {} into {}\n{}", onnx, path,
               summary.ok() ? *summary : summary.status().ToString());
  return 0;
}

// The teacher of `serve`: --checkpoint's files (several make an ensemble
// under --ensemble), or --onnx imported in memory (false after logging a bad
// flag).
bool TeacherFromFlags(distillery::ServeConfig* config) {
  const std::string checkpoints = absl::GetFlag(FLAGS_checkpoint);
  for (absl::string_view path : absl::StrSplit(checkpoints, ',', absl::SkipWhitespace())) {
    config->checkpoint_paths.emplace_back(absl::StripAsciiWhitespace(path));
  }
  if (const std::string rule = absl::GetFlag(FLAGS_ensemble); !rule.empty()) {
    auto parsed = distillery::ParseEnsembleRule(rule);
    if (!parsed.ok()) {
      spdlog::error("bad --ensemble: {}", parsed.status().ToString());
      return false;
    }
    config->ensemble = *parsed;
  }
  auto precision = distillery::ParsePrecisionChoice(absl::GetFlag(FLAGS_precision));
  if (!precision.ok()) {
    spdlog::error("bad --precision: {}", precision.status().ToString());
    return false;
  }
  config->precision = *precision;
  if (const std::string onnx = absl::GetFlag(FLAGS_onnx); !onnx.empty()) {
    if (!config->checkpoint_paths.empty() || config->ensemble != distillery::EnsembleRule::kNone) {
      spdlog::error("serve --onnx serves that one model: drop --checkpoint and --ensemble");
      return false;
    }
    distillery::OnnxImportOptions options;
    if (!ImportOptionsFromFlags(&options)) return false;
    auto checkpoint = distillery::ImportOnnxFile(onnx, options);
    if (!checkpoint.ok()) {
      spdlog::error("import failed: {}", checkpoint.status().ToString());
      return false;
    }
    config->checkpoint = std::move(*checkpoint);
    config->checkpoint_paths = {onnx};
  }
  if (config->checkpoint_paths.empty()) {
    spdlog::error("serve needs --checkpoint (or --onnx)");
    return false;
  }
  if (!config->checkpoint.has_value() &&
      (absl::GetFlag(FLAGS_input_scale) != 1.0 / 255.0 ||
       !absl::GetFlag(FLAGS_input_mean).empty() || !absl::GetFlag(FLAGS_input_std).empty())) {
    spdlog::error(
        "--input_scale, --input_mean and --input_std apply to serve --onnx only; a checkpoint "
        "records its own preprocessing (teacher_server inspect shows it)");
    return false;
  }
  return true;
}

int Serve() {
  distillery::ServeConfig config;
  if (!TeacherFromFlags(&config)) return 2;
  config.address = absl::GetFlag(FLAGS_address);
  config.port_file = absl::GetFlag(FLAGS_port_file);
  config.metrics_address = absl::GetFlag(FLAGS_metrics_address);
  if (!absl::GetFlag(FLAGS_no_transfer_set)) {
    absl::StatusOr<std::string> data = distillery::DataSourceFromFlags();
    if (!data.ok()) {
      spdlog::error("{}", data.status().ToString());
      return 2;
    }
    config.data_dir = *data;
  }
  config.transfer_range = absl::GetFlag(FLAGS_transfer_range);
  config.serve_labels = absl::GetFlag(FLAGS_serve_labels);
  config.threads = absl::GetFlag(FLAGS_threads);
  config.service.default_temperature = static_cast<float>(absl::GetFlag(FLAGS_default_temperature));
  config.service.max_batch_examples = static_cast<uint32_t>(absl::GetFlag(FLAGS_max_batch));
  config.service.max_inflight_calls = absl::GetFlag(FLAGS_max_inflight_calls);
  config.service.max_message_bytes =
      static_cast<uint64_t>(absl::GetFlag(FLAGS_max_message_mb)) * (uint64_t{1} << 20);
  config.batcher.max_batch_examples = absl::GetFlag(FLAGS_max_batch);
  config.batcher.max_wait = absl::Microseconds(absl::GetFlag(FLAGS_batch_wait_ms) * 1000);
  config.batcher.max_queued_examples = absl::GetFlag(FLAGS_max_queued_examples);
  config.drain_deadline = absl::Seconds(absl::GetFlag(FLAGS_drain_seconds));
  config.keepalive_time = absl::Seconds(absl::GetFlag(FLAGS_keepalive_seconds));
  config.max_connection_age = absl::Seconds(absl::GetFlag(FLAGS_max_connection_age_seconds));
  config.service.max_stream_duration = absl::Seconds(absl::GetFlag(FLAGS_max_stream_seconds));
  config.service.stream_stall_timeout = absl::Seconds(absl::GetFlag(FLAGS_stream_stall_seconds));
  config.tls.cert_file = absl::GetFlag(FLAGS_tls_cert_file);
  config.tls.key_file = absl::GetFlag(FLAGS_tls_key_file);
  config.tls.client_ca_file = absl::GetFlag(FLAGS_tls_client_ca_file);
  config.health_address = absl::GetFlag(FLAGS_health_address);
  if (auto token = distillery::ReadBearerToken(absl::GetFlag(FLAGS_auth_token_file)); token.ok()) {
    config.auth_token = std::move(*token);
  } else {
    spdlog::error("bad serve flags: {}", token.status().ToString());
    return 2;
  }
  if (config.service.max_inflight_calls < 1 || config.batcher.max_queued_examples < 1 ||
      config.service.max_stream_duration <= absl::ZeroDuration() ||
      config.service.stream_stall_timeout <= absl::ZeroDuration()) {
    spdlog::error(
        "bad serve flags: --max_inflight_calls, --max_queued_examples, --max_stream_seconds and "
        "--stream_stall_seconds must be > 0");
    return 2;
  }
  if (absl::Status s = distillery::ValidateTemperature(config.service.default_temperature);
      !s.ok() || config.batcher.max_batch_examples < 1 || config.service.max_message_bytes == 0) {
    spdlog::error("bad serve flags: {}",
                  s.ok() ? "--max_batch and --max_message_mb must be >= 1" : s.ToString());
    return 2;
  }
  if (absl::Status s = distillery::RunServer(config); !s.ok()) {
    spdlog::error("teacher server failed: {}", s.ToString());
    return 1;
  }
  return 0;
}

// One grpc.health.v1.Health/Check call: the health check of docker-compose
// and an exec probe anywhere, as Debian has no grpc_health_probe.
int Probe() {
  const std::string target = absl::GetFlag(FLAGS_probe_target);
  auto channel = grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(
      absl::ToChronoTime(absl::Now() + absl::Seconds(absl::GetFlag(FLAGS_probe_timeout_seconds))));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(absl::GetFlag(FLAGS_probe_service));
  grpc::health::v1::HealthCheckResponse response;
  const grpc::Status status = stub->Check(&context, request, &response);
  if (!status.ok()) {
    spdlog::error("probe {}: {} ({})", target, status.error_message(),
                  static_cast<int>(status.error_code()));
    return 1;
  }
  const std::string name =
      grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status());
  if (response.status() != grpc::health::v1::HealthCheckResponse::SERVING) {
    spdlog::error("probe {}: {}", target, name);
    return 1;
  }
  spdlog::info("probe {}: {}", target, name);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(kUsage);
  distillery::SetTrainingFlagDefaults(TeacherRecipe(), /*momentum_ramp_epochs=*/10);
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() < 2) {
    spdlog::error("no command given\n{}", kUsage);
    return 2;
  }
  const std::string command = args[1];
  if (command == "train") return distillery::RunTrainingFromFlags("teacher");
  if (command == "serve") return Serve();
  if (command == "probe") return Probe();
  if (command == "import") return Import();
  if (command == "inspect") return distillery::InspectCheckpointFromFlags();
  spdlog::error("unknown command \"{}\"\n{}", command, kUsage);
  return 2;
}
