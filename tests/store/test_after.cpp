// Jobs that wait for other jobs, at the protocol's level (docs/workflows.md): entering waiting,
// dependencies learning of a waiter, outcomes told once, release with the outcomes in order,
// the policies, the bound, a decided job's dependents told in turn, the outbox; every end outside
// settle telling its dependents (cancel, waiting or queued; recovery; debounce), the deadline,
// the re-registration sweep.
#include <catch2/catch.hpp>

#include <map>

#include "store/after.hpp"
#include "store/marker.hpp"
#include "store/queue_store.hpp"
#include "store/shards.hpp"
#include "tests/support/admin_front.hpp"
#include "tests/support/process.hpp"
#include "tests/support/redis_server.hpp"

using namespace jq;

namespace {

const store::Keys kQ("jobq", "q");
const store::Keys kImages("jobq", "images");

struct Client {
  explicit Client(const test::RedisServer& server)
      : c(redis::SyncClient::connect(redis::parse_url(server.url())).value()) {}
  template <class T>
  T run(const store::Call<T>& call) {
    return store::run(c, call).value();
  }
  redis::SyncClient c;
};

store::Waiting waiting(const std::string& id, std::vector<std::string> refs,
                       job::DependencyPolicy policy = job::DependencyPolicy::fail) {
  store::Waiting w;
  w.id = id;
  w.queue = "q";
  w.copy = R"({"id":")" + id + R"(","payload":1})";
  w.cut = w.copy.size() - 1;
  w.submitted_at = "1000";
  w.deadline = 4102444800000;
  w.policy = policy;
  w.refs = std::move(refs);
  return w;
}

store::Outcome outcome(const std::string& queue, const std::string& id,
                       const std::string& status = "succeeded", const std::string& result = "") {
  store::Outcome o;
  o.queue = queue;
  o.job = id;
  o.status = status;
  o.result = result;
  if (status != "succeeded") {
    o.error = "exit status 3";
    o.error_kind = "exit_status";
  }
  return o;
}

}  // namespace

TEST_CASE("after: a job waits for two, each outcome counts once, then it goes with them in order",
          "[store][after]") {
  test::RedisServer server;
  auto r = server.client();
  Client c(server);
  REQUIRE(c.run(store::after_wait(kQ, waiting("c", {"q/a", "images/b"}))));
  CHECK(r.str({"HGET", "jobq:{q}:job:c", "status"}) == "waiting");
  CHECK(r.str({"HGET", "jobq:{q}:job:c", "waiting_for"}) == "2");
  CHECK(r.str({"HGET", "jobq:{q}:job:c", "after"}) == "q/a images/b");
  // The same id again while it waits: not written twice.
  CHECK_FALSE(c.run(store::after_wait(kQ, waiting("c", {"q/z"}))));
  // a is not seen yet: c is noted as its dependent (once, however often told).
  CHECK(c.run(store::after_register(kQ, "q", "q/c", {"a"})) == 0);
  CHECK(c.run(store::after_register(kQ, "q", "q/c", {"a"})) == 0);
  CHECK(r.str({"HGET", "jobq:{q}:dependents", "a"}) == "q/c");
  // b is final already: its outcome goes to its queue's outbox, for c.
  r.cmd({"HSET", "jobq:{images}:job:b", "status", "succeeded", "result", "B!"});
  CHECK(c.run(store::after_register(kImages, "images", "q/c", {"b"})) == 1);
  const auto head = c.run(store::outbox_head(kImages, 10));
  REQUIRE(head.size() == 1);
  const auto entry = store::outbox_entry(head[0]);
  REQUIRE(entry);
  CHECK(entry->to_queue == "q");
  CHECK(entry->to_id == "c");
  CHECK(entry->outcome.ref() == "images/b");
  CHECK(entry->outcome.result == "B!");
  // Told twice (a drain killed before it removed the entry): once in effect.
  CHECK(c.run(store::after_resolve(kQ, "q", "c", entry->outcome, 60000, 1 << 20)) ==
        store::Resolved::noted);
  CHECK(c.run(store::after_resolve(kQ, "q", "c", entry->outcome, 60000, 1 << 20)) ==
        store::Resolved::none);
  CHECK(c.run(store::outbox_done(kImages, head[0])) == 1);
  CHECK(r.str({"HGET", "jobq:{q}:job:c", "waiting_for"}) == "1");
  // Not one of its dependencies: nothing.
  CHECK(c.run(store::after_resolve(kQ, "q", "c", outcome("q", "x"), 60000, 1 << 20)) ==
        store::Resolved::none);
  CHECK(c.run(store::after_resolve(kQ, "q", "c", outcome("q", "a", "succeeded", "A"), 60000,
                                   1 << 20)) == store::Resolved::released);
  // Released with the outcomes in after's order, parsed as a job would be.
  const std::string copy = r.str({"LINDEX", "jobq:{q}:pending", "0"});
  const auto doc = nlohmann::json::parse(copy);
  CHECK(doc["id"] == "c");
  REQUIRE(doc["dependencies"].size() == 2);
  CHECK(doc["dependencies"][0] ==
        nlohmann::json{{"job", "a"}, {"queue", "q"}, {"status", "succeeded"}, {"result", "A"}});
  CHECK(doc["dependencies"][1]["result"] == "B!");
  CHECK(r.str({"HGET", "jobq:{q}:job:c", "status"}) == "queued");
  CHECK(r.integer({"EXISTS", "jobq:{q}:after:c"}) == 0);
  CHECK(r.integer({"HLEN", "jobq:{q}:waiting"}) == 0);
  CHECK(r.integer({"ZCARD", "jobq:{q}:after_until"}) == 0);
  // Told again after its release: nothing.
  CHECK(c.run(store::after_resolve(kQ, "q", "c", outcome("q", "a"), 60000, 1 << 20)) ==
        store::Resolved::none);
  CHECK(r.integer({"LLEN", "jobq:{q}:pending"}) == 1);
}

TEST_CASE("after: the policies decide at the first failure; a decided job's dependents are told",
          "[store][after]") {
  test::RedisServer server;
  auto r = server.client();
  Client c(server);
  // d waits for x and y (fail); e waits for d (skip); f waits for x (run).
  REQUIRE(c.run(store::after_wait(kQ, waiting("d", {"q/x", "q/y"}))));
  REQUIRE(c.run(store::after_wait(kQ, waiting("e", {"q/d"}, job::DependencyPolicy::skip))));
  REQUIRE(c.run(store::after_wait(kQ, waiting("f", {"q/x"}, job::DependencyPolicy::run))));
  CHECK(c.run(store::after_register(kQ, "q", "q/e", {"d"})) == 0);
  const auto x = outcome("q", "x", "failed");
  CHECK(c.run(store::after_resolve(kQ, "q", "d", x, 60000, 1 << 20)) == store::Resolved::ended);
  CHECK(r.str({"HGET", "jobq:{q}:job:d", "status"}) == "failed");
  CHECK(r.str({"HGET", "jobq:{q}:job:d", "error_kind"}) == "dependency");
  CHECK(r.str({"HGET", "jobq:{q}:job:d", "error"}) == "dependency q/x failed: exit status 3");
  CHECK(r.integer({"PTTL", "jobq:{q}:job:d"}) > 0);
  // d's end is in the outbox for e, which skips.
  const auto head = c.run(store::outbox_head(kQ, 10));
  REQUIRE(head.size() == 1);
  const auto told = store::outbox_entry(head[0]);
  REQUIRE(told);
  CHECK(told->to_id == "e");
  CHECK(c.run(store::after_resolve(kQ, "q", "e", told->outcome, 60000, 1 << 20)) ==
        store::Resolved::ended);
  CHECK(r.str({"HGET", "jobq:{q}:job:e", "status"}) == "cancelled");
  CHECK(r.str({"HGET", "jobq:{q}:job:e", "error"}) ==
        "dependency q/d failed: dependency q/x failed: exit status 3");
  // f runs anyway, and sees the failure.
  CHECK(c.run(store::after_resolve(kQ, "q", "f", x, 60000, 1 << 20)) == store::Resolved::released);
  const auto doc = nlohmann::json::parse(r.str({"LINDEX", "jobq:{q}:pending", "0"}));
  CHECK(doc["dependencies"][0]["status"] == "failed");
  CHECK(doc["dependencies"][0]["error"] == "exit status 3");
  // Only f went to pending; d's y comes too late to matter.
  CHECK(r.integer({"LLEN", "jobq:{q}:pending"}) == 1);
  CHECK(c.run(store::after_resolve(kQ, "q", "d", outcome("q", "y"), 60000, 1 << 20)) ==
        store::Resolved::none);
}

TEST_CASE("after: outcomes over max_job_bytes end the job saying so; its level's list is kept",
          "[store][after]") {
  test::RedisServer server;
  auto r = server.client();
  Client c(server);
  REQUIRE(c.run(store::after_wait(kQ, waiting("big", {"q/a"}))));
  CHECK(c.run(store::after_resolve(
            kQ, "q", "big", outcome("q", "a", "succeeded", std::string(200, 'r')), 60000, 100)) ==
        store::Resolved::ended);
  CHECK_THAT(r.str({"HGET", "jobq:{q}:job:big", "error"}),
             Catch::Matches("the outcomes of 1 dependencies make the job \\d+ bytes, over "
                            "max_job_bytes \\(100\\)"));
  auto high = waiting("h", {"q/a"});
  high.level = job::Priority::high;
  REQUIRE(c.run(store::after_wait(kQ, high)));
  CHECK(c.run(store::after_resolve(kQ, "q", "h", outcome("q", "a"), 60000, 1 << 20)) ==
        store::Resolved::released);
  CHECK(r.integer({"LLEN", "jobq:{q}:pending:high"}) == 1);
  // Garbage in the outbox is no entry.
  CHECK_FALSE(store::outbox_entry("not json"));
  CHECK_FALSE(store::outbox_entry(R"({"to":"nobody","job":"a","queue":"q","status":"x"})"));
  CHECK_FALSE(store::outbox_entry(R"({"to":"q/a","job":1,"queue":"q","status":"x"})"));
}

TEST_CASE("after: a job waits for as many jobs as it may name, and is released after the last",
          "[store][after]") {
  test::RedisServer server;
  auto r = server.client();
  Client c(server);
  // 10,000 references: more than Lua's unpack takes at once.
  std::vector<std::string> refs;
  for (std::size_t i = 0; i < job::kMaxDependencies; ++i) refs.push_back("q/d" + std::to_string(i));
  REQUIRE(c.run(store::after_wait(kQ, waiting("all", refs))));
  CHECK(r.integer({"HLEN", "jobq:{q}:after:all"}) ==
        static_cast<long long>(job::kMaxDependencies) + 5);
  CHECK(r.str({"HGET", "jobq:{q}:job:all", "waiting_for"}) == "10000");
  // Told of each: the first 9,000 one call each, in one pipelined write; the last 1,000 in one
  // call (one drain's outcomes for one job), the one before them again among them (counted once).
  std::vector<store::Call<store::Resolved>> told;
  for (std::size_t i = 0; i < 9000; ++i) {
    told.push_back(store::after_resolve(kQ, "q", "all", outcome("q", "d" + std::to_string(i)),
                                        60000, 1 << 20));
  }
  REQUIRE(c.c.load(*told.front().req.script));
  auto answers = store::pipelined(c.c, told);
  REQUIRE(answers.back().ok());
  CHECK(*answers.back() == store::Resolved::noted);
  std::vector<store::Outcome> last{outcome("q", "d8999")};
  for (std::size_t i = 9000; i < job::kMaxDependencies; ++i) {
    last.push_back(outcome("q", "d" + std::to_string(i)));
  }
  std::vector<const store::Outcome*> at_once;
  for (const auto& o : last) at_once.push_back(&o);
  // One command of 4,000 arguments right after a long pipeline: it failed "connection lost:
  // Operation now in progress" while the step's flush read a stale errno (redis/connection.cpp).
  const auto got = store::run(c.c, store::after_resolve(kQ, "q", "all", at_once, 60000, 1 << 20));
  INFO((got.ok() ? std::string() : got.error().message));
  REQUIRE(got.ok());
  CHECK(*got == store::Resolved::released);
  const auto doc = nlohmann::json::parse(r.str({"LINDEX", "jobq:{q}:pending", "0"}));
  REQUIRE(doc["dependencies"].size() == job::kMaxDependencies);
  CHECK(doc["dependencies"][9999]["job"] == "d9999");
}

namespace {

// The outbox's entries, each read (and removed) as a drain would; every one must be one.
std::vector<store::OutboxEntry> drained(Client& c, const store::Keys& k) {
  std::vector<store::OutboxEntry> out;
  for (const auto& text : c.run(store::outbox_head(k, 100))) {
    auto entry = store::outbox_entry(text);
    REQUIRE(entry);
    out.push_back(std::move(*entry));
    CHECK(c.run(store::outbox_done(k, text)) == 1);
  }
  return out;
}

}  // namespace

TEST_CASE(
    "after: a job cancelled while it waits leaves waiting; what waits on it decides by policy",
    "[store][after]") {
  test::RedisServer server;
  auto r = server.client();
  Client c(server);
  test::AdminFront f(server);
  // b waits for a; c waits for b (and x, so that `run` has one more to wait for).
  auto policy = job::DependencyPolicy::fail;
  SECTION("fail") {}
  SECTION("skip") {
    policy = job::DependencyPolicy::skip;
  }
  SECTION("run") {
    policy = job::DependencyPolicy::run;
  }
  REQUIRE(c.run(store::after_wait(kQ, waiting("b", {"q/a"}))));
  REQUIRE(c.run(store::after_wait(kQ, waiting("c", {"q/b", "q/x"}, policy))));
  CHECK(c.run(store::after_register(kQ, "q", "q/b", {"a"})) == 0);
  CHECK(c.run(store::after_register(kQ, "q", "q/c", {"b", "x"})) == 0);
  const auto step = f.admin->cancel_step("q", "b", "cancelled by test", false);
  CHECK(step.what == "cancelled");
  CHECK(step.was == "waiting for its dependencies");
  CHECK(r.str({"HGET", "jobq:{q}:job:b", "status"}) == "cancelled");
  CHECK(r.str({"HGET", "jobq:{q}:job:b", "error_kind"}) == "cancelled");
  CHECK(r.str({"HGET", "jobq:{q}:job:b", "error"}) ==
        "cancelled by test while waiting for its dependencies");
  CHECK(r.str({"HGET", "jobq:{q}:job:b", "waiting_for"}) == "0");
  CHECK_FALSE(r.str({"HGET", "jobq:{q}:job:b", "finished_at"}).empty());
  CHECK(r.integer({"PTTL", "jobq:{q}:job:b"}) > 0);
  // Nothing of its wait is left.
  CHECK(r.integer({"HEXISTS", "jobq:{q}:waiting", "b"}) == 0);
  CHECK(r.integer({"EXISTS", "jobq:{q}:after:b"}) == 0);
  CHECK(r.cmd({"ZSCORE", "jobq:{q}:after_until", "b"}).is_nil());
  CHECK(r.cmd({"ZSCORE", "jobq:{q}:registering", "b"}).is_nil());
  CHECK(r.integer({"HEXISTS", "jobq:{q}:dependents", "b"}) == 0);
  // Cancelled again: it is over.
  CHECK(f.admin->cancel_step("q", "b", "again", false).what == "final");
  // c is told through the outbox, once.
  auto told = drained(c, kQ);
  REQUIRE(told.size() == 1);
  CHECK(told[0].to_id == "c");
  CHECK(told[0].outcome.status == "cancelled");
  CHECK(told[0].outcome.error_kind == "cancelled");
  const auto answer = c.run(store::after_resolve(kQ, "q", "c", told[0].outcome, 60000, 1 << 20));
  const std::string error =
      "dependency q/b cancelled: cancelled by test while waiting for its dependencies";
  if (policy == job::DependencyPolicy::run) {
    CHECK(answer == store::Resolved::noted);
    CHECK(r.str({"HGET", "jobq:{q}:job:c", "status"}) == "waiting");
    CHECK(c.run(store::after_resolve(kQ, "q", "c", outcome("q", "x"), 60000, 1 << 20)) ==
          store::Resolved::released);
    const auto doc = nlohmann::json::parse(r.str({"LINDEX", "jobq:{q}:pending", "0"}));
    CHECK(doc["dependencies"][0]["status"] == "cancelled");
    CHECK(doc["dependencies"][1]["status"] == "succeeded");
  } else {
    CHECK(answer == store::Resolved::ended);
    CHECK(r.str({"HGET", "jobq:{q}:job:c", "status"}) ==
          (policy == job::DependencyPolicy::fail ? "failed" : "cancelled"));
    CHECK(r.str({"HGET", "jobq:{q}:job:c", "error_kind"}) == "dependency");
    CHECK(r.str({"HGET", "jobq:{q}:job:c", "error"}) == error);
    CHECK(r.integer({"LLEN", "jobq:{q}:pending"}) == 0);
  }
  // a's end reaches b no more: b is over.
  CHECK(c.run(store::after_resolve(kQ, "q", "b", outcome("q", "a"), 60000, 1 << 20)) ==
        store::Resolved::none);
}

TEST_CASE(
    "after: a job cancelled in pending, dead at recovery or replaced by debounce tells its "
    "dependents",
    "[store][after]") {
  test::RedisServer server;
  auto r = server.client();
  Client c(server);
  test::AdminFront f(server);
  // w waits for three jobs (run: it sees every outcome); each is noted as its dependency.
  REQUIRE(c.run(
      store::after_wait(kQ, waiting("w", {"q/p", "q/l", "q/u"}, job::DependencyPolicy::run))));
  CHECK(c.run(store::after_register(kQ, "q", "q/w", {"p", "l", "u"})) == 0);
  // p: queued, cancelled by jobqctl.
  const auto now = store::unix_ms();
  const std::string p = store::marked_submission(R"({"id":"p","payload":1})", "p", now);
  REQUIRE(c.run(store::submit(kQ, "p", "q", p, now, std::nullopt)));
  CHECK(f.admin->cancel_step("q", "p", "cancelled by test", false).what == "cancelled");
  // l: its daemon died during its last attempt; another recovers it dead.
  r.cmd({"ZADD", "jobq:{q}:leases", "1", "w9"});
  r.cmd({"HSET", "jobq:{q}:inflight:w9", "1", R"({"id":"l","payload":1})"});
  store::RecoverItem lost;
  lost.token = "1";
  lost.dead = true;
  lost.id = "l";
  lost.attempts = lost.max = 3;
  lost.text = R"({"id":"l","payload":1})";
  const auto recovered = c.run(
      store::recover(kQ, "w9", false, "q", "its worker died", std::chrono::minutes(1), {lost}));
  CHECK(recovered.dead == 1);
  // u: waiting under a debounce key, replaced by v.
  store::UniqueAsk ask;
  ask.key = "k";
  ask.rule.mode = store::UniqueRule::Mode::debounce;
  ask.keep_failed = std::chrono::minutes(1);
  const std::string u = store::marked_submission(R"({"id":"u","payload":1})", "u", now);
  CHECK(c.run(store::submit(kQ, "u", "q", u, now, std::nullopt, ask)).what ==
        store::Submitted::What::queued);
  ask.expected = "u";
  const std::string v = store::marked_submission(R"({"id":"v","payload":1})", "v", now);
  CHECK(c.run(store::submit(kQ, "v", "q", v, now, std::nullopt, ask)).other == "u");
  // Each end is in the outbox for w, said as its state says it.
  auto told = drained(c, kQ);
  REQUIRE(told.size() == 3);
  std::map<std::string, store::Outcome> by_job;
  for (auto& e : told) {
    CHECK(e.to_id == "w");
    by_job[e.outcome.job] = e.outcome;
  }
  CHECK(by_job["p"].status == "cancelled");
  CHECK(by_job["p"].error == r.str({"HGET", "jobq:{q}:job:p", "error"}));
  CHECK(by_job["l"].status == "failed");
  CHECK(by_job["l"].error_kind == "lost");
  CHECK(by_job["l"].error == "its worker died; that was attempt 3 of 3");
  CHECK(by_job["u"].status == "cancelled");
  CHECK(by_job["u"].error == "replaced by job v (unique key, debounce)");
  // The notes went with the ends, but for the job kept dead (l), whose retry tells them again.
  CHECK(r.integer({"HLEN", "jobq:{q}:dependents"}) == 1);
  CHECK(r.str({"HGET", "jobq:{q}:dependents", "l"}) == "q/w");
  for (const auto& e : told) {
    (void)c.run(store::after_resolve(kQ, "q", "w", e.outcome, 60000, 1 << 20));
  }
  CHECK(r.str({"HGET", "jobq:{q}:job:w", "status"}) == "queued");
  const auto doc = nlohmann::json::parse(r.str({"LINDEX", "jobq:{q}:pending", "0"}));
  REQUIRE(doc["dependencies"].size() == 3);
  CHECK(doc["dependencies"][1]["error_kind"] == "lost");
}

TEST_CASE("after: a dependency not seen by the deadline counts as failed; the policy decides",
          "[store][after]") {
  test::RedisServer server;
  auto r = server.client();
  Client c(server);
  const auto past = [](store::Waiting w) {
    w.deadline = 1000;
    return w;
  };
  // f (fail), s (skip) and u (run) wait for x, never seen, and y, told; later waits for x with a
  // deadline not reached; e waits on f.
  REQUIRE(c.run(store::after_wait(kQ, past(waiting("f", {"q/x", "q/y"})))));
  REQUIRE(c.run(
      store::after_wait(kQ, past(waiting("s", {"q/x", "q/y"}, job::DependencyPolicy::skip)))));
  REQUIRE(
      c.run(store::after_wait(kQ, past(waiting("u", {"q/x", "q/y"}, job::DependencyPolicy::run)))));
  REQUIRE(c.run(store::after_wait(kQ, waiting("later", {"q/x"}))));
  REQUIRE(c.run(store::after_wait(kQ, waiting("e", {"q/f"}))));
  CHECK(c.run(store::after_register(kQ, "q", "q/e", {"f"})) == 0);
  for (const char* id : {"f", "s", "u"}) {
    CHECK(c.run(store::after_resolve(kQ, "q", id, outcome("q", "y", "succeeded", "Y"), 60000,
                                     1 << 20)) == store::Resolved::noted);
  }
  // One no longer waiting is only let go of.
  r.cmd({"ZADD", "jobq:{q}:after_until", "500", "gone"});
  const auto now = store::unix_ms();
  const auto overdue = c.run(store::after_overdue(kQ, now, 10));
  CHECK(overdue == std::vector<std::string>{"gone", "f", "s", "u"});
  CHECK(c.run(store::after_overdue(kQ, now, 2)).size() == 2);
  CHECK(c.run(store::after_expire(kQ, "q", "gone", now, "24h", 60000, 1 << 20)) ==
        store::Resolved::none);
  CHECK(r.cmd({"ZSCORE", "jobq:{q}:after_until", "gone"}).is_nil());
  // Not due yet: untouched.
  CHECK(c.run(store::after_expire(kQ, "q", "later", now, "24h", 60000, 1 << 20)) ==
        store::Resolved::none);
  CHECK(r.str({"HGET", "jobq:{q}:job:later", "status"}) == "waiting");
  CHECK(c.run(store::after_expire(kQ, "q", "f", now, "24h", 60000, 1 << 20)) ==
        store::Resolved::ended);
  CHECK(r.str({"HGET", "jobq:{q}:job:f", "status"}) == "failed");
  CHECK(r.str({"HGET", "jobq:{q}:job:f", "error_kind"}) == "dependency");
  CHECK(r.str({"HGET", "jobq:{q}:job:f", "error"}) == "dependency q/x not seen within 24h");
  CHECK(r.integer({"EXISTS", "jobq:{q}:after:f"}) == 0);
  CHECK(r.cmd({"ZSCORE", "jobq:{q}:registering", "f"}).is_nil());
  CHECK(c.run(store::after_expire(kQ, "q", "s", now, "24h", 60000, 1 << 20)) ==
        store::Resolved::ended);
  CHECK(r.str({"HGET", "jobq:{q}:job:s", "status"}) == "cancelled");
  CHECK(r.str({"HGET", "jobq:{q}:job:s", "error"}) == "dependency q/x not seen within 24h");
  CHECK(c.run(store::after_expire(kQ, "q", "u", now, "24h", 60000, 1 << 20)) ==
        store::Resolved::released);
  const auto doc = nlohmann::json::parse(r.str({"LINDEX", "jobq:{q}:pending", "0"}));
  CHECK(doc["id"] == "u");
  REQUIRE(doc["dependencies"].size() == 2);
  CHECK(doc["dependencies"][0] == nlohmann::json{{"job", "x"},
                                                 {"queue", "q"},
                                                 {"status", "failed"},
                                                 {"error", "not seen within 24h"},
                                                 {"error_kind", "dependency"}});
  CHECK(doc["dependencies"][1]["result"] == "Y");
  // Sent again (a daemon that lost the reply): nothing more.
  CHECK(c.run(store::after_expire(kQ, "q", "u", now, "24h", 60000, 1 << 20)) ==
        store::Resolved::none);
  CHECK(r.integer({"LLEN", "jobq:{q}:pending"}) == 1);
  CHECK(c.run(store::after_overdue(kQ, now, 10)).empty());
  // f's end went to e, which waits on it.
  auto told = drained(c, kQ);
  REQUIRE(told.size() == 1);
  CHECK(told[0].to_id == "e");
  CHECK(told[0].outcome.error == "dependency q/x not seen within 24h");
}

TEST_CASE("after: a job left registering is registered again by the sweep, then told of its end",
          "[store][after]") {
  test::RedisServer server;
  auto r = server.client();
  Client c(server);
  // Its caller wrote it waiting and died before telling its dependencies.
  REQUIRE(c.run(store::after_wait(kQ, waiting("s", {"q/a", "images/b"}))));
  const auto now = c.run(store::redis_time());
  // Not old enough yet.
  CHECK(c.run(store::after_registering(kQ, now, 60000, 10)).empty());
  const auto found = c.run(store::after_registering(kQ, now + 60000, 60000, 10));
  REQUIRE(found == std::vector<std::string>{"s"});
  // b was told meanwhile: only a is left to register.
  CHECK(c.run(store::after_resolve(kQ, "q", "s", outcome("images", "b"), 60000, 1 << 20)) ==
        store::Resolved::noted);
  const auto untold = c.run(store::after_left(kQ, "s"));
  REQUIRE(untold);
  CHECK(untold->refs == std::vector<std::string>{"q/a"});
  CHECK(c.run(store::after_register(kQ, "q", "q/s", {"a"})) == 0);
  CHECK(c.run(store::after_registered(kQ, "s")) == 1);
  CHECK(c.run(store::after_registering(kQ, now + 60000, 60000, 10)).empty());
  // a ends (cancelled in pending): s hears of it.
  const std::string a = store::marked_submission(R"({"id":"a","payload":1})", "a", now);
  REQUIRE(c.run(store::submit(kQ, "a", "q", a, now, std::nullopt)));
  CHECK(c.run(store::cancel(kQ, "q", "a", "pending", a, std::chrono::minutes(1), "stop")).what ==
        "cancelled");
  auto told = drained(c, kQ);
  REQUIRE(told.size() == 1);
  CHECK(c.run(store::after_resolve(kQ, "q", "s", told[0].outcome, 60000, 1 << 20)) ==
        store::Resolved::ended);
  CHECK(r.str({"HGET", "jobq:{q}:job:s", "error"}) == "dependency q/a cancelled: stop");
  // Once it waits no more, the sweep finds no after hash: it only lets go of its note.
  r.cmd({"ZADD", "jobq:{q}:registering", "1", "s"});
  CHECK_FALSE(c.run(store::after_left(kQ, "s")));
  CHECK(c.run(store::after_registered(kQ, "s")) == 1);
}

TEST_CASE("after: a job as jobqctl makes it wait; released, its copy is one object, marker last",
          "[store][after]") {
  test::RedisServer server;
  auto r = server.client();
  Client c(server);
  job::Job j;
  j.id = "j";
  j.raw = R"({"id": "j", "payload": {"p": 1}, "after": ["a", "images/b"]} )";
  j.after = {{"", "a"}, {"images", "b"}};
  j.on_dependency_failure = job::DependencyPolicy::run;
  j.priority = job::Priority::low;
  const auto w = store::waiting_of(j, "q", 5000);
  CHECK(w.refs == std::vector<std::string>{"q/a", "images/b"});
  CHECK(w.deadline == 5000 + store::kDefaultAfterTimeout.count());
  CHECK(w.submitted_at == "5000");
  CHECK(w.copy == store::marked_submission(j.raw, "j", 5000));
  CHECK(w.copy.substr(w.cut, 8) == R"(,"_jobq")");
  REQUIRE(c.run(store::after_wait(kQ, w)));
  CHECK(r.str({"HGET", "jobq:{q}:after:j", "#policy"}) == "run");
  CHECK(c.run(store::after_resolve(kQ, "q", "j", outcome("q", "a"), 60000, 1 << 20)) ==
        store::Resolved::noted);
  CHECK(c.run(store::after_resolve(kQ, "q", "j", outcome("images", "b", "failed"), 60000,
                                   1 << 20)) == store::Resolved::released);
  const std::string copy = r.str({"LINDEX", "jobq:{q}:pending:low", "0"});
  const auto doc = nlohmann::json::parse(copy);
  CHECK(doc["payload"]["p"] == 1);
  REQUIRE(doc["dependencies"].size() == 2);
  CHECK(doc["dependencies"][1]["status"] == "failed");
  // The marker is still where the daemon reads it, and says what it said.
  const auto held = store::split(copy);
  REQUIRE(held.marker);
  CHECK(held.marker->id == "j");
  CHECK(held.marker->submitted_at == "5000");
}

TEST_CASE("after: registrations go to each dependency's slot, a call per 1,000 ids of one slot",
          "[store][after]") {
  store::Waiting w;
  w.id = "w";
  w.queue = "q";
  w.refs = {"images/a", "q/b", "images/c"};
  for (int i = 0; i < 1500; ++i) w.refs.push_back("many/m" + std::to_string(i));
  // images over 2 shards; the others one.
  const auto tags = store::shard_tags("images", 2);
  const store::HomeOf home = [&](const std::string& q, const std::string& id) {
    if (q != "images") return store::Keys("jobq", q);
    return store::Keys("jobq", q, tags[store::home_shard(id, 2)]);
  };
  const auto calls = store::after_registers(w, home);
  // Slots in the order first named; ids of one slot together.
  std::vector<std::pair<std::string, std::vector<std::string>>> seen;
  for (const auto& call : calls) {
    REQUIRE(call.req.args.size() >= 3);
    CHECK(call.req.args[0] == "q/w");
    seen.emplace_back(call.req.keys[0],
                      std::vector<std::string>(call.req.args.begin() + 2, call.req.args.end()));
  }
  const bool same_home = store::home_shard("a", 2) == store::home_shard("c", 2);
  REQUIRE(seen.size() == (same_home ? 4u : 5u));
  CHECK(seen[0].first == store::Keys("jobq", "images", tags[store::home_shard("a", 2)]).dependents);
  CHECK(seen[0].second.front() == "a");
  std::size_t many = 0;
  for (const auto& [key, ids] : seen) {
    if (key == "jobq:{many}:dependents") {
      CHECK(ids.size() <= store::kRegisterBatch);
      many += ids.size();
    }
  }
  CHECK(many == 1500);
}

TEST_CASE("after: what a waiting job still waits for, in its order", "[store][after]") {
  test::RedisServer server;
  auto r = server.client();
  Client c(server);
  CHECK_FALSE(c.run(store::after_left(kQ, "none")));
  CHECK(c.run(store::job_status(kQ, "none")).empty());
  CHECK_FALSE(c.run(store::is_waiting(kQ, "w")));
  REQUIRE(c.run(store::after_wait(kQ, waiting("w", {"q/z", "images/b", "q/a"}))));
  CHECK(c.run(store::is_waiting(kQ, "w")));
  CHECK(c.run(store::job_status(kQ, "w")) == "waiting");
  auto left = c.run(store::after_left(kQ, "w"));
  REQUIRE(left);
  CHECK(left->total == 3);
  CHECK(left->refs == std::vector<std::string>{"q/z", "images/b", "q/a"});
  CHECK(c.run(store::after_resolve(kQ, "q", "w", outcome("images", "b"), 60000, 1 << 20)) ==
        store::Resolved::noted);
  left = c.run(store::after_left(kQ, "w"));
  REQUIRE(left);
  CHECK(left->total == 3);
  CHECK(left->refs == std::vector<std::string>{"q/z", "q/a"});
  // Garbage there is said, not read as a job's.
  r.cmd({"SET", "jobq:{q}:after:x", "text"});
  CHECK_FALSE(store::run(c.c, store::after_left(kQ, "x")).ok());
}

TEST_CASE(
    "after: a flow's gate holds its jobs until done; given up, they end cancelled whatever "
    "their policy",
    "[store][after][flow]") {
  test::RedisServer server;
  auto r = server.client();
  Client c(server);
  // Flow F: a (names nothing) and b (after q/a, policy run), each waiting for the gate too.
  REQUIRE(c.run(store::flow_step(kQ, store::FlowStep::begin, "F", "q/a\nq/b\n")) == 1);
  CHECK(c.run(store::flow_step(kQ, store::FlowStep::begin, "F", "q/a\n")) == 0);
  auto a = waiting("a", {});
  a.flow = "F";
  auto b = waiting("b", {"q/a"}, job::DependencyPolicy::run);
  b.flow = "F";
  REQUIRE(c.run(store::after_wait(kQ, a)));
  REQUIRE(c.run(store::after_wait(kQ, b)));
  CHECK(r.str({"HGET", "jobq:{q}:job:a", "waiting_for"}) == "0");
  CHECK(r.str({"HGET", "jobq:{q}:job:a", "flow"}) == "F");
  CHECK(r.str({"HGET", "jobq:{q}:job:b", "waiting_for"}) == "1");
  const auto left = c.run(store::after_left(kQ, "a"));
  REQUIRE(left);
  CHECK(left->total == 0);
  CHECK(left->flow == "F");
  // Nothing is released before the flow is done: a's end would tell b, but a never ran; b told
  // of a by hand stays waiting for the gate.
  CHECK(c.run(store::after_resolve(kQ, "q", "b", outcome("q", "a"), 60000, 1 << 20)) ==
        store::Resolved::noted);
  CHECK(r.str({"HGET", "jobq:{q}:job:b", "waiting_for"}) == "0");
  CHECK(r.integer({"LLEN", "jobq:{q}:pending"}) == 0);
  CHECK(c.run(store::flow_step(kQ, store::FlowStep::touch, "F")) == 1);
  // Done: the gate opens through the outbox; a goes as it was given (no dependencies), b with
  // a's outcome only (the gate is no dependency of it).
  CHECK(c.run(store::flow_step(kQ, store::FlowStep::done, "F")) == 1);
  CHECK(c.run(store::flow_step(kQ, store::FlowStep::done, "F")) == 1);  // said again: the same
  CHECK(r.integer({"ZCARD", "jobq:{q}:flows"}) == 0);
  CHECK(r.str({"HGET", "jobq:{q}:flow:F", "state"}) == "done");
  CHECK(r.integer({"PTTL", "jobq:{q}:flow:F"}) > 0);
  auto told = drained(c, kQ);
  REQUIRE(told.size() == 2);
  for (const auto& e : told) {
    CHECK(e.outcome.ref() == "#flow/F");
    c.run(store::after_resolve(kQ, e.to_queue, e.to_id, e.outcome, 60000, 1 << 20));
  }
  const auto pending = r.cmd({"LRANGE", "jobq:{q}:pending", "0", "-1"});
  REQUIRE(pending.elements.size() == 2);
  CHECK(pending.elements[1].str == a.copy);
  const auto doc = nlohmann::json::parse(pending.elements[0].str);
  REQUIRE(doc["dependencies"].size() == 1);
  CHECK(doc["dependencies"][0]["job"] == "a");
  CHECK(r.str({"HGET", "jobq:{q}:job:b", "status"}) == "queued");
  CHECK(r.integer({"HEXISTS", "jobq:{q}:job:b", "flow"}) == 0);

  // Flow G, given up while c waits (policy run: the gate decides anyway); d written after it
  // was given up hears of it at the writer's late `done`.
  REQUIRE(c.run(store::flow_step(kQ, store::FlowStep::begin, "G", "q/c\nq/d\n",
                                 std::chrono::milliseconds(1))) == 1);
  auto cj = waiting("c", {}, job::DependencyPolicy::run);
  cj.flow = "G";
  REQUIRE(c.run(store::after_wait(kQ, cj)));
  // Its lease ran out: a daemon finds it, and gives it up.
  const auto now = c.run(store::redis_time());
  CHECK(test::eventually(
      [&] {
        return c.run(store::flows_overdue(kQ, c.run(store::redis_time()), 10)) ==
               std::vector<std::string>{"G"};
      },
      std::chrono::seconds(5)));
  CHECK(c.run(store::flows_overdue(kQ, now - 60000, 10)).empty());
  CHECK(c.run(store::flow_step(kQ, store::FlowStep::abort, "G", "not written whole")) == 1);
  CHECK(c.run(store::flow_step(kQ, store::FlowStep::abort, "G", "again")) == 0);
  CHECK(c.run(store::flow_step(kQ, store::FlowStep::touch, "G")) == 0);
  auto dj = waiting("d", {"q/c"});
  dj.flow = "G";
  REQUIRE(c.run(store::after_wait(kQ, dj)));
  CHECK(c.run(store::flow_step(kQ, store::FlowStep::done, "G")) == 0);
  told = drained(c, kQ);
  REQUIRE(told.size() == 4);  // c and d at the abort (d not there yet), then again at `done`
  for (const auto& e : told) {
    CHECK(e.outcome.status == "cancelled");
    c.run(store::after_resolve(kQ, e.to_queue, e.to_id, e.outcome, 60000, 1 << 20));
  }
  for (const std::string id : {"c", "d"}) {
    INFO(id);
    CHECK(r.str({"HGET", "jobq:{q}:job:" + id, "status"}) == "cancelled");
    CHECK(r.str({"HGET", "jobq:{q}:job:" + id, "error"}) == "flow G cancelled: not written whole");
    CHECK(r.integer({"HEXISTS", "jobq:{q}:waiting", id}) == 0);
  }
  CHECK(r.integer({"LLEN", "jobq:{q}:pending"}) == 2);
  CHECK(c.run(store::flow_step(kQ, store::FlowStep::done, "nothing")) == -1);

  // A gate still shut at after_timeout: the job ends cancelled, even with policy run.
  auto e = waiting("e", {}, job::DependencyPolicy::run);
  e.flow = "H";
  e.deadline = 10;
  REQUIRE(c.run(store::after_wait(kQ, e)));
  CHECK(c.run(store::after_expire(kQ, "q", "e", 20, "1s", 60000, 1 << 20)) ==
        store::Resolved::ended);
  CHECK(r.str({"HGET", "jobq:{q}:job:e", "status"}) == "cancelled");
  CHECK(r.str({"HGET", "jobq:{q}:job:e", "error"}) ==
        "flow H cancelled: not written whole within 1s");
}

TEST_CASE("after: a dead job's note of what failed because of it goes with the job, not before",
          "[store][after][dead]") {
  test::RedisServer server;
  auto r = server.client();
  Client c(server);
  // Three failed jobs kept dead, each with a job that waited on it noted.
  for (const std::string id : {"x", "y", "z"}) {
    r.cmd({"ZADD", "jobq:{q}:dead", "1", id});
    r.cmd({"HSET", "jobq:{q}:dead:bodies", id, R"({"payload":1})"});
    r.cmd({"HSET", "jobq:{q}:dependents", id, "q/after-" + id});
  }
  r.cmd({"HSET", "jobq:{q}:job:x", "status", "failed"});
  // y's state expired first (both are kept keep_failed); z's id is a new job's now, claimed.
  r.cmd({"HSET", "jobq:{q}:live", "z", "claim"});
  CHECK(c.run(store::drop_dead(kQ, {"x", "y", "z"})) == 3);
  CHECK(r.integer({"HEXISTS", "jobq:{q}:dependents", "x"}) == 0);
  CHECK(r.integer({"EXISTS", "jobq:{q}:job:x"}) == 0);
  CHECK(r.integer({"HEXISTS", "jobq:{q}:dependents", "y"}) == 0);
  CHECK(r.str({"HGET", "jobq:{q}:dependents", "z"}) == "q/after-z");
}
