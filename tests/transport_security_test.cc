// Transport security with real processes on loopback and certificates made
// at test time by openssl (tests/make_test_certs.sh): a teacher with TLS and a
// bearer token, one with mutual TLS, students that train through them, and
// clients refused with the right status code while the teacher keeps serving
// the others.
#include <sys/stat.h>

#include <fstream>
#include <future>
#include <iterator>

#include "common/data/idx_dataset.h"
#include "common/formats/checkpoint.h"
#include "common/train/trainer.h"
#include "distill/v1/teacher.grpc.pb.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "student_trainer/teacher_client.h"
#include "tests/server_process.h"

namespace distillery {
namespace {

using distill::v1::Teacher;

constexpr char kToken[] = "tok-3f9a1c7e55d2-right";
constexpr char kWrongToken[] = "tok-3f9a1c7e55d2-wrong";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

bool ExitedZero(int status) { return status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0; }

struct ClientCredentials {
  std::string ca;  // "" = plaintext
  std::string cert, key;
};

class TransportSecurityTest : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(testing::TempDir() + "/tls." + std::to_string(getpid()));
    mkdir(dir_->c_str(), 0700);
    ASSERT_TRUE(ExitedZero(ServerProcess::Run("/bin/bash", {DISTILLERY_TEST_CERTS_SCRIPT, *dir_},
                                              *dir_ + "/certs.log")))
        << ReadFile(*dir_ + "/certs.log");
    std::ofstream(Path("token")) << kToken << "\n";
    std::ofstream(Path("wrong_token")) << kWrongToken << "\n";

    auto mnist = LoadMnistFormatDirectory(DISTILLERY_MNIST_DIR);
    ASSERT_TRUE(mnist.ok()) << mnist.status();
    TrainerConfig config;
    config.architecture = "784-64-10";
    config.epochs = 1;
    config.log_progress = false;
    config.checkpoint_path = Path("teacher.ckpt");
    ASSERT_TRUE(Train(config, *SliceDataset(mnist->train, 0, 3000), Dataset()).ok());

    health_port_ = PickFreePort();
    const std::vector<std::string> common = {"--checkpoint=" + Path("teacher.ckpt"),
                                             "--data_dir=" DISTILLERY_MNIST_DIR,
                                             "--transfer_range=0:2000",
                                             "--metrics_address=",
                                             "--threads=1",
                                             "--tls_cert_file=" + Path("server.pem"),
                                             "--tls_key_file=" + Path("server.key"),
                                             "--auth_token_file=" + Path("token")};
    std::vector<std::string> tls_args = common;
    tls_args.push_back("--health_address=127.0.0.1:" + std::to_string(health_port_));
    tls_ = new ServerProcess();
    ASSERT_TRUE(tls_->Start(DISTILLERY_TEACHER_SERVER_BINARY, tls_args, *dir_,
                            std::chrono::seconds(60), 0, Path("tls_server.log")))
        << ReadFile(Path("tls_server.log"));
    std::vector<std::string> mtls_args = common;
    mtls_args.push_back("--tls_client_ca_file=" + Path("ca.pem"));
    mtls_ = new ServerProcess();
    ASSERT_TRUE(mtls_->Start(DISTILLERY_TEACHER_SERVER_BINARY, mtls_args, *dir_,
                             std::chrono::seconds(60), 0, Path("mtls_server.log")))
        << ReadFile(Path("mtls_server.log"));
  }
  static void TearDownTestSuite() {
    delete tls_;
    delete mtls_;
    delete dir_;
  }
  void SetUp() override {
    ASSERT_NE(tls_->port(), 0);
    ASSERT_NE(mtls_->port(), 0);
  }

  static std::string Path(const std::string& name) { return *dir_ + "/" + name; }

  static ClientCredentials Trusted() { return {Path("ca.pem"), "", ""}; }
  static ClientCredentials WithClientCert() {
    return {Path("ca.pem"), Path("client.pem"), Path("client.key")};
  }

  static std::unique_ptr<Teacher::Stub> Stub(const std::string& target,
                                             const ClientCredentials& c) {
    std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
    if (!c.ca.empty()) {
      grpc::SslCredentialsOptions options;
      options.pem_root_certs = ReadFile(c.ca);
      if (!c.cert.empty()) {
        options.pem_cert_chain = ReadFile(c.cert);
        options.pem_private_key = ReadFile(c.key);
      }
      credentials = grpc::SslCredentials(options);
    }
    // A channel argument of its own keeps gRPC from reusing a connection
    // another test opened with other credentials.
    grpc::ChannelArguments args;
    args.SetInt("distillery.test.channel", ++channel_counter_);
    return Teacher::NewStub(grpc::CreateCustomChannel(target, credentials, args));
  }

  static void Authorize(grpc::ClientContext* context, const std::string& authorization) {
    context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    if (!authorization.empty()) context->AddMetadata("authorization", authorization);
  }

  static grpc::Status ModelInfo(Teacher::Stub* stub, const std::string& authorization) {
    grpc::ClientContext context;
    Authorize(&context, authorization);
    distill::v1::ModelInfo info;
    return stub->GetModelInfo(&context, {}, &info);
  }
  static grpc::Status SoftTargets(Teacher::Stub* stub, const std::string& authorization) {
    grpc::ClientContext context;
    Authorize(&context, authorization);
    distill::v1::SoftTargetsRequest request;
    request.set_num_examples(1);
    request.set_pixels_u8(std::string(784, '\x10'));
    distill::v1::SoftTargetsResponse response;
    return stub->GetSoftTargets(&context, request, &response);
  }
  static grpc::Status Stream(Teacher::Stub* stub, const std::string& authorization) {
    grpc::ClientContext context;
    Authorize(&context, authorization);
    distill::v1::TransferSetRequest request;
    request.set_num_shards(20);
    request.set_batch_size(50);
    auto reader = stub->StreamTransferSet(&context, request);
    distill::v1::TransferBatch batch;
    int batches = 0;
    while (reader->Read(&batch)) ++batches;
    grpc::Status status = reader->Finish();
    if (status.ok() && batches != 2) return grpc::Status(grpc::StatusCode::DATA_LOSS, "batches");
    return status;
  }

  // A well-configured client still gets all three methods answered.
  static void ExpectServesGoodClients() {
    const std::string bearer = std::string("Bearer ") + kToken;
    auto tls = Stub(tls_->target(), Trusted());
    EXPECT_TRUE(ModelInfo(tls.get(), bearer).ok()) << "TLS teacher stopped serving";
    EXPECT_TRUE(SoftTargets(tls.get(), bearer).ok());
    EXPECT_TRUE(Stream(tls.get(), bearer).ok());
    auto mtls = Stub(mtls_->target(), WithClientCert());
    EXPECT_TRUE(ModelInfo(mtls.get(), bearer).ok()) << "mTLS teacher stopped serving";
    EXPECT_TRUE(SoftTargets(mtls.get(), bearer).ok());
  }

  // The project's client, fail-fast settings as a student's.
  static absl::StatusOr<std::unique_ptr<TeacherClient>> Connect(const ServerProcess& server,
                                                                const ClientCredentials& c,
                                                                const std::string& token) {
    TeacherClientConfig config;
    config.target = server.target();
    config.tls_ca_file = c.ca;
    config.tls_cert_file = c.cert;
    config.tls_key_file = c.key;
    config.auth_token = token;
    config.give_up_after = absl::Seconds(60);
    return TeacherClient::Connect(config);
  }

  // A student process distilling through `server`; its log is returned in
  // `log`.
  static int RunStudent(const ServerProcess& server, const std::string& name,
                        std::vector<std::string> extra, std::string* log) {
    std::vector<std::string> args = {"distill",
                                     "--teacher=" + server.target(),
                                     "--data_dir=" DISTILLERY_MNIST_DIR,
                                     "--architecture=784-32-10",
                                     "--epochs=1",
                                     "--threads=1",
                                     "--give_up_seconds=30",
                                     "--call_deadline_seconds=10",
                                     "--checkpoint=" + Path(name + ".ckpt")};
    args.insert(args.end(), extra.begin(), extra.end());
    const int status = ServerProcess::Run(DISTILLERY_STUDENT_TRAINER_BINARY, args,
                                          Path(name + ".log"), std::chrono::seconds(300));
    *log = ReadFile(Path(name + ".log"));
    return status;
  }

  static std::string* dir_;
  static ServerProcess* tls_;
  static ServerProcess* mtls_;
  static int health_port_;
  static inline int channel_counter_ = 0;
};
std::string* TransportSecurityTest::dir_ = nullptr;
ServerProcess* TransportSecurityTest::tls_ = nullptr;
ServerProcess* TransportSecurityTest::mtls_ = nullptr;
int TransportSecurityTest::health_port_ = 0;

TEST_F(TransportSecurityTest, TlsStudentTrainsOnItsOwnInputs) {
  std::string log;
  const int status =
      RunStudent(*tls_, "tls_student",
                 {"--source=local", "--train_range=2000:3000", "--tls_ca_file=" + Path("ca.pem"),
                  "--tls_server_name=localhost", "--auth_token_file=" + Path("token")},
                 &log);
  EXPECT_TRUE(ExitedZero(status)) << log;
  EXPECT_NE(log.find("distilled student 784-32-10 done"), std::string::npos) << log;
  EXPECT_TRUE(LoadCheckpoint(Path("tls_student.ckpt")).ok());
}

TEST_F(TransportSecurityTest, MutualTlsStudentTrainsOnTheTeachersTransferSetWithAnEnvToken) {
  setenv("DISTILLERY_AUTH_TOKEN", kToken, 1);
  std::string log;
  const int status =
      RunStudent(*mtls_, "mtls_student",
                 {"--source=teacher", "--tls_ca_file=" + Path("ca.pem"),
                  "--tls_cert_file=" + Path("client.pem"), "--tls_key_file=" + Path("client.key")},
                 &log);
  unsetenv("DISTILLERY_AUTH_TOKEN");
  EXPECT_TRUE(ExitedZero(status)) << log;
  EXPECT_TRUE(LoadCheckpoint(Path("mtls_student.ckpt")).ok());
}

TEST_F(TransportSecurityTest, ClientWithoutTheCaIsRefused) {
  const std::string bearer = std::string("Bearer ") + kToken;
  // A TLS client that trusts another CA, and a plaintext client.
  auto untrusting = Stub(tls_->target(), {Path("other_ca.pem"), "", ""});
  EXPECT_EQ(ModelInfo(untrusting.get(), bearer).error_code(), grpc::StatusCode::UNAVAILABLE);
  auto plaintext = Stub(tls_->target(), {});
  EXPECT_EQ(ModelInfo(plaintext.get(), bearer).error_code(), grpc::StatusCode::UNAVAILABLE);
  ExpectServesGoodClients();

  // The student's client gives up at once and says why.
  const absl::Time start = absl::Now();
  auto client = Connect(*tls_, {Path("other_ca.pem"), "", ""}, kToken);
  EXPECT_EQ(client.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(client.status().message().find("TLS handshake"), std::string::npos) << client.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  ExpectServesGoodClients();
}

TEST_F(TransportSecurityTest, MutualTlsRefusesClientsWithoutAnAcceptedCertificate) {
  const std::string bearer = std::string("Bearer ") + kToken;
  const std::vector<std::pair<const char*, ClientCredentials>> refused = {
      {"no client certificate", Trusted()},
      {"a certificate of another CA",
       {Path("ca.pem"), Path("other_client.pem"), Path("other_client.key")}},
  };
  for (const auto& [what, credentials] : refused) {
    auto stub = Stub(mtls_->target(), credentials);
    EXPECT_EQ(ModelInfo(stub.get(), bearer).error_code(), grpc::StatusCode::UNAVAILABLE) << what;
    EXPECT_EQ(SoftTargets(stub.get(), bearer).error_code(), grpc::StatusCode::UNAVAILABLE) << what;
    ExpectServesGoodClients();

    const absl::Time start = absl::Now();
    auto client = Connect(*mtls_, credentials, kToken);
    EXPECT_EQ(client.status().code(), absl::StatusCode::kUnavailable) << what;
    EXPECT_NE(client.status().message().find("refuses this client's TLS handshake"),
              std::string::npos)
        << client.status();
    EXPECT_LT(absl::Now() - start, absl::Seconds(15)) << what;
    ExpectServesGoodClients();
  }
}

TEST_F(TransportSecurityTest, WrongOrMissingTokenIsUnauthenticatedOnEveryMethod) {
  const std::vector<std::string> refused = {
      "",                                     // no token
      std::string("Bearer ") + kWrongToken,   // wrong token, same length
      "Bearer tok",                           // a prefix of the token
      std::string("Bearer ") + kToken + "x",  // the token and more
      std::string("Basic ") + kToken,         // not a bearer token
      std::string("bearer") + kToken,         // malformed
  };
  for (ServerProcess* server : {tls_, mtls_}) {
    auto stub = Stub(server->target(), server == tls_ ? Trusted() : WithClientCert());
    for (const std::string& authorization : refused) {
      EXPECT_EQ(ModelInfo(stub.get(), authorization).error_code(),
                grpc::StatusCode::UNAUTHENTICATED)
          << authorization;
      EXPECT_EQ(SoftTargets(stub.get(), authorization).error_code(),
                grpc::StatusCode::UNAUTHENTICATED)
          << authorization;
      EXPECT_EQ(Stream(stub.get(), authorization).error_code(), grpc::StatusCode::UNAUTHENTICATED)
          << authorization;
    }
    ExpectServesGoodClients();
  }
  // The student's client: refused at once, not retried.
  for (const std::string& token : {std::string(kWrongToken), std::string()}) {
    const absl::Time start = absl::Now();
    auto client = Connect(*tls_, Trusted(), token);
    EXPECT_EQ(client.status().code(), absl::StatusCode::kUnauthenticated) << client.status();
    EXPECT_NE(client.status().message().find("bearer token"), std::string::npos) << client.status();
    EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  }
  ExpectServesGoodClients();
}

TEST_F(TransportSecurityTest, RefusalsAreLoggedWithoutTheToken) {
  auto stub = Stub(tls_->target(), Trusted());
  EXPECT_EQ(ModelInfo(stub.get(), std::string("Bearer ") + kWrongToken).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  const std::string log = ReadFile(Path("tls_server.log"));
  EXPECT_NE(log.find("refused GetModelInfo from ipv4:127.0.0.1"), std::string::npos) << log;
  EXPECT_EQ(log.find("tok-3f9a1c7e55d2"), std::string::npos) << log;
}

TEST_F(TransportSecurityTest, StudentRefusesToSendATokenInClearText) {
  TeacherClientConfig config;
  config.target = tls_->target();
  config.auth_token = kToken;
  auto client = TeacherClient::Connect(config);
  EXPECT_EQ(client.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(client.status().message().find("plaintext"), std::string::npos) << client.status();
}

// grpc.health.v1.Health/Check by hand (no health stubs ship with gRPC C++):
// HealthCheckRequest{service} in, HealthCheckResponse{status} out (1 =
// SERVING). Returns the status, or -1 - the gRPC code on failure.
int HealthCheck(const std::string& target, const std::string& service,
                const std::string& method = "/grpc.health.v1.Health/Check") {
  grpc::GenericStub stub(grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  std::string bytes;
  if (!service.empty()) {
    bytes.push_back('\x0a');
    bytes.push_back(static_cast<char>(service.size()));
    bytes += service;
  }
  grpc::Slice slice(bytes);
  grpc::ByteBuffer request(&slice, 1), response;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  std::promise<grpc::Status> done;
  stub.UnaryCall(&context, method, grpc::StubOptions(), &request, &response,
                 [&done](grpc::Status s) { done.set_value(std::move(s)); });
  const grpc::Status status = done.get_future().get();
  if (!status.ok()) return -1 - static_cast<int>(status.error_code());
  std::vector<grpc::Slice> slices;
  response.Dump(&slices);
  std::string out;
  for (const grpc::Slice& s : slices)
    out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  if (out.empty()) return 0;  // UNKNOWN
  return out.size() == 2 && out[0] == '\x08' ? out[1] : -100;
}

TEST_F(TransportSecurityTest, PlaintextHealthPortServesOnlyHealth) {
  const std::string health = "127.0.0.1:" + std::to_string(health_port_);
  EXPECT_EQ(HealthCheck(health, ""), 1);
  EXPECT_EQ(HealthCheck(health, "distill.v1.Teacher"), 1);
  // The Teacher service is not on that port.
  EXPECT_EQ(HealthCheck(health, "", "/distill.v1.Teacher/GetModelInfo"),
            -1 - static_cast<int>(grpc::StatusCode::UNIMPLEMENTED));
  // The TLS port refuses plaintext, health included.
  EXPECT_EQ(HealthCheck(tls_->target(), ""), -1 - static_cast<int>(grpc::StatusCode::UNAVAILABLE));
}

}  // namespace
}  // namespace distillery
