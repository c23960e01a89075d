// The Redis protocol against a real Redis: fetch and settle, ids, recovery, promotion, repair.
#include <catch2/catch.hpp>

#include <limits>
#include <map>

#include "store/queue_store.hpp"
#include "tests/support/redis_server.hpp"
#include "tests/support/run.hpp"

using namespace jq;
using namespace std::chrono_literals;
using jq::test::ms_since;
using jq::test::run_test;

namespace {

// Remembers what became of a settlement.
struct Note final : store::Recorded {
  std::optional<store::Written> how;
  void recorded(store::Written w) noexcept override { how = w; }
};

// A store for queue "q" on `server`, with its own clients, started and connected.
struct Fixture {
  explicit Fixture(const test::RedisServer& server, std::string worker = "w1",
                   store::Settings base = {})
      : main(options(server)), blocking(options(server)) {
    base.queue = "q";
    base.worker = std::move(worker);
    base.default_handler = "h";
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
    writer.emplace(main, *store);
    writer->start();
  }
  /// up(), a lease, and the first `n` pending jobs fetched.
  async::Task<store::FetchBatch> up_and_fetch(std::size_t n) {
    co_await up();
    co_await store->register_lease();
    co_return co_await fetch(n);
  }
  async::Task<store::FetchBatch> fetch(std::size_t n) {
    auto got = co_await store->fetch(n);
    if (!got) throw std::runtime_error("fetch refused: no lease");
    co_return std::move(*got);
  }
  /// Pushes a settlement and waits until it is written; what became of it.
  async::Task<store::Written> settle(store::Settlement s) {
    Note note;
    s.notify = &note;
    writer->push(std::move(s));
    bool flushed = co_await writer->flush(5s);
    if (!flushed || !note.how) throw std::runtime_error("settlement not written");
    co_return *note.how;
  }
  async::Task<store::Written> ok(const store::Fetched& f, const std::string& id,
                                 std::string result = "done") {
    store::Settlement s;
    s.op = store::Settlement::Op::ok;
    s.token = f.token;
    s.id = id;
    s.attempt = f.attempt;
    s.text = std::move(result);
    co_return co_await settle(std::move(s));
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

std::string job_text(const std::string& id, const std::string& payload = R"({"n":1})") {
  return R"({"id":")" + id + R"(","payload":)" + payload + "}";
}

std::map<std::string, std::string> state(test::SyncRedis& r, const std::string& id) {
  auto h = r.cmd({"HGETALL", "jobq:{q}:job:" + id});
  std::map<std::string, std::string> out;
  for (std::size_t i = 0; i + 1 < h.elements.size(); i += 2) {
    out[h.elements[i].str] = h.elements[i + 1].str;
  }
  return out;
}

// Until a fetch's wait is in Redis (its BLMOVE blocked there), so that what the test does next
// happens while it waits.
async::Task<void> until_waiting(const test::RedisServer& server) {
  auto r = server.client();
  auto blocked = [&] { return test::blocked_clients(r) >= 1; };
  const bool waiting = co_await test::poll_until(blocked, 5s);
  REQUIRE(waiting);
}

}  // namespace

TEST_CASE("fetch leases the oldest jobs first and records them active in the same step",
          "[store]") {
  test::RedisServer server;
  auto r = server.client();
  for (auto id : {"a", "b", "c"}) r.cmd({"LPUSH", "jobq:{q}:pending", job_text(id)});
  auto body = [&]() -> async::Task<void> {
    Fixture f(server);
    auto got = co_await f.up_and_fetch(2);
    REQUIRE(got.jobs.size() == 2);
    CHECK(got.jobs[0].raw == job_text("a"));
    CHECK(got.jobs[0].id == "a");
    CHECK(got.jobs[0].attempt == 1);
    CHECK(got.jobs[1].raw == job_text("b"));
    CHECK(got.jobs[1].token == got.jobs[0].token + 1);
    CHECK(f.store->held() == 2);
    co_await f.down();
  };
  run_test(body());
  CHECK(r.integer({"LLEN", "jobq:{q}:pending"}) == 1);
  CHECK(r.integer({"HLEN", "jobq:{q}:inflight:w1"}) == 2);
  auto a = state(r, "a");
  CHECK(a["status"] == "active");
  CHECK(a["attempts"] == "1");
  CHECK(a["queue"] == "q");
  CHECK(a["handler"] == "h");
  CHECK(a["worker"] == "w1");
  CHECK(a["started_at"] == a["submitted_at"]);
  CHECK(r.cmd({"HGET", "jobq:{q}:live", "a"}).str.rfind("w1:", 0) == 0);
  // The held copy carries jobqd's marker: attempts, max, submitted_at, instance, id.
  auto copy = r.cmd({"HGET", "jobq:{q}:inflight:w1", "1"}).str;
  CHECK(copy.rfind(R"({"id":"a","payload":{"n":1},"_jobq":"1|5|)", 0) == 0);
  CHECK(copy.size() > job_text("a").size());
}

TEST_CASE("a job without an id gets one at fetch, which every later copy carries", "[store]") {
  test::RedisServer server;
  auto r = server.client();
  r.cmd({"LPUSH", "jobq:{q}:pending", R"({"payload":1})"});
  r.cmd({"LPUSH", "jobq:{q}:pending", R"({"payload":2,"id":null})"});
  auto body = [&]() -> async::Task<void> {
    Fixture f(server);
    auto got = co_await f.up_and_fetch(10);
    REQUIRE(got.jobs.size() == 2);
    for (const auto& j : got.jobs) {
      CHECK(j.id.size() == 26);
      CHECK(j.raw.find(",\"id\":\"" + j.id + "\"}") != std::string::npos);
      CHECK(j.attempt == 1);
    }
    CHECK(got.jobs[0].id != got.jobs[1].id);
    CHECK(state(r, got.jobs[0].id)["status"] == "active");
    co_await f.down();
  };
  run_test(body());
}

TEST_CASE("ok writes the result once: a batch sent again changes nothing", "[store]") {
  test::RedisServer server;
  auto r = server.client();
  r.cmd({"LPUSH", "jobq:{q}:pending", job_text("a")});
  auto body = [&]() -> async::Task<void> {
    Fixture f(server);
    auto got = co_await f.up_and_fetch(1);
    auto first = co_await f.ok(got.jobs[0], "a", "result 1");
    CHECK(first == store::Written::written);
    auto again = co_await f.ok(got.jobs[0], "a", "result 2");
    CHECK(again == store::Written::not_held);
    CHECK(f.store->held() == 0);
    co_await f.down();
  };
  run_test(body());
  auto a = state(r, "a");
  CHECK(a["status"] == "succeeded");
  CHECK(a["result"] == "result 1");
  CHECK(r.integer({"TTL", "jobq:{q}:job:a"}) > 86000);
  CHECK(r.integer({"HLEN", "jobq:{q}:inflight:w1"}) == 0);
  CHECK(r.integer({"HLEN", "jobq:{q}:live"}) == 0);
}

TEST_CASE("retain succeeded 0 deletes the state at success", "[store]") {
  test::RedisServer server;
  auto r = server.client();
  r.cmd({"LPUSH", "jobq:{q}:pending", job_text("a")});
  auto body = [&]() -> async::Task<void> {
    store::Settings s;
    s.keep_succeeded = 0ms;
    Fixture f(server, "w1", s);
    auto got = co_await f.up_and_fetch(1);
    auto w1 = co_await f.ok(got.jobs[0], "a");
    CHECK(w1 == store::Written::written);
    co_await f.down();
  };
  run_test(body());
  CHECK(r.integer({"EXISTS", "jobq:{q}:job:a"}) == 0);
  CHECK(r.integer({"HLEN", "jobq:{q}:live"}) == 0);
}

TEST_CASE("a retry waits in delayed, comes back queued, and runs as its next attempt", "[store]") {
  test::RedisServer server;
  auto r = server.client();
  r.cmd({"LPUSH", "jobq:{q}:pending", job_text("a")});
  auto body = [&]() -> async::Task<void> {
    Fixture f(server);
    auto got = co_await f.up_and_fetch(1);
    store::Settlement s;
    s.op = store::Settlement::Op::retry;
    s.token = got.jobs[0].token;
    s.id = "a";
    s.delay = 50ms;
    s.text = "boom";
    s.kind = job::ErrorKind::exit_status;
    auto w2 = co_await f.settle(std::move(s));
    CHECK(w2 == store::Written::written);
    auto a = state(r, "a");
    CHECK(a["status"] == "retrying");
    CHECK(a["error"] == "boom");
    CHECK(a["error_kind"] == "exit_status");
    CHECK(r.integer({"ZCARD", "jobq:{q}:delayed"}) == 1);
    auto early = co_await f.store->promote();
    CHECK(early.moved == 0);
    REQUIRE(early.next_in);
    co_await async::sleep(80ms);
    auto p = co_await f.store->promote();
    CHECK(p.moved == 1);
    CHECK(state(r, "a")["status"] == "queued");
    auto again = co_await f.fetch(1);
    REQUIRE(again.jobs.size() == 1);
    CHECK(again.jobs[0].attempt == 2);
    CHECK(again.jobs[0].raw == job_text("a"));  // the handler sees the job, not the marker
    a = state(r, "a");
    CHECK(a["status"] == "active");
    CHECK(a["attempts"] == "2");
    auto w3 = co_await f.ok(again.jobs[0], "a");
    CHECK(w3 == store::Written::written);
    a = state(r, "a");
    CHECK(a["error"].empty());  // the earlier attempt's error is gone with success
    co_await f.down();
  };
  run_test(body());
}

TEST_CASE("dead jobs keep their JSON beside the state, announce it, and are trimmed", "[store]") {
  test::RedisServer server;
  auto r = server.client();
  for (auto id : {"a", "b", "c"}) r.cmd({"LPUSH", "jobq:{q}:pending", job_text(id)});
  auto sub = server.client();
  sub.cmd({"SUBSCRIBE", "jobq:{q}:events"});
  auto body = [&]() -> async::Task<void> {
    store::Settings s;
    s.dead_max = 2;
    Fixture f(server, "w1", s);
    auto got = co_await f.up_and_fetch(3);
    for (std::size_t i = 0; i < 3; ++i) {
      store::Settlement d;
      d.op = store::Settlement::Op::dead;
      d.token = got.jobs[i].token;
      d.id = got.jobs[i].id;
      d.text = "bad";
      d.kind = job::ErrorKind::exception;
      auto w4 = co_await f.settle(std::move(d));
      CHECK(w4 == store::Written::written);
    }
    co_await f.down();
  };
  run_test(body());
  auto m = sub.next_reply();
  REQUIRE(m.elements.size() == 3);
  CHECK(m.elements[2].str == R"({"id":"a","queue":"q","status":"failed"})");
  auto dead = r.cmd({"ZRANGE", "jobq:{q}:dead", "0", "-1"});
  REQUIRE(dead.elements.size() == 2);  // the oldest went first
  CHECK(dead.elements[0].str == "b");
  CHECK(r.integer({"EXISTS", "jobq:{q}:job:a"}) == 0);
  CHECK(r.integer({"HEXISTS", "jobq:{q}:dead:bodies", "a"}) == 0);
  auto b = state(r, "b");
  CHECK(b["status"] == "failed");
  CHECK(b.count("body") == 0);  // the JSON is kept apart: the state is text for any client
  CHECK(r.cmd({"HGET", "jobq:{q}:dead:bodies", "b"}).str.rfind(job_text("b").substr(0, 20), 0) ==
        0);
  CHECK(r.integer({"HLEN", "jobq:{q}:live"}) == 0);
}

TEST_CASE("give back returns jobs to the consuming end in order, the attempt not counted",
          "[store]") {
  test::RedisServer server;
  auto r = server.client();
  for (auto id : {"a", "b", "c"}) r.cmd({"LPUSH", "jobq:{q}:pending", job_text(id)});
  auto body = [&]() -> async::Task<void> {
    Fixture f(server);
    auto got = co_await f.up_and_fetch(2);
    // Newest first, as the engine does, so that the oldest is next again.
    for (int i = 1; i >= 0; --i) {
      store::Settlement s;
      s.op = store::Settlement::Op::back;
      s.token = got.jobs[i].token;
      // b as a stopping fetcher gives back a batch it never read: without its id.
      s.id = i == 1 ? "" : got.jobs[i].id;
      f.writer->push(std::move(s));
    }
    auto w10 = co_await f.writer->flush(5s);
    CHECK(w10);
    for (auto id : {"a", "b"}) {
      auto st = state(r, id);
      CHECK(st["status"] == "queued");
      CHECK(st["attempts"] == "0");
    }
    CHECK(r.integer({"EXISTS", "jobq:{q}:job:"}) == 0);  // no state under an empty id
    auto again = co_await f.fetch(3);
    REQUIRE(again.jobs.size() == 3);
    CHECK(again.jobs[0].id == "a");
    CHECK(again.jobs[1].id == "b");
    CHECK(again.jobs[2].id == "c");
    CHECK(again.jobs[0].attempt == 1);
    co_await f.down();
  };
  run_test(body());
}

TEST_CASE("a dead worker's jobs are recovered in order; a last attempt is dead as lost",
          "[store]") {
  test::RedisServer server;
  auto r = server.client();
  r.cmd({"LPUSH", "jobq:{q}:pending", job_text("a")});
  r.cmd({"LPUSH", "jobq:{q}:pending", R"({"id":"last","payload":1,"max_attempts":1})"});
  r.cmd({"LPUSH", "jobq:{q}:pending", job_text("b")});
  auto body = [&]() -> async::Task<void> {
    store::Settings s;
    s.lease = 100ms;
    Fixture dying(server, "dying", s);
    auto got = co_await dying.up_and_fetch(3);
    REQUIRE(got.jobs.size() == 3);
    co_await dying.down();
    co_await async::sleep(150ms);
    Fixture live(server, "live", s);
    co_await live.up();
    auto rec = co_await live.store->recover();
    CHECK(rec.returned == 2);
    CHECK(rec.dead == 1);
    REQUIRE(rec.workers.size() == 1);
    CHECK(rec.workers[0] == "dying");
    co_await live.store->register_lease();
    auto again = co_await live.fetch(3);
    REQUIRE(again.jobs.size() == 2);
    CHECK(again.jobs[0].id == "a");
    CHECK(again.jobs[0].attempt == 2);  // the lost attempt counts
    CHECK(again.jobs[1].id == "b");
    co_await live.down();
  };
  run_test(body());
  auto last = state(r, "last");
  CHECK(last["status"] == "failed");
  CHECK(last["error_kind"] == "lost");
  CHECK(last["error"].find("that was attempt 1 of 1") != std::string::npos);
  CHECK(r.integer({"ZSCORE", "jobq:{q}:dead", "last"}) > 0);
  CHECK(r.integer({"EXISTS", "jobq:{q}:inflight:dying"}) == 0);
  CHECK(r.integer({"HEXISTS", "jobq:{q}:live", "last"}) == 0);
}

TEST_CASE("renew fails once the lease was recovered; fetch refuses until re-registered",
          "[store]") {
  test::RedisServer server;
  auto r = server.client();
  r.cmd({"LPUSH", "jobq:{q}:pending", job_text("a")});
  auto body = [&]() -> async::Task<void> {
    store::Settings s;
    s.lease = 100ms;
    Fixture f(server, "w1", s);
    co_await f.up();
    co_await f.store->register_lease();
    auto w11 = co_await f.store->renew_lease();
    CHECK(w11);
    co_await async::sleep(150ms);
    auto w12 = co_await f.store->renew_lease();
    CHECK_FALSE(w12);
    auto refused = co_await f.store->fetch(1);
    CHECK_FALSE(refused.has_value());
    CHECK(r.integer({"LLEN", "jobq:{q}:pending"}) == 1);  // nothing taken
    co_await f.store->register_lease();
    auto got = co_await f.fetch(1);
    CHECK(got.jobs.size() == 1);
    co_await f.down();
  };
  run_test(body());
}

TEST_CASE("a fetch that waits for jobs leases the first one pushed at once, oldest first",
          "[store][wait]") {
  test::RedisServer server;
  auto body = [&]() -> async::Task<void> {
    Fixture f(server);
    co_await f.up();
    co_await f.store->register_lease();
    // Nothing comes: the wait ends by its timeout, and the fetch behind it finds nothing.
    auto t0 = async::Clock::now();
    auto none = co_await f.store->fetch_when_pending(5, 200ms);
    REQUIRE(none.got.has_value());
    CHECK(none.got->jobs.empty());
    CHECK(none.wait_error.empty());
    CHECK(ms_since(t0) >= 190);
    auto pusher = [&]() -> async::Task<void> {
      co_await until_waiting(server);
      auto r = server.client();
      r.cmd({"LPUSH", "jobq:{q}:pending", job_text("first")});
      r.cmd({"LPUSH", "jobq:{q}:pending", job_text("second")});
    };
    auto h = async::spawn(pusher());
    t0 = async::Clock::now();
    auto woke = co_await f.store->fetch_when_pending(1, 5s);
    CHECK(ms_since(t0) < 1000);
    REQUIRE(woke.got.has_value());
    REQUIRE(woke.got->jobs.size() == 1);
    CHECK(woke.got->jobs[0].id == "first");
    CHECK(woke.got->jobs[0].attempt == 1);
    CHECK(f.store->held() == 1);
    CHECK_FALSE(f.store->waiting());
    co_await h;
    co_await f.down();
  };
  run_test(body());
  auto r = server.client();
  CHECK(r.cmd({"HGET", "jobq:{q}:job:first", "status"}).str == "active");
  auto list = r.cmd({"LRANGE", "jobq:{q}:pending", "0", "-1"});
  REQUIRE(list.elements.size() == 1);
  CHECK(list.elements.back().str == job_text("second"));
}

TEST_CASE("a fetch waiting for jobs survives SCRIPT FLUSH meanwhile", "[store][wait]") {
  test::RedisServer server;
  auto body = [&]() -> async::Task<void> {
    Fixture f(server);
    co_await f.up();
    co_await f.store->register_lease();
    auto first = co_await f.fetch(5);  // the script is in Redis' cache now
    CHECK(first.jobs.empty());
    auto waiting = async::spawn(f.store->fetch_when_pending(5, 5s));
    co_await until_waiting(server);
    // The EVALSHA waiting behind the BLMOVE finds no script when it runs: it runs again by EVAL.
    auto r = server.client();
    r.cmd({"SCRIPT", "FLUSH"});
    r.cmd({"LPUSH", "jobq:{q}:pending", job_text("after-flush")});
    auto got = co_await waiting;
    REQUIRE(got.got.has_value());
    REQUIRE(got.got->jobs.size() == 1);
    CHECK(got.got->jobs[0].id == "after-flush");
    CHECK(f.store->held() == 1);
    co_await f.down();
  };
  run_test(body());
}

TEST_CASE("unblock ends a fetch's wait at once; a lost lease still refuses it", "[store][wait]") {
  test::RedisServer server;
  auto body = [&]() -> async::Task<void> {
    Fixture f(server);
    co_await f.up();
    co_await f.store->register_lease();
    auto waiting = async::spawn(f.store->fetch_when_pending(5, 10s));
    CHECK(f.store->waiting());
    // Right away, while the BLMOVE may not have reached Redis yet: unblock tries again.
    auto t0 = async::Clock::now();
    co_await f.store->unblock();
    auto got = co_await waiting;
    CHECK(ms_since(t0) < 2000);
    REQUIRE(got.got.has_value());
    CHECK(got.got->jobs.empty());
    // The lease gone while it waited: the fetch behind the wait refuses, as fetch() does.
    auto r = server.client();
    auto again = async::spawn(f.store->fetch_when_pending(5, 10s));
    co_await until_waiting(server);
    r.cmd({"DEL", "jobq:{q}:leases"});
    r.cmd({"LPUSH", "jobq:{q}:pending", job_text("late")});
    auto refused = co_await again;
    CHECK_FALSE(refused.got.has_value());
    CHECK(f.store->held() == 0);
    co_await f.down();
  };
  run_test(body());
  auto r = server.client();
  CHECK(r.integer({"LLEN", "jobq:{q}:pending"}) == 1);  // "late" untouched
}

TEST_CASE("reconcile returns jobs held in Redis that the worker does not know of", "[store]") {
  test::RedisServer server;
  auto r = server.client();
  for (auto id : {"a", "b"}) r.cmd({"LPUSH", "jobq:{q}:pending", job_text(id)});
  auto body = [&]() -> async::Task<void> {
    Fixture f(server);
    auto got = co_await f.up_and_fetch(2);
    f.store->released(got.jobs[1].token);  // as if its fetch reply had been lost
    r.cmd({"HSET", "jobq:{q}:inflight:w1", "garbage", "not a job"});
    auto rec = co_await f.store->reconcile();
    CHECK(rec.returned == 2);
    CHECK(r.integer({"HLEN", "jobq:{q}:inflight:w1"}) == 1);
    CHECK(state(r, "b")["status"] == "queued");
    CHECK(state(r, "b")["error_kind"] == "lost");
    co_await f.down();
  };
  run_test(body());
  auto list = r.cmd({"LRANGE", "jobq:{q}:pending", "0", "-1"});
  REQUIRE(list.elements.size() == 2);
}

TEST_CASE("an id names one job at a time: a second submission waits for the first", "[store]") {
  test::RedisServer server;
  auto r = server.client();
  r.cmd({"LPUSH", "jobq:{q}:pending", job_text("same", "1")});
  r.cmd({"LPUSH", "jobq:{q}:pending", job_text("same", "2")});  // in the same batch
  auto body = [&]() -> async::Task<void> {
    Fixture f(server);
    auto got = co_await f.up_and_fetch(10);
    REQUIRE(got.jobs.size() == 1);
    CHECK(got.waiting == 1);
    CHECK(got.jobs[0].raw == job_text("same", "1"));
    // While the first runs, the second waits in delayed; its state stays the first's.
    r.cmd({"LPUSH", "jobq:{q}:pending", job_text("same", "3")});
    auto none = co_await f.fetch(10);
    CHECK(none.jobs.empty());
    CHECK(none.waiting == 1);
    CHECK(state(r, "same")["attempts"] == "1");
    CHECK(r.integer({"ZCARD", "jobq:{q}:delayed"}) == 2);
    auto w5 = co_await f.ok(got.jobs[0], "same", "first");
    CHECK(w5 == store::Written::written);
    co_await async::sleep(1100ms);
    auto p = co_await f.store->promote();
    CHECK(p.moved == 2);
    // The next one runs as a new job (fresh attempts); the third still waits for it.
    auto next = co_await f.fetch(10);
    REQUIRE(next.jobs.size() == 1);
    CHECK(next.waiting == 1);
    CHECK(next.jobs[0].attempt == 1);
    auto st = state(r, "same");
    CHECK(st["status"] == "active");
    CHECK(st["attempts"] == "1");
    CHECK(st.count("result") == 0);                        // nothing of the first job's end is left
    CHECK(r.integer({"TTL", "jobq:{q}:job:same"}) == -1);  // nor its expiry
    co_await f.down();
  };
  run_test(body());
}

TEST_CASE("a reused id whose job is over starts afresh, however often", "[store]") {
  test::RedisServer server;
  auto r = server.client();
  auto body = [&]() -> async::Task<void> {
    store::Settings s;
    s.max_attempts = 2;
    Fixture f(server, "w1", s);
    co_await f.up();
    co_await f.store->register_lease();
    for (int round = 0; round < 4; ++round) {
      r.cmd({"LPUSH", "jobq:{q}:pending", job_text("same")});
      auto got = co_await f.fetch(1);
      REQUIRE(got.jobs.size() == 1);
      CHECK(got.jobs[0].attempt == 1);
      auto w6 = co_await f.ok(got.jobs[0], "same");
      CHECK(w6 == store::Written::written);
    }
    co_await f.down();
  };
  run_test(body());
}

TEST_CASE("corrupt or foreign state at a job's key is replaced and the job runs", "[store]") {
  test::RedisServer server;
  auto r = server.client();
  r.cmd({"HSET", "jobq:{q}:job:x", "attempts", "abc", "status", "weird"});
  r.cmd({"SET", "jobq:{q}:job:y", "a string"});
  r.cmd({"HSET", "jobq:{q}:live", "z", "someone:1"});  // a stale claim: z's job is over
  r.cmd({"HSET", "jobq:{q}:job:z", "status", "succeeded"});
  for (auto id : {"x", "y", "z"}) r.cmd({"LPUSH", "jobq:{q}:pending", job_text(id)});
  auto body = [&]() -> async::Task<void> {
    Fixture f(server);
    auto got = co_await f.up_and_fetch(10);
    REQUIRE(got.jobs.size() == 3);
    for (auto& j : got.jobs) {
      CHECK(j.attempt == 1);
      auto w7 = co_await f.ok(j, j.id);
      CHECK(w7 == store::Written::written);
    }
    co_await f.down();
  };
  run_test(body());
  for (auto id : {"x", "y", "z"}) {
    auto st = state(r, id);
    INFO(id);
    CHECK(st["status"] == "succeeded");
    CHECK(st["attempts"] == "1");
  }
}

TEST_CASE("a foreign value at one of the queue's keys is moved aside and the queue goes on",
          "[store]") {
  test::RedisServer server;
  auto r = server.client();
  r.cmd({"LPUSH", "jobq:{q}:pending", job_text("a")});
  r.cmd({"SET", "jobq:{q}:live", "garbage"});
  r.cmd({"SET", "jobq:{q}:dead", "garbage"});
  auto body = [&]() -> async::Task<void> {
    Fixture f(server);
    co_await f.up();
    co_await f.store->register_lease();
    std::string error;
    try {
      (void)co_await f.store->fetch(1);
    } catch (const redis::ReplyError& e) {
      error = e.what();
    }
    CHECK(error.find("WRONGTYPE") != std::string::npos);
    CHECK(r.integer({"LLEN", "jobq:{q}:pending"}) == 1);  // nothing popped and lost
    auto moved = co_await f.store->repair();
    REQUIRE(moved.size() == 2);
    CHECK(moved[0].key == "jobq:{q}:live");
    CHECK(moved[0].type == "string");
    CHECK(moved[0].moved_to.rfind("jobq:{q}:live:foreign:", 0) == 0);
    auto got = co_await f.fetch(1);
    REQUIRE(got.jobs.size() == 1);
    auto w8 = co_await f.ok(got.jobs[0], "a");
    CHECK(w8 == store::Written::written);
    co_await f.down();
  };
  run_test(body());
  auto aside = r.cmd({"KEYS", "jobq:{q}:live:foreign:*"});
  REQUIRE(aside.elements.size() == 1);
  CHECK(r.cmd({"GET", aside.elements[0].str}).str == "garbage");  // kept for an operator
}

TEST_CASE("jobs Redis cannot read, and oversized ones, are held as they came", "[store]") {
  test::RedisServer server;
  auto r = server.client();
  r.cmd({"LPUSH", "jobq:{q}:pending", "not json"});
  r.cmd(
      {"LPUSH", "jobq:{q}:pending", R"({"id":"big","payload":")" + std::string(300, 'x') + "\"}"});
  r.cmd({"LPUSH", "jobq:{q}:pending", R"({"id":"a b","payload":1})"});
  auto body = [&]() -> async::Task<void> {
    store::Settings s;
    s.max_job_bytes = 200;
    Fixture f(server, "w1", s);
    auto got = co_await f.up_and_fetch(10);
    REQUIRE(got.jobs.size() == 3);
    CHECK(got.jobs[0].attempt == 0);
    CHECK(got.jobs[0].raw == "not json");
    CHECK(got.jobs[1].oversized > 300);
    CHECK(got.jobs[1].id == "big");
    CHECK(got.jobs[1].raw.empty());
    CHECK(got.jobs[2].attempt == 0);
    // Dead under its own id when no other job has it, else under the fresh one.
    r.cmd({"HSET", "jobq:{q}:live", "big", "other:1"});
    store::Settlement d;
    d.op = store::Settlement::Op::dead;
    d.token = got.jobs[1].token;
    d.id = "big";
    d.fresh_id = "fresh1";
    d.text = "too big";
    d.kind = job::ErrorKind::invalid_job;
    auto w9 = co_await f.settle(std::move(d));
    CHECK(w9 == store::Written::renamed);
    co_await f.down();
  };
  run_test(body());
  CHECK(state(r, "big").empty());
  auto fresh = state(r, "fresh1");
  CHECK(fresh["status"] == "failed");
  CHECK(fresh["error_kind"] == "invalid_job");
  CHECK(fresh["attempts"] == "0");
}

TEST_CASE("a fetch reply of any other shape is an error, not a crash", "[store]") {
  auto arr = [](std::vector<redis::Reply> e) {
    redis::Reply r;
    r.type = redis::Reply::Type::array;
    r.elements = std::move(e);
    return r;
  };
  auto num = [](long long v) {
    redis::Reply r;
    r.type = redis::Reply::Type::integer;
    r.integer = v;
    return r;
  };
  auto str = [](std::string s) {
    redis::Reply r;
    r.type = redis::Reply::Type::string;
    r.str = std::move(s);
    return r;
  };
  CHECK_THROWS_AS(store::decode_fetch(redis::Reply{}, 1, 10), redis::ReplyError);
  CHECK_THROWS_AS(store::decode_fetch(arr({num(1)}), 1, 10), redis::ReplyError);
  CHECK_THROWS_AS(
      store::decode_fetch(arr({num(1), num(0), num(11), num(1), str("a"), str("{}")}), 1, 10),
      redis::ReplyError);  // an index past the batch
  CHECK_THROWS_AS(
      store::decode_fetch(arr({num(1), num(0), num(1), num(1), str(""), str("{}")}), 1, 10),
      redis::ReplyError);  // a started job without an id
  auto ok = store::decode_fetch(arr({str("5"), num(0), num(2), num(1), str("a"), str("{}"), num(3),
                                     num(std::numeric_limits<long long>::min()), str(""), str("")}),
                                100, 10);
  REQUIRE(ok.jobs.size() == 2);
  CHECK(ok.jobs[0].token == 101);
  CHECK(ok.jobs[1].oversized > 0);
  auto paused = store::decode_fetch(arr({str("5"), num(-1)}), 1, 10);
  CHECK(paused.paused);
  CHECK(paused.jobs.empty());
  CHECK_THROWS_AS(store::decode_fetch(arr({str("5"), num(-2)}), 1, 10), redis::ReplyError);
}

TEST_CASE("a fetch takes nothing while the queue is paused in Redis", "[store][pause]") {
  test::RedisServer server;
  auto r = server.client();
  r.cmd({"LPUSH", "jobq:{q}:pending", job_text("a")});
  r.cmd({"SET", "jobq:{q}:paused", "1"});
  auto body = [&]() -> async::Task<void> {
    Fixture f(server);
    co_await f.up();
    co_await f.store->register_lease();
    auto held = co_await f.fetch(5);
    CHECK(held.paused);
    CHECK(held.jobs.empty());
    // A fetch sent behind a wait runs when a job comes, long after it was sent: the pause set
    // meanwhile holds for it too.
    r.cmd({"DEL", "jobq:{q}:paused"});
    r.cmd({"RPOP", "jobq:{q}:pending"});
    auto waiting = async::spawn(f.store->fetch_when_pending(5, 5s));
    co_await until_waiting(server);
    r.cmd({"SET", "jobq:{q}:paused", "1"});
    r.cmd({"LPUSH", "jobq:{q}:pending", job_text("b")});
    auto got = co_await waiting;
    REQUIRE(got.got.has_value());
    CHECK(got.got->paused);
    CHECK(got.got->jobs.empty());
    co_await f.down();
  };
  run_test(body());
  CHECK(r.integer({"LLEN", "jobq:{q}:pending"}) == 1);
  CHECK(r.integer({"EXISTS", "jobq:{q}:job:b"}) == 0);
}

TEST_CASE("a no-op job costs few Redis commands, scripts' inner commands included",
          "[store][commands]") {
  test::RedisServer server;
  auto r = server.client();
  const int n = 200;
  for (int i = 0; i < n; ++i)
    r.cmd({"LPUSH", "jobq:{q}:pending", job_text("j" + std::to_string(i))});
  auto count = [&] {
    auto info = r.cmd({"INFO", "commandstats"}).str;
    long long calls = 0;
    std::size_t at = 0;
    while ((at = info.find("calls=", at)) != std::string::npos) {
      calls += std::stoll(info.substr(at + 6));
      at += 6;
    }
    return calls;
  };
  auto drain = [&](store::Settings s) {
    auto body = [&]() -> async::Task<void> {
      Fixture f(server, "w1", s);
      co_await f.up();
      co_await f.store->register_lease();
      r.cmd({"CONFIG", "RESETSTAT"});
      auto got = co_await f.fetch(n);
      for (auto& j : got.jobs) {
        store::Settlement o;
        o.op = store::Settlement::Op::ok;
        o.token = j.token;
        o.id = j.id;
        o.attempt = j.attempt;
        f.writer->push(std::move(o));
      }
      auto w13 = co_await f.writer->flush(5s);
      CHECK(w13);
      co_await f.down();
    };
    run_test(body());
    // INFO and RESETSTAT themselves are not the job's.
    return static_cast<double>(count() - 2) / n;
  };
  double kept = drain({});
  for (int i = 0; i < n; ++i)
    r.cmd({"LPUSH", "jobq:{q}:pending", job_text("k" + std::to_string(i))});
  store::Settings gone;
  gone.keep_succeeded = 0ms;
  double deleted = drain(gone);
  INFO("commands per job: " << kept << " kept, " << deleted << " with succeeded: 0");
  CHECK(kept <= 3.2);
  CHECK(deleted <= 2.2);
}
