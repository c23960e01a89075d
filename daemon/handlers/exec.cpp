// The exec handler: a configured program per job, fed and drained in the loop, killed as a group.
#include "handlers/exec.hpp"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <set>
#include <stdexcept>

#include <spdlog/spdlog.h>

#include "config/command.hpp"
#include "config/units.hpp"

namespace jq::handlers {
namespace {

using namespace std::chrono_literals;
using async::SpawnOptions;

constexpr const char* kDefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
constexpr std::size_t kIoChunk = 64 * 1024;
// How much of the kept stderr tail goes into the job's error.
constexpr std::size_t kErrorExcerpt = 2000;
// After the program exited, how long its pipes may stay open (held by a process that escaped its
// group with setsid) before we stop reading them.
constexpr auto kDrainLimit = 5s;

// Keeps the first `cap` bytes; counts (and drops) the rest so the writer never blocks.
struct Head {
  std::size_t cap;
  std::string data;
  std::size_t total = 0;
  void add(const char* p, std::size_t n) {
    total += n;
    if (data.size() < cap) data.append(p, std::min(n, cap - data.size()));
  }
};

// Keeps the last `cap` bytes.
struct Tail {
  std::size_t cap;
  std::string data;
  void add(const char* p, std::size_t n) {
    data.append(p, n);
    if (data.size() > 2 * cap + kIoChunk) data.erase(0, data.size() - cap);
  }
  std::string last() const { return data.size() > cap ? data.substr(data.size() - cap) : data; }
};

// One read buffer for every pipe: a read is copied into its sink before anything suspends, and
// only the loop thread drains (no 64 KiB allocated and zeroed per pipe per job).
thread_local std::array<char, kIoChunk> read_buf;

template <class Sink>
async::Task<void> drain(int fd, Sink& sink) {
  for (;;) {
    ssize_t n = ::read(fd, read_buf.data(), read_buf.size());
    if (n > 0) {
      sink.add(read_buf.data(), static_cast<std::size_t>(n));
      continue;
    }
    if (n == 0) co_return;
    if (errno == EINTR) continue;
    if (errno != EAGAIN) co_return;
    co_await async::readable(fd);
  }
}

// Writes the job to the program's stdin, then closes it. A program that exits or closes its stdin
// without reading is fine: the write fails with EPIPE and we stop.
async::Task<void> feed(async::Fd& fd, const std::string& data) {
  std::size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd.get(), data.data() + off, std::min(kIoChunk, data.size() - off));
    if (n > 0) {
      off += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      co_await async::writable(fd.get());
      continue;
    }
    break;
  }
  fd.reset();
}

// The last lines of stderr, for an error message an operator can read in one glance.
std::string excerpt(const std::string& tail) {
  std::string s = tail;
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  if (s.empty()) return "";
  bool cut = false;
  if (s.size() > kErrorExcerpt) {
    s = s.substr(s.size() - kErrorExcerpt);
    cut = true;
  }
  std::size_t lines = 0, pos = s.size();
  while (pos > 0 && lines < 20) {
    pos = s.rfind('\n', pos - 1);
    if (pos == std::string::npos) {
      pos = 0;
      break;
    }
    ++lines;
  }
  if (pos > 0) {
    s = s.substr(pos + 1);
    cut = true;
  }
  return (cut ? "..." : "") + s;
}

std::optional<std::string> payload_field(const nlohmann::json& payload, const std::string& path) {
  const nlohmann::json* v = &payload;
  std::size_t start = 0;
  while (start <= path.size()) {
    auto dot = path.find('.', start);
    std::string key =
        path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (!v->is_object()) return std::nullopt;
    auto it = v->find(key);
    if (it == v->end()) return std::nullopt;
    v = &*it;
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  if (v->is_string()) return v->get<std::string>();
  if (v->is_null()) return std::string();
  return v->dump();
}

uid_t resolve_user(const std::string& handler, const std::string& user, gid_t* primary) {
  std::string buf(16384, '\0');
  passwd pw{}, *res = nullptr;
  if (getpwnam_r(user.c_str(), &pw, buf.data(), buf.size(), &res) == 0 && res) {
    *primary = pw.pw_gid;
    return pw.pw_uid;
  }
  char* end = nullptr;
  unsigned long id = std::strtoul(user.c_str(), &end, 10);
  if (!user.empty() && end && *end == '\0') {
    *primary = static_cast<gid_t>(id);
    return static_cast<uid_t>(id);
  }
  throw std::runtime_error("handler " + handler + ": no user named '" + user + "'");
}

gid_t resolve_group(const std::string& handler, const std::string& group) {
  std::string buf(16384, '\0');
  struct group gr {
  }, *res = nullptr;
  if (getgrnam_r(group.c_str(), &gr, buf.data(), buf.size(), &res) == 0 && res) return gr.gr_gid;
  char* end = nullptr;
  unsigned long id = std::strtoul(group.c_str(), &end, 10);
  if (!group.empty() && end && *end == '\0') return static_cast<gid_t>(id);
  throw std::runtime_error("handler " + handler + ": no group named '" + group + "'");
}

class Exec final : public Handler {
 public:
  explicit Exec(const config::HandlerConfig& cfg) : cfg_(cfg) {
    for (const auto& arg : cfg.command) {
      auto parsed = config::parse_arg(arg);
      if (auto* error = std::get_if<std::string>(&parsed)) {
        throw std::runtime_error("handler " + cfg.name + ": " + *error);
      }
      argv_.push_back(std::get<config::ArgTemplate>(std::move(parsed)));
    }
    const std::string& prog = cfg.command.at(0);
    if (::access(prog.c_str(), X_OK) != 0) {
      throw std::runtime_error("handler " + cfg.name + ": cannot run " + prog + ": " +
                               std::strerror(errno));
    }
    if (!cfg.user.empty() || !cfg.group.empty()) {
      if (::geteuid() != 0) {
        throw std::runtime_error("handler " + cfg.name +
                                 ": user/group are set but jobqd is not running as root");
      }
      gid_t primary = 0;
      if (!cfg.user.empty()) uid_ = resolve_user(cfg.name, cfg.user, &primary);
      if (!cfg.group.empty()) {
        gid_ = resolve_group(cfg.name, cfg.group);
      } else if (uid_) {
        gid_ = primary;
      }
    }
    if (cfg.limits.cpu) {
      limits_.push_back({RLIMIT_CPU, static_cast<rlim_t>((cfg.limits.cpu->count() + 999) / 1000)});
    }
    if (cfg.limits.address_space) limits_.push_back({RLIMIT_AS, *cfg.limits.address_space});
    if (cfg.limits.open_files) limits_.push_back({RLIMIT_NOFILE, *cfg.limits.open_files});
    no_retry_.insert(cfg.no_retry_exit_codes.begin(), cfg.no_retry_exit_codes.end());
    bool has_path = cfg.env.count("PATH") > 0;
    for (const auto& [k, v] : cfg.env) env_.push_back(k + "=" + v);
    if (!has_path) env_.push_back(std::string("PATH=") + kDefaultPath);
  }

  async::Task<Outcome> run(const Run& r) override {
    SpawnOptions o;
    if (auto refused = build_argv(r, o.argv)) co_return std::move(*refused);
    o.env = env_for(r);
    o.cwd = cfg_.cwd;
    o.in = o.out = o.err = SpawnOptions::Stdio::pipe;
    if (uid_) o.uid = uid_;
    if (gid_) o.gid = gid_;
    o.limits = limits_;  // the program's group dies with jobqd: async::kill_groups_on_exit()

    async::Process proc = async::Process::spawn(o);  // throws "cannot run X: why"
    Head out{cfg_.max_output, {}};
    Tail err{cfg_.max_stderr, {}};
    auto writer = async::spawn(feed(proc.stdin_fd(), r.job.raw), "exec stdin");
    auto reader = async::spawn(drain(proc.stdout_fd().get(), out), "exec stdout");
    auto errors = async::spawn(drain(proc.stderr_fd().get(), err), "exec stderr");
    // The I/O tasks use this frame's buffers and the process's fds: however this coroutine ends
    // (even a second cancellation in the middle of the cleanup below), they end with it.
    struct EndIo {
      async::JoinHandle<void>* tasks[3];
      ~EndIo() {
        for (auto* t : tasks) t->abort();
      }
    } end_io{{&writer, &reader, &errors}};

    async::ExitStatus status;
    bool stopped = false;
    try {
      status = co_await proc.wait(/*kill_group=*/true);
    } catch (const async::Cancelled&) {
      stopped = true;
    }
    if (stopped) {
      co_await stop(proc, r);
      throw async::Cancelled{};
    }
    if (co_await output_cut(reader, errors, writer)) {
      spdlog::warn(
          "handler {}: job {} ended ({}), but a process it left behind still holds its "
          "output open; output cut",
          cfg_.name, r.job.id, status.describe());
    }
    if (status.exited() && status.code == 0) co_return Outcome::success(std::move(out.data));
    std::string error = status.describe();
    std::string tail = excerpt(err.last());
    if (!tail.empty()) error += "; stderr: " + tail;
    bool retry = !(status.exited() && no_retry_.count(status.code));
    co_return Outcome::failure(
        status.exited() ? job::ErrorKind::exit_status : job::ErrorKind::signal, std::move(error),
        retry);
  }

 private:
  // The argv for this job: the templates with {id}, {payload.x}... filled in; or the reason this
  // job cannot be run (an outcome that does not retry: the same job would fail the same way).
  std::optional<Outcome> build_argv(const Run& r, std::vector<std::string>& argv) const {
    auto refuse = [](std::size_t i, const std::string& why) {
      return Outcome::failure(job::ErrorKind::exception, "command[" + std::to_string(i) + "]" + why,
                              false);
    };
    for (std::size_t i = 0; i < argv_.size(); ++i) {
      std::string arg;
      for (const auto& piece : argv_[i]) {
        switch (piece.kind) {
          case config::ArgPiece::Kind::literal:
            arg += piece.text;
            break;
          case config::ArgPiece::Kind::id:
            arg += r.job.id;
            break;
          case config::ArgPiece::Kind::queue:
            arg += r.queue;
            break;
          case config::ArgPiece::Kind::attempt:
            arg += std::to_string(r.attempt);
            break;
          case config::ArgPiece::Kind::file:
            if (r.file.empty()) {
              return refuse(i, " uses {file}, but this job did not come from a spool directory");
            }
            arg += r.file;
            break;
          case config::ArgPiece::Kind::payload: {
            auto v = payload_field(r.job.payload, piece.text);
            if (!v) return refuse(i, ": the payload has no field '" + piece.text + "'");
            if (v->find('\0') != std::string::npos) {
              // execve would end the argument there: refuse rather than pass something else.
              return refuse(i, ": payload field '" + piece.text +
                                   "' contains a NUL byte, which no argument can carry");
            }
            arg += *v;
            break;
          }
        }
      }
      argv.push_back(std::move(arg));
    }
    return std::nullopt;
  }

  std::vector<std::string> env_for(const Run& r) const {
    std::vector<std::string> env = env_;
    env.push_back("JOBQ_ID=" + r.job.id);
    env.push_back("JOBQ_QUEUE=" + r.queue);
    env.push_back("JOBQ_ATTEMPT=" + std::to_string(r.attempt));
    if (!r.file.empty()) env.push_back("JOBQ_FILE=" + r.file);
    return env;
  }

  // A timeout or a stop: the whole group gets SIGTERM, then SIGKILL after kill_grace, and
  // r.stopped says which ended it. Cancellation was delivered once, so these awaits run
  // undisturbed.
  async::Task<void> stop(async::Process& proc, const Run& r) const {
    auto t0 = async::Clock::now();
    proc.kill(SIGTERM);
    bool ended = true;
    try {
      co_await async::wait_for(proc.wait(/*kill_group=*/true), cfg_.kill_grace);
    } catch (const async::TimeoutError&) {
      ended = false;
    }
    if (!ended) {
      proc.kill(SIGKILL);
      co_await proc.wait();
      r.stopped = "killed by SIGKILL after " + std::to_string(r.timeout.count()) +
                  " ms timeout (it ignored SIGTERM for " +
                  config::format_duration(cfg_.kill_grace) + ")";
    } else {
      auto took = std::chrono::duration_cast<std::chrono::milliseconds>(async::Clock::now() - t0);
      r.stopped = "stopped by SIGTERM after " + std::to_string(r.timeout.count()) +
                  " ms timeout (it exited " + std::to_string(took.count()) + " ms later)";
    }
  }

  // The group is gone, so the pipes close; a process that escaped it (setsid) could hold them
  // open: the rest of the output gets one bounded wait, all pipes under one deadline. The
  // child's status is known by now, so a cancellation here (the job's timeout firing while the
  // output drains) does not turn its outcome into a timeout: the output is just cut. True if
  // any output was cut.
  static async::Task<bool> output_cut(async::JoinHandle<void>& reader,
                                      async::JoinHandle<void>& errors,
                                      async::JoinHandle<void>& writer) {
    const auto drain_until = async::Clock::now() + kDrainLimit;
    bool cut = false;
    bool interrupted = false;
    for (auto* io : {&reader, &errors, &writer}) {
      const auto left = drain_until - async::Clock::now();
      bool drained = false;
      if (!interrupted && left > async::Duration::zero()) {
        try {
          co_await async::wait_for(io->wait(), left);
          drained = true;
        } catch (const async::TimeoutError&) {
        } catch (const async::Cancelled&) {
          interrupted = true;
        }
      }
      if (!drained) {
        io->abort();
        if (io != &writer) cut = true;
      }
    }
    co_return cut;
  }

  config::HandlerConfig cfg_;
  std::vector<config::ArgTemplate> argv_;
  std::vector<std::string> env_;
  std::optional<uid_t> uid_;
  std::optional<gid_t> gid_;
  std::vector<std::pair<int, rlim_t>> limits_;
  std::set<int> no_retry_;
};

}  // namespace

std::unique_ptr<Handler> make_exec(const config::HandlerConfig& cfg) {
  return std::make_unique<Exec>(cfg);
}

}  // namespace jq::handlers
