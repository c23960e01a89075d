// The scheduler: each tick of every schedule of this daemon's queues, enqueued once across every
// daemon; the YAML's schedules defined in Redis beside jobqctl's.
#include "engine/scheduler.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <set>

#include "store/calls.hpp"
#include "store/keys.hpp"
#include "store/queue_store.hpp"
#include "store/schedules.hpp"

namespace jq::engine {
namespace {

constexpr auto kCallTimeout = std::chrono::seconds(5);
constexpr std::int64_t kRetryMs = 1000;  // after a failed call

// The latest tick at or before `now` (ticks at or after `from`, which is one), found by looking
// back twice as far each time: a few next_after() calls whatever the gap since `from`.
std::int64_t latest_tick(const config::Cron& cron, std::int64_t from, std::int64_t now) {
  std::int64_t back = 1000;
  for (;;) {
    const std::int64_t start = std::max(from - 1, now - back);
    std::int64_t t = cron.next_after(start);
    if (t <= now) {
      for (std::int64_t n = cron.next_after(t); n <= now; n = cron.next_after(t)) t = n;
      return t;
    }
    if (start == from - 1) return from;
    back *= 2;
  }
}

}  // namespace

Scheduler::Scheduler(const config::Config& cfg, redis::Router& control)
    : cfg_(cfg), control_(control) {}

void Scheduler::reload(const config::Config& cfg) {
  cfg_ = cfg;
  define_ = true;
  wake_.set();
}

std::vector<std::int64_t> Scheduler::due_ticks(const Known& k, std::int64_t now) const {
  const std::int64_t newest = latest_tick(k.cron, k.next, now);
  const std::string& mode = k.def.catch_up;
  if (mode == "one") return {newest};
  if (mode == "skip") {
    // On time: within half its interval, and a minute at most (a loop or Redis that was slow
    // for a moment is not a miss; a daemon that was down is).
    const std::int64_t grace =
        std::min<std::int64_t>(60000, (k.cron.next_after(newest) - newest) / 2);
    if (now - newest <= grace) return {newest};
    return {};
  }
  std::vector<std::int64_t> ticks{k.next};
  for (auto t : k.cron.ticks_between(k.next, now, kCatchUpMax - 1)) ticks.push_back(t);
  if (ticks.back() != newest) ticks.back() = newest;
  return ticks;
}

std::int64_t Scheduler::now() const noexcept {
  return store::unix_ms() + offset_;
}

async::Task<void> Scheduler::read_clock(redis::Client& client) {
  const std::int64_t sent = store::unix_ms();
  const auto call = store::redis_time();
  store::OpResult<std::int64_t> t = redis::OpError{};
  try {
    t = co_await async::wait_for(store::run(client, call), kCallTimeout);
  } catch (const async::TimeoutError&) {
  }
  if (!t.ok()) co_return;  // the last offset stands
  // Redis read its clock about halfway through the round trip.
  offset_ = *t - (sent + store::unix_ms()) / 2;
}

async::Task<bool> Scheduler::refresh() {
  if (!cfg_.queues.empty()) {
    const store::Keys first(cfg_.redis.key_prefix, cfg_.queues.front().name);
    co_await read_clock(control_.client(first.schedules));
  }
  const std::int64_t now = this->now();
  const bool forget = std::exchange(define_, false);
  // Copies: a reload may replace cfg_ while this waits for Redis.
  const std::vector<config::QueueConfig> queues = cfg_.queues;
  const std::vector<config::ScheduleConfig> own = cfg_.schedules;
  const std::string prefix = cfg_.redis.key_prefix;
  std::set<std::string> seen;
  bool all_read = true;
  for (const auto& q : queues) {
    const store::Keys keys(prefix, q.name);
    redis::Client& client = control_.client(keys.schedules);
    const auto list = store::schedule_defs(keys);
    store::OpResult<std::vector<std::pair<std::string, std::string>>> defs = redis::OpError{};
    try {
      defs = co_await async::wait_for(store::run(client, list), kCallTimeout);
    } catch (const async::TimeoutError&) {
    }
    if (!defs.ok()) {
      ++stats_.errors;
      all_read = false;
      if (!defs.error().connection() && errors_.due()) {
        spdlog::error("schedules of queue {}: {}", q.name, defs.error().message);
      }
      // What is known of this queue stays: its ticks fire if Redis answers then.
      for (const auto& [key, k] : known_) {
        if (k.def.queue == q.name) seen.insert(key);
      }
      continue;
    }
    std::map<std::string, std::string> stored(defs->begin(), defs->end());

    // This daemon's YAML schedules: defined where missing or different (a reload, another
    // daemon's older config, or one that forgot it).
    for (const auto& s : own) {
      if (s.queue != q.name) continue;
      const std::string mine = store::encode_schedule(s);
      auto it = stored.find(s.name);
      if (it != stored.end() && it->second == mine) continue;
      auto parsed = config::Cron::parse(s.cron, s.timezone);
      auto* cron = std::get_if<config::Cron>(&parsed);
      if (!cron) continue;  // the config check refused it already
      const auto call = store::define_schedule(keys, s.name, mine, store::schedule_timing(s),
                                               cron->next_after(now), false);
      store::OpResult<store::Defined> d = redis::OpError{};
      try {
        d = co_await async::wait_for(store::run(client, call), kCallTimeout);
      } catch (const async::TimeoutError&) {
      }
      if (!d.ok() || d->kind != store::Defined::Kind::ok) {
        ++stats_.errors;
        if (errors_.due()) {
          spdlog::error("schedule {}: not defined in Redis: {}", s.name,
                        d.ok() ? d->key + " holds another type" : d.error().message);
        }
        continue;
      }
      if (it != stored.end()) {
        spdlog::warn(
            "schedule {}: Redis held another definition of it (another daemon's config?); "
            "this daemon's config replaces it",
            s.name);
      }
      spdlog::info("schedule {}: {} in {}, queue {}; next tick {}", s.name, s.cron,
                   s.timezone.empty() ? "UTC" : s.timezone, s.queue,
                   store::tick_id(s.name, d->next));
      stored[s.name] = mine;
    }

    // At the start and at a reload: config schedules that no longer are this daemon's.
    if (forget) {
      for (auto it = stored.begin(); it != stored.end();) {
        const bool mine = std::any_of(own.begin(), own.end(), [&](const auto& s) {
          return s.queue == q.name && s.name == it->first;
        });
        if (mine) {
          ++it;
          continue;
        }
        const auto state_call = store::schedule_state(keys, it->first);
        auto st = co_await store::run(client, state_call);
        if (st.ok() && st->origin == "config") {
          const auto gone = store::control_schedule(keys, "forget", it->first);
          (void)co_await store::run(client, gone);
          spdlog::info("schedule {}: no longer in the config: removed", it->first);
          it = stored.erase(it);
          continue;
        }
        ++it;
      }
    }

    for (const auto& [name, text] : stored) {
      const std::string key = q.name + "/" + name;
      seen.insert(key);
      auto found = known_.find(key);
      if (found != known_.end() && found->second.stored == text && found->second.next != 0) {
        continue;
      }
      auto decoded = store::decode_schedule(name, q.name, text);
      if (auto* why = std::get_if<std::string>(&decoded)) {
        if (found != known_.end()) known_.erase(found);
        if (errors_.due()) {
          spdlog::error("schedule {} of queue {} in Redis ({}): {}: not run", name, q.name,
                        keys.schedules, *why);
        }
        continue;
      }
      auto& def = std::get<config::ScheduleConfig>(decoded);
      auto parsed = config::Cron::parse(def.cron, def.timezone);
      const auto state_call = store::schedule_state(keys, name);
      auto st = co_await store::run(client, state_call);
      if (!st.ok()) continue;
      std::int64_t next = st->next;
      if (next == 0 || st->timing != store::schedule_timing(def)) {
        // Defined without a state (or changed under it): start it as its definer would.
        const auto call = store::define_schedule(keys, name, text, store::schedule_timing(def),
                                                 std::get<config::Cron>(parsed).next_after(now),
                                                 st->origin != "config");
        auto d = co_await store::run(client, call);
        if (!d.ok() || d->kind != store::Defined::Kind::ok) continue;
        next = d->next;
      }
      Known k{std::move(def), text, std::move(std::get<config::Cron>(parsed)), next, 0};
      known_.erase(key);
      known_.emplace(key, std::move(k));
    }
  }
  for (auto it = known_.begin(); it != known_.end();) {
    it = seen.count(it->first) ? std::next(it) : known_.erase(it);
  }
  // A forget that could not run (Redis away at the start) runs at the next read.
  if (!all_read && forget) define_ = true;
  co_return all_read;
}

async::Task<void> Scheduler::fire(Known& k) {
  const std::int64_t now = this->now();
  const store::Keys keys(cfg_.redis.key_prefix, k.def.queue);
  std::vector<store::TickJob> jobs;
  for (auto t : due_ticks(k, now)) {
    store::TickJob j;
    j.id = store::tick_id(k.def.name, t);
    j.json = store::tick_job(k.def, j.id);
    if (k.def.jitter.count() > 0) {
      std::uniform_int_distribution<std::int64_t> d(0, k.def.jitter.count());
      j.run_at = std::max(t, now) + d(rng_);
    }
    jobs.push_back(std::move(j));
  }
  const std::int64_t after = k.cron.next_after(now);
  const auto call = store::fire_schedule(keys, k.def.name, store::schedule_timing(k.def), k.next,
                                         after, jobs, job::priority_of_text(k.def.job));
  store::OpResult<store::Fired> r = redis::OpError{};
  try {
    r = co_await async::wait_for(store::run(control_.client(keys.schedules), call), kCallTimeout);
  } catch (const async::TimeoutError&) {
  }
  if (!r.ok()) {
    ++stats_.errors;
    k.not_before = now + kRetryMs;
    if (!r.error().connection() && errors_.due()) {
      spdlog::error("schedule {}: tick {} not enqueued: {}", k.def.name,
                    store::tick_id(k.def.name, k.next), r.error().message);
    }
    co_return;
  }
  using Kind = store::Fired::Kind;
  switch (r->kind) {
    case Kind::fired:
      stats_.fired += static_cast<std::uint64_t>(r->value);
      if (r->value == 0) ++stats_.skipped;
      if (jobs.size() > 1) {
        spdlog::info("schedule {}: {} missed ticks enqueued (catch_up: all)", k.def.name,
                     jobs.size());
      } else if (jobs.empty()) {
        spdlog::info("schedule {}: tick {} missed (no daemon ran then), skipped (catch_up: skip)",
                     k.def.name, store::tick_id(k.def.name, k.next));
      } else {
        spdlog::debug("schedule {}: {} enqueued", k.def.name, jobs.front().id);
      }
      k.next = after;
      break;
    case Kind::paused:
      ++stats_.skipped;
      k.next = after;
      break;
    case Kind::early:
      k.not_before = now + std::max<std::int64_t>(1, r->value);
      break;
    case Kind::moved:
      // Another daemon fired it (the usual case with several daemons), or a reload moved it.
      k.next = r->value;
      if (k.next == 0) wake_.set();
      break;
    case Kind::changed:
    case Kind::gone:
      k.next = 0;
      wake_.set();
      break;
    case Kind::garbage:
      ++stats_.errors;
      k.not_before = now + Scheduler::kRefresh.count();
      if (errors_.due()) {
        spdlog::error("schedule {}: {} holds another type: its ticks wait", k.def.name, r->key);
      }
      break;
  }
}

async::Task<void> Scheduler::run() {
  std::int64_t refresh_at = 0;
  for (;;) {
    std::int64_t now = this->now();
    if (now >= refresh_at || wake_.is_set()) {
      wake_.clear();
      const bool read = co_await refresh();
      now = this->now();
      // Redis away (or not yet reached at the start): read again soon, not a refresh later.
      refresh_at = now + (read ? kRefresh.count() : kRetryMs);
    }
    for (auto& [name, k] : known_) {
      if (k.next != 0 && k.next <= now && k.not_before <= now) co_await fire(k);
    }
    now = this->now();
    std::int64_t wake = refresh_at;
    for (const auto& [key, k] : known_) {
      if (k.next != 0) wake = std::min(wake, std::max(k.next, k.not_before));
    }
    if (wake_.is_set()) continue;
    try {
      co_await async::wait_for(wake_.wait(),
                               std::chrono::milliseconds(std::max<std::int64_t>(0, wake - now)));
    } catch (const async::TimeoutError&) {
    }
  }
}

}  // namespace jq::engine
