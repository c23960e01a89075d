// The reliable-fetch protocol against a real Redis: leasing, state writes, recovery, promotion.
#include <catch2/catch.hpp>

#include "store/queue_store.hpp"
#include "tests/support/redis_server.hpp"
#include "tests/support/run.hpp"

using namespace jq;
using namespace std::chrono_literals;
using jq::test::ms_since;
using jq::test::run_test;

namespace {

// A store for queue "q" on `server`, with its own clients, started and connected.
struct Fixture {
  explicit Fixture(const test::RedisServer& server, std::string worker = "w1",
                   store::Settings base = {})
      : main(options(server)), blocking(options(server)) {
    base.queue = "q";
    base.worker = std::move(worker);
    settings = base;
  }
  static redis::Client::Options options(const test::RedisServer& server) {
    redis::Client::Options o;
    o.connect.url = redis::parse_url(server.url());
    o.connect.command_timeout = 5s;
    return o;
  }
  async::Task<void> up() {
    main.start();
    blocking.start();
    co_await main.wait_connected();
    co_await blocking.wait_connected();
    store.emplace(main, blocking, settings);
    writer.emplace(main, store->keys(), store->settings(),
                   [this](const std::string& t) { store->released(t); });
    writer->start();
  }
  /// up(), a lease, and the first `n` pending jobs fetched.
  async::Task<std::vector<store::Leased>> up_and_fetch(std::size_t n) {
    co_await up();
    co_await store->register_lease();
    auto got = co_await store->fetch(n);
    if (!got) throw std::runtime_error("fetch refused right after taking a lease");
    co_return std::move(*got);
  }
  async::Task<void> down() {
    co_await writer->stop();
    co_await main.stop();
    co_await blocking.stop();
  }
  redis::Client main;
  redis::Client blocking;
  store::Settings settings;
  std::optional<store::QueueStore> store;
  std::optional<store::Writer> writer;
};

std::string job(const std::string& id) {
  return R"({"id":")" + id + R"(","payload":{"n":1}})";
}

}  // namespace

TEST_CASE("fetch leases the oldest jobs first and records them as held", "[store]") {
  test::RedisServer server;
  auto r = server.client();
  for (int i = 1; i <= 5; ++i) r.cmd({"LPUSH", "jobq:{q}:pending", job("j" + std::to_string(i))});
  auto body = [&]() -> async::Task<void> {
    Fixture f(server);
    co_await f.up();
    auto none = co_await f.store->fetch(3);
    CHECK_FALSE(none.has_value());  // no lease yet: refuses to take jobs
    co_await f.store->register_lease();
    auto got = co_await f.store->fetch(3);
    REQUIRE(got.has_value());
    REQUIRE(got->size() == 3);
    CHECK((*got)[0].raw == job("j1"));
    CHECK((*got)[2].raw == job("j3"));
    CHECK((*got)[0].token == "4");  // the refused fetch used up 1-3: tokens are never reused
    auto more = co_await f.store->fetch(10);
    REQUIRE(more->size() == 2);
    CHECK((*more)[0].token == "7");
    auto empty = co_await f.store->fetch(10);
    CHECK(empty->empty());
    co_await f.down();
  };
  run_test(body());
  CHECK(r.integer({"LLEN", "jobq:{q}:pending"}) == 0);
  CHECK(r.integer({"HLEN", "jobq:{q}:inflight:w1"}) == 5);
  CHECK(r.str({"HGET", "jobq:{q}:inflight:w1", "5"}) == job("j2"));
}

TEST_CASE(
    "an oversized job is not transferred: only its size comes back, and its id when that "
    "is its first key",
    "[store]") {
  test::RedisServer server;
  auto r = server.client();
  const std::string pad(5000, 'x');
  const std::string big = R"({"payload":")" + pad + R"("})";
  const std::string first_key = R"( { "id" : "mine", "payload":")" + pad + R"("})";
  const std::string nested = R"({"payload":{"user":{"id":"victim"},"p":")" + pad + R"("}})";
  const std::string marker_like = std::string("\0big:x", 6);  // what a marker once looked like
  for (const auto& j : {big, first_key, nested, marker_like}) {
    r.cmd({"LPUSH", "jobq:{q}:pending", j});
  }
  store::Settings s;
  s.max_job_bytes = 1000;
  auto body = [&]() -> async::Task<void> {
    Fixture f(server, "w1", s);
    auto got = co_await f.up_and_fetch(10);
    REQUIRE(got.size() == 4);
    CHECK(got[0].raw.empty());
    CHECK(got[0].oversized == big.size());
    CHECK(got[1].oversized == first_key.size());
    CHECK(got[1].oversized_id == "mine");
    CHECK(got[2].oversized == nested.size());
    CHECK(got[2].oversized_id.empty());  // "victim" is the payload's, not the job's
    CHECK(got[3].oversized == 0);
    CHECK(got[3].raw == marker_like);  // an ordinary (invalid) job, not a marker
    // Dead from the held copy in Redis: the body is kept in full.
    f.writer->dead(got[0].token, "big1", "too big", "invalid_job", "h");
    bool ok1 = co_await f.writer->flush(5s);
    CHECK(ok1);
    co_await f.down();
  };
  run_test(body());
  CHECK(r.str({"HGET", "jobq:{q}:job:big1", "body"}) == big);
  CHECK(r.str({"HGET", "jobq:{q}:job:big1", "status"}) == "failed");
}

TEST_CASE("start counts attempts once even when a batch is replayed; ok writes the result",
          "[store]") {
  test::RedisServer server;
  auto r = server.client();
  r.cmd({"LPUSH", "jobq:{q}:pending", job("a")});
  auto body = [&]() -> async::Task<void> {
    Fixture f(server);
    auto got = co_await f.up_and_fetch(1);
    const auto& l = got[0];
    long long first = co_await f.writer->start_job(l.token, "a", "h", "", l.fetched_at);
    CHECK(first == 1);
    // The same start again (a batch resent after a lost reply) does not count twice.
    long long again = co_await f.writer->start_job(l.token, "a", "h", "", l.fetched_at);
    CHECK(again == 1);
    f.writer->succeeded(l.token, "a", "the result");
    f.writer->succeeded(l.token, "a", "ignored: no longer held");
    bool ok2 = co_await f.writer->flush(5s);
    CHECK(ok2);
    long long gone = co_await f.writer->start_job(l.token, "a", "h", "", l.fetched_at);
    CHECK(gone == -1);  // not held any more: must not run
    co_await f.down();
  };
  run_test(body());
  CHECK(r.str({"HGET", "jobq:{q}:job:a", "status"}) == "succeeded");
  CHECK(r.str({"HGET", "jobq:{q}:job:a", "result"}) == "the result");
  CHECK(r.str({"HGET", "jobq:{q}:job:a", "attempts"}) == "1");
  CHECK(r.str({"HGET", "jobq:{q}:job:a", "worker"}) == "w1");
  CHECK(r.integer({"TTL", "jobq:{q}:job:a"}) > 80000);  // result_ttl 24h
  CHECK(r.integer({"HLEN", "jobq:{q}:inflight:w1"}) == 0);
}

TEST_CASE("an assigned id is written into the held copy so later copies carry it", "[store]") {
  test::RedisServer server;
  auto r = server.client();
  r.cmd({"LPUSH", "jobq:{q}:pending", R"({"payload":1})"});
  auto body = [&]() -> async::Task<void> {
    Fixture f(server);
    auto got = co_await f.up_and_fetch(1);
    const auto& l = got[0];
    co_await f.writer->start_job(l.token, "X1", "h", R"({"id":"X1","payload":1})", l.fetched_at);
    f.writer->retry(l.token, "X1", 60000ms, "boom", "exception");
    bool ok3 = co_await f.writer->flush(5s);
    CHECK(ok3);
    co_await f.down();
  };
  run_test(body());
  auto delayed = r.cmd({"ZRANGE", "jobq:{q}:delayed", "0", "-1"});
  REQUIRE(delayed.elements.size() == 1);
  CHECK(delayed.elements[0].str == R"({"id":"X1","payload":1})");
  CHECK(r.str({"HGET", "jobq:{q}:job:X1", "status"}) == "retrying");
  CHECK(r.str({"HGET", "jobq:{q}:job:X1", "error"}) == "boom");
  CHECK(r.str({"HGET", "jobq:{q}:job:X1", "error_kind"}) == "exception");
}

TEST_CASE("promote moves due jobs to the back of pending and marks retries queued", "[store]") {
  test::RedisServer server;
  auto r = server.client();
  auto now = store::unix_ms();
  r.cmd({"LPUSH", "jobq:{q}:pending", job("older")});
  r.cmd({"ZADD", "jobq:{q}:delayed", std::to_string(now - 10), job("due")});
  r.cmd({"ZADD", "jobq:{q}:delayed", std::to_string(now + 60000), job("later")});
  r.cmd({"HSET", "jobq:{q}:job:due", "status", "retrying"});
  auto body = [&]() -> async::Task<void> {
    Fixture f(server);
    co_await f.up();
    auto p = co_await f.store->promote();
    CHECK(p.moved == 1);
    REQUIRE(p.next_in.has_value());
    CHECK(*p.next_in > 59000ms);  // due in a minute, by Redis' clock
    CHECK(*p.next_in <= 60000ms);
    co_await f.down();
  };
  run_test(body());
  CHECK(r.integer({"LLEN", "jobq:{q}:pending"}) == 2);
  CHECK(r.str({"LINDEX", "jobq:{q}:pending", "0"}) == job("due"));  // joined the back (left)
  CHECK(r.str({"HGET", "jobq:{q}:job:due", "status"}) == "queued");
  CHECK(r.integer({"ZCARD", "jobq:{q}:delayed"}) == 1);
}

TEST_CASE("dead jobs keep their body, publish, and are trimmed to dead_max", "[store]") {
  test::RedisServer server;
  auto r = server.client();
  for (int i = 0; i < 5; ++i) r.cmd({"LPUSH", "jobq:{q}:pending", job("d" + std::to_string(i))});
  store::Settings s;
  s.dead_max = 3;
  auto body = [&]() -> async::Task<void> {
    Fixture f(server, "w1", s);
    auto got = co_await f.up_and_fetch(5);
    for (std::size_t i = 0; i < got.size(); ++i) {
      f.writer->dead(got[i].token, "d" + std::to_string(i), "bad", "exception", "h");
      bool ok4 = co_await f.writer->flush(5s);
      CHECK(ok4);  // one by one: distinct death times
      co_await async::sleep(2ms);
    }
    co_await f.down();
  };
  run_test(body());
  CHECK(r.integer({"ZCARD", "jobq:{q}:dead"}) == 3);
  CHECK(r.integer({"EXISTS", "jobq:{q}:job:d0"}) == 0);  // the oldest went, with its state
  CHECK(r.str({"HGET", "jobq:{q}:job:d4", "body"}) == job("d4"));
  CHECK(r.str({"HGET", "jobq:{q}:job:d4", "attempts"}) == "0");
}

TEST_CASE("put_back returns held jobs to the consuming end, in their order, untouched", "[store]") {
  test::RedisServer server;
  auto r = server.client();
  for (int i = 1; i <= 3; ++i) r.cmd({"LPUSH", "jobq:{q}:pending", job("p" + std::to_string(i))});
  auto body = [&]() -> async::Task<void> {
    Fixture f(server);
    auto got = co_await f.up_and_fetch(2);  // p1, p2
    const auto& a = got[0];
    co_await f.writer->start_job(a.token, "p1", "h", "", a.fetched_at);
    // Returned newest first, so that p1 is again the next to be consumed.
    f.writer->put_back(got[1].token, "p2", false);
    f.writer->put_back(a.token, "p1", true);
    bool ok5 = co_await f.writer->flush(5s);
    CHECK(ok5);
    bool ok6 = co_await f.store->release_lease();
    CHECK(ok6);
    co_await f.down();
  };
  run_test(body());
  auto list = r.cmd({"LRANGE", "jobq:{q}:pending", "0", "-1"});
  REQUIRE(list.elements.size() == 3);
  CHECK(list.elements[2].str == job("p1"));  // rightmost: consumed first
  CHECK(list.elements[1].str == job("p2"));
  CHECK(r.str({"HGET", "jobq:{q}:job:p1", "status"}) == "queued");
  CHECK(r.str({"HGET", "jobq:{q}:job:p1", "attempts"}) == "0");
  CHECK(r.integer({"ZCARD", "jobq:{q}:leases"}) == 0);  // released: nothing held
}

TEST_CASE("a dead worker's jobs are recovered in order; running ones marked lost", "[store]") {
  test::RedisServer server;
  auto r = server.client();
  for (int i = 1; i <= 4; ++i) r.cmd({"LPUSH", "jobq:{q}:pending", job("r" + std::to_string(i))});
  r.cmd({"HSET", "jobq:{q}:job:r2", "attempts", "4"});  // r2 will run its 5th, last attempt
  store::Settings s;
  s.lease = 1000ms;
  auto body = [&]() -> async::Task<void> {
    Fixture dying(server, "dying", s);
    auto got = co_await dying.up_and_fetch(3);  // r1, r2, r3
    const auto& l1 = got[0];
    const auto& l2 = got[1];
    co_await dying.writer->start_job(l1.token, "r1", "h", "", l1.fetched_at);
    co_await dying.writer->start_job(l2.token, "r2", "h", "", l2.fetched_at);
    co_await dying.down();  // it "dies": stops renewing
    // Someone wrote over r3's state key: recovery still returns r3, once.
    server.client().cmd({"SET", "jobq:{q}:job:r3", "not a hash"});

    Fixture alive(server, "alive", s);
    co_await alive.up();
    auto early = co_await alive.store->recover();
    CHECK(early.returned == 0);                 // the lease has not expired yet
    REQUIRE(early.next_expiry_in.has_value());  // when to look again
    CHECK(early.next_expiry_in->count() <= 1001);
    co_await async::sleep(1100ms);
    auto rec = co_await alive.store->recover();
    CHECK(rec.returned == 2);  // r1 and r3; r2 was on its last attempt
    CHECK(rec.dead == 1);
    REQUIRE(rec.workers.size() == 1);
    CHECK(rec.workers[0] == "dying");
    CHECK_FALSE(rec.next_expiry_in.has_value());
    auto again = co_await alive.store->recover();
    CHECK(again.returned + again.dead == 0);
    co_await alive.down();
  };
  run_test(body());
  auto list = r.cmd({"LRANGE", "jobq:{q}:pending", "0", "-1"});
  REQUIRE(list.elements.size() == 3);
  CHECK(list.elements[2].str == job("r1"));  // consumed next, as before the crash
  CHECK(list.elements[1].str == job("r3"));
  CHECK(list.elements[0].str == job("r4"));
  CHECK(r.str({"HGET", "jobq:{q}:job:r1", "status"}) == "queued");  // back in pending
  CHECK(r.str({"HGET", "jobq:{q}:job:r1", "error_kind"}) == "lost");
  CHECK(r.str({"HGET", "jobq:{q}:job:r2", "status"}) == "failed");
  CHECK(r.str({"HGET", "jobq:{q}:job:r2", "error_kind"}) == "lost");
  CHECK(r.integer({"ZSCORE", "jobq:{q}:dead", "r2"}) > 0);
  CHECK(r.integer({"EXISTS", "jobq:{q}:inflight:dying"}) == 0);
  CHECK(r.integer({"ZCARD", "jobq:{q}:leases"}) == 0);
}

TEST_CASE("renew fails once the lease was recovered; fetch refuses until re-registered",
          "[store]") {
  test::RedisServer server;
  store::Settings s;
  s.lease = 1000ms;
  auto body = [&]() -> async::Task<void> {
    Fixture f(server, "w1", s);
    co_await f.up();
    co_await f.store->register_lease();
    bool ok7 = co_await f.store->renew_lease();
    CHECK(ok7);
    server.client().cmd({"ZADD", "jobq:{q}:leases", "1", "w1"});  // make it expired
    Fixture other(server, "w2", s);
    co_await other.up();
    auto rec = co_await other.store->recover();
    CHECK(rec.workers.size() == 1);
    bool ok8 = co_await f.store->renew_lease();
    CHECK_FALSE(ok8);
    auto refused = co_await f.store->fetch(1);
    CHECK_FALSE(refused.has_value());
    co_await f.store->register_lease();
    bool ok9 = co_await f.store->renew_lease();
    CHECK(ok9);
    co_await other.down();
    co_await f.down();
  };
  run_test(body());
}

TEST_CASE("the blocking wait returns at once when a job is pushed, and moves nothing", "[store]") {
  test::RedisServer server;
  auto body = [&]() -> async::Task<void> {
    Fixture f(server);
    co_await f.up();
    auto t0 = async::Clock::now();
    bool any = co_await f.store->wait_for_pending(200ms);
    CHECK_FALSE(any);
    CHECK(ms_since(t0) >= 190);
    auto pusher = [&]() -> async::Task<void> {
      co_await async::sleep(50ms);
      auto r = server.client();
      r.cmd({"LPUSH", "jobq:{q}:pending", job("first")});
      r.cmd({"LPUSH", "jobq:{q}:pending", job("second")});
    };
    auto h = async::spawn(pusher());
    t0 = async::Clock::now();
    bool woke = co_await f.store->wait_for_pending(5s);
    CHECK(woke);
    CHECK(ms_since(t0) < 1000);
    co_await h;
    co_await f.down();
  };
  run_test(body());
  auto r = server.client();
  auto list = r.cmd({"LRANGE", "jobq:{q}:pending", "0", "-1"});
  REQUIRE(list.elements.size() == 2);
  CHECK(list.elements.back().str == job("first"));  // still the next to be consumed
}

TEST_CASE("reconcile returns jobs held in Redis that the worker does not know of", "[store]") {
  test::RedisServer server;
  auto r = server.client();
  for (int i = 1; i <= 4; ++i) r.cmd({"LPUSH", "jobq:{q}:pending", job("k" + std::to_string(i))});
  auto body = [&]() -> async::Task<void> {
    Fixture f(server);
    co_await f.up();
    co_await f.store->register_lease();
    auto mine = co_await f.store->fetch(1);  // k1: known
    REQUIRE(mine->size() == 1);
    // A fetch whose reply was lost with the connection: it ran in Redis (k2, k3 now held under
    // tokens this process never saw), but nobody here knows.
    auto lost = server.client();
    lost.cmd({"EVAL",
              "local a = redis.call('RPOP', KEYS[1], 2) "
              "redis.call('HSET', KEYS[2], '100', a[1], '101', a[2]) return 1",
              "2", "jobq:{q}:pending", "jobq:{q}:inflight:w1"});
    auto rec = co_await f.store->reconcile();
    CHECK(rec.returned == 2);
    auto again = co_await f.store->reconcile();
    CHECK(again.returned == 0);  // nothing unknown any more; k1 stays held
    co_await f.down();
  };
  run_test(body());
  auto list = r.cmd({"LRANGE", "jobq:{q}:pending", "0", "-1"});
  REQUIRE(list.elements.size() == 3);
  CHECK(list.elements[2].str == job("k2"));  // the oldest is the next one taken, as before
  CHECK(list.elements[1].str == job("k3"));
  CHECK(r.integer({"HLEN", "jobq:{q}:inflight:w1"}) == 1);
}

TEST_CASE("an op Redis refuses does not block the others and loses nothing", "[store]") {
  test::RedisServer server;
  auto r = server.client();
  r.cmd({"SET", "jobq:{q}:delayed", "a string, not a sorted set"});  // retries cannot be written
  r.cmd({"LPUSH", "jobq:{q}:pending", job("stuck")});
  r.cmd({"LPUSH", "jobq:{q}:pending", job("fine")});
  std::string stuck_token;
  auto body = [&]() -> async::Task<void> {
    Fixture f(server);
    auto got = co_await f.up_and_fetch(2);
    const auto& a = got[0];
    const auto& b = got[1];
    stuck_token = a.token;
    auto fa = f.writer->start_job(a.token, "stuck", "h", "", a.fetched_at);
    auto fb = f.writer->start_job(b.token, "fine", "h", "", b.fetched_at);
    long long na = co_await fa;
    long long nb = co_await fb;
    CHECK(na == 1);
    CHECK(nb == 1);
    f.writer->retry(a.token, "stuck", 10ms, "boom", "exception");  // refused: WRONGTYPE
    f.writer->succeeded(b.token, "fine", "ok");
    bool flushed = co_await f.writer->flush(5s);
    CHECK(flushed);
    co_await f.down();
  };
  run_test(body());
  CHECK(r.str({"HGET", "jobq:{q}:job:fine", "status"}) == "succeeded");
  // The refused op left its job held (not lost): it goes back to pending by reconcile/recovery.
  CHECK(r.integer({"HEXISTS", "jobq:{q}:inflight:w1", stuck_token}) == 1);
}

TEST_CASE("a foreign value at a job's state key is replaced, not left to fail every write",
          "[store]") {
  test::RedisServer server;
  auto r = server.client();
  r.cmd({"SET", "jobq:{q}:job:clash", "a string, not a hash"});
  r.cmd({"LPUSH", "jobq:{q}:pending", job("clash")});
  auto body = [&]() -> async::Task<void> {
    Fixture f(server);
    auto got = co_await f.up_and_fetch(1);
    const auto& a = got[0];
    long long n = co_await f.writer->start_job(a.token, "clash", "h", "", a.fetched_at);
    CHECK(n == 1);
    f.writer->succeeded(a.token, "clash", "ok");
    bool flushed = co_await f.writer->flush(5s);
    CHECK(flushed);
    co_await f.down();
  };
  run_test(body());
  CHECK(r.str({"HGET", "jobq:{q}:job:clash", "status"}) == "succeeded");
}

TEST_CASE("an expired lease refuses to start jobs, by Redis' clock; they go back untouched",
          "[store]") {
  test::RedisServer server;
  auto r = server.client();
  r.cmd({"LPUSH", "jobq:{q}:pending", job("late")});
  r.cmd({"LPUSH", "jobq:{q}:pending", job("late2")});
  auto body = [&]() -> async::Task<void> {
    Fixture f(server);
    auto got = co_await f.up_and_fetch(2);
    const auto& l = got[0];
    const auto& l2 = got[1];
    server.client().cmd({"ZADD", "jobq:{q}:leases", "1", "w1"});  // expired long ago
    long long n = co_await f.writer->start_job(l.token, "late", "h", "", l.fetched_at);
    CHECK(n == -1);
    long long n2 = co_await f.writer->start_job(l2.token, "late2", "h", "", l2.fetched_at);
    CHECK(n2 == -1);
    bool renewed = co_await f.store->renew_lease();
    CHECK_FALSE(renewed);
    // The engine forgets a job whose start was refused; once it holds a lease again, reconcile
    // returns it. A stop returns it directly, as "started" (the attempt count is not touched).
    f.store->released(l.token);
    co_await f.store->register_lease();
    auto rec = co_await f.store->reconcile();
    CHECK(rec.returned == 1);
    f.writer->put_back(l2.token, "late2", /*started=*/true);
    bool flushed = co_await f.writer->flush(5s);
    CHECK(flushed);
    co_await f.down();
  };
  run_test(body());
  CHECK(r.integer({"EXISTS", "jobq:{q}:job:late"}) == 0);
  CHECK(r.integer({"EXISTS", "jobq:{q}:job:late2"}) == 0);  // no attempts -1, no status
  CHECK(r.integer({"LLEN", "jobq:{q}:pending"}) == 2);
  CHECK(r.integer({"HLEN", "jobq:{q}:inflight:w1"}) == 0);
}
