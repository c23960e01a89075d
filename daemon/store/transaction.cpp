// MULTI/EXEC on a blocking client: the calls queued in one write, the replies read in step.
#include "store/transaction.hpp"

#include <algorithm>
#include <optional>
#include <set>

namespace jq::store {

OpResult<redis::Done> watch(redis::SyncClient& c, const std::vector<std::string>& keys) {
  // Commands of 1,000 keys: a flow of 100,000 jobs watches that many state keys.
  constexpr std::size_t kPerCommand = 1000;
  for (std::size_t from = 0; from < keys.size(); from += kPerCommand) {
    std::vector<std::string> argv{"WATCH"};
    const std::size_t to = std::min(keys.size(), from + kPerCommand);
    argv.insert(argv.end(), keys.begin() + static_cast<std::ptrdiff_t>(from),
                keys.begin() + static_cast<std::ptrdiff_t>(to));
    auto r = c.call(argv);
    if (!r.ok()) return r.error();
  }
  return redis::Done{};
}

OpResult<redis::Done> unwatch(redis::SyncClient& c) {
  auto r = c.command("UNWATCH");
  if (!r.ok()) return r.error();
  return redis::Done{};
}

OpResult<Executed> exec(redis::SyncClient& c, const Transaction& t) {
  if (c.url().kind == redis::Url::Kind::cluster) {
    return OpError{OpError::Kind::reply,
                   "a transaction (MULTI/EXEC) needs a single Redis: a cluster runs one only "
                   "within one slot"};
  }
  std::set<const redis::Script*> scripts;
  for (const auto& r : t.requests()) {
    if (r.script && scripts.insert(r.script).second) {
      if (auto loaded = c.load(*r.script); !loaded.ok()) return loaded.error();
    }
  }
  // Every reply is read, whatever came before: the connection stays in step. A call refused as
  // it was queued makes EXEC answer EXECABORT; the refusal is the error returned.
  std::optional<OpError> failed;
  auto read_one = [&] {
    auto r = c.read();
    if (!r.ok() && !failed) failed = r.error();
  };
  // The calls go in writes of kPerWrite, each one's QUEUED replies read before the next (the
  // transaction stays open between them): one write of tens of thousands of commands failed on
  // the client's connection ("connection lost: Success") where writes of a thousand do not.
  constexpr std::size_t kPerWrite = 1000;
  c.append(std::vector<std::string>{"MULTI"});
  read_one();
  const auto& requests = t.requests();
  for (std::size_t from = 0; from < requests.size(); from += kPerWrite) {
    const std::size_t to = std::min(requests.size(), from + kPerWrite);
    for (std::size_t i = from; i < to; ++i) append(c, requests[i]);
    for (std::size_t i = from; i < to; ++i) read_one();
  }
  c.append(std::vector<std::string>{"EXEC"});
  auto done = c.read();
  if (failed) return *failed;
  if (!done.ok()) return done.error();
  Executed out;
  if (done->is_nil()) {
    out.aborted = true;
    return out;
  }
  if (!done->is_array() || done->elements.size() != t.size()) {
    return redis::shape_error("EXEC", *done);
  }
  out.replies = std::move(done->elements);
  return out;
}

}  // namespace jq::store
