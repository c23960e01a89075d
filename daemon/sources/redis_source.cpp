// The Redis source: the fetch loop, the lease (upkeep, fence, reconcile), recovery, promotion,
// and the Delivery calls that become settlements.
#include "sources/redis_source.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "config/units.hpp"
#include "job/text.hpp"
#include "store/after.hpp"
#include "store/held.hpp"

namespace jq::sources {
namespace {

using namespace std::chrono_literals;
using redis::OpResult;

// How long one blocking wait lasts; short enough that a dead connection is noticed by its
// command timeout (this plus the client's) without keepalives.
constexpr auto kBlock = 2s;

}  // namespace

RedisSource::RedisSource(store::QueueStore& store, store::Settler& settler, Sink& sink,
                         Options options)
    : store_(store),
      settler_(settler),
      sink_(sink),
      options_(options),
      lease_(store_.settings().lease) {
  taking_ev_.set();
}

RedisSource::~RedisSource() {
  // Tasks refer to this object: stop them where they stand (stop_taking/finish are the graceful
  // way).
  for (auto* t :
       {&fetch_task_, &promote_task_, &recover_task_, &lease_task_, &wake_task_, &after_task_}) {
    if (t->valid()) t->abort();
  }
  if (fetch_.valid()) fetch_.abort();
  settler_.on_told(nullptr);
}

void RedisSource::start() {
  const std::string& q = store_.settings().queue;
  last_fetch_ = async::Clock::now();
  lease_task_ = async::spawn(keep("the lease keeper", &RedisSource::lease_keeper), "lease " + q);
  recover_task_ = async::spawn(keep("lease recovery", &RedisSource::recoverer), "recover " + q);
  promote_task_ =
      async::spawn(keep("delayed job promotion", &RedisSource::promoter), "promote " + q);
  fetch_task_ = async::spawn(keep("fetching", &RedisSource::fetcher), "redis source " + q);
  wake_task_ = async::spawn(keep("listening for priority jobs", &RedisSource::waker), "wake " + q);
  settler_.on_told(&after_work_);
  after_task_ =
      async::spawn(keep("jobs that wait for others", &RedisSource::after_keeper), "after " + q);
}

void RedisSource::rebuild(const std::string& why) {
  store_.client().rebuild(why);
  store_.blocking().rebuild(why);
}

// ---- fetching ----

async::Task<void> RedisSource::fetcher() {
  const std::string& q = store_.settings().queue;
  // Set when the last fetch found fewer jobs than it asked for: the next one waits for pending
  // first, on the blocking connection.
  bool wait_first = false;
  for (;;) {
    co_await lease_ok_.wait();
    co_await taking_ev_.wait();
    if (slow_until_ > 0) {
      // Into the bucket, for every daemon; the fetch below then finds no token until then.
      const auto slow = store::slow_down(store_.keys(), std::exchange(slow_until_, 0));
      (void)co_await store::run(store_.client(), slow);
    }
    // Fetch in batches, not a job at a time as room frees. Jobs read but not claimed yet count
    // against the room; they never wait for room, nor for jobs to come: their claim then goes
    // alone.
    const std::size_t unclaimed = unclaimed_.jobs.size();
    // The queue stopping: its stop gives back what is read and not claimed.
    if (unclaimed == 0 && !co_await sink_.wait_room(options_.fetch_batch)) co_return;
    if (!taking_) co_return;
    const std::size_t room = sink_.room() > unclaimed ? sink_.room() - unclaimed : 0;
    std::size_t n = std::min(room, options_.fetch_batch);
    if (unclaimed > 0 && (wait_first || n < options_.fetch_batch)) n = 0;
    if (n == 0 && unclaimed == 0) continue;
    // A wake (a job in a priority's list) since the last fetch: look again rather than wait.
    const bool waits = wait_first && n > 0 && !std::exchange(woken_, false);
    const std::uint64_t epoch = lease_epoch_;
    store::Unclaimed claim = std::move(unclaimed_);
    unclaimed_ = {};
    if (unclaimed_epoch_ != epoch) {
      // Read before a fence of the lease: they may be another daemon's by now.
      for (const auto& r : claim.jobs) store_.forget(r.token);
      claim = {};
      if (n == 0) continue;
    }
    // The fetch runs as a task of its own: if this source is stopped while the reply is on its
    // way, the jobs it held still arrive, and go back to pending instead of being held by
    // nobody until the lease expires.
    fetch_ = async::spawn(fetch_next(n, waits, std::move(claim)), "fetch " + q);
    bool stopped = false;
    store::QueueStore::Waited got;
    try {
      got = co_await fetch_;
    } catch (const async::Cancelled&) {
      stopped = true;
    }
    if (stopped) {
      // A fetch waiting for jobs runs as soon as the wait ends: end it now, not in kBlock.
      if (store_.waiting()) co_await store_.unblock();
      co_await fetch_.wait();  // cancellation is delivered once: this wait is not interrupted
      auto late = fetch_.take_result();
      if (late.ok()) give_back_all(late.value());
      throw async::Cancelled{};
    }
    auto& result = got.got;
    if (!result.ok()) {
      co_await after_fetch_error(result.error(), waits);
      continue;
    }
    store::Fetched& batch = *result;
    if (batch.lease_lost || epoch != lease_epoch_) {
      // The lease is gone or expired (the lease keeper takes a new one and sets lease_ok), or it
      // was fenced while the fetch was out: what it brought may be another daemon's by now
      // (recovery). Nothing of it runs here; reconcile returns what is still ours.
      if (batch.lease_lost) lease_ok_.clear();
      for (const auto& r : batch.jobs) store_.forget(r.token);
      for (const auto& a : batch.away) store_.forget(a.token);
      for (const auto& w : batch.waits) store_.forget(w.first.token);
      for (const auto& d : batch.duplicates) store_.forget(d.first.token);
      for (const auto& r : batch.afters) store_.forget(r.token);
      for (const auto& r : got.unclaimed.jobs) store_.forget(r.token);
      continue;
    }
    // Jobs whose id another job owns wait in delayed for a second; a claim nobody holds any
    // more is dropped (so that they do not wait for ever).
    for (auto& [r, owner] : batch.waits) settler_.push(store::held::wait(r));
    for (auto& [r, owner] : batch.waits) {
      if (!owner.empty()) co_await store_.check_claim(r.id, owner);
    }
    // Another job holds their unique key: each ends cancelled, naming it.
    for (auto& [r, holder] : batch.duplicates) cancel_duplicate(r, holder);
    batch.duplicates.clear();
    // Jobs pushed with `after`: into waiting (or, while another job of their id is not over,
    // to wait for it a second like any such job).
    for (auto& r : batch.afters) co_await enter_waiting(r);
    batch.afters.clear();
    if (n > 0) wait_first = batch.popped < n;
    if (batch.limited_by == store::Limit::rate) ++held_back_.rate;
    if (batch.limited_by == store::Limit::cap) ++held_back_.cap;
    if (batch.limited_by == store::Limit::group) ++held_back_.group;
    if (batch.limited_ms > 0) {
      // A limit held jobs back (they stay in Redis): hand over what came, and fetch again when
      // the next token is due or a slot may be free (a second at most: a reload may change the
      // limit meanwhile).
      wait_first = false;
      unclaimed_ = std::move(got.unclaimed);
      unclaimed_epoch_ = epoch;
      // It did fetch: a queue held back by its rate is not stalled.
      last_fetch_ = async::Clock::now();
      const std::int64_t wait = std::min<std::int64_t>(1000, batch.limited_ms);
      co_await hand_over(std::move(batch));
      co_await async::sleep(Millis(wait));
      continue;
    }
    if (batch.paused) {
      // Paused in Redis, and the queue has not read it yet (it does within a second): look
      // again shortly, not in a loop.
      wait_first = false;
      unclaimed_ = std::move(got.unclaimed);
      unclaimed_epoch_ = epoch;
      co_await hand_over(std::move(batch));
      co_await async::sleep(100ms);
      continue;
    }
    if (waits && (sink_.room() == 0 || !taking_ev_.is_set())) {
      // The fetch ran when its wait ended, and the queue stopped wanting jobs meanwhile (full,
      // stopping, paused, or no longer fed from Redis).
      give_back_all(got);
      continue;
    }
    if (batch.popped) fetch_sizes_.observe(static_cast<double>(batch.popped));
    if (batch.popped || !batch.jobs.empty()) last_fetch_ = async::Clock::now();
    unclaimed_ = std::move(got.unclaimed);
    unclaimed_epoch_ = epoch;
    co_await hand_over(std::move(batch));
    if (!got.wait_error.empty()) co_await after_wait_error(got.wait_error);
  }
}

async::Task<void> RedisSource::after_wait_error(const std::string& wait_error) {
  // CLIENT UNBLOCK ... ERROR, a failover (-UNBLOCKED), a wrong type: wait again shortly.
  if (fetch_errors_.due()) {
    spdlog::warn("queue {}: waiting for jobs failed: {}", store_.settings().queue, wait_error);
  }
  if (wait_error.find("WRONGTYPE") != std::string::npos) (void)co_await store_.repair();
  co_await async::sleep(100ms);
}

async::Task<void> RedisSource::after_fetch_error(const redis::OpError& e, bool waited) {
  if (e.connection()) {
    if (waited) {
      co_await store_.blocking().wait_connected();
    } else {
      co_await store_.client().wait_connected();
    }
    co_await async::sleep(50ms);
    co_return;
  }
  // A reply error, or a reply of an unexpected shape: the source keeps going (a queue that
  // silently stops fetching is the worst failure there is).
  if (fetch_errors_.due()) {
    spdlog::error("queue {}: fetching jobs failed: {}", store_.settings().queue, e.message);
  }
  if (e.wrong_type()) (void)co_await store_.repair();
  co_await async::sleep(1s);
}

async::Task<store::QueueStore::Waited> RedisSource::fetch_next(std::size_t n, bool wait,
                                                               store::Unclaimed claim) {
  // Not a coroutine itself: store_.waiting() is true from here on, for a stop right after. A
  // wait never carries a claim (the fetcher claims alone first).
  if (wait) return store_.fetch_when_pending(n, kBlock);
  return store_.fetch(n, std::move(claim));
}

void RedisSource::hold(store::Reading& r) {
  Hold h;
  h.read = std::move(r);
  h.read.job.reset();
  h.read.copy.body.clear();  // the held copy stays in Redis; its cut and marker are what count
  holds_[h.read.token] = std::move(h);
}

void RedisSource::give_back_all(store::QueueStore::Waited& fetched) {
  // Newest first onto the consuming end: the oldest is again the next one taken. The jobs not
  // claimed yet are the newest; their ids are not theirs yet, so their state is left alone.
  auto& unclaimed = fetched.unclaimed.jobs;
  for (auto it = unclaimed.rbegin(); it != unclaimed.rend(); ++it) {
    settler_.push(store::held::back(*it, false));
  }
  unclaimed.clear();
  if (!fetched.got.ok()) return;
  auto& batch = *fetched.got;
  for (auto& w : batch.waits) settler_.push(store::held::wait(w.first));
  batch.waits.clear();
  // Jobs to wait for others: back to pending as they came (they enter waiting when next taken).
  for (auto it = batch.afters.rbegin(); it != batch.afters.rend(); ++it) {
    settler_.push(store::held::back(*it, false));
  }
  batch.afters.clear();
  // Duplicates back too: taken again, they are found duplicates again, or run if the lock went.
  for (auto it = batch.duplicates.rbegin(); it != batch.duplicates.rend(); ++it) {
    settler_.push(store::held::back(it->first));
  }
  batch.duplicates.clear();
  // Another shard's jobs, not read here: back exactly as they came (forwarded when next taken).
  for (auto it = batch.away.rbegin(); it != batch.away.rend(); ++it) {
    store::Reading r;
    r.token = it->token;
    settler_.push(store::held::back(r, false));
  }
  batch.away.clear();
  for (auto it = batch.jobs.rbegin(); it != batch.jobs.rend(); ++it) {
    const std::uint64_t token = it->token;
    hold(*it);
    Outcome back;
    back.end = Outcome::End::back;
    settle(token, std::move(back), nullptr);
  }
  batch.jobs.clear();
}

void RedisSource::cancel_duplicate(store::Reading& r, const std::string& holder) {
  ++duplicates_;
  Outcome out;
  out.end = Outcome::End::cancelled;
  out.kind = job::ErrorKind::cancelled;
  const char* mode =
      store_.settings().unique.mode == store::UniqueRule::Mode::throttle ? "throttle" : "lock";
  out.text = "duplicate: job " + holder + " holds unique key '" +
             job::to_utf8(job::clip_utf8(r.unique_key, 80)) + "' (unique " + mode +
             "); this one was not run";
  spdlog::info("queue {}: job {} cancelled: {}", store_.settings().queue, r.id, out.text);
  r.unique_key.clear();  // the lock is the holder's: this job's end leaves it alone
  r.attempt -= 1;        // it never ran: its state counts the attempts before
  const std::uint64_t ticket = r.token;
  hold(r);
  settle(ticket, std::move(out), nullptr);
}

void RedisSource::slow_down(Millis d) {
  if (store_.settings().rate.per_ms <= 0 || d <= Millis(0)) return;
  slow_until_ = std::max(slow_until_, store_.redis_now() + d.count());
}

async::Task<void> RedisSource::hand_over(store::Fetched batch) {
  const std::string& q = store_.settings().queue;
  if (!batch.away.empty()) co_await store_.forward(std::move(batch.away));
  for (auto& r : batch.jobs) {
    Arrival a;
    a.from = this;
    a.ticket = r.token;
    a.attempt = r.job ? r.attempt : 0;
    a.max_attempts = r.max_attempts;
    a.id = r.id;
    a.invalid = r.invalid;
    a.job = std::move(r.job);
    hold(r);
    const std::uint64_t ticket = a.ticket;
    const std::string id = a.id;
    std::string failed;
    try {
      if (!sink_.offer(a)) co_await sink_.accept(std::move(a));
    } catch (const std::exception& e) {
      failed = e.what();
    }
    if (!failed.empty()) {
      // A bug met on this job must cost the job (dead, with the reason), not the source.
      spdlog::critical("queue {}: taking in job {} failed: {} (please report this)", q,
                       id.empty() ? std::to_string(ticket) : id, failed);
      Outcome dead;
      dead.end = Outcome::End::failed;
      dead.text = "jobqd failed taking this job in: " + failed;
      dead.kind = job::ErrorKind::invalid_job;
      settle(ticket, std::move(dead), nullptr);
    }
  }
}

// Runs one of the source's loops for good: one that ends by an exception (a bug: they handle
// every failure they know of) is logged and started again, never left dead while the daemon
// looks alive.
async::Task<void> RedisSource::keep(const char* what, async::Task<void> (RedisSource::*loop)()) {
  for (;;) {
    std::string error;
    try {
      co_await (this->*loop)();
      co_return;
    } catch (const std::exception& e) {
      error = e.what();
    }
    spdlog::critical("queue {}: {} failed: {}; starting it again in 1s (please report this)",
                     store_.settings().queue, what, error);
    co_await async::sleep(1s);
  }
}

void RedisSource::set_options(Options o) noexcept {
  options_ = o;
  wake_promoter_.set();  // a shorter poll applies now, not after the longer one ran out
}

void RedisSource::set_taking(bool on) {
  if (on == taking_ev_.is_set()) return;
  if (on) {
    taking_ev_.set();
  } else {
    taking_ev_.clear();
  }
  spdlog::info("queue {}: {} jobs from Redis", store_.settings().queue,
               on ? "taking" : "no longer taking");
}

async::Task<void> RedisSource::stop_taking() {
  taking_ = false;
  for (auto* t : {&fetch_task_, &promote_task_, &recover_task_, &wake_task_, &after_task_}) {
    if (t->valid()) t->cancel();
  }
  for (auto* t : {&fetch_task_, &promote_task_, &recover_task_, &wake_task_, &after_task_}) {
    if (t->valid()) co_await t->wait();
  }
  // Read, not claimed, and never to run here: back to pending.
  store::QueueStore::Waited left;
  left.got = store::Fetched{};
  left.unclaimed = std::move(unclaimed_);
  unclaimed_ = {};
  if (unclaimed_epoch_ == lease_epoch_) {
    give_back_all(left);
  } else {
    for (const auto& r : left.unclaimed.jobs) store_.forget(r.token);
  }
}

async::Task<void> RedisSource::finish(Millis limit) {
  const std::string& q = store_.settings().queue;
  if (lease_task_.valid()) {
    lease_task_.cancel();
    co_await lease_task_.wait();
  }
  if (!holds_.empty()) {
    spdlog::error(
        "queue {}: {} job outcome(s) could not be written to Redis before exiting; the jobs "
        "stay held and another daemon takes them back after {}",
        q, holds_.size(), config::format_duration(lease_));
    co_return;
  }
  OpResult<bool> released = redis::OpError{};
  try {
    released = co_await async::wait_for(store_.release_lease(), limit);
  } catch (const async::TimeoutError&) {
  }
  if (!released.ok() || !*released) spdlog::debug("queue {}: lease left to expire", q);
}

// ---- Delivery ----

void RedisSource::started(std::uint64_t ticket, bool show) {
  auto it = holds_.find(ticket);
  if (it == holds_.end()) return;
  it->second.started_at = std::to_string(store_.redis_now());
  if (show) show_active(ticket);
  // A lock held only while the job waits goes as it starts (`while: [queued]`).
  store::Reading& r = it->second.read;
  if (!r.unique_key.empty() && store_.settings().unique.ends_at_start()) {
    settler_.push(store::held::unlock(r));
    r.unique_key.clear();
  }
}

void RedisSource::show_active(std::uint64_t ticket) {
  auto it = holds_.find(ticket);
  if (it == holds_.end() || it->second.shown) return;
  it->second.shown = true;
  settler_.push(store::held::start(it->second.read, it->second.started_at));
}

void RedisSource::settle(std::uint64_t ticket, Outcome out, store::OnSettled* done) {
  auto it = holds_.find(ticket);
  if (it == holds_.end()) {
    if (done) done->settled(store::Settled::not_held);
    return;
  }
  const Hold h = std::move(it->second);
  holds_.erase(it);
  const store::Reading& r = h.read;
  store::Settlement s;
  switch (out.end) {
    case Outcome::End::succeeded:
      s = store::held::ok(r, h.started_at, std::move(out.text));
      break;
    case Outcome::End::retry: {
      s = store::held::retry(r, h.started_at, std::move(out.text), out.kind, out.delay);
      // Due before the promoter looks next: wake it then.
      const std::int64_t run_at = store::unix_ms() + out.delay.count();
      if (run_at < promoter_due_) {
        promoter_due_ = run_at;
        wake_promoter_.set();
      }
      break;
    }
    case Outcome::End::failed:
      s = store::held::dead(r, h.started_at, std::move(out.text), out.kind);
      break;
    case Outcome::End::cancelled:
      s = store::held::cancel(r, h.started_at, std::move(out.text));
      break;
    case Outcome::End::back:
      s = store::held::back(r);
      break;
  }
  s.notify = done;
  settler_.push(std::move(s));
  // A final end lets go of the job's lock (right behind it: one batch), unless the queue keeps
  // locks for their window (throttle). A retry, or a job given back, keeps it.
  const bool final_end = out.end == Outcome::End::succeeded || out.end == Outcome::End::failed ||
                         out.end == Outcome::End::cancelled;
  if (final_end && !r.unique_key.empty() && store_.settings().unique.ends_with_job()) {
    settler_.push(store::held::unlock(r));
  }
}

void RedisSource::forget(std::uint64_t ticket) noexcept {
  holds_.erase(ticket);
  store_.forget(ticket);
}

// ---- the lease ----

async::Task<async::Clock::time_point> RedisSource::take_lease() {
  // Not before the connection is up: at start it usually is not yet (a sentinel to ask, a TLS
  // handshake), and a first attempt would only fail and be logged as an error. While Redis is
  // down the client logs why.
  co_await store_.client().wait_connected();
  // The lease runs from when Redis ran the script, which is no earlier than this.
  const auto sent = async::Clock::now();
  const auto call =
      store::acquire(store_.keys(), store_.settings().worker, store_.settings().lease);
  (void)co_await store_.until_answered(call, "taking the lease");
  co_return sent;
}

async::Task<void> RedisSource::lease_keeper() {
  const std::string& q = store_.settings().queue;
  auto valid_from = co_await take_lease();
  lease_ok_.set();
  // Renew at a third of the lease: two renewals can fail before it runs out.
  const auto every = std::max<Millis>(lease_ / 3, 50ms);
  async::Every errors(30s);
  for (;;) {
    co_await async::sleep(every);
    // Jobs stop once the lease could run out before another renewal lands: by this daemon's
    // clock, whatever the renewal in flight is doing (a hung connection waits up to the command
    // timeout, which may be longer than that).
    const auto fence_at = valid_from + lease_ - every;
    const auto sent = async::Clock::now();
    enum class Renewal { renewed, expired, unanswered } renewal = Renewal::unanswered;
    const auto left = lease_ok_.is_set() ? fence_at - sent : async::Duration(every);
    if (left > async::Duration::zero()) {
      OpResult<bool> r = redis::OpError{};
      try {
        r = co_await async::wait_for(store_.renew_lease(), left);
      } catch (const async::TimeoutError&) {
      }
      if (r.ok()) {
        renewal = *r ? Renewal::renewed : Renewal::expired;
      } else if (!r.error().connection() && !r.error().message.empty()) {
        if (errors.due())
          spdlog::error("queue {}: cannot renew the lease: {}", q, r.error().message);
        if (r.error().wrong_type()) (void)co_await store_.repair();
      }
    }
    if (renewal == Renewal::renewed) {
      valid_from = sent;
      lease_ok_.set();
      co_await reconcile(every);
      continue;
    }
    if (renewal == Renewal::expired) {
      // Expired (by Redis' clock) or recovered already: whatever we run may be running
      // elsewhere now.
      co_await fence(
          "the lease expired before it could be renewed (the loop stalled, or Redis "
          "was out of reach, for longer than " +
          config::format_duration(lease_) + ")");
      valid_from = co_await take_lease();
      lease_ok_.set();
      co_await reconcile(every);
      continue;
    }
    // Redis out of reach or not answering. Once the lease may run out before the next renewal
    // could land, stop running jobs: another daemon is allowed to take them after the lease,
    // and a job must not run twice at once. They stay held in Redis and go back to pending when
    // we return.
    if (lease_ok_.is_set() && async::Clock::now() >= fence_at) {
      co_await fence("Redis has not confirmed the lease for " +
                     config::format_duration(
                         std::chrono::duration_cast<Millis>(async::Clock::now() - valid_from)) +
                     ", close to the " + config::format_duration(lease_) + " lease");
    }
  }
}

async::Task<void> RedisSource::fence(const std::string& why) {
  lease_ok_.clear();
  ++lease_epoch_;
  spdlog::error(
      "queue {}: {}; stopping this daemon's jobs from Redis so that none runs twice (they go "
      "back to pending, here or through another daemon)",
      store_.settings().queue, why);
  co_await sink_.revoke(*this);
}

async::Task<void> RedisSource::reconcile(Millis limit) {
  OpResult<store::Recovered> r = redis::OpError{};
  try {
    r = co_await async::wait_for(store_.reconcile(), limit);
  } catch (const async::TimeoutError&) {
  }
  if (!r.ok()) {
    spdlog::debug("queue {}: reconcile skipped: {}", store_.settings().queue, r.error().message);
    co_return;
  }
  if (r->returned || r->dead) {
    spdlog::warn(
        "queue {}: {} job(s) held in Redis under this daemon were unknown to it (a fetch reply "
        "lost with the connection, jobs stopped when the lease was in doubt, or writes Redis "
        "forgot in a restart); returned them to pending ({} dead on their last attempt)",
        store_.settings().queue, r->returned + r->dead, r->dead);
  }
}

// ---- recovery, bounds and promotion ----

async::Task<void> RedisSource::recoverer() {
  const std::string& q = store_.settings().queue;
  const auto every = std::clamp<Millis>(lease_ / 2, 50ms, 30s);
  async::Every errors(30s);
  for (;;) {
    Millis wait = every;
    OpResult<store::Expired> r = co_await store_.recover_expired();
    if (r.ok()) {
      // Look again as soon as the next lease runs out, so that a dead worker's jobs run again
      // within the lease, not up to half a lease later.
      if (r->next_in) wait = std::clamp<Millis>(*r->next_in, 10ms, every);
    } else if (r.error().connection()) {
      co_await store_.client().wait_connected();
      continue;
    } else {
      if (errors.due()) spdlog::error("queue {}: lease recovery failed: {}", q, r.error().message);
      if (r.error().wrong_type()) (void)co_await store_.repair();
    }
    // The dead jobs' bounds: now and then, and soon after a batch that had deaths.
    OpResult<long long> trimmed = co_await store_.trim_dead();
    (void)trimmed;
    if (settler_.take_deaths()) wait = std::min<Millis>(wait, 1s);
    co_await async::sleep(wait);
  }
}

async::Task<void> RedisSource::promoter() {
  const std::string& q = store_.settings().queue;
  async::Every errors(30s);
  for (;;) {
    Millis wait = options_.delayed_poll;
    OpResult<store::Due> p = co_await store_.promote();
    if (p.ok() && p->levels > 0) {
      if (store_.settings().order.on()) {
        // The wait for jobs watches pending alone: jobs in a priority list end it (submitters
        // that push there directly are seen within this poll; jobqctl's wake at once).
        co_await wake();
      } else {
        // No priorities here: such jobs run in pending's order instead of waiting for ever.
        const auto fold = store::fold(store_.keys(), 1000);
        OpResult<long long> moved = co_await store::run(store_.client(), fold);
        if (!moved.ok() && errors.due()) {
          spdlog::error("queue {}: moving jobs of the priority lists into pending failed: {}", q,
                        moved.error().message);
        }
        // Garbage at a priority list (a stray SET): moved aside, as at any other key of the queue.
        if (!moved.ok() && moved.error().wrong_type()) (void)co_await store_.repair();
      }
    }
    if (p.ok() && p->after_work) after_work_.set();
    if (p.ok() && p->grouped) {
      // Jobs left in groups' lists (group_by was removed from this queue): this daemon reads
      // pending alone; they go back there instead of waiting for ever.
      OpResult<long long> moved = co_await store_.ungroup();
      if (moved.ok() && *moved > 0) {
        spdlog::warn(
            "queue {}: moved {} job(s) left in the lists of groups back to pending (the queue "
            "has no group_by now; every daemon of a queue should have the same)",
            q, *moved);
      } else if (!moved.ok()) {
        if (errors.due()) {
          spdlog::error("queue {}: moving jobs left in groups back to pending failed: {}", q,
                        moved.error().message);
        }
        if (moved.error().wrong_type()) (void)co_await store_.repair();
      }
    }
    if (p.ok()) {
      if (p->jobs.size() >= 1000) {
        wait = 0ms;  // more are due
      } else if (p->next_in) {
        wait = std::clamp<Millis>(*p->next_in, 0ms, options_.delayed_poll);
      }
    } else if (p.error().connection()) {
      co_await store_.client().wait_connected();
      continue;
    } else {
      if (errors.due()) {
        spdlog::error("queue {}: moving due delayed jobs failed: {}", q, p.error().message);
      }
      if (p.error().wrong_type()) (void)co_await store_.repair();
    }
    promoter_due_ = store::unix_ms() + wait.count();
    wake_promoter_.clear();
    try {
      co_await async::wait_for(wake_promoter_.wait(), wait);
    } catch (const async::TimeoutError&) {
    }
  }
}

// ---- jobs that wait for others (docs/workflows.md) ----

async::Task<void> RedisSource::enter_waiting(store::Reading& r) {
  OpResult<store::WaitAnswer> said = co_await store_.enter_waiting(r);
  if (said.ok() && *said == store::WaitAnswer::taken) {
    settler_.push(store::held::wait(r));
  } else if (!said.ok()) {
    // Unknown whether it moved: it stays held here without running; reconcile returns it to
    // pending if it did not, and it is read again. Garbage at one of the keys it needs is moved
    // aside first, or it would fail the same way each time.
    store_.forget(r.token);
    if (said.error().wrong_type()) (void)co_await store_.repair();
    if (fetch_errors_.due()) {
      spdlog::error("queue {}: job {} could not begin to wait for what it names: {}",
                    store_.settings().queue, r.id, said.error().message);
    }
  }
}

async::Task<void> RedisSource::after_keeper() {
  // Woken by a settle that told waiting jobs through the outbox, and by the due poll when there
  // is work (outcomes left by a daemon that died, a passed after_timeout, a half registration).
  const std::string& q = store_.settings().queue;
  async::Every errors(30s);
  for (;;) {
    after_work_.clear();
    co_await after_work_.wait();
    for (;;) {
      OpResult<std::size_t> n = co_await store_.deliver_outcomes(kOutcomesPerDrain);
      if (n.ok() && *n >= kOutcomesPerDrain) continue;
      if (n.ok()) {
        n = co_await store_.after_upkeep(kOutcomesPerDrain);
        if (n.ok() && *n >= kOutcomesPerDrain) continue;
      }
      if (!n.ok()) {
        if (n.error().connection()) {
          co_await store_.client().wait_connected();
          continue;
        }
        if (errors.due()) {
          spdlog::error("queue {}: telling waiting jobs how their dependencies ended failed: {}", q,
                        n.error().message);
        }
        if (n.error().wrong_type()) (void)co_await store_.repair();
      }
      break;
    }
  }
}

async::Task<void> RedisSource::wake() {
  // During a wait, the wait ends (and the fetch behind it looks at every list); before the fetch
  // loop's next wait, it skips that one. Not both: a flag left set after a wait it ended would
  // cost a fetch for nothing before the next wait.
  if (store_.waiting()) {
    co_await store_.unblock();
  } else {
    woken_ = true;
  }
}

async::Task<void> RedisSource::waker() {
  // A queue with priorities waits for jobs on pending alone (Redis has no wait on several lists
  // that leaves the job where it is): a submission to a priority's list publishes a wake, and a
  // wait going on ends at once. A wake lost with its connection is made up for by the delayed
  // poll, which also looks at the lists (promoter). Only such a queue keeps this connection.
  for (;;) {
    while (!store_.settings().order.on()) co_await async::sleep(1s);  // a reload may turn it on
    try {
      redis::ConnectOptions options = store_.blocking().connect_options();
      // On a cluster: the node of the queue's slot, where submit.lua asks who listens.
      options.route = store_.keys().pending;
      auto conn = co_await redis::Connection::open(options);
      const redis::Reply ok = co_await conn->command("SUBSCRIBE", store_.keys().wake);
      if (ok.is_error()) throw redis::ConnectionError("SUBSCRIBE answered " + ok.str);
      while (conn->alive() && store_.settings().order.on()) {
        try {
          co_await async::wait_for(conn->message_came().wait(), 1s);
        } catch (const async::TimeoutError&) {
        }
        const bool woken = !conn->messages().empty();
        conn->messages().clear();
        conn->message_came().clear();
        if (!woken) continue;
        co_await wake();
      }
    } catch (const redis::ConnectionError&) {
      // Redis away: the fetch loop says so; the poll covers the wakes meanwhile.
    }
    co_await async::sleep(1s);
  }
}

}  // namespace jq::sources
