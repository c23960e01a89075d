// The exec handler inside the real daemon: no zombie and no fd left behind after 1,000 jobs.
#include <catch2/catch.hpp>

#include <dirent.h>

#include <fstream>

#include "tests/support/daemon.hpp"
#include "tests/support/fixtures.hpp"

using namespace jq::test;
using namespace std::chrono_literals;

namespace {

std::size_t open_fds(pid_t pid) {
  std::size_t n = 0;
  DIR* d = opendir(("/proc/" + std::to_string(pid) + "/fd").c_str());
  if (!d) return 0;
  while (dirent* e = readdir(d)) n += e->d_name[0] != '.';
  closedir(d);
  return n;
}

// Processes whose parent is `pid` (running or zombie).
std::vector<std::string> children_of(pid_t pid) {
  std::vector<std::string> out;
  DIR* d = opendir("/proc");
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    std::ifstream stat(std::string("/proc/") + e->d_name + "/stat");
    std::string line;
    if (!std::getline(stat, line)) continue;
    auto close = line.rfind(')');
    if (close == std::string::npos) continue;
    char state = 0;
    long ppid = 0;
    // The keeper of process groups (async::kill_groups_on_exit) is jobqd's own, not a job's.
    if (line.find("(jobqd-keeper)") != std::string::npos) continue;
    if (std::sscanf(line.c_str() + close + 2, "%c %ld", &state, &ppid) == 2 && ppid == pid) {
      out.push_back(std::string(e->d_name) + " state " + state);
    }
  }
  closedir(d);
  return out;
}

}  // namespace

TEST_CASE("1,000 exec jobs at concurrency 16 leave no zombie and no extra fd in jobqd",
          "[integration][exec]") {
  RedisServer redis;
  std::string yaml = R"(
handlers:
  cat: {type: exec, command: [")" +
                     fixture("cat_stdin") + R"("]}
queues:
  q: {handler: cat, concurrency: 16, buffer: 64}
)";
  Daemon d(redis, yaml);
  d.start_and_wait(redis);
  auto r = redis.client();
  std::vector<std::string> warm, ids;
  for (int i = 0; i < 20; ++i) warm.push_back("w" + std::to_string(i));
  for (int i = 0; i < 1000; ++i) ids.push_back("e" + std::to_string(i));
  auto as_jobs = [](const std::vector<std::string>& v) {
    std::vector<std::string> out;
    for (const auto& id : v) out.push_back(R"({"id":")" + id + R"(","payload":{"n":1}})");
    return out;
  };
  push(r, "q", as_jobs(warm));
  REQUIRE(eventually([&] { return count_status(r, "q", warm, "succeeded") == warm.size(); }, 20s));
  std::size_t fds_before = open_fds(d.pid());
  push(r, "q", as_jobs(ids));
  bool done =
      eventually([&] { return count_status(r, "q", ids, "succeeded") == ids.size(); }, 60s, 20ms);
  INFO(d.log().substr(0, 3000));
  REQUIRE(done);
  auto states = job_states(r, "q", {"e0", "e999"}, {"result"});
  CHECK(states[0]["result"] == R"({"id":"e0","payload":{"n":1}})");
  CHECK(open_fds(d.pid()) == fds_before);
  auto kids = children_of(d.pid());
  INFO("children: " << kids.size());
  CHECK(kids.empty());
  CHECK(d.stop() == 0);
}

TEST_CASE("an exec job over its timeout is killed and its error says how", "[integration][exec]") {
  RedisServer redis;
  TempDir dir;
  std::string yaml = R"(
handlers:
  stubborn: {type: exec, command: [")" +
                     fixture("stubborn") + R"(", ")" + (dir.path() / "pids").string() +
                     R"("], kill_grace: 200ms}
queues:
  q: {handler: stubborn, concurrency: 1, max_attempts: 1, timeout: 300ms}
)";
  Daemon d(redis, yaml);
  d.start_and_wait(redis);
  auto r = redis.client();
  push(r, "q", {R"({"id":"x","payload":{}})"});
  REQUIRE(eventually([&] { return count_status(r, "q", {"x"}, "failed") == 1; }, 10s));
  auto s = job_states(r, "q", {"x"});
  CHECK(s[0]["error_kind"] == "timeout");
  CHECK(s[0]["error"] == "killed by SIGKILL after 300 ms timeout (it ignored SIGTERM for 200ms)");
  CHECK(children_of(d.pid()).empty());
}
