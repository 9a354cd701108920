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

// InvalidArgument when the largest valid request (a full batch of float
// inputs, plus framing) would not fit in a message.
absl::Status CheckRequestLimit(const ServeConfig& config, const TeacherModel& model) {
  const uint64_t largest_request =
      uint64_t{config.service.max_batch_examples} * model.input_size() * sizeof(float) + 4096;
  if (largest_request <= config.service.max_message_bytes) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "a request of --max_batch=", config.service.max_batch_examples, " float inputs of ",
      ShapeString(model.input_shape()), " takes ", largest_request,
      " bytes, more than --max_message_mb allows (", config.service.max_message_bytes,
      " bytes): lower --max_batch or raise --max_message_mb"));
}

// The transfer set of --data_dir and --transfer_range with its logits
// precomputed, or null without --data_dir.
absl::StatusOr<std::unique_ptr<TransferSet>> LoadTransferSet(const ServeConfig& config,
                                                             TeacherModel& model) {
  if (config.data_dir.empty()) return std::unique_ptr<TransferSet>();
  ASSIGN_OR_RETURN(MnistFormatData data, LoadDataSource(config.data_dir));
  ASSIGN_OR_RETURN(auto range, ParseRange(config.transfer_range, data.train.num_examples));
  ASSIGN_OR_RETURN(Dataset part, SliceDataset(data.train, range.first, range.second));
  if (!config.serve_labels) part = WithoutLabels(part);
  ASSIGN_OR_RETURN(std::unique_ptr<TransferSet> transfer_set,
                   TransferSet::Create(std::move(part), model, static_cast<uint64_t>(range.first)));
  spdlog::info("transfer set: {} examples [{}, {}) of {} (fingerprint {}), logits precomputed",
               transfer_set->size(), range.first, range.second, config.data_dir,
               transfer_set->identity().fingerprint());
  return transfer_set;
}

// The metrics, exposed on --metrics_address when set.
absl::StatusOr<std::unique_ptr<TeacherMetrics>> MakeMetrics(const ServeConfig& config) {
  if (config.metrics_address.empty()) return std::make_unique<TeacherMetrics>();
  ASSIGN_OR_RETURN(std::unique_ptr<TeacherMetrics> metrics,
                   TeacherMetrics::CreateExposed(config.metrics_address));
  spdlog::info("metrics on http://{}/metrics", config.metrics_address);
  return metrics;
}

// The batcher's reports, recorded in `metrics` (not owned).
BatcherObserver ObserverFor(TeacherMetrics* metrics) {
  BatcherObserver observer;
  observer.on_forward_pass = [metrics](int64_t examples, int64_t requests) {
    metrics->RecordForwardPass(examples, requests);
  };
  observer.on_queue_depth = [metrics](int64_t depth) { metrics->SetQueueDepth(depth); };
  return observer;
}

// Message sizes and keepalive (and connection ages when set) of the main
// server.
void ConfigureChannels(const ServeConfig& config, grpc::ServerBuilder* builder) {
  const int max_message = static_cast<int>(
      std::min<uint64_t>(config.service.max_message_bytes, std::numeric_limits<int>::max()));
  builder->SetMaxReceiveMessageSize(max_message);
  builder->SetMaxSendMessageSize(max_message);
  const auto ms = [](absl::Duration d) { return static_cast<int>(absl::ToInt64Milliseconds(d)); };
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, ms(config.keepalive_time));
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, ms(config.keepalive_timeout));
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  // Accept client pings as often as every 5 s without data.
  builder->AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 5000);
  builder->AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  if (config.max_connection_age > absl::ZeroDuration()) {
    builder->AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS, ms(config.max_connection_age));
    builder->AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS, ms(config.drain_deadline));
  }
}

// The main server and the optional plaintext health-only one (no Teacher
// service, its own default health service, set alongside the main one).
struct Servers {
  std::unique_ptr<grpc::Server> main, health;
  int port = 0, health_port = 0;

  void SetServing(bool serving) {
    for (grpc::Server* s : {main.get(), health.get()}) {
      if (s == nullptr) continue;
      s->GetHealthCheckService()->SetServingStatus(kServiceName, serving);
      s->GetHealthCheckService()->SetServingStatus(serving);
    }
  }
  void Shutdown() {
    if (main != nullptr) main->Shutdown();
    if (health != nullptr) health->Shutdown();
  }
};

absl::StatusOr<Servers> StartServers(const ServeConfig& config, TeacherService* service) {
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> credentials,
                   MakeServerCredentials(config.tls));
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  Servers servers;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(config.address, credentials, &servers.port);
  builder.RegisterService(service);
  ConfigureChannels(config, &builder);
  servers.main = builder.BuildAndStart();
  if (servers.main == nullptr || servers.port == 0) {
    return absl::UnavailableError(absl::StrCat(
        "cannot listen on ", config.address,
        config.tls.enabled() ? " (or the TLS certificate and key are not a valid PEM pair)" : ""));
  }
  if (!config.health_address.empty()) {
    grpc::ServerBuilder health_builder;
    health_builder.AddListeningPort(config.health_address, grpc::InsecureServerCredentials(),
                                    &servers.health_port);
    servers.health = health_builder.BuildAndStart();
    if (servers.health == nullptr || servers.health_port == 0) {
      servers.Shutdown();
      return absl::UnavailableError(absl::StrCat("cannot listen on ", config.health_address));
    }
  }
  return servers;
}

// Writes `port` to `path` atomically (a temporary file renamed).
absl::Status WritePortFile(const std::string& path, int port) {
  const std::string temp = path + ".tmp";
  std::ofstream out(temp);
  out << port << "\n";
  out.close();
  if (!out || std::rename(temp.c_str(), path.c_str()) != 0) {
    return absl::PermissionDeniedError(absl::StrCat("cannot write the port file ", path));
  }
  return absl::OkStatus();
}

void LogServing(const ServeConfig& config, const TeacherServiceConfig& service,
                const Servers& servers) {
  spdlog::info("serving {} on port {} (default T={}, largest batch {}, batching wait {})",
               kServiceName, servers.port, service.default_temperature, service.max_batch_examples,
               absl::FormatDuration(config.batcher.max_wait));
  spdlog::info("transport: {}, {}; plaintext health-only port: {}",
               !config.tls.enabled()               ? "plaintext"
               : config.tls.client_ca_file.empty() ? "TLS"
                                                   : "mutual TLS (client certificates required)",
               !config.auth_token.empty() ? "bearer token required" : "no token",
               servers.health_port != 0 ? absl::StrCat(servers.health_port) : std::string("none"));
  spdlog::info(
      "limits: {} calls in flight, {} examples queued, messages of {} bytes, streams of {}",
      service.max_inflight_calls, config.batcher.max_queued_examples, service.max_message_bytes,
      absl::FormatDuration(service.max_stream_duration));
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
  RETURN_IF_ERROR(CheckRequestLimit(config, *teacher.model));
  ASSIGN_OR_RETURN(std::unique_ptr<TransferSet> transfer_set,
                   LoadTransferSet(config, *teacher.model));
  ASSIGN_OR_RETURN(std::unique_ptr<TeacherMetrics> metrics, MakeMetrics(config));
  ASSIGN_OR_RETURN(std::unique_ptr<TeacherModel> batcher_model, teacher.model->Clone());
  BatcherConfig batcher_config = config.batcher;
  batcher_config.compute_threads = config.threads;
  DynamicBatcher batcher(std::move(batcher_model), batcher_config, ObserverFor(metrics.get()));
  TeacherServiceConfig service_config = config.service;
  service_config.max_batch_examples = static_cast<uint32_t>(
      std::min<int64_t>(service_config.max_batch_examples, config.batcher.max_batch_examples));
  std::unique_ptr<BearerTokenAuth> auth;
  if (!config.auth_token.empty()) {
    auth = std::make_unique<BearerTokenAuth>(config.auth_token);
    if (!config.tls.enabled()) {
      spdlog::warn("a bearer token without TLS travels in clear text: set --tls_cert_file");
    }
  }
  TeacherService service(service_config, teacher.identity, &batcher, transfer_set.get(),
                         metrics.get(), auth.get());
  ASSIGN_OR_RETURN(Servers servers, StartServers(config, &service));
  servers.SetServing(true);
  if (!config.port_file.empty()) {
    if (absl::Status s = WritePortFile(config.port_file, servers.port); !s.ok()) {
      servers.Shutdown();
      return s;
    }
  }
  LogServing(config, service_config, servers);

  const int signal = WaitForTerminationSignal(signals);
  spdlog::info("received {}: draining (deadline {})", signal == SIGTERM ? "SIGTERM" : "SIGINT",
               absl::FormatDuration(config.drain_deadline));
  servers.SetServing(false);
  service.StartDraining();
  servers.main->Shutdown(absl::ToChronoTime(absl::Now() + config.drain_deadline));
  if (servers.health != nullptr) servers.health->Shutdown();
  batcher.Stop();
  spdlog::info("drained; exiting");
  return absl::OkStatus();
}

}  // namespace distillery
