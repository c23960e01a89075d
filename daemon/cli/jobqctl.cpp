// jobqctl: submit jobs and follow them (a synchronous client: a CLI has no loop to share).
#include <hiredis/hiredis.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "config/units.hpp"
#include "job/id.hpp"
#include "job/text.hpp"
#include "ops/embedded_redis.hpp"
#include "redis/reply.hpp"
#include "redis/script.hpp"
#include "redis/url.hpp"
#include "store/keys.hpp"
#include "store/marker.hpp"
#include "store/scripts.hpp"

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

// Finds which queue holds job `id`: the one given, else each configured queue.
std::string find_queue(redisContext* c, const Target& t, const std::string& id,
                       const std::string& queue) {
  if (!queue.empty()) return queue;
  if (!t.cfg) throw Exit{kUsage, "no config to list the queues: give -q QUEUE"};
  for (const auto& q : t.cfg->queues) {
    if (call(c, {"EXISTS", keys(t, q.name).job(id)}).as_int() == 1) return q.name;
  }
  throw Exit{kFailure, "no job " + id + " in any configured queue"};
}

void print_job(const std::string& id, const std::map<std::string, std::string>& h, bool as_json) {
  if (as_json) {
    json j = {{"id", id}};
    for (const auto& [k, v] : h) j[k] = v;
    std::cout << dump(j) << "\n";
    return;
  }
  std::cout << "id: " << id << "\n";
  for (const char* f : kFields) {
    auto it = h.find(f);
    if (it != h.end() && !it->second.empty()) std::cout << f << ": " << it->second << "\n";
  }
}

bool final_status(const std::string& s) {
  return s == "succeeded" || s == "failed" || s == "cancelled";
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
      print_job(id, h, true);
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
        std::cerr << "job " << id << ": still " << (st == h.end() ? "unknown" : st->second)
                  << " after " << config::format_duration(*timeout) << "\n";
        return kTimedOut;
      }
      slice = std::min(slice, left);
    }
    timeval tv{static_cast<time_t>(slice.count() / 1000),
               static_cast<suseconds_t>(slice.count() % 1000 * 1000)};
    redisSetTimeout(sub.get(), tv);
    void* r = nullptr;
    if (redisGetReply(sub.get(), &r) != REDIS_OK) {
      if (sub->err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        // Timed out: hiredis marks the context failed; subscribe again on a new one.
        sub = open(t);
        call(sub.get(), {"SUBSCRIBE", k.events});
        continue;
      }
      throw Exit{kFailure, "redis: " + redis::reader_error(sub->errstr)};
    }
    auto msg = redis::Reply::copy(*static_cast<redisReply*>(r));
    freeReplyObject(r);
    if (msg.is_array() && msg.elements.size() == 3 && msg.elements[0].str == "message") {
      auto event = job::parse_json(msg.elements[2].str);
      if (auto* j = std::get_if<json>(&event); j && j->is_object() && j->value("id", "") == id) {
        std::string status = j->value("status", "");
        if (final_status(status)) announced = status;
      }
    }
  }
}

int cmd_submit(const Globals& g, const std::string& queue, const std::string& payload_arg,
               const std::string& id_arg, const std::string& handler, const std::string& timeout,
               unsigned max_attempts, const std::string& delay, bool wait,
               const std::string& wait_timeout) {
  if (!config::valid_name(queue))
    throw Exit{kUsage, "queue name '" + queue + "': use [A-Za-z0-9_.-]{1,64}"};
  Target t = resolve(g);
  if (t.cfg && !t.cfg->queue(queue)) {
    std::cerr << "jobqctl: warning: queue " << queue << " is not in " << g.config_path
              << "; no daemon using that config will run it\n";
  }
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

int cmd_status(const Globals& g, const std::string& id, const std::string& queue) {
  Target t = resolve(g);
  Conn c = open(t);
  std::string q = find_queue(c.get(), t, id, queue);
  auto h = job_hash(c.get(), keys(t, q).job(id));
  if (h.empty()) throw Exit{kFailure, "no job " + id + " in queue " + q};
  print_job(id, h, g.json_out);
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

int cmd_dead(const Globals& g, const std::string& action, const std::string& queue,
             const std::string& id, bool all) {
  if (!config::valid_name(queue))
    throw Exit{kUsage, "queue name '" + queue + "': use [A-Za-z0-9_.-]{1,64}"};
  Target t = resolve(g);
  Conn c = open(t);
  const auto k = keys(t, queue);
  if (action == "list") {
    auto ids = call(c.get(), {"ZRANGE", k.dead, "0", "-1"});
    json out = json::array();
    for (const auto& e : ids.elements) {
      auto h = job_hash(c.get(), k.job(e.str));
      if (h["status"] != "failed") continue;  // a newer job of that id has its state now
      if (g.json_out) {
        json j = {{"id", e.str}};
        for (const auto& [f, v] : h) j[f] = v;
        out.push_back(j);
      } else {
        std::cout << e.str << "  " << h["finished_at"] << "  " << h["error_kind"] << "  "
                  << h["error"] << "\n";
      }
    }
    if (g.json_out) std::cout << dump(out) << "\n";
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

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"jobqctl: submit jobs to jobqd and follow them"};
  app.require_subcommand(1);
  Globals g;
  app.add_option("-c,--config", g.config_path, "jobqd config (for the Redis URL and queues)")
      ->capture_default_str()
      ->each([&](const std::string&) { g.config_given = true; });
  app.add_option("--redis", g.redis_url, "Redis URL (instead of the config's)");
  app.add_flag("--json", g.json_out, "machine-readable output");

  std::string queue, payload, id, handler, timeout, delay, wait_timeout;
  unsigned max_attempts = 0;
  bool wait = false;
  auto* submit =
      app.add_subcommand("submit", "submit a job; prints its id (or, with --wait, its result)");
  submit->add_option("QUEUE", queue, "queue name")->required();
  submit->add_option("PAYLOAD", payload, "the payload as JSON, or - to read it from stdin");
  submit->add_option("--id", id, "the job's id (default: a new time-ordered one)");
  submit->add_option("--handler", handler, "a configured handler (default: the queue's)");
  submit->add_option("--timeout", timeout, "job timeout, like 30s (capped by the queue)");
  submit->add_option("--max-attempts", max_attempts,
                     "attempts before it is dead (capped by the queue)");
  submit->add_option("--delay", delay, "run it this much later, like 5m");
  submit->add_flag("--wait", wait, "wait for the end: print the result, exit 1 if it failed");
  submit->add_option("--wait-timeout", wait_timeout, "give up waiting after this long (exit 124)");

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

  std::string dead_action, dead_queue, dead_id;
  bool dead_all = false;
  auto* deadcmd = app.add_subcommand("dead", "list, requeue (retry) or delete (purge) dead jobs");
  deadcmd->add_option("ACTION", dead_action, "list, retry or purge")
      ->required()
      ->check(CLI::IsMember({"list", "retry", "purge"}));
  deadcmd->add_option("QUEUE", dead_queue, "queue name")->required();
  deadcmd->add_option("ID", dead_id, "one dead job (retry, purge)");
  deadcmd->add_flag("--all", dead_all, "every dead job of the queue (retry, purge)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "jobqctl: " << e.what() << "\n";
    return kUsage;
  }
  try {
    if (submit->parsed()) {
      return cmd_submit(g, queue, payload, id, handler, timeout, max_attempts, delay, wait,
                        wait_timeout);
    }
    if (status->parsed()) return cmd_status(g, status_id, status_queue);
    if (waitcmd->parsed()) return cmd_wait(g, wait_id, wait_queue, wait_limit);
    if (deadcmd->parsed()) return cmd_dead(g, dead_action, dead_queue, dead_id, dead_all);
  } catch (const Exit& e) {
    std::cerr << "jobqctl: " << e.message << "\n";
    return e.code;
  } catch (const std::exception& e) {
    std::cerr << "jobqctl: " << e.what() << "\n";
    return kFailure;
  }
  return kUsage;
}
