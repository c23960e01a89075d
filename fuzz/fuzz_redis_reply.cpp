// Fuzzes Redis reply handling: hiredis's reader on the bytes, each reply through Reply::copy.
#include <hiredis/hiredis.h>
#include <hiredis/read.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "fuzz/finding.hpp"
#include "job/id.hpp"
#include "redis/reply.hpp"
#include "store/calls.hpp"

using jq::fuzz::finding;
using jq::redis::Reply;
using jq::redis::ReplyError;

namespace {

struct ReaderFree {
  void operator()(redisReader* r) const noexcept { redisReaderFree(r); }
};
struct ReplyFree {
  void operator()(void* r) const noexcept { freeReplyObject(r); }
};

// The reader gets the daemon's own cap on array sizes (redis::cap_reader): without it hiredis
// 0.14 allocates 8 bytes per declared element on reading an array's header
// (regress/redis_reply/huge_array_header asks for 7.5 GB).

// The copy holds what hiredis parsed: same type, bytes, number and shape.
void same(const redisReply& r, const Reply& c) {
  switch (r.type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR: {
      auto want = r.type == REDIS_REPLY_STRING   ? Reply::Type::string
                  : r.type == REDIS_REPLY_STATUS ? Reply::Type::status
                                                 : Reply::Type::error;
      if (c.type != want || c.str != std::string(r.str, r.len))
        finding("copy: string", c.describe());
      break;
    }
    case REDIS_REPLY_INTEGER:
      if (c.type != Reply::Type::integer || c.integer != r.integer) finding("copy: integer");
      break;
    case REDIS_REPLY_ARRAY:
      if (c.type != Reply::Type::array || c.elements.size() != r.elements) finding("copy: array");
      for (std::size_t i = 0; i < r.elements; ++i) same(*r.element[i], c.elements[i]);
      break;
    default:
      if (!c.is_nil()) finding("copy: nil", c.describe());
  }
}

// Every accessor, as the client's callers use them.
void read_all(const Reply& c) {
  if (c.describe().empty()) finding("describe: empty");
  bool threw = false;
  try {
    c.check();
  } catch (const ReplyError& e) {
    threw = true;
    if (std::string_view(e.what()) != c.str.c_str()) finding("check: the error text changed");
  }
  if (threw != c.is_error()) finding("check: threw for a non-error or not for an error");
  try {
    long long v = c.as_int();
    if (c.type == Reply::Type::integer && v != c.integer) finding("as_int: another value");
    if (c.type != Reply::Type::integer && c.type != Reply::Type::string &&
        c.type != Reply::Type::status) {
      finding("as_int: an integer from a reply of another type", c.describe());
    }
  } catch (const ReplyError&) {
    if (c.type == Reply::Type::integer) finding("as_int: refused an integer reply");
  }
  try {
    const std::string& s = c.as_string();
    if (&s != &c.str) finding("as_string: not the reply's string");
  } catch (const ReplyError&) {
    if (c.type == Reply::Type::string || c.type == Reply::Type::status) {
      finding("as_string: refused a string reply");
    }
  }
  for (const auto& e : c.elements) read_all(e);
}

// Every call's reader, on a reply as if its script had sent it: each takes it or refuses it as a
// value (never a crash, never an exception); what fetch hands over stays inside the batch it
// asked for, and no wait comes out negative.
void decode_all(const Reply& c) {
  constexpr std::uint64_t kFirst = 1000, kAsked = 100;
  auto batch = jq::store::decode_fetch(c, kFirst, kAsked);
  if (batch.ok()) {
    for (const auto& f : batch->jobs) {
      if (f.token < kFirst || f.token >= kFirst + kAsked) finding("decode_fetch: token outside");
    }
  }
  const jq::store::Keys k("jobq", "q");
  std::vector<jq::store::ClaimAsk> asks(3);
  auto claimed = jq::store::claim(k, asks).decode(c);
  if (claimed.ok() && claimed->size() != asks.size()) finding("claim: count");
  auto expired = jq::store::expired(k, "w", 10).decode(c);
  if (expired.ok() && expired->next_in && expired->next_in->count() < 0) {
    finding("expired: negative wait");
  }
  auto due = jq::store::due(k, 10).decode(c);
  if (due.ok() && due->next_in && due->next_in->count() < 0) finding("due: negative wait");
  (void)jq::store::recover(k, "w", false, "q", "why", std::chrono::milliseconds(1), {}).decode(c);
  (void)jq::store::control(k).decode(c);
  (void)jq::store::depths(k).decode(c);
  (void)jq::store::read_workers("jobq").decode(c);
  (void)jq::store::redis_time().decode(c);
  (void)jq::store::read_state(k, "x").decode(c);
  (void)jq::store::cancel(k, "q", "x", "request", "", std::chrono::milliseconds(1), "").decode(c);
  (void)jq::store::held_copies(k, "w").decode(c);
  (void)jq::store::repair(k, "w", 1).decode(c);
}

// Feeds `data` in pieces of `step` bytes (0: all at once); returns the replies' renderings.
std::vector<std::string> replies(const std::uint8_t* data, std::size_t size, std::size_t step) {
  std::unique_ptr<redisReader, ReaderFree> reader(redisReaderCreate());
  if (!reader) finding("redisReaderCreate failed");
  jq::redis::cap_reader(reader.get());
  std::vector<std::string> out;
  std::size_t fed = 0;
  for (;;) {
    void* raw = nullptr;
    if (redisReaderGetReply(reader.get(), &raw) != REDIS_OK) {
      out.push_back("protocol error");  // the reader is unusable after that, as a connection is
      break;
    }
    if (!raw) {
      if (fed == size) break;
      std::size_t n = step == 0 ? size - fed : std::min(step, size - fed);
      redisReaderFeed(reader.get(), reinterpret_cast<const char*>(data) + fed, n);
      fed += n;
      continue;
    }
    std::unique_ptr<void, ReplyFree> guard(raw);
    const auto& r = *static_cast<const redisReply*>(raw);
    Reply c = Reply::copy(r);
    same(r, c);
    read_all(c);
    decode_all(c);
    std::string line = c.describe();
    for (const auto& e : c.elements) line += " | " + e.describe();
    out.push_back(std::move(line));
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    auto whole = replies(data, size, 0);
    // The bytes arrive from a socket in any split: the replies must not depend on it.
    std::size_t step = size == 0 ? 1 : 1 + data[0] % 7;
    if (replies(data, size, step) != whole) finding("the replies depend on how the bytes arrive");
  } catch (const std::exception& e) {
    finding("an exception escaped", e.what());
  }
  return 0;
}
