// Durable file replacement.
#ifndef DISTILLERY_COMMON_UTIL_FILE_UTIL_H_
#define DISTILLERY_COMMON_UTIL_FILE_UTIL_H_

#include <initializer_list>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace distillery {

// Writes the concatenation of `parts` to `path` atomically: to a temporary
// file in the same directory, fsync'ed, renamed over `path`, and the
// directory fsync'ed, so that a crash leaves either the old file or the new
// one, never a torn one. On error the temporary file is removed and the
// status (Internal) names the file and the reason.
absl::Status WriteFileAtomically(const std::string& path,
                                 std::initializer_list<absl::string_view> parts);

}  // namespace distillery

#endif  // DISTILLERY_COMMON_UTIL_FILE_UTIL_H_
