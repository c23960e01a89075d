// Reply: a Redis reply as a value type, copied out of hiredis before its callback returns.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

struct redisReply;

namespace jq::redis {

/// The connection failed, closed, or a reply did not come in time. Commands that may or may not
/// have run: callers retry only what is safe to run twice.
class ConnectionError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Redis answered with an error reply (wrong type, script error, NOSCRIPT...).
class ReplyError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct Reply {
  enum class Type { nil, status, error, integer, string, array };
  Type type = Type::nil;
  long long integer = 0;
  std::string str;  // status, error and string replies
  std::vector<Reply> elements;

  static Reply copy(const redisReply& r);

  bool is_nil() const noexcept { return type == Type::nil; }
  bool is_error() const noexcept { return type == Type::error; }
  bool is_array() const noexcept { return type == Type::array; }

  /// Throws ReplyError if this is an error reply; returns *this otherwise.
  const Reply& check() const;
  /// The integer (also from a numeric string); ReplyError otherwise.
  long long as_int() const;
  /// The string or status; ReplyError for other types.
  const std::string& as_string() const;
  /// A one-line rendering for logs and error messages.
  std::string describe() const;
};

}  // namespace jq::redis
