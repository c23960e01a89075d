// A loopback TCP proxy a test can freeze: a network cut between one client and its server that
// leaves every connection open (no reset, no close), as a partition does.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/redis_server.hpp"

namespace jq::test {

class TcpProxy {
 public:
  /// Listens on a free loopback port and forwards each connection to 127.0.0.1:`target`.
  explicit TcpProxy(int target) : target_(target) {
    listen_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const int one = 1;
    ::setsockopt(listen_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(listen_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::listen(listen_, 64) != 0) {
      throw std::runtime_error("tcp proxy: cannot listen");
    }
    socklen_t len = sizeof a;
    ::getsockname(listen_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { run(); });
  }
  ~TcpProxy() {
    stop_ = true;
    thread_.join();
    for (auto& p : pairs_) {
      ::close(p.first);
      ::close(p.second);
    }
    ::close(listen_);
  }
  TcpProxy(const TcpProxy&) = delete;
  TcpProxy& operator=(const TcpProxy&) = delete;

  int port() const { return port_; }
  std::string url() const { return "redis://127.0.0.1:" + std::to_string(port_) + "/0"; }
  /// From now on nothing passes either way, and new connections are accepted but carry nothing;
  /// what was sent waits in the sockets' buffers. Returns once the proxy's thread has seen it
  /// (a round of its loop begun after the flag): nothing sent after this call gets through.
  void freeze() {
    frozen_ = true;
    const auto seen = rounds_.load();
    while (rounds_.load() < seen + 2) std::this_thread::yield();
  }
  /// Everything waiting passes, late.
  void thaw() { frozen_ = false; }

 private:
  void run() {
    while (!stop_) {
      ++rounds_;
      std::vector<pollfd> fds{{listen_, POLLIN, 0}};
      if (!frozen_) {
        for (auto& p : pairs_) {
          fds.push_back({p.first, POLLIN, 0});
          fds.push_back({p.second, POLLIN, 0});
        }
      }
      if (::poll(fds.data(), fds.size(), 20) <= 0) continue;
      if (fds[0].revents & POLLIN) accept_one();
      for (std::size_t i = 1; i < fds.size() && !frozen_; ++i) {
        if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        const std::size_t pair = (i - 1) / 2;
        if (pair >= pairs_.size()) continue;
        const int from = fds[i].fd;
        const int to = from == pairs_[pair].first ? pairs_[pair].second : pairs_[pair].first;
        if (!forward(from, to)) {
          ::close(pairs_[pair].first);
          ::close(pairs_[pair].second);
          pairs_[pair] = {-1, -1};
        }
      }
      std::erase_if(pairs_, [](const auto& p) { return p.first < 0; });
    }
  }
  void accept_one() {
    const int client = ::accept4(listen_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) return;
    const int server = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(target_));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(server, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      ::close(client);
      ::close(server);
      return;
    }
    pairs_.emplace_back(client, server);
  }
  // Reads what is there and writes all of it on; false when `from` ended or either side failed.
  static bool forward(int from, int to) {
    char buf[65536];
    const ssize_t n = ::read(from, buf, sizeof buf);
    if (n <= 0) return false;
    for (ssize_t off = 0; off < n;) {
      const ssize_t w = ::send(to, buf + off, static_cast<std::size_t>(n - off), MSG_NOSIGNAL);
      if (w <= 0) return false;
      off += w;
    }
    return true;
  }

  int target_;
  int listen_ = -1;
  int port_ = 0;
  std::atomic<bool> frozen_{false};
  std::atomic<bool> stop_{false};
  std::atomic<unsigned long> rounds_{0};    // loops begun: freeze() waits for one after its flag
  std::vector<std::pair<int, int>> pairs_;  // (client, server), the proxy thread's only
  std::thread thread_;
};

}  // namespace jq::test
