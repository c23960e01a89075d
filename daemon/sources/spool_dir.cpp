// A spool directory on disk: the blocking half of the spool source (claims, moves, recovery).
#include "sources/spool_dir.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <memory>
#include <stdexcept>

namespace jq::sources {
namespace {

constexpr const char* kWork = ".jobqd";

std::string err(int e) {
  return std::strerror(e);
}

struct DirCloser {
  void operator()(DIR* d) const noexcept { closedir(d); }
};
using DirPtr = std::unique_ptr<DIR, DirCloser>;

// The entries of a directory but . and ..; empty if it cannot be read.
std::vector<std::string> entries(const std::string& dir) {
  std::vector<std::string> out;
  DirPtr d(opendir(dir.c_str()));
  if (!d) return out;
  while (dirent* e = readdir(d.get())) {
    if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
    out.emplace_back(e->d_name);
  }
  return out;
}

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// `<jid>.<n>` (a folder holding the file) or `<jid>.<n>.<name>` (the file itself) -> jid, n and
// name (empty for a folder); false for any other name. A jid has no dot.
bool parse_entry(const std::string& entry, std::string& jid, long long& n, std::string& name) {
  const auto dot = entry.find('.');
  if (dot == 0 || dot == std::string::npos || dot + 1 == entry.size()) return false;
  std::size_t i = dot + 1;
  n = 0;
  for (; i < entry.size() && entry[i] != '.'; ++i) {
    if (entry[i] < '0' || entry[i] > '9' || n > 1'000'000'000) return false;
    n = n * 10 + (entry[i] - '0');
  }
  if (i == dot + 1) return false;
  jid = entry.substr(0, dot);
  name = i < entry.size() ? entry.substr(i + 1) : "";
  return i == entry.size() || !name.empty();
}

int rename_noreplace(const std::string& from, const std::string& to) {
  return renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE);
}

// Why a file that is not a regular one cannot be a job.
std::string not_regular(mode_t m) {
  if (S_ISLNK(m)) return "a symbolic link, not a regular file (jobqd does not follow links)";
  if (S_ISFIFO(m)) return "a named pipe, not a regular file";
  if (S_ISSOCK(m)) return "a socket, not a regular file";
  if (S_ISCHR(m) || S_ISBLK(m)) return "a device, not a regular file";
  return "not a regular file";
}

// Whether a writer still holds the file open (a scan finds files whose close no event told of).
// The kernel refuses a read lease on a file open for writing; where a lease is not ours to take
// (a file of another user without CAP_LEASE, a file system without leases) only the quiet time
// guards the file. The lease is let go at once: a writer opening the file in between waits
// those microseconds, and the SIGIO it raises is ignored (main.cpp).
bool open_for_writing(int dir_fd, const char* name) {
  int fd = openat(dir_fd, name, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) return false;
  bool busy = false;
  if (fcntl(fd, F_SETLEASE, F_RDLCK) == 0) {
    fcntl(fd, F_SETLEASE, F_UNLCK);
  } else {
    busy = errno == EAGAIN;
  }
  ::close(fd);
  return busy;
}

std::int64_t now_ms() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1'000'000;
}

// A relative path as one file name: '%' and '/' escaped (`sub/a%b` -> `sub%2Fa%25b`).
std::string encode(const std::string& rel) {
  std::string out;
  out.reserve(rel.size());
  for (char ch : rel) {
    if (ch == '%') {
      out += "%25";
    } else if (ch == '/') {
      out += "%2F";
    } else {
      out += ch;
    }
  }
  return out;
}

std::string decode(const std::string& name) {
  std::string out;
  out.reserve(name.size());
  for (std::size_t i = 0; i < name.size(); ++i) {
    if (name[i] == '%' && name.compare(i, 3, "%25") == 0) {
      out += '%';
      i += 2;
    } else if (name[i] == '%' && name.compare(i, 3, "%2F") == 0) {
      out += '/';
      i += 2;
    } else {
      out += name[i];
    }
  }
  return out;
}

// Makes the folders of `path` (not its last part) below `base`, which exists. False on failure
// (errno set).
bool make_parents(const std::string& base, const std::string& rel) {
  for (auto slash = rel.find('/'); slash != std::string::npos; slash = rel.find('/', slash + 1)) {
    const std::string dir = base + "/" + rel.substr(0, slash);
    struct stat st {};
    if (lstat(dir.c_str(), &st) == 0) {
      if (S_ISDIR(st.st_mode)) continue;
      errno = ENOTDIR;  // a link is never followed
      return false;
    }
    if (mkdir(dir.c_str(), 0750) != 0 && errno != EEXIST) return false;
  }
  return true;
}

std::string base_name(const std::string& rel) {
  auto slash = rel.rfind('/');
  return slash == std::string::npos ? rel : rel.substr(slash + 1);
}

// Folders a recursive walk goes no deeper than (a hostile tree costs bounded work).
constexpr int kMaxDepth = 32;

}  // namespace

bool is_job_file(const std::string& name) {
  return ends_with(name, ".json");
}

SpoolDir::SpoolDir(Options o) : o_(std::move(o)), work_(o_.dir + "/" + kWork) {}

SpoolDir::~SpoolDir() {
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

std::string SpoolDir::owner_dir() const {
  return work_ + "/" + o_.owner;
}

std::string SpoolDir::entry_of(const Claim& c) const {
  std::string e = owner_dir() + "/" + c.jid + "." + std::to_string(c.attempt);
  if (!c.nested) e += "." + encode(c.name);
  return e;
}

std::string SpoolDir::path_of(const Claim& c) const {
  return c.nested ? entry_of(c) + "/" + c.name : entry_of(c);
}

std::string SpoolDir::reason_tmp(const Claim& c) const {
  return c.nested ? entry_of(c) + "/.error.json" : owner_dir() + "/." + c.jid + ".error.json";
}

void SpoolDir::open() {
  auto need_dir = [](const std::string& p) {
    if (mkdir(p.c_str(), 0750) != 0 && errno != EEXIST) {
      throw std::runtime_error("cannot create " + p + ": " + err(errno));
    }
    // Never a link: files would be moved wherever it points.
    struct stat st {};
    if (lstat(p.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      throw std::runtime_error(p + " is not a directory (a symbolic link or a file is in its " +
                               "place; jobqd does not follow links there)");
    }
  };
  need_dir(work_);
  // The lock first, then the folder: a daemon that finds the folder finds its lock held.
  if (lock_fd_ >= 0) ::close(lock_fd_);
  const std::string lock = work_ + "/" + o_.owner + ".lock";
  lock_fd_ = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0640);
  if (lock_fd_ < 0) throw std::runtime_error("cannot create " + lock + ": " + err(errno));
  if (flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    throw std::runtime_error("cannot lock " + lock + ": " + err(errno));
  }
  need_dir(owner_dir());
}

void SpoolDir::close() noexcept {
  if (lock_fd_ < 0) return;
  // Only an empty folder goes (rmdir refuses others): files left in it are recovered by the next
  // daemon to look, once the lock is free.
  if (rmdir(owner_dir().c_str()) == 0) unlink((work_ + "/" + o_.owner + ".lock").c_str());
  ::close(lock_fd_);
  lock_fd_ = -1;
}

bool SpoolDir::wanted(const std::string& rel) const {
  const std::string name = base_name(rel);
  if (name.empty() || name[0] == '.' || rel.find("/.") != std::string::npos) return false;
  if (fnmatch(o_.pattern.c_str(), name.c_str(), FNM_PERIOD) != 0) return false;
  for (const auto& g : o_.ignore) {
    if (fnmatch(g.c_str(), name.c_str(), FNM_PERIOD) == 0) return false;
  }
  return true;
}

bool SpoolDir::wanted_dir(const std::string& rel) const {
  if (!o_.recursive || rel.empty()) return false;
  if (rel[0] == '.' || rel.find("/.") != std::string::npos) return false;  // hidden, .jobqd
  if (rel == "done" || rel == "failed") return false;                      // jobqd's own
  return static_cast<int>(std::count(rel.begin(), rel.end(), '/')) < kMaxDepth;
}

SpoolDir::Scan SpoolDir::scan(std::size_t limit, std::int64_t quiet_ms, const std::string& sub,
                              int watch_fd, std::uint32_t mask) const {
  Scan out;
  const std::int64_t now = now_ms();
  std::vector<std::string> todo{sub};  // folders to read, relative ("" is DIR)
  while (!todo.empty()) {
    const std::string rel = std::move(todo.back());
    todo.pop_back();
    const std::string path = rel.empty() ? o_.dir : o_.dir + "/" + rel;
    if (watch_fd >= 0 && !rel.empty()) {
      const int wd = inotify_add_watch(watch_fd, path.c_str(), mask);
      if (wd >= 0) {
        out.watched.emplace_back(wd, rel);
      } else if (errno != ENOENT && !out.watch_error) {
        out.watch_error = "cannot watch " + path + ": " + err(errno) +
                          (errno == ENOSPC ? " (fs.inotify.max_user_watches)" : "");
      }
    }
    DirPtr d(opendir(path.c_str()));
    if (!d) {
      // DIR itself is an error; a subfolder gone since it was seen is not.
      if (rel == sub && sub.empty()) out.error = "cannot read " + path + ": " + err(errno);
      continue;
    }
    const std::string prefix = rel.empty() ? "" : rel + "/";
    while (dirent* e = readdir(d.get())) {
      if (e->d_name[0] == '.' && (e->d_name[1] == 0 || (e->d_name[1] == '.' && !e->d_name[2]))) {
        continue;
      }
      std::string name = prefix + e->d_name;
      struct stat st {};
      if (e->d_type == DT_DIR || e->d_type == DT_UNKNOWN) {
        if (fstatat(dirfd(d.get()), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
        if (S_ISDIR(st.st_mode)) {
          if (wanted_dir(name)) todo.push_back(std::move(name));
          continue;
        }
      }
      if (!wanted(name)) continue;
      if (fstatat(dirfd(d.get()), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;  // gone
      if (S_ISDIR(st.st_mode)) continue;
      const std::int64_t changed =
          static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000 + st.st_mtim.tv_nsec / 1'000'000;
      // A time ahead of the clock (a copied file, a skewed NFS server) is not "fresh" for ever.
      const std::int64_t age = now - changed;
      if (quiet_ms > 0 && age >= 0 && age < quiet_ms) {
        out.more = true;  // may still be written, or its close was an event lost: look again
        continue;
      }
      // Its writer's close will be an event: no need to scan again for it.
      if (S_ISREG(st.st_mode) && open_for_writing(dirfd(d.get()), e->d_name)) continue;
      if (out.names.size() >= limit) {
        out.more = true;
        return out;
      }
      out.names.push_back(std::move(name));
    }
  }
  return out;
}

bool SpoolDir::settled(const std::string& name) const {
  const std::string path = o_.dir + "/" + name;
  struct stat st {};
  if (lstat(path.c_str(), &st) != 0 || S_ISDIR(st.st_mode)) return false;
  if (!S_ISREG(st.st_mode)) return true;
  return st.st_size > 0 && !open_for_writing(AT_FDCWD, path.c_str());
}

SpoolDir::ClaimResult SpoolDir::claim(const std::string& name, const std::string& jid) const {
  ClaimResult r;
  const std::string from = o_.dir + "/" + name;
  struct stat st {};
  if (lstat(from.c_str(), &st) != 0) return r;  // gone: taken by another daemon, or removed
  if (S_ISDIR(st.st_mode)) {
    r.how = Taken::not_file;
    return r;
  }
  r.claim.jid = jid;
  r.claim.attempt = 1;
  r.claim.name = name;
  // One rename, no folder to make and remove (a mkdir and an rmdir per file cost more than the
  // rest of a claim): the name itself carries the job id and the attempt, unless it is too long
  // to (room kept for any attempt's digits).
  r.claim.nested = jid.size() + encode(name).size() + 13 > NAME_MAX;
  const std::string to = path_of(r.claim);
  if (r.claim.nested) {
    const std::string dir = entry_of(r.claim);
    if (mkdir(dir.c_str(), 0750) != 0 || !make_parents(dir, name)) {
      r.how = Taken::failed;
      r.error = "cannot create " + dir + ": " + err(errno);
      remove_nested(dir);
      return r;
    }
  }
  // The rename decides: of two daemons after one file, one gets it, the other ENOENT.
  if (rename_noreplace(from, to) != 0) {
    const int e = errno;
    if (r.claim.nested) remove_nested(entry_of(r.claim));
    if (e == ENOENT) return r;
    r.how = Taken::failed;
    r.error = "cannot move " + from + " into " + owner_dir() + ": " + err(e);
    return r;
  }
  if (lstat(to.c_str(), &st) != 0) {
    r.how = Taken::failed;
    r.error = "claimed " + from + ", then could not find it as " + to + ": " + err(errno);
    return r;
  }
  if (S_ISDIR(st.st_mode)) {
    // Replaced by a directory between the look and the rename: back where it was.
    if (rename_noreplace(to, from) == 0 && r.claim.nested) remove_nested(entry_of(r.claim));
    r.how = Taken::not_file;
    return r;
  }
  r.how = Taken::claimed;
  r.claim.size = static_cast<std::uint64_t>(st.st_size);
  if (!S_ISREG(st.st_mode)) r.claim.invalid = not_regular(st.st_mode);
  return r;
}

void SpoolDir::read_job(Claim& c) const {
  if (!c.invalid.empty()) return;
  const std::string path = path_of(c);
  int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    c.invalid = "cannot read the job file: " + err(errno);
    return;
  }
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    c.invalid = not_regular(st.st_mode);
  } else if (static_cast<std::uint64_t>(st.st_size) > o_.max_job_bytes) {
    c.invalid = "the job file is " + std::to_string(st.st_size) + " bytes, over max_job_bytes (" +
                std::to_string(o_.max_job_bytes) + ")";
  } else {
    std::string text;
    text.resize(static_cast<std::size_t>(st.st_size));
    std::size_t got = 0;
    for (;;) {
      if (got == text.size()) text.resize(text.size() + 4096);  // it grew since the fstat
      ssize_t n = ::read(fd, text.data() + got, text.size() - got);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        c.invalid = "cannot read the job file: " + err(errno);
        break;
      }
      if (n == 0) break;
      got += static_cast<std::size_t>(n);
      if (got > o_.max_job_bytes) {
        c.invalid = "the job file is over max_job_bytes (" + std::to_string(o_.max_job_bytes) + ")";
        break;
      }
    }
    text.resize(got);
    if (c.invalid.empty()) c.json = std::move(text);
  }
  ::close(fd);
}

// The one file in a claim's folder (below subfolders for a file from a subfolder), relative;
// empty if there is none.
std::string SpoolDir::find_file(const std::string& folder) {
  std::string rel;
  for (int depth = 0; depth <= kMaxDepth + 1; ++depth) {
    const std::string here = rel.empty() ? folder : folder + "/" + rel;
    std::string dir_seen;
    for (const auto& e : entries(here)) {
      if (e[0] == '.') continue;
      struct stat st {};
      if (lstat((here + "/" + e).c_str(), &st) != 0) continue;
      if (!S_ISDIR(st.st_mode)) return rel.empty() ? e : rel + "/" + e;
      if (dir_seen.empty()) dir_seen = e;
    }
    if (dir_seen.empty()) return "";
    rel = rel.empty() ? dir_seen : rel + "/" + dir_seen;
  }
  return "";
}

// Removes a claim's folder once its file is gone: the folders below it, a half-written reason.
void SpoolDir::remove_nested(const std::string& folder) {
  unlink((folder + "/.error.json").c_str());
  for (const auto& e : entries(folder)) {
    struct stat st {};
    const std::string p = folder + "/" + e;
    if (lstat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) remove_nested(p);
  }
  rmdir(folder.c_str());
}

std::vector<SpoolDir::Claim> SpoolDir::recover(bool own) const {
  std::vector<Claim> out;
  const std::string mine = owner_dir();
  auto take_folder = [&](const std::string& folder, bool own) {
    for (const auto& sub : entries(folder)) {
      const std::string from = folder + "/" + sub;
      if (sub[0] == '.') {
        // A failure's reason half written when its daemon stopped: the file is still claimed
        // and runs again, so the reason is written again too.
        if (ends_with(sub, ".error.json")) unlink(from.c_str());
        continue;
      }
      Claim c;
      if (!parse_entry(sub, c.jid, c.attempt, c.name)) continue;
      c.nested = c.name.empty();
      if (c.nested) {
        c.name = find_file(from);
        if (c.name.empty()) {
          remove_nested(from);  // a claim that a crash stopped half way
          continue;
        }
      } else {
        c.name = decode(c.name);
      }
      if (!own && rename_noreplace(from, mine + "/" + sub) != 0) continue;  // someone else's now
      struct stat st {};
      if (lstat(path_of(c).c_str(), &st) == 0) {
        c.size = static_cast<std::uint64_t>(st.st_size);
        if (!S_ISREG(st.st_mode)) c.invalid = not_regular(st.st_mode);
      }
      out.push_back(std::move(c));
    }
  };
  if (own) take_folder(mine, true);
  for (const auto& name : entries(work_)) {
    if (name == o_.owner || ends_with(name, ".lock")) continue;
    const std::string folder = work_ + "/" + name;
    struct stat st {};
    if (lstat(folder.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) continue;
    const std::string lock = folder + ".lock";
    int fd = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0640);
    if (fd < 0) continue;
    if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
      // Its daemon is gone (the kernel let go of its lock): its files are this daemon's now.
      take_folder(folder, false);
      if (rmdir(folder.c_str()) == 0) unlink(lock.c_str());
    }
    ::close(fd);
  }
  return out;
}

std::string SpoolDir::renumber(Claim& c, long long to) const {
  const std::string from = entry_of(c);
  const long long was = c.attempt;
  c.attempt = to;
  if (rename_noreplace(from, entry_of(c)) != 0) {
    const int e = errno;
    c.attempt = was;
    return "cannot rename " + from + ": " + err(e);
  }
  return "";
}

// DIR/sub/name, or DIR/sub/name.<n> when that is taken; sub made if missing. "" on failure.
std::string SpoolDir::place_in(const std::string& sub, const std::string& name) const {
  const std::string dir = o_.dir + "/" + sub;
  // A look first: mkdir takes the directory's lock even when the folder is there, and that lock
  // is the one writers dropping files need (a tenth of the time per file went there).
  struct stat st {};
  if (lstat(dir.c_str(), &st) != 0) {
    if (mkdir(dir.c_str(), 0750) != 0 && errno != EEXIST) return "";
  } else if (!S_ISDIR(st.st_mode)) {
    errno = ENOTDIR;  // a file, or a link: never followed (files would go wherever it points)
    return "";
  }
  if (!make_parents(dir, name)) return "";  // a file from a subfolder keeps its place below
  return dir + "/" + name;
}

std::string SpoolDir::finish_done(const Claim& c) const {
  const std::string path = path_of(c);
  if (!o_.keep_done) {
    if (unlink(path.c_str()) != 0 && errno != ENOENT) {
      return "cannot delete " + path + ": " + err(errno);
    }
  } else {
    std::string to = place_in("done", c.name);
    if (to.empty()) return "cannot create " + o_.dir + "/done: " + err(errno);
    int rc = rename_noreplace(path, to);
    if (rc != 0 && errno == EEXIST) {  // an earlier file of that name: this one beside it
      to += "." + c.jid;
      rc = rename_noreplace(path, to);
    }
    if (rc != 0 && errno != ENOENT) return "cannot move " + path + " to " + to + ": " + err(errno);
  }
  if (c.nested) remove_nested(entry_of(c));
  return "";
}

std::string SpoolDir::finish_failed(const Claim& c, const std::string& error_json) const {
  const std::string path = path_of(c);
  std::string to = place_in("failed", c.name);
  if (to.empty()) return "cannot create " + o_.dir + "/failed: " + err(errno);
  struct stat st {};
  if (lstat(to.c_str(), &st) == 0) to += "." + c.jid;  // an earlier file of that name failed
  // The reason first (written whole, then renamed in), the file after: a crash between the two
  // leaves the file claimed, to be run again, never a failed file without its reason.
  const std::string why = to + ".error.json";
  const std::string tmp = reason_tmp(c);
  {
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0640);
    if (fd < 0) return "cannot write " + tmp + ": " + err(errno);
    std::size_t off = 0;
    while (off < error_json.size()) {
      ssize_t n = ::write(fd, error_json.data() + off, error_json.size() - off);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        const int e = errno;
        ::close(fd);
        unlink(tmp.c_str());
        return "cannot write " + tmp + ": " + err(e);
      }
      off += static_cast<std::size_t>(n);
    }
    ::close(fd);
  }
  if (rename(tmp.c_str(), why.c_str()) != 0) {
    const int e = errno;
    unlink(tmp.c_str());
    return "cannot move the reason to " + why + ": " + err(e);
  }
  if (rename_noreplace(path, to) != 0 && errno != ENOENT) {
    return "cannot move " + path + " to " + to + ": " + err(errno);
  }
  if (c.nested) remove_nested(entry_of(c));
  return "";
}

}  // namespace jq::sources
