#include "teacher_server/auth.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/security/secret.h"
#include "grpcpp/security/server_credentials.h"
#include "spdlog/spdlog.h"

namespace distillery {

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const ServerTlsFiles& files) {
  if (!files.enabled()) {
    if (!files.key_file.empty() || !files.client_ca_file.empty()) {
      return absl::InvalidArgumentError(
          "--tls_key_file and --tls_client_ca_file need --tls_cert_file");
    }
    return grpc::InsecureServerCredentials();
  }
  if (files.key_file.empty()) {
    return absl::InvalidArgumentError("--tls_cert_file needs --tls_key_file");
  }
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  auto cert = ReadFileContents(files.cert_file, "--tls_cert_file");
  if (!cert.ok()) return cert.status();
  auto key = ReadFileContents(files.key_file, "--tls_key_file");
  if (!key.ok()) return key.status();
  pair.cert_chain = std::move(*cert);
  pair.private_key = std::move(*key);
  grpc::SslServerCredentialsOptions options(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  if (!files.client_ca_file.empty()) {
    auto ca = ReadFileContents(files.client_ca_file, "--tls_client_ca_file");
    if (!ca.ok()) return ca.status();
    options.pem_root_certs = std::move(*ca);
    options.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  options.pem_key_cert_pairs.push_back(std::move(pair));
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::SslServerCredentials(options);
  if (credentials == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("cannot make TLS credentials from ",
                                                   files.cert_file, " and ", files.key_file));
  }
  return credentials;
}

absl::Status BearerTokenAuth::Check(const grpc::ServerContextBase& context,
                                    const char* method) const {
  constexpr absl::string_view kPrefix = "Bearer ";
  const auto& metadata = context.client_metadata();
  const auto it = metadata.find("authorization");
  const char* problem = nullptr;
  if (it == metadata.end()) {
    problem = "no bearer token";
  } else {
    const absl::string_view value(it->second.data(), it->second.size());
    if (!absl::StartsWith(value, kPrefix) ||
        !ConstantTimeEquals(value.substr(kPrefix.size()), token_)) {
      problem = "a wrong bearer token";
    }
  }
  if (problem == nullptr) return absl::OkStatus();
  const int64_t refusals = ++refusals_;
  if (refusals <= 20 || refusals % 1000 == 0) {
    spdlog::warn("refused {} from {}: {} ({} refusals so far)", method, context.peer(), problem,
                 refusals);
  }
  return absl::UnauthenticatedError(
      absl::StrCat("the teacher refused the call: ", problem,
                   " (send \"authorization: Bearer <token>\"; see --auth_token_file)"));
}

}  // namespace distillery
