// OpResult: a Redis operation's answer or why there is none, as a value (Dragonfly's OpResult).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>

#include "redis/reply.hpp"

namespace jq::redis {

/// Why a Redis operation gave no usable answer. The hot paths (fetch, settle) branch on `kind`
/// instead of catching: a lost connection is waited out, a foreign value repaired, the rest logged.
struct OpError {
  enum class Kind : std::uint8_t {
    connection,  // Redis away, the connection failed or timed out: it may or may not have run
    reply,       // Redis answered with an error (WRONGTYPE, OOM, a script's own error...)
    shape,       // an answer the caller cannot read (a foreign value, a broken server)
  };
  Kind kind = Kind::reply;
  std::string message;

  bool connection() const noexcept { return kind == Kind::connection; }
  /// A key held a value of another type (garbage written there): repairing it may help.
  bool wrong_type() const noexcept {
    return kind != Kind::connection && message.find("WRONGTYPE") != std::string::npos;
  }
  /// As the exception the throwing API raises (ConnectionError or ReplyError).
  [[noreturn]] void raise() const {
    if (kind == Kind::connection) throw ConnectionError(message);
    throw ReplyError(message);
  }
};

/// A value or an OpError. `value()` raises the error as an exception, for the callers (tools, cold
/// paths) that would rather unwind.
// (An optional and an error rather than a variant: GCC 12 misreads variants moved through
// coroutine frames as maybe-uninitialized.)
template <class T>
class [[nodiscard]] OpResult {
 public:
  OpResult(T v) : v_(std::move(v)) {}  // NOLINT: implicit by design
  OpResult(OpError e) : e_(std::move(e)) {}

  bool ok() const noexcept { return v_.has_value(); }
  explicit operator bool() const noexcept { return ok(); }
  const OpError& error() const noexcept { return e_; }

  T& value() & {
    if (!ok()) e_.raise();
    return *v_;
  }
  T&& value() && {
    if (!ok()) e_.raise();
    return std::move(*v_);
  }
  T& operator*() & noexcept { return *v_; }
  const T& operator*() const& noexcept { return *v_; }
  T* operator->() noexcept { return &*v_; }
  const T* operator->() const noexcept { return &*v_; }

 private:
  std::optional<T> v_;
  OpError e_;
};

/// What an operation with no value of its own gives when it worked.
struct Done {};

/// An error reply as an OpError, the error text prefixed by what was called.
inline OpError reply_error(const std::string& what, const Reply& r) {
  return OpError{OpError::Kind::reply, what + ": " + r.str};
}

/// An answer of an unexpected shape.
inline OpError shape_error(const std::string& what, const Reply& r) {
  return OpError{OpError::Kind::shape, what + ": unexpected reply " + r.describe()};
}

}  // namespace jq::redis
