// jobqd entry point. Until the engine lands this runs a short demo of the coroutine runtime.
#include <cstdio>
#include <string>
#include <vector>

#include "async/async.hpp"

using namespace jq::async;
using namespace std::chrono_literals;

namespace {

Task<int> job(Queue<int>& q, Semaphore& sem, int id) {
  auto permit = co_await sem.acquire();
  co_await sleep(std::chrono::milliseconds(20 + id * 5));
  co_await q.put(int(id));
  co_return id* id;
}

Task<void> demo() {
  Queue<int> done(4);
  Semaphore sem(3);
  std::vector<Task<int>> jobs;
  for (int i = 0; i < 8; ++i) jobs.push_back(job(done, sem, i));
  auto print_done = [](Queue<int>& q) -> Task<void> {
    while (auto id = co_await q.get()) std::printf("job %d finished\n", *id);
  };
  auto printer = spawn(print_done(done));
  auto results = co_await gather(std::move(jobs));
  done.close();
  co_await printer;
  std::printf("gather -> [");
  for (int r : results) std::printf(" %d", r);
  std::printf(" ]\n");
  try {
    co_await wait_for(sleep(10s), 100ms);
  } catch (const TimeoutError& e) {
    std::printf("wait_for: %s\n", e.what());
  }
}

}  // namespace

int main() {
  Loop loop;
  run(loop, demo());
  return 0;
}
