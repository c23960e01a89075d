// The Redis source: the fetch loop, the lease (upkeep, fence, reconcile), recovery, promotion,
// and the Delivery calls that become batched settlements.
#include "sources/redis_source.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "config/units.hpp"
#include "job/id.hpp"

namespace jq::sources {
namespace {

using namespace std::chrono_literals;

// How long one blocking wait lasts; short enough that a dead connection is noticed by its
// command timeout (this plus the client's) without keepalives.
constexpr auto kBlock = 2s;
constexpr auto kLogEvery = 30s;

bool wrong_type(const std::string& error) {
  return error.find("WRONGTYPE") != std::string::npos;
}

}  // namespace

RedisSource::RedisSource(redis::Client& main, redis::Client& blocking, store::Settings settings,
                         Sink& sink, Options options)
    : main_(main),
      blocking_(blocking),
      store_(main, blocking, std::move(settings)),
      writer_(main, store_),
      sink_(sink),
      options_(options),
      lease_(store_.settings().lease) {
  fetching_.set();
}

RedisSource::~RedisSource() {
  // Tasks refer to this object: stop them where they stand (stop_taking/finish are the graceful
  // way).
  for (auto* t : {&fetch_task_, &promote_task_, &recover_task_, &lease_task_}) {
    if (t->valid()) t->abort();
  }
  if (fetch_.valid()) fetch_.abort();
}

void RedisSource::start() {
  const std::string& q = store_.settings().queue;
  writer_.start();
  lease_task_ = async::spawn(keep("the lease keeper", &RedisSource::lease_keeper), "lease " + q);
  recover_task_ = async::spawn(keep("lease recovery", &RedisSource::recoverer), "recover " + q);
  promote_task_ =
      async::spawn(keep("delayed job promotion", &RedisSource::promoter), "promote " + q);
  fetch_task_ = async::spawn(keep("fetching", &RedisSource::fetcher), "redis source " + q);
}

// ---- fetching ----

async::Task<void> RedisSource::fetcher() {
  const std::string& q = store_.settings().queue;
  auto last_log = async::Clock::now() - kLogEvery;
  // Set when the last fetch found fewer jobs than it asked for: the next one waits for pending
  // first, on the blocking connection.
  bool wait_first = false;
  for (;;) {
    co_await lease_ok_.wait();
    co_await fetching_.wait();
    // Fetch in batches, not a job at a time as room frees.
    co_await sink_.wait_room(options_.fetch_batch);
    if (!taking_) co_return;
    std::size_t n = std::min(sink_.room(), options_.fetch_batch);
    if (n == 0) continue;
    const bool waits = wait_first;
    store::QueueStore::Waited got;
    std::string error;
    bool down = false;
    bool stopped = false;
    // The fetch runs as a task of its own: if this source is stopped while the reply is on its
    // way, the jobs it leased still arrive, and go back to pending instead of being held by
    // nobody until the lease expires.
    fetch_ = async::spawn(fetch_next(n, waits), "fetch " + q);
    try {
      got = co_await fetch_;
    } catch (const async::Cancelled&) {
      stopped = true;
    } catch (const redis::ConnectionError&) {
      down = true;
    } catch (const std::exception& e) {
      // A reply error, or a reply of an unexpected shape: the source keeps going (a queue that
      // silently stops fetching is the worst failure there is).
      error = e.what();
    }
    if (stopped) {
      // A fetch waiting for jobs runs as soon as the wait ends: end it now, not in kBlock.
      if (store_.waiting()) co_await store_.unblock();
      co_await fetch_.wait();  // cancellation is delivered once: this wait is not interrupted
      auto late = fetch_.take_result();
      if (late.ok() && late.value().got) give_back_all(*late.value().got);
      throw async::Cancelled{};
    }
    if (!error.empty()) {
      auto now = async::Clock::now();
      if (now - last_log >= kLogEvery) {
        last_log = now;
        spdlog::error("queue {}: fetching jobs failed: {}", q, error);
      }
      co_await repair_if_wrong_type(error);
      co_await async::sleep(1s);
      continue;
    }
    if (down) {
      if (waits) {
        co_await blocking_.wait_connected();
      } else {
        co_await main_.wait_connected();
      }
      co_await async::sleep(50ms);
      continue;
    }
    if (!got.got) {
      // The lease is gone or expired: the lease keeper takes a new one and sets lease_ok.
      lease_ok_.clear();
      continue;
    }
    store::FetchBatch& batch = *got.got;
    if (batch.paused) {
      // Paused in Redis, and the queue has not read it yet (it does within kPausePoll): look
      // again shortly, not in a loop.
      wait_first = false;
      co_await async::sleep(100ms);
      continue;
    }
    const std::size_t taken = batch.jobs.size() + static_cast<std::size_t>(batch.waiting);
    wait_first = taken < n;
    if (waits && (sink_.room() == 0 || !fetching_.is_set())) {
      // The fetch ran when its wait ended, and the queue stopped wanting jobs meanwhile (full,
      // stopping, or no longer fed from Redis; a pause the fetch saw itself).
      give_back_all(batch);
      continue;
    }
    if (!batch.jobs.empty()) fetch_sizes_.observe(static_cast<double>(batch.jobs.size()));
    co_await hand_over(std::move(batch));
    if (!got.wait_error.empty()) {
      // CLIENT UNBLOCK ... ERROR, a failover (-UNBLOCKED), a wrong type: wait again shortly.
      auto now = async::Clock::now();
      if (now - last_log >= kLogEvery) {
        last_log = now;
        spdlog::warn("queue {}: waiting for jobs failed: {}", q, got.wait_error);
      }
      co_await repair_if_wrong_type(got.wait_error);
      co_await async::sleep(100ms);
    }
  }
}

async::Task<store::QueueStore::Waited> RedisSource::fetch_next(std::size_t n, bool wait) {
  // Not a coroutine itself: store_.waiting() is true from here on, for a stop right after.
  if (wait) return store_.fetch_when_pending(n, kBlock);
  return plain_fetch(n);
}

async::Task<store::QueueStore::Waited> RedisSource::plain_fetch(std::size_t n) {
  store::QueueStore::Waited w;
  w.got = co_await store_.fetch(n);
  co_return w;
}

void RedisSource::give_back_all(const store::FetchBatch& batch) {
  // Newest first onto the consuming end: the oldest is again the next one taken. Their states
  // go back to queued, the attempt not counted.
  for (auto it = batch.jobs.rbegin(); it != batch.jobs.rend(); ++it) {
    give_back(it->token, it->id, nullptr);
  }
}

async::Task<void> RedisSource::hand_over(store::FetchBatch batch) {
  const auto& s = store_.settings();
  for (auto& f : batch.jobs) {
    Arrival a;
    a.from = this;
    a.ticket = f.token;
    a.attempt = f.attempt;
    a.id = std::move(f.id);
    if (f.oversized) {
      a.invalid = "job is " + std::to_string(f.oversized) + " bytes, over max_job_bytes (" +
                  std::to_string(s.max_job_bytes) + ")";
    } else {
      a.raw = std::move(f.raw);
    }
    const std::uint64_t ticket = a.ticket;
    const std::string id = a.id;
    const bool started = a.attempt > 0;
    std::string failed;
    try {
      if (!sink_.offer(a)) co_await sink_.accept(std::move(a));
    } catch (const std::exception& e) {
      failed = e.what();
    }
    if (!failed.empty()) {
      // A bug met on this job must cost the job (dead, with the reason), not the source.
      spdlog::critical("queue {}: taking in job {} failed: {} (please report this)", s.queue,
                       id.empty() ? std::to_string(ticket) : id, failed);
      dead(ticket, id, started, "jobqd failed taking this job in: " + failed,
           job::ErrorKind::invalid_job, nullptr);
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

async::Task<void> RedisSource::repair_if_wrong_type(const std::string& error) {
  if (!wrong_type(error)) co_return;
  try {
    co_await store_.repair();
  } catch (const std::exception& e) {
    spdlog::error("queue {}: cannot move foreign values off the queue's keys: {}",
                  store_.settings().queue, e.what());
  }
}

void RedisSource::retune(const store::Settings& s) {
  store_.settings().retune(s);
}

void RedisSource::set_options(Options o) noexcept {
  options_ = o;
  wake_promoter_.set();  // a shorter poll applies now, not after the longer one ran out
}

void RedisSource::set_fetching(bool on) {
  if (on == fetching_.is_set()) return;
  if (on) {
    fetching_.set();
  } else {
    fetching_.clear();
  }
  spdlog::info("queue {}: {} jobs from Redis", store_.settings().queue,
               on ? "taking" : "no longer taking");
}

async::Task<void> RedisSource::stop_taking() {
  taking_ = false;
  for (auto* t : {&fetch_task_, &promote_task_, &recover_task_}) {
    if (t->valid()) t->cancel();
  }
  for (auto* t : {&fetch_task_, &promote_task_, &recover_task_}) {
    if (t->valid()) co_await t->wait();
  }
}

async::Task<void> RedisSource::finish(Millis limit) {
  const std::string& q = store_.settings().queue;
  bool written = co_await writer_.flush(limit);
  if (lease_task_.valid()) {
    lease_task_.cancel();
    co_await lease_task_.wait();
  }
  if (!written) {
    spdlog::error(
        "queue {}: could not write {} job outcome(s) to Redis before exiting; the jobs stay "
        "leased and another daemon takes them back after {}",
        q, writer_.backlog(), config::format_duration(lease_));
  } else {
    bool released = false;
    try {
      released = co_await async::wait_for(store_.release_lease(), 2s);
    } catch (const std::exception&) {
    }
    if (!released) spdlog::debug("queue {}: lease left to expire", q);
  }
  co_await writer_.stop();
}

// ---- Delivery ----

void RedisSource::succeed(std::uint64_t ticket, const std::string& id, long long attempt,
                          std::string result, store::Recorded* done) {
  store::Settlement s;
  s.op = store::Settlement::Op::ok;
  s.attempt = attempt;
  s.token = ticket;
  s.id = id;
  s.text = std::move(result);
  s.notify = done;
  writer_.push(std::move(s));
}

void RedisSource::retry(std::uint64_t ticket, const std::string& id, Millis delay,
                        std::string error, job::ErrorKind kind, store::Recorded* done) {
  store::Settlement s;
  s.op = store::Settlement::Op::retry;
  s.token = ticket;
  s.id = id;
  s.text = std::move(error);
  s.kind = kind;
  s.delay = delay;
  s.notify = done;
  writer_.push(std::move(s));
  // Due before the promoter looks next: wake it then.
  std::int64_t run_at = store::unix_ms() + delay.count();
  if (run_at < promoter_due_) {
    promoter_due_ = run_at;
    wake_promoter_.set();
  }
}

void RedisSource::dead(std::uint64_t ticket, const std::string& id, bool started, std::string error,
                       job::ErrorKind kind, store::Recorded* done) {
  store::Settlement s;
  s.op = store::Settlement::Op::dead;
  s.token = ticket;
  s.id = id;
  s.text = std::move(error);
  s.kind = kind;
  if (!started) s.fresh_id = job::new_id();
  s.notify = done;
  writer_.push(std::move(s));
}

void RedisSource::cancel(std::uint64_t ticket, const std::string& id, std::string error,
                         store::Recorded* done) {
  store::Settlement s;
  s.op = store::Settlement::Op::cancel;
  s.token = ticket;
  s.id = id;
  s.text = std::move(error);
  s.kind = job::ErrorKind::cancelled;
  s.notify = done;
  writer_.push(std::move(s));
}

void RedisSource::give_back(std::uint64_t ticket, const std::string& id, store::Recorded* done) {
  store::Settlement s;
  s.op = store::Settlement::Op::back;
  s.token = ticket;
  s.id = id;
  s.notify = done;
  writer_.push(std::move(s));
}

// ---- the lease ----

async::Task<async::Clock::time_point> RedisSource::take_lease() {
  auto last_log = async::Clock::now() - kLogEvery;
  for (;;) {
    std::string error;
    // The lease runs from when Redis ran the script, which is no earlier than this.
    const auto sent = async::Clock::now();
    try {
      co_await store_.register_lease();
      co_return sent;
    } catch (const redis::ConnectionError&) {
    } catch (const std::exception& e) {
      error = e.what();
    }
    if (!error.empty() && async::Clock::now() - last_log >= kLogEvery) {
      last_log = async::Clock::now();
      spdlog::error("queue {}: cannot take a lease: {}", store_.settings().queue, error);
    }
    co_await repair_if_wrong_type(error);
    co_await main_.wait_connected();
    co_await async::sleep(200ms);
  }
}

async::Task<void> RedisSource::lease_keeper() {
  const std::string& q = store_.settings().queue;
  auto valid_from = co_await take_lease();
  lease_ok_.set();
  // Renew at a third of the lease: two renewals can fail before it runs out.
  const auto every = std::max<Millis>(lease_ / 3, 50ms);
  for (;;) {
    co_await async::sleep(every);
    // Jobs stop once the lease could run out before another renewal lands: by this daemon's
    // clock, whatever the renewal in flight is doing (a hung connection waits up to the command
    // timeout, which may be longer than that).
    const auto fence_at = valid_from + lease_ - every;
    const auto sent = async::Clock::now();
    enum class Renewal { renewed, expired, unanswered } renewal = Renewal::unanswered;
    const auto left = lease_ok_.is_set() ? fence_at - sent : async::Duration(every);
    std::string error;
    if (left > async::Duration::zero()) {
      try {
        bool ok = co_await async::wait_for(store_.renew_lease(), left);
        renewal = ok ? Renewal::renewed : Renewal::expired;
      } catch (const redis::ConnectionError&) {
      } catch (const async::TimeoutError&) {
      } catch (const std::exception& e) {
        error = e.what();
        spdlog::error("queue {}: cannot renew the lease: {}", q, error);
      }
    }
    co_await repair_if_wrong_type(error);
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
  spdlog::error(
      "queue {}: {}; stopping this daemon's jobs from Redis so that none runs twice (they go "
      "back to pending, here or through another daemon)",
      store_.settings().queue, why);
  co_await sink_.revoke(*this);
}

async::Task<void> RedisSource::reconcile(Millis limit) {
  try {
    auto r = co_await async::wait_for(store_.reconcile(), limit);
    if (r.returned || r.dead) {
      spdlog::warn(
          "queue {}: {} job(s) held in Redis under this daemon were unknown to it (a fetch reply "
          "lost with the connection, jobs stopped when the lease was in doubt, or writes Redis "
          "forgot in a restart); returned them to pending ({} dead on their last attempt)",
          store_.settings().queue, r.returned + r.dead, r.dead);
    }
  } catch (const std::exception& e) {
    spdlog::debug("queue {}: reconcile skipped: {}", store_.settings().queue, e.what());
  }
}

// ---- recovery and promotion ----

async::Task<void> RedisSource::recoverer() {
  const std::string& q = store_.settings().queue;
  const auto every = std::clamp<Millis>(lease_ / 2, 50ms, 30s);
  for (;;) {
    bool down = false;
    Millis wait = every;
    std::string error;
    try {
      auto r = co_await store_.recover();
      if (r.returned || r.dead) {
        std::string who;
        for (const auto& w : r.workers) who += (who.empty() ? "" : ", ") + w;
        spdlog::warn(
            "queue {}: lease of {} expired; returned {} job(s) to pending, {} on their last "
            "attempt are dead (error_kind lost)",
            q, who, r.returned, r.dead);
      }
      // Look again as soon as the next lease runs out, so that a dead worker's jobs run again
      // within the lease, not up to half a lease later.
      if (r.next_expiry_in) wait = std::clamp<Millis>(*r.next_expiry_in, 10ms, every);
    } catch (const redis::ConnectionError&) {
      down = true;
    } catch (const std::exception& e) {
      error = e.what();
      spdlog::error("queue {}: lease recovery failed: {}", q, error);
    }
    if (down) {
      co_await main_.wait_connected();
      continue;
    }
    co_await repair_if_wrong_type(error);
    co_await async::sleep(wait);
  }
}

async::Task<void> RedisSource::promoter() {
  const std::string& q = store_.settings().queue;
  for (;;) {
    store::Promoted p;
    bool down = false;
    std::string error;
    try {
      p = co_await store_.promote();
    } catch (const redis::ConnectionError&) {
      down = true;
    } catch (const std::exception& e) {
      error = e.what();
      spdlog::error("queue {}: moving due delayed jobs failed: {}", q, error);
    }
    if (down) {
      co_await main_.wait_connected();
      continue;
    }
    co_await repair_if_wrong_type(error);
    Millis wait = options_.delayed_poll;
    if (p.moved >= 1000) {
      wait = 0ms;  // more are due
    } else if (p.next_in) {
      wait = std::clamp<Millis>(*p.next_in, 0ms, options_.delayed_poll);
    }
    promoter_due_ = store::unix_ms() + wait.count();
    wake_promoter_.clear();
    try {
      co_await async::wait_for(wake_promoter_.wait(), wait);
    } catch (const async::TimeoutError&) {
    }
  }
}

}  // namespace jq::sources
