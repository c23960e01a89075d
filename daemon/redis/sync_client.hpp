// SyncClient: one blocking Redis connection, for tools (jobqctl) that have no loop to share.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "redis/op_result.hpp"
#include "redis/reply.hpp"
#include "redis/script.hpp"
#include "redis/url.hpp"

struct redisContext;

namespace jq::redis {

/// A blocking connection on hiredis' synchronous API. Every call returns its reply or, as a value,
/// why there is none (OpResult); a reply is copied out of hiredis before the call returns, so
/// nothing of hiredis' outlives it. Scripts run through the same Script objects the daemon uses,
/// EVALSHA first and EVAL when Redis does not have them.
class SyncClient {
 public:
  /// Connects (within `timeout`), authenticates and selects the URL's database.
  static OpResult<SyncClient> connect(const Url& url, Millis timeout = Millis(5000));

  SyncClient(SyncClient&&) noexcept;
  SyncClient& operator=(SyncClient&&) noexcept;
  ~SyncClient();

  const Url& url() const noexcept { return url_; }

  /// One command; error replies come back as OpError (kind reply).
  OpResult<Reply> call(std::span<const std::string_view> argv);
  template <class... A>
  OpResult<Reply> command(const A&... args) {
    const std::string_view argv[] = {std::string_view(args)...};
    return call(std::span<const std::string_view>(argv, sizeof...(A)));
  }
  OpResult<Reply> call(const std::vector<std::string>& argv);

  /// Runs a script; its own error replies become OpErrors naming it.
  OpResult<Reply> run(const Script& script, const std::vector<std::string>& keys,
                      const std::vector<std::string>& args);

  /// Loads a script into Redis' cache (before pipelining EVALSHAs of it).
  OpResult<Done> load(const Script& script);

  /// Pipelining: queue commands with append(), then read() each reply in order.
  void append(std::span<const std::string_view> argv);
  void append(const std::vector<std::string>& argv);
  OpResult<Reply> read();

  /// Subscribes this connection to `channel` (it can do nothing else from then on).
  OpResult<Done> subscribe(const std::string& channel);
  /// The next message of the subscription, or nullopt when none came within `slice`. A timed-out
  /// read leaves hiredis' context unusable, so the connection is then made again and subscribed
  /// anew: a message published in that gap is missed, which callers tolerate by reading the
  /// state they wait for after each slice.
  OpResult<std::optional<Reply>> next_message(Millis slice);

 private:
  struct Free {
    void operator()(redisContext* c) const noexcept;
  };
  SyncClient(std::unique_ptr<redisContext, Free> c, Url url, Millis timeout) noexcept;
  OpResult<Reply> take(void* raw);
  OpError failure(const std::string& what) const;

  std::unique_ptr<redisContext, Free> c_;
  Url url_;
  Millis timeout_;
  std::string channel_;  // subscribed to, if any
};

}  // namespace jq::redis
