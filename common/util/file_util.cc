#include "common/util/file_util.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace distillery {

absl::Status WriteFileAtomically(const std::string& path,
                                 std::initializer_list<absl::string_view> parts) {
  const std::string temp_path = absl::StrCat(path, ".tmp.", getpid());
  const int fd = open(temp_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) {
    return absl::InternalError(
        absl::StrCat("cannot create ", temp_path, ": ", std::strerror(errno)));
  }
  bool ok = true;
  int error = 0;
  for (absl::string_view part : parts) {
    size_t written = 0;
    while (ok && written < part.size()) {
      const ssize_t n = write(fd, part.data() + written, part.size() - written);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        error = n < 0 ? errno : ENOSPC;
        ok = false;
      } else {
        written += static_cast<size_t>(n);
      }
    }
  }
  if (ok && fsync(fd) != 0) {
    error = errno;
    ok = false;
  }
  if (close(fd) != 0 && ok) {
    error = errno;
    ok = false;
  }
  if (ok && std::rename(temp_path.c_str(), path.c_str()) != 0) {
    error = errno;
    ok = false;
  }
  if (!ok) {
    std::remove(temp_path.c_str());
    return absl::InternalError(absl::StrCat("cannot write ", path, ": ", std::strerror(error)));
  }
  // Make the rename itself durable.
  const std::string::size_type slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash + 1);
  if (const int dir_fd = open(dir.c_str(), O_RDONLY); dir_fd >= 0) {
    fsync(dir_fd);
    close(dir_fd);
  }
  return absl::OkStatus();
}

}  // namespace distillery
