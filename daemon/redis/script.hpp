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

  /// Runs the script. A script error comes back as ReplyError naming the script; connection
  /// failures as ConnectionError. `keys` and `args` must outlive the await (pass named locals).
  async::Task<Reply> run(Client& client, const std::vector<std::string>& keys,
                         const std::vector<std::string>& args, Millis extra = 0ms) const;
  /// Sends the script by EVALSHA and does not wait: for a caller that pipelines it behind
  /// another command. A NOSCRIPT error reply means it did not run (Redis lost its cache): run()
  /// it then. The arguments are copied into the command at once.
  PendingReply send(Client& client, const std::vector<std::string>& keys,
                    const std::vector<std::string>& args, Millis extra = 0ms) const;
  /// True for the reply of a send() that did not run because Redis does not have the script.
  static bool not_cached(const Reply& r) noexcept;

 private:
  std::string name_;
  std::string source_;
  std::string sha_;
};

/// Hex SHA-1 of `data` (what Redis names scripts by).
std::string sha1_hex(std::string_view data);

}  // namespace jq::redis
