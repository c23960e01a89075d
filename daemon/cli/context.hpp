// What every jobqctl command shares: where Redis is (config, URL, environment), the connection,
// errors with their exit codes, and how times and JSON are printed.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "config/config.hpp"
#include "redis/sync_client.hpp"
#include "store/call.hpp"
#include "store/calls.hpp"
#include "store/keys.hpp"

namespace jq::cli {

using json = nlohmann::json;

inline constexpr int kOk = 0, kFailure = 1, kUsage = 2, kConfig = 78, kTimedOut = 124;

/// An error that carries the exit code it maps to.
struct Exit {
  int code;
  std::string message;
};

/// The options every command takes, from the command line or the environment (JOBQD_CONFIG,
/// JOBQD_REDIS_URL), the command line winning.
struct Globals {
  std::string config_path = "/etc/jobqd/jobqd.yaml";
  bool config_given = false;  // -c or JOBQD_CONFIG
  std::string redis_url;      // --redis or JOBQD_REDIS_URL
  bool json_out = false;
};

/// Where the commands go: the Redis, its key prefix, and the config when there is one.
struct Target {
  redis::Url url;
  std::string prefix = "jobq";
  std::optional<config::Config> cfg;
  bool embedded = false;  // the config's embedded Redis: it runs only while jobqd does
  std::string hint;       // what to say when it cannot be reached
  // Each queue's shard count once read (shard_count): one run sees one layout, however many
  // commands it sends. Filled through a const Target: a cache, not a setting.
  mutable std::map<std::string, std::size_t> shard_counts;
};

Target resolve(const Globals& g);

/// A connection to the target, or Exit saying where it tried and what to check.
redis::SyncClient connect(const Target& t);

/// The value of a call, or Exit (1) with its error.
template <class T>
T must(store::OpResult<T> r) {
  if (!r.ok()) throw Exit{kFailure, r.error().message};
  return std::move(*r);
}

/// Runs a call on `c`: its value, or Exit.
template <class T>
T call(redis::SyncClient& c, const store::Call<T>& call) {
  return must(store::run(c, call));
}

/// Sends `calls` in one write and reads their replies in order (one round trip however many
/// shards they go to). A script among them must have been loaded (SyncClient::load) first:
/// pipelined, it goes by EVALSHA alone.
template <class T>
std::vector<store::OpResult<T>> pipelined(redis::SyncClient& c,
                                          const std::vector<store::Call<T>>& calls) {
  for (const auto& x : calls) store::append(c, x.req);
  std::vector<store::OpResult<T>> out;
  out.reserve(calls.size());
  // Every reply is read, an error or not: the connection stays in step.
  for (const auto& x : calls) {
    auto r = c.read();
    out.push_back(r.ok() ? x.decode(std::move(*r)) : store::OpResult<T>(r.error()));
  }
  return out;
}

/// The values of `calls` (calls of one kind, one per shard), pipelined; or Exit with the first
/// error. A single call runs as call() does: nothing to load.
template <class T>
std::vector<T> call_all(redis::SyncClient& c, const std::vector<store::Call<T>>& calls) {
  std::vector<T> out;
  if (calls.size() == 1) {
    out.push_back(call(c, calls.front()));
    return out;
  }
  if (!calls.empty() && calls.front().req.script) must(c.load(*calls.front().req.script));
  for (auto& r : pipelined(c, calls)) out.push_back(must(std::move(r)));
  return out;
}

/// `make(k)` for the keys `k` of each shard, run as call_all: the values in shard order.
template <class F>
auto call_each(redis::SyncClient& c, const std::vector<store::Keys>& shards, F make) {
  std::vector<decltype(make(shards.front()))> calls;
  calls.reserve(shards.size());
  for (const auto& k : shards) calls.push_back(make(k));
  return call_all(c, calls);
}

/// The queue's own keys (its shard 0; the events channel and the shard count of every shard).
store::Keys keys(const Target& t, const std::string& queue);
/// How many shards `queue` is spread over: what its daemons wrote to Redis (its `shards` key),
/// else the config's `queues.<queue>.shards`, else 1. Read once per queue and run; garbage there
/// is an Exit (1) naming the key.
std::size_t shard_count(redis::SyncClient& c, const Target& t, const std::string& queue);
/// The keys of each of the queue's shards, shard 0 (the queue's own tag) first.
std::vector<store::Keys> shard_keys(redis::SyncClient& c, const Target& t,
                                    const std::string& queue);
/// The keys of job `id`'s home shard: where its state, its claim and a cancel request live.
store::Keys home_keys(redis::SyncClient& c, const Target& t, const std::string& queue,
                      const std::string& id);
/// The shards in the order a job of `home` is looked for: its home, then the others from shard 0
/// on (a job pushed without going through jobqctl lands in shard 0 before it is sent home).
std::vector<std::size_t> search_order(std::size_t home, std::size_t shards);
/// An entry of a sorted set each shard keeps (delayed, dead): its member, its score, its shard.
struct Scored {
  std::string member, score;
  std::size_t shard = 0;
};
/// A slice of such a set by rank: store::delayed_slice or store::dead_slice.
using SliceCall = store::Call<std::vector<std::pair<std::string, std::string>>> (*)(
    const store::Keys&, long long, long long);
/// The `limit` lowest-scored entries over every shard's set, lowest first (for one shard, as
/// Redis orders them).
std::vector<Scored> lowest(redis::SyncClient& c, const std::vector<store::Keys>& shards,
                           SliceCall slice, std::size_t limit);
/// The sum of a count every shard keeps (store::pending_length, delayed_count, dead_count).
long long summed(redis::SyncClient& c, const std::vector<store::Keys>& shards,
                 store::Call<long long> (*count)(const store::Keys&));

/// A queue name from the command line, or Exit (2) saying what names may be.
const std::string& queue_arg(const std::string& queue);
/// A job id from the command line, or Exit (2).
const std::string& id_arg(const std::string& id, const char* what = "job id");
config::Millis duration_arg(const std::string& s, const char* what);

std::int64_t now_ms();
/// JSON text that never fails on a job's bytes (invalid UTF-8 is replaced).
std::string dump(const json& j);
/// `2026-12-02 06:09:12Z (3s ago)`; the text itself when it is not a time.
std::string when(const std::string& ms, std::int64_t now);
/// `3s ago`, `in 5m`, `now`.
std::string relative(std::int64_t ms, std::int64_t now);
std::optional<long long> whole_number(const std::string& s);
/// A text as JSON when it is JSON (a result, a payload), else as a string.
json json_or_text(const std::string& text);
/// A job's state as JSON data: times and attempts as numbers (null when not set), a result that
/// is JSON as JSON, the rest as text.
json state_json(const std::string& id, const std::map<std::string, std::string>& state);

/// Lines of a table: each column as wide as its widest cell (the last one is left as is).
class Table {
 public:
  explicit Table(std::vector<std::string> head) { rows_.push_back(std::move(head)); }
  void add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  std::size_t size() const noexcept { return rows_.size() - 1; }
  /// `right`: the columns (by index) aligned to the right (numbers).
  void print(std::ostream& o, const std::vector<std::size_t>& right = {}) const;

 private:
  std::vector<std::vector<std::string>> rows_;
};

}  // namespace jq::cli

namespace jq::cli {

/// Every queue jobqctl knows of: the config's, then those daemons have served (the registry).
/// A registry that cannot be read is an Exit: a listing must not look empty when it is not.
std::vector<std::string> known_queues(redis::SyncClient& c, const Target& t);

}  // namespace jq::cli
