// The queue runner: admission, dispatch, each job's attempt and end, control, and the stop.
#include "engine/queue_runner.hpp"

#include <spdlog/spdlog.h>

#include <cmath>
#include <random>

#include "config/units.hpp"
#include "job/id.hpp"
#include "job/text.hpp"
#include "sources/factory.hpp"
#include "store/admin.hpp"
#include "store/shards.hpp"
#include "store/views.hpp"

namespace jq::engine {
namespace {

using namespace std::chrono_literals;
using Phase = JobRun::Phase;
using End = sources::Outcome::End;

// Jobs whose end waits to be written, at most (beyond the concurrency): enough to keep Redis
// busy with large batches, little enough to hold in memory.
constexpr std::size_t kMinUnsettled = 1000;
// How long writing out what is left may take at a stop, after the grace, at most (as long as
// the grace, at least a second).
constexpr Millis kFlushLimit = 10s;
// How often the pause flag is read: `jobqctl pause` takes effect within this.
constexpr auto kControlPoll = 1s;

double jitter() {
  thread_local std::minstd_rand rng{std::random_device{}()};
  return std::uniform_real_distribution<double>(0.0, 0.25)(rng);
}

}  // namespace

store::Settings settings_of(const config::QueueConfig& q, const config::DaemonSection& d,
                            const config::StateSection& state, const std::string& prefix,
                            const std::string& worker, std::size_t shard) {
  static_assert(config::kMaxShards == store::kMaxShards);
  store::Settings s;
  s.shard = shard;
  s.shards = q.shards;
  s.prefix = prefix;
  s.queue = q.name;
  s.worker = worker;
  s.default_handler = q.handler;
  s.max_job_bytes = q.max_job_bytes;
  s.lease = d.lease;
  s.keep_succeeded = q.retain.succeeded;
  s.retain_payload = q.retain.payload;
  // The bound is the queue's: each shard keeps its share.
  s.dead_max = (q.dead_max + q.shards - 1) / q.shards;
  s.dead_ttl = q.retain.failed;
  s.max_attempts = q.max_attempts;
  s.active_after = state.active_after;
  // Each shard's bucket takes its share of the queue's rate and burst.
  s.rate = store::rate_share(q.rate_per_s, q.rate_burst, q.shards);
  // And of the global concurrency (each shard at least one slot).
  if (q.global_concurrency > 0) {
    s.global_slots = std::max<std::uint64_t>(1, q.global_concurrency / q.shards);
  }
  s.unique = store::unique_rule(q.unique);
  if (q.priorities_set) {
    const auto& p = q.priorities;
    s.order.mode = p.order == "strict" ? store::Order::Mode::strict : store::Order::Mode::weighted;
    s.order.weights = {static_cast<std::uint32_t>(p.high), static_cast<std::uint32_t>(p.normal),
                       static_cast<std::uint32_t>(p.low)};
    s.order.aging = p.aging;
  }
  // group_by: every group within its own rate and concurrency (a queue of one shard).
  s.groups.path = q.group_by.path;
  s.groups.rate = store::rate_share(q.group_by.rate_per_s, q.group_by.rate_burst);
  s.groups.slots = q.group_by.concurrency;
  s.after_timeout = q.after_timeout;
  return s;
}

QueueRunner::QueueRunner(const config::QueueConfig& cfg, const config::DaemonSection& daemon,
                         Wiring w)
    : cfg_(cfg),
      daemon_(daemon),
      w_(std::move(w)),
      store_(*w_.stores.at(0)),
      buffer_(cfg_.buffer),
      slots_(cfg_.concurrency),
      share_(w_.daemon_permits, static_cast<unsigned>(cfg_.weight)),
      unsettled_(std::max<std::size_t>(kMinUnsettled, 2 * cfg_.concurrency)) {
  idle_.set();
  for (auto* store : w_.stores) {
    shards_.push_back({store, std::make_unique<store::Settler>(*store)});
  }
  for (const auto& src : cfg_.sources) {
    for (auto& slot : make_sources(src)) sources_.push_back(std::move(slot));
  }
}

std::vector<QueueRunner::SourceSlot> QueueRunner::make_sources(const config::SourceConfig& src) {
  std::vector<SourceSlot> out;
  // A spool source is one; a Redis source fetches from every shard, each on its own.
  const std::size_t n = src.kind == config::SourceConfig::Kind::redis ? shards_.size() : 1;
  for (std::size_t k = 0; k < n; ++k) {
    SourceSlot slot;
    slot.cfg = src;
    slot.shard = k;
    // Its own work folder and lock: one made by a reload may run beside the one it replaces.
    std::string owner =
        spool_made_ == 0 ? w_.worker : w_.worker + "-" + std::to_string(spool_made_);
    Shard& shard = shards_[k];
    sources::SourceContext ctx{*shard.store, *shard.settler,   shard.store->rules(),
                               *this,        std::move(owner), {}};
    for (auto& each : shards_) ctx.settlers.push_back(each.settler.get());
    slot.source = sources::make_source(src, cfg_, ctx);
    out.push_back(std::move(slot));
  }
  return out;
}

QueueRunner::~QueueRunner() {
  // Tasks refer to this object: stop them where they stand (stop() is the graceful way).
  for (auto* t : {&dispatch_task_, &control_task_, &active_task_, &progress_task_}) {
    if (t->valid()) t->abort();
  }
  for (auto& t : retiring_) {
    if (t.valid()) t.abort();
  }
  for (auto& [id, run] : runs_) {
    if (run->task.valid()) run->task.abort();
  }
  sources_.clear();  // their tasks, before the settler they push to
}

void QueueRunner::start() {
  started_ = true;
  control_task_ = async::spawn(watch_control(), "control " + cfg_.name);
  active_task_ = async::spawn(show_active(), "active " + cfg_.name);
  progress_task_ = async::spawn(watch_progress(), "progress " + cfg_.name);
  for (auto& shard : shards_) shard.settler->start();
  for (auto& s : sources_) s.source->start();
  dispatch_task_ = async::spawn(dispatcher(), "dispatch " + cfg_.name);
}

async::Task<store::OpResult<store::Depths>> QueueRunner::depths(redis::Router& via) const {
  store::Depths sum;
  for (const auto& shard : shards_) {
    const store::Keys& keys = shard.store->keys();
    const auto call = store::depths(keys, shard.store->settings().rate);
    store::OpResult<store::Depths> d = co_await store::run(via.client(keys.base), call);
    if (!d.ok()) co_return d;
    store::add_depths(sum, *d);
  }
  co_return sum;
}

const store::BatchHistogram* QueueRunner::fetch_sizes() const noexcept {
  for (const auto& slot : sources_) {
    if (const auto* h = slot.source->fetch_sizes()) return h;
  }
  return nullptr;
}

sources::HeldBack QueueRunner::held_back() const noexcept {
  sources::HeldBack sum;
  for (const auto& slot : sources_) {
    const sources::HeldBack h = slot.source->held_back();
    sum.rate += h.rate;
    sum.cap += h.cap;
    sum.group += h.group;
  }
  return sum;
}

std::optional<store::QueueStore::GroupView> QueueRunner::group_view() const {
  if (cfg_.group_by.key.empty() || shards_.empty()) return std::nullopt;
  return shards_.front().store->group_view();
}

std::uint64_t QueueRunner::duplicates() const noexcept {
  std::uint64_t n = refused_;
  for (const auto& slot : sources_) n += slot.source->duplicates();
  return n;
}

std::optional<double> QueueRunner::last_fetch_age() const {
  std::optional<async::Clock::time_point> last;
  for (const auto& slot : sources_) {
    if (auto t = slot.source->last_fetch(); t && (!last || *t > *last)) last = t;
  }
  if (!last) return std::nullopt;
  return std::chrono::duration<double>(async::Clock::now() - *last).count();
}

// The watchdog on progress, not on connections: a connection can look alive and bring nothing
// (a blocked wait a failover forgot, a fetch refused on every try). A queue that could take jobs
// (not paused, room in its buffer), has some pending in Redis, and fetched none for stall_after
// is stalled: said once per episode, shown by /healthz, and its connections are rebuilt (again
// every stall_after while it lasts). Each shard on its own: one shard's fetches must not hide
// another's stall.
async::Task<void> QueueRunner::watch_progress() {
  async::Clock::time_point rebuilt{};
  // Shards found quiet with jobs pending at the last look: a stall is two looks in a row, not a
  // job pushed to an idle shard a millisecond before its fetcher wakes.
  std::vector<std::size_t> suspected;
  for (;;) {
    const Millis after = daemon_.stall_after;
    const Millis every = after.count() == 0 ? Millis(1s) : std::clamp<Millis>(after / 4, 100ms, 5s);
    co_await async::sleep(every);
    // Paused by jobqctl is no stall; paused because the flag was never read (a queue counts as
    // paused until then) is one.
    const bool could_take =
        !stopping_ && (!paused_ || !pause_known_) && buffer_.room() > 0 && after.count() > 0;
    // The shards whose sources have fetched nothing for stall_after, with how long.
    std::vector<std::pair<std::size_t, double>> quiet;
    for (const auto& slot : sources_) {
      const auto t = slot.source->last_fetch();
      if (!could_take || !t) continue;
      const double age = std::chrono::duration<double>(async::Clock::now() - *t).count();
      if (age * 1000 >= static_cast<double>(after.count())) quiet.emplace_back(slot.shard, age);
    }
    std::string why;
    std::vector<std::size_t> seen, stuck;  // quiet with jobs pending: at this look, at both
    for (const auto& [k, age] : quiet) {
      const store::Keys& keys = shards_[k].store->keys();
      const auto call = store::pending_length(keys);
      // A plain LLEN: it works where scripts may not (refused by an ACL, say).
      store::OpResult<long long> pending = co_await store::run(shards_[k].store->client(), call);
      if (!pending.ok() || *pending <= 0) continue;  // Redis away is said elsewhere; none waiting
      seen.push_back(k);
      if (std::find(suspected.begin(), suspected.end(), k) == suspected.end()) continue;
      stuck.push_back(k);
      if (!why.empty()) why += "; ";
      why += std::to_string(*pending) + " job(s) pending in " + keys.pending + " and room for " +
             std::to_string(buffer_.room()) + ", but no job fetched for " +
             std::to_string(static_cast<long long>(age)) + " s" +
             (pause_known_ ? "" : " (its pause flag could not be read yet)");
    }
    suspected = std::move(seen);
    if (stuck.empty()) {
      if (!stalled_.empty()) {
        spdlog::info("queue {}: fetching again", cfg_.name);
        stalled_.clear();
      }
      continue;
    }
    if (stalled_.empty()) {
      spdlog::warn("queue {}: stalled: {}; rebuilding its Redis connections", cfg_.name, why);
    }
    stalled_ = why;
    if (async::Clock::now() - rebuilt >= after) {
      rebuilt = async::Clock::now();
      for (auto& slot : sources_) {
        if (std::find(stuck.begin(), stuck.end(), slot.shard) == stuck.end()) continue;
        slot.source->rebuild("queue " + cfg_.name + " stalled: " + why);
      }
    }
  }
}

std::vector<sources::SpoolView> QueueRunner::spools() const {
  std::vector<sources::SpoolView> out;
  for (const auto& slot : sources_) {
    if (auto v = slot.source->spool()) out.push_back(std::move(*v));
  }
  return out;
}

std::vector<std::uint64_t> QueueRunner::running_tickets(std::size_t max) const {
  std::vector<std::uint64_t> out;
  for (const auto& [id, run] : runs_) {
    if (out.size() >= max) break;
    if (run->phase() == Phase::running) out.push_back(run->from().ticket);
  }
  return out;
}

// ---- control ----

async::Task<bool> QueueRunner::register_queue() {
  const std::string& prefix = store_.settings().prefix;
  const auto add = store::register_queue(prefix, cfg_.name);
  redis::Client& registry = w_.control.client(store::Keys::registry(prefix));
  store::OpResult<redis::Done> r = co_await store::run(registry, add);
  if (!r.ok() && r.error().connection()) co_return false;
  // Apart from the flag: garbage at the registry's key must not keep the queue paused.
  if (!r.ok()) {
    spdlog::error("queue {}: cannot add it to {} (jobqctl queues lists queues from it): {}",
                  cfg_.name, store::Keys::registry(prefix), r.error().message);
  }
  // The shard count, for jobqctl (it sends each job to its id's home shard). Daemons that
  // disagree would send ids to different homes: said, and the last one to start wins.
  const store::Keys& keys = store_.keys();
  const auto read = store::read_shards(keys);
  store::OpResult<std::size_t> was = co_await store::run(store_.client(), read);
  if (!was.ok() && was.error().connection()) co_return false;
  if (!was.ok()) {
    spdlog::warn("queue {}: {}; writing {} over it", cfg_.name, was.error().message,
                 shards_.size());
  } else if (*was != 0 && *was != shards_.size()) {
    spdlog::warn(
        "queue {}: {} said {} shard(s), this daemon runs {}: jobs submitted to the shards it no "
        "longer has wait there (give every daemon of the queue the same shards)",
        cfg_.name, keys.shards, *was, shards_.size());
  }
  const auto write = store::write_shards(keys, shards_.size());
  store::OpResult<redis::Done> w = co_await store::run(store_.client(), write);
  if (!w.ok() && w.error().connection()) co_return false;
  if (!w.ok()) {
    spdlog::error("queue {}: cannot write its shard count to {}: {}", cfg_.name, keys.shards,
                  w.error().message);
  }
  co_return true;
}

async::Task<store::OpResult<store::Control>> QueueRunner::read_control() {
  store::Control all;
  for (auto& shard : shards_) {
    store::OpResult<store::Control> r = co_await shard.store->control();
    if (!r.ok()) {
      if (r.error().wrong_type()) (void)co_await shard.store->repair();
      co_return r;
    }
    all.paused = all.paused || r->paused;
    for (auto& id : r->cancels) all.cancels.push_back(std::move(id));
  }
  co_return all;
}

async::Task<void> QueueRunner::watch_control() {
  const store::Keys& keys = store_.keys();
  bool registered = false;
  async::Every errors(1min);
  for (;;) {
    if (!registered) registered = co_await register_queue();
    store::OpResult<store::Control> r = co_await read_control();
    if (!r.ok() && r.error().connection()) {
      // Read again as soon as Redis is back, not a second later: at the start the queue counts
      // as paused until this read, and a job pushed meanwhile would wait for it.
      for (auto& shard : shards_) co_await shard.store->client().wait_connected();
      co_await async::sleep(10ms);  // never a busy loop, whatever the connection does
      continue;
    }
    if (!r.ok()) {
      if (errors.due()) {
        spdlog::error("queue {}: cannot read the pause flag {} and cancel requests {}: {}",
                      cfg_.name, keys.paused, keys.cancels, r.error().message);
      }
    } else {
      if (!r->cancels.empty()) cancel_held(r->cancels);
      if (r->paused != paused_ || !pause_known_) {
        if (r->paused) {
          spdlog::info(
              "queue {}: paused (jobqctl resume {} to go on); running jobs finish, buffered "
              "ones wait",
              cfg_.name, cfg_.name);
        } else if (pause_known_) {
          spdlog::info("queue {}: resumed", cfg_.name);
        }
        paused_ = r->paused;
        pause_known_ = true;
        known_.set();
        if (paused_) {
          resumed_.clear();
        } else {
          resumed_.set();
        }
        room_.set();
      }
    }
    co_await async::sleep(kControlPoll);
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
      run.task.cancel();  // run_job settles it as cancelled once its handler has stopped
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
    run->settle({End::cancelled,
                 "cancelled by jobqctl cancel before it ran (attempt " +
                     std::to_string(run->attempt()) + ")",
                 job::ErrorKind::cancelled, Millis(0)});
  }
}

async::Task<void> QueueRunner::show_active() {
  for (;;) {
    const Millis after = store_.settings().active_after;
    if (after.count() == 0) {
      // Written as each attempt starts (run_job): nothing to sweep.
      co_await async::sleep(1s);
      continue;
    }
    const auto now = async::Clock::now();
    for (auto& [id, run] : runs_) {
      if (run->phase() == Phase::running && !run->shown_active && now - run->started >= after) {
        run->shown_active = true;
        run->delivery().show_active(run->from().ticket);
      }
    }
    co_await async::sleep(std::clamp<Millis>(after / 4, 5ms, 1s));
  }
}

void QueueRunner::run_over(JobRun& run, store::Settled how) noexcept {
  if (how == store::Settled::renamed) {
    spdlog::warn(
        "queue {}: invalid job {} is recorded under a fresh id: {} belongs to a job that is not "
        "over",
        cfg_.name, run.id(), run.id());
  }
  runs_.erase(run.id());  // `run` is gone from here
  run_gone_.set();
  run_gone_.clear();
  // Its slot is free in Redis now, or (priorities, group_by) here: free_room counts it.
  if (cfg_.global_concurrency > 0 || cfg_.priorities_set || !cfg_.group_by.key.empty()) {
    room_.set();
  }
}

// ---- reload ----

void QueueRunner::reconfigure(const config::QueueConfig& next, const config::DaemonSection& daemon,
                              const config::StateSection& state,
                              const std::set<std::string>& handler_names) {
  const config::QueueConfig was = cfg_;
  cfg_ = next;
  daemon_ = daemon;
  for (auto& shard : shards_) {
    store::QueueStore& st = *shard.store;
    st.settings().retune(
        settings_of(cfg_, daemon_, state, st.settings().prefix, w_.worker, st.settings().shard));
    auto& rules = st.rules();
    rules.default_handler = cfg_.handler;
    rules.handlers = &handler_names;
    rules.max_bytes = cfg_.max_job_bytes;
    rules.unique_from = cfg_.unique.path;
    rules.queue = cfg_.name;
  }
  slots_.set_limit(cfg_.concurrency);
  share_.set_weight(static_cast<unsigned>(cfg_.weight));
  unsettled_.set_limit(std::max<std::size_t>(kMinUnsettled, 2 * cfg_.concurrency));
  buffer_.set_maxsize(cfg_.buffer);
  room_.set();
  if (was.concurrency != cfg_.concurrency || was.buffer != cfg_.buffer) {
    spdlog::info("queue {}: concurrency {} (was {}), buffer {} (was {})", cfg_.name,
                 cfg_.concurrency, was.concurrency, cfg_.buffer, was.buffer);
  }
  if (was.weight != cfg_.weight) {
    spdlog::info("queue {}: weight {} (was {})", cfg_.name, cfg_.weight, was.weight);
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
    for (auto& slot : make_sources(src)) {
      sources_.push_back(std::move(slot));
      if (started_) sources_.back().source->start();
    }
    if (src.kind == Kind::spool) {
      spdlog::info("queue {}: spool dir {}: taking files", cfg_.name, src.dir);
    }
  }
  for (auto& slot : sources_) {
    sources::reconfigure(*slot.source, cfg_);
    if (slot.cfg.kind == Kind::redis) slot.source->set_taking(want_redis);
  }
  // Done retirements leave their handles here; drop those.
  std::erase_if(retiring_, [](const async::JoinHandle<void>& t) { return t.done(); });
}

async::Task<void> QueueRunner::retire(SourceSlot slot) {
  sources::Delivery* from = &slot.source->delivery();
  co_await slot.source->stop_taking();
  // Its buffered jobs go back newest first; the others keep their place.
  std::vector<JobRun*> mine;
  for (JobRun* run : buffer_.drain()) {
    if (&run->delivery() == from) {
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
      if (&run->delivery() == from) return true;
    }
    return false;
  };
  while (any_left()) co_await run_gone_.wait();
  co_await slot.source->finish(kFlushLimit);
  spdlog::info("queue {}: spool dir {}: let go", cfg_.name, slot.cfg.dir);
}

// ---- arrival ----

std::size_t QueueRunner::free_room() const noexcept {
  const std::size_t room = buffer_.room();
  if (cfg_.priorities_set || !cfg_.group_by.key.empty()) {
    // Ordered in Redis (by priority, or round robin across groups): a job taken early would wait
    // here in the order it came, and one that comes first by that order behind it. Only what can
    // start at once.
    const std::size_t busy = runs_.size();
    return std::min<std::size_t>(room, cfg_.concurrency > busy ? cfg_.concurrency - busy : 0);
  }
  if (cfg_.global_concurrency == 0) return room;
  // Every job this queue knows of, buffered, running, or ended with its end not written yet:
  // each still holds its slot in Redis. Beyond what can start here at once, only this daemon's
  // share of the slots the last fetch left free: a cap far above what the daemons can hold
  // buffers as a queue without one does, a cap they fill keeps nothing waiting here.
  const std::size_t busy = runs_.size();
  const std::size_t most = cfg_.concurrency + slack();
  return std::min<std::size_t>(room, most > busy ? most - busy : 0);
}

std::size_t QueueRunner::slack() const noexcept {
  std::size_t sum = 0;
  for (const auto& shard : shards_) sum += shard.store->cap_share();
  return sum;
}

async::Task<bool> QueueRunner::wait_room(std::size_t at_least) {
  std::size_t most = cfg_.buffer;
  if (cfg_.priorities_set || !cfg_.group_by.key.empty()) {
    most = std::min<std::size_t>(most, cfg_.concurrency);
  }
  if (cfg_.global_concurrency > 0) most = std::min<std::size_t>(most, cfg_.concurrency + slack());
  const std::size_t want =
      std::max<std::size_t>(1, std::min(at_least, std::max<std::size_t>(1, most / 2)));
  while (!stopping_ && (paused_ || free_room() < want)) {
    room_.clear();
    co_await room_.wait();
  }
  co_return !stopping_;
}

bool QueueRunner::offer(sources::Arrival& a) {
  // An invalid job never needs room: only check for others.
  if (a.job && (stopping_ || buffer_.full())) return false;
  JobRun* run = admit(std::move(a));
  if (run && !buffer_.try_put(run)) {
    // Cannot happen (room was checked, and only the dispatcher takes): never lose it anyway.
    spdlog::error("queue {}: job {} found the buffer full after all; giving it back", cfg_.name,
                  run->id());
    run->settle({End::back, "", job::ErrorKind::none, Millis(0)});
  }
  return true;
}

async::Task<void> QueueRunner::accept(sources::Arrival a) {
  for (;;) {
    if (offer(a)) co_return;
    if (stopping_) {
      // Arrived too late to run: back to where it came from, untouched.
      a.from->settle(a.ticket, {End::back, "", job::ErrorKind::none, Millis(0)}, nullptr);
      co_return;
    }
    co_await buffer_.wait_room();
  }
}

// Takes a job in: a valid one is returned (for the buffer); an invalid one is settled failed at
// once, and nullptr returned. The job was read by its source (the one parse).
JobRun* QueueRunner::admit(sources::Arrival a) {
  std::string id = a.id;
  if (a.job && runs_.count(id)) {
    // The source lets one job of an id be in flight at a time: two here means it lost track
    // (Redis forgot writes in a restart). Leave it to the source's own recovery.
    spdlog::error(
        "queue {}: job {} arrived while another job with that id is in flight here; leaving it "
        "to be returned to pending by reconciliation",
        cfg_.name, id);
    a.from->forget(a.ticket);
    return nullptr;
  }
  // An invalid job whose id (or none) is in use here: it is recorded under a fresh one.
  if (!a.job && (id.empty() || runs_.count(id))) id = job::new_id();
  auto owned = std::make_unique<JobRun>(cfg_.name, std::move(a), id, *this);
  JobRun& r = *owned;
  runs_.emplace(id, std::move(owned));
  if (r.valid()) {
    const auto& job = r.job();
    auto h = w_.handlers.find(job.handler);
    r.handler = h != w_.handlers.end() ? h->second : nullptr;
    r.handlers_generation = w_.handlers_generation;
    r.max_attempts = r.from().max_attempts;
    // Capped while still unsigned: a huge timeout_ms must not wrap into a negative duration.
    const auto cap = static_cast<std::uint64_t>(cfg_.max_timeout.count());
    r.timeout =
        job.timeout_ms
            ? Millis(static_cast<Millis::rep>(std::min<std::uint64_t>(*job.timeout_ms, cap)))
            : std::min(cfg_.timeout, cfg_.max_timeout);
    if (job.timeout_ms && *job.timeout_ms > cap && over_cap_.due()) {
      spdlog::warn(
          "queue {}: job {} asks for a timeout of {} ms, over the queue's max_timeout {}: it is "
          "stopped after {} (said at most every 30s)",
          cfg_.name, id, *job.timeout_ms, config::format_duration(cfg_.max_timeout),
          config::format_duration(cfg_.max_timeout));
    }
    r.set_phase(Phase::buffered);
    return &r;
  }
  ++stats_.invalid;
  spdlog::warn("queue {}: invalid job {} is dead: {}", cfg_.name, r.id(), r.invalid_reason());
  r.settle({End::failed, r.invalid_reason(), job::ErrorKind::invalid_job, Millis(0)});
  return nullptr;
}

// ---- dispatch and attempts ----

async::Task<void> QueueRunner::dispatcher() {
  for (;;) {
    auto unsettled = co_await unsettled_.acquire();
    auto slot = co_await slots_.acquire();
    // A pause holds new starts too, not only fetching: buffered jobs wait, in order.
    co_await resumed_.wait();
    // Woken by a stop while paused (stop() sets resumed_ so that it is seen): nothing starts
    // any more, and going round again would find the same buffered job without waiting for
    // anything, holding the loop for good.
    if (paused_ && stopping_) co_return;
    if (w_.daemon_permits.limited()) {
      const bool open = co_await dispatch_shared(unsettled, slot);
      if (!open) co_return;
      continue;
    }
    auto item = co_await buffer_.get();
    if (!item) co_return;
    if (paused_) {
      // Paused while this one was on its way out of the buffer: back in front, in order.
      buffer_.restore_front(*item);
      continue;
    }
    start(**item, std::move(unsettled), std::move(slot), {});
  }
}

// The queue's permit first, then the daemon's. The other way round, a queue at its own
// concurrency would sit on daemon permits it cannot use while other queues wait for them; this
// way a queue holds one permit of its own while it waits (its jobs could not start without it
// anyway) and a daemon permit only from the moment it starts a job to that job's end. The job
// stays in the buffer until both are there: a pause, a cancel, a revoke or a stop finds it in
// its place meanwhile, and the daemon's pool sees only jobs that could start at once.
async::Task<bool> QueueRunner::dispatch_shared(async::Permit& unsettled, async::Permit& slot) {
  const bool any = co_await buffer_.wait_item();
  if (!any) co_return false;
  if (paused_) co_return true;  // paused meanwhile: the next turn waits for the resume
  // As many as could start now: two permits freed in one turn of the loop can then both come
  // here when the order says so.
  const std::size_t could = std::min(
      {buffer_.size(), slots_.available() + 1, unsettled_.available() + 1, std::size_t{1000}});
  auto grant = co_await share_.acquire(could);
  while (grant.size() > 0 && !paused_ && !buffer_.empty()) {
    if (!slot) {
      auto more = slots_.try_acquire();
      if (!more) break;
      slot = std::move(*more);
    }
    if (!unsettled) {
      auto more = unsettled_.try_acquire();
      if (!more) break;
      unsettled = std::move(*more);
    }
    auto item = buffer_.try_get();
    start(**item, std::move(unsettled), std::move(slot), grant.take());
  }
  // Permits granted and not used (a pause, a cut of the concurrency, jobs taken out of the
  // buffer meanwhile) go back to the pool with `grant`, to the next queue waiting.
  co_return true;
}

void QueueRunner::start(JobRun& run, async::Permit unsettled, async::Permit slot,
                        async::WeightedPermits::Permit daemon_slot) {
  room_.set();
  // The handler its name has now, if a reload replaced the handlers while the job was
  // buffered (one a reload removed: the one it was taken in with).
  if (run.handlers_generation != w_.handlers_generation) {
    if (auto h = w_.handlers.find(run.job().handler); h != w_.handlers.end()) {
      run.handler = h->second;
    }
  }
  run.set_phase(Phase::running);
  run.unsettled = std::move(unsettled);
  ++running_;
  idle_.clear();
  run.task =
      async::spawn(run_job(run, std::move(slot), std::move(daemon_slot)), "job " + cfg_.name);
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

async::Task<void> QueueRunner::run_job(JobRun& run, async::Permit slot,
                                       async::WeightedPermits::Permit daemon_slot) {
  run.started_ms = store::unix_ms();
  run.started = async::Clock::now();
  const bool show_now = store_.settings().active_after.count() == 0;
  run.shown_active = show_now;
  run.delivery().started(run.from().ticket, show_now);
  handlers::Outcome out;
  bool stopped = false;
  if (!run.handler) {
    out = handlers::Outcome::failure(job::ErrorKind::exception,
                                     "handler '" + run.job().handler + "' is gone", false);
  } else if (run.attempt() > run.max_attempts) {
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
  daemon_slot.release();
  --running_;
  if (running_ == 0) idle_.set();
  run_ended_.set();
  run_ended_.clear();
  const auto took = store::unix_ms() - run.started_ms;
  if (!stopped) {
    durations_.observe(static_cast<double>(took) / 1000.0);
    run.settle(outcome_of(run, std::move(out)));
  } else if (run.stop == JobRun::Stop::cancelled) {
    ++stats_.cancelled;
    durations_.observe(static_cast<double>(took) / 1000.0);
    spdlog::info("queue {}: job {} cancelled after {} ms (attempt {})", cfg_.name, run.id(), took,
                 run.attempt());
    run.settle({End::cancelled,
                "cancelled by jobqctl cancel while running (attempt " +
                    std::to_string(run.attempt()) + ", stopped after " + std::to_string(took) +
                    " ms)",
                job::ErrorKind::cancelled, Millis(0)});
  } else if (run.stop == JobRun::Stop::revoked) {
    // The source lost its hold on the job (its lease): it is someone else's now.
    run.forget();
  } else {
    // A stop: back to where it came from, as it was.
    ++stats_.returned;
    run.settle({End::back, "", job::ErrorKind::none, Millis(0)});
  }
}

sources::Outcome QueueRunner::outcome_of(JobRun& run, handlers::Outcome out) {
  const auto& id = run.id();
  if (out.ok) {
    ++stats_.succeeded;
    spdlog::debug("queue {}: job {} succeeded (attempt {})", cfg_.name, id, run.attempt());
    // A program's output or a server's body may be any bytes: everything jobqd writes (and
    // logs) is valid UTF-8, so clients that decode it never break on a job's state.
    return {End::succeeded, job::to_utf8(std::move(out.result)), job::ErrorKind::none, Millis(0)};
  }
  out.error = job::to_utf8(std::move(out.error));
  const auto kind = job::to_string(out.kind);
  if (out.retry && run.attempt() < run.max_attempts) {
    Millis delay = backoff(run.attempt());
    if (out.retry_after) {
      delay = std::max(delay, std::min(*out.retry_after, cfg_.retry_max));
      // Told to come back later: the whole queue slows down (with a rate), not only this job.
      run.delivery().slow_down(std::min(*out.retry_after, cfg_.retry_max));
    }
    ++stats_.retried;
    spdlog::debug("queue {}: job {} failed (attempt {} of {}, {}): {}; retrying in {} ms",
                  cfg_.name, id, run.attempt(), run.max_attempts, kind, out.error, delay.count());
    return {End::retry, std::move(out.error), out.kind, delay};
  }
  ++stats_.dead;
  spdlog::warn("queue {}: job {} failed for good (attempt {} of {}, {}): {}", cfg_.name, id,
               run.attempt(), run.max_attempts, kind, out.error);
  return {End::failed, std::move(out.error), out.kind, Millis(0)};
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
    ++stats_.returned;
    (*it)->settle({End::back, "", job::ErrorKind::none, Millis(0)});
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
  std::vector<JobRun*> lost;
  for (JobRun* run : buffer_.drain()) {
    if (&run->delivery() != &from) {
      buffer_.restore(run);
    } else {
      lost.push_back(run);
    }
  }
  for (JobRun* run : lost) {
    run->forget();
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
  resumed_.set();  // a paused dispatcher must see the stop
  for (auto* t : {&control_task_, &active_task_, &progress_task_}) {
    if (t->valid()) t->cancel();
  }
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
  // Sources a reload dropped: their jobs have ended too (or were stopped above).
  for (auto& t : retiring_) {
    if (t.valid()) co_await t.wait();
  }
  // Every end written (within a limit: Redis may be away; a short grace asks for a quick stop),
  // then the sources let go.
  const Millis flush_limit = std::clamp<Millis>(grace, 1s, kFlushLimit);
  const auto flushed_by = async::Clock::now() + flush_limit;
  for (auto& shard : shards_) {
    const auto left = std::max<Millis>(
        Millis(1), std::chrono::duration_cast<Millis>(flushed_by - async::Clock::now()));
    if (!co_await shard.settler->flush(left)) {
      spdlog::error(
          "queue {}: could not write {} job outcome(s) to {} before exiting; the jobs stay "
          "held and run again (another daemon takes them back after the lease)",
          cfg_.name, shard.settler->backlog(), shard.store->keys().base);
    }
  }
  for (auto& s : sources_) co_await s.source->finish(2s);
  for (auto& shard : shards_) co_await shard.settler->stop();
  for (auto* t : {&control_task_, &active_task_, &progress_task_}) {
    if (t->valid()) co_await t->wait();
  }
}

}  // namespace jq::engine
