// Fuzzes the http handler's response handling: each input is what a loopback server answers.
//
// A listener on 127.0.0.1 (one for the whole run, served by a thread of its own) reads each
// request the handler sends, answers with the input's bytes as the raw HTTP response and closes
// its side. Each input runs the handler twice on one fresh loop: the second attempt finds the
// first one's kept-alive connection closed under it (when the first kept it) and takes the
// handler's retry-on-a-new-connection path. Any Outcome is fine; a crash, a sanitizer report,
// an exception out of run(), a broken promise of the Outcome, or a hang is a finding.
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <typeinfo>
#include <vector>

#include "async/async.hpp"
#include "fuzz/finding.hpp"
#include "handlers/handler.hpp"
#include "job/job.hpp"

using jq::fuzz::finding;
using namespace std::chrono_literals;
namespace async = jq::async;
namespace config = jq::config;
namespace handlers = jq::handlers;

namespace {

constexpr std::uint64_t kMaxResponse = 256;  // small: the cap on the kept body is exercised too
constexpr auto kJobTimeout = 200ms;          // the attempt's timeout, as the engine would pass it
// The server has closed its side by the time a response is complete or cut short: the handler
// must be done well within this. Longer than kJobTimeout so a loaded machine does not make a
// slow attempt look like a hang.
constexpr auto kHang = 1s;

// The loopback HTTP "server": it never parses more than the request's end, and answers with
// whatever it is told. Connections are served concurrently (poll), each from its own copy of the
// response taken when it was accepted.
class Loopback {
 public:
  Loopback() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::listen(fd_, 128) != 0 || ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      finding("loopback: cannot listen on 127.0.0.1");
    }
    port_ = ntohs(a.sin_port);
    std::thread([this] { serve(); }).detach();  // lives as long as the process
  }

  int port() const { return port_; }

  void answer_with(std::string response) {
    std::lock_guard lock(m_);
    response_ = std::move(response);
  }

 private:
  struct Peer {
    int fd = -1;
    enum { reading, writing, draining } state = reading;
    std::string in;
    std::string out;
    std::size_t sent = 0;
    std::chrono::steady_clock::time_point deadline;
  };

  // The request has arrived whole: its headers and Content-Length bytes of body.
  static bool complete(const std::string& in) {
    std::size_t end = in.find("\r\n\r\n");
    if (end == std::string::npos) return in.size() > (1 << 20);
    std::size_t length = 0;
    for (std::size_t at = in.find("\r\n"); at < end; at = in.find("\r\n", at + 2)) {
      constexpr std::string_view kName = "content-length:";
      if (::strncasecmp(in.c_str() + at + 2, kName.data(), kName.size()) == 0) {
        length = std::strtoull(in.c_str() + at + 2 + kName.size(), nullptr, 10);
      }
    }
    return in.size() - (end + 4) >= length;
  }

  static void close_peer(Peer& p) {
    ::close(p.fd);
    p.fd = -1;
  }

  static void step(Peer& p, short events) {
    char buf[4096];
    if (p.state == Peer::reading && (events & (POLLIN | POLLHUP | POLLERR))) {
      ssize_t n = ::recv(p.fd, buf, sizeof buf, 0);
      if (n > 0) p.in.append(buf, static_cast<std::size_t>(n));
      if (n == 0) return close_peer(p);  // the client gave up before its request was whole
      if (n < 0 && errno != EAGAIN && errno != EINTR) return close_peer(p);
      if (complete(p.in)) p.state = Peer::writing;
    }
    if (p.state == Peer::writing) {
      while (p.sent < p.out.size()) {
        ssize_t n = ::send(p.fd, p.out.data() + p.sent, p.out.size() - p.sent, MSG_NOSIGNAL);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
        if (n <= 0) return close_peer(p);
        p.sent += static_cast<std::size_t>(n);
      }
      ::shutdown(p.fd, SHUT_WR);
      p.state = Peer::draining;
      return;
    }
    if (p.state == Peer::draining && (events & (POLLIN | POLLHUP | POLLERR))) {
      // Read until the client closes: closing with unread bytes would reset the connection,
      // and the client could lose the response.
      ssize_t n = ::recv(p.fd, buf, sizeof buf, 0);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) close_peer(p);
    }
  }

  [[noreturn]] void serve() {
    std::vector<Peer> peers;
    std::vector<pollfd> fds;
    for (;;) {
      fds.assign(1, pollfd{fd_, POLLIN, 0});
      for (const auto& p : peers) {
        fds.push_back(
            pollfd{p.fd, static_cast<short>(p.state == Peer::writing ? POLLOUT : POLLIN), 0});
      }
      ::poll(fds.data(), fds.size(), 100);
      const auto now = std::chrono::steady_clock::now();
      for (std::size_t i = 0; i < peers.size(); ++i) {
        if (now > peers[i].deadline) {
          close_peer(peers[i]);
        } else {
          step(peers[i], fds[i + 1].revents);
        }
      }
      std::erase_if(peers, [](const Peer& p) { return p.fd < 0; });
      if (fds[0].revents & POLLIN) {
        for (int fd; (fd = ::accept4(fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0;) {
          Peer p;
          p.fd = fd;
          p.deadline = now + 10s;
          {
            std::lock_guard lock(m_);
            p.out = response_;
          }
          peers.push_back(std::move(p));
        }
      }
    }
  }

  int fd_ = -1;
  int port_ = 0;
  std::mutex m_;
  std::string response_;
};

Loopback& loopback() {
  static Loopback* server = [] {
    ::signal(SIGPIPE, SIG_IGN);  // as the daemon does: a peer's reset is an error, not a signal
    return new Loopback;
  }();
  return *server;
}

config::HandlerConfig hook_config() {
  config::HandlerConfig h;
  h.name = "hook";
  h.type = config::HandlerType::http;
  h.url = "http://127.0.0.1:" + std::to_string(loopback().port()) + "/x";
  h.connect_timeout = kJobTimeout;
  h.max_response = kMaxResponse;
  h.pool_size = 1;
  return h;
}

jq::job::Job hook_job() {
  jq::job::Job j;
  j.id = "fuzz-1";
  j.handler = "hook";
  j.payload = {{"n", 1}};
  j.raw = R"({"id":"fuzz-1","payload":{"n":1}})";
  return j;
}

// Whether a failure names its error_kind: a contract string or a job::ErrorKind, whichever
// Outcome::kind is (it is moving from the one to the other).
template <class Kind>
bool named(Kind kind) {
  if constexpr (std::is_pointer_v<Kind>) {
    return kind && *kind;
  } else {
    return kind != Kind{};
  }
}

// What the Outcome promises, whatever the server said.
void check(const handlers::Outcome& o) {
  if (o.ok) {
    if (o.result.size() > kMaxResponse) finding("a result over max_response", o.result);
    if (!o.error.empty()) finding("a success with an error", o.error);
    return;
  }
  if (o.error.empty()) finding("a failure without an error");
  if (!named(o.kind)) finding("a failure without an error_kind", o.error);
  if (o.retry_after && !o.retry) finding("a Retry-After on a failure that is not retried", o.error);
}

async::Task<void> attempts(const config::HandlerConfig& cfg, const jq::job::Job& job) {
  // Built on the loop and destroyed before it: its pooled connection belongs to the loop.
  auto h = handlers::make(cfg);
  const std::string queue = "q";
  for (int i = 0; i < 2; ++i) {
    handlers::Run run{job, queue, i + 1, kJobTimeout, "", ""};
    bool hung = false;
    try {
      handlers::Outcome o = co_await async::wait_for(h->run(run), kHang);
      check(o);
    } catch (const async::TimeoutError&) {
      hung = true;
    }
    if (hung) finding("hang: the handler did not finish after the server closed the connection");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const config::HandlerConfig cfg = hook_config();
  static const jq::job::Job job = hook_job();
  loopback().answer_with(std::string(reinterpret_cast<const char*>(data), size));
  try {
    async::Loop loop;
    loop.set_reporter([](const std::string& m) { finding("the loop reported", m); });
    async::run(loop, attempts(cfg, job));
  } catch (const std::exception& e) {
    finding("an exception escaped the http handler",
            std::string(typeid(e).name()) + ": " + e.what());
  } catch (const async::Cancelled&) {
    finding("Cancelled escaped the http handler");
  }
  return 0;
}
