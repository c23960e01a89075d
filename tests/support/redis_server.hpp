// A real redis-server for tests: a free port and a temp dir of its own; restartable (AOF kept).
#pragma once

#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "redis/reply.hpp"
#include "tests/support/files.hpp"
#include "tests/support/process.hpp"

namespace jq::test {

/// A free TCP port on 127.0.0.1 (bound and released: another process could take it in between,
/// which on a test machine does not happen in practice).
inline int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

/// A temporary directory, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "jobqd-test-XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  TempDir(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }
  std::string str() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

/// A blocking hiredis connection for tests to set up and inspect state.
class SyncRedis {
 public:
  explicit SyncRedis(int port) {
    timeval tv{5, 0};
    c_.reset(redisConnectWithTimeout("127.0.0.1", port, tv));
    if (!c_ || c_->err) {
      throw std::runtime_error("cannot connect to the test redis on port " + std::to_string(port));
    }
    redisSetTimeout(c_.get(), tv);
  }
  /// On a unix socket (the embedded server's).
  explicit SyncRedis(const std::string& socket_path) {
    timeval tv{5, 0};
    c_.reset(redisConnectUnixWithTimeout(socket_path.c_str(), tv));
    if (!c_ || c_->err) throw std::runtime_error("cannot connect to redis at " + socket_path);
    redisSetTimeout(c_.get(), tv);
  }
  redis::Reply cmd(const std::vector<std::string>& args) {
    std::vector<const char*> ptrs;
    std::vector<size_t> lens;
    for (const auto& a : args) {
      ptrs.push_back(a.data());
      lens.push_back(a.size());
    }
    auto* r = static_cast<redisReply*>(
        redisCommandArgv(c_.get(), static_cast<int>(args.size()), ptrs.data(), lens.data()));
    if (!r) throw std::runtime_error(std::string("test redis: ") + c_->errstr);
    redis::Reply out = redis::Reply::copy(*r);
    freeReplyObject(r);
    return out;
  }
  /// Sends every command at once, then reads every reply (one round trip for thousands).
  std::vector<redis::Reply> pipeline(const std::vector<std::vector<std::string>>& cmds) {
    for (const auto& args : cmds) {
      std::vector<const char*> ptrs;
      std::vector<size_t> lens;
      for (const auto& a : args) {
        ptrs.push_back(a.data());
        lens.push_back(a.size());
      }
      redisAppendCommandArgv(c_.get(), static_cast<int>(args.size()), ptrs.data(), lens.data());
    }
    std::vector<redis::Reply> out;
    out.reserve(cmds.size());
    for (std::size_t i = 0; i < cmds.size(); ++i) {
      void* r = nullptr;
      if (redisGetReply(c_.get(), &r) != REDIS_OK || !r) {
        throw std::runtime_error(std::string("test redis: ") + c_->errstr);
      }
      out.push_back(redis::Reply::copy(*static_cast<redisReply*>(r)));
      freeReplyObject(r);
    }
    return out;
  }
  /// Reads the next reply without sending anything (a subscriber's messages).
  redis::Reply next_reply() {
    void* r = nullptr;
    if (redisGetReply(c_.get(), &r) != REDIS_OK || !r) {
      throw std::runtime_error(std::string("test redis: ") + c_->errstr);
    }
    redis::Reply out = redis::Reply::copy(*static_cast<redisReply*>(r));
    freeReplyObject(r);
    return out;
  }
  long long integer(const std::vector<std::string>& args) { return cmd(args).as_int(); }
  std::string str(const std::vector<std::string>& args) {
    auto r = cmd(args);
    return r.is_nil() ? std::string() : r.as_string();
  }

 private:
  struct Free {
    void operator()(redisContext* c) const { redisFree(c); }
  };
  std::unique_ptr<redisContext, Free> c_;
};

/// Whether a redis-server answers PING on `port` within `within` (one just started).
inline bool answers_ping(int port, std::chrono::milliseconds within = std::chrono::seconds(10)) {
  return eventually(
      [&] {
        try {
          return SyncRedis(port).str({"PING"}) == "PONG";
        } catch (const std::exception&) {
          return false;
        }
      },
      within);
}

/// Clients blocked in Redis now (a BLMOVE or BLPOP waiting there): INFO's blocked_clients.
inline long long blocked_clients(SyncRedis& r) {
  const std::string info = r.str({"INFO", "clients"});
  const auto at = info.find("blocked_clients:");
  return at == std::string::npos ? 0 : std::stoll(info.substr(at + 16));
}

class RedisServer {
 public:
  /// TLS on a port of its own, beside the plain one (which tests keep for SyncRedis): the server's
  /// certificate and key, the CA it trusts for client certificates, and whether it demands one.
  struct Tls {
    std::string cert, key, ca;
    bool auth_clients = false;
  };

  explicit RedisServer(bool aof = false) : aof_(aof), port_(free_port()) { start(); }
  explicit RedisServer(Tls tls, bool aof = false)
      : aof_(aof), port_(free_port()), tls_(std::move(tls)), tls_port_(free_port()) {
    while (tls_port_ == port_) tls_port_ = free_port();
    start();
  }
  ~RedisServer() { kill(); }

  int port() const { return port_; }
  std::string url() const { return "redis://127.0.0.1:" + std::to_string(port_) + "/0"; }
  /// The TLS port (0 without TLS), and its URL by name, as a certificate for localhost matches.
  int tls_port() const { return tls_port_; }
  std::string tls_url() const { return "rediss://localhost:" + std::to_string(tls_port_) + "/0"; }
  std::string socket_path() const { return (dir_.path() / "redis.sock").string(); }
  const TempDir& dir() const { return dir_; }
  SyncRedis client() const { return SyncRedis(port_); }

  void start() {
    std::vector<std::string> argv = {"redis-server",
                                     "--port",
                                     std::to_string(port_),
                                     "--bind",
                                     "127.0.0.1",
                                     "--dir",
                                     dir_.str(),
                                     "--save",
                                     "",
                                     "--appendonly",
                                     aof_ ? "yes" : "no",
                                     "--appendfsync",
                                     "always",
                                     "--unixsocket",
                                     socket_path(),
                                     "--daemonize",
                                     "no",
                                     "--logfile",
                                     (dir_.path() / "redis.log").string()};
    if (tls_) {
      argv.insert(argv.end(), {"--tls-port", std::to_string(tls_port_), "--tls-cert-file",
                               tls_->cert, "--tls-key-file", tls_->key, "--tls-ca-cert-file",
                               tls_->ca, "--tls-auth-clients", tls_->auth_clients ? "yes" : "no"});
    }
    proc_ = Child(argv);
    const bool up = answers_ping(port_);
    if (!up && tls_) {
      // Most likely the certificates: redis-server's log says what it made of them.
      throw std::runtime_error("test redis-server with TLS did not start on port " +
                               std::to_string(port_) + ": " + read_file(dir_.path() / "redis.log"));
    }
    if (!up)
      throw std::runtime_error("test redis-server did not start on port " + std::to_string(port_));
  }
  /// SIGTERM and wait (an AOF server has flushed everything by then).
  void stop() {
    proc_.signal(SIGTERM);
    proc_.wait(std::chrono::seconds(10));
  }
  void kill() {
    proc_.signal(SIGKILL);
    proc_.wait(std::chrono::seconds(10));
  }
  void restart() {
    stop();
    start();
  }

 private:
  TempDir dir_;
  bool aof_;
  int port_;
  std::optional<Tls> tls_;
  int tls_port_ = 0;
  Child proc_;
};

}  // namespace jq::test
