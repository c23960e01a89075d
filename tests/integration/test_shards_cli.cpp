// jobqctl on a queue spread over shards, against a real Redis and no daemon: each command finds,
// writes and sums a queue's keys in every shard (the shard count written as a daemon would).
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include <regex>

#include "store/shards.hpp"
#include "tests/support/daemon.hpp"
#include "tests/support/files.hpp"

using namespace jq::test;

namespace {

// The first id `<prefix><i>` whose home among `n` shards is `shard`.
std::string homed(const std::string& prefix, std::size_t shard, std::size_t n = 3) {
  for (int i = 0;; ++i) {
    std::string id = prefix + std::to_string(i);
    if (jq::store::home_shard(id, n) == shard) return id;
  }
}

// Queue `q` over 3 shards, as its daemons would have said, and known to jobqctl (the registry).
std::vector<std::string> three_shards(SyncRedis& r, const std::string& queue = "q") {
  r.cmd({"SET", "jobq:{" + queue + "}:shards", "3"});
  r.cmd({"SADD", "jobq:queues", queue});
  return jq::store::shard_tags(queue, 3);
}

// The ids (a marker's, else the job's own field) of the jobs in one shard's pending list.
std::vector<std::string> pending_ids(SyncRedis& r, const std::string& tag) {
  std::vector<std::string> out;
  for (const auto& e : r.cmd({"LRANGE", "jobq:{" + tag + "}:pending", "0", "-1"}).elements) {
    out.push_back(nlohmann::json::parse(e.str)["id"].get<std::string>());
  }
  return out;
}

nlohmann::json json_of(const Ran& ran) {
  INFO(ran.out);
  REQUIRE(ran.code == 0);
  return nlohmann::json::parse(ran.out);
}

// A dead job as the daemon keeps it in one shard: in the dead set, its JSON, its failed state.
void seed_dead(SyncRedis& r, const std::string& tag, const std::string& id, long long died_at,
               const std::string& error) {
  const std::string base = "jobq:{" + tag + "}";
  const std::string at = std::to_string(died_at);
  r.cmd({"ZADD", base + ":dead", at, id});
  r.cmd({"HSET", base + ":dead:bodies", id, R"({"id":")" + id + R"(","payload":1})"});
  r.cmd({"HSET", base + ":job:" + id, "status", "failed", "queue", "q", "attempts", "1",
         "finished_at", at, "error_kind", "exception", "error", error});
}

}  // namespace

TEST_CASE(
    "jobqctl over 3 shards: submit (one, --from, --delay) into each id's home shard; pause and "
    "resume every shard; queues, stats and jobs sum them",
    "[integration][cli][jobqctl][shards]") {
  RedisServer redis;
  auto r = redis.client();
  const auto tags = three_shards(r);
  REQUIRE(tags.size() == 3);
  r.cmd({"SADD", "jobq:queues", "one"});  // a queue of one shard beside it

  for (std::size_t k = 0; k < 3; ++k) {
    const std::string id = homed("one-", k);
    const auto sub = jobqctl(redis, {"submit", "q", "{}", "--id", id});
    INFO(sub.out);
    CHECK(sub.code == 0);
    CHECK(sub.out == id + "\n");
    CHECK(pending_ids(r, tags[k]) == std::vector<std::string>{id});
    CHECK(r.str({"HGET", "jobq:{" + tags[k] + "}:job:" + id, "status"}) == "queued");
  }
  // A job given no id: jobqctl's new id, submitted to that id's home.
  const auto given = jobqctl(redis, {"submit", "q", "{}"});
  REQUIRE(given.code == 0);
  const std::string new_id = given.out.substr(0, given.out.size() - 1);
  const std::string new_base = "jobq:{" + tags[jq::store::home_shard(new_id, 3)] + "}";
  CHECK(r.str({"HGET", new_base + ":job:" + new_id, "status"}) == "queued");
  // The newest of its home's pending list (then out of the way of the counts below).
  const auto newest = r.str({"LPOP", new_base + ":pending"});
  CHECK(nlohmann::json::parse(newest)["id"] == new_id);
  for (std::size_t k = 0; k < 3; ++k) REQUIRE(pending_ids(r, tags[k]).size() == 1);

  // --from: 30 lines, each into its home, pipelined per shard.
  TempDir dir;
  std::string lines;
  std::size_t per_shard[3] = {1, 1, 1};
  for (int i = 0; i < 30; ++i) {
    const std::string id = "bulk-" + std::to_string(i);
    ++per_shard[jq::store::home_shard(id, 3)];
    lines += R"({"id": ")" + id + R"(", "payload": )" + std::to_string(i) + "}\n";
  }
  write_file(dir.path() / "jobs.jsonl", lines);
  const auto from = jobqctl(redis, {"submit", "q", "--from", (dir.path() / "jobs.jsonl").string()});
  INFO(from.out);
  CHECK(from.code == 0);
  CHECK(from.out.find("submitted 30 job(s) to q, rejected 0") != std::string::npos);
  for (std::size_t k = 0; k < 3; ++k) {
    const auto in = pending_ids(r, tags[k]);
    CHECK(in.size() == per_shard[k]);
    for (const auto& id : in) CHECK(jq::store::home_shard(id, 3) == k);
  }
  const std::string later = homed("later-", 2);
  REQUIRE(jobqctl(redis, {"submit", "q", "1", "--id", later, "--delay", "1h"}).code == 0);
  CHECK(r.integer({"ZCARD", "jobq:{" + tags[2] + "}:delayed"}) == 1);

  // pause: every shard's flag (each shard's fetch reads its own); resume: all of them gone.
  const auto paused = jobqctl(redis, {"pause", "q"});
  CHECK(paused.code == 0);
  CHECK(paused.out.find("queue q paused: ") == 0);
  for (const auto& t : tags) CHECK(r.integer({"EXISTS", "jobq:{" + t + "}:paused"}) == 1);
  CHECK(jobqctl(redis, {"pause", "q"}).out == "queue q was paused already\n");
  // One shard still paused: the queue is.
  r.cmd({"DEL", "jobq:{" + tags[0] + "}:paused", "jobq:{" + tags[1] + "}:paused"});
  auto queues = json_of(jobqctl(redis, {"--json", "queues"}));
  REQUIRE(queues.size() == 2);
  std::map<std::string, nlohmann::json> by;
  for (const auto& q : queues) by[q["name"]] = q;
  CHECK(by["q"]["paused"] == true);
  CHECK(by["q"]["pending"] == 33);
  CHECK(by["q"]["delayed"] == 1);
  CHECK(by["q"]["shards"] == 3);
  CHECK(by["one"]["shards"] == 1);
  CHECK(by["one"]["paused"] == false);
  // A second pause fills in the shards that were not paused: that is a change.
  CHECK(jobqctl(redis, {"pause", "q"}).out.find("queue q paused: ") == 0);
  for (const auto& t : tags) CHECK(r.integer({"EXISTS", "jobq:{" + t + "}:paused"}) == 1);
  const auto resumed = jobqctl(redis, {"resume", "q"});
  CHECK(resumed.out == "queue q resumed: every jobqd starts its jobs again within a second\n");
  for (const auto& t : tags) CHECK(r.integer({"EXISTS", "jobq:{" + t + "}:paused"}) == 0);
  CHECK(jobqctl(redis, {"resume", "q"}).out == "queue q was not paused\n");

  const auto human = jobqctl(redis, {"queues"});
  INFO(human.out);
  CHECK(std::regex_search(human.out, std::regex(R"(\nq +33 +1 +0 +0 +0  no daemon\n)")));
  bool seen = false;
  for (const auto& row : json_of(jobqctl(redis, {"--json", "stats"}))) {
    if (row["name"] != "q") continue;
    seen = true;
    CHECK(row["pending"] == 33);
    CHECK(row["delayed"] == 1);
  }
  CHECK(seen);
  const auto stats = jobqctl(redis, {"stats"});
  CHECK(std::regex_search(stats.out, std::regex(R"(\nq +33 +1 +0 +0 +0 +0 +0 +- +-\n)")));

  // jobs: every shard's, each shard's oldest first; delayed ones by when they are due.
  const auto pending = json_of(jobqctl(redis, {"--json", "jobs", "q", "--limit", "50"}));
  CHECK(pending["total"] == 33);
  CHECK(pending["jobs"].size() == 33);
  const auto limited = jobqctl(redis, {"jobs", "q", "--limit", "4"});
  CHECK(limited.out.find("(4 of 33; --limit N for more)") != std::string::npos);
  r.cmd({"ZADD", "jobq:{" + tags[1] + "}:delayed", "1000", R"({"id":"overdue","payload":1})"});
  const auto delayed = json_of(jobqctl(redis, {"--json", "jobs", "q", "--state", "delayed"}));
  CHECK(delayed["total"] == 2);
  REQUIRE(delayed["jobs"].size() == 2);
  CHECK(delayed["jobs"][0]["id"] == "overdue");
  CHECK(delayed["jobs"][1]["id"] == later);
}

TEST_CASE(
    "jobqctl over 3 shards: status and wait at the id's home shard, else another; cancel takes "
    "a copy still in shard 0 home and cancels it there",
    "[integration][cli][jobqctl][shards]") {
  RedisServer redis;
  auto r = redis.client();
  const auto tags = three_shards(r);

  // A state at the home shard.
  const std::string done = homed("done-", 1);
  r.cmd({"HSET", "jobq:{" + tags[1] + "}:job:" + done, "status", "succeeded", "queue", "q",
         "result", "42", "attempts", "1"});
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"--json", "status", done, "-q", "q"}, {"--json", "status", done}}) {
    const auto st = json_of(jobqctl(redis, args));
    CHECK(st["status"] == "succeeded");
    CHECK(st["result"] == 42);
  }
  const auto waited = jobqctl(redis, {"wait", done, "-q", "q", "--wait-timeout", "5s"});
  CHECK(waited.code == 0);
  CHECK(waited.out == "42\n");

  // A state at a shard that is not the id's home (a job jobqd could not read keeps the id it
  // was given where it was fetched): found there, after the home.
  const std::string away = homed("away-", 1);
  r.cmd({"HSET", "jobq:{" + tags[2] + "}:job:" + away, "status", "failed", "queue", "q",
         "error_kind", "invalid_job", "error", "not JSON"});
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"--json", "status", away, "-q", "q"}, {"--json", "status", away}}) {
    const auto st = json_of(jobqctl(redis, args));
    CHECK(st["status"] == "failed");
    CHECK(st["error_kind"] == "invalid_job");
  }
  const auto failed = jobqctl(redis, {"wait", away, "-q", "q", "--wait-timeout", "5s"});
  CHECK(failed.code == 1);
  CHECK(failed.out.find("failed (invalid_job): not JSON") != std::string::npos);
  const auto missing = jobqctl(redis, {"status", "nobody", "-q", "q"});
  CHECK(missing.code == 1);
  CHECK(missing.out.find("no job nobody in queue q") != std::string::npos);

  // cancel: a plain LPUSH and a plain ZADD land in shard 0; their ids live in shards 1 and 2.
  const std::string pushed = homed("pushed-", 1), later = homed("later-", 2);
  r.cmd({"LPUSH", "jobq:{q}:pending", R"({"id":")" + pushed + R"(","payload":1})"});
  r.cmd({"ZADD", "jobq:{q}:delayed", "99999999999999", R"({"id":")" + later + R"(","payload":2})"});
  const auto c1 = jobqctl(redis, {"cancel", pushed, "-q", "q"});
  INFO(c1.out);
  CHECK(c1.code == 0);
  CHECK(c1.out == "job " + pushed + " cancelled (it was queued)\n");
  CHECK(r.str({"HGET", "jobq:{" + tags[1] + "}:job:" + pushed, "status"}) == "cancelled");
  CHECK(r.integer({"EXISTS", "jobq:{q}:job:" + pushed}) == 0);
  CHECK(r.integer({"LLEN", "jobq:{q}:pending"}) == 0);
  CHECK(r.integer({"LLEN", "jobq:{" + tags[1] + "}:pending"}) == 0);
  const auto c2 = jobqctl(redis, {"cancel", later, "-q", "q"});
  INFO(c2.out);
  CHECK(c2.code == 0);
  CHECK(c2.out == "job " + later + " cancelled (it was waiting in delayed)\n");
  CHECK(r.str({"HGET", "jobq:{" + tags[2] + "}:job:" + later, "status"}) == "cancelled");
  CHECK(r.integer({"ZCARD", "jobq:{q}:delayed"}) == 0);
  CHECK(r.integer({"ZCARD", "jobq:{" + tags[2] + "}:delayed"}) == 0);
  // One submitted through jobqctl is at home already; cancel finds it there (no -q: its state).
  const std::string submitted = homed("sub-", 2);
  REQUIRE(jobqctl(redis, {"submit", "q", "{}", "--id", submitted}).code == 0);
  const auto c3 = jobqctl(redis, {"cancel", submitted});
  CHECK(c3.code == 0);
  CHECK(r.str({"HGET", "jobq:{" + tags[2] + "}:job:" + submitted, "status"}) == "cancelled");
  CHECK(r.integer({"LLEN", "jobq:{" + tags[2] + "}:pending"}) == 0);
  // The home's request: a job a daemon holds (its claim names a hold).
  const std::string held = homed("held-", 1);
  const std::string base = "jobq:{" + tags[1] + "}";
  r.cmd({"HSET", base + ":live", held, "n1@w1:7"});
  r.cmd({"HSET", base + ":inflight:w1", "7", R"({"id":")" + held + R"(","payload":1})"});
  r.cmd({"HSET", base + ":job:" + held, "status", "active", "queue", "q"});
  const auto c4 = jobqctl(redis, {"cancel", held, "-q", "q", "--wait-timeout", "300ms"});
  CHECK(c4.code == 124);
  CHECK(r.str({"HGET", base + ":cancel", held}) == "n1");
}

TEST_CASE(
    "jobqctl over 3 shards: dead jobs of two shards listed as one, oldest first; retry and purge "
    "in each",
    "[integration][cli][jobqctl][shards]") {
  RedisServer redis;
  auto r = redis.client();
  const auto tags = three_shards(r);
  const long long now = std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
  seed_dead(r, tags[2], "d-new", now - 1000, "second");
  seed_dead(r, tags[1], "d-old", now - 60000, "first");
  const auto list = jobqctl(redis, {"dead", "list", "q"});
  INFO(list.out);
  CHECK(list.code == 0);
  CHECK(std::regex_search(
      list.out,
      std::regex(R"(^ID +DIED +ERROR_KIND +ERROR\nd-old +20\d\d-[^\n]+ +exception +first\n)"
                 R"(d-new +20\d\d-[^\n]+ +exception +second\n$)")));
  const auto as_json = json_of(jobqctl(redis, {"--json", "dead", "list", "q"}));
  REQUIRE(as_json.size() == 2);
  CHECK(as_json[0]["id"] == "d-old");
  CHECK(jobqctl(redis, {"dead", "list", "q", "--limit", "1"}).out.find("(1 of 2; --limit N") !=
        std::string::npos);
  const auto dead = json_of(jobqctl(redis, {"--json", "jobs", "q", "--state", "dead"}));
  CHECK(dead["total"] == 2);
  CHECK(dead["jobs"][0]["id"] == "d-old");
  CHECK(dead["jobs"][1]["error"] == "exception: second");
  for (const auto& q : json_of(jobqctl(redis, {"--json", "queues"}))) CHECK(q["dead"] == 2);

  // retry ID: in the shard where it died, back to that shard's pending.
  CHECK(jobqctl(redis, {"dead", "retry", "q", "d-new"}).out == "requeued 1 job(s)\n");
  CHECK(pending_ids(r, tags[2]) == std::vector<std::string>{"d-new"});
  CHECK(r.str({"HGET", "jobq:{" + tags[2] + "}:job:d-new", "status"}) == "queued");
  CHECK(jobqctl(redis, {"dead", "retry", "q", "d-new"}).code == 1);  // not dead any more
  seed_dead(r, tags[0], "d-zero", now, "third");
  CHECK(jobqctl(redis, {"dead", "purge", "q", "--all"}).out == "purged 2 job(s)\n");
  for (const auto& t : tags) CHECK(r.integer({"ZCARD", "jobq:{" + t + "}:dead"}) == 0);
  CHECK(r.integer({"EXISTS", "jobq:{" + tags[1] + "}:job:d-old"}) == 0);
  CHECK(jobqctl(redis, {"dead", "list", "q"}).out == "no dead jobs in queue q\n");
}

TEST_CASE(
    "jobqctl: garbage at a queue's shard count is an error naming the key (exit 1); without one, "
    "the config's shards count, and what Redis says wins over it",
    "[integration][cli][jobqctl][shards][hostile]") {
  RedisServer redis;
  auto r = redis.client();
  three_shards(r);
  r.cmd({"SET", "jobq:{q}:shards", "banana"});
  for (const auto& args : std::vector<std::vector<std::string>>{{"queues"},
                                                                {"stats"},
                                                                {"submit", "q", "1"},
                                                                {"submit", "q", "--from", "-"},
                                                                {"status", "x", "-q", "q"},
                                                                {"cancel", "x", "-q", "q"},
                                                                {"jobs", "q"},
                                                                {"dead", "list", "q"},
                                                                {"pause", "q"}}) {
    const auto got = jobqctl(redis, args);
    INFO(args.front() << ": " << got.out);
    CHECK(got.code == 1);
    CHECK(got.out.find("jobqctl: jobq:{q}:shards should hold the queue's shard count (1..64), "
                       "not ") != std::string::npos);
  }
  CHECK(r.integer({"EXISTS", "jobq:{q}:paused"}) == 0);
  r.cmd({"SET", "jobq:{q}:shards", "65"});
  CHECK(jobqctl(redis, {"queues"}).code == 1);

  r.cmd({"DEL", "jobq:{q}:shards"});
  // No count in Redis (no daemon has started on it yet): the config's.
  Daemon config(redis,
                "handlers: {e: {type: builtin, name: echo}}\nqueues:\n  c: {handler: e, "
                "shards: 3}\n");
  const auto tags = jq::store::shard_tags("c", 3);
  const std::string id = homed("c-", 2);
  REQUIRE(jobqctl(redis, {"-c", config.config_path(), "submit", "c", "1", "--id", id}).code == 0);
  CHECK(pending_ids(r, tags[2]) == std::vector<std::string>{id});
  for (const auto& q : json_of(jobqctl(redis, {"-c", config.config_path(), "--json", "queues"}))) {
    CHECK(q["shards"] == (q["name"] == "c" ? 3 : 1));
  }
  // A count in Redis is what the daemons run: it wins.
  r.cmd({"SET", "jobq:{c}:shards", "1"});
  const std::string other = homed("c2-", 2);
  REQUIRE(jobqctl(redis, {"-c", config.config_path(), "submit", "c", "1", "--id", other}).code ==
          0);
  CHECK(pending_ids(r, "c") == std::vector<std::string>{other});
}
