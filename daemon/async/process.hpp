// Child processes (asyncio.create_subprocess_exec): spawned without a shell, reaped via a pidfd.
#pragma once

#include <sys/resource.h>
#include <sys/types.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "async/loop.hpp"
#include "async/task.hpp"

namespace jq::async {

/// An owned file descriptor, closed on destruction.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) noexcept : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }
  int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }
  void reset() noexcept;
  int release() noexcept { return std::exchange(fd_, -1); }

 private:
  int fd_ = -1;
};

/// How a child ended.
struct ExitStatus {
  int code = -1;   // exit status, when it exited
  int signal = 0;  // the signal that killed it, when it was killed
  bool core = false;
  bool exited() const noexcept { return signal == 0 && code >= 0; }
  /// "exit status 3", "killed by SIGKILL", "killed by SIGSEGV (core dumped)".
  std::string describe() const;
};

struct SpawnOptions {
  enum class Stdio { inherit, null, pipe };
  std::vector<std::string> argv;  // argv[0]: an absolute path (no PATH search, no shell)
  std::optional<std::vector<std::string>> env;  // "K=V" entries; nullopt: this process's
  std::string cwd;
  bool new_process_group = true;  // so the whole tree can be signalled at once
  Stdio in = Stdio::null;
  Stdio out = Stdio::inherit;
  Stdio err = Stdio::inherit;
  /// The child gets this signal when jobqd dies, however it dies (kill -9 included), so that a
  /// helper server is never left running on its own. 0: none. Needs a fork, not posix_spawn.
  int parent_death_signal = 0;
  // Needs root, and a fork instead of posix_spawn:
  std::optional<uid_t> uid;
  std::optional<gid_t> gid;
  std::vector<std::pair<int, rlim_t>> limits;  // RLIMIT_* -> soft and hard limit
};

/// Makes the process groups of this process's children die with it, however it dies (kill -9,
/// a crash, the OOM killer): a keeper process, forked here, reads a pipe on which spawn() and
/// the reaping wait() announce each child's group; when the pipe closes (this process is gone)
/// it SIGKILLs every group still announced, then exits. Without it a job's program, or the
/// children of a shell script, would run on beside the copy another daemon starts when it
/// recovers the job. A program that leaves its group (setsid) is out of reach. Call once, early,
/// before any thread starts. Throws std::runtime_error if the keeper cannot be started.
void kill_groups_on_exit();

/// A running (or finished, not yet reaped) child. The parent's end of each pipe is non-blocking
/// and close-on-exec; the child gets exactly fds 0-2 (everything else is closed in it). Its exit
/// is observed through a pidfd in the loop, so there is no SIGCHLD handler and no polling, and
/// wait() reaps it: no zombie.
class Process {
 public:
  /// Starts the program. Throws std::runtime_error "cannot run PROG: reason" when it cannot be
  /// started (not found, not executable, bad cwd, no permission for the uid).
  static Process spawn(const SpawnOptions& options);

  Process() = default;
  Process(Process&& o) noexcept
      : pid_(std::exchange(o.pid_, -1)),
        group_(o.group_),
        reaped_(o.reaped_),
        status_(o.status_),
        pidfd_(std::move(o.pidfd_)),
        in_(std::move(o.in_)),
        out_(std::move(o.out_)),
        err_(std::move(o.err_)) {}
  Process& operator=(Process&& o) noexcept {
    if (this != &o) {
      Process old(std::move(*this));  // a child we held is killed and reaped, as on destruction
      pid_ = std::exchange(o.pid_, -1);
      group_ = o.group_;
      reaped_ = o.reaped_;
      status_ = o.status_;
      pidfd_ = std::move(o.pidfd_);
      in_ = std::move(o.in_);
      out_ = std::move(o.out_);
      err_ = std::move(o.err_);
    }
    return *this;
  }
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  /// A child never waited for is killed (its group too) and reaped here.
  ~Process();

  pid_t pid() const noexcept { return pid_; }
  Fd& stdin_fd() noexcept { return in_; }
  Fd& stdout_fd() noexcept { return out_; }
  Fd& stderr_fd() noexcept { return err_; }

  /// Sends `sig` to the process group (or to the child alone). False if it is already reaped.
  bool kill(int sig, bool group = true) noexcept;

  /// Waits for the exit and reaps. With `kill_group`, whatever is left of the child's process
  /// group (grandchildren it started) is SIGKILLed first, while the exited child still holds its
  /// pid, so the group id cannot have been reused by then. Cancellable (the child keeps running;
  /// wait again or let the destructor kill it).
  Task<ExitStatus> wait(bool kill_group = false);
  bool reaped() const noexcept { return reaped_; }

 private:
  pid_t pid_ = -1;
  bool group_ = false;
  bool reaped_ = false;
  ExitStatus status_;
  Fd pidfd_;
  Fd in_, out_, err_;
};

}  // namespace jq::async
