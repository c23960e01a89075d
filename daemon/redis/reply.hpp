// Reply: a Redis reply as a value type, copied out of hiredis' reader as soon as it is parsed.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

struct redisReply;
struct redisReader;

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

/// The most elements one array of a reply may declare: far above any reply jobqd asks for (a
/// fetch is at most a few thousand), far below what would hurt.
inline constexpr long long kMaxReplyElements = 1 << 20;

/// hiredis 0.14 allocates 8 bytes per element as soon as it reads an array's header, whatever
/// the count, and has no limit of its own: whatever answers in a server's place could make this
/// process allocate gigabytes with one `*937203708` line (fuzz/README.md). Installs object
/// functions on `reader` that refuse arrays over kMaxReplyElements; hiredis then fails the
/// connection as out of memory, and refused_array() tells why.
void cap_reader(redisReader* reader) noexcept;
/// The element count of the last array cap_reader's functions refused on this thread, and
/// forgets it; 0 if none.
long long refused_array() noexcept;
/// What to say of a reader that failed with hiredis's `errstr`: the refused array if that was the
/// cause, else errstr itself. Does not forget the refusal (the caller calls refused_array() once
/// it has said so).
std::string reader_error(const char* errstr);

}  // namespace jq::redis
