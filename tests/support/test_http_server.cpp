// Tests of the loopback HTTP/HTTPS test server, driven by raw sockets and OpenSSL directly.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>

#include "tests/support/http_server.hpp"
#include "tests/support/process.hpp"

namespace jq::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

class ScratchDir {
 public:
  ScratchDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "jobqd-http-XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ScratchDir(const ScratchDir&) = delete;
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

struct SslCtxFree {
  void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};
using SslCtxPtr = std::unique_ptr<SSL_CTX, SslCtxFree>;

struct Reply {
  int status = 0;
  std::map<std::string, std::string> headers;  // keys lower-cased
  std::string body;
};

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// A hand-made client, so that these tests depend on nothing but the server under test. The socket
// is blocking (OpenSSL's simplest mode) and every wait has a deadline.
class Client {
 public:
  explicit Client(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) throw std::runtime_error("socket failed");
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(port));
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      ::close(fd_);
      throw std::runtime_error("connect failed");
    }
    // A backstop for blocking calls inside OpenSSL that the poll-based deadlines cannot reach.
    timeval tv{2, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  }
  Client(const Client&) = delete;
  ~Client() {
    if (ssl_ != nullptr) SSL_free(ssl_);
    ::close(fd_);
  }

  /// TLS handshake, checking the server's certificate against `ctx`'s trust store and `ip`.
  bool start_tls(SSL_CTX* ctx, const char* ip) {
    ssl_ = SSL_new(ctx);
    if (ssl_ == nullptr || SSL_set_fd(ssl_, fd_) != 1) return false;
    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_), ip);
    return SSL_connect(ssl_) == 1;
  }
  long verify_result() const { return SSL_get_verify_result(ssl_); }

  void send(const std::string& data) {
    std::size_t done = 0;
    while (done < data.size()) {
      ssize_t n = ssl_ != nullptr
                      ? SSL_write(ssl_, data.data() + done, static_cast<int>(data.size() - done))
                      : ::send(fd_, data.data() + done, data.size() - done, MSG_NOSIGNAL);
      if (n <= 0) throw std::runtime_error("send failed");
      done += static_cast<std::size_t>(n);
    }
  }

  /// One whole response (framed by Content-Length); throws if it is not complete in time.
  Reply read_reply(Clock::duration timeout = 1s) {
    auto deadline = Clock::now() + timeout;
    for (;;) {
      if (auto r = take_reply()) return *r;
      if (read_more(deadline) <= 0) throw std::runtime_error("no complete reply; got: " + buf_);
    }
  }

  /// True if the server closes the connection in time, with nothing further sent.
  bool closed_by_server(Clock::duration timeout = 1s) {
    return read_more(Clock::now() + timeout) == 0 && buf_.empty();
  }

  /// Whether a byte of a reply has arrived yet, without waiting.
  bool has_data() {
    pollfd p{fd_, POLLIN, 0};
    return !buf_.empty() || (ssl_ != nullptr && SSL_pending(ssl_) > 0) || ::poll(&p, 1, 0) > 0;
  }

 private:
  // Bytes read, 0 at EOF, -1 on a timeout or error.
  ssize_t read_more(Clock::time_point deadline) {
    if (ssl_ == nullptr || SSL_pending(ssl_) == 0) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      pollfd p{fd_, POLLIN, 0};
      if (left.count() < 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) return -1;
    }
    char chunk[4096];
    ssize_t n =
        ssl_ != nullptr ? SSL_read(ssl_, chunk, sizeof chunk) : ::recv(fd_, chunk, sizeof chunk, 0);
    if (n > 0) buf_.append(chunk, static_cast<std::size_t>(n));
    if (n < 0 && ssl_ == nullptr) return -1;
    return n < 0 ? 0 : n;  // a failed TLS read is the peer going away
  }

  std::optional<Reply> take_reply() {
    auto end = buf_.find("\r\n\r\n");
    if (end == std::string::npos) return std::nullopt;
    Reply r;
    std::size_t line_end = buf_.find("\r\n");
    std::string status_line = buf_.substr(0, line_end);
    if (status_line.rfind("HTTP/1.", 0) != 0 || status_line.size() < 12) {
      throw std::runtime_error("bad status line: " + status_line);
    }
    r.status = std::stoi(status_line.substr(9, 3));
    for (std::size_t pos = line_end + 2; pos < end;) {
      std::size_t eol = buf_.find("\r\n", pos);
      std::string line = buf_.substr(pos, eol - pos);
      std::size_t colon = line.find(':');
      std::size_t value = line.find_first_not_of(' ', colon + 1);
      r.headers[lower(line.substr(0, colon))] =
          value == std::string::npos ? "" : line.substr(value);
      pos = eol + 2;
    }
    std::size_t length =
        r.headers.count("content-length") ? std::stoul(r.headers["content-length"]) : 0;
    if (buf_.size() < end + 4 + length) return std::nullopt;
    r.body = buf_.substr(end + 4, length);
    buf_.erase(0, end + 4 + length);
    return r;
  }

  int fd_ = -1;
  SSL* ssl_ = nullptr;
  std::string buf_;
};

std::string get(const std::string& path, const std::string& extra_headers = "") {
  return "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra_headers + "\r\n";
}

}  // namespace

TEST_CASE("http server: a plain request gets the programmed reply and is recorded",
          "[http_server]") {
  HttpServer server;
  REQUIRE(server.port() > 0);
  CHECK(server.url("/hook") == "http://127.0.0.1:" + std::to_string(server.port()) + "/hook");
  CHECK(server.url() == "http://127.0.0.1:" + std::to_string(server.port()) + "/");

  // Written on the server thread; the reply's arrival over a socket is no ordering TSan can see.
  std::atomic<long> seen_n{-1};
  server.on_request([&](const HttpRequest&, std::size_t n) {
    seen_n = static_cast<long>(n);
    return HttpResponse{.status = 201, .body = "created", .headers = {{"X-Reply", "yes"}}};
  });

  auto before = Clock::now();
  Client c(server.port());
  c.send(
      "POST /hook?x=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Signature: abc\r\n"
      "Content-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}");
  Reply reply = c.read_reply();
  auto after = Clock::now();

  CHECK(reply.status == 201);
  CHECK(reply.body == "created");
  CHECK(reply.headers["x-reply"] == "yes");
  CHECK(seen_n == 0);
  REQUIRE(server.request_count() == 1);
  HttpRequest req = server.requests().at(0);
  CHECK(req.method == "POST");
  CHECK(req.path == "/hook?x=1");
  CHECK(req.body == "{\"a\":1}");
  CHECK(req.headers["x-signature"] == "abc");
  CHECK(req.headers["content-type"] == "application/json");
  CHECK(req.headers.count("X-Signature") == 0);
  CHECK(req.at >= before);
  CHECK(req.at <= after);
}

TEST_CASE("http server: default reply is 200 ok; a throwing handler gets a 500", "[http_server]") {
  HttpServer server;
  Client c(server.port());
  c.send(get("/a"));
  Reply first = c.read_reply();
  CHECK(first.status == 200);
  CHECK(first.body == "ok");

  server.on_request(
      [](const HttpRequest&, std::size_t) -> HttpResponse { throw std::runtime_error("boom"); });
  c.send(get("/b"));
  Reply second = c.read_reply();
  CHECK(second.status == 500);
  CHECK(second.body == "boom");
  CHECK(server.request_count() == 2);
}

TEST_CASE("http server: a delayed reply does not hold up other connections", "[http_server]") {
  HttpServer server;
  server.on_request([](const HttpRequest& r, std::size_t) {
    if (r.path == "/slow") return HttpResponse{.body = "slow", .delay = 600ms};
    return HttpResponse{.body = "fast"};
  });

  Client slow(server.port());
  slow.send(get("/slow"));
  REQUIRE(eventually([&] { return server.request_count() == 1; }, 1s));

  Client fast(server.port());
  fast.send(get("/fast"));
  Reply fast_reply = fast.read_reply(400ms);
  CHECK(fast_reply.body == "fast");
  CHECK_FALSE(slow.has_data());

  Reply slow_reply = slow.read_reply(1s);
  CHECK(slow_reply.status == 200);
  CHECK(slow_reply.body == "slow");
  // libevent measures the delay from its cached loop time, a little before the request's stamp.
  CHECK(Clock::now() - server.requests().at(0).at >= 500ms);
}

TEST_CASE("http server: stopping with a delayed reply pending neither hangs nor leaks",
          "[http_server]") {
  auto server = std::make_unique<HttpServer>();
  server->on_request(
      [](const HttpRequest&, std::size_t) { return HttpResponse{.body = "never", .delay = 30s}; });
  Client c(server->port());
  c.send(get("/hang"));
  {
    // A client that gave up: its request is still pending when the server stops.
    Client gone(server->port());
    gone.send(get("/gone"));
    REQUIRE(eventually([&] { return server->request_count() == 2; }, 1s));
  }

  auto t0 = Clock::now();
  server.reset();
  CHECK(Clock::now() - t0 < 500ms);
  CHECK(c.closed_by_server());
}

TEST_CASE("http server: a client gone before its delayed reply does not upset the server",
          "[http_server]") {
  HttpServer server;
  server.on_request([](const HttpRequest& r, std::size_t) {
    // The second reply is due after the first, so once it arrives the first one has been sent
    // into the closed connection.
    if (r.path == "/gone") return HttpResponse{.body = "late", .delay = 50ms};
    return HttpResponse{.body = "after", .delay = 150ms};
  });
  {
    Client gone(server.port());
    gone.send(get("/gone"));
    REQUIRE(eventually([&] { return server.request_count() == 1; }, 1s));
  }
  Client next(server.port());
  next.send(get("/next"));
  CHECK(next.read_reply().body == "after");
}

TEST_CASE("http server: keep-alive reuses one connection; close_connection ends it",
          "[http_server]") {
  HttpServer server;
  server.on_request([](const HttpRequest&, std::size_t n) {
    return HttpResponse{.body = "reply " + std::to_string(n), .close_connection = n == 2};
  });

  Client c(server.port());
  c.send(get("/1"));
  CHECK(c.read_reply().body == "reply 0");
  c.send(get("/2"));
  CHECK(c.read_reply().body == "reply 1");
  CHECK(server.request_count() == 2);
  CHECK(server.connections_accepted() == 1);

  c.send(get("/3"));
  Reply last = c.read_reply();
  CHECK(last.body == "reply 2");
  CHECK(lower(last.headers["connection"]) == "close");
  CHECK(c.closed_by_server());

  Client again(server.port());
  again.send(get("/4"));
  CHECK(again.read_reply().body == "reply 3");
  CHECK(server.connections_accepted() == 2);
}

TEST_CASE("http server: https with a generated self-signed certificate", "[http_server]") {
  ScratchDir dir;
  auto [cert, key] = make_self_signed_cert(dir.path());
  CHECK(cert == (dir.path() / "cert.pem").string());
  CHECK(key == (dir.path() / "key.pem").string());

  HttpServer server(cert, key);
  CHECK(server.url("/secure") == "https://127.0.0.1:" + std::to_string(server.port()) + "/secure");

  SslCtxPtr trusting(SSL_CTX_new(TLS_client_method()));
  REQUIRE(trusting);
  REQUIRE(SSL_CTX_load_verify_locations(trusting.get(), cert.c_str(), nullptr) == 1);
  SSL_CTX_set_verify(trusting.get(), SSL_VERIFY_PEER, nullptr);

  Client c(server.port());
  REQUIRE(c.start_tls(trusting.get(), "127.0.0.1"));
  CHECK(c.verify_result() == X509_V_OK);
  c.send(
      "POST /secure HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n"
      "Connection: close\r\n\r\nhello");
  Reply reply = c.read_reply();
  CHECK(reply.status == 200);
  CHECK(reply.body == "ok");
  REQUIRE(server.request_count() == 1);
  CHECK(server.requests().at(0).body == "hello");
  CHECK(server.requests().at(0).path == "/secure");
  CHECK(server.connections_accepted() == 1);

  SECTION("a client that does not trust the certificate fails the handshake") {
    SslCtxPtr strict(SSL_CTX_new(TLS_client_method()));
    REQUIRE(strict);
    SSL_CTX_set_verify(strict.get(), SSL_VERIFY_PEER, nullptr);
    Client untrusting(server.port());
    CHECK_FALSE(untrusting.start_tls(strict.get(), "127.0.0.1"));
    CHECK(untrusting.verify_result() != X509_V_OK);
  }
  SECTION("the certificate does not pass for another address") {
    Client wrong_ip(server.port());
    CHECK_FALSE(wrong_ip.start_tls(trusting.get(), "127.0.0.2"));
    CHECK(wrong_ip.verify_result() == X509_V_ERR_IP_ADDRESS_MISMATCH);
  }
}

TEST_CASE("http server: make_self_signed_cert reports an openssl failure", "[http_server]") {
  CHECK_THROWS_WITH(make_self_signed_cert("/nonexistent/jobqd-http-test"),
                    Catch::Contains("openssl req failed"));
}

}  // namespace jq::test
