#!/usr/bin/env python3
"""What a unique key costs Redis per job (docs/unique.md), against a queue without one.

A redis-server this script starts (Debian's, a free port of 127.0.0.1, its own temporary
directory, `--save "" --appendonly no`) and jobqd (`build/jobqd`, or JOBQD) with one queue `q`:
the `noop` built-in, concurrency 10, fetch_batch 25, the default retention. Per variant, N =
20,000 x BENCH_SCALE jobs are pushed with LPUSH while no daemon runs, `CONFIG RESETSTAT`, then
jobqd is started and the clock runs until every job has its final state; then INFO commandstats
(the commands scripts run inside are counted one by one) and INFO cpu:

- `base`: BASE_JOBQD (an earlier jobqd binary, the commit before unique keys), no `unique:`;
- `plain`: this jobqd, no `unique:`: the same commands per job as `base`, or unique keys cost a
  queue without them something;
- `unique`: this jobqd, `unique: {key: payload.user}`, each job a key of its own (every job takes
  and lets go of a lock: the cost of the feature, not of duplicates);
- `base-id`, `plain-id`, `unique-id`: the same with jobs that bring an id of their own (each is
  claimed: claim.lua runs for every batch);
- `unique-dup`: the same as `unique`, two jobs pushed one after the other with each key (the second is
  taken in the same batch while the first holds the key: cancelled as a duplicate, so half the
  jobs take the duplicate path).

Then jobqctl's side, no daemon: `jobqctl submit q --from FILE` of N jobs, without keys and each
with a key of its own (submit.lua calls pipelined 1,000 at a time either way; with a key the lock
is checked and taken in the same call): commands per submission.

Each daemon variant runs RUNS (3) times, alternating, and the median is reported: commands per
job (by command, inner ones included, the script calls themselves apart), Redis CPU per job
(used_cpu_sys + used_cpu_user over the run, in us: the scripts, the commands and Redis' own I/O),
the time spent inside script calls per job (commandstats' usec of EVALSHA: the scripts' work,
their inner commands included), and the wall time.

Usage: unique_bench.py   (BENCH_SCALE, RUNS, JOBQD, JOBQCTL, BASE_JOBQD from the environment).
Python: Debian's python3 with python3-redis.
"""
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import redis

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCALE = float(os.environ.get("BENCH_SCALE") or 1)
N = max(1000, int(20_000 * SCALE))
RUNS = int(os.environ.get("RUNS", "3"))
JOBQD = os.environ.get("JOBQD", os.path.join(ROOT, "build", "jobqd"))
JOBQCTL = os.environ.get("JOBQCTL", os.path.join(ROOT, "build", "jobqctl"))
BASE = os.environ.get("BASE_JOBQD", "")
PENDING = "jobq:{q}:pending"
# Commands this script sends while a run goes on (its polls): not counted as the daemon's.
OURS = {"llen", "hlen", "info", "config|resetstat", "config", "scan", "keys", "ping", "flushall"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(tmp):
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", tmp],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    r = redis.Redis(port=port)
    for _ in range(200):
        try:
            r.ping()
            return proc, port, r
        except redis.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


def config(tmp, port, unique):
    path = os.path.join(tmp, "jobqd.yaml")
    with open(path, "w") as f:
        f.write(f"""daemon: {{state_dir: {tmp}/state, log_level: warn}}
redis: {{url: "redis://127.0.0.1:{port}/0"}}
http: {{listen: off}}
handlers:
  nothing: {{type: builtin, name: noop}}
queues:
  q: {{handler: nothing, concurrency: 10, fetch_batch: 25{", unique: {key: payload.user}" if unique else ""}}}
""")
    return path


def commandstats(r):
    out = {}
    for name, v in r.info("commandstats").items():
        out[name.removeprefix("cmdstat_")] = (v["calls"], v["usec"])
    return out


def cpu_us(r):
    c = r.info("cpu")
    return (c["used_cpu_sys"] + c["used_cpu_user"]) * 1e6


def run_daemon(tmp, port, r, binary, unique, per_key, ids=False):
    r.flushall()
    jobs = [json.dumps({"payload": {"user": f"u{i // per_key}"}}) for i in range(N)]
    if ids:
        jobs = [json.dumps({"id": f"j{i}", "payload": {"user": f"u{i // per_key}"}})
                for i in range(N)]
    p = r.pipeline(transaction=False)
    for i in range(0, N, 1000):
        p.lpush(PENDING, *jobs[i:i + 1000])
    p.execute()
    cfg = config(tmp, port, unique)
    r.config_resetstat()
    cpu0 = cpu_us(r)
    t0 = time.monotonic()
    d = subprocess.Popen([binary, "-c", cfg], stdout=subprocess.DEVNULL,
                         stderr=open(os.path.join(tmp, "jobqd.log"), "a"))
    polls = 0
    try:
        while True:
            time.sleep(0.05)
            polls += 1
            if r.llen(PENDING) == 0 and all(r.hlen(k) == 0 for k in r.keys("jobq:{q}:inflight:*")):
                break
            if time.monotonic() - t0 > 600:
                raise RuntimeError("jobs not done in 10 minutes")
        wall = time.monotonic() - t0
        cpu = cpu_us(r) - cpu0
        stats = commandstats(r)
    finally:
        d.terminate()
        d.wait(30)
    per_job = {name: calls / N for name, (calls, _) in stats.items()
               if name not in OURS and not name.startswith("config")}
    script_us = sum(us for name, (_, us) in stats.items() if name in ("evalsha", "eval")) / N
    return {"wall": wall, "cpu_us": cpu / N, "script_us": script_us, "per_job": per_job}


def run_submit(tmp, port, r, keyed):
    r.flushall()
    cfg = config(tmp, port, True)
    path = os.path.join(tmp, "jobs.jsonl")
    with open(path, "w") as f:
        for i in range(N):
            job = {"payload": {"n": i}}
            if keyed:
                job["unique_key"] = f"k{i}"
            f.write(json.dumps(job) + "\n")
    r.config_resetstat()
    cpu0 = cpu_us(r)
    t0 = time.monotonic()
    subprocess.run([JOBQCTL, "-c", cfg, "submit", "q", "--from", path, "--force"], check=True,
                   stdout=subprocess.DEVNULL)
    wall = time.monotonic() - t0
    cpu = cpu_us(r) - cpu0
    stats = commandstats(r)
    per_job = {name: calls / N for name, (calls, _) in stats.items() if name not in OURS}
    script_us = sum(us for name, (_, us) in stats.items() if name in ("evalsha", "eval")) / N
    return {"wall": wall, "cpu_us": cpu / N, "script_us": script_us, "per_job": per_job}


def summary(name, runs):
    inner = {}
    for run in runs:
        for cmd, v in run["per_job"].items():
            inner.setdefault(cmd, []).append(v)
    med = {cmd: statistics.median(v) for cmd, v in inner.items()}
    scripts = sum(v for c, v in med.items() if c in ("evalsha", "eval"))
    commands = sum(v for c, v in med.items() if c not in ("evalsha", "eval", "script|load",
                                                            "script"))
    cpu = statistics.median(r["cpu_us"] for r in runs)
    script_us = statistics.median(r["script_us"] for r in runs)
    wall = statistics.median(r["wall"] for r in runs)
    detail = ", ".join(f"{c} {v:.3f}" for c, v in sorted(med.items(), key=lambda x: -x[1])
                       if v >= 0.001)
    print(f"{name:12} commands/job {commands:6.3f}  script calls/job {scripts:6.3f}  "
          f"Redis CPU/job {cpu:5.1f} us  in scripts/job {script_us:5.1f} us  wall {wall:5.2f} s"
          f"  ({N} jobs, median of {len(runs)})")
    print(f"{'':12} {detail}")
    print(f"{'':12} each run: CPU/job " + ", ".join(f"{r['cpu_us']:.1f}" for r in runs) +
          "; in scripts/job " + ", ".join(f"{r['script_us']:.1f}" for r in runs))
    sys.stdout.flush()


def main():
    tmp = tempfile.mkdtemp(prefix="unique-bench-")
    proc, port, r = start_redis(tmp)
    try:
        variants = []
        if BASE:
            variants += [("base", BASE, False, 1, False), ("base-id", BASE, False, 1, True)]
        variants += [("plain", JOBQD, False, 1, False), ("plain-id", JOBQD, False, 1, True),
                     ("unique", JOBQD, True, 1, False), ("unique-id", JOBQD, True, 1, True),
                     ("unique-dup", JOBQD, True, 2, False)]
        results = {v[0]: [] for v in variants}
        run_daemon(tmp, port, r, JOBQD, False, 1)  # untimed: Redis' dicts grown once
        for _ in range(RUNS):
            for name, binary, unique, per_key, ids in variants:
                results[name].append(run_daemon(tmp, port, r, binary, unique, per_key, ids))
        for name, *_ in variants:
            summary(name, results[name])
        subs = {"submit": [], "submit-key": []}
        for _ in range(RUNS):
            subs["submit"].append(run_submit(tmp, port, r, False))
            subs["submit-key"].append(run_submit(tmp, port, r, True))
        for name, runs in subs.items():
            summary(name, runs)
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
