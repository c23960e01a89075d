// Unique jobs (docs/unique.md) with real daemons, jobqctl and a real redis-server: racing
// submitters, LPUSHed duplicates, debounce, throttle, `while: [queued]`, the lock let go of at the
// job's end or at `for`, a daemon killed -9 holding a job, garbage at a lock, and the API.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/daemon.hpp"
#include "tests/support/files.hpp"
#include "tests/support/http_client.hpp"

using namespace jq::test;
using namespace std::chrono_literals;
using json = nlohmann::json;

namespace {

// Queue u: the sleep built-in (payload.ms), its key from payload.user; `unique` adds keys.
std::string yaml_with(const std::string& unique, const std::string& extra = "") {
  return "handlers:\n  slow: {type: builtin, name: sleep}\nqueues:\n  u: {handler: slow, unique: "
         "{key: payload.user" +
         unique + "}" + extra + "}\n";
}

const char* kLock = "jobq:{u}:unique:ann";

// jobqctl with the daemon's config (its redis URL, and queue u's unique.key).
Ran ctl(const Daemon& d, std::vector<std::string> args) {
  std::vector<std::string> argv{(build_dir() / "jobqctl").string(), "-c", d.config_path()};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_program(argv);
}

// The first line of what a program printed (stdout and stderr are one file: the id is the line
// made only of an id's characters).
std::string id_in(const std::string& out) {
  std::size_t at = 0;
  while (at < out.size()) {
    const auto end = out.find('\n', at);
    const std::string line = out.substr(at, end == std::string::npos ? end : end - at);
    if (!line.empty() &&
        line.find_first_not_of("0123456789ABCDEFGHJKMNPQRSTVWXYZ") == std::string::npos) {
      return line;
    }
    if (end == std::string::npos) break;
    at = end + 1;
  }
  return "";
}

// The line of --json output among what a program printed (its stderr is in the same file).
json json_in(const std::string& out) {
  for (std::size_t at = 0; at < out.size();) {
    const auto end = std::min(out.find('\n', at), out.size());
    if (out[at] == '{') return json::parse(out.substr(at, end - at));
    at = end + 1;
  }
  throw std::runtime_error("no JSON line in: " + out);
}

// The ids of every job state of queue u.
std::set<std::string> states(SyncRedis& r) {
  std::set<std::string> out;
  std::string cursor = "0";
  do {
    auto reply = r.cmd({"SCAN", cursor, "MATCH", "jobq:{u}:job:*", "COUNT", "1000"});
    cursor = reply.elements[0].str;
    for (const auto& e : reply.elements[1].elements) out.insert(e.str.substr(13));
  } while (cursor != "0");
  return out;
}

std::string field(SyncRedis& r, const std::string& id, const std::string& f) {
  return r.str({"HGET", "jobq:{u}:job:" + id, f});
}

}  // namespace

TEST_CASE("unique submissions racing from 10 clients start one job", "[integration][unique]") {
  RedisServer redis;
  Daemon d(redis, yaml_with(""));
  d.start_and_wait(redis, "u");
  auto r = redis.client();
  // Ten jobqctl processes at once, each with its own connection, the same key (from the
  // payload), each making up an id of its own. The queue is paused meanwhile: on a slow machine
  // the last of them may start after the first job ran and let go of its key (and rightly
  // queue a job then).
  REQUIRE(ctl(d, {"pause", "u"}).code == 0);
  std::vector<Ran> got(10);
  std::vector<std::thread> clients;
  for (std::size_t i = 0; i < got.size(); ++i) {
    clients.emplace_back([&, i] {
      got[i] = ctl(d, {"submit", "u", R"({"user":"ann","ms":300,"n":)" + std::to_string(i) + "}"});
    });
  }
  for (auto& t : clients) t.join();
  std::set<std::string> answered;
  std::size_t refused = 0;
  for (const auto& g : got) {
    INFO(g.out);
    CHECK(g.code == 0);
    answered.insert(id_in(g.out));
    refused += g.out.find("not submitted: job ") != std::string::npos;
  }
  // One id for all ten: the one job that was queued.
  REQUIRE(answered.size() == 1);
  const std::string id = *answered.begin();
  CHECK(refused == 9);
  REQUIRE(ctl(d, {"resume", "u"}).code == 0);
  REQUIRE(eventually([&] { return field(r, id, "status") == "succeeded"; }, 10s));
  CHECK(states(r) == std::set<std::string>{id});
  CHECK(r.integer({"LLEN", "jobq:{u}:pending"}) == 0);
  CHECK(field(r, id, "unique_key") == "ann");
  // Let go of with its end: the next submission runs.
  CHECK(r.integer({"EXISTS", kLock}) == 0);
  auto next = ctl(d, {"submit", "u", R"({"user":"ann","ms":1})", "--json"});
  INFO(next.out);
  const json j = json::parse(next.out);
  CHECK(j["duplicate"] == false);
  CHECK(j["unique_key"] == "ann");
  CHECK(j["id"] != id);
  REQUIRE(eventually([&] { return field(r, j["id"], "status") == "succeeded"; }, 10s));
  CHECK(d.stop() == 0);
}

TEST_CASE("LPUSHed duplicates: one runs, the other ends cancelled naming the first",
          "[integration][unique]") {
  RedisServer redis;
  Daemon d(redis, yaml_with(""));
  auto r = redis.client();
  auto sub = redis.client();
  sub.cmd({"SUBSCRIBE", "jobq:{u}:events"});
  // Both wait in pending until taken (the window plain submitters have): each is checked as it
  // is taken, not as it is pushed.
  push(r, "u",
       {R"({"id":"d1","payload":{"user":"ann","ms":500}})",
        R"({"id":"d2","payload":{"user":"ann","ms":1}})",
        R"({"id":"other","payload":{"user":"bob","ms":1}})"});
  CHECK(r.integer({"LLEN", "jobq:{u}:pending"}) == 3);
  d.start();
  std::map<std::string, std::string> ends;
  while (ends.size() < 3) {
    const auto m = json::parse(sub.next_reply().elements.at(2).str);
    ends[m["id"]] = m["status"];
  }
  CHECK(ends == std::map<std::string, std::string>{
                    {"d1", "succeeded"}, {"d2", "cancelled"}, {"other", "succeeded"}});
  CHECK(field(r, "d2", "error_kind") == "cancelled");
  CHECK(field(r, "d2", "error") ==
        "duplicate: job d1 holds unique key 'ann' (unique lock); this one was not run");
  CHECK(field(r, "d2", "attempts") == "0");
  CHECK(field(r, "d1", "unique_key") == "ann");
  CHECK(r.integer({"EXISTS", kLock}) == 0);
  // The cancelled duplicate is not dead: nothing to retry.
  CHECK(r.integer({"ZCARD", "jobq:{u}:dead"}) == 0);
  CHECK(d.stop() == 0);
}

TEST_CASE("debounce: the newest submission replaces the one still waiting",
          "[integration][unique]") {
  RedisServer redis;
  Daemon d(redis, yaml_with(", mode: debounce"));
  d.start_and_wait(redis, "u");
  auto r = redis.client();
  // Delayed, so that the first still waits when the second comes.
  auto a = ctl(d, {"submit", "u", R"({"user":"ann","ms":1,"v":1})", "--delay", "2s", "--id", "a"});
  REQUIRE(a.code == 0);
  auto b = ctl(
      d, {"submit", "u", R"({"user":"ann","ms":1,"v":2})", "--delay", "2s", "--id", "b", "--json"});
  INFO(b.out);
  REQUIRE(b.code == 0);
  CHECK(b.out.find("job a (unique key 'ann') was still waiting: replaced by this one") !=
        std::string::npos);
  CHECK(json_in(b.out)["replaced"] == "a");
  CHECK(json_in(b.out)["id"] == "b");
  CHECK(field(r, "a", "status") == "cancelled");
  CHECK(field(r, "a", "error") == "replaced by job b (unique key, debounce)");
  REQUIRE(eventually([&] { return field(r, "b", "status") == "succeeded"; }, 10s));
  CHECK(r.integer({"EXISTS", kLock}) == 0);
  // One that runs is not replaced: the newest is queued beside it, and runs too.
  auto c = ctl(d, {"submit", "u", R"({"user":"ann","ms":1500})", "--id", "c"});
  REQUIRE(eventually([&] { return !held_by(r, "u", "c").empty(); }, 10s));
  auto e = ctl(d, {"submit", "u", R"({"user":"ann","ms":1})", "--id", "e"});
  CHECK(e.out.find("replaced") == std::string::npos);
  REQUIRE(eventually([&] { return field(r, "e", "status") == "succeeded"; }, 10s));
  REQUIRE(eventually([&] { return field(r, "c", "status") == "succeeded"; }, 10s));
  CHECK(d.stop() == 0);
}

TEST_CASE("throttle: one job per window; a lock ends at `for` with no job to end it",
          "[integration][unique]") {
  RedisServer redis;
  // A window long enough for a job to run and three submissions to be made on a slow machine.
  Daemon d(redis, yaml_with(", mode: throttle, for: 4s"));
  d.start_and_wait(redis, "u");
  auto r = redis.client();
  auto a = ctl(d, {"submit", "u", R"({"user":"ann","ms":1})", "--id", "a"});
  REQUIRE(a.code == 0);
  REQUIRE(eventually([&] { return field(r, "a", "status") == "succeeded"; }, 10s));
  // Over, but its window is not: still answered with a.
  CHECK(r.integer({"EXISTS", kLock}) == 1);
  auto b = ctl(d, {"submit", "u", R"({"user":"ann","ms":1})", "--id", "b", "--json"});
  INFO(b.out);
  CHECK(b.code == 0);
  CHECK(json_in(b.out) ==
        json({{"id", "a"}, {"queue", "u"}, {"unique_key", "ann"}, {"duplicate", true}}));
  CHECK(states(r) == std::set<std::string>{"a"});
  // An LPUSHed one in the window is cancelled as it is taken.
  push(r, "u", {R"({"id":"p","payload":{"user":"ann","ms":1}})"});
  REQUIRE(eventually([&] { return field(r, "p", "status") == "cancelled"; }, 10s));
  CHECK(field(r, "p", "error").find("job a holds unique key 'ann' (unique throttle)") !=
        std::string::npos);
  // The window ends with the lock.
  REQUIRE(eventually([&] { return r.integer({"EXISTS", kLock}) == 0; }, 10s));
  auto c = ctl(d, {"submit", "u", R"({"user":"ann","ms":1})", "--id", "c"});
  CHECK(c.out.find("not submitted") == std::string::npos);
  REQUIRE(eventually([&] { return field(r, "c", "status") == "succeeded"; }, 10s));
  CHECK(d.stop() == 0);

  // No daemon at all (lock mode): a job that never runs holds its key for `for`, no longer.
  RedisServer idle;
  Daemon none(idle, yaml_with(", for: 1s"));
  auto r2 = idle.client();
  REQUIRE(ctl(none, {"submit", "u", R"({"user":"ann"})", "--id", "x"}).code == 0);
  auto dup = ctl(none, {"submit", "u", R"({"user":"ann"})", "--id", "y", "--json"});
  CHECK(json_in(dup.out)["id"] == "x");
  CHECK(json_in(dup.out)["duplicate"] == true);
  CHECK(dup.out.find("not submitted: job x holds unique key 'ann'") != std::string::npos);
  REQUIRE(eventually([&] { return r2.integer({"EXISTS", kLock}) == 0; }, 5s));
  auto later = ctl(none, {"submit", "u", R"({"user":"ann"})", "--id", "z", "--json"});
  CHECK(json_in(later.out)["id"] == "z");
  CHECK(json_in(later.out)["duplicate"] == false);
  CHECK(r2.integer({"LLEN", "jobq:{u}:pending"}) == 2);
}

TEST_CASE("while: [queued]: a job's lock goes as it starts", "[integration][unique]") {
  RedisServer redis;
  Daemon d(redis, yaml_with(", while: [queued]"));
  d.start_and_wait(redis, "u");
  auto r = redis.client();
  REQUIRE(ctl(d, {"pause", "u"}).code == 0);
  REQUIRE(ctl(d, {"submit", "u", R"({"user":"ann","ms":2000})", "--id", "a"}).code == 0);
  auto b = ctl(d, {"submit", "u", R"({"user":"ann","ms":1})", "--id", "b"});
  CHECK(b.out.find("not submitted: job a holds unique key 'ann'") != std::string::npos);
  auto status = ctl(d, {"status", "a", "-q", "u"});
  CHECK(status.out.find("unique_key: ann") != std::string::npos);
  REQUIRE(ctl(d, {"resume", "u"}).code == 0);
  REQUIRE(eventually([&] { return !held_by(r, "u", "a").empty(); }, 10s));
  REQUIRE(eventually([&] { return r.integer({"EXISTS", kLock}) == 0; }, 10s));
  CHECK(field(r, "a", "status") != "succeeded");  // still running: the lock went as it started
  auto c = ctl(d, {"submit", "u", R"({"user":"ann","ms":1})", "--id", "c"});
  CHECK(c.out.find("not submitted") == std::string::npos);
  REQUIRE(eventually([&] { return field(r, "c", "status") == "succeeded"; }, 10s));
  REQUIRE(eventually([&] { return field(r, "a", "status") == "succeeded"; }, 10s));
  CHECK(d.stop() == 0);
}

TEST_CASE("a job recovered after its daemon's kill -9 keeps its lock", "[integration][unique]") {
  RedisServer redis;
  const std::string yaml = yaml_with(", for: 1h");
  Daemon a(redis, yaml), b(redis, yaml);
  a.start_and_wait(redis, "u");
  auto r = redis.client();
  // A job that outlasts the test: it ends when cancelled.
  REQUIRE(ctl(a, {"submit", "u", R"({"user":"ann","ms":600000})", "--id", "j"}).code == 0);
  REQUIRE(eventually([&] { return !held_by(r, "u", "j").empty(); }, 10s));
  a.kill9();
  // Held by nobody alive now: the lock still names j, and a duplicate is refused...
  CHECK(r.str({"GET", kLock}) == "j");
  auto dup = ctl(b, {"submit", "u", R"({"user":"ann","ms":1})", "--id", "x"});
  CHECK(dup.out.find("not submitted: job j holds unique key 'ann'") != std::string::npos);
  // ... and one pushed meanwhile is cancelled naming j when taken, while j runs again (its lost
  // attempt counted) with its lock.
  push(r, "u", {R"({"id":"p","payload":{"user":"ann","ms":1}})"});
  b.start_and_wait(redis, "u");
  REQUIRE(eventually(
      [&] { return field(r, "j", "status") == "active" && field(r, "j", "attempts") == "2"; },
      15s));
  REQUIRE(eventually([&] { return field(r, "p", "status") == "cancelled"; }, 10s));
  CHECK(field(r, "p", "error").find("job j holds unique key 'ann'") != std::string::npos);
  CHECK(r.str({"GET", kLock}) == "j");
  // Its end lets go of it.
  auto cancelled = ctl(b, {"cancel", "j", "-q", "u"});
  INFO(cancelled.out);
  CHECK(cancelled.code == 0);
  CHECK(field(r, "j", "status") == "cancelled");
  CHECK(r.integer({"EXISTS", kLock}) == 0);
  CHECK(b.stop() == 0);
}

TEST_CASE("garbage at a lock does not wedge the queue: moved aside, named, the job runs",
          "[integration][unique]") {
  RedisServer redis;
  Daemon d(redis, yaml_with(""));
  auto r = redis.client();
  r.cmd({"HSET", kLock, "not", "a lock"});
  push(r, "u", {R"({"id":"g","payload":{"user":"ann","ms":1}})"});
  d.start();
  REQUIRE(eventually([&] { return field(r, "g", "status") == "succeeded"; }, 10s));
  const auto log = d.log();
  INFO(log);
  CHECK(log.find("jobq:{u}:unique:ann, the lock of unique key 'ann', held a hash") !=
        std::string::npos);
  auto aside = r.cmd({"KEYS", "jobq:{u}:unique:ann:foreign:*"});
  REQUIRE(aside.elements.size() == 1);
  CHECK(r.str({"HGET", aside.elements[0].str, "not"}) == "a lock");
  CHECK(d.stop() == 0);
}

TEST_CASE("POST /api/queues/Q/jobs submits, unique keys answered as jobqctl's, counted",
          "[integration][unique][api]") {
  RedisServer redis;
  Daemon d(redis, "http: {listen: 127.0.0.1:0}\n" + yaml_with(""));
  d.start_and_wait(redis, "u");
  const auto addr = http_address(d);
  REQUIRE(eventually([&] { return get(addr, "/healthz").status == 200; }, 10s));
  auto r = redis.client();
  const std::string csrf = json::parse(get(addr, "/api/session").body)["csrf"].get<std::string>();
  const std::string with_csrf = "X-CSRF-Token: " + csrf + "\r\n";
  // An action like the others: the CSRF value (or a bearer token) needed.
  CHECK(post(addr, "/api/queues/u/jobs", R"({"payload":{"user":"ann"}})").status == 403);
  auto first = post(addr, "/api/queues/u/jobs?delay=1m",
                    R"({"id":"a","payload":{"user":"ann","ms":1}})", with_csrf);
  REQUIRE(first.status == 200);
  CHECK(json::parse(first.body) ==
        json({{"id", "a"}, {"queue", "u"}, {"result", "queued"}, {"unique_key", "ann"}}));
  auto second = post(addr, "/api/queues/u/jobs", R"({"payload":{"user":"ann","ms":1}})", with_csrf);
  REQUIRE(second.status == 200);
  CHECK(json::parse(second.body) ==
        json({{"id", "a"}, {"queue", "u"}, {"result", "duplicate"}, {"unique_key", "ann"}}));
  // A job without a key: an id given to it, queued.
  auto plain =
      json::parse(post(addr, "/api/queues/u/jobs", R"({"payload":{"ms":1}})", with_csrf).body);
  CHECK(plain["result"] == "queued");
  CHECK(plain["id"].get<std::string>().size() == 26);
  REQUIRE(eventually([&] { return field(r, plain["id"], "status") == "succeeded"; }, 10s));
  // Refused as jobqd would refuse the job, and for a queue it does not serve.
  auto bad = post(addr, "/api/queues/u/jobs", R"({"payload":1,"unique_key":7})", with_csrf);
  CHECK(bad.status == 400);
  CHECK(bad.body.find("field unique_key must be a string") != std::string::npos);
  CHECK(post(addr, "/api/queues/u/jobs", R"([1])", with_csrf).status == 400);
  CHECK(post(addr, "/api/queues/u/jobs?delay=soon", R"({"payload":1})", with_csrf).status == 400);
  CHECK(post(addr, "/api/queues/nope/jobs", R"({"payload":1})", with_csrf).status == 404);
  auto put = request(addr, "PUT /api/queues/u/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
  CHECK(put.status == 405);
  CHECK(put.header("Allow") == "GET, HEAD, POST");
  // The listing is still a GET.
  CHECK(get(addr, "/api/queues/u/jobs?state=delayed").status == 200);
  const auto metrics = get(addr, "/metrics").body;
  CHECK(metrics.find(R"(jobqd_unique_duplicates_total{queue="u"} 1)") != std::string::npos);
  CHECK(d.stop() == 0);
}

TEST_CASE("jobqctl submit --from: jobs with unique keys pipelined, duplicates counted apart",
          "[integration][unique][jobqctl]") {
  RedisServer redis;
  Daemon none(redis, yaml_with(""));  // its config only: nothing runs the jobs
  auto r = redis.client();
  // Garbage at one lock: that job goes again alone, after the garbage is moved aside.
  r.cmd({"HSET", "jobq:{u}:unique:zed", "x", "1"});
  const std::string file = (none.dir().path() / "jobs.jsonl").string();
  write_file(file,
             "{\"id\":\"a1\",\"payload\":{\"user\":\"ann\"}}\n"
             "{\"id\":\"a2\",\"payload\":{\"user\":\"ann\"}}\n"
             "{\"id\":\"n1\",\"payload\":{}}\n"
             "{\"id\":\"b1\",\"payload\":{\"user\":\"bob\"}}\n"
             "{\"id\":\"a3\",\"payload\":{\"user\":\"x\"},\"unique_key\":\"ann\"}\n"
             "{\"id\":\"z1\",\"payload\":{\"user\":\"zed\"}}\n"
             "{\"id\":\"bad\",\"payload\":{\"user\":[1]}}\n");
  auto ran = ctl(none, {"submit", "u", "--from", file, "--json"});
  INFO(ran.out);
  CHECK(ran.code == 1);  // one bad line
  const json j = json_in(ran.out);
  CHECK(j["submitted"] == 4);
  CHECK(j["duplicates"] == 2);
  CHECK(j["rejected"].size() == 1);
  CHECK(j["rejected"][0]["line"] == 7);
  CHECK(ran.out.find("moved it aside to jobq:{u}:unique:zed:foreign:") != std::string::npos);
  auto pending = r.cmd({"LRANGE", "jobq:{u}:pending", "0", "-1"});
  std::set<std::string> queued;
  for (const auto& e : pending.elements) {
    queued.insert(json::parse(e.str.substr(0, e.str.find(",\"_jobq\"")) + "}")["id"]);
  }
  CHECK(queued == std::set<std::string>{"a1", "n1", "b1", "z1"});
  CHECK(r.str({"GET", kLock}) == "a1");
}
