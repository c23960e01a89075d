// The group_by calls: their arguments as the scripts take them, and their replies read.
#include "store/groups.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "store/scripts.hpp"

namespace jq::store {
namespace {

using redis::Reply;
using Type = redis::Reply::Type;

// A rate as the scripts take it: tokens per ms, then the burst ("0" "0": none).
void push_rate(std::vector<std::string>& args, const Rate& rate) {
  if (rate.per_ms <= 0) {
    args.insert(args.end(), {"0", "0"});
    return;
  }
  char per_ms[32];
  std::snprintf(per_ms, sizeof per_ms, "%.9g", rate.per_ms);
  args.push_back(per_ms);
  args.push_back(std::to_string(std::max<std::uint64_t>(1, rate.burst)));
}

// The reply's elements read in order; any of another shape ends the reading (ok() false).
class Reader {
 public:
  explicit Reader(Reply& r) : r_(r) {}
  bool ok() const noexcept { return ok_; }
  bool more() const noexcept { return at_ < r_.elements.size(); }
  std::size_t left() const noexcept { return r_.elements.size() - at_; }
  long long integer() {
    if (!more()) return fail();
    Reply& e = r_.elements[at_++];
    if (e.type == Type::integer) return e.integer;
    if (e.type == Type::string) {
      char* end = nullptr;
      const long long v = std::strtoll(e.str.c_str(), &end, 10);
      if (!e.str.empty() && end == e.str.c_str() + e.str.size()) return v;
    }
    return fail();
  }
  std::string text() {
    if (!more() || r_.elements[at_].type != Type::string) return fail(), std::string();
    return std::move(r_.elements[at_++].str);
  }
  Reply& next() { return r_.elements[at_++]; }
  long long fail() {
    ok_ = false;
    at_ = r_.elements.size();
    return 0;
  }

 private:
  Reply& r_;
  std::size_t at_ = 0;
  bool ok_ = true;
};

}  // namespace

Call<GroupSorted> group_sort(const Keys& k, const std::string& worker,
                             const std::vector<std::string>& groups,
                             const std::vector<std::pair<std::uint64_t, std::size_t>>& jobs) {
  std::vector<std::string> keys{k.inflight(worker), k.groups};
  std::vector<std::string> args;
  args.reserve(1 + groups.size() + 2 * jobs.size());
  args.push_back(std::to_string(groups.size()));
  for (const auto& g : groups) {
    keys.push_back(k.group(g));
    args.push_back(g);
  }
  for (const auto& [token, index] : jobs) {
    args.push_back(std::to_string(token));
    args.push_back(std::to_string(index + 1));
  }
  const std::size_t count = groups.size();
  return Call<GroupSorted>{Request{&scripts::group_sort(), std::move(keys), std::move(args)},
                           [count](Reply r) -> OpResult<GroupSorted> {
                             if (!r.is_array() || r.elements.empty())
                               return redis::shape_error("group_sort", r);
                             Reader in(r);
                             GroupSorted out;
                             out.moved = in.integer();
                             while (in.ok() && in.more()) {
                               const long long i = in.integer();
                               if (i < 1 || static_cast<std::size_t>(i) > count) break;
                               out.bad.push_back(static_cast<std::size_t>(i - 1));
                             }
                             if (!in.ok() || in.more()) return redis::shape_error("group_sort", r);
                             return out;
                           }};
}

Call<GroupFetched> group_fetch(const Keys& k, const std::string& worker, std::uint64_t first,
                               std::size_t n, std::uint64_t max_bytes, const Rate& rate,
                               std::size_t cap, const GroupRule& rule,
                               const std::vector<std::string>& head, std::size_t want,
                               const std::vector<std::string>& others, bool sort_first) {
  std::vector<std::string> keys{k.leases, k.inflight(worker), k.paused,
                                k.groups, k.pending,          k.rate};
  std::vector<std::string> args{worker, std::to_string(n), std::to_string(max_bytes)};
  args.reserve(12 + head.size() + n + others.size());
  push_rate(args, rate);
  push_rate(args, rule.rate);
  args.push_back(std::to_string(rule.slots));
  args.push_back(std::to_string(want));
  args.push_back(sort_first ? "1" : "0");
  args.push_back(std::to_string(cap));
  args.push_back(std::to_string(head.size()));
  for (const auto& g : head) {
    keys.push_back(k.group(g));
    keys.push_back(k.group_rate(g));
    keys.push_back(k.group_holds(g));
    args.push_back(g);
  }
  for (std::size_t i = 0; i < n; ++i) args.push_back(std::to_string(first + i));
  // Other workers' holds matter only to a group's concurrency and the global one.
  if (rule.slots > 0 || cap > 0) {
    for (const auto& w : others) {
      keys.push_back(k.inflight(w));
      args.push_back(w);
    }
  }
  const std::size_t named = head.size();
  return Call<GroupFetched>{
      Request{&scripts::group_fetch(), std::move(keys), std::move(args)},
      [first, n, named](Reply r) { return decode_group_fetch(std::move(r), first, n, named); }};
}

OpResult<GroupFetched> decode_group_fetch(Reply r, std::uint64_t first, std::size_t n,
                                          std::size_t named) {
  GroupFetched out;
  if (r.is_nil()) {
    out.batch.lease_lost = true;
    return out;
  }
  if (!r.is_array() || r.elements.size() < 2) return redis::shape_error("group_fetch", r);
  Reader in(r);
  out.batch.now = in.integer();
  const long long flag = in.integer();
  if (in.ok() && (flag == -1 || flag == 4) && !in.more()) {
    out.batch.paused = flag == -1;
    out.sort_first = flag == 4;
    return out;
  }
  const long long wait = in.integer();
  out.pending = in.integer();
  out.groups = in.integer();
  const auto count = [&in]() -> std::size_t {
    const long long c = in.integer();
    if (c < 0 || static_cast<std::size_t>(c) > in.left())
      return static_cast<std::size_t>(in.fail());
    return static_cast<std::size_t>(c);
  };
  for (std::size_t i = count(); in.ok() && i > 0; --i) out.head.push_back(in.text());
  for (std::size_t i = count(); in.ok() && i > 0; --i) {
    const long long b = in.integer();
    if (b < 1 || static_cast<std::size_t>(b) > named) return redis::shape_error("group_fetch", r);
    out.bad.push_back(static_cast<std::size_t>(b - 1));
  }
  for (std::size_t i = count(); in.ok() && i > 0; --i) out.live.push_back(in.text());
  for (std::size_t i = count(); in.ok() && i > 0; --i) {
    std::string g = in.text();
    out.waiting.emplace_back(std::move(g), in.integer());
  }
  if (!in.ok() || flag < 0 || flag > 3 || wait < 0 || in.left() > n) {
    return redis::shape_error("group_fetch", r);
  }
  if (flag != 0) {
    out.batch.limited_ms = std::max<long long>(1, wait);
    constexpr Limit kBy[] = {Limit::none, Limit::rate, Limit::cap, Limit::group};
    out.batch.limited_by = kBy[flag];
  }
  for (std::uint64_t token = first; in.more(); ++token) {
    Reply& e = in.next();
    Held h;
    h.token = token;
    if (e.type == Type::integer && e.integer > 0) {
      h.oversized = static_cast<std::uint64_t>(e.integer);
    } else if (e.type == Type::string) {
      h.copy = std::move(e.str);
    } else {
      return redis::shape_error("group_fetch", r);
    }
    out.batch.jobs.push_back(std::move(h));
  }
  return out;
}

GroupDepths group_depths(redis::SyncClient& c, const Keys& k, std::size_t most) {
  GroupDepths out;
  const auto count = [](Reply r) -> OpResult<long long> {
    if (r.type != Type::integer) return redis::shape_error("group depths", r);
    return r.integer;
  };
  const Call<long long> card{Request{nullptr, {}, {"ZCARD", k.groups}}, count};
  const OpResult<long long> groups = run(c, card);
  if (!groups.ok() || *groups <= 0) return out;
  out.groups = *groups;
  const Call<std::vector<std::string>> first{
      Request{nullptr, {}, {"ZRANGE", k.groups, "0", std::to_string(most - 1)}},
      [](Reply r) -> OpResult<std::vector<std::string>> {
        std::vector<std::string> names;
        for (auto& e : r.elements) names.push_back(std::move(e.str));
        return names;
      }};
  const OpResult<std::vector<std::string>> names = run(c, first);
  if (!names.ok()) return out;
  std::vector<Call<long long>> lengths;
  for (const auto& g : *names)
    lengths.push_back({Request{nullptr, {}, {"LLEN", k.group(g)}}, count});
  for (const auto& n : pipelined(c, lengths)) out.waiting += n.ok() ? *n : 0;
  out.all = static_cast<long long>(names->size()) >= out.groups;
  return out;
}

Call<std::vector<std::string>> ring_head(const Keys& k, std::size_t most) {
  return {Request{nullptr, {}, {"ZRANGE", k.groups, "0", std::to_string(most - 1)}},
          [](Reply r) -> OpResult<std::vector<std::string>> {
            if (!r.is_array()) return redis::shape_error("ZRANGE of the ring", r);
            std::vector<std::string> names;
            for (auto& e : r.elements) {
              if (e.type != Type::string) return redis::shape_error("ZRANGE of the ring", r);
              names.push_back(std::move(e.str));
            }
            return names;
          }};
}

Call<Ungrouped> ungroup(const Keys& k, const std::vector<std::string>& groups, std::size_t most) {
  std::vector<std::string> keys{k.groups, k.pending};
  std::vector<std::string> args{std::to_string(most)};
  keys.reserve(2 + 3 * groups.size());
  args.reserve(1 + groups.size());
  for (const auto& g : groups) {
    keys.push_back(k.group(g));
    keys.push_back(k.group_rate(g));
    keys.push_back(k.group_holds(g));
    args.push_back(g);
  }
  const std::size_t count = groups.size();
  return Call<Ungrouped>{Request{&scripts::ungroup(), std::move(keys), std::move(args)},
                         [count](Reply r) -> OpResult<Ungrouped> {
                           if (!r.is_array() || r.elements.size() < 2)
                             return redis::shape_error("ungroup", r);
                           Reader in(r);
                           Ungrouped out;
                           out.moved = in.integer();
                           out.left = in.integer();
                           while (in.ok() && in.more()) {
                             const long long i = in.integer();
                             if (i < 1 || static_cast<std::size_t>(i) > count) break;
                             out.bad.push_back(static_cast<std::size_t>(i - 1));
                           }
                           if (!in.ok() || in.more()) return redis::shape_error("ungroup", r);
                           return out;
                         }};
}

Call<std::vector<Repaired>> repair_group(const Keys& k, const std::string& group,
                                         std::int64_t now_ms) {
  return repair_keys({k.group(group), k.group_rate(group), k.group_holds(group)},
                     {"list", "hash", "zset"}, now_ms);
}

}  // namespace jq::store
