// One queue's Redis protocol for the daemon: its lease, fetching and claiming jobs, reading what
// was fetched (the one parse of a job), recovery, promotion and dead-job bounds, control.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <spdlog/spdlog.h>

#include "async/async.hpp"
#include "job/error_kind.hpp"
#include "job/job.hpp"
#include "redis/client.hpp"
#include "redis/router.hpp"
#include "store/calls.hpp"
#include "store/groups.hpp"
#include "store/keys.hpp"
#include "store/marker.hpp"
#include "store/stats.hpp"

namespace jq::store {

using namespace std::chrono_literals;

enum class WaitAnswer : std::uint8_t;  // store/after.hpp

/// Unix time in milliseconds on this host.
std::int64_t unix_ms();

struct Settings {
  std::string prefix = "jobq";
  std::string queue;
  std::string worker;  // this daemon's id: unique per process
  std::string default_handler;
  std::uint64_t max_job_bytes = 1024 * 1024;
  Millis lease = 30s;
  Millis keep_succeeded = 24h;  // 0: a succeeded job's state is deleted at once
  /// retain.payload: a job's final state keeps its payload (bounded: retained_payload).
  bool retain_payload = false;
  std::uint64_t dead_max = 10000;
  Millis dead_ttl = 168h;
  std::uint64_t max_attempts = 5;
  /// An attempt's state says `active` once it has run this long (0: before it runs); one that
  /// ends sooner goes straight to its outcome (the contract's state.active_after).
  Millis active_after = 100ms;
  /// redis.wait_replicas: outcomes count as written once this many replicas have them (WAIT),
  /// waiting at most wait_timeout; 0: at once (Redis' asynchronous replication).
  std::uint64_t wait_replicas = 0;
  Millis wait_timeout = 1s;
  /// Which of the queue's shards this store serves, of how many (store/shards.hpp).
  std::size_t shard = 0;
  std::size_t shards = 1;
  /// This shard's share of the queue's `rate:` (per_ms 0: none).
  Rate rate;
  /// This shard's share of the queue's `global_concurrency:` (0: none).
  std::size_t global_slots = 0;
  /// How the queue takes from its priority levels (`priorities:`; none: only from pending).
  Order order;
  /// How the queue's unique keys lock (`unique:`; its defaults for a queue without one, whose
  /// jobs may still bring a unique_key).
  UniqueRule unique;
  /// `group_by` (docs/groups.md): jobs sorted into groups, taken round robin (off: path empty).
  GroupRule groups;
  /// How long a job waits for a dependency nobody has submitted (docs/workflows.md).
  Millis after_timeout = std::chrono::hours(24);

  /// A config reload: takes what may change on a running queue from `next` (never the prefix,
  /// queue, worker or lease).
  void retune(const Settings& next) {
    default_handler = next.default_handler;
    max_job_bytes = next.max_job_bytes;
    keep_succeeded = next.keep_succeeded;
    retain_payload = next.retain_payload;
    dead_max = next.dead_max;
    dead_ttl = next.dead_ttl;
    max_attempts = next.max_attempts;
    active_after = next.active_after;
    rate = next.rate;
    global_slots = next.global_slots;
    order = next.order;
    unique = next.unique;
    after_timeout = next.after_timeout;
    // Its limits; whether the queue has groups, and by what, only changes with a restart.
    if (groups.on() && next.groups.on()) {
      groups.rate = next.groups.rate;
      groups.slots = next.groups.slots;
    }
  }
};

/// The most of a job's payload its state keeps (retain.payload): a longer one is cut there (on a
/// character boundary) and marked with "..." after it, which no JSON text ends with.
inline constexpr std::size_t kRetainedPayloadBytes = 4096;

/// A job's payload as its final state keeps it: its text as in the job (job::payload_text),
/// else as parsed, cut to kRetainedPayloadBytes; valid UTF-8.
std::string retained_payload(const job::Job& j);
/// The same from a job's text alone (a copy jobqctl cancels): "" when it has no payload to find.
std::string retained_payload(std::string_view job_text);

/// A held job as the daemon reads it: the one parse of its text (job::parse), and what jobqd's
/// marker says of its past. Everything the job's end needs is here.
struct Reading {
  std::uint64_t token = 0;
  std::optional<job::Job> job;  // when it is valid
  std::string invalid;          // why it is not
  /// The id its state is kept under: the job's own, the one jobqd gave it before (its marker),
  /// or a new one; "" for an invalid job whose id cannot be known.
  std::string id;
  bool claims = false;    // its id is to be claimed before it runs (not one jobqd made up)
  long long attempt = 1;  // this attempt (1 for the first)
  long long max_attempts = 1;
  std::string submitted_at;  // unix ms, Redis' clock
  std::string nonce;         // the claim it owns its id under
  std::string handler;       // for its state
  Copy copy;                 // where its marker goes (cut and tail)
  /// With retain.payload, its payload as its final state keeps it (retained_payload); else "".
  std::string payload;
  /// Its unique key ("" none): the job's lock is taken with its claim and let go of with it.
  std::string unique_key;
  /// Its priority (its `priority` field, as parsed): the level's list it goes back to when it
  /// is given back or taken back, on a queue with priorities (docs/priorities.md).
  job::Priority level = job::Priority::normal;
  /// It names jobs it waits for (`after`) and has not waited yet (a job pushed with LPUSH): it
  /// enters `waiting` (QueueStore::enter_waiting) instead of running.
  bool waits = false;
};

/// Reads a held copy (a fetch's, or one recovery found). `now` (Redis' clock) stands for
/// submitted_at when the copy carries none.
Reading read_held(std::uint64_t token, std::string_view copy, const job::Rules& rules,
                  const Settings& s, std::int64_t now);

/// A job fetched from one shard whose id lives in another (a sharded queue): it is not claimed
/// here, but forwarded to its home shard (QueueStore::forward), as it was held.
struct Away {
  std::uint64_t token = 0;
  std::size_t home = 0;
  std::string copy;
};

/// What a fetch (and the claim after it) brought, ready to hand over.
struct Fetched {
  std::vector<Reading> jobs;  // held and claimed (or invalid: to be settled dead)
  /// Held, but another job owns their id: each goes to wait in delayed for a second
  /// (held::wait), and the claim that owns its id is named (check_claim may find it stale). A
  /// job whose lock's key held garbage (moved aside now) waits so too, naming no claim.
  std::vector<std::pair<Reading, std::string>> waits;
  /// Held, but another job holds their unique key (lock, throttle): each ends cancelled naming
  /// that job (its id here).
  std::vector<std::pair<Reading, std::string>> duplicates;
  std::vector<Away> away;  // to forward home before the others are handed over
  /// Held, valid, and to wait for the jobs they name (Reading::waits): not claimed, not run.
  std::vector<Reading> afters;
  bool lease_lost = false;
  bool paused = false;
  std::int64_t limited_ms = 0;  // >0: a limit held jobs back; look again in this long
  Limit limited_by = Limit::none;
  std::size_t popped = 0;  // jobs this call's fetch took from pending
  /// A fetch's outcome after jobs already ready here (a claim's): its jobs after them, its
  /// jobs for other shards, and what it said of the queue.
  void append(Fetched&& later) {
    for (auto& r : later.jobs) jobs.push_back(std::move(r));
    for (auto& a : later.away) away.push_back(std::move(a));
    for (auto& r : later.afters) afters.push_back(std::move(r));
    lease_lost = later.lease_lost;
    paused = later.paused;
    limited_ms = later.limited_ms;
    limited_by = later.limited_by;
    popped = later.popped;
  }
};

/// Jobs a fetch held and read whose ids are still to be claimed before they run: their claim
/// goes out with the next fetch, in the same write (QueueStore::fetch(n, unclaimed)). Oldest
/// first; `asks[i]` is the claim of `jobs[asked[i]]`.
struct Unclaimed {
  std::vector<Reading> jobs;
  std::vector<ClaimAsk> asks;
  std::vector<std::size_t> asked;
  bool empty() const noexcept { return jobs.empty(); }
};

class QueueStore {
 public:
  QueueStore(redis::Client& main, redis::Client& blocking, Settings settings, job::Rules rules);

  const Keys& keys() const noexcept { return keys_; }
  const Settings& settings() const noexcept { return s_; }
  Settings& settings() noexcept { return s_; }
  /// How the queue's jobs are read (its handlers and size limit); a reload changes them.
  const job::Rules& rules() const noexcept { return rules_; }
  job::Rules& rules() noexcept { return rules_; }
  redis::Client& client() noexcept { return main_; }
  /// Clients for other slots' keys (jobs that wait for others: their dependencies may be in other
  /// queues, on other nodes of a cluster). Without, everything goes to the queue's own client.
  void set_router(redis::Router* r) noexcept { router_ = r; }
  /// The client whose connection serves `key`: the queue's own for its slot (and on a single
  /// Redis), else the router's.
  redis::Client& route(const std::string& key);
  redis::Client& blocking() noexcept { return blocking_; }
  /// Redis' clock as last seen (ms), carried forward on this host's clock: job times written
  /// from the daemon (started_at) are on Redis' clock like the rest.
  std::int64_t redis_now() const noexcept { return unix_ms() + clock_offset_; }
  /// With a global concurrency: the slots its last fetch left free, per live worker (what this
  /// one may hold beyond what it can start at once; 0 under a cap the daemons fill).
  std::size_t cap_share() const noexcept { return cap_share_; }
  /// With group_by: what the last group fetch saw (for /metrics, the dashboard and jobqctl).
  struct GroupView {
    long long with_work = 0;  // groups in the ring
    /// Groups a limit held back at their last turn, and the jobs waiting in each then: at most
    /// kGroupsShown, the most waiting first.
    std::vector<std::pair<std::string, long long>> held_back;
  };
  static constexpr std::size_t kGroupsShown = kHeldBackGroups;  // as the heartbeat carries
  const GroupView& group_view() const noexcept { return group_view_; }

  /// Runs `call` until Redis answers: a lost connection is waited out, a foreign value at one of
  /// the queue's keys moved aside (repair()), anything else logged (at most every 30 s, saying
  /// `what` failed) and tried again a second later. For the loops that must not give up.
  template <class T>
  async::Task<T> until_answered(const Call<T>& call, const char* what);
  /// With wait_replicas: waits (WAIT) until that many replicas have what the main connection
  /// wrote so far, at most wait_timeout, and says so (rate-limited) when fewer did. What was
  /// written stays written either way: this narrows what a failover can lose, it undoes nothing.
  async::Task<void> replicated(const char* what);

  // ---- the lease ----
  async::Task<OpResult<redis::Done>> register_lease();
  async::Task<OpResult<bool>> renew_lease();
  async::Task<OpResult<bool>> release_lease();

  // ---- fetching ----
  /// What a fetch brought: `got`, what may run now (the jobs whose claim went with it, then its
  /// own when none of them needs one); `unclaimed`, its own jobs that do (for the next fetch).
  struct Waited {
    OpResult<Fetched> got = OpError{OpError::Kind::connection, "not sent"};
    Unclaimed unclaimed;
    std::string wait_error;  // fetch_when_pending: why the wait failed
  };
  /// Claims `claim_first` (the last fetch's unclaimed jobs) and holds up to `n` more jobs, in one
  /// write: a round trip a batch. `n` may be 0 (the claim alone).
  async::Task<Waited> fetch(std::size_t n, Unclaimed claim_first);
  /// Holds up to `n` jobs, reads them, claims their ids: what may run now (two round trips when
  /// ids are to be claimed).
  async::Task<OpResult<Fetched>> fetch(std::size_t n);
  /// Holds up to `n` jobs after waiting (on the blocking connection) until pending is not empty,
  /// at most `block`: the fetch goes out pipelined behind a BLMOVE (from the list onto its own
  /// tail: it moves nothing), so Redis runs it the moment the wait ends. It runs however the wait
  /// ends (a job, the timeout, unblock(), an error); `wait_error` says why the wait failed.
  /// Nothing is claimed: what needs a claim comes back unclaimed.
  async::Task<Waited> fetch_when_pending(std::size_t n, Millis block);
  /// Ends a fetch_when_pending() wait now (CLIENT UNBLOCK on the main connection), for a stop or
  /// a pause. Never throws; when Redis refuses (an ACL without CLIENT) the wait ends by itself.
  async::Task<void> unblock();
  bool waiting() const noexcept { return waiting_; }

  /// A sharded queue: the stores of all its shards, in order (this one among them), for
  /// forward(). Set before the first fetch.
  void join(std::vector<QueueStore*> shards) { shards_ = std::move(shards); }
  /// Sends jobs of another shard home: pushed onto their home shard's pending, then dropped from
  /// this worker's hold here; the tokens are let go either way. A job whose push failed stays
  /// held in Redis and goes back to this shard's pending with the next reconcile (then comes
  /// here again); one pushed whose drop failed is in both places, and its id's claim keeps the
  /// two from running at once (at least once, as after any crash).
  async::Task<void> forward(std::vector<Away> away);

  /// Drops `owner`'s claim on `id` if no job holds it any more (garbage, a job deleted by hand),
  /// so that the jobs waiting for that id do not wait for ever. At most once a second per id.
  async::Task<void> check_claim(const std::string& id, const std::string& owner);

  // ---- jobs that wait for others (docs/workflows.md; store/queue_after.cpp) ----
  /// A fetched job with `after` (Reading::waits) moves from this worker's hold into `waiting`,
  /// then its dependencies' slots learn of it. `taken`: another job of its id is not over (it is
  /// still held: the caller has it wait as any such job); `not_held`: recovered by another
  /// daemon meanwhile (forgotten here). An error leaves it held (reconcile returns it) or, after
  /// the first step, in `registering` (the due poll registers it again).
  async::Task<OpResult<WaitAnswer>> enter_waiting(const Reading& r);
  /// Delivers up to `n` outcomes of the queue's outbox, oldest first, each to its waiting job's
  /// slot (after_resolve), then out of the outbox. How many were taken; an error stops there (the
  /// rest stay for the next drain: telling one twice is harmless).
  async::Task<OpResult<std::size_t>> deliver_outcomes(std::size_t n);
  /// Up to `n` waiting jobs past their after_timeout ended or released by their policy, and up to
  /// `n` whose registration a crash cut short told to their dependencies again. How many.
  async::Task<OpResult<std::size_t>> after_upkeep(std::size_t n);

  // ---- group_by (queue_groups.cpp) ----
  /// How many jobs a sort holds from pending at most: big batches, so that one group's backlog
  /// in pending never stands long in front of another's.
  static constexpr std::size_t kSortBatch = 500;
  /// A queue without group_by: moves the jobs left in groups' lists (group_by was removed from
  /// its config) back to pending, round robin, each group's oldest first; how many it moved.
  /// Called when promote() says the ring holds groups.
  async::Task<OpResult<long long>> ungroup();

  // ---- upkeep ----
  /// Takes back the jobs of workers whose lease ran out; returns when the next one runs out.
  async::Task<OpResult<Expired>> recover_expired(std::size_t max_workers = 10);
  /// Returns to pending every job Redis holds for this worker that it does not know of.
  async::Task<OpResult<Recovered>> reconcile();
  /// Moves due delayed jobs to pending; when the next one is due.
  async::Task<OpResult<Due>> promote(std::size_t limit = 1000);
  /// Drops dead jobs past dead_max and dead_ttl.
  async::Task<OpResult<long long>> trim_dead();
  /// Moves foreign values at the queue's keys aside (after Redis said WRONGTYPE), each logged.
  async::Task<OpResult<std::vector<Repaired>>> repair();
  /// The pause flag and the cancel requests.
  async::Task<OpResult<Control>> control();

  // ---- jobs held ----
  /// A job's end was written (or it is someone else's now): the token is no longer held.
  void released(std::uint64_t token) { held_.erase(token); }
  /// Forgets every held job (the lease was lost: those jobs are someone else's now).
  void forget_all() noexcept { held_.clear(); }
  std::size_t held() const noexcept { return held_.size(); }
  /// Lets go of tokens a fetch handed over that will not run (given back, or gone).
  void forget(std::uint64_t token) { held_.erase(token); }

 private:
  struct FetchCall {
    std::uint64_t first = 0;
    std::size_t n = 0;
    Call<FetchBatch> call;
  };
  FetchCall begin_fetch(std::size_t n);
  async::Task<Waited> wait_and_fetch(std::size_t n, Millis block);
  /// A wait for pending on the blocking connection (BLMOVE from the list onto its own tail: it
  /// moves nothing), with the connection's id asked in the same write when not known yet.
  struct Wait {
    std::optional<redis::PendingReply> id;
    std::uint64_t generation = 0;
    redis::PendingReply reply;
  };
  Wait begin_wait(Millis block);
  /// Why the wait failed ("" when it did not); `woke`: it ended on a job in pending.
  async::Task<std::string> end_wait(Wait& w, bool* woke = nullptr);
  /// After the fetch reply: reads every job and keeps the tokens; the jobs go to `unclaimed`
  /// when any of them needs a claim (in order: none runs before an older one), else to the
  /// result's jobs.
  OpResult<Fetched> take(OpResult<FetchBatch> got, Unclaimed& unclaimed);
  /// The claim of `u` answered: its jobs into `out.jobs` (claimed, or needing none) and
  /// `out.waits` (another job owns the id). Not answered: they stay held without running, and
  /// reconcile returns them (and the error is returned).
  async::Task<std::optional<OpError>> claimed(Unclaimed u,
                                              OpResult<std::vector<ClaimAnswer>> answer,
                                              Fetched& out);

  /// group_by's fetch: the claim of `claim` first, then a sort of pending if it may hold jobs,
  /// then up to `n` jobs round robin from the groups.
  async::Task<Waited> fetch_grouped(std::size_t n, Unclaimed claim);
  /// group_by's wait: for pending, then the same (a group's jobs sorted by another daemon are
  /// seen within the shorter wait: nothing wakes a wait on pending for them).
  async::Task<Waited> wait_grouped(std::size_t n, Millis block);
  /// Holds up to kSortBatch jobs from pending, reads each one's group, moves them to their groups'
  /// lists. A failure leaves them held, unknown to this daemon: reconcile returns them to pending.
  async::Task<std::optional<OpError>> sort_pending();
  /// Up to `n` jobs from the groups (asking again, a few times at most, when the ring's head had
  /// groups the call did not name, or pending jobs to sort first unless `sorted_now`).
  async::Task<OpResult<FetchBatch>> take_from_groups(std::size_t n, bool sorted_now);
  /// Notes the groups a group fetch found held back (group_view()).
  void note_held_back(const std::vector<std::pair<std::string, long long>>& waiting);
  /// Moves foreign values at a group's keys aside, saying so.
  async::Task<void> repair_group(const std::string& group);

  /// What recovery does with one held copy.
  RecoverItem take_back_item(const std::string& token, const std::string& copy,
                             const std::string& worker, std::int64_t now) const;
  async::Task<OpResult<Recovered>> take_back(const std::string& worker, bool own,
                                             std::vector<std::pair<std::string, std::string>> held,
                                             const std::string& why);

  redis::Client& main_;
  redis::Router* router_ = nullptr;
  redis::Client& blocking_;
  Settings s_;
  job::Rules rules_;
  Keys keys_;
  std::vector<QueueStore*> shards_;
  // Each shard's tokens in a range of their own: the heartbeat names the queue's running jobs by
  // token, whatever shard holds them.
  std::uint64_t next_token_ = 1;
  std::unordered_set<std::uint64_t> held_;
  std::int64_t clock_offset_ = 0;
  /// The other workers holding a lease on this queue, as the last fetch that found one it was
  /// not told of said (global concurrency counts what each holds).
  std::vector<std::string> others_;
  /// The global concurrency's slots left per live worker at the last fetch (cap_share()).
  std::size_t cap_share_ = 0;
  // group_by: the ring's head as the last group fetch left it (the groups the next one names),
  // whether pending may hold jobs to sort, and what the last fetch saw.
  std::vector<std::string> group_head_;
  bool sort_due_ = true;
  GroupView group_view_;
  std::map<std::string, std::pair<long long, async::Clock::time_point>> held_back_seen_;
  // Tokens of a fetch whose reply has not come back yet: reconcile leaves them alone.
  std::uint64_t fetching_from_ = 0, fetching_to_ = 0;
  // The blocking connection's CLIENT ID, for unblock(), and the connection it belongs to.
  std::string blocking_id_;
  std::uint64_t blocking_generation_ = 0;
  bool waiting_ = false;
  // Stale-claim checks already made, by id: at most one a second per id.
  std::unordered_map<std::string, async::Clock::time_point> stale_checked_;
  async::Every upkeep_errors_{std::chrono::seconds(30)};
  async::Every unreplicated_{std::chrono::seconds(30)};
};

template <class T>
async::Task<T> QueueStore::until_answered(const Call<T>& call, const char* what) {
  for (;;) {
    OpResult<T> r = co_await run(main_, call);
    if (r.ok()) co_return std::move(*r);
    const OpError& e = r.error();
    if (upkeep_errors_.due()) {
      spdlog::error("queue {}: {} failed: {}; {}", s_.queue, what, e.message,
                    e.connection() ? "trying again once Redis is back" : "trying again");
    }
    if (e.connection()) {
      co_await main_.wait_connected();
      continue;
    }
    if (e.wrong_type()) {
      auto fixed = co_await repair();
      if (fixed.ok() && !fixed->empty()) continue;
    }
    co_await async::sleep(1s);
  }
}

}  // namespace jq::store
