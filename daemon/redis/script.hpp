// Lua scripts run by EVALSHA, falling back to EVAL when Redis does not have them cached.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "async/async.hpp"
#include "redis/client.hpp"

namespace jq::redis {

class Script {
 public:
  Script(std::string name, std::string source);

  const std::string& name() const noexcept { return name_; }
  const std::string& sha() const noexcept { return sha_; }
  const std::string& source() const noexcept { return source_; }

  /// Runs the script: its reply, or why there is none as a value (a lost connection, an error
  /// reply naming the script). EVALSHA, then EVAL when Redis does not have it cached. `keys` and
  /// `args` must outlive the await (pass named locals).
  async::Task<OpResult<Reply>> call(Client& client, const std::vector<std::string>& keys,
                                    const std::vector<std::string>& args, Millis extra = 0ms) const;
  /// As call(), raising the error (ConnectionError, ReplyError): for cold paths.
  async::Task<Reply> run(Client& client, const std::vector<std::string>& keys,
                         const std::vector<std::string>& args, Millis extra = 0ms) const;
  /// Sends the script by EVALSHA and does not wait: for a caller that pipelines it behind
  /// another command. A NOSCRIPT error reply means it did not run (Redis lost its cache): run()
  /// it then. The arguments are copied into the command at once.
  PendingReply send(Client& client, const std::vector<std::string>& keys,
                    const std::vector<std::string>& args, Millis extra = 0ms) const;
  /// True for the reply of a send() that did not run because Redis does not have the script.
  static bool not_cached(const Reply& r) noexcept;
  /// A reply of this script as a result: an error reply becomes an OpError naming the script.
  OpResult<Reply> answer(Reply r) const;
  /// The command that runs it, for any client (the synchronous one too): EVALSHA, or EVAL with
  /// `by_source`. The views point into `nkeys`, `keys`, `args` and this script.
  std::vector<std::string_view> argv(bool by_source, const std::string& nkeys,
                                     const std::vector<std::string>& keys,
                                     const std::vector<std::string>& args) const;

 private:
  std::string name_;
  std::string source_;
  std::string sha_;
};

/// Hex SHA-1 of `data` (what Redis names scripts by).
std::string sha1_hex(std::string_view data);

}  // namespace jq::redis
