// jobqctl: submit jobs and follow them (a synchronous client: a CLI has no loop to share).
#include <hiredis/hiredis.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <limits>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "config/config.hpp"
#include "config/units.hpp"
#include "job/id.hpp"
#include "job/job.hpp"
#include "job/text.hpp"
#include "ops/embedded_redis.hpp"
#include "redis/reply.hpp"
#include "redis/script.hpp"
#include "redis/url.hpp"
#include "store/keys.hpp"
#include "store/marker.hpp"
#include "store/scripts.hpp"
#include "version.hpp"

namespace {

using namespace jq;
using json = nlohmann::json;

constexpr int kOk = 0, kFailure = 1, kUsage = 2, kConfig = 78, kTimedOut = 124;

/// An error that carries the exit code it maps to.
struct Exit {
  int code;
  std::string message;
};

struct Globals {
  std::string config_path = "/etc/jobqd/jobqd.yaml";
  bool config_given = false;
  std::string redis_url;
  bool json_out = false;
};

struct Target {
  redis::Url url;
  std::string prefix = "jobq";
  std::optional<config::Config> cfg;
};

// A result from an exec job may be any bytes: invalid UTF-8 is replaced, not an error.
std::string dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

Target resolve(const Globals& g) {
  Target t;
  std::string url = g.redis_url;
  bool need_config = url.empty() || g.config_given;
  if (need_config) {
    try {
      t.cfg = config::load_file(g.config_path);
    } catch (const config::ConfigError& e) {
      if (url.empty()) throw Exit{kConfig, std::string(e.what()) + " (or pass --redis URL)"};
    }
  }
  if (t.cfg) {
    t.prefix = t.cfg->redis.key_prefix;
    if (url.empty()) {
      url = t.cfg->redis.url == "embedded"
                ? "unix://" + ops::EmbeddedRedis::socket_in(t.cfg->daemon.state_dir)
                : t.cfg->redis.url;
    }
  }
  try {
    t.url = redis::parse_url(url);
  } catch (const std::invalid_argument& e) {
    throw Exit{kUsage, e.what()};
  }
  // The config's password (from its file or variable) for the config's own Redis.
  if (t.cfg && g.redis_url.empty() && t.cfg->redis.url != "embedded") {
    try {
      if (auto password = config::redis_password(t.cfg->redis); !password.empty()) {
        t.url.password = std::move(password);
      }
    } catch (const std::runtime_error& e) {
      throw Exit{kConfig, e.what()};
    }
  }
  return t;
}

struct Free {
  void operator()(redisContext* c) const { redisFree(c); }
};
using Conn = std::unique_ptr<redisContext, Free>;

Conn connect(const redis::Url& u) {
  timeval tv{5, 0};
  Conn c(u.kind == redis::Url::Kind::unix_socket
             ? redisConnectUnixWithTimeout(u.path.c_str(), tv)
             : redisConnectWithTimeout(u.host.c_str(), u.port, tv));
  if (!c || c->err) {
    throw Exit{kFailure,
               "cannot connect to redis " + u.display() + ": " + (c ? c->errstr : "out of memory")};
  }
  redisSetTimeout(c.get(), tv);
  redis::cap_reader(c->reader);
  return c;
}

// A command's reply, error replies included.
redis::Reply call_raw(redisContext* c, const std::vector<std::string>& args) {
  std::vector<const char*> p;
  std::vector<size_t> l;
  for (const auto& a : args) {
    p.push_back(a.data());
    l.push_back(a.size());
  }
  auto* r = static_cast<redisReply*>(
      redisCommandArgv(c, static_cast<int>(args.size()), p.data(), l.data()));
  if (!r) throw Exit{kFailure, "redis: " + redis::reader_error(c->errstr)};
  auto out = redis::Reply::copy(*r);
  freeReplyObject(r);
  return out;
}

// Runs one of the protocol's scripts (the daemon's own, from store/scripts): EVALSHA, and EVAL
// when Redis does not have it yet.
redis::Reply run_script(redisContext* c, const redis::Script& script,
                        const std::vector<std::string>& keys,
                        const std::vector<std::string>& args) {
  std::vector<std::string> argv{"EVALSHA", script.sha(), std::to_string(keys.size())};
  argv.insert(argv.end(), keys.begin(), keys.end());
  argv.insert(argv.end(), args.begin(), args.end());
  auto r = call_raw(c, argv);
  if (r.is_error() && r.str.rfind("NOSCRIPT", 0) == 0) {
    argv[0] = "EVAL";
    argv[1] = script.source();
    r = call_raw(c, argv);
  }
  if (r.is_error()) throw Exit{kFailure, "redis: " + r.str};
  return r;
}

redis::Reply call(redisContext* c, const std::vector<std::string>& args) {
  std::vector<const char*> p;
  std::vector<size_t> l;
  for (const auto& a : args) {
    p.push_back(a.data());
    l.push_back(a.size());
  }
  auto* r = static_cast<redisReply*>(
      redisCommandArgv(c, static_cast<int>(args.size()), p.data(), l.data()));
  if (!r) throw Exit{kFailure, "redis: " + redis::reader_error(c->errstr)};
  auto out = redis::Reply::copy(*r);
  freeReplyObject(r);
  if (out.is_error()) throw Exit{kFailure, "redis: " + out.str};
  return out;
}

Conn open(const Target& t) {
  Conn c = connect(t.url);
  if (!t.url.password.empty()) {
    if (t.url.user.empty()) {
      call(c.get(), {"AUTH", t.url.password});
    } else {
      call(c.get(), {"AUTH", t.url.user, t.url.password});
    }
  }
  if (t.url.db) call(c.get(), {"SELECT", std::to_string(t.url.db)});
  return c;
}

store::Keys keys(const Target& t, const std::string& queue) {
  return store::Keys(t.prefix, queue);
}

long long now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

config::Millis duration_arg(const std::string& s, const char* what) {
  auto d = config::parse_duration(s);
  if (!d)
    throw Exit{kUsage, std::string(what) + ": '" + s + "' is not a duration (250ms, 30s, 5m, 1h)"};
  return *d;
}

const char* kFields[] = {"status",       "queue",      "handler",     "attempts",
                         "submitted_at", "started_at", "finished_at", "worker",
                         "result",       "error",      "error_kind"};

// The job hash as field -> value (empty map if there is none).
std::map<std::string, std::string> job_hash(redisContext* c, const std::string& key) {
  std::vector<std::string> args{"HMGET", key};
  for (const char* f : kFields) args.push_back(f);
  auto r = call(c, args);
  std::map<std::string, std::string> out;
  for (std::size_t i = 0; i < std::size(kFields) && i < r.elements.size(); ++i) {
    if (!r.elements[i].is_nil()) out[kFields[i]] = r.elements[i].str;
  }
  return out;
}

std::vector<std::string> known_queues(redisContext* c, const Target& t);

// Finds which queue holds job `id`: the one given, else each queue jobqctl knows of (the
// config's, then those daemons have served).
std::string find_queue(redisContext* c, const Target& t, const std::string& id,
                       const std::string& queue) {
  if (!queue.empty()) {
    if (!config::valid_name(queue))
      throw Exit{kUsage, "queue name '" + queue + "': use [A-Za-z0-9_.-]{1,64}"};
    return queue;
  }
  if (!job::valid_id(id))
    throw Exit{kUsage, "job id '" + id + "': use 1-128 characters of [A-Za-z0-9_.:-]"};
  const auto names = known_queues(c, t);
  for (const auto& q : names) {
    if (call(c, {"EXISTS", keys(t, q).job(id)}).as_int() == 1) return q;
  }
  throw Exit{kFailure,
             "no job " + id + " in any known queue (" +
                 (names.empty() ? std::string("none known") : std::to_string(names.size())) +
                 "; give -q QUEUE for a job that has no state yet)"};
}

std::optional<long long> whole_number(const std::string& s) {
  long long v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

// `2026-12-02 06:09:12Z`, a unix ms time as people read it (UTC, as in jobqd's log).
std::string clock_text(long long ms) {
  const std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  if (!gmtime_r(&secs, &tm)) return std::to_string(ms);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%SZ", &tm);
  return buf;
}

// How long ago (or, for a time still to come, in how long): `3s ago`, `in 5m`, `now`.
std::string relative(long long ms, long long now) {
  const long long d = now - ms;
  const long long a = d < 0 ? -d : d;
  if (a < 1000) return "now";
  std::string span =
      a < 60'000      ? std::to_string(a / 1000) + "s"
      : a < 3'600'000 ? std::to_string(a / 60'000) + "m"
      : a < 86'400'000
          ? std::to_string(a / 3'600'000) + "h" + std::to_string(a / 60'000 % 60) + "m"
          : std::to_string(a / 86'400'000) + "d" + std::to_string(a / 3'600'000 % 24) + "h";
  return d < 0 ? "in " + span : span + " ago";
}

// `2026-12-02 06:09:12Z (3s ago)`; the text itself when it is not a time.
std::string when(const std::string& ms, long long now) {
  auto v = whole_number(ms);
  if (!v || *v <= 0) return ms;
  return clock_text(*v) + " (" + relative(*v, now) + ")";
}

bool time_field(const std::string& f) {
  return f.size() > 3 && f.compare(f.size() - 3, 3, "_at") == 0;
}

// A job's state as JSON data: times and attempts as numbers (null when not set), a result that
// is JSON as JSON, the rest as text.
json job_json(const std::string& id, const std::map<std::string, std::string>& h) {
  json j = {{"id", id}};
  for (const auto& [k, v] : h) {
    if (k == "attempts" || time_field(k)) {
      auto n = whole_number(v);
      j[k] = n ? json(*n) : json();
    } else if (k == "result" && !v.empty()) {
      auto parsed = job::parse_json(v);
      auto* value = std::get_if<json>(&parsed);
      j[k] = value ? *value : json(v);
    } else {
      j[k] = v;
    }
  }
  return j;
}

void print_job(const std::string& id, const std::map<std::string, std::string>& h, bool as_json,
               long long now) {
  if (as_json) {
    std::cout << dump(job_json(id, h)) << "\n";
    return;
  }
  std::cout << "id: " << id << "\n";
  for (const char* f : kFields) {
    auto it = h.find(f);
    if (it == h.end() || it->second.empty()) continue;
    std::cout << f << ": " << (time_field(f) ? when(it->second, now) : it->second) << "\n";
  }
}

bool final_status(const std::string& s) {
  return s == "succeeded" || s == "failed" || s == "cancelled";
}

// The next message on `sub` (subscribed to the queue's events), or nullopt when none came within
// `slice`: a timed-out read leaves hiredis' context failed, so `sub` is then a new subscription.
std::optional<redis::Reply> next_event(const Target& t, const store::Keys& k, Conn& sub,
                                       std::chrono::milliseconds slice) {
  timeval tv{static_cast<time_t>(slice.count() / 1000),
             static_cast<suseconds_t>(slice.count() % 1000 * 1000)};
  redisSetTimeout(sub.get(), tv);
  void* r = nullptr;
  if (redisGetReply(sub.get(), &r) != REDIS_OK) {
    if (sub->err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      sub = open(t);
      call(sub.get(), {"SUBSCRIBE", k.events});
      return std::nullopt;
    }
    throw Exit{kFailure, "redis: " + redis::reader_error(sub->errstr)};
  }
  auto msg = redis::Reply::copy(*static_cast<redisReply*>(r));
  freeReplyObject(r);
  return msg;
}

// Waits for a final state of job `id` (subscribed first, so no event can slip by), prints the
// result or the error, and returns the exit code. With `retain: {succeeded: 0}` a succeeded job
// has no state left to read: its event is the answer, and there is no result to print.
int wait_for_job(const Target& t, const std::string& queue, const std::string& id,
                 std::optional<config::Millis> timeout, bool as_json, Conn sub, redisContext* c) {
  const bool bounded = timeout.has_value();
  const auto deadline = std::chrono::steady_clock::now() + timeout.value_or(config::Millis(0));
  const auto k = keys(t, queue);
  auto finish = [&](std::map<std::string, std::string> h) {
    const std::string status = h["status"];
    if (as_json) {
      print_job(id, h, true, 0);
    } else if (status == "succeeded") {
      std::cout << h["result"] << "\n";
    } else {
      std::cerr << "job " << id << " " << status << " (" << h["error_kind"] << "): " << h["error"]
                << "\n";
    }
    return status == "succeeded" ? kOk : kFailure;
  };
  std::string announced;  // a final status an event told of, for a job whose state is gone
  for (;;) {
    auto h = job_hash(c, k.job(id));
    auto st = h.find("status");
    if (st != h.end() && final_status(st->second)) return finish(h);
    if (h.empty() && !announced.empty()) return finish({{"status", announced}});
    // Block for the next event, at most until the deadline (or 1 s, to re-check the hash).
    auto slice = std::chrono::milliseconds(1000);
    if (bounded) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left <= std::chrono::milliseconds(0)) {
        throw Exit{kTimedOut, "job " + id + ": still " + (st == h.end() ? "unknown" : st->second) +
                                  " after " + config::format_duration(*timeout)};
      }
      slice = std::min(slice, left);
    }
    auto next = next_event(t, k, sub, slice);
    if (!next) continue;
    const redis::Reply& msg = *next;
    if (msg.is_array() && msg.elements.size() == 3 && msg.elements[0].str == "message") {
      auto event = job::parse_json(msg.elements[2].str);
      if (auto* j = std::get_if<json>(&event); j && j->is_object() && j->value("id", "") == id) {
        std::string status = j->value("status", "");
        if (final_status(status)) announced = status;
      }
    }
  }
}

// Why no jobqd would run a job of `queue`, or nullopt if one would: the queue is in the config,
// in the registry of queues daemons have served, or a daemon holds a live lease on it now.
std::optional<std::string> unserved(redisContext* c, const Target& t, const std::string& queue) {
  if (t.cfg && t.cfg->queue(queue)) return std::nullopt;
  if (auto in = call_raw(c, {"SISMEMBER", store::Keys::registry(t.prefix), queue});
      !in.is_error() && in.integer == 1) {
    return std::nullopt;
  }
  if (call(c, {"ZCARD", keys(t, queue).leases}).as_int() > 0) return std::nullopt;
  return "queue " + queue + " is served by no jobqd (" +
         (t.cfg ? "not in " + t.cfg->path + ", " : std::string()) +
         "and no daemon has served it on this Redis)";
}

// Every queue jobqctl knows of: the config's, then those daemons have served (the registry).
std::vector<std::string> known_queues(redisContext* c, const Target& t) {
  std::vector<std::string> out;
  if (t.cfg) {
    for (const auto& q : t.cfg->queues) out.push_back(q.name);
  }
  const std::string registry = store::Keys::registry(t.prefix);
  auto more = call_raw(c, {"SMEMBERS", registry});
  if (more.is_error()) {
    std::cerr << "jobqctl: warning: " << registry << " is not the set of queues jobqd keeps ("
              << more.str << "): only the config's queues are known\n";
    more = redis::Reply{};
  }
  std::vector<std::string> extra;
  for (const auto& e : more.elements) {
    if (config::valid_name(e.str) && std::find(out.begin(), out.end(), e.str) == out.end()) {
      extra.push_back(e.str);
    }
  }
  std::sort(extra.begin(), extra.end());
  out.insert(out.end(), extra.begin(), extra.end());
  return out;
}

int cmd_queues(const Globals& g) {
  Target t = resolve(g);
  Conn c = open(t);
  json out = json::array();
  const auto names = known_queues(c.get(), t);
  if (!g.json_out) {
    if (names.empty()) {
      std::cout << "no queues: none in the config, and no jobqd has served one on "
                << t.url.display() << "\n";
      return kOk;
    }
    std::printf("%-24s %10s %10s %10s %10s  %s\n", "QUEUE", "PENDING", "DELAYED", "RUNNING", "DEAD",
                "STATE");
  }
  for (const auto& name : names) {
    const auto k = keys(t, name);
    auto d = run_script(c.get(), store::scripts::depths(), {k.pending, k.delayed, k.dead}, {});
    long long active = 0;
    for (const auto& w : call(c.get(), {"ZRANGE", k.leases, "0", "-1"}).elements) {
      auto n = call_raw(c.get(), {"HLEN", k.inflight(w.str)});
      if (n.type == redis::Reply::Type::integer) active += n.integer;
    }
    const bool paused = call(c.get(), {"EXISTS", k.paused}).as_int() == 1;
    const long long pending = d.elements.at(0).integer, delayed = d.elements.at(1).integer,
                    dead = d.elements.at(2).integer;
    if (g.json_out) {
      out.push_back({{"name", name},
                     {"pending", pending},
                     {"delayed", delayed},
                     {"running", active},
                     {"dead", dead},
                     {"paused", paused}});
    } else {
      std::printf("%-24s %10lld %10lld %10lld %10lld  %s\n", name.c_str(), pending, delayed, active,
                  dead, paused ? "paused" : "serving");
    }
  }
  if (g.json_out) std::cout << dump(out) << "\n";
  return kOk;
}

// A live daemon's heartbeat (store::scripts::heartbeat), as jobqctl reads it.
struct Worker {
  json report;
  long long seen_ago_ms = 0;
};
constexpr long long kLiveWithinMs = 30000;  // six missed heartbeats: gone

long long redis_now_ms(redisContext* c) {
  auto t = call(c, {"TIME"});
  if (t.elements.size() != 2) throw Exit{kFailure, "redis: TIME gave " + t.describe()};
  return std::stoll(t.elements[0].str) * 1000 + std::stoll(t.elements[1].str) / 1000;
}

// Live workers, oldest first; `gone` counts entries older than kLiveWithinMs or unreadable.
std::vector<Worker> live_workers(redisContext* c, const Target& t, std::size_t* gone) {
  const long long now = redis_now_ms(c);
  const std::string key = store::Keys::workers(t.prefix);
  auto all = call_raw(c, {"HGETALL", key});
  if (all.is_error()) {
    throw Exit{kFailure, key + " is not the hash of workers jobqd keeps (" + all.str +
                             "): delete it, and the daemons write it again within 5 s"};
  }
  std::vector<Worker> out;
  *gone = 0;
  for (std::size_t i = 0; i + 1 < all.elements.size(); i += 2) {
    auto parsed = job::parse_json(all.elements[i + 1].str);
    auto* j = std::get_if<json>(&parsed);
    if (!j || !j->is_object() || !j->contains("seen_at") || !(*j)["seen_at"].is_number() ||
        !j->contains("queues") || !(*j)["queues"].is_object()) {
      ++*gone;
      continue;
    }
    const long long ago_ms = now - (*j)["seen_at"].get<long long>();
    if (ago_ms > kLiveWithinMs) {
      ++*gone;
      continue;
    }
    out.push_back({std::move(*j), ago_ms});
  }
  std::sort(out.begin(), out.end(), [](const Worker& a, const Worker& b) {
    return a.report.value("started_at", 0LL) < b.report.value("started_at", 0LL);
  });
  return out;
}

std::string ago(long long ms) {
  if (ms < 1000) return "now";
  return config::format_duration(config::Millis(ms / 1000 * 1000)) + " ago";
}

int cmd_workers(const Globals& g) {
  Target t = resolve(g);
  Conn c = open(t);
  std::size_t gone = 0;
  const auto workers = live_workers(c.get(), t, &gone);
  const long long now = redis_now_ms(c.get());
  json out = json::array();
  if (!g.json_out) {
    if (workers.empty()) {
      std::cout << "no live jobqd on " << t.url.display() << "\n";
    } else {
      std::printf("%-32s %-16s %8s %-14s %10s %6s  %-10s %s\n", "WORKER", "HOST", "PID", "VERSION",
                  "UP", "RUN", "SEEN", "QUEUES");
    }
  }
  for (const auto& w : workers) {
    const auto& r = w.report;
    long long running = 0;
    std::string queues;
    json names = json::array();
    for (const auto& [name, q] : r["queues"].items()) {
      running += q.value("running", 0LL);
      queues += (queues.empty() ? "" : ",") + name;
      names.push_back(name);
    }
    const long long up_ms = now - r.value("started_at", now);
    if (g.json_out) {
      out.push_back({{"worker", r.value("worker", "")},
                     {"host", r.value("host", "")},
                     {"pid", r.value("pid", 0)},
                     {"version", r.value("version", "")},
                     {"started_at", r.value("started_at", 0LL)},
                     {"uptime_s", up_ms / 1000},
                     {"queues", names},
                     {"running", running},
                     {"last_heartbeat_s", w.seen_ago_ms / 1000}});
    } else {
      std::printf("%-32s %-16s %8d %-14s %10s %6lld  %-10s %s\n", r.value("worker", "?").c_str(),
                  r.value("host", "?").c_str(), r.value("pid", 0), r.value("version", "?").c_str(),
                  config::format_duration(config::Millis(up_ms / 1000 * 1000)).c_str(), running,
                  ago(w.seen_ago_ms).c_str(), queues.c_str());
    }
  }
  if (g.json_out) {
    std::cout << dump(out) << "\n";
  } else if (gone) {
    std::cout << "(" << gone << " more not heard from for over 30s: stopped or cut off)\n";
  }
  return kOk;
}

// The run time below which a share `q` of the last minute's attempts ended (a bucket's upper
// bound; infinity past the last), or nullopt when there were none.
std::optional<double> quantile(const std::vector<double>& le, const std::vector<std::uint64_t>& n,
                               double q) {
  std::uint64_t total = 0;
  for (auto v : n) total += v;
  if (total == 0) return std::nullopt;
  std::uint64_t seen = 0;
  for (std::size_t i = 0; i < n.size(); ++i) {
    seen += n[i];
    if (static_cast<double>(seen) >= q * static_cast<double>(total)) {
      return i < le.size() ? le[i] : std::numeric_limits<double>::infinity();
    }
  }
  return std::nullopt;
}

std::string seconds_text(std::optional<double> s) {
  if (!s) return "-";
  if (std::isinf(*s)) return ">5m";
  char buf[32];
  if (*s < 1) {
    std::snprintf(buf, sizeof buf, "<%gms", *s * 1000);
  } else {
    std::snprintf(buf, sizeof buf, "<%gs", *s);
  }
  return buf;
}

// One screen of stats: each queue's depths (Redis) and what the live workers say of the last
// minute.
json stats_of(redisContext* c, const Target& t) {
  std::size_t gone = 0;
  const auto workers = live_workers(c, t, &gone);
  auto names = known_queues(c, t);
  for (const auto& w : workers) {
    for (const auto& [name, q] : w.report["queues"].items()) {
      if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
    }
  }
  json out = json::array();
  for (const auto& name : names) {
    const auto k = keys(t, name);
    auto d = run_script(c, store::scripts::depths(), {k.pending, k.delayed, k.dead}, {});
    long long running = 0, ok = 0, failed = 0, retried = 0;
    std::vector<double> le;
    std::vector<std::uint64_t> counts;
    for (const auto& w : workers) {
      const auto& qs = w.report["queues"];
      if (!qs.contains(name) || !qs[name].is_object()) continue;
      const auto& q = qs[name];
      running += q.value("running", 0LL);
      ok += q.value("succeeded_1m", 0LL);
      failed += q.value("failed_1m", 0LL);
      retried += q.value("retried_1m", 0LL);
      if (!q.contains("durations_1m")) continue;
      const auto& h = q["durations_1m"];
      if (h.is_object() && h.contains("le") && h.contains("counts") && h["le"].is_array() &&
          h["counts"].is_array()) {
        try {
          if (le.empty()) le = h["le"].get<std::vector<double>>();
          const auto n = h["counts"].get<std::vector<std::uint64_t>>();
          if (counts.size() < n.size()) counts.resize(n.size());
          for (std::size_t i = 0; i < n.size(); ++i) counts[i] += n[i];
        } catch (const json::exception&) {
          // A report of another shape (another version): its run times are left out.
        }
      }
    }
    auto p50 = quantile(le, counts, 0.5), p99 = quantile(le, counts, 0.99);
    auto num = [](std::optional<double> v) { return v && !std::isinf(*v) ? json(*v) : json(); };
    out.push_back({{"name", name},
                   {"pending", d.elements.at(0).integer},
                   {"delayed", d.elements.at(1).integer},
                   {"running", running},
                   {"dead", d.elements.at(2).integer},
                   {"succeeded_per_min", ok},
                   {"failed_per_min", failed},
                   {"retried_per_min", retried},
                   {"p50_s", num(p50)},
                   {"p99_s", num(p99)},
                   {"p50", seconds_text(p50)},
                   {"p99", seconds_text(p99)}});
  }
  return out;
}

void print_stats(const json& rows, std::ostream& o) {
  if (rows.empty()) {
    o << "no queues: none in the config, and no jobqd has served one\n";
    return;
  }
  char line[256];
  std::snprintf(line, sizeof line, "%-20s %9s %9s %8s %8s %8s %8s %9s %9s\n", "QUEUE", "PENDING",
                "DELAYED", "RUNNING", "DEAD", "OK/MIN", "FAIL/MIN", "P50", "P99");
  o << line;
  for (const auto& r : rows) {
    std::snprintf(line, sizeof line, "%-20s %9lld %9lld %8lld %8lld %8lld %8lld %9s %9s\n",
                  r["name"].get<std::string>().c_str(), r["pending"].get<long long>(),
                  r["delayed"].get<long long>(), r["running"].get<long long>(),
                  r["dead"].get<long long>(), r["succeeded_per_min"].get<long long>(),
                  r["failed_per_min"].get<long long>(), r["p50"].get<std::string>().c_str(),
                  r["p99"].get<std::string>().c_str());
    o << line;
  }
}

int cmd_stats(const Globals& g, bool watch, const std::string& every_arg) {
  Target t = resolve(g);
  Conn c = open(t);
  const auto every = every_arg.empty() ? config::Millis(2000) : duration_arg(every_arg, "--every");
  for (;;) {
    const json rows = stats_of(c.get(), t);
    if (g.json_out) {
      std::cout << dump(rows) << std::endl;
    } else if (watch) {
      // Like top: the screen redrawn in place, with when and where.
      std::ostringstream screen;
      const auto now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
      char when[32];
      std::strftime(when, sizeof when, "%Y-%m-%d %H:%M:%SZ", std::gmtime(&now));
      screen << "\x1b[H\x1b[2Jjobqctl stats: " << t.url.display() << "  " << when << "  (every "
             << config::format_duration(every) << "; Ctrl-C to stop)\n\n";
      print_stats(rows, screen);
      std::cout << screen.str() << std::flush;
    } else {
      print_stats(rows, std::cout);
    }
    if (!watch) return kOk;
    std::this_thread::sleep_for(every);
  }
}

// `jobs QUEUE --state S`: the jobs in one place of the queue, oldest first, each with its id (a
// job pushed without one has none until a daemon fetches it) and a preview of its payload.
int cmd_jobs(const Globals& g, const std::string& queue, const std::string& state,
             std::size_t limit) {
  if (!config::valid_name(queue))
    throw Exit{kUsage, "queue name '" + queue + "': use [A-Za-z0-9_.-]{1,64}"};
  Target t = resolve(g);
  Conn c = open(t);
  const auto k = keys(t, queue);
  struct Row {
    std::string id, where, when, preview;
  };
  std::vector<Row> rows;
  std::size_t total = 0;
  auto describe = [](const std::string& raw, Row& row) {
    auto parsed = job::parse_json(raw);
    auto* j = std::get_if<json>(&parsed);
    if (!j || !j->is_object()) {
      row.preview = "(not a job: " + raw.substr(0, 40) + ")";
      return;
    }
    if (j->contains("id") && (*j)["id"].is_string()) row.id = (*j)["id"].get<std::string>();
    std::string p = j->contains("payload") ? dump((*j)["payload"]) : "(no payload)";
    row.preview = p.size() > 60 ? p.substr(0, 57) + "..." : p;
  };
  const std::string n = std::to_string(limit);
  if (state == "pending") {
    total = static_cast<std::size_t>(call(c.get(), {"LLEN", k.pending}).as_int());
    // Taken from the right: the oldest is the last element.
    auto items = call(c.get(), {"LRANGE", k.pending, "-" + n, "-1"});
    for (auto it = items.elements.rbegin(); it != items.elements.rend(); ++it) {
      Row row;
      describe(it->str, row);
      rows.push_back(row);
    }
  } else if (state == "delayed") {
    total = static_cast<std::size_t>(call(c.get(), {"ZCARD", k.delayed}).as_int());
    auto items = call(c.get(), {"ZRANGE", k.delayed, "0", std::to_string(limit - 1), "WITHSCORES"});
    for (std::size_t i = 0; i + 1 < items.elements.size(); i += 2) {
      Row row;
      describe(items.elements[i].str, row);
      row.when = items.elements[i + 1].str;
      rows.push_back(row);
    }
  } else if (state == "running") {
    for (const auto& w : call(c.get(), {"ZRANGE", k.leases, "0", "-1"}).elements) {
      auto held = call_raw(c.get(), {"HVALS", k.inflight(w.str)});
      if (!held.is_array()) continue;
      for (const auto& e : held.elements) {
        ++total;
        if (rows.size() >= limit) continue;
        Row row;
        describe(e.str, row);
        row.where = w.str;
        rows.push_back(row);
      }
    }
  } else {  // dead
    total = static_cast<std::size_t>(call(c.get(), {"ZCARD", k.dead}).as_int());
    auto items = call(c.get(), {"ZRANGE", k.dead, "0", std::to_string(limit - 1), "WITHSCORES"});
    for (std::size_t i = 0; i + 1 < items.elements.size(); i += 2) {
      Row row;
      row.id = items.elements[i].str;
      row.when = items.elements[i + 1].str;
      auto h = job_hash(c.get(), k.job(row.id));
      row.preview = h["error_kind"] + ": " + h["error"].substr(0, 60);
      rows.push_back(row);
    }
  }
  if (g.json_out) {
    json out = json::array();
    for (const auto& r : rows) {
      json j = {{"id", r.id.empty() ? json() : json(r.id)}, {"payload", r.preview}};
      if (!r.where.empty()) j["worker"] = r.where;
      if (!r.when.empty()) {
        auto at = whole_number(r.when);
        j[state == "dead" ? "died_at" : "run_at"] = at ? json(*at) : json(r.when);
      }
      out.push_back(j);
    }
    std::cout << dump({{"queue", queue}, {"state", state}, {"total", total}, {"jobs", out}})
              << "\n";
    return kOk;
  }
  if (rows.empty()) {
    std::cout << "no " << state << " jobs in queue " << queue << "\n";
    return kOk;
  }
  const long long now = redis_now_ms(c.get());
  std::printf("%-30s %-32s %s\n", "ID",
              state == "running"   ? "WORKER"
              : state == "pending" ? ""
              : state == "dead"    ? "DIED"
                                   : "RUNS AT",
              state == "dead" ? "ERROR" : "PAYLOAD");
  for (const auto& r : rows) {
    std::printf("%-30s %-32s %s\n", r.id.empty() ? "(none yet)" : r.id.c_str(),
                (r.where.empty() ? when(r.when, now) : r.where).c_str(), r.preview.c_str());
  }
  if (total > rows.size()) {
    std::cout << "(" << rows.size() << " of " << total << "; --limit N for more)\n";
  }
  return kOk;
}

int cmd_pause(const Globals& g, const std::string& queue, bool pause) {
  if (!config::valid_name(queue)) {
    throw Exit{kUsage, "queue name '" + queue + "': use [A-Za-z0-9_.-]{1,64}"};
  }
  Target t = resolve(g);
  Conn c = open(t);
  const auto k = keys(t, queue);
  bool changed = false;
  if (pause) {
    changed = !call(c.get(), {"SET", k.paused, std::to_string(now_ms()), "NX"}).is_nil();
  } else {
    changed = call(c.get(), {"DEL", k.paused}).as_int() == 1;
  }
  if (g.json_out) {
    std::cout << json({{"queue", queue}, {"paused", pause}, {"changed", changed}}).dump() << "\n";
  } else if (pause) {
    std::cout << "queue " << queue
              << (changed ? " paused: every jobqd stops taking its jobs within a second "
                            "(running ones finish)\n"
                          : " was paused already\n");
  } else {
    std::cout << "queue " << queue
              << (changed ? " resumed: every jobqd takes its jobs again within a second\n"
                          : " was not paused\n");
  }
  return kOk;
}

int cmd_submit(const Globals& g, const std::string& queue, const std::string& payload_arg,
               const std::string& id_arg, const std::string& handler, const std::string& timeout,
               unsigned max_attempts, const std::string& delay, bool wait,
               const std::string& wait_timeout, bool force) {
  if (!config::valid_name(queue))
    throw Exit{kUsage, "queue name '" + queue + "': use [A-Za-z0-9_.-]{1,64}"};
  Target t = resolve(g);
  std::string text = payload_arg;
  if (payload_arg == "-") {
    text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  }
  json payload;
  if (text.empty()) {
    payload = json::object();
  } else {
    auto parsed = job::parse_json(text);
    if (auto* why = std::get_if<std::string>(&parsed)) {
      throw Exit{kUsage, "PAYLOAD is " + *why + " (quote a string as '\"text\"')"};
    }
    payload = std::move(std::get<json>(parsed));
  }
  std::string id = id_arg.empty() ? job::new_id() : id_arg;
  if (!job::valid_id(id))
    throw Exit{kUsage, "--id '" + id + "': use 1-128 characters of [A-Za-z0-9_.:-]"};
  json job = {{"id", id}, {"payload", payload}};
  if (!handler.empty()) job["handler"] = handler;
  if (!timeout.empty()) job["timeout_ms"] = duration_arg(timeout, "--timeout").count();
  if (max_attempts) job["max_attempts"] = max_attempts;
  std::optional<config::Millis> delay_ms;
  if (!delay.empty()) delay_ms = duration_arg(delay, "--delay");
  std::optional<config::Millis> wait_for;
  if (!wait_timeout.empty()) wait_for = duration_arg(wait_timeout, "--wait-timeout");

  Conn c = open(t);
  if (!force) {
    if (auto why = unserved(c.get(), t, queue)) {
      throw Exit{kUsage, *why +
                             "; --force pushes it anyway (it waits in pending until a jobqd "
                             "serves the queue)"};
    }
  }
  Conn sub;
  if (wait) {
    sub = open(t);
    call(sub.get(), {"SUBSCRIBE", keys(t, queue).events});
  }
  const auto k = keys(t, queue);
  const long long now = now_ms();
  std::string run_at = delay_ms ? std::to_string(now + delay_ms->count()) : std::string();
  std::vector<std::string> skeys{k.job(id), k.live, k.pending, k.delayed};
  std::vector<std::string> sargs{store::marked_submission(job.dump(), id, now), id, queue,
                                 std::to_string(now), run_at};
  if (run_script(c.get(), store::scripts::submit(), skeys, sargs).as_int() == 0) {
    std::cerr << "jobqctl: job " << id
              << " is not over yet; this submission runs after it ends, as a new job\n";
  }
  if (!wait) {
    std::cout << (g.json_out ? json({{"id", id}, {"queue", queue}}).dump() : id) << "\n";
    return kOk;
  }
  return wait_for_job(t, queue, id, wait_for, g.json_out, std::move(sub), c.get());
}

// submit --from: one job per line (a job object as LPUSH takes it; the submit options fill in
// what a line leaves out), checked as the daemon would, pushed by the submit script in
// pipelined chunks. Bad lines are reported by number and skipped; exit 1 if there were any.
int cmd_submit_from(const Globals& g, const std::string& queue, const std::string& from,
                    const std::string& handler, const std::string& timeout, unsigned max_attempts,
                    const std::string& delay, bool force) {
  if (!config::valid_name(queue))
    throw Exit{kUsage, "queue name '" + queue + "': use [A-Za-z0-9_.-]{1,64}"};
  std::ifstream file;
  if (from != "-") {
    file.open(from);
    if (!file) throw Exit{kFailure, "--from " + from + ": " + std::strerror(errno)};
  }
  std::istream& in = from == "-" ? std::cin : file;
  Target t = resolve(g);
  Conn c = open(t);
  if (!force) {
    if (auto why = unserved(c.get(), t, queue)) {
      throw Exit{kUsage, *why + "; --force pushes them anyway"};
    }
  }
  // The rules of the queue's config when there is one: its handlers and size limit.
  job::Rules rules;
  std::set<std::string> handler_names;
  if (t.cfg) {
    for (const auto& [name, h] : t.cfg->handlers) handler_names.insert(name);
    if (const auto* q = t.cfg->queue(queue)) {
      rules.default_handler = q->handler;
      rules.handlers = &handler_names;
      rules.max_bytes = q->max_job_bytes;
    }
  }
  std::optional<long long> timeout_ms;
  if (!timeout.empty()) timeout_ms = duration_arg(timeout, "--timeout").count();
  std::optional<config::Millis> delay_ms;
  if (!delay.empty()) delay_ms = duration_arg(delay, "--delay");
  const auto k = keys(t, queue);
  const auto& script = store::scripts::submit();
  call(c.get(), {"SCRIPT", "LOAD", script.source()});

  struct Bad {
    std::size_t line;
    std::string why;
  };
  std::vector<Bad> bad;
  std::size_t submitted = 0, waiting = 0, lines = 0;
  const bool progress = !g.json_out && isatty(STDERR_FILENO);
  std::vector<std::vector<std::string>> chunk;
  auto flush = [&] {
    for (const auto& argv : chunk) {
      std::vector<const char*> p;
      std::vector<size_t> l;
      for (const auto& a : argv) {
        p.push_back(a.data());
        l.push_back(a.size());
      }
      redisAppendCommandArgv(c.get(), static_cast<int>(argv.size()), p.data(), l.data());
    }
    for (std::size_t i = 0; i < chunk.size(); ++i) {
      void* r = nullptr;
      if (redisGetReply(c.get(), &r) != REDIS_OK) {
        throw Exit{kFailure, "redis: " + redis::reader_error(c->errstr) + " after " +
                                 std::to_string(submitted) + " job(s) were submitted"};
      }
      auto reply = redis::Reply::copy(*static_cast<redisReply*>(r));
      freeReplyObject(r);
      if (reply.is_error()) throw Exit{kFailure, "redis: " + reply.str};
      ++submitted;
      waiting += reply.integer == 0;
    }
    chunk.clear();
    if (progress)
      std::cerr << "\rsubmitted " << submitted << ", rejected " << bad.size() << std::flush;
  };
  std::string line;
  while (std::getline(in, line)) {
    ++lines;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    auto parsed = job::parse_json(line);
    if (auto* why = std::get_if<std::string>(&parsed)) {
      bad.push_back({lines, *why});
      continue;
    }
    json j = std::move(std::get<json>(parsed));
    if (!j.is_object()) {
      bad.push_back({lines, "not a job: a job is an object, {\"payload\": ...}"});
      continue;
    }
    if (!handler.empty() && !j.contains("handler")) j["handler"] = handler;
    if (timeout_ms && !j.contains("timeout_ms")) j["timeout_ms"] = *timeout_ms;
    if (max_attempts && !j.contains("max_attempts")) j["max_attempts"] = max_attempts;
    if (!j.contains("id") || j["id"].is_null()) j["id"] = job::new_id();
    const std::string text = dump(j);
    auto checked = job::parse(text, rules);
    if (auto* why = std::get_if<job::Invalid>(&checked)) {
      bad.push_back({lines, why->error});
      continue;
    }
    const std::string id = std::get<job::Job>(checked).id;
    const long long now = now_ms();
    const std::string run_at = delay_ms ? std::to_string(now + delay_ms->count()) : std::string();
    chunk.push_back({"EVALSHA", script.sha(), "4", k.job(id), k.live, k.pending, k.delayed,
                     store::marked_submission(text, id, now), id, queue, std::to_string(now),
                     run_at});
    if (chunk.size() == 1000) flush();
  }
  flush();
  if (progress) std::cerr << "\n";
  if (g.json_out) {
    json rejected = json::array();
    for (const auto& b : bad) rejected.push_back({{"line", b.line}, {"error", b.why}});
    std::cout << dump({{"queue", queue},
                       {"submitted", submitted},
                       {"waiting", waiting},
                       {"rejected", rejected}})
              << "\n";
  } else {
    std::cout << "submitted " << submitted << " job(s) to " << queue << ", rejected " << bad.size()
              << (waiting ? ", " + std::to_string(waiting) +
                                " wait for an earlier job of their id to end"
                          : std::string())
              << "\n";
    std::size_t shown = 0;
    for (const auto& b : bad) {
      if (++shown > 100) {
        std::cerr << "... and " << bad.size() - 100 << " more\n";
        break;
      }
      std::cerr << (from == "-" ? std::string("stdin") : from) << ":" << b.line << ": " << b.why
                << "\n";
    }
  }
  return bad.empty() ? kOk : kFailure;
}

int cmd_status(const Globals& g, const std::string& id, const std::string& queue) {
  Target t = resolve(g);
  Conn c = open(t);
  std::string q = find_queue(c.get(), t, id, queue);
  auto h = job_hash(c.get(), keys(t, q).job(id));
  if (h.empty()) throw Exit{kFailure, "no job " + id + " in queue " + q};
  print_job(id, h, g.json_out, redis_now_ms(c.get()));
  return kOk;
}

int cmd_wait(const Globals& g, const std::string& id, const std::string& queue,
             const std::string& wait_timeout) {
  Target t = resolve(g);
  Conn c = open(t);
  std::string q = find_queue(c.get(), t, id, queue);
  Conn sub = open(t);
  call(sub.get(), {"SUBSCRIBE", keys(t, q).events});
  std::optional<config::Millis> limit;
  if (!wait_timeout.empty()) limit = duration_arg(wait_timeout, "--wait-timeout");
  return wait_for_job(t, q, id, limit, g.json_out, std::move(sub), c.get());
}

// A copy of job `id` waiting in pending or delayed, found by cancel.
struct Copy {
  std::string where;  // pending, delayed
  std::string body;
};

// Every copy of job `id` in the queue's pending list and delayed set, in the order cancel tries
// them: the one the state describes first (a retry waiting in delayed, else the oldest in
// pending), then the rest. Read in slices, so that a long list never holds Redis in one reply.
std::vector<Copy> copies_of(redisContext* c, const store::Keys& k, const std::string& id,
                            const std::string& status) {
  constexpr long long kSlice = 1000;
  const std::string quoted = "\"" + id + "\"";
  auto is_it = [&](const std::string& raw) {
    if (raw.find(quoted) == std::string::npos) return false;
    auto parsed = job::parse_json(raw);
    auto* j = std::get_if<json>(&parsed);
    return j && j->is_object() && j->contains("id") && (*j)["id"].is_string() &&
           (*j)["id"].get<std::string>() == id;
  };
  std::vector<Copy> pending, retries, delayed;
  const long long n = call(c, {"LLEN", k.pending}).as_int();
  for (long long from = 0; from < n; from += kSlice) {
    auto items =
        call(c, {"LRANGE", k.pending, std::to_string(from), std::to_string(from + kSlice - 1)});
    for (auto& e : items.elements) {
      if (is_it(e.str)) pending.push_back({"pending", std::move(e.str)});
    }
  }
  std::reverse(pending.begin(), pending.end());  // consumed from the right: the oldest first
  const long long m = call(c, {"ZCARD", k.delayed}).as_int();
  for (long long from = 0; from < m; from += kSlice) {
    auto items =
        call(c, {"ZRANGE", k.delayed, std::to_string(from), std::to_string(from + kSlice - 1)});
    for (auto& e : items.elements) {
      if (!is_it(e.str)) continue;
      auto& to = status == "retrying" && store::marker_attempts(e.str) > 0 ? retries : delayed;
      to.push_back({"delayed", std::move(e.str)});
    }
  }
  std::vector<Copy> out = std::move(retries);
  for (auto* v : {&pending, &delayed}) {
    out.insert(out.end(), std::make_move_iterator(v->begin()), std::make_move_iterator(v->end()));
  }
  return out;
}

// `cancel ID`: a job waiting in pending or delayed is taken out and marked cancelled here; one a
// daemon holds (running, or in its buffer) gets a request that every jobqd reads within a
// second, and the one holding it stops it as at a timeout. Waits (on the events channel) until
// the job is over, at most `limit`.
int cmd_cancel(const Globals& g, const std::string& id, const std::string& queue,
               const std::string& limit_arg) {
  if (!job::valid_id(id))
    throw Exit{kUsage, "cancel: job id '" + id + "': use 1-128 characters of [A-Za-z0-9_.:-]"};
  const config::Millis limit =
      limit_arg.empty() ? config::Millis(30000) : duration_arg(limit_arg, "--wait-timeout");
  Target t = resolve(g);
  Conn c = open(t);
  const std::string q = find_queue(c.get(), t, id, queue);
  const auto k = keys(t, q);
  const config::QueueConfig* qc = t.cfg ? t.cfg->queue(q) : nullptr;
  const std::string keep =
      std::to_string(qc ? qc->retain.failed.count() : config::QueueConfig{}.retain.failed.count());
  Conn sub = open(t);
  call(sub.get(), {"SUBSCRIBE", k.events});
  const std::vector<std::string> script_keys{k.job(id), k.pending, k.delayed, k.live, k.cancels};
  auto report = [&](const std::string& status, const std::string& was) {
    if (g.json_out) {
      std::cout << dump({{"id", id}, {"queue", q}, {"status", status}, {"was", was}}) << "\n";
    } else if (status == "cancelled") {
      std::cout << "job " << id << " cancelled (it was " << was << ")\n";
    } else {
      std::cout << "job " << id << " " << status
                << (was == "over" ? " already: nothing to cancel\n"
                                  : " before it could be stopped\n");
    }
    return status == "cancelled" ? kOk : kFailure;
  };
  const auto deadline = std::chrono::steady_clock::now() + limit;
  std::string was;        // what the job was doing when it was asked to stop
  std::string looked_at;  // the status pending and delayed were last read for
  for (;;) {
    const auto h = job_hash(c.get(), k.job(id));
    const auto st = h.find("status");
    const std::string status = st == h.end() ? "" : st->second;
    if (!was.empty() && final_status(status)) return report(status, was);
    bool request = status == "active";
    bool raced = false;
    // Once a request stands, pending and delayed are read again only when the state moved (a
    // job given back or recovered there): not every 200 ms of a long list.
    const bool look = !request && (was.empty() || status != looked_at);
    looked_at = status;
    if (!look && !request && !final_status(status)) request = true;
    if (look) {
      for (const auto& copy : copies_of(c.get(), k, id, status)) {
        const std::string why = copy.where == "pending" ? "queued" : "waiting in delayed";
        auto r = run_script(c.get(), store::scripts::cancel(), script_keys,
                            {k.base, q, id, copy.where, copy.body, keep,
                             "cancelled by jobqctl cancel while " + why});
        const std::string what = r.is_array() && !r.elements.empty() ? r.elements[0].str : "";
        if (what == "cancelled") return report("cancelled", why);
        if (what == "gone") {
          raced = true;  // a daemon took it meanwhile: look again
          break;
        }
      }
      if (!raced) {
        if (final_status(status)) return report(status, "over");
        if (status.empty()) throw Exit{kFailure, "no job " + id + " in queue " + q};
        request = true;  // queued or retrying, yet in neither place: a daemon holds it
      }
    }
    if (request) {
      auto r = run_script(c.get(), store::scripts::cancel(), script_keys,
                          {k.base, q, id, "request", "", keep, ""});
      if (r.is_array() && !r.elements.empty() && r.elements[0].str == "requested" && was.empty()) {
        was = status == "active" ? "running" : "held by a daemon";
        if (!g.json_out) {
          std::cerr << "job " << id << " is " << (status == "active" ? "running" : status)
                    << ": asked the jobqd that holds it to stop it\n";
        }
      }
    }
    if (raced) continue;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left <= std::chrono::milliseconds(0)) {
      throw Exit{kTimedOut, "job " + id + " still " + (status.empty() ? "unknown" : status) +
                                " after " + config::format_duration(limit) +
                                "; the request stands: the jobqd holding it stops it as soon as "
                                "it reads it"};
    }
    // The next event of the queue, or 200 ms: then the state is read again.
    auto slice = std::min(left, std::chrono::milliseconds(200));
    (void)next_event(t, k, sub, slice);
  }
}

int cmd_dead(const Globals& g, const std::string& action, const std::string& queue,
             const std::string& id, bool all) {
  if (!config::valid_name(queue))
    throw Exit{kUsage, "queue name '" + queue + "': use [A-Za-z0-9_.-]{1,64}"};
  Target t = resolve(g);
  Conn c = open(t);
  const auto k = keys(t, queue);
  if (action == "list") {
    auto ids = call(c.get(), {"ZRANGE", k.dead, "0", "-1"});
    const long long now = redis_now_ms(c.get());
    json out = json::array();
    std::size_t shown = 0;
    for (const auto& e : ids.elements) {
      auto h = job_hash(c.get(), k.job(e.str));
      if (h["status"] != "failed") continue;  // a newer job of that id has its state now
      if (g.json_out) {
        out.push_back(job_json(e.str, h));
        continue;
      }
      if (shown++ == 0) std::cout << "ID  DIED  ERROR_KIND  ERROR\n";
      std::cout << e.str << "  " << when(h["finished_at"], now) << "  " << h["error_kind"] << "  "
                << h["error"] << "\n";
    }
    if (g.json_out) {
      std::cout << dump(out) << "\n";
    } else if (shown == 0) {
      std::cout << "no dead jobs in queue " << queue << "\n";
    }
    return kOk;
  }
  if (id.empty() == !all) throw Exit{kUsage, "dead " + action + ": give one ID or --all"};
  std::vector<std::string> ids;
  if (all) {
    for (auto& e : call(c.get(), {"ZRANGE", k.dead, "0", "-1"}).elements) ids.push_back(e.str);
  } else {
    ids.push_back(id);
  }
  long long n = 0;
  // In slices, so that --all on a large dead set does not hold Redis in one long script.
  for (std::size_t i = 0; i < ids.size(); i += 500) {
    std::vector<std::string> args{k.base};
    for (std::size_t j = i; j < std::min(ids.size(), i + 500); ++j) args.push_back(ids[j]);
    if (action == "retry") {
      std::vector<std::string> rkeys{k.dead, k.pending, k.dead_bodies, k.live};
      n += run_script(c.get(), store::scripts::requeue_dead(), rkeys, args).as_int();
    } else {
      std::vector<std::string> pkeys{k.dead, k.dead_bodies};
      n += run_script(c.get(), store::scripts::purge_dead(), pkeys, args).as_int();
    }
  }
  if (!all && n == 0) throw Exit{kFailure, "no dead job " + id + " in queue " + queue};
  if (g.json_out) {
    std::cout << json({{action == "retry" ? "requeued" : "purged", n}}).dump() << "\n";
  } else {
    std::cout << (action == "retry" ? "requeued " : "purged ") << n << " job(s)\n";
  }
  return kOk;
}

// The word after the options that should name a command, when it names none: CLI11 would only
// say "A subcommand is required".
std::optional<std::string> unknown_command(const CLI::App& app, int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "-c" || a == "--config" || a == "--redis") {
      ++i;  // its value
      continue;
    }
    if (!a.empty() && a[0] == '-') continue;
    for (const auto* sub : app.get_subcommands({})) {
      if (sub->get_name() == a) return std::nullopt;
    }
    std::string names;
    for (const auto* sub : app.get_subcommands({}))
      names += (names.empty() ? "" : ", ") + sub->get_name();
    return "unknown command '" + a + "' (commands: " + names + ")";
  }
  return std::nullopt;
}

const CLI::App* parsed_command(const CLI::App& app) {
  for (const auto* sub : app.get_subcommands({})) {
    if (sub->parsed()) return sub;
  }
  return nullptr;
}

// `usage: jobqctl submit QUEUE [PAYLOAD] [OPTIONS]` for a command, or the general one.
std::string usage_line(const CLI::App& app, const CLI::App* cmd) {
  if (!cmd) {
    return "usage: jobqctl [-c CONFIG | --redis URL] [--json] COMMAND ... (jobqctl --help; "
           "jobqctl COMMAND --help)\n";
  }
  std::string line = "usage: jobqctl " + cmd->get_name();
  for (const auto* o : cmd->get_options()) {
    if (!o->get_positional()) continue;
    line += o->get_required() ? " " + o->get_name() : " [" + o->get_name() + "]";
  }
  (void)app;
  return line + " [OPTIONS] (jobqctl " + cmd->get_name() + " --help)\n";
}

// CLI11's messages in jobqctl's words: which command, which argument, what is allowed.
std::string explain(const CLI::App& app, const CLI::ParseError& e) {
  const auto* cmd = parsed_command(app);
  const std::string where = cmd ? cmd->get_name() + ": " : std::string();
  std::string msg = e.what();
  const std::string required = " is required";
  if (auto at = msg.find(required);
      at != std::string::npos && msg.find("subcommand") == std::string::npos) {
    return where + "missing " + msg.substr(0, at);
  }
  if (msg.find("A subcommand is required") != std::string::npos) return "a command is needed";
  return where + msg;
}

// The values some arguments take, for their checks and for the shell completion alike.
const std::vector<std::string> kStates{"pending", "delayed", "running", "dead"};
const std::vector<std::string> kDeadActions{"list", "retry", "purge"};

std::string words(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& w : v) out += (out.empty() ? "" : " ") + w;
  return out;
}

// An option's names: `-q --queue`.
std::vector<std::string> names_of(const CLI::Option& o) {
  std::vector<std::string> out;
  for (const auto& s : o.get_snames()) out.push_back("-" + s);
  for (const auto& l : o.get_lnames()) out.push_back("--" + l);
  return out;
}

// What the completion offers for a positional argument of a command: queue names (read from
// Redis through jobqctl itself, within 2 s), a fixed list, or nothing (ids, payloads).
std::string positional_rule(const std::string& name) {
  if (name == "QUEUE") return "_jobqctl_queues";
  if (name == "ACTION") return "_jobqctl_words '" + words(kDeadActions) + "'";
  return "";
}

// The shell completion, generated from the commands and options defined in main(), so that it
// cannot drift from them: `jobqctl --completion bash|zsh`, installed by make install. zsh runs
// the bash one through bashcompinit.
std::string completion_script(const CLI::App& app, const std::string& shell) {
  std::ostringstream o;
  if (shell == "zsh") o << "#compdef jobqctl\nautoload -U +X bashcompinit && bashcompinit\n";
  o << "# jobqctl completion (generated by: jobqctl --completion " << shell << ")\n";
  o << R"sh(_jobqctl_words() { COMPREPLY=($(compgen -W "$1" -- "$cur")); }
_jobqctl_queues() {
  local q
  q=$(timeout 2 "${COMP_WORDS[0]}" "${conn[@]}" --json queues 2>/dev/null |
      grep -o '"name":"[^"]*"' | cut -d'"' -f4)
  COMPREPLY=($(compgen -W "$q" -- "$cur"))
}
_jobqctl() {
  local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
  local cmd= n=0 i w
  local -a conn=()
  for ((i = 1; i < COMP_CWORD; i++)); do
    w=${COMP_WORDS[i]}
    case $w in
      -c|--config|--redis) conn+=("$w" "${COMP_WORDS[i+1]}"); ((i++)) ;;
)sh";
  // Options that take a value, of every command: their value is not a positional.
  std::set<std::string> valued, file_valued{"-c", "--config", "--from"};
  std::vector<const CLI::App*> cmds = app.get_subcommands({});
  auto collect = [&](const CLI::App& a) {
    for (const auto* opt : a.get_options()) {
      // A flag (--json, --wait) expects no value.
      if (opt->get_positional() || opt->get_expected_max() == 0) continue;
      for (const auto& n : names_of(*opt)) valued.insert(n);
    }
  };
  collect(app);
  for (const auto* c : cmds) collect(*c);
  std::string skip;
  for (const auto& v : valued) {
    if (v != "-c" && v != "--config" && v != "--redis") skip += (skip.empty() ? "" : "|") + v;
  }
  o << "      " << skip << ") ((i++)) ;;\n";
  o << R"sh(      -*) ;;
      *) if [[ -z $cmd ]]; then cmd=$w; else ((n++)); fi ;;
    esac
  done
  case $prev in
)sh";
  std::string files, others;
  for (const auto& v : valued) {
    if (file_valued.count(v)) {
      files += (files.empty() ? "" : "|") + v;
    } else if (v != "--state" && v != "-q" && v != "--queue") {
      others += (others.empty() ? "" : "|") + v;
    }
  }
  o << "    " << files << ") COMPREPLY=($(compgen -f -- \"$cur\")); return ;;\n";
  o << "    --state) _jobqctl_words '" << words(kStates) << "'; return ;;\n";
  o << "    -q|--queue) _jobqctl_queues; return ;;\n";
  o << "    " << others << ") return ;;\n  esac\n";
  std::string globals;  // without -h/--help: every command has its own
  for (const auto* opt : app.get_options()) {
    for (const auto& n : names_of(*opt)) {
      if (n != "-h" && n != "--help") globals += " " + n;
    }
  }
  std::string names;
  for (const auto* c : cmds) names += (names.empty() ? "" : " ") + c->get_name();
  o << "  if [[ -z $cmd ]]; then _jobqctl_words '" << names << " -h --help" << globals
    << "'; return; fi\n";
  o << "  if [[ $cur == -* ]]; then\n    case $cmd in\n";
  for (const auto* c : cmds) {
    std::string opts;
    for (const auto* opt : c->get_options()) {
      if (opt->get_positional()) continue;
      for (const auto& n : names_of(*opt)) opts += " " + n;
    }
    o << "      " << c->get_name() << ") _jobqctl_words '" << opts.substr(opts.empty() ? 0 : 1)
      << globals << "' ;;\n";
  }
  o << "    esac\n    return\n  fi\n  case $cmd:$n in\n";
  for (const auto* c : cmds) {
    int i = 0;
    for (const auto* opt : c->get_options()) {
      if (!opt->get_positional()) continue;
      const std::string rule = positional_rule(opt->get_name());
      if (!rule.empty()) o << "    " << c->get_name() << ":" << i << ") " << rule << " ;;\n";
      ++i;
    }
  }
  o << "  esac\n}\ncomplete -F _jobqctl jobqctl\n";
  return o.str();
}

unsigned attempts_arg(const std::string& s) {
  if (s.empty()) return 0;
  unsigned v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || v < 1 || v > 1000) {
    throw Exit{kUsage, "submit: --max-attempts '" + s + "' is not a whole number from 1 to 1000"};
  }
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"jobqctl: submit jobs to jobqd and follow them"};
  app.require_subcommand(1);
  app.fallthrough();  // the global options after the command too: `jobqctl status ID --json`
  app.set_version_flag("--version", std::string("jobqctl ") + jq::version());
  Globals g;
  app.add_option("-c,--config", g.config_path, "jobqd config (for the Redis URL and queues)")
      ->capture_default_str()
      ->each([&](const std::string&) { g.config_given = true; });
  app.add_option("--redis", g.redis_url, "Redis URL (instead of the config's)");
  app.add_flag("--json", g.json_out, "machine-readable output");

  std::string queue, payload, id, handler, timeout, delay, wait_timeout;
  std::string max_attempts_arg;
  bool wait = false;
  auto* submit =
      app.add_subcommand("submit", "submit a job; prints its id (or, with --wait, its result)");
  submit->add_option("QUEUE", queue, "queue name")->required();
  submit->add_option("PAYLOAD", payload, "the payload as JSON, or - to read it from stdin");
  submit->add_option("--id", id, "the job's id (default: a new time-ordered one)");
  submit->add_option("--handler", handler, "a configured handler (default: the queue's)");
  submit->add_option("--timeout", timeout, "job timeout, like 30s (capped by the queue)");
  submit->add_option("--max-attempts", max_attempts_arg,
                     "attempts before it is dead, 1 to 1000 (capped by the queue)");
  submit->add_option("--delay", delay, "run it this much later, like 5m");
  submit->add_flag("--wait", wait, "wait for the end: print the result, exit 1 if it failed");
  submit->add_option("--wait-timeout", wait_timeout, "give up waiting after this long (exit 124)");
  bool force = false;
  submit->add_flag("--force", force, "push even if no jobqd serves the queue");
  std::string from;
  submit->add_option("--from", from,
                     "submit a job per line of this JSON-lines file (- for stdin), pipelined");
  submit->footer(R"(
EXAMPLES
  jobqctl submit default '{"n": 1}'
  jobqctl submit default '{"n": 1}' --wait --wait-timeout 30s
  echo '{"to": "a@example.com"}' | jobqctl submit mail - --id mail-42 --delay 5m
  jobqctl submit mail --from jobs.jsonl     # a line is a job: {"payload": ..., "id": ...})");

  std::string status_id, status_queue;
  auto* status = app.add_subcommand("status", "show a job's state");
  status->add_option("ID", status_id, "job id")->required();
  status->add_option("-q,--queue", status_queue,
                     "its queue (default: look in every configured queue)");

  std::string wait_id, wait_queue, wait_limit;
  auto* waitcmd = app.add_subcommand("wait", "wait until a job succeeded or failed");
  waitcmd->add_option("ID", wait_id, "job id")->required();
  waitcmd->add_option("-q,--queue", wait_queue, "its queue");
  waitcmd->add_option("--wait-timeout", wait_limit, "give up after this long (exit 124)");

  std::string cancel_id, cancel_queue, cancel_limit;
  auto* cancelcmd =
      app.add_subcommand("cancel", "cancel a job: remove it, or stop it where it runs");
  cancelcmd->add_option("ID", cancel_id, "job id")->required();
  cancelcmd->add_option("-q,--queue", cancel_queue,
                        "its queue (default: look in every known queue)");
  cancelcmd->add_option("--wait-timeout", cancel_limit,
                        "how long to wait for a running job to stop (default 30s; exit 124)");
  cancelcmd->footer(
      "\nA queued or delayed job is taken out at once. A running one is stopped by the jobqd\n"
      "running it within a second, as at a timeout (an exec job's process group gets SIGTERM,\n"
      "then SIGKILL). Either way it ends with status and error_kind cancelled; exit 0 once it\n"
      "did, 1 if it ended otherwise first (or was over already).\n"
      "EXAMPLE\n  jobqctl cancel mail-42 -q mail");

  std::string dead_action, dead_queue, dead_id;
  bool dead_all = false;
  auto* deadcmd = app.add_subcommand("dead", "list, requeue (retry) or delete (purge) dead jobs");
  deadcmd->add_option("ACTION", dead_action, "list, retry or purge")
      ->required()
      ->check(CLI::IsMember(kDeadActions));
  deadcmd->add_option("QUEUE", dead_queue, "queue name")->required();
  deadcmd->add_option("ID", dead_id, "one dead job (retry, purge)");
  deadcmd->add_flag("--all", dead_all, "every dead job of the queue (retry, purge)");

  std::string jobs_queue, jobs_state = "pending";
  std::size_t jobs_limit = 100;
  auto* jobscmd = app.add_subcommand("jobs", "list a queue's jobs in one state, oldest first");
  jobscmd->add_option("QUEUE", jobs_queue, "queue name")->required();
  jobscmd->add_option("--state", jobs_state, "pending (default), delayed, running or dead")
      ->check(CLI::IsMember(kStates));
  jobscmd->add_option("--limit", jobs_limit, "at most this many (default 100)")
      ->check(CLI::Range(1, 100000));
  jobscmd->footer(
      "\nA job pushed without an id shows (none yet): it gets one when a daemon fetches it.\n"
      "EXAMPLES\n  jobqctl jobs mail\n  jobqctl jobs mail --state running --json");
  auto* workers = app.add_subcommand("workers", "list the live jobqd daemons");
  workers->footer(
      "\nEach: worker id, host, pid, version, uptime, running jobs, last heartbeat (every 5s),\n"
      "queues. EXAMPLE\n  jobqctl workers --json");
  bool watch = false;
  std::string every;
  auto* stats = app.add_subcommand("stats", "a table per queue: depths, rates, run times");
  stats->add_flag("--watch", watch, "redraw it in place, like top, until Ctrl-C");
  stats->add_option("--every", every, "with --watch: how often (default 2s)");
  stats->footer(
      "\nPENDING, DELAYED, DEAD from Redis; RUNNING, OK/MIN, FAIL/MIN and the run times P50/P99\n"
      "over the last minute from the live daemons' heartbeats.\nEXAMPLE\n  jobqctl stats --watch");
  auto* queues =
      app.add_subcommand("queues", "list the queues: pending, delayed, running, dead, paused");
  queues->footer("\nEXAMPLE\n  jobqctl queues --json");

  std::string pause_queue, resume_queue;
  auto* pausecmd =
      app.add_subcommand("pause", "stop every jobqd taking QUEUE's jobs (within a second)");
  pausecmd->add_option("QUEUE", pause_queue, "queue name")->required();
  pausecmd->footer(
      "\nRunning jobs finish; the pause lasts (across daemon restarts) until resume.\n"
      "EXAMPLE\n  jobqctl pause mail");
  auto* resumecmd = app.add_subcommand("resume", "let every jobqd take QUEUE's jobs again");
  resumecmd->add_option("QUEUE", resume_queue, "queue name")->required();
  resumecmd->footer("\nEXAMPLE\n  jobqctl resume mail");
  status->footer("\nEXAMPLE\n  jobqctl status 01M8XP9BS323B05SQ176K6X2ME --json");
  waitcmd->footer("\nEXAMPLE\n  jobqctl wait mail-42 -q mail --wait-timeout 1m");
  deadcmd->footer("\nEXAMPLES\n  jobqctl dead list mail\n  jobqctl dead retry mail --all");

  // Every error on stderr: one line and, for a usage error, the usage line; with --json, one
  // JSON object {"error", "exit", "usage"} instead, for scripts that parse what they get.
  const bool json_errors = std::any_of(
      argv + 1, argv + argc, [](const char* a) { return std::string_view(a) == "--json"; });
  auto fail = [&](int code, const std::string& message, const std::string& usage) {
    if (json_errors) {
      json j = {{"error", message}, {"exit", code}};
      if (!usage.empty()) j["usage"] = usage.substr(0, usage.find_last_not_of('\n') + 1);
      std::cerr << dump(j) << "\n";
    } else {
      std::cerr << "jobqctl: " << message << "\n" << usage;
    }
    return code;
  };
  if (argc == 3 && std::string_view(argv[1]) == "--completion") {
    const std::string shell = argv[2];
    if (shell != "bash" && shell != "zsh") return fail(kUsage, "--completion: bash or zsh", "");
    std::cout << completion_script(app, shell);
    return kOk;
  }
  if (auto bad = unknown_command(app, argc, argv)) {
    return fail(kUsage, *bad, usage_line(app, nullptr));
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    return fail(kUsage, explain(app, e), usage_line(app, parsed_command(app)));
  }
  try {
    if (submit->parsed()) {
      const unsigned max_attempts = attempts_arg(max_attempts_arg);
      if (!from.empty()) {
        if (!payload.empty() || !id.empty() || wait) {
          throw Exit{kUsage,
                     "submit: --from takes the jobs from its lines: no PAYLOAD, --id or --wait"};
        }
        return cmd_submit_from(g, queue, from, handler, timeout, max_attempts, delay, force);
      }
      return cmd_submit(g, queue, payload, id, handler, timeout, max_attempts, delay, wait,
                        wait_timeout, force);
    }
    if (status->parsed()) return cmd_status(g, status_id, status_queue);
    if (waitcmd->parsed()) return cmd_wait(g, wait_id, wait_queue, wait_limit);
    if (cancelcmd->parsed()) return cmd_cancel(g, cancel_id, cancel_queue, cancel_limit);
    if (deadcmd->parsed()) return cmd_dead(g, dead_action, dead_queue, dead_id, dead_all);
    if (queues->parsed()) return cmd_queues(g);
    if (workers->parsed()) return cmd_workers(g);
    if (jobscmd->parsed()) return cmd_jobs(g, jobs_queue, jobs_state, jobs_limit);
    if (stats->parsed()) return cmd_stats(g, watch, every);
    if (pausecmd->parsed()) return cmd_pause(g, pause_queue, true);
    if (resumecmd->parsed()) return cmd_pause(g, resume_queue, false);
  } catch (const Exit& e) {
    return fail(e.code, e.message, e.code == kUsage ? usage_line(app, parsed_command(app)) : "");
  } catch (const std::exception& e) {
    return fail(kFailure, e.what(), "");
  }
  return kUsage;
}
