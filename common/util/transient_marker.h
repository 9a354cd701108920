// How the teacher tells a client that a RESOURCE_EXHAUSTED answer is worth
// retrying.
//
// RESOURCE_EXHAUSTED means two different things here: an overload that
// passes (the batcher's queue is full, too many calls in flight, a stream
// that reached --max_stream_seconds and resumes at its next batch), and a
// request that can never succeed (a message over --max_message_mb, refused
// by gRPC itself before the teacher sees it, with gRPC's own message). The
// teacher starts the message of every transient one with this marker; a
// client retries RESOURCE_EXHAUSTED only when the marker is there, so a
// message that is too large fails at once instead of until the give-up time.
#ifndef DISTILLERY_COMMON_UTIL_TRANSIENT_MARKER_H_
#define DISTILLERY_COMMON_UTIL_TRANSIENT_MARKER_H_

#include <string>

#include "absl/strings/match.h"
#include "absl/strings/string_view.h"

namespace distillery {

inline constexpr char kTransientMarker[] = "[transient] ";

// `message` with the marker in front.
inline std::string MarkTransient(absl::string_view message) {
  return std::string(kTransientMarker) + std::string(message);
}

// True when a status message carries the marker.
inline bool IsMarkedTransient(absl::string_view message) {
  return absl::StartsWith(message, kTransientMarker);
}

}  // namespace distillery

#endif  // DISTILLERY_COMMON_UTIL_TRANSIENT_MARKER_H_
