// One Redis connection: a bufferevent (plain or OpenSSL) carries RESP both ways, hiredis' reader
// parses the replies; commands with deadlines, clean failure.
#include "redis/connection.hpp"

#include <cerrno>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/util.h>
#include <hiredis/hiredis.h>
#include <hiredis/read.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "async/resolve.hpp"
#include "async/tls.hpp"

namespace jq::redis {
namespace {

async::Duration check_interval(Millis command_timeout) {
  auto quarter = command_timeout / 4;
  return std::clamp<async::Duration>(quarter, 20ms, 1s);
}

struct ReplyFree {
  void operator()(void* r) const noexcept { freeReplyObject(r); }
};

// The RESP form of a command, written straight into `out`: `*N\r\n` then `$len\r\narg\r\n` per
// argument. hiredis' formatter would build a heap string to copy from; this is the same bytes
// without it.
void append_command(evbuffer* out, std::span<const std::string_view> argv) {
  char head[32];
  int n = std::snprintf(head, sizeof head, "*%zu\r\n", argv.size());
  evbuffer_add(out, head, static_cast<std::size_t>(n));
  for (const auto& a : argv) {
    n = std::snprintf(head, sizeof head, "$%zu\r\n", a.size());
    evbuffer_add(out, head, static_cast<std::size_t>(n));
    evbuffer_add(out, a.data(), a.size());
    evbuffer_add(out, "\r\n", 2);
  }
}

// TCP options hiredis set on its connections: no Nagle delay (a pipelined batch must leave at
// once) and keepalive probes that find a peer gone on an idle connection (a cut network).
void tune_tcp(evutil_socket_t fd) noexcept {
  int on = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
  ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
  int idle = 15, interval = 5, count = 3;
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
}

}  // namespace

ConnectOptions sentinel_options(const ConnectOptions& options, const std::string& host, int port) {
  ConnectOptions ask;
  ask.url.host = host;
  ask.url.port = port;
  ask.url.tls = options.url.tls;  // TLS to the primary means TLS to its sentinels too
  ask.url.password = options.url.sentinel_password;
  ask.connect_timeout = options.connect_timeout;
  ask.command_timeout = options.command_timeout;
  return ask;
}

namespace {

// The primary's address for a redis-sentinel:// URL, asked of each sentinel in turn (the first
// that names it wins; a sentinel that is down or does not know the name is passed over).
async::Task<Url> find_primary(const ConnectOptions& options) {
  const Url& url = options.url;
  std::string why;
  for (const auto& [host, port] : url.seeds) {
    const ConnectOptions ask = sentinel_options(options, host, port);
    const std::string where = host + ":" + std::to_string(port);
    try {
      auto sentinel = co_await Connection::open(ask);
      Reply r = co_await sentinel->command("SENTINEL", "get-master-addr-by-name", url.service);
      if (r.is_array() && r.elements.size() == 2) {
        Url primary = url;
        primary.kind = Url::Kind::tcp;
        primary.host = r.elements[0].str;
        try {
          primary.port = std::stoi(r.elements[1].str);
        } catch (const std::exception&) {
          primary.port = 0;
        }
        if (!primary.host.empty() && primary.port > 0 && primary.port < 65536) co_return primary;
      }
      why += "; " + where + " answered " +
             (r.is_nil() ? "that it monitors no '" + url.service + "'" : r.describe());
    } catch (const ConnectionError& e) {
      why += std::string("; ") + e.what();
    }
  }
  throw ConnectionError("redis " + url.display() + ": no sentinel named the primary of '" +
                        url.service + "'" + why);
}

}  // namespace

void PendingReply::release() noexcept {
  if (!s_) return;
  s_->owned = false;
  s_->waiter = nullptr;
  if (!s_->in_flight) delete s_;
  s_ = nullptr;
}

void Connection::BevFree::operator()(bufferevent* b) const noexcept {
  bufferevent_free(b);
}
void Connection::ReaderFree::operator()(redisReader* r) const noexcept {
  redisReaderFree(r);
}

Connection::Connection(ConnectOptions options) : options_(std::move(options)) {}

Connection::~Connection() {
  if (auto* loop = async::Loop::current_or_null()) loop->cancel_flush(*this);
  deadline_timer_.stop();
  if (error_.empty()) error_ = describe("connection closed");
  bev_.reset();
  fail_pending();
}

std::string Connection::describe(const std::string& what) const {
  return "redis " + options_.url.display() + ": " + what;
}

async::Task<std::unique_ptr<Connection>> Connection::open(ConnectOptions options) {
  const bool via_sentinel = options.url.kind == Url::Kind::sentinel;
  if (via_sentinel) options.url = co_await find_primary(options);
  int route_slot = -1;
  std::shared_ptr<SlotMap> slots;
  if (options.url.kind == Url::Kind::cluster) {
    if (!options.slots) options.slots = std::make_shared<SlotMap>();
    slots = options.slots;
    const int slot = slot_of(options.route);
    options.url = co_await slots->primary_for(options, slot);
    if (!options.route.empty()) route_slot = slot;
  }
  // A node that cannot be reached may have failed over: the map is asked again next time.
  struct Unreached {
    SlotMap* map;
    bool reached = false;
    ~Unreached() {
      if (map && !reached) map->stale();
    }
  } unreached{slots.get()};
  std::string ip;
  std::string unresolved;
  if (options.url.kind == Url::Kind::tcp) {
    try {
      ip = co_await async::resolve_host(options.url.host);
    } catch (const std::runtime_error& e) {
      unresolved = e.what();
    }
  }
  std::unique_ptr<Connection> conn(new Connection(std::move(options)));
  conn->via_sentinel_ = via_sentinel;
  conn->route_slot_ = route_slot;
  if (!unresolved.empty()) throw ConnectionError(conn->describe(unresolved));
  conn->start_connect(ip);

  bool in_time = true;
  try {
    co_await async::wait_for(conn->connect_done_.wait(), conn->options_.connect_timeout);
  } catch (const async::TimeoutError&) {
    in_time = false;
  }
  if (!in_time) {
    throw ConnectionError(conn->describe(
        "no connection within " + std::to_string(conn->options_.connect_timeout.count()) + " ms" +
        (conn->tls_ ? " (TCP connect and TLS handshake)" : "")));
  }
  if (!conn->alive()) throw ConnectionError(conn->error_);

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
    if (r.is_error()) throw ConnectionError(conn->describe("AUTH failed: " + r.str));
  }
  if (u.db != 0) {
    Reply r = co_await select;
    if (r.is_error()) throw ConnectionError(conn->describe("SELECT failed: " + r.str));
  }
  if (via_sentinel) {
    // Just after a failover a sentinel may still name the old primary, now a replica: jobqd
    // never writes to one.
    Reply role = co_await conn->command("ROLE");
    if (!role.is_array() || role.elements.empty() || role.elements[0].str != "master") {
      throw ConnectionError(conn->describe(
          "named the primary of '" + u.service + "' by the sentinels, but its ROLE is " +
          (role.is_array() && !role.elements.empty() ? role.elements[0].str : role.describe())));
    }
  }
  unreached.reached = true;
  co_return conn;
}

// Makes the bufferevent (and for rediss:// its SSL) and starts the connect; on_event says how it
// went. Throws ConnectionError for what fails before that (no memory, a bad CA file, a socket
// path too long).
void Connection::start_connect(const std::string& ip) {
  reader_.reset(redisReaderCreate());
  if (!reader_) throw ConnectionError(describe("cannot allocate a reply reader"));
  cap_reader(reader_.get());
  const Url& url = options_.url;
  event_base* base = async::Loop::current().base();
  // Callbacks deferred: a failure found inside a call (a write) never runs our callback from
  // within it, and a callback may free the bufferevent.
  const int flags = BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS;
  if (url.tls) {
    tls_ = true;
    async::SslCtxPtr ctx;
    try {
      ctx = async::client_context(*url.tls);
    } catch (const std::runtime_error& e) {
      throw ConnectionError(describe(e.what()));
    }
    async::SslPtr ssl = async::client_ssl(ctx.get(), *url.tls, url.host);
    if (!ssl) throw ConnectionError(describe("cannot allocate a TLS session"));
    // The SSL is the bufferevent's from this call on, even when it fails (libevent frees it).
    bev_.reset(
        bufferevent_openssl_socket_new(base, -1, ssl.release(), BUFFEREVENT_SSL_CONNECTING, flags));
    // A server that closes without TLS' close_notify (killed, restarted) ends the connection
    // like a plain close: RESP's framing, not TLS', says whether a reply was whole.
    if (bev_) bufferevent_openssl_set_allow_dirty_shutdown(bev_.get(), 1);
  } else {
    bev_.reset(bufferevent_socket_new(base, -1, flags));
  }
  if (!bev_) throw ConnectionError(describe("cannot allocate a connection"));
  bufferevent_setcb(bev_.get(), &Connection::on_read, nullptr, &Connection::on_event, this);
  bufferevent_enable(bev_.get(), EV_READ | EV_WRITE);

  sockaddr_storage addr{};
  int len = sizeof addr;
  if (url.kind == Url::Kind::unix_socket) {
    auto* un = reinterpret_cast<sockaddr_un*>(&addr);
    if (url.path.size() >= sizeof un->sun_path) {
      throw ConnectionError(describe("the socket path is longer than " +
                                     std::to_string(sizeof un->sun_path - 1) + " bytes"));
    }
    un->sun_family = AF_UNIX;
    std::memcpy(un->sun_path, url.path.c_str(), url.path.size() + 1);
    len = sizeof(sockaddr_un);
  } else {
    const std::string where =
        (ip.find(':') != std::string::npos ? "[" + ip + "]" : ip) + ":" + std::to_string(url.port);
    if (evutil_parse_sockaddr_port(where.c_str(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      throw ConnectionError(describe("cannot use the address " + where));
    }
  }
  if (bufferevent_socket_connect(bev_.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0) {
    const int e = EVUTIL_SOCKET_ERROR();
    throw ConnectionError(describe(std::string("cannot connect: ") + std::strerror(e)));
  }
}

PendingReply Connection::send(std::span<const std::string_view> argv, Millis extra) {
  auto* s = new detail::ReplySlot;
  PendingReply handle(s);
  if (!alive()) {
    s->done = s->failed = true;
    s->error = error_.empty() ? describe("not connected") : error_;
    return handle;
  }
  append_command(bufferevent_get_output(bev_.get()), argv);
  s->in_flight = true;
  s->deadline = async::Clock::now() + options_.command_timeout + extra;
  push(s);
  async::Loop::current().flush_after_step(*this);
  return handle;
}

// On a plain socket, writes what the step queued now rather than at the loop's next poll (which
// may come after many more steps while Redis sits idle); what the socket does not take is left
// to the bufferevent. A TLS bufferevent writes when the loop polls next.
void Connection::flush() noexcept {
  if (!alive() || tls_) return;
  evbuffer* out = bufferevent_get_output(bev_.get());
  if (evbuffer_get_length(out) == 0) return;
  // evbuffer_write refuses a buffer whose front is frozen (libevent freezes a bufferevent's output
  // at times) with -1 and errno untouched: errno is cleared first, so that a stale one is never
  // read as the write's error (it once took down sound connections: "connection lost: Operation
  // now in progress", "... Success"). What is not written here, the bufferevent writes.
  errno = 0;
  if (evbuffer_write(out, bufferevent_getfd(bev_.get())) < 0) {
    const int e = EVUTIL_SOCKET_ERROR();
    if (e != 0 && e != EAGAIN && e != EWOULDBLOCK && e != EINTR) {
      fail(describe(std::string("connection lost: ") + evutil_socket_error_to_string(e)));
    }
  }
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
  head_ = s->next;
  if (tail_ == s) tail_ = nullptr;
  s->next = nullptr;
  --in_flight_;
}

// A reply is the oldest command's; with none waiting it is a subscription's message.
void Connection::deliver(Reply reply) noexcept {
  answered_ = true;
  detail::ReplySlot* s = head_;
  if (!s) {
    messages_.push_back(std::move(reply));
    message_came_.set();
    return;
  }
  s->reply = std::move(reply);
  finish(s);
}

void Connection::fail_pending() noexcept {
  while (detail::ReplySlot* s = head_) {
    s->failed = true;
    s->error = error_;
    finish(s);
  }
}

// The head command's end, its reply or failure already in its slot: off the FIFO, and to its
// waiter (woken, never resumed here), or freed if nobody waits any more.
void Connection::finish(detail::ReplySlot* s) noexcept {
  pop(s);
  s->in_flight = false;
  s->done = true;
  if (!s->owned) {
    delete s;
    return;
  }
  if (async::Waiter* w = std::exchange(s->waiter, nullptr)) w->ctx->wake(*w);
}

void Connection::check_deadlines() noexcept {
  if (head_ && async::Clock::now() > head_->deadline) {
    fail(describe("no reply within " + std::to_string(options_.command_timeout.count()) +
                  " ms; dropping the connection"));
    return;
  }
  if (bev_) {
    deadline_timer_.start(
        async::Loop::current(), check_interval(options_.command_timeout),
        [](void* self) noexcept { static_cast<Connection*>(self)->check_deadlines(); }, this);
  }
}

void Connection::fail(const std::string& reason) noexcept {
  if (!bev_) return;
  mark_closed(reason);
}

// The one way a connection ends: the bufferevent goes (libevent allows that inside its own
// callbacks), every command in flight fails with the reason, and waiters learn it.
void Connection::mark_closed(const std::string& reason) noexcept {
  connected_ = false;
  if (error_.empty()) error_ = reason;
  if (auto* loop = async::Loop::current_or_null()) loop->cancel_flush(*this);
  bev_.reset();
  deadline_timer_.stop();
  fail_pending();
  connect_done_.set();
  closed_.set();
  message_came_.set();
}

void Connection::on_read(bufferevent* bev, void* arg) noexcept {
  auto* self = static_cast<Connection*>(arg);
  evbuffer* in = bufferevent_get_input(bev);
  while (evbuffer_get_length(in) > 0) {
    evbuffer_iovec chunks[8];
    const int n = evbuffer_peek(in, -1, nullptr, chunks, 8);
    std::size_t fed = 0;
    for (int i = 0; i < std::min(n, 8); ++i) {
      if (redisReaderFeed(self->reader_.get(), static_cast<const char*>(chunks[i].iov_base),
                          chunks[i].iov_len) != REDIS_OK) {
        self->fail(self->describe("out of memory reading a reply"));
        return;
      }
      fed += chunks[i].iov_len;
    }
    evbuffer_drain(in, fed);
  }
  for (;;) {
    void* raw = nullptr;
    if (redisReaderGetReply(self->reader_.get(), &raw) != REDIS_OK) {
      const std::string why = reader_error(self->reader_->errstr);
      (void)refused_array();  // said here: the next connection's errors are its own
      self->fail(self->describe("not a Redis reply (" + why + "); dropping the connection"));
      return;
    }
    if (!raw) return;
    std::unique_ptr<void, ReplyFree> owned(raw);
    Reply reply;
    try {
      reply = Reply::copy(*static_cast<redisReply*>(raw));
    } catch (...) {
      self->fail(self->describe("out of memory copying a reply"));
      return;
    }
    // A routed cluster connection follows its slot: a redirect (none of which ran the command)
    // fails it and everything behind it, as a lost connection would; its owner reconnects to
    // where the slot is now. A MOVED for another slot is the caller's bug, shown as it is.
    if (self->route_slot_ >= 0 && reply.is_error()) {
      Detour d = detour_of(reply);
      if (d.kind != Detour::Kind::none && (d.slot < 0 || d.slot == self->route_slot_)) {
        if (d.kind == Detour::Kind::moved) self->options_.slots->moved(d.slot, d.host, d.port);
        if (d.kind != Detour::Kind::moved && !d.wait()) self->options_.slots->stale();
        self->detour_ = std::move(d);
        self->fail(self->describe("slot " + std::to_string(self->route_slot_) + ": " + reply.str +
                                  "; following it"));
        return;
      }
    }
    // A primary turned replica (a failover) refuses writes: the sentinels are asked again.
    const bool demoted =
        self->via_sentinel_ && reply.is_error() && reply.str.rfind("READONLY", 0) == 0;
    self->deliver(std::move(reply));
    if (demoted) {
      self->fail(
          self->describe("the server is a replica now (READONLY); asking the sentinels "
                         "for the primary"));
      return;
    }
  }
}

void Connection::on_event(bufferevent* bev, short what, void* arg) noexcept {
  auto* self = static_cast<Connection*>(arg);
  if (what & BEV_EVENT_CONNECTED) {
    if (self->options_.url.kind == Url::Kind::tcp) tune_tcp(bufferevent_getfd(bev));
    self->connected_ = true;
    self->connect_done_.set();
    return;
  }
  std::string why;
  const int e = EVUTIL_SOCKET_ERROR();
  // A TLS alert (a client certificate required, a protocol error) may come as an end of stream:
  // OpenSSL's reason is asked for either way.
  if (self->tls_) {
    why = async::tls_failure(bufferevent_openssl_get_ssl(bev), bufferevent_get_openssl_error(bev));
  }
  if (why.empty() && (what & BEV_EVENT_ERROR)) why = e ? evutil_socket_error_to_string(e) : "error";
  if (!self->connected_) {
    self->mark_closed(self->describe("cannot connect: " + (why.empty() ? "closed" : why)));
  } else if (self->tls_ && !self->answered_ && !self->options_.url.tls->cert_file.empty()) {
    self->mark_closed(
        self->describe((why.empty() ? "connection closed" : "connection lost: " + why) +
                       " before any answer (was the client certificate refused?)"));
  } else if (self->tls_ && !self->answered_) {
    // TLS 1.3 ends the handshake before the server checks a client certificate: a server that
    // requires one closes the connection at the first command.
    self->mark_closed(
        self->describe((why.empty() ? "connection closed" : "connection lost: " + why) +
                       " before any answer (does the server require a client "
                       "certificate? redis.tls: cert_file, key_file)"));
  } else {
    self->mark_closed(
        self->describe(why.empty() ? "connection closed" : "connection lost: " + why));
  }
}

}  // namespace jq::redis
