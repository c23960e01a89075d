// The http handler: POST to a configured URL with libevent's HTTP client over OpenSSL bufferevents.
#include "handlers/http.hpp"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <openssl/ssl.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <ctime>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "async/resolve.hpp"
#include "async/tls.hpp"
#include "config/http_url.hpp"
#include "config/units.hpp"

namespace jq::handlers {
namespace {

using namespace std::chrono_literals;

constexpr std::size_t kErrorBody = 200;  // bytes of a failed response's body in the error
constexpr ev_ssize_t kMaxResponseHeaders = 64 * 1024;

struct BevFree {
  void operator()(bufferevent* b) const noexcept { bufferevent_free(b); }
};
using BevPtr = std::unique_ptr<bufferevent, BevFree>;
struct EvConnFree {
  void operator()(evhttp_connection* c) const noexcept { evhttp_connection_free(c); }
};
using EvConnPtr = std::unique_ptr<evhttp_connection, EvConnFree>;

using Target = config::HttpUrl;

Target parse_target(const std::string& name, const std::string& url) {
  auto parsed = config::parse_http_url(url);
  if (auto* why = std::get_if<std::string>(&parsed)) {
    throw std::runtime_error("handler " + name + ": url " + *why);
  }
  return std::get<Target>(parsed);
}

std::string read_secret(const std::string& handler, const std::string& header,
                        const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    throw std::runtime_error("handler " + handler + ": cannot read the value of header " + header +
                             " from " + path + ": " + std::strerror(errno));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  std::string v = ss.str();
  while (!v.empty() && (v.back() == '\n' || v.back() == '\r' || v.back() == ' ')) v.pop_back();
  return v;
}

// Retry-After: delta-seconds, or an HTTP-date.
}  // namespace

std::optional<Millis> parse_retry_after(const char* v) {
  if (!v) return std::nullopt;
  // Clamped before scaling: a huge value must not overflow (the engine caps it at retry_max).
  constexpr long long kMaxSecs = 10LL * 365 * 24 * 3600;
  char* end = nullptr;
  errno = 0;
  long long secs = std::strtoll(v, &end, 10);
  if (end != v && *end == '\0' && secs >= 0) return Millis(std::min(secs, kMaxSecs) * 1000);
  // The three date forms RFC 9110 asks a recipient to accept: IMF-fixdate, RFC 850, asctime.
  for (const char* form :
       {"%a, %d %b %Y %H:%M:%S GMT", "%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"}) {
    std::tm tm{};
    const char* rest = strptime(v, form, &tm);
    if (rest && *rest == '\0') {
      // Clamped in seconds before scaling, then capped like a delta: a date past 2262 ("Wed,
      // 21 Oct 8197 ...") does not fit system_clock's nanoseconds.
      const long long now =
          std::chrono::duration_cast<Millis>(std::chrono::system_clock::now().time_since_epoch())
              .count();
      const long long at = std::clamp<long long>(timegm(&tm), 0, now / 1000 + kMaxSecs + 1);
      return Millis(std::clamp(at * 1000 - now, 0LL, kMaxSecs * 1000));
    }
  }
  return std::nullopt;
}

namespace {

std::string clip(const std::string& s, std::size_t n) {
  return s.size() <= n ? s : s.substr(0, n) + "...";
}

// What one request comes back with. Owned by the coroutine that sent the request: if it stops
// waiting, it unhooks the callbacks and cancels the request before freeing this, so libevent
// never calls into a freed exchange.
struct Exchange {
  int status = 0;
  std::string body;
  std::size_t cap = 0;
  std::optional<Millis> retry_after;
  std::string location;
  int error = -1;  // evhttp_request_error, or -1
  bool done = false;
  async::Waiter* waiter = nullptr;
  evhttp_request* req = nullptr;  // until libevent is done with it (it frees it then)

  void finish() noexcept {
    if (done) return;
    done = true;
    req = nullptr;
    if (async::Waiter* w = std::exchange(waiter, nullptr)) w->ctx->wake(*w);
  }

  ~Exchange() { abandon(); }

  // Stops a request still under way; afterwards libevent calls none of our callbacks for it.
  void abandon() noexcept {
    if (done || !req) return;
    evhttp_request_set_error_cb(req, nullptr);
    evhttp_cancel_request(req);  // frees the request without calling the completion callback
    req = nullptr;
  }

  // Body bytes as they arrive: keep the head, drop the rest (memory stays bounded).
  static void on_chunk(evhttp_request* req, void* arg) noexcept {
    auto* x = static_cast<Exchange*>(arg);
    evbuffer* in = evhttp_request_get_input_buffer(req);
    std::size_t n = evbuffer_get_length(in);
    if (x->body.size() < x->cap) {
      std::size_t take = std::min(n, x->cap - x->body.size());
      std::size_t old = x->body.size();
      x->body.resize(old + take);
      evbuffer_copyout(in, x->body.data() + old, take);
    }
    evbuffer_drain(in, n);
  }
  // The response is complete (req non-null with a code) or failed (null / code 0).
  static void on_done(evhttp_request* req, void* arg) noexcept {
    auto* x = static_cast<Exchange*>(arg);
    if (req && evhttp_request_get_response_code(req) > 0) {
      x->status = evhttp_request_get_response_code(req);
      evkeyvalq* headers = evhttp_request_get_input_headers(req);
      x->retry_after = parse_retry_after(evhttp_find_header(headers, "Retry-After"));
      if (const char* loc = evhttp_find_header(headers, "Location")) x->location = loc;
      // Whatever the chunk callback has not seen yet.
      on_chunk(req, arg);
    }
    x->finish();
  }
  // Called before on_done when a request fails (on_done then gets a request without a code).
  static void on_error(evhttp_request_error e, void* arg) noexcept {
    static_cast<Exchange*>(arg)->error = e;
  }
};

const char* describe_error(int e) {
  switch (e) {
    case EVREQ_HTTP_TIMEOUT:
      return "timed out";
    case EVREQ_HTTP_EOF:
      return "connection closed before a complete response";
    case EVREQ_HTTP_INVALID_HEADER:
      return "invalid response headers";
    case EVREQ_HTTP_BUFFER_ERROR:
      return "connection failed";
    case EVREQ_HTTP_REQUEST_CANCEL:
      return "cancelled";
    case EVREQ_HTTP_DATA_TOO_LONG:
      return "response too large";
    default:
      return "request failed";
  }
}

class Http final : public Handler {
 public:
  explicit Http(const config::HandlerConfig& cfg)
      : cfg_(cfg), target_(parse_target(cfg.name, cfg.url)), slots_(cfg.pool_size) {
    headers_ = cfg.headers;
    for (const auto& [header, var] : cfg.headers_from_env) {
      const char* v = std::getenv(var.c_str());
      if (!v) {
        throw std::runtime_error("handler " + cfg.name + ": header " + header +
                                 " comes from environment variable " + var + ", which is not set");
      }
      headers_[header] = v;
    }
    for (const auto& [header, path] : cfg.headers_from_file) {
      headers_[header] = read_secret(cfg.name, header, path);
    }
    for (const auto& [header, value] : headers_) {
      // evhttp would drop such a header silently: say so at start instead.
      if (value.find_first_of("\r\n") != std::string::npos ||
          value.find('\0') != std::string::npos) {
        throw std::runtime_error("handler " + cfg.name + ": the value of header " + header +
                                 " contains a line break or NUL byte");
      }
    }
    if (target_.tls) {
      tls_.ca_file = cfg.ca_file;
      tls_.verify = cfg.verify_tls;
      try {
        ctx_ = async::client_context(tls_);
      } catch (const std::runtime_error& e) {
        throw std::runtime_error("handler " + cfg.name + ": " + e.what());
      }
    }
  }

  async::Task<Outcome> run(const Run& r) override {
    auto permit = co_await slots_.acquire();
    const std::string body = body_of(r.job);
    // A kept-alive connection the server closed as we reused it fails before any response
    // byte: that one is tried again, once, on a new connection.
    for (int round = 0;; ++round) {
      std::unique_ptr<Conn> conn = round == 0 ? take_idle() : nullptr;
      const bool reused = conn != nullptr;
      if (!conn) {
        std::string ip;
        std::string failure;
        try {
          ip = co_await async::resolve_host(target_.host);
        } catch (const std::runtime_error& e) {
          failure = e.what();
        }
        if (!failure.empty())
          co_return Outcome::failure(job::ErrorKind::connection, where() + ": " + failure);
        conn = open(ip);
        if (!conn) {
          co_return Outcome::failure(job::ErrorKind::connection,
                                     where() + ": cannot set up the connection");
        }
      }
      auto exchange = std::make_unique<Exchange>();
      Exchange& x = *exchange;
      co_await send(r, body, *conn, x);
      if (x.status == 0 && reused && round == 0 && x.body.empty() &&
          (x.error == EVREQ_HTTP_EOF || x.error == EVREQ_HTTP_BUFFER_ERROR || x.error == -1)) {
        continue;
      }
      if (x.status == 0 && x.error == kConnectTimedOut) {
        co_return Outcome::failure(
            job::ErrorKind::connection,
            where() + ": no connection within " + config::format_duration(cfg_.connect_timeout));
      }
      Outcome outcome = judge(x, *conn);
      if (x.status > 0 && x.error < 0) give_back(std::move(conn));  // keep-alive
      co_return outcome;
    }
  }

 private:
  struct Conn {
    EvConnPtr evcon;
    SSL* ssl = nullptr;  // for https; owned by the bufferevent, which the connection owns
    bool closed = false;
  };

  // Exchange::error when the connection was not up within connect_timeout.
  static constexpr int kConnectTimedOut = -2;

  // One request on `conn`, until its response or failure is in `x`. On cancellation the
  // request is abandoned (the connection is then not reused) and Cancelled propagates.
  // What is posted: the job as submitted (`body: job`), else its payload; a job released from
  // waiting (docs/workflows.md) posts its payload beside its dependencies' outcomes, which the
  // X-Jobq-Body header says, so that a receiver serving both kinds can tell them apart.
  std::string body_of(const job::Job& j) const {
    if (cfg_.body == "job") return j.raw;
    if (j.dependencies.empty()) return j.payload.dump();
    return "{\"payload\":" + j.payload.dump() + ",\"dependencies\":" + j.dependencies + "}";
  }

  async::Task<void> send(const Run& r, const std::string& body, Conn& conn, Exchange& x) {
    x.cap = cfg_.max_response;
    evhttp_request* req = evhttp_request_new(&Exchange::on_done, &x);
    if (!req) {
      x.done = true;
      co_return;
    }
    evhttp_request_set_chunked_cb(req, &Exchange::on_chunk);
    evhttp_request_set_error_cb(req, &Exchange::on_error);
    evkeyvalq* out = evhttp_request_get_output_headers(req);
    // The config may set its own Host or Content-Type; they are not sent twice.
    if (!configured("Host")) evhttp_add_header(out, "Host", target_.authority.c_str());
    if (!configured("Content-Type")) evhttp_add_header(out, "Content-Type", "application/json");
    evhttp_add_header(out, "User-Agent", "jobqd");
    evhttp_add_header(out, "X-Jobq-Id", r.job.id.c_str());
    evhttp_add_header(out, "X-Jobq-Queue", r.queue.c_str());
    std::string attempt = std::to_string(r.attempt);
    evhttp_add_header(out, "X-Jobq-Attempt", attempt.c_str());
    if (!r.job.dependencies.empty() && cfg_.body != "job") {
      evhttp_add_header(out, "X-Jobq-Body", "dependencies");
    }
    for (const auto& [k, v] : headers_) evhttp_add_header(out, k.c_str(), v.c_str());
    evbuffer_add(evhttp_request_get_output_buffer(req), body.data(), body.size());
    // evhttp's own timeout must not cut a slow reply short: the job timeout bounds the request
    // (and cancels it). The connect timeout is checked below.
    timeval tv = async::to_timeval(r.timeout + 1s);
    evhttp_connection_set_timeout_tv(conn.evcon.get(), &tv);
    if (evhttp_make_request(conn.evcon.get(), req, EVHTTP_REQ_POST, target_.path.c_str()) != 0) {
      // libevent freed the request: nothing to abandon later.
      x.done = true;
      co_return;
    }
    x.req = req;

    ExchangeAwait await{&x};
    bool cancelled = false;
    bool connect_late = false;
    try {
      bool settled = false;
      try {
        co_await async::wait_for(await.wait(), cfg_.connect_timeout);
        settled = true;
      } catch (const async::TimeoutError&) {
      }
      if (!settled) {
        if (!connected(conn)) {
          connect_late = true;
        } else {
          co_await await.wait();
        }
      }
    } catch (const async::Cancelled&) {
      cancelled = true;
    }
    if (cancelled || connect_late) {
      x.abandon();  // the connection is reset by that: it is not reused
      if (cancelled) throw async::Cancelled{};
      x.error = kConnectTimedOut;
    }
  }

  // Waits for an Exchange (cancellable; the exchange is then orphaned by the caller).
  struct ExchangeAwait {
    Exchange* x;
    struct Awaiter : async::Waiter {
      Exchange* x;
      bool await_ready() const noexcept { return x->done; }
      template <async::HasContext P>
      bool await_suspend(std::coroutine_handle<P> h) noexcept {
        if (!h.promise().ctx->park(*this, h)) return false;
        on_cancel = [](async::Waiter& w) noexcept {
          static_cast<Awaiter&>(w).x->waiter = nullptr;
          return true;
        };
        x->waiter = this;
        return true;
      }
      void await_resume() {
        if (x->waiter == this) x->waiter = nullptr;
        if (!x->done && cancelled) throw async::Cancelled{};
      }
      ~Awaiter() {
        if (x->waiter == this) x->waiter = nullptr;
      }
    };
    Awaiter wait() const noexcept {
      Awaiter a;
      a.x = x;
      return a;
    }
  };

  std::string where() const { return "POST " + cfg_.url; }

  bool configured(std::string_view header) const {
    for (const auto& [k, v] : headers_) {
      if (k.size() == header.size() &&
          std::equal(k.begin(), k.end(), header.begin(), [](char a, char b) {
            return std::tolower(static_cast<unsigned char>(a)) ==
                   std::tolower(static_cast<unsigned char>(b));
          })) {
        return true;
      }
    }
    return false;
  }

  Outcome judge(const Exchange& x, Conn& conn) {
    if (x.status == 0) {
      std::string why = describe_error(x.error);
      if (x.error == -1) {
        // libevent reports a failed connect without an error code, and its cleanup has
        // overwritten errno by then: the address is what can be said.
        why = "cannot connect to " + target_.authority + " (refused, unreachable or reset)";
      }
      if (conn.ssl) {
        std::string tls = async::tls_failure(
            conn.ssl,
            bufferevent_get_openssl_error(evhttp_connection_get_bufferevent(conn.evcon.get())));
        if (!tls.empty()) why = std::move(tls);
      }
      return Outcome::failure(job::ErrorKind::connection, where() + ": " + why);
    }
    if (x.status >= 200 && x.status < 300) return Outcome::success(x.body);
    std::string error = "HTTP " + std::to_string(x.status) + " from " + where();
    if (!x.location.empty()) error += " (Location: " + x.location + ")";
    if (!x.body.empty()) error += ": " + clip(x.body, kErrorBody);
    bool retry = x.status == 429 || x.status >= 500;
    Outcome o = Outcome::failure(job::ErrorKind::http_status, std::move(error), retry);
    if (retry) o.retry_after = x.retry_after;
    return o;
  }

  // True once the socket (and, for https, the TLS handshake) is up.
  static bool connected(const Conn& c) {
    bufferevent* bev = evhttp_connection_get_bufferevent(c.evcon.get());
    evutil_socket_t fd = bev ? bufferevent_getfd(bev) : -1;
    if (fd < 0) return false;
    sockaddr_storage peer{};
    socklen_t len = sizeof peer;
    if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &len) != 0) return false;
    return !c.ssl || SSL_is_init_finished(c.ssl);
  }

  // Each thing made is owned from the moment it exists until what is made next takes it over
  // (the SSL by the bufferevent, the bufferevent by the connection): a step that fails frees
  // what the steps before it made.
  std::unique_ptr<Conn> open(const std::string& ip) {
    auto c = std::make_unique<Conn>();
    event_base* base = async::Loop::current().base();
    BevPtr bev;  // null for http: evhttp makes a plain one itself
    SSL* ssl_in_bev = nullptr;
    if (target_.tls) {
      async::SslPtr ssl = async::client_ssl(ctx_.get(), tls_, target_.host);
      if (!ssl) return nullptr;
      // With BEV_OPT_CLOSE_ON_FREE the SSL is the bufferevent's from this call on, even when
      // the call fails (libevent frees it then): released here, never freed here too.
      ssl_in_bev = ssl.get();
      bev.reset(bufferevent_openssl_socket_new(base, -1, ssl.release(), BUFFEREVENT_SSL_CONNECTING,
                                               BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS));
      if (!bev) return nullptr;
      // A TLS stream cut without close_notify is an error, not an end: a truncated response
      // must not pass for a complete one.
      bufferevent_openssl_set_allow_dirty_shutdown(bev.get(), 0);
    }
    c->evcon.reset(evhttp_connection_base_bufferevent_new(
        base, nullptr, bev.get(), ip.c_str(), static_cast<unsigned short>(target_.port)));
    if (!c->evcon) return nullptr;  // the bufferevent (and its SSL) still ours: freed by bev
    bev.release();                  // the connection's now: evhttp_connection_free frees it
    c->ssl = ssl_in_bev;
    evhttp_connection_set_retries(c->evcon.get(), 0);
    evhttp_connection_set_max_headers_size(c->evcon.get(), kMaxResponseHeaders);
    evhttp_connection_set_closecb(
        c->evcon.get(),
        [](evhttp_connection*, void* arg) { static_cast<Conn*>(arg)->closed = true; }, c.get());
    return c;
  }

  // A keep-alive connection to reuse. A TLS connection the server closed is never reused:
  // libevent would reconnect it with the spent TLS session.
  std::unique_ptr<Conn> take_idle() {
    while (!idle_.empty()) {
      auto c = std::move(idle_.back());
      idle_.pop_back();
      if (!(c->closed && c->ssl)) return c;
    }
    return nullptr;
  }
  void give_back(std::unique_ptr<Conn> c) {
    if (idle_.size() < cfg_.pool_size) idle_.push_back(std::move(c));
  }

  config::HandlerConfig cfg_;
  Target target_;
  std::map<std::string, std::string> headers_;
  async::TlsOptions tls_;  // the CA file and whether to verify; the name is the URL's host
  async::SslCtxPtr ctx_;
  async::Semaphore slots_;
  std::vector<std::unique_ptr<Conn>> idle_;
};

}  // namespace

std::unique_ptr<Handler> make_http(const config::HandlerConfig& cfg) {
  return std::make_unique<Http>(cfg);
}

}  // namespace jq::handlers
