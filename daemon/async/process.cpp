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
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <unordered_set>

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

// ---- the keeper of process groups (kill_groups_on_exit) ----
//
// Records on the pipe: {'+' or '-', pgid}. The keeper keeps the announced groups in a fixed
// open-addressing table (no allocation after the fork) and kills them all at EOF.

struct GroupNote {
  std::int32_t op;
  std::int32_t pgid;
};

constexpr std::size_t kKeeperSlots = 1 << 16;
pid_t keeper_table[kKeeperSlots];  // only ever touched in the keeper (bss: free until then)
constexpr pid_t kTombstone = -1;

[[noreturn]] void keeper_main(int in) {
  ::prctl(PR_SET_NAME, "jobqd-keeper");
  // Not ours to react to: a terminal's ^C or a service manager's SIGTERM is for the daemon,
  // which ends its jobs itself. The keeper ends when the pipe does.
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE}) ::signal(sig, SIG_IGN);
  ::syscall(SYS_close_range, 0, in - 1, 0);
  ::syscall(SYS_close_range, in + 1, ~0U, 0);
  auto slot = [](pid_t pgid) {
    return (static_cast<std::size_t>(pgid) * 2654435761u) % kKeeperSlots;
  };
  GroupNote n;
  for (;;) {
    ssize_t got = ::read(in, &n, sizeof n);
    if (got < 0 && errno == EINTR) continue;
    if (got != static_cast<ssize_t>(sizeof n) || n.pgid <= 0) break;
    std::size_t i = slot(n.pgid);
    if (n.op == '+') {
      for (std::size_t k = 0; k < kKeeperSlots; ++k, i = (i + 1) % kKeeperSlots) {
        if (keeper_table[i] <= 0) {
          keeper_table[i] = n.pgid;
          break;
        }
      }
    } else {
      for (std::size_t k = 0; k < kKeeperSlots && keeper_table[i] != 0;
           ++k, i = (i + 1) % kKeeperSlots) {
        if (keeper_table[i] == n.pgid) {
          keeper_table[i] = kTombstone;
          break;
        }
      }
    }
  }
  for (pid_t g : keeper_table) {
    if (g > 0) ::kill(-g, SIGKILL);
  }
  ::_exit(0);
}

struct Keeper {
  int fd = -1;
  std::unordered_set<pid_t> groups;  // what the keeper has been told, to tell a new one
};

Keeper& keeper() {
  static Keeper k;
  return k;
}

void start_keeper(Keeper& k) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    throw std::runtime_error(std::string("process keeper: pipe: ") + strerror(errno));
  }
  pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fds[0]);
    ::close(fds[1]);
    throw std::runtime_error(std::string("process keeper: fork: ") + strerror(errno));
  }
  if (pid == 0) {
    ::close(fds[1]);
    keeper_main(fds[0]);
  }
  ::close(fds[0]);
  k.fd = fds[1];
  // The keeper is not waited for: it outlives us, or dies at our exit. Reaping it when it ends
  // early is the kernel's business (SIGCHLD is not handled here; init adopts it after us).
  for (pid_t g : k.groups) {
    GroupNote n{'+', g};
    [[maybe_unused]] ssize_t w = ::write(k.fd, &n, sizeof n);
  }
}

// Tells the keeper (if there is one) that group `pgid` exists ('+') or is gone ('-'). A keeper
// that died is replaced, and told every group alive.
void note_group(char op, pid_t pgid) noexcept {
  Keeper& k = keeper();
  if (k.fd < 0 || pgid <= 0) return;
  if (op == '+') {
    k.groups.insert(pgid);
  } else {
    k.groups.erase(pgid);
  }
  GroupNote n{op, pgid};
  ssize_t w;
  do {
    w = ::write(k.fd, &n, sizeof n);
  } while (w < 0 && errno == EINTR);
  if (w == static_cast<ssize_t>(sizeof n)) return;
  ::close(k.fd);
  k.fd = -1;
  try {
    start_keeper(k);
  } catch (...) {
    // Nothing to do from here but go on without one; the next note tries again.
  }
}

}  // namespace

void kill_groups_on_exit() {
  Keeper& k = keeper();
  if (k.fd < 0) start_keeper(k);
}

void Fd::reset() noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

std::string ExitStatus::describe() const {
  if (signal) return "killed by " + signal_name(signal) + (core ? " (core dumped)" : "");
  return "exit status " + std::to_string(code);
}

namespace {

// Child-side steps of the fork path, reported to the parent through the error pipe.
enum class Step : int { stdio = 1, limits, cwd, group, user, exec, deathsig };

std::string describe_step(Step step, int err, const SpawnOptions& o) {
  const std::string why = strerror(err);
  switch (step) {
    case Step::stdio:
      return "redirecting stdio: " + why;
    case Step::limits:
      return "setting resource limits: " + why;
    case Step::cwd:
      return "cannot change directory to " + o.cwd + ": " + why;
    case Step::group:
      return "cannot switch to group " + std::to_string(o.gid.value_or(0)) + ": " + why;
    case Step::user:
      return "cannot switch to user " + std::to_string(o.uid.value_or(0)) + ": " + why;
    case Step::deathsig:
      return "prctl(PR_SET_PDEATHSIG): " + why;
    case Step::exec:
      break;
  }
  return why;
}

// posix_spawn: vfork-fast, for children that need nothing posix_spawn cannot set up.
pid_t spawn_fast(const SpawnOptions& o, CArgs& args, Fd& child_in, Fd& child_out, Fd& child_err) {
  const std::string& prog = o.argv[0];
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
  pid_t pid = -1;
  int rc = posix_spawn(&pid, prog.c_str(), &fa, &attr, args.argv.data(), args.env());
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    // posix_spawn says ENOENT for a missing working directory as for a missing program.
    if (!o.cwd.empty() && ::access(o.cwd.c_str(), X_OK) != 0) {
      fail(prog, "cannot change directory to " + o.cwd + ": " + strerror(errno));
    }
    fail(prog, strerror(rc));
  }
  return pid;
}

// fork + exec, for what posix_spawn cannot do: credentials, limits, a parent-death signal.
// Everything the child needs is prepared before the fork: between fork and exec only
// async-signal-safe calls are allowed (the daemon has other threads). A step that fails in the
// child is reported through a close-on-exec pipe, which simply closes when exec succeeds.
pid_t spawn_forked(const SpawnOptions& o, CArgs& args, Fd& child_in, Fd& child_out, Fd& child_err) {
  const std::string& prog = o.argv[0];
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
    auto die = [&](Step step) {
      int e[2] = {static_cast<int>(step), errno};
      [[maybe_unused]] ssize_t n = ::write(err_w.get(), e, sizeof e);
      ::_exit(127);
    };
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    for (int sig = 1; sig < NSIG; ++sig) ::signal(sig, SIG_DFL);
    if (o.parent_death_signal) {
      if (::prctl(PR_SET_PDEATHSIG, o.parent_death_signal) != 0) die(Step::deathsig);
      if (::getppid() != parent) ::_exit(127);  // the parent died before prctl took effect
    }
    if (o.new_process_group) ::setpgid(0, 0);
    auto stdio = [&](SpawnOptions::Stdio how, const Fd& child, int target) {
      if (how == SpawnOptions::Stdio::pipe && ::dup2(child.get(), target) < 0) die(Step::stdio);
      if (how == SpawnOptions::Stdio::null && ::dup2(null_fd, target) < 0) die(Step::stdio);
    };
    stdio(o.in, child_in, 0);
    stdio(o.out, child_out, 1);
    stdio(o.err, child_err, 2);
    for (const auto& [res, value] : o.limits) {
      // CPU: the soft limit sends SIGXCPU (which names the cause), the hard one a second
      // later SIGKILL.
      rlimit rl{value, res == RLIMIT_CPU ? value + 1 : value};
      if (::setrlimit(res, &rl) != 0) die(Step::limits);
    }
    if (!o.cwd.empty() && ::chdir(o.cwd.c_str()) != 0) die(Step::cwd);
    if (o.gid) {
      if (::setgroups(groups.size(), groups.data()) != 0) die(Step::group);
      if (::setgid(*o.gid) != 0) die(Step::group);
    }
    if (o.uid && ::setuid(*o.uid) != 0) die(Step::user);
    ::syscall(SYS_close_range, 3, err_w.get() - 1, 0);
    ::syscall(SYS_close_range, err_w.get() + 1, ~0U, 0);
    ::execve(prog.c_str(), args.argv.data(), args.env());
    die(Step::exec);
  }
  err_w.reset();
  int e[2];
  ssize_t n;
  do {
    n = ::read(err_r.get(), e, sizeof e);
  } while (n < 0 && errno == EINTR);
  if (n == static_cast<ssize_t>(sizeof e)) {
    int st;
    ::waitpid(pid, &st, 0);
    fail(prog, describe_step(static_cast<Step>(e[0]), e[1], o));
  }
  return pid;
}

}  // namespace

Process Process::spawn(const SpawnOptions& o) {
  if (o.argv.empty() || o.argv[0].empty()) throw std::runtime_error("cannot run: empty command");
  Process p;
  Fd child_in, child_out, child_err;
  if (o.in == SpawnOptions::Stdio::pipe) make_pipe(p.in_, child_in, false);
  if (o.out == SpawnOptions::Stdio::pipe) make_pipe(p.out_, child_out, true);
  if (o.err == SpawnOptions::Stdio::pipe) make_pipe(p.err_, child_err, true);
  CArgs args = c_args(o);
  const bool needs_fork = o.uid || o.gid || !o.limits.empty() || o.parent_death_signal;
  p.pid_ = needs_fork ? spawn_forked(o, args, child_in, child_out, child_err)
                      : spawn_fast(o, args, child_in, child_out, child_err);
  p.group_ = o.new_process_group;
  int pfd = static_cast<int>(::syscall(SYS_pidfd_open, p.pid_, 0));
  if (pfd < 0) {
    ::kill(p.pid_, SIGKILL);
    ::waitpid(p.pid_, nullptr, 0);
    p.pid_ = -1;
    fail(o.argv[0], std::string("pidfd_open: ") + strerror(errno));
  }
  ::fcntl(pfd, F_SETFD, FD_CLOEXEC);
  p.pidfd_ = Fd(pfd);
  if (p.group_) note_group('+', p.pid_);
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
  if (group_) note_group('-', pid_);  // the whole group is killed: nothing left to keep
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
    if (group_) note_group('-', pid_);
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
