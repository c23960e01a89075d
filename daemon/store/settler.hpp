// The Settler: the one batching writer of job state changes (lua/settle.lua), for jobs held in
// Redis and for spool files alike.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "async/async.hpp"
#include "job/error_kind.hpp"
#include "store/marker.hpp"
#include "store/queue_store.hpp"

namespace jq::store {

/// What became of a settlement.
enum class Settled {
  done,      // durable in Redis
  not_held,  // the job was no longer held (recovered by another daemon): nothing written
  refused,   // Redis refused this one (logged); a Redis job stays held, reconcile returns it
  renamed,   // (dead) the job's own id belongs to another job: recorded under the fresh one
  taken,     // (claim) another job owns the id: this one waits
};

/// Told once a settlement has been sent and answered. Runs on the loop, inside the settler's
/// task: it must not throw, and must not destroy the Settler.
class OnSettled {
 public:
  virtual void settled(Settled how) noexcept = 0;

 protected:
  ~OnSettled() = default;
};

/// One change of a held job's state (lua/settle.lua says what each writes).
struct Settlement {
  /// unlock: the job's unique key's lock goes if it names the job (pushed right after its end,
  /// which it never leaves: they go in one batch; or as it starts, `while: [queued]`).
  enum class Op : std::uint8_t { start, ok, retry, dead, back, cancel, wait, claim, unlock };
  Op op = Op::ok;
  std::uint64_t token = 0;  // its hold in Redis; 0 for a spool file
  std::string id, nonce;
  long long attempts = 0;  // this attempt (back: the attempts counted so far)
  std::string handler;
  std::string submitted_at, started_at;  // unix ms, Redis' clock
  bool fresh = false;                    // start: the job's first attempt
  bool state = true;                     // back: the job's state is its own to write
  std::string text;                      // ok: the result; retry, dead, cancel: the error
  job::ErrorKind kind = job::ErrorKind::none;
  Millis delay{0};  // retry, wait: due this long from now (Redis' clock)
  /// retry, back, wait, start: the copy rewritten as copy[0, cut) + tail (start: tail empty for
  /// no rewrite); dead: the job as kept with the dead ones.
  std::size_t cut = 0;
  std::string tail;
  std::string fresh_id;  // dead, for a job that never started: its id if its own is taken
  std::string claim;     // claim: the value (a spool file's `spool:<jid>`)
  std::string file;      // a spool job: its file as dropped (DIR/name), kept in its state
  /// ok, dead, cancel with retain.payload: the job's payload as its state keeps it
  /// (retained_payload); "" keeps none.
  std::string payload;
  std::string unique_key;  // unlock: the key whose lock goes
  /// back: the job's priority; on a queue with priorities it goes back to that level's list.
  job::Priority level = job::Priority::normal;
  OnSettled* notify = nullptr;
};

/// Batches settlements into one settle script call per round trip: while a batch is in flight,
/// new ones gather for the next. A batch that meets a lost connection is sent again once Redis is
/// back (every settlement can be made twice), so nothing is dropped while Redis is away. One that
/// Redis refuses is logged with its job and does not hold up the others; a foreign value at one
/// of the queue's keys (WRONGTYPE, for the whole batch or one change) is moved aside and what it
/// stopped is sent again. Retention and the other settings are read from the store at each
/// batch, so a reload applies from the next one.
class Settler {
 public:
  explicit Settler(QueueStore& store);
  Settler(const Settler&) = delete;
  Settler& operator=(const Settler&) = delete;
  ~Settler();

  void start();
  /// Stops the writing task (what is queued stays unwritten: flush first).
  async::Task<void> stop();

  void push(Settlement s);

  /// Waits until everything queued so far is written; false if `timeout` passed first.
  async::Task<bool> flush(Millis timeout);
  /// Settlements queued or in flight.
  std::uint64_t backlog() const noexcept { return enqueued_ - written_; }
  /// Deaths written since the last call (dead jobs to trim to the queue's bounds).
  bool take_deaths() noexcept { return std::exchange(deaths_, false); }
  /// Set whenever a batch put outcomes in the queue's outbox for jobs that wait on its jobs
  /// (docs/workflows.md): whoever drains the outbox waits on it. Must outlive the Settler's task.
  void on_told(async::Event* e) noexcept { told_ = e; }
  /// `n` is going away: settlements that would tell it are still written, but tell nobody.
  void disown(const OnSettled* n) noexcept;

 private:
  async::Task<void> run();

  QueueStore& store_;
  std::vector<Settlement> queued_;
  std::vector<Settlement> sending_;  // the batch in flight
  async::Event work_;
  async::Event progress_;
  std::uint64_t enqueued_ = 0;
  std::uint64_t written_ = 0;
  bool deaths_ = false;
  async::Event* told_ = nullptr;
  async::Every refusals_{std::chrono::seconds(30)};
  async::JoinHandle<void> task_;
};

}  // namespace jq::store
