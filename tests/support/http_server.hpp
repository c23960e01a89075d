// A loopback HTTP/HTTPS server on a thread of its own, for tests of HTTP clients (webhooks).
#pragma once

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace jq::test {

struct HttpRequest {
  std::string method;  // "POST", "GET"...
  std::string path;    // path plus query, as received ("/hook?x=1")
  std::string body;
  std::map<std::string, std::string> headers;  // keys lower-cased; repeated headers joined by ", "
  std::chrono::steady_clock::time_point at;    // when it arrived (fully read)
};

struct HttpResponse {
  int status = 200;
  // Default member initializers let callers use designated initializers warning-free
  // ({.body = "x", .delay = 50ms}) under -Wextra.
  std::string body{};
  std::map<std::string, std::string> headers{};
  // Replies this much later from a timer on the server loop, so other connections are served
  // meanwhile: lets a test hold a client in its timeout path.
  std::chrono::milliseconds delay{0};
  bool close_connection = false;  // reply with Connection: close
};

class HttpServer {
 public:
  using Handler = std::function<HttpResponse(const HttpRequest&, std::size_t n)>;

  /// Plain HTTP on 127.0.0.1 with a port the kernel picks; HTTPS when cert and key PEM file paths
  /// are given. Throws std::runtime_error if it cannot listen or load the certificate.
  explicit HttpServer(std::string cert_pem = "", std::string key_pem = "");
  /// Stops and joins the server thread; replies still delayed are dropped with their connections.
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  int port() const;
  /// "http://127.0.0.1:PORT/path" or "https://127.0.0.1:PORT/path".
  std::string url(const std::string& path = "/") const;
  /// Called on the server thread for each request; n is the 0-based index of the request. The
  /// default replies 200 with body "ok". A handler that throws gets a 500 with the message.
  void on_request(Handler fn);
  /// A copy of every request received so far, in arrival order.
  std::vector<HttpRequest> requests() const;
  std::size_t request_count() const;
  /// TCP connections accepted: a client reusing a keep-alive connection does not add to it.
  std::size_t connections_accepted() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// Makes a self-signed certificate for `names` (subjectAltName; by default 127.0.0.1 and
/// localhost) with the openssl command-line tool, as dir/cert.pem and dir/key.pem. Returns
/// {cert_path, key_path};
/// throws std::runtime_error with openssl's output if it fails.
std::pair<std::string, std::string> make_self_signed_cert(
    const std::filesystem::path& dir, const std::string& names = "IP:127.0.0.1,DNS:localhost");

}  // namespace jq::test
