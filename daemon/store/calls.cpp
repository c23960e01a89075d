// The protocol's calls: each Request as its script takes it, and each reply read into its type.
#include "store/calls.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>

#include "store/marker.hpp"
#include "store/scripts.hpp"
#include "store/shards.hpp"

namespace jq::store {
namespace {

using redis::Reply;
using Type = redis::Reply::Type;

std::string num(long long v) {
  return std::to_string(v);
}

template <class T>
Call<T> make(const redis::Script& s, std::vector<std::string> keys, std::vector<std::string> args,
             std::function<OpResult<T>(Reply)> decode) {
  return Call<T>{Request{&s, std::move(keys), std::move(args)}, std::move(decode)};
}

template <class T>
Call<T> command(std::vector<std::string> argv, std::function<OpResult<T>(Reply)> decode) {
  return Call<T>{Request{nullptr, {}, std::move(argv)}, std::move(decode)};
}

OpError bad(const char* what, const Reply& r) {
  return redis::shape_error(what, r);
}

std::optional<long long> int_of(const Reply& r) {
  if (r.type == Type::integer) return r.integer;
  if (r.type == Type::string || r.type == Type::status) {
    long long v = 0;
    auto [end, ec] = std::from_chars(r.str.data(), r.str.data() + r.str.size(), v);
    if (ec == std::errc() && end == r.str.data() + r.str.size()) return v;
  }
  return std::nullopt;
}

// Reads an integer reply.
std::function<OpResult<long long>(Reply)> integer(const char* what) {
  return [what](Reply r) -> OpResult<long long> {
    if (auto v = int_of(r)) return *v;
    return bad(what, r);
  };
}

std::function<OpResult<bool>(Reply)> one(const char* what) {
  return [what](Reply r) -> OpResult<bool> {
    if (auto v = int_of(r)) return *v == 1;
    return bad(what, r);
  };
}

std::function<OpResult<redis::Done>(Reply)> done() {
  return [](Reply) -> OpResult<redis::Done> { return redis::Done{}; };
}

std::function<OpResult<std::vector<std::string>>(Reply)> strings(const char* what) {
  return [what](Reply r) -> OpResult<std::vector<std::string>> {
    if (!r.is_array()) return bad(what, r);
    std::vector<std::string> out;
    out.reserve(r.elements.size());
    for (auto& e : r.elements) {
      if (e.type != Type::string && e.type != Type::status) return bad(what, r);
      out.push_back(std::move(e.str));
    }
    return out;
  };
}

std::function<OpResult<std::vector<std::pair<std::string, std::string>>>(Reply)> pairs(
    const char* what) {
  return [what](Reply r) -> OpResult<std::vector<std::pair<std::string, std::string>>> {
    if (!r.is_array() || r.elements.size() % 2 != 0) return bad(what, r);
    std::vector<std::pair<std::string, std::string>> out;
    out.reserve(r.elements.size() / 2);
    for (std::size_t i = 0; i + 1 < r.elements.size(); i += 2) {
      out.emplace_back(std::move(r.elements[i].str), std::move(r.elements[i + 1].str));
    }
    return out;
  };
}

// Scores are whatever a submitter wrote (even "+inf"): the time until one, clamped.
std::optional<Millis> until(const Reply& score, std::int64_t now) {
  if (score.type != Type::string) return std::nullopt;
  const double due = std::strtod(score.str.c_str(), nullptr);
  const double in =
      std::isfinite(due) ? std::clamp(due - static_cast<double>(now), 0.0, 1e12) : 1e12;
  return Millis(static_cast<std::int64_t>(in));
}

}  // namespace

async::Task<OpResult<Reply>> send(redis::Client& client, const Request& req) {
  if (req.script) co_return co_await req.script->call(client, req.keys, req.args);
  std::vector<std::string_view> argv(req.args.begin(), req.args.end());
  redis::PendingReply sent = client.send(std::span<const std::string_view>(argv));
  OpResult<Reply> r = co_await sent.result();
  if (r.ok() && r->is_error()) co_return OpError{OpError::Kind::reply, (*r).str};
  co_return r;
}

void append(redis::SyncClient& client, const Request& req) {
  if (!req.script) {
    client.append(req.args);
    return;
  }
  const std::string nkeys = std::to_string(req.keys.size());
  const auto argv = req.script->argv(false, nkeys, req.keys, req.args);
  client.append(std::span<const std::string_view>(argv));
}

// ---- holding jobs ----

Rate rate_share(double per_s, std::uint64_t burst, std::size_t shards) {
  Rate r;
  if (per_s <= 0) return r;
  const double n = static_cast<double>(std::max<std::size_t>(1, shards));
  const double most = burst ? static_cast<double>(burst) : std::ceil(per_s);
  r.per_ms = per_s / 1000.0 / n;
  r.burst = static_cast<std::uint64_t>(std::max(1.0, std::ceil(most / n)));
  return r;
}

std::string Order::spec() const {
  if (mode == Mode::none) return "";
  return std::string(mode == Mode::strict ? "s" : "w") + "," + std::to_string(weights[0]) + "," +
         std::to_string(weights[1]) + "," + std::to_string(weights[2]) + "," +
         std::to_string(aging.count());
}

Call<FetchBatch> fetch(const Keys& k, const std::string& worker, std::uint64_t first, std::size_t n,
                       std::uint64_t max_bytes, const Rate& rate, const Cap& cap,
                       const Order& order) {
  std::vector<std::string> args;
  args.reserve(7 + n + cap.others.size());
  args.push_back(worker);
  args.push_back(std::to_string(n));
  args.push_back(std::to_string(max_bytes));
  if (rate.per_ms > 0) {
    char per_ms[32];
    std::snprintf(per_ms, sizeof per_ms, "%.9g", rate.per_ms);
    args.push_back(per_ms);
    args.push_back(std::to_string(std::max<std::uint64_t>(1, rate.burst)));
  } else {
    args.push_back("0");
    args.push_back("0");
  }
  args.push_back(std::to_string(cap.slots));
  args.push_back(order.spec());
  // The tokens as text, which Lua would format as doubles (a printf each).
  for (std::size_t i = 0; i < n; ++i) args.push_back(std::to_string(first + i));
  std::vector<std::string> keys{k.pending, k.leases, k.inflight(worker), k.paused, k.rate};
  if (order.on()) {
    keys.push_back(k.pending_high);
    keys.push_back(k.pending_low);
    keys.push_back(k.order);
  }
  if (cap.slots > 0) {
    for (const auto& w : cap.others) {
      keys.push_back(k.inflight(w));
      args.push_back(w);
    }
  }
  return make<FetchBatch>(scripts::fetch(), std::move(keys), std::move(args),
                          [first, n](Reply r) { return decode_fetch(std::move(r), first, n); });
}

OpResult<FetchBatch> decode_fetch(Reply r, std::uint64_t first, std::size_t n) {
  FetchBatch out;
  if (r.is_nil()) {
    out.lease_lost = true;
    return out;
  }
  if (!r.is_array() || r.elements.size() < 2) return bad("fetch", r);
  auto now = int_of(r.elements[0]);
  auto flag = int_of(r.elements[1]);
  if (!now || !flag || *flag < -4 || *flag > 2) return bad("fetch", r);
  out.now = *now;
  if (*flag == -3) {
    // Global concurrency: a live worker was not named; these are the live ones.
    std::vector<std::string> live;
    for (std::size_t i = 2; i < r.elements.size(); ++i) {
      if (r.elements[i].type != Type::string) return bad("fetch", r);
      live.push_back(std::move(r.elements[i].str));
    }
    out.live_workers = std::move(live);
    out.limited_ms = 1;  // ask again at once, naming them
    return out;
  }
  out.paused = *flag == -1;
  // Limited by the rate (-2: nothing taken; 1: fewer than asked) or the global concurrency (-4:
  // nothing taken): the wait for the next token, or before looking for a free slot again.
  // With a global concurrency (2): the slots left per live worker.
  const std::size_t head = *flag == -2 || *flag == -4 || *flag == 1 || *flag == 2 ? 3 : 2;
  if (*flag == 2) {
    if (r.elements.size() < head) return bad("fetch", r);
    auto share = int_of(r.elements[2]);
    if (!share) return bad("fetch", r);
    out.cap_share = std::max<long long>(0, *share);
  } else if (head == 3) {
    out.limited_by = *flag == -4 ? Limit::cap : Limit::rate;
  }
  if (r.elements.size() < head || r.elements.size() - head > n) return bad("fetch", r);
  if (head == 3 && !out.cap_share) {
    auto wait = int_of(r.elements[2]);
    if (!wait || *wait < 0) return bad("fetch", r);
    out.limited_ms = std::max<long long>(1, *wait);
  }
  out.jobs.reserve(r.elements.size() - head);
  for (std::size_t i = head; i < r.elements.size(); ++i) {
    Reply& e = r.elements[i];
    Held h;
    h.token = first + (i - head);
    if (e.type == Type::integer && e.integer > 0) {
      h.oversized = static_cast<std::uint64_t>(e.integer);
    } else if (e.type == Type::string) {
      h.copy = std::move(e.str);
    } else {
      return bad("fetch", r);
    }
    out.jobs.push_back(std::move(h));
  }
  return out;
}

Call<std::vector<ClaimAnswer>> claim(const Keys& k, const std::vector<ClaimAsk>& jobs) {
  // First holds (the claim is the nonce) first: two arguments each instead of three. The
  // answers come back by the index in that order, so they are put back in the caller's.
  std::vector<std::size_t> order;
  for (std::size_t i = 0; i < jobs.size(); ++i) {
    if (jobs[i].claim_id && jobs[i].value.empty()) order.push_back(i);
  }
  const std::size_t firsts = order.size();
  for (std::size_t i = 0; i < jobs.size(); ++i) {
    if (jobs[i].claim_id && !jobs[i].value.empty()) order.push_back(i);
  }
  const std::size_t n = order.size();
  std::vector<std::string> keys{k.live};
  std::vector<std::string> args;
  args.reserve(2 + 3 * jobs.size());
  args.push_back(std::to_string(firsts));
  args.push_back(std::to_string(n));
  std::vector<std::size_t> at(jobs.size(), 0);  // each job's index among the ids (from 1)
  for (std::size_t x = 0; x < n; ++x) {
    const auto& j = jobs[order[x]];
    at[order[x]] = x + 1;
    args.push_back(j.id);
    args.push_back(j.nonce);
    if (x >= firsts) args.push_back(j.value);
  }
  // The locks, in the caller's order, after the ids.
  std::vector<std::size_t> locks;
  for (std::size_t i = 0; i < jobs.size(); ++i) {
    const auto& j = jobs[i];
    if (j.unique_key.empty()) continue;
    locks.push_back(i);
    keys.push_back(k.unique(j.unique_key));
    keys.push_back(k.job(j.id));
    args.push_back(std::to_string(at[i]));
    args.push_back(j.id);
    args.push_back(j.nonce);
    args.emplace_back(j.rule.code());
    args.push_back(num(std::max<long long>(1, j.rule.hold.count())));
    args.push_back(j.unique_key);
  }
  const std::size_t total = jobs.size();
  return make<std::vector<ClaimAnswer>>(
      scripts::claim(), std::move(keys), std::move(args),
      [total, n, order, locks](Reply r) -> OpResult<std::vector<ClaimAnswer>> {
        // Only the jobs not claimed: (index from 1, the owner's claim) pairs; past the ids,
        // the locks not taken: (ids + index, the holder's id or Redis' error).
        if (!r.is_array() || r.elements.size() % 2 != 0) return bad("claim", r);
        std::vector<ClaimAnswer> out(total);
        for (std::size_t i = 0; i + 1 < r.elements.size(); i += 2) {
          auto index = int_of(r.elements[i]);
          const Reply& said = r.elements[i + 1];
          if (!index || *index < 1 || static_cast<std::size_t>(*index) > n + locks.size() ||
              said.type != Type::string || said.str.empty()) {
            return bad("claim", r);
          }
          const auto x = static_cast<std::size_t>(*index) - 1;
          if (x < n) {
            out[order[x]].owner = said.str;
          } else if (said.str.find(' ') != std::string::npos) {
            out[locks[x - n]].garbage = said.str;
          } else {
            out[locks[x - n]].holder = said.str;
          }
        }
        return out;
      });
}

Call<bool> unclaim(const Keys& k, const std::string& id, const std::string& claim,
                   const std::string& holder, const std::string& token, const std::string& self) {
  return make<bool>(scripts::unclaim(),
                    {k.live, k.job(id), k.inflight(holder.empty() ? self : holder)},
                    {id, claim, holder.empty() ? std::string() : token}, one("unclaim"));
}

// ---- the lease ----

Call<redis::Done> acquire(const Keys& k, const std::string& worker, Millis lease) {
  return make<redis::Done>(scripts::acquire(), {k.leases}, {worker, num(lease.count())}, done());
}

Call<redis::Done> slow_down(const Keys& k, std::int64_t until) {
  return make<redis::Done>(scripts::slow_down(), {k.rate}, {num(until)}, done());
}

Call<bool> renew(const Keys& k, const std::string& worker, Millis lease) {
  return make<bool>(scripts::renew(), {k.leases}, {worker, num(lease.count())}, one("renew"));
}

Call<bool> release(const Keys& k, const std::string& worker) {
  return make<bool>(scripts::release(), {k.leases, k.inflight(worker)}, {worker}, one("release"));
}

// ---- recovery ----

Call<Expired> expired(const Keys& k, const std::string& self, std::size_t limit) {
  return make<Expired>(scripts::expired(), {k.leases}, {self, std::to_string(limit)},
                       [](Reply r) -> OpResult<Expired> {
                         if (!r.is_array() || r.elements.empty()) return bad("expired", r);
                         auto in = int_of(r.elements[0]);
                         if (!in) return bad("expired", r);
                         Expired out;
                         if (*in >= 0) out.next_in = Millis(*in);
                         for (std::size_t i = 1; i < r.elements.size(); ++i) {
                           out.workers.push_back(std::move(r.elements[i].str));
                         }
                         return out;
                       });
}

Call<std::vector<std::pair<std::string, std::string>>> held_copies(const Keys& k,
                                                                   const std::string& worker) {
  return command<std::vector<std::pair<std::string, std::string>>>({"HGETALL", k.inflight(worker)},
                                                                   pairs("inflight"));
}

Call<Recovered> recover(const Keys& k, const std::string& worker, bool own,
                        const std::string& queue, const std::string& why, Millis keep_failed,
                        const std::vector<RecoverItem>& items) {
  // dependents and outbox: a job dead here tells the jobs waiting on it.
  std::vector<std::string> keys{k.leases, k.inflight(worker), k.pending, k.dead, k.dead_bodies,
                                k.live,   k.dependents,       k.outbox};
  std::vector<std::string> args{worker, own ? "1" : "0",         queue, k.events,
                                why,    num(keep_failed.count())};
  for (const auto& it : items) {
    std::string index = "0";
    if (!it.id.empty()) {
      keys.push_back(k.job(it.id));
      index = std::to_string(keys.size());
    }
    args.push_back(it.token);
    args.push_back(it.dead ? "dead" : "back");
    args.push_back(index);
    args.push_back(it.id);
    args.push_back(it.nonce);
    args.push_back(num(it.attempts));
    args.push_back(num(it.max));
    args.push_back(it.text);
    if (it.unique_key.empty() || !it.dead) {
      args.emplace_back("0");
    } else {
      keys.push_back(k.unique(it.unique_key));
      args.push_back(std::to_string(keys.size()));
    }
    if (it.dead || it.level == job::Priority::normal) {
      args.emplace_back("0");  // pending
    } else {
      keys.push_back(k.pending_at(static_cast<std::size_t>(it.level)));
      args.push_back(std::to_string(keys.size()));
    }
  }
  return make<Recovered>(scripts::recover(), std::move(keys), std::move(args),
                         [](Reply r) -> OpResult<Recovered> {
                           Recovered out;
                           if (!r.is_array() || r.elements.empty()) return bad("recover", r);
                           auto first = int_of(r.elements[0]);
                           if (!first) return bad("recover", r);
                           if (*first == -1 && r.elements.size() == 1) {
                             out.alive = true;
                             return out;
                           }
                           if (r.elements.size() != 3) return bad("recover", r);
                           out.returned = *first;
                           out.dead = int_of(r.elements[1]).value_or(0);
                           out.emptied = int_of(r.elements[2]).value_or(0) == 1;
                           return out;
                         });
}

// ---- delayed jobs ----

Call<Due> due(const Keys& k, std::size_t limit, bool ring) {
  std::vector<std::string> keys{k.delayed,     k.pending_high, k.pending_low, k.outbox,
                                k.after_until, k.registering,  k.flows};
  if (ring) keys.push_back(k.groups);
  return make<Due>(scripts::due(), std::move(keys),
                   {std::to_string(limit), std::to_string(kRegisterAgainAfter.count())},
                   [](Reply r) -> OpResult<Due> {
                     if (!r.is_array() || r.elements.size() < 5) return bad("due", r);
                     auto now = int_of(r.elements[0]);
                     auto levels = int_of(r.elements[2]);
                     auto grouped = int_of(r.elements[3]);
                     auto after = int_of(r.elements[4]);
                     if (!now || !levels || !grouped || !after) return bad("due", r);
                     Due out;
                     out.now = *now;
                     out.next_in = until(r.elements[1], *now);
                     out.levels = *levels;
                     out.grouped = *grouped > 0;
                     out.after_work = *after > 0;
                     for (std::size_t i = 5; i < r.elements.size(); ++i) {
                       out.jobs.push_back(std::move(r.elements[i].str));
                     }
                     return out;
                   });
}

Call<long long> fold(const Keys& k, std::size_t limit) {
  return make<long long>(scripts::fold(), {k.pending_high, k.pending, k.pending_low},
                         {std::to_string(limit)}, integer("fold"));
}

Call<long long> promote(const Keys& k, const std::vector<PromoteItem>& jobs) {
  std::vector<std::string> keys{k.delayed, k.pending, k.pending_high, k.pending_low};
  std::vector<std::string> args;
  args.reserve(3 * jobs.size());
  for (const auto& j : jobs) {
    args.push_back(j.job);
    if (j.retry_id.empty()) {
      args.emplace_back("0");
    } else {
      keys.push_back(k.job(j.retry_id));
      args.push_back(std::to_string(keys.size()));
    }
    args.push_back(std::to_string(static_cast<int>(j.level)));
  }
  return make<long long>(scripts::promote(), std::move(keys), std::move(args), integer("promote"));
}

// ---- dead jobs ----

Call<std::vector<std::string>> dead_victims(const Keys& k, std::uint64_t dead_max, Millis ttl,
                                            std::size_t limit) {
  return make<std::vector<std::string>>(
      scripts::dead_victims(), {k.dead},
      {std::to_string(dead_max), num(ttl.count()), std::to_string(limit)}, strings("dead_victims"));
}

Call<long long> drop_dead(const Keys& k, const std::vector<std::string>& ids) {
  std::vector<std::string> keys{k.dead, k.dead_bodies, k.dependents, k.live, k.waiting};
  for (const auto& id : ids) keys.push_back(k.job(id));
  return make<long long>(scripts::drop_dead(), std::move(keys), ids, integer("drop_dead"));
}

Call<long long> requeue_dead(const Keys& k, const std::vector<std::string>& ids,
                             std::size_t level) {
  std::vector<std::string> keys{k.dead, k.pending_at(level), k.dead_bodies, k.live};
  for (const auto& id : ids) keys.push_back(k.job(id));
  return make<long long>(scripts::requeue_dead(), std::move(keys), ids, integer("requeue_dead"));
}

// ---- control ----

Call<Control> control(const Keys& k) {
  return make<Control>(scripts::control(), {k.paused, k.cancels, k.live}, {},
                       [](Reply r) -> OpResult<Control> {
                         if (!r.is_array() || r.elements.empty()) return bad("control", r);
                         auto paused = int_of(r.elements[0]);
                         if (!paused) return bad("control", r);
                         Control out;
                         out.paused = *paused > 0;
                         for (std::size_t i = 1; i < r.elements.size(); ++i) {
                           out.cancels.push_back(std::move(r.elements[i].str));
                         }
                         return out;
                       });
}

Call<bool> set_paused(const Keys& k, bool paused, std::int64_t now_ms) {
  if (paused) {
    return command<bool>({"SET", k.paused, num(now_ms), "NX"},
                         [](Reply r) -> OpResult<bool> { return !r.is_nil(); });
  }
  return command<bool>({"DEL", k.paused}, one("resume"));
}

Call<bool> is_paused(const Keys& k) {
  return command<bool>({"EXISTS", k.paused}, one("paused"));
}

Call<std::vector<Repaired>> repair(const Keys& k, const std::string& worker, std::int64_t now_ms) {
  // The ring of groups (group_by), the lists and order of priorities and the keys of jobs that
  // wait for others too: a TYPE more each, only ever after a WRONGTYPE.
  return repair_keys(
      {k.pending, k.delayed, k.leases, k.live, k.dead, k.dead_bodies, k.inflight(worker), k.cancels,
       k.rate, k.groups, k.pending_high, k.pending_low, k.order, k.waiting, k.dependents, k.outbox,
       k.after_until, k.registering, k.flows},
      {"list", "zset", "zset", "hash", "zset", "hash", "hash", "hash", "hash", "zset", "list",
       "list", "hash", "hash", "hash", "list", "zset", "zset", "zset"},
      now_ms);
}

// ---- daemons and queues ----

Call<redis::Done> heartbeat(const std::string& prefix, const Heartbeat& h) {
  return make<redis::Done>(scripts::heartbeat(), {Keys::workers(prefix)}, {h.worker, h.open_json()},
                           done());
}

Call<redis::Done> forget_worker(const std::string& prefix, const std::string& worker) {
  return command<redis::Done>({"HDEL", Keys::workers(prefix), worker}, done());
}

Call<Workers> read_workers(const std::string& prefix) {
  return command<Workers>({"HGETALL", Keys::workers(prefix)}, [](Reply r) -> OpResult<Workers> {
    if (!r.is_array() || r.elements.size() % 2 != 0) return bad("workers", r);
    Workers out;
    for (std::size_t i = 0; i + 1 < r.elements.size(); i += 2) {
      auto h = Heartbeat::from_json(r.elements[i + 1].str);
      if (!h) {
        ++out.gone;
        continue;
      }
      out.live.push_back(std::move(*h));
    }
    return out;
  });
}

void Workers::keep_live(std::int64_t now) {
  const auto before = live.size();
  std::erase_if(live, [now](const Heartbeat& h) { return now - h.seen_at > kLiveWithinMs; });
  gone += before - live.size();
  std::sort(live.begin(), live.end(),
            [](const Heartbeat& a, const Heartbeat& b) { return a.started_at < b.started_at; });
}

Call<redis::Done> register_queue(const std::string& prefix, const std::string& queue) {
  return command<redis::Done>({"SADD", Keys::registry(prefix), queue}, done());
}

Call<std::vector<std::string>> registered_queues(const std::string& prefix) {
  auto read = strings("registry");
  return command<std::vector<std::string>>({"SMEMBERS", Keys::registry(prefix)},
                                           [read](Reply r) -> OpResult<std::vector<std::string>> {
                                             auto out = read(std::move(r));
                                             if (out.ok()) std::sort(out->begin(), out->end());
                                             return out;
                                           });
}

Call<Depths> depths(const Keys& k, const Rate& rate) {
  std::vector<std::string> keys{k.pending, k.delayed, k.dead, k.pending_high, k.pending_low};
  std::vector<std::string> args;
  if (rate.per_ms > 0) {
    keys.push_back(k.rate);
    char per_ms[32];
    std::snprintf(per_ms, sizeof per_ms, "%.9g", rate.per_ms);
    args = {per_ms, std::to_string(std::max<std::uint64_t>(1, rate.burst))};
  }
  const std::size_t want = keys.size() - 2;  // the lists of priorities count into pending
  return make<Depths>(scripts::depths(), std::move(keys), std::move(args),
                      [want](Reply r) -> OpResult<Depths> {
                        if (!r.is_array() || r.elements.size() != want) return bad("depths", r);
                        Depths d;
                        d.pending = int_of(r.elements[0]).value_or(-1);
                        d.delayed = int_of(r.elements[1]).value_or(-1);
                        d.dead = int_of(r.elements[2]).value_or(-1);
                        if (want == 4) d.tokens = int_of(r.elements[3]).value_or(-1);
                        return d;
                      });
}

Call<bool> add_history(const Keys& k, std::int64_t minute, const MinuteCounts& m) {
  return make<bool>(scripts::history(), {k.minutes, k.hours},
                    {std::to_string(minute), std::to_string(m.succeeded), std::to_string(m.failed),
                     std::to_string(m.retried), std::to_string(m.timed), std::to_string(m.run_ms),
                     std::to_string(kMinutesKept), std::to_string(kHoursKept)},
                    [](Reply r) -> OpResult<bool> {
                      if (auto v = int_of(r)) return *v == 1;
                      return bad("history", r);
                    });
}

Call<std::map<std::int64_t, MinuteCounts>> read_history(const Keys& k, bool hours) {
  using Out = std::map<std::int64_t, MinuteCounts>;
  return command<Out>({"HGETALL", hours ? k.hours : k.minutes}, [](Reply r) -> OpResult<Out> {
    if (!r.is_array() || r.elements.size() % 2 != 0) return bad("history", r);
    Out out;
    for (std::size_t i = 0; i + 1 < r.elements.size(); i += 2) {
      const std::string& field = r.elements[i].str;
      const auto colon = field.find(':');
      std::int64_t at = 0;
      std::uint64_t v = 0;
      const char* end = field.data() + colon;
      if (colon == std::string::npos || colon + 2 != field.size() ||
          std::from_chars(field.data(), end, at).ptr != end) {
        continue;
      }
      const std::string& value = r.elements[i + 1].str;
      if (std::from_chars(value.data(), value.data() + value.size(), v).ec != std::errc()) {
        continue;
      }
      MinuteCounts& m = out[at];
      switch (field.back()) {
        case 's':
          m.succeeded = v;
          break;
        case 'f':
          m.failed = v;
          break;
        case 'r':
          m.retried = v;
          break;
        case 'n':
          m.timed = v;
          break;
        case 't':
          m.run_ms = v;
          break;
        default:
          break;
      }
    }
    return out;
  });
}

Call<std::map<std::string, std::string>> info(const std::string& section) {
  using Out = std::map<std::string, std::string>;
  return command<Out>({"INFO", section}, [](Reply r) -> OpResult<Out> {
    if (r.is_error() || r.is_array()) return bad("INFO", r);
    Out out;
    std::size_t at = 0;
    while (at < r.str.size()) {
      auto end = r.str.find('\n', at);
      if (end == std::string::npos) end = r.str.size();
      std::string line = r.str.substr(at, end - at);
      at = end + 1;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      const auto colon = line.find(':');
      if (line.empty() || line[0] == '#' || colon == std::string::npos) continue;
      out[line.substr(0, colon)] = line.substr(colon + 1);
    }
    return out;
  });
}

Call<long long> memory_usage(const std::string& key) {
  return command<long long>({"MEMORY", "USAGE", key, "SAMPLES", "5"},
                            [](Reply r) -> OpResult<long long> {
                              if (r.is_nil()) return 0LL;
                              if (auto v = int_of(r)) return *v;
                              return bad("MEMORY USAGE", r);
                            });
}

Call<bool> leased(const Keys& k) {
  return command<bool>({"ZCARD", k.leases}, [](Reply r) -> OpResult<bool> {
    if (auto v = int_of(r)) return *v > 0;
    return bad("leases", r);
  });
}

// ---- schedules ----

Call<Defined> define_schedule(const Keys& k, const std::string& name, const std::string& def,
                              const std::string& timing, std::int64_t next, bool runtime) {
  return make<Defined>(scripts::schedule_define(), {k.schedules, k.schedule(name)},
                       {name, def, timing, num(next), runtime ? "runtime" : "config"},
                       [](Reply r) -> OpResult<Defined> {
                         if (!r.is_array() || r.elements.empty()) return bad("schedule_define", r);
                         const std::string& what = r.elements[0].str;
                         Defined d;
                         if (what == "config") {
                           d.kind = Defined::Kind::config;
                         } else if (what == "garbage" && r.elements.size() == 2) {
                           d.kind = Defined::Kind::garbage;
                           d.key = r.elements[1].str;
                         } else if (what == "ok" && r.elements.size() == 3) {
                           auto next = int_of(r.elements[1]), restarted = int_of(r.elements[2]);
                           if (!next || !restarted) return bad("schedule_define", r);
                           d.next = *next;
                           d.restarted = *restarted == 1;
                         } else {
                           return bad("schedule_define", r);
                         }
                         return d;
                       });
}

Call<Fired> fire_schedule(const Keys& k, const std::string& name, const std::string& timing,
                          std::int64_t tick, std::int64_t after, const std::vector<TickJob>& jobs,
                          job::Priority level) {
  std::vector<std::string> args{name, timing, num(tick), num(after)};
  for (const auto& j : jobs) {
    args.push_back(j.id);
    args.push_back(num(j.run_at));
    args.push_back(j.json);
  }
  return make<Fired>(
      scripts::schedule_fire(),
      {k.schedules, k.schedule(name), k.pending_at(static_cast<std::size_t>(level)), k.delayed},
      std::move(args), [](Reply r) -> OpResult<Fired> {
        if (!r.is_array() || r.elements.empty()) return bad("schedule_fire", r);
        static const std::map<std::string, Fired::Kind> kinds = {
            {"fired", Fired::Kind::fired},     {"paused", Fired::Kind::paused},
            {"early", Fired::Kind::early},     {"moved", Fired::Kind::moved},
            {"changed", Fired::Kind::changed}, {"gone", Fired::Kind::gone},
            {"garbage", Fired::Kind::garbage}};
        auto it = kinds.find(r.elements[0].str);
        if (it == kinds.end()) return bad("schedule_fire", r);
        Fired f;
        f.kind = it->second;
        if (r.elements.size() > 1) {
          if (f.kind == Fired::Kind::garbage) {
            f.key = r.elements[1].str;
          } else if (auto v = int_of(r.elements[1])) {
            f.value = *v;
          }
        }
        return f;
      });
}

Call<std::vector<std::pair<std::string, std::string>>> schedule_defs(const Keys& k) {
  using Out = std::vector<std::pair<std::string, std::string>>;
  return command<Out>({"HGETALL", k.schedules}, [](Reply r) -> OpResult<Out> {
    if (!r.is_array() || r.elements.size() % 2 != 0) return bad("schedules", r);
    Out out;
    for (std::size_t i = 0; i + 1 < r.elements.size(); i += 2) {
      out.emplace_back(std::move(r.elements[i].str), std::move(r.elements[i + 1].str));
    }
    return out;
  });
}

Call<bool> schedule_exists(const Keys& k, const std::string& name) {
  return command<bool>({"HEXISTS", k.schedules, name}, one("HEXISTS"));
}

Call<ScheduleState> schedule_state(const Keys& k, const std::string& name) {
  return command<ScheduleState>(
      {"HGETALL", k.schedule(name)}, [](Reply r) -> OpResult<ScheduleState> {
        if (!r.is_array() || r.elements.size() % 2 != 0) return bad("schedule state", r);
        ScheduleState s;
        const auto whole = [](const Reply& v) { return int_of(v).value_or(0); };
        for (std::size_t i = 0; i + 1 < r.elements.size(); i += 2) {
          const std::string& f = r.elements[i].str;
          const Reply& v = r.elements[i + 1];
          if (f == "next") s.next = whole(v);
          if (f == "last") s.last = whole(v);
          if (f == "last_at") s.last_at = whole(v);
          if (f == "paused") s.paused_at = std::max<std::int64_t>(1, whole(v));
          if (f == "last_id") s.last_id = v.str;
          if (f == "origin") s.origin = v.str;
          if (f == "timing") s.timing = v.str;
          if (f == "fired") s.fired = static_cast<std::uint64_t>(std::max<long long>(0, whole(v)));
          if (f == "skipped")
            s.skipped = static_cast<std::uint64_t>(std::max<long long>(0, whole(v)));
        }
        return s;
      });
}

Call<std::string> control_schedule(const Keys& k, const std::string& op, const std::string& name) {
  return make<std::string>(scripts::schedule_control(), {k.schedules, k.schedule(name)}, {op, name},
                           [](Reply r) -> OpResult<std::string> {
                             if (r.type != Type::string && r.type != Type::status) {
                               return bad("schedule_control", r);
                             }
                             return std::move(r.str);
                           });
}

Call<std::int64_t> redis_time() {
  return command<std::int64_t>({"TIME"}, [](Reply r) -> OpResult<std::int64_t> {
    if (!r.is_array() || r.elements.size() != 2) return bad("TIME", r);
    auto s = int_of(r.elements[0]), us = int_of(r.elements[1]);
    if (!s || !us) return bad("TIME", r);
    return *s * 1000 + *us / 1000;
  });
}

// ---- jobs ----

Call<State> read_state(const Keys& k, const std::string& id) {
  return command<State>({"HGETALL", k.job(id)}, [](Reply r) -> OpResult<State> {
    if (!r.is_array() || r.elements.size() % 2 != 0) return bad("job state", r);
    State out;
    for (std::size_t i = 0; i + 1 < r.elements.size(); i += 2) {
      out[std::move(r.elements[i].str)] = std::move(r.elements[i + 1].str);
    }
    return out;
  });
}

Call<std::string> read_claim(const Keys& k, const std::string& id) {
  return command<std::string>({"HGET", k.live, id}, [](Reply r) -> OpResult<std::string> {
    if (r.is_nil()) return std::string();
    if (r.type != Type::string) return bad("claim", r);
    return std::move(r.str);
  });
}

Call<bool> holds(const Keys& k, const std::string& worker, const std::string& token) {
  return command<bool>({"HEXISTS", k.inflight(worker), token}, one("holds"));
}

Call<bool> submit(const Keys& k, const std::string& id, const std::string& queue,
                  const std::string& copy, std::int64_t submitted_at,
                  std::optional<std::int64_t> run_at, job::Priority level) {
  // A job of another priority goes to its level's list (submit.lua pushes to the one it is given)
  // and wakes the daemons of a queue with priorities (their wait watches pending alone).
  std::vector<std::string> args{copy, id, queue, num(submitted_at),
                                run_at ? num(*run_at) : std::string()};
  if (level != job::Priority::normal) {
    args.resize(12);
    args.push_back(k.wake);
  }
  return make<bool>(scripts::submit(),
                    {k.job(id), k.live, k.pending_at(static_cast<std::size_t>(level)), k.delayed},
                    std::move(args), one("submit"));
}

Call<Submitted> submit(const Keys& k, const std::string& id, const std::string& queue,
                       const std::string& copy, std::int64_t submitted_at,
                       std::optional<std::int64_t> run_at, const UniqueAsk& unique,
                       job::Priority level) {
  std::vector<std::string> keys{k.job(id),
                                k.live,
                                k.pending_at(static_cast<std::size_t>(level)),
                                k.delayed,
                                k.unique(unique.key),
                                k.dependents,
                                k.outbox};
  // Debounce replaces the holder it names: its state is written, so it is declared (and the
  // jobs waiting on it are told, through dependents and the outbox).
  if (!unique.expected.empty()) keys.push_back(k.job(unique.expected));
  const bool take = unique.rule.queued || unique.rule.mode != UniqueRule::Mode::lock;
  return make<Submitted>(
      scripts::submit(), std::move(keys),
      {copy, id, queue, num(submitted_at), run_at ? num(*run_at) : std::string(),
       unique.rule.code(), num(std::max<long long>(1, unique.rule.hold.count())), take ? "1" : "0",
       unique.key, unique.expected, k.events, num(unique.keep_failed.count()),
       level != job::Priority::normal ? k.wake : std::string()},
      [](Reply r) -> OpResult<Submitted> {
        if (!r.is_array() || r.elements.size() != 2) return bad("submit", r);
        static const std::map<std::string, Submitted::What> whats = {
            {"queued", Submitted::What::queued},
            {"waits", Submitted::What::waits},
            {"duplicate", Submitted::What::duplicate},
            {"again", Submitted::What::again},
            {"garbage", Submitted::What::garbage}};
        auto it = whats.find(r.elements[0].str);
        if (it == whats.end()) return bad("submit", r);
        return Submitted{it->second, std::move(r.elements[1].str)};
      });
}

Call<std::vector<Repaired>> repair_lock(const Keys& k, const std::string& unique_key,
                                        std::int64_t now_ms) {
  return repair_keys({k.unique(unique_key)}, {"string"}, now_ms);
}

Call<std::vector<Repaired>> repair_keys(std::vector<std::string> keys,
                                        std::vector<std::string> types, std::int64_t now_ms) {
  const std::size_t n = keys.size();
  for (std::size_t i = 0; i < n; ++i) keys.push_back(Keys::aside(keys[i], now_ms));
  return make<std::vector<Repaired>>(
      scripts::repair(), std::move(keys), std::move(types),
      [](Reply r) -> OpResult<std::vector<Repaired>> {
        if (!r.is_array() || r.elements.size() % 3 != 0) return bad("repair", r);
        std::vector<Repaired> out;
        for (std::size_t i = 0; i + 2 < r.elements.size(); i += 3) {
          out.push_back({r.elements[i].str, r.elements[i + 1].str, r.elements[i + 2].str});
        }
        return out;
      });
}

Call<CancelAnswer> cancel(const Keys& k, const std::string& queue, const std::string& id,
                          const std::string& how, const std::string& copy, Millis keep,
                          const std::string& why, const std::string& payload,
                          const std::string& unique_key) {
  Copy c = split(copy);
  const std::string nonce = c.marker ? c.marker->nonce : "";
  const std::string attempts = c.marker ? num(c.marker->attempts) : "0";
  const std::string submitted = c.marker ? c.marker->submitted_at : "";
  // A copy waiting in a priority's list is taken from there (the script knows one pending list).
  const std::string* list = k.waiting_list(how);
  // dependents and outbox: the jobs waiting on it are told; waiting to after, registering: where
  // a job waiting for its dependencies is (how `waiting`).
  std::vector<std::string> keys{k.job(id),    list ? *list : k.pending,
                                k.delayed,    k.live,
                                k.cancels,    k.dependents,
                                k.outbox,     k.waiting,
                                k.after(id),  k.after_until,
                                k.registering};
  if (!unique_key.empty()) keys.push_back(k.unique(unique_key));
  return make<CancelAnswer>(scripts::cancel(), std::move(keys),
                            {queue, k.events, id, list ? "pending" : how, copy, nonce, attempts,
                             submitted, num(keep.count()), why, payload},
                            [](Reply r) -> OpResult<CancelAnswer> {
                              if (!r.is_array() || r.elements.empty()) return bad("cancel", r);
                              CancelAnswer out;
                              out.what = r.elements[0].str;
                              if (r.elements.size() > 1) out.status = r.elements[1].str;
                              return out;
                            });
}

Call<std::string> waiting_copy(const Keys& k, const std::string& id) {
  return command<std::string>({"HGET", k.waiting, id}, [](Reply r) -> OpResult<std::string> {
    if (r.is_nil()) return std::string();
    if (r.type != Type::string) return bad("HGET of waiting", r);
    return std::move(r.str);
  });
}

Call<std::size_t> read_shards(const Keys& k) {
  const std::string key = k.shards;
  return command<std::size_t>({"GET", key}, [key](Reply r) -> OpResult<std::size_t> {
    if (r.type == Type::nil) return std::size_t{0};
    auto v = int_of(r);
    if (!v || *v < 1 || *v > static_cast<long long>(kMaxShards)) {
      return OpError{OpError::Kind::shape, key + " should hold the queue's shard count (1.." +
                                               std::to_string(kMaxShards) + "), not " +
                                               r.describe()};
    }
    return static_cast<std::size_t>(*v);
  });
}

Call<redis::Done> write_shards(const Keys& k, std::size_t n) {
  // A plain SET: it replaces garbage of any type.
  return command<redis::Done>({"SET", k.shards, std::to_string(n)}, done());
}

Call<long long> push_pending(const Keys& home, const std::vector<std::string>& copies,
                             const std::string& where) {
  const std::string* list = home.waiting_list(where);
  std::vector<std::string> argv{"LPUSH", list ? *list : home.pending};
  argv.insert(argv.end(), copies.begin(), copies.end());
  return command<long long>(std::move(argv), integer("pending"));
}

Call<long long> drop_held(const Keys& k, const std::string& worker,
                          const std::vector<std::uint64_t>& tokens) {
  std::vector<std::string> argv{"HDEL", k.inflight(worker)};
  for (auto t : tokens) argv.push_back(std::to_string(t));
  return command<long long>(std::move(argv), integer("inflight"));
}

Call<bool> take_copy(const Keys& k, const std::string& where, const std::string& copy) {
  if (const std::string* list = k.waiting_list(where)) {
    return command<bool>({"LREM", *list, "1", copy}, one("pending"));
  }
  return command<bool>({"ZREM", k.delayed, copy}, one("delayed"));
}

Call<redis::Done> put_delayed(const Keys& k, const std::string& copy, const std::string& score) {
  return command<redis::Done>({"ZADD", k.delayed, score, copy}, done());
}

Call<long long> pending_length(const Keys& k, const std::string& where) {
  const std::string* list = k.waiting_list(where);
  return command<long long>({"LLEN", list ? *list : k.pending}, integer("pending"));
}

Call<std::vector<std::string>> pending_slice(const Keys& k, long long from, long long to,
                                             const std::string& where) {
  const std::string* list = k.waiting_list(where);
  return command<std::vector<std::string>>({"LRANGE", list ? *list : k.pending, num(from), num(to)},
                                           strings("pending"));
}

namespace {

// A key's text as a SCAN pattern matching it literally: glob characters escaped.
std::string literal_glob(const std::string& s) {
  std::string out;
  for (char ch : s) {
    if (ch == '*' || ch == '?' || ch == '[' || ch == ']' || ch == '\\') out += '\\';
    out += ch;
  }
  return out;
}

// Bulk replies as strings, a nil as "" (HMGET's missing fields).
OpResult<std::vector<std::string>> bulk_or_empty(const char* what, Reply r) {
  if (!r.is_array()) return bad(what, r);
  std::vector<std::string> out;
  out.reserve(r.elements.size());
  for (auto& e : r.elements) out.push_back(std::move(e.str));
  return out;
}

}  // namespace

Call<ScanStep> scan_states(const Keys& k, const std::string& cursor, std::size_t count) {
  const std::string stem = k.job("");
  return make<ScanStep>(
      scripts::scan_states(), {k.live}, {cursor, literal_glob(stem) + "*", std::to_string(count)},
      [stem](Reply r) -> OpResult<ScanStep> {
        if (!r.is_array() || r.elements.size() != 2 || !r.elements[1].is_array()) {
          return bad("scan", r);
        }
        ScanStep out;
        out.next = std::move(r.elements[0].str);
        for (auto& e : r.elements[1].elements) {
          if (e.str.size() > stem.size()) out.ids.push_back(e.str.substr(stem.size()));
        }
        return out;
      });
}

Call<std::vector<std::string>> state_fields(const Keys& k, const std::string& id,
                                            const std::vector<std::string>& fields) {
  std::vector<std::string> argv{"HMGET", k.job(id)};
  argv.insert(argv.end(), fields.begin(), fields.end());
  return command<std::vector<std::string>>(
      std::move(argv), [](Reply r) { return bulk_or_empty("job state", std::move(r)); });
}

Call<bool> is_dead(const Keys& k, const std::string& id) {
  return command<bool>({"ZSCORE", k.dead, id}, [](Reply r) -> OpResult<bool> {
    if (r.is_nil()) return false;
    if (r.is_error()) return bad("dead", r);
    return true;
  });
}

Call<std::vector<std::string>> dead_bodies(const Keys& k, const std::vector<std::string>& ids) {
  std::vector<std::string> argv{"HMGET", k.dead_bodies};
  argv.insert(argv.end(), ids.begin(), ids.end());
  return command<std::vector<std::string>>(
      std::move(argv), [](Reply r) { return bulk_or_empty("dead bodies", std::move(r)); });
}

Call<long long> delayed_count(const Keys& k) {
  return command<long long>({"ZCARD", k.delayed}, integer("delayed"));
}

Call<std::vector<std::pair<std::string, std::string>>> delayed_slice(const Keys& k, long long from,
                                                                     long long to) {
  return command<std::vector<std::pair<std::string, std::string>>>(
      {"ZRANGE", k.delayed, num(from), num(to), "WITHSCORES"}, pairs("delayed"));
}

Call<long long> dead_count(const Keys& k) {
  return command<long long>({"ZCARD", k.dead}, integer("dead"));
}

Call<std::vector<std::pair<std::string, std::string>>> dead_slice(const Keys& k, long long from,
                                                                  long long to) {
  return command<std::vector<std::pair<std::string, std::string>>>(
      {"ZRANGE", k.dead, num(from), num(to), "WITHSCORES"}, pairs("dead"));
}

Call<std::vector<std::string>> lease_holders(const Keys& k) {
  return command<std::vector<std::string>>({"ZRANGE", k.leases, "0", "-1"}, strings("leases"));
}

}  // namespace jq::store
