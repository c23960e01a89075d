// jobqctl queues, stats, workers, pause and resume: depths from Redis, and what the live daemons
// say they run (store::activity: the one definition of running, fresh within a second).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <iostream>
#include <limits>
#include <sstream>
#include <thread>

#include "cli/commands.hpp"
#include "config/units.hpp"
#include "store/views.hpp"

namespace jq::cli {
namespace {

std::string ago(std::int64_t ms) {
  if (ms < 1000) return "now";
  return config::format_duration(config::Millis(ms / 1000 * 1000)) + " ago";
}

// One row per queue: depths from Redis, the rest from the live daemons (store::Admin).
json rows_of(store::Admin& admin) {
  const auto active = admin.activity();
  auto names = admin.known_queues();
  for (const auto& [name, a] : active) {
    if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
  }
  json out = json::array();
  for (const auto& name : names) out.push_back(store::queue_row(admin.queue_view(name, active)));
  return out;
}

std::string n(const json& v) {
  return std::to_string(v.get<long long>());
}

// The LIMITS column is there when some queue has a limit known: a table of plain queues stays
// as it was.
bool any_limits(const json& rows) {
  return std::any_of(rows.begin(), rows.end(),
                     [](const json& r) { return !store::limits_text(r).empty(); });
}

std::string limits_cell(const json& r) {
  const std::string text = store::limits_text(r);
  return text.empty() ? "-" : text;
}

// Under the table: each group_by queue's groups its daemons saw a group's limit hold back, with
// the jobs waiting in each (the most first, as jobqd_group_held_back in /metrics).
void print_held_back(std::ostream& o, const json& rows) {
  for (const auto& r : rows) {
    const auto held = r.find("groups_held_back");
    if (held == r.end() || held->empty()) continue;
    o << r["name"].get<std::string>() << ": held back by a group's limit:";
    const char* sep = " ";
    for (const auto& g : *held) {
      o << sep << g["group"].get<std::string>() << " (" << n(g["waiting"]) << " waiting)";
      sep = ", ";
    }
    o << "\n";
  }
}

}  // namespace

int cmd_queues(const Globals& g) {
  Target t = resolve(g);
  auto c = connect(t);
  auto admin = admin_for(c, t);
  const json rows = rows_of(admin);
  if (g.json_out) {
    json out = json::array();
    for (const auto& r : rows) {
      out.push_back({{"name", r["name"]},
                     {"pending", r["pending"]},
                     {"delayed", r["delayed"]},
                     {"running", r["running"]},
                     {"buffered", r["buffered"]},
                     {"dead", r["dead"]},
                     {"paused", r["paused"]},
                     {"shards", r["shards"]}});
      // group_by: the groups with work and the jobs waiting in them (docs/groups.md).
      if (r.contains("groups")) {
        out.back()["groups"] = r["groups"];
        out.back()["in_groups"] = r["in_groups"];
      }
      // Its limits, those it has (store::queue_row).
      for (const char* field : store::kLimitFields) {
        if (auto f = r.find(field); f != r.end()) out.back()[field] = *f;
      }
    }
    std::cout << dump(out) << "\n";
    return kOk;
  }
  if (rows.empty()) {
    std::cout << "no queues: none in the config, and no jobqd has served one on " << t.url.display()
              << "\n";
    return kOk;
  }
  const bool limits = any_limits(rows);
  std::vector<std::string> head{"QUEUE",    "PENDING", "DELAYED", "RUNNING",
                                "BUFFERED", "DEAD",    "STATE"};
  if (limits) head.push_back("LIMITS");
  Table table(head);
  for (const auto& r : rows) {
    std::vector<std::string> cells{r["name"].get<std::string>(),
                                   n(r["pending"]),
                                   n(r["delayed"]),
                                   n(r["running"]),
                                   n(r["buffered"]),
                                   n(r["dead"]),
                                   r["paused"].get<bool>()               ? "paused"
                                   : r["daemons"].get<std::size_t>() > 0 ? "serving"
                                                                         : "no daemon"};
    if (limits) cells.push_back(limits_cell(r));
    table.add(std::move(cells));
  }
  table.print(std::cout, {1, 2, 3, 4, 5});
  // Queues with group_by: their jobs wait in their groups, not pending.
  for (const auto& r : rows) {
    if (!r.contains("groups")) continue;
    std::cout << r["name"].get<std::string>() << ": " << n(r["groups"]) << " group(s) with work, "
              << n(r["in_groups"]) << (r["in_groups_all"].get<bool>() ? "" : "+")
              << " job(s) waiting in them (group_by)\n";
  }
  print_held_back(std::cout, rows);
  return kOk;
}

int cmd_stats(const Globals& g, bool watch, const std::string& every_arg) {
  Target t = resolve(g);
  auto c = connect(t);
  auto admin = admin_for(c, t);
  const auto every = every_arg.empty() ? config::Millis(2000) : duration_arg(every_arg, "--every");
  for (;;) {
    const json rows = rows_of(admin);
    std::ostringstream screen;
    if (g.json_out) {
      screen << dump(rows) << "\n";
    } else {
      if (watch) {
        // Like top: the screen redrawn in place, with when and where.
        const auto now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
        char at[32];
        std::strftime(at, sizeof at, "%Y-%m-%d %H:%M:%SZ", std::gmtime(&now));
        screen << "\x1b[H\x1b[2Jjobqctl stats: " << t.url.display() << "  " << at << "  (every "
               << config::format_duration(every) << "; Ctrl-C to stop)\n\n";
      }
      if (rows.empty()) {
        screen << "no queues: none in the config, and no jobqd has served one\n";
      } else {
        const bool limits = any_limits(rows);
        std::vector<std::string> head{"QUEUE", "PENDING", "DELAYED",  "RUNNING", "BUFFERED",
                                      "DEAD",  "OK/MIN",  "FAIL/MIN", "P50",     "P99"};
        if (limits) head.push_back("LIMITS");
        Table table(head);
        for (const auto& r : rows) {
          std::vector<std::string> cells{r["name"].get<std::string>(),
                                         n(r["pending"]),
                                         n(r["delayed"]),
                                         n(r["running"]),
                                         n(r["buffered"]),
                                         n(r["dead"]),
                                         n(r["succeeded_per_min"]),
                                         n(r["failed_per_min"]),
                                         r["p50"].get<std::string>(),
                                         r["p99"].get<std::string>()};
          if (limits) cells.push_back(limits_cell(r));
          table.add(std::move(cells));
        }
        table.print(screen, {1, 2, 3, 4, 5, 6, 7, 8, 9});
        print_held_back(screen, rows);
      }
    }
    std::cout << screen.str() << std::flush;
    if (!watch) return kOk;
    std::this_thread::sleep_for(every);
  }
}

int cmd_workers(const Globals& g) {
  Target t = resolve(g);
  auto c = connect(t);
  const auto workers = admin_for(c, t).live_workers();
  const std::int64_t now = call(c, store::redis_time());
  json out = json::array();
  Table table({"WORKER", "HOST", "PID", "VERSION", "UP", "RUN", "BUF", "SEEN", "QUEUES"});
  for (const auto& w : workers.live) {
    json row = store::worker_row(w, now);
    if (g.json_out) {
      out.push_back(std::move(row));
      continue;
    }
    std::string queues;
    for (const auto& name : row["queues"])
      queues += (queues.empty() ? "" : ",") + name.get<std::string>();
    const std::int64_t up_ms = w.started_at > 0 ? now - w.started_at : 0;
    table.add(
        {w.worker, w.host, std::to_string(w.pid), w.version,
         config::format_duration(config::Millis(std::max<std::int64_t>(0, up_ms) / 1000 * 1000)),
         n(row["running"]), n(row["buffered"]), ago(now - w.seen_at), queues});
  }
  if (g.json_out) {
    std::cout << dump(out) << "\n";
    return kOk;
  }
  if (workers.live.empty()) {
    std::cout << "no live jobqd on " << t.url.display() << "\n";
  } else {
    table.print(std::cout, {2, 5, 6});
  }
  if (workers.gone) {
    std::cout << "(" << workers.gone << " more not heard from for over "
              << store::kLiveWithinMs / 1000 << "s: stopped or cut off)\n";
  }
  return kOk;
}

int cmd_pause(const Globals& g, const std::string& queue_given, bool pause) {
  const std::string& queue = queue_arg(queue_given);
  Target t = resolve(g);
  auto c = connect(t);
  const bool changed = admin_for(c, t).set_paused(queue, pause);
  if (g.json_out) {
    std::cout << json({{"queue", queue}, {"paused", pause}, {"changed", changed}}).dump() << "\n";
  } else if (pause) {
    std::cout << "queue " << queue
              << (changed ? " paused: every jobqd stops starting its jobs within a second "
                            "(running ones finish; buffered ones wait)\n"
                          : " was paused already\n");
  } else {
    std::cout << "queue " << queue
              << (changed ? " resumed: every jobqd starts its jobs again within a second\n"
                          : " was not paused\n");
  }
  return kOk;
}

}  // namespace jq::cli
