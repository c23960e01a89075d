// exec jobs per second through the whole daemon (Redis, spawn, pipes, reap, state writes)
// against `xargs -P C -n 1 /bin/true` over the same count, in the same run.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "tests/support/daemon.hpp"

using namespace jq::test;
using Clock = std::chrono::steady_clock;

namespace {

double seconds(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

double run_jobqd(int jobs, int concurrency) {
  RedisServer redis;
  std::string yaml =
      "handlers:\n  t: {type: exec, command: [\"/bin/true\"]}\nqueues:\n  q: {handler: t, "
      "concurrency: " +
      std::to_string(concurrency) + ", buffer: 256}\n";
  Daemon d(redis, yaml, "  log_level: warn\n");
  d.start_and_wait(redis);
  auto sub = redis.client();
  sub.cmd({"SUBSCRIBE", "jobq:{q}:events"});
  std::vector<std::string> batch;
  for (int i = 0; i < jobs; ++i)
    batch.push_back(R"({"id":"b)" + std::to_string(i) + R"(","payload":{}})");
  auto r = redis.client();
  auto t0 = Clock::now();
  push(r, "q", batch);
  for (int done = 0; done < jobs;) {
    auto m = sub.next_reply();
    if (m.elements.size() == 3 && m.elements[2].str.find("succeeded") != std::string::npos) ++done;
  }
  double took = seconds(Clock::now() - t0);
  d.stop();
  return jobs / took;
}

double run_xargs(int jobs, int concurrency) {
  TempDir dir;
  std::string script = "seq " + std::to_string(jobs) + " | xargs -P " +
                       std::to_string(concurrency) + " -n 1 /bin/true";
  auto t0 = Clock::now();
  Child c({"/bin/sh", "-c", script});
  c.wait(std::chrono::minutes(10));
  return jobs / seconds(Clock::now() - t0);
}

}  // namespace

int main(int argc, char** argv) {
  double scale = argc > 1 ? std::atof(argv[1]) : 1.0;
  int jobs = std::max(100, static_cast<int>(3000 * scale));
  int concurrency = 16;
  // Alternate and keep the best of each: the machine is shared and noisy.
  double ours = 0, base = 0;
  for (int round = 0; round < 3; ++round) {
    base = std::max(base, run_xargs(jobs, concurrency));
    ours = std::max(ours, run_jobqd(jobs, concurrency));
  }
  std::printf("exec /bin/true, %d jobs, concurrency %d\t%.0f\t%.0f\n", jobs, concurrency, ours,
              base);
  return 0;
}
