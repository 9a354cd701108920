#include "teacher_server/server.h"

#include <csignal>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "common/data/dataset.h"
#include "common/data/npz.h"
#include "common/tensor/dnnl_context.h"
#include "common/util/status_macros.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "spdlog/spdlog.h"
#include "teacher_server/teacher_loader.h"

namespace distillery {
namespace {

constexpr char kServiceName[] = "distill.v1.Teacher";

int WaitForTerminationSignal(const sigset_t& signals) {
  int signal = 0;
  sigwait(&signals, &signal);
  return signal;
}

}  // namespace

absl::Status RunServer(const ServeConfig& config) {
  // Block the termination signals before any thread starts, so that every
  // thread inherits the mask and only sigwait below receives them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  SetComputeThreads(config.threads);
  std::string why;
  ASSIGN_OR_RETURN(const Precision precision,
                   ResolvePrecision(config.precision, PrecisionUse::kServing, &why));
  spdlog::info("precision {} ({})", PrecisionName(precision), why);
  ASSIGN_OR_RETURN(LoadedTeacher teacher, LoadTeacher(config.checkpoint_paths, config.ensemble,
                                                      config.checkpoint, precision));
  const TeacherIdentity& identity = teacher.identity;
  // The largest valid request: a full batch of float inputs (plus framing).
  const uint64_t largest_request =
      uint64_t{config.service.max_batch_examples} * teacher.model->input_size() * sizeof(float) +
      4096;
  if (largest_request > config.service.max_message_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a request of --max_batch=", config.service.max_batch_examples, " float inputs of ",
        ShapeString(teacher.model->input_shape()), " takes ", largest_request,
        " bytes, more than --max_message_mb allows (", config.service.max_message_bytes,
        " bytes): lower --max_batch or raise --max_message_mb"));
  }

  std::unique_ptr<TransferSet> transfer_set;
  if (!config.data_dir.empty()) {
    ASSIGN_OR_RETURN(MnistFormatData data, LoadDataSource(config.data_dir));
    ASSIGN_OR_RETURN(auto range, ParseRange(config.transfer_range, data.train.num_examples));
    ASSIGN_OR_RETURN(Dataset part, SliceDataset(data.train, range.first, range.second));
    if (!config.serve_labels) part = WithoutLabels(part);
    ASSIGN_OR_RETURN(transfer_set, TransferSet::Create(std::move(part), *teacher.model,
                                                       static_cast<uint64_t>(range.first)));
    spdlog::info("transfer set: {} examples [{}, {}) of {} (fingerprint {}), logits precomputed",
                 transfer_set->size(), range.first, range.second, config.data_dir,
                 transfer_set->identity().fingerprint());
  }

  std::unique_ptr<TeacherMetrics> metrics;
  if (!config.metrics_address.empty()) {
    ASSIGN_OR_RETURN(metrics, TeacherMetrics::CreateExposed(config.metrics_address));
    spdlog::info("metrics on http://{}/metrics", config.metrics_address);
  } else {
    metrics = std::make_unique<TeacherMetrics>();
  }
  BatcherObserver observer;
  TeacherMetrics* metrics_ptr = metrics.get();
  observer.on_forward_pass = [metrics_ptr](int64_t examples, int64_t requests) {
    metrics_ptr->RecordForwardPass(examples, requests);
  };
  observer.on_queue_depth = [metrics_ptr](int64_t depth) { metrics_ptr->SetQueueDepth(depth); };
  ASSIGN_OR_RETURN(std::unique_ptr<TeacherModel> batcher_model, teacher.model->Clone());
  BatcherConfig batcher_config = config.batcher;
  batcher_config.compute_threads = config.threads;
  DynamicBatcher batcher(std::move(batcher_model), batcher_config, observer);
  TeacherServiceConfig service_config = config.service;
  service_config.max_batch_examples = static_cast<uint32_t>(
      std::min<int64_t>(service_config.max_batch_examples, config.batcher.max_batch_examples));
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> credentials,
                   MakeServerCredentials(config.tls));
  std::unique_ptr<BearerTokenAuth> auth;
  if (!config.auth_token.empty()) {
    auth = std::make_unique<BearerTokenAuth>(config.auth_token);
    if (!config.tls.enabled()) {
      spdlog::warn("a bearer token without TLS travels in clear text: set --tls_cert_file");
    }
  }
  TeacherService service(service_config, identity, &batcher, transfer_set.get(), metrics.get(),
                         auth.get());

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(config.address, credentials, &port);
  builder.RegisterService(&service);
  const int max_message = static_cast<int>(
      std::min<uint64_t>(config.service.max_message_bytes, std::numeric_limits<int>::max()));
  builder.SetMaxReceiveMessageSize(max_message);
  builder.SetMaxSendMessageSize(max_message);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS,
                             static_cast<int>(absl::ToInt64Milliseconds(config.keepalive_time)));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                             static_cast<int>(absl::ToInt64Milliseconds(config.keepalive_timeout)));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  // Accept client pings as often as every 5 s without data.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 5000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  if (config.max_connection_age > absl::ZeroDuration()) {
    builder.AddChannelArgument(
        GRPC_ARG_MAX_CONNECTION_AGE_MS,
        static_cast<int>(absl::ToInt64Milliseconds(config.max_connection_age)));
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS,
                               static_cast<int>(absl::ToInt64Milliseconds(config.drain_deadline)));
  }
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    return absl::UnavailableError(absl::StrCat(
        "cannot listen on ", config.address,
        config.tls.enabled() ? " (or the TLS certificate and key are not a valid PEM pair)" : ""));
  }
  // The health-only plaintext server: no Teacher service, its own default
  // health service, set alongside the main one.
  std::unique_ptr<grpc::Server> health_server;
  int health_port = 0;
  if (!config.health_address.empty()) {
    grpc::ServerBuilder health_builder;
    health_builder.AddListeningPort(config.health_address, grpc::InsecureServerCredentials(),
                                    &health_port);
    health_server = health_builder.BuildAndStart();
    if (health_server == nullptr || health_port == 0) {
      server->Shutdown();
      return absl::UnavailableError(absl::StrCat("cannot listen on ", config.health_address));
    }
  }
  auto set_serving = [&](bool serving) {
    for (grpc::Server* s : {server.get(), health_server.get()}) {
      if (s == nullptr) continue;
      s->GetHealthCheckService()->SetServingStatus(kServiceName, serving);
      s->GetHealthCheckService()->SetServingStatus(serving);
    }
  };
  set_serving(true);
  if (!config.port_file.empty()) {
    const std::string temp = config.port_file + ".tmp";
    std::ofstream out(temp);
    out << port << "\n";
    out.close();
    if (!out || std::rename(temp.c_str(), config.port_file.c_str()) != 0) {
      server->Shutdown();
      if (health_server != nullptr) health_server->Shutdown();
      return absl::PermissionDeniedError(
          absl::StrCat("cannot write the port file ", config.port_file));
    }
  }
  spdlog::info("serving {} on port {} (default T={}, largest batch {}, batching wait {})",
               kServiceName, port, service_config.default_temperature,
               service_config.max_batch_examples, absl::FormatDuration(config.batcher.max_wait));
  spdlog::info("transport: {}, {}; plaintext health-only port: {}",
               !config.tls.enabled()               ? "plaintext"
               : config.tls.client_ca_file.empty() ? "TLS"
                                                   : "mutual TLS (client certificates required)",
               auth != nullptr ? "bearer token required" : "no token",
               health_port != 0 ? absl::StrCat(health_port) : std::string("none"));
  spdlog::info(
      "limits: {} calls in flight, {} examples queued, messages of {} bytes, streams of {}",
      service_config.max_inflight_calls, config.batcher.max_queued_examples,
      service_config.max_message_bytes, absl::FormatDuration(service_config.max_stream_duration));

  const int signal = WaitForTerminationSignal(signals);
  spdlog::info("received {}: draining (deadline {})", signal == SIGTERM ? "SIGTERM" : "SIGINT",
               absl::FormatDuration(config.drain_deadline));
  set_serving(false);
  service.StartDraining();
  server->Shutdown(absl::ToChronoTime(absl::Now() + config.drain_deadline));
  if (health_server != nullptr) health_server->Shutdown();
  batcher.Stop();
  spdlog::info("drained; exiting");
  return absl::OkStatus();
}

}  // namespace distillery
