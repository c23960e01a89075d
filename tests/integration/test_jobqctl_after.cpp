// jobqctl's side of jobs that wait for other jobs (docs/workflows.md), against a real Redis and no
// daemon: submit --after and --from lines with `after` enter waiting and tell their dependencies,
// submit --flow writes a whole flow in one MULTI/EXEC or refuses it before writing anything, and
// status says what a waiting job still waits for.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include "store/shards.hpp"
#include "tests/support/daemon.hpp"
#include "tests/support/files.hpp"

using namespace jq::test;

namespace {

// Queues jobqctl takes as served (the registry daemons write), so that no daemon is needed.
void served(SyncRedis& r, std::initializer_list<const char*> queues) {
  for (const char* q : queues) r.cmd({"SADD", "jobq:queues", q});
}

std::string field(SyncRedis& r, const std::string& queue, const std::string& id,
                  const std::string& name) {
  return r.str({"HGET", "jobq:{" + queue + "}:job:" + id, name});
}

// How often Redis ran `command` since the last CONFIG RESETSTAT (INFO commandstats).
long long calls_of(SyncRedis& r, const std::string& command) {
  const std::string info = r.str({"INFO", "commandstats"});
  const std::string key = "cmdstat_" + command + ":calls=";
  const auto at = info.find(key);
  if (at == std::string::npos) return 0;
  return std::stoll(info.substr(at + key.size()));
}

// A flow file in `dir`.
std::string flow_file(const TempDir& dir, const std::string& name, const std::string& text) {
  const auto path = dir.path() / name;
  write_file(path, text);
  return path.string();
}

}  // namespace

TEST_CASE(
    "jobqctl submit --after: the job waits, its dependencies know of it, status says for what",
    "[integration][cli][after]") {
  RedisServer redis;
  auto r = redis.client();
  served(r, {"q", "images"});
  REQUIRE(jobqctl(redis, {"submit", "q", "1", "--id", "a"}).code == 0);
  // b of images is final already: its outcome goes to images' outbox at once.
  r.cmd({"HSET", "jobq:{images}:job:b", "status", "succeeded", "queue", "images", "result", "B!"});

  const auto sub =
      jobqctl(redis, {"submit", "q", R"({"n":7})", "--id", "c", "--after", "a,images/b", "--after",
                      "q/later", "--on-dependency-failure", "skip"});
  INFO(sub.out);
  REQUIRE(sub.code == 0);
  // The id on stdout, the line on stderr (in either order here, where both are one file).
  const std::string line = "waits for 3 jobs (1 final already)\n";
  CHECK((sub.out == "c\n" + line || sub.out == line + "c\n"));
  CHECK(field(r, "q", "c", "status") == "waiting");
  CHECK(field(r, "q", "c", "after") == "q/a images/b q/later");
  CHECK(field(r, "q", "c", "waiting_for") == "3");
  CHECK(r.str({"HGET", "jobq:{q}:after:c", "#policy"}) == "skip");
  // Each dependency's slot knows of it: a and later (not seen yet) as their dependent, b through
  // the outbox.
  CHECK(r.str({"HGET", "jobq:{q}:dependents", "a"}) == "q/c");
  CHECK(r.str({"HGET", "jobq:{q}:dependents", "later"}) == "q/c");
  CHECK(r.integer({"HEXISTS", "jobq:{images}:dependents", "b"}) == 0);
  const auto outbox = r.cmd({"LRANGE", "jobq:{images}:outbox", "0", "-1"});
  REQUIRE(outbox.elements.size() == 1);
  const auto told = nlohmann::json::parse(outbox.elements[0].str);
  CHECK(told["to"] == "q/c");
  CHECK(told["job"] == "b");
  CHECK(told["result"] == "B!");
  // Every slot was told: it left registering.
  CHECK(r.integer({"ZCARD", "jobq:{q}:registering"}) == 0);
  // Its copy as pending will hold it once released: the job, marker last.
  const auto copy = nlohmann::json::parse(r.str({"HGET", "jobq:{q}:waiting", "c"}));
  CHECK(copy["payload"]["n"] == 7);
  CHECK(copy["on_dependency_failure"] == "skip");
  CHECK(copy.contains("_jobq"));

  // status: what it waits for, by name (b's outcome is not delivered yet: no daemon here).
  const auto status = jobqctl(redis, {"status", "c", "-q", "q"});
  INFO(status.out);
  CHECK(status.code == 0);
  CHECK(status.out.find("status: waiting") != std::string::npos);
  CHECK(status.out.find("waits for 3 of 3: q/a, images/b, q/later") != std::string::npos);
  // Told of b: two left, in after's order.
  r.cmd({"HSET", "jobq:{q}:after:c", "images/b", R"({"job":"b"})"});
  const auto json_status = jobqctl(redis, {"--json", "status", "c", "-q", "q"});
  INFO(json_status.out);
  REQUIRE(json_status.code == 0);
  const auto j = nlohmann::json::parse(json_status.out);
  CHECK(j["status"] == "waiting");
  CHECK(j["waiting_for_jobs"] == nlohmann::json::array({"q/a", "q/later"}));
  CHECK(jobqctl(redis, {"status", "c", "-q", "q"}).out.find("waits for 2 of 3: q/a, q/later") !=
        std::string::npos);
  // A job not waiting has no such line or field.
  CHECK(jobqctl(redis, {"status", "a", "-q", "q"}).out.find("waits for") == std::string::npos);
  CHECK(jobqctl(redis, {"--json", "status", "a", "-q", "q"}).out.find("waiting_for_jobs") ==
        std::string::npos);

  // Another submission of c while it waits: refused, nothing written, exit 1.
  const auto again = jobqctl(redis, {"submit", "q", "2", "--id", "c", "--after", "a"});
  CHECK(again.code == 1);
  CHECK(again.out.find("not submitted: job c is not over yet") != std::string::npos);
  CHECK(field(r, "q", "c", "after") == "q/a images/b q/later");
  CHECK(r.str({"HGET", "jobq:{q}:dependents", "a"}) == "q/c");
  // --json: the counts.
  const auto as_json =
      jobqctl(redis, {"--json", "submit", "q", "3", "--id", "d", "--after", "images/b"});
  REQUIRE(as_json.code == 0);
  const auto d = nlohmann::json::parse(as_json.out);
  CHECK(d["id"] == "d");
  CHECK(d["waits_for"] == 1);
  CHECK(d["final_already"] == 1);
}

TEST_CASE("jobqctl submit --after: mistakes are usage errors; what it cannot do yet is said",
          "[integration][cli][after]") {
  RedisServer redis;
  auto r = redis.client();
  served(r, {"q"});
  const auto self = jobqctl(redis, {"submit", "q", "1", "--id", "s", "--after", "s"});
  CHECK(self.code == 2);
  CHECK(self.out.find("--after: field after") != std::string::npos);
  const auto twice = jobqctl(redis, {"submit", "q", "1", "--after", "x,q/x"});
  CHECK(twice.code == 2);
  CHECK(twice.out.find("named twice") != std::string::npos);
  CHECK(jobqctl(redis, {"submit", "q", "1", "--after", "a/b/c"}).code == 2);
  CHECK(jobqctl(redis, {"submit", "q", "1", "--on-dependency-failure", "run"}).code == 2);
  const auto delayed = jobqctl(redis, {"submit", "q", "1", "--after", "x", "--delay", "5m"});
  CHECK(delayed.code == 2);
  CHECK(delayed.out.find("not delayed in this version") != std::string::npos);
  const auto keyed = jobqctl(redis, {"submit", "q", "1", "--after", "x", "--unique-key", "k"});
  CHECK(keyed.code == 2);
  CHECK(r.integer({"EXISTS", "jobq:{q}:waiting", "jobq:{q}:dependents"}) == 0);
}

TEST_CASE("jobqctl submit --from: lines with after wait, in the file's order with the others",
          "[integration][cli][after]") {
  RedisServer redis;
  auto r = redis.client();
  served(r, {"q"});
  TempDir dir;
  // w waits for p1 (a line before it) and p2 (a line after it); w again is refused (its id is
  // taken by the first w); a bad after is a bad line.
  write_file(dir.path() / "jobs.jsonl",
             "{\"id\":\"p1\",\"payload\":1}\n"
             "{\"id\":\"w\",\"payload\":2,\"after\":[\"p1\",\"p2\"]}\n"
             "{\"id\":\"p2\",\"payload\":3}\n"
             "{\"id\":\"w\",\"payload\":4,\"after\":[\"p1\"]}\n"
             "{\"id\":\"z\",\"payload\":5,\"after\":[\"z\"]}\n");
  const auto ran = jobqctl(redis, {"submit", "q", "--from", (dir.path() / "jobs.jsonl").string()});
  INFO(ran.out);
  CHECK(ran.code == 1);
  CHECK(ran.out.find("submitted 3 job(s) to q, rejected 2, 1 wait for other jobs (0 final "
                     "already)") != std::string::npos);
  CHECK(ran.out.find("jobs.jsonl:4: not submitted: job w is not over yet") != std::string::npos);
  CHECK(ran.out.find("jobs.jsonl:5: field after") != std::string::npos);
  CHECK(field(r, "q", "w", "status") == "waiting");
  CHECK(field(r, "q", "w", "after") == "q/p1 q/p2");
  CHECK(r.str({"HGET", "jobq:{q}:dependents", "p1"}) == "q/w");
  CHECK(r.str({"HGET", "jobq:{q}:dependents", "p2"}) == "q/w");
  CHECK(r.integer({"LLEN", "jobq:{q}:pending"}) == 2);
}

TEST_CASE("jobqctl submit --flow: a chain and a fan-in over two queues, written in one MULTI/EXEC",
          "[integration][cli][after][flow]") {
  RedisServer redis;
  auto r = redis.client();
  served(r, {"q", "images"});
  // Outside the flow: a job it may name (known: it has a state), final already.
  r.cmd({"HSET", "jobq:{images}:job:old", "status", "succeeded", "queue", "images"});
  TempDir dir;
  // r2 waits for r1 (a chain); t waits for both and for old (a fan-in across queues). Listed
  // dependents first: the file's order is not the order written.
  const auto file = flow_file(dir, "flow.json", R"([
    {"id": "t", "payload": {"all": true}, "after": ["images/r1", "images/r2", "images/old"],
     "priority": "high"},
    {"id": "r2", "queue": "images", "payload": 2, "after": ["r1"], "on_dependency_failure": "run"},
    {"id": "r1", "queue": "images", "payload": 1}
  ])");
  r.cmd({"CONFIG", "RESETSTAT"});
  const auto ran = jobqctl(redis, {"submit", "q", "--flow", file});
  INFO(ran.out);
  REQUIRE(ran.code == 0);
  CHECK(ran.out.find("submitted a flow of 3 job(s): 1 queued, 2 waiting for others (1 of what "
                     "they wait for final already)") != std::string::npos);
  // One transaction for the whole of it.
  CHECK(calls_of(r, "multi") == 1);
  CHECK(calls_of(r, "exec") == 1);
  // r1 queued; r2 waits for it; t for all three, old's outcome in images' outbox.
  CHECK(field(r, "images", "r1", "status") == "queued");
  CHECK(r.integer({"LLEN", "jobq:{images}:pending"}) == 1);
  CHECK(field(r, "images", "r2", "status") == "waiting");
  CHECK(field(r, "images", "r2", "after") == "images/r1");
  CHECK(r.str({"HGET", "jobq:{images}:after:r2", "#policy"}) == "run");
  CHECK(field(r, "q", "t", "status") == "waiting");
  CHECK(field(r, "q", "t", "after") == "images/r1 images/r2 images/old");
  CHECK(r.str({"HGET", "jobq:{q}:after:t", "#level"}) == "0");
  CHECK(r.str({"HGET", "jobq:{images}:dependents", "r1"}) == "images/r2\nq/t");
  CHECK(r.str({"HGET", "jobq:{images}:dependents", "r2"}) == "q/t");
  const auto outbox = r.cmd({"LRANGE", "jobq:{images}:outbox", "0", "-1"});
  REQUIRE(outbox.elements.size() == 1);
  CHECK(nlohmann::json::parse(outbox.elements[0].str)["to"] == "q/t");
  CHECK(r.integer({"ZCARD", "jobq:{q}:registering"}) == 0);
  CHECK(r.integer({"ZCARD", "jobq:{images}:registering"}) == 0);

  // The same flow again: its ids name jobs not over, so nothing is written (exit 1).
  const long long keys_before = r.integer({"DBSIZE"});
  const auto again = jobqctl(redis, {"submit", "q", "--flow", file});
  CHECK(again.code == 1);
  CHECK(again.out.find("not over yet") != std::string::npos);
  CHECK(again.out.find("images/r1, images/r2, t") != std::string::npos);
  CHECK(r.integer({"DBSIZE"}) == keys_before);
  CHECK(r.integer({"LLEN", "jobq:{images}:pending"}) == 1);
  // --json: the counts and the jobs in the order written.
  const auto more = flow_file(dir, "more.json", R"([{"id": "u", "payload": 0, "after": ["t"]}])");
  const auto as_json = jobqctl(redis, {"--json", "submit", "q", "--flow", more});
  INFO(as_json.out);
  REQUIRE(as_json.code == 0);
  const auto j = nlohmann::json::parse(as_json.out);
  CHECK(j["submitted"] == 1);
  CHECK(j["waiting"] == 1);
  CHECK(j["jobs"] == nlohmann::json::array({"q/u"}));
  CHECK(r.str({"HGET", "jobq:{q}:dependents", "t"}) == "q/u");
}

TEST_CASE(
    "jobqctl submit --flow: a cycle, a dangling reference, an id twice are refused before "
    "anything is written",
    "[integration][cli][after][flow]") {
  RedisServer redis;
  auto r = redis.client();
  served(r, {"q", "images"});
  r.cmd({"HSET", "jobq:{q}:job:known", "status", "failed", "queue", "q"});
  const long long keys_before = r.integer({"DBSIZE"});
  TempDir dir;
  r.cmd({"CONFIG", "RESETSTAT"});
  const auto cycle = jobqctl(redis, {"submit", "q", "--flow",
                                     flow_file(dir, "cycle.json",
                                               R"([{"id": "start", "payload": 0},
                            {"id": "a", "payload": 1, "after": ["start", "images/b"]},
                            {"id": "b", "queue": "images", "payload": 2, "after": ["q/c"]},
                            {"id": "c", "payload": 3, "after": ["a"]}])")});
  INFO(cycle.out);
  CHECK(cycle.code == 2);
  CHECK(cycle.out.find("cycle") != std::string::npos);
  CHECK(cycle.out.find("a -> images/b -> c -> a") != std::string::npos);
  const auto dangling =
      jobqctl(redis, {"submit", "q", "--flow",
                      flow_file(dir, "dangling.json",
                                R"([{"id": "a", "payload": 1, "after": ["known", "ghost"]},
                            {"id": "b", "payload": 2, "after": ["a", "images/phantom"]}])")});
  INFO(dangling.out);
  CHECK(dangling.code == 2);
  CHECK(dangling.out.find("neither in the file nor known: ghost, images/phantom") !=
        std::string::npos);
  const auto twice = jobqctl(redis, {"submit", "q", "--flow",
                                     flow_file(dir, "twice.json",
                                               R"([{"id": "a", "payload": 1},
                                                   {"id": "a", "payload": 2}])")});
  CHECK(twice.code == 2);
  CHECK(twice.out.find("'a' is given twice") != std::string::npos);
  const auto invalid = jobqctl(
      redis, {"submit", "q", "--flow",
              flow_file(dir, "invalid.json", R"([{"id": "a", "payload": 1, "after": "b"}])")});
  CHECK(invalid.code == 2);
  CHECK(invalid.out.find("(id 'a')") != std::string::npos);
  // Nothing written by any of them, and no transaction begun.
  CHECK(r.integer({"DBSIZE"}) == keys_before);
  CHECK(calls_of(r, "multi") == 0);
  // Options that a flow's file gives itself are usage errors.
  CHECK(jobqctl(redis, {"submit", "q", "1", "--flow", "x.json"}).code == 2);
  CHECK(jobqctl(redis, {"submit", "q", "--flow", "x.json", "--after", "a"}).code == 2);
}

TEST_CASE("jobqctl submit --after and --flow on sharded queues: each step in its id's home shard",
          "[integration][cli][after][shards]") {
  RedisServer redis;
  auto r = redis.client();
  served(r, {"q", "images"});
  r.cmd({"SET", "jobq:{images}:shards", "3"});
  const auto tags = jq::store::shard_tags("images", 3);
  // Dependencies in two shards of images, and one in a third asked again in a flow.
  std::vector<std::string> ids;
  for (int i = 0; ids.size() < 2; ++i) {
    std::string id = "d" + std::to_string(i);
    if (jq::store::home_shard(id, 3) == ids.size() + 1) ids.push_back(id);
  }
  const auto sub = jobqctl(redis, {"submit", "q", "{}", "--id", "w", "--after",
                                   "images/" + ids[0] + ",images/" + ids[1]});
  INFO(sub.out);
  REQUIRE(sub.code == 0);
  CHECK(r.str({"HGET", "jobq:{" + tags[1] + "}:dependents", ids[0]}) == "q/w");
  CHECK(r.str({"HGET", "jobq:{" + tags[2] + "}:dependents", ids[1]}) == "q/w");
  // A flow whose waiting job is of the sharded queue: its state and copy at its home.
  std::string waiter;
  for (int i = 0; waiter.empty(); ++i) {
    std::string id = "f" + std::to_string(i);
    if (jq::store::home_shard(id, 3) == 2) waiter = id;
  }
  TempDir dir;
  const auto flow =
      flow_file(dir, "flow.json",
                R"([{"id": "p", "payload": 0},
                                  {"id": ")" +
                    waiter + R"(", "queue": "images", "payload": 1, "after": ["q/p"]}])");
  const auto ran = jobqctl(redis, {"submit", "q", "--flow", flow});
  INFO(ran.out);
  REQUIRE(ran.code == 0);
  CHECK(r.str({"HGET", "jobq:{" + tags[2] + "}:job:" + waiter, "status"}) == "waiting");
  CHECK(r.integer({"HEXISTS", "jobq:{" + tags[2] + "}:waiting", waiter}) == 1);
  CHECK(r.str({"HGET", "jobq:{q}:dependents", "p"}) == "images/" + waiter);
  const auto status = jobqctl(redis, {"status", waiter, "-q", "images"});
  CHECK(status.out.find("waits for 1 of 1: q/p") != std::string::npos);
}

TEST_CASE("jobqctl submit --flow: 3,000 jobs and a fan-in of all of them, in one EXEC",
          "[integration][cli][after][flow]") {
  RedisServer redis;
  auto r = redis.client();
  served(r, {"q"});
  // More jobs than a flow watches one by one, more calls than one write sends.
  nlohmann::json jobs = nlohmann::json::array();
  nlohmann::json all = nlohmann::json::array();
  for (int i = 0; i < 3000; ++i) {
    const std::string id = "s" + std::to_string(i);
    jobs.push_back({{"id", id}, {"payload", i}});
    all.push_back(id);
  }
  jobs.push_back({{"id", "end"}, {"payload", 0}, {"after", all}});
  TempDir dir;
  const auto file = flow_file(dir, "big.json", jobs.dump());
  r.cmd({"CONFIG", "RESETSTAT"});
  const auto ran = jobqctl(redis, {"--json", "submit", "q", "--flow", file});
  INFO(ran.out.substr(0, 2000));
  REQUIRE(ran.code == 0);
  CHECK(nlohmann::json::parse(ran.out)["submitted"] == 3001);
  CHECK(calls_of(r, "exec") == 1);
  CHECK(r.integer({"LLEN", "jobq:{q}:pending"}) == 3000);
  CHECK(r.integer({"HLEN", "jobq:{q}:dependents"}) == 3000);
  CHECK(field(r, "q", "end", "waiting_for") == "3000");
  CHECK(r.integer({"ZCARD", "jobq:{q}:registering"}) == 0);
}
