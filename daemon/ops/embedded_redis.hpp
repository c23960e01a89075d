// `redis.url: embedded`: jobqd runs and supervises its own redis-server on a unix socket.
#pragma once

#include <optional>
#include <string>

#include "async/async.hpp"

namespace jq::ops {

/// The redis-server program `name` names (a path, or looked up in PATH). Throws
/// std::runtime_error saying what to install or set when there is none.
std::string find_redis_server(const std::string& name);

/// A redis-server for single-machine use with nothing else installed: a unix socket and AOF
/// (appendfsync everysec) in the state directory, maxmemory-policy noeviction, and a TCP port
/// only when `port` is not 0 (redis.embedded_port), bound to 127.0.0.1 and ::1 alone, for
/// clients that cannot use the socket. If it dies, it is restarted (with backoff) and the log
/// says why; stop() shuts it down cleanly. It dies with jobqd (parent-death signal, even after
/// kill -9), and one state directory serves one jobqd at a time (a lock file), so two servers
/// never write one AOF.
class EmbeddedRedis {
 public:
  EmbeddedRedis(std::string binary, std::string state_dir, int port = 0);
  EmbeddedRedis(const EmbeddedRedis&) = delete;
  EmbeddedRedis& operator=(const EmbeddedRedis&) = delete;
  ~EmbeddedRedis();

  /// Starts it and waits until it answers. Throws std::runtime_error saying why it did not (a
  /// port in use is named, with the key that set it).
  async::Task<void> start();
  /// SIGTERM (it finishes writing the AOF), SIGKILL if it has not exited after 10 s.
  async::Task<void> stop();

  /// Where the server of a state directory listens (jobqctl finds it there too).
  static std::string socket_in(const std::string& state_dir);

  /// unix:///.../redis.sock
  std::string url() const { return "unix://" + socket_; }
  const std::string& socket_path() const { return socket_; }
  /// redis://127.0.0.1:PORT, or "" without a port.
  std::string tcp_url() const;

 private:
  async::Process launch();
  async::Task<void> wait_ready(async::Process& proc);
  async::Task<void> supervise();
  std::string log_tail() const;
  void lock_state_dir();
  async::Task<void> stop_leftover();
  void check_port_free() const;

  std::string binary_;
  std::string dir_;
  int port_ = 0;
  std::string socket_;
  std::string log_;
  async::Fd lock_;
  std::optional<async::Process> proc_;
  async::JoinHandle<void> supervisor_;
  bool stopping_ = false;
};

}  // namespace jq::ops
