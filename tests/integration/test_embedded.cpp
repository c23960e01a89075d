// `redis.url: embedded`: jobqd's own redis-server lives and dies with it, one per state dir.
#include <catch2/catch.hpp>

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
