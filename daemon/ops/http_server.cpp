// The HTTP server for /metrics, /healthz, the dashboard and /api/: accept on the loop, read one
// bounded request (its body too) under a deadline, answer it, close.
#include "ops/http_server.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace jq::ops {
namespace {

const char* reason(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 411:
      return "Length Required";
    case 413:
      return "Content Too Large";
    case 429:
      return "Too Many Requests";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 431:
      return "Request Header Fields Too Large";
    case 503:
      return "Service Unavailable";
    default:
      return "Error";
  }
}

HttpResponse plain(int status, std::string body) {
  HttpResponse r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

// host:port -> its address (numeric or a name of this host), for bind.
addrinfo* resolve(const std::string& listen) {
  const auto colon = listen.rfind(':');
  std::string host = listen.substr(0, colon);
  const std::string port = listen.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* out = nullptr;
  const int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(), port.c_str(), &hints, &out);
  if (rc != 0) {
    throw std::runtime_error("http.listen " + listen + ": " + gai_strerror(rc));
  }
  return out;
}

std::string name_of(const sockaddr_storage& a) {
  char host[INET6_ADDRSTRLEN] = "?";
  int port = 0;
  if (a.ss_family == AF_INET) {
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(&a);
    inet_ntop(AF_INET, &v4->sin_addr, host, sizeof host);
    port = ntohs(v4->sin_port);
    return std::string(host) + ":" + std::to_string(port);
  }
  const auto* v6 = reinterpret_cast<const sockaddr_in6*>(&a);
  inet_ntop(AF_INET6, &v6->sin6_addr, host, sizeof host);
  port = ntohs(v6->sin6_port);
  return "[" + std::string(host) + "]:" + std::to_string(port);
}

}  // namespace

HttpServer::HttpServer(const std::string& listen, Handler handler, Limits limits)
    : handler_(std::move(handler)), limits_(limits) {
  addrinfo* ai = resolve(listen);
  std::string error = "no address";
  for (addrinfo* a = ai; a; a = a->ai_next) {
    async::Fd fd(::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd) {
      error = std::strerror(errno);
      continue;
    }
    const int one = 1;
    setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd.get(), a->ai_addr, a->ai_addrlen) != 0 || ::listen(fd.get(), 64) != 0) {
      error = std::strerror(errno);
      continue;
    }
    listen_fd_ = std::move(fd);
    break;
  }
  freeaddrinfo(ai);
  if (!listen_fd_) throw std::runtime_error("http.listen " + listen + ": " + error);
  sockaddr_storage bound{};
  socklen_t len = sizeof bound;
  getsockname(listen_fd_.get(), reinterpret_cast<sockaddr*>(&bound), &len);
  address_ = name_of(bound);
}

HttpServer::~HttpServer() {
  if (accept_task_.valid()) accept_task_.abort();
  for (auto& c : conns_) {
    if (c.valid() && !c.done()) c.abort();
  }
}

void HttpServer::start() {
  accept_task_ = async::spawn(acceptor(), "http accept");
}

async::Task<void> HttpServer::stop() {
  if (accept_task_.valid()) {
    accept_task_.cancel();
    co_await accept_task_.wait();
  }
  listen_fd_.reset();
  for (auto& c : conns_) c.cancel();
  for (auto& c : conns_) co_await c.wait();
  conns_.clear();
}

async::Task<void> HttpServer::acceptor() {
  for (;;) {
    co_await async::readable(listen_fd_.get());
    for (;;) {
      async::Fd fd(::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
      if (!fd) {
        if (errno == EMFILE || errno == ENFILE) {
          // Out of descriptors: the pending connection stays queued; look again shortly.
          spdlog::warn("http: cannot accept: {}", std::strerror(errno));
          co_await async::sleep(std::chrono::milliseconds(100));
        }
        break;  // EAGAIN, or a connection that went away
      }
      conns_.remove_if([](const async::JoinHandle<void>& c) { return c.done(); });
      if (open_ >= limits_.max_connections) continue;  // closed at once: the cap holds
      ++open_;
      conns_.push_back(async::spawn(serve(std::move(fd)), "http connection"));
    }
  }
}

async::Task<HttpResponse> HttpServer::respond(const HttpRequest& req, int parsed) const {
  switch (parsed) {
    case 0:
      co_return co_await handler_(req);
    case 405: {
      HttpResponse r = plain(405, "GET, HEAD or POST only\n");
      r.headers.push_back("Allow: GET, HEAD, POST");
      co_return r;
    }
    case 411:
      co_return plain(411, "a POST needs a Content-Length\n");
    case 413:
      co_return plain(413,
                      "the body is over " + std::to_string(limits_.max_body_bytes) + " bytes\n");
    case 501:
      co_return plain(501, "no Transfer-Encoding: send the body with a Content-Length\n");
    default:
      co_return plain(400, "a request is METHOD PATH HTTP/1.1, then header lines name: value\n");
  }
}

async::Task<bool> HttpStream::write(std::string text) {
  const auto until = async::Clock::now() + deadline_;
  std::size_t off = 0;
  while (off < text.size()) {
    const ssize_t n = ::send(fd_, text.data() + off, text.size() - off, MSG_NOSIGNAL);
    if (n > 0) {
      off += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno != EAGAIN && errno != EINTR) co_return false;
    const auto left = until - async::Clock::now();
    bool ready = false;
    if (left > async::Duration::zero()) ready = co_await async::writable(fd_, left);
    if (!ready) co_return false;
  }
  co_return true;
}

async::Task<void> HttpServer::serve(async::Fd fd) {
  struct Open {
    std::size_t& n;
    ~Open() { --n; }
  } open{open_};
  const auto deadline = async::Clock::now() + limits_.request_deadline;
  std::string in;
  HttpRequest req;
  int parsed = -1;  // -1: the head is not in yet
  std::size_t head_end = 0;
  char buf[4096];
  for (;;) {
    if (parsed < 0) {
      const auto end = in.find("\r\n\r\n");
      if (end != std::string::npos && end + 4 <= limits_.max_request_bytes) {
        parsed =
            parse_request(std::string_view(in).substr(0, end + 2), req, limits_.max_body_bytes);
        head_end = end + 4;
      } else if (end != std::string::npos || in.size() > limits_.max_request_bytes) {
        HttpResponse too_big =
            plain(431, "the request head is over " + std::to_string(limits_.max_request_bytes) +
                           " bytes\n");
        co_await answer(fd.get(), std::move(too_big), false);
        co_return;
      }
    }
    // The head answers (an error), or the body is in whole.
    if (parsed > 0 || (parsed == 0 && in.size() >= head_end + req.content_length)) break;
    const auto left = deadline - async::Clock::now();
    bool ready = false;
    if (left > async::Duration::zero()) ready = co_await async::readable(fd.get(), left);
    if (!ready) {
      HttpResponse late = plain(408, "the request took too long\n");
      co_await answer(fd.get(), std::move(late), false);
      co_return;
    }
    const ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (n <= 0) co_return;  // gone before it asked anything
    in.append(buf, static_cast<std::size_t>(n));
  }
  if (parsed == 0) req.body = in.substr(head_end, req.content_length);
  HttpResponse res = co_await respond(req, parsed);
  co_await answer(fd.get(), std::move(res), parsed == 0 && req.method == "HEAD");
}

async::Task<void> HttpServer::hangup(int fd) {
  co_await async::readable(fd);
}

async::Task<void> HttpServer::answer(int fd, HttpResponse res, bool head_only) {
  struct Stream {
    std::size_t& n;
    bool on = false;
    ~Stream() {
      if (on) --n;
    }
  } counted{streams_};
  if (res.stream) {
    if (streams_ >= limits_.max_streams) {
      res = plain(503, "too many streams open (" + std::to_string(limits_.max_streams) + ")\n");
    } else {
      ++streams_;
      counted.on = true;
    }
  }
  // Said on every answer: no sniffing a JSON body as HTML, no framing, no referrer to leak a
  // job's URL; the page's own policy allows its own files only.
  std::string out = "HTTP/1.1 " + std::to_string(res.status) + " " + reason(res.status) +
                    "\r\nContent-Type: " + res.content_type;
  if (!res.stream) out += "\r\nContent-Length: " + std::to_string(res.body.size());
  out +=
      "\r\nConnection: close\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff"
      "\r\nX-Frame-Options: DENY\r\nReferrer-Policy: no-referrer"
      "\r\nContent-Security-Policy: default-src 'self'; img-src 'self' data:; style-src 'self'; "
      "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
      "form-action 'self'";
  for (const auto& h : res.headers) out += "\r\n" + h;
  out += "\r\n\r\n";
  if (!head_only) out += res.body;
  HttpStream to(fd, limits_.write_deadline);
  if (!co_await to.write(std::move(out))) co_return;
  if (res.stream && !head_only) {
    // The stream ends when its task does, or as soon as the client hangs up (the socket reads
    // its end): a page closed does not keep its place until the next event.
    std::vector<async::Task<void>> either;
    either.push_back(res.stream(to));
    either.push_back(hangup(fd));
    co_await async::when_any(std::move(either));
  }
  ::shutdown(fd, SHUT_WR);
}

}  // namespace jq::ops
