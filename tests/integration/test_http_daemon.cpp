// The http handler inside the real daemon: retries by status class, Retry-After honoured.
#include <catch2/catch.hpp>

#include "tests/support/daemon.hpp"
#include "tests/support/http_server.hpp"

using namespace jq::test;
using namespace std::chrono_literals;

TEST_CASE(
    "webhooks: 500 then 200 is retried to success; 404 is not retried; 429 waits for "
    "Retry-After",
    "[integration][http]") {
  RedisServer redis;
  HttpServer server;
  std::map<std::string, int> seen;
  std::mutex mu;
  server.on_request([&](const HttpRequest& r, std::size_t) {
    std::lock_guard lock(mu);
    int n = seen[r.headers.at("x-jobq-id")]++;
    if (r.path == "/flaky")
      return n == 0 ? HttpResponse{500, "try again"} : HttpResponse{200, "ok"};
    if (r.path == "/gone") return HttpResponse{404, "no such hook"};
    if (n == 0) return HttpResponse{429, "busy", {{"Retry-After", "1"}}};
    return HttpResponse{200, "after the wait"};
  });
  std::string yaml = R"(
handlers:
  flaky: {type: http, url: ")" +
                     server.url("/flaky") + R"("}
  gone: {type: http, url: ")" +
                     server.url("/gone") + R"("}
  busy: {type: http, url: ")" +
                     server.url("/busy") + R"("}
queues:
  q: {handler: flaky, max_attempts: 3, retry_base: 50ms, delayed_poll: 20ms}
)";
  Daemon d(redis, yaml);
  d.start_and_wait(redis);
  auto r = redis.client();
  push(r, "q",
       {R"({"id":"f","payload":{}})", R"({"id":"g","handler":"gone","payload":{}})",
        R"({"id":"b","handler":"busy","payload":{}})"});
  REQUIRE(eventually([&] { return count_status(r, "q", {"f", "b"}, "succeeded") == 2; }, 10s));
  REQUIRE(eventually([&] { return count_status(r, "q", {"g"}, "failed") == 1; }, 10s));
  auto s = job_states(r, "q", {"f", "g", "b"});
  CHECK(s[0]["attempts"] == "2");
  CHECK(s[0]["result"] == "ok");
  CHECK(s[1]["attempts"] == "1");  // a 404 is not retried
  CHECK(s[1]["error_kind"] == "http_status");
  CHECK(s[1]["error"] == "HTTP 404 from POST " + server.url("/gone") + ": no such hook");
  CHECK(s[2]["attempts"] == "2");
  // The retry of "b" came no earlier than its Retry-After (1 s), though retry_base is 50 ms.
  std::vector<std::chrono::steady_clock::time_point> busy;
  for (const auto& req : server.requests()) {
    if (req.path == "/busy") busy.push_back(req.at);
  }
  REQUIRE(busy.size() == 2);
  CHECK(busy[1] - busy[0] >= 990ms);
  CHECK(d.stop() == 0);
}
