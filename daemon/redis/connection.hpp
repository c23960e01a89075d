// One Redis connection on a libevent bufferevent (TCP, unix socket or TLS) with hiredis' reply
// parser, awaitable from coroutines.
#pragma once

#include <chrono>
#include <cstddef>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "async/async.hpp"
#include "redis/cluster.hpp"
#include "redis/op_result.hpp"
#include "redis/reply.hpp"
#include "redis/url.hpp"

struct bufferevent;
struct redisReader;

namespace jq::redis {

using Millis = std::chrono::milliseconds;
using namespace std::chrono_literals;

class SlotMap;

struct ConnectOptions {
  Url url;
  Millis connect_timeout = 5s;
  Millis command_timeout = 10s;
  // A redis-cluster:// URL: the process's slot map (shared), and the key whose slot picks the
  // node (its primary). A connection with a route follows it: a MOVED, ASK, TRYAGAIN or
  // CLUSTERDOWN for the route's slot drops the connection (the commands in flight fail as on a
  // lost connection; none of them ran past the redirect) so that its owner reconnects to
  // wherever the slot is now. One without a route leaves such replies to its caller.
  std::shared_ptr<SlotMap> slots;
  std::string route;
};

/// How to reach the sentinel at host:port of a redis-sentinel:// connection's options (its TLS,
/// the sentinels' own password, the same timeouts).
ConnectOptions sentinel_options(const ConnectOptions& options, const std::string& host, int port);

namespace detail {
/// Where a reply lands. Owned jointly by the connection (until the reply came: `in_flight`) and
/// by the PendingReply handle (`owned`); freed when both let go. So a cancelled or abandoned
/// awaiter never leaves the connection a pointer into a dead coroutine frame.
struct ReplySlot {
  Reply reply;
  std::string error;
  bool done = false;
  bool failed = false;
  bool in_flight = false;
  bool owned = true;
  async::Waiter* waiter = nullptr;
  async::Clock::time_point deadline;
  ReplySlot* next = nullptr;  // the connection's FIFO of commands awaiting replies
};
}  // namespace detail

/// A reply on its way: `Reply r = co_await pending;`. Throws ConnectionError if the connection
/// failed or the reply did not come within the command timeout; error replies are returned
/// (call check()). Move-only; dropping it discards the reply when it arrives.
class [[nodiscard]] PendingReply {
 public:
  PendingReply() = default;
  explicit PendingReply(detail::ReplySlot* s) noexcept : s_(s) {}
  PendingReply(PendingReply&& o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
  PendingReply& operator=(PendingReply&& o) noexcept {
    if (this != &o) {
      release();
      s_ = std::exchange(o.s_, nullptr);
    }
    return *this;
  }
  ~PendingReply() { release(); }

  bool ready() const noexcept { return s_->done; }
  /// A ready reply, or why none came (ConnectionError's message as an OpError); for callers that
  /// ran the loop until ready() themselves.
  OpResult<Reply> take() {
    if (s_->failed) return OpError{OpError::Kind::connection, s_->error};
    return std::move(s_->reply);
  }

  /// Throwing (`Reply r = co_await pending`: ConnectionError when none came) or, with
  /// `co_await pending.result()`, the reply or the failure as an OpResult. Cancellation throws
  /// either way.
  template <bool AsResult>
  class BasicAwaiter : async::Waiter {
   public:
    explicit BasicAwaiter(detail::ReplySlot* s) noexcept : s_(s) {}
    ~BasicAwaiter() {
      if (s_->waiter == this) s_->waiter = nullptr;
    }
    bool await_ready() const noexcept { return s_->done; }
    template <async::HasContext P>
    bool await_suspend(std::coroutine_handle<P> h) noexcept {
      if (!h.promise().ctx->park(*this, h)) return false;
      on_cancel = [](async::Waiter& w) noexcept {
        auto& self = static_cast<BasicAwaiter&>(w);
        self.s_->waiter = nullptr;
        return true;
      };
      s_->waiter = this;
      return true;
    }
    std::conditional_t<AsResult, OpResult<Reply>, Reply> await_resume() {
      if (s_->waiter == this) s_->waiter = nullptr;
      if (!s_->done && cancelled) throw async::Cancelled{};
      if constexpr (AsResult) {
        if (s_->failed) return OpError{OpError::Kind::connection, s_->error};
        return std::move(s_->reply);
      } else {
        if (s_->failed) throw ConnectionError(s_->error);
        return std::move(s_->reply);
      }
    }

   private:
    detail::ReplySlot* s_;
  };
  using Awaiter = BasicAwaiter<false>;
  Awaiter operator co_await() noexcept { return Awaiter(s_); }
  BasicAwaiter<true> result() noexcept { return BasicAwaiter<true>(s_); }

 private:
  void release() noexcept;
  detail::ReplySlot* s_ = nullptr;
};

/// `command("SET", key, value)` for any type with send(argv, extra): the variadic form. (An
/// initializer list would need its array kept across the caller's co_await, which GCC 12's
/// coroutine lowering gets wrong.)
template <class Self>
class CommandHelpers {
 public:
  template <class... A>
  PendingReply command(const A&... args) {
    const std::string_view argv[] = {std::string_view(args)...};
    return self().send(std::span<const std::string_view>(argv, sizeof...(A)));
  }
  /// A blocking command (BLMOVE...): its timeout is the command timeout plus `block`.
  template <class... A>
  PendingReply blocking_command(Millis block, const A&... args) {
    const std::string_view argv[] = {std::string_view(args)...};
    return self().send(std::span<const std::string_view>(argv, sizeof...(A)), block);
  }

 private:
  Self& self() { return static_cast<Self&>(*this); }
};

/// One connection. The transport is ours (a bufferevent: a socket, or OpenSSL over one), hiredis
/// only parses replies: Debian's hiredis 0.14 has no TLS. Many commands may be in flight at once
/// (pipelining): those sent during one step of the loop go out together right after it
/// (async::Flusher), and replies come back in order. A subscribed connection also takes the
/// messages no command asked for (messages()).
class Connection final : public CommandHelpers<Connection>, async::Flusher {
 public:
  /// Connects (host names are resolved off the loop; TLS handshake and certificate check for
  /// rediss://), authenticates and selects the database. Throws ConnectionError saying which
  /// server and why.
  static async::Task<std::unique_ptr<Connection>> open(ConnectOptions options);

  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  /// Closes at once: commands still in flight fail with ConnectionError.
  ~Connection();

  bool alive() const noexcept { return bev_ != nullptr && connected_; }
  /// Why the connection died (empty while alive).
  const std::string& error() const noexcept { return error_; }
  const Url& url() const noexcept { return options_.url; }
  std::size_t in_flight() const noexcept { return in_flight_; }

  /// Sends a command now. `extra` lengthens its timeout (a blocking command's own timeout).
  PendingReply send(std::span<const std::string_view> argv, Millis extra = 0ms);
  /// Set once the connection is gone (failed, closed by the server, or timed out).
  async::Event& closed() noexcept { return closed_; }

  /// Replies no command waits for: a subscription's messages, in order. `message_came()` is set
  /// while there are some.
  std::vector<Reply>& messages() noexcept { return messages_; }
  async::Event& message_came() noexcept { return message_came_; }

  /// Drops the connection (as on a timeout): in-flight commands fail with `reason`.
  void fail(const std::string& reason) noexcept;
  /// Why a routed cluster connection dropped itself: the redirect it followed (kind none when it
  /// died otherwise).
  const Detour& detour() const noexcept { return detour_; }

 private:
  struct BevFree {
    void operator()(bufferevent* b) const noexcept;
  };
  struct ReaderFree {
    void operator()(redisReader* r) const noexcept;
  };

  explicit Connection(ConnectOptions options);
  void start_connect(const std::string& ip);
  void push(detail::ReplySlot* s) noexcept;
  void pop(detail::ReplySlot* s) noexcept;
  void deliver(Reply reply) noexcept;
  void finish(detail::ReplySlot* s) noexcept;
  void fail_pending() noexcept;
  void check_deadlines() noexcept;
  void flush() noexcept override;
  void mark_closed(const std::string& reason) noexcept;
  std::string describe(const std::string& what) const;

  // bufferevent callbacks (C, on the loop thread): they parse, record and wake, never resume.
  static void on_read(bufferevent* bev, void* self) noexcept;
  static void on_event(bufferevent* bev, short what, void* self) noexcept;

  ConnectOptions options_;
  std::unique_ptr<bufferevent, BevFree> bev_;
  std::unique_ptr<redisReader, ReaderFree> reader_;
  bool tls_ = false;
  bool via_sentinel_ = false;  // the address came from sentinels: READONLY means ask again
  int route_slot_ = -1;        // a routed cluster connection: the slot it serves
  Detour detour_;
  bool answered_ = false;  // a reply came: a close after it is not a refused handshake
  bool connected_ = false;
  std::string error_;
  async::Event connect_done_;
  async::Event closed_;
  detail::ReplySlot* head_ = nullptr;
  detail::ReplySlot* tail_ = nullptr;
  std::size_t in_flight_ = 0;
  std::vector<Reply> messages_;
  async::Event message_came_;
  async::Timer deadline_timer_;
};

}  // namespace jq::redis
