#include "common/security/secret.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>

#include "absl/strings/str_cat.h"

namespace distillery {

absl::StatusOr<std::string> ReadFileContents(const std::string& path, absl::string_view what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int error = errno;
    const std::string message = absl::StrCat(what, ": cannot read ", path, ": ", strerror(error));
    if (error == ENOENT) return absl::NotFoundError(message);
    if (error == EACCES) return absl::PermissionDeniedError(message);
    return absl::InternalError(message);
  }
  std::string contents((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return absl::InternalError(absl::StrCat(what, ": error reading ", path));
  return contents;
}

absl::StatusOr<std::string> ReadBearerToken(const std::string& file, const char* env_var) {
  std::string token;
  std::string source;
  if (!file.empty()) {
    auto contents = ReadFileContents(file, "--auth_token_file");
    if (!contents.ok()) return contents.status();
    token = std::move(*contents);
    source = absl::StrCat("the token file ", file);
  } else if (const char* env = std::getenv(env_var); env != nullptr) {
    token = env;
    source = absl::StrCat("$", env_var);
  } else {
    return std::string();
  }
  while (!token.empty() && (token.back() == '\n' || token.back() == '\r')) token.pop_back();
  if (token.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(source, " holds an empty token"));
  }
  for (unsigned char c : token) {
    if (c < 0x21 || c > 0x7e) {
      return absl::InvalidArgumentError(absl::StrCat(
          source, " holds a byte that is not printable ASCII (a space or control character?)"));
    }
  }
  return token;
}

bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  // Every byte of `a` is compared with the byte of `b` at the same position
  // modulo b's length, and the length difference is folded in: one pass over
  // `a`, whatever `b` is.
  size_t difference = a.size() ^ b.size();
  if (b.empty()) return a.empty();
  for (size_t i = 0; i < a.size(); ++i) {
    difference |= static_cast<unsigned char>(a[i]) ^ static_cast<unsigned char>(b[i % b.size()]);
  }
  return difference == 0;
}

}  // namespace distillery
