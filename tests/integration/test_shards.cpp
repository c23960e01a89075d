// A queue spread over shards (`shards: N`): on one Redis (ids kept to one job across shards, ids
// homed, every shard served, pause from any shard, spool jobs homed) and on a 3-primary cluster
// (the shards on distinct primaries, three daemons, one killed -9 again and again).
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include <fstream>
#include <set>
#include <thread>

#include "redis/cluster.hpp"
#include "store/shards.hpp"
#include "tests/support/cluster.hpp"
#include "tests/support/daemon.hpp"

using namespace jq::test;
using namespace std::chrono_literals;
using jq::store::home_shard;
using jq::store::shard_tags;

namespace {

const std::vector<std::string> kTags = shard_tags("q", 3);

const std::string& home_of(const std::string& id) {
  return kTags[home_shard(id, kTags.size())];
}

/// Every job state hash of a shard: id -> status.
std::map<std::string, std::string> states_in(SyncRedis& r, const std::string& tag) {
  std::map<std::string, std::string> out;
  const std::string prefix = "jobq:{" + tag + "}:job:";
  for (const auto& k : r.cmd({"KEYS", prefix + "*"}).elements) {
    out[k.str.substr(prefix.size())] = r.str({"HGET", k.str, "status"});
  }
  return out;
}

std::size_t succeeded_at_home(SyncRedis& r, const std::vector<std::string>& ids) {
  std::size_t n = 0;
  for (const auto& id : ids) {
    n += r.str({"HGET", "jobq:{" + home_of(id) + "}:job:" + id, "status"}) == "succeeded";
  }
  return n;
}

// Nothing left waiting or held in any shard (once the last runs have written their ends: a
// job's state may say succeeded while a later job of its id still runs).
void check_drained(SyncRedis& r, const std::vector<std::string>& tags) {
  eventually(
      [&] {
        for (const auto& tag : tags) {
          if (!r.cmd({"KEYS", "jobq:{" + tag + "}:inflight:*"}).elements.empty() ||
              r.integer({"ZCARD", "jobq:{" + tag + "}:delayed"}) != 0) {
            return false;
          }
        }
        return true;
      },
      10s);
  for (const auto& tag : tags) {
    INFO(tag);
    CHECK(r.integer({"LLEN", "jobq:{" + tag + "}:pending"}) == 0);
    CHECK(r.integer({"ZCARD", "jobq:{" + tag + "}:delayed"}) == 0);
    CHECK(r.integer({"ZCARD", "jobq:{" + tag + "}:dead"}) == 0);
    for (const auto& key : r.cmd({"KEYS", "jobq:{" + tag + "}:inflight:*"}).elements) {
      std::string all;
      for (const auto& e : r.cmd({"HGETALL", key.str}).elements) all += e.str + " ";
      INFO(key.str << " holds " << r.integer({"HLEN", key.str}) << " job(s): " << all);
      CHECK(false);
    }
  }
}

}  // namespace

TEST_CASE("shards: the tags of a queue's shards fall in distinct slot windows, ids have a home",
          "[shards]") {
  REQUIRE(kTags.size() == 3);
  CHECK(kTags[0] == "q");
  std::set<int> windows;
  for (const auto& t : kTags) windows.insert(jq::redis::slot_of(t) * 3 / 16384);
  CHECK(windows.size() == 3);
  CHECK(shard_tags("q", 3) == kTags);  // deterministic
  const auto many = shard_tags("a-queue", 64);
  std::set<int> w64;
  for (const auto& t : many) w64.insert(jq::redis::slot_of(t) * 64 / 16384);
  CHECK(w64.size() == 64);
  CHECK(shard_tags("q", 1) == std::vector<std::string>{"q"});
  CHECK(home_shard("anything", 1) == 0);
  std::vector<int> per(3);
  for (int i = 0; i < 9000; ++i) ++per[home_shard("job-" + std::to_string(i), 3)];
  for (int n : per) CHECK((n > 2500 && n < 3500));
  for (std::size_t k = 0; k < 3; ++k) CHECK(home_shard(jq::store::new_id_in(k, 3), 3) == k);
}

TEST_CASE(
    "shards: 3 on one Redis: jobs pushed to any shard run once each; each job's state is in its "
    "id's home shard, an id jobqd gives lives where its job ran; the shard count is written (over "
    "garbage)",
    "[integration][shards]") {
  RedisServer redis;
  auto r = redis.client();
  // Garbage where the count goes (a list): said, and written over.
  r.cmd({"RPUSH", "jobq:{q}:shards", "x"});
  Daemon d(redis,
           "handlers:\n  echo: {type: builtin, name: echo}\n"
           "queues:\n  q: {handler: echo, concurrency: 8, shards: 3}\n");
  d.start();
  // Ids pushed the plain way (shard 0), homed all over; jobs without ids pushed to each shard.
  const auto named = ids("n", 90);
  push(r, "q", jobs_for(named, "{}"));
  for (const auto& tag : kTags) push(r, tag, std::vector<std::string>(20, R"({"payload":{}})"));
  REQUIRE(eventually([&] { return succeeded_at_home(r, named) == named.size(); }, 20s));
  REQUIRE(eventually(
      [&] {
        std::size_t n = 0;
        for (const auto& tag : kTags) n += states_in(r, tag).size();
        return n == named.size() + 60;
      },
      20s));
  std::set<std::string> homes;
  for (std::size_t k = 0; k < kTags.size(); ++k) {
    const auto states = states_in(r, kTags[k]);
    std::size_t unnamed = 0;
    for (const auto& [id, status] : states) {
      INFO(kTags[k] << " holds the state of " << id);
      CHECK(status == "succeeded");
      CHECK(home_shard(id, 3) == k);  // no state outside its id's home
      unnamed += id[0] != 'n';
      homes.insert(id);
    }
    CHECK(unnamed == 20);  // the ids jobqd gave are of the shard they ran in
  }
  CHECK(homes.size() == named.size() + 60);
  CHECK(r.str({"GET", "jobq:{q}:shards"}) == "3");
  CHECK(d.log().find("writing 3 over it") != std::string::npos);
  check_drained(r, kTags);
  CHECK(d.stop() == 0);
}

TEST_CASE(
    "shards: the same id in two shards at once (pushed to shard 0 and to its home) never runs "
    "beside itself, with two daemons; both submissions run, one after the other",
    "[integration][shards]") {
  RedisServer redis;
  TempDir dir;
  // The handler notes a run of an id that another run of it has not left yet.
  const std::string script =
      "mkdir \"$0/run-$1\" 2>/dev/null || echo \"$1\" >> \"$0/overlap\"; echo \"$1\" >> "
      "\"$0/ran\"; sleep 0.1; rmdir \"$0/run-$1\" 2>/dev/null; true";
  const std::string yaml =
      "handlers:\n  once: {type: exec, command: [\"/bin/sh\", \"-c\", " +
      nlohmann::json(script).dump() + ", \"" + dir.path().string() +
      "\", \"{id}\"]}\nqueues:\n  q: {handler: once, concurrency: 8, shards: 3}\n";
  Daemon a(redis, yaml), b(redis, yaml);
  a.start();
  b.start();
  auto r = redis.client();
  // Ids whose home is not shard 0: the copy in shard 0 is forwarded home, where the other waits.
  std::vector<std::string> twice;
  for (int i = 0; twice.size() < 24; ++i) {
    const std::string id = "t" + std::to_string(i);
    if (home_shard(id, 3) != 0) twice.push_back(id);
  }
  const auto jobs = jobs_for(twice, "{}");
  push(r, "q", jobs);
  for (std::size_t i = 0; i < twice.size(); ++i) push(r, home_of(twice[i]), {jobs[i]});
  auto runs = [&] {
    std::ifstream in(dir.path() / "ran");
    std::map<std::string, int> n;
    for (std::string id; std::getline(in, id);) ++n[id];
    return n;
  };
  REQUIRE(eventually(
      [&] {
        std::size_t n = 0;
        for (const auto& [id, count] : runs()) n += count;
        return n == 2 * twice.size();
      },
      30s));
  CHECK(eventually([&] { return succeeded_at_home(r, twice) == twice.size(); }, 10s));
  check_drained(r, kTags);
  INFO(a.log() << b.log());
  CHECK(!std::filesystem::exists(dir.path() / "overlap"));
  for (const auto& [id, count] : runs()) {
    INFO(id);
    CHECK(count == 2);
  }
  CHECK(a.stop() == 0);
  CHECK(b.stop() == 0);
}

TEST_CASE(
    "shards: every shard is served while the buffer is the bottleneck, and an idle sharded "
    "queue costs Redis no busy polling",
    "[integration][shards]") {
  RedisServer redis;
  Daemon d(redis,
           "handlers:\n  sleep: {type: builtin, name: sleep}\n"
           "queues:\n  q: {handler: sleep, concurrency: 2, buffer: 4, fetch_batch: 4, shards: "
           "3}\n");
  auto r = redis.client();
  for (const auto& tag : kTags) {
    push(r, tag, std::vector<std::string>(150, R"({"payload":{"ms":2}})"));
  }
  d.start();
  auto left = [&](const std::string& tag) {
    return r.integer({"LLEN", "jobq:{" + tag + "}:pending"});
  };
  // A third of the work done: no shard may have been left waiting.
  REQUIRE(eventually([&] { return left(kTags[0]) + left(kTags[1]) + left(kTags[2]) <= 300; }, 30s));
  for (const auto& tag : kTags) {
    INFO(tag << " has " << left(tag) << " of 150 left");
    CHECK(left(tag) <= 135);
  }
  REQUIRE(eventually(
      [&] {
        std::size_t ended = 0;
        for (const auto& tag : kTags) ended += states_in(r, tag).size();
        return ended == 450;
      },
      60s));
  check_drained(r, kTags);
  // Idle: each shard waits in Redis (a blocking wait of 2 s), no fetch loop spins. What is left
  // is the polling each shard does by design: due delayed jobs every delayed_poll (500 ms), the
  // pause flag and cancel requests every second, and the tests' 1 s lease renewed (and the hold
  // reconciled) every third of a second: about 40 commands a second a shard, scripts' own
  // commands counted. A fetch loop that spins makes thousands.
  r.cmd({"CONFIG", "RESETSTAT"});
  const auto from = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(3s);  // an observation window, not a wait for an event
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - from).count();
  const std::string stats = r.str({"INFO", "stats"});
  const auto at = stats.find("total_commands_processed:");
  REQUIRE(at != std::string::npos);
  const double per_second = std::stod(stats.substr(at + 25)) / secs;
  INFO("commands per second while idle: " << per_second << "\n" << r.str({"INFO", "commandstats"}));
  CHECK(per_second < 300);
  CHECK(d.stop() == 0);
}

TEST_CASE(
    "shards: a pause flag in any shard pauses the whole queue; a spool job's state goes to its "
    "id's home shard",
    "[integration][shards]") {
  RedisServer redis;
  TempDir spool;
  Daemon d(redis,
           "handlers:\n  echo: {type: builtin, name: echo}\n"
           "queues:\n  q:\n    handler: echo\n    shards: 3\n    sources:\n      - redis: {}\n"
           "      - spool: {dir: " +
               spool.path().string() + ", pattern: \"*.json\", quiet: 50ms}\n");
  d.start();
  auto r = redis.client();
  // Paused in the last shard only (as a half-done jobqctl pause would leave it).
  r.cmd({"SET", "jobq:{" + kTags[2] + "}:paused", "1"});
  REQUIRE(eventually([&] { return d.log().find("queue q: paused") != std::string::npos; }, 10s));
  const auto held = ids("p", 10);
  push(r, "q", jobs_for(held, "{}"));
  // One control read later (every second) and then some: still nothing ran.
  std::this_thread::sleep_for(1500ms);  // an observation window: a negative has no event
  CHECK(succeeded_at_home(r, held) == 0);
  r.cmd({"DEL", "jobq:{" + kTags[2] + "}:paused"});
  CHECK(eventually([&] { return succeeded_at_home(r, held) == held.size(); }, 10s));
  // A spool job whose id is at home in shard 2.
  std::string id;
  for (int i = 0; id.empty(); ++i) {
    if (home_shard("s" + std::to_string(i), 3) == 2) id = "s" + std::to_string(i);
  }
  {
    std::ofstream f(spool.path() / "one.json.tmp");
    f << R"({"id":")" << id << R"(","payload":{"x":1}})";
  }
  std::filesystem::rename(spool.path() / "one.json.tmp", spool.path() / "one.json");
  CHECK(eventually(
      [&] {
        return r.str({"HGET", "jobq:{" + kTags[2] + "}:job:" + id, "status"}) == "succeeded";
      },
      10s));
  CHECK(r.integer({"EXISTS", "jobq:{q}:job:" + id}) == 0);
  CHECK(d.stop() == 0);
}

TEST_CASE(
    "shards: jobqctl with a daemon on a sharded queue: submit --wait from every shard, cancel a "
    "running job of shard 2, pause and resume, stats sum the shards",
    "[integration][shards][jobqctl]") {
  RedisServer redis;
  Daemon d(redis,
           "handlers:\n  echo: {type: builtin, name: echo}\n  sleep: {type: builtin, name: "
           "sleep}\nqueues:\n  q: {handler: echo, concurrency: 4, shards: 3}\n");
  d.start();
  auto r = redis.client();
  REQUIRE(eventually([&] { return r.str({"GET", "jobq:{q}:shards"}) == "3"; }, 10s));
  // One id at home in each shard, each waited for.
  for (std::size_t k = 0; k < 3; ++k) {
    std::string id;
    for (int i = 0; id.empty(); ++i) {
      if (home_shard("w" + std::to_string(i), 3) == k) id = "w" + std::to_string(i);
    }
    const auto ran = jobqctl(redis, {"submit", "q", R"({"n":1})", "--id", id, "--wait"});
    INFO(ran.out);
    CHECK(ran.code == 0);
    CHECK(ran.out.find(R"({"n":1})") != std::string::npos);
    CHECK(r.str({"HGET", "jobq:{" + kTags[k] + "}:job:" + id, "status"}) == "succeeded");
  }
  // A long job at home in shard 2, cancelled while it runs.
  std::string id;
  for (int i = 0; id.empty(); ++i) {
    if (home_shard("long" + std::to_string(i), 3) == 2) id = "long" + std::to_string(i);
  }
  REQUIRE(
      jobqctl(redis, {"submit", "q", R"({"ms":60000})", "--id", id, "--handler", "sleep"}).code ==
      0);
  REQUIRE(eventually([&] { return !held_by(r, kTags[2], id).empty(); }, 10s));
  const auto cancel = jobqctl(redis, {"cancel", id, "-q", "q"});
  INFO(cancel.out);
  CHECK(cancel.code == 0);
  CHECK(eventually(
      [&] {
        return r.str({"HGET", "jobq:{" + kTags[2] + "}:job:" + id, "status"}) == "cancelled";
      },
      10s));
  // Paused by jobqctl: every shard's flag; the daemon holds jobs of every shard.
  REQUIRE(jobqctl(redis, {"pause", "q"}).code == 0);
  REQUIRE(eventually([&] { return d.log().find("queue q: paused") != std::string::npos; }, 10s));
  const auto later = ids("later", 30);
  for (const auto& j : later) {
    REQUIRE(jobqctl(redis, {"submit", "q", "{}", "--id", j}).code == 0);
  }
  const auto stats = jobqctl(redis, {"queues", "--json"});
  INFO(stats.out);
  const auto rows = nlohmann::json::parse(stats.out);
  REQUIRE(rows.size() == 1);
  CHECK(rows[0]["pending"] == 30);
  CHECK(rows[0]["paused"] == true);
  CHECK(rows[0]["shards"] == 3);
  REQUIRE(jobqctl(redis, {"resume", "q"}).code == 0);
  CHECK(eventually([&] { return succeeded_at_home(r, later) == later.size(); }, 15s));
  check_drained(r, kTags);
  CHECK(d.stop() == 0);
}

TEST_CASE(
    "shards: 3 on a 3-primary cluster land on the three primaries; three daemons, one killed "
    "-9 again and again: every job runs, none is lost, every shard is served",
    "[integration][cluster][shards]") {
  RedisCluster cluster(3, 0);
  std::set<int> owners;
  for (const auto& tag : kTags) owners.insert(cluster.owner_of_queue(tag));
  REQUIRE(owners.size() == 3);
  // More attempts than kills: a daemon killed -9 costs every job it holds an attempt (recovery
  // cannot tell a buffered job from a running one), and recovery puts those jobs first in line,
  // where the next victim is as likely as any to take them: with the default five, a job held by
  // victim after victim was seen to end dead as lost (4 of 1,800 on a busy core). The test is
  // about none being lost across shards, and a small buffer keeps what each kill costs small.
  const std::string yaml =
      "handlers:\n  sleep: {type: builtin, name: sleep}\n"
      "queues:\n  q: {handler: sleep, concurrency: 4, buffer: 8, max_attempts: 10, shards: 3}\n";
  std::vector<std::unique_ptr<Daemon>> daemons;
  for (int i = 0; i < 3; ++i) {
    daemons.push_back(std::make_unique<Daemon>(cluster.url(), yaml));
    daemons.back()->start();
  }
  // Each shard's jobs pushed on its own node; ids homed there (as jobqctl submit does).
  std::map<std::string, std::vector<std::string>> jobs;
  for (int i = 0, full = 0; full < 3; ++i) {
    const std::string id = "c" + std::to_string(i);
    auto& list = jobs[home_of(id)];
    if (list.size() < 600) {
      list.push_back(id);
      full += list.size() == 600;
    }
  }
  for (const auto& tag : kTags) {
    SyncRedis r(cluster.owner_of_queue(tag));
    push(r, tag, jobs_for(jobs[tag], R"({"ms":40})"));
  }
  auto done_in = [&](const std::string& tag) {
    try {
      SyncRedis r(cluster.owner_of_queue(tag));
      return count_status(r, tag, jobs[tag], "succeeded");
    } catch (const std::exception&) {
      return std::size_t{0};
    }
  };
  auto done = [&] {
    for (const auto& tag : kTags) {
      if (done_in(tag) != jobs[tag].size()) return false;
    }
    return true;
  };
  // Serving: the daemon holds a lease on every shard.
  auto serving = [&](Daemon& d) {
    return eventually([&] { return cluster.leases_held(d.pid(), kTags); }, 20s);
  };
  // Six kills at most; then every job must end.
  const auto [kills, not_serving] = kill_in_turn(daemons, done, serving);
  CHECK(not_serving == 0);
  CHECK(eventually(done, 60s));
  INFO("kills: " << kills);
  CHECK(kills >= 3);
  for (const auto& tag : kTags) {
    SyncRedis r(cluster.owner_of_queue(tag));
    INFO(tag << ": succeeded " << done_in(tag) << " of " << jobs[tag].size());
    const auto dead = r.cmd({"ZRANGE", "jobq:{" + tag + "}:dead", "0", "0"});
    if (!dead.elements.empty()) {
      const auto s = r.cmd({"HMGET", "jobq:{" + tag + "}:job:" + dead.elements[0].str, "error_kind",
                            "attempts", "error"});
      INFO("dead, for example " << dead.elements[0].str << ": " << s.elements[0].str << " after "
                                << s.elements[1].str << " attempt(s): " << s.elements[2].str);
      CHECK(dead.elements.empty());
    }
    CHECK(done_in(tag) == jobs[tag].size());
    CHECK(r.integer({"LLEN", "jobq:{" + tag + "}:pending"}) == 0);
    // Served by the daemons: its node ran the fetches.
    const std::string stats = r.str({"INFO", "commandstats"});
    CHECK(stats.find("cmdstat_evalsha:calls=") != std::string::npos);
  }
  for (auto& d : daemons) {
    INFO(d->log());
    CHECK(d->log().find("CROSSSLOT") == std::string::npos);
  }
}

TEST_CASE(
    "shards: a paused sharded queue stops at once on SIGTERM (its fetchers, woken by the stop, "
    "wait for their own stop instead of going round without room)",
    "[integration][shards]") {
  RedisServer redis;
  auto r = redis.client();
  for (const auto& tag : kTags) r.cmd({"SET", "jobq:{" + tag + "}:paused", "1"});
  Daemon d(redis,
           "handlers:\n  echo: {type: builtin, name: echo}\n"
           "queues:\n  q: {handler: echo, shards: 3}\n");
  d.start();
  REQUIRE(eventually([&] { return d.log().find("queue q: paused") != std::string::npos; }, 10s));
  const auto before = std::chrono::steady_clock::now();
  const int code = d.stop(std::chrono::seconds(10));
  INFO(d.log());
  CHECK(code == 0);
  CHECK(std::chrono::steady_clock::now() - before < 5s);
}

TEST_CASE(
    "a paused queue fed from Redis and a spool dir with files waiting stops at once on SIGTERM",
    "[integration][shards][spool]") {
  RedisServer redis;
  TempDir spool;
  auto r = redis.client();
  r.cmd({"SET", "jobq:{q}:paused", "1"});
  for (int i = 0; i < 5; ++i) {
    std::ofstream(spool.path() / ("f" + std::to_string(i) + ".json")) << R"({"payload":1})";
  }
  Daemon d(redis,
           "handlers:\n  echo: {type: builtin, name: echo}\n"
           "queues:\n  q:\n    handler: echo\n    sources:\n      - redis: {}\n"
           "      - spool: {dir: " +
               spool.path().string() + ", pattern: \"*.json\", quiet: 10ms}\n");
  d.start();
  REQUIRE(eventually([&] { return d.log().find("queue q: paused") != std::string::npos; }, 10s));
  REQUIRE(eventually([&] { return d.log().find("taking files") != std::string::npos; }, 10s));
  const auto before = std::chrono::steady_clock::now();
  const int code = d.stop(std::chrono::seconds(10));
  INFO(d.log());
  CHECK(code == 0);
  CHECK(std::chrono::steady_clock::now() - before < 5s);
  // The files wait on disk for the next start.
  std::size_t left = 0;
  for (const auto& e : std::filesystem::directory_iterator(spool.path())) {
    left += e.path().extension() == ".json";
  }
  CHECK(left == 5);
}
