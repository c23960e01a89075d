// redis-cluster://: jobqd and jobqctl on a real Redis Cluster (3 primaries, 3 replicas): queues
// spread over every primary, a primary killed -9 and its replica promoted, a queue's slot
// migrated while 10,000 jobs flow.
#include <catch2/catch.hpp>

#include <map>
#include <mutex>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "redis/cluster.hpp"
#include "tests/support/cluster.hpp"
#include "tests/support/daemon.hpp"
#include "tests/support/http_server.hpp"
#include "tests/support/tls_certs.hpp"

using namespace jq::test;
using namespace std::chrono_literals;

namespace {

bool all_succeeded(int port, const std::string& queue, const std::vector<std::string>& ids) {
  try {
    SyncRedis r(port);
    return count_status(r, queue, ids, "succeeded") == ids.size();
  } catch (const std::exception&) {
    return false;
  }
}

long long script_calls(int port) {
  const std::string stats = SyncRedis(port).str({"INFO", "commandstats"});
  const auto at = stats.find("cmdstat_evalsha:calls=");
  return at == std::string::npos ? 0 : std::stoll(stats.substr(at + 22));
}

Ran jobqctl_on(const RedisCluster& c, std::vector<std::string> args) {
  std::vector<std::string> argv{(build_dir() / "jobqctl").string(), "--redis", c.url()};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_program(argv);
}

// Still running, and every command went to its slot's node: no redirect, no cross-slot refusal
// in its log (a slow machine's timeouts are not this).
void check_routed(Daemon& d) {
  CHECK(d.running());
  const auto log = d.log();
  INFO(log);
  CHECK(log.find("MOVED") == std::string::npos);
  CHECK(log.find("CROSSSLOT") == std::string::npos);
}

}  // namespace

TEST_CASE(
    "redis-cluster://: twelve queues spread over every primary run, submitted by LPUSH to "
    "the slot's node and by jobqctl",
    "[integration][cluster]") {
  RedisCluster cluster(3, 1);
  std::string yaml =
      "handlers:\n  echo: {type: builtin, name: echo}\n  nap: {type: builtin, name: sleep}\n"
      "queues:\n";
  std::vector<std::string> queues;
  std::set<int> owners;
  for (int i = 0; i < 12; ++i) {
    queues.push_back("q" + std::to_string(i));
    yaml += "  q" + std::to_string(i) + ": {handler: echo, concurrency: 4}\n";
    owners.insert(cluster.owner_of_queue(queues.back()));
  }
  REQUIRE(owners.size() == 3);  // the names land on every primary
  Daemon d(cluster.url(), yaml);
  d.start();
  std::map<std::string, std::vector<std::string>> pushed;
  for (const auto& q : queues) {
    pushed[q] = ids(q + "-", 30);
    SyncRedis r(cluster.owner_of_queue(q));
    push(r, q, jobs_for(pushed[q], "{}"));
  }
  for (const auto& q : queues) {
    INFO(q);
    CHECK(eventually([&] { return all_succeeded(cluster.owner_of_queue(q), q, pushed[q]); }, 20s));
  }
  for (int port : owners) {
    INFO(port);
    CHECK(script_calls(port) > 0);
  }

  // jobqctl routes each call to its queue's node: submit and wait, status, the list of queues.
  auto sub = jobqctl_on(
      cluster, {"submit", "q7", R"({"n":1})", "--id", "by-ctl", "--wait", "--wait-timeout", "10s"});
  INFO(sub.out);
  CHECK(sub.code == 0);
  CHECK(SyncRedis(cluster.owner_of_queue("q7")).str({"HGET", "jobq:{q7}:job:by-ctl", "status"}) ==
        "succeeded");
  auto status = jobqctl_on(cluster, {"status", "q3-0", "--queue", "q3"});
  INFO(status.out);
  CHECK(status.code == 0);
  CHECK(status.out.find("succeeded") != std::string::npos);
  auto listed = jobqctl_on(cluster, {"queues"});
  INFO(listed.out);
  CHECK(listed.code == 0);
  for (const auto& q : queues) CHECK(listed.out.find(q) != std::string::npos);
  auto stats = jobqctl_on(cluster, {"stats"});
  INFO(stats.out);
  CHECK(stats.code == 0);
  check_routed(d);
}

TEST_CASE(
    "redis-cluster://: a primary killed -9 and its replica promoted; the daemon carries on "
    "and loses no job Redis kept",
    "[integration][cluster]") {
  RedisCluster cluster(3, 1);
  Daemon d(cluster.url(), kEchoQueue);
  d.start();
  const int slot = jq::redis::slot_of("{q}");
  const int first = cluster.owner(slot);
  const auto before = ids("b", 50);
  {
    SyncRedis r(first);
    push(r, "q", jobs_for(before, "{}"));
  }
  CHECK(eventually([&] { return all_succeeded(first, "q", before); }, 15s));

  // Jobs on their way: pushed, replicated (WAIT), then the primary dies with them in flight.
  const auto during = ids("d", 300);
  {
    SyncRedis r(first);
    push(r, "q", jobs_for(during, R"({"ms":2})"));
    CHECK(r.integer({"WAIT", "1", "2000"}) == 1);
  }
  cluster.kill(first);
  int second = 0;
  REQUIRE(eventually(
      [&] {
        second = cluster.owner(slot);
        return second != 0 && second != first;
      },
      30s));
  const auto failed_over = std::chrono::steady_clock::now();
  const auto after = ids("a", 50);
  {
    SyncRedis r(second);
    push(r, "q", jobs_for(after, "{}"));
  }
  // Within the cluster's settling plus a few seconds of a busy machine.
  CHECK(eventually([&] { return all_succeeded(second, "q", after); }, 15s));
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - failed_over);
  INFO("carried on " << took.count() << " ms after the failover");
  CHECK(took < 10s);
  // What Redis kept (replicated before the kill) all ends succeeded: run again where its end was
  // lost with the old primary (at least once).
  CHECK(eventually([&] { return all_succeeded(second, "q", during); }, 20s));
  CHECK(d.running());
  INFO(d.log());
  CHECK(d.log().find("127.0.0.1:" + std::to_string(second)) != std::string::npos);
}

TEST_CASE(
    "redis-cluster://: a queue's slot migrated to another primary while 10,000 jobs flow: "
    "none lost, none run twice",
    "[integration][cluster]") {
  RedisCluster cluster(3, 0);
  HttpServer hooks;
  std::mutex m;
  std::map<std::string, int> runs;
  hooks.on_request([&](const HttpRequest& r, std::size_t) {
    std::lock_guard<std::mutex> lock(m);
    ++runs[r.headers.count("x-jobq-id") ? r.headers.at("x-jobq-id") : ""];
    return HttpResponse{};
  });
  const std::string yaml = "handlers:\n  hook: {type: http, url: \"" + hooks.url("/hook") +
                           "\"}\nqueues:\n  q: {handler: hook, concurrency: 16}\n";
  const int slot = jq::redis::slot_of("{q}");
  const int from = cluster.owner(slot);
  int to = 0;
  for (int p : cluster.primaries()) {
    if (p != from) to = p;
  }
  const auto all = ids("j", 10000);
  {
    SyncRedis r(from);
    push(r, "q", jobs_for(all, "{}"));
  }
  // A lease longer than the migration: while the slot moves the lease cannot be renewed (its key
  // moves too), and a daemon that cannot renew stops its jobs, which then run again (at least
  // once). The test's point is that the move itself neither loses nor doubles a job.
  Daemon d(cluster.url(), yaml, "  lease: 15s\n");
  d.start();
  REQUIRE(eventually([&] { return hooks.request_count() >= 1000; }, 30s));
  std::size_t at_start = hooks.request_count();
  // Small batches: the migration lasts while the daemon works, which meets ASK and TRYAGAIN.
  cluster.migrate(slot, to, 20, [] {});
  const std::size_t at_end = hooks.request_count();
  INFO("jobs run during the migration: " << at_end - at_start);
  CHECK(at_end < all.size());  // the migration ended before the jobs did
  CHECK(eventually([&] { return all_succeeded(to, "q", all); }, 60s));
  {
    std::lock_guard<std::mutex> lock(m);
    std::size_t twice = 0;
    std::string example;
    for (const auto& [id, n] : runs) {
      if (n > 1) {
        ++twice;
        example = id;
      }
    }
    INFO("run twice: " << twice << " (for example " << example << ")");
    CHECK(twice == 0);
    CHECK(runs.size() == all.size());
  }
  CHECK(SyncRedis(from).integer({"DBSIZE"}) == 0);  // nothing left behind on the old node
  CHECK(d.running());
  // It met the migration and followed the slot (a MOVED at least, once the slot was the
  // target's), and its connections serve the new primary now.
  INFO(d.log());
  CHECK(d.log().find("MOVED " + std::to_string(slot) + " 127.0.0.1:" + std::to_string(to)) !=
        std::string::npos);
}

TEST_CASE(
    "redis-cluster:// over TLS (redis.tls): the nodes named by CLUSTER SLOTS are reached over "
    "TLS, certificates checked; jobqctl the same",
    "[integration][cluster][tls]") {
  TempDir pki;
  const auto [ca, cert] = group_certs(pki.path());
  RedisCluster cluster(3, 0, RedisServer::Tls{cert.cert, cert.key, ca.cert});
  // Two queues on two primaries.
  std::string second;
  for (int i = 0; second.empty(); ++i) {
    const std::string q = "t" + std::to_string(i);
    if (cluster.owner_of_queue(q) != cluster.owner_of_queue("q")) second = q;
  }
  const std::string yaml = std::string(kEchoQueue) + "  " + second + ": {handler: echo}\n";
  Daemon d(cluster.tls_url(), yaml, "", "  tls: {ca_file: " + ca.cert + "}\n");
  d.start();
  for (const std::string& q : std::vector<std::string>{"q", second}) {
    const auto jobs = ids(q + "-", 20);
    SyncRedis r(cluster.owner_of_queue(q));
    push(r, q, jobs_for(jobs, "{}"));
    INFO(q);
    CHECK(eventually([&] { return all_succeeded(cluster.owner_of_queue(q), q, jobs); }, 20s));
  }
  // (The nodes were reached on the TLS ports CLUSTER SLOTS named: a TLS handshake with a plain
  // port never completes, and no job would have run.)
  auto sub =
      run_program({(build_dir() / "jobqctl").string(), "-c", d.config_path(), "submit", second,
                   R"({"n":2})", "--id", "tls-ctl", "--wait", "--wait-timeout", "10s"});
  INFO(sub.out);
  CHECK(sub.code == 0);
  CHECK(sub.out == "{\"n\":2}\n");
  // A CA that did not sign the nodes: refused, saying why.
  const auto other = make_ca(pki.path(), "other");
  Daemon wrong(cluster.tls_url(), yaml, "", "  tls: {ca_file: " + other.cert + "}\n");
  auto refused =
      run_program({(build_dir() / "jobqctl").string(), "-c", wrong.config_path(), "queues"});
  INFO(refused.out);
  CHECK(refused.code == 1);
  CHECK(refused.out.find("certificate") != std::string::npos);
  check_routed(d);
}

TEST_CASE(
    "redis-cluster://: three daemons on queues of three primaries, one killed -9 every second "
    "or so and started again: every job runs, none is lost",
    "[integration][cluster]") {
  RedisCluster cluster(3, 0);
  // A queue on each primary.
  std::map<int, std::string> on;
  for (int i = 0; on.size() < 3; ++i) {
    const std::string q = "k" + std::to_string(i);
    on.emplace(cluster.owner_of_queue(q), q);
  }
  std::string yaml = "handlers:\n  sleep: {type: builtin, name: sleep}\nqueues:\n";
  // More attempts than kills: each kill costs the jobs its victim holds an attempt, and those
  // go first in line for the next victim (test_shards.cpp's kill test met it).
  for (const auto& [port, q] : on) {
    yaml += "  " + q + ": {handler: sleep, concurrency: 4, buffer: 8, max_attempts: 10}\n";
  }
  std::vector<std::unique_ptr<Daemon>> daemons;
  for (int i = 0; i < 3; ++i) {
    daemons.push_back(std::make_unique<Daemon>(cluster.url(), yaml));
    daemons.back()->start();
  }
  std::map<std::string, std::vector<std::string>> jobs;
  for (const auto& [port, q] : on) {
    jobs[q] = ids(q + "-", 800);
    SyncRedis r(port);
    push(r, q, jobs_for(jobs[q], R"({"ms":40})"));
  }
  auto done = [&] {
    for (const auto& [port, q] : on) {
      if (!all_succeeded(port, q, jobs[q])) return false;
    }
    return true;
  };
  // Serving: the daemon holds a lease on the first queue (it fetches there).
  auto serving = [&](Daemon& d) {
    return eventually([&] { return cluster.leases_held(d.pid(), {on.begin()->second}); }, 20s);
  };
  // Six kills at most; then every job must end.
  const auto [kills, not_serving] = kill_in_turn(daemons, done, serving);
  CHECK(not_serving == 0);
  CHECK(eventually(done, 60s));
  INFO("kills: " << kills);
  for (const auto& [port, q] : on) {
    SyncRedis r(port);
    INFO(q << ": succeeded " << count_status(r, q, jobs[q], "succeeded") << " of " << jobs[q].size()
           << ", pending " << r.integer({"LLEN", "jobq:{" + q + "}:pending"}) << ", held "
           << count_held(r, q, jobs[q]));
    CHECK(all_succeeded(port, q, jobs[q]));
  }
  CHECK(kills >= 3);  // the kills came while jobs ran
  for (const auto& [port, q] : on) {
    SyncRedis r(port);
    INFO(q);
    CHECK(r.integer({"ZCARD", "jobq:{" + q + "}:dead"}) == 0);
    CHECK(r.integer({"LLEN", "jobq:{" + q + "}:pending"}) == 0);
  }
}

TEST_CASE(
    "redis-cluster://: schedules of queues on every primary tick once each across two "
    "daemons; a rate and a global concurrency hold there too; jobqctl lists and pauses them",
    "[integration][cluster][schedules]") {
  RedisCluster cluster(3, 0);
  std::string yaml =
      "handlers:\n  echo: {type: builtin, name: echo}\n  nap: {type: builtin, name: sleep}\n"
      "queues:\n";
  std::vector<std::string> queues;
  std::set<int> owners;
  for (int i = 0; queues.size() < 3; ++i) {
    const std::string q = "s" + std::to_string(i);
    if (owners.count(cluster.owner_of_queue(q))) continue;
    owners.insert(cluster.owner_of_queue(q));
    queues.push_back(q);
    yaml += "  " + q + ": {handler: echo, rate: 20/s, rate_burst: 1}\n";
  }
  // A global concurrency of 2 over two daemons of concurrency 2, on another queue.
  yaml += "  capped: {handler: nap, concurrency: 2, global_concurrency: 2}\n";
  yaml += "schedules:\n";
  for (const auto& q : queues) yaml += "  t" + q + ": {cron: \"@every 1s\", queue: " + q + "}\n";
  // The rate, on its queue's node: 100 jobs at 20/s (burst 1) take five seconds.
  SyncRedis r0(cluster.owner_of_queue(queues[0]));
  const auto burst = ids("burst", 100);
  push(r0, queues[0], jobs_for(burst, "{}"));
  SyncRedis rc(cluster.owner_of_queue("capped"));
  const auto capped = ids("c", 16);
  push(rc, "capped", jobs_for(capped, R"({"ms": 100})"));
  Daemon a(cluster.url(), yaml), b(cluster.url(), yaml);
  a.start();
  b.start();
  const auto ticks = [&](const std::string& q) {
    SyncRedis r(cluster.owner_of_queue(q));
    return std::stoll("0" + r.str({"HGET", "jobq:{" + q + "}:schedule:t" + q, "fired"}));
  };
  REQUIRE(eventually([&] { return count_status(r0, queues[0], burst, "succeeded") >= 1; }, 20s));
  const auto first = std::chrono::steady_clock::now();
  for (const auto& q : queues) {
    INFO(q);
    REQUIRE(eventually([&] { return ticks(q) >= 2; }, 20s));
  }
  REQUIRE(eventually([&] { return std::chrono::steady_clock::now() - first >= 2s; }, 5s));
  // Since the first: one token, then 20 a second (the time taken after the count: an upper bound).
  const auto done = count_status(r0, queues[0], burst, "succeeded");
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - first).count();
  INFO(done << " done in " << elapsed << " s");
  CHECK(done <= 1 + 20 * elapsed + 2);
  CHECK(done >= 10);
  CHECK(done < 100);

  auto listed = jobqctl_on(cluster, {"schedules", "--json"});
  INFO(listed.out);
  REQUIRE(listed.code == 0);
  CHECK(nlohmann::json::parse(listed.out).size() == 3);
  REQUIRE(jobqctl_on(cluster, {"schedule", "pause", "t" + queues[1]}).code == 0);
  REQUIRE(eventually([&] { return count_status(rc, "capped", capped, "succeeded") == 16; }, 20s));
  const int most = most_at_once(rc, "capped", capped);
  INFO("capped: most at once " << most);
  CHECK(most <= 2);
  check_routed(a);
  check_routed(b);
  CHECK(a.stop() == 0);
  CHECK(b.stop() == 0);
  // Each tick once: the jobs enqueued (run, or still pending at the stop) are the distinct ids.
  for (const auto& q : queues) {
    SyncRedis r(cluster.owner_of_queue(q));
    std::size_t states = 0;
    for (const auto& e : r.cmd({"LRANGE", "jobq:{" + q + "}:pending", "0", "-1"}).elements) {
      if (e.str.find("\"id\":\"t" + q + ":") != std::string::npos) ++states;
    }
    std::string cursor = "0";
    do {
      auto reply =
          r.cmd({"SCAN", cursor, "MATCH", "jobq:{" + q + "}:job:t" + q + ":*", "COUNT", "1000"});
      cursor = reply.elements[0].str;
      states += reply.elements[1].elements.size();
    } while (cursor != "0");
    INFO(q);
    CHECK(static_cast<long long>(states) == ticks(q));
  }
}

TEST_CASE(
    "redis-cluster://: unique keys on queues of every primary: racing jobqctl submissions "
    "queue one job, LPUSHed duplicates are cancelled naming the first",
    "[integration][cluster][unique]") {
  RedisCluster cluster(3, 0);
  std::string yaml = "handlers:\n  slow: {type: builtin, name: sleep}\nqueues:\n";
  std::vector<std::string> queues;
  std::set<int> owners;
  for (int i = 0; queues.size() < 3; ++i) {
    const std::string q = "u" + std::to_string(i);
    if (owners.count(cluster.owner_of_queue(q))) continue;
    owners.insert(cluster.owner_of_queue(q));
    queues.push_back(q);
    yaml += "  " + q + ": {handler: slow, unique: {key: payload.user}}\n";
  }
  Daemon d(cluster.url(), yaml);
  // Five submitters per queue at once, each its own jobqctl (the config's unique.key applies),
  // before the daemon starts: on a slow machine the last may start after the first job ran and
  // let go of its key (and rightly queue a job then).
  std::map<std::string, std::vector<Ran>> got;
  for (const auto& q : queues) got[q].resize(5);
  std::vector<std::thread> clients;
  for (const auto& q : queues) {
    for (std::size_t i = 0; i < 5; ++i) {
      Ran* slot = &got[q][i];
      clients.emplace_back([&d, slot, q] {
        *slot = run_program({(build_dir() / "jobqctl").string(), "-c", d.config_path(), "submit", q,
                             R"({"user":"ann","ms":200})", "--json"});
      });
    }
  }
  for (auto& t : clients) t.join();
  d.start();
  for (const auto& q : queues) {
    INFO(q);
    SyncRedis r(cluster.owner_of_queue(q));
    std::set<std::string> answered;
    int duplicates = 0;
    for (const auto& g : got[q]) {
      INFO(g.out);
      REQUIRE(g.code == 0);
      const auto at = g.out.find('{');
      const auto j = nlohmann::json::parse(g.out.substr(at, g.out.find('\n', at) - at));
      answered.insert(j["id"].get<std::string>());
      duplicates += j["duplicate"].get<bool>();
    }
    REQUIRE(answered.size() == 1);
    CHECK(duplicates == 4);
    const std::string id = *answered.begin();
    CHECK(eventually([&] { return count_status(r, q, {id}, "succeeded") == 1; }, 20s));
  }
  // Plain LPUSHes to the slot's node: checked as they are taken.
  for (const auto& q : queues) {
    SyncRedis r(cluster.owner_of_queue(q));
    push(r, q,
         {R"({"id":"p1","payload":{"user":"bob","ms":1500}})",
          R"({"id":"p2","payload":{"user":"bob","ms":1}})"});
  }
  for (const auto& q : queues) {
    INFO(q);
    SyncRedis r(cluster.owner_of_queue(q));
    CHECK(eventually([&] { return count_status(r, q, {"p2"}, "cancelled") == 1; }, 20s));
    CHECK(eventually([&] { return count_status(r, q, {"p1"}, "succeeded") == 1; }, 20s));
    CHECK(r.str({"HGET", "jobq:{" + q + "}:job:p2", "error"}).find("job p1 holds unique key") !=
          std::string::npos);
    CHECK(r.integer({"EXISTS", "jobq:{" + q + "}:unique:bob"}) == 0);
  }
  check_routed(d);
  CHECK(d.stop() == 0);
}

TEST_CASE(
    "redis-cluster://: priorities and groups on queues of two primaries: strict order, a wake "
    "on the slot's node, one tenant's backlog not in front of another's (within a global "
    "concurrency: its count reads the slot's own keys)",
    "[integration][cluster][priority][groups]") {
  RedisCluster cluster(3, 0);
  // Two queues whose slots live on different primaries.
  std::string ordered, grouped;
  for (int i = 0; grouped.empty(); ++i) {
    const std::string q = "p" + std::to_string(i);
    if (ordered.empty()) {
      ordered = q;
    } else if (cluster.owner_of_queue(q) != cluster.owner_of_queue(ordered)) {
      grouped = q;
    }
  }
  const std::string yaml = "handlers:\n  nap: {type: builtin, name: sleep}\nqueues:\n  " + ordered +
                           ": {handler: nap, concurrency: 1, priorities: strict, delayed_poll: "
                           "5s}\n  " +
                           grouped +
                           ": {handler: nap, concurrency: 2, global_concurrency: 2, group_by: "
                           "payload.tenant}\n";
  SyncRedis ro(cluster.owner_of_queue(ordered));
  const auto high = ids("h", 5), normal = ids("n", 5), low = ids("l", 5);
  const std::string base = "jobq:{" + ordered + "}:pending";
  for (const auto& [list, which] : {std::pair{base + ":low", &low}, std::pair{base, &normal},
                                    std::pair{base + ":high", &high}}) {
    for (const auto& j : jobs_for(*which, R"({"ms":5})")) ro.cmd({"LPUSH", list, j});
  }
  SyncRedis rg(cluster.owner_of_queue(grouped));
  std::vector<std::string> busy = ids("a", 200), quiet = ids("b", 4);
  std::vector<std::string> jobs;
  for (const auto& id : busy)
    jobs.push_back(R"({"id":")" + id + R"(","payload":{"tenant":"A","ms":5}})");
  for (const auto& id : quiet)
    jobs.push_back(R"({"id":")" + id + R"(","payload":{"tenant":"B","ms":5}})");
  push(rg, grouped, jobs);  // B's 4 behind A's 200 in pending
  Daemon d(cluster.url(), yaml);
  d.start();
  std::vector<std::string> all = high;
  all.insert(all.end(), normal.begin(), normal.end());
  all.insert(all.end(), low.begin(), low.end());
  REQUIRE(
      eventually([&] { return count_status(ro, ordered, all, "succeeded") == all.size(); }, 20s));
  std::vector<std::pair<long long, std::string>> started;
  const auto states = job_states(ro, ordered, all, {"started_at"});
  for (std::size_t i = 0; i < all.size(); ++i) {
    started.emplace_back(std::stoll(states[i].at("started_at")), all[i]);
  }
  std::stable_sort(started.begin(), started.end());
  for (std::size_t i = 0; i < all.size(); ++i) CHECK(started[i].second == all[i]);
  // jobqctl's high job wakes the idle daemon through the slot's node at once.
  const Ran sub = jobqctl_on(cluster, {"submit", ordered, R"({"ms":1})", "--id", "late",
                                       "--priority", "high", "--wait", "--wait-timeout", "10s"});
  INFO(sub.out);
  CHECK(sub.code == 0);
  const auto st = job_states(ro, ordered, {"late"}, {"submitted_at", "started_at"}).front();
  CHECK(std::stoll(st.at("started_at")) - std::stoll(st.at("submitted_at")) < 500);
  // Tenant B's jobs ran while most of A's still waited: B's last end before A's 100th.
  const auto done = [&] {
    return count_status(rg, grouped, quiet, "succeeded") == quiet.size() &&
           count_status(rg, grouped, busy, "succeeded") == busy.size();
  };
  REQUIRE(eventually(done, 20s));
  std::vector<long long> a_ends, b_ends;
  for (auto& s : job_states(rg, grouped, busy, {"finished_at"})) {
    a_ends.push_back(std::stoll(s["finished_at"]));
  }
  for (auto& s : job_states(rg, grouped, quiet, {"finished_at"})) {
    b_ends.push_back(std::stoll(s["finished_at"]));
  }
  std::sort(a_ends.begin(), a_ends.end());
  const long long b_last = *std::max_element(b_ends.begin(), b_ends.end());
  INFO("B's last end " << b_last - a_ends.front() << " ms after A's first; A's 100th "
                       << a_ends[99] - a_ends.front() << " ms");
  CHECK(b_last < a_ends[99]);
  CHECK(d.stop() == 0);
}
