// jobqctl: submit jobs and follow them. The command line and its dispatch; each command group
// lives in a file of its own (daemon/cli/commands.hpp), on one blocking client that shares the
// protocol's calls with the daemon (store/calls.hpp).
#include <charconv>
#include <iostream>
#include <string_view>

#include <CLI/CLI.hpp>

#include "cli/commands.hpp"
#include "cli/help.hpp"
#include "version.hpp"

namespace jq::cli {
namespace {

unsigned attempts_arg(const std::string& s) {
  if (s.empty()) return 0;
  unsigned v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || v < 1 || v > 1000) {
    throw Exit{kUsage, "submit: --max-attempts '" + s + "' is not a whole number from 1 to 1000"};
  }
  return v;
}

}  // namespace
}  // namespace jq::cli

// Every command and option, declared in the order --help lists them, then the dispatch: a table
// more than logic, and over 80 lines for that reason (each command's work is in its own file).
int main(int argc, char** argv) {
  using namespace jq::cli;
  CLI::App app{"jobqctl: submit jobs to jobqd and follow them"};
  app.require_subcommand(0, 1);
  app.fallthrough();  // the global options after the command too: `jobqctl status ID --json`
  app.set_version_flag("--version", std::string("jobqctl ") + jq::version());
  Globals g;
  app.add_option("-c,--config", g.config_path, "jobqd config (for the Redis URL and queues)")
      ->capture_default_str()
      ->envname("JOBQD_CONFIG")
      ->each([&](const std::string&) { g.config_given = true; });
  app.add_option("--redis", g.redis_url, "Redis URL (instead of the config's)")
      ->envname("JOBQD_REDIS_URL");
  app.add_flag("--json", g.json_out, "machine-readable output");
  std::string completion;
  app.add_option("--completion", completion, "print the shell completion (bash or zsh)")
      ->check(CLI::IsMember({"bash", "zsh"}));

  SubmitArgs sa;
  std::string max_attempts_arg;
  auto* submit =
      app.add_subcommand("submit", "submit a job; prints its id (or, with --wait, its result)");
  submit->add_option("QUEUE", sa.queue, "queue name")->required();
  submit->add_option("PAYLOAD", sa.payload, "the payload as JSON, or - to read it from stdin");
  submit->add_option("--id", sa.id, "the job's id (default: a new time-ordered one)");
  submit->add_option("--handler", sa.handler, "a configured handler (default: the queue's)");
  submit->add_option(
      "--timeout", sa.timeout,
      "job timeout, like 30s (capped by the queue's max_timeout: a warning says so)");
  submit->add_option("--max-attempts", max_attempts_arg,
                     "attempts before it is dead, 1 to 1000 (capped by the queue)");
  submit->add_option("--delay", sa.delay, "run it this much later, like 5m");
  submit->add_option("--unique-key", sa.unique_key,
                     "while a job with this key is queued or running, print its id instead of "
                     "submitting (the queue's unique: says how; docs/unique.md)");
  submit
      ->add_option("--priority", sa.priority,
                   "high, normal or low: the order within the queue, when it has priorities: "
                   "(docs/priorities.md)")
      ->check(CLI::IsMember({"high", "normal", "low"}));
  submit->add_flag("--wait", sa.wait, "wait for the end: print the result, exit 1 if it failed");
  submit->add_option("--wait-timeout", sa.wait_timeout,
                     "give up waiting after this long (exit 124)");
  submit->add_flag("--force", sa.force, "push even if no jobqd serves the queue");
  submit->add_option("--from", sa.from,
                     "submit a job per line of this JSON-lines file (- for stdin), pipelined");
  submit
      ->add_option("--after", sa.after,
                   "wait for this job (ID in QUEUE, or OTHER_QUEUE/ID) to be final first; "
                   "repeat it or separate with commas (docs/workflows.md)")
      ->delimiter(',');
  submit
      ->add_option("--on-dependency-failure", sa.on_dependency_failure,
                   "with --after, when one of them failed or was cancelled: fail (default), run "
                   "or skip")
      ->check(CLI::IsMember({"fail", "run", "skip"}));
  submit->add_option("--flow", sa.flow,
                     "submit a flow: a JSON list of jobs with their own ids that wait for one "
                     "another (after), written whole or not at all (- for stdin)");
  submit->footer(R"(
EXAMPLES
  jobqctl submit default '{"n": 1}'
  jobqctl submit default '{"n": 1}' --wait --wait-timeout 30s
  echo '{"to": "a@example.com"}' | jobqctl submit mail - --id mail-42 --delay 5m
  jobqctl submit mail --from jobs.jsonl     # a line is a job: {"payload": ..., "id": ...}
  jobqctl submit report '{"user": 7}' --unique-key user-7   # prints the holder's id if taken
  jobqctl submit thumbs '{"set": 7}' --after resize-1 --after images/resize-2
  jobqctl submit images --flow flow.json    # [{"id": "a", "payload": 1}, {"id": "b", ...)");

  std::string status_id, status_queue;
  auto* status = app.add_subcommand("status", "show a job's state");
  status->add_option("ID", status_id, "job id")->required();
  status->add_option("-q,--queue", status_queue,
                     "its queue (default: look in every configured queue)");

  std::string flow_id, flow_queue;
  auto* flowcmd = app.add_subcommand(
      "flow", "show the graph around a job: what it waits for and what waits on it, as trees");
  flowcmd->add_option("ID", flow_id, "job id")->required();
  flowcmd->add_option("-q,--queue", flow_queue,
                      "its queue (default: look in every configured queue)");
  flowcmd->footer(
      "\nUpward, what it waits for (each job's after, recursively); downward, the jobs waiting on\n"
      "it while it is not final (recursively). Each job with its status and times, an error for\n"
      "a failed or cancelled one, \"waits for N of M\" for a waiting one; a job reached twice is\n"
      "shown once, then as (above); one with no state yet as not seen yet. At most 1000 jobs and\n"
      "50 levels each way (it says when it stopped there).\n"
      "EXAMPLES\n  jobqctl flow thumbs-all -q images\n  jobqctl flow thumbs-all --json");

  std::string wait_id, wait_queue, wait_limit;
  auto* waitcmd = app.add_subcommand("wait", "wait until a job succeeded or failed");
  waitcmd->add_option("ID", wait_id, "job id")->required();
  waitcmd->add_option("-q,--queue", wait_queue, "its queue");
  waitcmd->add_option("--wait-timeout", wait_limit, "give up after this long (exit 124)");

  std::string cancel_id, cancel_queue, cancel_limit;
  auto* cancelcmd =
      app.add_subcommand("cancel", "cancel a job: remove it, or stop it where it runs");
  cancelcmd->add_option("ID", cancel_id, "job id")->required();
  cancelcmd->add_option("-q,--queue", cancel_queue,
                        "its queue (default: look in every known queue)");
  cancelcmd->add_option("--wait-timeout", cancel_limit,
                        "how long to wait for a running job to stop (default 30s; exit 124)");
  cancelcmd->footer(
      "\nA queued or delayed job is taken out at once. A running one is stopped by the jobqd\n"
      "running it within a second, as at a timeout (an exec job's process group gets SIGTERM,\n"
      "then SIGKILL). Either way it ends with status and error_kind cancelled; exit 0 once it\n"
      "did (or had been cancelled already), 1 if it ended otherwise (or had already).\n"
      "EXAMPLE\n  jobqctl cancel mail-42 -q mail");

  std::string dead_action, dead_queue, dead_id;
  bool dead_all = false, dead_dependents = false;
  std::size_t dead_limit = 100;
  auto* deadcmd = app.add_subcommand("dead", "list, requeue (retry) or delete (purge) dead jobs");
  deadcmd->add_option("ACTION", dead_action, "list, retry or purge")
      ->required()
      ->check(CLI::IsMember(kDeadActions));
  deadcmd->add_option("QUEUE", dead_queue, "queue name")->required();
  deadcmd->add_option("ID", dead_id, "one dead job (retry, purge)");
  deadcmd->add_flag("--all", dead_all, "every dead job of the queue (retry, purge)");
  deadcmd->add_flag("--with-dependents", dead_dependents,
                    "retry ID: and each job that failed because of it, transitively, so that "
                    "they run once it succeeds (docs/workflows.md)");
  deadcmd->add_option("--limit", dead_limit, "list: at most this many, oldest first (default 100)")
      ->check(CLI::Range(1, 100000));

  auto* schedulescmd = app.add_subcommand(
      "schedules", "list the schedules: cron, zone, queue, last run and its outcome, next run");
  schedulescmd->footer("\nEXAMPLE\n  jobqctl schedules --json");
  ScheduleArgs sch;
  auto* schedulecmd = app.add_subcommand(
      "schedule", "add, remove (rm), pause or resume a schedule stored in Redis");
  schedulecmd->add_option("ACTION", sch.action, "add, rm, pause or resume")
      ->required()
      ->check(CLI::IsMember({"add", "rm", "pause", "resume"}));
  schedulecmd->add_option("NAME", sch.name, "schedule name")->required();
  schedulecmd->add_option("--cron", sch.cron,
                          "add: 5 fields (\"0 3 * * *\"), @hourly-style, or @every DURATION");
  schedulecmd->add_option("--queue,-q", sch.queue, "add: the queue its jobs go to (else: found)");
  schedulecmd->add_option("--timezone", sch.timezone, "add: an IANA zone (default UTC)");
  schedulecmd->add_option("--job", sch.job, "add: the job each tick enqueues, as JSON (no id)");
  schedulecmd->add_option("--payload", sch.payload, "add: just its payload, as JSON");
  schedulecmd->add_option("--catch-up", sch.catch_up, "add: missed ticks: skip, one or all")
      ->check(CLI::IsMember({"skip", "one", "all"}));
  schedulecmd->add_option("--jitter", sch.jitter, "add: each job runs up to this much later");
  schedulecmd->footer(
      "\nA schedule added here is stored in Redis beside the config's (which are changed in\n"
      "their file; pause and resume work on both). Every jobqd serving the queue picks a change\n"
      "up within 2s; each tick enqueues one job, whatever the number of daemons.\n"
      "EXAMPLES\n  jobqctl schedule add report --cron \"0 6 * * 1-5\" --timezone Europe/Berlin "
      "-q mail --payload '{\"to\":\"ops\"}'\n  jobqctl schedule pause report");

  std::string jobs_queue, jobs_state = "pending";
  std::size_t jobs_limit = 100;
  auto* jobscmd = app.add_subcommand("jobs", "list a queue's jobs in one state, oldest first");
  jobscmd->add_option("QUEUE", jobs_queue, "queue name")->required();
  jobscmd
      ->add_option("--state", jobs_state,
                   "pending (default), delayed, running (in a handler), buffered (held, waiting "
                   "for a permit) or dead")
      ->check(CLI::IsMember(kStates));
  jobscmd->add_option("--limit", jobs_limit, "at most this many (default 100)")
      ->check(CLI::Range(1, 100000));
  jobscmd->footer(
      "\nA job pushed without an id shows (none yet): it gets one when a daemon fetches it.\n"
      "EXAMPLES\n  jobqctl jobs mail\n  jobqctl jobs mail --state running --json");
  auto* workers = app.add_subcommand("workers", "list the live jobqd daemons");
  workers->footer(
      "\nEach: worker id, host, pid, version, uptime, jobs running (RUN) and buffered (BUF), last\n"
      "heartbeat (every second), queues. EXAMPLE\n  jobqctl workers --json");
  bool watch = false;
  std::string every;
  auto* stats = app.add_subcommand("stats", "a table per queue: depths, rates, run times");
  stats->add_flag("--watch", watch, "redraw it in place, like top, until Ctrl-C");
  stats->add_option("--every", every, "with --watch: how often (default 2s)");
  stats->footer(
      "\nPENDING, DELAYED, DEAD from Redis; RUNNING (in a handler now), BUFFERED (held, waiting\n"
      "for a permit), OK/MIN, FAIL/MIN and the run times P50/P99 over the last minute from the\n"
      "live daemons' heartbeats (every second); LIMITS as for jobqctl queues.\nEXAMPLE\n"
      "  jobqctl stats --watch");
  auto* queues =
      app.add_subcommand("queues", "list the queues: pending, delayed, running, dead, paused");
  queues->footer(
      "\nLIMITS (when a queue has any): its rate and the tokens its bucket holds now, its\n"
      "global_concurrency, priorities, a weight other than 1 and group_by, as the live daemons\n"
      "serving it run by (else as -c FILE has them); then the groups a group's limit holds back.\n"
      "EXAMPLE\n  jobqctl queues --json");

  std::string pause_queue, resume_queue;
  auto* pausecmd =
      app.add_subcommand("pause", "stop every jobqd taking QUEUE's jobs (within a second)");
  pausecmd->add_option("QUEUE", pause_queue, "queue name")->required();
  pausecmd->footer(
      "\nRunning jobs finish; buffered ones wait (and start again, in order, on resume); the\n"
      "pause lasts (across daemon restarts) until resume.\n"
      "EXAMPLE\n  jobqctl pause mail");
  auto* resumecmd = app.add_subcommand("resume", "let every jobqd take QUEUE's jobs again");
  resumecmd->add_option("QUEUE", resume_queue, "queue name")->required();
  resumecmd->footer("\nEXAMPLE\n  jobqctl resume mail");
  status->footer("\nEXAMPLE\n  jobqctl status 01M8XP9BS323B05SQ176K6X2ME --json");
  waitcmd->footer("\nEXAMPLE\n  jobqctl wait mail-42 -q mail --wait-timeout 1m");
  deadcmd->footer(
      "\nEXAMPLES\n  jobqctl dead list mail\n  jobqctl dead retry mail --all\n  jobqctl dead "
      "retry images resize-7 --with-dependents");

  // Every error on stderr: one line and, for a usage error, the usage line; with --json, one
  // JSON object {"error", "exit", "usage"} instead, for scripts that parse what they get.
  const bool json_errors = std::any_of(
      argv + 1, argv + argc, [](const char* a) { return std::string_view(a) == "--json"; });
  auto fail = [&](int code, const std::string& message, const std::string& usage) {
    if (json_errors) {
      json j = {{"error", message}, {"exit", code}};
      if (!usage.empty()) j["usage"] = usage.substr(0, usage.find_last_not_of('\n') + 1);
      std::cerr << dump(j) << "\n";
    } else {
      std::cerr << "jobqctl: " << message << "\n" << usage;
    }
    return code;
  };
  if (auto bad = unknown_command(app, argc, argv)) return fail(kUsage, *bad, usage_line(nullptr));
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    return fail(kUsage, explain(app, e), usage_line(parsed_command(app)));
  }
  if (!completion.empty()) {
    std::cout << completion_script(app, completion);
    return kOk;
  }
  if (!parsed_command(app)) return fail(kUsage, "a command is needed", usage_line(nullptr));
  try {
    if (submit->parsed()) {
      sa.max_attempts = attempts_arg(max_attempts_arg);
      if (!sa.on_dependency_failure.empty() && sa.after.empty() && sa.from.empty()) {
        throw Exit{kUsage, "submit: --on-dependency-failure goes with --after"};
      }
      if (!sa.flow.empty()) {
        if (!sa.payload.empty() || !sa.id.empty() || sa.wait || !sa.unique_key.empty() ||
            !sa.from.empty() || !sa.after.empty() || !sa.on_dependency_failure.empty() ||
            !sa.handler.empty() || !sa.timeout.empty() || sa.max_attempts || !sa.delay.empty() ||
            !sa.priority.empty() || !sa.wait_timeout.empty()) {
          throw Exit{kUsage,
                     "submit: --flow takes its jobs whole from the file: no PAYLOAD, --from "
                     "or other job options (only QUEUE, the jobs' default queue, and --force)"};
        }
        return cmd_submit_flow(g, sa);
      }
      if (!sa.from.empty()) {
        if (!sa.payload.empty() || !sa.id.empty() || sa.wait || !sa.unique_key.empty() ||
            !sa.after.empty() || !sa.on_dependency_failure.empty()) {
          throw Exit{kUsage,
                     "submit: --from takes the jobs from its lines: no PAYLOAD, --id, "
                     "--unique-key, --after, --on-dependency-failure or --wait"};
        }
        return cmd_submit_from(g, sa);
      }
      return cmd_submit(g, sa);
    }
    if (status->parsed()) return cmd_status(g, status_id, status_queue);
    if (flowcmd->parsed()) return cmd_flow(g, flow_id, flow_queue);
    if (waitcmd->parsed()) return cmd_wait(g, wait_id, wait_queue, wait_limit);
    if (cancelcmd->parsed()) return cmd_cancel(g, cancel_id, cancel_queue, cancel_limit);
    if (deadcmd->parsed()) {
      return cmd_dead(g, dead_action, dead_queue, dead_id, dead_all, dead_limit, dead_dependents);
    }
    if (queues->parsed()) return cmd_queues(g);
    if (workers->parsed()) return cmd_workers(g);
    if (jobscmd->parsed()) return cmd_jobs(g, jobs_queue, jobs_state, jobs_limit);
    if (stats->parsed()) return cmd_stats(g, watch, every);
    if (schedulescmd->parsed()) return cmd_schedules(g);
    if (schedulecmd->parsed()) return cmd_schedule(g, sch);
    if (pausecmd->parsed()) return cmd_pause(g, pause_queue, true);
    if (resumecmd->parsed()) return cmd_pause(g, resume_queue, false);
  } catch (const Exit& e) {
    return fail(e.code, e.message, e.code == kUsage ? usage_line(parsed_command(app)) : "");
  } catch (const jq::store::AdminError& e) {
    const Exit x = exit_of(e);
    return fail(x.code, x.message, x.code == kUsage ? usage_line(parsed_command(app)) : "");
  } catch (const std::exception& e) {
    return fail(kFailure, e.what(), "");
  }
  return kUsage;
}
