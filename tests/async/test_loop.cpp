// The loop itself: fd readiness, signals, to_thread, debug mode, lag, and fairness under load.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "async/async.hpp"
#include "tests/support/run.hpp"

using namespace jq::async;
using namespace std::chrono_literals;
using jq::test::ms_since;
using jq::test::run_test;

namespace {

struct Pipe {
  int r = -1, w = -1;
  Pipe() {
    int fds[2];
    REQUIRE(::pipe2(fds, O_NONBLOCK | O_CLOEXEC) == 0);
    r = fds[0];
    w = fds[1];
  }
  ~Pipe() {
    ::close(r);
    ::close(w);
  }
};

}  // namespace

TEST_CASE("readable() suspends until data arrives; a timeout returns false", "[async][io]") {
  auto body = []() -> Task<void> {
    Pipe p;
    auto got9 = co_await readable(p.r, 10ms);
    CHECK_FALSE(got9);
    auto writer = [&]() -> Task<void> {
      co_await sleep(20ms);
      REQUIRE(::write(p.w, "x", 1) == 1);
    };
    auto h = spawn(writer());
    auto t0 = Clock::now();
    auto got10 = co_await readable(p.r);
    CHECK(got10);
    CHECK(ms_since(t0) >= 15);
    char c;
    CHECK(::read(p.r, &c, 1) == 1);
    auto got11 = co_await writable(p.w);
    CHECK(got11);
    co_await h;
  };
  run_test(body());
}

TEST_CASE("a cancelled fd wait removes its event", "[async][io][cancel]") {
  auto body = []() -> Task<void> {
    Pipe p;
    auto waiter = [&]() -> Task<bool> { co_return co_await readable(p.r); };
    auto h = spawn(waiter());
    co_await sleep(1ms);
    h.cancel();
    co_await h.wait();
    CHECK_THROWS_AS(h.take_result().value(), Cancelled);
    // The fd becomes readable after the cancel: nothing may fire into the dead waiter.
    REQUIRE(::write(p.w, "x", 1) == 1);
    co_await sleep(5ms);
  };
  run_test(body());
}

TEST_CASE("signals arrive inside the loop, in order, queued while nobody waits",
          "[async][signal]") {
  auto body = []() -> Task<void> {
    SignalSet sigs(Loop::current(), {SIGUSR1, SIGUSR2});
    ::raise(SIGUSR2);
    co_await sleep(1ms);  // delivered while nobody waits
    auto later = [&]() -> Task<void> {
      co_await sleep(5ms);
      ::kill(::getpid(), SIGUSR1);
    };
    auto h = spawn(later());
    auto got12 = co_await sigs.next();
    CHECK(got12 == SIGUSR2);
    auto got13 = co_await sigs.next();
    CHECK(got13 == SIGUSR1);
    co_await h;
  };
  run_test(body());
}

TEST_CASE("to_thread runs blocking work off the loop and resumes on it", "[async][threads]") {
  auto body = []() -> Task<void> {
    auto loop_thread = std::this_thread::get_id();
    std::atomic<int> ran{0};
    std::atomic<std::thread::id> worker;
    // The loop keeps serving a timer while four threads each block for 50 ms.
    int ticks = 0;
    auto ticker = [&]() -> Task<void> {
      for (;;) {
        co_await sleep(5ms);
        ++ticks;
      }
    };
    auto t = spawn(ticker());
    auto job = [&](int v) -> Task<int> {
      auto work = [&, v] {
        std::this_thread::sleep_for(50ms);
        worker = std::this_thread::get_id();
        ++ran;
        return v * 10;
      };
      co_return co_await to_thread(std::move(work));
    };
    std::vector<Task<int>> jobs;
    for (int i = 0; i < 4; ++i) jobs.push_back(job(i));
    auto t0 = Clock::now();
    auto out = co_await gather(std::move(jobs));
    CHECK(out == std::vector<int>{0, 10, 20, 30});
    CHECK(ms_since(t0) < 150);  // in parallel, not one after another
    CHECK(ran == 4);
    CHECK(worker != loop_thread);
    CHECK(std::this_thread::get_id() == loop_thread);
    CHECK(ticks >= 5);
    t.cancel();
    co_await t.wait();

    CHECK_THROWS_WITH(co_await to_thread([]() -> int { throw std::runtime_error("in thread"); }),
                      "in thread");
  };
  run_test(body());
}

TEST_CASE("a task cancelled during to_thread gets Cancelled at once; the result is dropped",
          "[async][threads][cancel]") {
  auto body = []() -> Task<void> {
    std::atomic<bool> finished{false};
    auto waiter = [&]() -> Task<int> {
      co_return co_await to_thread([&] {
        std::this_thread::sleep_for(100ms);
        finished = true;
        return 1;
      });
    };
    auto h = spawn(waiter());
    co_await sleep(5ms);
    auto t0 = Clock::now();
    h.cancel();
    co_await h.wait();
    CHECK(ms_since(t0) < 50);
    CHECK_THROWS_AS(h.take_result().value(), Cancelled);
    // The thread finishes later; its completion must find nobody and free itself.
    auto deadline = Clock::now() + 2s;
    while (!finished && Clock::now() < deadline) co_await sleep(5ms);
    CHECK(finished);
    co_await sleep(5ms);
  };
  run_test(body());
}

TEST_CASE("debug mode reports a step that holds the loop, with the task's name", "[async][debug]") {
  std::vector<std::string> reports;
  Loop loop;
  loop.set_reporter([&](const std::string& m) { reports.push_back(m); });
  loop.set_debug(true, 20ms);
  auto hog = []() -> Task<void> {
    co_await sleep(1ms);
    std::this_thread::sleep_for(40ms);  // blocking on the loop: exactly what debug mode catches
  };
  auto body = [&]() -> Task<void> {
    co_await spawn(hog(), "hog");
    co_await sleep(300ms);  // let the lag probe fire at least once after the stall
  };
  run(loop, body());
  bool named = false;
  for (auto& r : reports)
    named =
        named || (r.find("slow step") != std::string::npos && r.find("'hog'") != std::string::npos);
  CHECK(named);
}

TEST_CASE("loop lag shows a loop held by blocking work", "[async][debug]") {
  Loop loop;
  auto body = [&]() -> Task<void> {
    co_await sleep(260ms);  // the probe is due every 250 ms
    loop.take_max_lag();
    std::this_thread::sleep_for(300ms);
    co_await sleep(300ms);
  };
  run(loop, body());
  CHECK(loop.take_max_lag() >= 40ms);
}

TEST_CASE("a busy ready queue does not starve timers or I/O", "[async][fairness]") {
  auto body = []() -> Task<void> {
    bool stop = false;
    long spins = 0;
    // Two tasks that only ever yield to each other through a queue: always ready.
    Queue<int> ping(1), pong(1);
    auto a = [&]() -> Task<void> {
      while (!stop) {
        co_await ping.put(1);
        co_await pong.get();
        ++spins;
      }
    };
    auto b = [&]() -> Task<void> {
      while (!stop) {
        co_await ping.get();
        co_await pong.put(1);
      }
    };
    auto ha = spawn(a());
    auto hb = spawn(b());
    auto t0 = Clock::now();
    co_await sleep(20ms);  // the timer must fire although the queue is never empty
    auto took = ms_since(t0);
    stop = true;
    ha.cancel();
    hb.cancel();
    co_await ha.wait();
    co_await hb.wait();
    CHECK(took < 60);
    CHECK(spins > 1000);
  };
  run_test(body());
}

TEST_CASE("shutdown abandons a task that ignores cancellation, after the deadline",
          "[async][spawn]") {
  std::vector<std::string> reports;
  Loop loop;
  loop.set_reporter([&](const std::string& m) { reports.push_back(m); });
  auto stubborn = []() -> Task<void> {
    for (;;) {
      try {
        co_await sleep(10ms);
      } catch (const Cancelled&) {
      }
    }
  };
  auto body = [&]() -> Task<void> {
    spawn(stubborn(), "stubborn");
    co_await sleep(1ms);
  };
  auto h = spawn(body());
  loop.run_until([&] { return h.done(); });
  auto t0 = Clock::now();
  loop.shutdown(100ms);
  CHECK(ms_since(t0) < 1000);
  CHECK(loop.live_tasks() == 0);
  REQUIRE(reports.size() == 1);
  CHECK(reports[0].find("'stubborn'") != std::string::npos);
}
