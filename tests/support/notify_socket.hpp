// A systemd notify socket for tests: a unix datagram socket whose path goes in NOTIFY_SOCKET for
// the daemons started while it is set, and the messages they send, in order.
#pragma once

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "tests/support/redis_server.hpp"

namespace jq::test {

class NotifySocket {
 public:
  NotifySocket() {
    path_ = (dir_.path() / "notify").string();
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path_.c_str(), sizeof a.sun_path - 1);
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      throw std::runtime_error("cannot make a notify socket at " + path_);
    }
    ::setenv("NOTIFY_SOCKET", path_.c_str(), 1);
  }
  NotifySocket(const NotifySocket&) = delete;
  ~NotifySocket() {
    ::unsetenv("NOTIFY_SOCKET");
    ::close(fd_);
  }
  /// No longer handed to daemons started from now on.
  void unset() { ::unsetenv("NOTIFY_SOCKET"); }

  /// Messages received so far, each whole (lines such as `READY=1\nSTATUS=...`).
  const std::vector<std::string>& messages() {
    for (;;) {
      char buf[4096];
      ssize_t n = ::recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
      if (n <= 0) break;
      got_.emplace_back(buf, static_cast<std::size_t>(n));
    }
    return got_;
  }
  /// Whether a message holding `text` has come within `timeout`.
  bool wait_for(const std::string& text, std::chrono::milliseconds timeout) {
    const auto until = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      if (has(text)) return true;
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          until - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      pollfd p{fd_, POLLIN, 0};
      ::poll(&p, 1, static_cast<int>(std::min<long long>(left.count(), 100)));
    }
  }
  bool has(const std::string& text) {
    for (const auto& m : messages()) {
      if (m.find(text) != std::string::npos) return true;
    }
    return false;
  }

 private:
  TempDir dir_;
  std::string path_;
  int fd_ = -1;
  std::vector<std::string> got_;
};

}  // namespace jq::test
