// jobqctl status, wait, cancel and jobs: one job's state (its hold too: a short job's state may
// not say active), waiting for its end, stopping it, and the jobs of a queue in one place. What
// they read and do is store::Admin's (shared with the daemon's API); here they are printed.
#include <algorithm>
#include <iostream>

#include "cli/commands.hpp"
#include "config/units.hpp"
#include "job/text.hpp"
#include "store/after.hpp"

namespace jq::cli {
namespace {

const char* kFields[] = {"status",     "queue",       "handler", "attempts",   "submitted_at",
                         "started_at", "finished_at", "worker",  "unique_key", "result",
                         "error",      "error_kind",  "payload"};

bool time_field(const std::string& f) {
  return f.size() > 3 && f.compare(f.size() - 3, 3, "_at") == 0;
}

void print_job(const std::string& id, const store::State& h, bool as_json, std::int64_t now) {
  if (as_json) {
    std::cout << dump(state_json(id, h)) << "\n";
    return;
  }
  std::cout << "id: " << id << "\n";
  for (const char* f : kFields) {
    auto it = h.find(f);
    if (it == h.end() || it->second.empty()) continue;
    std::cout << f << ": " << (time_field(f) ? when(it->second, now) : it->second) << "\n";
  }
}

// "waits for 2 of 3: images/r2, thumbs/r3" (a long list cut after its first 20).
std::string waits_for_text(const store::AfterLeft& left) {
  constexpr std::size_t kShown = 20;
  std::string text =
      "waits for " + std::to_string(left.refs.size()) + " of " + std::to_string(left.total) + ":";
  for (std::size_t i = 0; i < left.refs.size() && i < kShown; ++i) {
    text += (i ? ", " : " ") + left.refs[i];
  }
  if (left.refs.size() > kShown) {
    text += " and " + std::to_string(left.refs.size() - kShown) + " more (--json lists them all)";
  }
  // A job of a flow being written on a cluster waits for the rest of the flow too.
  const std::string flow = "its flow " + left.flow + " to be written whole";
  if (!left.flow.empty()) return left.total == 0 ? "waits for " + flow : text + "; and for " + flow;
  return text;
}

// The result as it was, one newline at its end (results often end with one already).
void print_result(const std::string& result) {
  std::cout << result;
  if (result.empty() || result.back() != '\n') std::cout << "\n";
}

}  // namespace

int wait_for_job(store::Admin& admin, const std::string& queue, const std::string& id,
                 std::optional<config::Millis> timeout, bool as_json, redis::SyncClient sub) {
  const bool bounded = timeout.has_value();
  const auto deadline = std::chrono::steady_clock::now() + timeout.value_or(config::Millis(0));
  auto finish = [&](store::State h) {
    const std::string status = h["status"];
    if (as_json) {
      print_job(id, h, true, 0);
    } else if (status == "succeeded") {
      auto r = h.find("result");
      if (r != h.end() && !r->second.empty()) {
        print_result(r->second);
      } else {
        // Nothing on stdout (a script reading the result gets ""), but the end is said.
        std::cerr << "job " << id << " succeeded"
                  << (r == h.end() ? " (its state is not kept: retain succeeded 0)"
                                   : " (empty result)")
                  << "\n";
      }
    } else {
      std::cerr << "job " << id << " " << status << " (" << h["error_kind"] << "): " << h["error"]
                << "\n";
    }
    return status == "succeeded" ? kOk : kFailure;
  };
  std::string announced;  // a final status an event told of, for a job whose state is gone
  for (;;) {
    const store::JobView seen = admin.job(queue, id);
    if (store::is_final(seen.status)) return finish(seen.state);
    if (!seen.exists() && !announced.empty()) {
      return finish({{"status", announced}});
    }
    // Block for the next event, at most until the deadline (or 1 s, to read the state again).
    auto slice = config::Millis(1000);
    if (bounded) {
      auto left =
          std::chrono::duration_cast<config::Millis>(deadline - std::chrono::steady_clock::now());
      if (left <= config::Millis(0)) {
        throw Exit{kTimedOut, "job " + id + ": still " +
                                  (seen.status.empty() ? "unknown" : seen.status) + " after " +
                                  config::format_duration(*timeout)};
      }
      slice = std::min(slice, left);
    }
    auto next = must(sub.next_message(slice));
    if (!next) continue;
    const redis::Reply& msg = *next;
    if (msg.is_array() && msg.elements.size() == 3 && msg.elements[0].str == "message") {
      auto event = job::parse_json(msg.elements[2].str);
      if (auto* j = std::get_if<json>(&event); j && j->is_object() && j->value("id", "") == id) {
        std::string status = j->value("status", "");
        if (store::is_final(status)) announced = status;
      }
    }
  }
}

int cmd_status(const Globals& g, const std::string& id, const std::string& queue) {
  Target t = resolve(g);
  auto c = connect(t);
  auto admin = admin_for(c, t);
  const std::string q = admin.find_queue(id, queue);
  const store::JobView seen = admin.job(q, id);
  if (!seen.exists()) throw Exit{kFailure, "no job " + id + " in queue " + q};
  store::State shown = seen.state;
  if (!seen.status.empty()) shown["status"] = seen.status;
  if (!seen.held_by.empty()) {
    shown["worker"] = seen.held_by;
    shown["queue"] = q;
  }
  // A waiting job: what it still waits for, from its after hash.
  std::optional<store::AfterLeft> left;
  if (shown["status"] == "waiting") left = admin.waiting_for(q, id);
  if (g.json_out) {
    json j = state_json(id, shown);
    if (left) j["waiting_for_jobs"] = left->refs;
    std::cout << dump(j) << "\n";
    return kOk;
  }
  print_job(id, shown, false, call(c, store::redis_time()));
  if (left) std::cout << waits_for_text(*left) << "\n";
  return kOk;
}

int cmd_wait(const Globals& g, const std::string& id, const std::string& queue,
             const std::string& wait_timeout) {
  Target t = resolve(g);
  auto c = connect(t);
  auto admin = admin_for(c, t);
  const std::string q = admin.find_queue(id, queue);
  auto sub = connect(t);
  must(sub.subscribe(keys(t, q).events));
  std::optional<config::Millis> limit;
  if (!wait_timeout.empty()) limit = duration_arg(wait_timeout, "--wait-timeout");
  return wait_for_job(admin, q, id, limit, g.json_out, std::move(sub));
}

namespace {

// How a cancel ended: `status` the job's final one, `was` what it was doing when asked to stop
// ("over": it had ended already). Exit 0 only when it ended cancelled.
int report_cancel(const Globals& g, const std::string& id, const std::string& q,
                  const std::string& status, const std::string& was) {
  const bool done = status == "cancelled";
  if (g.json_out) {
    std::cout << dump({{"id", id}, {"queue", q}, {"status", status}, {"was", was}}) << "\n";
  } else if (done && was != "over") {
    std::cout << "job " << id << " cancelled (it was " << was << ")\n";
  } else if (done) {
    std::cout << "job " << id << " was cancelled already\n";
  } else if (was == "over") {
    std::cout << "job " << id << " " << status << " already: nothing to cancel\n";
  } else {
    std::cout << "job " << id << " " << status << " before it could be stopped\n";
  }
  return done ? kOk : kFailure;
}

}  // namespace

// A job waiting in pending or delayed is taken out and cancelled at once; one a daemon holds
// (running, or in its buffer) gets a request that every jobqd reads within a second, and the one
// holding it stops it as at a timeout (store::Admin::cancel_step). Waits (on the events channel)
// until the job is over, at most `limit`.
int cmd_cancel(const Globals& g, const std::string& id_given, const std::string& queue,
               const std::string& limit_arg) {
  const std::string& id = id_arg(id_given, "cancel: job id");
  const config::Millis limit =
      limit_arg.empty() ? config::Millis(30000) : duration_arg(limit_arg, "--wait-timeout");
  Target t = resolve(g);
  auto c = connect(t);
  auto admin = admin_for(c, t);
  const std::string q = admin.find_queue(id, queue);
  admin.shard_count(q);  // its layout read before anything else is done (garbage there is said)
  auto sub = connect(t);
  must(sub.subscribe(keys(t, q).events));
  auto report = [&](const std::string& status, const std::string& was) {
    return report_cancel(g, id, q, status, was);
  };
  const auto deadline = std::chrono::steady_clock::now() + limit;
  std::string was;  // what the job was doing when it was asked to stop
  std::string announced;
  for (;;) {
    const store::CancelStep step =
        admin.cancel_step(q, id, "cancelled by jobqctl cancel", !was.empty());
    if (!was.empty()) {
      if (step.what == "final") return report(step.status, was);
      if (step.what == "gone" && !announced.empty()) return report(announced, was);
    } else if (step.what == "cancelled") {
      return report("cancelled", step.was);
    } else if (step.what == "final") {
      return report(step.status, "over");
    } else if (step.what == "raced") {
      continue;  // a daemon took it meanwhile: look again
    } else if (step.what == "requested") {
      was = step.was;
      if (!g.json_out) {
        std::cerr << "job " << id << " is " << (step.status.empty() ? "held" : step.status)
                  << ": asked the jobqd that holds it to stop it\n";
      }
    }
    auto left =
        std::chrono::duration_cast<config::Millis>(deadline - std::chrono::steady_clock::now());
    if (left <= config::Millis(0)) {
      throw Exit{kTimedOut, "job " + id + " still " + (step.status.empty() ? "held" : step.status) +
                                " after " + config::format_duration(limit) +
                                "; the request stands: the jobqd holding it stops it as soon as "
                                "it reads it"};
    }
    // The next event of the queue, or 200 ms: then the state is read again.
    auto next = must(sub.next_message(std::min(left, config::Millis(200))));
    if (next && next->is_array() && next->elements.size() == 3) {
      auto event = job::parse_json(next->elements[2].str);
      if (auto* j = std::get_if<json>(&event); j && j->is_object() && j->value("id", "") == id) {
        std::string status = j->value("status", "");
        if (store::is_final(status)) announced = status;
      }
    }
  }
}

namespace {

// The rows as `jobs` prints them: JSON, or a table with a line saying what was left out.
void print_jobs(const Globals& g, redis::SyncClient& c, const store::JobPage& page) {
  const std::string& queue = page.queue;
  const std::string& state = page.state;
  const std::size_t total = page.total;
  const std::vector<store::JobRow>& rows = page.jobs;
  if (g.json_out) {
    std::cout << dump(page_json(page)) << "\n";
    return;
  }
  if (rows.empty()) {
    std::cout << "no " << state << " jobs in queue " << queue << "\n";
    return;
  }
  const std::int64_t now = call(c, store::redis_time());
  const std::string where = state == "running" || state == "buffered" ? "WORKER"
                            : state == "dead"                         ? "DIED"
                            : state == "delayed"                      ? "RUNS AT"
                                                                      : "";
  Table table = where.empty() ? Table({"ID", "PAYLOAD"})
                              : Table({"ID", where, state == "dead" ? "ERROR" : "PAYLOAD"});
  for (const auto& r : rows) {
    // A payload as JSON (a string in quotes); a dead job's error, or what is not a job, as text.
    const bool text_only = state == "dead" || !r.readable;
    std::string text = text_only && r.body.is_string() ? r.body.get<std::string>() : dump(r.body);
    text = job::to_utf8(job::clip_utf8(text, 80));
    std::string id = r.id.empty() ? "(none yet)" : r.id;
    if (where.empty()) {
      table.add({id, text});
    } else {
      table.add({id, r.worker.empty() ? when(r.when, now) : r.worker, text});
    }
  }
  table.print(std::cout);
  if (total > rows.size()) {
    std::cout << "(" << rows.size() << " of " << total << "; --limit N for more)\n";
  }
}

}  // namespace

// `jobs QUEUE --state S`: the jobs in one place of the queue, oldest first, each with its id (a
// job pushed without one has none until a daemon fetches it) and its payload.
int cmd_jobs(const Globals& g, const std::string& queue_given, const std::string& state,
             std::size_t limit) {
  const std::string& queue = queue_arg(queue_given);
  Target t = resolve(g);
  auto c = connect(t);
  const store::JobPage page = admin_for(c, t).list(queue, state, 0, limit, false);
  print_jobs(g, c, page);
  return kOk;
}

}  // namespace jq::cli
