// The parallel runner (parallel.hpp): a process per case, a few at a time, their reports kept
// apart and the failed ones printed whole.
#include "tests/support/parallel.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <utility>

namespace jq::test {
namespace {

using Clock = std::chrono::steady_clock;

// A case running in a child process.
struct Child {
  std::size_t index = 0;  // into the cases
  pid_t pid = -1;
  int fd = -1;         // the read end of its stdout and stderr
  std::string output;  // all it wrote
  Clock::time_point started;
};

// A case's outcome as the child reported it: the runner's closing line `N passed, M failed` (one
// case ran, and passed) and the first failure's place.
struct Report {
  bool ok = false;
  std::string why;  // for a failed case: its first failure, or why it did not run
};

std::map<std::string, double> read_durations(const std::string& file) {
  std::map<std::string, double> out;
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line)) {
    const auto tab = line.find('\t');
    if (tab == std::string::npos) continue;
    out[line.substr(tab + 1)] = std::strtod(line.substr(0, tab).c_str(), nullptr);
  }
  return out;
}

void write_durations(const std::string& file, const std::map<std::string, double>& durations) {
  const std::string tmp = file + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    for (const auto& [name, seconds] : durations) out << seconds << '\t' << name << '\n';
    if (!out) return;
  }
  std::rename(tmp.c_str(), file.c_str());
}

// Starts `self SPEC` with its stdout and stderr into a pipe the runner reads.
Child start(const std::string& self, const std::string& name, std::size_t index) {
  Child c;
  c.index = index;
  c.started = Clock::now();
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) {
    std::perror("tests: pipe");
    std::exit(1);
  }
  const std::string spec = exact_spec(name);
  c.pid = ::fork();
  if (c.pid < 0) {
    std::perror("tests: fork");
    std::exit(1);
  }
  if (c.pid == 0) {
    ::dup2(p[1], STDOUT_FILENO);
    ::dup2(p[1], STDERR_FILENO);
    ::execl(self.c_str(), self.c_str(), kOneCase, spec.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  ::close(p[1]);
  c.fd = p[0];
  ::fcntl(c.fd, F_SETFL, ::fcntl(c.fd, F_GETFL) | O_NONBLOCK);
  return c;
}

// Reads what is there without waiting; false once the pipe is closed.
bool drain(Child& c) {
  char buf[65536];
  for (;;) {
    const ssize_t n = ::read(c.fd, buf, sizeof buf);
    if (n > 0) {
      c.output.append(buf, static_cast<std::size_t>(n));
      continue;
    }
    if (n == 0) return false;
    if (errno == EINTR) continue;
    return errno == EAGAIN;
  }
}

Report judge(const Child& c, int status) {
  Report r;
  // The child's runner prints its first failure and its count last (main.cpp, JOBQD_TEST_CHILD).
  int passed = -1, failed = -1;
  const auto last = c.output.rfind(" passed, ");
  if (last != std::string::npos) {
    const auto line = c.output.rfind('\n', last);
    const std::size_t from = line == std::string::npos ? 0 : line + 1;
    std::sscanf(c.output.c_str() + from, "%d passed, %d failed", &passed, &failed);
  }
  const std::string marker = "first failure: ";
  const auto at = c.output.rfind(marker);
  if (at != std::string::npos) {
    const auto end = c.output.find('\n', at);
    r.why = c.output.substr(at + marker.size(),
                            end == std::string::npos ? end : end - at - marker.size());
  }
  if (WIFSIGNALED(status)) {
    r.why = std::string("killed by signal ") + std::to_string(WTERMSIG(status)) + " (" +
            ::strsignal(WTERMSIG(status)) + ")" + (r.why.empty() ? "" : "; " + r.why);
    return r;
  }
  if (passed + failed != 1) {
    if (r.why.empty()) {
      r.why = "the case did not run once (" + std::to_string(std::max(0, passed + failed)) +
              " ran): its name did not select it alone, or the process ended early (exit " +
              std::to_string(WEXITSTATUS(status)) + ")";
    }
    return r;
  }
  r.ok = WEXITSTATUS(status) == 0 && passed == 1;
  if (!r.ok && r.why.empty()) r.why = "exit status " + std::to_string(WEXITSTATUS(status));
  return r;
}

}  // namespace

std::string exact_spec(const std::string& name) {
  std::string out;
  out.reserve(name.size() + 8);
  // A leading `-` escaped too: the command line would take the name for an option.
  for (char c : name) {
    if ((c == '-' && out.empty()) || c == '\\' || c == ',' || c == '[' || c == ']' || c == '"' ||
        c == '~')
      out += '\\';
    out += c;
  }
  return out;
}

int run_parallel(const std::string& self, std::vector<CaseToRun> cases, int jobs,
                 const std::string& durations_file) {
  std::map<std::string, double> durations = read_durations(durations_file);
  // Cases that must run alone first (one after another), then the rest longest first (as the
  // last run measured; a case not measured yet counts as long), so that no long case starts last.
  std::vector<std::size_t> order(cases.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  auto expected = [&](std::size_t i) {
    const auto it = durations.find(cases[i].name);
    return it == durations.end() ? 1e9 : it->second;
  };
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    if (cases[a].alone != cases[b].alone) return cases[a].alone;
    return expected(a) > expected(b);
  });

  const std::size_t total = cases.size();
  const int width = static_cast<int>(std::to_string(total).size());
  std::size_t next = 0, done = 0;
  int passed = 0, failed = 0;
  std::vector<Child> running;
  std::vector<std::pair<double, std::string>> times;
  std::vector<std::pair<std::string, std::string>> failures;
  bool alone_running = false;

  while (next < total || !running.empty()) {
    while (next < total && static_cast<int>(running.size()) < jobs && !alone_running &&
           (!cases[order[next]].alone || running.empty())) {
      alone_running = cases[order[next]].alone;
      running.push_back(start(self, cases[order[next]].name, order[next]));
      ++next;
    }
    std::vector<pollfd> fds;
    for (const Child& c : running) fds.push_back({c.fd, POLLIN, 0});
    // A short timeout as well: a case's own children may keep the pipe open after it exited.
    ::poll(fds.data(), fds.size(), 50);
    for (std::size_t k = 0; k < running.size();) {
      Child& c = running[k];
      drain(c);
      int status = 0;
      const pid_t got = ::waitpid(c.pid, &status, WNOHANG);
      if (got != c.pid) {
        ++k;
        continue;
      }
      drain(c);
      ::close(c.fd);
      const double seconds = std::chrono::duration<double>(Clock::now() - c.started).count();
      const std::string& name = cases[c.index].name;
      const Report r = judge(c, status);
      ++(r.ok ? passed : failed);
      times.emplace_back(seconds, name);
      durations[name] = seconds;
      // A failed case's whole report first, as Catch prints it in a run of one process.
      if (!r.ok) {
        failures.emplace_back(name, r.why);
        std::printf("%s\n", c.output.c_str());
      }
      std::printf("[%*zu/%zu] %5.1fs  %s  %s\n", width, ++done, total, seconds,
                  r.ok ? "ok  " : "FAIL", name.c_str());
      std::fflush(stdout);
      if (cases[c.index].alone) alone_running = false;
      running.erase(running.begin() + static_cast<std::ptrdiff_t>(k));
    }
  }

  write_durations(durations_file, durations);
  if (!failures.empty()) {
    std::printf("failed cases:\n");
    for (const auto& [name, where] : failures) {
      std::string first = where.substr(0, where.find('\n'));
      if (first.size() > 300) first = first.substr(0, 300) + "...";
      std::printf("  %s\n      %s\n", name.c_str(), first.c_str());
    }
  }
  if (times.size() >= 2) {
    const std::size_t n = std::min<std::size_t>(5, times.size());
    std::partial_sort(times.begin(), times.begin() + static_cast<std::ptrdiff_t>(n), times.end(),
                      [](const auto& a, const auto& b) { return a.first > b.first; });
    std::printf("slowest cases:\n");
    for (std::size_t i = 0; i < n; ++i) {
      std::printf("  %5.1fs  %s\n", times[i].first, times[i].second.c_str());
    }
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}

}  // namespace jq::test
