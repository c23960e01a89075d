// The queue runner: admission, dispatch, each job's attempt and end, and the graceful stop.
#include "engine/queue_runner.hpp"

#include <spdlog/spdlog.h>

#include <cmath>
#include <random>

#include "config/units.hpp"
#include "job/id.hpp"
#include "job/text.hpp"
#include "sources/redis_source.hpp"
#include "sources/spool_source.hpp"
#include "store/scripts.hpp"

namespace jq::engine {
namespace {

using namespace std::chrono_literals;
using Phase = JobRun::Phase;

// Jobs whose end waits to be written, at most (beyond the concurrency): enough to keep Redis
// busy with large batches, little enough to hold in memory.
constexpr std::size_t kMinUnrecorded = 1000;
// How long writing out what is left may take at a stop, after the grace.
constexpr auto kFlushLimit = 10s;
// How often the pause flag is read: `jobqctl pause` takes effect within this.
constexpr auto kPausePoll = 1s;

store::Settings settings_of(const config::QueueConfig& q, const config::DaemonSection& d,
                            const QueueRunner::Wiring& w) {
  store::Settings s;
  s.prefix = w.prefix;
  s.queue = q.name;
  s.worker = w.worker;
  s.default_handler = q.handler;
  s.max_job_bytes = q.max_job_bytes;
  s.lease = d.lease;
  s.keep_succeeded = q.retain.succeeded;
  s.dead_max = q.dead_max;
  s.dead_ttl = q.retain.failed;
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
      daemon_(daemon),
      w_(std::move(w)),
      buffer_(cfg_.buffer),
      slots_(cfg_.concurrency),
      unrecorded_(std::max<std::size_t>(kMinUnrecorded, 2 * cfg_.concurrency)) {
  rules_.default_handler = cfg_.handler;
  rules_.handlers = &w_.handler_names;
  rules_.max_bytes = cfg_.max_job_bytes;
  idle_.set();
  for (const auto& src : cfg_.sources) sources_.push_back(make_source(src));
}

QueueRunner::SourceSlot QueueRunner::make_source(const config::SourceConfig& src) {
  SourceSlot slot;
  slot.cfg = src;
  if (src.kind == config::SourceConfig::Kind::spool) {
    sources::SpoolSource::Options o;
    o.dir.dir = src.dir;
    // Its own work folder and lock: one made by a reload may run beside the one it replaces.
    o.dir.owner = spool_made_ == 0 ? w_.worker : w_.worker + "-" + std::to_string(spool_made_);
    o.dir.pattern = src.pattern;
    o.dir.ignore = src.ignore;
    o.dir.keep_done = src.keep_done;
    o.dir.recursive = src.recursive;
    o.dir.max_job_bytes = cfg_.max_job_bytes;
    o.quiet = src.quiet;
    auto spool = std::make_unique<sources::SpoolSource>(w_.main, settings_of(cfg_, daemon_, w_),
                                                        rules_, *this, std::move(o));
    slot.delivery = spool.get();
    slot.spool = spool.get();
    slot.source = std::move(spool);
    return slot;
  }
  sources::RedisSource::Options o;
  o.fetch_batch = cfg_.fetch_batch;
  o.delayed_poll = cfg_.delayed_poll;
  auto redis = std::make_unique<sources::RedisSource>(w_.main, w_.blocking,
                                                      settings_of(cfg_, daemon_, w_), *this, o);
  redis_ = redis.get();
  slot.delivery = redis.get();
  slot.source = std::move(redis);
  return slot;
}

QueueRunner::~QueueRunner() {
  // Tasks refer to this object: stop them where they stand (stop() is the graceful way).
  if (dispatch_task_.valid()) dispatch_task_.abort();
  if (pause_task_.valid()) pause_task_.abort();
  for (auto& t : retiring_) {
    if (t.valid()) t.abort();
  }
  for (auto& [id, run] : runs_) {
    if (run->task.valid()) run->task.abort();
  }
  sources_.clear();  // their tasks, before the runs they would tell
  runs_.clear();
}

void QueueRunner::start() {
  started_ = true;
  pause_task_ = async::spawn(watch_control(), "control " + cfg_.name);
  for (auto& s : sources_) s.source->start();
  dispatch_task_ = async::spawn(dispatcher(), "dispatch " + cfg_.name);
}

async::Task<void> QueueRunner::watch_control() {
  const store::Keys keys(w_.prefix, cfg_.name);
  const std::string registry = store::Keys::registry(w_.prefix);
  const std::vector<std::string> control_keys{keys.paused, keys.cancels}, control_args{keys.base};
  bool known = false, registered = false;
  auto last_error_log = async::Clock::now() - 1min;
  for (;;) {
    std::optional<bool> now;
    std::string error;
    if (!registered) {
      // Once per start: the queue is in the registry jobqctl lists queues from. Apart from the
      // flag: garbage at the registry's key must not keep the queue paused.
      try {
        redis::Reply added = co_await w_.main.command("SADD", registry, cfg_.name);
        registered = true;
        if (added.is_error()) {
          spdlog::error("queue {}: cannot add it to {} (jobqctl queues lists queues from it): {}",
                        cfg_.name, registry, added.str);
        }
      } catch (const std::exception&) {
        // Redis away: again next time.
      }
    }
    bool down = false;
    std::vector<std::string> cancels;
    try {
      redis::Reply r = co_await store::scripts::control().run(w_.main, control_keys, control_args);
      r.check();
      if (!r.is_array() || r.elements.empty()) throw redis::ReplyError("control: " + r.describe());
      now = r.elements[0].integer > 0;
      for (std::size_t i = 1; i < r.elements.size(); ++i) cancels.push_back(r.elements[i].str);
    } catch (const redis::ConnectionError&) {
      // Redis away: the flag stays as it was (nothing is fetched meanwhile anyway).
      down = true;
    } catch (const std::exception& e) {
      error = e.what();
    }
    if (down) {
      // Read again as soon as it is back, not a second later: at the start the queue counts as
      // paused until this read, and a job pushed meanwhile would wait for it.
      co_await w_.main.wait_connected();
      co_await async::sleep(10ms);  // never a busy loop, whatever the connection does
      continue;
    }
    if (!error.empty() && async::Clock::now() - last_error_log >= 1min) {
      last_error_log = async::Clock::now();
      spdlog::error("queue {}: cannot read the pause flag {} and cancel requests {}: {}", cfg_.name,
                    keys.paused, keys.cancels, error);
    }
    if (!cancels.empty()) cancel_held(cancels);
    if (now && (*now != paused_ || !known)) {
      if (*now) {
        spdlog::info("queue {}: paused (jobqctl resume {} to go on); running jobs finish",
                     cfg_.name, cfg_.name);
      } else if (known) {
        spdlog::info("queue {}: resumed", cfg_.name);
      }
      paused_ = *now;
      known = true;
      room_.set();
    }
    co_await async::sleep(kPausePoll);
  }
}

void QueueRunner::cancel_held(const std::vector<std::string>& ids) {
  std::vector<JobRun*> buffered;
  for (const auto& id : ids) {
    auto it = runs_.find(id);
    if (it == runs_.end()) continue;
    JobRun& run = *it->second;
    if (run.phase() == Phase::buffered) {
      buffered.push_back(&run);
    } else if (run.phase() == Phase::running && run.stop == JobRun::Stop::none) {
      spdlog::info("queue {}: job {}: cancelled while running; stopping it", cfg_.name, id);
      run.stop = JobRun::Stop::cancelled;
      run.task.cancel();  // run_job records it as cancelled once its handler has stopped
    }
  }
  if (buffered.empty()) return;
  // Out of the buffer; the others keep their place.
  for (JobRun* run : buffer_.drain()) {
    if (std::find(buffered.begin(), buffered.end(), run) == buffered.end()) buffer_.restore(run);
  }
  room_.set();
  for (JobRun* run : buffered) {
    spdlog::info("queue {}: job {}: cancelled before it ran", cfg_.name, run->id());
    ++stats_.cancelled;
    run->set_phase(Phase::recording);
    run->delivery().cancel(run->from().ticket, run->id(),
                           "cancelled by jobqctl cancel before it ran (attempt " +
                               std::to_string(run->attempt()) + ")",
                           run);
    (void)async::spawn(until_settled(*run, async::Permit()), "cancel " + cfg_.name);
  }
}

std::vector<QueueRunner::SpoolView> QueueRunner::spools() const {
  std::vector<SpoolView> out;
  for (const auto& slot : sources_) {
    if (slot.spool)
      out.push_back({slot.spool->dir(), slot.spool->waiting(), slot.spool->claimed()});
  }
  return out;
}

void QueueRunner::forget_run(const std::string& id) {
  runs_.erase(id);
  run_gone_.set();
  run_gone_.clear();
}

// ---- reload ----

void QueueRunner::reconfigure(const config::QueueConfig& next,
                              const config::DaemonSection& daemon) {
  const config::QueueConfig was = cfg_;
  cfg_ = next;
  daemon_ = daemon;
  rules_.default_handler = cfg_.handler;
  rules_.max_bytes = cfg_.max_job_bytes;
  slots_.set_limit(cfg_.concurrency);
  unrecorded_.set_limit(std::max<std::size_t>(kMinUnrecorded, 2 * cfg_.concurrency));
  buffer_.set_maxsize(cfg_.buffer);
  room_.set();
  if (was.concurrency != cfg_.concurrency || was.buffer != cfg_.buffer) {
    spdlog::info("queue {}: concurrency {} (was {}), buffer {} (was {})", cfg_.name,
                 cfg_.concurrency, was.concurrency, cfg_.buffer, was.buffer);
  }
  if (was.handler != cfg_.handler) {
    spdlog::info("queue {}: jobs without a handler of their own now run on {} (was {})", cfg_.name,
                 cfg_.handler, was.handler);
  }

  // Sources. A spool source stays if nothing it was made from changed (it reads max_job_bytes
  // on the thread pool: a new value means a new source).
  using Kind = config::SourceConfig::Kind;
  auto listed = [&](const SourceSlot& slot) {
    for (const auto& src : cfg_.sources) {
      if (src.kind == Kind::spool && config::same(src, slot.cfg)) return true;
    }
    return false;
  };
  std::vector<SourceSlot> kept;
  for (auto& slot : sources_) {
    if (slot.cfg.kind == Kind::redis || (listed(slot) && was.max_job_bytes == cfg_.max_job_bytes)) {
      kept.push_back(std::move(slot));
      continue;
    }
    spdlog::info("queue {}: spool dir {}: letting go (its running jobs finish first)", cfg_.name,
                 slot.cfg.dir);
    retiring_.push_back(async::spawn(retire(std::move(slot)), "retire source " + cfg_.name));
  }
  sources_ = std::move(kept);
  bool want_redis = false;
  for (const auto& src : cfg_.sources) {
    bool have = false;
    for (const auto& slot : sources_) {
      have = have || (src.kind == Kind::redis
                          ? slot.cfg.kind == Kind::redis
                          : slot.cfg.kind == Kind::spool && config::same(slot.cfg, src));
    }
    want_redis = want_redis || src.kind == Kind::redis;
    if (have) continue;
    if (src.kind == Kind::spool) ++spool_made_;
    sources_.push_back(make_source(src));
    if (started_) sources_.back().source->start();
    if (src.kind == Kind::spool) {
      spdlog::info("queue {}: spool dir {}: taking files", cfg_.name, src.dir);
    }
  }
  const auto settings = settings_of(cfg_, daemon_, w_);
  for (auto& slot : sources_) slot.source->retune(settings);
  if (redis_) {
    redis_->set_options({cfg_.fetch_batch, cfg_.delayed_poll});
    redis_->set_fetching(want_redis);
  }
  // Done retirements leave their handles here; drop those.
  std::erase_if(retiring_, [](const async::JoinHandle<void>& t) { return t.done(); });
}

async::Task<void> QueueRunner::retire(SourceSlot slot) {
  co_await slot.source->stop_taking();
  // Its buffered jobs go back newest first; the others keep their place.
  std::vector<JobRun*> mine;
  for (JobRun* run : buffer_.drain()) {
    if (&run->delivery() == slot.delivery) {
      mine.push_back(run);
    } else {
      buffer_.restore(run);
    }
  }
  give_back(mine);
  room_.set();
  // Its running jobs finish (each within its timeout), and their ends are written.
  auto any_left = [&] {
    for (const auto& [id, run] : runs_) {
      if (&run->delivery() == slot.delivery) return true;
    }
    return false;
  };
  while (any_left()) co_await run_gone_.wait();
  co_await slot.source->finish(kFlushLimit);
  spdlog::info("queue {}: spool dir {}: let go", cfg_.name, slot.cfg.dir);
}

// ---- arrival ----

async::Task<void> QueueRunner::wait_room(std::size_t at_least) {
  const std::size_t want =
      std::max<std::size_t>(1, std::min(at_least, std::max<std::size_t>(1, cfg_.buffer / 2)));
  while (!stopping_ && (paused_ || buffer_.room() < want)) {
    room_.clear();
    co_await room_.wait();
  }
}

bool QueueRunner::offer(sources::Arrival& a) {
  // A job the source could not read is invalid, so it never needs room: only check for others.
  if (a.attempt > 0 && a.invalid.empty() && (stopping_ || buffer_.full())) return false;
  JobRun* run = admit(std::move(a));
  if (run && !buffer_.try_put(run)) {
    // Cannot happen (room was checked, and only the dispatcher takes): never lose it anyway.
    spdlog::error("queue {}: job {} found the buffer full after all; giving it back", cfg_.name,
                  run->id());
    run->set_phase(Phase::recording);
    run->delivery().give_back(run->from().ticket, run->id(), run);
    (void)async::spawn(until_settled(*run, async::Permit()), "give back " + cfg_.name);
  }
  return true;
}

async::Task<void> QueueRunner::accept(sources::Arrival a) {
  for (;;) {
    if (offer(a)) co_return;
    if (stopping_) {
      // Arrived too late to run: back to where it came from, untouched.
      a.from->give_back(a.ticket, a.id, nullptr);
      co_return;
    }
    co_await buffer_.wait_room();
  }
}

// Parses the job and takes it in: a valid one is returned (for the buffer); an invalid one is
// recorded dead at once, and nullptr returned.
JobRun* QueueRunner::admit(sources::Arrival a) {
  std::unique_ptr<JobRun> run;
  if (a.invalid.empty()) {
    std::variant<job::Job, job::Invalid> parsed;
    try {
      parsed = job::parse(a.raw, rules_);
    } catch (const std::exception& e) {
      // parse() returns what it finds wrong; anything it throws is a bug, which must cost this
      // job (dead, with the reason), never the source that handed it over.
      parsed = job::Invalid{std::string("jobqd could not read this job: ") + e.what(), ""};
    }
    if (auto* bad = std::get_if<job::Invalid>(&parsed)) {
      std::string id = a.id.empty() ? bad->id : a.id;
      run = std::make_unique<JobRun>(cfg_.name, std::move(a), std::move(id), std::move(bad->error));
    } else {
      run =
          std::make_unique<JobRun>(cfg_.name, std::move(a), std::get<job::Job>(std::move(parsed)));
    }
  } else {
    std::string error = a.invalid;
    std::string id = a.id;
    run = std::make_unique<JobRun>(cfg_.name, std::move(a), std::move(id), std::move(error));
  }
  if (run->id().empty() || runs_.count(run->id())) {
    if (run->valid() && !run->id().empty()) {
      // The source lets one job of an id be in flight at a time: two here means it lost track
      // (Redis forgot writes in a restart). Leave it to the source's own recovery.
      spdlog::error(
          "queue {}: job {} arrived while another job with that id is in flight here; leaving "
          "it to be returned to pending by reconciliation",
          cfg_.name, run->id());
      run->delivery().forget(run->from().ticket);
      return nullptr;
    }
    // An invalid job whose id (or none) is in use: it is recorded under a fresh one.
    sources::Arrival from = run->from();
    std::string error = run->invalid_reason();
    run = std::make_unique<JobRun>(cfg_.name, std::move(from), job::new_id(), std::move(error));
  }
  JobRun& r = *run;
  runs_.emplace(r.id(), std::move(run));
  if (r.valid()) {
    const auto& job = r.job();
    r.handler = w_.handlers.at(job.handler);
    r.handlers_generation = w_.handlers_generation;
    r.max_attempts = static_cast<long long>(
        std::min<std::uint64_t>(job.max_attempts.value_or(cfg_.max_attempts), cfg_.max_attempts));
    // Capped while still unsigned: a huge timeout_ms must not wrap into a negative duration.
    r.timeout = job.timeout_ms
                    ? Millis(static_cast<Millis::rep>(std::min<std::uint64_t>(
                          *job.timeout_ms, static_cast<std::uint64_t>(cfg_.max_timeout.count()))))
                    : std::min(cfg_.timeout, cfg_.max_timeout);
    r.set_phase(Phase::buffered);
    return &r;
  }
  ++stats_.invalid;
  spdlog::warn("queue {}: invalid job {} is dead: {}", cfg_.name, r.id(), r.invalid_reason());
  r.set_phase(Phase::recording);
  r.delivery().dead(r.from().ticket, r.id(), r.attempt() > 0, r.invalid_reason(),
                    job::ErrorKind::invalid_job, &r);
  (void)async::spawn(until_settled(r, async::Permit()), "invalid job " + cfg_.name);
  return nullptr;
}

// ---- dispatch and attempts ----

async::Task<void> QueueRunner::dispatcher() {
  for (;;) {
    auto unrecorded = co_await unrecorded_.acquire();
    auto slot = co_await slots_.acquire();
    auto item = co_await buffer_.get();
    if (!item) co_return;
    room_.set();
    JobRun& run = **item;
    // The handler its name has now, if a reload replaced the handlers while the job was
    // buffered (one a reload removed: the one it was taken in with).
    if (run.handlers_generation != w_.handlers_generation) {
      if (auto h = w_.handlers.find(run.job().handler); h != w_.handlers.end()) {
        run.handler = h->second;
      }
    }
    run.set_phase(Phase::running);
    ++running_;
    idle_.clear();
    run.task =
        async::spawn(run_job(run, std::move(slot), std::move(unrecorded)), "job " + cfg_.name);
  }
}

async::Task<handlers::Outcome> QueueRunner::attempt(JobRun& run) {
  handlers::Run r{run.job(), cfg_.name, run.attempt(), run.timeout, run.from().file, ""};
  handlers::Outcome out;
  try {
    out = co_await async::wait_for(run.handler->run(r), run.timeout);
  } catch (const async::TimeoutError&) {
    out = handlers::Outcome::failure(
        job::ErrorKind::timeout,
        r.stopped.empty() ? "timed out after " + std::to_string(run.timeout.count()) + " ms"
                          : r.stopped);
  } catch (const std::exception& e) {
    out = handlers::Outcome::failure(job::ErrorKind::exception, e.what());
  } catch (const async::Cancelled&) {
    throw;
  } catch (...) {
    out = handlers::Outcome::failure(job::ErrorKind::exception,
                                     "unknown exception (not a std::exception)");
  }
  // The handler got the claimed file; the user knows the one they dropped.
  out.show_path_as(r.file, run.from().dropped);
  co_return out;
}

async::Task<void> QueueRunner::run_job(JobRun& run, async::Permit slot, async::Permit unrecorded) {
  run.started_ms = store::unix_ms();
  handlers::Outcome out;
  bool stopped = false;
  if (run.attempt() > run.max_attempts) {
    // Only reachable if a previous attempt's worker died and nobody marked it: fail it now.
    out = handlers::Outcome::failure(
        job::ErrorKind::lost,
        "attempt " + std::to_string(run.attempt()) + " exceeds max_attempts " +
            std::to_string(run.max_attempts) + " (an earlier attempt's worker died)",
        false);
  } else {
    try {
      out = co_await attempt(run);
    } catch (const async::Cancelled&) {
      stopped = true;
    }
  }
  slot.release();  // the next job may start while this one's end is written
  --running_;
  if (running_ == 0) idle_.set();
  run_ended_.set();
  run_ended_.clear();
  if (!stopped) {
    settle(run, std::move(out));
  } else if (run.stop == JobRun::Stop::cancelled) {
    ++stats_.cancelled;
    const auto took = store::unix_ms() - run.started_ms;
    durations_.observe(static_cast<double>(took) / 1000.0);
    spdlog::info("queue {}: job {} cancelled after {} ms (attempt {})", cfg_.name, run.id(), took,
                 run.attempt());
    run.set_phase(Phase::recording);
    run.delivery().cancel(run.from().ticket, run.id(),
                          "cancelled by jobqctl cancel while running (attempt " +
                              std::to_string(run.attempt()) + ", stopped after " +
                              std::to_string(took) + " ms)",
                          &run);
  } else if (run.stop == JobRun::Stop::revoked) {
    // The source lost its hold on the job (its lease): it is someone else's now.
    run.delivery().forget(run.from().ticket);
    run.set_phase(Phase::done);
    forget_run(run.id());
    co_return;
  } else {
    // A stop: back to where it came from, as it was.
    ++stats_.returned;
    run.set_phase(Phase::recording);
    run.delivery().give_back(run.from().ticket, run.id(), &run);
  }
  co_await until_settled(run, std::move(unrecorded));
}

void QueueRunner::settle(JobRun& run, handlers::Outcome out) {
  const auto took = store::unix_ms() - run.started_ms;
  durations_.observe(static_cast<double>(took) / 1000.0);
  const auto& id = run.id();
  auto& to = run.delivery();
  const auto ticket = run.from().ticket;
  run.set_phase(Phase::recording);
  if (out.ok) {
    ++stats_.succeeded;
    spdlog::debug("queue {}: job {} succeeded in {} ms (attempt {})", cfg_.name, id, took,
                  run.attempt());
    // A program's output or a server's body may be any bytes: everything jobqd writes (and
    // logs) is valid UTF-8, so clients that decode it never break on a job's state.
    to.succeed(ticket, id, run.attempt(), job::to_utf8(std::move(out.result)), &run);
    return;
  }
  out.error = job::to_utf8(std::move(out.error));
  const auto kind = job::to_string(out.kind);
  if (out.retry && run.attempt() < run.max_attempts) {
    Millis delay = backoff(run.attempt());
    if (out.retry_after) delay = std::max(delay, std::min(*out.retry_after, cfg_.retry_max));
    ++stats_.retried;
    spdlog::debug("queue {}: job {} failed (attempt {} of {}, {}): {}; retrying in {} ms",
                  cfg_.name, id, run.attempt(), run.max_attempts, kind, out.error, delay.count());
    to.retry(ticket, id, delay, std::move(out.error), out.kind, &run);
    return;
  }
  ++stats_.dead;
  spdlog::warn("queue {}: job {} failed for good (attempt {} of {}, {}): {}", cfg_.name, id,
               run.attempt(), run.max_attempts, kind, out.error);
  to.dead(ticket, id, true, std::move(out.error), out.kind, &run);
}

async::Task<void> QueueRunner::until_settled(JobRun& run, async::Permit unrecorded) {
  co_await run.settled().wait();
  if (run.written() == store::Written::renamed) {
    spdlog::warn(
        "queue {}: invalid job {} is recorded under a fresh id: {} belongs to a job "
        "that is not over",
        cfg_.name, run.id(), run.id());
  }
  run.set_phase(Phase::done);
  forget_run(run.id());  // `run` is gone from here
  unrecorded.release();
}

Millis QueueRunner::backoff(long long attempt) const {
  // retry_base doubled per attempt, capped, plus up to 25% jitter so retries of a burst spread.
  double base = static_cast<double>(cfg_.retry_base.count());
  double d = base * std::pow(2.0, static_cast<double>(std::min<long long>(attempt - 1, 40)));
  d = std::min(d, static_cast<double>(cfg_.retry_max.count()));
  return Millis(static_cast<long long>(d * (1.0 + jitter())));
}

// ---- stopping ----

void QueueRunner::give_back(const std::vector<JobRun*>& buffered) {
  // Newest first, so that the oldest is again the next one taken.
  for (auto it = buffered.rbegin(); it != buffered.rend(); ++it) {
    JobRun& run = **it;
    ++stats_.returned;
    run.set_phase(Phase::recording);
    run.delivery().give_back(run.from().ticket, run.id(), &run);
    (void)async::spawn(until_settled(run, async::Permit()), "give back " + cfg_.name);
  }
}

void QueueRunner::stop_running(JobRun::Stop why, const sources::Delivery* only) {
  for (auto& [id, run] : runs_) {
    if (run->phase() != Phase::running) continue;
    if (only && &run->delivery() != only) continue;
    // Being cancelled already: it ends as cancelled, unless its source lost it meanwhile.
    if (run->stop == JobRun::Stop::cancelled && why != JobRun::Stop::revoked) continue;
    run->stop = why;
    run->task.cancel();
  }
}

async::Task<void> QueueRunner::revoke(sources::Delivery& from) {
  // Buffered: out of the buffer and forgotten. The others go back in, in their order.
  std::size_t n = 0;
  for (JobRun* run : buffer_.drain()) {
    if (&run->delivery() != &from) {
      buffer_.restore(run);
      continue;
    }
    from.forget(run->from().ticket);
    run->set_phase(Phase::done);
    forget_run(run->id());
    ++n;
  }
  room_.set();
  // Running: stopped, then forgotten by run_job.
  stop_running(JobRun::Stop::revoked, &from);
  auto still_running = [&] {
    for (auto& [id, run] : runs_) {
      if (run->phase() == Phase::running && &run->delivery() == &from) return true;
    }
    return false;
  };
  while (still_running()) co_await run_ended_.wait();
  spdlog::debug("queue {}: revoked {} buffered job(s)", cfg_.name, n);
}

void QueueRunner::hurry() {
  if (stopping_) stop_running(JobRun::Stop::shutdown);
}

async::Task<void> QueueRunner::stop(Millis grace) {
  stopping_ = true;
  room_.set();
  if (pause_task_.valid()) pause_task_.cancel();
  for (auto& s : sources_) co_await s.source->stop_taking();
  if (dispatch_task_.valid()) {
    dispatch_task_.cancel();
    co_await dispatch_task_.wait();
  }
  give_back(buffer_.drain());
  if (running_ > 0) {
    spdlog::info("queue {}: waiting up to {} for {} running job(s)", cfg_.name,
                 config::format_duration(grace), running_);
    bool finished = true;
    try {
      co_await async::wait_for(idle_.wait(), grace);
    } catch (const async::TimeoutError&) {
      finished = false;
    }
    if (!finished) {
      spdlog::warn("queue {}: stopping {} job(s) still running after {}; they go back to pending",
                   cfg_.name, running_, config::format_duration(grace));
      stop_running(JobRun::Stop::shutdown);
      co_await idle_.wait();
    }
  }
  for (auto& s : sources_) co_await s.source->finish(kFlushLimit);
  // Sources a reload dropped: their jobs have ended too (or were stopped above).
  for (auto& t : retiring_) {
    if (t.valid()) co_await t.wait();
  }
}

}  // namespace jq::engine
