// QAT_RETURN_IF_ERROR(expr): returns from the enclosing function when `expr`, an absl::Status,
// is an error (the function must return absl::Status or absl::StatusOr<T>).
#pragma once

#include "absl/status/status.h"

#ifndef QAT_RETURN_IF_ERROR
#define QAT_RETURN_IF_ERROR(expr)                       \
  do {                                                  \
    if (absl::Status status_ = (expr); !status_.ok()) { \
      return status_;                                   \
    }                                                   \
  } while (false)
#endif
