// jobqctl status, wait, cancel and jobs: one job's state (its hold too: a short job's state may
// not say active), waiting for its end, stopping it, and the jobs of a queue in one place.
#include <algorithm>
#include <iostream>
#include <map>
#include <set>

#include "cli/commands.hpp"
#include "config/units.hpp"
#include "job/text.hpp"
#include "store/marker.hpp"
#include "store/shards.hpp"

namespace jq::cli {
namespace {

const char* kFields[] = {"status",       "queue",      "handler",     "attempts",
                         "submitted_at", "started_at", "finished_at", "worker",
                         "result",       "error",      "error_kind"};

bool time_field(const std::string& f) {
  return f.size() > 3 && f.compare(f.size() - 3, 3, "_at") == 0;
}

bool final_status(const std::string& s) {
  return s == "succeeded" || s == "failed" || s == "cancelled";
}

// The daemon holding a claimed job now ("" when none does): a claim names its hold
// (`nonce` or `nonce@worker:token`), and the hold is checked to be there still.
std::string holder(redis::SyncClient& c, const store::Keys& k, const std::string& claim) {
  std::string_view v = claim;
  if (auto at = v.rfind('@'); at != std::string_view::npos) v.remove_prefix(at + 1);
  auto colon = v.rfind(':');
  if (colon == std::string_view::npos || colon == 0) return "";
  const std::string worker(v.substr(0, colon)), token(v.substr(colon + 1));
  if (token.empty() || token.find_first_not_of("0123456789") != std::string::npos) return "";
  auto held = store::run(c, store::holds(k, worker, token));
  return held.ok() && *held ? worker : "";
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

// What `status` and `wait` see of a job: its state, and whether a daemon holds it now.
struct Seen {
  store::State state;
  std::string status;  // the state's, or active when a daemon holds it and it says less
  std::string held_by;
};

Seen look(redis::SyncClient& c, const store::Keys& k, const std::string& id) {
  Seen s;
  s.state = call(c, store::read_state(k, id));
  s.status = s.state.count("status") ? s.state.at("status") : "";
  const std::string claim = call(c, store::read_claim(k, id));
  if (!claim.empty() && !final_status(s.status)) {
    s.held_by = holder(c, k, claim);
    // A short attempt's state is written only at its end: its hold says it runs.
    if (!s.held_by.empty() && s.status != "active") s.status = "active";
  }
  return s;
}

// What status and wait see of job `id` in queue `q`: at its home shard, else at the first other
// shard (search_order) holding a state for it: an id jobqd gave a job it could not read may live
// in the shard that job was fetched from.
Seen look_anywhere(redis::SyncClient& c, const Target& t, const std::string& q,
                   const std::string& id) {
  const auto shards = shard_keys(c, t, q);
  const auto order = search_order(store::home_shard(id, shards.size()), shards.size());
  Seen home = look(c, shards[order.front()], id);
  if (!home.state.empty() || !home.held_by.empty()) return home;
  for (std::size_t i = 1; i < order.size(); ++i) {
    if (!call(c, store::read_state(shards[order[i]], id)).empty()) {
      return look(c, shards[order[i]], id);
    }
  }
  return home;
}

// Whether queue `q` knows of job `id`: a state in any of its shards (its home first), or a
// claim at its home.
bool knows(redis::SyncClient& c, const Target& t, const std::string& q, const std::string& id) {
  const auto shards = shard_keys(c, t, q);
  const std::size_t home = store::home_shard(id, shards.size());
  for (const auto i : search_order(home, shards.size())) {
    if (!call(c, store::read_state(shards[i], id)).empty()) return true;
    if (i == home && !call(c, store::read_claim(shards[i], id)).empty()) return true;
  }
  return false;
}

// Finds which queue holds job `id`: the one given, else each queue jobqctl knows of.
std::string find_queue(redis::SyncClient& c, const Target& t, const std::string& id,
                       const std::string& queue) {
  if (!queue.empty()) return queue_arg(queue);
  id_arg(id);
  const auto names = known_queues(c, t);
  for (const auto& q : names) {
    if (knows(c, t, q, id)) return q;
  }
  throw Exit{kFailure,
             "no job " + id + " in any known queue (" +
                 (names.empty() ? std::string("none known") : std::to_string(names.size())) +
                 "; give -q QUEUE for a job that has no state yet)"};
}

// The result as it was, one newline at its end (results often end with one already).
void print_result(const std::string& result) {
  std::cout << result;
  if (result.empty() || result.back() != '\n') std::cout << "\n";
}

}  // namespace

int wait_for_job(const Target& t, const std::string& queue, const std::string& id,
                 std::optional<config::Millis> timeout, bool as_json, redis::SyncClient sub,
                 redis::SyncClient& c) {
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
    const Seen seen = look_anywhere(c, t, queue, id);
    if (final_status(seen.status)) return finish(seen.state);
    if (seen.state.empty() && seen.held_by.empty() && !announced.empty()) {
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
        if (final_status(status)) announced = status;
      }
    }
  }
}

int cmd_status(const Globals& g, const std::string& id, const std::string& queue) {
  Target t = resolve(g);
  auto c = connect(t);
  const std::string q = find_queue(c, t, id, queue);
  Seen seen = look_anywhere(c, t, q, id);
  if (seen.state.empty() && seen.held_by.empty()) {
    throw Exit{kFailure, "no job " + id + " in queue " + q};
  }
  store::State shown = seen.state;
  if (!seen.status.empty()) shown["status"] = seen.status;
  if (!seen.held_by.empty()) {
    shown["worker"] = seen.held_by;
    shown["queue"] = q;
  }
  print_job(id, shown, g.json_out, call(c, store::redis_time()));
  return kOk;
}

int cmd_wait(const Globals& g, const std::string& id, const std::string& queue,
             const std::string& wait_timeout) {
  Target t = resolve(g);
  auto c = connect(t);
  const std::string q = find_queue(c, t, id, queue);
  auto sub = connect(t);
  must(sub.subscribe(keys(t, q).events));
  std::optional<config::Millis> limit;
  if (!wait_timeout.empty()) limit = duration_arg(wait_timeout, "--wait-timeout");
  return wait_for_job(t, q, id, limit, g.json_out, std::move(sub), c);
}

namespace {

// A copy of job `id` waiting in pending or delayed, found by cancel.
struct Copy {
  std::string where;  // pending, delayed
  std::string body;
  std::string score;  // delayed: when it is due
  bool away = false;  // in shard 0, not in its id's home shard (not forwarded there yet)
};

// The id a copy names: its marker's, else its JSON's own.
std::string id_of(const std::string& copy) {
  store::Copy c = store::split(copy);
  if (c.marker) return c.marker->id;
  auto parsed = job::parse_json(c.body);
  auto* j = std::get_if<json>(&parsed);
  if (j && j->is_object() && j->contains("id") && (*j)["id"].is_string()) {
    return (*j)["id"].get<std::string>();
  }
  return "";
}

// Every copy of job `id` in the queue's pending list and delayed set, in the order cancel tries
// them: a retry waiting in delayed first, then the oldest in pending, then the rest. Read in
// slices, so that a long list never holds Redis in one reply.
std::vector<Copy> copies_of(redis::SyncClient& c, const store::Keys& k, const std::string& id) {
  constexpr long long kSlice = 1000;
  auto is_it = [&](const std::string& raw) {
    return raw.find(id) != std::string::npos && id_of(raw) == id;
  };
  std::vector<Copy> pending, retries, delayed;
  const long long n = call(c, store::pending_length(k));
  for (long long from = 0; from < n; from += kSlice) {
    for (auto& e : call(c, store::pending_slice(k, from, from + kSlice - 1))) {
      if (is_it(e)) pending.push_back({"pending", std::move(e), "", false});
    }
  }
  std::reverse(pending.begin(), pending.end());  // consumed from the right: the oldest first
  const long long m = call(c, store::delayed_count(k));
  for (long long from = 0; from < m; from += kSlice) {
    for (auto& [e, score] : call(c, store::delayed_slice(k, from, from + kSlice - 1))) {
      if (!is_it(e)) continue;
      store::Copy split = store::split(e);
      auto& to = split.marker && split.marker->attempts > 0 ? retries : delayed;
      to.push_back({"delayed", std::move(e), std::move(score), false});
    }
  }
  std::vector<Copy> out = std::move(retries);
  for (auto* v : {&pending, &delayed}) {
    out.insert(out.end(), std::make_move_iterator(v->begin()), std::make_move_iterator(v->end()));
  }
  return out;
}

// Moves a copy found away from its id's home shard (in shard 0) home, as a daemon fetching it
// would, so that the cancel script finds it there with the job's state and claim (one script
// touches one shard). Taken out first: false when a daemon took it meanwhile (look again), and
// never two copies of it. Were jobqctl to die between the two steps, the job being cancelled
// would be lost, not run twice.
bool bring_home(redis::SyncClient& c, const store::Keys& from, const store::Keys& home,
                const Copy& copy) {
  if (!call(c, store::take_copy(from, copy.where, copy.body))) return false;
  if (copy.where == "pending") {
    call(c, store::push_pending(home, {copy.body}));
  } else {
    call(c, store::put_delayed(home, copy.body, copy.score));
  }
  return true;
}

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

// A job waiting in pending or delayed is taken out and cancelled here; one a daemon holds
// (running, or in its buffer) gets a request that every jobqd reads within a second, and the one
// holding it stops it as at a timeout. Waits (on the events channel) until the job is over, at
// most `limit`.
int cmd_cancel(const Globals& g, const std::string& id_given, const std::string& queue,
               const std::string& limit_arg) {
  const std::string& id = id_arg(id_given, "cancel: job id");
  const config::Millis limit =
      limit_arg.empty() ? config::Millis(30000) : duration_arg(limit_arg, "--wait-timeout");
  Target t = resolve(g);
  auto c = connect(t);
  const std::string q = find_queue(c, t, id, queue);
  // The request and the state at the job's home; its copies there, and in shard 0, where a
  // plain LPUSH lands before a daemon sends it home.
  const auto shards = shard_keys(c, t, q);
  const std::size_t home = store::home_shard(id, shards.size());
  const store::Keys& k = shards[home];
  const config::QueueConfig* qc = t.cfg ? t.cfg->queue(q) : nullptr;
  const config::Millis keep = qc ? qc->retain.failed : config::QueueConfig{}.retain.failed;
  auto sub = connect(t);
  must(sub.subscribe(k.events));
  auto report = [&](const std::string& status, const std::string& was) {
    return report_cancel(g, id, q, status, was);
  };
  const auto deadline = std::chrono::steady_clock::now() + limit;
  std::string was;  // what the job was doing when it was asked to stop
  std::string announced;
  for (;;) {
    const Seen seen = look(c, k, id);
    if (!was.empty() && final_status(seen.status)) return report(seen.status, was);
    if (!was.empty() && seen.state.empty() && seen.held_by.empty() && !announced.empty()) {
      return report(announced, was);
    }
    bool request = !seen.held_by.empty();
    bool raced = false;
    if (!request && was.empty()) {
      std::vector<Copy> copies = copies_of(c, k, id);
      if (home != 0) {
        for (auto& copy : copies_of(c, shards.front(), id)) {
          copy.away = true;
          copies.push_back(std::move(copy));
        }
      }
      for (const auto& copy : copies) {
        if (copy.away && !bring_home(c, shards.front(), k, copy)) {
          raced = true;
          break;
        }
        const std::string why = copy.where == "pending" ? "queued" : "waiting in delayed";
        auto r = call(c, store::cancel(k, q, id, copy.where, copy.body, keep,
                                       "cancelled by jobqctl cancel while " + why));
        if (r.what == "cancelled") return report("cancelled", why);
        if (r.what == "gone") {
          raced = true;  // a daemon took it meanwhile: look again
          break;
        }
      }
      if (!raced) {
        if (final_status(seen.status)) return report(seen.status, "over");
        if (seen.state.empty()) throw Exit{kFailure, "no job " + id + " in queue " + q};
        request = true;  // queued or retrying, yet in neither place: a daemon holds it
      }
    } else if (!was.empty()) {
      request = !final_status(seen.status);
    }
    if (request && !raced) {
      auto r = call(c, store::cancel(k, q, id, "request", "", keep, ""));
      if (r.what == "requested" && was.empty()) {
        was = seen.held_by.empty() ? "held by a daemon" : "running";
        if (!g.json_out) {
          std::cerr << "job " << id << " is " << (seen.status.empty() ? "held" : seen.status)
                    << ": asked the jobqd that holds it to stop it\n";
        }
      } else if (r.what == "final" && was.empty()) {
        return report(r.status, "over");
      }
    }
    if (raced) continue;
    auto left =
        std::chrono::duration_cast<config::Millis>(deadline - std::chrono::steady_clock::now());
    if (left <= config::Millis(0)) {
      throw Exit{kTimedOut, "job " + id + " still " + (seen.status.empty() ? "held" : seen.status) +
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
        if (final_status(status)) announced = status;
      }
    }
  }
}

namespace {

// A job as `jobs` lists it.
struct JobRow {
  std::string id, where, when;
  json payload;  // the job's payload (dead: its error)
  bool readable = true;
};

// A held or waiting copy of a job as a row: its id (from its marker, else its own field) and its
// payload; what is not a job is said so.
JobRow describe(const std::string& raw) {
  JobRow row;
  store::Copy copy = store::split(raw);
  auto parsed = job::parse_json(copy.body);
  auto* j = std::get_if<json>(&parsed);
  if (!j || !j->is_object()) {
    row.readable = false;
    row.payload = "(not a job: " + job::to_utf8(job::clip_utf8(raw, 40)) + ")";
    return row;
  }
  if (copy.marker) {
    row.id = copy.marker->id;
  } else if (j->contains("id") && (*j)["id"].is_string()) {
    row.id = (*j)["id"].get<std::string>();
  }
  row.payload = j->contains("payload") ? (*j)["payload"] : json();
  return row;
}

// The jobs daemons hold, running or buffered, told apart by what each daemon says it runs (its
// heartbeat); up to `limit` into `rows`. Returns how many there are.
std::size_t held_rows(redis::SyncClient& c, const Target& t, const std::vector<store::Keys>& shards,
                      const std::string& queue, bool running_ones, std::size_t limit,
                      std::vector<JobRow>& rows) {
  auto workers = call(c, store::read_workers(t.prefix));
  std::map<std::string, std::set<std::uint64_t>> running;
  std::set<std::string> told;
  for (const auto& h : workers.live) {
    auto q = h.queues.find(queue);
    if (q == h.queues.end()) continue;
    told.insert(h.worker);
    running[h.worker].insert(q->second.running_tokens.begin(), q->second.running_tokens.end());
  }
  std::size_t total = 0;
  // Each shard has its leases and holds (a daemon holds a lease in every shard it fetches from).
  for (const auto& k : shards) {
    for (const auto& w : call(c, store::lease_holders(k))) {
      auto held = store::run(c, store::held_copies(k, w));
      if (!held.ok()) continue;
      for (const auto& [token, copy] : *held) {
        const auto tok = whole_number(token);
        // A daemon that does not say (gone, or another version): its jobs count as running.
        const bool runs =
            !told.count(w) || (tok && running[w].count(static_cast<std::uint64_t>(*tok)));
        if (runs != running_ones) continue;
        ++total;
        if (rows.size() >= limit) continue;
        JobRow row = describe(copy);
        row.where = w;
        rows.push_back(std::move(row));
      }
    }
  }
  return total;
}

// The pending jobs of every shard (each oldest first) as one list, `limit` at most. A pending job
// carries no time to order them by: each shard's next oldest in turn.
std::vector<JobRow> interleaved(std::vector<std::vector<JobRow>> shards, std::size_t limit) {
  std::vector<JobRow> out;
  for (std::size_t i = 0; out.size() < limit; ++i) {
    bool more = false;
    for (auto& rows : shards) {
      if (i >= rows.size() || out.size() >= limit) continue;
      out.push_back(std::move(rows[i]));
      more = true;
    }
    if (!more) break;
  }
  return out;
}

// The rows as `jobs` prints them: JSON, or a table with a line saying what was left out.
void print_jobs(const Globals& g, redis::SyncClient& c, const std::string& queue,
                const std::string& state, std::size_t total, const std::vector<JobRow>& rows) {
  if (g.json_out) {
    json out = json::array();
    for (const auto& r : rows) {
      json j = {{"id", r.id.empty() ? json() : json(r.id)}};
      j[state == "dead" ? "error" : "payload"] = r.payload;
      if (!r.where.empty()) j["worker"] = r.where;
      if (!r.when.empty()) {
        auto at = whole_number(r.when);
        j[state == "dead" ? "died_at" : "run_at"] = at ? json(*at) : json(r.when);
      }
      out.push_back(j);
    }
    std::cout << dump({{"queue", queue}, {"state", state}, {"total", total}, {"jobs", out}})
              << "\n";
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
    std::string text =
        text_only && r.payload.is_string() ? r.payload.get<std::string>() : dump(r.payload);
    text = job::to_utf8(job::clip_utf8(text, 80));
    std::string id = r.id.empty() ? "(none yet)" : r.id;
    if (where.empty()) {
      table.add({id, text});
    } else {
      table.add({id, r.where.empty() ? when(r.when, now) : r.where, text});
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
  const auto shards = shard_keys(c, t, queue);
  std::vector<JobRow> rows;
  std::size_t total = 0;
  const long long n = static_cast<long long>(limit);
  if (state == "running" || state == "buffered") {
    total = held_rows(c, t, shards, queue, state == "running", limit, rows);
  } else if (state == "pending") {
    total = static_cast<std::size_t>(summed(c, shards, store::pending_length));
    // The oldest `limit` of each shard. Taken from the right: the oldest is the last element.
    std::vector<std::vector<JobRow>> found;
    for (const auto& items : call_each(
             c, shards, [&](const store::Keys& k) { return store::pending_slice(k, -n, -1); })) {
      auto& into = found.emplace_back();
      for (auto it = items.rbegin(); it != items.rend(); ++it) into.push_back(describe(*it));
    }
    rows = interleaved(std::move(found), limit);
  } else if (state == "delayed") {
    total = static_cast<std::size_t>(summed(c, shards, store::delayed_count));
    for (auto& e : lowest(c, shards, store::delayed_slice, limit)) {
      JobRow row = describe(e.member);
      row.when = std::move(e.score);
      rows.push_back(std::move(row));
    }
  } else {  // dead
    total = static_cast<std::size_t>(summed(c, shards, store::dead_count));
    for (auto& e : lowest(c, shards, store::dead_slice, limit)) {
      JobRow row;
      row.id = std::move(e.member);
      row.when = std::move(e.score);
      // Its state in the shard it died in.
      auto h = call(c, store::read_state(shards[e.shard], row.id));
      row.payload = h["error_kind"] + ": " + h["error"];
      rows.push_back(std::move(row));
    }
  }
  print_jobs(g, c, queue, state, total, rows);
  return kOk;
}

}  // namespace jq::cli
