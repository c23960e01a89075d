// Heartbeat JSON both ways, and activity: the live daemons' reports of each queue summed.
#include "store/heartbeat.hpp"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "job/text.hpp"

namespace jq::store {
namespace {

using json = nlohmann::json;

template <class T>
T get_or(const json& j, const char* key, T fallback) {
  auto it = j.find(key);
  if (it == j.end()) return fallback;
  try {
    return it->get<T>();
  } catch (const json::exception&) {
    return fallback;
  }
}

json limits_json(const QueueLimits& l) {
  return {{"rate", l.rate},
          {"rate_per_s", l.rate_per_s},
          {"rate_burst", l.rate_burst},
          {"global_concurrency", l.global_concurrency},
          {"priorities", l.priorities},
          {"weights", l.weights},
          {"aging_ms", l.aging_ms},
          {"weight", l.weight},
          {"group_by", l.group_by},
          {"group_rate", l.group_rate},
          {"group_concurrency", l.group_concurrency}};
}

QueueLimits limits_of(const json& j) {
  QueueLimits l;
  l.rate = get_or<std::string>(j, "rate", "");
  l.rate_per_s = get_or<double>(j, "rate_per_s", 0);
  l.rate_burst = get_or<std::uint64_t>(j, "rate_burst", 0);
  l.global_concurrency = get_or<std::uint64_t>(j, "global_concurrency", 0);
  l.priorities = get_or<std::string>(j, "priorities", "");
  l.weights = get_or<std::array<std::uint64_t, 3>>(j, "weights", l.weights);
  l.aging_ms = get_or<std::int64_t>(j, "aging_ms", l.aging_ms);
  l.weight = get_or<std::uint64_t>(j, "weight", 1);
  l.group_by = get_or<std::string>(j, "group_by", "");
  l.group_rate = get_or<std::string>(j, "group_rate", "");
  l.group_concurrency = get_or<std::uint64_t>(j, "group_concurrency", 0);
  return l;
}

}  // namespace

std::string Heartbeat::open_json() const {
  json qs = json::object();
  for (const auto& [name, q] : queues) {
    qs[name] = {{"running", q.running},
                {"buffered", q.buffered},
                {"paused", q.paused},
                {"succeeded", q.succeeded},
                {"retried", q.retried},
                {"failed", q.failed},
                {"invalid", q.invalid},
                {"succeeded_1m", q.succeeded_1m},
                {"retried_1m", q.retried_1m},
                {"failed_1m", q.failed_1m},
                {"durations_1m", {{"le", q.le}, {"counts", q.counts}}},
                {"running_tokens", q.running_tokens}};
    if (q.limits) qs[name]["limits"] = limits_json(*q.limits);
    if (!q.held_back.empty()) qs[name]["held_back"] = q.held_back;
  }
  json j = {{"worker", worker}, {"name", name},       {"host", host},
            {"pid", pid},       {"version", version}, {"started_at", started_at},
            {"queues", qs}};
  std::string text = j.dump(-1, ' ', false, json::error_handler_t::replace);
  text.pop_back();  // the closing brace: the script adds seen_at, then closes it
  return text;
}

std::optional<Heartbeat> Heartbeat::from_json(std::string_view text) {
  auto parsed = job::parse_json(text);
  auto* j = std::get_if<json>(&parsed);
  if (!j || !j->is_object()) return std::nullopt;
  auto seen = j->find("seen_at");
  auto qs = j->find("queues");
  if (seen == j->end() || !seen->is_number_integer() || qs == j->end() || !qs->is_object()) {
    return std::nullopt;
  }
  Heartbeat h;
  h.seen_at = seen->get<std::int64_t>();
  h.worker = get_or<std::string>(*j, "worker", "");
  h.name = get_or<std::string>(*j, "name", "");
  h.host = get_or<std::string>(*j, "host", "");
  h.version = get_or<std::string>(*j, "version", "");
  h.pid = get_or<long long>(*j, "pid", 0);
  h.started_at = get_or<std::int64_t>(*j, "started_at", 0);
  for (const auto& [name, q] : qs->items()) {
    if (!q.is_object()) continue;
    QueueReport r;
    r.running = get_or<long long>(q, "running", 0);
    r.buffered = get_or<long long>(q, "buffered", 0);
    r.paused = get_or<bool>(q, "paused", false);
    r.succeeded = get_or<std::uint64_t>(q, "succeeded", 0);
    r.retried = get_or<std::uint64_t>(q, "retried", 0);
    r.failed = get_or<std::uint64_t>(q, "failed", 0);
    r.invalid = get_or<std::uint64_t>(q, "invalid", 0);
    r.succeeded_1m = get_or<std::uint64_t>(q, "succeeded_1m", 0);
    r.retried_1m = get_or<std::uint64_t>(q, "retried_1m", 0);
    r.failed_1m = get_or<std::uint64_t>(q, "failed_1m", 0);
    if (auto d = q.find("durations_1m"); d != q.end() && d->is_object()) {
      r.le = get_or<std::vector<double>>(*d, "le", {});
      r.counts = get_or<std::vector<std::uint64_t>>(*d, "counts", {});
    }
    r.running_tokens = get_or<std::vector<std::uint64_t>>(q, "running_tokens", {});
    if (auto l = q.find("limits"); l != q.end() && l->is_object()) r.limits = limits_of(*l);
    r.held_back = get_or<GroupsHeldBack>(q, "held_back", {});
    if (r.held_back.size() > kHeldBackGroups) r.held_back.resize(kHeldBackGroups);
    h.queues.emplace(name, std::move(r));
  }
  return h;
}

std::map<std::string, Activity> activity(const std::vector<Heartbeat>& live) {
  std::map<std::string, Activity> out;
  std::map<std::string, std::map<std::string, long long>> held;  // queue -> group -> most waiting
  for (const auto& h : live) {
    for (const auto& [name, q] : h.queues) {
      Activity& a = out[name];
      ++a.daemons;
      a.running += q.running;
      a.buffered += q.buffered;
      a.paused = a.paused || q.paused;
      a.succeeded_1m += q.succeeded_1m;
      a.retried_1m += q.retried_1m;
      a.failed_1m += q.failed_1m;
      if (a.le.empty()) a.le = q.le;
      // Only reports that bucket alike add up (another version's buckets are left out).
      if (q.le == a.le) {
        if (a.counts.size() < q.counts.size()) a.counts.resize(q.counts.size());
        for (std::size_t i = 0; i < q.counts.size(); ++i) a.counts[i] += q.counts[i];
      }
      // `live` is oldest first: the last daemon's limits stand.
      if (q.limits) {
        if (a.limits && *a.limits != *q.limits) a.limits_differ = true;
        a.limits = q.limits;
      }
      // The daemons read the same lists at different moments: a group's most recent count is
      // not known, its largest is shown.
      for (const auto& [group, waiting] : q.held_back) {
        long long& most = held[name][group];
        most = std::max(most, waiting);
      }
    }
  }
  for (auto& [name, groups] : held) {
    GroupsHeldBack& shown = out[name].held_back;
    shown.assign(groups.begin(), groups.end());
    std::sort(shown.begin(), shown.end(), [](const auto& a, const auto& b) {
      return a.second != b.second ? a.second > b.second : a.first < b.first;
    });
    if (shown.size() > kHeldBackGroups) shown.resize(kHeldBackGroups);
  }
  return out;
}

}  // namespace jq::store
