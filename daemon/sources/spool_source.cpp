// The spool source: watching (inotify), claiming with backpressure, the state in Redis, and the
// Delivery calls that end in a file deleted or moved.
#include "sources/spool_source.hpp"

#include <spdlog/spdlog.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "job/id.hpp"
#include "job/text.hpp"
#include "store/scripts.hpp"

namespace jq::sources {
namespace {

using namespace std::chrono_literals;

// Files claimed per trip to the thread pool, and state changes per Redis call.
constexpr std::size_t kClaimBatch = 256;
constexpr std::size_t kChangeBatch = 256;
// Names from events waiting for room, at most; past it they are dropped and a scan finds them.
constexpr std::size_t kMaxNames = 16384;
// Names one scan returns at most (each costs its bytes in memory until claimed).
constexpr std::size_t kScanLimit = 16384;
// A safety net: a scan and a look for dead daemons' files every so often, whatever happened.
constexpr auto kHousekeeping = 10s;
// How long a file waits when another job owns its id, before it asks again.
constexpr auto kIdWait = 1s;
constexpr auto kLogEvery = 30s;
// IN_DELETE for the work folder only: while its lock is open the directory cannot go away for
// good (an open file pins the directories above it), so its IN_DELETE_SELF comes only once the
// lock is let go; the removal of .jobqd is the sign to let go (`rm -rf DIR` removes it first).
// IN_CREATE for what makes no close: hard links (Maildir-style writers), symlinks, fifos.
constexpr std::uint32_t kEvents = IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE |
                                  IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_EXCL_UNLINK;
// After the work folder was removed: how long to wait before making it again, so that whoever
// removes the whole directory is not stopped by a new folder inside it.
constexpr auto kWorkGoneWait = 1s;

const char* code_name(std::uint8_t c) {
  static const char* names[] = {"start", "ok", "retry", "dead", "back", "cancel"};
  return names[c];
}

std::string num(long long v) {
  return std::to_string(v);
}

}  // namespace

SpoolSource::SpoolSource(redis::Client& main, store::Settings settings, const job::Rules& rules,
                         Sink& sink, Options options)
    : main_(main),
      s_(std::move(settings)),
      keys_(s_.prefix, s_.queue),
      rules_(rules),
      sink_(sink),
      o_(std::move(options)),
      dir_(std::make_shared<SpoolDir>(o_.dir)) {}

SpoolSource::~SpoolSource() {
  for (auto* t : {&watch_task_, &produce_task_, &feed_task_, &write_task_}) {
    if (t->valid()) t->abort();
  }
}

void SpoolSource::retune(const store::Settings& s) {
  s_.retune(s);
}

void SpoolSource::start() {
  async::Fd fd(inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
  const int error = errno;
  if (fd) {
    inotify_ = std::make_shared<const async::Fd>(std::move(fd));
  } else {
    spdlog::error("queue {}: cannot watch {}: inotify_init1: {}; scanning it every {} s instead",
                  s_.queue, o_.dir.dir, std::strerror(error),
                  std::chrono::duration_cast<std::chrono::seconds>(kHousekeeping).count());
  }
  write_task_ = async::spawn(writer(), "spool writer " + s_.queue);
  feed_task_ = async::spawn(feeder(), "spool feeder " + s_.queue);
  produce_task_ = async::spawn(producer(), "spool " + s_.queue);
}

// ---- watching ----

void SpoolSource::add_name(std::string name, bool created) {
  if (!dir_->wanted(name)) return;
  if (names_.size() >= kMaxNames) {
    scan_wanted_ = true;  // found again by the scan once there is room
    return;
  }
  auto [it, fresh] = named_.try_emplace(name, created);
  if (fresh) {
    names_.push_back(std::move(name));
  } else if (!created) {
    it->second = false;
  }
  wake();
}

async::Task<void> SpoolSource::watcher() {
  const std::string& dir = o_.dir.dir;
  const int inotify = inotify_->get();  // started only with one
  alignas(inotify_event) char buf[64 * 1024];
  auto last_overflow_log = async::Clock::now() - kLogEvery;
  for (;;) {
    if (lost_dir_) {
      spdlog::warn(
          "queue {}: spool dir {} is gone (removed or moved away); waiting for it to "
          "come back",
          s_.queue, dir);
      if (wd_ >= 0) inotify_rm_watch(inotify, wd_);
      for (const auto& [wd, rel] : wds_) {
        if (wd != wd_) inotify_rm_watch(inotify, wd);
      }
      wds_.clear();
      wd_ = -1;
      for (;;) {
        co_await async::sleep(1s);
        wd_ = inotify_add_watch(inotify, dir.c_str(), kEvents);
        if (wd_ >= 0) break;
      }
      wds_[wd_] = "";
      spdlog::info("queue {}: spool dir {} is back; watching it again", s_.queue, dir);
      lost_dir_ = false;
      reopen_ = true;
      scan_wanted_ = true;
      scan_at_ = {};
      wake();
    }
    co_await async::readable(inotify);
    ssize_t n = ::read(inotify, buf, sizeof buf);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      spdlog::error("queue {}: reading inotify events for {} failed: {}", s_.queue, dir,
                    std::strerror(errno));
      co_await async::sleep(1s);
      continue;
    }
    for (char* p = buf; p < buf + n;) {
      auto* ev = reinterpret_cast<inotify_event*>(p);
      p += sizeof(inotify_event) + ev->len;
      if (ev->mask & IN_Q_OVERFLOW) {
        // Events were dropped: the directory itself says what is there.
        scan_wanted_ = true;
        scan_at_ = {};
        auto now = async::Clock::now();
        if (now - last_overflow_log >= kLogEvery) {
          last_overflow_log = now;
          spdlog::info(
              "queue {}: the kernel dropped file events for {} (its queue overflowed); "
              "scanning the directory instead",
              s_.queue, dir);
        }
        wake();
        continue;
      }
      on_event(*ev);
    }
  }
}

void SpoolSource::on_event(const inotify_event& ev) {
  if (ev.wd == wd_) {
    if (ev.mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED)) {
      lost_dir_ = true;
      return;
    }
  } else if (ev.mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED)) {
    // A subfolder removed or moved: its watch (and those below, now at other paths) go; a
    // scan watches what is there now, wherever a moved folder went.
    forget_watch(ev.wd);
    if (ev.mask & IN_MOVE_SELF) {
      scan_wanted_ = true;
      wake();
    }
    return;
  }
  auto where = wds_.find(ev.wd);
  if (where == wds_.end()) {
    // A watch a scan added whose path the loop does not know yet (or one given up): a scan
    // looks at what the event was about.
    if (ev.len > 0 && ev.wd != wd_) {
      scan_wanted_ = true;
      wake();
    }
    return;
  }
  if (ev.len == 0) return;
  const std::string rel = where->second.empty() ? ev.name : where->second + "/" + ev.name;
  if (ev.mask & IN_DELETE) {
    if (ev.wd == wd_ && (ev.mask & IN_ISDIR) && std::strcmp(ev.name, ".jobqd") == 0) {
      spdlog::warn(
          "queue {}: the work folder {}/.jobqd was removed (claimed files in it are lost with "
          "it); making it again unless the directory goes too",
          s_.queue, o_.dir.dir);
      work_lost_ = true;
      wake();
    }
    return;
  }
  if (ev.mask & IN_ISDIR) {
    // A new subfolder (made, or moved in with its files): watched, then scanned, so that files
    // made in it before the watch existed are found.
    if ((ev.mask & (IN_CREATE | IN_MOVED_TO)) && dir_->wanted_dir(rel)) {
      subscans_.push_back(rel);
      wake();
    }
    return;
  }
  add_name(rel, (ev.mask & IN_CREATE) != 0);
}

void SpoolSource::forget_watch(int wd) {
  auto it = wds_.find(wd);
  if (it == wds_.end()) return;
  const std::string below = it->second + "/";
  inotify_rm_watch(inotify_->get(), wd);
  wds_.erase(it);
  for (auto w = wds_.begin(); w != wds_.end();) {
    if (w->second.compare(0, below.size(), below) == 0) {
      inotify_rm_watch(inotify_->get(), w->first);
      w = wds_.erase(w);
    } else {
      ++w;
    }
  }
}

void SpoolSource::record_watches(const std::vector<std::pair<int, std::string>>& watched) {
  for (const auto& [wd, rel] : watched) {
    if (wd != wd_) wds_[wd] = rel;  // the same folder again (moved): its new path
  }
}

// ---- claiming ----

std::size_t SpoolSource::avail() const noexcept {
  const std::size_t room = sink_.room();
  return room > transit_ ? room - transit_ : 0;
}

async::Task<void> SpoolSource::producer() {
  const std::string& dir = o_.dir.dir;
  while (taking_ && !opened_) {
    std::string error;
    auto d = dir_;
    try {
      auto open = [d] { d->open(); };
      co_await async::to_thread(std::move(open));
      opened_ = true;
    } catch (const std::exception& e) {
      error = e.what();
    }
    if (opened_) break;
    spdlog::error("queue {}: cannot use spool dir {}: {}; trying again in 5 s", s_.queue, dir,
                  error);
    wake_.clear();
    try {
      co_await async::wait_for(wake_.wait(), 5s);
    } catch (const async::TimeoutError&) {
    }
  }
  if (!taking_) co_return;
  // The watch before the first scan: a file that arrives in between is seen by one or the other.
  if (inotify_) {
    wd_ = inotify_add_watch(inotify_->get(), dir.c_str(), kEvents);
    if (wd_ < 0) {
      spdlog::error("queue {}: cannot watch {}: {}", s_.queue, dir, std::strerror(errno));
      lost_dir_ = true;
    } else {
      wds_[wd_] = "";
    }
    watch_task_ = async::spawn(watcher(), "spool watch " + s_.queue);
  }
  co_await recover(true);
  spdlog::info("queue {}: taking files matching '{}' from spool dir {} (on success: {})", s_.queue,
               o_.dir.pattern, dir, o_.dir.keep_done ? "moved to done/" : "deleted");
  housekeeping_at_ = async::Clock::now() + kHousekeeping;
  while (taking_) {
    if (work_lost_) {
      work_lost_ = false;
      auto d = dir_;
      auto let_go = [d] { d->close(); };
      co_await async::to_thread(std::move(let_go));
      co_await async::sleep(kWorkGoneWait);
      if (!lost_dir_) {
        reopen_ = true;
        scan_wanted_ = true;
        scan_at_ = {};
      }
      continue;
    }
    auto now = async::Clock::now();
    if (reopen_) {
      reopen_ = false;
      auto d = dir_;
      std::string error;
      try {
        auto open = [d] { d->open(); };
        co_await async::to_thread(std::move(open));
      } catch (const std::exception& e) {
        error = e.what();
      }
      if (!error.empty()) {
        spdlog::error("queue {}: cannot use spool dir {}: {}", s_.queue, dir, error);
        reopen_ = true;
        co_await async::sleep(1s);
        continue;
      }
    }
    if (now >= housekeeping_at_) {
      housekeeping_at_ = now + kHousekeeping;
      if (!lost_dir_) {
        co_await recover(false);
        scan_wanted_ = true;
      }
    }
    if (!later_.empty() && later_.begin()->first <= now) {
      co_await run_due();
      continue;
    }
    if (!subscans_.empty() && !lost_dir_) {
      std::string sub = std::move(subscans_.front());
      subscans_.pop_front();
      co_await rescan(std::move(sub));
      continue;
    }
    if (names_.empty() && scan_wanted_ && now >= scan_at_ && !lost_dir_) {
      co_await rescan("");
      if (!names_.empty()) continue;
    }
    if (!names_.empty()) {
      std::size_t n = std::min({avail(), kClaimBatch, names_.size()});
      if (n > 0) {
        co_await claim_batch(n);
        continue;
      }
      if (transit_ == 0) {
        // The buffer is full: claim again in batches once it has room.
        co_await sink_.wait_room(kClaimBatch);
        continue;
      }
    }
    // Nothing to do now: until a name, a due retry, a scan or the housekeeping.
    if (!taking_) break;
    auto until = housekeeping_at_;
    if (!later_.empty()) until = std::min(until, later_.begin()->first);
    if (scan_wanted_ && names_.empty()) until = std::min(until, scan_at_);
    wake_.clear();
    if (until > now) {
      try {
        co_await async::wait_for(wake_.wait(), until - now);
      } catch (const async::TimeoutError&) {
      }
    }
  }
}

async::Task<void> SpoolSource::rescan(std::string sub) {
  const bool whole = sub.empty();
  if (whole) scan_wanted_ = false;
  auto d = dir_;
  const auto quiet = o_.quiet.count();
  // With `recursive`, the scan watches each subfolder before it reads it: a file made after
  // the read is an event, one made before is in the read.
  std::shared_ptr<const async::Fd> watch;
  if (o_.dir.recursive) watch = inotify_;
  auto scan = [d, quiet, sub = std::move(sub), watch] {
    return d->scan(kScanLimit, quiet, sub, watch ? watch->get() : -1, kEvents);
  };
  SpoolDir::Scan got = co_await async::to_thread(std::move(scan));
  record_watches(got.watched);
  if (got.watch_error && async::Clock::now() - last_watch_log_ >= kLogEvery) {
    last_watch_log_ = async::Clock::now();
    spdlog::error("queue {}: {}; files there are found by the scan every {} s instead", s_.queue,
                  *got.watch_error,
                  std::chrono::duration_cast<std::chrono::seconds>(kHousekeeping).count());
  }
  if (got.error) {
    spdlog::error("queue {}: {}", s_.queue, *got.error);
    scan_wanted_ = true;
    scan_at_ = async::Clock::now() + 1s;
    co_return;
  }
  for (auto& n : got.names) add_name(std::move(n), false);
  if (got.more) {
    // The limit (scan again once these are claimed) or files too fresh to take yet.
    scan_wanted_ = true;
    scan_at_ = async::Clock::now() + std::min<Millis>(o_.quiet / 2 + 10ms, 500ms);
  }
}

async::Task<void> SpoolSource::claim_batch(std::size_t n) {
  struct Todo {
    std::string name;
    bool created;
    std::string jid;
  };
  std::vector<Todo> todo;
  todo.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    auto it = named_.find(names_.front());
    const bool created = it != named_.end() && it->second;
    if (it != named_.end()) named_.erase(it);
    todo.push_back({std::move(names_.front()), created, job::new_id()});
    names_.pop_front();
  }
  auto d = dir_;
  auto claim = [d, todo = std::move(todo)] {
    std::vector<SpoolDir::ClaimResult> out;
    out.reserve(todo.size());
    for (const auto& [name, created, jid] : todo) {
      // Still being written: its close is an event of its own.
      if (created && !d->settled(name)) continue;
      out.push_back(d->claim(name, jid));
      if (out.back().how == SpoolDir::Taken::claimed && is_job_file(name)) {
        d->read_job(out.back().claim);
      }
    }
    return out;
  };
  auto results = co_await async::to_thread(std::move(claim));
  for (auto& r : results) {
    switch (r.how) {
      case SpoolDir::Taken::claimed:
        adopt(std::move(r.claim));
        break;
      case SpoolDir::Taken::gone:
      case SpoolDir::Taken::not_file:
        break;  // another daemon took it, it vanished, or it is a directory
      case SpoolDir::Taken::failed:
        // The file stays where it is (a full disk, a permission): a later scan tries again.
        spdlog::error("queue {}: {}; trying again later", s_.queue, r.error);
        scan_wanted_ = true;
        scan_at_ = async::Clock::now() + 1s;
        break;
    }
  }
}

// A claimed file becomes a job: what it is read, its state written as active (through the
// writer), then it goes to the sink.
void SpoolSource::adopt(SpoolDir::Claim claim) {
  const std::uint64_t ticket = next_ticket_++;
  File f;
  f.claimed_ms = store::unix_ms();
  f.id = claim.jid;
  if (claim.invalid.empty()) {
    if (is_job_file(claim.name)) {
      f.raw = std::move(claim.json);
      std::variant<job::Job, job::Invalid> parsed;
      try {
        parsed = job::parse(f.raw, rules_);
      } catch (const std::exception& e) {
        parsed = job::Invalid{std::string("jobqd could not read this job: ") + e.what(), ""};
      }
      if (auto* bad = std::get_if<job::Invalid>(&parsed)) {
        claim.invalid = std::move(bad->error);
      } else {
        auto& j = std::get<job::Job>(parsed);
        // A job file without an id is known by its claim's: the same after a crash.
        if (j.id_assigned) {
          f.raw = job::with_id(f.raw, claim.jid);
        } else {
          f.id = j.id;
        }
        f.handler = j.handler;
      }
    } else {
      const std::string path = dir_->path_of(claim);
      nlohmann::json payload = {
          {"file", job::to_utf8(path)}, {"name", job::to_utf8(claim.name)}, {"size", claim.size}};
      nlohmann::json j = {{"id", claim.jid}, {"payload", std::move(payload)}};
      f.raw = j.dump();
      f.handler = rules_.default_handler;
    }
  }
  if (!claim.invalid.empty()) f.raw.clear();
  if (spdlog::should_log(spdlog::level::debug)) {  // no per-file copy of the name otherwise
    spdlog::debug("queue {}: spool file {} is job {} (attempt {})", s_.queue,
                  job::to_utf8(claim.name), f.id, claim.attempt);
  }
  f.claim = std::move(claim);
  const bool invalid = !f.claim.invalid.empty();
  const std::string handler = f.handler;
  const long long attempt = f.claim.attempt;
  files_.emplace(ticket, std::move(f));
  ++transit_;
  if (invalid) {
    ready_.push_back(ticket);  // never runs: the engine records it dead
    ready_ev_.set();
    return;
  }
  Change c;
  c.code = Change::Code::start;
  c.ticket = ticket;
  c.a = num(attempt);
  c.b = handler;
  push(std::move(c));
}

async::Task<void> SpoolSource::recover(bool own) {
  auto d = dir_;
  auto look = [d, own] {
    auto claims = d->recover(own);
    std::vector<SpoolDir::Claim> out;
    for (auto& c : claims) {
      // The attempt it was at was lost with its daemon (or, at 0, none ran): the next one.
      if (!d->renumber(c, c.attempt + 1).empty()) continue;
      if (c.invalid.empty() && is_job_file(c.name)) d->read_job(c);
      out.push_back(std::move(c));
    }
    return out;
  };
  auto found = co_await async::to_thread(std::move(look));
  if (!found.empty()) {
    spdlog::info("queue {}: taking up {} file(s) left claimed in {} by a daemon that stopped",
                 s_.queue, found.size(), o_.dir.dir);
  }
  for (auto& c : found) adopt(std::move(c));
}

// Retries whose delay is over (counted on disk first), and files whose id is free to try again.
async::Task<void> SpoolSource::run_due() {
  const auto now = async::Clock::now();
  std::vector<std::pair<std::uint64_t, SpoolDir::Claim>> bump;
  std::vector<std::uint64_t> again;
  while (!later_.empty() && later_.begin()->first <= now && bump.size() < kClaimBatch) {
    auto [ticket, why] = later_.begin()->second;
    later_.erase(later_.begin());
    auto it = files_.find(ticket);
    if (it == files_.end()) continue;
    if (why == Later::retry) {
      bump.emplace_back(ticket, it->second.claim);
    } else {
      again.push_back(ticket);
    }
  }
  if (!bump.empty()) {
    auto d = dir_;
    auto renumber = [d, bump = std::move(bump)]() mutable {
      std::vector<std::pair<std::uint64_t, std::string>> out;  // ticket, error
      for (auto& [t, c] : bump) out.emplace_back(t, d->renumber(c, c.attempt + 1));
      return out;
    };
    auto done = co_await async::to_thread(std::move(renumber));
    for (auto& [ticket, error] : done) {
      auto it = files_.find(ticket);
      if (it == files_.end()) continue;
      if (!error.empty()) {
        spdlog::error("queue {}: job {}: {}; trying again in 1 s", s_.queue, it->second.id, error);
        later_.emplace(async::Clock::now() + 1s, std::make_pair(ticket, Later::retry));
        continue;
      }
      ++it->second.claim.attempt;
      again.push_back(ticket);
    }
  }
  for (auto ticket : again) {
    auto it = files_.find(ticket);
    if (it == files_.end()) continue;
    ++transit_;
    Change c;
    c.code = Change::Code::start;
    c.ticket = ticket;
    c.a = num(it->second.claim.attempt);
    c.b = it->second.handler;
    push(std::move(c));
  }
}

// ---- into the sink ----

async::Task<void> SpoolSource::feeder() {
  for (;;) {
    if (ready_.empty()) {
      if (!taking_) co_return;
      ready_ev_.clear();
      co_await ready_ev_.wait();
      continue;
    }
    const std::uint64_t ticket = ready_.front();
    ready_.pop_front();
    auto it = files_.find(ticket);
    if (it == files_.end()) {
      --transit_;
      continue;
    }
    File& f = it->second;
    Arrival a;
    a.from = this;
    a.ticket = ticket;
    a.id = f.id;
    a.raw = f.raw;
    if (f.claim.invalid.empty()) {
      a.attempt = f.claim.attempt;
      a.file = dir_->path_of(f.claim);
      a.dropped = dir_->dropped_path_of(f.claim);
      f.ran = true;
    } else {
      a.invalid = "spool file " + job::to_utf8(f.claim.name) + ": " + f.claim.invalid;
    }
    // At a stop the sink gives it back (give_back) rather than take it.
    co_await sink_.accept(std::move(a));
    --transit_;
    wake();
  }
}

// ---- the Delivery ----

void SpoolSource::push(Change c) {
  changes_.push_back(std::move(c));
  work_.set();
}

void SpoolSource::push(Change::Code code, std::uint64_t ticket, std::string text,
                       job::ErrorKind kind, store::Recorded* done, Millis delay) {
  Change c;
  c.code = code;
  c.ticket = ticket;
  c.a = std::move(text);
  if (kind != job::ErrorKind::none) c.b = job::to_string(kind);
  c.kind = kind;
  c.delay = delay;
  c.notify = done;
  push(std::move(c));
}

void SpoolSource::succeed(std::uint64_t ticket, const std::string&, long long, std::string result,
                          store::Recorded* done) {
  push(Change::Code::ok, ticket, std::move(result), job::ErrorKind::none, done);
}

void SpoolSource::retry(std::uint64_t ticket, const std::string&, Millis delay, std::string error,
                        job::ErrorKind kind, store::Recorded* done) {
  push(Change::Code::retry, ticket, std::move(error), kind, done, delay);
}

void SpoolSource::dead(std::uint64_t ticket, const std::string&, bool, std::string error,
                       job::ErrorKind kind, store::Recorded* done) {
  push(Change::Code::dead, ticket, std::move(error), kind, done);
}

void SpoolSource::cancel(std::uint64_t ticket, const std::string&, std::string error,
                         store::Recorded* done) {
  // Its file goes to failed/, its error beside it saying it was cancelled.
  push(Change::Code::cancel, ticket, std::move(error), job::ErrorKind::cancelled, done);
}

void SpoolSource::give_back(std::uint64_t ticket, const std::string&, store::Recorded* done) {
  push(Change::Code::back, ticket, "", job::ErrorKind::none, done);
}

void SpoolSource::forget(std::uint64_t ticket) noexcept {
  // The engine could not take it (another job of its id is in flight there): it stays claimed
  // here and asks again shortly.
  if (files_.count(ticket))
    later_.emplace(async::Clock::now() + kIdWait, std::make_pair(ticket, Later::wait));
}

std::string SpoolSource::error_json(const File& f, const std::string& error,
                                    job::ErrorKind kind) const {
  nlohmann::json j = {{"id", f.id},
                      {"queue", s_.queue},
                      {"file", job::to_utf8(f.claim.name)},
                      {"error", job::to_utf8(error)},
                      {"error_kind", job::to_string(kind)},
                      {"attempts", f.ran ? f.claim.attempt : 0},
                      {"claimed_at", f.claimed_ms},
                      {"failed_at", store::unix_ms()},
                      {"worker", s_.worker}};
  return j.dump(2) + "\n";
}

// ---- writing ----

// Sends one batch until Redis has answered it: a lost connection is waited out, anything else
// retried after a pause. Every change can be made twice.
async::Task<redis::Reply> SpoolSource::send(const std::vector<std::string>& args) {
  const std::vector<std::string> keys{keys_.live};
  auto last_log = async::Clock::now() - kLogEvery;
  for (;;) {
    std::string error;
    bool down = false;
    try {
      co_return co_await store::scripts::spool_state().run(main_, keys, args);
    } catch (const redis::ConnectionError& e) {
      error = e.what();
      down = true;
    } catch (const std::exception& e) {
      error = e.what();
    }
    auto now = async::Clock::now();
    if (now - last_log >= kLogEvery) {
      last_log = now;
      spdlog::error(
          "queue {}: cannot write the state of spool jobs to Redis ({}); the files "
          "wait, and the write is tried again",
          s_.queue, error);
    }
    if (down) {
      co_await main_.wait_connected();
    } else {
      co_await async::sleep(1s);
    }
  }
}

async::Task<void> SpoolSource::writer() {
  const std::string keep_ok =
      num(s_.keep_succeeded.count() == 0
              ? 0
              : std::max<long long>(1, static_cast<long long>(s_.keep_succeeded.count() / 1000)));
  const std::string keep_dead =
      num(std::max<long long>(1, static_cast<long long>(s_.dead_ttl.count() / 1000)));
  auto last_log = async::Clock::now() - kLogEvery;
  for (;;) {
    if (changes_.empty()) {
      work_.clear();
      co_await work_.wait();
      continue;
    }
    const std::size_t take = std::min(changes_.size(), kChangeBatch);
    std::vector<Change> batch(std::make_move_iterator(changes_.begin()),
                              std::make_move_iterator(changes_.begin() + take));
    changes_.erase(changes_.begin(), changes_.begin() + take);
    sending_ = batch.size();
    std::vector<std::string> args{keys_.base, s_.queue, s_.worker, keep_ok, keep_dead};
    args.reserve(5 + 5 * batch.size());
    // What the disk must do once Redis has it: the file's end, or a stop's renumbering.
    struct Move {
      std::size_t i;
      SpoolDir::Claim claim;
      std::string error_json;  // dead
      std::string result;      // filled by the thread: an error, empty on success
    };
    std::vector<Move> moves;
    for (std::size_t i = 0; i < batch.size(); ++i) {
      auto& c = batch[i];
      auto it = files_.find(c.ticket);
      if (it == files_.end()) {
        // Its file already ended (a change pushed twice at a stop): nothing to write, but the
        // slot keeps the replies in step with the batch.
        args.insert(args.end(), {"skip", "", "", "", ""});
        continue;
      }
      File& f = it->second;
      args.emplace_back(code_name(static_cast<std::uint8_t>(c.code)));
      args.push_back(f.id);
      args.push_back("spool:" + f.claim.jid);
      switch (c.code) {
        case Change::Code::start:
        case Change::Code::retry:
          args.push_back(c.a);
          args.push_back(c.b);
          break;
        case Change::Code::ok:
          args.push_back(c.a);
          args.emplace_back();
          moves.push_back({i, f.claim, "", ""});
          break;
        case Change::Code::dead:
        case Change::Code::cancel:
          args.push_back(c.a);
          args.push_back(c.b);
          moves.push_back({i, f.claim, error_json(f, c.a, c.kind), ""});
          break;
        case Change::Code::back:
          // Not counted: the attempt it was at did not run to its end (0 if it was the first).
          args.push_back(num(f.claim.attempt - 1));
          args.emplace_back();
          moves.push_back({i, f.claim, "", ""});
          break;
      }
    }
    redis::Reply reply = co_await send(args);
    if (!moves.empty()) {
      auto d = dir_;
      std::vector<Change::Code> codes;
      for (auto& m : moves) codes.push_back(batch[m.i].code);
      auto move = [d, moves = std::move(moves), codes]() mutable {
        for (std::size_t k = 0; k < moves.size(); ++k) {
          auto& m = moves[k];
          switch (codes[k]) {
            case Change::Code::ok:
              m.result = d->finish_done(m.claim);
              break;
            case Change::Code::dead:
            case Change::Code::cancel:
              m.result = d->finish_failed(m.claim, m.error_json);
              break;
            default:
              m.result = d->renumber(m.claim, m.claim.attempt - 1);
              break;
          }
        }
        return std::move(moves);
      };
      moves = co_await async::to_thread(std::move(move));
      for (auto& m : moves) {
        if (!m.result.empty()) {
          spdlog::error("queue {}: spool file {}: {}", s_.queue, job::to_utf8(m.claim.name),
                        job::to_utf8(m.result));
        }
      }
    }
    for (std::size_t i = 0; i < batch.size(); ++i) {
      auto& c = batch[i];
      const redis::Reply* r =
          reply.is_array() && i < reply.elements.size() ? &reply.elements[i] : nullptr;
      const bool refused = !r || r->type != redis::Reply::Type::integer;
      auto it = files_.find(c.ticket);
      if (refused) {
        auto now = async::Clock::now();
        if (now - last_log >= kLogEvery) {
          last_log = now;
          spdlog::error("queue {}: Redis refused to record '{}' for spool job {}: {}", s_.queue,
                        code_name(static_cast<std::uint8_t>(c.code)),
                        it != files_.end() ? it->second.id : "?", r ? r->str : "no reply for it");
        }
      }
      if (it == files_.end()) {
        if (c.code == Change::Code::start) --transit_;
        if (c.notify) c.notify->recorded(store::Written::written);
        continue;
      }
      switch (c.code) {
        case Change::Code::start:
          if (!refused && r->integer == 0) {
            // Another job owns the id: this file waits its turn.
            --transit_;
            later_.emplace(async::Clock::now() + kIdWait, std::make_pair(c.ticket, Later::wait));
            wake();
          } else if (!taking_) {
            --transit_;
            give_back(c.ticket, it->second.id, nullptr);
          } else {
            ready_.push_back(c.ticket);
            ready_ev_.set();
          }
          break;
        case Change::Code::retry:
          later_.emplace(async::Clock::now() + c.delay, std::make_pair(c.ticket, Later::retry));
          wake();
          break;
        case Change::Code::ok:
        case Change::Code::dead:
        case Change::Code::back:
        case Change::Code::cancel:
          files_.erase(it);
          break;
      }
      if (c.notify) c.notify->recorded(store::Written::written);
    }
    sending_ = 0;
    progress_.set();
    progress_.clear();
  }
}

// ---- stopping ----

async::Task<void> SpoolSource::stop_taking() {
  taking_ = false;
  wake();
  ready_ev_.set();
  if (watch_task_.valid()) {
    watch_task_.cancel();
    co_await watch_task_.wait();
  }
  // These two are never cancelled mid-way: a claim on the thread pool must not be lost.
  if (produce_task_.valid()) co_await produce_task_.wait();
  if (feed_task_.valid()) co_await feed_task_.wait();
  // Claimed and not handed over: back, the attempt not counted. Files waiting for a retry keep
  // theirs (that attempt ran): a restart runs the next one.
  for (auto t : ready_) {
    --transit_;
    give_back(t, "", nullptr);
  }
  ready_.clear();
  for (auto& [at, what] : later_) {
    if (what.second == Later::wait) give_back(what.first, "", nullptr);
  }
  later_.clear();
}

async::Task<void> SpoolSource::finish(Millis limit) {
  const auto deadline = async::Clock::now() + limit;
  while (!changes_.empty() || sending_ > 0) {
    auto left = deadline - async::Clock::now();
    if (left <= async::Duration::zero()) break;
    try {
      co_await async::wait_for(progress_.wait(), left);
    } catch (const async::TimeoutError&) {
      break;
    }
  }
  if (!changes_.empty() || sending_ > 0) {
    spdlog::warn(
        "queue {}: {} spool job change(s) not written in time; their files stay claimed "
        "in {} and run again at the next start",
        s_.queue, changes_.size() + sending_, o_.dir.dir);
  }
  if (write_task_.valid()) {
    write_task_.cancel();
    co_await write_task_.wait();
  }
  auto d = dir_;
  auto close = [d] { d->close(); };
  co_await async::to_thread(std::move(close));
}

}  // namespace jq::sources
