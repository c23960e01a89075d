// The queue store: fetch and claim, the one parse of a held job, recovery, promotion, bounds.
#include "store/queue_store.hpp"

#include <algorithm>
#include <charconv>

#include "job/id.hpp"
#include "job/text.hpp"
#include "store/scripts.hpp"
#include "store/shards.hpp"

namespace jq::store {
namespace {

// A claim's hold: the worker and the token after the last ':' of `worker:token`, and after the
// '@' when a later hold took it over. Empty when the claim names none (a spool file's, garbage).
std::pair<std::string, std::string> hold_of(std::string_view claim) {
  if (auto at = claim.rfind('@'); at != std::string_view::npos) claim.remove_prefix(at + 1);
  auto colon = claim.rfind(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 == claim.size()) return {};
  std::string_view token = claim.substr(colon + 1);
  if (token.find_first_not_of("0123456789") != std::string_view::npos) return {};
  return {std::string(claim.substr(0, colon)), std::string(token)};
}

}  // namespace

std::int64_t unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string retained_payload(std::string_view job_text) {
  const auto text = job::payload_text(job_text);
  if (!text) return "";
  return job::to_utf8(job::clip_utf8(*text, kRetainedPayloadBytes));
}

std::string retained_payload(const job::Job& j) {
  const auto text = job::payload_text(j.raw);
  // Text the scan cannot read where the parser could (a byte order mark before it): as parsed.
  const std::string parsed =
      text ? std::string()
           : j.payload.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return job::to_utf8(job::clip_utf8(text ? *text : parsed, kRetainedPayloadBytes));
}

Reading read_held(std::uint64_t token, std::string_view held, const job::Rules& rules,
                  const Settings& s, std::int64_t now) {
  Reading r;
  r.token = token;
  r.copy = split(held);
  const auto& m = r.copy.marker;
  r.attempt = (m ? m->attempts : 0) + 1;
  r.submitted_at = m && !m->submitted_at.empty() ? m->submitted_at : std::to_string(now);
  r.handler = s.default_handler;
  r.max_attempts = static_cast<long long>(s.max_attempts);
  if (m && !job::valid_id(m->id)) {
    // Only jobqd writes markers; one that names no valid id was written by hand.
    r.invalid = "jobqd's marker on this job names no valid id ('" + m->id + "')";
    r.attempt = 0;
    return r;
  }
  auto parsed = job::parse(r.copy.body, rules, m ? std::string_view(m->id) : std::string_view());
  if (auto* bad = std::get_if<job::Invalid>(&parsed)) {
    r.invalid = std::move(bad->error);
    r.id = m ? m->id : bad->id;
    r.attempt = 0;  // it never runs
    return r;
  }
  job::Job j = std::get<job::Job>(std::move(parsed));
  if (m) {
    if (!j.id_assigned && j.id != m->id) {
      r.invalid = "its id '" + j.id + "' is not the id jobqd recorded for it ('" + m->id + "')";
      r.id = m->id;
      r.attempt = 0;
      return r;
    }
    // A job that brings no id has the one jobqd gave it when it first came (parse took it from
    // the marker: its copies carry it there only).
    r.nonce = m->nonce;
  } else if (j.id_assigned && s.shards > 1) {
    // A sharded queue: the id jobqd gives a job lives in the shard it was fetched from.
    j.id = new_id_in(s.shard, s.shards);
  }
  if (!j.unique_key.empty() && s.shards > 1) {
    // Its lock would be in one shard's slot, its id's claim maybe in another's: no one step
    // could take both.
    r.invalid = "unique_key: queue " + s.queue + " has " + std::to_string(s.shards) +
                " shards; unique jobs need a queue of one shard";
    r.id = m ? m->id : j.id_assigned ? "" : j.id;
    r.attempt = 0;
    return r;
  }
  r.id = j.id;
  r.unique_key = j.unique_key;
  r.level = j.priority;
  // A job released from waiting carries its dependencies' outcomes (parse took them from the
  // copy, marker and all); one pushed with `after` has not waited yet.
  r.waits = !j.after.empty() && j.dependencies.empty();
  r.claims = !j.id_assigned || (m && !m->nonce.empty());
  if (r.nonce.empty()) r.nonce = s.worker + ":" + std::to_string(token);
  r.handler = j.handler;
  if (j.max_attempts) {
    r.max_attempts =
        static_cast<long long>(std::min<std::uint64_t>(*j.max_attempts, s.max_attempts));
  }
  // Taken now, while the job's text is here (the hold keeps only what the job's end writes).
  if (s.retain_payload) r.payload = retained_payload(j);
  r.job = std::move(j);
  return r;
}

QueueStore::QueueStore(redis::Client& main, redis::Client& blocking, Settings settings,
                       job::Rules rules)
    : main_(main),
      blocking_(blocking),
      s_(std::move(settings)),
      rules_(std::move(rules)),
      keys_(s_.prefix, s_.queue, shard_tags(s_.queue, s_.shards).at(s_.shard)),
      next_token_((static_cast<std::uint64_t>(s_.shard) << 40) + 1) {}

// ---- the lease ----

async::Task<void> QueueStore::replicated(const char* what) {
  if (s_.wait_replicas == 0) co_return;
  const std::string n = std::to_string(s_.wait_replicas);
  const std::string ms = std::to_string(s_.wait_timeout.count());
  const std::array<std::string_view, 3> argv{"WAIT", n, ms};
  redis::PendingReply waiting = main_.send(argv, s_.wait_timeout);
  auto r = co_await waiting.result();
  std::string why;
  if (!r.ok()) {
    why = r.error().message;
  } else if (r->type != redis::Reply::Type::integer) {
    why = "WAIT answered " + r->describe();
  } else if (r->integer < static_cast<long long>(s_.wait_replicas)) {
    why = std::to_string(r->integer) + " of " + n + " replicas acknowledged within " + ms + " ms";
  }
  if (!why.empty() && unreplicated_.due()) {
    spdlog::warn(
        "queue {}: {} not confirmed on redis.wait_replicas replicas: {} (a failover now "
        "could lose them)",
        s_.queue, what, why);
  }
}

async::Task<OpResult<redis::Done>> QueueStore::register_lease() {
  const auto call = acquire(keys_, s_.worker, s_.lease);
  co_return co_await run(main_, call);
}

async::Task<OpResult<bool>> QueueStore::renew_lease() {
  const auto call = renew(keys_, s_.worker, s_.lease);
  co_return co_await run(main_, call);
}

async::Task<OpResult<bool>> QueueStore::release_lease() {
  const auto call = release(keys_, s_.worker);
  co_return co_await run(main_, call);
}

// ---- fetching ----

QueueStore::FetchCall QueueStore::begin_fetch(std::size_t n) {
  // The tokens are ours from now on, whatever becomes of the reply: a fetch sent again after a
  // lost reply must never reuse them (it would overwrite the jobs the first one held).
  FetchCall c{next_token_, n, {}};
  next_token_ += n;
  fetching_from_ = c.first;
  fetching_to_ = c.first + n;
  // A marked copy is longer than the job by its marker (a few hundred bytes at most): the exact
  // limit is read_held's, on the job itself.
  c.call = store::fetch(keys_, s_.worker, c.first, n, s_.max_job_bytes + 600, s_.rate,
                        Cap{s_.global_slots, others_}, s_.order);
  return c;
}

namespace {

// The answer of a request sent before (pipelined): a script Redis no longer had (a restart,
// SCRIPT FLUSH) did not run, and runs again now, by its source.
template <class T>
async::Task<OpResult<T>> answer_of(redis::Client& client, redis::PendingReply sent,
                                   const Call<T>& call) {
  OpResult<redis::Reply> r = co_await sent.result();
  if (r.ok() && redis::Script::not_cached(*r)) {
    r = co_await call.req.script->call(client, call.req.keys, call.req.args);
  } else if (r.ok()) {
    r = call.req.script->answer(std::move(*r));
  }
  if (!r.ok()) co_return r.error();
  co_return call.decode(std::move(*r));
}

}  // namespace

async::Task<QueueStore::Waited> QueueStore::fetch(std::size_t n, Unclaimed claim_first) {
  if (s_.groups.on() && n > 0) co_return co_await fetch_grouped(n, std::move(claim_first));
  // Both leave in this step's write; Redis runs the claim first, so a job of the fetch whose id
  // the claimed jobs take finds it taken.
  std::optional<Call<std::vector<ClaimAnswer>>> claim_call;
  std::optional<redis::PendingReply> claim_sent;
  if (!claim_first.asks.empty()) {
    claim_call.emplace(store::claim(keys_, claim_first.asks));
    claim_sent.emplace(
        claim_call->req.script->send(main_, claim_call->req.keys, claim_call->req.args));
  }
  std::optional<FetchCall> fc;
  std::optional<redis::PendingReply> fetch_sent;
  if (n > 0) {
    fc.emplace(begin_fetch(n));
    fetch_sent.emplace(fc->call.req.script->send(main_, fc->call.req.keys, fc->call.req.args));
  }
  Waited out;
  Fetched ready;
  std::optional<OpError> claim_error;
  if (claim_sent) {
    auto answer = co_await answer_of(main_, std::move(*claim_sent), *claim_call);
    claim_error = co_await claimed(std::move(claim_first), std::move(answer), ready);
  } else {
    ready.jobs = std::move(claim_first.jobs);
  }
  if (!fetch_sent) {
    const bool none = ready.jobs.empty() && ready.waits.empty() && ready.duplicates.empty();
    out.got = claim_error && none ? OpResult<Fetched>(*claim_error) : std::move(ready);
    co_return out;
  }
  OpResult<Fetched> got =
      take(co_await answer_of(main_, std::move(*fetch_sent), fc->call), out.unclaimed);
  if (!got.ok()) {
    // The claimed jobs run all the same; the fetch's error shows in the next one.
    if (ready.jobs.empty() && ready.waits.empty() && ready.duplicates.empty()) {
      out.got = got.error();
    } else {
      out.got = std::move(ready);
    }
    co_return out;
  }
  ready.append(std::move(*got));
  out.got = std::move(ready);
  co_return out;
}

async::Task<OpResult<Fetched>> QueueStore::fetch(std::size_t n) {
  Unclaimed nothing;
  Waited w = co_await fetch(n, std::move(nothing));
  if (w.unclaimed.empty() || !w.got.ok()) co_return std::move(w.got);
  Waited c = co_await fetch(0, std::move(w.unclaimed));
  if (!c.got.ok()) co_return std::move(c.got);
  Fetched& out = *w.got;
  for (auto& r : c.got->jobs) out.jobs.push_back(std::move(r));
  out.waits = std::move(c.got->waits);
  out.duplicates = std::move(c.got->duplicates);
  co_return std::move(out);
}

async::Task<QueueStore::Waited> QueueStore::fetch_when_pending(std::size_t n, Millis block) {
  // From the call on, not from when the task first runs: unblock() right after must know.
  waiting_ = true;
  if (s_.groups.on()) return wait_grouped(n, block);
  return wait_and_fetch(n, block);
}

QueueStore::Wait QueueStore::begin_wait(Millis block) {
  Wait w;
  const std::string secs = std::to_string(block.count() / 1000.0);
  // The connection's id, for unblock(): asked once per connection, in the same write.
  const bool ask_id = blocking_generation_ != blocking_.generation() || blocking_id_.empty();
  w.generation = blocking_.generation();
  if (ask_id) w.id.emplace(blocking_.command("CLIENT", "ID"));
  w.reply = blocking_.blocking_command(block, "BLMOVE", keys_.pending, keys_.pending, "RIGHT",
                                       "RIGHT", secs);
  return w;
}

async::Task<std::string> QueueStore::end_wait(Wait& w, bool* woke) {
  if (w.id) {
    OpResult<redis::Reply> got_id = co_await w.id->result();
    if (got_id.ok() && got_id->type == redis::Reply::Type::integer) {
      blocking_id_ = std::to_string(got_id->integer);
      blocking_generation_ = w.generation;
    }
  }
  OpResult<redis::Reply> waited = co_await w.reply.result();
  if (woke) *woke = waited.ok() && waited->type == redis::Reply::Type::string;
  if (waited.ok() && waited->is_error()) co_return waited->str;
  co_return std::string();
}

async::Task<QueueStore::Waited> QueueStore::wait_and_fetch(std::size_t n, Millis block) {
  const FetchCall fc = begin_fetch(n);
  Wait wait = begin_wait(block);
  // Its reply comes after the wait's: the same allowance.
  redis::PendingReply fetched =
      fc.call.req.script->send(blocking_, fc.call.req.keys, fc.call.req.args, block);
  Waited out;
  out.wait_error = co_await end_wait(wait);
  OpResult<FetchBatch> batch = co_await answer_of(blocking_, std::move(fetched), fc.call);
  waiting_ = false;
  out.got = take(std::move(batch), out.unclaimed);
  co_return out;
}

OpResult<Fetched> QueueStore::take(OpResult<FetchBatch> got, Unclaimed& unclaimed) {
  if (!got.ok()) {
    fetching_from_ = fetching_to_ = 0;  // lost or refused: reconcile may take these tokens back
    return got.error();
  }
  FetchBatch& batch = *got;
  if (batch.live_workers) {
    // The workers whose holds count against the global concurrency, from now on.
    others_.clear();
    for (auto& w : *batch.live_workers) {
      if (w != s_.worker) others_.push_back(std::move(w));
    }
  }
  if (batch.cap_share) cap_share_ = static_cast<std::size_t>(*batch.cap_share);
  Fetched out;
  out.lease_lost = batch.lease_lost;
  out.paused = batch.paused;
  out.limited_ms = batch.limited_ms;
  out.limited_by = batch.limited_by;
  out.popped = batch.jobs.size();
  if (batch.lease_lost || batch.paused || batch.jobs.empty()) {
    fetching_from_ = fetching_to_ = 0;
    return out;
  }
  clock_offset_ = batch.now - unix_ms();
  // Every token handed over is held from here: a job is never dropped.
  for (const auto& h : batch.jobs) held_.insert(h.token);
  fetching_from_ = fetching_to_ = 0;
  Unclaimed read;
  read.jobs.reserve(batch.jobs.size());
  for (auto& h : batch.jobs) {
    if (h.oversized) {
      Reading r;
      r.token = h.token;
      r.attempt = 0;
      r.invalid = "job is " + std::to_string(h.oversized) + " bytes, over max_job_bytes (" +
                  std::to_string(s_.max_job_bytes) + ")";
      r.submitted_at = std::to_string(batch.now);
      r.copy.cut = Copy::npos;
      read.jobs.push_back(std::move(r));
      continue;
    }
    Reading r = read_held(h.token, h.copy, rules_, s_, batch.now);
    if (r.job && r.claims && s_.shards > 1) {
      if (const std::size_t home = home_shard(r.id, s_.shards); home != s_.shard) {
        out.away.push_back({h.token, home, std::move(h.copy)});
        continue;
      }
    }
    if (r.job && r.waits) {
      // Into waiting, not claimed: its claim is taken when it is released and fetched again.
      out.afters.push_back(std::move(r));
      continue;
    }
    if (r.job && (r.claims || !r.unique_key.empty())) {
      // Its id to claim, its unique key to lock, or both.
      const std::string holder = s_.worker + ":" + std::to_string(h.token);
      ClaimAsk ask;
      ask.id = r.id;
      ask.nonce = r.nonce;
      if (r.nonce != holder) ask.value = r.nonce + "@" + holder;
      ask.claim_id = r.claims;
      ask.unique_key = r.unique_key;
      ask.rule = s_.unique;
      read.asks.push_back(std::move(ask));
      read.asked.push_back(read.jobs.size());
    }
    read.jobs.push_back(std::move(r));
  }
  if (read.asks.empty()) {
    out.jobs = std::move(read.jobs);
  } else {
    unclaimed = std::move(read);
  }
  return out;
}

async::Task<std::optional<OpError>> QueueStore::claimed(Unclaimed u,
                                                        OpResult<std::vector<ClaimAnswer>> answer,
                                                        Fetched& out) {
  std::vector<bool> asked(u.jobs.size(), false);
  for (std::size_t i : u.asked) asked[i] = true;
  if (!answer.ok()) {
    // Unknown whether it ran: the jobs stay held here without running; reconcile returns them
    // (and a claim it made is this job's own, which it finds again). Garbage at `live` is moved
    // aside first, or every claim would fail the same way.
    if (answer.error().wrong_type()) (void)co_await repair();
    for (std::size_t i = 0; i < u.jobs.size(); ++i) {
      if (asked[i]) {
        held_.erase(u.jobs[i].token);
      } else {
        out.jobs.push_back(std::move(u.jobs[i]));
      }
    }
    co_return answer.error();
  }
  std::vector<bool> set_aside(u.jobs.size(), false);
  for (std::size_t a = 0; a < u.asked.size() && a < answer->size(); ++a) {
    ClaimAnswer& said = (*answer)[a];
    Reading& r = u.jobs[u.asked[a]];
    if (!said.owner.empty()) {
      out.waits.emplace_back(std::move(r), std::move(said.owner));
    } else if (!said.garbage.empty()) {
      // Its lock's key holds what jobqd never writes there: moved aside (the error names it),
      // and the job waits a second, then takes the lock.
      const auto fix = repair_lock(keys_, r.unique_key, unix_ms());
      OpResult<std::vector<Repaired>> fixed = co_await run(main_, fix);
      if (fixed.ok()) {
        for (const auto& x : *fixed) {
          spdlog::error(
              "queue {}: {}, the lock of unique key '{}', held a {}, which is not what jobqd "
              "keeps there (garbage written by hand?); moved it aside to {} so that job {} goes "
              "on: look at it, then delete it",
              s_.queue, x.key, r.unique_key, x.type, x.moved_to, r.id);
        }
      } else if (upkeep_errors_.due()) {
        spdlog::error(
            "queue {}: the lock {} holds another type ({}), and moving it aside failed: {}",
            s_.queue, keys_.unique(r.unique_key), said.garbage, fixed.error().message);
      }
      out.waits.emplace_back(std::move(r), std::string());
    } else if (!said.holder.empty()) {
      out.duplicates.emplace_back(std::move(r), std::move(said.holder));
    } else {
      continue;
    }
    set_aside[u.asked[a]] = true;
  }
  for (std::size_t i = 0; i < u.jobs.size(); ++i) {
    if (!set_aside[i]) out.jobs.push_back(std::move(u.jobs[i]));
  }
  co_return std::nullopt;
}

async::Task<void> QueueStore::forward(std::vector<Away> away) {
  // Per home shard and priority (its list there, docs/priorities.md), one LPUSH in fetch order
  // (the oldest is taken first there too).
  std::vector<std::uint64_t> pushed;
  std::vector<job::Priority> levels;
  for (const auto& a : away) levels.push_back(job::priority_of_text(a.copy));
  for (std::size_t slot = 0; slot < shards_.size() * job::kPriorities; ++slot) {
    const std::size_t home = slot / job::kPriorities;
    const auto level = static_cast<job::Priority>(slot % job::kPriorities);
    std::vector<std::string> copies;
    std::vector<std::uint64_t> tokens;
    for (std::size_t i = 0; i < away.size(); ++i) {
      if (away[i].home != home || levels[i] != level) continue;
      copies.push_back(std::move(away[i].copy));
      tokens.push_back(away[i].token);
    }
    if (copies.empty()) continue;
    QueueStore& to = *shards_[home];
    const auto push = push_pending(to.keys_, copies, kWaitingLists[slot % job::kPriorities]);
    OpResult<long long> r = co_await run(to.main_, push);
    if (!r.ok()) {
      if (upkeep_errors_.due()) {
        spdlog::warn(
            "queue {}: cannot forward {} job(s) to their home shard {} ({}): {}; they go back to "
            "{} and come again",
            s_.queue, copies.size(), home, to.keys_.pending, r.error().message, keys_.pending);
      }
      continue;
    }
    pushed.insert(pushed.end(), tokens.begin(), tokens.end());
  }
  if (!pushed.empty()) {
    const auto drop = drop_held(keys_, s_.worker, pushed);
    OpResult<long long> r = co_await run(main_, drop);
    if (!r.ok() && upkeep_errors_.due()) {
      spdlog::warn(
          "queue {}: {} job(s) forwarded to their home shard are still held in {}: {}; they come "
          "again (at least once: their ids' claims keep them from running at once)",
          s_.queue, pushed.size(), keys_.inflight(s_.worker), r.error().message);
    }
  }
  for (const auto& a : away) held_.erase(a.token);
}

async::Task<void> QueueStore::check_claim(const std::string& id, const std::string& owner) {
  // A claim whose job is gone (deleted by hand, garbage) would make every job of its id wait for
  // ever. Checked at most once a second per id: a job waiting for a busy id comes back each
  // second.
  const auto now = async::Clock::now();
  if (auto it = stale_checked_.find(id); it != stale_checked_.end() && now - it->second < 1s) {
    co_return;
  }
  if (stale_checked_.size() > 10000) stale_checked_.clear();
  stale_checked_[id] = now;
  auto [worker, token] = hold_of(owner);
  const auto call = unclaim(keys_, id, owner, worker, token, s_.worker);
  OpResult<bool> dropped = co_await run(main_, call);
  if (dropped.ok() && *dropped) {
    spdlog::warn(
        "queue {}: job id {} was claimed by '{}', which no job holds any more (a job deleted by "
        "hand, or garbage written to {}); dropped that claim, and the waiting job of that id "
        "runs next",
        s_.queue, id, owner, keys_.live);
  }
}

async::Task<void> QueueStore::unblock() {
  // The UNBLOCK may reach Redis before the BLMOVE it is meant for (they travel on different
  // connections): then it finds nothing blocked, and is sent again shortly.
  for (int tries = 0; tries < 20 && waiting_; ++tries) {
    if (blocking_id_.empty() || blocking_generation_ != blocking_.generation()) {
      co_await async::sleep(5ms);
      continue;
    }
    redis::PendingReply sent = main_.command("CLIENT", "UNBLOCK", blocking_id_);
    OpResult<redis::Reply> r = co_await sent.result();
    if (!r.ok()) co_return;  // Redis away: the wait fails with the connection, or times out
    if (r->is_error()) {
      spdlog::debug("queue {}: cannot end the wait for jobs early: {}", s_.queue, r->str);
      co_return;
    }
    if (r->integer == 1) co_return;
    co_await async::sleep(5ms);
  }
}

// ---- upkeep ----

RecoverItem QueueStore::take_back_item(const std::string& token, const std::string& copy,
                                       const std::string& worker, std::int64_t now) const {
  RecoverItem it;
  it.token = token;
  std::uint64_t t = 0;
  std::from_chars(token.data(), token.data() + token.size(), t);
  Reading r = read_held(t, copy, rules_, s_, now);
  if (!r.job || !r.copy.object_end) {
    // It never ran (invalid): back as it came, to be found invalid again and kept dead.
    it.text = copy;
    return it;
  }
  // An id jobqd made up at its fetch and never wrote anywhere (it would be in the marker): a
  // new one now, that its copies keep.
  if (!r.copy.marker && !r.claims) r.id = new_id_in(s_.shard, s_.shards);
  it.id = r.id;
  it.attempts = r.attempt;  // the attempt that was running counts: it was lost with its worker
  it.max = r.max_attempts;
  // Its claim's nonce: its marker's, else the one its first hold gave it (that worker's token;
  // read_held names the reader's, which is not the hold being taken back). A job with a unique
  // key keeps it too: its lock names that nonce, whatever id it is given now.
  if (r.claims || !r.unique_key.empty()) {
    it.nonce = r.copy.marker && !r.copy.marker->nonce.empty() ? r.copy.marker->nonce
                                                              : worker + ":" + token;
  }
  it.dead = it.attempts >= it.max;
  if (s_.unique.mode != UniqueRule::Mode::throttle) it.unique_key = r.unique_key;
  if (it.dead) {
    it.text = r.copy.body;  // kept as it was submitted, without jobqd's marker
    return it;
  }
  // A queue with priorities: back to its level's list (one without: to pending, as ever).
  if (s_.order.on()) it.level = r.level;
  Marker m;
  m.attempts = it.attempts;
  m.max = it.max;
  m.submitted_at = r.submitted_at;
  m.nonce = it.nonce;
  m.id = it.id;
  it.text = copy.substr(0, r.copy.cut) + r.copy.tail(m);
  return it;
}

async::Task<OpResult<Recovered>> QueueStore::take_back(
    const std::string& worker, bool own, std::vector<std::pair<std::string, std::string>> held,
    const std::string& why) {
  // Oldest first (tokens grow), each onto the consuming end after the one before: the oldest is
  // taken first again.
  std::sort(held.begin(), held.end(), [](const auto& a, const auto& b) {
    return a.first.size() != b.first.size() ? a.first.size() > b.first.size() : a.first > b.first;
  });
  Recovered total;
  const std::int64_t now = redis_now();
  constexpr std::size_t kPerCall = 100;
  for (std::size_t i = 0; i < held.size() || (i == 0 && held.empty()); i += kPerCall) {
    std::vector<RecoverItem> items;
    for (std::size_t j = i; j < std::min(held.size(), i + kPerCall); ++j) {
      items.push_back(take_back_item(held[j].first, held[j].second, worker, now));
    }
    const auto call = recover(keys_, worker, own, s_.queue, why, s_.dead_ttl, items);
    OpResult<Recovered> r = co_await run(main_, call);
    if (!r.ok()) co_return r.error();
    if (r->alive) {
      total.alive = true;
      break;
    }
    total.returned += r->returned;
    total.dead += r->dead;
    total.emptied = r->emptied;
    if (held.empty()) break;
  }
  co_return total;
}

async::Task<OpResult<Expired>> QueueStore::recover_expired(std::size_t max_workers) {
  const auto which = expired(keys_, s_.worker, max_workers);
  OpResult<Expired> found = co_await run(main_, which);
  if (!found.ok()) co_return found;
  for (const auto& w : found->workers) {
    const auto read = held_copies(keys_, w);
    OpResult<std::vector<std::pair<std::string, std::string>>> copies = co_await run(main_, read);
    if (!copies.ok()) co_return copies.error();
    const std::string why = "lease expired: worker " + w +
                            " stopped renewing it (it died or lost Redis) while the job ran";
    OpResult<Recovered> r = co_await take_back(w, false, std::move(*copies), why);
    if (!r.ok()) co_return r.error();
    if (r->returned || r->dead) {
      spdlog::warn(
          "queue {}: lease of {} expired; returned {} job(s) to pending, {} on their last "
          "attempt are dead (error_kind lost)",
          s_.queue, w, r->returned, r->dead);
    }
  }
  co_return found;
}

async::Task<OpResult<Recovered>> QueueStore::reconcile() {
  const auto read = held_copies(keys_, s_.worker);
  OpResult<std::vector<std::pair<std::string, std::string>>> copies = co_await run(main_, read);
  if (!copies.ok()) co_return copies.error();
  // Tokens Redis holds for us that we do not know of, and fields that are no token at all
  // (garbage: they go back as whatever they hold).
  std::vector<std::pair<std::string, std::string>> unknown;
  for (auto& [field, copy] : *copies) {
    std::uint64_t t = 0;
    auto [end, ec] = std::from_chars(field.data(), field.data() + field.size(), t);
    const bool token = ec == std::errc() && end == field.data() + field.size();
    if (token && held_.count(t)) continue;
    if (token && t >= fetching_from_ && t < fetching_to_) continue;  // its fetch reply is coming
    unknown.emplace_back(std::move(field), std::move(copy));
  }
  if (unknown.empty()) co_return Recovered{};
  co_return co_await take_back(
      s_.worker, true, std::move(unknown),
      "this daemon lost track of the job (a reply lost with its Redis connection, or writes "
      "Redis forgot in a restart)");
}

async::Task<OpResult<Due>> QueueStore::promote(std::size_t limit) {
  // A queue without group_by also asks whether jobs were left in groups (ungroup()).
  const auto which = due(keys_, limit, !s_.groups.on());
  OpResult<Due> found = co_await run(main_, which);
  if (!found.ok() || found->jobs.empty()) co_return found;
  std::vector<PromoteItem> items;
  items.reserve(found->jobs.size());
  for (auto& j : found->jobs) {
    Copy c = split(j);
    // A retry (its marker counts an attempt) goes back to queued; a job submitted with a delay,
    // or one that waits for its id, has no state of its own to change.
    std::string retry_id =
        c.marker && c.marker->attempts > 0 && job::valid_id(c.marker->id) ? c.marker->id : "";
    const job::Priority level = job::priority_of_text(c.body);
    items.push_back({std::move(j), std::move(retry_id), level});
  }
  const auto call = store::promote(keys_, items);
  OpResult<long long> moved = co_await run(main_, call);
  if (!moved.ok()) co_return moved.error();
  // Moved into a priority list: a queue with priorities looks there now, not at its next wait.
  for (const auto& it : items) found->levels += it.level != job::Priority::normal;
  found->jobs.clear();
  found->jobs.resize(static_cast<std::size_t>(std::max<long long>(0, *moved)));
  co_return found;
}

async::Task<OpResult<long long>> QueueStore::trim_dead() {
  const auto which = dead_victims(keys_, s_.dead_max, s_.dead_ttl, 500);
  OpResult<std::vector<std::string>> ids = co_await run(main_, which);
  if (!ids.ok()) co_return ids.error();
  if (ids->empty()) co_return 0LL;
  const auto call = drop_dead(keys_, *ids);
  co_return co_await run(main_, call);
}

async::Task<OpResult<std::vector<Repaired>>> QueueStore::repair() {
  const auto call = store::repair(keys_, s_.worker, unix_ms());
  OpResult<std::vector<Repaired>> r = co_await run(main_, call);
  if (r.ok()) {
    for (const auto& x : *r) {
      spdlog::error(
          "queue {}: {} held a {}, which is not what jobqd keeps there (garbage written by "
          "hand?); moved it aside to {} so that the queue goes on: look at it, then delete it",
          s_.queue, x.key, x.type, x.moved_to);
    }
  }
  co_return r;
}

async::Task<OpResult<Control>> QueueStore::control() {
  const auto call = store::control(keys_);
  co_return co_await run(main_, call);
}

}  // namespace jq::store
