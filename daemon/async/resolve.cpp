// getaddrinfo on the thread pool.
#include "async/resolve.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>

#include <memory>
#include <stdexcept>

#include "async/thread_pool.hpp"

namespace jq::async {
namespace {

std::string resolve_blocking(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int rc = getaddrinfo(host.c_str(), nullptr, &hints, &res);
  if (rc != 0) throw std::runtime_error("cannot resolve " + host + ": " + gai_strerror(rc));
  std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> guard(res, &freeaddrinfo);
  const addrinfo* pick = res;
  for (const addrinfo* a = res; a; a = a->ai_next) {
    if (a->ai_family == AF_INET) {
      pick = a;
      break;
    }
  }
  char buf[INET6_ADDRSTRLEN] = {};
  const void* addr =
      pick->ai_family == AF_INET
          ? static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(pick->ai_addr)->sin_addr)
          : static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(pick->ai_addr)->sin6_addr);
  inet_ntop(pick->ai_family, addr, buf, sizeof buf);
  return buf;
}

}  // namespace

bool is_ip_literal(const std::string& host) {
  unsigned char buf[sizeof(in6_addr)];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

Task<std::string> resolve_host(std::string host) {
  if (is_ip_literal(host)) co_return host;
  // The lambda is named: a capturing lambda written inside the co_await is destroyed twice by
  // GCC 12 (docs/runtime.md).
  auto work = [host] { return resolve_blocking(host); };
  std::string ip = co_await to_thread(std::move(work));
  co_return ip;
}

}  // namespace jq::async
