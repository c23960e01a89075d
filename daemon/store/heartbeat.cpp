// Heartbeat JSON both ways, and activity: the live daemons' reports of each queue summed.
#include "store/heartbeat.hpp"

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
    h.queues.emplace(name, std::move(r));
  }
  return h;
}

std::map<std::string, Activity> activity(const std::vector<Heartbeat>& live) {
  std::map<std::string, Activity> out;
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
    }
  }
  return out;
}

}  // namespace jq::store
