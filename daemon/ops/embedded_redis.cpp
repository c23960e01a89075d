// The embedded redis-server: launch, readiness, restart on death, clean stop.
#include "ops/embedded_redis.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "redis/connection.hpp"

namespace jq::ops {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

}  // namespace

std::string find_redis_server(const std::string& name) {
  if (name.find('/') != std::string::npos) return name;
  const char* path = std::getenv("PATH");
  std::stringstream ss(path ? path : "/usr/local/bin:/usr/bin:/bin");
  std::string dir;
  while (std::getline(ss, dir, ':')) {
    fs::path p = fs::path(dir) / name;
    if (::access(p.c_str(), X_OK) == 0) return p.string();
  }
  throw std::runtime_error(
      "embedded redis: '" + name +
      "' not found in PATH (install redis-server, or set redis.server_binary)");
}

std::string EmbeddedRedis::socket_in(const std::string& state_dir) {
  return (fs::path(state_dir) / "redis.sock").string();
}

EmbeddedRedis::EmbeddedRedis(std::string binary, std::string state_dir, int port)
    : binary_(std::move(binary)), dir_(std::move(state_dir)), port_(port) {
  socket_ = socket_in(dir_);
  log_ = (fs::path(dir_) / "redis.log").string();
}

EmbeddedRedis::~EmbeddedRedis() {
  if (supervisor_.valid()) supervisor_.abort();
  // ~Process kills and reaps a server still running (stop() is the clean way).
}

std::string EmbeddedRedis::tcp_url() const {
  return port_ ? "redis://127.0.0.1:" + std::to_string(port_) : "";
}

async::Process EmbeddedRedis::launch() {
  async::SpawnOptions o;
  o.argv = {find_redis_server(binary_),
            "--port",
            std::to_string(port_),
            "--unixsocket",
            socket_,
            "--unixsocketperm",
            "700",
            "--dir",
            dir_,
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--maxmemory-policy",
            "noeviction",
            "--daemonize",
            "no",
            "--logfile",
            log_};
  // TCP (port 0: none) on loopback only, never on the machine's other addresses; `-` makes ::1
  // optional where IPv6 is off.
  o.argv.insert(o.argv.end(), {"--bind", "127.0.0.1", "-::1"});
  // SIGTERM: it still writes out its AOF, then exits.
  o.parent_death_signal = SIGTERM;
  o.out = async::SpawnOptions::Stdio::null;
  o.err = async::SpawnOptions::Stdio::null;
  return async::Process::spawn(o);
}

std::string EmbeddedRedis::log_tail() const {
  std::ifstream in(log_);
  std::string line, last;
  while (std::getline(in, line)) {
    if (!line.empty()) last = line;
  }
  return last.empty() ? "(see " + log_ + ")" : last;
}

async::Task<void> EmbeddedRedis::wait_ready(async::Process& proc) {
  redis::ConnectOptions o;
  o.url.kind = redis::Url::Kind::unix_socket;
  o.url.path = socket_;
  o.connect_timeout = 1s;
  auto deadline = async::Clock::now() + 15s;
  for (;;) {
    std::string error;
    try {
      auto conn = co_await redis::Connection::open(o);
      redis::Reply pong = co_await conn->command("PING");
      if (!pong.is_error()) co_return;
      error = pong.str;  // LOADING: still reading the AOF
    } catch (const redis::ConnectionError& e) {
      error = e.what();
    }
    if (proc.reaped() || async::Clock::now() > deadline) {
      throw std::runtime_error("embedded redis-server did not come up: " + log_tail());
    }
    co_await async::sleep(20ms);
  }
}

void EmbeddedRedis::lock_state_dir() {
  std::string path = (fs::path(dir_) / "jobqd.lock").string();
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) throw std::runtime_error("cannot open " + path + ": " + std::strerror(errno));
  async::Fd lock(fd);
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    char buf[32] = {};
    ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
    std::string holder = n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : "?";
    while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
    throw std::runtime_error("state_dir " + dir_ + " is in use by another jobqd (pid " + holder +
                             "): one embedded redis-server per state directory");
  }
  std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) < 0) {
    spdlog::debug("cannot write the pid into {}: {}", path, std::strerror(errno));
  }
  lock_ = std::move(lock);
}

async::Task<void> EmbeddedRedis::stop_leftover() {
  // A server still answering on our socket while we hold the lock outlived a jobqd that could
  // not stop it (one from before the parent-death signal, or started by hand). Starting a
  // second one on the same AOF would corrupt it: shut the old one down first (it saves).
  if (!fs::exists(socket_)) co_return;
  redis::ConnectOptions o;
  o.url.kind = redis::Url::Kind::unix_socket;
  o.url.path = socket_;
  o.connect_timeout = 1s;
  o.command_timeout = 10s;
  std::unique_ptr<redis::Connection> conn;
  try {
    conn = co_await redis::Connection::open(o);
  } catch (const std::exception&) {
    co_return;  // a stale socket file: redis-server replaces it
  }
  spdlog::warn("a redis-server is still running on {} (left by an earlier jobqd); shutting it down",
               socket_);
  try {
    redis::Reply r = co_await conn->command("SHUTDOWN");
    (void)r;
  } catch (const std::exception&) {
    // The connection closing is the expected answer to SHUTDOWN.
  }
  auto deadline = async::Clock::now() + 15s;
  for (;;) {
    bool answering = true;
    try {
      auto probe = co_await redis::Connection::open(o);
    } catch (const std::exception&) {
      answering = false;
    }
    if (!answering) co_return;
    if (async::Clock::now() > deadline) {
      throw std::runtime_error("a redis-server left running on " + socket_ +
                               " does not shut down; stop it, then start jobqd again");
    }
    co_await async::sleep(50ms);
  }
}

void EmbeddedRedis::check_port_free() const {
  if (port_ == 0) return;
  // Checked before the launch to say it plainly, with the key: redis-server would only write it
  // in its own log and exit. Bound and let go at once, as redis-server binds (SO_REUSEADDR: a
  // port in TIME_WAIT is free for it too). A listener there is most often another redis-server
  // (Debian's starts on 6379 with the package).
  const auto taken = [&](int family, const sockaddr* a, socklen_t len) {
    async::Fd fd(::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) return false;  // no IPv6 here: redis-server skips ::1 too
    const int one = 1;
    setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    return ::bind(fd.get(), a, len) != 0 && errno == EADDRINUSE;
  };
  sockaddr_in v4{};
  v4.sin_family = AF_INET;
  v4.sin_port = htons(static_cast<std::uint16_t>(port_));
  v4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sockaddr_in6 v6{};
  v6.sin6_family = AF_INET6;
  v6.sin6_port = v4.sin_port;
  v6.sin6_addr = in6addr_loopback;
  const bool on_v4 = taken(AF_INET, reinterpret_cast<const sockaddr*>(&v4), sizeof v4);
  if (on_v4 || taken(AF_INET6, reinterpret_cast<const sockaddr*>(&v6), sizeof v6)) {
    throw std::runtime_error(std::string("redis.embedded_port: ") +
                             (on_v4 ? "127.0.0.1:" : "[::1]:") + std::to_string(port_) +
                             " is already in use (another redis-server?): choose a free port for "
                             "the embedded Redis, or remove the key to serve on its socket only");
  }
}

async::Task<void> EmbeddedRedis::start() {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) throw std::runtime_error("cannot create state_dir " + dir_ + ": " + ec.message());
  ::chmod(dir_.c_str(), 0700);
  lock_state_dir();
  co_await stop_leftover();
  check_port_free();
  proc_.emplace(launch());
  // A child that exits at once (bad option, port in use) is noticed while we wait.
  auto watch = async::spawn(
      [](async::Process& p) -> async::Task<void> { co_await p.wait(); }(*proc_), "redis watch");
  try {
    co_await wait_ready(*proc_);
  } catch (...) {
    watch.abort();
    throw;
  }
  watch.abort();
  spdlog::info("embedded redis-server running (pid {}, AOF in {}); it answers on {}{}",
               proc_->pid(), dir_, url(), port_ ? " and " + tcp_url() : std::string());
  supervisor_ = async::spawn(supervise(), "embedded redis supervisor");
}

async::Task<void> EmbeddedRedis::supervise() {
  auto backoff = 1s;
  for (;;) {
    auto status = co_await proc_->wait();
    if (stopping_) co_return;
    spdlog::error("embedded redis-server exited ({}): {}; restarting in {}s", status.describe(),
                  log_tail(), backoff.count());
    co_await async::sleep(backoff);
    backoff = std::min(backoff * 2, std::chrono::seconds(30));
    try {
      proc_.emplace(launch());
      co_await wait_ready(*proc_);
      spdlog::info("embedded redis-server restarted (pid {})", proc_->pid());
      backoff = 1s;
    } catch (const std::exception& e) {
      spdlog::error("{}", e.what());
    }
  }
}

async::Task<void> EmbeddedRedis::stop() {
  stopping_ = true;
  if (supervisor_.valid()) {
    supervisor_.cancel();
    co_await supervisor_.wait();
  }
  if (!proc_ || proc_->reaped()) co_return;
  proc_->kill(SIGTERM, /*group=*/false);
  bool exited = true;
  try {
    co_await async::wait_for(proc_->wait(), 10s);
  } catch (const async::TimeoutError&) {
    exited = false;
  }
  if (!exited) {
    spdlog::warn("embedded redis-server did not stop within 10s; killing it");
    proc_->kill(SIGKILL);
    co_await proc_->wait();
  }
}

}  // namespace jq::ops
