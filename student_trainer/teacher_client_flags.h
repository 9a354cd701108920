// The command-line flags that say how to reach a teacher (its address, TLS,
// mutual TLS, bearer token), shared by every program that connects to one:
// `student_trainer distill` and bench/load_client. Linking this library
// defines the flags --teacher, --tls_ca_file, --tls_cert_file,
// --tls_key_file, --tls_server_name and --auth_token_file.
#ifndef DISTILLERY_STUDENT_TRAINER_TEACHER_CLIENT_FLAGS_H_
#define DISTILLERY_STUDENT_TRAINER_TEACHER_CLIENT_FLAGS_H_

#include "absl/status/statusor.h"
#include "student_trainer/teacher_client.h"

namespace distillery {

// A TeacherClientConfig whose target, TLS files and bearer token come from
// the flags above (the token read from --auth_token_file, else
// $DISTILLERY_AUTH_TOKEN, by ReadBearerToken); every other field keeps its
// default. InvalidArgument / NotFound when the token cannot be read.
absl::StatusOr<TeacherClientConfig> TeacherClientConfigFromFlags();

}  // namespace distillery

#endif  // DISTILLERY_STUDENT_TRAINER_TEACHER_CLIENT_FLAGS_H_
