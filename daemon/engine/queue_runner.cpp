// The queue runner: lease upkeep, recovery, delayed promotion, dispatch, and each job's life.
#include "engine/queue_runner.hpp"

#include <spdlog/spdlog.h>

#include <random>

#include "config/units.hpp"
#include "job/id.hpp"
#include "job/text.hpp"

namespace jq::engine {
namespace {

using namespace std::chrono_literals;

store::Settings settings_of(const config::QueueConfig& q, const config::DaemonSection& d,
                            const QueueRunner::Wiring& w) {
  store::Settings s;
  s.prefix = w.prefix;
  s.queue = q.name;
  s.worker = w.worker;
  s.max_job_bytes = q.max_job_bytes;
  s.lease = d.lease;
  s.result_ttl = q.result_ttl;
  s.dead_max = q.dead_max;
  s.dead_ttl = q.dead_ttl;
  s.max_attempts = q.max_attempts;
  return s;
}

double jitter() {
  thread_local std::minstd_rand rng{std::random_device{}()};
  return std::uniform_real_distribution<double>(0.0, 0.25)(rng);
}

}  // namespace

QueueRunner::QueueRunner(const config::QueueConfig& cfg, const config::DaemonSection& daemon,
                         Wiring w)
    : cfg_(cfg),
      lease_(daemon.lease),
      w_(std::move(w)),
      store_(w_.main, w_.blocking, settings_of(cfg_, daemon, w_)),
      writer_(w_.main, store_.keys(), store_.settings(),
              [this](const std::string& token) { store_.released(token); }),
      buffer_(cfg_.buffer),
      slots_(cfg_.concurrency),
      source_(store_, buffer_, w_.main, w_.blocking, lease_ok_, cfg_.fetch_batch,
              [this](store::Leased l) { writer_.put_back(l.token, "", false); }) {
  rules_.default_handler = cfg_.handler;
  rules_.handlers = &w_.handler_names;
  rules_.max_bytes = cfg_.max_job_bytes;
  idle_.set();
}

QueueRunner::~QueueRunner() {
  // Tasks refer to this object: stop them where they stand (stop() is the graceful way).
  auto running = std::move(running_);
  running_.clear();
  for (auto& [serial, h] : running) h.abort();
  for (auto* t : {&dispatch_task_, &source_task_, &promote_task_, &recover_task_, &lease_task_}) {
    if (t->valid()) t->abort();
  }
}

void QueueRunner::start() {
  writer_.start();
  lease_task_ = async::spawn(lease_keeper(), "lease " + cfg_.name);
  recover_task_ = async::spawn(recoverer(), "recover " + cfg_.name);
  promote_task_ = async::spawn(promoter(), "promote " + cfg_.name);
  source_task_ = async::spawn(source_.run(), "redis source " + cfg_.name);
  dispatch_task_ = async::spawn(dispatcher(), "dispatch " + cfg_.name);
}

async::Task<async::Clock::time_point> QueueRunner::take_lease() {
  auto last_log = async::Clock::now() - 30s;
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
    if (!error.empty() && async::Clock::now() - last_log >= 30s) {
      last_log = async::Clock::now();
      spdlog::error("queue {}: cannot take a lease: {}", cfg_.name, error);
    }
    co_await w_.main.wait_connected();
    co_await async::sleep(200ms);
  }
}

async::Task<void> QueueRunner::lease_keeper() {
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
    if (left > async::Duration::zero()) {
      try {
        bool ok = co_await async::wait_for(store_.renew_lease(), left);
        renewal = ok ? Renewal::renewed : Renewal::expired;
      } catch (const redis::ConnectionError&) {
      } catch (const async::TimeoutError&) {
      } catch (const std::exception& e) {
        spdlog::error("queue {}: cannot renew the lease: {}", cfg_.name, e.what());
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

async::Task<void> QueueRunner::fence(const std::string& why) {
  lease_ok_.clear();
  lease_lost_ = true;
  std::size_t n = running_.size() + buffer_.size();
  spdlog::error(
      "queue {}: {}; stopping this daemon's {} job(s) so that none runs twice (they "
      "go back to pending, here or through another daemon)",
      cfg_.name, why, n);
  for (auto& l : buffer_.drain()) store_.released(l.token);
  cancel_running();
  co_await idle_.wait();
  lease_lost_ = false;
}

async::Task<void> QueueRunner::reconcile(Millis limit) {
  try {
    auto r = co_await async::wait_for(store_.reconcile(), limit);
    if (r.returned || r.dead) {
      spdlog::warn(
          "queue {}: {} job(s) held in Redis under this daemon were unknown to it (a "
          "fetch reply lost with the connection, or writes Redis forgot in a restart); "
          "returned them to pending ({} dead on their last attempt)",
          cfg_.name, r.returned + r.dead, r.dead);
    }
  } catch (const std::exception& e) {
    spdlog::debug("queue {}: reconcile skipped: {}", cfg_.name, e.what());
  }
}

async::Task<void> QueueRunner::recoverer() {
  const auto every = std::clamp<Millis>(lease_ / 2, 50ms, 30s);
  for (;;) {
    bool down = false;
    Millis wait = every;
    try {
      auto r = co_await store_.recover();
      if (r.returned || r.dead) {
        std::string who;
        for (const auto& w : r.workers) who += (who.empty() ? "" : ", ") + w;
        spdlog::warn(
            "queue {}: lease of {} expired; returned {} job(s) to pending, {} on their last "
            "attempt are dead (error_kind lost)",
            cfg_.name, who, r.returned, r.dead);
      }
      // Look again as soon as the next lease runs out, so that a dead worker's jobs run again
      // within the lease, not up to half a lease later.
      if (r.next_expiry_in) wait = std::clamp<Millis>(*r.next_expiry_in, 10ms, every);
    } catch (const redis::ConnectionError&) {
      down = true;
    } catch (const std::exception& e) {
      spdlog::error("queue {}: lease recovery failed: {}", cfg_.name, e.what());
    }
    if (down) {
      co_await w_.main.wait_connected();
      continue;
    }
    co_await async::sleep(wait);
  }
}

async::Task<void> QueueRunner::promoter() {
  for (;;) {
    store::Promoted p;
    bool down = false;
    try {
      p = co_await store_.promote();
    } catch (const redis::ConnectionError&) {
      down = true;
    } catch (const std::exception& e) {
      spdlog::error("queue {}: moving due delayed jobs failed: {}", cfg_.name, e.what());
    }
    if (down) {
      co_await w_.main.wait_connected();
      continue;
    }
    Millis wait = cfg_.delayed_poll;
    if (p.moved >= 1000) {
      wait = 0ms;  // more are due
    } else if (p.next_in) {
      wait = std::clamp<Millis>(*p.next_in, 0ms, cfg_.delayed_poll);
    }
    promoter_due_ = store::unix_ms() + wait.count();
    wake_promoter_.clear();
    try {
      co_await async::wait_for(wake_promoter_.wait(), wait);
    } catch (const async::TimeoutError&) {
    }
  }
}

async::Task<void> QueueRunner::dispatcher() {
  for (;;) {
    auto permit = co_await slots_.acquire();
    auto leased = co_await buffer_.get();
    if (!leased) co_return;
    std::uint64_t serial = next_serial_++;
    idle_.clear();
    running_.emplace(serial, async::spawn(run_job(std::move(*leased), std::move(permit), serial),
                                          "job " + cfg_.name));
  }
}

async::Task<handlers::Outcome> QueueRunner::attempt(const job::Job& job, long long n,
                                                    Millis timeout) {
  auto& handler = *w_.handlers.at(job.handler);
  handlers::Run run{job, cfg_.name, n, timeout, "", ""};
  handlers::Outcome out;
  try {
    out = co_await async::wait_for(handler.run(run), timeout);
  } catch (const async::TimeoutError&) {
    out = handlers::Outcome::failure(
        "timeout", run.stopped.empty()
                       ? "timed out after " + std::to_string(timeout.count()) + " ms"
                       : run.stopped);
  } catch (const std::exception& e) {
    out = handlers::Outcome::failure("exception", e.what());
  } catch (const async::Cancelled&) {
    throw;
  } catch (...) {
    out = handlers::Outcome::failure("exception", "unknown exception (not a std::exception)");
  }
  co_return out;
}

async::Task<void> QueueRunner::run_job(store::Leased l, async::Permit permit,
                                       std::uint64_t serial) {
  // Whatever way this ends, the job leaves the running set (and the slot frees with the permit).
  struct Leave {
    QueueRunner* self;
    std::uint64_t serial;
    ~Leave() {
      self->running_.erase(serial);
      if (self->running_.empty()) self->idle_.set();
    }
  } leave{this, serial};

  if (l.oversized) {
    ++stats_.invalid;
    std::string id = job::valid_id(l.oversized_id) ? l.oversized_id : job::new_id();
    std::string error = "job is " + std::to_string(l.oversized) + " bytes, over max_job_bytes (" +
                        std::to_string(cfg_.max_job_bytes) + ")";
    spdlog::warn("queue {}: invalid job {} is dead: {}", cfg_.name, id, error);
    writer_.dead(l.token, id, std::move(error), "invalid_job", cfg_.handler);
    co_return;
  }
  auto parsed = job::parse(l.raw, rules_);
  if (auto* bad = std::get_if<job::Invalid>(&parsed)) {
    ++stats_.invalid;
    std::string id = bad->id.empty() ? job::new_id() : bad->id;
    spdlog::warn("queue {}: invalid job {} is dead: {}", cfg_.name, id, bad->error);
    writer_.dead(l.token, id, std::move(bad->error), "invalid_job", cfg_.handler);
    co_return;
  }
  job::Job& job = std::get<job::Job>(parsed);
  const long long max = static_cast<long long>(
      std::min<std::uint64_t>(job.max_attempts.value_or(cfg_.max_attempts), cfg_.max_attempts));
  // Capped while still unsigned: a huge timeout_ms must not wrap into a negative duration.
  const Millis timeout =
      job.timeout_ms ? Millis(static_cast<Millis::rep>(std::min<std::uint64_t>(
                           *job.timeout_ms, static_cast<std::uint64_t>(cfg_.max_timeout.count()))))
                     : std::min(cfg_.timeout, cfg_.max_timeout);

  bool cancelled = false;
  long long n = -1;
  handlers::Outcome out;
  std::int64_t started = store::unix_ms();
  // Named, not a ternary inside the co_await: GCC 12 relocates such a temporary bitwise.
  std::string normalized = job.id_assigned ? job.raw : std::string();
  try {
    n = co_await writer_.start_job(l.token, job.id, job.handler, std::move(normalized),
                                   l.fetched_at);
    if (n > 0 && n <= max) out = co_await attempt(job, n, timeout);
  } catch (const async::Cancelled&) {
    cancelled = true;
  }
  permit.release();  // the slot is free as soon as the attempt is over
  if (cancelled) {
    if (lease_lost_) {
      // Fenced: the job stays held in Redis and goes back to pending by recovery (another
      // daemon) or by our reconcile, once the lease situation is clear.
      store_.released(l.token);
    } else {
      // A stop: the job goes back as it was.
      writer_.put_back(l.token, job.id, /*started=*/true);
      ++stats_.returned;
    }
    throw async::Cancelled{};
  }
  if (n < 0) {
    // Not started: the lease had run out, another daemon recovered the job, or Redis refused the
    // write. Forget the token: if Redis still has the job under this worker, reconcile returns
    // it to pending once the lease is sorted out; otherwise it is no longer ours.
    store_.released(l.token);
    co_return;
  }
  if (n > max) {
    // Only reachable if a previous attempt's worker died and nobody marked it: fail it now.
    out =
        handlers::Outcome::failure("lost",
                                   "attempt " + std::to_string(n) + " exceeds max_attempts " +
                                       std::to_string(max) + " (an earlier attempt's worker died)",
                                   false);
  }
  record(l, job, n, max, std::move(out), started);
}

void QueueRunner::record(const store::Leased& l, const job::Job& job, long long attempt,
                         long long max, handlers::Outcome out, std::int64_t started) {
  auto took = store::unix_ms() - started;
  // A program's output or a server's body may be any bytes: everything jobqd writes (and logs)
  // is valid UTF-8, so clients that decode it never break on a job's state.
  out.result = job::to_utf8(std::move(out.result));
  out.error = job::to_utf8(std::move(out.error));
  if (out.ok) {
    ++stats_.succeeded;
    spdlog::debug("queue {}: job {} succeeded in {} ms (attempt {})", cfg_.name, job.id, took,
                  attempt);
    writer_.succeeded(l.token, job.id, std::move(out.result));
    return;
  }
  if (out.retry && attempt < max) {
    Millis delay = backoff(attempt);
    if (out.retry_after) delay = std::max(delay, std::min(*out.retry_after, cfg_.retry_max));
    std::int64_t run_at = store::unix_ms() + delay.count();
    ++stats_.retried;
    spdlog::debug("queue {}: job {} failed (attempt {} of {}): {}; retrying in {} ms", cfg_.name,
                  job.id, attempt, max, out.error, delay.count());
    writer_.retry(l.token, job.id, delay, std::move(out.error), out.kind);
    if (run_at < promoter_due_) {
      promoter_due_ = run_at;
      wake_promoter_.set();
    }
    return;
  }
  ++stats_.dead;
  spdlog::info("queue {}: job {} failed for good (attempt {} of {}): {}", cfg_.name, job.id,
               attempt, max, out.error);
  writer_.dead(l.token, job.id, std::move(out.error), out.kind, job.handler);
}

Millis QueueRunner::backoff(long long attempt) const {
  // retry_base doubled per attempt, capped, plus up to 25% jitter so retries of a burst spread.
  double base = static_cast<double>(cfg_.retry_base.count());
  double d = base * std::pow(2.0, static_cast<double>(std::min<long long>(attempt - 1, 40)));
  d = std::min(d, static_cast<double>(cfg_.retry_max.count()));
  return Millis(static_cast<long long>(d * (1.0 + jitter())));
}

void QueueRunner::cancel_running() {
  for (auto& [serial, h] : running_) h.cancel();
}

void QueueRunner::return_buffered() {
  auto held = buffer_.drain();  // oldest first
  // Back to the consuming end newest first, so the oldest is again the next one taken.
  for (auto it = held.rbegin(); it != held.rend(); ++it) {
    writer_.put_back(it->token, "", false);
    ++stats_.returned;
  }
}

void QueueRunner::hurry() {
  if (stopping_) cancel_running();
}

async::Task<void> QueueRunner::stop(Millis grace) {
  stopping_ = true;
  for (auto* t : {&source_task_, &promote_task_, &recover_task_, &dispatch_task_}) {
    if (t->valid()) t->cancel();
  }
  for (auto* t : {&source_task_, &promote_task_, &recover_task_, &dispatch_task_}) {
    if (t->valid()) co_await t->wait();
  }
  return_buffered();
  if (!running_.empty()) {
    spdlog::info("queue {}: waiting up to {} for {} running job(s)", cfg_.name,
                 config::format_duration(grace), running_.size());
    bool finished = true;
    try {
      co_await async::wait_for(idle_.wait(), grace);
    } catch (const async::TimeoutError&) {
      finished = false;
    }
    if (!finished) {
      spdlog::warn("queue {}: stopping {} job(s) still running after {}; they go back to pending",
                   cfg_.name, running_.size(), config::format_duration(grace));
      cancel_running();
      co_await idle_.wait();
    }
  }
  if (lease_task_.valid()) {
    lease_task_.cancel();
    co_await lease_task_.wait();
  }
  bool written = co_await writer_.flush(10s);
  if (!written) {
    spdlog::error(
        "queue {}: could not write {} job state change(s) to Redis before exiting; "
        "the jobs stay leased and another daemon takes them back after {}",
        cfg_.name, writer_.backlog(), config::format_duration(lease_));
  } else {
    bool released = false;
    try {
      released = co_await async::wait_for(store_.release_lease(), 2s);
    } catch (const std::exception&) {
    }
    if (!released) spdlog::debug("queue {}: lease left to expire", cfg_.name);
  }
  co_await writer_.stop();
}

}  // namespace jq::engine
