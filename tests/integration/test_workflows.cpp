// Jobs that wait for other jobs (docs/workflows.md) with real daemons: chains across queues pushed
// in any order with LPUSH, a fan-out and a fan-in that reads every result, the failure policies,
// and what the handlers get (an exec handler's job JSON, an http handler's body).
#include <catch2/catch.hpp>

#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "store/after.hpp"
#include "store/call.hpp"
#include "store/calls.hpp"
#include "tests/support/cluster.hpp"
#include "tests/support/daemon.hpp"
#include "tests/support/fixtures.hpp"
#include "tests/support/half_flow.hpp"
#include "tests/support/http_server.hpp"

using namespace jq::test;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

std::string state_of(SyncRedis& r, const std::string& queue, const std::string& id,
                     const std::string& field = "status") {
  return job_states(r, queue, {id}, {field}).front()[field];
}

long long time_of(SyncRedis& r, const std::string& queue, const std::string& id,
                  const std::string& field) {
  const std::string t = state_of(r, queue, id, field);
  return t.empty() ? -1 : std::stoll(t);
}

}  // namespace

TEST_CASE("workflows: a chain of three across two queues, pushed last first, runs in order",
          "[integration][workflows]") {
  RedisServer redis;
  Daemon d(redis, R"(
handlers:
  echo: {type: builtin, name: echo}
  cat: {type: exec, command: [")" +
                      fixture("cat_stdin") + R"("]}
queues:
  a: {handler: echo}
  b: {handler: cat}
)");
  d.start_and_wait(redis, "a");
  auto r = redis.client();
  // c (queue b) waits for b1 (queue a), which waits for a1 (queue a): pushed c first, a1 last,
  // so that the daemon meets each before what it waits for exists.
  push(r, "b", {R"({"id":"c","payload":{"step":3},"after":["a/b1"]})"});
  REQUIRE(eventually([&] { return state_of(r, "b", "c") == "waiting"; }, 10s));
  CHECK(state_of(r, "b", "c", "after") == "a/b1");
  CHECK(state_of(r, "b", "c", "waiting_for") == "1");
  push(r, "a", {R"({"id":"b1","payload":{"step":2},"after":["a1"]})"});
  REQUIRE(eventually([&] { return state_of(r, "a", "b1") == "waiting"; }, 10s));
  // Nothing runs while it waits.
  CHECK(state_of(r, "b", "c") == "waiting");
  push(r, "a", {R"({"id":"a1","payload":{"step":1}})"});
  REQUIRE(eventually([&] { return state_of(r, "b", "c") == "succeeded"; }, 10s));
  CHECK(state_of(r, "a", "a1") == "succeeded");
  CHECK(state_of(r, "a", "b1") == "succeeded");
  // In order: each started after what it waited for finished.
  CHECK(time_of(r, "a", "b1", "started_at") >= time_of(r, "a", "a1", "finished_at"));
  CHECK(time_of(r, "b", "c", "started_at") >= time_of(r, "a", "b1", "finished_at"));
  // c's handler (cat: its result is the job JSON it got on stdin) saw b1's outcome, whose result
  // is b1's payload (echo); its own payload where it always is.
  const json got = json::parse(state_of(r, "b", "c", "result"));
  CHECK(got["payload"] == json{{"step", 3}});
  REQUIRE(got["dependencies"].size() == 1);
  const json& dep = got["dependencies"][0];
  CHECK(dep["job"] == "b1");
  CHECK(dep["queue"] == "a");
  CHECK(dep["status"] == "succeeded");
  CHECK(json::parse(dep["result"].get<std::string>()) == json{{"step", 2}});
  // Nothing left behind: no waiting copies, no notes, an empty outbox.
  for (const char* q : {"a", "b"}) {
    const std::string base = std::string("jobq:{") + q + "}:";
    for (const char* key : {"waiting", "dependents", "outbox", "after_until", "registering"}) {
      INFO(base + key);
      CHECK(r.integer({"EXISTS", base + key}) == 0);
    }
  }
  CHECK(d.stop() == 0);
}

TEST_CASE("workflows: a fan-out of 1,000 and a fan-in that reads every result",
          "[integration][workflows]") {
  RedisServer redis;
  Daemon d(redis,
           R"(
handlers:
  echo: {type: builtin, name: echo}
  cat: {type: exec, command: [")" +
               fixture("cat_stdin") + R"("], max_output: 8MB}
queues:
  parts: {handler: echo, concurrency: 50, buffer: 200}
  sum: {handler: cat, max_job_bytes: 4MB}
)",
           // The fan-in is a 2 MB job, read in one go on the daemon's loop: tens of ms, but
           // seconds under the thread sanitizer, longer than the tests' usual 1 s lease.
           "  lease: 10s\n");
  d.start_and_wait(redis, "parts");
  auto r = redis.client();
  const auto parts = ids("p", 1000);
  json after = json::array();
  for (const auto& id : parts) after.push_back("parts/" + id);
  // The fan-in first: it waits for 1,000 jobs nobody has pushed yet.
  push(r, "sum", {json{{"id", "all"}, {"payload", "sum"}, {"after", after}}.dump()});
  REQUIRE(eventually([&] { return state_of(r, "sum", "all") == "waiting"; }, 10s));
  CHECK(state_of(r, "sum", "all", "waiting_for") == "1000");
  std::vector<std::string> jobs;
  for (std::size_t i = 0; i < parts.size(); ++i) {
    // 2 KB a result: 2 MB of outcomes, over the 1 MiB default, within sum's own 4 MB (which
    // parts' daemon, delivering from parts' outbox, must apply).
    jobs.push_back(
        json{{"id", parts[i]}, {"payload", {{"n", i}, {"pad", std::string(2000, 'x')}}}}.dump());
  }
  push(r, "parts", jobs);
  const bool ran = eventually([&] { return state_of(r, "sum", "all") == "succeeded"; }, 60s);
  if (!ran) {
    const auto st = job_states(r, "sum", {"all"}).front();
    const std::string log = d.log();
    INFO("all: " << st.at("status") << " after " << st.at("attempts") << " attempt(s): "
                 << st.at("error_kind") << " " << st.at("error") << "; parts succeeded "
                 << count_status(r, "parts", parts, "succeeded") << "; log's end:\n"
                 << log.substr(log.size() > 3000 ? log.size() - 3000 : 0));
    REQUIRE(ran);
  }
  CHECK(count_status(r, "parts", parts, "succeeded") == parts.size());
  const json got = json::parse(state_of(r, "sum", "all", "result"));
  REQUIRE(got["dependencies"].size() == parts.size());
  // In after's order, each with its own result.
  long long sum = 0;
  for (std::size_t i = 0; i < parts.size(); ++i) {
    const json& dep = got["dependencies"][i];
    CHECK(dep["job"] == parts[i]);
    sum += json::parse(dep["result"].get<std::string>())["n"].get<long long>();
  }
  CHECK(sum == 999 * 1000 / 2);
  // Ran once.
  CHECK(state_of(r, "sum", "all", "attempts") == "1");
  CHECK(d.stop() == 0);
}

TEST_CASE("workflows: each failure policy, and a failure told down a chain",
          "[integration][workflows]") {
  RedisServer redis;
  Daemon d(redis, R"(
handlers:
  echo: {type: builtin, name: echo}
  fail: {type: builtin, name: fail}
  cat: {type: exec, command: [")" +
                      fixture("cat_stdin") + R"("]}
queues:
  q: {handler: echo, max_attempts: 1}
  w: {handler: cat}
)");
  d.start_and_wait(redis, "q");
  auto r = redis.client();
  push(r, "w",
       {R"({"id":"f","payload":1,"after":["q/ok","q/bad"]})",
        R"({"id":"s","payload":2,"after":["q/bad"],"on_dependency_failure":"skip"})",
        R"({"id":"run","payload":3,"after":["q/ok","q/bad"],"on_dependency_failure":"run"})",
        // Down a chain: it waits for f, which fails by its policy.
        R"({"id":"g","payload":4,"after":["f"]})"});
  REQUIRE(eventually(
      [&] {
        return count_status(r, "w", {"f", "s", "run", "g"}, "waiting") == 4;
      },
      10s));
  push(r, "q",
       {R"({"id":"ok","payload":"fine"})",
        R"({"id":"bad","handler":"fail","payload":{"message":"broke"}})"});
  REQUIRE(eventually(
      [&] {
        return state_of(r, "w", "f") == "failed" && state_of(r, "w", "s") == "cancelled" &&
               state_of(r, "w", "run") == "succeeded" && state_of(r, "w", "g") == "failed";
      },
      15s));
  CHECK(state_of(r, "w", "f", "error_kind") == "dependency");
  CHECK(state_of(r, "w", "f", "error").find("dependency q/bad failed") != std::string::npos);
  CHECK(state_of(r, "w", "s", "error_kind") == "dependency");
  CHECK(state_of(r, "w", "g", "error").find("dependency w/f failed") != std::string::npos);
  // `run` ran, and saw the failure.
  const json got = json::parse(state_of(r, "w", "run", "result"));
  REQUIRE(got["dependencies"].size() == 2);
  CHECK(got["dependencies"][0]["status"] == "succeeded");
  CHECK(got["dependencies"][1]["status"] == "failed");
  CHECK(got["dependencies"][1]["error"] == "broke");
  // The ones that never ran have no start.
  CHECK(state_of(r, "w", "f", "started_at").empty());
  CHECK(d.stop() == 0);
}

TEST_CASE(
    "workflows: a failed step retried with what failed because of it; they run once it succeeds",
    "[integration][workflows][retry]") {
  RedisServer redis;
  TempDir dir;
  const std::string flag = (dir.path() / "fixed").string();
  // x fails until the flag file exists (a bug fixed between the run and the retry).
  Daemon d(redis, fixed_later_queues(flag));
  d.start_and_wait(redis, "a");
  auto r = redis.client();
  // b/d waits for a/x, b/e for d (a chain across queues); b/s skips on a failure; b/o waits for
  // x and for a/y, which fails too and is named first: o failed because of y, not of x.
  push(r, "b",
       {R"({"id":"d","payload":1,"after":["a/x"]})", R"({"id":"e","payload":2,"after":["d"]})",
        R"({"id":"s","payload":3,"after":["a/x"],"on_dependency_failure":"skip"})",
        R"({"id":"o","payload":4,"after":["a/y","a/x"]})"});
  REQUIRE(eventually(
      [&] {
        return count_status(r, "b", {"d", "e", "s", "o"}, "waiting") == 4;
      },
      10s));
  push(r, "a", {R"({"id":"y","payload":0})"});
  REQUIRE(eventually([&] { return state_of(r, "b", "o") == "failed"; }, 10s));
  push(r, "a", {R"({"id":"x","payload":0})"});
  REQUIRE(eventually(
      [&] {
        return state_of(r, "b", "d") == "failed" && state_of(r, "b", "e") == "failed" &&
               state_of(r, "b", "s") == "cancelled";
      },
      15s));
  // The failed ones are kept with the dead ones, as submitted: d and e beside x.
  CHECK_FALSE(r.cmd({"ZSCORE", "jobq:{b}:dead", "d"}).is_nil());
  CHECK_FALSE(r.cmd({"ZSCORE", "jobq:{b}:dead", "e"}).is_nil());
  CHECK(json::parse(r.str({"HGET", "jobq:{b}:dead:bodies", "e"})) ==
        json::parse(R"({"id":"e","payload":2,"after":["d"]})"));
  CHECK(r.cmd({"ZSCORE", "jobq:{b}:dead", "s"}).is_nil());
  // The graph from x still shows what failed because of it.
  const auto graph = jobqctl(redis, {"--json", "flow", "x", "-q", "a"});
  REQUIRE(graph.code == 0);
  const json g = json::parse(graph.out);
  CHECK(g["dependents_known"] == true);
  CHECK(g["dependents"].size() == 3);

  // Fixed: x retried with its dependents. d and e go back (and wait again); s was skipped, o
  // failed because of y: both stay as they ended.
  write_file(flag, "");
  const auto retried = jobqctl(redis, {"dead", "retry", "a", "x", "--with-dependents"});
  INFO(retried.out);
  CHECK(retried.code == 0);
  CHECK(retried.out.find("requeued 3 job(s): a/x, b/d, b/e") != std::string::npos);
  const bool ran = eventually(
      [&] {
        return state_of(r, "a", "x") == "succeeded" && state_of(r, "b", "d") == "succeeded" &&
               state_of(r, "b", "e") == "succeeded";
      },
      15s);
  if (!ran) {
    for (const auto& [q, id] :
         std::vector<std::pair<std::string, std::string>>{{"a", "x"}, {"b", "d"}, {"b", "e"}}) {
      INFO(q << "/" << id << ": " << state_of(r, q, id) << " " << state_of(r, q, id, "error"));
    }
    REQUIRE(ran);
  }
  // In order: e ran after d, d after x, each once more.
  CHECK(time_of(r, "b", "d", "started_at") + 5 >= time_of(r, "a", "x", "finished_at"));
  CHECK(time_of(r, "b", "e", "started_at") + 5 >= time_of(r, "b", "d", "finished_at"));
  CHECK(state_of(r, "b", "s") == "cancelled");
  CHECK(state_of(r, "b", "o") == "failed");
  CHECK(r.integer({"ZCARD", "jobq:{b}:dead"}) == 1);  // o
  // Asked of a job not among the dead: said, exit 1.
  const auto none = jobqctl(redis, {"dead", "retry", "a", "x", "--with-dependents"});
  CHECK(none.code == 1);
  CHECK(none.out.find("no dead job x in queue a") != std::string::npos);
  CHECK(jobqctl(redis, {"dead", "retry", "a", "--all", "--with-dependents"}).code == 2);
  CHECK(d.stop() == 0);
}

TEST_CASE("workflows: an http handler gets the payload beside the dependencies' outcomes",
          "[integration][workflows]") {
  RedisServer redis;
  HttpServer server;
  Daemon d(redis, R"(
handlers:
  echo: {type: builtin, name: echo}
  hook: {type: http, url: ")" +
                      server.url("/hook") + R"("}
queues:
  a: {handler: echo}
  h: {handler: hook}
)");
  d.start_and_wait(redis, "a");
  auto r = redis.client();
  push(r, "h",
       {R"({"id":"plain","payload":{"x":1}})", R"({"id":"w","payload":{"x":2},"after":["a/d"]})"});
  push(r, "a", {R"({"id":"d","payload":"done"})"});
  REQUIRE(eventually([&] { return count_status(r, "h", {"plain", "w"}, "succeeded") == 2; }, 10s));
  const auto got = server.requests();
  REQUIRE(got.size() == 2);
  for (const auto& req : got) {
    const json body = json::parse(req.body);
    const auto header = [&](const std::string& name) {
      auto it = req.headers.find(name);
      return it == req.headers.end() ? std::string() : it->second;
    };
    if (header("x-jobq-id") == "plain") {
      CHECK(body == json{{"x", 1}});  // as today
      CHECK(header("x-jobq-body").empty());
    } else {
      CHECK(header("x-jobq-body") == "dependencies");
      CHECK(body["payload"] == json{{"x", 2}});
      REQUIRE(body["dependencies"].size() == 1);
      CHECK(body["dependencies"][0]["job"] == "d");
      CHECK(body["dependencies"][0]["result"] == "\"done\"");
    }
  }
  CHECK(d.stop() == 0);
}

TEST_CASE("workflows: 100 flows of 20 while daemons are killed -9 in turn",
          "[integration][workflows][kill]") {
  // Each flow: a root, 18 jobs that wait for it (across two queues), and a fan-in that waits for
  // the 18 and appends its id to a file each time it runs. Pushed last first, so that every job
  // meets a daemon before what it waits for exists.
  RedisServer redis;
  TempDir dir;
  const std::string ran = (dir.path() / "fan_ins").string();
  const std::string yaml = R"(
handlers:
  nap: {type: builtin, name: sleep}
  note: {type: exec, command: ["/bin/sh", "-c", "echo \"$0\" >> )" +
                           ran + R"(", "{id}"]}
queues:
  x: {handler: nap, concurrency: 8, max_attempts: 20}
  y: {handler: nap, concurrency: 8, max_attempts: 20}
)";
  std::vector<std::unique_ptr<Daemon>> daemons;
  for (int i = 0; i < 2; ++i) {
    daemons.push_back(std::make_unique<Daemon>(redis, yaml));
    daemons.back()->start();
  }
  auto r = redis.client();
  struct Job {
    std::string queue, id;
    std::vector<std::string> after;  // QUEUE/ID
  };
  std::vector<Job> all;
  for (int f = 0; f < 100; ++f) {
    const std::string p = "f" + std::to_string(f) + "-";
    all.push_back({"x", p + "root", {}});
    std::vector<std::string> mids;
    for (int m = 0; m < 18; ++m) {
      const std::string q = m % 2 == 0 ? "x" : "y";
      all.push_back({q, p + "m" + std::to_string(m), {"x/" + p + "root"}});
      mids.push_back(q + "/" + all.back().id);
    }
    all.push_back({"y", p + "end", mids});
  }
  std::vector<std::vector<std::string>> cmds;
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    json j = {{"id", it->id}, {"payload", {{"ms", 20}}}};
    if (!it->after.empty()) j["after"] = it->after;
    if (it->id.ends_with("end")) j["handler"] = "note";
    cmds.push_back({"LPUSH", "jobq:{" + it->queue + "}:pending", j.dump()});
  }
  r.pipeline(cmds);
  auto succeeded = [&] {
    std::size_t n = 0;
    for (const char* q : {"x", "y"}) {
      std::vector<std::string> mine;
      for (const auto& j : all) {
        if (j.queue == q) mine.push_back(j.id);
      }
      n += count_status(r, q, mine, "succeeded");
    }
    return n;
  };
  auto done = [&] { return succeeded() == all.size(); };
  auto serving = [&](Daemon& d) {
    const std::string mine = "." + std::to_string(d.pid()) + ".";
    return eventually(
        [&] {
          for (const char* q : {"x", "y"}) {
            bool held = false;
            for (auto& m :
                 r.cmd({"ZRANGE", std::string("jobq:{") + q + "}:leases", "0", "-1"}).elements) {
              held = held || m.str.find(mine) != std::string::npos;
            }
            if (!held) return false;
          }
          return true;
        },
        20s);
  };
  const auto [kills, not_serving] = kill_in_turn(daemons, done, serving, 8);
  CHECK(not_serving == 0);
  const bool finished = eventually(done, 60s);
  if (!finished) {
    for (const auto& j : all) {
      const auto st = job_states(r, j.queue, {j.id}, {"status", "waiting_for"}).front();
      if (st.at("status") == "succeeded") continue;
      const std::string base = "jobq:{" + j.queue + "}:";
      UNSCOPED_INFO(j.queue << "/" << j.id << ": " << st.at("status") << ", waiting for "
                            << st.at("waiting_for") << ", registering "
                            << r.cmd({"ZSCORE", base + "registering", j.id}).str);
    }
  }
  CHECK(finished);
  INFO("kills: " << kills << ", succeeded " << succeeded() << " of " << all.size());
  CHECK(kills >= 3);
  CHECK(r.integer({"ZCARD", "jobq:{x}:dead"}) + r.integer({"ZCARD", "jobq:{y}:dead"}) == 0);
  // None ran before what it waited for was final (its last start after their ends; a few ms for
  // the daemons' estimates of Redis' clock).
  std::map<std::string, std::pair<long long, long long>> times;  // QUEUE/ID -> start, end
  for (const char* q : {"x", "y"}) {
    std::vector<std::string> mine;
    for (const auto& j : all) {
      if (j.queue == q) mine.push_back(j.id);
    }
    const auto st = job_states(r, q, mine, {"started_at", "finished_at"});
    for (std::size_t i = 0; i < mine.size(); ++i) {
      if (st[i].at("started_at").empty() || st[i].at("finished_at").empty()) continue;
      times[std::string(q) + "/" + mine[i]] = {std::stoll(st[i].at("started_at")),
                                               std::stoll(st[i].at("finished_at"))};
    }
  }
  std::size_t early = 0;
  for (const auto& j : all) {
    for (const auto& d : j.after) {
      early += times[j.queue + "/" + j.id].first + 5 < times[d].second;
    }
  }
  CHECK(early == 0);
  // Each fan-in ran, and no more often than its attempts say (an attempt a kill cut short may
  // not have written its line): released once. A second release would run as a job of its own
  // after the first, its attempts counted from 1 again.
  std::map<std::string, int> runs;
  std::ifstream in(ran);
  for (std::string line; std::getline(in, line);) ++runs[line];
  for (const auto& j : all) {
    if (!j.id.ends_with("end")) continue;
    const auto attempts = job_states(r, "y", {j.id}, {"attempts"}).front().at("attempts");
    INFO(j.id << " ran " << runs[j.id] << " time(s) in " << attempts << " attempt(s)");
    CHECK(runs[j.id] >= 1);
    CHECK(runs[j.id] <= std::stoi(attempts));
  }
  for (auto& d : daemons) CHECK(d->stop() == 0);
  for (const char* q : {"x", "y"}) {
    const std::string base = std::string("jobq:{") + q + "}:";
    for (const char* key : {"waiting", "dependents", "outbox", "after_until", "registering"}) {
      INFO(base + key);
      CHECK(r.integer({"EXISTS", base + key}) == 0);
    }
  }
}

TEST_CASE("workflows: a dependency nobody pushes is waited for after_timeout, then the policy",
          "[integration][workflows]") {
  RedisServer redis;
  Daemon d(redis, R"(
handlers:
  cat: {type: exec, command: [")" +
                      fixture("cat_stdin") + R"("]}
queues:
  q: {handler: cat, after_timeout: 1s, delayed_poll: 100ms}
)");
  d.start_and_wait(redis);
  auto r = redis.client();
  push(r, "q",
       {R"({"id":"f","payload":1,"after":["ghost"]})",
        R"({"id":"run","payload":2,"after":["ghost"],"on_dependency_failure":"run"})"});
  REQUIRE(eventually([&] { return count_status(r, "q", {"f", "run"}, "waiting") == 2; }, 10s));
  const auto waited_from = std::chrono::steady_clock::now();
  REQUIRE(eventually(
      [&] { return state_of(r, "q", "f") == "failed" && state_of(r, "q", "run") == "succeeded"; },
      10s));
  // Not before its second (give or take the poll).
  CHECK(std::chrono::steady_clock::now() - waited_from > 800ms);
  CHECK(state_of(r, "q", "f", "error_kind") == "dependency");
  CHECK(state_of(r, "q", "f", "error") == "dependency q/ghost not seen within 1s");
  const json got = json::parse(state_of(r, "q", "run", "result"));
  REQUIRE(got["dependencies"].size() == 1);
  CHECK(got["dependencies"][0]["status"] == "failed");
  CHECK(got["dependencies"][0]["error"] == "not seen within 1s");
  CHECK(d.stop() == 0);
}

TEST_CASE("workflows on a cluster: flows across queues of three primaries, a daemon killed -9",
          "[integration][workflows][cluster]") {
  // Each flow: a root on one primary, 6 jobs on the other two waiting for it, a fan-in on the
  // root's waiting for the 6. Every outcome crosses slots (and nodes) through an outbox.
  RedisCluster cluster(3, 0);
  const std::vector<std::string> qs = cluster.queues_on_primaries("w", 3);
  std::string yaml = "handlers:\n  nap: {type: builtin, name: sleep}\nqueues:\n";
  for (const auto& q : qs) {
    yaml += "  " + q + ": {handler: nap, concurrency: 8, max_attempts: 20}\n";
  }
  std::vector<std::unique_ptr<Daemon>> daemons;
  for (int i = 0; i < 2; ++i) {
    daemons.push_back(std::make_unique<Daemon>(cluster.url(), yaml));
    daemons.back()->start();
  }
  std::map<std::string, std::vector<std::string>> ids_in;  // queue -> its jobs' ids
  std::map<std::string, std::vector<std::string>> pushes;  // queue -> jobs, pushed last first
  for (int f = 0; f < 40; ++f) {
    const std::string p = "f" + std::to_string(f) + "-";
    const std::string& home = qs[static_cast<std::size_t>(f) % 3];
    std::vector<std::string> mids;
    for (int m = 0; m < 6; ++m) {
      const std::string& q =
          qs[(static_cast<std::size_t>(f) + 1 + static_cast<std::size_t>(m) % 2) % 3];
      const std::string id = p + "m" + std::to_string(m);
      pushes[q].push_back(
          json{{"id", id}, {"payload", {{"ms", 10}}}, {"after", {home + "/" + p + "root"}}}.dump());
      ids_in[q].push_back(id);
      mids.push_back(q + "/" + id);
    }
    pushes[home].push_back(
        json{{"id", p + "end"}, {"payload", {{"ms", 1}}}, {"after", mids}}.dump());
    pushes[home].push_back(json{{"id", p + "root"}, {"payload", {{"ms", 10}}}}.dump());
    ids_in[home].push_back(p + "end");
    ids_in[home].push_back(p + "root");
  }
  for (const auto& q : qs) {
    SyncRedis r(cluster.owner_of_queue(q));
    push(r, q, pushes[q]);
  }
  auto done_in = [&](const std::string& q) {
    try {
      SyncRedis r(cluster.owner_of_queue(q));
      return count_status(r, q, ids_in[q], "succeeded");
    } catch (const std::exception&) {
      return std::size_t{0};
    }
  };
  auto done = [&] {
    for (const auto& q : qs) {
      if (done_in(q) != ids_in[q].size()) return false;
    }
    return true;
  };
  auto serving = [&](Daemon& d) {
    return eventually([&] { return cluster.leases_held(d.pid(), qs); }, 20s);
  };
  const auto [kills, not_serving] = kill_in_turn(daemons, done, serving, 4);
  CHECK(not_serving == 0);
  CHECK(eventually(done, 60s));
  INFO("kills: " << kills);
  for (const auto& q : qs) {
    INFO(q << ": succeeded " << done_in(q) << " of " << ids_in[q].size());
    CHECK(done_in(q) == ids_in[q].size());
    SyncRedis r(cluster.owner_of_queue(q));
    CHECK(r.integer({"ZCARD", "jobq:{" + q + "}:dead"}) == 0);
  }
  // Each fan-in started after the last of its 6 ended (Redis' clocks: one machine here).
  std::map<std::string, long long> ended;  // QUEUE/ID -> finished_at
  for (const auto& q : qs) {
    SyncRedis r(cluster.owner_of_queue(q));
    const auto st = job_states(r, q, ids_in[q], {"finished_at"});
    for (std::size_t i = 0; i < ids_in[q].size(); ++i) {
      ended[q + "/" + ids_in[q][i]] = std::stoll(st[i].at("finished_at"));
    }
  }
  std::size_t early = 0;
  for (int f = 0; f < 40; ++f) {
    const std::string p = "f" + std::to_string(f) + "-";
    const std::string& home = qs[static_cast<std::size_t>(f) % 3];
    SyncRedis r(cluster.owner_of_queue(home));
    const long long started =
        std::stoll(job_states(r, home, {p + "end"}, {"started_at"}).front().at("started_at"));
    for (int m = 0; m < 6; ++m) {
      const std::string& q =
          qs[(static_cast<std::size_t>(f) + 1 + static_cast<std::size_t>(m) % 2) % 3];
      early += started + 5 < ended[q + "/" + p + "m" + std::to_string(m)];
    }
  }
  CHECK(early == 0);
  for (auto& d : daemons) CHECK(d->stop() == 0);
}

TEST_CASE(
    "workflows on a cluster: jobqctl submit --flow across primaries runs in order; a flow whose "
    "writer stopped is given up, none of it run",
    "[integration][workflows][cluster][flow]") {
  RedisCluster cluster(3, 0);
  const std::vector<std::string> qs = cluster.queues_on_primaries("v", 3);
  // Each job's result is the JSON its handler got.
  std::string yaml =
      "handlers:\n  cat: {type: exec, command: [\"" + fixture("cat_stdin") + "\"]}\nqueues:\n";
  for (const auto& q : qs) yaml += "  " + q + ": {handler: cat, concurrency: 4}\n";
  Daemon d(cluster.url(), yaml);
  d.start();
  REQUIRE(eventually([&] { return cluster.leases_held(d.pid(), qs); }, 20s));
  auto state = [&](const std::string& q, const std::string& id, const std::string& field) {
    SyncRedis r(cluster.owner_of_queue(q));
    return state_of(r, q, id, field);
  };
  auto jobqctl_on = [&](std::vector<std::string> args) {
    std::vector<std::string> argv{(build_dir() / "jobqctl").string(), "--redis", cluster.url()};
    argv.insert(argv.end(), args.begin(), args.end());
    return run_program(argv);
  };
  TempDir dir;
  // A root on the first primary, one job on each of the others after it, a fan-in after both.
  const std::string a = qs[0], b = qs[1], c = qs[2];
  write_file(dir.path() / "flow.json", R"([
    {"id": "end", "payload": "end", "after": [")" +
                                           b + R"(/m1", ")" + c + R"(/m2"]},
    {"id": "m1", "queue": ")" + b + R"(", "payload": 1, "after": [")" +
                                           a + R"(/root"]},
    {"id": "m2", "queue": ")" + c + R"(", "payload": 2, "after": [")" +
                                           a + R"(/root"]},
    {"id": "root", "payload": 0}
  ])");
  const auto ran = jobqctl_on({"submit", a, "--flow", (dir.path() / "flow.json").string()});
  INFO(ran.out);
  REQUIRE(ran.code == 0);
  CHECK(ran.out.find("submitted a flow of 4 job(s): 1 queued, 3 waiting for others") !=
        std::string::npos);
  const std::vector<std::pair<std::string, std::string>> jobs{
      {a, "root"}, {b, "m1"}, {c, "m2"}, {a, "end"}};
  auto all_succeeded = [&] {
    for (const auto& [q, id] : jobs) {
      if (state(q, id, "status") != "succeeded") return false;
    }
    return true;
  };
  if (!eventually(all_succeeded, 30s)) {
    for (const auto& [q, id] : jobs) {
      INFO(q << "/" << id << ": " << state(q, id, "status") << " " << state(q, id, "error"));
    }
    INFO("log: " << d.log());
    REQUIRE(all_succeeded());
  }
  // The root ran as it was given (its flow's gate is no dependency); the fan-in saw both.
  CHECK_FALSE(json::parse(state(a, "root", "result")).contains("dependencies"));
  const json end = json::parse(state(a, "end", "result"));
  REQUIRE(end["dependencies"].size() == 2);
  CHECK(end["dependencies"][0]["job"] == "m1");
  CHECK(end["dependencies"][1]["job"] == "m2");
  // In order: each started once what it waits for had ended (Redis' clocks, one machine).
  auto at = [&](const std::string& q, const std::string& id, const std::string& f) {
    return std::stoll(state(q, id, f));
  };
  CHECK(at(b, "m1", "started_at") + 5 >= at(a, "root", "finished_at"));
  CHECK(at(c, "m2", "started_at") + 5 >= at(a, "root", "finished_at"));
  CHECK(at(a, "end", "started_at") + 5 >= at(b, "m1", "finished_at"));
  CHECK(at(a, "end", "started_at") + 5 >= at(c, "m2", "finished_at"));
  {
    SyncRedis r(cluster.owner_of_queue(a));
    CHECK(r.integer({"EXISTS", "jobq:{" + a + "}:flows"}) == 0);
  }

  // An id of a job not over (one waiting for a job nobody pushed): refused before anything is
  // written.
  {
    SyncRedis r(cluster.owner_of_queue(b));
    push(r, b, {json{{"id", "busy"}, {"payload", 0}, {"after", {"ghost"}}}.dump()});
  }
  REQUIRE(eventually([&] { return state(b, "busy", "status") == "waiting"; }, 10s));
  write_file(dir.path() / "taken.json",
             R"([{"id": "n1", "payload": 1}, {"id": "busy", "queue": ")" + b +
                 R"(", "payload": 2, "after": [")" + a + R"(/n1"]}])");
  const auto taken = jobqctl_on({"submit", a, "--flow", (dir.path() / "taken.json").string()});
  INFO(taken.out);
  CHECK(taken.code == 1);
  CHECK(taken.out.find("not written") != std::string::npos);
  CHECK(taken.out.find(b + "/busy") != std::string::npos);
  CHECK(state(a, "n1", "status").empty());

  // A writer that stopped between two steps (as jobqctl killed would): the record and two jobs
  // written, waiting for its gate, never the last step. The daemon of the record's queue gives it
  // up once its lease runs out: both end cancelled, neither ran.
  write_half_flow(cluster.url(), "F1", a, b, c, 300ms, jq::job::DependencyPolicy::run, false);
  auto given_up = [&] {
    return state(b, "x", "status") == "cancelled" && state(c, "y", "status") == "cancelled";
  };
  REQUIRE(eventually(given_up, 20s));
  const std::string why = "flow F1 cancelled: not written whole: its writer stopped";
  CHECK(state(b, "x", "error").starts_with(why));
  CHECK(state(c, "y", "error").starts_with(why));
  {
    SyncRedis r(cluster.owner_of_queue(a));
    CHECK(eventually([&] { return r.integer({"EXISTS", "jobq:{" + a + "}:outbox"}) == 0; }, 10s));
  }
  CHECK(state(b, "x", "started_at").empty());
  CHECK(state(c, "y", "started_at").empty());
  CHECK(d.log().find("flow F1 was not written whole") != std::string::npos);
  CHECK(d.stop() == 0);

  // A larger flow, with no daemon: written in slices (1,000 jobs a pipelined write, the lease
  // renewed between), every job waiting for the gate, which the last step opened: an outcome
  // for each in the queue's outbox.
  json big = json::array();
  json all = json::array();
  for (int i = 0; i < 2500; ++i) {
    const std::string& q = qs[static_cast<std::size_t>(i) % 3];
    const std::string id = "p" + std::to_string(i);
    big.push_back({{"id", id}, {"queue", q}, {"payload", i}});
    all.push_back(q + "/" + id);
  }
  big.push_back({{"id", "sum"}, {"payload", 0}, {"after", all}});
  write_file(dir.path() / "big.json", big.dump());
  const auto wrote = jobqctl_on({"submit", a, "--flow", (dir.path() / "big.json").string()});
  INFO(wrote.out);
  REQUIRE(wrote.code == 0);
  CHECK(wrote.out.find("submitted a flow of 2501 job(s): 2500 queued, 1 waiting") !=
        std::string::npos);
  std::size_t waiting = 0;
  for (const auto& q : qs) {
    SyncRedis r(cluster.owner_of_queue(q));
    waiting += static_cast<std::size_t>(r.integer({"HLEN", "jobq:{" + q + "}:waiting"}));
    CHECK(r.integer({"ZCARD", "jobq:{" + q + "}:registering"}) == 0);
  }
  CHECK(waiting == 2501 + 1);  // and busy, still waiting for its ghost
  SyncRedis home(cluster.owner_of_queue(a));
  CHECK(home.integer({"LLEN", "jobq:{" + a + "}:outbox"}) == 2501);
  CHECK(home.integer({"EXISTS", "jobq:{" + a + "}:flows"}) == 0);
}

TEST_CASE("workflows: garbage at jobqd's own keys of waiting jobs is moved aside, nothing lost",
          "[integration][workflows]") {
  RedisServer redis;
  Daemon d(redis, R"(
handlers:
  echo: {type: builtin, name: echo}
queues:
  q: {handler: echo}
)");
  auto r = redis.client();
  // Strings where jobqd keeps a hash, a list and a sorted set.
  r.cmd({"SET", "jobq:{q}:waiting", "garbage"});
  r.cmd({"SET", "jobq:{q}:outbox", "garbage"});
  r.cmd({"SET", "jobq:{q}:registering", "garbage"});
  r.cmd({"SET", "jobq:{q}:flows", "garbage"});
  d.start_and_wait(redis);
  push(r, "q", {R"({"id":"w","payload":1,"after":["d"]})"});
  REQUIRE(eventually([&] { return state_of(r, "q", "w") == "waiting"; }, 15s));
  push(r, "q", {R"({"id":"d","payload":0})"});
  CHECK(eventually([&] { return state_of(r, "q", "w") == "succeeded"; }, 15s));
  CHECK(d.log().find("moved it aside") != std::string::npos);
  CHECK(r.integer({"EXISTS", "jobq:{q}:flows"}) == 0);
  // A flow's lease over a record that is no hash: dropped from the leases, the rest goes on.
  r.cmd({"ZADD", "jobq:{q}:flows", "1", "bad"});
  r.cmd({"SET", "jobq:{q}:flow:bad", "garbage"});
  push(r, "q", {R"({"id":"w2","payload":1,"after":["d2"]})", R"({"id":"d2","payload":0})"});
  CHECK(eventually([&] { return state_of(r, "q", "w2") == "succeeded"; }, 15s));
  CHECK(eventually([&] { return r.integer({"EXISTS", "jobq:{q}:flows"}) == 0; }, 15s));
  CHECK(d.stop() == 0);
}
