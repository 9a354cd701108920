// Small helpers for absl::Status plumbing. abseil 20220623 (Debian 12) ships
// no status macros, so these two are defined here.
#ifndef DISTILLERY_COMMON_UTIL_STATUS_MACROS_H_
#define DISTILLERY_COMMON_UTIL_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define DISTILLERY_CONCAT_INNER_(a, b) a##b
#define DISTILLERY_CONCAT_(a, b) DISTILLERY_CONCAT_INNER_(a, b)

// Evaluates `expr` (an absl::Status) and returns it from the calling function
// if it is not OK.
#define RETURN_IF_ERROR(expr)                                \
  do {                                                       \
    const ::absl::Status distillery_status_ = (expr);        \
    if (!distillery_status_.ok()) return distillery_status_; \
  } while (0)

// Evaluates `rexpr` (an absl::StatusOr<T>); on error returns its status from
// the calling function, otherwise moves the value into `lhs`, which may be a
// declaration (`auto x`) or an existing variable.
#define ASSIGN_OR_RETURN(lhs, rexpr) \
  ASSIGN_OR_RETURN_IMPL_(DISTILLERY_CONCAT_(distillery_statusor_, __LINE__), lhs, rexpr)

#define ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                           \
  if (!statusor.ok()) return statusor.status();      \
  lhs = std::move(statusor).value()

#endif  // DISTILLERY_COMMON_UTIL_STATUS_MACROS_H_
