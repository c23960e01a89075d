// Queue rows for every view: the quantiles of the last minute's run times, and the row itself.
#include "store/views.hpp"

#include <charconv>
#include <variant>

#include "job/text.hpp"
#include "store/admin.hpp"

#include <cmath>
#include <cstdio>
#include <limits>
#include <optional>
#include <vector>

namespace jq::store {
namespace {

// The run time below which a share `q` of the last minute's attempts ended (a bucket's upper
// bound; infinity past the last), or nullopt when there were none.
std::optional<double> quantile(const std::vector<double>& le, const std::vector<std::uint64_t>& n,
                               double q) {
  std::uint64_t total = 0;
  for (auto v : n) total += v;
  if (total == 0) return std::nullopt;
  std::uint64_t seen = 0;
  for (std::size_t i = 0; i < n.size(); ++i) {
    seen += n[i];
    if (static_cast<double>(seen) >= q * static_cast<double>(total)) {
      return i < le.size() ? le[i] : std::numeric_limits<double>::infinity();
    }
  }
  return std::nullopt;
}

std::string seconds_text(std::optional<double> s) {
  if (!s) return "-";
  if (std::isinf(*s)) return ">5m";
  char buf[32];
  if (*s < 1) {
    std::snprintf(buf, sizeof buf, "<%gms", *s * 1000);
  } else {
    std::snprintf(buf, sizeof buf, "<%gs", *s);
  }
  return buf;
}

}  // namespace

void add_depths(Depths& sum, const Depths& part) {
  auto add = [](long long& s, long long p) { s = s < 0 || p < 0 ? -1 : s + p; };
  add(sum.pending, part.pending);
  add(sum.delayed, part.delayed);
  add(sum.dead, part.dead);
  if (part.tokens) {
    if (!sum.tokens) sum.tokens = 0;
    add(*sum.tokens, *part.tokens);
  }
}

QueueLimits queue_limits(const config::QueueConfig& q) {
  QueueLimits l;
  l.rate = q.rate;
  l.rate_per_s = q.rate_per_s;
  l.rate_burst = q.rate_burst;
  l.global_concurrency = q.global_concurrency;
  if (q.priorities_set) {
    l.priorities = q.priorities.order;
    l.weights = {q.priorities.high, q.priorities.normal, q.priorities.low};
    l.aging_ms = q.priorities.aging.count();
  }
  l.weight = q.weight;
  l.group_by = q.group_by.key;
  l.group_rate = q.group_by.rate;
  l.group_concurrency = q.group_by.concurrency;
  return l;
}

Rate take_limits(QueueView& v, std::optional<QueueLimits> fallback) {
  v.limits = v.activity.limits ? v.activity.limits : std::move(fallback);
  return v.limits ? rate_share(v.limits->rate_per_s, v.limits->rate_burst, v.shards) : Rate{};
}

namespace {

bool has_rate(const QueueLimits& l) {
  return !l.rate.empty() && l.rate_per_s > 0;
}

// The limits' fields that change as jobs run: the tokens left, the groups held back.
void add_limits_now(nlohmann::json& row, const QueueView& v) {
  using json = nlohmann::json;
  const QueueLimits& l = *v.limits;
  if (has_rate(l)) {
    row["rate_tokens"] = v.depths.tokens && *v.depths.tokens >= 0 ? json(*v.depths.tokens) : json();
  }
  if (!l.group_by.empty()) {
    json held = json::array();
    for (const auto& [group, waiting] : v.activity.held_back) {
      held.push_back({{"group", group}, {"waiting", waiting}});
    }
    row["groups_held_back"] = std::move(held);
  }
}

// The limits' fields of a queue's row: only those it has (a plain queue gets none).
void add_limits(nlohmann::json& row, const QueueView& v) {
  using json = nlohmann::json;
  const QueueLimits& l = *v.limits;
  if (has_rate(l)) {
    row["rate"] = l.rate;
    // The whole queue's: each shard's bucket holds its share (rate_share), their tokens summed.
    row["rate_burst"] = rate_share(l.rate_per_s, l.rate_burst).burst;
  }
  if (l.global_concurrency > 0) row["global_concurrency"] = l.global_concurrency;
  if (!l.priorities.empty()) {
    json p = {{"order", l.priorities}};
    if (l.priorities == "weighted") {
      p["high"] = l.weights[0];
      p["normal"] = l.weights[1];
      p["low"] = l.weights[2];
    }
    p["aging_ms"] = l.aging_ms;
    row["priorities"] = std::move(p);
  }
  if (l.weight != 1) row["weight"] = l.weight;
  if (!l.group_by.empty()) {
    row["group_by"] = l.group_by;
    if (!l.group_rate.empty()) row["group_rate"] = l.group_rate;
    if (l.group_concurrency > 0) row["group_concurrency"] = l.group_concurrency;
  }
  if (v.activity.limits_differ) row["limits_differ"] = true;
  add_limits_now(row, v);
}

}  // namespace

std::string limits_text(const nlohmann::json& row) {
  std::vector<std::string> parts;
  if (auto r = row.find("rate"); r != row.end() && r->is_string()) {
    const auto& t = row["rate_tokens"];
    parts.push_back(r->get<std::string>() + " (" +
                    (t.is_number() ? std::to_string(t.get<long long>()) : std::string("?")) +
                    " left)");
  }
  if (auto g = row.find("global_concurrency"); g != row.end() && g->is_number()) {
    parts.push_back(std::to_string(g->get<long long>()) + " at once");
  }
  if (auto p = row.find("priorities"); p != row.end() && p->is_object()) {
    std::string text = p->value("order", "") + " priorities";
    if (p->contains("high")) {
      text += " " + std::to_string((*p)["high"].get<long long>()) + "/" +
              std::to_string((*p)["normal"].get<long long>()) + "/" +
              std::to_string((*p)["low"].get<long long>());
    }
    parts.push_back(std::move(text));
  }
  if (auto w = row.find("weight"); w != row.end() && w->is_number()) {
    parts.push_back("weight " + std::to_string(w->get<long long>()));
  }
  if (auto g = row.find("group_by"); g != row.end() && g->is_string()) {
    std::string each;
    if (auto r = row.find("group_rate"); r != row.end()) each = r->get<std::string>();
    if (auto c = row.find("group_concurrency"); c != row.end()) {
      each += (each.empty() ? "" : ", ") + std::to_string(c->get<long long>()) + " at once";
    }
    parts.push_back("per " + g->get<std::string>() + (each.empty() ? "" : " (" + each + " each)"));
  }
  std::string out;
  for (const auto& p : parts) out += (out.empty() ? "" : " · ") + p;
  if (!out.empty() && row.value("limits_differ", false)) out += " (daemons differ)";
  return out;
}

nlohmann::json queue_row(const QueueView& v, LimitFields fields) {
  const Activity& a = v.activity;
  const auto p50 = quantile(a.le, a.counts, 0.5), p99 = quantile(a.le, a.counts, 0.99);
  auto num = [](std::optional<double> x) {
    return x && !std::isinf(*x) ? nlohmann::json(*x) : nlohmann::json();
  };
  nlohmann::json row = {{"name", v.name},
                        {"pending", v.depths.pending},
                        {"delayed", v.depths.delayed},
                        {"running", a.running},
                        {"buffered", a.buffered},
                        {"dead", v.depths.dead},
                        {"paused", v.paused},
                        {"shards", v.shards},
                        {"daemons", a.daemons},
                        {"succeeded_per_min", a.succeeded_1m},
                        {"failed_per_min", a.failed_1m},
                        {"retried_per_min", a.retried_1m},
                        {"p50_s", num(p50)},
                        {"p99_s", num(p99)},
                        {"p50", seconds_text(p50)},
                        {"p99", seconds_text(p99)}};
  // A queue with group_by (docs/groups.md), only: its groups with work, and the jobs waiting in
  // them (in the first 100 groups when `in_groups_all` is false).
  if (v.groups.groups > 0) {
    row["groups"] = v.groups.groups;
    row["in_groups"] = v.groups.waiting;
    row["in_groups_all"] = v.groups.all;
  }
  if (v.limits && fields == LimitFields::all) add_limits(row, v);
  if (v.limits && fields == LimitFields::now) add_limits_now(row, v);
  return row;
}

nlohmann::json worker_row(const Heartbeat& w, std::int64_t now) {
  long long running = 0, buffered = 0;
  nlohmann::json names = nlohmann::json::array();
  for (const auto& [name, q] : w.queues) {
    running += q.running;
    buffered += q.buffered;
    names.push_back(name);
  }
  const std::int64_t up_ms = w.started_at > 0 ? now - w.started_at : 0;
  return {{"worker", w.worker},
          {"host", w.host},
          {"pid", w.pid},
          {"version", w.version},
          {"started_at", w.started_at},
          {"uptime_s", up_ms / 1000},
          {"queues", names},
          {"running", running},
          {"buffered", buffered},
          {"last_heartbeat_s", (now - w.seen_at) / 1000}};
}

std::optional<long long> whole_number(const std::string& s) {
  long long v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

nlohmann::json json_or_text(const std::string& text) {
  if (text.empty()) return nlohmann::json(text);
  auto parsed = job::parse_json(text);
  if (auto* value = std::get_if<nlohmann::json>(&parsed)) return std::move(*value);
  return nlohmann::json(text);
}

nlohmann::json state_json(const std::string& id, const std::map<std::string, std::string>& state) {
  nlohmann::json j = {{"id", id}};
  for (const auto& [k, v] : state) {
    const bool time = k.size() > 3 && k.compare(k.size() - 3, 3, "_at") == 0;
    if (k == "attempts" || time) {
      auto n = whole_number(v);
      j[k] = n ? nlohmann::json(*n) : nlohmann::json();
    } else if (k == "result") {
      j[k] = json_or_text(v);
    } else if (k == "payload") {
      // Kept as JSON text; one cut at kRetainedPayloadBytes ends "..." (no JSON does): then its
      // text, and the cut said.
      auto parsed = job::parse_json(v);
      if (auto* value = std::get_if<nlohmann::json>(&parsed)) {
        j[k] = std::move(*value);
      } else {
        j[k] = v;
        j["payload_truncated"] = true;
      }
    } else {
      j[k] = v;
    }
  }
  return j;
}

nlohmann::json page_json(const JobPage& p) {
  using json = nlohmann::json;
  const bool dead = p.state == "dead";
  json jobs = json::array();
  for (const auto& r : p.jobs) {
    json j = {{"id", r.id.empty() ? json() : json(r.id)}};
    j[dead ? "error" : "payload"] = r.body;
    if (!r.worker.empty()) j["worker"] = r.worker;
    if (!r.when.empty()) {
      auto at = whole_number(r.when);
      j[dead ? "died_at" : "run_at"] = at ? json(*at) : json(r.when);
    }
    jobs.push_back(std::move(j));
  }
  return {{"queue", p.queue},
          {"state", p.state},
          {"total", p.total},
          {"offset", p.offset},
          {"jobs", std::move(jobs)}};
}

nlohmann::json schedule_json(const ScheduleView& v) {
  nlohmann::json j = {{"name", v.def.name},
                      {"queue", v.def.queue},
                      {"cron", v.def.cron},
                      {"timezone", v.def.timezone.empty() ? "UTC" : v.def.timezone},
                      {"catch_up", v.def.catch_up},
                      {"jitter_ms", v.def.jitter.count()},
                      {"job", json_or_text(v.def.job)},
                      {"origin", v.def.origin},
                      {"paused", v.state.paused_at != 0},
                      {"next", v.state.next},
                      {"last", v.state.last},
                      {"last_id", v.state.last_id},
                      {"last_status", v.last_status},
                      {"fired", v.state.fired},
                      {"skipped", v.state.skipped}};
  if (!v.problem.empty()) j["problem"] = v.problem;
  return j;
}

}  // namespace jq::store
