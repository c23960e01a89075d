// The dashboard's JSON API over HTTP against a running jobqd and a real redis-server: every
// endpoint, bad parameters, the token (bearer and login cookie), CSRF, Host and Origin checks,
// read-only mode, and the live feed of server-sent events.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>

#include "tests/support/daemon.hpp"
#include "tests/support/files.hpp"
#include "tests/support/fixtures.hpp"
#include "tests/support/http_client.hpp"

using namespace jq::test;
using namespace std::chrono_literals;
using json = nlohmann::json;

namespace {

json body_of(const Reply& r) {
  auto j = json::parse(r.body, nullptr, false);
  if (j.is_discarded()) throw std::runtime_error("not JSON: " + r.body);
  return j;
}

// The header a POST from the page carries: this session's CSRF value.
std::string csrf_header(const std::string& addr) {
  return "X-CSRF-Token: " + body_of(get(addr, "/api/session"))["csrf"].get<std::string>() + "\r\n";
}

// The error text of a reply, "" when it has none.
std::string error_of(const Reply& r) {
  auto j = json::parse(r.body, nullptr, false);
  return j.is_object() && j.contains("error") ? j["error"].get<std::string>() : "";
}

const char* kYaml = R"(
http: {listen: 127.0.0.1:0}
handlers:
  ok: {type: builtin, name: noop}
  bad: {type: exec, command: [/bin/false], timeout: 5s}
queues:
  q: {handler: ok}
  fails: {handler: bad, max_attempts: 1}
)";

}  // namespace

TEST_CASE("The API: the page, jobs by state, a job, cancel, pause, dead retry and purge, workers",
          "[integration][http][api]") {
  RedisServer redis;
  Daemon d(redis, kYaml);
  const auto addr = start_serving(d, redis);
  auto r = redis.client();

  // The page and its files, with a policy that allows its own files only.
  const auto page = get(addr, "/");
  CHECK(page.status == 200);
  CHECK(page.header("Content-Type") == "text/html; charset=utf-8");
  CHECK(page.header("Content-Security-Policy").find("script-src 'self'") != std::string::npos);
  CHECK(page.body.find("<script src=\"/app.js\"") != std::string::npos);
  CHECK(get(addr, "/app.js").header("Content-Type") == "text/javascript; charset=utf-8");
  CHECK(get(addr, "/nothing.js").status == 404);

  const json session = body_of(get(addr, "/api/session"));
  const std::string csrf = session["csrf"];
  CHECK(csrf.size() == 64);
  CHECK(session["read_only"] == false);
  CHECK(session["auth"] == "none");
  const std::string with_csrf = "X-CSRF-Token: " + csrf + "\r\n";

  // Pause: refused without the CSRF value, done with it; a second time changes nothing.
  const auto no_csrf = post(addr, "/api/queues/q/pause", "{}");
  CHECK(no_csrf.status == 403);
  CHECK(error_of(no_csrf).find("X-CSRF-Token") != std::string::npos);
  CHECK(post(addr, "/api/queues/q/pause", "{}", "X-CSRF-Token: " + std::string(64, '0') + "\r\n")
            .status == 403);
  auto paused = post(addr, "/api/queues/q/pause", "{}", with_csrf);
  REQUIRE(paused.status == 200);
  CHECK(body_of(paused) == json({{"queue", "q"}, {"paused", true}, {"changed", true}}));
  CHECK(body_of(post(addr, "/api/queues/q/pause", "{}", with_csrf))["changed"] == false);

  // Jobs wait while paused: listed oldest first by default, newest first when asked, paged.
  push(r, "q", jobs_for(ids("p", 5), R"({"n":1})"));
  auto pending = body_of(get(addr, "/api/queues/q/jobs?state=pending"));
  CHECK(pending["total"] == 5);
  REQUIRE(pending["jobs"].size() == 5);
  CHECK(pending["jobs"][0]["id"] == "p0");
  CHECK(pending["jobs"][0]["payload"] == json({{"n", 1}}));
  auto newest =
      body_of(get(addr, "/api/queues/q/jobs?state=pending&order=newest&offset=1&limit=2"));
  REQUIRE(newest["jobs"].size() == 2);
  CHECK(newest["jobs"][0]["id"] == "p3");
  CHECK(newest["jobs"][1]["id"] == "p2");
  CHECK(newest["offset"] == 1);
  // Redis itself, and what each queue's keys take there.
  const json rv = body_of(get(addr, "/api/redis"));
  CHECK(rv["version"].get<std::string>().rfind("7.", 0) == 0);
  CHECK(rv["used_memory"].get<long long>() > 0);
  CHECK(rv["maxmemory_policy"] == "noeviction");
  REQUIRE(rv["queues"].size() == 2);
  for (const auto& row : rv["queues"]) {
    if (row["name"] != "q") continue;
    CHECK(row["bytes"]["pending"].get<long long>() > 100);
    CHECK(row["bytes"]["dead"] == 0);
  }

  // A job submitted with jobqctl has a state: queued; cancelled from the API while it waits.
  auto sub = jobqctl(redis, {"submit", "q", R"({"x":2})", "--id", "wait-me"});
  REQUIRE(sub.code == 0);
  auto job = get(addr, "/api/jobs/wait-me?queue=q");
  REQUIRE(job.status == 200);
  CHECK(body_of(job)["status"] == "queued");
  CHECK(body_of(get(addr, "/api/jobs/wait-me"))["queue"] == "q");  // found without the queue
  auto cancel = post(addr, "/api/jobs/wait-me/cancel?queue=q", "{}", with_csrf);
  REQUIRE(cancel.status == 200);
  CHECK(body_of(cancel)["result"] == "cancelled");
  CHECK(body_of(get(addr, "/api/jobs/wait-me?queue=q"))["status"] == "cancelled");
  auto again = body_of(post(addr, "/api/jobs/wait-me/cancel?queue=q", "{}", with_csrf));
  CHECK(again["result"] == "final");
  CHECK(again["status"] == "cancelled");

  // Resumed: the jobs run; their states say so.
  CHECK(body_of(post(addr, "/api/queues/q/resume", "{}", with_csrf))["paused"] == false);
  REQUIRE(eventually([&] { return count_status(r, "q", ids("p", 5), "succeeded") == 5; }, 10s));
  auto done = body_of(get(addr, "/api/jobs/p4?queue=q"));
  CHECK(done["status"] == "succeeded");
  CHECK(done["attempts"] == 1);
  CHECK(done["finished_at"].is_number());

  // Dead jobs: listed with their error, retried (they die again: the handler still fails),
  // purged; a dead job that is not there is a 404.
  push(r, "fails", jobs_for(ids("f", 3), "{}"));
  REQUIRE(eventually([&] { return count_status(r, "fails", ids("f", 3), "failed") == 3; }, 10s));
  auto dead = body_of(get(addr, "/api/queues/fails/jobs?state=dead&order=newest"));
  CHECK(dead["total"] == 3);
  REQUIRE(dead["jobs"].size() == 3);
  CHECK(dead["jobs"][0]["died_at"].is_number());
  CHECK(dead["jobs"][0]["error"].get<std::string>().find("exit") != std::string::npos);
  // Listed by status from their retained states: when each ended, its error.
  auto failed = body_of(get(addr, "/api/queues/fails/search?status=failed"));
  CHECK(failed["next"].is_null());
  REQUIRE(failed["found"].size() == 3);
  for (const auto& f : failed["found"]) {
    CHECK(f["where"] == "failed");
    CHECK(f["field"] == "error");
    CHECK(f["excerpt"].get<std::string>().find("exit") != std::string::npos);
    CHECK(f["at"].is_number());
  }
  CHECK(failed["found"][0]["at"].get<long long>() >= failed["found"][2]["at"].get<long long>());
  // Retried by id: how many were, and how many were not and why.
  auto retried =
      post(addr, "/api/queues/fails/dead/retry", R"({"ids":["f1","nobody","f1"]})", with_csrf);
  REQUIRE(retried.status == 200);
  CHECK(body_of(retried) ==
        json({{"queue", "fails"},
              {"retried", 1},
              {"not_done", 1},
              {"why", "not dead in queue fails (retried or purged already, or never dead)"}}));
  REQUIRE(eventually(
      [&] {
        return body_of(get(addr, "/api/jobs/f1?queue=fails"))["attempts"] == 1 &&
               body_of(get(addr, "/api/queues/fails/jobs?state=dead"))["total"] == 3;
      },
      10s));
  CHECK(post(addr, "/api/queues/fails/dead/retry", R"({"ids":["nobody"]})", with_csrf).status ==
        404);
  auto purged = post(addr, "/api/queues/fails/dead/purge", R"({"all":true})", with_csrf);
  REQUIRE(purged.status == 200);
  CHECK(body_of(purged)["purged"] == 3);
  CHECK(body_of(get(addr, "/api/queues/fails/jobs?state=dead"))["total"] == 0);

  // The daemons.
  auto workers = body_of(get(addr, "/api/workers"));
  REQUIRE(workers.size() == 1);
  CHECK(workers[0]["pid"] == d.pid());
  CHECK(workers[0]["queues"] == json({"fails", "q"}));

  // Bad parameters: 400 naming what is wrong; no such path: 404; the wrong method: 405.
  const std::pair<std::string, std::string> bad[] = {
      {"/api/queues/q/jobs?state=bogus", "state 'bogus'"},
      {"/api/queues/q/jobs?limit=0", "limit"},
      {"/api/queues/q/jobs?limit=501", "limit"},
      {"/api/queues/q/jobs?offset=-1", "offset"},
      {"/api/queues/q/jobs?offset=10001", "offset"},
      {"/api/queues/q/jobs?order=sideways", "order"},
      {"/api/queues/a%20b/jobs", "not a queue name"},
      {"/api/queues/q%ZZ/jobs", "%-escape"},
      {"/api/jobs/bad%20id", "job id 'bad id'"},
      {"/api/jobs/x?queue=a%2Fb", "queue"},
  };
  for (const auto& [path, says] : bad) {
    INFO(path);
    auto got = get(addr, path);
    CHECK(got.status == 400);
    CHECK(error_of(got).find(says) != std::string::npos);
  }
  CHECK(get(addr, "/api/jobs/never-was?queue=q").status == 404);
  CHECK(get(addr, "/api/nothing/here").status == 404);
  CHECK(get(addr, "/api/queues/q/pause").status == 405);
  CHECK(post(addr, "/api/queues", "{}", with_csrf).status == 405);
  const std::pair<std::string, std::string> bad_bodies[] = {
      {"not json", "a JSON object"},
      {"{}", "\"ids\""},
      {R"({"ids":["a b"]})", "ids"},
      {R"({"ids":"x"})", "ids"},
      {R"({"all":true,"ids":["a"]})", "\"ids\""}};
  for (const auto& [text, says] : bad_bodies) {
    INFO(text);
    auto got = post(addr, "/api/queues/fails/dead/retry", text, with_csrf);
    CHECK(got.status == 400);
    CHECK(error_of(got).find(says) != std::string::npos);
  }
  CHECK(post(addr, "/api/queues/q/pause", std::string(70000, ' '), with_csrf).status == 413);

  // A loopback listener answers loopback names only (DNS rebinding), and acts only for its own
  // pages (Origin).
  auto rebound = request(addr, "GET /api/queues HTTP/1.1\r\nHost: evil.example:" +
                                   addr.substr(addr.rfind(':') + 1) + "\r\n\r\n");
  CHECK(rebound.status == 403);
  CHECK(error_of(rebound).find("not a loopback name") != std::string::npos);
  CHECK(request(addr, "GET /api/queues HTTP/1.1\r\nHost: 127.0.0.1.evil.example\r\n\r\n").status ==
        403);
  CHECK(request(addr, "GET /api/queues HTTP/1.1\r\nHost: localhost:1\r\n\r\n").status == 200);
  CHECK(post(addr, "/api/queues/q/pause", "{}", with_csrf + "Origin: http://evil.example\r\n")
            .status == 403);
  CHECK(post(addr, "/api/queues/q/pause", "{}", with_csrf + "Origin: null\r\n").status == 403);
  CHECK(
      post(addr, "/api/queues/q/pause", "{}", with_csrf + "Origin: http://127.0.0.1\r\n").status ==
      200);

  // read_only, by a reload: every action 403, reads go on.
  std::string ro = kYaml;
  ro.replace(ro.find("127.0.0.1:0}"), 12, "127.0.0.1:0, read_only: true}");
  d.write_config(ro);
  REQUIRE(d.reload());
  CHECK(body_of(get(addr, "/api/session"))["read_only"] == true);
  auto refused = post(addr, "/api/queues/q/resume", "{}", with_csrf);
  CHECK(refused.status == 403);
  CHECK(error_of(refused) == "read-only (http.read_only)");
  CHECK(post(addr, "/api/queues/fails/dead/purge", R"({"all":true})", with_csrf).status == 403);
  CHECK(post(addr, "/api/queues/q/cancel", R"({"ids":["p1"]})", with_csrf).status == 403);
  CHECK(get(addr, "/api/queues/q/jobs").status == 200);
  // http.dashboard: false takes the page away, not the API.
  std::string no_page = kYaml;
  no_page.replace(no_page.find("127.0.0.1:0}"), 12, "127.0.0.1:0, dashboard: false}");
  d.write_config(no_page);
  REQUIRE(d.reload());
  CHECK(get(addr, "/").status == 404);
  CHECK(get(addr, "/api/queues").status == 200);
  CHECK(d.stop() == 0);
}

TEST_CASE("The API with a token: bearer or login cookie, CSRF for the cookie, on any address",
          "[integration][http][api]") {
  RedisServer redis;
  TempDir dir;
  const auto token = (dir.path() / "token").string();
  write_file(token, "tok-123\n");
  std::string yaml = kYaml;
  // Not loopback: allowed with a token, and then no Host check (the token is the check).
  yaml.replace(yaml.find("127.0.0.1:0}"), 12, "0.0.0.0:0, token_file: " + token + "}");
  Daemon d(redis, yaml);
  const auto addr = start_serving(d, redis);
  const std::string bearer = "Authorization: Bearer tok-123\r\n";

  auto none = get(addr, "/api/queues");
  CHECK(none.status == 401);
  CHECK(none.header("WWW-Authenticate") == "Bearer realm=\"jobqd\"");
  CHECK(get(addr, "/api/queues", "Authorization: Bearer tok-12\r\n").status == 401);
  CHECK(get(addr, "/api/queues", bearer).status == 200);
  CHECK(get(addr, "/metrics").status == 401);
  CHECK(get(addr, "/healthz").status == 200);
  CHECK(get(addr, "/").status == 200);  // the page holds no data: it shows the login
  CHECK(request(addr, "GET /api/queues HTTP/1.1\r\nHost: jobs.example.org\r\n" + bearer + "\r\n")
            .status == 200);

  // The login: a wrong token is refused; the right one sets an HttpOnly, SameSite=Strict cookie.
  CHECK(post(addr, "/api/login", R"({"token":"nope"})").status == 401);
  Reply login;
  REQUIRE(eventually(
      [&] {
        login = post(addr, "/api/login", R"({"token":"tok-123"})");
        return login.status != 429;  // one attempt per 250 ms
      },
      5s));
  REQUIRE(login.status == 200);
  const std::string set = login.header("Set-Cookie");
  CHECK(set.find("HttpOnly") != std::string::npos);
  CHECK(set.find("SameSite=Strict") != std::string::npos);
  const std::string cookie = "Cookie: theme=dark; " + set.substr(0, set.find(';')) + "\r\n";
  CHECK(get(addr, "/api/queues", cookie).status == 200);
  CHECK(get(addr, "/metrics", cookie).status == 200);
  CHECK(get(addr, "/api/queues", "Cookie: jobqd_session=" + std::string(64, 'a') + "\r\n").status ==
        401);
  const json session = body_of(get(addr, "/api/session", cookie));
  CHECK(session["auth"] == "token");
  CHECK(session["login"] == true);
  // An action by cookie needs the CSRF value; one by bearer does not.
  CHECK(post(addr, "/api/queues/q/pause", "{}", cookie).status == 403);
  CHECK(post(addr, "/api/queues/q/pause", "{}",
             cookie + "X-CSRF-Token: " + session["csrf"].get<std::string>() + "\r\n")
            .status == 200);
  CHECK(post(addr, "/api/queues/q/resume", "{}", bearer).status == 200);
  CHECK(post(addr, "/api/queues/q/resume", "{}").status == 401);
  // A job's flow is a read as the others: the token, no CSRF value.
  CHECK(get(addr, "/api/jobs/x/flow?queue=q").status == 401);
  CHECK(get(addr, "/api/jobs/x/flow?queue=q", bearer).status == 404);
  CHECK(get(addr, "/api/jobs/x/flow?queue=q", cookie).status == 404);
  // Logging out clears the cookie.
  CHECK(post(addr, "/api/logout", "{}", cookie).header("Set-Cookie").find("Max-Age=0") !=
        std::string::npos);
  CHECK(d.stop() == 0);
}

TEST_CASE("GET /api/events: the queues' rows at once and on change, each job's end, bounded",
          "[integration][http][api]") {
  RedisServer redis;
  Daemon d(redis, kYaml);
  const auto addr = start_serving(d, redis);
  auto r = redis.client();
  int fd = dial(addr);
  REQUIRE(fd >= 0);
  const std::string ask = "GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  REQUIRE(::send(fd, ask.data(), ask.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(ask.size()));
  std::string seen;
  auto read_until = [&](const std::string& what) {
    return eventually(
        [&] {
          seen += read_all(fd, 200ms);
          return seen.find(what) != std::string::npos;
        },
        10s);
  };
  REQUIRE(read_until("event: queues\ndata: ["));
  CHECK(seen.rfind("HTTP/1.1 200", 0) == 0);
  CHECK(seen.find("Content-Type: text/event-stream") != std::string::npos);
  CHECK(seen.find("Content-Length") == std::string::npos);
  // A job's end comes as it happens; the counts follow.
  push(r, "q", jobs_for({"live-1"}, "{}"));
  REQUIRE(read_until(R"(event: job
data: {"id":"live-1","queue":"q","status":"succeeded"})"));
  // Garbage on a channel is not passed on as it came.
  r.cmd({"PUBLISH", "jobq:{q}:events", R"({"id":{"<b>":1},"status":"x"})"});
  r.cmd({"PUBLISH", "jobq:{q}:events", "not json"});
  push(r, "q", jobs_for({"live-2"}, "{}"));
  REQUIRE(read_until(R"("id":"live-2")"));
  CHECK(seen.find("<b>") == std::string::npos);
  CHECK(seen.find("not json") == std::string::npos);
  ::close(fd);
  // At most 16 streams at once: the 17th is refused, and a closed one frees its place.
  std::vector<int> streams;
  for (int i = 0; i < 16; ++i) {
    int s = dial(addr);
    REQUIRE(s >= 0);
    (void)!::send(s, ask.data(), ask.size(), MSG_NOSIGNAL);
    streams.push_back(s);
  }
  for (int s : streams) CHECK(read_all(s, 300ms).rfind("HTTP/1.1 200", 0) == 0);
  CHECK(get(addr, "/api/events").status == 503);
  ::close(streams.back());
  streams.pop_back();
  CHECK(eventually(
      [&] {
        int s = dial(addr);
        (void)!::send(s, ask.data(), ask.size(), MSG_NOSIGNAL);
        const bool ok = read_all(s, 300ms).rfind("HTTP/1.1 200", 0) == 0;
        ::close(s);
        return ok;
      },
      5s));
  for (int s : streams) ::close(s);
  CHECK(d.stop() == 0);
}

TEST_CASE("GET /api/queues/Q/history: what the daemons did, kept in Redis across a restart",
          "[integration][http][api][history]") {
  RedisServer redis;
  auto r = redis.client();
  const auto n_jobs = [](const json& h, const char* what) {
    long long n = 0;
    for (const auto& p : h["points"]) n += p[what].get<long long>();
    return n;
  };
  {
    Daemon d(redis, kYaml);
    const auto addr = start_serving(d, redis);
    push(r, "q", jobs_for(ids("h", 7), "{}"));
    push(r, "fails", jobs_for(ids("x", 2), "{}"));
    REQUIRE(eventually([&] { return count_status(r, "q", ids("h", 7), "succeeded") == 7; }, 10s));
    REQUIRE(eventually([&] { return count_status(r, "fails", ids("x", 2), "failed") == 2; }, 10s));
    CHECK(get(addr, "/api/queues/q/history?range=year").status == 400);
    CHECK(d.stop() == 0);  // the minute so far is written at the stop, if not before
  }
  Daemon again(redis, kYaml);
  const auto addr = start_serving(again, redis);
  for (const char* range : {"hour", "day", "week"}) {
    INFO(range);
    const auto got = get(addr, std::string("/api/queues/q/history?range=") + range);
    REQUIRE(got.status == 200);
    const json h = json::parse(got.body);
    CHECK(h["points"].size() == (std::string(range) == "hour" ? 60u
                                 : range[0] == 'd'            ? 144u
                                                              : 168u));
    CHECK(n_jobs(h, "succeeded") == 7);
    CHECK(n_jobs(h, "failed") == 0);
    const json& last = h["points"].back();
    CHECK(last["t"].get<long long>() <= std::chrono::duration_cast<std::chrono::milliseconds>(
                                            std::chrono::system_clock::now().time_since_epoch())
                                            .count());
  }
  const json failing = json::parse(get(addr, "/api/queues/fails/history").body);
  CHECK(n_jobs(failing, "failed") == 2);
  // Garbage at a history key: a 500 naming it, not a crash or made-up numbers.
  r.cmd({"DEL", "jobq:{q}:history:minutes"});
  r.cmd({"SET", "jobq:{q}:history:minutes", "x"});
  const auto bad = get(addr, "/api/queues/q/history");
  CHECK(bad.status == 500);
  CHECK(again.stop() == 0);
}

TEST_CASE(
    "Search over 100,000 retained jobs: each step within its budget while a queue drains, "
    "the drain no slower than twice its time without",
    "[integration][http][api][search][alone]") {
  RedisServer redis;
  Daemon d(redis, kYaml, "  lease: 15s\n");
  const auto addr = start_serving(d, redis);
  auto r = redis.client();
  // 100,000 job states as the daemon retains them, one of them holding the text looked for.
  for (int batch = 0; batch < 20; ++batch) {
    std::vector<std::vector<std::string>> cmds;
    for (int i = 0; i < 5000; ++i) {
      const std::string id = "old-" + std::to_string(batch * 5000 + i);
      cmds.push_back({"HSET", "jobq:{q}:job:" + id, "status", "succeeded", "result",
                      id == "old-77777" ? R"({"report":"the Golden ticket"})" : R"({"ok":1})",
                      "finished_at", "1700000000000"});
    }
    r.pipeline(cmds);
  }
  // How long 3,000 jobs take from their push to the last one's end.
  int round = 0;
  const auto drain = [&] {
    const auto names = ids("r" + std::to_string(round++) + "-", 3000);
    const auto t0 = std::chrono::steady_clock::now();
    push(r, "q", jobs_for(names, "{}"));
    REQUIRE(eventually([&] { return count_status(r, "q", names, "succeeded") == 3000; }, 60s));
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                 t0);
  };
  // A search running through the whole queue, step after step, while `searching` is set.
  std::atomic<bool> searching{false}, done{false};
  std::atomic<int> steps{0};
  std::atomic<long long> slowest_ms{0}, examined{0};
  std::atomic<bool> found{false}, bad{false};
  std::thread searcher([&] {
    std::string from;
    while (!done) {
      if (!searching) {
        std::this_thread::sleep_for(1ms);
        continue;
      }
      const auto t0 = std::chrono::steady_clock::now();
      const auto got = get(addr, "/api/queues/q/search?q=golden%20TICKET" +
                                     (from.empty() ? std::string() : "&from=" + from));
      const long long ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::steady_clock::now() - t0)
                               .count();
      slowest_ms = std::max(slowest_ms.load(), ms);
      auto j = json::parse(got.body, nullptr, false);
      if (got.status != 200 || !j.is_object()) {
        bad = true;
        return;
      }
      ++steps;
      examined += j["examined"].get<long long>();
      for (const auto& f : j["found"]) found = found || f["id"] == "old-77777";
      from = j["next"].is_null() ? "" : j["next"].get<std::string>();
    }
  });
  // Rounds alone and beside the search in turn, so that what else the machine does weighs on
  // both alike; the medians compared.
  std::vector<std::chrono::milliseconds> alone, beside;
  for (int k = 0; k < 3; ++k) {
    alone.push_back(drain());
    searching = true;
    beside.push_back(drain());
    searching = false;
  }
  done = true;
  searcher.join();
  std::sort(alone.begin(), alone.end());
  std::sort(beside.begin(), beside.end());
  INFO("drain alone " << alone[1].count() << " ms, beside a search " << beside[1].count() << " ms; "
                      << steps << " search steps, the slowest " << slowest_ms << " ms, " << examined
                      << " jobs examined");
  CHECK_FALSE(bad);
  CHECK(steps >= 3);
  // A step goes on for 1 s at most (then the slice it is in): well within the API's 5 s.
  CHECK(slowest_ms < 4000);
  // Twice the time alone; the 50 ms allow for a machine's scheduling where the drain alone takes
  // a few tens of milliseconds (a stalled Redis would add seconds).
  CHECK(beside[1] <= 2 * alone[1] + std::chrono::milliseconds(50));
  // And the search, run through, finds the job.
  std::string from;
  int calls = 0;
  bool hit = found;
  do {
    auto j = json::parse(get(addr, "/api/queues/q/search?q=golden%20ticket" +
                                       (from.empty() ? std::string() : "&from=" + from))
                             .body);
    for (const auto& f : j["found"]) hit = hit || f["id"] == "old-77777";
    from = j["next"].is_null() ? "" : j["next"].get<std::string>();
  } while (!from.empty() && ++calls < 200);
  CHECK(from.empty());
  CHECK(hit);
  CHECK(get(addr, "/api/queues/q/search?q=").status == 400);
  CHECK(get(addr, "/api/queues/q/search?q=x&from=nonsense").status == 400);
  CHECK(d.stop() == 0);
}

TEST_CASE("POST /api/queues/Q/cancel: the jobs named, each answered done or not and why; limits",
          "[integration][http][api]") {
  RedisServer redis;
  Daemon d(redis, kYaml);
  const auto addr = start_serving(d, redis);
  auto r = redis.client();
  const std::string with_csrf = csrf_header(addr);
  REQUIRE(post(addr, "/api/queues/q/pause", "{}", with_csrf).status == 200);
  push(r, "q", jobs_for(ids("b", 6), "{}"));
  REQUIRE(jobqctl(redis, {"submit", "q", "{}", "--id", "sub-1"}).code == 0);

  // Three waiting (one given twice, once done), one submitted, one unknown.
  auto got = post(addr, "/api/queues/q/cancel", R"({"ids":["b0","b1","b2","b0","sub-1","nobody"]})",
                  with_csrf);
  REQUIRE(got.status == 200);
  json a = body_of(got);
  CHECK(a["queue"] == "q");
  CHECK(a["done"] == 4);
  CHECK(a["cancelled"] == 4);
  CHECK(a["requested"] == 0);
  CHECK(a["not_done"] == 1);
  CHECK(a["not"] == json::array({{{"id", "nobody"}, {"why", "no such job in queue q"}}}));
  CHECK(body_of(get(addr, "/api/queues/q/jobs?state=pending"))["total"] == 3);
  const auto b1 = body_of(get(addr, "/api/jobs/b1?queue=q"));
  CHECK(b1["status"] == "cancelled");
  CHECK(b1["error"] == "cancelled from the dashboard while queued");
  // Again: over already.
  a = body_of(post(addr, "/api/queues/q/cancel", R"({"ids":["b1"]})", with_csrf));
  CHECK(a["done"] == 0);
  CHECK(a["not"][0]["why"] == "ended already (cancelled)");

  // Bad bodies, the method, CSRF.
  std::string many = R"({"ids":[)";
  for (int i = 0; i <= 1000; ++i) many += (i ? ",\"x" : "\"x") + std::to_string(i) + "\"";
  many += "]}";
  const std::pair<std::string, std::string> bad[] = {{"{}", "\"ids\""},
                                                     {R"({"ids":[]})", "\"ids\""},
                                                     {R"({"all":true})", "\"ids\""},
                                                     {R"({"ids":["a b"]})", "ids"},
                                                     {many, "at most 1000"}};
  for (const auto& [text, says] : bad) {
    INFO(text.substr(0, 80));
    auto refused = post(addr, "/api/queues/q/cancel", text, with_csrf);
    CHECK(refused.status == 400);
    CHECK(error_of(refused).find(says) != std::string::npos);
  }
  CHECK(get(addr, "/api/queues/q/cancel").status == 405);
  CHECK(post(addr, "/api/queues/q/cancel", R"({"ids":["b3"]})").status == 403);

  // The body's 64 KiB: some 2,000 ids of 26 characters fit (none of them dead: a 404 naming
  // five), 2,300 do not.
  const auto ids_body = [](int n) {
    std::string b = R"({"ids":[)";
    for (int i = 0; i < n; ++i) {
      std::string id = std::to_string(i);
      b += (i ? ",\"" : "\"") + std::string(26 - id.size(), 'Z') + id + "\"";
    }
    return b + "]}";
  };
  auto fits = post(addr, "/api/queues/q/dead/purge", ids_body(2000), with_csrf);
  CHECK(fits.status == 404);
  CHECK(error_of(fits).find("and 1995 more") != std::string::npos);
  CHECK(post(addr, "/api/queues/q/dead/purge", ids_body(2300), with_csrf).status == 413);
  CHECK(d.stop() == 0);
}

TEST_CASE("GET /api/jobs/ID: a spool job names its file as it was dropped, not its content",
          "[integration][http][api][spool]") {
  RedisServer redis;
  TempDir spool;
  Daemon d(redis, R"(
http: {listen: 127.0.0.1:0}
handlers:
  ok: {type: builtin, name: noop}
queues:
  q: {handler: ok}
  files:
    handler: ok
    sources: [{spool: {dir: ')" +
                      spool.str() + R"('}}]
)");
  const auto addr = start_serving(d, redis);
  // A job file with its own id, and a file of another kind (given an id at its claim).
  write_file(spool.path() / "f-1.json", R"({"id":"f-1","payload":{}})");
  write_file(spool.path() / "report 7.txt", "content\n");
  json one;
  REQUIRE(eventually(
      [&] {
        one = body_of(get(addr, "/api/jobs/f-1?queue=files"));
        return one.value("status", "") == "succeeded";
      },
      10s));
  CHECK(one["file"] == (spool.path() / "f-1.json").string());
  json found;
  REQUIRE(eventually(
      [&] {
        found = body_of(get(addr, "/api/queues/files/search?status=succeeded"));
        return found["found"].size() == 2;
      },
      10s));
  std::set<std::string> files;
  for (const auto& f : found["found"]) {
    const json job = body_of(get(addr, "/api/jobs/" + f["id"].get<std::string>() + "?queue=files"));
    files.insert(job["file"].get<std::string>());
    CHECK(job.dump().find("content") == std::string::npos);
  }
  CHECK(files == std::set<std::string>{(spool.path() / "f-1.json").string(),
                                       (spool.path() / "report 7.txt").string()});
  CHECK(d.stop() == 0);
}

TEST_CASE(
    "GET /api/schedules lists config and runtime schedules as jobqctl does; POST pause and resume "
    "them; a queue's rate, global concurrency and weight in its row",
    "[integration][http][api][schedules]") {
  RedisServer redis;
  const std::string yaml = R"(
http: {listen: 127.0.0.1:0}
handlers:
  ok: {type: builtin, name: noop}
queues:
  q: {handler: ok, rate: 50/s, global_concurrency: 7, weight: 5, priorities: strict}
  other: {handler: ok, group_by: payload.tenant}
schedules:
  nightly: {cron: "0 3 * * *", timezone: Europe/Berlin, queue: q, job: {payload: {n: 1}}}
)";
  Daemon d(redis, yaml);
  const auto addr = start_serving(d, redis);
  const std::string with_csrf = csrf_header(addr);

  // The queues' rows: the config's rate as written, null for a queue without one.
  const json queues = body_of(get(addr, "/api/queues"));
  REQUIRE(queues.size() == 2);
  for (const auto& row : queues) {
    INFO(row.dump());
    if (row["name"] == "q") CHECK(row["rate"] == "50/s");
    if (row["name"] == "q") CHECK(row["global_concurrency"] == 7);
    if (row["name"] == "other") CHECK(row["rate"].is_null());
    if (row["name"] == "other") CHECK(row["global_concurrency"].is_null());
    if (row["name"] == "q") CHECK(row["weight"] == 5);
    if (row["name"] == "other") CHECK(row["weight"] == 1);
    if (row["name"] == "q") CHECK(row["priorities"] == "strict");
    if (row["name"] == "other") CHECK(row["priorities"].is_null());
    if (row["name"] == "q") CHECK(row["group_by"].is_null());
    if (row["name"] == "other") CHECK(row["group_by"] == "payload.tenant");
  }

  // The config's schedule, once the daemon has written it; then a runtime one beside it.
  REQUIRE(eventually([&] { return body_of(get(addr, "/api/schedules")).size() == 1; }, 10s));
  REQUIRE(jobqctl(redis, {"schedule", "add", "beat", "--cron", "@every 1h", "-q", "q", "--payload",
                          R"({"k":"v"})"})
              .code == 0);
  // The same list as jobqctl's, field for field (read until two reads agree: a tick between them
  // would move `next`).
  json listed, cli;
  REQUIRE(eventually(
      [&] {
        listed = body_of(get(addr, "/api/schedules"));
        cli = json::parse(jobqctl(redis, {"schedules", "--json"}).out, nullptr, false);
        return listed == cli;
      },
      10s));
  REQUIRE(listed.size() == 2);
  const json& beat = listed[0];
  const json& nightly = listed[1];
  CHECK(beat["name"] == "beat");
  CHECK(beat["origin"] == "runtime");
  CHECK(beat["job"]["payload"] == json({{"k", "v"}}));
  CHECK(beat["paused"] == false);
  CHECK(nightly["name"] == "nightly");
  CHECK(nightly["queue"] == "q");
  CHECK(nightly["origin"] == "config");
  CHECK(nightly["cron"] == "0 3 * * *");
  CHECK(nightly["timezone"] == "Europe/Berlin");
  CHECK(nightly["next"].get<long long>() > 0);
  CHECK(nightly["last_id"] == "");

  // Pause: the CSRF value needed; answered with where it was done; jobqctl sees it paused.
  CHECK(post(addr, "/api/schedules/beat/pause", "{}").status == 403);
  auto paused = post(addr, "/api/schedules/beat/pause", "{}", with_csrf);
  REQUIRE(paused.status == 200);
  CHECK(body_of(paused) == json({{"name", "beat"}, {"queue", "q"}, {"paused", true}}));
  const auto paused_of = [&](const std::string& name) {
    for (const auto& s : json::parse(jobqctl(redis, {"schedules", "--json"}).out)) {
      if (s["name"] == name) return s["paused"].get<bool>();
    }
    throw std::runtime_error("no schedule " + name + " listed");
  };
  CHECK(paused_of("beat"));
  CHECK_FALSE(paused_of("nightly"));
  // A config schedule pauses too; resume, with the queue named.
  CHECK(body_of(post(addr, "/api/schedules/nightly/pause", "{}", with_csrf))["paused"] == true);
  CHECK(paused_of("nightly"));
  auto resumed = post(addr, "/api/schedules/beat/resume?queue=q", "{}", with_csrf);
  REQUIRE(resumed.status == 200);
  CHECK(body_of(resumed) == json({{"name", "beat"}, {"queue", "q"}, {"paused", false}}));
  CHECK_FALSE(paused_of("beat"));
  for (const auto& s : body_of(get(addr, "/api/schedules"))) {
    CHECK(s["paused"] == (s["name"] == "nightly"));
  }

  // Two queues with a schedule of that name: the queue must be named.
  REQUIRE(jobqctl(redis, {"schedule", "add", "beat", "--cron", "@every 1h", "-q", "other"}).code ==
          0);
  auto ambiguous = post(addr, "/api/schedules/beat/pause", "{}", with_csrf);
  CHECK(ambiguous.status == 400);
  CHECK(error_of(ambiguous) == "schedule beat is in queues q and other: add ?queue=Q");
  auto named = post(addr, "/api/schedules/beat/pause?queue=other", "{}", with_csrf);
  REQUIRE(named.status == 200);
  CHECK(body_of(named)["queue"] == "other");

  // Unknown, bad, the wrong method.
  auto unknown = post(addr, "/api/schedules/nothere/pause", "{}", with_csrf);
  CHECK(unknown.status == 404);
  CHECK(error_of(unknown) == "no schedule nothere");
  CHECK(post(addr, "/api/schedules/beat/pause?queue=nosuch", "{}", with_csrf).status == 404);
  CHECK(post(addr, "/api/schedules/a%20b/pause", "{}", with_csrf).status == 400);
  CHECK(post(addr, "/api/schedules/beat/pause?queue=a%2Fb", "{}", with_csrf).status == 400);
  CHECK(post(addr, "/api/schedules/beat/run", "{}", with_csrf).status == 404);
  CHECK(get(addr, "/api/schedules/beat/pause").status == 405);
  CHECK(post(addr, "/api/schedules", "{}", with_csrf).status == 405);

  // read_only: refused, the list still read.
  std::string ro = yaml;
  ro.replace(ro.find("127.0.0.1:0}"), 12, "127.0.0.1:0, read_only: true}");
  d.write_config(ro);
  REQUIRE(d.reload());
  auto refused = post(addr, "/api/schedules/beat/resume?queue=q", "{}", with_csrf);
  CHECK(refused.status == 403);
  CHECK(error_of(refused) == "read-only (http.read_only)");
  CHECK(get(addr, "/api/schedules").status == 200);
  CHECK(paused_of("nightly"));
  CHECK(d.stop() == 0);
}

namespace {

// Every job a whole search of `queue` for `q` (and `status`) finds, by id: its steps run through.
std::map<std::string, json> search_all(const std::string& addr, const std::string& queue,
                                       const std::string& q, const std::string& status = "") {
  std::map<std::string, json> found;
  std::string from;
  int steps = 0;
  do {
    const json step = body_of(get(addr, "/api/queues/" + queue + "/search?q=" + q +
                                            (status.empty() ? "" : "&status=" + status) +
                                            (from.empty() ? "" : "&from=" + from)));
    for (const auto& f : step["found"]) found[f["id"].get<std::string>()] = f;
    from = step["next"].is_null() ? "" : step["next"].get<std::string>();
  } while (!from.empty() && ++steps < 50);
  return found;
}

}  // namespace

TEST_CASE(
    "retain.payload: a succeeded, a dead, a cancelled (running or waiting) and a spool job found "
    "by a word of their payload, shown on their page, cut at 4 KiB; a queue without keeps none",
    "[integration][http][api][search][payload]") {
  RedisServer redis;
  TempDir spool;
  Daemon d(redis, R"(
http: {listen: 127.0.0.1:0}
handlers:
  ok: {type: builtin, name: noop}
  fail: {type: builtin, name: fail}
  sleep: {type: builtin, name: sleep}
queues:
  q: {handler: ok, max_attempts: 1}
  kept:
    handler: ok
    max_attempts: 1
    retain: {payload: true}
    sources: [{redis: {}}, {spool: {dir: ')" +
                      spool.str() + R"('}}]
)");
  const auto addr = start_serving(d, redis);
  auto r = redis.client();
  const std::string with_csrf = csrf_header(addr);
  const std::string big = R"({"animal":"elephant","blob":")" + std::string(5000, 'x') + R"("})";
  for (const std::string q : {"q", "kept"}) {
    // A job cancelled while it waits (the queue paused): cancel.lua writes its state.
    REQUIRE(post(addr, "/api/queues/" + q + "/pause", "{}", with_csrf).status == 200);
    push(r, q, {R"({"id":"w","payload":{"animal":"wombat"}})"});
    const json waiting = body_of(post(addr, "/api/jobs/w/cancel?queue=" + q, "{}", with_csrf));
    CHECK(waiting["result"] == "cancelled");
    REQUIRE(post(addr, "/api/queues/" + q + "/resume", "{}", with_csrf).status == 200);
    push(r, q,
         {R"({"id":"s","payload":{"animal":"aardvark"}})",
          R"({"id":"f","handler":"fail","payload":{"animal":"bandicoot"}})",
          R"({"id":"c","handler":"sleep","payload":{"ms":20000,"animal":"capybara"}})",
          R"({"id":"big","payload":)" + big + "}"});
    // Cancelled as it runs: the daemon's settle writes its state.
    REQUIRE(eventually(
        [&] {
          return body_of(get(addr, "/api/jobs/c?queue=" + q)).value("status", "") == "active";
        },
        10s));
    CHECK(body_of(post(addr, "/api/jobs/c/cancel?queue=" + q, "{}", with_csrf))["result"] ==
          "requested");
  }
  // A job file that fails: its store is failed/ in the directory, not Redis' dead jobs.
  write_file(spool.path() / "d.json",
             R"({"id":"d","handler":"fail","payload":{"animal":"dingo"}})");
  const std::vector<std::string> ends = {"s", "f", "c", "big", "w"};
  REQUIRE(eventually(
      [&] {
        std::size_t ended = 0;
        for (const std::string q : {"q", "kept"}) {
          for (auto& st : job_states(r, q, ends, {"status"})) {
            ended += st["status"] == "succeeded" || st["status"] == "failed" ||
                     st["status"] == "cancelled";
          }
        }
        return ended == 2 * ends.size() && count_status(r, "kept", {"d"}, "failed") == 1;
      },
      15s));

  // Found by their payload, where the queue keeps it.
  auto found = search_all(addr, "kept", "aardvark");
  REQUIRE(found.count("s"));
  CHECK(found["s"]["where"] == "succeeded");
  CHECK(found["s"]["field"] == "payload");
  CHECK(found["s"]["excerpt"] == R"({"animal":"aardvark"})");
  found = search_all(addr, "kept", "CAPYBARA");
  REQUIRE(found.count("c"));
  CHECK(found["c"]["where"] == "cancelled");
  CHECK(found["c"]["field"] == "payload");
  found = search_all(addr, "kept", "wombat");
  REQUIRE(found.count("w"));
  CHECK(found["w"]["where"] == "cancelled");
  found = search_all(addr, "kept", "dingo");
  REQUIRE(found.count("d"));
  CHECK(found["d"]["where"] == "failed");
  CHECK(found["d"]["field"] == "payload");
  found = search_all(addr, "kept", "elephant");
  CHECK(found.count("big"));
  // A dead job: found with the dead ones (its JSON), once; among the failed states by its own.
  found = search_all(addr, "kept", "bandicoot");
  REQUIRE(found.size() == 1);
  CHECK(found["f"]["where"] == "dead");
  found = search_all(addr, "kept", "bandicoot", "failed");
  REQUIRE(found.count("f"));
  CHECK(found["f"]["field"] == "payload");

  // On its page (and jobqctl status) as JSON; a long one as its first 4 KiB, said so.
  const json s = body_of(get(addr, "/api/jobs/s?queue=kept"));
  CHECK(s["payload"] == json({{"animal", "aardvark"}}));
  CHECK_FALSE(s.contains("payload_truncated"));
  const json cut = body_of(get(addr, "/api/jobs/big?queue=kept"));
  CHECK(cut["payload_truncated"] == true);
  REQUIRE(cut["payload"].is_string());
  CHECK(cut["payload"].get<std::string>() == big.substr(0, 4096) + "...");
  CHECK(r.integer({"HSTRLEN", "jobq:{kept}:job:big", "payload"}) == 4099);
  const auto status = jobqctl(redis, {"status", "s", "-q", "kept"});
  CHECK(status.code == 0);
  CHECK_THAT(status.out, Catch::Contains("payload: {\"animal\":\"aardvark\"}\n"));
  CHECK(body_of(get(addr, "/api/jobs/d?queue=kept"))["payload"] == json({{"animal", "dingo"}}));

  // A queue without it: no field, and no finished job found by its payload.
  for (const auto& id : ends) {
    INFO(id);
    CHECK(r.integer({"HEXISTS", "jobq:{q}:job:" + id, "payload"}) == 0);
    CHECK_FALSE(body_of(get(addr, "/api/jobs/" + id + "?queue=q")).contains("payload"));
  }
  CHECK(search_all(addr, "q", "aardvark").empty());
  CHECK(search_all(addr, "q", "capybara").empty());
  CHECK(search_all(addr, "q", "wombat").empty());
  CHECK(search_all(addr, "q", "bandicoot", "failed").empty());
  CHECK(d.stop() == 0);
}

TEST_CASE(
    "GET /api/queues: a rate queue's tokens left and a group_by queue's groups held back, as "
    "jobqctl queues --json has them; a plain queue has neither; the config's fields unchanged",
    "[integration][http][api]") {
  RedisServer redis;
  // 1/m refills a token a minute: the tokens three jobs took stay gone while the test looks.
  // Tenant a's jobs sleep 30 s, one at a time: the one running holds the others back throughout.
  const std::string yaml = R"(
http: {listen: 127.0.0.1:0}
handlers:
  echo: {type: builtin, name: echo}
  nap: {type: builtin, name: sleep}
queues:
  limited: {handler: echo, rate: 1/m, rate_burst: 5, global_concurrency: 20}
  tenants: {handler: nap, concurrency: 4, group_by: {key: payload.tenant, concurrency: 1}}
  q: {handler: echo}  # plain: none of the limits
)";
  Daemon d(redis, yaml);
  const auto addr = start_serving(d, redis);
  auto r = redis.client();
  const auto rows = [&] {
    std::map<std::string, json> by;
    for (const auto& row : body_of(get(addr, "/api/queues")))
      by[row["name"].get<std::string>()] = row;
    return by;
  };
  const auto cli_rows = [&] {
    std::map<std::string, json> by;
    for (const auto& row : json::parse(jobqctl(redis, {"--json", "queues"}).out)) {
      by[row["name"].get<std::string>()] = row;
    }
    return by;
  };

  // A full bucket before any job took a token: a reading, not the burst written down.
  std::map<std::string, json> by;
  REQUIRE(eventually(
      [&] {
        by = rows();
        return by["limited"].value("rate_tokens", json()) == 5;
      },
      10s));
  push(r, "limited", jobs_for(ids("l", 3), "1"));
  REQUIRE(
      eventually([&] { return count_status(r, "limited", ids("l", 3), "succeeded") == 3; }, 10s));
  push(r, "tenants", jobs_for(ids("a", 4), R"({"tenant":"a","ms":30000})"));
  REQUIRE(eventually(
      [&] {
        by = rows();
        return by["limited"].value("rate_tokens", json()) == 2 &&
               by["tenants"].value("groups_held_back", json()) ==
                   json::parse(R"([{"group":"a","waiting":3}])");
      },
      10s));
  INFO(json(by).dump());
  const json& limited = by["limited"];
  const json& tenants = by["tenants"];
  const json& plain = by["q"];
  // The same fields jobqctl gives, of the same shapes.
  const auto cli = cli_rows();
  INFO(json(cli).dump());
  CHECK(limited["rate_tokens"] == cli.at("limited")["rate_tokens"]);
  CHECK(tenants["groups_held_back"] == cli.at("tenants")["groups_held_back"]);
  // Only where a queue has the feature: nothing new on the others.
  CHECK_FALSE(limited.contains("groups_held_back"));
  CHECK_FALSE(tenants.contains("rate_tokens"));
  CHECK_FALSE(plain.contains("rate_tokens"));
  CHECK_FALSE(plain.contains("groups_held_back"));
  // The API's own fields of the config as they were (not jobqctl's shapes), and none of
  // jobqctl's other limits' fields.
  CHECK(limited["rate"] == "1/m");
  CHECK(limited["global_concurrency"] == 20);
  CHECK(limited["weight"] == 1);
  CHECK(limited["priorities"].is_null());
  CHECK(limited["group_by"].is_null());
  CHECK(tenants["group_by"] == "payload.tenant");
  CHECK(tenants["rate"].is_null());
  CHECK(plain["rate"].is_null());
  CHECK(plain["weight"] == 1);
  for (const auto& [name, row] : by) {
    for (const char* field : {"rate_burst", "group_rate", "group_concurrency", "limits_differ"}) {
      INFO(name << " " << field);
      CHECK_FALSE(row.contains(field));
    }
  }
  CHECK(by.size() == 3);
}

TEST_CASE("The API: a job submitted with after waits, then runs once what it names is final",
          "[integration][http][api][workflows]") {
  RedisServer redis;
  Daemon d(redis, kYaml);
  const auto addr = start_serving(d, redis);
  auto r = redis.client();
  const std::string with_csrf = csrf_header(addr);
  auto sub = post(addr, "/api/queues/q/jobs", R"({"id":"w","payload":1,"after":["d"]})", with_csrf);
  INFO(sub.body);
  CHECK(sub.status == 200);
  CHECK(body_of(sub)["result"] == "waiting");
  CHECK(r.str({"HGET", "jobq:{q}:job:w", "status"}) == "waiting");
  // A well-formed after that the API refuses would say what is wrong.
  auto self =
      post(addr, "/api/queues/q/jobs", R"({"id":"s","payload":1,"after":["s"]})", with_csrf);
  CHECK(self.status == 400);
  CHECK(error_of(self).find("cannot wait for itself") != std::string::npos);
  r.cmd({"LPUSH", "jobq:{q}:pending", R"({"id":"d","payload":0})"});
  CHECK(eventually(
      [&] {
        return r.str({"HGET", "jobq:{q}:job:w", "status"}) == "succeeded";
      },
      10s));
  CHECK(d.stop() == 0);
}

TEST_CASE("GET /api/jobs/ID/flow: the graph around a job, the bytes jobqctl flow --json prints",
          "[integration][http][api][workflows][flow]") {
  RedisServer redis;
  Daemon d(redis, kYaml);
  const auto addr = start_serving(d, redis);
  const std::string with_csrf = csrf_header(addr);
  // A chain a <- b <- c across two queues; q paused, so that a stays queued while it is read.
  REQUIRE(post(addr, "/api/queues/q/pause", "{}", with_csrf).status == 200);
  const std::vector<std::vector<std::string>> chain = {
      {"submit", "q", "{}", "--id", "a"},
      {"submit", "fails", "{}", "--id", "b", "--after", "q/a"},
      {"submit", "q", "{}", "--id", "c", "--after", "fails/b"}};
  for (const auto& args : chain) {
    const auto ran = jobqctl(redis, args);
    INFO(ran.out);
    REQUIRE(ran.code == 0);
  }

  // b's graph: what it waits for (a) and what waits on it (c), each with its state.
  const auto flow = get(addr, "/api/jobs/b/flow?queue=fails");
  INFO(flow.body);
  REQUIRE(flow.status == 200);
  CHECK(flow.header("Content-Type") == "application/json");
  const json b = body_of(flow);
  CHECK(b["job"] == "b");
  CHECK(b["queue"] == "fails");
  CHECK(b["status"] == "waiting");
  CHECK(b["waiting_for"] == 1);
  CHECK(b["submitted_at"].is_number_integer());
  REQUIRE(b["after"].size() == 1);
  CHECK(b["after"][0]["job"] == "a");
  CHECK(b["after"][0]["queue"] == "q");
  CHECK(b["after"][0]["status"] == "queued");
  REQUIRE(b["dependents"].size() == 1);
  CHECK(b["dependents"][0]["job"] == "c");
  CHECK(b["dependents"][0]["queue"] == "q");
  CHECK(b["dependents"][0]["status"] == "waiting");
  CHECK(b["dependents_known"] == true);
  CHECK(b["cut"] == false);
  // jobqctl's --json, byte for byte (one encoder); found without the queue as jobs/ID finds it.
  const auto cli = jobqctl(redis, {"--json", "flow", "b", "-q", "fails"});
  REQUIRE(cli.code == 0);
  CHECK(flow.body == cli.out);
  CHECK(get(addr, "/api/jobs/b/flow").body == cli.out);

  // Not found, a bad id, the wrong method, and a page of another site (DNS rebinding): as for the
  // other reads.
  const auto none = get(addr, "/api/jobs/nobody/flow?queue=q");
  CHECK(none.status == 404);
  CHECK(error_of(none) == "no job nobody in queue q");
  CHECK(get(addr, "/api/jobs/nobody/flow").status == 404);
  CHECK(get(addr, "/api/jobs/bad%20id/flow").status == 400);
  CHECK(get(addr, "/api/jobs/b/flow?queue=a%2Fb").status == 400);
  const auto posted = post(addr, "/api/jobs/b/flow?queue=fails", "{}", with_csrf);
  CHECK(posted.status == 405);
  CHECK(posted.header("Allow") == "GET, HEAD");
  CHECK(request(addr, "GET /api/jobs/b/flow?queue=fails HTTP/1.1\r\nHost: evil.example\r\n\r\n")
            .status == 403);

  // Run: a succeeds, b fails (its handler exits 1), c ends failed by its policy. c's graph shows
  // the failure's error two levels up the same way, and that its dependents are no longer known.
  REQUIRE(post(addr, "/api/queues/q/resume", "{}", with_csrf).status == 200);
  auto r = redis.client();
  REQUIRE(eventually([&] { return r.str({"HGET", "jobq:{q}:job:c", "status"}) == "failed"; }, 10s));
  const auto ended = get(addr, "/api/jobs/c/flow?queue=q");
  INFO(ended.body);
  REQUIRE(ended.status == 200);
  const json c = body_of(ended);
  CHECK(c["status"] == "failed");
  CHECK(c["error_kind"] == "dependency");
  CHECK(c["dependents_known"] == false);
  REQUIRE(c["after"].size() == 1);
  CHECK(c["after"][0]["status"] == "failed");
  CHECK(c["after"][0]["error"].get<std::string>().find("exit") != std::string::npos);
  CHECK(c["after"][0]["finished_at"].is_number_integer());
  REQUIRE(c["after"][0]["after"].size() == 1);
  CHECK(c["after"][0]["after"][0]["status"] == "succeeded");
  CHECK(ended.body == jobqctl(redis, {"--json", "flow", "c", "-q", "q"}).out);
  CHECK(d.stop() == 0);
}

TEST_CASE(
    "POST /api/jobs/ID/retry: a failed step with what failed because of it; they run in order",
    "[integration][http][api][workflows][retry]") {
  RedisServer redis;
  TempDir dir;
  const std::string flag = (dir.path() / "fixed").string();
  // x fails until the flag file exists (a bug fixed between the run and the retry), at once.
  const std::string queues = fixed_later_queues(flag);
  Daemon d(redis, "http: {listen: 127.0.0.1:0}\n" + queues);
  d.start_and_wait(redis, "a");
  const auto addr = http_address(d);
  REQUIRE(eventually([&] { return get(addr, "/healthz").status == 200; }, 10s));
  auto r = redis.client();
  const auto status = [&](const std::string& q, const std::string& id) {
    return r.str({"HGET", "jobq:{" + q + "}:job:" + id, "status"});
  };
  // A chain across two queues: b/d waits for a/x, b/e for d. x fails: d and e fail because of it.
  push(r, "b",
       {R"({"id":"d","payload":1,"after":["a/x"]})", R"({"id":"e","payload":2,"after":["d"]})"});
  REQUIRE(eventually([&] { return count_status(r, "b", {"d", "e"}, "waiting") == 2; }, 10s));
  push(r, "a", {R"({"id":"x","payload":0})"});
  REQUIRE(eventually(
      [&] {
        return status("a", "x") == "failed" && count_status(r, "b", {"d", "e"}, "failed") == 2;
      },
      15s));

  // An action as any other: refused without the CSRF value, and with a bad id or queue; GET is
  // not it. Nothing was retried by those.
  const auto no_csrf = post(addr, "/api/jobs/x/retry?queue=a", "{}");
  CHECK(no_csrf.status == 403);
  CHECK(error_of(no_csrf).find("X-CSRF-Token") != std::string::npos);
  const std::string with_csrf = csrf_header(addr);
  CHECK(post(addr, "/api/jobs/bad%20id/retry?queue=a", "{}", with_csrf).status == 400);
  CHECK(post(addr, "/api/jobs/x/retry?queue=a%2Fb", "{}", with_csrf).status == 400);
  const auto got = get(addr, "/api/jobs/x/retry?queue=a");
  CHECK(got.status == 405);
  CHECK(got.header("Allow") == "POST");
  CHECK(status("a", "x") == "failed");
  CHECK(r.integer({"ZCARD", "jobq:{a}:dead"}) == 1);

  // Fixed, then retried: x and what failed because of it, down the chain, in that order.
  write_file(flag, "");
  const auto retried = post(addr, "/api/jobs/x/retry?queue=a", "{}", with_csrf);
  INFO(retried.body);
  REQUIRE(retried.status == 200);
  CHECK(body_of(retried) == json({{"id", "x"},
                                  {"queue", "a"},
                                  {"retried", {"a/x", "b/d", "b/e"}},
                                  {"left", json::array()}}));
  const bool ran = eventually(
      [&] {
        return status("a", "x") == "succeeded" && status("b", "d") == "succeeded" &&
               status("b", "e") == "succeeded";
      },
      15s);
  if (!ran) {
    for (const auto& [q, id] :
         std::vector<std::pair<std::string, std::string>>{{"a", "x"}, {"b", "d"}, {"b", "e"}}) {
      INFO(q << "/" << id << ": " << status(q, id) << " "
             << r.str({"HGET", "jobq:{" + q + "}:job:" + id, "error"}));
    }
    REQUIRE(ran);
  }
  CHECK(r.integer({"ZCARD", "jobq:{a}:dead"}) == 0);
  CHECK(r.integer({"ZCARD", "jobq:{b}:dead"}) == 0);

  // Asked again: x is no longer among the dead (found without the queue too, by its state).
  const auto again = post(addr, "/api/jobs/x/retry?queue=a", "{}", with_csrf);
  CHECK(again.status == 404);
  CHECK(error_of(again) == "no dead job x in queue a");
  CHECK(post(addr, "/api/jobs/x/retry", "{}", with_csrf).status == 404);

  // read_only, by a reload: refused as cancel is, before anything is looked at.
  d.write_config("http: {listen: 127.0.0.1:0, read_only: true}\n" + queues);
  REQUIRE(d.reload());
  const auto refused = post(addr, "/api/jobs/x/retry?queue=a", "{}", with_csrf);
  CHECK(refused.status == 403);
  CHECK(error_of(refused) == "read-only (http.read_only)");
  CHECK(post(addr, "/api/jobs/x/cancel?queue=a", "{}", with_csrf).status == 403);
  CHECK(d.stop() == 0);
}
