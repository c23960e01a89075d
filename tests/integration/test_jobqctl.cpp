// jobqctl against a running jobqd: submit, --wait outcomes and exit codes, status, delay.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include <regex>
#include <set>
#include <thread>

#include "tests/support/daemon.hpp"
#include "tests/support/files.hpp"

using namespace jq::test;
using namespace std::chrono_literals;

namespace {

const char* kYaml = R"(
handlers:
  echo: {type: builtin, name: echo}
  fail: {type: builtin, name: fail}
  sleep: {type: builtin, name: sleep}
queues:
  q: {handler: echo, max_attempts: 2, retry_base: 50ms, delayed_poll: 20ms}
)";

}  // namespace

TEST_CASE("jobqctl submit --wait prints the result, or fails with the job's error",
          "[integration][cli]") {
  RedisServer redis;
  Daemon d(redis, kYaml);
  d.start_and_wait(redis);
  auto ok = jobqctl(redis, {"submit", "q", R"({"a":[1,2]})", "--wait", "--wait-timeout", "10s"});
  CHECK(ok.code == 0);
  CHECK(ok.out == "{\"a\":[1,2]}\n");
  auto bad = jobqctl(redis, {"submit", "q", R"({"message":"kaput"})", "--handler", "fail", "--wait",
                             "--wait-timeout", "10s"});
  CHECK(bad.code == 1);
  CHECK(bad.out.find("failed (exception): kaput") != std::string::npos);
  auto slow = jobqctl(redis, {"submit", "q", R"({"ms":5000})", "--handler", "sleep", "--wait",
                              "--wait-timeout", "300ms"});
  CHECK(slow.code == 124);
  CHECK(slow.out.find("still active after 300ms") != std::string::npos);
}

TEST_CASE("jobqctl submit prints the id; status shows the state; --delay defers",
          "[integration][cli]") {
  RedisServer redis;
  Daemon d(redis, kYaml);
  d.start_and_wait(redis);
  auto sub = jobqctl(redis, {"submit", "q", "7", "--id", "my-job:1", "--delay", "300ms"});
  REQUIRE(sub.code == 0);
  CHECK(sub.out == "my-job:1\n");
  auto queued = jobqctl(redis, {"--json", "status", "my-job:1", "-q", "q"});
  CHECK(queued.code == 0);
  CHECK(queued.out.find(R"("status":"queued")") != std::string::npos);
  auto waited = jobqctl(redis, {"wait", "my-job:1", "-q", "q", "--wait-timeout", "10s"});
  CHECK(waited.code == 0);
  CHECK(waited.out == "7\n");
  auto r = redis.client();
  auto started = std::stoll(r.str({"HGET", "jobq:{q}:job:my-job:1", "started_at"}));
  auto submitted = std::stoll(r.str({"HGET", "jobq:{q}:job:my-job:1", "submitted_at"}));
  CHECK(started - submitted >= 300);
}

TEST_CASE("jobqctl usage errors exit 2 and say what is wrong", "[integration][cli]") {
  RedisServer redis;
  auto not_json = jobqctl(redis, {"submit", "q", "not json"});
  CHECK(not_json.code == 2);
  CHECK(not_json.out.find("PAYLOAD is not JSON") != std::string::npos);
  // Cut short, it says so: the end of its 7 bytes, not a byte past them.
  auto cut = jobqctl(redis, {"submit", "q", R"({"n": 1)"});
  CHECK(cut.code == 2);
  CHECK_THAT(cut.out, Catch::Contains("unexpected end of input") &&
                          Catch::Contains("(at the end, after byte 7)") &&
                          !Catch::Contains("of 7)"));
  auto bad_id = jobqctl(redis, {"submit", "q", "{}", "--id", "has space"});
  CHECK(bad_id.code == 2);
  auto bad_delay = jobqctl(redis, {"submit", "q", "{}", "--delay", "soon"});
  CHECK(bad_delay.code == 2);
  CHECK(bad_delay.out.find("--delay: 'soon' is not a duration") != std::string::npos);
  CHECK(jobqctl(redis, {}).code == 2);
  auto missing = jobqctl(redis, {"status", "nope", "-q", "q"});
  CHECK(missing.code == 1);
  CHECK(missing.out.find("no job nope in queue q") != std::string::npos);
}

TEST_CASE("jobqctl dead list, retry (the job runs again from scratch) and purge",
          "[integration][cli]") {
  RedisServer redis;
  const char* yaml = R"(
handlers:
  fail: {type: builtin, name: fail}
  echo: {type: builtin, name: echo}
queues:
  q: {handler: fail, max_attempts: 1}
)";
  Daemon d(redis, yaml);
  d.start_and_wait(redis);
  auto r = redis.client();
  push(r, "q",
       {R"({"id":"d1","payload":{"message":"first"}})", R"({"id":"d2","payload":{}})",
        R"({"id":"d3","payload":{}})"});
  REQUIRE(eventually([&] { return r.integer({"ZCARD", "jobq:{q}:dead"}) == 3; }, 10s));
  auto list = jobqctl(redis, {"dead", "list", "q"});
  CHECK(list.code == 0);
  CHECK(list.out.rfind("ID  DIED ", 0) == 0);
  CHECK(std::regex_search(list.out, std::regex(R"(\nd1  +20\d\d-.* +exception  +first\n)")));
  auto json = jobqctl(redis, {"--json", "dead", "list", "q"});
  CHECK(json.out.find(R"("id":"d2")") != std::string::npos);
  // A requeued job runs again from a clean slate (here it fails again: a fresh first attempt).
  auto retry = jobqctl(redis, {"dead", "retry", "q", "d1"});
  CHECK(retry.code == 0);
  CHECK(retry.out == "requeued 1 job(s)\n");
  REQUIRE(eventually([&] { return r.integer({"ZCARD", "jobq:{q}:dead"}) == 3; }, 10s));
  CHECK(r.str({"HGET", "jobq:{q}:job:d1", "attempts"}) == "1");
  auto purge = jobqctl(redis, {"dead", "purge", "q", "--all"});
  CHECK(purge.out == "purged 3 job(s)\n");
  CHECK(r.integer({"ZCARD", "jobq:{q}:dead"}) == 0);
  CHECK(r.integer({"EXISTS", "jobq:{q}:job:d2"}) == 0);
  CHECK(jobqctl(redis, {"dead", "retry", "q"}).code == 2);  // neither ID nor --all
  CHECK(jobqctl(redis, {"dead", "retry", "q", "gone"}).code == 1);
}

TEST_CASE("The Redis password from a file or a variable, for jobqd and jobqctl alike",
          "[integration][jobqctl][secrets]") {
  RedisServer redis;
  auto admin = redis.client();
  admin.cmd({"CONFIG", "SET", "requirepass", "pw-1"});  // this connection stays signed in
  TempDir dir;
  const auto file = (dir.path() / "redis.pw").string();
  jq::test::write_file(file, "pw-1\n");
  const char* yaml = "handlers: {e: {type: builtin, name: echo}}\nqueues:\n  q: {handler: e}\n";
  // (start_and_wait's own connection would need the password: the serving line says it.)
  auto serving = [](Daemon& d) {
    d.start();
    return eventually([&] { return d.log().find("jobqd serving") != std::string::npos; }, 10s);
  };
  {
    Daemon d(redis, yaml, "", "  password_file: " + file + "\n");
    REQUIRE(serving(d));
    auto ok = run_program({(build_dir() / "jobqctl").string(), "-c", d.config_path(), "submit", "q",
                           "7", "--wait", "--wait-timeout", "10s"});
    INFO(ok.out);
    CHECK(ok.code == 0);
    CHECK(d.log().find("pw-1") == std::string::npos);  // never in a log line
    CHECK(d.stop() == 0);
  }
  ::setenv("JOBQ_TEST_REDIS_PW", "pw-1", 1);
  {
    Daemon d(redis, yaml, "", "  password_env: JOBQ_TEST_REDIS_PW\n");
    REQUIRE(serving(d));
    CHECK(d.stop() == 0);
  }
  ::unsetenv("JOBQ_TEST_REDIS_PW");
  Daemon missing(redis, yaml, "", "  password_env: JOBQ_TEST_REDIS_PW\n");
  auto check = run_program(
      {(build_dir() / "jobqd").string(), "--check-config", "-c", missing.config_path()});
  CHECK(check.code == 78);
  CHECK(check.out.find("redis.password_env: the variable JOBQ_TEST_REDIS_PW is not set") !=
        std::string::npos);
  admin.cmd({"CONFIG", "SET", "requirepass", ""});
}

TEST_CASE(
    "jobqctl pause: every jobqd stops taking the queue's jobs within a second; resume; the "
    "pause outlives a restart",
    "[integration][cli]") {
  RedisServer redis;
  Daemon d1(redis, kYaml), d2(redis, kYaml);
  d1.start_and_wait(redis);
  d2.start_and_wait(redis);
  auto r = redis.client();
  const auto paused = jobqctl(redis, {"pause", "q"});
  CHECK(paused.code == 0);
  CHECK(paused.out ==
        "queue q paused: every jobqd stops starting its jobs within a second (running ones "
        "finish; buffered ones wait)\n");
  CHECK(jobqctl(redis, {"pause", "q"}).out == "queue q was paused already\n");
  for (auto* d : {&d1, &d2}) {
    CHECK(eventually([&] { return d->log().find("queue q: paused") != std::string::npos; }, 2s));
  }
  const auto first = ids("p", 5);
  push(r, "q", jobs_for(first, "1"));
  std::this_thread::sleep_for(1500ms);  // the absence of any fetch is what is measured
  CHECK(r.cmd({"LLEN", "jobq:{q}:pending"}).integer == 5);
  CHECK(jobqctl(redis, {"resume", "q"}).code == 0);
  CHECK(eventually([&] { return count_status(r, "q", first, "succeeded") == first.size(); }, 3s));
  for (auto* d : {&d1, &d2}) {
    CHECK(eventually([&] { return d->log().find("queue q: resumed") != std::string::npos; }, 2s));
  }
  CHECK(jobqctl(redis, {"resume", "q"}).out == "queue q was not paused\n");

  // Paused while no daemon runs: a daemon started later takes nothing until resume.
  CHECK(jobqctl(redis, {"pause", "q"}).code == 0);
  d1.kill9();
  d2.kill9();
  const auto second = ids("s", 3);
  push(r, "q", jobs_for(second, "1"));
  Daemon d3(redis, kYaml);
  d3.start_and_wait(redis);
  CHECK(eventually([&] { return d3.log().find("queue q: paused") != std::string::npos; }, 3s));
  std::this_thread::sleep_for(1s);  // again, nothing must happen
  CHECK(r.cmd({"LLEN", "jobq:{q}:pending"}).integer == 3);
  CHECK(jobqctl(redis, {"resume", "q"}).code == 0);
  CHECK(eventually([&] { return count_status(r, "q", second, "succeeded") == second.size(); }, 3s));
}

TEST_CASE(
    "a paused queue with buffered jobs and a free slot stops at once at SIGTERM, giving them "
    "back (with and without daemon.concurrency)",
    "[integration][cli][pause]") {
  for (const char* daemon_extra : {"", "  concurrency: 4\n"}) {
    INFO("daemon section adds: " << daemon_extra);
    RedisServer redis;
    Daemon d(redis, R"(
handlers:
  nap: {type: builtin, name: sleep}
queues:
  q: {handler: nap, concurrency: 1}
)",
             daemon_extra);
    auto r = redis.client();
    // The long one runs first (oldest), the others are buffered behind it (concurrency 1).
    push(r, "q", {R"({"id": "long", "payload": {"ms": 3000}})"});
    push(r, "q", jobs_for(ids("b", 5), R"({"ms": 10})"));
    d.start_and_wait(redis);
    // Running (its state says so after state.active_after), then paused: a pause read before
    // the queue's first would hold the long one too.
    REQUIRE(eventually([&] { return count_status(r, "q", {"long"}, "active") == 1; }, 10s));
    REQUIRE(jobqctl(redis, {"pause", "q"}).code == 0);
    REQUIRE(eventually([&] { return d.log().find("queue q: paused") != std::string::npos; }, 3s));
    // It ends while paused: its slot is free, and the five wait in the buffer for a resume.
    REQUIRE(eventually([&] { return count_status(r, "q", {"long"}, "succeeded") == 1; }, 10s));
    CHECK(count_status(r, "q", ids("b", 5), "succeeded") == 0);
    // The stop wakes the paused dispatcher so that it sees the stop: it must not go round and
    // round taking the first of them and putting it back.
    CHECK(d.stop(5s) == 0);
    CHECK(r.integer({"LLEN", "jobq:{q}:pending"}) == 5);
  }
}

TEST_CASE("jobqctl queues: each queue with pending, delayed, running, dead and paused (--json too)",
          "[integration][cli]") {
  RedisServer redis;
  Daemon d(redis, std::string(kYaml) + "  p: {handler: echo}\n");
  d.start_and_wait(redis);
  auto r = redis.client();
  REQUIRE(jobqctl(redis, {"pause", "q"}).code == 0);
  REQUIRE(eventually([&] { return d.log().find("queue q: paused") != std::string::npos; }, 2s));
  push(r, "q", jobs_for(ids("w", 3), "1"));
  REQUIRE(jobqctl(redis, {"submit", "q", "1", "--delay", "1h"}).code == 0);
  push(r, "p", {"not json"});
  REQUIRE(eventually([&] { return r.cmd({"ZCARD", "jobq:{p}:dead"}).integer == 1; }, 5s));
  const auto out = jobqctl(redis, {"--json", "queues"});
  REQUIRE(out.code == 0);
  const auto list = nlohmann::json::parse(out.out);
  REQUIRE(list.is_array());
  std::map<std::string, nlohmann::json> by;
  for (const auto& q : list) by[q["name"]] = q;
  REQUIRE(by.count("q"));
  REQUIRE(by.count("p"));
  CHECK(by["q"]["pending"] == 3);
  CHECK(by["q"]["delayed"] == 1);
  CHECK(by["q"]["paused"] == true);
  CHECK(by["q"]["running"] == 0);
  CHECK(by["p"]["dead"] == 1);
  CHECK(by["p"]["paused"] == false);
  const auto human = jobqctl(redis, {"queues"});
  CHECK(human.out.rfind("QUEUE ", 0) == 0);
  CHECK(std::regex_search(human.out, std::regex(R"(\nq +3 +1 +0 +0 +0  paused\n)")));
  INFO(human.out);
  CHECK(std::regex_search(human.out, std::regex(R"(\np +0 +0 +0 +0 +1  serving\n)")));
  // Nothing known: it says so.
  RedisServer empty;
  CHECK(jobqctl(empty, {"queues"}).out.find("no queues:") == 0);
}

TEST_CASE(
    "jobqctl: a queue no jobqd serves is refused (exit 2) unless --force; bad arguments "
    "name the word and show the usage line; --version",
    "[integration][cli]") {
  RedisServer redis;
  const auto refused = jobqctl(redis, {"submit", "nope", "{}"});
  CHECK(refused.code == 2);
  CHECK(refused.out.find("queue nope is served by no jobqd") != std::string::npos);
  CHECK(refused.out.find("usage: jobqctl submit QUEUE [PAYLOAD]") != std::string::npos);
  auto r = redis.client();
  CHECK(r.cmd({"EXISTS", "jobq:{nope}:pending"}).integer == 0);
  CHECK(jobqctl(redis, {"submit", "nope", "{}", "--force"}).code == 0);
  CHECK(r.cmd({"LLEN", "jobq:{nope}:pending"}).integer == 1);

  const std::pair<std::vector<std::string>, std::vector<std::string>> cases[] = {
      {{"foo"}, {"jobqctl: unknown command 'foo'; commands: submit, ", "usage: jobqctl ["}},
      {{"canel", "x"}, {"jobqctl: unknown command 'canel' (did you mean 'cancel'?)"}},
      {{"status"}, {"jobqctl: status: missing ID\n", "usage: jobqctl status ID [OPTIONS]"}},
      {{"dead", "list"}, {"jobqctl: dead: missing QUEUE\n", "usage: jobqctl dead ACTION QUEUE"}},
      {{"submit", "q", "--max-attempts", "-1"},
       {"submit: --max-attempts '-1' is not a whole number from 1 to 1000",
        "usage: jobqctl submit"}},
      {{}, {"jobqctl: a command is needed\n", "usage: jobqctl ["}},
  };
  for (const auto& [args, wants] : cases) {
    const auto got = jobqctl(redis, args);
    INFO(got.out);
    CHECK(got.code == 2);
    for (const auto& w : wants) CHECK(got.out.find(w) != std::string::npos);
  }
  const auto version = run_program({(build_dir() / "jobqctl").string(), "--version"});
  CHECK(version.code == 0);
  CHECK(version.out.rfind("jobqctl ", 0) == 0);
}

TEST_CASE(
    "jobqctl submit --from: 10,000 lines pipelined, 3 bad ones reported by line; every good "
    "one runs",
    "[integration][cli]") {
  RedisServer redis;
  Daemon d(redis, kYaml);
  d.start_and_wait(redis);
  TempDir dir;
  std::string lines;
  std::vector<std::string> good;
  for (int i = 0; i < 10000; ++i) {
    if (i == 17) lines += "{\"payload\": 1,\n";  // broken JSON
    if (i == 5000) lines += "[1, 2]\n";          // not an object
    if (i == 9000) lines += "{\"id\": \"no spaces please\", \"payload\": 1}\n";
    if (i == 100) lines += "\n";  // blank lines are skipped
    good.push_back("bulk-" + std::to_string(i));
    lines += "{\"id\": \"" + good.back() + "\", \"payload\": " + std::to_string(i) + "}\n";
  }
  const auto file = (dir.path() / "jobs.jsonl").string();
  write_file(file, lines);
  const auto start = std::chrono::steady_clock::now();
  const auto got = jobqctl(redis, {"submit", "q", "--from", file});
  const auto took = std::chrono::steady_clock::now() - start;
  INFO(got.out);
  CHECK(got.code == 1);  // some lines were rejected
  CHECK(got.out.find("submitted 10000 job(s) to q, rejected 3\n") != std::string::npos);
  CHECK(got.out.find(file + ":18: ") != std::string::npos);
  CHECK(got.out.find(file + ":5003: not a job") != std::string::npos);
  CHECK(got.out.find(file + ":9004: field id 'no spaces please'") != std::string::npos);
  CHECK(took < 10s);
  auto r = redis.client();
  CHECK(eventually([&] { return count_status(r, "q", good, "succeeded") == good.size(); }, 30s));
  // --json: the same summary as data; stdin works too.
  TempDir dir2;
  write_file(dir2.path() / "two.jsonl", "{\"payload\": 1}\nnope\n");
  const auto j =
      run_program({"/bin/sh", "-c",
                   (build_dir() / "jobqctl").string() + " --redis " + redis.url() +
                       " --json submit q --from - < " + (dir2.path() / "two.jsonl").string()});
  const auto summary = nlohmann::json::parse(j.out);
  CHECK(summary["submitted"] == 1);
  CHECK(summary["rejected"].size() == 1);
  CHECK(summary["rejected"][0]["line"] == 2);
}

TEST_CASE("jobqctl workers: each live jobqd with host, pid, version, uptime, queues and heartbeat",
          "[integration][cli]") {
  RedisServer redis;
  Daemon d1(redis, kYaml), d2(redis, kYaml);
  d1.start_and_wait(redis);
  d2.start_and_wait(redis);
  nlohmann::json list;
  REQUIRE(eventually(
      [&] {
        const auto got = jobqctl(redis, {"--json", "workers"});
        list = nlohmann::json::parse(got.out, nullptr, false);
        return list.is_array() && list.size() == 2;
      },
      10s));
  std::set<long long> pids;
  for (const auto& w : list) {
    pids.insert(w["pid"].get<long long>());
    CHECK(w["queues"] == nlohmann::json::array({"q"}));
    CHECK(w["version"].get<std::string>().size() > 0);
    CHECK(w["last_heartbeat_s"].get<long long>() <= 6);
    CHECK(w["worker"].get<std::string>().find("." + std::to_string(w["pid"].get<long long>()) +
                                              ".") != std::string::npos);
  }
  CHECK(pids == std::set<long long>{d1.pid(), d2.pid()});
  const auto human = jobqctl(redis, {"workers"});
  CHECK(human.out.rfind("WORKER ", 0) == 0);
  CHECK(human.out.find(std::to_string(d1.pid())) != std::string::npos);
  // A clean stop leaves the list at once.
  CHECK(d1.stop() == 0);
  const auto after = nlohmann::json::parse(jobqctl(redis, {"--json", "workers"}).out);
  REQUIRE(after.size() == 1);
  CHECK(after[0]["pid"] == d2.pid());
  CHECK(d2.stop() == 0);
  CHECK(jobqctl(redis, {"workers"}).out.find("no live jobqd on ") == 0);
}

TEST_CASE(
    "jobqctl stats: depths, the last minute's rates and run times; --watch redraws in a "
    "terminal",
    "[integration][cli]") {
  RedisServer redis;
  Daemon d(redis, kYaml);
  d.start_and_wait(redis);
  auto r = redis.client();
  const auto jobs = ids("st", 20);
  push(r, "q", jobs_for(jobs, "1"));
  push(r, "q", {R"({"id":"bad","payload":1,"handler":"fail"})"});
  REQUIRE(eventually([&] { return count_status(r, "q", jobs, "succeeded") == jobs.size(); }, 10s));
  nlohmann::json row;
  // The next heartbeat (every second) carries them.
  REQUIRE(eventually(
      [&] {
        const auto rows = nlohmann::json::parse(jobqctl(redis, {"--json", "stats"}).out);
        for (const auto& x : rows) {
          if (x["name"] == "q") row = x;
        }
        return row.is_object() && row["succeeded_per_min"] == 20 && row["failed_per_min"] == 1;
      },
      15s));
  CHECK(row["pending"] == 0);
  CHECK(row["p50_s"].is_number());
  CHECK(row["p50_s"].get<double>() <= 0.005);  // echo jobs: the first bucket
  const auto human = jobqctl(redis, {"stats"});
  CHECK(human.out.rfind("QUEUE ", 0) == 0);
  CHECK(std::regex_search(human.out, std::regex(R"(\nq +0 +0 +0 +0 +1 +20 +1 +<5ms +<5ms\n)")));

  // --watch in a pseudo-terminal: the screen is cleared and drawn again every --every.
  const std::string script = R"(
import os, pty, select, signal, sys, time
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
out, end = b'', time.time() + 3
while time.time() < end:
    if select.select([fd], [], [], 0.1)[0]:
        try:
            out += os.read(fd, 65536)
        except OSError:
            break
os.kill(pid, signal.SIGINT)
os.waitpid(pid, 0)
sys.stdout.write(out.decode('utf-8', 'replace'))
)";
  auto screen = run_program({"python3", "-c", script, (build_dir() / "jobqctl").string(), "--redis",
                             redis.url(), "stats", "--watch", "--every", "500ms"});
  std::erase(screen.out, '\r');  // the terminal's line discipline writes \r\n
  std::size_t draws = 0;
  for (auto at = screen.out.find("\x1b[H\x1b[2J"); at != std::string::npos;
       at = screen.out.find("\x1b[H\x1b[2J", at + 1)) {
    ++draws;
  }
  INFO(screen.out);
  CHECK(draws >= 3);
  // The last whole screen: the one before the last clear (Ctrl-C may cut the last one short).
  const auto final_clear = screen.out.rfind("\x1b[H\x1b[2J");
  const auto before = screen.out.rfind("\x1b[H\x1b[2J", final_clear - 1);
  REQUIRE(before != std::string::npos);
  const auto last = screen.out.substr(before, final_clear - before);
  CHECK(last.find("jobqctl stats: " + redis.url()) != std::string::npos);
  CHECK(last.find("Ctrl-C to stop") != std::string::npos);
  CHECK(std::regex_search(last, std::regex(R"(\nq +0 +0 +0 +0 +1 +20 +1 )")));
  CHECK(d.stop() == 0);
}

TEST_CASE("jobqctl jobs QUEUE --state: pending (one pushed without an id), delayed, running, dead",
          "[integration][cli]") {
  RedisServer redis;
  Daemon d(redis, std::string(kYaml) + "  p: {handler: sleep, concurrency: 1}\n");
  d.start_and_wait(redis);
  auto r = redis.client();
  REQUIRE(jobqctl(redis, {"pause", "q"}).code == 0);
  REQUIRE(eventually([&] { return d.log().find("queue q: paused") != std::string::npos; }, 2s));
  push(r, "q",
       {R"({"id":"first","payload":{"n":1}})", R"({"payload":"no id"})",
        R"({"id":"third","payload":3})"});
  REQUIRE(jobqctl(redis, {"submit", "q", "1", "--id", "later", "--delay", "1h"}).code == 0);
  push(r, "p", {R"({"id":"napping","payload":{"ms":20000}})", "not json"});
  REQUIRE(eventually([&] { return r.cmd({"ZCARD", "jobq:{p}:dead"}).integer == 1; }, 5s));

  const auto pending = jobqctl(redis, {"jobs", "q"});
  INFO(pending.out);
  const auto a = pending.out.find("first"), b = pending.out.find("(none yet)"),
             c = pending.out.find("third");
  CHECK((a != std::string::npos && b != std::string::npos && c != std::string::npos));
  CHECK((a < b && b < c));  // oldest first
  CHECK(pending.out.find("\"no id\"") != std::string::npos);

  const auto delayed =
      nlohmann::json::parse(jobqctl(redis, {"--json", "jobs", "q", "--state", "delayed"}).out);
  CHECK(delayed["total"] == 1);
  CHECK(delayed["jobs"][0]["id"] == "later");
  CHECK(delayed["jobs"][0]["run_at"].get<long long>() > 0);

  nlohmann::json running;
  REQUIRE(eventually(
      [&] {
        running = nlohmann::json::parse(
            jobqctl(redis, {"--json", "jobs", "p", "--state", "running"}).out);
        return running["total"] == 1;
      },
      5s));
  CHECK(running["jobs"][0]["id"] == "napping");
  CHECK(running["jobs"][0]["worker"].get<std::string>().find("." + std::to_string(d.pid()) + ".") !=
        std::string::npos);
  const auto dead = jobqctl(redis, {"jobs", "p", "--state", "dead"});
  CHECK(dead.out.find("invalid_job: ") != std::string::npos);
  CHECK(jobqctl(redis, {"jobs", "p", "--state", "delayed"}).out == "no delayed jobs in queue p\n");
  const auto limited = jobqctl(redis, {"jobs", "q", "--limit", "2"});
  CHECK(limited.out.find("(2 of 3; --limit N for more)") != std::string::npos);
  CHECK(jobqctl(redis, {"jobs", "q", "--state", "bogus"}).code == 2);
  d.kill9();
}

TEST_CASE("Garbage at the registry, workers and pause keys: jobqd serves on, both say which key",
          "[integration][cli][hostile]") {
  RedisServer redis;
  auto r = redis.client();
  r.cmd({"SET", "jobq:queues", "garbage"});
  r.cmd({"SET", "jobq:workers", "garbage"});
  r.cmd({"HSET", "jobq:{q}:paused", "a", "b"});  // any value pauses, whatever its type
  Daemon d(redis, kYaml);
  d.start_and_wait(redis);
  CHECK(eventually([&] { return d.log().find("queue q: paused") != std::string::npos; }, 3s));
  r.cmd({"DEL", "jobq:{q}:paused"});
  const auto jobs = ids("g", 5);
  push(r, "q", jobs_for(jobs, "1"));
  CHECK(eventually([&] { return count_status(r, "q", jobs, "succeeded") == jobs.size(); }, 5s));
  CHECK(eventually(
      [&] { return d.log().find("heartbeat into jobq:workers failed") != std::string::npos; }, 8s));
  CHECK(d.log().find("cannot add it to jobq:queues") != std::string::npos);
  const auto workers = jobqctl(redis, {"workers"});
  CHECK(workers.code == 1);
  CHECK(workers.out.find("jobq:workers is not the hash of workers jobqd keeps") !=
        std::string::npos);
  // Without a config nothing is known: an error, never an empty list that looks true.
  const auto queues = jobqctl(redis, {"queues"});
  INFO(queues.out);
  CHECK(queues.code == 1);
  CHECK(queues.out.find("jobq:queues is not the set of queues jobqd keeps") != std::string::npos);
  CHECK(queues.out.find("no queues") == std::string::npos);
  // With one, its queues are, and the garbage is said.
  const auto with_config = jobqctl(redis, {"-c", d.config_path(), "queues"});
  INFO(with_config.out);
  CHECK(with_config.code == 0);
  CHECK(with_config.out.find("warning: jobq:queues is not the set of queues") != std::string::npos);
  CHECK(with_config.out.find("\nq ") != std::string::npos);
  d.kill9();
}

namespace {

// What bash completes for `words` (the last one being typed), with jobqctl's own completion.
std::string complete_in_bash(const std::vector<std::string>& words) {
  const std::string jobqctl = (build_dir() / "jobqctl").string();
  std::string line = "COMP_WORDS=(" + jobqctl;
  for (const auto& w : words) line += " '" + w + "'";
  line += "); COMP_CWORD=" + std::to_string(words.size()) +
          "; _jobqctl; (( ${#COMPREPLY[@]} )) && printf '%s\\n' \"${COMPREPLY[@]}\" | sort | tr "
          "'\\n' ' '";
  return run_program({"/bin/bash", "-c", "source <(" + jobqctl + " --completion bash); " + line})
      .out;
}

}  // namespace

TEST_CASE(
    "jobqctl --completion bash|zsh: commands, each command's options, states, dead actions and "
    "the queue names a live Redis knows; make install puts both in place",
    "[integration][cli][completion]") {
  RedisServer redis;
  Daemon d(redis, kYaml);
  d.start_and_wait(redis);
  const std::string url = redis.url();
  CHECK(complete_in_bash({"ca"}) == "cancel ");
  CHECK(complete_in_bash({"--redis", url, "st"}) == "stats status ");
  CHECK(complete_in_bash({"jobs", "q", "--state", "de"}) == "dead delayed ");
  CHECK(complete_in_bash({"dead", ""}) == "list purge retry ");
  CHECK(complete_in_bash({"--redis", url, "pause", ""}) == "q ");
  CHECK(complete_in_bash({"--redis", url, "dead", "list", ""}) == "q ");
  CHECK(complete_in_bash({"cancel", "x", "--wait-t"}) == "--wait-timeout ");
  const auto submit = complete_in_bash({"submit", "q", "--"});
  for (const char* opt : {"--id ", "--delay ", "--from ", "--force ", "--json ", "--redis "}) {
    INFO(submit);
    CHECK(submit.find(opt) != std::string::npos);
  }
  CHECK(complete_in_bash({"submit", "q", "--id", ""}).empty());  // an id is the user's to write
  // zsh takes the same through bashcompinit.
  const std::string jobqctl = (build_dir() / "jobqctl").string();
  auto zsh = run_program({"/usr/bin/zsh", "-f", "-c",
                          "autoload -U compinit && compinit -u -D; source <(" + jobqctl +
                              " --completion zsh); print -r -- ${_comps[jobqctl]}"});
  INFO(zsh.out);
  CHECK(zsh.code == 0);
  CHECK(zsh.out == "_bash_complete -F _jobqctl\n");
  const auto bad = run_program({jobqctl, "--completion", "fish"});
  CHECK(bad.code == 2);
  CHECK(bad.out.rfind("jobqctl: --completion: fish not in {bash,zsh}\n", 0) == 0);
  // It is in --help.
  CHECK(run_program({jobqctl, "--help"}).out.find("--completion") != std::string::npos);
  // make install writes both, generated by the binary it installs.
  const std::string makefile = read_file(repo_root() / "Makefile");
  CHECK(makefile.find("$(JOBQCTL) --completion bash > "
                      "$(DESTDIR)$(PREFIX)/share/bash-completion/completions/jobqctl") !=
        std::string::npos);
  CHECK(makefile.find("$(JOBQCTL) --completion zsh > "
                      "$(DESTDIR)$(PREFIX)/share/zsh/site-functions/_jobqctl") !=
        std::string::npos);
}

TEST_CASE(
    "jobqctl --json: job times and attempts as numbers, a JSON result as JSON, errors as one "
    "JSON object; human output shows readable times",
    "[integration][cli]") {
  RedisServer redis;
  Daemon d(redis, kYaml);
  d.start_and_wait(redis);
  REQUIRE(jobqctl(redis, {"submit", "q", R"({"a": [1, 2]})", "--id", "j1", "--wait"}).code == 0);
  auto st = jobqctl(redis, {"status", "j1", "-q", "q", "--json"});
  INFO(st.out);
  REQUIRE(st.code == 0);
  auto j = nlohmann::json::parse(st.out);
  CHECK(j["attempts"] == 1);
  CHECK(j["finished_at"].is_number_integer());
  CHECK(j["submitted_at"].get<long long>() <= j["finished_at"].get<long long>());
  CHECK(j["result"] == nlohmann::json::parse(R"({"a": [1, 2]})"));
  CHECK(j["status"] == "succeeded");
  auto human = jobqctl(redis, {"status", "j1", "-q", "q"});
  INFO(human.out);
  CHECK(std::regex_search(
      human.out,
      std::regex(R"(finished_at: 20\d\d-\d\d-\d\d \d\d:\d\d:\d\dZ \((now|\d+s ago)\))")));
  // Errors: one JSON object on stderr, the exit code in it too.
  for (const auto& [args, code] : std::vector<std::pair<std::vector<std::string>, int>>{
           {{"--json", "status", "nobody", "-q", "q"}, 1},
           {{"--json", "frobnicate"}, 2},
           {{"status", "--json"}, 2},
           {{"--json", "--redis", "redis://127.0.0.1:1", "queues"}, 1}}) {
    const auto got = run_program([&] {
      std::vector<std::string> argv{(build_dir() / "jobqctl").string()};
      if (args[0] != "--json" || args[1] != "--redis") {
        argv.push_back("--redis");
        argv.push_back(redis.url());
      }
      argv.insert(argv.end(), args.begin(), args.end());
      return argv;
    }());
    INFO(got.out);
    CHECK(got.code == code);
    auto e = nlohmann::json::parse(got.out);
    CHECK(e["exit"] == code);
    CHECK(e["error"].is_string());
    CHECK(e.contains("usage") == (code == 2));
  }
  // dead list: a header and readable times; an empty list says so.
  auto none = jobqctl(redis, {"dead", "list", "q"});
  CHECK(none.out == "no dead jobs in queue q\n");

  // Every other command that prints data, parsed.
  auto parsed = [&](const std::vector<std::string>& args) {
    const auto got = jobqctl(redis, args);
    INFO(got.out);
    CHECK(got.code == 0);
    return nlohmann::json::parse(got.out);
  };
  auto sub = parsed({"--json", "submit", "q", "5", "--id", "j2"});
  CHECK(sub == nlohmann::json({{"id", "j2"}, {"queue", "q"}}));
  auto waited = parsed({"--json", "wait", "j2", "-q", "q", "--wait-timeout", "10s"});
  CHECK(waited["result"] == 5);
  auto both = parsed({"--json", "submit", "q", "{}", "--id", "j3", "--wait"});
  CHECK(both["status"] == "succeeded");
  CHECK(parsed({"--json", "pause", "q"})["paused"] == true);
  CHECK(parsed({"--json", "resume", "q"})["changed"] == true);
  REQUIRE(jobqctl(redis, {"submit", "q", R"({"message": "no"})", "--id", "bad", "--handler", "fail",
                          "--max-attempts", "1"})
              .code == 0);
  auto r = redis.client();
  REQUIRE(eventually([&] { return r.integer({"ZCARD", "jobq:{q}:dead"}) == 1; }, 10s));
  auto human_dead = jobqctl(redis, {"dead", "list", "q"});
  // Columns aligned, a row per job.
  CHECK(std::regex_search(
      human_dead.out,
      std::regex(R"(^ID +DIED +ERROR_KIND +ERROR\nbad +20\d\d-[^\n]+ +exception +no\n$)")));
  auto dead = parsed({"--json", "dead", "list", "q"});
  REQUIRE(dead.size() == 1);
  CHECK(dead[0]["id"] == "bad");
  CHECK(dead[0]["attempts"] == 1);
  CHECK(dead[0]["error_kind"] == "exception");
  CHECK(parsed({"--json", "dead", "retry", "q", "bad"})["requeued"] == 1);
  REQUIRE(eventually([&] { return r.integer({"ZCARD", "jobq:{q}:dead"}) == 1; }, 10s));
  CHECK(parsed({"--json", "dead", "purge", "q", "--all"})["purged"] == 1);
}
