// jobqctl submit: one job (its payload on the command line or stdin), a job per line of a file, or
// a flow file, checked as jobqd would read them and submitted through the protocol's calls (a job
// with `after` enters waiting and its dependencies are told of it; a flow in one transaction).
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <optional>
#include <set>
#include <variant>

#include "cli/commands.hpp"
#include "config/units.hpp"
#include "job/flow.hpp"
#include "job/id.hpp"
#include "job/job.hpp"
#include "job/text.hpp"
#include "store/marker.hpp"
#include "store/shards.hpp"

namespace jq::cli {
namespace {

// Why no jobqd would run a job of `queue`, or nullopt if one would: the queue is in the config,
// in the registry of queues daemons have served, or a daemon holds a lease on it now.
std::optional<std::string> unserved(redis::SyncClient& c, const Target& t,
                                    const std::string& queue) {
  if (t.cfg && t.cfg->queue(queue)) return std::nullopt;
  if (auto served = store::run(c, store::registered_queues(t.prefix)); served.ok()) {
    if (std::find(served->begin(), served->end(), queue) != served->end()) return std::nullopt;
  }
  if (call(c, store::leased(keys(t, queue)))) return std::nullopt;
  return "queue " + queue + " is served by no jobqd (" +
         (t.cfg ? "not in " + t.cfg->path + ", " : std::string()) +
         "and no daemon has served it on this Redis)";
}

// The longest a job of `queue` may run, when the config says (a job's timeout_ms is capped by it).
std::optional<config::Millis> timeout_cap(const Target& t, const std::string& queue) {
  const config::QueueConfig* q = t.cfg ? t.cfg->queue(queue) : nullptr;
  if (!q) return std::nullopt;
  return q->max_timeout.count() > 0 ? q->max_timeout : q->timeout;
}

// With the config's redis.wait_replicas: waits until that many replicas have what this
// connection wrote (WAIT), and warns when fewer did in time. The job is queued either way: a
// resubmission would make it wait behind itself and run twice, so this is a warning, not an
// error.
void wait_replicas(const Target& t, redis::SyncClient& c, const std::string& what) {
  if (!t.cfg || t.cfg->redis.wait_replicas == 0) return;
  const auto& r = t.cfg->redis;
  auto acked =
      c.command("WAIT", std::to_string(r.wait_replicas), std::to_string(r.wait_timeout.count()));
  if (acked && acked->type == redis::Reply::Type::integer &&
      acked->integer >= static_cast<long long>(r.wait_replicas)) {
    return;
  }
  std::cerr << "jobqctl: warning: " << what << " queued, but "
            << (acked ? (acked->type == redis::Reply::Type::integer
                             ? std::to_string(acked->integer) + " of " +
                                   std::to_string(r.wait_replicas) + " replicas (redis." +
                                   "wait_replicas) acknowledged within " +
                                   config::format_duration(r.wait_timeout)
                             : "WAIT answered " + acked->describe())
                      : acked.error().message)
            << ": a failover now could lose it\n";
}

void warn_cap(const Target& t, const std::string& queue, std::uint64_t timeout_ms,
              const std::string& where) {
  auto cap = timeout_cap(t, queue);
  if (!cap || timeout_ms <= static_cast<std::uint64_t>(cap->count())) return;
  std::cerr << "jobqctl: warning: " << where << "timeout "
            << config::format_duration(config::Millis(timeout_ms)) << " is over queue " << queue
            << "'s cap of " << config::format_duration(*cap) << " (max_timeout in " << t.cfg->path
            << "): the job is stopped after " << config::format_duration(*cap) << "\n";
}

// The names of the config's handlers (a job may name only those).
std::set<std::string> handler_names(const Target& t) {
  std::set<std::string> out;
  if (t.cfg) {
    for (const auto& [name, h] : t.cfg->handlers) out.insert(name);
  }
  return out;
}

// The rules jobqd reads a job of `queue` by, as far as jobqctl knows them: with the queue in the
// config, its handlers (`names`, which must outlive the rules), default handler, size limit and
// unique key. A job's `after` is held (it enters waiting), as jobqd's own submission would.
job::Rules rules_of(const Target& t, const std::string& queue, const std::set<std::string>& names) {
  job::Rules rules;
  rules.queue = queue;
  rules.holds_dependencies = true;
  if (const config::QueueConfig* q = t.cfg ? t.cfg->queue(queue) : nullptr) {
    rules.default_handler = q->handler;
    rules.handlers = &names;
    rules.max_bytes = q->max_job_bytes;
    rules.unique_from = q->unique.path;
  }
  return rules;
}

// "waits for 2 jobs (1 final already)": what a job that waits was told as it was submitted.
std::string waits_line(std::size_t jobs, std::size_t final_already) {
  return "waits for " + std::to_string(jobs) + (jobs == 1 ? " job" : " jobs") + " (" +
         std::to_string(final_already) + " final already)";
}

// Why a job with `after` was not submitted: another job of its id is not over.
std::string taken_text(const std::string& id) {
  return "not submitted: job " + id +
         " is not over yet (queued, running or waiting); a job that waits for others does not "
         "also wait for its id: submit it again once that one has ended";
}

}  // namespace

int cmd_submit(const Globals& g, const SubmitArgs& a) {
  const std::string& queue = queue_arg(a.queue);
  Target t = resolve(g);
  std::string text = a.payload;
  if (a.payload == "-") {
    text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  }
  json payload;
  if (text.empty()) {
    payload = json::object();
  } else {
    auto parsed = job::parse_json(text);
    if (auto* why = std::get_if<std::string>(&parsed)) {
      throw Exit{kUsage, "PAYLOAD is " + *why + " (quote a string as '\"text\"')"};
    }
    payload = std::move(std::get<json>(parsed));
  }
  const std::string id = a.id.empty() ? job::new_id() : id_arg(a.id, "--id");
  json job = {{"id", id}, {"payload", payload}};
  if (!a.handler.empty()) job["handler"] = a.handler;
  if (!a.timeout.empty()) {
    const auto ms = duration_arg(a.timeout, "--timeout").count();
    if (ms <= 0) throw Exit{kUsage, "--timeout: give a duration over 0"};
    job["timeout_ms"] = ms;
    warn_cap(t, queue, static_cast<std::uint64_t>(ms), "--");
  }
  if (a.max_attempts) job["max_attempts"] = a.max_attempts;
  if (!a.unique_key.empty()) job["unique_key"] = a.unique_key;
  if (!a.priority.empty()) job["priority"] = a.priority;
  if (!a.after.empty()) job["after"] = a.after;
  if (!a.on_dependency_failure.empty()) job["on_dependency_failure"] = a.on_dependency_failure;
  // The job as jobqd reads it: its text, its unique key (its own, or the queue's `unique:` key
  // from the config's payload field or id), and what it waits for.
  job::Job j;
  j.id = id;
  j.raw = dump(job);
  if (!a.priority.empty()) j.priority = job::priority_named(a.priority).value_or(j.priority);
  {
    const auto names = handler_names(t);
    const job::Rules rules = rules_of(t, queue, names);
    std::string error;
    j.unique_key = job::unique_key_of(job, id, rules, error);
    if (!error.empty()) {
      throw Exit{kUsage, (a.unique_key.empty() ? error : "--unique-key: " + error)};
    }
    if (auto bad = job::read_dependencies(job, rules, id, j))
      throw Exit{kUsage, "--after: " + *bad};
  }
  std::optional<std::int64_t> run_at;
  const std::int64_t now = now_ms();
  if (!a.delay.empty()) run_at = now + duration_arg(a.delay, "--delay").count();
  std::optional<config::Millis> wait_for;
  if (!a.wait_timeout.empty()) wait_for = duration_arg(a.wait_timeout, "--wait-timeout");

  auto c = connect(t);
  if (!a.force) {
    if (auto why = unserved(c, t, queue)) {
      throw Exit{kUsage, *why +
                             "; --force pushes it anyway (it waits in pending until a jobqd "
                             "serves the queue)"};
    }
  }
  std::optional<redis::SyncClient> sub;
  if (a.wait) {
    sub.emplace(connect(t));
    must(sub->subscribe(keys(t, queue).events));
  }
  auto admin = admin_for(c, t);
  const store::SubmitResult r = admin.submit(queue, j, now, run_at);
  // Nothing was written: exit 1, as for a job that could not be submitted.
  if (r.what == "taken") throw Exit{kFailure, taken_text(id)};
  const bool waiting = r.what == "waiting";
  // A duplicate: the job holding the key is the answer (printed, and waited for with --wait).
  const bool duplicate = r.what == "duplicate";
  const std::string key = job::to_utf8(job::clip_utf8(r.unique_key, 80));
  if (r.what == "waits") {
    std::cerr << "jobqctl: job " << id
              << " is not over yet; this submission runs after it ends, as a new job\n";
  } else if (duplicate) {
    std::cerr << "jobqctl: not submitted: job " << r.id << " holds unique key '" << key
              << "' (it is queued or running, or the queue's unique.for has not passed)\n";
  } else if (!r.replaced.empty()) {
    std::cerr << "jobqctl: job " << r.replaced << " (unique key '" << key
              << "') was still waiting: replaced by this one (debounce)\n";
  }
  if (!duplicate) wait_replicas(t, c, "job " + id + " is");
  // On stderr: stdout stays the id alone, for scripts that read it.
  if (waiting && !g.json_out) std::cerr << waits_line(r.waits_for, r.final_already) << "\n";
  if (!a.wait) {
    if (g.json_out) {
      json out = {{"id", r.id}, {"queue", queue}};
      if (!r.unique_key.empty()) {
        out["unique_key"] = r.unique_key;
        out["duplicate"] = duplicate;
        if (!r.replaced.empty()) out["replaced"] = r.replaced;
      }
      if (waiting) {
        out["waits_for"] = r.waits_for;
        out["final_already"] = r.final_already;
      }
      std::cout << dump(out) << "\n";
    } else {
      std::cout << r.id << "\n";
    }
    return kOk;
  }
  return wait_for_job(admin, queue, r.id, wait_for, g.json_out, std::move(*sub));
}

namespace {

// A line of a --from file that could not be submitted, and why.
struct Bad {
  std::size_t line;
  std::string why;
};

// A line of a --from file as the job it submits (the options fill in what it leaves out, an id is
// given when it has none), checked as jobqd would read it; or why it is not one.
std::variant<job::Job, std::string> job_of_line(const std::string& line, const SubmitArgs& a,
                                                std::optional<long long> timeout_ms,
                                                const job::Rules& rules) {
  auto parsed = job::parse_json(line);
  if (auto* why = std::get_if<std::string>(&parsed)) return std::move(*why);
  json j = std::move(std::get<json>(parsed));
  if (!j.is_object()) return std::string("not a job: a job is an object, {\"payload\": ...}");
  if (!a.handler.empty() && !j.contains("handler")) j["handler"] = a.handler;
  if (timeout_ms && !j.contains("timeout_ms")) j["timeout_ms"] = *timeout_ms;
  if (a.max_attempts && !j.contains("max_attempts")) j["max_attempts"] = a.max_attempts;
  if (!a.priority.empty() && !j.contains("priority")) j["priority"] = a.priority;
  if (!j.contains("id") || j["id"].is_null()) j["id"] = job::new_id();
  auto checked = job::parse(dump(j), rules);
  if (auto* why = std::get_if<job::Invalid>(&checked)) return std::move(why->error);
  return std::move(std::get<job::Job>(checked));
}

// Jobs of a --from file that wait for others (`after`), and how many of the jobs they wait for
// were final already.
struct AfterCounts {
  std::size_t jobs = 0, final_already = 0;
};

// What a --from submission did: counts on stdout, each bad line on stderr (or all as JSON).
void report_from(const Globals& g, const SubmitArgs& a, const std::string& queue,
                 std::size_t submitted, std::size_t waiting, std::size_t duplicates,
                 const AfterCounts& after, const std::vector<Bad>& bad) {
  if (g.json_out) {
    json rejected = json::array();
    for (const auto& b : bad) rejected.push_back({{"line", b.line}, {"error", b.why}});
    std::cout << dump({{"queue", queue},
                       {"submitted", submitted},
                       {"waiting", waiting},
                       {"waiting_for_jobs", after.jobs},
                       {"final_already", after.final_already},
                       {"duplicates", duplicates},
                       {"rejected", rejected}})
              << "\n";
  } else {
    std::cout << "submitted " << submitted << " job(s) to " << queue << ", rejected " << bad.size()
              << (waiting ? ", " + std::to_string(waiting) +
                                " wait for an earlier job of their id to end"
                          : std::string())
              << (after.jobs ? ", " + std::to_string(after.jobs) + " wait for other jobs (" +
                                   std::to_string(after.final_already) + " final already)"
                             : std::string())
              << (duplicates ? ", " + std::to_string(duplicates) +
                                   " not submitted: another job holds their unique key"
                             : std::string())
              << "\n";
    std::size_t shown = 0;
    for (const auto& b : bad) {
      if (++shown > 100) {
        std::cerr << "... and " << bad.size() - 100 << " more\n";
        break;
      }
      std::cerr << (a.from == "-" ? std::string("stdin") : a.from) << ":" << b.line << ": " << b.why
                << "\n";
    }
  }
}

}  // namespace

// One job per line (a job object as LPUSH takes it; the submit options fill in what a line
// leaves out), checked as the daemon would, pushed by the submit script in pipelined chunks.
// Bad lines are reported by number and skipped; exit 1 if there were any.
int cmd_submit_from(const Globals& g, const SubmitArgs& a) {
  const std::string& queue = queue_arg(a.queue);
  std::ifstream file;
  if (a.from != "-") {
    file.open(a.from);
    if (!file) throw Exit{kFailure, "--from " + a.from + ": " + std::strerror(errno)};
  }
  std::istream& in = a.from == "-" ? std::cin : file;
  Target t = resolve(g);
  auto c = connect(t);
  if (!a.force) {
    if (auto why = unserved(c, t, queue)) throw Exit{kUsage, *why + "; --force pushes them anyway"};
  }
  // The rules of the queue's config when there is one: its handlers and size limit.
  const auto names = handler_names(t);
  const job::Rules rules = rules_of(t, queue, names);
  std::optional<long long> timeout_ms;
  if (!a.timeout.empty()) {
    timeout_ms = duration_arg(a.timeout, "--timeout").count();
    warn_cap(t, queue, static_cast<std::uint64_t>(*timeout_ms), "--");
  }
  std::optional<config::Millis> delay;
  if (!a.delay.empty()) delay = duration_arg(a.delay, "--delay");
  const auto shards = admin_for(c, t).shard_keys(queue);
  must(c.load(*store::submit(shards.front(), "x", queue, "{}", 0, {}).req.script));

  auto admin = admin_for(c, t);
  std::vector<Bad> bad;
  std::size_t submitted = 0, waiting = 0, lines = 0, over_cap = 0, duplicates = 0;
  AfterCounts after;
  const bool progress = !g.json_out && isatty(STDERR_FILENO);
  // A chunk per shard, each job in its id's home: a chunk's calls all go to one slot, so that
  // on a cluster a chunk is one write to one primary, and the jobs of one id keep their order.
  std::vector<std::vector<store::Call<bool>>> chunks(shards.size());
  auto flush = [&](std::vector<store::Call<bool>>& chunk) {
    if (chunk.empty()) return;
    for (auto& queued : store::pipelined(c, chunk)) {
      if (!queued.ok()) {
        throw Exit{kFailure, queued.error().message + " after " + std::to_string(submitted) +
                                 " job(s) were submitted"};
      }
      ++submitted;
      waiting += !*queued;
    }
    chunk.clear();
    if (progress) {
      std::cerr << "\rsubmitted " << submitted << ", rejected " << bad.size() << std::flush;
    }
  };
  // Jobs with a unique key, pipelined too where no submission needs a second step (lock and
  // throttle: each is queued, waits or is a duplicate in one); a job one of them could not
  // submit (garbage at its lock) goes again alone. Debounce's go one at a time, in order.
  const store::UniqueRule rule =
      admin.layout().unique_rule ? admin.layout().unique_rule(queue) : store::UniqueRule{};
  const bool pipeline_keyed = rule.mode != store::UniqueRule::Mode::debounce && shards.size() == 1;
  std::vector<store::Call<store::Submitted>> keyed;
  struct Keyed {
    std::size_t line;
    job::Job job;
    std::int64_t now;
    std::optional<std::int64_t> run_at;
  };
  std::vector<Keyed> keyed_jobs;  // for going again alone
  // One job with a unique key or with `after`, alone (Admin::submit): counted, or a bad line.
  auto submit_alone = [&](std::size_t line_no, const job::Job& j, std::int64_t at,
                          std::optional<std::int64_t> run_at) {
    store::SubmitResult r;
    try {
      r = admin.submit(queue, j, at, run_at);
    } catch (const store::AdminError& e) {
      if (e.kind != store::AdminError::Kind::bad_input) throw;
      bad.push_back({line_no, e.what()});
      return;
    }
    if (r.what == "duplicate") {
      ++duplicates;
    } else if (r.what == "taken") {
      bad.push_back({line_no, taken_text(j.id)});
    } else {
      ++submitted;
      waiting += r.what == "waits";
      if (r.what == "waiting") {
        ++after.jobs;
        after.final_already += r.final_already;
      }
    }
  };
  auto flush_keyed = [&] {
    if (keyed.empty()) return;
    auto results = store::pipelined(c, keyed);
    for (std::size_t i = 0; i < results.size(); ++i) {
      auto& got = results[i];
      if (!got.ok()) {
        throw Exit{kFailure, got.error().message + " after " + std::to_string(submitted) +
                                 " job(s) were submitted"};
      }
      using What = store::Submitted::What;
      if (got->what == What::duplicate) {
        ++duplicates;
      } else if (got->what == What::queued || got->what == What::waits) {
        ++submitted;
        waiting += got->what == What::waits;
      } else {
        // Nothing was done: alone now.
        const Keyed& k = keyed_jobs[i];
        submit_alone(k.line, k.job, k.now, k.run_at);
      }
    }
    keyed.clear();
    keyed_jobs.clear();
  };
  const auto cap = timeout_cap(t, queue);
  std::string line;
  while (std::getline(in, line)) {
    ++lines;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    auto checked = job_of_line(line, a, timeout_ms, rules);
    if (auto* why = std::get_if<std::string>(&checked)) {
      bad.push_back({lines, std::move(*why)});
      continue;
    }
    const auto& parsed_job = std::get<job::Job>(checked);
    const std::string& text = parsed_job.raw;
    if (cap && parsed_job.timeout_ms &&
        *parsed_job.timeout_ms > static_cast<std::uint64_t>(cap->count())) {
      ++over_cap;
    }
    const std::string& id = parsed_job.id;
    const std::int64_t now = now_ms();
    const std::optional<std::int64_t> run_at =
        delay ? std::optional<std::int64_t>(now + delay->count()) : std::nullopt;
    const std::size_t home = store::home_shard(id, shards.size());
    auto& chunk = chunks[home];
    if (!parsed_job.after.empty()) {
      // After the jobs before it (one it waits for may be among them), alone: its three steps
      // each need the one before.
      flush_keyed();
      for (auto& each : chunks) flush(each);
      submit_alone(lines, parsed_job, now, run_at);
      continue;
    }
    if (!parsed_job.unique_key.empty()) {
      // After the jobs before it in its shard.
      flush(chunk);
      if (!pipeline_keyed) {
        submit_alone(lines, parsed_job, now, run_at);
        continue;
      }
      store::UniqueAsk ask;
      ask.key = parsed_job.unique_key;
      ask.rule = rule;
      keyed.push_back(store::submit(shards[home], id, queue,
                                    store::marked_submission(text, id, now), now, run_at, ask,
                                    parsed_job.priority));
      keyed_jobs.push_back({lines, parsed_job, now, run_at});
      if (keyed.size() == 1000) flush_keyed();
      continue;
    }
    flush_keyed();
    chunk.push_back(store::submit(shards[home], id, queue, store::marked_submission(text, id, now),
                                  now, run_at, parsed_job.priority));
    if (chunk.size() == 1000) flush(chunk);
  }
  flush_keyed();
  for (auto& chunk : chunks) flush(chunk);
  if (progress) std::cerr << "\n";
  if (submitted + waiting > 0) wait_replicas(t, c, "the jobs are");
  if (over_cap) {
    std::cerr << "jobqctl: warning: " << over_cap << " job(s) ask for a timeout over queue "
              << queue << "'s cap of " << config::format_duration(*cap)
              << ": they are stopped after it\n";
  }
  report_from(g, a, queue, submitted, waiting, duplicates, after, bad);
  return bad.empty() ? kOk : kFailure;
}

// A flow file's jobs (job::read_flow: each by its queue's rules, the graph checked and ordered),
// written as one transaction, or on a cluster in steps none of which runs a job before the last
// (store::Admin::submit_flow): every job or none. What refuses it is
// said before anything is written: exit 2 for the file's mistakes and what it names that is not
// known, 1 for an id whose job is not over.
int cmd_submit_flow(const Globals& g, const SubmitArgs& a) {
  const std::string& queue = queue_arg(a.queue);
  Target t = resolve(g);
  std::string text;
  if (a.flow == "-") {
    text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  } else {
    std::ifstream file(a.flow, std::ios::binary);
    if (!file) throw Exit{kFailure, "--flow " + a.flow + ": " + std::strerror(errno)};
    text.assign(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
  }
  auto c = connect(t);
  const auto names = handler_names(t);
  // Each queue the flow names: its rules, or none when no jobqd serves it (unless --force).
  std::map<std::string, std::optional<job::Rules>> known;
  std::string unserved_why;
  const job::RulesFor rules_for = [&](const std::string& q) -> const job::Rules* {
    auto it = known.find(q);
    if (it == known.end()) {
      std::optional<job::Rules> rules;
      auto why = a.force ? std::nullopt : unserved(c, t, q);
      if (why) {
        unserved_why = *why;
      } else {
        rules = rules_of(t, q, names);
      }
      it = known.emplace(q, std::move(rules)).first;
    }
    return it->second ? &*it->second : nullptr;
  };
  auto read = job::read_flow(text, queue, rules_for);
  if (auto* why = std::get_if<std::string>(&read)) {
    throw Exit{kUsage,
               "--flow " + a.flow + ": not written: " + *why +
                   (unserved_why.empty() ? std::string()
                                         : " (" + unserved_why + "; --force writes it anyway)")};
  }
  const job::Flow& flow = std::get<job::Flow>(read);
  auto admin = admin_for(c, t);
  const store::FlowResult r = admin.submit_flow(queue, flow, now_ms());
  if (!r.unknown.empty()) {
    throw Exit{kUsage, "--flow " + a.flow +
                           ": not written: it waits for jobs neither in the file nor known: " +
                           joined(r.unknown)};
  }
  if (!r.taken.empty()) {
    throw Exit{kFailure, "--flow " + a.flow + ": " +
                             (r.given_up ? "given up (flow " + r.flow +
                                               "; the jobs of it written end cancelled, none runs)"
                                         : std::string("not written")) +
                             ": these ids name jobs that are not over yet (queued, running or "
                             "waiting): " +
                             joined(r.taken)};
  }
  wait_replicas(t, c, "the flow is");
  if (g.json_out) {
    json ids = json::array();
    for (const auto& f : flow.jobs) ids.push_back(f.queue + "/" + f.job.id);
    std::cout << dump({{"queue", queue},
                       {"submitted", r.jobs},
                       {"waiting", r.waiting},
                       {"final_already", r.final_already},
                       {"jobs", ids}})
              << "\n";
  } else {
    std::cout << "submitted a flow of " << r.jobs << " job(s): " << r.jobs - r.waiting
              << " queued, " << r.waiting << " waiting for others (" << r.final_already
              << " of what they wait for final already)\n";
  }
  return kOk;
}

}  // namespace jq::cli
