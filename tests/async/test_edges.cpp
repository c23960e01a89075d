// Runtime edge cases from review: awaiting through handles that move, aborts right after a
// hand-off, cancellation racing a result, and misuse that must fail loudly instead of corrupting.
#include <catch2/catch.hpp>

#include <map>
#include <vector>

#include "async/async.hpp"
#include "tests/support/run.hpp"

using namespace jq::async;
using namespace std::chrono_literals;
using jq::test::run_test;

namespace {

Task<int> sleep_then(Duration d, int v) {
  co_await sleep(d);
  co_return v;
}

}  // namespace

TEST_CASE("awaiting a JoinHandle survives the handle moving (a vector growing)", "[async][edges]") {
  auto body = []() -> Task<void> {
    std::vector<JoinHandle<int>> hs;
    hs.push_back(spawn(sleep_then(20ms, 7)));
    auto grow = [&]() -> Task<void> {
      co_await sleep(5ms);
      for (int i = 0; i < 100; ++i) hs.push_back(spawn(sleep_then(1ms, i)));  // reallocates
    };
    auto g = spawn(grow());
    int v = co_await hs[0];
    CHECK(v == 7);
    co_await g;
  };
  run_test(body());
}

TEST_CASE("a Future awaited from a map survives being erased by whoever sets it",
          "[async][edges][future]") {
  auto body = []() -> Task<void> {
    std::map<int, Future<std::string>> pending;
    pending[1] = Future<std::string>();
    auto waiter = [&]() -> Task<std::string> { co_return co_await pending.at(1); };
    auto w = spawn(waiter());
    co_await sleep(1ms);
    pending.at(1).set_value(std::string(100, 'r'));
    pending.erase(1);  // the reply callback's usual clean-up, before the waiter runs
    std::string got = co_await w;
    CHECK(got == std::string(100, 'r'));
  };
  run_test(body());
}

TEST_CASE("a cancellation wins over a Future's value that arrives before the waiter runs",
          "[async][edges][future]") {
  auto body = []() -> Task<void> {
    Future<int> f;
    bool saw_cancel = false;
    auto waiter = [&]() -> Task<void> {
      try {
        (void)co_await f;
      } catch (const Cancelled&) {
        saw_cancel = true;
        throw;
      }
    };
    auto w = spawn(waiter());
    co_await sleep(1ms);
    w.cancel();
    f.set_value(5);
    co_await w.wait();
    CHECK(saw_cancel);
    int again = co_await f;  // the value stays in the Future
    CHECK(again == 5);
  };
  run_test(body());
}

TEST_CASE("an aborted waiter gives back the permit or item it was just handed", "[async][edges]") {
  auto body = []() -> Task<void> {
    Semaphore sem(1);
    auto held = sem.try_acquire();
    REQUIRE(held);
    auto acquirer = [&]() -> Task<void> { auto p = co_await sem.acquire(); };
    auto a = spawn(acquirer());
    co_await sleep(1ms);
    held->release();  // handed to the parked acquirer...
    a.abort();        // ...which is destroyed before it ever runs
    CHECK(sem.available() == 1);
    CHECK(sem.in_use() == 0);

    Queue<int> q(1);
    auto getter = [&]() -> Task<void> { (void)co_await q.get(); };
    auto g = spawn(getter());
    co_await sleep(1ms);
    CHECK(q.try_put(42));  // handed to the parked getter...
    g.abort();             // ...which never takes it: it goes back to the queue
    auto back = q.try_get();
    REQUIRE(back);
    CHECK(*back == 42);
  };
  run_test(body());
}

TEST_CASE("raising a Semaphore's limit first forgives permits still owed from a cut",
          "[async][edges][semaphore]") {
  auto body = []() -> Task<void> {
    Semaphore sem(2);
    auto a = sem.try_acquire();
    auto b = sem.try_acquire();
    sem.set_limit(1);  // one permit owed once released
    sem.set_limit(2);  // back to two: nothing owed, nothing extra
    CHECK_FALSE(sem.try_acquire().has_value());
    a->release();
    auto c = sem.try_acquire();
    CHECK(c.has_value());
    CHECK(sem.in_use() == 2);
    co_return;
  };
  run_test(body());
}

TEST_CASE("awaiting a Task twice, or one generator from two tasks, fails loudly",
          "[async][edges]") {
  auto body = []() -> Task<void> {
    auto t = sleep_then(1ms, 3);
    int first = co_await t;
    CHECK(first == 3);
    bool threw = false;
    try {
      (void)co_await t;
    } catch (const std::logic_error&) {
      threw = true;
    }
    CHECK(threw);

    auto ticks = []() -> Generator<int> {
      for (int i = 0;; ++i) {
        co_await sleep(20ms);
        co_yield i;
      }
    };
    auto gen = ticks();
    auto reader = [&]() -> Task<void> { (void)co_await gen.next(); };
    auto r = spawn(reader());
    co_await sleep(1ms);
    bool busy = false;
    try {
      (void)co_await gen.next();
    } catch (const std::logic_error&) {
      busy = true;
    }
    CHECK(busy);
    co_await r;
  };
  run_test(body());
}

TEST_CASE("aborting a task inside gather takes its children with it", "[async][edges][gather]") {
  auto body = []() -> Task<void> {
    int touched = 0;  // outlives the parent: counts children that ran after the abort
    auto parent = [&]() -> Task<void> {
      std::vector<int> local(1000, 1);  // children refer to this frame
      auto child = [&]() -> Task<void> {
        co_await sleep(20ms);
        touched += local[999];
      };
      co_await gather(child(), child());
    };
    auto p = spawn(parent());
    co_await sleep(5ms);
    p.abort();
    co_await sleep(50ms);
    CHECK(touched == 0);
  };
  run_test(body());
}
