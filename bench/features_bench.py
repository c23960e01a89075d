#!/usr/bin/env python3
"""make bench, features section (issues #24, #25): what a queue feature costs, as a ratio against the
same queue without it, measured in the same run.

Each run: a redis-server of this script's own (Debian's, a free port of 127.0.0.1, its own
temporary directory, `--save "" --appendonly no`), FLUSHALL and SCRIPT FLUSH, N jobs LPUSHed
(pipelined) to `jobq:{q}:pending`, then ONE jobqd (`build/jobqd -c CONFIG`, `http: {listen:
off}`) with one queue `q`: the builtin noop handler, concurrency 10, buffer 100, and the
variant's keys. The clock runs from just before the daemon is started until `pending` is empty
and no `jobq:{q}:inflight:<worker>` hash of a leased worker holds anything (the fetch moves a job
from pending into its worker's inflight hash atomically, and a job leaves it only once its final
state is written: docs/redis-keys.md). Measured over that span:
  jobs/s         N / the time;
  commands/job   INFO commandstats `calls` of every command (a script's inner commands are
                 counted under their own names, and the EVALSHA too), after CONFIG RESETSTAT at
                 the start, less every command this script sent meanwhile (counted by name on its
                 one connection: the completion polls, the INFO reads), / N;
  CPU/job        INFO cpu used_cpu_user + used_cpu_sys, the end's less the start's, / N (this
                 one includes the polls' few microseconds each: an LLEN every POLL seconds);
  reads/job      INFO stats total_reads_processed (reset by CONFIG RESETSTAT), less this
                 script's commands, / N: Redis' reads of a client's socket, each what the
                 client wrote in one go (a command, or a pipeline of them): how much of the
                 daemon's traffic travels together.
After each run (untimed) the daemon is stopped and the run checked: pending, delayed and dead
empty, N job states, all `succeeded`.

Runs alternate, plain before each variant (plain, A, plain, B, plain, C; ROUNDS times), after one
untimed warm-up run; each figure is the median of a variant's runs beside the median of the plain
runs that came just before them, with the ratio variant / plain (jobs/s: below 1 is slower;
commands, CPU and reads per job: above 1 is costlier). About a minute at scale 1 on 2 cores.

Usage: features_bench.py BUILD_DIR [SCALE]   (SCALE: default $BENCH_SCALE, else 1; N = 60,000 x
SCALE, at least 1,000). Python: Debian's python3 with python3-redis.
Environment: BENCH_VERBOSE=1: each run's figures (CPU's system share too) and its commands per
job by name, on stderr. BENCH_ONLY=TEXT: only the rows whose label holds TEXT (and plain).
"""
import atexit
import collections
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import shutil

import redis

# ---- the variants: one row a feature ---------------------------------------------------------
# label, the keys added to the queue's YAML flow mapping, and the job pushed (a function of its
# index: a feature that needs something in the job, such as a `unique_key`, says so here). The
# first row is the baseline every other row is measured against.
PLAIN = ("plain", "", lambda i: {"payload": {}})
VARIANTS = [
    PLAIN,
    # A rate that never holds a job back: the bucket's cost alone (every fetch refills it and
    # takes its tokens).
    ("rate: 1000000/s", "rate: 1000000/s", lambda i: {"payload": {}}),
    # A cap the daemon fills (its own concurrency): the count's cost, and the smaller fetches it
    # makes (a daemon then buffers nothing past what it can start).
    ("global_concurrency: 10", "global_concurrency: 10", lambda i: {"payload": {}}),
    # A cap far above what the daemon holds: the count's cost alone (it buffers as usual).
    ("global_concurrency: 1000", "global_concurrency: 1000", lambda i: {"payload": {}}),
    # Not a feature, a control: fetches of at most 10 jobs without the count, to read the row of
    # a filled cap as smaller fetches + the rest.
    ("fetch_batch: 10 (control)", "fetch_batch: 10", lambda i: {"payload": {}}),
    # Unique jobs: a key per job from the payload (every job takes and lets go of its lock).
    ("unique: {key: payload.user}", "unique: {key: payload.user}",
     lambda i: {"payload": {"user": f"u{i}"}}),
    # Priorities, every job normal: the order's own cost (three lists looked at per fetch, the
    # passes written) and the smaller fetches (a daemon holds no more than it can start).
    ("priorities: weighted (all normal)", "priorities: weighted", lambda i: {"payload": {}}),
    # Jobs spread over the three levels (pushed to their lists, as LPUSH submitters of a
    # priority do).
    ("priorities: weighted (3 levels)", "priorities: weighted",
     lambda i: {"payload": {}, "priority": ("high", "normal", "low")[i % 3]}),
    # Groups (docs/groups.md): each job sorted into its tenant's list, then taken round robin; a
    # daemon then holds no more than it can start at once (compare the filled cap's row).
    ("group_by, 10 tenants", "group_by: payload.tenant",
     lambda i: {"payload": {"tenant": f"t{i % 10}"}}),
    ("group_by, 1000 tenants", "group_by: payload.tenant",
     lambda i: {"payload": {"tenant": f"t{i % 1000}"}}),
    # A per-group concurrency the daemon never reaches with 10 tenants: the count's cost alone.
    ("group_by concurrency: 5, 10 tenants", "group_by: {key: payload.tenant, concurrency: 5}",
     lambda i: {"payload": {"tenant": f"t{i % 10}"}}),
    # The queue-wide cap with groups, one the daemon fills (compare the filled cap's row and
    # group_by's alone): the count's cost in the group fetch.
    ("group_by + global_concurrency: 10", "group_by: payload.tenant, global_concurrency: 10",
     lambda i: {"payload": {"tenant": f"t{i % 10}"}}),
    # Jobs that wait for others (docs/workflows.md) need ids to name: their own cost first, then
    # the dependencies' on top of it (read each against this row as well as against plain's).
    ("ids (control)", "", lambda i: {"id": f"j{i}", "payload": {}}),
    # Chains of 10: each job waits for the one before (pushed in order: the daemon meets most
    # while what they wait for is queued or running). 9 of 10 jobs wait.
    ("after: chains of 10", "", lambda i: dict({"id": f"j{i}", "payload": {}},
                                               **({"after": [f"j{i - 1}"]} if i % 10 else {}))),
    # Fan-out and fan-in: of each 100 jobs, the last waits for the 99 before it and gets their
    # 99 outcomes.
    ("after: fan-in of 99", "", lambda i: dict(
        {"id": f"j{i}", "payload": {}},
        **({"after": [f"j{k}" for k in range(i - 99, i)]} if i % 100 == 99 else {}))),
]

# The list a job of each priority is pushed to (docs/priorities.md).
LISTS = {"high": ":pending:high", "normal": ":pending", "low": ":pending:low"}

assert len({v[0] for v in VARIANTS}) == len(VARIANTS), "each row needs a label of its own"

build = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build")
SCALE = float(sys.argv[2] if len(sys.argv) > 2 else os.environ.get("BENCH_SCALE") or 1)
N = max(1_000, int(60_000 * SCALE))
ROUNDS = 3
CONCURRENCY = 10
BUFFER = 100
POLL = 0.01  # s between completion polls
Q = "q"
K = f"jobq:{{{Q}}}"
VERBOSE = os.environ.get("BENCH_VERBOSE") == "1"


class RunFailed(Exception):
    pass


def log(msg):
    print(f"[features] {msg}", file=sys.stderr, flush=True)


# ---- processes: every child in a session of its own, all stopped at exit ---------------------
LIVE = []


def spawn(argv, **kw):
    p = subprocess.Popen(argv, start_new_session=True, **kw)
    LIVE.append(p)
    return p


def stop(p, grace=15.0):
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(timeout=10)
    if p in LIVE:
        LIVE.remove(p)


def stop_all():
    for p in list(LIVE):
        try:
            stop(p, grace=3.0)
        except Exception:
            pass


def on_signal(signum, _frame):
    raise SystemExit(128 + signum)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise RunFailed(f"timed out waiting for {what}")
        time.sleep(0.01)


def tail(path, n=2000):
    try:
        with open(path, errors="replace") as f:
            return f.read()[-n:]
    except OSError:
        return ""


# ---- Redis -----------------------------------------------------------------------------------
class Counted:
    """This script's one connection while a run is measured: every command it sends is counted
    by name, so that they can be taken out of Redis' commandstats."""

    def __init__(self, port):
        self.r = redis.Redis(port=port, decode_responses=True, single_connection_client=True)
        self.r.ping()  # connected (and any handshake done) before the stats are reset
        self.counts = collections.Counter()

    def call(self, *args):
        name = args[0].lower()
        if name in ("config", "client", "script"):  # counted as `config|resetstat` and the like
            name += "|" + args[1].lower()
        self.counts[name] += 1
        return self.r.execute_command(*args)

    def info(self, section):
        self.counts["info"] += 1
        return self.r.info(section)

    def close(self):
        self.r.close()


def cpu_seconds(info):
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def start_redis(tmp):
    log_path = os.path.join(tmp, "redis.log")
    for attempt in range(5):
        port = free_port()
        proc = spawn(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", tmp,
                      "--save", "", "--appendonly", "no", "--daemonize", "no",
                      "--logfile", log_path],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ctl = redis.Redis(port=port, decode_responses=True)

        def up():
            if proc.poll() is not None:
                return True
            try:
                return ctl.ping()
            except redis.exceptions.ConnectionError:
                return False
        try:
            wait_for(up, 10, "redis-server")
        except RunFailed:
            pass
        if proc.poll() is None and ctl.ping():
            return proc, port, ctl
        stop(proc)
    raise RunFailed("redis-server did not start:\n" + tail(log_path))


# ---- jobqd -----------------------------------------------------------------------------------
def write_config(tmp, tag, port, keys):
    base = os.path.join(tmp, tag)
    queue = f"handler: nothing, concurrency: {CONCURRENCY}, buffer: {BUFFER}"
    if keys:
        queue += f", {keys}"
    with open(base + ".yaml", "w") as f:
        f.write(f"""daemon: {{state_dir: {base}-state, log_level: warn}}
redis: {{url: "redis://127.0.0.1:{port}/0"}}
http: {{listen: "off"}}
handlers: {{nothing: {{type: builtin, name: noop}}}}
queues:
  {Q}: {{{queue}}}
""")
    return base + ".yaml"


def accepted(config):
    r = subprocess.run([os.path.join(build, "jobqd"), "--check-config", "-c", config],
                       capture_output=True, text=True, timeout=30)
    return r.returncode == 0, (r.stdout + r.stderr).strip()


def fill(ctl, variant):
    make = variant[2]
    pipe = ctl.pipeline(transaction=False)
    for start in range(0, N, 1000):
        by_list = {}
        for i in range(start, min(N, start + 1000)):
            job = make(i)
            by_list.setdefault(LISTS[job.get("priority", "normal")], []).append(
                json.dumps(job, separators=(",", ":")))
        for suffix, jobs in by_list.items():
            pipe.lpush(f"{K}{suffix}", *jobs)
        if len(pipe) >= 20:
            pipe.execute()
    pipe.execute()
    filled = sum(ctl.llen(f"{K}{suffix}") for suffix in LISTS.values())
    if filled != N:
        raise RunFailed(f"{filled} jobs pending after filling {N}")


def remaining(c):
    left = sum(c.call("LLEN", f"{K}{suffix}") for suffix in LISTS.values())
    if left:
        return left
    # A queue with group_by: jobs waiting in their groups (the ring names every group with any).
    left = c.call("ZCARD", f"{K}:groups")
    if left:
        return left
    # Jobs that wait for others, and outcomes not yet told to them.
    left = c.call("HLEN", f"{K}:waiting") + c.call("LLEN", f"{K}:outbox")
    if left:
        return left
    for worker in c.call("ZRANGE", f"{K}:leases", 0, -1):
        left += c.call("HLEN", f"{K}:inflight:{worker}")
    return left


def check(ctl):
    """After the daemon's stop: a non-empty string if the run went wrong."""
    left = (ctl.llen(f"{K}:pending"), ctl.zcard(f"{K}:delayed"), ctl.zcard(f"{K}:dead"))
    if any(left):
        return "left in pending, delayed, dead: %d, %d, %d" % left
    statuses = collections.Counter()
    keys = list(ctl.scan_iter(match=f"{K}:job:*", count=1000))
    for start in range(0, len(keys), 5000):
        pipe = ctl.pipeline(transaction=False)
        for key in keys[start:start + 5000]:
            pipe.hget(key, "status")
        statuses.update(pipe.execute())
    if statuses != {"succeeded": N}:
        return f"job states: {dict(statuses)}, not {N} succeeded"
    return ""


def one_run(tmp, port, ctl, variant, tag):
    label, keys, _ = variant
    ctl.flushall(asynchronous=False)
    ctl.script_flush()
    fill(ctl, variant)
    config = write_config(tmp, tag, port, keys)
    log_path = config[:-5] + ".log"
    c = Counted(port)
    try:
        c.call("CONFIG", "RESETSTAT")
        cpu_info = c.info("cpu")
        cpu0, sys0 = cpu_seconds(cpu_info), float(cpu_info["used_cpu_sys"])
        t0 = time.perf_counter()
        with open(log_path, "w") as out:
            p = spawn([os.path.join(build, "jobqd"), "-c", config], stdout=out,
                      stderr=subprocess.STDOUT)
        try:
            deadline = t0 + 60 + N / 200
            while remaining(c):
                if p.poll() is not None:
                    raise RunFailed(f"{label}: jobqd exited ({p.returncode}):\n" + tail(log_path))
                if time.perf_counter() > deadline:
                    raise RunFailed(f"{label}: not drained within {deadline - t0:.0f} s")
                time.sleep(POLL)
            secs = time.perf_counter() - t0
            cpu_info = c.info("cpu")
            cpu = cpu_seconds(cpu_info) - cpu0
            sys_cpu = float(cpu_info["used_cpu_sys"]) - sys0
            reads = int(c.info("stats")["total_reads_processed"])
            mine = collections.Counter(c.counts)  # the INFO commandstats below is not counted
            stats = collections.Counter()
            for key, value in c.r.info("commandstats").items():
                if key.startswith("cmdstat_"):
                    stats[key[len("cmdstat_"):]] = int(value["calls"])
        finally:
            stop(p)
    finally:
        c.close()
    stats.subtract(mine)  # CONFIG RESETSTAT too: Redis counts it once it has run, after the reset
    if any(v < 0 for v in stats.values()):
        raise RunFailed(f"{label}: commandstats do not add up: {dict(stats)} less {dict(mine)}")
    problem = check(ctl)
    if problem:
        raise RunFailed(f"{label}: {problem}\n" + tail(log_path))
    stats = {k: v for k, v in stats.items() if v}
    # Reads: each a read() of a client's socket by Redis, what a client wrote in one go (a
    # command, or a pipeline of them). This script's own commands, sent one at a time, are one
    # each, but for the CONFIG RESETSTAT, read before the reset.
    reads -= sum(mine.values()) - 1
    run = {"rate": N / secs, "cmds": sum(stats.values()) / N, "cpu": cpu / N * 1e6,
           "reads": reads / N}
    if VERBOSE:
        top = ", ".join(f"{k} {v / N:.2f}" for k, v in
                        sorted(stats.items(), key=lambda kv: -kv[1])[:14])
        log(f"{label}: {run['rate']:,.0f} jobs/s, {run['cmds']:.2f} commands/job, "
            f"{run['cpu']:.1f} us CPU/job ({sys_cpu / N * 1e6:.1f} of it system), "
            f"{reads / N:.3f} reads/job; per job: {top}")
    return run


# ---- the table -------------------------------------------------------------------------------
def human(v):
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if v >= div:
            return f"{v / div:.2f}{unit}"
    return f"{v:.0f}"


def ratio(a, b):
    if not b:
        return "-"
    r = a / b
    return f"{r:.0f}x" if r >= 10 else f"{r:.2f}x"


def table(title, rows, what, fmt):
    w = max([34] + [len(label) + 2 for label, _, _ in rows])
    print(f"\n{title}")
    print(f"  {what:<{w}}{'variant':>12}{'plain':>12}{'ratio':>9}")
    for label, ours, base in rows:
        print(f"  {label:<{w}}{fmt(ours):>12}{fmt(base):>12}{ratio(ours, base):>9}")


def main():
    sys.stdout.reconfigure(line_buffering=True)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    atexit.register(stop_all)
    if not os.access(os.path.join(build, "jobqd"), os.X_OK):
        print(f"  {build}/jobqd missing: skipped")
        return 0
    tmp = tempfile.mkdtemp(prefix="jobqd-features-bench-")
    try:
        srv, port, ctl = start_redis(tmp)
        try:
            variants = [VARIANTS[0]]
            only = os.environ.get("BENCH_ONLY", "")
            for i, v in enumerate(VARIANTS[1:]):
                if only and only not in v[0]:
                    continue
                ok, why = accepted(write_config(tmp, f"check-{i}", port, v[1]))
                if ok:
                    variants.append(v)
                else:
                    print(f"  {v[0]}: not accepted by {build}/jobqd, skipped: "
                          f"{why.splitlines()[-1] if why else '?'}")
            if len(variants) < 2:
                return 0
            t_start = time.monotonic()
            runs = 0

            def run(v):
                nonlocal runs
                runs += 1
                return one_run(tmp, port, ctl, v, f"{runs:03d}")

            run(PLAIN)  # warm-up, not counted: the first run after the server's start
            plain = {v[0]: [] for v in variants[1:]}
            ours = {v[0]: [] for v in variants[1:]}
            for _ in range(ROUNDS):
                for v in variants[1:]:
                    plain[v[0]].append(run(PLAIN))
                    ours[v[0]].append(run(v))
            secs = time.monotonic() - t_start
            version = ctl.info("server")["redis_version"]
        finally:
            stop(srv)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def med(rs, key):
        return statistics.median(r[key] for r in rs)

    print(f"  {N:,} pre-filled no-op jobs, one jobqd (concurrency {CONCURRENCY}, buffer {BUFFER}) "
          f"from its start until all are finished; Redis {version}")
    print(f"  median of {ROUNDS} runs each, every variant run just after a plain one; plain's "
          f"column: the median of those plain runs ({runs} runs, {secs:.0f} s)")
    groups = (("jobs/s (ratio below 1: slower)", "rate", "jobs per second", human),
              ("Redis commands per job (commandstats calls, scripts' inner commands included, "
               "the polls taken out; ratio above 1: costlier)", "cmds", "commands per job",
               lambda v: f"{v:.2f}"),
              ("Redis CPU per job (INFO cpu, used_cpu_user + used_cpu_sys; ratio above 1: "
               "costlier)", "cpu", "CPU per job", lambda v: f"{v:.1f} us"),
              ("Redis socket reads per job (INFO stats total_reads_processed: what a client "
               "wrote in one go, a command or a pipeline; the polls taken out)", "reads",
               "reads per job", lambda v: f"{v:.3f}"))
    for title, key, what, fmt in groups:
        table(title, [(v[0], med(ours[v[0]], key), med(plain[v[0]], key)) for v in variants[1:]],
              what, fmt)
    print("  runs, jobs/s (plain/variant):")
    for v in variants[1:]:
        print(f"    {v[0]}: " + " ".join(f"{human(p['rate'])}/{human(o['rate'])}"
                                         for p, o in zip(plain[v[0]], ours[v[0]])))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RunFailed as e:
        print(f"  features: failed: {e}", file=sys.stderr)
        sys.exit(1)
