// Spawning children: posix_spawn (vfork-fast) normally, fork+exec when credentials or limits apply.
#include "async/process.hpp"

#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <spawn.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "async/io.hpp"
#include "async/spawn.hpp"

extern char** environ;

namespace jq::async {
namespace {

std::string signal_name(int sig) {
  const char* abbrev = sigabbrev_np(sig);
  return abbrev ? std::string("SIG") + abbrev : "signal " + std::to_string(sig);
}

[[noreturn]] void fail(const std::string& prog, const std::string& why) {
  throw std::runtime_error("cannot run " + prog + ": " + why);
}

// A pipe whose ends are both close-on-exec; the child's end is dup2'ed onto 0, 1 or 2 (dup2
// clears the flag on the copy) and the parent's end is made non-blocking.
void make_pipe(Fd& parent, Fd& child, bool parent_reads) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0)
    throw std::runtime_error(std::string("pipe: ") + strerror(errno));
  Fd r(fds[0]), w(fds[1]);
  if (parent_reads) {
    parent = std::move(r);
    child = std::move(w);
  } else {
    parent = std::move(w);
    child = std::move(r);
  }
  ::fcntl(parent.get(), F_SETFL, ::fcntl(parent.get(), F_GETFL) | O_NONBLOCK);
}

struct CArgs {
  std::vector<char*> argv;
  std::vector<char*> envp;
  char** env() { return envp.empty() ? environ : envp.data(); }
};

CArgs c_args(const SpawnOptions& o) {
  CArgs a;
  for (const auto& s : o.argv) a.argv.push_back(const_cast<char*>(s.c_str()));
  a.argv.push_back(nullptr);
  if (o.env) {
    for (const auto& s : *o.env) a.envp.push_back(const_cast<char*>(s.c_str()));
    a.envp.push_back(nullptr);
  }
  return a;
}

}  // namespace

void Fd::reset() noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

std::string ExitStatus::describe() const {
  if (signal) return "killed by " + signal_name(signal) + (core ? " (core dumped)" : "");
  return "exit status " + std::to_string(code);
}

Process Process::spawn(const SpawnOptions& o) {
  if (o.argv.empty() || o.argv[0].empty()) throw std::runtime_error("cannot run: empty command");
  const std::string& prog = o.argv[0];
  Process p;
  Fd child_in, child_out, child_err;
  if (o.in == SpawnOptions::Stdio::pipe) make_pipe(p.in_, child_in, false);
  if (o.out == SpawnOptions::Stdio::pipe) make_pipe(p.out_, child_out, true);
  if (o.err == SpawnOptions::Stdio::pipe) make_pipe(p.err_, child_err, true);
  CArgs args = c_args(o);
  const bool needs_fork = o.uid || o.gid || !o.limits.empty() || o.parent_death_signal;

  if (!needs_fork) {
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&attr);
    auto stdio = [&](SpawnOptions::Stdio how, Fd& child, int target, int null_flags) {
      if (how == SpawnOptions::Stdio::pipe) {
        posix_spawn_file_actions_adddup2(&fa, child.get(), target);
      } else if (how == SpawnOptions::Stdio::null) {
        posix_spawn_file_actions_addopen(&fa, target, "/dev/null", null_flags, 0);
      }
    };
    stdio(o.in, child_in, 0, O_RDONLY);
    stdio(o.out, child_out, 1, O_WRONLY);
    stdio(o.err, child_err, 2, O_WRONLY);
    if (!o.cwd.empty()) posix_spawn_file_actions_addchdir_np(&fa, o.cwd.c_str());
    // Nothing but 0-2 crosses into the child, whatever some library forgot to mark CLOEXEC.
    posix_spawn_file_actions_addclosefrom_np(&fa, 3);
    short flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);  // SIGPIPE ignored here must not be in the child
    if (o.new_process_group) {
      flags |= POSIX_SPAWN_SETPGROUP;
      posix_spawnattr_setpgroup(&attr, 0);
    }
    posix_spawnattr_setflags(&attr, flags);
    int rc = posix_spawn(&p.pid_, prog.c_str(), &fa, &attr, args.argv.data(), args.env());
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (rc != 0) {
      // posix_spawn says ENOENT for a missing working directory as for a missing program.
      if (!o.cwd.empty() && ::access(o.cwd.c_str(), X_OK) != 0) {
        fail(prog, "cannot change directory to " + o.cwd + ": " + strerror(errno));
      }
      fail(prog, strerror(rc));
    }
  } else {
    // Everything the child needs is prepared here: between fork and exec only async-signal-safe
    // calls are allowed (the daemon has other threads).
    int err_pipe[2];
    if (::pipe2(err_pipe, O_CLOEXEC) != 0) fail(prog, std::string("pipe: ") + strerror(errno));
    Fd err_r(err_pipe[0]), err_w(err_pipe[1]);
    int null_fd = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    Fd null_guard(null_fd);
    std::vector<gid_t> groups;
    if (o.gid) groups.push_back(*o.gid);
    const pid_t parent = ::getpid();
    pid_t pid = ::fork();
    if (pid < 0) fail(prog, std::string("fork: ") + strerror(errno));
    if (pid == 0) {
      auto die = [&](int step) {
        int e[2] = {step, errno};
        [[maybe_unused]] ssize_t n = ::write(err_w.get(), e, sizeof e);
        ::_exit(127);
      };
      sigset_t none;
      sigemptyset(&none);
      ::sigprocmask(SIG_SETMASK, &none, nullptr);
      for (int sig = 1; sig < NSIG; ++sig) ::signal(sig, SIG_DFL);
      if (o.parent_death_signal) {
        if (::prctl(PR_SET_PDEATHSIG, o.parent_death_signal) != 0) die(7);
        if (::getppid() != parent) ::_exit(127);  // the parent died before prctl took effect
      }
      if (o.new_process_group) ::setpgid(0, 0);
      auto stdio = [&](SpawnOptions::Stdio how, const Fd& child, int target) {
        if (how == SpawnOptions::Stdio::pipe && ::dup2(child.get(), target) < 0) die(1);
        if (how == SpawnOptions::Stdio::null && ::dup2(null_fd, target) < 0) die(1);
      };
      stdio(o.in, child_in, 0);
      stdio(o.out, child_out, 1);
      stdio(o.err, child_err, 2);
      for (const auto& [res, value] : o.limits) {
        // CPU: the soft limit sends SIGXCPU (which names the cause), the hard one a second
        // later SIGKILL.
        rlimit rl{value, res == RLIMIT_CPU ? value + 1 : value};
        if (::setrlimit(res, &rl) != 0) die(2);
      }
      if (!o.cwd.empty() && ::chdir(o.cwd.c_str()) != 0) die(3);
      if (o.gid) {
        if (::setgroups(groups.size(), groups.data()) != 0) die(4);
        if (::setgid(*o.gid) != 0) die(4);
      }
      if (o.uid && ::setuid(*o.uid) != 0) die(5);
      ::syscall(SYS_close_range, 3, err_w.get() - 1, 0);
      ::syscall(SYS_close_range, err_w.get() + 1, ~0U, 0);
      ::execve(prog.c_str(), args.argv.data(), args.env());
      die(6);
    }
    p.pid_ = pid;
    err_w.reset();
    int e[2];
    ssize_t n;
    do {
      n = ::read(err_r.get(), e, sizeof e);
    } while (n < 0 && errno == EINTR);
    if (n == static_cast<ssize_t>(sizeof e)) {
      int st;
      ::waitpid(pid, &st, 0);
      p.pid_ = -1;
      std::string why = strerror(e[1]);
      std::string what;
      switch (e[0]) {
        case 1:
          what = "redirecting stdio: " + why;
          break;
        case 2:
          what = "setting resource limits: " + why;
          break;
        case 3:
          what = "cannot change directory to " + o.cwd + ": " + why;
          break;
        case 4:
          what = "cannot switch to group " + std::to_string(o.gid.value_or(0)) + ": " + why;
          break;
        case 5:
          what = "cannot switch to user " + std::to_string(o.uid.value_or(0)) + ": " + why;
          break;
        case 7:
          what = "prctl(PR_SET_PDEATHSIG): " + why;
          break;
        default:
          what = why;
          break;
      }
      fail(prog, what);
    }
  }
  p.group_ = o.new_process_group;
  int pfd = static_cast<int>(::syscall(SYS_pidfd_open, p.pid_, 0));
  if (pfd < 0) {
    ::kill(p.pid_, SIGKILL);
    ::waitpid(p.pid_, nullptr, 0);
    p.pid_ = -1;
    fail(prog, std::string("pidfd_open: ") + strerror(errno));
  }
  ::fcntl(pfd, F_SETFD, FD_CLOEXEC);
  p.pidfd_ = Fd(pfd);
  return p;
}

namespace {

// Reaps a killed child whose exit has not come yet (a process in uninterruptible sleep, on a
// hung mount, dies only when the kernel lets it), so that nobody blocks the loop waiting.
Task<void> reap_later(Fd pidfd) {
  for (;;) {
    siginfo_t info{};
    if (::waitid(P_PIDFD, static_cast<id_t>(pidfd.get()), &info, WEXITED | WNOHANG) != 0 &&
        errno != EINTR) {
      co_return;
    }
    if (info.si_pid != 0) co_return;
    co_await readable(pidfd.get());
  }
}

}  // namespace

Process::~Process() {
  if (pid_ <= 0 || reaped_) return;
  kill(SIGKILL);
  siginfo_t info{};
  if (::waitid(P_PIDFD, static_cast<id_t>(pidfd_.get()), &info, WEXITED | WNOHANG) == 0 &&
      info.si_pid != 0) {
    return;  // gone already
  }
  if (Loop::current_or_null()) {
    (void)async::spawn(reap_later(std::move(pidfd_)), "reaper");
  } else {
    ::waitpid(pid_, nullptr, 0);  // no loop to wait in (tests, exit paths)
  }
}

bool Process::kill(int sig, bool group) noexcept {
  if (pid_ <= 0 || reaped_) return false;
  if (group && group_) return ::kill(-pid_, sig) == 0 || ::kill(pid_, sig) == 0;
  return ::kill(pid_, sig) == 0;
}

Task<ExitStatus> Process::wait(bool kill_group) {
  while (!reaped_) {
    siginfo_t info{};
    // WNOWAIT: look without reaping, so the pid (and group id) stay ours until we are done.
    int rc = ::waitid(P_PIDFD, static_cast<id_t>(pidfd_.get()), &info, WEXITED | WNOHANG | WNOWAIT);
    if (rc != 0 && errno == EINTR) continue;
    if (rc != 0) throw std::runtime_error(std::string("waitid: ") + strerror(errno));
    if (info.si_pid == 0) {
      co_await readable(pidfd_.get());
      continue;
    }
    if (kill_group && group_) ::kill(-pid_, SIGKILL);
    ::waitid(P_PIDFD, static_cast<id_t>(pidfd_.get()), &info, WEXITED);
    reaped_ = true;
    if (info.si_code == CLD_EXITED) {
      status_.code = info.si_status;
    } else {
      status_.signal = info.si_status;
      status_.core = info.si_code == CLD_DUMPED;
    }
  }
  co_return status_;
}

}  // namespace jq::async
