// SyncClient: one blocking Redis connection, for tools (jobqctl) that have no loop to share: the
// daemon's Connection (TLS included) driven by a loop until each reply is in.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "redis/connection.hpp"
#include "redis/op_result.hpp"
#include "redis/reply.hpp"
#include "redis/script.hpp"
#include "redis/url.hpp"

namespace jq::redis {

/// A blocking connection: each call runs the thread's loop until its reply is in (or the
/// connection failed: a reply later than the timeout drops it), and returns the reply or, as a
/// value, why there is none (OpResult). The transport is the daemon's Connection, so TLS and what
/// comes later work here the same. The loop is the thread's own if it has one (a test's), else one
/// made for the thread's SyncClients and shared by them; a SyncClient is not for use from a task
/// running on that loop. Scripts run through the same Script objects the daemon uses, EVALSHA
/// first and EVAL when Redis does not have them.
class SyncClient {
 public:
  /// Connects (within `timeout`), authenticates and selects the URL's database.
  static OpResult<SyncClient> connect(const Url& url, Millis timeout = Millis(5000));

  SyncClient(SyncClient&&) noexcept;
  SyncClient& operator=(SyncClient&&) noexcept;
  ~SyncClient();

  const Url& url() const noexcept;

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
  /// The next message of the subscription, or nullopt when none came within `slice`.
  OpResult<std::optional<Reply>> next_message(Millis slice);

 private:
  struct State;
  explicit SyncClient(std::unique_ptr<State> s) noexcept;

  std::unique_ptr<State> s_;
};

}  // namespace jq::redis
