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
#include "store/admin.hpp"
#include "store/call.hpp"
#include "store/calls.hpp"
#include "store/keys.hpp"
#include "store/views.hpp"

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

/// The queue's own keys (its shard 0; the events channel and the shard count of every shard).
store::Keys keys(const Target& t, const std::string& queue);
/// Where the target's queues are, for store::Admin: its prefix, and its config's queue names,
/// shard counts and retain.failed; the admin's warnings go to stderr.
store::Layout layout(const Target& t);
/// The operator's layer on `c` for the target (`c` must outlive it).
store::Admin admin_for(redis::SyncClient& c, const Target& t);
/// The exit an operator's error maps to: a request that cannot be (bad_input) is a usage error
/// (2), the rest a failure (1); the message as it is.
Exit exit_of(const store::AdminError& e);

/// A queue name from the command line, or Exit (2) saying what names may be.
const std::string& queue_arg(const std::string& queue);
/// A job id from the command line, or Exit (2).
const std::string& id_arg(const std::string& id, const char* what = "job id");
config::Millis duration_arg(const std::string& s, const char* what);

std::int64_t now_ms();
/// JSON text that never fails on a job's bytes (invalid UTF-8 is replaced).
std::string dump(const json& j);
/// `a, b, c`: names as a sentence lists them.
std::string joined(const std::vector<std::string>& names);
/// `2026-12-02 06:09:12Z`: a unix ms time as people read it (UTC, as in jobqd's log).
std::string clock_text(std::int64_t ms);
/// `2026-12-02 06:09:12Z (3s ago)`; the text itself when it is not a time.
std::string when(const std::string& ms, std::int64_t now);
/// `3s ago`, `in 5m`, `now`.
std::string relative(std::int64_t ms, std::int64_t now);

/// The JSON shapes jobqctl and the API share (store/views.hpp).
using store::json_or_text;
using store::page_json;
using store::state_json;
using store::whole_number;

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
