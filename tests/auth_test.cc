// Secrets (common/secret.h) and the server's TLS credentials
// (teacher_server/auth.h): where tokens come from, how they compare, and
// which incomplete configurations are refused.
#include "teacher_server/auth.h"

#include <cstdlib>
#include <fstream>

#include "common/security/secret.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace distillery {
namespace {

std::string WriteTemp(const std::string& name, const std::string& contents) {
  const std::string path = UniqueTempPath(name);
  std::ofstream(path, std::ios::binary) << contents;
  return path;
}

class BearerTokenTest : public testing::Test {
 protected:
  void SetUp() override { unsetenv(kEnv); }
  void TearDown() override { unsetenv(kEnv); }
  static constexpr char kEnv[] = "DISTILLERY_AUTH_TOKEN_FOR_TEST";
};

TEST_F(BearerTokenTest, NoFileNoEnvironmentMeansNoToken) {
  auto token = ReadBearerToken("", kEnv);
  ASSERT_TRUE(token.ok()) << token.status();
  EXPECT_EQ(*token, "");
}

TEST_F(BearerTokenTest, FileWinsOverEnvironmentAndLoosesItsTrailingNewlines) {
  setenv(kEnv, "from-env", 1);
  auto token = ReadBearerToken(WriteTemp("token", "from-file\r\n\n"), kEnv);
  ASSERT_TRUE(token.ok()) << token.status();
  EXPECT_EQ(*token, "from-file");
  auto from_env = ReadBearerToken("", kEnv);
  ASSERT_TRUE(from_env.ok());
  EXPECT_EQ(*from_env, "from-env");
}

TEST_F(BearerTokenTest, EmptyOrUnprintableTokensAndMissingFilesAreRefused) {
  EXPECT_EQ(ReadBearerToken(WriteTemp("empty", "\n"), kEnv).status().code(),
            absl::StatusCode::kInvalidArgument);
  setenv(kEnv, "", 1);
  EXPECT_EQ(ReadBearerToken("", kEnv).status().code(), absl::StatusCode::kInvalidArgument);
  const absl::Status spaced = ReadBearerToken(WriteTemp("spaced", "abc def-secret"), kEnv).status();
  EXPECT_EQ(spaced.code(), absl::StatusCode::kInvalidArgument);
  // The message never repeats the token.
  EXPECT_EQ(spaced.message().find("def-secret"), absl::string_view::npos) << spaced;
  EXPECT_EQ(ReadBearerToken(UniqueTempPath("no_such_token"), kEnv).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(ConstantTimeEqualsTest, EqualOnlyWhenBytesAndLengthsAgree) {
  EXPECT_TRUE(ConstantTimeEquals("secret", "secret"));
  EXPECT_FALSE(ConstantTimeEquals("secreT", "secret"));
  EXPECT_FALSE(ConstantTimeEquals("secret", "secrets"));
  EXPECT_FALSE(ConstantTimeEquals("secrets", "secret"));
  EXPECT_FALSE(ConstantTimeEquals("secretsecret", "secret"));  // a repeat is not a match
  EXPECT_FALSE(ConstantTimeEquals("", "secret"));
  EXPECT_FALSE(ConstantTimeEquals("x", ""));
  EXPECT_TRUE(ConstantTimeEquals("", ""));
}

TEST(ServerCredentialsTest, PlaintextTlsAndIncompleteConfigurations) {
  auto plaintext = MakeServerCredentials({});
  ASSERT_TRUE(plaintext.ok());
  EXPECT_NE(*plaintext, nullptr);

  ServerTlsFiles no_key;
  no_key.cert_file = WriteTemp("cert.pem", "not really a certificate");
  EXPECT_EQ(MakeServerCredentials(no_key).status().code(), absl::StatusCode::kInvalidArgument);

  ServerTlsFiles ca_only;
  ca_only.client_ca_file = no_key.cert_file;
  EXPECT_EQ(MakeServerCredentials(ca_only).status().code(), absl::StatusCode::kInvalidArgument);

  ServerTlsFiles missing = no_key;
  missing.key_file = UniqueTempPath("no_such_key.pem");
  const absl::Status status = MakeServerCredentials(missing).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(status.message().find("--tls_key_file"), absl::string_view::npos) << status;
}

}  // namespace
}  // namespace distillery
