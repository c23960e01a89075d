// jobqctl schedules and schedule add|rm|pause|resume: the schedules of every known queue, and
// those stored in Redis changed at run time (docs/schedules.md).
#include <iostream>

#include "cli/commands.hpp"
#include "store/schedules.hpp"

namespace jq::cli {

int cmd_schedules(const Globals& g) {
  Target t = resolve(g);
  auto c = connect(t);
  auto admin = admin_for(c, t);
  const auto list = admin.schedules();
  if (g.json_out) {
    json out = json::array();
    for (const auto& v : list) out.push_back(store::schedule_json(v));
    std::cout << dump(out) << "\n";
    return kOk;
  }
  if (list.empty()) {
    std::cout << "no schedules (add one under schedules: in the config, or with jobqctl schedule "
                 "add)\n";
    return kOk;
  }
  const std::int64_t now = now_ms();
  Table table({"NAME", "QUEUE", "CRON", "ZONE", "FROM", "LAST RUN", "OUTCOME", "NEXT RUN"});
  for (const auto& v : list) {
    if (!v.problem.empty()) {
      table.add(
          {v.def.name, v.def.queue, "-", "-", v.def.origin, "-", "-", "unreadable: " + v.problem});
      continue;
    }
    const std::string last = v.state.last ? clock_text(v.state.last) : "-";
    std::string next =
        v.state.next ? clock_text(v.state.next) + " (" + relative(v.state.next, now) + ")" : "-";
    if (v.state.paused_at) next = "paused";
    const std::string outcome =
        v.state.last_id.empty() ? "-" : (v.last_status.empty() ? "gone" : v.last_status);
    table.add({v.def.name, v.def.queue, v.def.cron, v.def.timezone.empty() ? "UTC" : v.def.timezone,
               v.def.origin, last, outcome, next});
  }
  table.print(std::cout);
  return kOk;
}

int cmd_schedule(const Globals& g, const ScheduleArgs& a) {
  Target t = resolve(g);
  if (a.action != "add") {
    for (const auto* given : {&a.cron, &a.timezone, &a.job, &a.payload, &a.jitter}) {
      if (!given->empty()) {
        throw Exit{kUsage, "schedule " + a.action +
                               ": --cron, --timezone, --job, --payload and "
                               "--jitter are for add"};
      }
    }
    auto c = connect(t);
    const std::string queue = admin_for(c, t).control_schedule(a.name, a.queue, a.action);
    if (g.json_out) {
      std::cout << dump({{"name", a.name}, {"queue", queue}, {"action", a.action}}) << "\n";
    } else {
      const char* done = a.action == "rm"      ? "removed"
                         : a.action == "pause" ? "paused: its ticks enqueue nothing until resume"
                                               : "resumed";
      std::cout << "schedule " << a.name << " of queue " << queue << " " << done << "\n";
    }
    return kOk;
  }
  if (a.cron.empty()) throw Exit{kUsage, "schedule add: --cron is needed"};
  if (a.queue.empty()) throw Exit{kUsage, "schedule add: --queue (-q) is needed"};
  if (!a.job.empty() && !a.payload.empty()) {
    throw Exit{kUsage, "schedule add: give --job or --payload, not both"};
  }
  config::ScheduleConfig s;
  s.name = a.name;
  s.queue = queue_arg(a.queue);
  s.cron = a.cron;
  s.timezone = a.timezone;
  s.catch_up = a.catch_up;
  if (!a.jitter.empty()) s.jitter = duration_arg(a.jitter, "--jitter");
  if (!a.job.empty()) {
    const json job = json::parse(a.job, nullptr, false);
    if (job.is_discarded() || !job.is_object()) {
      throw Exit{kUsage, "schedule add: --job must be a JSON object ({\"payload\": ...})"};
    }
    s.job = job.dump();
  } else if (!a.payload.empty()) {
    const json payload = json::parse(a.payload, nullptr, false);
    if (payload.is_discarded()) throw Exit{kUsage, "schedule add: --payload is not JSON"};
    s.job = json{{"payload", payload}}.dump();
  }
  auto c = connect(t);
  const auto v = admin_for(c, t).add_schedule(s);
  if (g.json_out) {
    std::cout << dump(store::schedule_json(v)) << "\n";
  } else {
    std::cout << "schedule " << s.name << " of queue " << s.queue << ": next run "
              << clock_text(v.state.next) << " (" << relative(v.state.next, now_ms()) << ")\n";
  }
  return kOk;
}

}  // namespace jq::cli
