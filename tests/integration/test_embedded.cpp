// `redis.url: embedded`: jobqd's own redis-server lives and dies with it, one per state dir.
#include <catch2/catch.hpp>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <optional>

#include "tests/support/daemon.hpp"

using namespace jq::test;
using namespace std::chrono_literals;

namespace {

const char* kYaml = R"(
handlers:
  echo: {type: builtin, name: echo}
queues:
  q: {handler: echo}
)";

}  // namespace

TEST_CASE("embedded redis serves jobs, dies with a killed jobqd, and keeps its data",
          "[integration][embedded]") {
  Daemon d("embedded", kYaml);
  const std::string socket = (d.dir().path() / "state" / "redis.sock").string();
  std::optional<SyncRedis> r;
  // Started, and serving once its lease is in its own Redis.
  auto serving = [&] {
    return eventually(
        [&] {
          try {
            r.emplace(socket);
            return r->integer({"ZCARD", "jobq:{q}:leases"}) > 0;
          } catch (const std::exception&) {
            return false;
          }
        },
        15s);
  };
  d.start();
  REQUIRE(serving());
  // The banner and the ready line read as English for an embedded Redis too.
  const std::string state = (d.dir().path() / "state").string();
  CHECK(eventually(
      [&] { return d.log().find("from the embedded Redis as worker") != std::string::npos; }, 5s));
  CHECK(d.log().find(", Redis embedded in " + state + ", state " + state) != std::string::npos);
  r->cmd({"LPUSH", "jobq:{q}:pending", R"({"id":"kept","payload":{"n":1}})"});
  REQUIRE(eventually(
      [&] {
        return r->str({"HGET", "jobq:{q}:job:kept", "status"}) == "succeeded";
      },
      10s));
  auto info = r->str({"INFO", "server"});
  auto at = info.find("process_id:");
  REQUIRE(at != std::string::npos);
  const pid_t server = static_cast<pid_t>(std::stol(info.substr(at + 11)));
  REQUIRE_FALSE(process_gone(server));

  // A second jobqd on the same state directory is refused: two servers must never share an AOF.
  Daemon twin("embedded", kYaml);
  {
    std::ofstream cfg(twin.config_path());
    std::ifstream src(d.config_path());
    cfg << src.rdbuf();
  }
  twin.start();
  CHECK(twin.wait_exit(10s) > 0);
  CHECK_THAT(twin.log(), Catch::Contains("in use by another jobqd"));

  r.reset();
  d.kill9();
  // The server goes with it (parent-death signal), after writing its AOF.
  CHECK(eventually([&] { return process_gone(server); }, 10s));

  d.start();
  REQUIRE(serving());
  CHECK(r->str({"HGET", "jobq:{q}:job:kept", "result"}) == R"({"n":1})");
  r.reset();
  CHECK(d.stop() == 0);
}

TEST_CASE(
    "redis.embedded_port: served on loopback TCP too, as logged; a port in use stops the start",
    "[integration][embedded]") {
  const std::string port = std::to_string(free_port());
  {
    Daemon d("embedded", kYaml, "", "  embedded_port: " + port + "\n");
    d.start();
    REQUIRE(eventually(
        [&] { return d.log().find(" and redis://127.0.0.1:" + port + "\n") != std::string::npos; },
        15s));
    SyncRedis r(std::stoi(port));
    CHECK(r.str({"PING"}) == "PONG");
    // Loopback only, whatever else the machine has.
    const auto bind = r.cmd({"CONFIG", "GET", "bind"});
    REQUIRE(bind.elements.size() == 2);
    CHECK(bind.elements[1].str == "127.0.0.1 -::1");
    CHECK(d.stop() == 0);
  }
  // Someone else on the port (a system redis-server, say): jobqd does not start, and says which
  // port and which key, rather than leaving it to redis-server's own log.
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(std::stoi(port)));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  REQUIRE(::listen(fd, 1) == 0);
  Daemon taken("embedded", kYaml, "", "  embedded_port: " + port + "\n");
  taken.start();
  CHECK(taken.wait_exit(15s) == 1);
  ::close(fd);
  CHECK_THAT(taken.log(), Catch::Contains("redis.embedded_port: 127.0.0.1:" + port +
                                          " is already in use (another redis-server?)"));
}
