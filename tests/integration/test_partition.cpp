// A daemon cut off from Redis by a network partition (a loopback TCP proxy the test freezes,
// connections left open) while another daemon is not: the cut-off one fences itself, no job runs
// twice at once, and nothing is lost when the partition heals and its stale writes arrive late.
#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <fstream>
#include <map>
#include <sstream>

#include "tests/support/daemon.hpp"
#include "tests/support/files.hpp"
#include "tests/support/tcp_proxy.hpp"

using namespace jq::test;
using namespace std::chrono_literals;

namespace {

// One run of a job as the handler recorded it: who ran it, when it started and ended (ns).
struct Run {
  std::string daemon;
  long long start = 0, end = 0;
  bool killed = false;
};

// The handler's log: `start D ID T`, `end D ID T [killed]`, by job id in order of start.
std::map<std::string, std::vector<Run>> runs_in(const std::filesystem::path& log) {
  std::map<std::string, std::vector<Run>> out;
  std::ifstream in(log);
  for (std::string line; std::getline(in, line);) {
    std::istringstream f(line);
    std::string what, daemon, id, killed;
    long long t = 0;
    f >> what >> daemon >> id >> t >> killed;
    auto& v = out[id];
    if (what == "start") {
      v.push_back(Run{daemon, t, 0, false});
    } else {
      for (auto& r : v) {
        if (r.daemon == daemon && r.end == 0) {
          r.end = t;
          r.killed = killed == "killed";
          break;
        }
      }
    }
  }
  for (auto& [id, v] : out) {
    std::sort(v.begin(), v.end(), [](const Run& a, const Run& b) { return a.start < b.start; });
  }
  return out;
}

// Runs of one id that overlapped in time, described; empty when none did.
std::string overlaps(const std::map<std::string, std::vector<Run>>& runs) {
  std::string out;
  for (const auto& [id, v] : runs) {
    for (std::size_t i = 1; i < v.size(); ++i) {
      if (v[i - 1].end == 0 || v[i - 1].end > v[i].start) {
        out += id + ": " + v[i - 1].daemon + " from " + std::to_string(v[i - 1].start) + " to " +
               std::to_string(v[i - 1].end) + ", " + v[i].daemon + " from " +
               std::to_string(v[i].start) + "\n";
      }
    }
  }
  return out;
}

std::size_t started_by(const std::map<std::string, std::vector<Run>>& runs, const std::string& d) {
  std::size_t n = 0;
  for (const auto& [id, v] : runs) {
    for (const auto& r : v) n += r.daemon == d;
  }
  return n;
}

}  // namespace

TEST_CASE(
    "a daemon cut off from Redis (connections frozen, not closed) fences itself: no job runs "
    "twice at once, none is lost when the partition heals",
    "[integration][partition]") {
  RedisServer redis;
  TcpProxy proxy(redis.port());
  TempDir dir;
  const auto log = dir.path() / "runs.log";
  const auto script = dir.path() / "job.sh";
  // Each run says when it starts and ends, and when it is stopped (its process group gets
  // SIGTERM): the trap runs at once, the sleep being waited for in the background.
  write_file(script,
             "#!/bin/sh\n"
             "echo \"start $1 $2 $(date +%s%N)\" >> \"$3\"\n"
             "trap 'echo \"end $1 $2 $(date +%s%N) killed\" >> \"$3\"; exit 143' TERM INT\n"
             "sleep 0.4 &\n"
             "wait $!\n"
             "echo \"end $1 $2 $(date +%s%N)\" >> \"$3\"\n");
  ::chmod(script.c_str(), 0755);
  auto yaml = [&](const std::string& name) {
    return "handlers:\n  job: {type: exec, command: [\"" + script.string() + "\", \"" + name +
           "\", \"{id}\", \"" + log.string() +
           "\"]}\nqueues:\n  q: {handler: job, concurrency: 4, buffer: 4}\n";
  };
  // A buffer of 4: neither daemon holds more than 8 jobs, so that after the partition B cannot
  // take every new job before A's first fetch (with the default 100 it could, and sometimes did).
  Daemon a(proxy.url(), yaml("A"));  // the one the partition cuts off
  Daemon b(redis, yaml("B"));
  // A alone first, so that the jobs are A's to run when the partition comes (with both up, B could
  // take them all before A's fetch through the proxy wakes); B joins before the cut.
  a.start_and_wait(redis);
  auto r = redis.client();
  auto first = ids("j", 60);
  push(r, "q", jobs_for(first, "{}"));
  REQUIRE(eventually([&] { return started_by(runs_in(log), "A") >= 4; }, 15s));
  b.start_and_wait(redis);
  // The cut must catch A running jobs (what is checked is that A stops them): B's start can be
  // slow (a sanitizer, a busy machine), long enough for A to run all 60 alone. More are pushed,
  // and the cut comes once A is seen running one (its 4 slots stay busy while jobs wait).
  const auto more = ids("m", 40);
  push(r, "q", jobs_for(more, "{}"));
  first.insert(first.end(), more.begin(), more.end());
  auto a_running = [&] {
    for (const auto& [id, v] : runs_in(log)) {
      for (const auto& run : v) {
        if (run.daemon == "A" && run.end == 0) return true;
      }
    }
    return false;
  };
  REQUIRE(eventually(a_running, 15s));
  proxy.freeze();
  // A can confirm its lease no more: it stops its jobs before the lease ends in Redis, and B
  // takes them back after it and runs everything.
  CHECK(eventually([&] { return count_status(r, "q", first, "succeeded") == first.size(); }, 60s));
  CHECK(a.log().find("stopping this daemon's jobs from Redis") != std::string::npos);
  auto during = runs_in(log);
  INFO(overlaps(during));
  CHECK(overlaps(during).empty());
  bool a_stopped_one = false;
  for (const auto& [id, v] : during) {
    for (const auto& run : v) a_stopped_one = a_stopped_one || (run.daemon == "A" && run.killed);
  }
  CHECK(a_stopped_one);  // the partition caught A with jobs running

  // The partition heals: what A sent meanwhile reaches Redis late. Nothing breaks; A serves again.
  proxy.thaw();
  const std::string mine = "." + std::to_string(a.pid()) + ".";
  REQUIRE(eventually(
      [&] {
        for (auto& m : r.cmd({"ZRANGE", "jobq:{q}:leases", "0", "-1"}).elements) {
          if (m.str.find(mine) != std::string::npos) return true;
        }
        return false;
      },
      20s));
  const auto second = ids("k", 40);
  push(r, "q", jobs_for(second, "{}"));
  CHECK(
      eventually([&] { return count_status(r, "q", second, "succeeded") == second.size(); }, 30s));
  CHECK(count_status(r, "q", first, "succeeded") == first.size());
  const auto after = runs_in(log);
  INFO(overlaps(after));
  CHECK(overlaps(after).empty());
  CHECK(
      eventually([&] { return count_held(r, "q", first) + count_held(r, "q", second) == 0; }, 10s));
  CHECK(r.integer({"ZCARD", "jobq:{q}:dead"}) == 0);
  CHECK(r.integer({"LLEN", "jobq:{q}:pending"}) == 0);
  CHECK(a.running());
  CHECK(b.running());
  CHECK(started_by(after, "A") > started_by(during, "A"));  // A took jobs again
}
