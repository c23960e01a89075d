// Copying hiredis replies into values, and reading them with errors that say what was expected.
#include "redis/reply.hpp"

#include <hiredis/hiredis.h>

#include <charconv>

namespace jq::redis {

Reply Reply::copy(const redisReply& r) {
  Reply out;
  switch (r.type) {
    case REDIS_REPLY_STRING:
      out.type = Type::string;
      out.str.assign(r.str, r.len);
      break;
    case REDIS_REPLY_STATUS:
      out.type = Type::status;
      out.str.assign(r.str, r.len);
      break;
    case REDIS_REPLY_ERROR:
      out.type = Type::error;
      out.str.assign(r.str, r.len);
      break;
    case REDIS_REPLY_INTEGER:
      out.type = Type::integer;
      out.integer = r.integer;
      break;
    case REDIS_REPLY_ARRAY:
      out.type = Type::array;
      out.elements.reserve(r.elements);
      for (std::size_t i = 0; i < r.elements; ++i) out.elements.push_back(copy(*r.element[i]));
      break;
    default:
      out.type = Type::nil;
      break;
  }
  return out;
}

const Reply& Reply::check() const {
  if (type == Type::error) throw ReplyError(str);
  return *this;
}

long long Reply::as_int() const {
  check();
  if (type == Type::integer) return integer;
  if (type == Type::string || type == Type::status) {
    long long v = 0;
    auto [end, ec] = std::from_chars(str.data(), str.data() + str.size(), v);
    if (ec == std::errc() && end == str.data() + str.size()) return v;
  }
  throw ReplyError("expected an integer reply, got " + describe());
}

const std::string& Reply::as_string() const {
  check();
  if (type == Type::string || type == Type::status) return str;
  throw ReplyError("expected a string reply, got " + describe());
}

std::string Reply::describe() const {
  switch (type) {
    case Type::nil:
      return "nil";
    case Type::status:
      return "status " + str;
    case Type::error:
      return "error " + str;
    case Type::integer:
      return "integer " + std::to_string(integer);
    case Type::string:
      return "string '" + (str.size() > 60 ? str.substr(0, 60) + "..." : str) + "'";
    case Type::array:
      return "array of " + std::to_string(elements.size());
  }
  return "?";
}

}  // namespace jq::redis
