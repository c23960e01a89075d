// Queue, Semaphore, Lock and Event: bounds, FIFO order, and nothing lost or stuck on cancel.
#include <catch2/catch.hpp>

#include <algorithm>
#include <map>
#include <vector>

#include "async/async.hpp"
#include "tests/support/run.hpp"

using namespace jq::async;
using namespace std::chrono_literals;
using jq::test::ms_since;
using jq::test::run_test;

TEST_CASE("Semaphore(3) over 10 tasks: never more than 3 inside, all 10 finish",
          "[async][semaphore]") {
  auto body = []() -> Task<void> {
    Semaphore sem(3);
    int inside = 0, peak = 0, finished = 0;
    auto worker = [&](int i) -> Task<void> {
      auto permit = co_await sem.acquire();
      ++inside;
      peak = std::max(peak, inside);
      co_await sleep(std::chrono::milliseconds(5 + i % 3));
      --inside;
      ++finished;
    };
    std::vector<Task<void>> ts;
    for (int i = 0; i < 10; ++i) ts.push_back(worker(i));
    co_await gather(std::move(ts));
    CHECK(peak == 3);
    CHECK(finished == 10);
    CHECK(sem.available() == 3);
  };
  run_test(body());
}

TEST_CASE("Semaphore hands permits out in FIFO order, without barging", "[async][semaphore]") {
  auto body = []() -> Task<void> {
    Semaphore sem(1);
    std::vector<int> order;
    auto first = co_await sem.acquire();
    auto waiter = [&](int i) -> Task<void> {
      auto p = co_await sem.acquire();
      order.push_back(i);
      co_await sleep(1ms);
    };
    auto a = spawn(waiter(1));
    auto b = spawn(waiter(2));
    co_await sleep(1ms);
    first.release();
    CHECK_FALSE(sem.try_acquire());  // the permit went to waiter 1, not to a newcomer
    co_await a;
    co_await b;
    CHECK(order == std::vector<int>{1, 2});
  };
  run_test(body());
}

TEST_CASE("Queue(maxsize=3): the producer waits while full", "[async][queue]") {
  auto body = []() -> Task<void> {
    Queue<int> q(3);
    int put = 0;
    auto producer = [&]() -> Task<void> {
      for (int i = 0; i < 10; ++i) {
        co_await q.put(int(i));
        ++put;
      }
    };
    auto h = spawn(producer());
    co_await sleep(5ms);
    CHECK(put == 3);  // three fit, the fourth waits
    CHECK(q.full());
    auto got14 = co_await q.get();
    CHECK(got14 == std::optional<int>(0));
    co_await sleep(1ms);
    CHECK(put == 4);
    for (int i = 1; i < 10; ++i) {
      auto v = co_await q.get();
      CHECK(v == std::optional<int>(i));
    }
    co_await h;
  };
  run_test(body());
}

TEST_CASE("Queue: 2 producers x 2 consumers deliver every item exactly once", "[async][queue]") {
  auto body = []() -> Task<void> {
    Queue<int> q(3);
    std::map<int, int> seen;
    auto producer = [&](int base) -> Task<void> {
      for (int i = 0; i < 500; ++i) {
        co_await q.put(base + i);
        if (i % 50 == 0) co_await sleep(0ms);
      }
    };
    auto consumer = [&]() -> Task<void> {
      while (auto v = co_await q.get()) {
        ++seen[*v];
        if (*v % 7 == 0) co_await sleep(0ms);
      }
    };
    auto c1 = spawn(consumer());
    auto c2 = spawn(consumer());
    co_await gather(producer(0), producer(100000));
    q.close();  // consumers drain what is left, then see nullopt
    co_await c1;
    co_await c2;
    CHECK(seen.size() == 1000);
    CHECK(std::all_of(seen.begin(), seen.end(), [](auto& kv) { return kv.second == 1; }));
  };
  run_test(body());
}

TEST_CASE("Queue close wakes getters with nullopt and putters with QueueClosed", "[async][queue]") {
  auto body = []() -> Task<void> {
    Queue<int> empty(1);
    // Coroutine lambdas are named, never invoked as temporaries: the frame refers to the closure.
    auto get_one = [&]() -> Task<std::optional<int>> { co_return co_await empty.get(); };
    auto getter = spawn(get_one());
    Queue<int> full(1);
    co_await full.put(1);
    int kept = 2;
    auto put_kept = [&]() -> Task<void> { co_await full.put(std::move(kept)); };
    auto putter = spawn(put_kept());
    co_await sleep(1ms);
    empty.close();
    full.close();
    auto got16 = co_await getter;
    CHECK(got16 == std::nullopt);
    CHECK_THROWS_AS(co_await putter, QueueClosed);
    CHECK(kept == 2);  // the item is still the putter's
    auto got17 = co_await full.get();
    CHECK(got17 == std::optional<int>(1));  // queued items survive close
  };
  run_test(body());
}

TEST_CASE("cancelling a putter blocked on a full queue loses nothing and blocks nobody",
          "[async][queue][cancel]") {
  auto body = []() -> Task<void> {
    Queue<std::string> q(1);
    co_await q.put(std::string("a"));
    std::string mine = "b";
    bool cancelled = false;
    auto blocked = [&]() -> Task<void> {
      try {
        co_await q.put(std::move(mine));
      } catch (const Cancelled&) {
        cancelled = true;
        throw;
      }
    };
    auto h1 = spawn(blocked());
    auto put_c = [&]() -> Task<void> { co_await q.put(std::string("c")); };
    auto h2 = spawn(put_c());
    co_await sleep(1ms);
    h1.cancel();
    co_await h1.wait();
    CHECK(cancelled);
    CHECK(mine == "b");  // not moved from: the caller still owns it
    // The putter behind the cancelled one is served.
    auto got18 = co_await q.get();
    CHECK(got18 == std::optional<std::string>("a"));
    auto got19 = co_await q.get();
    CHECK(got19 == std::optional<std::string>("c"));
    co_await h2;
    CHECK(q.empty());
  };
  run_test(body());
}

TEST_CASE("a getter cancelled after it was handed an item still gets the item",
          "[async][queue][cancel]") {
  auto body = []() -> Task<void> {
    Queue<int> q(1);
    std::optional<int> got;
    bool cancelled_later = false;
    auto getter = [&]() -> Task<void> {
      got = co_await q.get();
      try {
        co_await sleep(1s);  // the cancellation lands here, at the next suspension
      } catch (const Cancelled&) {
        cancelled_later = true;
      }
    };
    auto h = spawn(getter());
    co_await sleep(1ms);
    co_await q.put(5);  // hands 5 to the parked getter and schedules it...
    h.cancel();         // ...which is cancelled before it ran
    co_await h;
    CHECK(got == std::optional<int>(5));
    CHECK(cancelled_later);
    CHECK(q.empty());
  };
  run_test(body());
}

TEST_CASE("cancelling a waiter on an empty semaphore leaks no permit and blocks nobody",
          "[async][semaphore][cancel]") {
  auto body = []() -> Task<void> {
    Semaphore sem(1);
    auto held = co_await sem.acquire();
    int entered = 0;
    auto waiter = [&]() -> Task<void> {
      auto p = co_await sem.acquire();
      ++entered;
    };
    auto a = spawn(waiter());
    auto b = spawn(waiter());
    co_await sleep(1ms);
    a.cancel();
    co_await a.wait();
    held.release();
    co_await b;  // b, queued behind the cancelled a, gets the permit
    CHECK(entered == 1);
    CHECK(sem.available() == 1);

    // Handed a permit, then cancelled before running: the permit comes back, none leaks.
    auto held2 = co_await sem.acquire();
    auto c = spawn(waiter());
    co_await sleep(1ms);
    held2.release();  // c is granted the permit and scheduled
    c.cancel();
    co_await c.wait();
    CHECK(sem.available() == 1);
    CHECK(sem.in_use() == 0);
  };
  run_test(body());
}

TEST_CASE("cancelling a waiter on a held lock blocks nobody", "[async][lock][cancel]") {
  auto body = []() -> Task<void> {
    Lock lock;
    std::vector<int> order;
    auto guard = co_await lock.lock();
    auto waiter = [&](int i) -> Task<void> {
      auto g = co_await lock.lock();
      order.push_back(i);
    };
    auto a = spawn(waiter(1));
    auto b = spawn(waiter(2));
    auto c = spawn(waiter(3));
    co_await sleep(1ms);
    b.cancel();
    co_await b.wait();
    guard.release();
    co_await a;
    co_await c;
    CHECK(order == std::vector<int>{1, 3});
    CHECK_FALSE(lock.locked());
  };
  run_test(body());
}

TEST_CASE("Semaphore limit can be raised and lowered at run time", "[async][semaphore]") {
  auto body = []() -> Task<void> {
    Semaphore sem(1);
    auto a = co_await sem.acquire();
    int entered = 0;
    auto waiter = [&]() -> Task<void> {
      auto p = co_await sem.acquire();
      ++entered;
      co_await sleep(5ms);
    };
    auto w = spawn(waiter());
    co_await sleep(1ms);
    sem.set_limit(2);  // wakes the waiter
    co_await sleep(1ms);
    CHECK(entered == 1);
    co_await w;
    // Both permits out, then the limit drops to 1: the cut is taken from the next release.
    auto b = co_await sem.acquire();
    CHECK(sem.in_use() == 2);
    sem.set_limit(1);
    CHECK(sem.available() == 0);
    a.release();
    CHECK(sem.available() == 0);  // that release paid the cut
    CHECK_FALSE(sem.try_acquire());
    b.release();
    CHECK(sem.available() == 1);
    CHECK(sem.in_use() == 0);
  };
  run_test(body());
}

TEST_CASE("an Event wakes all its waiters", "[async][event]") {
  auto body = []() -> Task<void> {
    Event ev;
    int woken = 0;
    auto waiter = [&]() -> Task<void> {
      co_await ev.wait();
      ++woken;
    };
    std::vector<JoinHandle<void>> hs;
    for (int i = 0; i < 5; ++i) hs.push_back(spawn(waiter()));
    co_await sleep(2ms);
    CHECK(woken == 0);
    ev.set();
    for (auto& h : hs) co_await h;
    CHECK(woken == 5);
    co_await ev.wait();  // set: passes at once
    ev.clear();
    CHECK_THROWS_AS(co_await wait_for(ev.wait(), 10ms), TimeoutError);
  };
  run_test(body());
}

TEST_CASE("Queue wait_item: waits for an item without taking it; false once closed and empty",
          "[async][queue]") {
  auto body = []() -> Task<void> {
    Queue<int> q(2);
    int woken = 0;
    bool there = false;
    auto waiter = [&]() -> Task<void> {
      there = co_await q.wait_item();
      ++woken;
    };
    auto h = spawn(waiter());
    co_await sleep(1ms);
    CHECK(woken == 0);
    co_await q.put(7);
    co_await h;
    CHECK(there);
    CHECK(q.size() == 1);                       // still there, for a get
    const bool ready = co_await q.wait_item();  // an item: passes at once
    CHECK(ready);
    auto got = co_await q.get();
    CHECK(got == std::optional<int>(7));
    // Cancelled while it waits: gone from the queue's waiters (a put wakes nobody).
    auto c = spawn(waiter());
    co_await sleep(1ms);
    c.cancel();
    co_await c.wait();
    CHECK(woken == 1);
    co_await q.put(8);
    CHECK(q.size() == 1);
    // Closed: true while items are left, then false.
    q.close();
    const bool left = co_await q.wait_item();
    CHECK(left);
    (void)co_await q.get();
    const bool none = co_await q.wait_item();
    CHECK_FALSE(none);
  };
  run_test(body());
}
