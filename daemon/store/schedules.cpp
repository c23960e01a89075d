// Schedules as Redis holds them: their stored definitions, and the job each tick enqueues.
#include "store/schedules.hpp"

#include <ctime>

#include <nlohmann/json.hpp>

#include "config/cron.hpp"
#include "config/units.hpp"

namespace jq::store {

using nlohmann::json;

std::string encode_schedule(const config::ScheduleConfig& s) {
  json out = json::object();
  out["cron"] = s.cron;
  out["timezone"] = s.timezone;
  out["job"] = json::parse(s.job, nullptr, false);
  out["catch_up"] = s.catch_up;
  out["jitter_ms"] = s.jitter.count();
  return out.dump();
}

std::variant<config::ScheduleConfig, std::string> decode_schedule(const std::string& name,
                                                                  const std::string& queue,
                                                                  const std::string& text) {
  // A name written into the index by hand: its ticks' ids could not be job ids.
  if (!config::valid_name(name)) return std::string("the name is not 1-64 of A-Z a-z 0-9 _ . -");
  const json v = json::parse(text, nullptr, false);
  if (v.is_discarded() || !v.is_object()) return std::string("not a JSON object");
  config::ScheduleConfig s;
  s.name = name;
  s.queue = queue;
  s.origin = "redis";
  const auto str = [&](const char* key, std::string& to) -> std::optional<std::string> {
    if (!v.contains(key)) return std::nullopt;
    if (!v[key].is_string()) return std::string(key) + ": must be a string";
    to = v[key].get<std::string>();
    return std::nullopt;
  };
  if (!v.contains("cron")) return std::string("cron: missing");
  if (auto why = str("cron", s.cron)) return *why;
  if (auto why = str("timezone", s.timezone)) return *why;
  if (auto why = str("catch_up", s.catch_up)) return *why;
  if (s.catch_up != "skip" && s.catch_up != "one" && s.catch_up != "all") {
    return "catch_up: '" + s.catch_up + "' is not one of skip, one, all";
  }
  if (v.contains("jitter_ms")) {
    if (!v["jitter_ms"].is_number_unsigned())
      return std::string("jitter_ms: must be a whole number");
    s.jitter = config::Millis(v["jitter_ms"].get<std::uint64_t>() % (1ull << 40));
  }
  if (v.contains("job")) {
    const json& job = v["job"];
    if (!job.is_object()) return std::string("job: must be an object");
    if (job.contains("id")) return std::string("job.id: each tick's job gets its own id");
    json j = job;
    if (!j.contains("payload")) j["payload"] = json::object();
    s.job = j.dump();
  }
  if (auto why = config::zone_problem(s.timezone); !why.empty()) return "timezone: " + why;
  auto parsed = config::Cron::parse(s.cron, s.timezone);
  if (auto* p = std::get_if<config::CronProblem>(&parsed)) {
    return "cron: " + p->message + " (at column " + std::to_string(p->column) + ")";
  }
  return s;
}

std::string schedule_timing(const config::ScheduleConfig& s) {
  return s.cron + "|" + s.timezone;
}

std::string tick_id(const std::string& name, std::int64_t tick_ms) {
  const std::time_t secs = static_cast<std::time_t>(tick_ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return name + ":" + buf;
}

std::string tick_job(const config::ScheduleConfig& s, const std::string& id) {
  // The template is a JSON object jobqd wrote ("{...}"); the id goes first, as its own field.
  const json quoted = id;
  std::string out = "{\"id\":" + quoted.dump();
  out += s.job.size() > 2 ? "," + s.job.substr(1) : "}";
  return out;
}

}  // namespace jq::store
