// SIGHUP reload of a running jobqd: applied under load without losing, repeating or restarting a
// job; refused whole when invalid; keys that need a restart named; systemd told.
#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <algorithm>
#include <regex>
#include <sstream>

#include "tests/support/daemon.hpp"
#include "tests/support/files.hpp"
#include "tests/support/notify_socket.hpp"

using namespace jq::test;
using namespace std::chrono_literals;

namespace {

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// A handler that says which version of it ran, and when (unix microseconds: bash's clock, no
// process of its own) it started and ended.
std::string timed_handler(const std::string& name, const std::string& tag, const char* sleep_s) {
  return "  " + name + R"(: {type: exec, command: ["/bin/bash", "-c", "echo )" + tag +
         R"( ${{EPOCHREALTIME/./}}; sleep )" + sleep_s + R"(; echo ${{EPOCHREALTIME/./}}"]}
)";
}

struct Span {
  std::string tag;
  std::int64_t from = 0, to = 0;
};

Span span_of(const std::string& result) {
  Span s;
  std::istringstream in(result);
  in >> s.tag >> s.from >> s.to;
  s.from /= 1000;
  s.to /= 1000;
  return s;
}

// The most spans open at one time.
std::size_t max_overlap(const std::vector<Span>& spans) {
  std::vector<std::pair<std::int64_t, int>> edges;
  for (const auto& s : spans) {
    edges.emplace_back(s.from, 1);
    edges.emplace_back(s.to, -1);
  }
  std::sort(edges.begin(), edges.end());  // an end before a start at the same ms
  int open = 0, most = 0;
  for (const auto& [t, d] : edges) most = std::max(most, open += d);
  return static_cast<std::size_t>(most);
}

std::size_t llen(SyncRedis& r, const std::string& queue) {
  return static_cast<std::size_t>(r.cmd({"LLEN", "jobq:{" + queue + "}:pending"}).integer);
}

}  // namespace

TEST_CASE(
    "Reload under load: concurrency raised, a handler changed, a queue added and one removed and "
    "added back; no job lost, run twice or restarted, running jobs finish on their old handler",
    "[integration][reload]") {
  RedisServer redis;
  const std::string before = "handlers:\n" + timed_handler("work", "old", "0.05") +
                             timed_handler("slow", "old3", "1.5") +
                             "  echo: {type: builtin, name: echo}\n"
                             "queues:\n"
                             "  q1: {handler: work, concurrency: 10, buffer: 2000}\n"
                             "  q3: {handler: slow, concurrency: 5}\n";
  // A lease of 10s: 40 programs at once keep both cores busy, and the test's usual 1s lease
  // could then lapse (the daemon would rightly stop its jobs, and they would run again).
  Daemon d(redis, before, "  lease: 10s\n");
  d.start_and_wait(redis, "q1");
  auto r = redis.client();
  const auto jobs1 = ids("a", 2000);
  const auto jobs2 = ids("b", 20);
  const auto jobs3 = ids("c", 20);
  push(r, "q1", jobs_for(jobs1, "{}"));
  push(r, "q2", jobs_for(jobs2, "\"hi\""));  // no queue q2 yet: they wait in pending
  push(r, "q3", jobs_for(jobs3, "{}"));
  // Under way: q1 has all 2,000 in the daemon (fetched: buffered or running), q3 runs 5.
  REQUIRE(eventually(
      [&] { return llen(r, "q1") == 0 && count_status(r, "q1", jobs1, "succeeded") >= 50; }, 20s));
  // q3 has all 20 (a fetch marks them active), 5 of them running.
  REQUIRE(eventually(
      [&] {
        return llen(r, "q3") == 0 &&
               d.log().find("job c", d.log().find("buffered -> running")) != std::string::npos;
      },
      10s));

  // Concurrency 10 -> 40, work's command changed, q2 added, q3 removed.
  d.write_config("handlers:\n" + timed_handler("work", "new", "0.05") +
                 timed_handler("slow", "old3", "1.5") +
                 "  echo: {type: builtin, name: echo}\n"
                 "queues:\n"
                 "  q1: {handler: work, concurrency: 40, buffer: 2000}\n"
                 "  q2: {handler: echo}\n");
  const auto signalled = now_ms();
  REQUIRE(d.reload());
  const auto applied = now_ms();
  CHECK(d.log().find("queue q1: concurrency 40 (was 10)") != std::string::npos);
  CHECK(d.log().find("handler work: changed") != std::string::npos);
  CHECK(d.log().find("queue q3: removed") != std::string::npos);

  // q3: what ran goes on and ends (once); what was buffered goes back to pending.
  CHECK(eventually(
      [&] { return d.log().find("queue q3: drained and let go") != std::string::npos; }, 10s));
  std::size_t ran3 = 0;
  for (const auto& st : job_states(r, "q3", jobs3, {"status", "attempts", "result"})) {
    if (st.at("status") == "succeeded") {
      ++ran3;
      CHECK(st.at("attempts") == "1");
      CHECK(span_of(st.at("result")).tag == "old3");
    } else {
      CHECK(st.at("status") == "queued");  // given back as it was
      CHECK(st.at("attempts") == "0");
    }
  }
  CHECK(ran3 >= 5);  // those running at the reload (and any that started in the first 1.5s)
  CHECK(llen(r, "q3") == jobs3.size() - ran3);

  // q3 back (a second reload): the jobs given back run, each once.
  d.write_config("handlers:\n" + timed_handler("work", "new", "0.05") +
                 timed_handler("slow", "new3", "0.05") +
                 "  echo: {type: builtin, name: echo}\n"
                 "queues:\n"
                 "  q1: {handler: work, concurrency: 40, buffer: 2000}\n"
                 "  q2: {handler: echo}\n"
                 "  q3: {handler: slow, concurrency: 5}\n");
  REQUIRE(d.reload());

  REQUIRE(
      eventually([&] { return count_status(r, "q1", jobs1, "succeeded") == jobs1.size(); }, 60s));
  REQUIRE(
      eventually([&] { return count_status(r, "q2", jobs2, "succeeded") == jobs2.size(); }, 10s));
  REQUIRE(
      eventually([&] { return count_status(r, "q3", jobs3, "succeeded") == jobs3.size(); }, 20s));

  std::vector<Span> old_spans, new_spans;
  for (const auto& st : job_states(r, "q1", jobs1, {"attempts", "result"})) {
    CHECK(st.at("attempts") == "1");
    const Span s = span_of(st.at("result"));
    // Started before the signal: on the old command; after the reload was applied: the new one.
    if (s.from < signalled) CHECK(s.tag == "old");
    if (s.from > applied) CHECK(s.tag == "new");
    (s.tag == "old" ? old_spans : new_spans).push_back(s);
  }
  CHECK(old_spans.size() >= 50);
  CHECK(new_spans.size() >= 1000);
  CHECK(max_overlap(old_spans) <= 10);
  CHECK(max_overlap(new_spans) > 10);
  CHECK(max_overlap(new_spans) <= 40);
  for (const auto& st : job_states(r, "q3", jobs3, {"attempts"})) CHECK(st.at("attempts") == "1");
  // Nothing was taken back from under the daemon (no lease lapsed, nothing reconciled away).
  CHECK(d.log().find("were unknown to it") == std::string::npos);
  CHECK(d.log().find("stopping this daemon's jobs") == std::string::npos);
  CHECK(d.stop() == 0);
}

TEST_CASE(
    "A queue removed and added back at once starts after its former self drained; a cut in "
    "concurrency holds",
    "[integration][reload]") {
  RedisServer redis;
  const std::string with_q =
      "handlers:\n" + timed_handler("slow", "ran", "0.4") +
      "queues:\n  q: {handler: slow, concurrency: 4}\n  other: {handler: slow}\n";
  const std::string without_q =
      "handlers:\n" + timed_handler("slow", "ran", "0.4") + "queues:\n  other: {handler: slow}\n";
  Daemon d(redis, with_q, "  lease: 10s\n");
  d.start_and_wait(redis);
  auto r = redis.client();
  const auto jobs = ids("j", 24);
  push(r, "q", jobs_for(jobs, "{}"));
  REQUIRE(eventually([&] { return d.log().find("buffered -> running") != std::string::npos; }, 5s));
  d.write_config(without_q);
  REQUIRE(d.reload());
  d.write_config("handlers:\n" + timed_handler("slow", "ran", "0.4") +
                 "queues:\n  q: {handler: slow, concurrency: 2}\n  other: {handler: slow}\n");
  REQUIRE(d.reload());
  CHECK(d.log().find("queue q: added: handler slow, concurrency 2 (it starts once its former "
                     "self has drained)") != std::string::npos);
  REQUIRE(eventually([&] { return count_status(r, "q", jobs, "succeeded") == jobs.size(); }, 30s));
  std::vector<Span> before;
  const auto drained = d.log().find("queue q: drained and let go");
  CHECK(drained != std::string::npos);
  for (const auto& st : job_states(r, "q", jobs, {"attempts", "result"})) {
    CHECK(st.at("attempts") == "1");
    before.push_back(span_of(st.at("result")));
  }
  std::sort(before.begin(), before.end(),
            [](const Span& a, const Span& b) { return a.from < b.from; });
  // The first ones ran 4 at once; the rest, after the drain, 2 at once.
  CHECK(max_overlap({before.begin(), before.begin() + 4}) == 4);
  CHECK(max_overlap({before.begin() + 4, before.end()}) <= 2);
  CHECK(d.log().find("were unknown to it") == std::string::npos);
  CHECK(d.stop() == 0);
}

TEST_CASE("An invalid config on reload is refused whole, with its errors; the old one runs on",
          "[integration][reload]") {
  RedisServer redis;
  const std::string good =
      "handlers: {h: {type: builtin, name: echo}}\nqueues:\n  q: {handler: h}\n";
  Daemon d(redis, good);
  d.start_and_wait(redis);
  // Bad YAML, an unknown key, a missing handler, a spool dir that is not there: each refused.
  const std::pair<std::string, std::string> bad[] = {
      {"handlers: {h: {type: builtin, name: echo}}\nqueues:\n  q: {handler: h\n", "not valid YAML"},
      {"handlers: {h: {type: builtin, name: echo}}\nqueues:\n  q: {handler: h, concurency: 3}\n",
       "unknown key 'concurency' in queues.q (did you mean 'concurrency'?)"},
      {"handlers: {h: {type: builtin, name: echo}}\nqueues:\n  q: {handler: nope}\n",
       "queues.q: handler 'nope' is not defined"},
      {"handlers: {h: {type: builtin, name: echo}}\nqueues:\n  q: {handler: h, sources: [{spool: "
       "{dir: /nonexistent/jobqd}}]}\n",
       "spool dir /nonexistent/jobqd: No such file or directory"},
  };
  auto r = redis.client();
  int n = 0;
  for (const auto& [yaml, why] : bad) {
    INFO(yaml);
    d.write_config(yaml);
    CHECK_FALSE(d.reload());
    CHECK(d.log().find(why) != std::string::npos);
    CHECK(d.log().find("reload refused: " + d.config_path()) != std::string::npos);
    // Still serving on the old config.
    const auto one = ids("r" + std::to_string(n++) + "-", 3);
    push(r, "q", jobs_for(one, "1"));
    CHECK(eventually([&] { return count_status(r, "q", one, "succeeded") == one.size(); }, 5s));
  }
  // The errors carry their place in the file.
  INFO(d.log());
  CHECK(d.log().find("reload refused: " + d.config_path() + ":11:19: unknown key 'concurency'") !=
        std::string::npos);
  // A file with several errors: every one logged, then their count; the old config kept.
  d.write_config(
      "handlers: {h: {type: builtin, name: loud}}\nqueues:\n  q: {handler: h, buffer: 0}\n");
  CHECK_FALSE(d.reload());
  const std::string at = "reload refused: " + d.config_path();
  CHECK(d.log().find(at + ":9:37: handlers.h.name: 'loud' is not one of") != std::string::npos);
  CHECK(d.log().find(at + ":11:27: queues.q.buffer: 0 is out of range") != std::string::npos);
  CHECK(d.log().find("reload refused: the running config stays (" + d.config_path() +
                     ": 2 errors; fix and send SIGHUP again)") != std::string::npos);
  const auto kept = ids("kept-", 3);
  push(r, "q", jobs_for(kept, "1"));
  CHECK(eventually([&] { return count_status(r, "q", kept, "succeeded") == kept.size(); }, 5s));
  // Fixed: applied.
  d.write_config(
      "handlers: {h: {type: builtin, name: echo}}\nqueues:\n  q: {handler: h, "
      "concurrency: 3}\n");
  CHECK(d.reload());
  CHECK(d.log().find("queue q: concurrency 3 (was 10)") != std::string::npos);
  CHECK(d.running());
  CHECK(d.stop() == 0);
}

TEST_CASE("A reload names the keys that need a restart and applies the rest",
          "[integration][reload]") {
  RedisServer redis;
  const std::string yaml =
      "handlers: {h: {type: builtin, name: echo}}\nqueues:\n  q: {handler: h}\n";
  Daemon d(redis, yaml);
  d.start_and_wait(redis);
  d.write_config(
      "handlers: {h: {type: builtin, name: echo}}\nqueues:\n  q: {handler: h, concurrency: 2, "
      "shards: 3}\n",
      "  lease: 7s\n  log_level: info\n", "  key_prefix: other\n");
  REQUIRE(d.reload());
  const auto log = d.log();
  CHECK(log.find("reload: daemon.lease changed in " + d.config_path() +
                 ", but it needs a restart: the running value stays") != std::string::npos);
  CHECK(log.find("reload: redis.key_prefix changed") != std::string::npos);
  CHECK(log.find("reload: queues.q.shards changed") != std::string::npos);
  CHECK(log.find("queue q: concurrency 2 (was 10)") != std::string::npos);
  // Still on the old prefix (the running value), and the log level is info now: no debug lines.
  auto r = redis.client();
  const auto one = ids("k", 3);
  const auto size_before = d.log().size();
  push(r, "q", jobs_for(one, "1"));
  CHECK(eventually([&] { return count_status(r, "q", one, "succeeded") == one.size(); }, 5s));
  CHECK(d.log().substr(size_before).find(" debug ") == std::string::npos);
  // Still one shard: every id's state where it was.
  CHECK(r.integer({"EXISTS", "jobq:{q}:shards"}) == 1);
  CHECK(r.str({"GET", "jobq:{q}:shards"}) == "1");
  CHECK(d.stop() == 0);
}

TEST_CASE(
    "systemd hears RELOADING=1 with MONOTONIC_USEC, then READY=1; WATCHDOG=1 while the loop turns",
    "[integration][reload][systemd]") {
  RedisServer redis;
  NotifySocket notify;
  ::setenv("WATCHDOG_USEC", "400000", 1);
  const std::string yaml =
      "handlers: {h: {type: builtin, name: echo}}\nqueues:\n  q: {handler: h}\n";
  Daemon d(redis, yaml);
  d.start_and_wait(redis);
  ::unsetenv("WATCHDOG_USEC");
  notify.unset();
  REQUIRE(notify.wait_for("READY=1", 5s));
  // Pings at half the interval: several within a second.
  REQUIRE(notify.wait_for("WATCHDOG=1", 2s));
  const auto pings = [&] {
    std::size_t n = 0;
    for (const auto& m : notify.messages()) n += m == "WATCHDOG=1";
    return n;
  };
  const auto p0 = pings();
  CHECK(eventually([&] { return pings() >= p0 + 3; }, 2s));
  // A stopped loop sends none. Counted once it has stopped: kill() returns before the stop
  // takes effect, and a ping sent meanwhile is no ping from a stopped loop.
  d.signal(SIGSTOP);
  REQUIRE(eventually([&] { return process_stopped(d.pid()); }, 5s));
  const auto p1 = pings();
  std::this_thread::sleep_for(700ms);  // the silence itself is the thing measured
  CHECK(pings() == p1);
  d.signal(SIGCONT);
  CHECK(eventually([&] { return pings() > p1; }, 2s));

  const auto readies = [&] {
    std::size_t n = 0;
    for (const auto& m : notify.messages()) n += m.find("READY=1") != std::string::npos;
    return n;
  };
  const auto r0 = readies();
  d.write_config(
      "handlers: {h: {type: builtin, name: echo}}\nqueues:\n  q: {handler: h, concurrency: 4}\n");
  REQUIRE(d.reload());
  REQUIRE(eventually([&] { return readies() > r0; }, 5s));
  // RELOADING=1 came first, with the monotonic clock's microseconds.
  const auto& all = notify.messages();
  auto reloading = std::find_if(all.begin(), all.end(), [](const std::string& m) {
    return m.find("RELOADING=1") != std::string::npos;
  });
  REQUIRE(reloading != all.end());
  CHECK(std::regex_search(*reloading, std::regex(R"(MONOTONIC_USEC=\d+)")));
  bool ready_after = false;
  for (auto it = reloading; it != all.end(); ++it)
    ready_after = ready_after || it->find("READY=1") != std::string::npos;
  CHECK(ready_after);
  CHECK(d.stop() == 0);
  CHECK(notify.wait_for("STOPPING=1", 2s));
}

TEST_CASE(
    "A reload moves a queue from one spool dir to another: the running file finishes, new "
    "files are taken from the new dir only",
    "[integration][reload][spool]") {
  RedisServer redis;
  TempDir dirs;
  const std::string a = (dirs.path() / "a").string(), b = (dirs.path() / "b").string();
  ::mkdir(a.c_str(), 0755);
  ::mkdir(b.c_str(), 0755);
  auto yaml = [&](const std::string& dir) {
    return "handlers:\n" + timed_handler("slow", "ran", "1") +
           "queues:\n  q: {handler: slow, sources: [{spool: {dir: " + dir +
           ", on_success: move, quiet: 0s}}]}\n";
  };
  Daemon d(redis, yaml(a));
  d.start();
  INFO(d.log());
  REQUIRE(eventually([&] { return d.log().find("jobqd serving") != std::string::npos; }, 10s));
  write_file(a + "/first.json", R"({"id": "first", "payload": 1})");
  // Running (its handler sleeps 1s) when the reload comes.
  REQUIRE(eventually(
      [&] { return d.log().find("job first: buffered -> running") != std::string::npos; }, 5s));
  d.write_config(yaml(b));
  REQUIRE(d.reload());
  write_file(b + "/second.json", R"({"id": "second", "payload": 1})");
  write_file(a + "/stray.json", R"({"id": "stray", "payload": 1})");
  auto r = redis.client();
  CHECK(eventually(
      [&] {
        return count_status(r, "q", {"first", "second"}, "succeeded") == 2;
      },
      10s));
  CHECK(eventually([&] { return d.log().find("spool dir " + a + ": let go") != std::string::npos; },
                   5s));
  CHECK(job_states(r, "q", {"first"}, {"attempts"})[0]["attempts"] == "1");
  // The old dir is no longer watched: its new file stays where it was dropped.
  CHECK(std::filesystem::exists(a + "/stray.json"));
  // The state is written before the file moves (a crash between runs it again): poll for both.
  CHECK(eventually([&] { return std::filesystem::exists(a + "/done/first.json"); }, 5s));
  CHECK(eventually([&] { return std::filesystem::exists(b + "/done/second.json"); }, 5s));
  CHECK(d.stop() == 0);
}
