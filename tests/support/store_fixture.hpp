// The store of queue "q" as a daemon holds it, on a test Redis: its clients, settings and settler,
// for the protocol's tests (test_store.cpp, test_priorities.cpp).
#pragma once

#include <optional>
#include <set>
#include <stdexcept>
#include <string>

#include "store/held.hpp"
#include "store/queue_store.hpp"
#include "store/settler.hpp"
#include "tests/support/redis_server.hpp"

namespace jq::test {

using namespace std::chrono_literals;

inline const std::set<std::string> kHandlers{"h", "other"};

// Remembers what became of a settlement.
struct Note final : store::OnSettled {
  std::optional<store::Settled> how;
  void settled(store::Settled s) noexcept override { how = s; }
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
    rules.default_handler = "h";
    rules.handlers = &kHandlers;
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
    store.emplace(main, blocking, settings, rules);
    settler.emplace(*store);
    settler->start();
  }
  async::Task<void> lease() { (void)(co_await store->register_lease()).value(); }
  /// up(), a lease, and the first `n` pending jobs fetched.
  async::Task<store::Fetched> up_and_fetch(std::size_t n) {
    co_await up();
    co_await lease();
    co_return co_await fetch(n);
  }
  async::Task<store::Fetched> fetch(std::size_t n) {
    store::OpResult<store::Fetched> got = co_await store->fetch(n);
    co_return std::move(got).value();
  }
  /// Pushes a settlement and waits until it is written; what became of it.
  async::Task<store::Settled> settle(store::Settlement s) {
    Note note;
    s.notify = &note;
    settler->push(std::move(s));
    bool flushed = co_await settler->flush(5s);
    if (!flushed || !note.how) throw std::runtime_error("settlement not written");
    co_return *note.how;
  }
  /// What the Redis source does with the jobs a fetch could not claim: each waits in delayed,
  /// and the claim that owns its id is checked.
  async::Task<void> wait_them(store::Fetched& got) {
    for (auto& [r, owner] : got.waits) settler->push(store::held::wait(r));
    for (auto& [r, owner] : got.waits) co_await store->check_claim(r.id, owner);
    const bool flushed = co_await settler->flush(5s);
    if (!flushed) throw std::runtime_error("waits not written");
  }
  async::Task<store::Settled> ok(const store::Reading& r, std::string result = "done") {
    co_return co_await settle(store::held::ok(r, "1000", std::move(result)));
  }
  async::Task<void> down() {
    co_await settler->stop();
    co_await main.stop();
    co_await blocking.stop();
  }
  redis::Client main;
  redis::Client blocking;
  store::Settings settings;
  job::Rules rules;
  std::optional<store::QueueStore> store;
  std::optional<store::Settler> settler;
};

}  // namespace jq::test
