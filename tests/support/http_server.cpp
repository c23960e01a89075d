// A loopback HTTP/HTTPS server on a thread of its own, for tests of HTTP clients (webhooks).
#include "tests/support/http_server.hpp"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <spawn.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <list>
#include <mutex>
#include <stdexcept>
#include <thread>

extern char** environ;

namespace jq::test {

namespace {

template <auto Free>
struct Deleter {
  template <class T>
  void operator()(T* p) const {
    Free(p);
  }
};
using EventBasePtr = std::unique_ptr<event_base, Deleter<event_base_free>>;
using EventPtr = std::unique_ptr<event, Deleter<event_free>>;
using EvhttpPtr = std::unique_ptr<evhttp, Deleter<evhttp_free>>;
using EvbufferPtr = std::unique_ptr<evbuffer, Deleter<evbuffer_free>>;
using SslCtxPtr = std::unique_ptr<SSL_CTX, Deleter<SSL_CTX_free>>;

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    std::swap(fd_, o.fd_);
    return *this;
  }
  ~UniqueFd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  void reset() {
    if (fd_ >= 0) ::close(std::exchange(fd_, -1));
  }

 private:
  int fd_ = -1;
};

// OpenSSL's error queue is per thread and otherwise outlives the failure it describes.
std::string ssl_errors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "unknown error" : out;
}

std::string method_name(evhttp_cmd_type cmd) {
  switch (cmd) {
    case EVHTTP_REQ_GET:
      return "GET";
    case EVHTTP_REQ_POST:
      return "POST";
    case EVHTTP_REQ_HEAD:
      return "HEAD";
    case EVHTTP_REQ_PUT:
      return "PUT";
    case EVHTTP_REQ_DELETE:
      return "DELETE";
    case EVHTTP_REQ_OPTIONS:
      return "OPTIONS";
    case EVHTTP_REQ_TRACE:
      return "TRACE";
    case EVHTTP_REQ_CONNECT:
      return "CONNECT";
    case EVHTTP_REQ_PATCH:
      return "PATCH";
  }
  return "?";
}

HttpRequest to_request(evhttp_request* req) {
  HttpRequest r;
  r.at = std::chrono::steady_clock::now();
  r.method = method_name(evhttp_request_get_command(req));
  if (const char* uri = evhttp_request_get_uri(req)) r.path = uri;
  evbuffer* in = evhttp_request_get_input_buffer(req);
  r.body.resize(evbuffer_get_length(in));
  if (!r.body.empty()) evbuffer_copyout(in, r.body.data(), r.body.size());
  evkeyvalq* headers = evhttp_request_get_input_headers(req);
  for (evkeyval* h = headers->tqh_first; h != nullptr; h = h->next.tqe_next) {
    std::string key = h->key;
    std::transform(key.begin(), key.end(), key.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    auto [it, added] = r.headers.try_emplace(std::move(key), h->value);
    if (!added) it->second += std::string(", ") + h->value;
  }
  return r;
}

// Every path that takes a request must end here (or in evhttp_send_error): evhttp frees a request
// only once it has been answered.
void send_response(evhttp_request* req, const HttpResponse& resp) {
  try {
    EvbufferPtr body(evbuffer_new());
    if (!body) throw std::bad_alloc();
    evkeyvalq* out = evhttp_request_get_output_headers(req);
    for (const auto& [key, value] : resp.headers)
      evhttp_add_header(out, key.c_str(), value.c_str());
    if (resp.close_connection) {
      evhttp_remove_header(out, "Connection");
      evhttp_add_header(out, "Connection", "close");
    }
    evbuffer_add(body.get(), resp.body.data(), resp.body.size());
    // A null reason makes libevent use the standard phrase for the status.
    evhttp_send_reply(req, resp.status, nullptr, body.get());
  } catch (...) {
    evhttp_send_error(req, HTTP_INTERNAL, nullptr);
  }
}

}  // namespace

struct HttpServer::Impl {
  // A reply waiting on its timer. The request stays valid meanwhile: evhttp stops reading the
  // connection until the request is answered, and detaches rather than frees an unanswered one.
  struct Pending {
    Impl* server = nullptr;
    evhttp_request* req = nullptr;
    HttpResponse response;
    EventPtr timer;

    ~Pending() {
      // Only a detached request is ours to free; one still on a connection goes with evhttp_free.
      if (req != nullptr && evhttp_request_get_connection(req) == nullptr) evhttp_request_free(req);
    }
  };

  bool https = false;
  int port = 0;
  SslCtxPtr ssl_ctx;
  EventBasePtr base;
  UniqueFd wake_fd;
  EventPtr wake_event;
  EvhttpPtr http;
  std::list<std::unique_ptr<Pending>> pending;  // touched only on the server thread (or after join)
  std::thread thread;

  mutable std::mutex mu;
  Handler handler;
  std::vector<HttpRequest> log;
  std::size_t connections = 0;

  ~Impl() {
    stop();
    // Order matters: pending replies refer to requests evhttp_free releases, and every
    // event and bufferevent must go before the base and SSL_CTX they were made from.
    pending.clear();
    http.reset();
    wake_event.reset();
    base.reset();
    ssl_ctx.reset();
  }

  void start(const std::string& cert_pem, const std::string& key_pem) {
    https = !cert_pem.empty() || !key_pem.empty();
    if (https) load_certificate(cert_pem, key_pem);

    base.reset(event_base_new());
    if (!base) throw std::runtime_error("http server: event_base_new failed");
    // The only cross-thread signal: libevent itself runs without thread support.
    wake_fd = UniqueFd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    if (wake_fd.get() < 0) {
      throw std::runtime_error(std::string("http server: eventfd: ") + std::strerror(errno));
    }
    wake_event.reset(event_new(base.get(), wake_fd.get(), EV_READ | EV_PERSIST, on_wake, this));
    if (!wake_event || event_add(wake_event.get(), nullptr) != 0) {
      throw std::runtime_error("http server: cannot watch the stop eventfd");
    }

    http.reset(evhttp_new(base.get()));
    if (!http) throw std::runtime_error("http server: evhttp_new failed");
    evhttp_set_allowed_methods(http.get(), EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                               EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                               EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
    evhttp_set_gencb(http.get(), on_http_request, this);
    // Installed for plain HTTP too, so that both kinds of server count their connections.
    evhttp_set_bevcb(http.get(), on_new_connection, this);
    evhttp_bound_socket* bound = evhttp_bind_socket_with_handle(http.get(), "127.0.0.1", 0);
    if (bound == nullptr) throw std::runtime_error("http server: cannot listen on 127.0.0.1");
    sockaddr_in addr{};
    socklen_t len = sizeof addr;
    if (::getsockname(evhttp_bound_socket_get_fd(bound), reinterpret_cast<sockaddr*>(&addr),
                      &len) != 0) {
      throw std::runtime_error(std::string("http server: getsockname: ") + std::strerror(errno));
    }
    port = ntohs(addr.sin_port);

    thread = std::thread([this] { event_base_dispatch(base.get()); });
  }

  void load_certificate(const std::string& cert_pem, const std::string& key_pem) {
    ERR_clear_error();
    ssl_ctx.reset(SSL_CTX_new(TLS_server_method()));
    if (!ssl_ctx) throw std::runtime_error("http server: SSL_CTX_new: " + ssl_errors());
    if (SSL_CTX_use_certificate_chain_file(ssl_ctx.get(), cert_pem.c_str()) != 1) {
      throw std::runtime_error("http server: certificate " + cert_pem + ": " + ssl_errors());
    }
    if (SSL_CTX_use_PrivateKey_file(ssl_ctx.get(), key_pem.c_str(), SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ssl_ctx.get()) != 1) {
      throw std::runtime_error("http server: private key " + key_pem + ": " + ssl_errors());
    }
  }

  void stop() {
    if (!thread.joinable()) return;
    // The counter stays readable until the loop drains it, so a write made before the loop even
    // started still stops it.
    std::uint64_t one = 1;
    while (::write(wake_fd.get(), &one, sizeof one) < 0 && errno == EINTR) {
    }
    thread.join();
  }

  static void on_wake(evutil_socket_t fd, short, void* arg) noexcept {
    std::uint64_t value;
    while (::read(fd, &value, sizeof value) < 0 && errno == EINTR) {
    }
    event_base_loopbreak(static_cast<Impl*>(arg)->base.get());
  }

  static bufferevent* on_new_connection(event_base* base, void* arg) noexcept {
    auto* self = static_cast<Impl*>(arg);
    {
      std::lock_guard lock(self->mu);
      ++self->connections;
    }
    // evhttp sets the accepted socket on the bufferevent later; a null return makes it fall back
    // to a plain bufferevent, which for HTTPS just fails the handshake.
    if (!self->ssl_ctx) return bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    SSL* ssl = SSL_new(self->ssl_ctx.get());
    if (ssl == nullptr) return nullptr;
    // With BEV_OPT_CLOSE_ON_FREE the bufferevent owns the SSL (libevent frees it also when
    // creating the bufferevent fails).
    bufferevent* bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                      BEV_OPT_CLOSE_ON_FREE);
    // Clients under test may drop the connection without a TLS close_notify; that is an EOF to
    // them, not a protocol error worth logging.
    if (bev != nullptr) bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    return bev;
  }

  static void on_http_request(evhttp_request* req, void* arg) noexcept {
    auto* self = static_cast<Impl*>(arg);
    try {
      HttpRequest request = to_request(req);
      Handler fn;
      std::size_t n;
      {
        std::lock_guard lock(self->mu);
        n = self->log.size();
        self->log.push_back(request);
        fn = self->handler;
      }
      HttpResponse response;
      // Run outside the lock, so that a handler may look at requests() itself.
      try {
        if (fn) {
          response = fn(request, n);
        } else {
          response.body = "ok";
        }
      } catch (const std::exception& e) {
        response = HttpResponse{.status = 500, .body = e.what()};
      } catch (...) {
        response = HttpResponse{.status = 500, .body = "handler threw"};
      }
      if (response.delay.count() > 0) {
        self->reply_later(req, std::move(response));
      } else {
        send_response(req, response);
      }
    } catch (...) {
      evhttp_send_error(req, HTTP_INTERNAL, nullptr);
    }
  }

  void reply_later(evhttp_request* req, HttpResponse response) {
    auto p = std::make_unique<Pending>();
    p->server = this;
    p->response = std::move(response);
    p->timer.reset(evtimer_new(base.get(), on_delay, p.get()));
    if (!p->timer) throw std::runtime_error("evtimer_new failed");
    auto us = std::chrono::duration_cast<std::chrono::microseconds>(p->response.delay).count();
    timeval tv{static_cast<time_t>(us / 1000000), static_cast<suseconds_t>(us % 1000000)};
    if (evtimer_add(p->timer.get(), &tv) != 0) throw std::runtime_error("evtimer_add failed");
    pending.push_back(std::move(p));
    // Owned by the list from here on; set last so an exception above leaves the request to the
    // caller's error reply.
    pending.back()->req = req;
  }

  static void on_delay(evutil_socket_t, short, void* arg) noexcept {
    auto* p = static_cast<Pending*>(arg);
    Impl* self = p->server;
    send_response(std::exchange(p->req, nullptr), p->response);
    // Frees the timer from inside its own callback, which libevent allows for a non-persistent
    // event: it no longer touches the event once the callback runs.
    self->pending.remove_if([p](const std::unique_ptr<Pending>& q) { return q.get() == p; });
  }
};

HttpServer::HttpServer(std::string cert_pem, std::string key_pem)
    : impl_(std::make_unique<Impl>()) {
  impl_->start(cert_pem, key_pem);
}

HttpServer::~HttpServer() = default;

int HttpServer::port() const {
  return impl_->port;
}

std::string HttpServer::url(const std::string& path) const {
  std::string p = path.empty() || path.front() != '/' ? "/" + path : path;
  return (impl_->https ? "https://127.0.0.1:" : "http://127.0.0.1:") + std::to_string(port()) + p;
}

void HttpServer::on_request(Handler fn) {
  std::lock_guard lock(impl_->mu);
  impl_->handler = std::move(fn);
}

std::vector<HttpRequest> HttpServer::requests() const {
  std::lock_guard lock(impl_->mu);
  return impl_->log;
}

std::size_t HttpServer::request_count() const {
  std::lock_guard lock(impl_->mu);
  return impl_->log.size();
}

std::size_t HttpServer::connections_accepted() const {
  std::lock_guard lock(impl_->mu);
  return impl_->connections;
}

std::pair<std::string, std::string> make_self_signed_cert(const std::filesystem::path& dir,
                                                          const std::string& names) {
  std::string cert = (dir / "cert.pem").string();
  std::string key = (dir / "key.pem").string();
  const std::string san = "subjectAltName=" + names;
  std::vector<std::string> argv = {
      "openssl", "req",           "-x509",   "-newkey", "rsa:2048", "-nodes", "-days", "2",
      "-subj",   "/CN=localhost", "-addext", san,       "-keyout",  key,      "-out",  cert};
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);

  // openssl's own words are the useful part of the error, so its output is captured. The pipe is
  // close-on-exec so that children other threads spawn meanwhile do not hold it open.
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    throw std::runtime_error(std::string("make_self_signed_cert: pipe: ") + std::strerror(errno));
  }
  UniqueFd read_end(fds[0]);
  UniqueFd write_end(fds[1]);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, write_end.get(), 1);
  posix_spawn_file_actions_adddup2(&actions, write_end.get(), 2);
  pid_t pid = -1;
  int rc = ::posix_spawnp(&pid, "openssl", &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    throw std::runtime_error(std::string("make_self_signed_cert: cannot run openssl: ") +
                             std::strerror(rc));
  }
  write_end.reset();

  std::string output;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(read_end.get(), buf, sizeof buf);
    if (n > 0) {
      output.append(buf, static_cast<std::size_t>(n));
    } else if (n == 0 || errno != EINTR) {
      break;
    }
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    throw std::runtime_error("make_self_signed_cert: openssl req failed (wait status " +
                             std::to_string(status) + ") writing into " + dir.string() + ": " +
                             output);
  }
  return {cert, key};
}

}  // namespace jq::test
