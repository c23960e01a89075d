// Copying hiredis replies into values, and reading them with errors that say what was expected.
#include "redis/reply.hpp"

#include <hiredis/hiredis.h>
#include <hiredis/read.h>

#include <charconv>
#include <utility>

namespace jq::redis {

namespace {

thread_local long long refused = 0;

// hiredis's own functions, and ours: the same but for createArray. Every reader starts with the
// same default table, so one copy of it serves all.
struct CappedFunctions {
  redisReplyObjectFunctions original{};
  redisReplyObjectFunctions capped{};
  CappedFunctions() {
    if (redisReader* r = redisReaderCreate()) {
      original = *r->fn;
      redisReaderFree(r);
    }
    capped = original;
    capped.createArray = &create_array;
  }
  static void* create_array(const redisReadTask* task, int elements);
};

// Not const: hiredis's reader points at a mutable table (it never writes through it).
CappedFunctions& functions() {
  static CappedFunctions f;
  return f;
}

void* CappedFunctions::create_array(const redisReadTask* task, int elements) {
  if (elements > kMaxReplyElements) {
    refused = elements;
    return nullptr;  // hiredis: out of memory, the reader and its connection fail
  }
  return functions().original.createArray(task, elements);
}

}  // namespace

void cap_reader(redisReader* reader) noexcept {
  auto& f = functions();
  if (reader && reader->fn && f.original.createArray) reader->fn = &f.capped;
}

long long refused_array() noexcept {
  return std::exchange(refused, 0);
}

std::string reader_error(const char* errstr) {
  if (long long n = refused) {
    return "a reply declared an array of " + std::to_string(n) + " elements, over the limit of " +
           std::to_string(kMaxReplyElements) + " (not a Redis server, or a broken one)";
  }
  return errstr ? errstr : "unknown error";
}

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
