// Every call of the protocol, typed: one builder and one reader each, for jobqd and jobqctl alike
// (docs/redis-keys.md describes the keys; daemon/store/lua/ the scripts, each with its KEYS and
// ARGV). Builders are pure: they only make the Request.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "job/job.hpp"
#include "store/call.hpp"
#include "store/heartbeat.hpp"
#include "store/keys.hpp"
#include "store/stats.hpp"

namespace jq::store {

using Millis = std::chrono::milliseconds;

// ---- holding jobs (the daemon) ----

/// A job a fetch holds: its token in this worker's inflight hash, and its text as held (with
/// jobqd's marker, if it has been written back before), or its size when over max_bytes.
struct Held {
  std::uint64_t token = 0;
  std::string copy;
  std::uint64_t oversized = 0;
};
/// What held a fetch back: nothing, the queue's rate (its bucket), its global concurrency, a
/// group's rate or concurrency (group_by).
enum class Limit : std::uint8_t { none, rate, cap, group };
struct FetchBatch {
  std::int64_t now = 0;  // Redis' clock when it ran (ms)
  bool lease_lost = false;
  bool paused = false;
  std::int64_t limited_ms = 0;  // >0: a limit held jobs back; look again in this long
  Limit limited_by = Limit::none;
  /// With a global concurrency: the slots left free after this fetch per live worker.
  std::optional<long long> cap_share;
  /// Set when a worker the fetch was not told of holds a lease (global concurrency): the live
  /// workers, to name in the next fetch. Nothing was taken.
  std::optional<std::vector<std::string>> live_workers;
  std::vector<Held> jobs;
};
/// A queue's (shard's) token bucket: jobs per ms (0: none) and the most tokens kept.
struct Rate {
  double per_ms = 0;
  std::uint64_t burst = 0;
};
/// One shard's share of a `rate:` of `per_s` jobs a second (0: none) with `burst` tokens at most
/// (0: a second's worth, at least 1) over `shards` buckets: what its bucket is filled at, and
/// holds at most. The daemon fetches by it, jobqctl reads the bucket by it.
Rate rate_share(double per_s, std::uint64_t burst, std::size_t shards = 1);
/// A queue's (shard's) global concurrency: the most jobs all live workers together hold (0:
/// none), and the other workers the daemon knows of (their inflight hashes are read).
struct Cap {
  std::size_t slots = 0;
  std::vector<std::string> others;
};
/// How a queue takes from its priority levels (its `priorities:` config; docs/priorities.md):
/// not at all (only pending), strictly high first, or by weight; a level waiting untaken for
/// `aging` goes first either way.
struct Order {
  enum class Mode : std::uint8_t { none, strict, weighted };
  Mode mode = Mode::none;
  std::array<std::uint32_t, 3> weights{6, 3, 1};  // high, normal, low
  Millis aging = std::chrono::minutes(1);
  bool on() const noexcept { return mode != Mode::none; }
  /// As fetch.lua takes it: "" for none, else "s|w,<weights>,<aging ms>".
  std::string spec() const;
};
/// Holds up to `n` jobs from pending, with tokens first, first + 1, ... (lua/fetch.lua); with a
/// rate, no more than its bucket has tokens for; with a cap, no more than its free slots.
Call<FetchBatch> fetch(const Keys& k, const std::string& worker, std::uint64_t first, std::size_t n,
                       std::uint64_t max_bytes, const Rate& rate = {}, const Cap& cap = {},
                       const Order& order = {});
/// The bucket gives no token before `until` (Redis' clock, ms; a later one already set stays):
/// a handler was told to come back then (HTTP 429 with Retry-After).
Call<redis::Done> slow_down(const Keys& k, std::int64_t until);
/// Reads a fetch reply (exposed for the fuzzer and tests).
OpResult<FetchBatch> decode_fetch(redis::Reply r, std::uint64_t first, std::size_t n);

/// How a queue's unique keys lock (its `unique:` config; docs/unique.md). A job that brings a
/// `unique_key` on a queue without one gets these defaults.
struct UniqueRule {
  enum class Mode : std::uint8_t { lock, debounce, throttle };
  Mode mode = Mode::lock;
  Millis hold = std::chrono::hours(1);  // `for`: the longest a lock lasts, whatever its job does
  bool queued = true;                   // `while` queued: taken at submission
  bool running = true;                  // `while` running: kept until the job's end
  /// Let go of as the job ends (throttle's is kept for its window; one held only while queued
  /// was let go of as the job started).
  bool ends_with_job() const noexcept { return mode != Mode::throttle && running; }
  /// Let go of as the job starts (`while: [queued]`).
  bool ends_at_start() const noexcept { return mode != Mode::throttle && !running; }
  /// As the scripts take it.
  const char* code() const noexcept {
    return mode == Mode::debounce ? "d" : mode == Mode::throttle ? "t" : "l";
  }
};

/// A held job whose id is to be claimed (lua/claim.lua), or whose unique key is to be locked, or
/// both.
struct ClaimAsk {
  std::string id;
  std::string nonce;       // the claim it owns its id under (its marker's, or worker:token)
  std::string value;       // what the claim is written as when not the nonce: nonce@worker:token
  bool claim_id = true;    // false: an id jobqd made up (nobody else has it): only its lock
  std::string unique_key;  // "" when it has none
  UniqueRule rule;
};
/// What claiming one job found.
struct ClaimAnswer {
  std::string owner;    // "" when its id is claimed (or needs none), else the claim owning it
  std::string holder;   // the job whose lock holds its unique key ("" when it took it, has none)
  std::string garbage;  // its lock's key holds another type: Redis' error ("" when not)
};
/// Claims ids and takes unique keys' locks, each job's lock only once its id is claimed. A lock
/// the job holds already (its id, or its claim's nonce after recovery gave it a new id) is its
/// own; debounce's newest takes a lock over (docs/unique.md).
Call<std::vector<ClaimAnswer>> claim(const Keys& k, const std::vector<ClaimAsk>& jobs);

/// Drops `claim` on `id` if it is stale (lua/unclaim.lua); `holder`/`token`: the hold it names
/// ("" when it names none). True when it was dropped.
Call<bool> unclaim(const Keys& k, const std::string& id, const std::string& claim,
                   const std::string& holder, const std::string& token, const std::string& self);

// ---- the lease ----
Call<redis::Done> acquire(const Keys& k, const std::string& worker, Millis lease);
/// False when the lease is gone or expired already.
Call<bool> renew(const Keys& k, const std::string& worker, Millis lease);
/// False when jobs are still held (the lease is left to run out).
Call<bool> release(const Keys& k, const std::string& worker);

// ---- recovery ----
struct Expired {
  std::optional<Millis> next_in;  // until another worker's lease runs out next
  std::vector<std::string> workers;
};
Call<Expired> expired(const Keys& k, const std::string& self, std::size_t limit);
/// A worker's held copies: token -> copy.
Call<std::vector<std::pair<std::string, std::string>>> held_copies(const Keys& k,
                                                                   const std::string& worker);
/// What recovery does with one held copy (lua/recover.lua).
struct RecoverItem {
  std::string token;
  bool dead = false;  // its last attempt: kept with the dead ones; else back to pending
  std::string id;     // "" when unknown (a copy nobody could read: back as it came)
  std::string nonce;
  long long attempts = 0, max = 0;
  std::string text;        // the copy as it goes back, or the job as kept with the dead ones
  std::string unique_key;  // dead: its lock goes with it ("" none, or one its end keeps)
  /// back: the list it returns to (a queue with priorities: its level's; else pending).
  job::Priority level = job::Priority::normal;
};
struct Recovered {
  bool alive = false;  // the worker's lease is valid again: nothing was done
  long long returned = 0, dead = 0;
  bool emptied = false;  // it holds nothing any more (its lease entry was dropped)
};
Call<Recovered> recover(const Keys& k, const std::string& worker, bool own,
                        const std::string& queue, const std::string& why, Millis keep_failed,
                        const std::vector<RecoverItem>& items);

// ---- delayed jobs ----
struct Due {
  std::int64_t now = 0;
  std::optional<Millis> next_in;  // until the next job not due yet
  std::vector<std::string> jobs;  // due, oldest first
  /// Jobs wait in a priority list (pending:high or pending:low): how many of the two hold some.
  long long levels = 0;
  /// The ring of groups holds some (asked only of a queue without group_by, whose jobs left in
  /// groups' lists go back to pending: QueueStore::ungroup).
  bool grouped = false;
  /// Jobs that wait for others have work for the daemon (docs/workflows.md): outcomes in the
  /// outbox, a waiting job past its after_timeout, or one whose registration a crash may have
  /// cut short (kRegisterAgainAfter).
  bool after_work = false;
};
/// A waiting job still in `registering` this long after it began to wait was left half told by a
/// crash (its caller registers in milliseconds): the due poll registers it again.
inline constexpr Millis kRegisterAgainAfter{5000};
/// `ring`: look at the ring of groups too (a queue without group_by).
Call<Due> due(const Keys& k, std::size_t limit, bool ring = false);
/// A queue without priorities: the jobs of its priority lists into pending, at most `limit` of
/// each (lua/fold.lua); how many were moved.
Call<long long> fold(const Keys& k, std::size_t limit);
/// A due job and, for a retry, its id (its state goes back to queued).
struct PromoteItem {
  std::string job;
  std::string retry_id;
  job::Priority level = job::Priority::normal;  // the pending list it goes to
};
Call<long long> promote(const Keys& k, const std::vector<PromoteItem>& jobs);

// ---- dead jobs ----
Call<std::vector<std::string>> dead_victims(const Keys& k, std::uint64_t dead_max, Millis ttl,
                                            std::size_t limit);
/// Drops dead jobs (bounds, or jobqctl dead purge); how many were dropped.
Call<long long> drop_dead(const Keys& k, const std::vector<std::string>& ids);
/// jobqctl dead retry, into the list of priority `level` (job::Priority: the jobs' own, read from
/// their kept copies by the caller); how many were requeued.
Call<long long> requeue_dead(const Keys& k, const std::vector<std::string>& ids,
                             std::size_t level = 1);

// ---- control ----
struct Control {
  bool paused = false;
  std::vector<std::string> cancels;  // ids of held jobs to stop
};
Call<Control> control(const Keys& k);
/// jobqctl pause/resume: true when it changed.
Call<bool> set_paused(const Keys& k, bool paused, std::int64_t now_ms);
Call<bool> is_paused(const Keys& k);

/// A foreign value found at one of the queue's keys, moved aside (lua/repair.lua).
struct Repaired {
  std::string key, type, moved_to;
};
/// `worker`'s inflight hash is among the keys checked; `now_ms` names where values go.
Call<std::vector<Repaired>> repair(const Keys& k, const std::string& worker, std::int64_t now_ms);

// ---- daemons and queues ----
Call<redis::Done> heartbeat(const std::string& prefix, const Heartbeat& h);
Call<redis::Done> forget_worker(const std::string& prefix, const std::string& worker);
/// The daemons' heartbeats; `gone` counts those that cannot be read (garbage, another version).
struct Workers {
  std::vector<Heartbeat> live;
  std::size_t gone = 0;
  /// Keeps the heartbeats no older than kLiveWithinMs at `now` (Redis' clock), oldest daemon
  /// first; the others count as gone.
  void keep_live(std::int64_t now);
};
Call<Workers> read_workers(const std::string& prefix);
Call<redis::Done> register_queue(const std::string& prefix, const std::string& queue);
/// The queues daemons have served (sorted); an error when the key holds something else.
Call<std::vector<std::string>> registered_queues(const std::string& prefix);
Call<Depths> depths(const Keys& k, const Rate& rate = {});
/// The shard count the queue's daemons run it with (its `shards` key; 0 when none was written:
/// a queue of one shard, or one no daemon has served yet); a shape error naming the key when it
/// holds anything but 1..kMaxShards.
Call<std::size_t> read_shards(const Keys& k);
/// Writes the shard count (over whatever was there).
Call<redis::Done> write_shards(const Keys& k, std::size_t n);
/// A sharded queue's jobs fetched from a shard that is not their id's home: pushed to the home
/// shard's pending (one LPUSH, oldest first to be taken), then dropped from this worker's hold.
Call<long long> push_pending(const Keys& home, const std::vector<std::string>& copies,
                             const std::string& where = "pending");
Call<long long> drop_held(const Keys& k, const std::string& worker,
                          const std::vector<std::uint64_t>& tokens);
// ---- history (the dashboard's charts) ----
/// A daemon's attempts of a queue in one minute (or, read back, everyone's in a minute or hour).
struct MinuteCounts {
  std::uint64_t succeeded = 0, failed = 0, retried = 0;
  std::uint64_t timed = 0;   // attempts with a run time (succeeded, failed, retried)
  std::uint64_t run_ms = 0;  // their run times summed
  bool empty() const noexcept { return succeeded + failed + retried + timed == 0; }
};
/// How much history is kept: a day of minutes, a week of hours.
inline constexpr std::int64_t kMinutesKept = 1440, kHoursKept = 168;
/// Adds one minute's counts (`minute`: unix ms / 60000) to the queue's history (lua/history.lua;
/// `k`: the queue's own keys, whatever its shards). False when its keys hold something else.
Call<bool> add_history(const Keys& k, std::int64_t minute, const MinuteCounts& m);
/// The queue's history by minute (or, `hours`, by hour) number; garbage fields are skipped.
Call<std::map<std::int64_t, MinuteCounts>> read_history(const Keys& k, bool hours);

// ---- Redis itself (the dashboard's overview) ----
/// `INFO section` as name -> value (its comment and empty lines dropped).
Call<std::map<std::string, std::string>> info(const std::string& section);
/// The bytes `key` takes in Redis (MEMORY USAGE, sampled); 0 when it does not exist.
Call<long long> memory_usage(const std::string& key);

// ---- schedules (lua/schedule_*.lua; docs/schedules.md) ----
/// A schedule's state hash as read: the tick it waits for, its last run, whether it is paused.
struct ScheduleState {
  std::int64_t next = 0;       // the tick it waits for (unix ms); 0: none yet
  std::int64_t last = 0;       // the last tick that enqueued a job
  std::int64_t last_at = 0;    // when that happened (Redis' clock)
  std::int64_t paused_at = 0;  // 0: not paused
  std::string last_id;         // the last job it enqueued
  std::string origin;          // config | runtime
  std::string timing;          // the cron expression and zone `next` was computed with
  std::uint64_t fired = 0;     // jobs enqueued so far
  std::uint64_t skipped = 0;   // ticks that enqueued none (paused, or missed with catch_up: skip)
};
/// What defining a schedule did (lua/schedule_define.lua).
struct Defined {
  enum class Kind { ok, config, garbage } kind = Kind::ok;
  std::int64_t next = 0;   // the tick it now waits for
  bool restarted = false;  // new, or its timing changed: `next` is the one sent
  std::string key;         // garbage: the key holding another type
};
/// Puts `def` (its stored JSON) in the queue's index and starts its state if it is new or its
/// `timing` changed, at `next`. `runtime`: jobqctl's (refused over a config one).
Call<Defined> define_schedule(const Keys& k, const std::string& name, const std::string& def,
                              const std::string& timing, std::int64_t next, bool runtime);
/// One job a tick enqueues.
struct TickJob {
  std::string id;
  std::int64_t run_at = 0;  // 0: now (pending); else the delayed set
  std::string json;
};
/// What firing a tick did (lua/schedule_fire.lua).
struct Fired {
  enum class Kind { fired, paused, early, moved, changed, gone, garbage } kind = Kind::fired;
  std::int64_t value = 0;  // fired/paused: jobs; early: ms to wait; moved: the next tick stored
  std::string key;         // garbage: the key holding another type
};
/// Enqueues `jobs` for the tick `tick` if it is still the one the schedule waits for and is due
/// by Redis' clock, and moves it on to `after`; `jobs` empty: the tick is skipped.
Call<Fired> fire_schedule(const Keys& k, const std::string& name, const std::string& timing,
                          std::int64_t tick, std::int64_t after, const std::vector<TickJob>& jobs,
                          job::Priority level = job::Priority::normal);
/// The queue's schedules: name -> stored definition.
Call<std::vector<std::pair<std::string, std::string>>> schedule_defs(const Keys& k);
/// Whether the queue has a schedule of that name.
Call<bool> schedule_exists(const Keys& k, const std::string& name);
/// One schedule's state (garbage fields read as 0 or empty; another type is an error).
Call<ScheduleState> schedule_state(const Keys& k, const std::string& name);
/// pause | resume | rm | forget (lua/schedule_control.lua): "ok", "missing", "config" (rm of a
/// config schedule) or "garbage".
Call<std::string> control_schedule(const Keys& k, const std::string& op, const std::string& name);

/// Whether a daemon holds a live lease on the queue (it is served right now).
Call<bool> leased(const Keys& k);
/// Redis' clock (ms).
Call<std::int64_t> redis_time();

// ---- jobs (jobqctl) ----
/// A job's state hash (empty: none).
using State = std::map<std::string, std::string>;
Call<State> read_state(const Keys& k, const std::string& id);
/// The claim on an id ("" when none).
Call<std::string> read_claim(const Keys& k, const std::string& id);
/// Whether `worker` holds `token` (a claim's hold).
Call<bool> holds(const Keys& k, const std::string& worker, const std::string& token);
/// Submits a job (its copy marked by marked_submission): true when queued, false when it waits
/// for the job of its id that is not over yet.
Call<bool> submit(const Keys& k, const std::string& id, const std::string& queue,
                  const std::string& copy, std::int64_t submitted_at,
                  std::optional<std::int64_t> run_at, job::Priority level = job::Priority::normal);
/// A submission's unique key, and how its queue locks it.
struct UniqueAsk {
  std::string key;
  UniqueRule rule;
  std::string expected;  // debounce: the holder it may replace (as submit said), "" for none
  Millis keep_failed{7 * 24 * 3600 * 1000LL};  // a replaced job's state is kept this long
};
/// What a submission with a unique key did (lua/submit.lua).
struct Submitted {
  enum class What { queued, waits, duplicate, again, garbage } what = What::queued;
  /// duplicate: the job holding the key; queued: the job it replaced (debounce; "" none);
  /// again: the holder now (debounce: not the one expected); garbage: Redis' error.
  std::string other;
};
/// Submits a job with a unique key: refused while another job holds the key (lock, throttle),
/// or replacing the holder that still waits (debounce, whose holder must be read first).
Call<Submitted> submit(const Keys& k, const std::string& id, const std::string& queue,
                       const std::string& copy, std::int64_t submitted_at,
                       std::optional<std::int64_t> run_at, const UniqueAsk& unique,
                       job::Priority level = job::Priority::normal);
/// Moves a lock's foreign value aside (repair.lua), as the queue's other keys' are.
Call<std::vector<Repaired>> repair_lock(const Keys& k, const std::string& unique_key,
                                        std::int64_t now_ms);
/// Moves foreign values at `keys` (each not of its type in `types`: list, hash, zset, string...)
/// aside, each to Keys::aside(key, now_ms).
Call<std::vector<Repaired>> repair_keys(std::vector<std::string> keys,
                                        std::vector<std::string> types, std::int64_t now_ms);
struct CancelAnswer {
  std::string what;    // cancelled, waits, gone, requested, unheld, final
  std::string status;  // final: the job's status
};
/// `how`: pending, delayed, waiting (`copy` found there; waiting: a job waiting for its
/// dependencies, waiting_copy()) or request. `payload`: what the cancelled
/// state keeps of it (retain.payload: retained_payload(copy)); "" for none. `unique_key`: the
/// job's, whose lock goes with it when it is cancelled while waiting ("" none, or a lock its end
/// keeps).
Call<CancelAnswer> cancel(const Keys& k, const std::string& queue, const std::string& id,
                          const std::string& how, const std::string& copy, Millis keep,
                          const std::string& why, const std::string& payload = "",
                          const std::string& unique_key = "");
/// The copy of job `id` in `waiting` (docs/workflows.md; "" when none waits there): what cancel's
/// `waiting` takes out.
Call<std::string> waiting_copy(const Keys& k, const std::string& id);
/// Takes one exact copy out of `where` (pending, pending:high, pending:low or delayed: the list of
/// its priority, Keys::waiting_list): false when it is not there (a daemon
/// took it). Then push_pending or put_delayed: how jobqctl cancel moves a copy waiting outside its
/// id's home shard to that home, where the cancel script finds it with the job's state and claim.
Call<bool> take_copy(const Keys& k, const std::string& where, const std::string& copy);
/// Adds a copy to delayed, due at `score` (as delayed_slice read it).
Call<redis::Done> put_delayed(const Keys& k, const std::string& copy, const std::string& score);
/// Slices of where jobs wait, for jobqctl jobs and cancel.
/// `where`: pending, or the list of a priority (pending:high, pending:low).
Call<long long> pending_length(const Keys& k, const std::string& where = "pending");
Call<std::vector<std::string>> pending_slice(const Keys& k, long long from, long long to,
                                             const std::string& where = "pending");
/// The lists jobs wait in, in the order jobqctl reads them: high, normal, low.
inline constexpr const char* kWaitingLists[] = {"pending:high", "pending", "pending:low"};
Call<long long> delayed_count(const Keys& k);
/// (job, score) pairs.
Call<std::vector<std::pair<std::string, std::string>>> delayed_slice(const Keys& k, long long from,
                                                                     long long to);
Call<long long> dead_count(const Keys& k);
Call<std::vector<std::pair<std::string, std::string>>> dead_slice(const Keys& k, long long from,
                                                                  long long to);
// ---- search (the dashboard) ----
/// One step of a SCAN over the shard's job state keys (lua/scan_states.lua): the next cursor
/// ("0" when done) and the ids found.
struct ScanStep {
  std::string next;
  std::vector<std::string> ids;
};
Call<ScanStep> scan_states(const Keys& k, const std::string& cursor, std::size_t count);
/// Fields of one job's state ("" for each one it lacks, or when it has none).
Call<std::vector<std::string>> state_fields(const Keys& k, const std::string& id,
                                            const std::vector<std::string>& fields);
/// Whether job `id` is among the dead ones (kept for retry).
Call<bool> is_dead(const Keys& k, const std::string& id);
/// Dead jobs' JSON as kept for retry ("" for one there is none of).
Call<std::vector<std::string>> dead_bodies(const Keys& k, const std::vector<std::string>& ids);

/// The workers holding a lease on the queue (expired ones too: their jobs are still held).
Call<std::vector<std::string>> lease_holders(const Keys& k);

/// "running" per queue as every view shows it (jobqctl queues, stats, /api): from the live
/// daemons' heartbeats (store/heartbeat.hpp).
using store::activity;

}  // namespace jq::store
