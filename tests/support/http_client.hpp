// A raw HTTP/1.1 client for the tests of jobqd's own HTTP side: exact bytes out (malformed on
// purpose where a test wants it), the status, headers and body back; and the address jobqd
// serves on, from its log.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <regex>
#include <stdexcept>
#include <string>

#include "tests/support/daemon.hpp"

namespace jq::test {

/// A connected socket to host:port (IPv4), or -1.
inline int dial(const std::string& addr) {
  const auto colon = addr.rfind(':');
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(std::stoi(addr.substr(colon + 1))));
  std::string host = addr.substr(0, colon);
  if (host == "0.0.0.0") host = "127.0.0.1";
  inet_pton(AF_INET, host.c_str(), &a.sin_addr);
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

/// Everything the server sends until it closes, or until `timeout`.
inline std::string read_all(int fd, std::chrono::milliseconds timeout) {
  std::string out;
  const auto until = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        until - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) break;
    char buf[4096];
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  return out;
}

struct Reply {
  int status = 0;
  std::string head;  // the status line and headers
  std::string body;
  /// The value of header `name` (as written, case and all), or "".
  std::string header(const std::string& name) const {
    const auto at = head.find("\r\n" + name + ": ");
    if (at == std::string::npos) return "";
    const auto from = at + name.size() + 4;
    return head.substr(from, head.find("\r\n", from) - from);
  }
};

/// Sends `raw` as it is and reads the answer (the server closes after one).
inline Reply request(const std::string& addr, const std::string& raw) {
  int fd = dial(addr);
  if (fd < 0) return {};
  (void)!::send(fd, raw.data(), raw.size(), MSG_NOSIGNAL);
  std::string all = read_all(fd, std::chrono::seconds(10));
  ::close(fd);
  Reply r;
  if (all.rfind("HTTP/1.1 ", 0) == 0) r.status = std::stoi(all.substr(9, 3));
  auto body = all.find("\r\n\r\n");
  r.head = all.substr(0, body);
  if (body != std::string::npos) r.body = all.substr(body + 4);
  return r;
}

inline Reply get(const std::string& addr, const std::string& path, const std::string& extra = "") {
  return request(addr, "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra + "\r\n");
}

/// A POST with a body; `extra`: more header lines, each ending in CRLF.
inline Reply post(const std::string& addr, const std::string& path, const std::string& body,
                  const std::string& extra = "") {
  return request(addr, "POST " + path +
                           " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                           "application/json\r\nContent-Length: " +
                           std::to_string(body.size()) + "\r\n" + extra + "\r\n" + body);
}

/// The address jobqd said it serves HTTP on.
inline std::string http_address(Daemon& d) {
  std::smatch m;
  std::string log;
  bool found = eventually(
      [&] {
        log = d.log();
        return std::regex_search(log, m, std::regex(R"(http: /metrics and /healthz on (\S+))"));
      },
      std::chrono::seconds(10));
  if (!found) throw std::runtime_error("no http address in the log:\n" + log);
  return m[1].str();
}

/// Starts `d`, waits until its /healthz says 200, returns its HTTP address.
inline std::string start_serving(Daemon& d, const RedisServer& redis) {
  d.start_and_wait(redis);
  const auto addr = http_address(d);
  if (!eventually([&] { return get(addr, "/healthz").status == 200; }, std::chrono::seconds(10))) {
    throw std::runtime_error("/healthz never said 200:\n" + d.log());
  }
  return addr;
}

}  // namespace jq::test
