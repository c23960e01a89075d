// The real jobqd binary under test: a config written to a temp dir, started, stopped, killed.
#pragma once

#include <signal.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "tests/support/paths.hpp"
#include "tests/support/process.hpp"
#include "tests/support/redis_server.hpp"

namespace jq::test {

/// A jobqd process. `yaml` holds the handlers and queues sections; daemon and redis sections
/// are added (state in a temp dir, the given Redis, a short lease so recovery tests are quick).
class Daemon {
 public:
  Daemon(const RedisServer& redis, const std::string& yaml, const std::string& daemon_extra = "",
         const std::string& redis_extra = "")
      : Daemon(redis.url(), yaml, daemon_extra, redis_extra) {}
  Daemon(const std::string& redis_url, const std::string& yaml,
         const std::string& daemon_extra = "", const std::string& redis_extra = "")
      : redis_url_(redis_url) {
    config_ = (dir_.path() / "jobqd.yaml").string();
    log_ = (dir_.path() / "jobqd.log").string();
    write_config(yaml, daemon_extra, redis_extra);
  }
  /// Writes the config file anew (the same test defaults around it): for reload tests.
  void write_config(const std::string& yaml, const std::string& daemon_extra = "",
                    const std::string& redis_extra = "") {
    // Written beside, then renamed in: a reload never reads half a file.
    const std::string tmp = config_ + ".new";
    {
      std::ofstream out(tmp);
      // The test defaults, unless daemon_extra sets the same key (a key twice is an error).
      out << "daemon:\n";
      const std::pair<const char*, std::string> defaults[] = {
          {"state_dir", (dir_.path() / "state").string()},
          {"lease", "1s"},
          {"shutdown_grace", "5s"},
          {"log_level", "debug"}};
      for (const auto& [key, value] : defaults) {
        if (daemon_extra.find(std::string("  ") + key + ":") == std::string::npos) {
          out << "  " << key << ": " << value << "\n";
        }
      }
      out << daemon_extra << "redis:\n  url: " << redis_url_ << "\n  command_timeout: 2s\n"
          << redis_extra << yaml;
      // No HTTP unless the test asks: daemons of one test would share the default port.
      if (yaml.rfind("http:", 0) != 0 && yaml.find("\nhttp:") == std::string::npos) {
        out << "http: {listen: off}\n";
      }
    }
    std::rename(tmp.c_str(), config_.c_str());
  }
  /// SIGHUP, then waits until the log says this reload was applied or refused. True if applied.
  bool reload(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    const auto count = [&](const std::string& what) {
      const std::string l = log();
      std::size_t n = 0;
      for (auto at = l.find(what); at != std::string::npos; at = l.find(what, at + 1)) ++n;
      return n;
    };
    const char* applied = "reload done:";
    const char* refused = "reload refused: the running config stays";
    const std::size_t done_before = count(applied), refused_before = count(refused);
    proc_.signal(SIGHUP);
    eventually([&] { return count(applied) + count(refused) > done_before + refused_before; },
               timeout);
    return count(applied) > done_before;
  }
  ~Daemon() { kill9(); }

  void start() { proc_ = Child({(build_dir() / "jobqd").string(), "-c", config_}, log_); }
  /// Starts with more in its environment (NAME=value each), e.g. a preloaded library.
  void start_with_env(const std::vector<std::string>& env) {
    proc_ = Child({(build_dir() / "jobqd").string(), "-c", config_}, log_, env);
  }
  /// Starts and waits until this daemon (not another one on the same Redis) holds a lease on
  /// `queue`: it is fetching. Worker ids are `<name>.<pid>.<suffix>`.
  void start_and_wait(const RedisServer& redis, const std::string& queue = "q") {
    start();
    auto r = redis.client();
    const std::string mine = "." + std::to_string(pid()) + ".";
    auto holds_lease = [&] {
      for (auto& m : r.cmd({"ZRANGE", "jobq:{" + queue + "}:leases", "0", "-1"}).elements) {
        if (m.str.find(mine) != std::string::npos) return true;
      }
      return false;
    };
    bool up = eventually([&] { return holds_lease() || !running(); }, std::chrono::seconds(10));
    if (!up || !running()) throw std::runtime_error("jobqd did not come up:\n" + log());
  }
  bool running() { return proc_.running(); }
  void signal(int sig) { proc_.signal(sig); }
  /// SIGTERM; returns the exit code (or -1 if it did not exit within `timeout`).
  int stop(std::chrono::milliseconds timeout = std::chrono::seconds(15)) {
    proc_.signal(SIGTERM);
    if (proc_.wait(timeout) < 0) return -1;
    return proc_.exit_code();
  }
  void kill9() {
    proc_.signal(SIGKILL);
    proc_.wait(std::chrono::seconds(5));
  }
  int wait_exit(std::chrono::milliseconds timeout) {
    if (proc_.wait(timeout) < 0) return -1;
    return proc_.exit_code();
  }
  pid_t pid() const { return proc_.pid(); }
  std::string log() const {
    std::ifstream in(log_);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  const std::string& config_path() const { return config_; }
  const TempDir& dir() const { return dir_; }

 private:
  TempDir dir_;
  std::string redis_url_;
  std::string config_;
  std::string log_;
  Child proc_;
};

/// Queue `q` running the echo built-in, four at a time: the handlers and queues of a daemon
/// test about something else (a transport, a failover).
inline const char* const kEchoQueue = R"(
handlers:
  echo: {type: builtin, name: echo}
queues:
  q: {handler: echo, concurrency: 4}
)";

struct Ran {
  int code;
  std::string out;
};

/// Runs a program; returns its exit code (-1 if it ran past 30 s) and what it printed (stdout
/// and stderr).
inline Ran run_program(const std::vector<std::string>& argv) {
  TempDir dir;
  auto log = (dir.path() / "out").string();
  Child c(argv, log);
  int st = c.wait(std::chrono::seconds(30));
  std::ifstream in(log);
  std::stringstream ss;
  ss << in.rdbuf();
  return {st < 0 ? -1 : c.exit_code(), ss.str()};
}

/// Runs jobqctl with `args` against `redis`.
inline Ran jobqctl(const RedisServer& redis, std::vector<std::string> args) {
  std::vector<std::string> argv{(build_dir() / "jobqctl").string(), "--redis", redis.url()};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_program(argv);
}

/// Kills the daemons -9 in turn and starts each again, at most `most` times while `done()` is
/// false: each kill once the one before serves again (`serving`) and a second later (polled),
/// so that a slow machine slows the kills, not the jobs.
struct Kills {
  int kills = 0;
  int not_serving = 0;  // restarted daemons that did not serve again
};
inline Kills kill_in_turn(std::vector<std::unique_ptr<Daemon>>& daemons,
                          const std::function<bool()>& done,
                          const std::function<bool(Daemon&)>& serving, int most = 6) {
  Kills k;
  while (!done() && k.kills < most) {
    auto& victim = daemons[static_cast<std::size_t>(k.kills) % daemons.size()];
    victim->kill9();
    ++k.kills;
    victim->start();
    if (!serving(*victim)) ++k.not_serving;
    eventually(done, std::chrono::seconds(1));
  }
  return k;
}

/// `<prefix>0` ... `<prefix><n-1>`.
inline std::vector<std::string> ids(const std::string& prefix, int n) {
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) out.push_back(prefix + std::to_string(i));
  return out;
}

/// A job per id, each with `payload` (JSON text).
inline std::vector<std::string> jobs_for(const std::vector<std::string>& ids,
                                         const std::string& payload) {
  std::vector<std::string> out;
  for (const auto& id : ids) out.push_back(R"({"id":")" + id + R"(","payload":)" + payload + "}");
  return out;
}

/// Pushes jobs with LPUSH in one round trip (what any submitter does).
inline void push(SyncRedis& r, const std::string& queue, const std::vector<std::string>& jobs) {
  std::vector<std::vector<std::string>> cmds;
  cmds.reserve(jobs.size());
  for (const auto& j : jobs) cmds.push_back({"LPUSH", "jobq:{" + queue + "}:pending", j});
  r.pipeline(cmds);
}

/// Reads `fields` of the job hashes of `ids`, in one round trip.
inline std::vector<std::map<std::string, std::string>> job_states(
    SyncRedis& r, const std::string& queue, const std::vector<std::string>& ids,
    const std::vector<std::string>& fields = {"status", "attempts", "error_kind", "error",
                                              "started_at", "finished_at", "worker", "result"}) {
  std::vector<std::vector<std::string>> cmds;
  for (const auto& id : ids) {
    std::vector<std::string> c{"HMGET", "jobq:{" + queue + "}:job:" + id};
    c.insert(c.end(), fields.begin(), fields.end());
    cmds.push_back(std::move(c));
  }
  std::vector<std::map<std::string, std::string>> out;
  for (auto& reply : r.pipeline(cmds)) {
    std::map<std::string, std::string> m;
    for (std::size_t i = 0; i < fields.size() && i < reply.elements.size(); ++i) {
      m[fields[i]] = reply.elements[i].str;
    }
    out.push_back(std::move(m));
  }
  return out;
}

/// How many of `ids` have status `status`.
inline std::size_t count_status(SyncRedis& r, const std::string& queue,
                                const std::vector<std::string>& ids, const std::string& status) {
  std::size_t n = 0;
  for (auto& s : job_states(r, queue, ids, {"status"})) n += s["status"] == status;
  return n;
}

/// The most attempts of `ids` that ran at once, from their states' started_at and finished_at
/// (Redis' clock as the daemons read it). A start that follows the end that freed its slot is
/// read a round trip after it, on another daemon's estimate of that clock: each span is narrowed
/// by `slack_ms` at both ends so that the two do not touch.
inline int most_at_once(SyncRedis& r, const std::string& queue, const std::vector<std::string>& ids,
                        long long slack_ms = 5) {
  std::vector<std::pair<long long, int>> edges;
  for (auto& s : job_states(r, queue, ids, {"started_at", "finished_at"})) {
    if (s["started_at"].empty() || s["finished_at"].empty()) continue;
    edges.emplace_back(std::stoll(s["started_at"]) + slack_ms, 1);
    edges.emplace_back(std::stoll(s["finished_at"]) - slack_ms, -1);
  }
  std::sort(edges.begin(), edges.end());
  int now = 0, most = 0;
  for (const auto& [t, d] : edges) most = std::max(most, now += d);
  return most;
}

/// The worker that holds job `id` now (fetched: running or buffered), "" if none. A short job's
/// state may never say active (state.active_after): its claim names its hold, which is checked
/// to be there (as jobqctl status does).
inline std::string held_by(SyncRedis& r, const std::string& queue, const std::string& id) {
  const std::string base = "jobq:{" + queue + "}";
  std::string claim = r.str({"HGET", base + ":live", id});
  if (auto at = claim.rfind('@'); at != std::string::npos) claim = claim.substr(at + 1);
  auto colon = claim.rfind(':');
  if (colon == std::string::npos) return "";
  const std::string worker = claim.substr(0, colon), token = claim.substr(colon + 1);
  return r.integer({"HEXISTS", base + ":inflight:" + worker, token}) == 1 ? worker : "";
}

inline std::size_t count_held(SyncRedis& r, const std::string& queue,
                              const std::vector<std::string>& ids) {
  std::size_t n = 0;
  for (const auto& id : ids) n += !held_by(r, queue, id).empty();
  return n;
}

}  // namespace jq::test
