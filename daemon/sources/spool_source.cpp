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
#include "store/shards.hpp"

namespace jq::sources {
namespace {

using namespace std::chrono_literals;

// Files claimed per trip to the thread pool.
constexpr std::size_t kClaimBatch = 256;
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

}  // namespace

struct SpoolSource::Hook final : store::OnSettled {
  SpoolSource& source;
  std::uint64_t ticket;
  Then then;
  store::OnSettled* done;
  Millis delay;
  std::string error_json;
  std::list<Hook>::iterator self;
  Hook(SpoolSource& s, std::uint64_t t, Then th, store::OnSettled* d, Millis dl, std::string e)
      : source(s), ticket(t), then(th), done(d), delay(dl), error_json(std::move(e)) {}
  void settled(store::Settled how) noexcept override {
    SpoolSource& src = source;
    const std::uint64_t t = ticket;
    const Then th = then;
    store::OnSettled* d = done;
    const Millis dl = delay;
    std::string e = std::move(error_json);
    src.hooks_.erase(self);  // `this` is gone from here
    src.on_settled(t, th, how, d, dl, std::move(e));
  }
};

SpoolSource::SpoolSource(store::QueueStore& store, std::vector<store::Settler*> settlers,
                         const job::Rules& rules, Sink& sink, Options options)
    : store_(store),
      settlers_(std::move(settlers)),
      s_(store.settings()),
      rules_(rules),
      sink_(sink),
      o_(std::move(options)),
      dir_(std::make_shared<SpoolDir>(o_.dir)) {}

SpoolSource::~SpoolSource() {
  for (auto* t : {&watch_task_, &produce_task_, &feed_task_, &move_task_}) {
    if (t->valid()) t->abort();
  }
  // Settlements still queued must not tell a source that is gone (a reload let go of it while
  // Redis was away): their files stay claimed on disk, and run again.
  for (auto& h : hooks_) {
    for (auto* settler : settlers_) settler->disown(&h);
  }
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
  move_task_ = async::spawn(mover(), "spool mover " + s_.queue);
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
  async::Every overflows(kLogEvery);
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
      async::Every refused(kLogEvery);
      for (;;) {
        co_await async::sleep(1s);
        wd_ = inotify_add_watch(inotify, dir.c_str(), kEvents);
        if (wd_ >= 0) break;
        // Not there yet is what is waited for; anything else (out of inotify watches, no
        // permission) is said, or the queue would wait for it silently for ever.
        if (errno != ENOENT && errno != ENOTDIR && refused.due()) {
          spdlog::error("queue {}: spool dir {} is there but cannot be watched again: {}", s_.queue,
                        dir, std::strerror(errno));
        }
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
        if (overflows.due()) {
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

async::Task<std::string> SpoolSource::open_dir() {
  auto d = dir_;
  try {
    auto open = [d] { d->open(); };
    co_await async::to_thread(std::move(open));
  } catch (const std::exception& e) {
    co_return std::string(e.what());
  }
  co_return std::string();
}

async::Task<void> SpoolSource::begin() {
  const std::string& dir = o_.dir.dir;
  while (taking_ && !opened_) {
    std::string error = co_await open_dir();
    opened_ = error.empty();
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
}

async::Task<void> SpoolSource::producer() {
  co_await begin();
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
      std::string error = co_await open_dir();
      if (!error.empty()) {
        spdlog::error("queue {}: cannot use spool dir {}: {}", s_.queue, o_.dir.dir, error);
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
        // The buffer is full: claim again in batches once it has room (none comes once the
        // queue stops: the files wait on disk).
        if (!co_await sink_.wait_room(kClaimBatch)) break;
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
  if (got.watch_error && watch_errors_.due()) {
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

// A claimed file becomes a job: it is read (the one parse), its id claimed (through the queue's
// Settler), then it goes to the sink.
void SpoolSource::adopt(SpoolDir::Claim claim) {
  const std::uint64_t ticket = next_ticket_++;
  File f;
  f.claimed_ms = store::unix_ms();
  f.submitted_at = std::to_string(store_.redis_now());
  f.id = claim.jid;
  f.handler = rules_.default_handler;
  f.max_attempts = static_cast<long long>(s_.max_attempts);
  if (claim.invalid.empty()) {
    std::string text;
    if (is_job_file(claim.name)) {
      text = std::move(claim.json);
    } else {
      const std::string path = dir_->path_of(claim);
      nlohmann::json payload = {
          {"file", job::to_utf8(path)}, {"name", job::to_utf8(claim.name)}, {"size", claim.size}};
      text = nlohmann::json({{"id", claim.jid}, {"payload", std::move(payload)}}).dump();
    }
    std::variant<job::Job, job::Invalid> parsed;
    try {
      parsed = job::parse(text, rules_, claim.jid);
    } catch (const std::exception& e) {
      parsed = job::Invalid{std::string("jobqd could not read this job: ") + e.what(), ""};
    }
    if (auto* j = std::get_if<job::Job>(&parsed); j && !j->after.empty()) {
      // Its file is its store: nothing would hold it while it waits (docs/workflows.md).
      parsed = job::Invalid{
          "field after: a spool file's job cannot wait for other jobs in this version (push it "
          "to Redis, or submit it with jobqctl submit --after)",
          j->id};
    }
    if (auto* bad = std::get_if<job::Invalid>(&parsed)) {
      claim.invalid = std::move(bad->error);
    } else {
      auto& j = std::get<job::Job>(parsed);
      // A job file without an id is known by its claim's (parse gave it): the same after a crash.
      f.id = j.id;
      f.handler = j.handler;
      if (j.max_attempts) {
        f.max_attempts =
            static_cast<long long>(std::min<std::uint64_t>(*j.max_attempts, s_.max_attempts));
      }
      f.job = std::move(j);
    }
  }
  if (spdlog::should_log(spdlog::level::debug)) {  // no per-file copy of the name otherwise
    spdlog::debug("queue {}: spool file {} is job {} (attempt {})", s_.queue,
                  job::to_utf8(claim.name), f.id, claim.attempt);
  }
  f.claim = std::move(claim);
  const bool invalid = !f.claim.invalid.empty();
  files_.emplace(ticket, std::move(f));
  ++transit_;
  if (invalid) {
    ready_.push_back(ticket);  // never runs: the engine settles it failed
    ready_ev_.set();
    return;
  }
  claim_id(ticket);
}

void SpoolSource::claim_id(std::uint64_t ticket) {
  const File& f = files_.at(ticket);
  store::Settlement s = settlement_of(f, store::Settlement::Op::claim);
  s.claim = s.nonce;
  push(ticket, std::move(s), Then::run, nullptr);
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
    if (!files_.count(ticket)) continue;
    ++transit_;
    claim_id(ticket);
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
    a.max_attempts = f.max_attempts;
    if (f.claim.invalid.empty()) {
      a.job = f.job;  // a copy: a retry hands the same file over again
      a.attempt = f.claim.attempt;
      a.file = dir_->path_of(f.claim);
      a.dropped = dir_->dropped_path_of(f.claim);
      f.ran = true;
    } else {
      a.invalid = "spool file " + job::to_utf8(f.claim.name) + ": " + f.claim.invalid;
    }
    // At a stop the sink gives it back (settles it `back`) rather than take it.
    co_await sink_.accept(std::move(a));
    --transit_;
    wake();
  }
}

// ---- the Delivery ----

store::Settlement SpoolSource::settlement_of(const File& f, store::Settlement::Op op) const {
  store::Settlement s;
  s.op = op;
  s.id = f.id;
  s.nonce = "spool:" + f.claim.jid;  // the same whoever runs the file, after a crash too
  s.attempts = f.claim.attempt;
  s.handler = f.handler;
  s.submitted_at = f.submitted_at;
  s.started_at = f.started_at;
  // Its file as dropped, in the state beside the rest (the job's page shows it); valid UTF-8,
  // as the state's other texts. A claim or a give-back writes no state.
  if (op != store::Settlement::Op::claim && op != store::Settlement::Op::back) {
    s.file = job::to_utf8(dir_->dropped_path_of(f.claim));
  }
  // With retain.payload, a job file's final state keeps its payload as a Redis job's does. Any
  // other file's payload is jobqd's own (its claimed path, name and size): `file` says it.
  const bool ends = op == store::Settlement::Op::ok || op == store::Settlement::Op::dead ||
                    op == store::Settlement::Op::cancel;
  if (ends && s_.retain_payload && f.job && is_job_file(f.claim.name)) {
    s.payload = store::retained_payload(*f.job);
  }
  return s;
}

void SpoolSource::push(std::uint64_t ticket, store::Settlement s, Then then, store::OnSettled* done,
                       Millis delay, std::string error_json) {
  ++unsettled_;
  Hook& h = hooks_.emplace_back(*this, ticket, then, done, delay, std::move(error_json));
  h.self = std::prev(hooks_.end());
  s.notify = &h;
  // The id's home shard: where its claim and state live, whichever source runs it.
  settlers_[store::home_shard(s.id, settlers_.size())]->push(std::move(s));
}

void SpoolSource::one_settled() {
  --unsettled_;
  progress_.set();
  progress_.clear();
}

void SpoolSource::on_settled(std::uint64_t ticket, Then then, store::Settled how,
                             store::OnSettled* done, Millis delay, std::string error_json) {
  auto it = files_.find(ticket);
  if (it == files_.end()) {
    one_settled();
    if (done) done->settled(how);
    return;
  }
  if (how == store::Settled::refused && then != Then::nothing) {
    // Redis refused the write (logged by the settler): the file stays claimed, and runs again
    // from the next start or housekeeping; the engine lets go of it.
    if (then == Then::run) {
      --transit_;
      later_.emplace(async::Clock::now() + kIdWait, std::make_pair(ticket, Later::wait));
      wake();
    }
    one_settled();
    if (done) done->settled(how);
    return;
  }
  switch (then) {
    case Then::run:
      one_settled();
      if (how == store::Settled::taken) {
        // Another job owns the id: this file waits its turn.
        --transit_;
        later_.emplace(async::Clock::now() + kIdWait, std::make_pair(ticket, Later::wait));
        wake();
      } else if (!taking_) {
        --transit_;
        Outcome back;
        back.end = Outcome::End::back;
        settle(ticket, std::move(back), nullptr);
      } else {
        ready_.push_back(ticket);
        ready_ev_.set();
      }
      return;
    case Then::retry:
      one_settled();
      later_.emplace(async::Clock::now() + delay, std::make_pair(ticket, Later::retry));
      wake();
      if (done) done->settled(how);
      return;
    case Then::nothing:
      one_settled();
      if (done) done->settled(how);
      return;
    case Then::finish_done:
    case Then::finish_failed:
    case Then::renumber:
      // Written in Redis: now the file's end on disk, then the engine is told.
      moves_.push_back({ticket, then, it->second.claim, std::move(error_json), "", how, done});
      moves_ev_.set();
      return;
  }
}

void SpoolSource::started(std::uint64_t ticket, bool show) {
  auto it = files_.find(ticket);
  if (it == files_.end()) return;
  it->second.started_at = std::to_string(store_.redis_now());
  if (show) show_active(ticket);
}

void SpoolSource::show_active(std::uint64_t ticket) {
  auto it = files_.find(ticket);
  if (it == files_.end() || it->second.shown) return;
  it->second.shown = true;
  store::Settlement s = settlement_of(it->second, store::Settlement::Op::start);
  s.fresh = it->second.claim.attempt <= 1;
  push(ticket, std::move(s), Then::nothing, nullptr);
}

void SpoolSource::settle(std::uint64_t ticket, Outcome out, store::OnSettled* done) {
  auto it = files_.find(ticket);
  if (it == files_.end()) {
    if (done) done->settled(store::Settled::not_held);
    return;
  }
  File& f = it->second;
  using Op = store::Settlement::Op;
  switch (out.end) {
    case Outcome::End::succeeded: {
      store::Settlement s = settlement_of(f, Op::ok);
      s.text = std::move(out.text);
      push(ticket, std::move(s), Then::finish_done, done);
      return;
    }
    case Outcome::End::retry: {
      store::Settlement s = settlement_of(f, Op::retry);
      s.text = std::move(out.text);
      s.kind = out.kind;
      s.delay = out.delay;
      f.shown = false;
      push(ticket, std::move(s), Then::retry, done, out.delay);
      return;
    }
    case Outcome::End::failed:
    case Outcome::End::cancelled: {
      const bool cancelled = out.end == Outcome::End::cancelled;
      // Its file goes to failed/, its error beside it (saying so when it was cancelled).
      const auto kind = cancelled ? job::ErrorKind::cancelled : out.kind;
      std::string error_json = this->error_json(f, out.text, kind);
      store::Settlement s = settlement_of(f, cancelled ? Op::cancel : Op::dead);
      if (!f.ran) {
        s.attempts = 0;
        s.started_at.clear();
      }
      s.text = std::move(out.text);
      s.kind = kind;
      push(ticket, std::move(s), Then::finish_failed, done, Millis(0), std::move(error_json));
      return;
    }
    case Outcome::End::back: {
      // Not counted: the attempt it was at did not run to its end (0 if it was the first).
      store::Settlement s = settlement_of(f, Op::back);
      s.attempts = f.claim.attempt - 1;
      push(ticket, std::move(s), Then::renumber, done);
      return;
    }
  }
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

// ---- the files' ends on disk ----

// Ends whose settlement is written: made on disk in batches on the thread pool (a rename or an
// unlink never blocks the loop), then the engine is told.
async::Task<void> SpoolSource::mover() {
  for (;;) {
    if (moves_.empty()) {
      moves_ev_.clear();
      co_await moves_ev_.wait();
      continue;
    }
    std::vector<Move> batch = std::move(moves_);
    moves_.clear();
    auto d = dir_;
    auto move = [d, batch = std::move(batch)]() mutable {
      for (auto& m : batch) {
        switch (m.then) {
          case Then::finish_done:
            m.result = d->finish_done(m.claim);
            break;
          case Then::finish_failed:
            m.result = d->finish_failed(m.claim, m.error_json);
            break;
          default:
            m.result = d->renumber(m.claim, m.claim.attempt - 1);
            break;
        }
      }
      return std::move(batch);
    };
    batch = co_await async::to_thread(std::move(move));
    for (auto& m : batch) {
      if (!m.result.empty()) {
        spdlog::error("queue {}: spool file {}: {}", s_.queue, job::to_utf8(m.claim.name),
                      job::to_utf8(m.result));
      }
      files_.erase(m.ticket);
      one_settled();
      if (m.done) m.done->settled(m.how);
    }
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
  Outcome back;
  back.end = Outcome::End::back;
  for (auto t : ready_) {
    --transit_;
    settle(t, back, nullptr);
  }
  ready_.clear();
  for (auto& [at, what] : later_) {
    if (what.second == Later::wait) settle(what.first, back, nullptr);
  }
  later_.clear();
}

async::Task<void> SpoolSource::finish(Millis limit) {
  const auto deadline = async::Clock::now() + limit;
  while (unsettled_ > 0) {
    auto left = deadline - async::Clock::now();
    if (left <= async::Duration::zero()) break;
    try {
      co_await async::wait_for(progress_.wait(), left);
    } catch (const async::TimeoutError&) {
      break;
    }
  }
  if (unsettled_ > 0) {
    spdlog::warn(
        "queue {}: {} spool job change(s) not written in time; their files stay claimed "
        "in {} and run again at the next start",
        s_.queue, unsettled_, o_.dir.dir);
  }
  if (move_task_.valid()) {
    move_task_.cancel();
    co_await move_task_.wait();
  }
  auto d = dir_;
  auto close = [d] { d->close(); };
  co_await async::to_thread(std::move(close));
}

}  // namespace jq::sources
