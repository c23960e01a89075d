// A small HTTP/1.1 server on the loop for /metrics, /healthz, the dashboard and /api/: GET, HEAD
// and POST, one request per connection, bounded in every way a client could stretch it; a
// response may be a stream (server-sent events).
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <list>
#include <string>
#include <vector>

#include "async/async.hpp"
#include "async/process.hpp"
#include "ops/http_request.hpp"

namespace jq::ops {

/// The body of a streamed response (server-sent events), written as it comes.
class HttpStream {
 public:
  HttpStream(int fd, std::chrono::milliseconds write_deadline) noexcept
      : fd_(fd), deadline_(write_deadline) {}
  /// Writes `text` whole: false when the client is gone or did not take it within the write
  /// deadline (a client that stops reading is dropped, not buffered for).
  async::Task<bool> write(std::string text);

 private:
  int fd_;
  std::chrono::milliseconds deadline_;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  /// More header lines (Set-Cookie, Allow), each "Name: value" without CRLF.
  std::vector<std::string> headers;
  /// Set: the response is a stream; after the head (no Content-Length) this task writes its
  /// body until it returns or a write fails. Runs as a task of the connection.
  std::function<async::Task<void>(HttpStream&)> stream;
};

/// Why not libevent's evhttp: in 2.1 it has neither a connection cap nor a deadline for a whole
/// request (its timeout is per read, so a client sending a byte a second keeps a connection for
/// ever), and serving two GET paths needs nothing more than the request line and one header.
class HttpServer {
 public:
  struct Limits {
    std::size_t max_connections = 64;                  // more are closed at once
    std::size_t max_request_bytes = 8192;              // request line and headers: past it, 431
    std::chrono::milliseconds request_deadline{5000};  // to send the whole request
    std::chrono::milliseconds write_deadline{10000};   // to take the whole response
    std::size_t max_body_bytes = 65536;                // a POST's body: past it, 413
    std::size_t max_streams = 16;                      // streamed responses at once: past, 503
  };
  /// Runs on the loop for each request, as a task of the request's connection: it may wait (an
  /// /api/ read of Redis), never block. The request lives until the task ends.
  using Handler = std::function<async::Task<HttpResponse>(const HttpRequest&)>;

  /// Binds `listen` (host:port; port 0 picks one). Throws std::runtime_error naming the address
  /// and why (in use, not an address of this host).
  HttpServer(const std::string& listen, Handler handler, Limits limits);
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;
  ~HttpServer();

  /// The address bound, as host:port (the real port when 0 was asked).
  const std::string& address() const noexcept { return address_; }
  void start();
  /// Stops accepting and ends every connection.
  async::Task<void> stop();

 private:
  async::Task<void> acceptor();
  async::Task<void> serve(async::Fd fd);
  async::Task<HttpResponse> respond(const HttpRequest& req, int parsed) const;
  async::Task<void> answer(int fd, HttpResponse res, bool head_only);
  /// Returns once the client's side of `fd` is readable: it hung up (or sent what it must not).
  static async::Task<void> hangup(int fd);

  Handler handler_;
  Limits limits_;
  async::Fd listen_fd_;
  std::string address_;
  std::size_t open_ = 0;
  std::size_t streams_ = 0;
  async::JoinHandle<void> accept_task_;
  std::list<async::JoinHandle<void>> conns_;
};

}  // namespace jq::ops
