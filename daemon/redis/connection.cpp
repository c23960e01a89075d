// One hiredis async connection: connect with a timeout, commands with deadlines, clean failure.
#include "redis/connection.hpp"

#include "async/resolve.hpp"

#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <cstring>

namespace jq::redis {
namespace {

async::Duration check_interval(Millis command_timeout) {
  auto quarter = command_timeout / 4;
  return std::clamp<async::Duration>(quarter, 20ms, 1s);
}

}  // namespace

void PendingReply::release() noexcept {
  if (!s_) return;
  s_->owned = false;
  s_->waiter = nullptr;
  if (!s_->in_flight) delete s_;
  s_ = nullptr;
}

Connection::Connection(ConnectOptions options) : options_(std::move(options)) {}

Connection::~Connection() {
  destroying_ = true;
  if (auto* loop = async::Loop::current_or_null()) loop->cancel_flush(*this);
  deadline_timer_.stop();
  if (ac_) {
    if (error_.empty()) error_ = describe("connection closed");
    redisAsyncContext* ac = std::exchange(ac_, nullptr);
    redisAsyncFree(ac);  // runs every pending reply callback with NULL, synchronously
  }
}

std::string Connection::describe(const char* what) const {
  return "redis " + options_.url.display() + ": " + what;
}

async::Task<std::unique_ptr<Connection>> Connection::open(ConnectOptions options) {
  const Url& url = options.url;
  std::string ip;
  std::string unresolved;
  if (url.kind == Url::Kind::tcp) {
    try {
      ip = co_await async::resolve_host(url.host);
    } catch (const std::runtime_error& e) {
      unresolved = e.what();
    }
  }
  std::unique_ptr<Connection> conn(new Connection(std::move(options)));
  if (!unresolved.empty()) throw ConnectionError(conn->describe(unresolved.c_str()));
  redisAsyncContext* ac = conn->options_.url.kind == Url::Kind::tcp
                              ? redisAsyncConnect(ip.c_str(), conn->options_.url.port)
                              : redisAsyncConnectUnix(conn->options_.url.path.c_str());
  if (!ac) throw ConnectionError(conn->describe("cannot allocate a connection"));
  if (ac->err) {
    std::string why = ac->errstr;
    redisAsyncFree(ac);
    throw ConnectionError(conn->describe(("cannot connect: " + why).c_str()));
  }
  cap_reader(ac->c.reader);
  ac->data = conn.get();
  conn->ac_ = ac;
  redisLibeventAttach(ac, async::Loop::current().base());
  redisAsyncSetConnectCallback(ac, &Connection::on_connect);
  redisAsyncSetDisconnectCallback(ac, &Connection::on_disconnect);

  bool in_time = true;
  try {
    co_await async::wait_for(conn->connect_done_.wait(), conn->options_.connect_timeout);
  } catch (const async::TimeoutError&) {
    in_time = false;
  }
  if (!in_time) {
    throw ConnectionError(conn->describe(
        ("no connection within " + std::to_string(conn->options_.connect_timeout.count()) + " ms")
            .c_str()));
  }
  if (!conn->alive()) throw ConnectionError(conn->error_);
  // Keepalive probes find a peer that vanished (a cut network) even on an idle connection.
  if (conn->options_.url.kind == Url::Kind::tcp) redisEnableKeepAlive(&conn->ac_->c);

  conn->deadline_timer_.start(
      async::Loop::current(), check_interval(conn->options_.command_timeout),
      [](void* self) noexcept { static_cast<Connection*>(self)->check_deadlines(); }, conn.get());

  // AUTH and SELECT go out together; both replies are checked.
  const Url& u = conn->options_.url;
  PendingReply auth, select;
  if (!u.password.empty()) {
    auth = u.user.empty() ? conn->command("AUTH", u.password)
                          : conn->command("AUTH", u.user, u.password);
  }
  std::string db = std::to_string(u.db);
  if (u.db != 0) select = conn->command("SELECT", db);
  if (!u.password.empty()) {
    Reply r = co_await auth;
    if (r.is_error()) throw ConnectionError(conn->describe(("AUTH failed: " + r.str).c_str()));
  }
  if (u.db != 0) {
    Reply r = co_await select;
    if (r.is_error()) throw ConnectionError(conn->describe(("SELECT failed: " + r.str).c_str()));
  }
  co_return conn;
}

PendingReply Connection::send(std::span<const std::string_view> argv, Millis extra) {
  auto* s = new detail::ReplySlot;
  PendingReply handle(s);
  if (!alive()) {
    s->done = s->failed = true;
    s->error = error_.empty() ? describe("not connected") : error_;
    return handle;
  }
  constexpr std::size_t kInline = 16;
  const char* ptrs_inline[kInline];
  std::size_t lens_inline[kInline];
  std::vector<const char*> ptrs_heap;
  std::vector<std::size_t> lens_heap;
  const char** ptrs = ptrs_inline;
  std::size_t* lens = lens_inline;
  if (argv.size() > kInline) {
    ptrs_heap.resize(argv.size());
    lens_heap.resize(argv.size());
    ptrs = ptrs_heap.data();
    lens = lens_heap.data();
  }
  for (std::size_t i = 0; i < argv.size(); ++i) {
    ptrs[i] = argv[i].data();
    lens[i] = argv[i].size();
  }
  s->in_flight = true;
  if (redisAsyncCommandArgv(ac_, &Connection::on_reply, s, static_cast<int>(argv.size()), ptrs,
                            lens) != REDIS_OK) {
    s->in_flight = false;
    s->done = s->failed = true;
    s->error = describe("cannot send a command on a closing connection");
    return handle;
  }
  s->deadline = async::Clock::now() + options_.command_timeout + extra;
  push(s);
  async::Loop::current().flush_after_step(*this);
  return handle;
}

// Writes what hiredis has buffered now, as its libevent adapter would at the next poll; what the
// socket does not take at once is left to that adapter's write event, as before. A write error
// closes the connection through on_disconnect, as from the adapter. Not before the connection is
// up: hiredis' write handler would take over the connect.
void Connection::flush() noexcept {
  if (ac_ && connected_) redisAsyncHandleWrite(ac_);
}

void Connection::push(detail::ReplySlot* s) noexcept {
  s->next = nullptr;
  if (tail_) {
    tail_->next = s;
  } else {
    head_ = s;
  }
  tail_ = s;
  ++in_flight_;
}

void Connection::pop(detail::ReplySlot* s) noexcept {
  // Replies come in command order, so `s` is the head; be tolerant anyway.
  detail::ReplySlot** link = &head_;
  detail::ReplySlot* prev = nullptr;
  while (*link && *link != s) {
    prev = *link;
    link = &(*link)->next;
  }
  if (!*link) return;
  *link = s->next;
  if (tail_ == s) tail_ = prev;
  s->next = nullptr;
  --in_flight_;
}

void Connection::check_deadlines() noexcept {
  if (head_ && async::Clock::now() > head_->deadline) {
    fail(describe(("no reply within " + std::to_string(options_.command_timeout.count()) +
                   " ms; dropping the connection")
                      .c_str()));
    return;
  }
  if (ac_) {
    deadline_timer_.start(
        async::Loop::current(), check_interval(options_.command_timeout),
        [](void* self) noexcept { static_cast<Connection*>(self)->check_deadlines(); }, this);
  }
}

void Connection::fail(const std::string& reason) noexcept {
  if (!ac_) return;
  if (error_.empty()) error_ = reason;
  redisAsyncContext* ac = std::exchange(ac_, nullptr);
  // Callbacks run now with NULL replies and read error_; on_disconnect marks us closed.
  redisAsyncFree(ac);
  mark_closed(reason);
}

void Connection::mark_closed(const std::string& reason) noexcept {
  connected_ = false;
  ac_ = nullptr;
  if (error_.empty()) error_ = reason;
  deadline_timer_.stop();
  connect_done_.set();
  closed_.set();
}

void Connection::on_connect(const redisAsyncContext* ac, int status) noexcept {
  auto* self = static_cast<Connection*>(ac->data);
  if (!self) return;
  if (status == REDIS_OK) {
    self->connected_ = true;
    self->connect_done_.set();
    return;
  }
  // hiredis frees the context when this returns.
  self->mark_closed(self->describe((std::string("cannot connect: ") + ac->errstr).c_str()));
}

void Connection::on_disconnect(const redisAsyncContext* ac, int status) noexcept {
  auto* self = static_cast<Connection*>(ac->data);
  if (!self || self->destroying_) {
    (void)refused_array();
    return;
  }
  // hiredis frees the context when this returns.
  self->mark_closed(status == REDIS_OK
                        ? self->describe("connection closed")
                        : self->describe(("connection lost: " + reader_error(ac->errstr)).c_str()));
  (void)refused_array();  // said: the next connection's errors are its own
}

void Connection::on_reply(redisAsyncContext* ac, void* reply, void* privdata) noexcept {
  auto* s = static_cast<detail::ReplySlot*>(privdata);
  auto* self = static_cast<Connection*>(ac->data);
  if (self) self->pop(s);
  s->in_flight = false;
  if (reply) {
    try {
      s->reply = Reply::copy(*static_cast<redisReply*>(reply));
    } catch (...) {
      s->failed = true;
      s->error = "out of memory copying a Redis reply";
    }
  } else {
    s->failed = true;
    if (self && !self->error_.empty()) {
      s->error = self->error_;
    } else if (ac->err) {
      s->error = "redis: connection lost: " + reader_error(ac->errstr);
    } else {
      s->error = "redis: connection closed before the reply came";
    }
  }
  s->done = true;
  if (!s->owned) {
    delete s;
    return;
  }
  if (async::Waiter* w = std::exchange(s->waiter, nullptr)) w->ctx->wake(*w);
}

}  // namespace jq::redis
