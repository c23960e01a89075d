// jobqd's HTTP side: /healthz through a Redis outage, /metrics counting what ran, the bearer
// token, and clients that send slowly, too much, or too many at once.
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "tests/support/daemon.hpp"
#include "tests/support/files.hpp"
#include "tests/support/http_client.hpp"

using namespace jq::test;
using namespace std::chrono_literals;

namespace {

// Connections a process holds open on local port `port` (IPv4): in /proc/net/tcp, one still in
// the listen backlog has no inode yet; the listening socket itself does not count.
std::size_t accepted(int port) {
  std::ifstream in("/proc/net/tcp");
  std::string line;
  std::getline(in, line);  // the header
  std::size_t n = 0;
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string slot, local, remote, state, queues, timer, retransmits, uid, timeout, inode;
    f >> slot >> local >> remote >> state >> queues >> timer >> retransmits >> uid >> timeout >>
        inode;
    const auto colon = local.find(':');
    if (colon == std::string::npos || state == "0A" || inode == "0") continue;  // 0A: LISTEN
    if (std::stoi(local.substr(colon + 1), nullptr, 16) == port) ++n;
  }
  return n;
}

// The value of one sample in a metrics text, or -1.
double sample(const std::string& text, const std::string& name) {
  for (std::size_t at = 0; (at = text.find(name + " ", at)) != std::string::npos; ++at) {
    if (at == 0 || text[at - 1] == '\n') return std::stod(text.substr(at + name.size() + 1));
  }
  return -1;
}

const char* kYaml = R"(
http: {listen: 127.0.0.1:0}
handlers:
  h: {type: builtin, name: noop}
queues:
  q: {handler: h}
)";

}  // namespace

TEST_CASE("/healthz says whether jobqd serves, through a Redis outage; /metrics counts jobs",
          "[integration][http]") {
  RedisServer redis;
  Daemon d(redis, kYaml);
  const auto addr = start_serving(d, redis);
  CHECK(get(addr, "/healthz").body == "serving\n");
  {
    auto r = redis.client();
    push(r, "q", jobs_for(ids("m", 5), "{}"));
    push(r, "q", {"[not a job"});
  }
  REQUIRE(eventually(
      [&] {
        const auto body = get(addr, "/metrics").body;
        return sample(body, R"(jobqd_jobs_total{queue="q",outcome="succeeded"})") == 5 &&
               sample(body, R"(jobqd_jobs_total{queue="q",outcome="invalid"})") == 1;
      },
      10s));
  const auto m = get(addr, "/metrics");
  CHECK(m.status == 200);
  CHECK(sample(m.body, R"(jobqd_jobs_total{queue="q",outcome="invalid"})") == 1);
  CHECK(sample(m.body, R"(jobqd_jobs_total{queue="q",outcome="failed"})") == 0);
  CHECK(sample(m.body, R"(jobqd_jobs_running{queue="q"})") == 0);
  CHECK(sample(m.body, "jobqd_serving") == 1);
  CHECK(sample(m.body, "jobqd_redis_up") == 1);
  CHECK(sample(m.body, "process_resident_memory_bytes") > 1e6);
  CHECK(sample(m.body, "process_open_fds") > 3);
  CHECK(sample(m.body, "jobqd_loop_lag_seconds") >= 0);
  CHECK(m.body.find("# TYPE jobqd_jobs_total counter") != std::string::npos);
  redis.kill();
  REQUIRE(eventually([&] { return get(addr, "/healthz").status == 503; }, 10s));
  CHECK(get(addr, "/healthz").body.rfind("Redis unreachable: ", 0) == 0);
  CHECK(sample(get(addr, "/metrics").body, "jobqd_redis_up") == 0);
  redis.start();
  REQUIRE(eventually([&] { return get(addr, "/healthz").status == 200; }, 15s));
  CHECK(sample(get(addr, "/metrics").body, "jobqd_redis_reconnects_total") >= 1);
  // GET and HEAD only here (POST is for the API's actions); a POST needs a length.
  CHECK(request(addr, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").status == 405);
  CHECK(request(addr, "POST /metrics HTTP/1.1\r\n\r\n").status == 411);
  CHECK(request(addr, "PUT /metrics HTTP/1.1\r\n\r\n").status == 405);
  CHECK(get(addr, "/nothing").status == 404);
  auto head = request(addr, "HEAD /healthz HTTP/1.1\r\n\r\n");
  CHECK(head.status == 200);
  CHECK(head.body.empty());
  CHECK(request(addr, "garbage\r\n\r\n").status == 400);
  CHECK(request(addr, "GET /met\rrics HTTP/1.1\r\n\r\n").status == 400);  // fuzz finding
  CHECK(request(addr, "get /metrics HTTP/1.1\r\n\r\n").status == 400);
  CHECK(d.stop() == 0);
}

TEST_CASE("HTTP: slow, oversized and too many clients are cut off; the daemon goes on",
          "[integration][http]") {
  RedisServer redis;
  Daemon d(redis, kYaml);
  const auto addr = start_serving(d, redis);
  // One byte a second: cut off at the request deadline (5 s), not kept for ever.
  const auto t0 = std::chrono::steady_clock::now();
  int slow = dial(addr);
  REQUIRE(slow >= 0);
  std::string got;
  const std::string req = "GET /metrics HTTP/1.1\r\n";
  for (std::size_t i = 0; i < req.size(); ++i) {
    if (::send(slow, &req[i], 1, MSG_NOSIGNAL) != 1) break;
    got = read_all(slow, 1s);
    if (!got.empty()) break;
  }
  ::close(slow);
  const auto took = std::chrono::steady_clock::now() - t0;
  CHECK(got.rfind("HTTP/1.1 408", 0) == 0);
  CHECK(took < 8s);
  // A head over 8 KiB: refused, not read on.
  CHECK(get(addr, "/metrics", "X-Big: " + std::string(9000, 'a') + "\r\n").status == 431);
  // Past 64 connections at once, more are closed at once; the first ones still get answers.
  std::vector<int> idle;
  for (int i = 0; i < 64; ++i) idle.push_back(dial(addr));
  // A connect completes in the kernel before the daemon accepts it: the cap counts accepted ones.
  const int port = std::stoi(addr.substr(addr.rfind(':') + 1));
  REQUIRE(eventually([&] { return accepted(port) >= 64; }, 5s));
  int extra = dial(addr);
  REQUIRE(extra >= 0);
  CHECK(read_all(extra, 2s).empty());  // closed without an answer
  ::close(extra);
  for (int fd : idle) {
    const std::string r = "GET /healthz HTTP/1.1\r\n\r\n";
    (void)!::send(fd, r.data(), r.size(), MSG_NOSIGNAL);
  }
  CHECK(read_all(idle.front(), 3s).rfind("HTTP/1.1 200", 0) == 0);
  for (int fd : idle) ::close(fd);
  // Jobs ran all along.
  {
    auto r = redis.client();
    push(r, "q", jobs_for(ids("h", 10), "{}"));
    CHECK(eventually([&] { return count_status(r, "q", ids("h", 10), "succeeded") == 10; }, 10s));
  }
  CHECK(eventually([&] { return get(addr, "/healthz").status == 200; }, 5s));
  CHECK(d.stop() == 0);
}

TEST_CASE("HTTP with a token: /metrics needs it, /healthz does not", "[integration][http]") {
  RedisServer redis;
  TempDir dir;
  const auto token = (dir.path() / "token").string();
  write_file(token, "s3cret-token\n");
  std::string yaml = kYaml;
  yaml.replace(yaml.find("127.0.0.1:0}"), 12, "127.0.0.1:0, token_file: " + token + "}");
  Daemon d(redis, yaml);
  const auto addr = start_serving(d, redis);
  CHECK(get(addr, "/metrics").status == 401);
  CHECK(get(addr, "/metrics", "Authorization: Bearer wrong\r\n").status == 401);
  CHECK(get(addr, "/metrics", "authorization:   Bearer s3cret-token  \r\n").status == 200);
  CHECK(d.stop() == 0);
  // A token file that is not there: refused before start, naming the key, the file and why.
  std::string gone = kYaml;
  gone.replace(gone.find("127.0.0.1:0}"), 12, "127.0.0.1:0, token_file: " + token + ".gone}");
  Daemon without(redis, gone);
  auto check = run_program(
      {(build_dir() / "jobqd").string(), "--check-config", "-c", without.config_path()});
  CHECK(check.code == 78);
  CHECK(check.out.find("http.token_file " + token + ".gone: cannot read it: No such file") !=
        std::string::npos);
}

TEST_CASE(
    "/metrics: depths in Redis per queue (cached), attempt durations, fetch sizes, spool "
    "files waiting",
    "[integration][http]") {
  RedisServer redis;
  TempDir spool;
  Daemon d(redis, R"(
http: {listen: 127.0.0.1:0}
handlers:
  h: {type: builtin, name: noop}
  nap: {type: builtin, name: sleep}
queues:
  q: {handler: h}
  held: {handler: nap, concurrency: 1, buffer: 1}
  files: {handler: nap, concurrency: 1, buffer: 1, sources: [{spool: {dir: )" +
                      spool.str() +
                      R"(, quiet: 0s}}]}
)");
  const auto addr = start_serving(d, redis);
  auto r = redis.client();
  // held: one running (30 s), one buffered, eight pending; one delayed far ahead; q: one dead.
  push(r, "held", jobs_for(ids("h", 10), R"({"ms": 30000})"));
  r.cmd({"ZADD", "jobq:{held}:delayed", "99999999999999", R"({"id":"later","payload":1})"});
  push(r, "q", jobs_for(ids("n", 7), "{}"));
  push(r, "q", {"[not a job"});
  // files: one running, one buffered, two waiting to be claimed (the buffer is full).
  for (const char* f : {"a.json", "b.json", "c.json", "d.json"}) {
    write_file(spool.path() / f, R"({"payload": {"ms": 30000}})");
  }
  std::string body;
  const bool seen = eventually(
      [&] {
        body = get(addr, "/metrics").body;
        return sample(body, R"(jobqd_queue_jobs{queue="held",state="pending"})") == 8 &&
               sample(body, R"(jobqd_queue_jobs{queue="held",state="delayed"})") == 1 &&
               sample(body, R"(jobqd_queue_jobs{queue="q",state="dead"})") == 1 &&
               sample(body, R"(jobqd_job_duration_seconds_count{queue="q"})") == 7;
      },
      15s);
  INFO(body);
  REQUIRE(seen);
  CHECK(sample(body, R"(jobqd_queue_jobs{queue="q",state="pending"})") == 0);
  CHECK(sample(body, R"(jobqd_job_duration_seconds_bucket{queue="q",le="+Inf"})") == 7);
  // A noop takes well under 5 ms: all seven in the first bucket.
  CHECK(sample(body, R"(jobqd_job_duration_seconds_bucket{queue="q",le="0.005"})") == 7);
  CHECK(sample(body, R"(jobqd_job_duration_seconds_count{queue="held"})") == 0);
  // Fetches: q took its 8 in one or a few; held one at a time (its buffer is 1).
  const double fetched = sample(body, R"(jobqd_fetch_batch_jobs_sum{queue="q"})");
  CHECK(fetched == 8);
  CHECK(sample(body, R"(jobqd_fetch_batch_jobs_bucket{queue="held",le="1"})") ==
        sample(body, R"(jobqd_fetch_batch_jobs_count{queue="held"})"));
  // No fetch histogram for a spool-only queue; its directory's files instead.
  CHECK(sample(body, R"(jobqd_fetch_batch_jobs_count{queue="files"})") == -1);
  const std::string dir = "queue=\"files\",dir=\"" + spool.str() + "\"";
  CHECK(eventually(
      [&] {
        body = get(addr, "/metrics").body;
        return sample(body, "jobqd_spool_files_claimed{" + dir + "}") == 2 &&
               sample(body, "jobqd_spool_files_waiting{" + dir + "}") == 2;
      },
      5s));
  // Depths are read every 5 s, not per scrape: 50 scrapes make no commands of their own.
  const auto calls = [&] {
    auto info = r.cmd({"INFO", "commandstats"}).str;
    std::smatch m;
    return std::regex_search(info, m, std::regex(R"(cmdstat_evalsha:calls=(\d+))"))
               ? std::stoll(m[1])
               : 0;
  };
  const auto before = calls();
  for (int i = 0; i < 50; ++i) (void)get(addr, "/metrics");
  CHECK(calls() - before < 30);  // the daemon's own renewals and refreshes; per scrape: 150
  d.kill9();
}

TEST_CASE("/healthz says 503 right after the event loop was stuck, then 200 again",
          "[integration][http]") {
  RedisServer redis;
  Daemon d(redis, kYaml);
  const auto addr = start_serving(d, redis);
  d.signal(SIGSTOP);
  std::this_thread::sleep_for(1500ms);  // the stall itself is what is measured
  // Sent while it is stopped: the first thing its loop sees when it turns again.
  int fd = dial(addr);
  REQUIRE(fd >= 0);
  const std::string raw = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
  (void)!::send(fd, raw.data(), raw.size(), MSG_NOSIGNAL);
  d.signal(SIGCONT);
  const std::string got = read_all(fd, 5s);
  ::close(fd);
  INFO(got);
  CHECK(got.rfind("HTTP/1.1 503", 0) == 0);
  CHECK(got.find("the event loop was stuck for 1.") != std::string::npos);
  CHECK(eventually([&] { return get(addr, "/healthz").status == 200; }, 5s));
  CHECK(d.stop() == 0);
}

TEST_CASE(
    "the progress watchdog: a queue with jobs pending that fetches none is stalled (logged, "
    "/healthz 503 naming it, its connections rebuilt) and recovers",
    "[integration][http]") {
  RedisServer redis;
  Daemon d(redis, kYaml, "  stall_after: 2s\n");
  const auto addr = start_serving(d, redis);
  auto r = redis.client();
  // Scripts refused (an ACL gone wrong): every fetch fails while the connections stay up, which
  // no connection check sees.
  REQUIRE(r.str({"ACL", "SETUSER", "default", "-@scripting"}) == "OK");
  const auto jobs = ids("w", 3);
  push(r, "q", jobs_for(jobs, "{}"));
  // The stall itself, not any 503 (a loop lagging a second on a loaded machine is one too).
  std::string health;
  bool stalled = eventually(
      [&] {
        const auto h = get(addr, "/healthz");
        health = h.body;
        return h.status == 503 && h.body.rfind("queue q stalled: ", 0) == 0;
      },
      15s);
  INFO(d.log());
  INFO(get(addr, "/metrics").body);
  INFO(health);
  REQUIRE(stalled);
  CHECK(health.rfind("queue q stalled: 3 job(s) pending in jobq:{q}:pending and room for ", 0) ==
        0);
  CHECK(health.find("but no job fetched for ") != std::string::npos);
  const auto m = get(addr, "/metrics").body;
  CHECK(sample(m, R"(jobqd_queue_stalled{queue="q"})") == 1);
  CHECK(sample(m, R"(jobqd_queue_last_fetch_age_seconds{queue="q"})") >= 2);
  // Said once, and the queue's connections made again.
  REQUIRE(eventually([&] { return d.log().find("stalled: 3 job(s)") != std::string::npos; }, 5s));
  CHECK(eventually(
      [&] {
        const auto log = d.log();
        return log.find("redis (q): redis " + redis.url() + ": queue q stalled: ") !=
                   std::string::npos &&
               log.find("redis (wait q): redis " + redis.url() + ": queue q stalled: ") !=
                   std::string::npos;
      },
      5s));
  // The ACL mended: the jobs run, the stall ends.
  REQUIRE(r.str({"ACL", "SETUSER", "default", "+@all"}) == "OK");
  CHECK(eventually([&] { return count_status(r, "q", jobs, "succeeded") == jobs.size(); }, 15s));
  CHECK(eventually([&] { return get(addr, "/healthz").status == 200; }, 10s));
  CHECK(sample(get(addr, "/metrics").body, R"(jobqd_queue_stalled{queue="q"})") == 0);
  CHECK(d.log().find("queue q: fetching again") != std::string::npos);
  CHECK(d.stop() == 0);
}

TEST_CASE(
    "GET /api/queues: every queue's row as jobqctl stats --json shows it (this daemon's, a "
    "sharded one, and one only another daemon served), with a token when one is set",
    "[integration][http][api]") {
  RedisServer redis;
  TempDir dir;
  const auto token = (dir.path() / "token").string();
  write_file(token, "api-token\n");
  Daemon d(redis, "http: {listen: 127.0.0.1:0, token_file: " + token +
                      "}\nhandlers:\n  h: {type: builtin, name: noop}\n"
                      "queues:\n  q: {handler: h}\n  wide: {handler: h, shards: 3}\n");
  const auto addr = start_serving(d, redis);
  auto r = redis.client();
  // Jobs waiting while paused (every shard's flag, as jobqctl pause writes them), one dead, and
  // a queue no daemon here serves.
  REQUIRE(jobqctl(redis, {"pause", "wide"}).code == 0);
  for (int i = 0; i < 12; ++i) {
    REQUIRE(jobqctl(redis, {"submit", "wide", "{}", "--id", "w" + std::to_string(i)}).code == 0);
  }
  r.cmd({"SADD", "jobq:queues", "elsewhere"});
  r.cmd({"LPUSH", "jobq:{elsewhere}:pending", R"({"payload":1})", R"({"payload":2})"});
  const std::string auth = "Authorization: Bearer api-token\r\n";
  CHECK(get(addr, "/api/queues").status == 401);
  const auto got = get(addr, "/api/queues", auth);
  INFO(got.body);
  REQUIRE(got.status == 200);
  const auto rows = nlohmann::json::parse(got.body);
  const auto cli = jobqctl(redis, {"stats", "--json"});
  INFO(cli.out);
  REQUIRE(cli.code == 0);
  const auto cli_rows = nlohmann::json::parse(cli.out);
  std::map<std::string, nlohmann::json> by_name;
  for (const auto& row : rows) by_name[row["name"].get<std::string>()] = row;
  REQUIRE(by_name.size() == 3);
  CHECK(by_name["wide"]["pending"] == 12);
  CHECK(by_name["wide"]["paused"] == true);
  CHECK(by_name["wide"]["shards"] == 3);
  CHECK(by_name["elsewhere"]["pending"] == 2);
  CHECK(by_name["q"]["paused"] == false);
  // The same fields and figures as jobqctl's (the per-minute figures and run times move with the
  // daemons' heartbeats: compared by name only).
  REQUIRE(cli_rows.size() == rows.size());
  for (const auto& c : cli_rows) {
    const auto& a = by_name[c["name"].get<std::string>()];
    INFO(c.dump() << " against " << a.dump());
    for (const char* field : {"pending", "delayed", "dead", "paused", "shards"}) {
      CHECK(a[field] == c[field]);
    }
    std::set<std::string> cli_fields, api_fields;
    for (const auto& [k, v] : c.items()) cli_fields.insert(k);
    for (const auto& [k, v] : a.items()) api_fields.insert(k);
    // The API adds the queue's limits, order and weight from its daemon's config (jobqctl may
    // run without one).
    for (const char* added : {"rate", "global_concurrency", "weight", "priorities", "group_by"}) {
      cli_fields.insert(added);
    }
    CHECK(cli_fields == api_fields);
    CHECK(a["rate"].is_null());
    CHECK(a["global_concurrency"].is_null());
    CHECK(a["priorities"].is_null());
    CHECK(a["group_by"].is_null());
  }
  const auto none = get(addr, "/api/nothing", auth);
  CHECK(none.status == 404);
  CHECK(nlohmann::json::parse(none.body)["error"] ==
        "no such API: /api/nothing (docs/api.md lists them)");
  // Redis gone: an answer that says so, not a hang.
  redis.stop();
  const auto away = get(addr, "/api/queues", auth);
  CHECK(away.status == 503);
  CHECK(nlohmann::json::parse(away.body).contains("error"));
  CHECK(d.stop() == 0);
}
