// Jobs that wait for other jobs, at the protocol's level (docs/workflows.md): entering waiting,
// dependencies learning of a waiter, outcomes told once, release with the outcomes in order,
// the policies, the bound, a decided job's dependents told in turn, the outbox.
#include <catch2/catch.hpp>

#include "store/after.hpp"
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
  // Told of each in one pipelined write.
  std::vector<store::Call<store::Resolved>> told;
  for (std::size_t i = 0; i < job::kMaxDependencies; ++i) {
    told.push_back(store::after_resolve(kQ, "q", "all", outcome("q", "d" + std::to_string(i)),
                                        60000, 1 << 20));
  }
  REQUIRE(c.c.load(*told.front().req.script));
  auto answers = store::pipelined(c.c, told);
  REQUIRE(answers.back().ok());
  CHECK(*answers.back() == store::Resolved::released);
  const auto doc = nlohmann::json::parse(r.str({"LINDEX", "jobq:{q}:pending", "0"}));
  REQUIRE(doc["dependencies"].size() == job::kMaxDependencies);
  CHECK(doc["dependencies"][9999]["job"] == "d9999");
}
