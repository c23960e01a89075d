// The to_thread worker pool: a mutex-guarded job queue out, an eventfd-signalled list back.
#include "async/thread_pool.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

namespace jq::async {

ThreadPool::ThreadPool(Loop& loop, std::size_t threads) {
  efd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (efd_ < 0) throw std::runtime_error(std::string("eventfd: ") + std::strerror(errno));
  ready_ev_.reset(event_new(loop.base(), efd_, EV_READ | EV_PERSIST, &ThreadPool::on_ready, this));
  if (!ready_ev_ || event_add(ready_ev_.get(), nullptr) != 0) {
    ::close(efd_);
    throw std::runtime_error("libevent: cannot watch the thread pool's eventfd");
  }
  workers_.reserve(threads);
  for (std::size_t i = 0; i < threads; ++i) workers_.emplace_back([this] { work(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
  for (Job* j : todo_) delete j;
  for (Job* j : done_) delete j;
  ready_ev_.reset();
  ::close(efd_);
}

void ThreadPool::submit(Job* job) {
  {
    std::lock_guard lock(mu_);
    todo_.push_back(job);
  }
  cv_.notify_one();
}

void ThreadPool::work() noexcept {
  for (;;) {
    Job* job;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !todo_.empty(); });
      if (stopping_) return;
      job = todo_.front();
      todo_.pop_front();
    }
    job->run();
    bool first;
    {
      std::lock_guard lock(mu_);
      first = done_.empty();
      done_.push_back(job);
    }
    if (first) {
      std::uint64_t one = 1;
      // A full counter (never in practice) still leaves the fd readable, which is all we need.
      [[maybe_unused]] ssize_t n = ::write(efd_, &one, sizeof one);
    }
  }
}

void ThreadPool::on_ready(evutil_socket_t fd, short, void* arg) noexcept {
  auto* self = static_cast<ThreadPool*>(arg);
  std::uint64_t count;
  [[maybe_unused]] ssize_t n = ::read(fd, &count, sizeof count);
  std::vector<Job*> done;
  {
    std::lock_guard lock(self->mu_);
    done.swap(self->done_);
  }
  for (Job* j : done) j->complete();
}

}  // namespace jq::async
