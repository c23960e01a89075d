// Tasks, spawn, gather, wait_for, when_any, as_completed, generators: asyncio's classics as tests.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "async/async.hpp"
#include "tests/support/run.hpp"

using namespace jq::async;
using namespace std::chrono_literals;
using jq::test::ms_since;
using jq::test::run_test;

namespace {

Task<int> sleep_then(Duration d, int v) {
  co_await sleep(d);
  co_return v;
}

Task<int> fail_after(Duration d, std::string msg) {
  co_await sleep(d);
  throw std::runtime_error(msg);
}

}  // namespace

TEST_CASE("a task returns its value and an exception is rethrown at co_await", "[async]") {
  auto body = []() -> Task<void> {
    auto add = [](int a, int b) -> Task<int> { co_return a + b; };
    auto got1 = co_await add(2, 3);
    CHECK(got1 == 5);
    bool caught = false;
    try {
      co_await fail_after(0ms, "boom");
    } catch (const std::runtime_error& e) {
      caught = std::string(e.what()) == "boom";
    }
    CHECK(caught);
  };
  run_test(body());
}

TEST_CASE("three concurrent 200 ms sleeps under gather take one sleep, in input order",
          "[async][gather]") {
  auto body = []() -> Task<void> {
    auto t0 = Clock::now();
    auto [a, b, c] =
        co_await gather(sleep_then(200ms, 1), sleep_then(150ms, 2), sleep_then(200ms, 3));
    auto took = ms_since(t0);
    CHECK(took >= 195);
    CHECK(took < 400);
    CHECK(a == 1);
    CHECK(b == 2);
    CHECK(c == 3);
  };
  run_test(body());
}

TEST_CASE("gather over a vector keeps input order, not completion order", "[async][gather]") {
  auto body = []() -> Task<void> {
    std::vector<Task<int>> ts;
    for (int i = 0; i < 5; ++i) ts.push_back(sleep_then(std::chrono::milliseconds(50 - i * 10), i));
    auto out = co_await gather(std::move(ts));
    CHECK(out == std::vector<int>{0, 1, 2, 3, 4});
  };
  run_test(body());
}

TEST_CASE("gather in collect mode returns each result or its exception", "[async][gather]") {
  auto body = []() -> Task<void> {
    std::vector<Task<int>> ts;
    ts.push_back(sleep_then(10ms, 1));
    ts.push_back(fail_after(20ms, "second failed"));
    ts.push_back(sleep_then(30ms, 3));
    ts.push_back(sleep_then(5ms, 4));
    auto out = co_await gather(collect, std::move(ts));
    REQUIRE(out.size() == 4);
    CHECK(out[0].value() == 1);
    CHECK(out[1].failed());
    CHECK(describe(out[1].error()) == "second failed");
    CHECK(out[2].value() == 3);
    CHECK(out[3].value() == 4);

    auto [x, y] = co_await gather(collect, sleep_then(1ms, 7), fail_after(1ms, "y"));
    CHECK(x.value() == 7);
    CHECK_THROWS_WITH(y.value(), "y");
  };
  run_test(body());
}

TEST_CASE("gather fail-fast cancels the rest, waits for their cleanup, rethrows the first error",
          "[async][gather]") {
  auto body = []() -> Task<void> {
    int cleaned = 0;
    bool finished_normally = false;
    auto slow = [&]() -> Task<int> {
      bool cancelled = false;
      try {
        co_await sleep(3s);
        finished_normally = true;
      } catch (const Cancelled&) {
        cancelled = true;  // C++ allows no co_await inside a handler: clean up after it
      }
      if (cancelled) {
        co_await sleep(20ms);  // cleanup may await; gather waits for it
        ++cleaned;
        throw Cancelled{};
      }
      co_return 0;
    };
    auto t0 = Clock::now();
    bool caught = false;
    try {
      co_await gather(slow(), fail_after(50ms, "first"), slow());
    } catch (const std::runtime_error& e) {
      caught = std::string(e.what()) == "first";
    }
    CHECK(caught);
    CHECK(cleaned == 2);  // both cleanups finished before gather threw
    CHECK_FALSE(finished_normally);
    CHECK(ms_since(t0) < 1000);
  };
  run_test(body());
}

TEST_CASE("cancelling a task blocked in gather cancels its children and waits for them",
          "[async][gather][cancel]") {
  auto body = []() -> Task<void> {
    int cleaned = 0;
    auto child = [&]() -> Task<int> {
      try {
        co_await sleep(5s);
      } catch (const Cancelled&) {
        ++cleaned;
        throw;
      }
      co_return 1;
    };
    auto parent = [&]() -> Task<void> { co_await gather(child(), child(), child()); };
    auto h = spawn(parent());
    co_await sleep(20ms);
    h.cancel();
    co_await h.wait();
    CHECK(cleaned == 3);
    CHECK_THROWS_AS(h.take_result().value(), Cancelled);
  };
  run_test(body());
}

TEST_CASE("wait_for on a 3 s operation with a 100 ms timeout raises in time after its cleanup",
          "[async][wait_for]") {
  auto body = []() -> Task<void> {
    bool cleanup_ran = false;
    auto op = [&]() -> Task<int> {
      try {
        co_await sleep(3s);
      } catch (const Cancelled&) {
        cleanup_ran = true;
        throw;
      }
      co_return 42;
    };
    auto t0 = Clock::now();
    bool timed_out = false;
    try {
      co_await wait_for(op(), 100ms);
    } catch (const TimeoutError&) {
      timed_out = true;
    }
    auto took = ms_since(t0);
    CHECK(timed_out);
    CHECK(cleanup_ran);
    CHECK(took >= 95);
    CHECK(took < 300);
    // The timeout's cancellation was consumed: the task can go on suspending normally.
    co_await sleep(10ms);
  };
  run_test(body());
}

TEST_CASE("wait_for returns the value when the operation beats the timeout", "[async][wait_for]") {
  auto body = []() -> Task<void> {
    auto got2 = co_await wait_for(sleep_then(10ms, 7), 1s);
    CHECK(got2 == 7);
    // Any awaitable, not only tasks.
    Queue<int> q(1);
    co_await q.put(5);
    auto v = co_await wait_for(q.get(), 100ms);
    CHECK(v == std::optional<int>(5));
    CHECK_THROWS_AS(co_await wait_for(q.get(), 20ms), TimeoutError);
  };
  run_test(body());
}

TEST_CASE("a timeout that fires after the operation was handed its item does not leak a cancel",
          "[async][wait_for][cancel]") {
  auto body = []() -> Task<void> {
    Queue<int> q(1);
    // The getter is parked, the item is handed over, and the timer expires in the same loop turn
    // before the getter resumes: it must still get the item, and no cancellation may remain.
    auto consumer = [&]() -> Task<std::optional<int>> {
      co_return co_await wait_for(q.get(), 30ms);
    };
    auto h = spawn(consumer());
    co_await sleep(1ms);  // consumer now parked in get()
    // Block the loop past the deadline, then deliver: both the timer and the hand-off are due.
    auto until = Clock::now() + 40ms;
    while (Clock::now() < until) {
    }
    co_await q.put(9);
    auto got = co_await h;
    CHECK(got == std::optional<int>(9));
  };
  run_test(body());
}

TEST_CASE("an outer cancel during wait_for is Cancelled, not TimeoutError", "[async][wait_for]") {
  auto body = []() -> Task<void> {
    auto inner = []() -> Task<void> { co_await wait_for(sleep(5s), 2s); };
    auto h = spawn(inner());
    co_await sleep(10ms);
    h.cancel();
    co_await h.wait();
    CHECK_THROWS_AS(h.take_result().value(), Cancelled);
  };
  run_test(body());
}

TEST_CASE("nested wait_for: the inner deadline raises inside, the outer one outside",
          "[async][wait_for]") {
  auto body = []() -> Task<void> {
    auto inner_times_out = []() -> Task<bool> {
      try {
        co_await wait_for(sleep(1s), 20ms);
      } catch (const TimeoutError&) {
        co_return true;
      }
      co_return false;
    };
    auto got3 = co_await wait_for(inner_times_out(), 1s);
    CHECK(got3);

    auto outer_fires_first = []() -> Task<void> { co_await wait_for(sleep(1s), 500ms); };
    auto t0 = Clock::now();
    CHECK_THROWS_AS(co_await wait_for(outer_fires_first(), 30ms), TimeoutError);
    CHECK(ms_since(t0) < 300);
  };
  run_test(body());
}

TEST_CASE("an exception in a spawned task nobody awaits is reported and the loop goes on",
          "[async][spawn]") {
  std::vector<std::string> reports;
  Loop loop;
  loop.set_reporter([&](const std::string& m) { reports.push_back(m); });
  auto body = [&]() -> Task<int> {
    {
      auto h = spawn(fail_after(5ms, "lost in the background"), "bg");
    }  // handle dropped: the task is detached
    spawn(fail_after(1ms, "also detached"), "bg2").cancel();  // cancelled before it ran: silent
    co_await sleep(30ms);
    co_return co_await sleep_then(1ms, 11);  // the loop still serves other work
  };
  CHECK(run(loop, body()) == 11);
  REQUIRE(reports.size() == 1);
  CHECK(reports[0].find("never retrieved") != std::string::npos);
  CHECK(reports[0].find("'bg'") != std::string::npos);
  CHECK(reports[0].find("lost in the background") != std::string::npos);
}

TEST_CASE("an exception retrieved through the handle is not reported", "[async][spawn]") {
  std::vector<std::string> reports;
  Loop loop;
  loop.set_reporter([&](const std::string& m) { reports.push_back(m); });
  auto body = [&]() -> Task<void> {
    auto h = spawn(fail_after(1ms, "seen"));
    CHECK_THROWS_WITH(co_await h, "seen");
  };
  run(loop, body());
  CHECK(reports.empty());
}

TEST_CASE("spawned tasks run concurrently and can be awaited in any order", "[async][spawn]") {
  auto body = []() -> Task<void> {
    auto t0 = Clock::now();
    auto a = spawn(sleep_then(100ms, 1));
    auto b = spawn(sleep_then(50ms, 2));
    auto got4 = co_await a;
    CHECK(got4 == 1);
    CHECK(b.done());
    auto got5 = co_await b;
    CHECK(got5 == 2);
    CHECK(ms_since(t0) < 180);
    CHECK_THROWS_AS(co_await b, std::logic_error);  // a result is taken once
  };
  run_test(body());
}

TEST_CASE("run cancels what main left running and lets it clean up", "[async][spawn]") {
  bool cleaned = false;
  Loop loop;
  auto leftover = [&]() -> Task<void> {
    bool cancelled = false;
    try {
      co_await sleep(10s);
    } catch (const Cancelled&) {
      cancelled = true;
    }
    if (cancelled) {
      co_await sleep(5ms);
      cleaned = true;
      throw Cancelled{};
    }
  };
  auto body = [&]() -> Task<void> {
    spawn(leftover(), "leftover");
    co_await sleep(1ms);
  };
  auto t0 = Clock::now();
  run(loop, body());
  CHECK(cleaned);
  CHECK(loop.live_tasks() == 0);
  CHECK(ms_since(t0) < 1000);
}

TEST_CASE("when_any returns the first to finish and cancels the others", "[async][when_any]") {
  auto body = []() -> Task<void> {
    int cancelled = 0;
    auto slow = [&](int v) -> Task<int> {
      try {
        co_await sleep(2s);
      } catch (const Cancelled&) {
        ++cancelled;
        throw;
      }
      co_return v;
    };
    std::vector<Task<int>> ts;
    ts.push_back(slow(1));
    ts.push_back(sleep_then(20ms, 2));
    ts.push_back(slow(3));
    auto t0 = Clock::now();
    auto first = co_await when_any(std::move(ts));
    CHECK(first.index == 1);
    CHECK(first.result.value() == 2);
    CHECK(cancelled == 2);
    CHECK(ms_since(t0) < 500);
  };
  run_test(body());
}

TEST_CASE("as_completed yields outcomes in completion order", "[async][as_completed]") {
  auto body = []() -> Task<void> {
    std::vector<Task<int>> ts;
    ts.push_back(sleep_then(60ms, 0));
    ts.push_back(fail_after(20ms, "one"));
    ts.push_back(sleep_then(40ms, 2));
    auto gen = as_completed(std::move(ts));
    std::vector<std::size_t> order;
    while (auto c = co_await gen.next()) {
      order.push_back(c->index);
      if (c->index == 1) CHECK(describe(c->result.error()) == "one");
      if (c->index == 2) CHECK(c->result.value() == 2);
    }
    CHECK(order == std::vector<std::size_t>{1, 2, 0});
  };
  run_test(body());
}

TEST_CASE("abandoning as_completed early cancels what is still running", "[async][as_completed]") {
  auto body = []() -> Task<void> {
    int cancelled = 0;
    auto slow = [&]() -> Task<int> {
      try {
        co_await sleep(5s);
      } catch (const Cancelled&) {
        ++cancelled;
        throw;
      }
      co_return 0;
    };
    {
      std::vector<Task<int>> ts;
      ts.push_back(sleep_then(1ms, 1));
      ts.push_back(slow());
      ts.push_back(slow());
      auto gen = as_completed(std::move(ts));
      auto first = co_await gen.next();
      CHECK(first->index == 0);
    }  // generator destroyed with two children running
    co_await sleep(20ms);
    CHECK(cancelled == 2);
  };
  run_test(body());
}

TEST_CASE("an async generator yields values across awaits and ends with nullopt",
          "[async][generator]") {
  auto body = []() -> Task<void> {
    auto ticks = [](int n) -> Generator<int> {
      for (int i = 0; i < n; ++i) {
        co_await sleep(1ms);
        co_yield i* i;
      }
    };
    std::vector<int> got;
    auto g = ticks(4);
    while (auto v = co_await g.next()) got.push_back(*v);
    CHECK(got == std::vector<int>{0, 1, 4, 9});
    auto got6 = co_await g.next();
    CHECK_FALSE(got6);

    auto broken = []() -> Generator<int> {
      co_yield 1;
      throw std::runtime_error("generator failed");
    };
    auto b = broken();
    auto got7 = co_await b.next();
    CHECK(got7 == std::optional<int>(1));
    CHECK_THROWS_WITH(co_await b.next(), "generator failed");
  };
  run_test(body());
}

TEST_CASE("a cancelled task may catch Cancelled, await its cleanup, and end normally",
          "[async][cancel]") {
  auto body = []() -> Task<void> {
    std::vector<std::string> log;
    auto worker = [&]() -> Task<int> {
      try {
        co_await sleep(5s);
      } catch (const Cancelled&) {
        log.push_back("cancelled");
      }
      co_await sleep(5ms);  // cancellation is delivered once: this sleep is not interrupted
      log.push_back("cleaned");
      co_return 3;
    };
    auto h = spawn(worker());
    co_await sleep(5ms);
    h.cancel();
    auto got8 = co_await h;
    CHECK(got8 == 3);
    CHECK(log == std::vector<std::string>{"cancelled", "cleaned"});
  };
  run_test(body());
}

TEST_CASE("a task cancelled before it started never runs", "[async][cancel]") {
  auto body = []() -> Task<void> {
    bool ran = false;
    auto never = [&]() -> Task<void> {
      ran = true;
      co_return;
    };
    auto h = spawn(never());
    h.cancel();
    co_await h.wait();
    CHECK_FALSE(ran);
    CHECK_THROWS_AS(h.take_result().value(), Cancelled);
  };
  run_test(body());
}

TEST_CASE("check_cancel stops a busy computation between steps", "[async][cancel]") {
  auto body = []() -> Task<void> {
    int steps = 0;
    auto busy = [&]() -> Task<void> {
      for (;;) {
        ++steps;
        co_await check_cancel();
        if (steps % 100 == 0) co_await sleep(0ms);
      }
    };
    auto h = spawn(busy());
    co_await sleep(5ms);
    h.cancel();
    co_await h.wait();
    CHECK_THROWS_AS(h.take_result().value(), Cancelled);
    CHECK(steps > 0);
  };
  run_test(body());
}
