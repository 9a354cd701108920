// Secrets and key material for transport security: read from files or the
// environment (never from flags, which show in `ps`), and compared in
// constant time.
#ifndef DISTILLERY_COMMON_SECURITY_SECRET_H_
#define DISTILLERY_COMMON_SECURITY_SECRET_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace distillery {

// The environment variable a bearer token may come from when no token file
// is given.
inline constexpr char kAuthTokenEnv[] = "DISTILLERY_AUTH_TOKEN";

// The whole content of `path` (certificates, keys). NotFound / PermissionDenied
// / Internal name the file and what it is for (`what`, e.g. "--tls_cert_file").
absl::StatusOr<std::string> ReadFileContents(const std::string& path, absl::string_view what);

// A bearer token from `file` when not empty (trailing newlines and carriage
// returns stripped), else from the environment variable `env_var`, else ""
// (no token configured). A configured but empty token, or one with bytes
// outside printable ASCII (it travels as HTTP/2 header text), is
// InvalidArgument; the token itself is never part of a message.
absl::StatusOr<std::string> ReadBearerToken(const std::string& file,
                                            const char* env_var = kAuthTokenEnv);

// True when `a` and `b` are equal. The time taken depends only on the
// length of `a` (the presented value), never on where they differ nor on
// the length of `b` (the secret).
bool ConstantTimeEquals(absl::string_view a, absl::string_view b);

}  // namespace distillery

#endif  // DISTILLERY_COMMON_SECURITY_SECRET_H_
