// Loopback TCP listeners for what a real server cannot be made to do: MuteServer completes
// handshakes (the kernel does) and never speaks, for connect-then-silence timeouts;
// ScriptedServer answers whatever it is sent with fixed bytes, for replies no Redis would send.
#pragma once

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <string>
#include <thread>

namespace jq::test {

struct MuteServer {
  int fd = -1;
  int port = 0;
  MuteServer() {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    ::listen(fd, 16);
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
  }
  ~MuteServer() { ::close(fd); }
  MuteServer(const MuteServer&) = delete;
  MuteServer& operator=(const MuteServer&) = delete;
};

/// Accepts connections one at a time; to the first bytes each one sends, answers `reply`, then
/// reads and ignores the rest until the peer closes or the server is destroyed.
struct ScriptedServer {
  MuteServer listener;
  std::string reply;
  std::atomic<bool> stop{false};
  std::thread thread;
  explicit ScriptedServer(std::string answer) : reply(std::move(answer)) {
    thread = std::thread([this] { serve(); });
  }
  ~ScriptedServer() {
    stop = true;
    thread.join();
  }
  int port() const { return listener.port; }
  ScriptedServer(const ScriptedServer&) = delete;
  ScriptedServer& operator=(const ScriptedServer&) = delete;

 private:
  // Polls with a short timeout so that the destructor's stop is seen within 50 ms.
  bool readable(int fd) {
    while (!stop) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 50) > 0) return true;
    }
    return false;
  }
  // A blocking write may still be cut short (a signal): the rest follows.
  bool write_all(int c) {
    for (std::size_t at = 0; at < reply.size();) {
      ssize_t n = ::write(c, reply.data() + at, reply.size() - at);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      at += static_cast<std::size_t>(n);
    }
    return true;
  }
  void serve() {
    while (readable(listener.fd)) {
      int c = ::accept4(listener.fd, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      bool answered = false;
      char buf[4096];
      while (readable(c)) {
        ssize_t n = ::read(c, buf, sizeof buf);
        if (n <= 0) break;
        if (!answered) answered = write_all(c);
      }
      ::close(c);
    }
  }
};

}  // namespace jq::test
