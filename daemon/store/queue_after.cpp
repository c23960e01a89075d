// The queue store's side of jobs that wait for others (docs/workflows.md): a fetched job with
// `after` moved into `waiting`, and the queue's outbox delivered to the waiting jobs it tells.
#include <charconv>
#include <map>
#include <optional>

#include <spdlog/spdlog.h>

#include "config/units.hpp"
#include "redis/cluster.hpp"
#include "store/after.hpp"
#include "store/queue_store.hpp"
#include "store/shards.hpp"

namespace jq::store {

redis::Client& QueueStore::route(const std::string& key) {
  if (!router_ || main_.connect_options().url.kind != redis::Url::Kind::cluster ||
      redis::slot_of(key) == redis::slot_of(keys_.pending)) {
    return main_;
  }
  return router_->client(key);
}

async::Task<OpResult<WaitAnswer>> QueueStore::enter_waiting(const Reading& r) {
  // Its copy as pending would hold it once released: the job's text (with the id jobqd gave it,
  // if any) and a marker of no attempts, so that it keeps its id and submitted_at.
  std::int64_t arrived = redis_now();
  (void)std::from_chars(r.submitted_at.data(), r.submitted_at.data() + r.submitted_at.size(),
                        arrived);
  // read_held gave the job its id (r.id is the job's own or the one jobqd gave it).
  Waiting w = waiting_of(*r.job, s_.queue, arrived, s_.after_timeout);
  w.token = r.token;
  w.worker = s_.worker;
  w.keep_failed_ms = s_.dead_ttl.count();
  w.max_job_bytes = s_.max_job_bytes;
  const auto call = after_wait_held(keys_, w);
  OpResult<WaitAnswer> said = co_await run(main_, call);
  if (!said.ok() || *said == WaitAnswer::taken) co_return said;
  held_.erase(r.token);  // out of this worker's hold (or someone else's already)
  if (*said == WaitAnswer::not_held) co_return said;
  const Route via = [this](const std::string& key) -> redis::Client& { return route(key); };
  OpResult<long long> told = co_await register_waiter(via, s_.prefix, w, s_.shards);
  if (!told.ok() && upkeep_errors_.due()) {
    spdlog::error(
        "queue {}: job {} waits, but telling what it waits for failed ({}); the due poll tries "
        "again",
        s_.queue, w.id, told.error().message);
  }
  co_return said;
}

async::Task<OpResult<std::size_t>> QueueStore::deliver_outcomes(std::size_t n) {
  const auto head = outbox_head(keys_, n);
  OpResult<std::vector<std::string>> entries = co_await run(main_, head);
  if (!entries.ok()) co_return entries.error();
  // The waiting jobs' queues' shard counts, read once a drain.
  std::map<std::string, std::size_t> counts{{s_.queue, s_.shards}};
  // The outcomes for each waiting job (QUEUE/ID), in the outbox's order, each job once in the
  // order first named: one after_resolve a job and drain. Each to its job's slot, all at once
  // (pipelined where they share a node; each step is atomic, and telling one twice is
  // harmless), then the entries told out of the outbox.
  struct ForJob {
    std::string to_queue, to_id;
    std::vector<Outcome> outcomes;
    std::vector<const std::string*> entries;  // whence each came
  };
  std::vector<ForJob> jobs;
  std::map<std::string, std::size_t> job_at;
  std::vector<Call<long long>> removals;
  for (const auto& text : *entries) {
    auto e = outbox_entry(text);
    if (!e) {
      spdlog::error(
          "queue {}: dropped an entry of {} that is no outcome jobqd wrote (garbage written by "
          "hand?): {}",
          s_.queue, keys_.outbox, text.substr(0, 200));
      removals.push_back(outbox_done(keys_, text));
      continue;
    }
    auto [at, fresh] = job_at.emplace(e->to_queue + "/" + e->to_id, jobs.size());
    if (fresh) jobs.push_back(ForJob{e->to_queue, e->to_id, {}, {}});
    jobs[at->second].outcomes.push_back(std::move(e->outcome));
    jobs[at->second].entries.push_back(&text);
  }
  std::vector<Call<Resolved>> tells;
  for (const auto& j : jobs) {
    auto it = counts.find(j.to_queue);
    if (it == counts.end()) {
      const Keys of(s_.prefix, j.to_queue);
      const auto ask = read_shards(of);
      OpResult<std::size_t> got = co_await run(route(of.shards), ask);
      if (!got.ok()) co_return got.error();
      it = counts.emplace(j.to_queue, std::max<std::size_t>(1, *got)).first;
    }
    const std::size_t shards = it->second;
    const Keys to(s_.prefix, j.to_queue,
                  shard_tags(j.to_queue, shards).at(home_shard(j.to_id, shards)));
    // The waiting job's queue's bounds are this daemon's when it serves it; otherwise the
    // defaults (the job was checked against its own when it began to wait).
    const bool own = j.to_queue == s_.queue;
    std::vector<const Outcome*> told;
    for (const auto& o : j.outcomes) told.push_back(&o);
    tells.push_back(after_resolve(to, j.to_queue, j.to_id, told,
                                  own ? s_.dead_ttl.count() : Settings{}.dead_ttl.count(),
                                  own ? s_.max_job_bytes : Settings{}.max_job_bytes));
  }
  std::vector<async::Task<OpResult<Resolved>>> sending;
  sending.reserve(tells.size());
  // after_resolve's first key (waiting) is in the waiting job's slot.
  for (const auto& call : tells) sending.push_back(run(route(call.req.keys.front()), call));
  std::vector<OpResult<Resolved>> said = co_await async::gather(std::move(sending));
  std::optional<OpError> failed;
  for (std::size_t i = 0; i < said.size(); ++i) {
    if (said[i].ok()) {
      for (const std::string* text : jobs[i].entries) removals.push_back(outbox_done(keys_, *text));
    } else if (!failed) {
      failed = said[i].error();  // left in the outbox for the next drain
    }
  }
  std::vector<async::Task<OpResult<long long>>> removing;
  removing.reserve(removals.size());
  for (const auto& call : removals) removing.push_back(run(main_, call));
  std::vector<OpResult<long long>> removed = co_await async::gather(std::move(removing));
  for (auto& r : removed) {
    if (!r.ok() && !failed) failed = r.error();
  }
  if (failed) co_return *failed;
  co_return entries->size();
}

async::Task<OpResult<std::size_t>> QueueStore::after_upkeep(std::size_t n) {
  std::size_t done = 0;
  const std::int64_t now = redis_now();
  // Waiting jobs past their after_timeout: what they still wait for counts as failed.
  const auto overdue = after_overdue(keys_, now, n);
  OpResult<std::vector<std::string>> late = co_await run(main_, overdue);
  if (!late.ok()) co_return late.error();
  const std::string within = config::format_duration(s_.after_timeout);
  for (const auto& id : *late) {
    const auto expire =
        after_expire(keys_, s_.queue, id, now, within, s_.dead_ttl.count(), s_.max_job_bytes);
    OpResult<Resolved> r = co_await run(main_, expire);
    if (!r.ok()) co_return r.error();
    ++done;
  }
  // Flows whose writer (jobqctl, on a cluster) stopped between two steps: given up, their jobs
  // told through the outbox that they end cancelled (none of them has run: each waited for the
  // whole flow).
  const auto stopped = flows_overdue(keys_, now, n);
  OpResult<std::vector<std::string>> flows = co_await run(main_, stopped);
  if (!flows.ok()) co_return flows.error();
  for (const auto& fid : *flows) {
    const auto abort = flow_step(keys_, FlowStep::abort, fid,
                                 "not written whole: its writer stopped (or lost Redis) for " +
                                     config::format_duration(kFlowLease) + " before its last step");
    OpResult<long long> r = co_await run(main_, abort);
    if (!r.ok()) co_return r.error();
    if (*r == 1) {
      spdlog::warn(
          "queue {}: flow {} was not written whole (its writer stopped for {} between two "
          "steps): given up, its jobs end cancelled",
          s_.queue, fid, config::format_duration(kFlowLease));
    }
    ++done;
  }
  // Waiting jobs whose caller died before every dependency knew of them: told again.
  const auto stale = after_registering(keys_, now, kRegisterAgainAfter.count(), n);
  OpResult<std::vector<std::string>> half = co_await run(main_, stale);
  if (!half.ok()) co_return half.error();
  for (const auto& id : *half) {
    // What it still waits for (after_left: the same read jobqctl status makes); none: it no
    // longer waits.
    const auto untold = after_left(keys_, id);
    OpResult<std::optional<AfterLeft>> u = co_await run(main_, untold);
    if (!u.ok()) co_return u.error();
    if (*u) {
      Waiting w;
      w.id = id;
      w.queue = s_.queue;
      w.refs = std::move((*u)->refs);
      const Route via = [this](const std::string& key) -> redis::Client& { return route(key); };
      OpResult<long long> told = co_await register_waiter(via, s_.prefix, w, s_.shards);
      if (!told.ok()) co_return told.error();
      spdlog::info(
          "queue {}: job {} waited without every job it names knowing of it (a daemon "
          "stopped in between); told them now",
          s_.queue, id);
    } else {
      const auto forget = after_registered(keys_, id);
      OpResult<long long> gone = co_await run(main_, forget);
      if (!gone.ok()) co_return gone.error();
    }
    ++done;
  }
  co_return done;
}

}  // namespace jq::store
