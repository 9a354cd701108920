#include "student_trainer/teacher_client_flags.h"

#include <string>

#include "absl/flags/flag.h"
#include "common/security/secret.h"
#include "common/util/status_macros.h"

ABSL_FLAG(std::string, teacher, "127.0.0.1:50051",
          "Teacher replicas \"host:port,host:port\" or a gRPC target such as "
          "dns:///teacher:50051 (balanced round_robin)");
ABSL_FLAG(std::string, tls_ca_file, "",
          "PEM CA certificates that signed the teacher's certificate: connect with TLS "
          "(default: plaintext)");
ABSL_FLAG(std::string, tls_cert_file, "",
          "PEM client certificate chain, for a teacher with mutual TLS");
ABSL_FLAG(std::string, tls_key_file, "", "PEM private key of --tls_cert_file");
ABSL_FLAG(std::string, tls_server_name, "",
          "The name the teacher's certificate must carry, when not the host in --teacher");
ABSL_FLAG(std::string, auth_token_file, "",
          "File holding the bearer token sent with every call (needs TLS); without it, "
          "$DISTILLERY_AUTH_TOKEN if set. Never pass a token on the command line");

namespace distillery {

absl::StatusOr<TeacherClientConfig> TeacherClientConfigFromFlags() {
  TeacherClientConfig config;
  config.target = absl::GetFlag(FLAGS_teacher);
  config.tls_ca_file = absl::GetFlag(FLAGS_tls_ca_file);
  config.tls_cert_file = absl::GetFlag(FLAGS_tls_cert_file);
  config.tls_key_file = absl::GetFlag(FLAGS_tls_key_file);
  config.tls_server_name = absl::GetFlag(FLAGS_tls_server_name);
  ASSIGN_OR_RETURN(config.auth_token, ReadBearerToken(absl::GetFlag(FLAGS_auth_token_file)));
  return config;
}

}  // namespace distillery
