#!/usr/bin/env python3
"""What `retain: {payload: true}` costs Redis: the same jobs through jobqd with it off and on.

Each round starts a redis-server of its own (`--save "" --appendonly no`) and jobqd with one
queue `q` (a builtin handler, concurrency 10, buffer 1000, `retain: {payload: X}`). The queue is
paused (`P:{q}:paused`), N jobs are pushed, Redis' stats are reset, and the queue resumed: the
window runs until the queue has nothing pending, held or claimed. Per job: Redis' main-thread
CPU (`INFO cpu`), the scripts' time and the state `HSET`'s (`INFO commandstats`), and the bytes
a state takes (`MEMORY USAGE` of 200 state keys, median) and `used_memory` grew from before the
push to the end. Rounds alternate off and on; the medians are printed for: payloads of about 200
bytes with `noop` (an empty result: a small state stays a listpack) and with `echo` (the result
is the payload: a state over `hash-max-listpack-value` already), and of 5,000 bytes (kept as
their first 4 KiB) with `noop`. With PAYLOAD_BASE=PATH, an
earlier jobqd (one without the key: the commit before it) runs in the same rotation as "base",
so that "off" can be told from what a queue paid before.

Then the settle script alone, without the daemon's noise: BUILD_DIR/lua/settle.lua called with
50,000 successes, 25 a call (as a spool job's: no held copy to read), off and on, with an empty
and with a 212-byte result; with PAYLOAD_BASE_LUA=PATH (an earlier build's lua/settle.lua) that
one too, as "base".

Usage: payload_bench.py BUILD_DIR [SCALE]   (Debian's /usr/bin/python3 with python3-redis)
"""
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import redis

build = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build")
scale = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
N = max(1000, int(20000 * scale))
ROUNDS = int(os.environ.get("PAYLOAD_ROUNDS", "3"))
BASE = os.environ.get("PAYLOAD_BASE", "")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout, what, every=0.01):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(every)


def payload_of(i, size):
    head = (f'{{"user":"u-{i:06d}","action":"resize",'
            f'"src":"s3://photos/2026/12/07/IMG_{i:06d}.jpg","sizes":[64,128,256,512],"note":"')
    return head + "n" * max(0, size - len(head) - 2) + '"}'


def cpu(r):
    info = r.info("cpu")
    return info["used_cpu_user_main_thread"] + info["used_cpu_sys_main_thread"]


def stat(r, command):
    s = r.info("commandstats").get("cmdstat_" + command, {})
    return s.get("calls", 0), s.get("usec", 0)


def one_round(root, keep, size, handler, tag):
    """keep: True or False for retain.payload; None: the PAYLOAD_BASE binary, no such key."""
    tmp = tempfile.mkdtemp(prefix=f"{tag}-", dir=root)
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL)
    r = redis.Redis(port=port, decode_responses=True)
    daemon = None
    try:
        wait_for(lambda: _up(r), 10, "redis-server")
        r.set("jobq:{q}:paused", "1")
        cfg = os.path.join(tmp, "jobqd.yaml")
        retain = "" if keep is None else f", retain: {{payload: {str(keep).lower()}}}"
        with open(cfg, "w") as f:
            f.write(f"""daemon: {{state_dir: {tmp}/state, log_level: warn}}
http: {{listen: "off"}}
redis: {{url: "redis://127.0.0.1:{port}/0"}}
handlers: {{h: {{type: builtin, name: {handler}}}}}
queues:
  q: {{handler: h, concurrency: 10, buffer: 1000{retain}}}
""")
        log = open(os.path.join(tmp, "jobqd.log"), "w")
        binary = BASE if keep is None else os.path.join(build, "jobqd")
        daemon = subprocess.Popen([binary, "-c", cfg], stdout=log,
                                  stderr=subprocess.STDOUT)
        wait_for(lambda: r.zcard("jobq:{q}:leases") >= 1 or daemon.poll() is not None, 15,
                 "jobqd's lease")
        if daemon.poll() is not None:
            raise RuntimeError("jobqd exited: " + open(log.name).read()[-2000:])
        worker = r.zrange("jobq:{q}:leases", 0, 0)[0]
        inflight = f"jobq:{{q}}:inflight:{worker}"
        ids = [f"{tag}-{i}" for i in range(N)]
        mem0 = r.info("memory")["used_memory"]
        p = r.pipeline(transaction=False)
        for i, id_ in enumerate(ids):
            p.lpush("jobq:{q}:pending", f'{{"id":"{id_}","payload":{payload_of(i, size)}}}')
            if i % 1000 == 999:
                p.execute()
        p.execute()
        time.sleep(0.5)
        r.config_resetstat()
        cpu0 = cpu(r)
        t0 = time.monotonic()
        r.delete("jobq:{q}:paused")

        def drained():
            p = r.pipeline(transaction=False)
            p.llen("jobq:{q}:pending")
            p.hlen("jobq:{q}:live")
            p.hlen(inflight)
            return sum(p.execute()) == 0

        wait_for(drained, 300, "the queue to drain", 0.02)
        wall = time.monotonic() - t0
        used = cpu(r) - cpu0
        scripts = stat(r, "evalsha")
        hsets = stat(r, "hset")
        p = r.pipeline(transaction=False)
        for id_ in ids:
            p.hget(f"jobq:{{q}}:job:{id_}", "status")
        done = sum(1 for s in p.execute() if s == "succeeded")
        if done != N:
            raise RuntimeError(f"{done} of {N} jobs succeeded")
        mem1 = r.info("memory")["used_memory"]
        sample = ids[:: max(1, N // 200)]
        usage = statistics.median(r.memory_usage(f"jobq:{{q}}:job:{i}", samples=0) for i in sample)
        kept = r.hstrlen(f"jobq:{{q}}:job:{ids[0]}", "payload")
        return {"cpu_us": used / N * 1e6, "script_us": scripts[1] / N,
                "hset_us": hsets[1] / max(1, hsets[0]), "hsets": hsets[0] / N,
                "usage": usage, "grew": (mem1 - mem0) / N, "kept": kept, "wall": wall}
    finally:
        if daemon:
            daemon.terminate()
            daemon.wait(30)
        server.terminate()
        server.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def _up(r):
    try:
        return r.ping()
    except redis.exceptions.ConnectionError:
        return False


def script_alone(root):
    tmp = tempfile.mkdtemp(prefix="script-", dir=root)
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL)
    r = redis.Redis(port=port)
    try:
        wait_for(lambda: _up(r), 10, "redis-server")
        shas = {"off": r.script_load(open(os.path.join(build, "lua/settle.lua")).read())}
        shas["on"] = shas["off"]
        if os.environ.get("PAYLOAD_BASE_LUA"):
            shas["base"] = r.script_load(open(os.environ["PAYLOAD_BASE_LUA"]).read())
        n, batch, pay = max(5000, int(50000 * scale)), 25, payload_of(1, 200)

        def calls(kind, tag, result):
            r.flushall()
            c0 = cpu(r)
            for b in range(0, n, batch):
                ids = [f"{tag}{b + j}" for j in range(batch)]
                keys = [f"jobq:{{q}}:{k}" for k in ("inflight:w", "delayed", "dead", "pending",
                                                    "live", "dead:bodies")]
                keys += [f"jobq:{{q}}:job:{i}" for i in ids]
                args = ["w.1.abc", "q", "jobq:{q}:events", "86400", "604800000",
                        "1796601360000", str(batch)]
                if kind != "base":
                    args.append("1" if kind == "on" else "")
                for i in ids:
                    args += ["", i, "1", "h", "1796601359000", "1796601359500", result, ""]
                    if kind == "on":
                        args.append(pay)
                r.evalsha(shas[kind], len(keys), *keys, *args)
            return (cpu(r) - c0) / n * 1e6

        print(f" the settle script alone, {n} successes, {batch} a call (Redis CPU per job):")
        for result in ("", pay):
            kinds = list(shas)
            got = {k: [] for k in kinds}
            for k in range(7):
                for kind in kinds if k % 2 == 0 else kinds[::-1]:
                    got[kind].append(calls(kind, f"{kind}{k}-", result))
            print(f"  result of {len(result)} bytes: " + "; ".join(
                f"{k} {statistics.median(v):.2f} us ({' / '.join(f'{x:.2f}' for x in v)})"
                for k, v in got.items()))
    finally:
        server.terminate()
        server.wait()


def show(label, rows):
    med = {k: statistics.median(x[k] for x in rows) for k in rows[0]}
    each = " / ".join(f"{x['cpu_us']:.2f}" for x in rows)
    print(f"  {label:<22} CPU {med['cpu_us']:6.2f} us/job ({each}); scripts {med['script_us']:.2f}"
          f" us/job; HSET {med['hset_us']:.2f} us x {med['hsets']:.2f}/job; state "
          f"{med['usage']:.0f} B (MEMORY USAGE), used_memory +{med['grew']:.0f} B/job; payload "
          f"field {med['kept']:.0f} B; {N / med['wall']:.0f} jobs/s")
    return med


def main():
    root = tempfile.mkdtemp(prefix="jobqd-payload-bench-")
    try:
        print(f"retain.payload: {N} jobs a round, {ROUNDS} rounds each, alternating")
        for size, handler, rounds in ((200, "noop", ROUNDS), (200, "echo", ROUNDS),
                                      (5000, "noop", max(1, ROUNDS // 2))):
            kinds = [False, True] + ([None] if BASE else [])
            rows = {kind: [] for kind in kinds}
            for k in range(rounds):
                for keep in kinds if k % 2 == 0 else kinds[::-1]:
                    rows[keep].append(one_round(root, keep, size, handler, f"r{k}-{keep}"))
            print(f" payloads of {size} bytes, handler {handler}:")
            if BASE:
                show("base (before the key)", rows[None])
            off = show("off", rows[False])
            on = show("on", rows[True])
            print(f"  {'on - off':<22} CPU {on['cpu_us'] - off['cpu_us']:+.2f} us/job; scripts "
                  f"{on['script_us'] - off['script_us']:+.2f} us/job; state "
                  f"{on['usage'] - off['usage']:+.0f} B; used_memory "
                  f"{on['grew'] - off['grew']:+.0f} B/job")
        script_alone(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
