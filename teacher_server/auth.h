// Transport security of the teacher server: TLS (optionally mutual) server
// credentials from PEM files, and the bearer-token check every call of the
// Teacher service goes through.
#ifndef DISTILLERY_TEACHER_SERVER_AUTH_H_
#define DISTILLERY_TEACHER_SERVER_AUTH_H_

#include <atomic>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_context.h"

namespace distillery {

// PEM files of the server's TLS identity. No cert_file: plaintext.
struct ServerTlsFiles {
  std::string cert_file;  // certificate chain
  std::string key_file;   // its private key
  // When set, clients must present a certificate signed by one of these CAs
  // (mutual TLS); the handshake fails for clients without one.
  std::string client_ca_file;

  bool enabled() const { return !cert_file.empty(); }
};

// Insecure credentials when `files` is not enabled; TLS (and mutual TLS with
// a client CA) otherwise. InvalidArgument for an incomplete set of files,
// NotFound / PermissionDenied for an unreadable one.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const ServerTlsFiles& files);

// Checks the `authorization: Bearer <token>` metadata of a call against the
// configured token in constant time. Thread-safe.
class BearerTokenAuth {
 public:
  // `token` must not be empty (see ReadBearerToken).
  explicit BearerTokenAuth(std::string token) : token_(std::move(token)) {}

  // OK, or UNAUTHENTICATED saying whether the token was missing or wrong.
  // Refusals are logged with the peer and the method, never with the token
  // (the first ones each, then one in every 1000).
  absl::Status Check(const grpc::ServerContextBase& context, const char* method) const;

  int64_t refusals() const { return refusals_; }

 private:
  const std::string token_;
  mutable std::atomic<int64_t> refusals_{0};
};

}  // namespace distillery

#endif  // DISTILLERY_TEACHER_SERVER_AUTH_H_
