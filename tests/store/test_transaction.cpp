// store::Transaction against a real Redis: the calls run together in order, none when a watched
// key changed, none when Redis refuses one as it is queued; a failure as one runs is its own.
#include <catch2/catch.hpp>

#include "store/after.hpp"
#include "store/calls.hpp"
#include "store/transaction.hpp"
#include "tests/support/redis_server.hpp"

using namespace jq;

namespace {

store::Call<long long> incr(const std::string& key) {
  return store::Call<long long>{store::Request{nullptr, {}, {"INCR", key}},
                                [](redis::Reply r) -> store::OpResult<long long> {
                                  if (r.type != redis::Reply::Type::integer)
                                    return redis::shape_error("INCR", r);
                                  return r.integer;
                                }};
}

}  // namespace

TEST_CASE("Transaction: calls (scripts too) run in one MULTI/EXEC, their replies read in order",
          "[store][transaction]") {
  test::RedisServer server;
  auto r = server.client();
  auto c = redis::SyncClient::connect(redis::parse_url(server.url())).value();
  const store::Keys k("jobq", "q");
  // A script not in Redis' cache yet: exec() loads it first.
  r.cmd({"SCRIPT", "FLUSH"});
  store::Transaction t;
  const auto first = incr("n");
  store::Waiting w;
  w.id = "w";
  w.queue = "q";
  w.copy = R"({"id":"w","payload":1})";
  w.cut = w.copy.size() - 1;
  w.submitted_at = "1";
  w.deadline = 2;
  w.refs = {"q/a"};
  const auto wait = store::after_wait(k, w);
  const auto second = incr("n");
  const std::size_t at_first = t.add(first), at_wait = t.add(wait), at_second = t.add(second);
  r.cmd({"CONFIG", "RESETSTAT"});
  const auto ran = store::exec(c, t).value();
  REQUIRE_FALSE(ran.aborted);
  CHECK(ran.get(at_first, first).value() == 1);
  CHECK(ran.get(at_wait, wait).value());
  CHECK(ran.get(at_second, second).value() == 2);
  CHECK(r.str({"HGET", "jobq:{q}:job:w", "status"}) == "waiting");
  CHECK(r.str({"INFO", "commandstats"}).find("cmdstat_exec:calls=1,") != std::string::npos);

  // A key watched and changed by another client before the EXEC: nothing runs.
  REQUIRE(store::watch(c, {"n", "other"}).ok());
  r.cmd({"SET", "other", "x"});
  store::Transaction t2;
  const auto third = incr("n");
  t2.add(third);
  const auto aborted = store::exec(c, t2).value();
  CHECK(aborted.aborted);
  CHECK(r.str({"GET", "n"}) == "2");
  // Watched, unchanged, unwatched: it runs.
  REQUIRE(store::watch(c, {"n"}).ok());
  REQUIRE(store::unwatch(c).ok());
  CHECK_FALSE(store::exec(c, t2).value().aborted);
  CHECK(r.str({"GET", "n"}) == "3");

  // A call Redis refuses as it is queued (a wrong arity): none runs, and the error says why.
  store::Transaction t3;
  const auto fourth = incr("n");
  t3.add(fourth);
  const store::Call<long long> broken{store::Request{nullptr, {}, {"INCR"}}, nullptr};
  t3.add(broken);
  const auto refused = store::exec(c, t3);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.error().message.find("wrong number of arguments") != std::string::npos);
  CHECK(r.str({"GET", "n"}) == "3");
  // The connection is in step after it.
  CHECK(store::run(c, incr("n")).value() == 4);

  // A call that fails as it runs (not rolled back): its own error, the others done.
  r.cmd({"SET", "text", "abc"});
  store::Transaction t4;
  const auto bad = incr("text");
  const auto good = incr("n");
  const std::size_t at_bad = t4.add(bad), at_good = t4.add(good);
  const auto mixed = store::exec(c, t4).value();
  CHECK_FALSE(mixed.get(at_bad, bad).ok());
  CHECK(mixed.get(at_good, good).value() == 5);
}
