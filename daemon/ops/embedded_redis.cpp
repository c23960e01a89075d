// The embedded redis-server: launch, readiness, restart on death, clean stop.
#include "ops/embedded_redis.hpp"

#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "redis/connection.hpp"

namespace jq::ops {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

std::string find_binary(const std::string& name) {
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

}  // namespace

EmbeddedRedis::EmbeddedRedis(std::string binary, std::string state_dir)
    : binary_(std::move(binary)), dir_(std::move(state_dir)) {
  socket_ = (fs::path(dir_) / "redis.sock").string();
  log_ = (fs::path(dir_) / "redis.log").string();
}

EmbeddedRedis::~EmbeddedRedis() {
  if (supervisor_.valid()) supervisor_.abort();
  // ~Process kills and reaps a server still running (stop() is the clean way).
}

async::Process EmbeddedRedis::launch() {
  async::SpawnOptions o;
  o.argv = {find_binary(binary_),
            "--port",
            "0",
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

async::Task<void> EmbeddedRedis::start() {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) throw std::runtime_error("cannot create state_dir " + dir_ + ": " + ec.message());
  ::chmod(dir_.c_str(), 0700);
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
  spdlog::info("embedded redis-server running (pid {}, socket {}, AOF in {})", proc_->pid(),
               socket_, dir_);
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
