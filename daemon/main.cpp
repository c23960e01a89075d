// jobqd: parse arguments, load the config, run the engine until SIGTERM/SIGINT.
#include <signal.h>

#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <optional>

#include "async/async.hpp"
#include "config/config.hpp"
#include "config/suggest.hpp"
#include "engine/engine.hpp"
#include "ops/embedded_redis.hpp"
#include "ops/log.hpp"
#include "ops/preflight.hpp"
#include "ops/status_http.hpp"
#include "ops/systemd.hpp"
#include "redis/url.hpp"
#include "version.hpp"

namespace {

using namespace jq;

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;
constexpr int kExitConfig = 78;

// The start-up banner: what this jobqd is and what it will serve, before anything happens.
void banner(const config::Config& cfg) {
  const std::string redis = cfg.redis.url == "embedded"
                                ? "Redis embedded in " + cfg.daemon.state_dir
                                : "Redis at " + redis::parse_url(cfg.redis.url).display();
  std::error_code ec;
  const auto path = std::filesystem::absolute(cfg.path, ec);
  spdlog::info("jobqd {} starting: config {}, {}, state {}", jq::version(),
               ec ? cfg.path : path.string(), redis, cfg.daemon.state_dir);
  for (const auto& q : cfg.queues) {
    std::string from;
    for (const auto& src : q.sources) {
      if (!from.empty()) from += " + ";
      from += src.kind == config::SourceConfig::Kind::redis
                  ? std::string("redis")
                  : "spool " + src.dir + (src.recursive ? " (recursive)" : "");
    }
    spdlog::info("queue {}: handler {}, concurrency {}, buffer {}, from {}", q.name, q.handler,
                 q.concurrency, q.buffer, from);
  }
}

// Every `every`: one info line per queue with what it did since the last one (a quiet log still
// shows life), and the systemd STATUS line.
async::Task<void> summaries(const engine::Engine& e, config::Millis every) {
  // By name: a reload adds and removes queues.
  std::map<std::string, engine::QueueStats> last;
  for (;;) {
    co_await async::sleep(every);
    std::uint64_t done = 0, running = 0;
    std::map<std::string, engine::QueueStats> now_all;
    for (const auto* q : e.queues()) {
      const auto& now = q->stats();
      auto was = last[q->name()];
      // Removed and added back by reloads since the last line: counting from zero again.
      if (now.succeeded < was.succeeded || now.dead < was.dead || now.retried < was.retried ||
          now.invalid < was.invalid) {
        was = {};
      }
      spdlog::info(
          "queue {}: in the last {}: {} succeeded, {} retried, {} failed, {} invalid; {} running, "
          "{} buffered",
          q->name(), config::format_duration(every), now.succeeded - was.succeeded,
          now.retried - was.retried, now.dead - was.dead, now.invalid - was.invalid, q->running(),
          q->buffered());
      done += now.succeeded + now.dead + now.invalid - was.succeeded - was.dead - was.invalid;
      running += q->running();
      now_all[q->name()] = now;
    }
    last = std::move(now_all);
    ops::notify("STATUS=serving " + std::to_string(e.queues().size()) + " queue(s), " +
                std::to_string(running) + " running, " + std::to_string(done) +
                " done in the last " + config::format_duration(every));
  }
}

std::string monotonic_usec() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return std::to_string(static_cast<long long>(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000);
}

// JOBQD_REDIS_URL, like jobqctl's: the Redis to use instead of the config's redis.url (rq and
// asynq read theirs from the environment too). Problems in the config's way.
std::vector<std::string> apply_env(config::Config& cfg) {
  const char* url = std::getenv("JOBQD_REDIS_URL");
  if (!url || !*url) return {};
  try {
    (void)redis::parse_url(url);
  } catch (const std::invalid_argument& e) {
    return {std::string("JOBQD_REDIS_URL: ") + e.what()};
  }
  cfg.redis.url = url;
  return {};
}

// SIGHUP: the file read and checked again as at start; a valid one applied by the engine, an
// invalid one logged with its errors while the running config stays. True if applied.
bool reload(const std::string& path, engine::Engine& e) {
  ops::notify("RELOADING=1\nMONOTONIC_USEC=" + monotonic_usec());
  spdlog::info("SIGHUP: reloading {}", path);
  std::vector<std::string> problems;
  config::Config next;
  try {
    next = config::load_file(path);
    problems = apply_env(next);
    if (problems.empty()) problems = ops::preflight(next);
  } catch (const config::ConfigError& err) {
    for (const auto& p : err.problems()) problems.push_back(p.text());
  }
  std::vector<std::string> restart;
  if (problems.empty()) {
    try {
      restart = e.reload(next);
    } catch (const std::exception& err) {
      problems.push_back(path + ": " + err.what());
    }
  }
  auto& stats = e.reload_stats();
  if (!problems.empty()) {
    for (const auto& p : problems) spdlog::error("reload refused: {}", p);
    spdlog::error("reload refused: the running config stays ({}; fix and send SIGHUP again)",
                  config::count_line(path, problems.size()));
    ++stats.failed;
    stats.last_ok = false;
  } else {
    for (const auto& k : restart) {
      spdlog::warn("reload: {} changed in {}, but it needs a restart: the running value stays", k,
                   path);
    }
    ++stats.ok;
    stats.last_ok = true;
    stats.restart_needed = restart;
    spdlog::set_level(spdlog::level::from_str(e.config().daemon.log_level));
    spdlog::info("reload done: {} queue(s), {} handler(s)", e.config().queues.size(),
                 e.config().handlers.size());
  }
  ops::notify("READY=1\nSTATUS=serving " + std::to_string(e.queues().size()) + " queue(s)" +
              (problems.empty() ? "" : "; the last reload was refused (see the log)"));
  return problems.empty();
}

// The daemon's life in order, from start to exit: kept as one function over 80 lines on purpose,
// so that the whole server reads in one sitting (start, serve, reload, stop), each step a call.
async::Task<int> serve(const config::Config& cfg) {
  async::SignalSet signals(async::Loop::current(), {SIGTERM, SIGINT, SIGHUP});
  banner(cfg);

  std::optional<ops::EmbeddedRedis> embedded;
  std::string url = cfg.redis.url;
  if (url == "embedded") {
    embedded.emplace(cfg.redis.server_binary, cfg.daemon.state_dir,
                     static_cast<int>(cfg.redis.embedded_port));
    std::string failed;
    try {
      co_await embedded->start();
    } catch (const std::exception& e) {
      failed = e.what();
    }
    if (!failed.empty()) {
      spdlog::critical("{}", failed);
      co_return kExitFailure;
    }
    url = embedded->url();
  }

  std::optional<engine::Engine> engine;
  std::string error;
  try {
    engine.emplace(cfg, url);
  } catch (const std::exception& e) {
    error = e.what();
  }
  if (!error.empty()) {
    spdlog::critical("{}", error);
    if (embedded) co_await embedded->stop();
    co_return kExitFailure;
  }
  std::optional<ops::StatusHttp> http;
  if (!cfg.http.listen.empty()) {
    try {
      std::string token = cfg.http.token_file.empty()
                              ? std::string()
                              : config::read_secret(cfg.http.token_file, "http.token_file");
      http.emplace(cfg.http.listen, std::move(token), *engine);
    } catch (const std::exception& e) {
      error = e.what();
    }
    if (!error.empty()) {
      spdlog::critical("{}", error);
      engine.reset();
      if (embedded) co_await embedded->stop();
      co_return kExitFailure;
    }
    http->start();
    spdlog::info("http: /metrics and /healthz on {}{}", http->address(),
                 cfg.http.token_file.empty() ? "" : " (a bearer token needed but for /healthz)");
  }
  engine->start();
  auto watchdog = async::spawn(ops::watchdog(), "systemd watchdog");
  // READY and "serving" once Redis answers on every connection, not before: a unit ordered
  // after jobqd, or an operator reading the log, must be able to trust them. Signals are served
  // meanwhile (a stop while Redis is away still stops).
  auto announce = [](const config::Config& cfg, engine::Engine& e, std::string where,
                     ops::StatusHttp* web) -> async::Task<void> {
    ops::notify("STATUS=waiting for " + where);
    co_await e.wait_ready(std::chrono::seconds(5));
    std::string queues;
    for (const auto& q : cfg.queues) queues += (queues.empty() ? "" : ", ") + q.name;
    spdlog::info("jobqd serving queue(s) {} from {} as worker {}", queues, where, e.worker_id());
    if (web) web->set_serving(true);
    ops::notify("READY=1\nSTATUS=serving " + std::to_string(cfg.queues.size()) + " queue(s)");
  };
  async::JoinHandle<void> reports;
  auto report_every = [&](config::Millis every) {
    if (reports.valid()) reports.cancel();
    reports = {};
    if (every.count() > 0) reports = async::spawn(summaries(*engine, every), "summaries");
  };
  report_every(cfg.daemon.log_summary);
  const std::string where =
      url == cfg.redis.url ? "Redis at " + redis::parse_url(url).display() : "the embedded Redis";
  auto ready = async::spawn(announce(cfg, *engine, where, http ? &*http : nullptr), "ready");

  int sig = 0;
  for (;;) {
    sig = co_await signals.next();
    if (sig != SIGHUP) break;
    const auto every = engine->config().daemon.log_summary;
    if (reload(cfg.path, *engine) && engine->config().daemon.log_summary != every) {
      report_every(engine->config().daemon.log_summary);
    }
  }
  spdlog::info("{}: stopping (running jobs may finish within {}; a second signal stops them now)",
               sig == SIGINT ? "SIGINT" : "SIGTERM",
               config::format_duration(engine->config().daemon.shutdown_grace));
  ops::notify("STOPPING=1");
  auto hurry = [](async::SignalSet& s, engine::Engine& e) -> async::Task<void> {
    for (;;) {
      int again = co_await s.next();
      if (again == SIGHUP) continue;
      spdlog::warn("second stop signal: stopping running jobs now (they go back to pending)");
      e.hurry();
    }
  };
  auto hurrier = async::spawn(hurry(signals, *engine), "second signal");
  if (ready.valid()) ready.cancel();
  if (reports.valid()) reports.cancel();
  if (http) http->set_serving(false);
  co_await engine->stop();
  if (http) co_await http->stop();
  hurrier.cancel();
  watchdog.cancel();
  engine.reset();
  if (embedded) co_await embedded->stop();
  spdlog::info("jobqd stopped");
  co_return kExitOk;
}

// " (did you mean --check-config?)" for the first unknown --flag that is within two edits of a
// known one, as the config checker does for keys; else "".
std::string did_you_mean(const CLI::App& app, int argc, char** argv) {
  std::vector<std::string> known;
  for (const CLI::Option* o : app.get_options()) {
    for (const auto& name : o->get_lnames()) known.push_back("--" + name);
  }
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0) continue;
    arg = arg.substr(0, arg.find('='));
    if (std::find(known.begin(), known.end(), arg) != known.end()) continue;
    const std::string best = config::closest(arg, known);
    return best.empty() ? "" : " (did you mean " + best + "?)";
  }
  return "";
}

}  // namespace

// The command line, the config, the embedded Redis and the loop: one function over 80 lines on
// purpose, read top to bottom as the order things start in.
int main(int argc, char** argv) {
  CLI::App app{"jobqd: an asynchronous job-processing daemon"};
  std::string config_path = "/etc/jobqd/jobqd.yaml";
  bool check_only = false;
  bool print_only = false;
  app.add_option("-c,--config", config_path, "config file")
      ->capture_default_str()
      ->envname("JOBQD_CONFIG");
  app.add_flag("--check-config", check_only,
               "validate the config file and exit: 0 if valid, else 78 and every error, one "
               "file:line:column: message a line, then their count");
  app.add_flag("--print-config", print_only,
               "print the effective config (every default filled in, secrets masked) and exit");
  app.set_version_flag("--version", std::string("jobqd ") + jq::version());
  app.footer(R"(
Takes jobs from Redis (LPUSH to P:{QUEUE}:pending) and from watched spool directories, runs
each through its queue's handler (a program, a webhook, a builtin) under a timeout, with
retries and dead letters. Runs in the foreground; logs to stderr.

SIGNALS
  SIGTERM, SIGINT  stop taking jobs, let running ones finish within daemon.shutdown_grace,
                   give the rest back; a second one stops running jobs at once
  SIGHUP           reload the config: a valid file is applied without losing, repeating or
                   restarting a job (queues added, removed, resized; handlers changed);
                   keys that need a restart are named in the log and keep their value; an
                   invalid file is logged with its errors and the running config stays

EXIT STATUS
  0 stopped cleanly, 1 failed at run time, 2 bad arguments, 78 configuration error
  (every error as file:line:column: message on stderr, then their count)

HTTP (http.listen, default 127.0.0.1:9464)
  GET /healthz     200 once serving, 503 with the reason
  GET /metrics     Prometheus text format

SYSTEMD
  Type=notify: READY=1 once Redis answers, STATUS, STOPPING=1, WATCHDOG=1 from the loop,
  RELOADING=1 then READY=1 around a reload (ExecReload=kill -HUP $MAINPID)

ENVIRONMENT
  JOBQD_CONFIG            the config file, as -c gives it (-c wins)
  JOBQD_REDIS_URL         the Redis to use instead of the config's redis.url

FILES
  /etc/jobqd/jobqd.yaml   the config (every key: share/doc/jobqd/docs/config.md)
  /var/lib/jobqd          daemon.state_dir (the embedded Redis lives there)

SEE ALSO
  jobqctl --help; docs/CONTRACT.md (the external interface), docs/spool.md)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // The error and one line of usage: the whole manual would push the error off the screen.
    std::cerr << "jobqd: " << e.what() << did_you_mean(app, argc, argv) << "\n"
              << "usage: jobqd [-c FILE] [--check-config | --print-config] (jobqd --help)\n";
    return kExitUsage;
  }

  // Every problem, a compiler's way: one `file:line:column: message` a line, then the count.
  const auto refuse = [&](const std::vector<std::string>& problems) {
    for (const auto& p : problems) std::cerr << p << "\n";
    std::cerr << config::count_line(config_path, problems.size()) << "\n";
    return kExitConfig;
  };
  config::Config cfg;
  try {
    cfg = config::load_file(config_path);
  } catch (const config::ConfigError& e) {
    std::vector<std::string> lines;
    for (const auto& p : e.problems()) lines.push_back(p.text());
    return refuse(lines);
  }
  if (auto env = apply_env(cfg); !env.empty()) return refuse(env);
  if (print_only) {
    std::cout << config::print(cfg);
    return kExitOk;
  }
  // Everything the daemon would refuse at start is refused here, --check-config or not.
  auto problems = ops::preflight(cfg);
  if (!problems.empty()) return refuse(problems);
  if (check_only) {
    std::cout << config_path << ": valid (" << cfg.queues.size() << " queue(s), "
              << cfg.handlers.size() << " handler(s))\n";
    return kExitOk;
  }

  // Before any thread exists: the keeper is a fork of this process.
  try {
    async::kill_groups_on_exit();
  } catch (const std::exception& e) {
    std::cerr << "jobqd: " << e.what() << "\n";
    return kExitFailure;
  }
  ops::setup_logging(cfg.daemon.log_level, cfg.logging.json);
  // A peer closing a pipe or socket must fail the write, not kill the daemon.
  ::signal(SIGPIPE, SIG_IGN);
  // A spool scan takes a read lease for an instant (sources/spool_dir.cpp); a writer opening the
  // file then raises SIGIO, whose default would end the daemon.
  ::signal(SIGIO, SIG_IGN);
  try {
    async::Loop loop;
    return async::run(loop, serve(cfg));
  } catch (const std::exception& e) {
    spdlog::critical("jobqd failed: {}", e.what());
    return kExitFailure;
  }
}
