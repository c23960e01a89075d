// SyncClient: a Connection and a loop run until each reply is in; commands, scripts,
// pipelining, a subscription.
#include "redis/sync_client.hpp"

#include <deque>

#include "async/async.hpp"

namespace jq::redis {
namespace {

// The loop SyncClients of this thread share when the thread has none of its own.
thread_local std::weak_ptr<async::Loop> shared_loop;

std::shared_ptr<async::Loop> loop_for_thread() {
  if (auto loop = shared_loop.lock()) return loop;
  if (async::Loop* current = async::Loop::current_or_null()) {
    return std::shared_ptr<async::Loop>(current, [](async::Loop*) {});  // borrowed
  }
  auto loop = std::make_shared<async::Loop>();
  shared_loop = loop;
  return loop;
}

OpResult<Reply> as_result(Reply r) {
  if (r.is_error()) return OpError{OpError::Kind::reply, r.str};
  return r;
}

}  // namespace

struct SyncClient::State {
  std::shared_ptr<async::Loop> loop;  // declared first: it outlives the connection
  std::unique_ptr<Connection> conn;
  std::deque<PendingReply> pipeline;  // append()ed, not read() yet
  Url url;
};

SyncClient::SyncClient(std::unique_ptr<State> s) noexcept : s_(std::move(s)) {}
SyncClient::SyncClient(SyncClient&&) noexcept = default;
SyncClient& SyncClient::operator=(SyncClient&&) noexcept = default;
SyncClient::~SyncClient() = default;

const Url& SyncClient::url() const noexcept {
  return s_->url;
}

OpResult<SyncClient> SyncClient::connect(const Url& url, Millis timeout) {
  auto s = std::make_unique<State>();
  s->loop = loop_for_thread();
  s->url = url;
  auto opening = async::spawn(Connection::open(ConnectOptions{url, timeout, timeout}), "connect");
  s->loop->run_until([&] { return opening.done(); });
  if (!opening.done()) {
    opening.cancel();
    s->loop->run_until([&] { return opening.done(); });
  }
  auto result = opening.take_result();
  try {
    s->conn = std::move(result.value());
  } catch (const std::exception& e) {
    return OpError{OpError::Kind::connection, e.what()};
  }
  return SyncClient(std::move(s));
}

OpResult<Reply> SyncClient::wait(PendingReply& pending) {
  s_->loop->run_until([&] { return pending.ready(); });
  return pending.take();
}

OpResult<Reply> SyncClient::call(std::span<const std::string_view> argv) {
  PendingReply pending = s_->conn->send(argv);
  auto r = wait(pending);
  if (!r) return r.error();
  return as_result(std::move(*r));
}

OpResult<Reply> SyncClient::call(const std::vector<std::string>& argv) {
  std::vector<std::string_view> v(argv.begin(), argv.end());
  return call(std::span<const std::string_view>(v));
}

OpResult<Reply> SyncClient::run(const Script& script, const std::vector<std::string>& keys,
                                const std::vector<std::string>& args) {
  const std::string nkeys = std::to_string(keys.size());
  auto sha = script.argv(false, nkeys, keys, args);
  auto r = call(std::span<const std::string_view>(sha));
  if (!r && r.error().kind == OpError::Kind::reply &&
      r.error().message.find("NOSCRIPT") != std::string::npos) {
    auto source = script.argv(true, nkeys, keys, args);
    r = call(std::span<const std::string_view>(source));
  }
  if (!r && r.error().kind == OpError::Kind::reply) {
    return OpError{OpError::Kind::reply, "script " + script.name() + ": " + r.error().message};
  }
  return r;
}

OpResult<Done> SyncClient::load(const Script& script) {
  auto r = command("SCRIPT", "LOAD", script.source());
  if (!r) return r.error();
  return Done{};
}

void SyncClient::append(std::span<const std::string_view> argv) {
  s_->pipeline.push_back(s_->conn->send(argv));
}

void SyncClient::append(const std::vector<std::string>& argv) {
  std::vector<std::string_view> views(argv.begin(), argv.end());
  append(std::span<const std::string_view>(views));
}

OpResult<Reply> SyncClient::read() {
  if (s_->pipeline.empty()) {
    return OpError{OpError::Kind::connection, "redis " + s_->url.display() + ": nothing to read"};
  }
  PendingReply pending = std::move(s_->pipeline.front());
  s_->pipeline.pop_front();
  auto r = wait(pending);
  if (!r) return r.error();
  return as_result(std::move(*r));
}

OpResult<Done> SyncClient::subscribe(const std::string& channel) {
  auto r = command("SUBSCRIBE", channel);
  if (!r) return r.error();
  return Done{};
}

OpResult<std::optional<Reply>> SyncClient::next_message(Millis slice) {
  Connection& conn = *s_->conn;
  bool late = false;
  async::Timer timer;
  if (conn.messages().empty() && conn.alive()) {
    timer.start(
        *s_->loop, slice, [](void* flag) noexcept { *static_cast<bool*>(flag) = true; }, &late);
    s_->loop->run_until([&] { return late || !conn.messages().empty() || !conn.alive(); });
    timer.stop();
  }
  if (!conn.messages().empty()) {
    Reply r = std::move(conn.messages().front());
    conn.messages().erase(conn.messages().begin());
    if (conn.messages().empty()) conn.message_came().clear();
    return std::optional<Reply>(std::move(r));
  }
  if (!conn.alive()) return OpError{OpError::Kind::connection, conn.error()};
  return std::optional<Reply>();
}

}  // namespace jq::redis
