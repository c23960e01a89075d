// The `after` calls: their arguments as the scripts take them, and their replies read.
#include "store/after.hpp"

#include <algorithm>
#include <map>
#include <set>
#include <utility>

#include <nlohmann/json.hpp>

#include "store/calls.hpp"
#include "store/marker.hpp"
#include "store/scripts.hpp"
#include "store/shards.hpp"

namespace jq::store {

Waiting waiting_of(const job::Job& job, const std::string& queue, std::int64_t now,
                   std::chrono::milliseconds timeout) {
  Waiting w;
  w.id = job.id;
  w.queue = queue;
  w.copy = marked_submission(job.raw, job.id, now);
  // Before the marker's field (its comma included): `,"dependencies":[...]` goes in there and
  // the copy stays one object, the marker still last where split() finds it.
  w.cut = split(w.copy).cut;
  w.submitted_at = std::to_string(now);
  w.deadline = now + timeout.count();
  w.policy = job.on_dependency_failure;
  w.level = job.priority;
  w.refs.reserve(job.after.size());
  for (const auto& d : job.after)
    w.refs.push_back((d.queue.empty() ? queue : d.queue) + "/" + d.id);
  return w;
}

namespace {

// after_wait.lua's request: a submission's (no token), or a fetched job's from its worker's
// inflight hash.
Request wait_request(const Keys& k, const Waiting& w) {
  std::vector<std::string> keys{k.job(w.id),   k.waiting, k.after(w.id),
                                k.after_until, k.live,    k.registering};
  if (w.token != 0) keys.push_back(k.inflight(w.worker));
  std::vector<std::string> args{w.copy,
                                w.id,
                                w.queue,
                                w.submitted_at,
                                std::to_string(w.deadline),
                                job::dependency_policy_name(w.policy),
                                std::to_string(static_cast<int>(w.level)),
                                std::to_string(w.cut),
                                w.token != 0 ? std::to_string(w.token) : std::string(),
                                w.keep_failed_ms > 0 ? std::to_string(w.keep_failed_ms) : "",
                                w.max_job_bytes > 0 ? std::to_string(w.max_job_bytes) : "",
                                w.flow.empty() ? std::string() : "#flow/" + w.flow};
  args.insert(args.end(), w.refs.begin(), w.refs.end());
  return Request{&scripts::after_wait(), std::move(keys), std::move(args)};
}

}  // namespace

Call<bool> after_wait(const Keys& k, const Waiting& w) {
  return Call<bool>{wait_request(k, w), [](redis::Reply r) -> OpResult<bool> {
                      if (r.type != redis::Reply::Type::integer)
                        return redis::shape_error("after_wait", r);
                      return r.integer == 1;
                    }};
}

Call<WaitAnswer> after_wait_held(const Keys& k, const Waiting& w) {
  return Call<WaitAnswer>{
      wait_request(k, w), [](redis::Reply r) -> OpResult<WaitAnswer> {
        if (r.type != redis::Reply::Type::integer || r.integer < 0 || r.integer > 2)
          return redis::shape_error("after_wait", r);
        return r.integer == 1   ? WaitAnswer::waits
               : r.integer == 0 ? WaitAnswer::taken
                                : WaitAnswer::not_held;
      }};
}

Call<long long> after_register(const Keys& k, const std::string& queue, const std::string& waiter,
                               const std::vector<std::string>& ids) {
  std::vector<std::string> keys{k.dependents, k.outbox};
  std::vector<std::string> args{waiter, queue};
  for (const auto& id : ids) {
    keys.push_back(k.job(id));
    args.push_back(id);
  }
  return Call<long long>{Request{&scripts::after_register(), std::move(keys), std::move(args)},
                         [](redis::Reply r) -> OpResult<long long> {
                           if (r.type != redis::Reply::Type::integer)
                             return redis::shape_error("after_register", r);
                           return r.integer;
                         }};
}

std::vector<Call<long long>> after_registers(const Waiting& w, const HomeOf& home) {
  // Each slot's queue and ids, by the slot's key base (P:{tag}), slots in first-seen order.
  struct Slot {
    Keys keys;
    std::string queue;
    std::vector<std::string> ids;
  };
  std::vector<Slot> slots;
  std::map<std::string, std::size_t> at;
  const std::string waiter = w.queue + "/" + w.id;
  for (const auto& ref : w.refs) {
    std::string error;
    auto d = job::dependency_of(ref, error);
    if (!d || d->queue.empty()) continue;  // waiting_of writes QUEUE/ID only
    Keys k = home(d->queue, d->id);
    auto [it, fresh] = at.emplace(k.base, slots.size());
    if (fresh) slots.push_back({std::move(k), d->queue, {}});
    slots[it->second].ids.push_back(std::move(d->id));
  }
  std::vector<Call<long long>> out;
  for (const auto& s : slots) {
    for (std::size_t from = 0; from < s.ids.size(); from += kRegisterBatch) {
      const auto first = s.ids.begin() + static_cast<std::ptrdiff_t>(from);
      const auto last = s.ids.begin() +
                        static_cast<std::ptrdiff_t>(std::min(s.ids.size(), from + kRegisterBatch));
      out.push_back(after_register(s.keys, s.queue, waiter, std::vector<std::string>(first, last)));
    }
  }
  return out;
}

Call<long long> after_registered(const Keys& k, const std::string& id) {
  return Call<long long>{Request{nullptr, {}, {"ZREM", k.registering, id}},
                         [](redis::Reply r) -> OpResult<long long> {
                           if (r.type != redis::Reply::Type::integer)
                             return redis::shape_error("ZREM of registering", r);
                           return r.integer;
                         }};
}

namespace {

// The keys of shard `shard` of queue `queue`'s `n`.
Keys shard_keys(const std::string& prefix, const std::string& queue, std::size_t shard,
                std::size_t n) {
  return Keys(prefix, queue, shard_tags(queue, n).at(shard));
}

}  // namespace

async::Task<OpResult<long long>> register_waiter(const Route& route, const std::string& prefix,
                                                 const Waiting& w, std::size_t shards) {
  // The shard counts of the queues it names (one read each but its own), then after_registers'
  // grouping by slot.
  std::map<std::string, std::size_t> counts{{w.queue, std::max<std::size_t>(1, shards)}};
  for (const auto& ref : w.refs) {
    std::string error;
    auto d = job::dependency_of(ref, error);
    if (!d || d->queue.empty() || counts.count(d->queue)) continue;
    const Keys of(prefix, d->queue);
    const auto ask = read_shards(of);
    OpResult<std::size_t> n = co_await run(route(of.shards), ask);
    if (!n.ok()) co_return n.error();
    counts.emplace(d->queue, std::max<std::size_t>(1, *n));
  }
  const HomeOf home = [&](const std::string& queue, const std::string& id) {
    const std::size_t n = counts.at(queue);
    return shard_keys(prefix, queue, home_shard(id, n), n);
  };
  long long final = 0;
  const std::vector<Call<long long>> calls = after_registers(w, home);
  for (const auto& call : calls) {
    // after_register's first key is in the dependencies' slot.
    OpResult<long long> told = co_await run(route(call.req.keys.front()), call);
    if (!told.ok()) co_return told.error();
    final += *told;
  }
  const Keys mine = home(w.queue, w.id);
  const auto done = after_registered(mine, w.id);
  OpResult<long long> left = co_await run(route(mine.registering), done);
  if (!left.ok()) co_return left.error();
  co_return final;
}

Call<std::optional<AfterLeft>> after_left(const Keys& k, const std::string& id) {
  return Call<std::optional<AfterLeft>>{
      Request{nullptr, {}, {"HGETALL", k.after(id)}},
      [](redis::Reply r) -> OpResult<std::optional<AfterLeft>> {
        if (!r.is_array() || r.elements.size() % 2 != 0) return redis::shape_error("after hash", r);
        if (r.elements.empty()) return std::optional<AfterLeft>();
        std::map<std::string, bool> told;  // reference -> final (its outcome is in)
        std::map<std::string, bool> shut;  // its gate's field, `#flow/<fid>`: '' while shut
        std::string order, gate;
        for (std::size_t i = 0; i + 1 < r.elements.size(); i += 2) {
          const auto& field = r.elements[i].str;
          const auto& value = r.elements[i + 1].str;
          if (field == "#order") order = value;
          if (field == "#gate") gate = value;
          if (field.starts_with("#flow/")) shut[field] = value.empty();
          if (!field.empty() && field[0] != '#') told[field] = !value.empty();
        }
        AfterLeft out;
        if (auto it = shut.find(gate); it != shut.end() && it->second) out.flow = gate.substr(6);
        out.total = told.size();
        // In the job's order (#order, one reference a line), as `after` gave them.
        for (std::size_t from = 0; from < order.size();) {
          std::size_t end = order.find('\n', from);
          if (end == std::string::npos) end = order.size();
          const std::string ref = order.substr(from, end - from);
          if (auto it = told.find(ref); it != told.end() && !it->second) out.refs.push_back(ref);
          from = end + 1;
        }
        return std::optional<AfterLeft>(std::move(out));
      }};
}

Call<bool> is_waiting(const Keys& k, const std::string& id) {
  return Call<bool>{Request{nullptr, {}, {"HEXISTS", k.waiting, id}},
                    [](redis::Reply r) -> OpResult<bool> {
                      if (r.type != redis::Reply::Type::integer)
                        return redis::shape_error("HEXISTS of waiting", r);
                      return r.integer == 1;
                    }};
}

Call<std::string> job_status(const Keys& k, const std::string& id) {
  return Call<std::string>{Request{nullptr, {}, {"HGET", k.job(id), "status"}},
                           [](redis::Reply r) -> OpResult<std::string> {
                             if (r.is_nil()) return std::string();
                             if (r.type != redis::Reply::Type::string)
                               return redis::shape_error("a job's status", r);
                             return std::move(r.str);
                           }};
}

std::string Outcome::json() const {
  nlohmann::json o = {{"job", job}, {"queue", queue}, {"status", status}};
  if (status == "succeeded") {
    o["result"] = result;
  } else {
    o["error"] = error;
    o["error_kind"] = error_kind;
  }
  return o.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

namespace {

// What after_resolve.lua and after_expire.lua both take first (prelude's after_keys): the
// waiting job's keys, and its id, queue, keep failed, max_job_bytes, events channel.
Request waiter(const redis::Script& script, const Keys& k, const std::string& queue,
               const std::string& id, std::int64_t keep_failed_ms, std::uint64_t max_job_bytes) {
  return Request{
      &script,
      {k.waiting, k.after(id), k.job(id), k.pending_high, k.pending, k.pending_low, k.after_until,
       k.registering, k.dependents, k.outbox, k.dead, k.dead_bodies},
      {id, queue, std::to_string(keep_failed_ms), std::to_string(max_job_bytes), k.events}};
}

OpResult<Resolved> resolved(const char* what, redis::Reply r) {
  if (r.type != redis::Reply::Type::integer || r.integer < 0 || r.integer > 3) {
    return redis::shape_error(what, r);
  }
  return static_cast<Resolved>(r.integer);
}

OpResult<std::vector<std::string>> strings(const char* what, redis::Reply r) {
  if (!r.is_array()) return redis::shape_error(what, r);
  std::vector<std::string> out;
  for (auto& e : r.elements) {
    if (e.type != redis::Reply::Type::string) return redis::shape_error(what, r);
    out.push_back(std::move(e.str));
  }
  return out;
}

}  // namespace

Call<Resolved> after_resolve(const Keys& k, const std::string& queue, const std::string& id,
                             const Outcome& o, std::int64_t keep_failed_ms,
                             std::uint64_t max_job_bytes) {
  return after_resolve(k, queue, id, std::vector<const Outcome*>{&o}, keep_failed_ms,
                       max_job_bytes);
}

Call<Resolved> after_resolve(const Keys& k, const std::string& queue, const std::string& id,
                             const std::vector<const Outcome*>& told, std::int64_t keep_failed_ms,
                             std::uint64_t max_job_bytes) {
  Request req = waiter(scripts::after_resolve(), k, queue, id, keep_failed_ms, max_job_bytes);
  req.args.reserve(req.args.size() + 4 * told.size());
  for (const Outcome* o : told) {
    // The line the job's error quotes when this ends it ("dependency images/r2 failed: exit 3").
    std::string how = o->error.empty() ? o->status : o->status + ": " + o->error;
    req.args.insert(req.args.end(), {o->ref(), o->json(), o->status, std::move(how)});
  }
  return Call<Resolved>{std::move(req),
                        [](redis::Reply r) { return resolved("after_resolve", std::move(r)); }};
}

Call<Resolved> after_expire(const Keys& k, const std::string& queue, const std::string& id,
                            std::int64_t now, const std::string& within,
                            std::int64_t keep_failed_ms, std::uint64_t max_job_bytes) {
  Request req = waiter(scripts::after_expire(), k, queue, id, keep_failed_ms, max_job_bytes);
  req.args.insert(req.args.end(), {std::to_string(now), within});
  return Call<Resolved>{std::move(req),
                        [](redis::Reply r) { return resolved("after_expire", std::move(r)); }};
}

namespace {

// The first `n` members of sorted set `key` scored at most `upto` (`name` says which in an
// error): the due poll's upkeep reads its deadlines so.
Call<std::vector<std::string>> scored_upto(const std::string& key, const char* name,
                                           std::int64_t upto, std::size_t n) {
  return Call<std::vector<std::string>>{
      Request{
          nullptr,
          {},
          {"ZRANGEBYSCORE", key, "-inf", std::to_string(upto), "LIMIT", "0", std::to_string(n)}},
      [name](redis::Reply r) {
        return strings((std::string("ZRANGEBYSCORE of ") + name).c_str(), std::move(r));
      }};
}

}  // namespace

Call<std::vector<std::string>> after_overdue(const Keys& k, std::int64_t now, std::size_t n) {
  return scored_upto(k.after_until, "after_until", now, n);
}

Call<std::vector<std::string>> after_registering(const Keys& k, std::int64_t now,
                                                 std::int64_t older_than_ms, std::size_t n) {
  return scored_upto(k.registering, "registering", now - older_than_ms, n);
}

Call<long long> flow_step(const Keys& k, FlowStep step, const std::string& fid,
                          const std::string& text, std::chrono::milliseconds lease) {
  static constexpr const char* kSteps[] = {"begin", "touch", "done", "abort"};
  std::vector<std::string> args{kSteps[static_cast<int>(step)], fid, std::to_string(lease.count()),
                                std::to_string(kFlowKept.count())};
  if (step == FlowStep::begin || step == FlowStep::abort) args.push_back(text);
  return Call<long long>{
      Request{&scripts::flow(), {k.flow(fid), k.flows, k.outbox}, std::move(args)},
      [](redis::Reply r) -> OpResult<long long> {
        if (r.type != redis::Reply::Type::integer || r.integer < -1 || r.integer > 1)
          return redis::shape_error("flow", r);
        return r.integer;
      }};
}

Call<std::vector<std::string>> flows_overdue(const Keys& k, std::int64_t now, std::size_t n) {
  return scored_upto(k.flows, "flows", now, n);
}

std::optional<OutboxEntry> outbox_entry(std::string_view text) {
  const auto doc = nlohmann::json::parse(text.begin(), text.end(), nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) return std::nullopt;
  auto text_at = [&](const char* key, std::string& out) {
    auto it = doc.find(key);
    if (it == doc.end() || !it->is_string()) return false;
    out = it->get<std::string>();
    return true;
  };
  OutboxEntry e;
  std::string to;
  Outcome& o = e.outcome;
  if (!text_at("to", to) || !text_at("job", o.job) || !text_at("queue", o.queue) ||
      !text_at("status", o.status)) {
    return std::nullopt;
  }
  text_at("result", o.result);
  text_at("error", o.error);
  text_at("error_kind", o.error_kind);
  std::string error;
  auto ref = job::dependency_of(to, error);
  if (!ref || ref->queue.empty()) return std::nullopt;
  e.to_queue = std::move(ref->queue);
  e.to_id = std::move(ref->id);
  return e;
}

Call<std::vector<std::string>> outbox_head(const Keys& k, std::size_t n) {
  return Call<std::vector<std::string>>{
      Request{nullptr, {}, {"LRANGE", k.outbox, "0", std::to_string(n == 0 ? 0 : n - 1)}},
      [](redis::Reply r) { return strings("LRANGE of the outbox", std::move(r)); }};
}

Call<long long> outbox_done(const Keys& k, const std::string& text) {
  return Call<long long>{Request{nullptr, {}, {"LREM", k.outbox, "1", text}},
                         [](redis::Reply r) -> OpResult<long long> {
                           if (r.type != redis::Reply::Type::integer)
                             return redis::shape_error("LREM of the outbox", r);
                           return r.integer;
                         }};
}

}  // namespace jq::store
