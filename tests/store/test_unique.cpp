// Unique keys (docs/unique.md) against a real Redis: jobqctl's and the API's submission (lock,
// throttle, debounce, `while: [running]`, garbage at a lock), the daemon's claim of LPUSHed jobs
// (duplicates named, the lock taken and let go of with the job's end), recovery, and cancel.
#include <catch2/catch.hpp>

#include <optional>
#include <set>
#include <string>
#include <vector>

#include "store/admin.hpp"
#include "store/held.hpp"
#include "store/queue_store.hpp"
#include "store/settler.hpp"
#include "tests/support/redis_server.hpp"
#include "tests/support/run.hpp"
#include "tests/support/store_fixture.hpp"

using namespace jq;
using namespace std::chrono_literals;
using jq::test::run_test;

namespace {

const std::set<std::string> kHandlers{"h"};
const char* kLock = "jobq:{q}:unique:k";

job::Rules rules_of(std::vector<std::string> from = {}) {
  job::Rules r;
  r.default_handler = "h";
  r.handlers = &kHandlers;
  r.unique_from = std::move(from);
  return r;
}

// A job as jobqctl reads it: parsed, its key derived.
job::Job parsed(const std::string& text, std::vector<std::string> from = {}) {
  auto v = job::parse(text, rules_of(std::move(from)));
  if (auto* bad = std::get_if<job::Invalid>(&v)) throw std::runtime_error(bad->error);
  return std::get<job::Job>(std::move(v));
}

std::string keyed(const std::string& id, const std::string& key = "k") {
  return R"({"id":")" + id + R"(","payload":1,"unique_key":")" + key + R"("})";
}

// An Admin on `server` whose queue q locks by `rule`, with what it warned of.
struct Front {
  explicit Front(const test::RedisServer& server, store::UniqueRule rule = {})
      : c(redis::SyncClient::connect(redis::parse_url(server.url())).value()) {
    store::Layout l;
    l.config_shards = [](const std::string&) { return std::size_t{0}; };
    l.keep_failed_ms = [](const std::string&) { return std::int64_t{60000}; };
    l.unique_rule = [rule](const std::string&) { return rule; };
    l.warn = [this](const std::string& why) { warned.push_back(why); };
    admin.emplace(c, std::move(l));
  }
  store::SubmitResult submit(const std::string& text, std::optional<std::int64_t> run_at = {}) {
    return admin->submit("q", parsed(text), store::unix_ms(), run_at);
  }
  redis::SyncClient c;
  std::optional<store::Admin> admin;
  std::vector<std::string> warned;
};

store::UniqueRule rule(store::UniqueRule::Mode mode, bool queued = true, bool running = true) {
  store::UniqueRule r;
  r.mode = mode;
  r.hold = 60s;
  r.queued = queued;
  r.running = running;
  return r;
}

// A daemon's store for queue q whose unique keys lock by `unique`, registered as it comes up.
struct Daemon : test::Fixture {
  explicit Daemon(const test::RedisServer& server, std::string worker = "w1",
                  store::UniqueRule unique = {})
      : Fixture(server, std::move(worker), with_rule(unique)) {}
  static store::Settings with_rule(store::UniqueRule unique) {
    store::Settings s;
    s.unique = unique;
    return s;
  }
  async::Task<void> up() {
    co_await Fixture::up();
    co_await lease();
  }
  async::Task<void> write(std::vector<store::Settlement> ops) {
    for (auto& s : ops) settler->push(std::move(s));
    const bool flushed = co_await settler->flush(5s);
    if (!flushed) throw std::runtime_error("settlements not written");
  }
};

}  // namespace

TEST_CASE("submit with a unique key: the first is queued, the next answered with its id",
          "[store][unique]") {
  test::RedisServer server;
  auto r = server.client();
  Front f(server, rule(store::UniqueRule::Mode::lock));
  auto first = f.submit(keyed("a"));
  CHECK(first.what == "queued");
  CHECK(first.id == "a");
  CHECK(first.unique_key == "k");
  CHECK(r.str({"GET", kLock}) == "a");
  const long long ttl = r.integer({"PTTL", kLock});
  CHECK(ttl > 50000);
  CHECK(ttl <= 60000);
  CHECK(r.str({"HGET", "jobq:{q}:job:a", "unique_key"}) == "k");
  CHECK(r.str({"HGET", "jobq:{q}:job:a", "status"}) == "queued");
  auto second = f.submit(keyed("b"));
  CHECK(second.what == "duplicate");
  CHECK(second.id == "a");
  // Not enqueued, nothing written for it.
  CHECK(r.integer({"LLEN", "jobq:{q}:pending"}) == 1);
  CHECK(r.integer({"EXISTS", "jobq:{q}:job:b"}) == 0);
  // Another key is another lock; a job without one costs the same as ever.
  CHECK(f.submit(keyed("c", "other")).what == "queued");
  CHECK(f.submit(R"({"id":"d","payload":1})").what == "queued");
  CHECK(r.integer({"LLEN", "jobq:{q}:pending"}) == 3);
  CHECK(r.str({"HGET", "jobq:{q}:job:d", "unique_key"}).empty());
  // A key from the payload, as the queue's unique.key derives it.
  auto from =
      f.admin->submit("q", parsed(R"({"id":"e","payload":{"user":"k"}})", {"payload", "user"}),
                      store::unix_ms(), std::nullopt);
  CHECK(from.what == "duplicate");
  CHECK(from.id == "a");
}

TEST_CASE("a lock written without an expiry is given one when found: every lock ends",
          "[store][unique]") {
  test::RedisServer server;
  auto r = server.client();
  r.cmd({"SET", kLock, "by-hand"});
  Front f(server, rule(store::UniqueRule::Mode::lock));
  auto a = f.submit(keyed("a"));
  CHECK(a.what == "duplicate");
  CHECK(a.id == "by-hand");
  const long long ttl = r.integer({"PTTL", kLock});
  CHECK(ttl > 50000);
  CHECK(ttl <= 60000);
  // As a daemon finds it when it takes an LPUSHed job.
  r.cmd({"PERSIST", kLock});
  r.cmd({"LPUSH", "jobq:{q}:pending", keyed("b")});
  auto body = [&]() -> async::Task<void> {
    Daemon d(server, "w1", rule(store::UniqueRule::Mode::lock));
    co_await d.up();
    auto got = co_await d.fetch(1);
    REQUIRE(got.duplicates.size() == 1);
    CHECK(got.duplicates[0].second == "by-hand");
    co_await d.down();
  };
  run_test(body());
  CHECK(r.integer({"PTTL", kLock}) > 50000);
}

TEST_CASE("submit: a lock held only while running is not taken at submission, but refuses",
          "[store][unique]") {
  test::RedisServer server;
  auto r = server.client();
  Front f(server, rule(store::UniqueRule::Mode::lock, false, true));
  CHECK(f.submit(keyed("a")).what == "queued");
  CHECK(r.integer({"EXISTS", kLock}) == 0);
  CHECK(f.submit(keyed("b")).what == "queued");
  // Taken by a daemon (its claim): now a submission is refused.
  r.cmd({"SET", kLock, "a\nw1:1", "PX", "60000"});
  auto third = f.submit(keyed("c"));
  CHECK(third.what == "duplicate");
  CHECK(third.id == "a");
}

TEST_CASE("submit, throttle: one per window, whatever became of the first", "[store][unique]") {
  test::RedisServer server;
  auto r = server.client();
  auto t = rule(store::UniqueRule::Mode::throttle);
  t.hold = 300ms;
  Front f(server, t);
  CHECK(f.submit(keyed("a")).what == "queued");
  // Its job over (as a daemon leaves it: the lock stays for the window).
  r.cmd({"HSET", "jobq:{q}:job:a", "status", "succeeded"});
  auto second = f.submit(keyed("b"));
  CHECK(second.what == "duplicate");
  CHECK(second.id == "a");
  // The window ends with the lock's expiry.
  REQUIRE(test::eventually([&] { return r.integer({"EXISTS", kLock}) == 0; }, 5s));
  CHECK(f.submit(keyed("c")).what == "queued");
  CHECK(r.str({"GET", kLock}) == "c");
}

TEST_CASE("submit, debounce: the newest replaces the one still waiting, not one a daemon took",
          "[store][unique]") {
  test::RedisServer server;
  auto r = server.client();
  auto c = server.client();
  c.cmd({"SUBSCRIBE", "jobq:{q}:events"});
  Front f(server, rule(store::UniqueRule::Mode::debounce));
  CHECK(f.submit(keyed("a")).what == "queued");
  auto b = f.submit(keyed("b"));
  CHECK(b.what == "queued");
  CHECK(b.id == "b");
  CHECK(b.replaced == "a");
  // a is gone from pending, ended cancelled saying why; b waits, and holds the lock.
  auto pending = r.cmd({"LRANGE", "jobq:{q}:pending", "0", "-1"});
  REQUIRE(pending.elements.size() == 1);
  CHECK(pending.elements[0].str.find(R"("id":"b")") != std::string::npos);
  CHECK(r.str({"HGET", "jobq:{q}:job:a", "status"}) == "cancelled");
  CHECK(r.str({"HGET", "jobq:{q}:job:a", "error_kind"}) == "cancelled");
  CHECK(r.str({"HGET", "jobq:{q}:job:a", "error"}) == "replaced by job b (unique key, debounce)");
  CHECK(r.integer({"TTL", "jobq:{q}:job:a"}) > 0);
  CHECK(c.next_reply().elements.at(2).str == R"({"id":"a","queue":"q","status":"cancelled"})");
  CHECK(r.str({"GET", kLock}).rfind("b\n\np\n", 0) == 0);
  // From delayed too.
  const std::int64_t later = store::unix_ms() + 60000;
  auto d = f.submit(keyed("d"), later);
  CHECK(d.replaced == "b");
  auto e = f.submit(keyed("e"), later);
  CHECK(e.replaced == "d");
  CHECK(r.integer({"LLEN", "jobq:{q}:pending"}) == 0);
  CHECK(r.integer({"ZCARD", "jobq:{q}:delayed"}) == 1);
  CHECK(r.str({"HGET", "jobq:{q}:job:d", "status"}) == "cancelled");
  // Taken by a daemon (its claim is in the lock now): not replaced, both run, the newest holds.
  r.cmd({"SET", kLock, "e\nw1:7", "KEEPTTL"});
  auto g = f.submit(keyed("g"));
  CHECK(g.what == "queued");
  CHECK(g.replaced.empty());
  CHECK(r.integer({"ZCARD", "jobq:{q}:delayed"}) == 1);
  CHECK(r.str({"HGET", "jobq:{q}:job:e", "status"}) == "queued");
  CHECK(r.str({"GET", kLock}).rfind("g\n", 0) == 0);
}

TEST_CASE("submit: garbage at a lock is moved aside, named, and the job submitted",
          "[store][unique]") {
  test::RedisServer server;
  auto r = server.client();
  r.cmd({"HSET", kLock, "x", "1"});
  Front f(server, rule(store::UniqueRule::Mode::lock));
  auto a = f.submit(keyed("a"));
  CHECK(a.what == "queued");
  CHECK(r.str({"GET", kLock}) == "a");
  REQUIRE(f.warned.size() == 1);
  CHECK_THAT(f.warned[0], Catch::Contains("jobq:{q}:unique:k, the lock of unique key 'k', held a "
                                          "hash") &&
                              Catch::Contains("moved it aside to jobq:{q}:unique:k:foreign:"));
  auto aside = r.cmd({"KEYS", "jobq:{q}:unique:k:foreign:*"});
  REQUIRE(aside.elements.size() == 1);
  CHECK(r.str({"HGET", aside.elements[0].str, "x"}) == "1");
}

TEST_CASE("claim: of two LPUSHed jobs of one key one runs, the other is named a duplicate",
          "[store][unique]") {
  test::RedisServer server;
  auto r = server.client();
  r.cmd({"LPUSH", "jobq:{q}:pending", keyed("a"), keyed("b"), R"({"id":"c","payload":1})"});
  auto body = [&]() -> async::Task<void> {
    Daemon d(server);
    co_await d.up();
    auto got = co_await d.fetch(3);
    REQUIRE(got.jobs.size() == 2);
    CHECK(got.jobs[0].id == "a");
    CHECK(got.jobs[1].id == "c");
    REQUIRE(got.duplicates.size() == 1);
    CHECK(got.duplicates[0].first.id == "b");
    CHECK(got.duplicates[0].second == "a");
    // The lock names a and its claim; its state records the key.
    CHECK(r.str({"GET", kLock}) == "a\nw1:1");
    CHECK(r.integer({"PTTL", kLock}) > 3000000);
    CHECK(r.str({"HGET", "jobq:{q}:job:a", "unique_key"}) == "k");
    // a ends, and its lock goes with it; b's end (cancelled) leaves what is not its own.
    const store::Reading& a = got.jobs[0];
    std::vector<store::Settlement> ops1{store::held::ok(a, "1", "r"), store::held::unlock(a)};
    co_await d.write(std::move(ops1));
    CHECK(r.integer({"EXISTS", kLock}) == 0);
    CHECK(r.str({"HGET", "jobq:{q}:job:a", "status"}) == "succeeded");
    // A lock some other job holds by now is left alone by an unlock of a.
    r.cmd({"SET", kLock, "z"});
    std::vector<store::Settlement> ops2{store::held::unlock(a)};
    co_await d.write(std::move(ops2));
    CHECK(r.str({"GET", kLock}) == "z");
    co_await d.down();
  };
  run_test(body());
}

TEST_CASE("claim: a job keeps its lock through a retry, and recovered with a new id",
          "[store][unique]") {
  test::RedisServer server;
  auto r = server.client();
  // No id of its own: the lock names the id its fetch gave it, and the hold's nonce.
  r.cmd({"LPUSH", "jobq:{q}:pending", R"({"payload":1,"unique_key":"k"})"});
  std::string first_id;
  auto body = [&]() -> async::Task<void> {
    Daemon d1(server, "w1");
    co_await d1.up();
    auto got = co_await d1.fetch(1);
    REQUIRE(got.jobs.size() == 1);
    first_id = got.jobs[0].id;
    CHECK(r.str({"GET", kLock}) == first_id + "\nw1:1");
    // w1 dies holding it: another daemon takes it back, with an id of its own making.
    r.cmd({"ZADD", "jobq:{q}:leases", "1", "w1"});
    Daemon d2(server, "w2");
    co_await d2.up();
    auto recovered = (co_await d2.store->recover_expired()).value();
    (void)recovered;
    auto again = co_await d2.fetch(1);
    REQUIRE(again.jobs.size() == 1);
    CHECK(again.duplicates.empty());
    const store::Reading& j = again.jobs[0];
    CHECK(j.attempt == 2);
    CHECK(j.unique_key == "k");
    // Its own lock still (the nonce of its first hold), renamed to the id it has now.
    CHECK(r.str({"GET", kLock}) == j.id + "\nw1:1");
    // A retry keeps it; the job's copy comes back and claims its own lock again.
    std::vector<store::Settlement> ops3{
        store::held::retry(j, "1", "e", job::ErrorKind::exception, 0ms)};
    co_await d2.write(std::move(ops3));
    CHECK(r.str({"GET", kLock}) == j.id + "\nw1:1");
    (void)(co_await d2.store->promote()).value();
    auto third = co_await d2.fetch(1);
    REQUIRE(third.jobs.size() == 1);
    CHECK(third.jobs[0].id == j.id);
    CHECK(third.duplicates.empty());
    co_await d2.down();
    co_await d1.down();
  };
  run_test(body());
  CHECK(!first_id.empty());
}

TEST_CASE("claim: a job dead in recovery lets go of its lock; throttle's lock is kept",
          "[store][unique]") {
  for (auto mode : {store::UniqueRule::Mode::lock, store::UniqueRule::Mode::throttle}) {
    test::RedisServer server;
    auto r = server.client();
    r.cmd({"LPUSH", "jobq:{q}:pending",
           R"({"id":"a","payload":1,"unique_key":"k","max_attempts":1})"});
    auto body = [&]() -> async::Task<void> {
      Daemon d1(server, "w1", rule(mode));
      co_await d1.up();
      auto got = co_await d1.fetch(1);
      REQUIRE(got.jobs.size() == 1);
      r.cmd({"ZADD", "jobq:{q}:leases", "1", "w1"});
      Daemon d2(server, "w2", rule(mode));
      co_await d2.up();
      (void)(co_await d2.store->recover_expired()).value();
      co_await d2.down();
      co_await d1.down();
    };
    run_test(body());
    CHECK(r.str({"HGET", "jobq:{q}:job:a", "status"}) == "failed");
    CHECK(r.integer({"EXISTS", kLock}) == (mode == store::UniqueRule::Mode::throttle ? 1 : 0));
  }
}

TEST_CASE("claim, debounce: the newest taken takes the lock over, and both run",
          "[store][unique]") {
  test::RedisServer server;
  auto r = server.client();
  r.cmd({"LPUSH", "jobq:{q}:pending", keyed("a"), keyed("b")});
  auto body = [&]() -> async::Task<void> {
    Daemon d(server, "w1", rule(store::UniqueRule::Mode::debounce));
    co_await d.up();
    auto got = co_await d.fetch(2);
    CHECK(got.jobs.size() == 2);
    CHECK(got.duplicates.empty());
    CHECK(r.str({"GET", kLock}) == "b\nw1:2");
    // a's end leaves b's lock.
    std::vector<store::Settlement> ops4{store::held::ok(got.jobs[0], "1", "r"),
                                        store::held::unlock(got.jobs[0])};
    co_await d.write(std::move(ops4));
    CHECK(r.str({"GET", kLock}) == "b\nw1:2");
    co_await d.down();
  };
  run_test(body());
}

TEST_CASE("claim: garbage at a lock is moved aside and the job waits a second, then runs",
          "[store][unique]") {
  test::RedisServer server;
  auto r = server.client();
  r.cmd({"RPUSH", kLock, "x"});
  r.cmd({"LPUSH", "jobq:{q}:pending", keyed("a")});
  auto body = [&]() -> async::Task<void> {
    Daemon d(server);
    co_await d.up();
    auto got = co_await d.fetch(1);
    CHECK(got.jobs.empty());
    REQUIRE(got.waits.size() == 1);
    CHECK(got.waits[0].first.id == "a");
    CHECK(got.waits[0].second.empty());
    CHECK(r.integer({"EXISTS", kLock}) == 0);
    auto aside = r.cmd({"KEYS", "jobq:{q}:unique:k:foreign:*"});
    REQUIRE(aside.elements.size() == 1);
    CHECK(r.cmd({"LRANGE", aside.elements[0].str, "0", "-1"}).elements.at(0).str == "x");
    // It waits, comes back, and takes the lock.
    std::vector<store::Settlement> ops5{store::held::wait(got.waits[0].first)};
    co_await d.write(std::move(ops5));
    bool due = false;
    for (int i = 0; i < 100 && !due; ++i) {
      due = (co_await d.store->promote()).value().jobs.size() == 1;
      if (!due) co_await async::sleep(50ms);
    }
    REQUIRE(due);
    auto again = co_await d.fetch(1);
    REQUIRE(again.jobs.size() == 1);
    CHECK(r.str({"GET", kLock}).rfind("a\n", 0) == 0);
    co_await d.down();
  };
  run_test(body());
}

TEST_CASE("cancel of a waiting job lets go of its lock", "[store][unique]") {
  test::RedisServer server;
  auto r = server.client();
  Front f(server, rule(store::UniqueRule::Mode::lock));
  CHECK(f.submit(keyed("a")).what == "queued");
  const auto step = f.admin->cancel_step("q", "a", "test");
  CHECK(step.what == "cancelled");
  CHECK(r.integer({"EXISTS", kLock}) == 0);
  CHECK(f.submit(keyed("b")).what == "queued");
  // Throttle keeps it for its window.
  Front t(server, rule(store::UniqueRule::Mode::throttle));
  CHECK(t.admin->cancel_step("q", "b", "test").what == "cancelled");
  CHECK(r.str({"GET", kLock}) == "b");
}
