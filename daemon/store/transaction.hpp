// Calls sent as one MULTI/EXEC on a single Redis (jobqctl submit --flow): all of them run, in
// order, with no other client's command between them, or none does when a key watched before
// changed. On a blocking client only; not on a cluster, whose transactions stay in one slot.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "redis/reply.hpp"
#include "redis/sync_client.hpp"
#include "store/call.hpp"

namespace jq::store {

/// The calls of one transaction, in the order Redis is to run them.
class Transaction {
 public:
  /// Adds a call; its reply is Executed::get(the index returned, the same call).
  template <class T>
  std::size_t add(const Call<T>& call) {
    requests_.push_back(call.req);
    return requests_.size() - 1;
  }
  const std::vector<Request>& requests() const noexcept { return requests_; }
  std::size_t size() const noexcept { return requests_.size(); }

 private:
  std::vector<Request> requests_;
};

/// What EXEC answered: `aborted` when a key watched (watch()) had changed, and nothing ran; else
/// each call's reply, in the order added.
struct Executed {
  bool aborted = false;
  std::vector<redis::Reply> replies;

  /// Reply `i` read by the call that made it. Redis does not roll a transaction back: a call
  /// that failed as it ran (a script's error) is an OpError here while the others did their
  /// work.
  template <class T>
  OpResult<T> get(std::size_t i, const Call<T>& call) const {
    if (i >= replies.size()) {
      return OpError{OpError::Kind::shape, "EXEC: no reply " + std::to_string(i) + " of " +
                                               std::to_string(replies.size())};
    }
    if (replies[i].is_error()) return redis::reply_error("in a transaction", replies[i]);
    return call.decode(replies[i]);
  }
};

/// WATCH `keys` on `c` (in commands of at most 1,000 keys): exec() on that connection then runs
/// nothing if one of them is written meanwhile (by anyone: the reads between decide whether to
/// go on; unwatch() when they decide not to).
OpResult<redis::Done> watch(redis::SyncClient& c, const std::vector<std::string>& keys);
OpResult<redis::Done> unwatch(redis::SyncClient& c);

/// Runs `t` as MULTI, its calls, EXEC on `c`, in one write. Each script is loaded first: one not
/// in Redis' cache would fail alone inside, the others running. An OpError when `c` is a cluster
/// client (refused before anything is sent), when Redis refused a call as it was queued
/// (EXECABORT: none ran), or for a lost connection (it may or may not have run).
OpResult<Executed> exec(redis::SyncClient& c, const Transaction& t);

}  // namespace jq::store
