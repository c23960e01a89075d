// store::Admin against a real Redis: listings in each state (offset, limit, newest) over one and
// three shards, where a job is, a cancel step, dead jobs retried and purged, pause, the queue
// rows, and the errors an operator's front end maps (bad input, garbage, not found).
#include <catch2/catch.hpp>

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "store/admin.hpp"
#include "store/calls.hpp"
#include "store/marker.hpp"
#include "store/shards.hpp"
#include "tests/support/redis_server.hpp"

using namespace jq;

namespace {

std::string job_text(const std::string& id, const std::string& payload = "1") {
  return R"({"id":")" + id + R"(","payload":)" + payload + "}";
}

// An Admin on `server` for queue "q" (and whatever else a test writes), with what it warned of.
struct Fixture {
  explicit Fixture(const test::RedisServer& server, std::vector<std::string> config_queues = {},
                   std::int64_t keep_failed_ms = 0)
      : r(server.client()), c(redis::SyncClient::connect(redis::parse_url(server.url())).value()) {
    store::Layout l;
    l.config_queues = std::move(config_queues);
    l.config_shards = [](const std::string&) { return std::size_t{0}; };
    l.keep_failed_ms = [keep_failed_ms](const std::string&) { return keep_failed_ms; };
    l.warn = [this](const std::string& why) { warned.push_back(why); };
    admin.emplace(c, std::move(l));
  }
  // The key of `what` in shard `shard` of q (`tags` of its shards).
  std::string key(std::size_t shard, const std::string& what) const {
    return "jobq:{" + tags.at(shard) + "}:" + what;
  }
  // q over `n` shards, as its daemons would have written it.
  void shards(std::size_t n) {
    if (n > 1) r.cmd({"SET", "jobq:{q}:shards", std::to_string(n)});
    tags = store::shard_tags("q", n);
  }
  // Jobs pushed to one shard's pending list as a submitter would (LPUSH: the first is the
  // oldest, next to run).
  void push(std::size_t shard, const std::vector<std::string>& ids) {
    for (const auto& id : ids) r.cmd({"LPUSH", key(shard, "pending"), job_text(id)});
  }
  void delay(std::size_t shard, const std::string& id, long long at) {
    r.cmd({"ZADD", key(shard, "delayed"), std::to_string(at), job_text(id)});
  }
  // A dead job as the daemon keeps it: in the dead set, its JSON, its failed state.
  void dead(std::size_t shard, const std::string& id, long long at, const std::string& error) {
    r.cmd({"ZADD", key(shard, "dead"), std::to_string(at), id});
    r.cmd({"HSET", key(shard, "dead:bodies"), id, job_text(id)});
    r.cmd({"HSET", key(shard, "job:" + id), "status", "failed", "error_kind", "exception", "error",
           error, "finished_at", std::to_string(at)});
  }
  std::vector<std::string> ids(const std::string& state, std::size_t offset, std::size_t limit,
                               bool newest) {
    std::vector<std::string> out;
    for (const auto& row : admin->list("q", state, offset, limit, newest).jobs) {
      out.push_back(row.id);
    }
    return out;
  }

  test::SyncRedis r;
  redis::SyncClient c;
  std::optional<store::Admin> admin;
  std::vector<std::string> tags = {"q"};
  std::vector<std::string> warned;
};

using Ids = std::vector<std::string>;

// The kind of the AdminError `f` throws (fails the test when it throws none).
template <class F>
store::AdminError::Kind kind_thrown(F f, std::string* what = nullptr) {
  try {
    f();
  } catch (const store::AdminError& e) {
    if (what) *what = e.what();
    return e.kind;
  }
  FAIL("no AdminError");
  return store::AdminError::Kind::redis;
}

// The first id `<prefix><i>` whose home among `n` shards is `shard`.
std::string homed(const std::string& prefix, std::size_t shard, std::size_t n = 3) {
  for (int i = 0;; ++i) {
    std::string id = prefix + std::to_string(i);
    if (store::home_shard(id, n) == shard) return id;
  }
}

}  // namespace

TEST_CASE("Admin::list on one shard: pending, delayed and dead oldest or newest first, paged",
          "[store][admin]") {
  test::RedisServer server;
  Fixture f(server);
  f.push(0, {"a0", "a1", "a2", "a3", "a4"});
  CHECK(f.ids("pending", 0, 10, false) == Ids{"a0", "a1", "a2", "a3", "a4"});
  CHECK(f.ids("pending", 1, 2, false) == Ids{"a1", "a2"});
  CHECK(f.ids("pending", 0, 2, true) == Ids{"a4", "a3"});
  CHECK(f.ids("pending", 3, 5, true) == Ids{"a1", "a0"});
  CHECK(f.ids("pending", 5, 5, false).empty());
  const auto none = f.admin->list("q", "pending", 0, 0, false);
  CHECK(none.jobs.empty());
  CHECK(none.total == 5);
  const auto page = f.admin->list("q", "pending", 2, 2, false);
  CHECK(page.total == 5);
  CHECK(page.offset == 2);
  CHECK(page.queue == "q");
  CHECK(page.state == "pending");
  REQUIRE(page.jobs.size() == 2);
  CHECK(page.jobs[0].body == 1);
  CHECK(page.jobs[0].readable);

  // What is not a job is listed as such; a job pushed without an id has none yet.
  f.r.cmd({"LPUSH", "jobq:{q}:pending", "garbage"});
  f.r.cmd({"LPUSH", "jobq:{q}:pending", R"({"payload":{"x":2}})"});
  const auto newest = f.admin->list("q", "pending", 0, 2, true).jobs;
  REQUIRE(newest.size() == 2);
  CHECK(newest[0].id.empty());
  CHECK(newest[0].body == nlohmann::json({{"x", 2}}));
  CHECK_FALSE(newest[1].readable);
  CHECK(newest[1].body == "(not a job: garbage)");

  for (const auto& [id, at] : std::map<std::string, long long>{
           {"d3", 300}, {"d1", 100}, {"d5", 500}, {"d2", 200}, {"d4", 400}}) {
    f.delay(0, id, at);
  }
  CHECK(f.ids("delayed", 0, 10, false) == Ids{"d1", "d2", "d3", "d4", "d5"});
  CHECK(f.ids("delayed", 1, 2, false) == Ids{"d2", "d3"});
  CHECK(f.ids("delayed", 0, 2, true) == Ids{"d5", "d4"});
  CHECK(f.ids("delayed", 4, 3, true) == Ids{"d1"});
  const auto delayed = f.admin->list("q", "delayed", 0, 1, false);
  CHECK(delayed.total == 5);
  REQUIRE(delayed.jobs.size() == 1);
  CHECK(delayed.jobs[0].when == "100");

  f.dead(0, "x1", 1000, "first");
  f.dead(0, "x2", 2000, "second");
  f.dead(0, "x3", 3000, "third");
  CHECK(f.ids("dead", 0, 10, false) == Ids{"x1", "x2", "x3"});
  CHECK(f.ids("dead", 0, 2, true) == Ids{"x3", "x2"});
  CHECK(f.ids("dead", 1, 1, true) == Ids{"x2"});
  const auto dead = f.admin->list("q", "dead", 0, 1, true);
  CHECK(dead.total == 3);
  REQUIRE(dead.jobs.size() == 1);
  CHECK(dead.jobs[0].when == "3000");
  CHECK(dead.jobs[0].body == "exception: third");
  CHECK(dead.jobs[0].state.at("status") == "failed");
}

TEST_CASE("Admin::list over three shards: one order merged from every shard, paged",
          "[store][admin]") {
  test::RedisServer server;
  Fixture f(server);
  f.shards(3);
  f.push(0, {"p0a", "p0b", "p0c"});
  f.push(1, {"p1a", "p1b"});
  f.push(2, {"p2a"});
  // Pending jobs carry no time: each shard's next in turn.
  CHECK(f.ids("pending", 0, 10, false) == Ids{"p0a", "p1a", "p2a", "p0b", "p1b", "p0c"});
  CHECK(f.ids("pending", 2, 3, false) == Ids{"p2a", "p0b", "p1b"});
  CHECK(f.ids("pending", 0, 10, true) == Ids{"p0c", "p1b", "p2a", "p0b", "p1a", "p0a"});
  CHECK(f.ids("pending", 3, 2, true) == Ids{"p0b", "p1a"});
  CHECK(f.admin->list("q", "pending", 0, 1, false).total == 6);

  f.delay(0, "d1", 100);
  f.delay(1, "d2", 200);
  f.delay(2, "d3", 300);
  f.delay(0, "d4", 400);
  f.delay(1, "d5", 500);
  f.delay(2, "d6", 600);
  CHECK(f.ids("delayed", 0, 10, false) == Ids{"d1", "d2", "d3", "d4", "d5", "d6"});
  CHECK(f.ids("delayed", 2, 3, false) == Ids{"d3", "d4", "d5"});
  CHECK(f.ids("delayed", 1, 2, true) == Ids{"d5", "d4"});
  CHECK(f.admin->list("q", "delayed", 0, 1, true).total == 6);

  f.dead(2, "x1", 1000, "in two");
  f.dead(0, "x2", 2000, "in zero");
  f.dead(1, "x3", 3000, "in one");
  CHECK(f.ids("dead", 0, 10, false) == Ids{"x1", "x2", "x3"});
  CHECK(f.ids("dead", 1, 5, true) == Ids{"x2", "x1"});
  // Each with its state from the shard it died in.
  const auto dead = f.admin->list("q", "dead", 0, 3, false).jobs;
  REQUIRE(dead.size() == 3);
  CHECK(dead[0].body == "exception: in two");
  CHECK(dead[1].body == "exception: in zero");
  CHECK(dead[2].body == "exception: in one");
}

TEST_CASE("Admin::list running and buffered: held jobs told apart by the daemons' heartbeats",
          "[store][admin]") {
  test::RedisServer server;
  Fixture f(server);
  f.shards(3);
  // w1 holds tokens 1-3 in shard 0 and 4 in shard 2, and says it runs 1 and 4; w2 says nothing.
  f.r.cmd({"ZADD", f.key(0, "leases"), "1", "w1"});
  f.r.cmd({"ZADD", f.key(2, "leases"), "1", "w1"});
  f.r.cmd({"ZADD", f.key(1, "leases"), "1", "w2"});
  f.r.cmd({"HSET", f.key(0, "inflight:w1"), "1", job_text("r1"), "2", job_text("b2"), "3",
           job_text("b3")});
  f.r.cmd({"HSET", f.key(2, "inflight:w1"), "4", job_text("r4")});
  f.r.cmd({"HSET", f.key(1, "inflight:w2"), "9", job_text("r9")});
  store::Heartbeat h;
  h.worker = "w1";
  h.queues["q"].running_tokens = {1, 4};
  (void)store::run(f.c, store::heartbeat("jobq", h)).value();

  CHECK(f.ids("running", 0, 10, false) == Ids{"r1", "r9", "r4"});
  CHECK(f.ids("running", 1, 1, false) == Ids{"r9"});
  CHECK(f.ids("buffered", 0, 10, false) == Ids{"b2", "b3"});
  CHECK(f.ids("buffered", 1, 10, false) == Ids{"b3"});
  const auto running = f.admin->list("q", "running", 2, 5, false);
  CHECK(running.total == 3);
  REQUIRE(running.jobs.size() == 1);
  CHECK(running.jobs[0].worker == "w1");
}

TEST_CASE(
    "Admin: a state or a name that cannot be is bad input; garbage at the shard count is "
    "garbage",
    "[store][admin]") {
  test::RedisServer server;
  Fixture f(server);
  std::string what;
  CHECK(kind_thrown([&] { f.admin->list("q", "sleeping", 0, 10, false); }, &what) ==
        store::AdminError::Kind::bad_input);
  CHECK(what.find("sleeping") != std::string::npos);
  CHECK(kind_thrown([&] { f.admin->list("q{x}", "pending", 0, 10, false); }) ==
        store::AdminError::Kind::bad_input);
  CHECK(kind_thrown([&] { f.admin->find_queue("no way", ""); }) ==
        store::AdminError::Kind::bad_input);
  CHECK(kind_thrown([&] { f.admin->retry_dead("q", {}, false); }) ==
        store::AdminError::Kind::bad_input);

  // The shard count is read once per Admin (f has read it): a new one reads the garbage.
  f.r.cmd({"SET", "jobq:{q}:shards", "lots"});
  CHECK(f.admin->shard_count("q") == 1);
  Fixture fresh(server);
  CHECK(kind_thrown([&] { fresh.admin->shard_count("q"); }, &what) ==
        store::AdminError::Kind::garbage);
  CHECK(what.find("jobq:{q}:shards") != std::string::npos);
  CHECK(kind_thrown([&] { fresh.admin->list("q", "pending", 0, 10, false); }) ==
        store::AdminError::Kind::garbage);
  // Another type there: garbage too.
  f.r.cmd({"DEL", "jobq:{q}:shards"});
  f.r.cmd({"HSET", "jobq:{q}:shards", "n", "3"});
  CHECK(kind_thrown([&] { fresh.admin->set_paused("q", true); }) ==
        store::AdminError::Kind::garbage);
}

TEST_CASE("Admin::job and find_queue: at the id's home shard, else in another; held means active",
          "[store][admin]") {
  test::RedisServer server;
  Fixture f(server, {"other"});
  f.shards(3);
  f.r.cmd({"SADD", "jobq:queues", "q"});
  const std::string at_home = homed("h", 2), away = homed("a", 1), held = homed("k", 1);
  f.r.cmd({"HSET", f.key(2, "job:" + at_home), "status", "succeeded", "result", "ok"});
  // An id jobqd gave a job it could not read lives where that job was fetched.
  f.r.cmd({"HSET", f.key(0, "job:" + away), "status", "failed"});

  const auto home = f.admin->job("q", at_home);
  CHECK(home.exists());
  CHECK(home.status == "succeeded");
  CHECK(home.state.at("result") == "ok");
  CHECK(home.queue == "q");
  CHECK(home.held_by.empty());
  CHECK(f.admin->job("q", away).status == "failed");
  CHECK_FALSE(f.admin->job("q", homed("n", 0)).exists());

  // A claim whose hold is there: a daemon runs it, whatever its state says yet.
  f.r.cmd({"HSET", f.key(1, "live"), held, "n1@w7:12"});
  f.r.cmd({"HSET", f.key(1, "inflight:w7"), "12", job_text(held)});
  const auto running = f.admin->job("q", held);
  CHECK(running.exists());
  CHECK(running.status == "active");
  CHECK(running.held_by == "w7");

  CHECK(f.admin->find_queue(away, "") == "q");
  CHECK(f.admin->find_queue(held, "") == "q");
  CHECK(f.admin->find_queue("anything", "named") == "named");
  CHECK(kind_thrown([&] { f.admin->find_queue("nowhere", ""); }) ==
        store::AdminError::Kind::not_found);
  // The config's queues first, then the registry's.
  CHECK(f.admin->known_queues() == Ids{"other", "q"});
}

TEST_CASE(
    "Admin::cancel_step: a pending job ends cancelled; a delayed copy away from home is "
    "brought home; an ended job is final; a held one gets a request",
    "[store][admin]") {
  test::RedisServer server;
  Fixture f(server, {}, 60000);
  f.shards(3);
  const std::string queued = homed("c", 1), delayed = homed("d", 2), held = homed("e", 0);
  f.push(1, {queued});
  f.push(1, {"other"});
  auto step = f.admin->cancel_step("q", queued, "cancelled by a test");
  CHECK(step.what == "cancelled");
  CHECK(step.was == "queued");
  CHECK(f.admin->job("q", queued).status == "cancelled");
  CHECK(f.r.str({"HGET", f.key(1, "job:" + queued), "error"}) ==
        "cancelled by a test while queued");
  CHECK(f.r.str({"HGET", f.key(1, "job:" + queued), "error_kind"}) == "cancelled");
  // Kept for the queue's retain.failed.
  const long long ttl = f.r.integer({"PTTL", f.key(1, "job:" + queued)});
  CHECK(ttl > 0);
  CHECK(ttl <= 60000);
  CHECK(f.ids("pending", 0, 10, false) == Ids{"other"});

  // Pushed to shard 0 by a plain ZADD: brought to its home, cancelled there.
  f.delay(0, delayed, 99999999999999);
  step = f.admin->cancel_step("q", delayed, "cancelled by a test");
  CHECK(step.what == "cancelled");
  CHECK(step.was == "waiting in delayed");
  CHECK(f.r.str({"HGET", f.key(2, "job:" + delayed), "status"}) == "cancelled");
  CHECK(f.r.integer({"ZCARD", f.key(0, "delayed")}) == 0);
  CHECK(f.r.integer({"ZCARD", f.key(2, "delayed")}) == 0);

  // Over already.
  step = f.admin->cancel_step("q", queued, "cancelled by a test");
  CHECK(step.what == "final");
  CHECK(step.status == "cancelled");
  CHECK(step.was == "over");
  CHECK(kind_thrown([&] { f.admin->cancel_step("q", "never", "x"); }) ==
        store::AdminError::Kind::not_found);

  // Held by a daemon: a request it reads; asked again, it stands until the job ends.
  f.r.cmd({"HSET", f.key(0, "live"), held, "n9@w3:5"});
  f.r.cmd({"HSET", f.key(0, "inflight:w3"), "5", job_text(held)});
  step = f.admin->cancel_step("q", held, "cancelled by a test");
  CHECK(step.what == "requested");
  CHECK(step.was == "running");
  CHECK(step.status == "active");
  CHECK(f.r.str({"HGET", f.key(0, "cancel"), held}) == "n9");
  step = f.admin->cancel_step("q", held, "cancelled by a test", true);
  CHECK(step.what == "requested");
  f.r.cmd({"HSET", f.key(0, "job:" + held), "status", "cancelled"});
  f.r.cmd({"HDEL", f.key(0, "live"), held});
  step = f.admin->cancel_step("q", held, "cancelled by a test", true);
  CHECK(step.what == "final");
  CHECK(step.status == "cancelled");
}

TEST_CASE(
    "Admin::cancel_step with retain.payload: the cancelled state keeps the waiting job's payload; "
    "without it, none, and an earlier job's goes",
    "[store][admin][payload]") {
  test::RedisServer server;
  Fixture f(server, {}, 60000);
  store::Layout keeps;
  keeps.retain_payload = [](const std::string& queue) { return queue == "q"; };
  store::Admin with(f.c, std::move(keeps));
  f.r.cmd({"LPUSH", f.key(0, "pending"), job_text("a", R"( {"say": "pelican"} )")});
  auto step = with.cancel_step("q", "a", "cancelled by a test");
  CHECK(step.what == "cancelled");
  CHECK(f.r.str({"HGET", f.key(0, "job:a"), "payload"}) == R"({"say": "pelican"})");
  const auto seen = store::state_json("a", with.job("q", "a").state);
  CHECK(seen["payload"] == nlohmann::json{{"say", "pelican"}});
  CHECK_FALSE(seen.contains("payload_truncated"));
  // Another job of the id, cancelled where the queue keeps no payloads.
  f.delay(0, "a", 99999999999999);
  step = f.admin->cancel_step("q", "a", "cancelled by a test");
  CHECK(step.what == "cancelled");
  CHECK(f.r.str({"HGET", f.key(0, "job:a"), "status"}) == "cancelled");
  CHECK(f.r.integer({"HEXISTS", f.key(0, "job:a"), "payload"}) == 0);
  // A payload kept cut shows as its text, the cut said.
  f.r.cmd({"HSET", f.key(0, "job:a"), "payload", R"({"long":"abc...)"});
  const auto cut = store::state_json("a", with.job("q", "a").state);
  CHECK(cut["payload"] == R"({"long":"abc...)");
  CHECK(cut["payload_truncated"] == true);
}

// How often Redis has run `command` since its stats were reset (INFO commandstats).
long long calls_of(test::SyncRedis& r, const std::string& command) {
  const std::string info = r.str({"INFO", "commandstats"});
  const std::string tag = "cmdstat_" + command + ":calls=";
  const auto at = info.find(tag);
  return at == std::string::npos ? 0 : std::stoll(info.substr(at + tag.size()));
}

TEST_CASE(
    "Admin::cancel_many: waiting, away from home, delayed, held, ended and unknown jobs, the "
    "waiting ones read once per shard for all of them; none begun past its time",
    "[store][admin]") {
  test::RedisServer server;
  Fixture f(server, {}, 60000);
  f.shards(3);
  const std::string a1 = homed("a", 1), a2 = homed("aa", 1), away = homed("b", 2),
                    later = homed("c", 0), held = homed("d", 0), over = homed("e", 2);
  // 2,500 others before them in shard 1 (three slices of a read), then the two to cancel.
  std::vector<std::string> cmd = {"LPUSH", f.key(1, "pending")};
  for (int i = 0; i < 2500; ++i) cmd.push_back(job_text("other-" + std::to_string(i)));
  f.r.cmd(cmd);
  f.push(1, {a1, a2});
  f.push(0, {away});  // a plain LPUSH: in shard 0, not yet at its home
  f.delay(0, later, 99999999999999);
  f.r.cmd({"HSET", f.key(0, "live"), held, "n9@w3:5"});
  f.r.cmd({"HSET", f.key(0, "inflight:w3"), "5", job_text(held)});
  f.r.cmd({"HSET", f.key(2, "job:" + over), "status", "succeeded"});
  f.r.cmd({"CONFIG", "RESETSTAT"});
  const auto done =
      f.admin->cancel_many("q", {a1, away, later, held, over, "nobody", a2, a1}, "bulk",
                           std::chrono::steady_clock::now() + std::chrono::seconds(10));
  std::map<std::string, std::string> what;
  std::vector<std::string> order;
  for (const auto& d : done) {
    what[d.id] = d.step.what;
    order.push_back(d.id);
  }
  CHECK(order == Ids{a1, away, later, held, over, "nobody", a2});  // each once, as given
  CHECK(what[a1] == "cancelled");
  CHECK(what[a2] == "cancelled");
  CHECK(what[away] == "cancelled");
  CHECK(what[later] == "cancelled");
  CHECK(what[held] == "requested");
  CHECK(what[over] == "final");
  CHECK(what["nobody"] == "missing");
  CHECK(f.r.str({"HGET", f.key(1, "job:" + a1), "error"}) == "bulk while queued");
  CHECK(f.r.str({"HGET", f.key(2, "job:" + away), "status"}) == "cancelled");
  CHECK(f.r.str({"HGET", f.key(0, "cancel"), held}) == "n9");
  // Shard 1's 2,502 in three reads, shard 0's one: not three reads per job of shard 1.
  CHECK(calls_of(f.r, "lrange") == 4);
  CHECK(f.admin->list("q", "pending", 0, 1, false).total == 2500);
  CHECK(f.admin->list("q", "delayed", 0, 1, false).total == 0);

  // Past its time, none is begun.
  f.push(1, {"late-1"});
  const auto late = f.admin->cancel_many("q", {"late-1"}, "bulk", std::chrono::steady_clock::now());
  REQUIRE(late.size() == 1);
  CHECK(late[0].step.what == "late");
  CHECK(f.admin->list("q", "pending", 0, 1, false).total == 2501);
  CHECK(kind_thrown([&] {
          f.admin->cancel_many("q", {"ok", "not ok"}, "x", std::chrono::steady_clock::now());
        }) == store::AdminError::Kind::bad_input);
}

TEST_CASE("Admin::retry_dead and purge_dead: the ids given in every shard, or all of them",
          "[store][admin]") {
  test::RedisServer server;
  Fixture f(server);
  f.shards(3);
  f.dead(0, "x1", 1000, "e");
  f.dead(1, "x2", 2000, "e");
  f.dead(2, "x3", 3000, "e");
  f.dead(2, "x4", 4000, "e");
  CHECK(f.admin->retry_dead("q", {"x2"}, false) == 1);
  CHECK(f.r.str({"HGET", f.key(1, "job:x2"), "status"}) == "queued");
  CHECK(f.ids("pending", 0, 10, false) == Ids{"x2"});
  CHECK(f.ids("dead", 0, 10, false) == Ids{"x1", "x3", "x4"});
  CHECK(kind_thrown([&] { f.admin->retry_dead("q", {"x2"}, false); }) ==
        store::AdminError::Kind::not_found);
  CHECK(kind_thrown([&] { f.admin->purge_dead("q", {"x1"}, true); }) ==
        store::AdminError::Kind::bad_input);

  CHECK(f.admin->purge_dead("q", {"x1", "x3"}, false) == 2);
  CHECK(f.ids("dead", 0, 10, false) == Ids{"x4"});
  f.dead(0, "x5", 5000, "e");
  CHECK(f.admin->retry_dead("q", {}, true) == 2);
  CHECK(f.admin->list("q", "pending", 0, 10, false).total == 3);
  f.dead(1, "x6", 6000, "e");
  f.dead(2, "x7", 7000, "e");
  CHECK(f.admin->purge_dead("q", {}, true) == 2);
  CHECK(f.admin->list("q", "dead", 0, 10, false).total == 0);
  CHECK(f.r.integer({"HLEN", f.key(1, "dead:bodies")}) == 0);
}

TEST_CASE("Admin::set_paused: every shard's flag, changed once; queue_view sums the shards",
          "[store][admin]") {
  test::RedisServer server;
  Fixture f(server);
  f.shards(3);
  CHECK(f.admin->set_paused("q", true));
  CHECK_FALSE(f.admin->set_paused("q", true));
  for (std::size_t i = 0; i < 3; ++i) CHECK(f.r.integer({"EXISTS", f.key(i, "paused")}) == 1);
  f.push(0, {"a"});
  f.push(2, {"b", "c"});
  f.delay(1, "d", 100);
  f.dead(2, "x", 100, "e");
  auto v = f.admin->queue_view("q", {});
  CHECK(v.name == "q");
  CHECK(v.shards == 3);
  CHECK(v.paused);
  CHECK(v.depths.pending == 3);
  CHECK(v.depths.delayed == 1);
  CHECK(v.depths.dead == 1);
  CHECK(f.admin->set_paused("q", false));
  CHECK_FALSE(f.admin->set_paused("q", false));
  for (std::size_t i = 0; i < 3; ++i) CHECK(f.r.integer({"EXISTS", f.key(i, "paused")}) == 0);
  // One shard paused by hand: the queue is.
  f.r.cmd({"SET", f.key(1, "paused"), "1"});
  CHECK(f.admin->queue_view("q", {}).paused);
}

TEST_CASE(
    "Admin: the daemons' activity, and garbage at the workers key or the registry warned "
    "of where the answer can do without it",
    "[store][admin]") {
  test::RedisServer server;
  Fixture f(server, {"q"});
  store::Heartbeat h;
  h.worker = "w1";
  h.queues["q"].running = 2;
  h.queues["q"].buffered = 5;
  (void)store::run(f.c, store::heartbeat("jobq", h)).value();
  auto active = f.admin->activity();
  REQUIRE(active.count("q") == 1);
  CHECK(active.at("q").running == 2);
  CHECK(f.admin->queue_view("q", active).activity.buffered == 5);
  CHECK(f.admin->live_workers().live.size() == 1);

  f.r.cmd({"DEL", "jobq:workers"});
  f.r.cmd({"SET", "jobq:workers", "garbage"});
  CHECK(f.admin->activity().empty());
  REQUIRE(f.warned.size() == 1);
  CHECK(f.warned[0].find("jobq:workers") != std::string::npos);
  CHECK(kind_thrown([&] { f.admin->live_workers(); }) == store::AdminError::Kind::garbage);

  f.r.cmd({"SET", "jobq:queues", "garbage"});
  CHECK(f.admin->known_queues() == Ids{"q"});
  REQUIRE(f.warned.size() == 2);
  CHECK(f.warned[1].find("jobq:queues") != std::string::npos);
  // Without the config's queues there is nothing to show: an error, not an empty list.
  Fixture bare(server);
  CHECK(kind_thrown([&] { bare.admin->known_queues(); }) == store::AdminError::Kind::garbage);
}

TEST_CASE("Admin::search: every place a job's text is kept, step by step, over shards",
          "[store][admin][search]") {
  test::RedisServer server;
  for (const std::size_t n : {std::size_t{1}, std::size_t{3}}) {
    INFO(n << " shard(s)");
    server.client().cmd({"FLUSHALL"});
    Fixture f(server);
    f.shards(n);
    const std::size_t last = n - 1;
    // The text in each place once, beside 1,200 jobs without it (more than a Redis read takes).
    for (int i = 0; i < 1200; ++i) {
      f.r.cmd({"LPUSH", f.key(i % n, "pending"), job_text("p" + std::to_string(i), R"("hay")")});
      f.r.cmd({"HSET", f.key(i % n, "job:s" + std::to_string(i)), "status", "succeeded", "result",
               "hay"});
    }
    f.r.cmd({"LPUSH", f.key(last, "pending"), job_text("in-pending", R"({"say":"NeedLE-1"})")});
    f.r.cmd({"ZADD", f.key(0, "delayed"), "5", job_text("in-delayed", R"("a needle-2")")});
    f.dead(last, "dead-body", 9, "boom");
    f.r.cmd(
        {"HSET", f.key(last, "dead:bodies"), "dead-body", job_text("dead-body", R"("needle-3")")});
    f.dead(0, "dead-error", 8, "it said needle-4 and died");
    f.r.cmd({"HSET", f.key(last, "job:done"), "status", "succeeded", "result",
             std::string(300, 'x') + "nEEdle-5" + std::string(300, 'y')});
    f.r.cmd({"HSET", f.key(0, "job:needle-6"), "status", "cancelled"});
    // A finished job's payload, where its queue retains it (retain.payload).
    f.r.cmd({"HSET", f.key(last, "job:kept"), "status", "succeeded", "result", "hay", "payload",
             R"({"note":"a needle-7"})"});
    // Small steps, each going on from the last one's `next`, until the queue is searched.
    std::map<std::string, store::Found> found;
    std::string from;
    std::size_t steps = 0, examined = 0;
    do {
      const auto step = f.admin->search("q", "needle", from, 300);
      CHECK(step.examined <= 300 + 500);
      examined += step.examined;
      for (const auto& x : step.found) {
        CHECK(found.count(x.id) == 0);
        found[x.id] = x;
      }
      from = step.next;
    } while (!from.empty() && ++steps < 100);
    CHECK(from.empty());
    CHECK(steps > 4);
    CHECK(examined >= 2400);
    REQUIRE(found.size() == 7);
    CHECK(found["in-pending"].where == "pending");
    CHECK(found["in-pending"].excerpt.find("NeedLE-1") != std::string::npos);
    CHECK(found["in-delayed"].where == "delayed");
    CHECK(found["dead-body"].field == "job");
    CHECK(found["dead-error"].field == "error");
    CHECK(found["dead-error"].where == "dead");
    CHECK(found["done"].where == "succeeded");
    CHECK(found["done"].field == "result");
    CHECK(found["done"].excerpt.size() < 120);
    CHECK(found["done"].excerpt.find("nEEdle-5") != std::string::npos);
    CHECK(found["needle-6"].field == "id");
    CHECK(found["needle-6"].where == "cancelled");
    CHECK(found["kept"].where == "succeeded");
    CHECK(found["kept"].field == "payload");
    CHECK(found["kept"].excerpt == R"({"note":"a needle-7"})");
  }
  Fixture f(server);
  using Kind = store::AdminError::Kind;
  const auto refused = [&](const std::string& text, const std::string& from) {
    try {
      f.admin->search("q", text, from);
    } catch (const store::AdminError& e) {
      return e.kind == Kind::bad_input;
    }
    return false;
  };
  CHECK(refused("", ""));
  CHECK(refused(std::string(201, 'a'), ""));
  CHECK(refused("x", "garbage"));
  CHECK(refused("x", "9,0,0"));
  CHECK(refused("x", "0,7,0"));
  CHECK(refused("x", "0,0,-1"));
  CHECK_FALSE(refused("x", "3,0,0"));
}

TEST_CASE("Admin::search by status: the cancelled (or any status) among the retained states",
          "[store][admin][search]") {
  test::RedisServer server;
  Fixture f(server);
  for (int i = 0; i < 700; ++i) {
    const std::string status = i % 100 == 7 ? "cancelled" : "succeeded";
    f.r.cmd({"HSET", "jobq:{q}:job:j" + std::to_string(i), "status", status, "result",
             i == 307 ? "blue" : "red"});
  }
  f.r.cmd({"LPUSH", "jobq:{q}:pending", job_text("waiting-cancelled", R"("cancelled")")});
  std::set<std::string> all, blue;
  for (const auto& [text, into] :
       {std::pair<std::string, std::set<std::string>*>{"", &all}, {"BLUE", &blue}}) {
    std::string from;
    int steps = 0;
    do {
      auto step = f.admin->search("q", text, from, 250, "cancelled");
      for (const auto& x : step.found) {
        CHECK(x.where == "cancelled");
        into->insert(x.id);
      }
      from = step.next;
    } while (!from.empty() && ++steps < 50);
  }
  CHECK(all == std::set<std::string>{"j7", "j107", "j207", "j307", "j407", "j507", "j607"});
  CHECK(blue == std::set<std::string>{"j307"});
  // What a list by status shows: each answer newest first (by finished_at, none last), the
  // error (else the result) as its text.
  f.r.cmd({"HSET", "jobq:{q}:job:f1", "status", "failed", "error", "first", "finished_at", "1000"});
  f.r.cmd({"HSET", "jobq:{q}:job:f3", "status", "failed", "error", "third", "finished_at", "3000"});
  f.r.cmd({"HSET", "jobq:{q}:job:f2", "status", "failed", "result", "{}", "finished_at", "2000"});
  f.r.cmd({"HSET", "jobq:{q}:job:f0", "status", "failed"});
  const auto failed = f.admin->search("q", "", "", 5000, "failed");
  CHECK(failed.next.empty());
  REQUIRE(failed.found.size() == 4);
  CHECK(failed.found[0].id == "f3");
  CHECK(failed.found[0].at == "3000");
  CHECK(failed.found[0].field == "error");
  CHECK(failed.found[0].excerpt == "third");
  CHECK(failed.found[1].id == "f2");
  CHECK(failed.found[1].field == "result");
  CHECK(failed.found[2].id == "f1");
  CHECK(failed.found[3].id == "f0");
  CHECK(failed.found[3].at.empty());
  CHECK(failed.found[3].field.empty());
  CHECK_THROWS_AS(f.admin->search("q", "", "", 10, "bogus"), store::AdminError);
  CHECK_THROWS_AS(f.admin->search("q", "", "", 10, ""), store::AdminError);
}

TEST_CASE(
    "schedules as operators see them: states read together, garbage said, a name found in "
    "its queue",
    "[admin][schedules]") {
  test::RedisServer server;
  Fixture f(server, {"q", "p"});
  config::ScheduleConfig s;
  s.name = "a";
  s.queue = "q";
  s.cron = "@every 1m";
  f.admin->add_schedule(s);
  s.name = "b";
  f.admin->add_schedule(s);
  s.queue = "p";
  f.admin->add_schedule(s);
  // Another type at a's state: said as a's problem, not shown as a schedule that never ran.
  f.r.cmd({"DEL", "jobq:{q}:schedule:a"});
  f.r.cmd({"SET", "jobq:{q}:schedule:a", "junk"});
  const auto list = f.admin->schedules();
  REQUIRE(list.size() == 3);
  CHECK(list[0].def.queue == "q");
  CHECK(list[0].def.name == "a");
  CHECK_THAT(list[0].problem,
             Catch::Contains("jobq:{q}:schedule:a: ") && Catch::Contains("WRONGTYPE"));
  CHECK(list[1].def.name == "b");
  CHECK(list[1].problem.empty());
  CHECK(list[1].state.next % 60000 == 0);
  CHECK(list[2].def.queue == "p");
  // A name in one queue is found there (a's garbage then said, naming its key); in two, the
  // queue must be named; in none, not found.
  CHECK_THROWS_WITH(f.admin->control_schedule("a", "", "pause"),
                    Catch::Contains("jobq:{q}:schedule:a holds what jobqd never writes"));
  CHECK_THROWS_AS(f.admin->control_schedule("b", "", "pause"), store::AdminError);
  CHECK(f.admin->control_schedule("b", "p", "pause") == "p");
  CHECK_THROWS_AS(f.admin->control_schedule("c", "", "pause"), store::AdminError);
}
