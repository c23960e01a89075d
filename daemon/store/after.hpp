// Jobs that wait for other jobs (`after`, docs/workflows.md) in Redis: a job entering `waiting`
// in its slot, its dependencies' slots learning of it, and each dependency's outcome told to it
// (at most once in effect), which releases it or ends it by its policy.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "async/async.hpp"
#include "job/job.hpp"
#include "redis/client.hpp"
#include "store/call.hpp"
#include "store/keys.hpp"

namespace jq::store {

/// How long a waiting job waits for a dependency nobody has submitted, when its queue's config
/// says nothing (`after_timeout`, docs/workflows.md).
inline constexpr std::chrono::milliseconds kDefaultAfterTimeout = std::chrono::hours(24);

/// A job about to wait, as the daemon or jobqctl read it.
struct Waiting {
  std::string id;
  std::string queue;
  std::string copy;  // the copy that goes to pending once released (marker and all)
  /// Where in `copy` the outcomes go once released (before its marker or its closing brace).
  std::size_t cut = 0;
  std::string submitted_at;   // unix ms
  std::int64_t deadline = 0;  // unix ms: after_timeout from its arrival
  job::DependencyPolicy policy = job::DependencyPolicy::fail;
  job::Priority level = job::Priority::normal;
  std::vector<std::string> refs;  // QUEUE/ID each, in the job's order
  /// A job a daemon fetched (pushed with `after`): its token in `worker`'s inflight hash, whence
  /// it moves; 0 for a submission.
  std::uint64_t token = 0;
  std::string worker;
  /// Its queue's bounds, kept with it for whoever releases or ends it (a daemon of another queue
  /// delivers outcomes from its own outbox); 0: not known here (whoever delivers uses its own).
  std::int64_t keep_failed_ms = 0;
  std::uint64_t max_job_bytes = 0;
  /// A job of a flow written on a cluster: the flow's id, whose gate (`#flow/<fid>`) it waits
  /// for too, until the whole flow is written (lua/flow.lua); "" for any other.
  std::string flow;
};
/// Job `job` of `queue` (read with its `after`: job::parse with Rules::holds_dependencies) as it
/// waits, first seen at `now` (unix ms): its copy as pending would hold it (marked_submission),
/// the outcomes' place before the marker (the released copy stays one JSON object), every
/// reference QUEUE/ID (one without a queue is of `queue`), its deadline `now + timeout`, its
/// policy and its priority's list.
Waiting waiting_of(const job::Job& job, const std::string& queue, std::int64_t now,
                   std::chrono::milliseconds timeout = kDefaultAfterTimeout);

/// Into `waiting` (lua/after_wait.lua): true when it waits, false when another job of its id is
/// not over (nothing written). It is noted in `registering` until after_registered.
Call<bool> after_wait(const Keys& k, const Waiting& w);
/// The same for a job a daemon fetched (w.token set): from its inflight hash, if still held.
enum class WaitAnswer : std::uint8_t { waits, taken, not_held };
Call<WaitAnswer> after_wait_held(const Keys& k, const Waiting& w);

/// In a dependency's slot (lua/after_register.lua): `waiter` (QUEUE/ID) waits for these jobs of
/// queue `queue` (`k`'s): those final already go to the outbox; the others note it as their
/// dependent. How many were final.
Call<long long> after_register(const Keys& k, const std::string& queue, const std::string& waiter,
                               const std::vector<std::string>& ids);

/// A dependency's keys: its queue's, or its home shard's on a sharded queue (store::Admin knows).
using HomeOf = std::function<Keys(const std::string& queue, const std::string& id)>;
/// The after_register calls that tell every dependency of `w` of it: its references grouped by
/// slot (by `home`), at most kRegisterBatch ids a call, slots in the order their first
/// reference comes in `w.refs`. What each answers adds up to how many were final already.
std::vector<Call<long long>> after_registers(const Waiting& w, const HomeOf& home);
inline constexpr std::size_t kRegisterBatch = 1000;

/// Every dependency's slot has noted waiting job `id` (after_register for each): it leaves the
/// queue's `registering` set, which the due poll sweeps for what a crash left half told.
Call<long long> after_registered(const Keys& k, const std::string& id);

/// The second step of waiting, after after_wait, on the daemon's client: every dependency's slot
/// notes waiting job `w` (of a queue of `shards` shards): after_registers, the shard counts of
/// other queues read from Redis, then after_registered. How many were final already (their
/// outcomes are in their queues' outboxes). Idempotent: a failure part way leaves the job in
/// `registering`, and sending it again is harmless.
/// `route(key)`: the client whose connection serves `key` (on a cluster, the dependencies'
/// slots may be on other nodes).
using Route = std::function<redis::Client&(const std::string& key)>;
async::Task<OpResult<long long>> register_waiter(const Route& route, const std::string& prefix,
                                                 const Waiting& w, std::size_t shards);
/// What a waiting job still waits for, read from its after hash (jobqctl status).
struct AfterLeft {
  std::size_t total = 0;          // the references it waits for, final or not
  std::vector<std::string> refs;  // those not final yet (QUEUE/ID), in its after order
  /// A job of a flow written on a cluster: the flow's id while it is not written whole (its
  /// gate still shut), else "".
  std::string flow;
};
/// Job `id`'s after hash read; nullopt when it has none (it waits for nothing now).
Call<std::optional<AfterLeft>> after_left(const Keys& k, const std::string& id);

/// Whether job `id` waits in the queue's `waiting` hash (it is not over: its id is taken).
Call<bool> is_waiting(const Keys& k, const std::string& id);
/// The status job `id`'s state says ("" when it has no state): whether it was seen, whether it is
/// over.
Call<std::string> job_status(const Keys& k, const std::string& id);

/// How a dependency ended, as a waiting job is told it.
struct Outcome {
  std::string job;     // its id
  std::string queue;   // its queue
  std::string status;  // succeeded, failed, cancelled
  std::string result, error, error_kind;
  /// QUEUE/ID, as `after` names it.
  std::string ref() const { return queue + "/" + job; }
  /// The JSON object the job's handler gets among its `dependencies`.
  std::string json() const;
};

enum class Resolved : std::uint8_t {
  none,      // not waiting, not one of its dependencies, or told before
  noted,     // others are left
  ended,     // it ended by its policy (or over max_job_bytes); its dependents are in the outbox
  released,  // it went to its priority's list
};
/// Tells waiting job `id` of queue `queue` (`k`'s) how `o` ended (lua/after_resolve.lua).
Call<Resolved> after_resolve(const Keys& k, const std::string& queue, const std::string& id,
                             const Outcome& o, std::int64_t keep_failed_ms,
                             std::uint64_t max_job_bytes);
/// The same for several outcomes in one call (one drain's for one job), in their order: what
/// the last one counted says, or what decided the job.
Call<Resolved> after_resolve(const Keys& k, const std::string& queue, const std::string& id,
                             const std::vector<const Outcome*>& told, std::int64_t keep_failed_ms,
                             std::uint64_t max_job_bytes);

/// Waiting job `id`'s after_timeout (`within`, as its error says it: "24h") ended by `now` (the
/// clock its deadline was written by; after_overdue's): every dependency not final yet counts as
/// failed, "not seen within 24h", as an outcome told would (lua/after_expire.lua): policy fail or
/// skip ends it, run releases it. `none` when it no longer waits (then it only leaves
/// after_until) or waits with a later deadline.
Call<Resolved> after_expire(const Keys& k, const std::string& queue, const std::string& id,
                            std::int64_t now, const std::string& within,
                            std::int64_t keep_failed_ms, std::uint64_t max_job_bytes);
/// The waiting ids whose after_timeout ended by `now` (unix ms), at most `n`, the earliest first:
/// each for after_expire.
Call<std::vector<std::string>> after_overdue(const Keys& k, std::int64_t now, std::size_t n);

/// The re-registration sweep (docs/workflows.md): waiting ids still noted in `registering`
/// `older_than_ms` before `now` (Redis' clock: redis_time(); after_wait notes them by it), at
/// most `n`: their caller died before every dependency knew of them. What each still waits for is
/// after_left's (sent after_register again: it is idempotent), then after_registered.
Call<std::vector<std::string>> after_registering(const Keys& k, std::int64_t now,
                                                 std::int64_t older_than_ms, std::size_t n);

/// A flow written on a cluster (docs/workflows.md, "Flows across slots"; lua/flow.lua): its
/// record in the slot of `k`'s queue, stepped by jobqctl (begin, touch as it goes, done, or abort
/// when a job of it could not be written) and given up (abort) by a daemon of that queue once
/// its lease ran out.
enum class FlowStep : std::uint8_t { begin, touch, done, abort };
/// How long a flow being written may go without a step before a daemon gives it up.
inline constexpr std::chrono::milliseconds kFlowLease = std::chrono::seconds(30);
/// How long an ended flow's record stays (a given up one tells a late `done` so).
inline constexpr std::chrono::milliseconds kFlowKept = std::chrono::hours(1);
/// One step; `text` is `begin`'s members (QUEUE/ID, one per line) and `abort`'s why. 1: done,
/// begun, touched, or given up now; 0: given up before (done, touch) or ended before (abort);
/// -1: no such record.
Call<long long> flow_step(const Keys& k, FlowStep step, const std::string& fid,
                          const std::string& text = {},
                          std::chrono::milliseconds lease = kFlowLease);
/// The flows of `k`'s queue whose lease ran out by `now` (Redis' clock), at most `n`.
Call<std::vector<std::string>> flows_overdue(const Keys& k, std::int64_t now, std::size_t n);

/// One entry of a queue's outbox (lua/after_register.lua, after_resolve.lua write them): the
/// waiting job it is for (QUEUE/ID) and the outcome to tell it; nullopt for an entry that is not
/// one (garbage: the drain drops it, and says so).
struct OutboxEntry {
  std::string to_queue, to_id;
  Outcome outcome;
};
std::optional<OutboxEntry> outbox_entry(std::string_view text);
/// The first `n` entries of the outbox, oldest first (their texts, for outbox_done).
Call<std::vector<std::string>> outbox_head(const Keys& k, std::size_t n);
/// An entry delivered (or dropped): out of the outbox, once.
Call<long long> outbox_done(const Keys& k, const std::string& text);

}  // namespace jq::store
