// SyncClient: a Connection and a loop run until each reply is in; commands, scripts,
// pipelining, a subscription.
#include "redis/sync_client.hpp"

#include <algorithm>
#include <cctype>
#include <deque>
#include <map>

#include "async/async.hpp"
#include "redis/cluster.hpp"

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

// The key a command is routed by on a cluster: the first key of a script (EVALSHA sha numkeys
// key...), none for commands of the connection or the server, else the first argument.
std::optional<std::string_view> key_of(std::span<const std::string_view> argv) {
  if (argv.empty()) return std::nullopt;
  const auto is = [&](std::string_view name) {
    return argv[0].size() == name.size() &&
           std::equal(name.begin(), name.end(), argv[0].begin(), [](char a, char b) {
             return a == std::toupper(static_cast<unsigned char>(b));
           });
  };
  if (is("EVAL") || is("EVALSHA") || is("EVAL_RO") || is("EVALSHA_RO") || is("FCALL")) {
    if (argv.size() > 3 && argv[2] != "0") return argv[3];
    return std::nullopt;
  }
  for (const char* keyless :
       {"PING", "INFO", "CONFIG", "CLIENT", "WAIT", "TIME", "SCRIPT", "CLUSTER", "SUBSCRIBE",
        "PSUBSCRIBE", "PUBLISH", "DBSIZE", "ROLE", "ECHO", "HELLO", "AUTH", "SELECT", "COMMAND"}) {
    if (is(keyless)) return std::nullopt;
  }
  if (argv.size() > 1) return argv[1];
  return std::nullopt;
}

constexpr int kMaxRedirects = 16;
constexpr Millis kDetourPauseMin = 20ms;
constexpr Millis kDetourPauseMax = 500ms;

}  // namespace

struct SyncClient::State {
  std::shared_ptr<async::Loop> loop;  // declared first: it outlives the connections
  Url url;
  Millis timeout{};
  // A single Redis (or the primary the sentinels named): one connection. A cluster: one per
  // node used, `conn` the last one a command went to (where WAIT and a subscription go).
  std::unique_ptr<Connection> single;
  std::shared_ptr<SlotMap> slots;
  std::map<std::string, std::unique_ptr<Connection>> nodes;  // by host:port
  Connection* conn = nullptr;
  // append()ed, not read() yet; on a cluster with the command, sent again if redirected.
  struct Sent {
    PendingReply reply;
    std::vector<std::string> argv;
  };
  std::deque<Sent> pipeline;

  bool cluster() const noexcept { return slots != nullptr; }

  ConnectOptions options(const Url& u) const {
    ConnectOptions o;
    o.url = u;
    o.connect_timeout = o.command_timeout = timeout;
    return o;
  }

  // Runs the loop until `task` is done: what it awaits has timeouts of its own (the connect
  // and command timeouts of each connection it opens).
  template <class T>
  OpResult<T> block_on(async::Task<T> task) {
    auto h = async::spawn(std::move(task), "sync client");
    loop->run_until([&] { return h.done(); });
    auto result = h.take_result();
    try {
      return std::move(result.value());
    } catch (const std::exception& e) {
      return OpError{OpError::Kind::connection, e.what()};
    }
  }

  void pause(Millis d) {
    bool done = false;
    async::Timer timer;
    timer.start(
        *loop, d, [](void* f) noexcept { *static_cast<bool*>(f) = true; }, &done);
    loop->run_until([&] { return done; });
  }

  // The connection to host:port, opened if there is none alive.
  OpResult<Connection*> node(const std::string& host, int port) {
    const std::string at = host + ":" + std::to_string(port);
    auto& c = nodes[at];
    if (!c || !c->alive()) {
      Url u = url;
      u.kind = Url::Kind::tcp;
      u.host = host;
      u.port = port;
      auto opened = block_on(Connection::open(options(u)));
      if (!opened.ok()) {
        slots->stale();
        return opened.error();
      }
      c = std::move(*opened);
    }
    return c.get();
  }

  // Where a command goes: the node serving its key's slot (the last one used for a command
  // without a key).
  OpResult<Connection*> route(std::span<const std::string_view> argv) {
    if (!cluster()) return single.get();
    auto key = key_of(argv);
    if (!key && conn && conn->alive()) return conn;
    const int slot = slot_of(key ? *key : std::string_view());
    auto primary = block_on(slots->primary_for(options(url), slot));
    if (!primary.ok()) return primary.error();
    auto c = node(primary->host, primary->port);
    if (c.ok()) conn = *c;
    return c;
  }

  // A sent command's reply; on a cluster, a redirect followed (MOVED, ASK, a pause for TRYAGAIN
  // and CLUSTERDOWN) by sending it again, up to kMaxRedirects times.
  OpResult<Reply> settle(PendingReply& pending, std::span<const std::string_view> argv) {
    loop->run_until([&] { return pending.ready(); });
    OpResult<Reply> r = pending.take();
    Millis pause_for = kDetourPauseMin;
    for (int i = 0; cluster() && i < kMaxRedirects; ++i) {
      if (!r.ok()) return r;
      Detour d = detour_of(*r);
      if (d.kind == Detour::Kind::none) return r;
      OpResult<Connection*> to = OpError{};
      if (d.kind == Detour::Kind::moved) {
        slots->moved(d.slot, d.host, d.port);
        to = route(argv);
      } else if (d.kind == Detour::Kind::ask) {
        // Only this command goes to the slot's new node, announced by ASKING; the map stays.
        to = node(d.host, d.port);
        if (to.ok()) (void)(*to)->command("ASKING");
      } else {
        if (d.wait()) {
          this->pause(pause_for);
          pause_for = std::min(pause_for * 2, kDetourPauseMax);
        }
        slots->stale();
        to = route(argv);
      }
      if (!to.ok()) return to.error();
      PendingReply again = (*to)->send(argv);
      loop->run_until([&] { return again.ready(); });
      r = again.take();
    }
    return r;
  }
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
  s->timeout = timeout;
  if (url.kind == Url::Kind::cluster) {
    // The map, and a first node: the one serving slot 0 (a cluster that answers at all).
    s->slots = std::make_shared<SlotMap>();
    const std::string_view none[] = {"PING"};
    auto first = s->route(std::span<const std::string_view>(none));
    if (!first.ok()) return first.error();
  } else {
    auto opened = s->block_on(Connection::open(s->options(url)));
    if (!opened.ok()) return opened.error();
    s->single = std::move(*opened);
    s->conn = s->single.get();
  }
  return SyncClient(std::move(s));
}

OpResult<Reply> SyncClient::call(std::span<const std::string_view> argv) {
  auto to = s_->route(argv);
  if (!to.ok()) return to.error();
  PendingReply pending = (*to)->send(argv);
  auto r = s_->settle(pending, argv);
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
  if (!s_->cluster()) {
    auto r = command("SCRIPT", "LOAD", script.source());
    if (!r) return r.error();
    return Done{};
  }
  // Into every primary: a pipelined EVALSHA may go to any of them.
  for (const auto& n : s_->slots->primaries()) {
    auto c = s_->node(n.host, n.port);
    if (!c.ok()) return c.error();
    PendingReply p = (*c)->command("SCRIPT", "LOAD", script.source());
    s_->loop->run_until([&] { return p.ready(); });
    auto r = p.take();
    if (!r) return r.error();
    if (r->is_error()) return OpError{OpError::Kind::reply, r->str};
  }
  return Done{};
}

void SyncClient::append(std::span<const std::string_view> argv) {
  State::Sent sent;
  auto to = s_->route(argv);
  if (!to.ok()) {
    auto* slot = new detail::ReplySlot;
    slot->done = slot->failed = true;
    slot->error = to.error().message;
    sent.reply = PendingReply(slot);
  } else {
    sent.reply = (*to)->send(argv);
  }
  if (s_->cluster()) sent.argv.assign(argv.begin(), argv.end());
  s_->pipeline.push_back(std::move(sent));
}

void SyncClient::append(const std::vector<std::string>& argv) {
  std::vector<std::string_view> views(argv.begin(), argv.end());
  append(std::span<const std::string_view>(views));
}

OpResult<Reply> SyncClient::read() {
  if (s_->pipeline.empty()) {
    return OpError{OpError::Kind::connection, "redis " + s_->url.display() + ": nothing to read"};
  }
  State::Sent sent = std::move(s_->pipeline.front());
  s_->pipeline.pop_front();
  std::vector<std::string_view> argv(sent.argv.begin(), sent.argv.end());
  auto r = s_->settle(sent.reply, std::span<const std::string_view>(argv));
  if (!r) return r.error();
  return as_result(std::move(*r));
}

OpResult<Done> SyncClient::subscribe(const std::string& channel) {
  // On a cluster a PUBLISH reaches every node: any one will do (the last used).
  auto r = command("SUBSCRIBE", channel);
  if (!r) return r.error();
  return Done{};
}

OpResult<std::optional<Reply>> SyncClient::next_message(Millis slice) {
  Connection& conn = *s_->conn;  // the subscribed one
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
