#!/usr/bin/env python3
"""Searching the retained jobs by a substring of their payload, result or error: a scan with a
budget per call against an index kept at write time, on N = 1,000,000 x BENCH_SCALE retained jobs
of one queue (docs/search.md says what was measured and what jobqd does with it).

The data, written with `redis-cli --pipe` into a redis-server this script starts (Debian's, on a
free port of 127.0.0.1, its own temporary directory, `--save "" --appendonly no`):
- N state hashes `jobq:{q}:job:<id>` as settle.lua writes them: 95% succeeded (9 fields, `result`
  ~100 bytes of JSON, the rest of their 24 h), 5% failed (10 fields, `error` ~110 bytes and
  `error_kind`, the rest of their 7 d), finished over the last 20 hours;
- 50,000 x BENCH_SCALE jobs in `jobq:{q}:pending` (~200-byte payloads), 1,000 in `delayed`
  (retries, marked), 1,000 dead (`dead` ids, `dead:bodies` JSON);
- the index of approach B, `jobq:{q}:finished`: every finished id scored by its finished_at.
A rare needle is planted in some results, errors, payloads, retries and dead bodies, and every
whole search must find exactly those.

A. scan: a call examines at most BUDGET keys: LRANGE/ZRANGE slices of 500 over pending, delayed
   and dead (HMGET of dead:bodies), then `SCAN cursor MATCH jobq:{q}:job:* COUNT c` and, per
   SCAN, the keys' `HMGET key status result error error_kind` pipelined; the test is the client's.
B. index: the same, with `ZREVRANGE jobq:{q}:finished` slices (newest first) in place of SCAN.
scan+lua, index+lua: the same with the test inside Redis, one script call per c keys (SCAN or
   ZREVRANGE, HMGET result error, string.find): what the client's share costs Redis. Not
   something jobqd could ship as it is: the scripts touch keys not in KEYS (docs/redis-keys.md).
Budgets of 1000, 5000, 20000 keys a call, with c keys a Redis command (SCAN COUNT c, ZREVRANGE
of c, each followed by c pipelined HMGETs): c below the budget, or c = the budget.

Per call: wall time and Redis CPU (INFO cpu) over 8 calls without the slowlog; then 8 calls with
`slowlog-log-slower-than 0`: per command name the median and the longest, the commands' summed
time. The whole search (all of it, calls back to back, nothing else running): wall time, Redis
CPU, its commands over 250 us and over 1 ms (slowlog at 250 us). Then the effect on others: the
search's calls again in 8 windows of 1.5 s, each followed by 1.5 s without, while a probe process
sends LPUSH then RPOP on a key of its own, one pair every ~250 us, each timed (raw socket): its
p50/p99/max in the search's windows against the quiet ones (the same minutes: on a shared VM the
machine's other work hits both alike).
Placement on a 2-core machine: redis-server on one CPU, the probe and the searching client on the
other, the client at nice 19 (so that the probe measures Redis, not its neighbour's CPU; a control
run puts a nice-19 CPU burner beside the probe).

B's write cost: 200,000 jobs settled 25 a script call (the shape of settle.lua's successes: HSET
of 9 fields + EXPIRE per job), against the same plus ZADD to the index per job and one
ZREMRANGEBYSCORE trim per call (the index at its 1M, trimmed as fast as it grows), plus a
200-byte `payload` field in the HSET, plus one SADD per word token (the inverted index's least
cost, nothing ever removed): Redis CPU per job and used_memory per job, alternating, 3 times
(after an untimed first run: the first new keys grow Redis' dicts).

Usage: search_bench.py [SCALE]   (default: $BENCH_SCALE, else 1). Python: Debian's python3 with
python3-redis.
"""
import array
import base64
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import redis

SCALE = float(sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] != "--probe"
              else os.environ.get("BENCH_SCALE") or 1)
N = max(10_000, int(1_000_000 * SCALE))
N_PENDING = max(1_000, int(50_000 * SCALE))
N_DELAYED = 1_000
N_DEAD = 1_000
N_WRITE = max(10_000, int(200_000 * SCALE))
ROUNDS = int(os.environ.get("SEARCH_ROUNDS", "2"))
WRITE_ROUNDS = 3
NEEDLE = b"zq7-needle"
Q = "q"
JOB = f"jobq:{{{Q}}}:job:"
PENDING, DELAYED = f"jobq:{{{Q}}}:pending", f"jobq:{{{Q}}}:delayed"
DEAD, BODIES = f"jobq:{{{Q}}}:dead", f"jobq:{{{Q}}}:dead:bodies"
INDEX = f"jobq:{{{Q}}}:finished"
FIELDS = ("status", "result", "error", "error_kind")
SLICE = 500                      # LRANGE / ZRANGE slices over pending, delayed, dead
PER_CALL_CALLS = 8
SLOW_US = 250                    # the slowlog's threshold during whole searches
WINDOW = 1.5                     # s: the probed search runs in windows this long, as long apart
PROBE_WINDOWS = 8
HOUR = 3_600_000


def log(msg):
    print(f"[search] {msg}", file=sys.stderr, flush=True)


# ---- processes: every child in a session of its own, all stopped at exit ---------------------
LIVE = []


def spawn(argv, **kw):
    p = subprocess.Popen(argv, start_new_session=True, **kw)
    LIVE.append(p)
    return p


def stop(p, sig=signal.SIGTERM, grace=10.0):
    if p.poll() is None:
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
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


# ---- the probe: a process of its own -----------------------------------------------------------
def probe_main(port, out, cpu):
    """LPUSH then RPOP on a key of its own, each timed, one pair every ~250 us, while recording:
    SIGUSR2 starts a recording, SIGUSR1 ends it and writes (monotonic ns of the pair's start,
    LPUSH ns, RPOP ns) triples to OUT (via OUT.tmp); SIGTERM ends the process."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    flags = {"run": True, "rec": False, "start": False, "dump": False}
    signal.signal(signal.SIGTERM, lambda *_: flags.update(run=False))
    signal.signal(signal.SIGUSR2, lambda *_: flags.update(start=True))
    signal.signal(signal.SIGUSR1, lambda *_: flags.update(dump=True))
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    push = b"*3\r\n$5\r\nLPUSH\r\n$11\r\nprobe:{p}:l\r\n$1\r\nx\r\n"
    pop = b"*2\r\n$4\r\nRPOP\r\n$11\r\nprobe:{p}:l\r\n"

    def exact(n):
        got = b""
        while len(got) < n:
            chunk = s.recv(n - len(got))
            if not chunk:
                raise SystemExit(1)
            got += chunk
        return got

    s.sendall(b"*2\r\n$3\r\nDEL\r\n$11\r\nprobe:{p}:l\r\n")
    exact(4)
    samples = array.array("q")
    clock = time.monotonic_ns
    while flags["run"]:
        if flags["start"]:
            flags.update(start=False, rec=True)
            samples = array.array("q")
        if flags["dump"]:
            flags.update(dump=False, rec=False)
            with open(out + ".tmp", "wb") as f:
                samples.tofile(f)
            os.rename(out + ".tmp", out)
        if not flags["rec"]:
            time.sleep(0.005)
            continue
        t0 = clock()
        s.sendall(push)
        exact(4)                                   # :1\r\n
        t1 = clock()
        s.sendall(pop)
        exact(7)                                   # $1\r\nx\r\n
        t2 = clock()
        samples.extend((t0, t1 - t0, t2 - t1))
        time.sleep(0.0002)


class Probe:
    """The probe process, started once before the searching client lowers its priority (a child
    would inherit nice 19)."""

    def __init__(self, port, tmp, cpu):
        self.path = os.path.join(tmp, "probe")
        self.p = spawn([sys.executable, os.path.abspath(__file__), "--probe", str(port),
                        self.path, "" if cpu is None else str(cpu)])
        time.sleep(0.5)

    def start(self):
        os.kill(self.p.pid, signal.SIGUSR2)
        time.sleep(0.2)

    def finish(self):
        """Ends the recording: [(monotonic ns of a pair's start, LPUSH us, RPOP us)]."""
        os.kill(self.p.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 30
        while not os.path.exists(self.path):
            if self.p.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the probe did not answer")
            time.sleep(0.01)
        a = array.array("q")
        with open(self.path, "rb") as f:
            a.frombytes(f.read())
        os.unlink(self.path)
        return [(a[i], a[i + 1] / 1000, a[i + 2] / 1000) for i in range(0, len(a), 3)]


def within(samples, windows):
    """The latencies (us) of the probe's commands whose pair started within one of the windows."""
    out, k = [], 0
    windows = sorted(windows)
    for t, a, b in samples:
        while k < len(windows) and windows[k][1] < t:
            k += 1
        if k < len(windows) and windows[k][0] <= t:
            out += (a, b)
    return out


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def burner():
    """A nice-19 CPU burner beside the probe (the control run)."""
    return spawn([sys.executable, "-c",
                  "import os,sys\nos.nice(19)\nwhile True: pass"])


# ---- the data ------------------------------------------------------------------------------------
WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november "
         "oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu invoice "
         "thumbnail report export import billing customer order shipment refund resize upload "
         "download archive backup restore notify email webhook sync retry batch daily weekly").split()
ERRORS = (
    ("exit_status", "exit status 1: Traceback (most recent call last): ValueError: bad row {n} in "
                    "/srv/in/{w}-{n}.csv: column 'amount' is not a number"),
    ("timeout", "timed out after 30000 ms (SIGTERM, then SIGKILL after 5 s); last output: "
                "processing {w} batch {n} of 812"),
    ("http_status", "HTTP 503 from https://hooks.example/jobs/{w}: upstream connect error or "
                    "disconnect/reset before headers, attempt {n}"),
    ("exception", "std::runtime_error: cannot open /var/lib/app/{w}/{n}.dat: No such file or "
                  "directory (errno 2) while resizing"),
)


def resp(*parts):
    out = [b"*%d\r\n" % len(parts)]
    for p in parts:
        if isinstance(p, str):
            p = p.encode()
        elif isinstance(p, int):
            p = b"%d" % p
        out.append(b"$%d\r\n%s\r\n" % (len(p), p))
    return b"".join(out)


def new_id(rng, ms):
    return base64.b32encode(ms.to_bytes(6, "big") + rng.randbytes(10)).rstrip(b"=").decode()


def result_json(rng, i, needle):
    w1, w2, w3 = rng.choice(WORDS), rng.choice(WORDS), rng.choice(WORDS)
    note = f"{w3} {NEEDLE.decode()}" if needle else f"{w3} ok"
    return (f'{{"rows":{rng.randrange(1, 99999)},"file":"s3://data/{w1}/{w2}-{i}.csv",'
            f'"sha":"{rng.randbytes(8).hex()}","ms":{rng.randrange(1, 9999)},"note":"{note}"}}')


def payload_json(rng, i, needle):
    w1, w2, w3 = rng.choice(WORDS), rng.choice(WORDS), rng.choice(WORDS)
    tag = NEEDLE.decode() if needle else rng.choice(WORDS)
    return (f'{{"customer":{rng.randrange(1, 9999999)},"email":"{w1}.{w2}@example.com",'
            f'"file":"/srv/uploads/{w3}/{rng.randbytes(6).hex()}-{i}.png","sizes":[64,256,1024],'
            f'"tags":["{w1}","{tag}"],"note":"{w2} {w3} {rng.randbytes(12).hex()}"}}')


class Expected:
    def __init__(self):
        self.jobs = set()        # state keys whose result or error has the needle
        self.pending = 0
        self.delayed = 0
        self.dead = 0


def pipe_in(port, commands):
    """Feeds a generator of RESP bytes to `redis-cli --pipe`."""
    p = subprocess.Popen(["redis-cli", "-p", str(port), "--pipe"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    buf = []
    size = 0
    for c in commands:
        buf.append(c)
        size += len(c)
        if size > 1 << 20:
            p.stdin.write(b"".join(buf))
            buf, size = [], 0
    p.stdin.write(b"".join(buf))
    p.stdin.close()
    out = p.stdout.read().decode()
    p.wait()
    if p.returncode != 0 or "errors: 0," not in out:
        raise RuntimeError("redis-cli --pipe: " + out)


def load(r, port):
    rng = random.Random(7)
    now = int(r.time()[0]) * 1000
    span = 20 * HOUR
    exp = Expected()
    failed_ids = []
    finished = []            # (finished_at, id)

    def jobs():
        for i in range(N):
            fin = now - span + (i * span) // N
            sub = fin - rng.randrange(100, 60_000)
            start = sub + rng.randrange(0, 50)
            jid = new_id(rng, sub)
            key = JOB + jid
            finished.append((fin, jid))
            common = ("queue", Q, "handler", "thumbs", "attempts", "1",
                      "submitted_at", str(sub), "started_at", str(start),
                      "finished_at", str(fin), "worker", "host-a.4242.k3j9")
            if i % 20 == 7:
                kind, text = ERRORS[i % len(ERRORS)]
                needle = i % 20_000 == 7
                err = text.format(n=i, w=rng.choice(WORDS))
                if needle:
                    err += " " + NEEDLE.decode()
                    exp.jobs.add(key.encode())
                failed_ids.append((fin, jid, sub))
                yield resp("HSET", key, "status", "failed", *common, "error", err,
                           "error_kind", kind)
                yield resp("PEXPIRE", key, 7 * 24 * HOUR - (now - fin))
            else:
                needle = i % 10_000 == 3
                if needle:
                    exp.jobs.add(key.encode())
                yield resp("HSET", key, "status", "succeeded", *common,
                           "result", result_json(rng, i, needle))
                yield resp("PEXPIRE", key, 24 * HOUR - (now - fin))

    t = time.monotonic()
    pipe_in(port, jobs())
    log(f"{N} state hashes in {time.monotonic() - t:.1f} s")

    def queues():
        batch = []
        for i in range(N_PENDING):
            needle = i % 10_000 == 5
            exp.pending += needle
            jid = new_id(rng, now + i)
            batch.append(f'{{"id":"{jid}","payload":{payload_json(rng, i, needle)}}}')
            if len(batch) == 1000:
                yield resp("LPUSH", PENDING, *batch)
                batch = []
        if batch:
            yield resp("LPUSH", PENDING, *batch)
        args = []
        for i in range(N_DELAYED):
            needle = i % 100 == 9
            exp.delayed += needle
            jid = new_id(rng, now - 5000)
            body = (f'{{"id":"{jid}","payload":{payload_json(rng, i, needle)},'
                    f'"_jobq":"1|5|{now - 5000}|{rng.randbytes(8).hex()}|{jid}"}}')
            args += [str(now + rng.randrange(1000, 600_000)), body]
        yield resp("ZADD", DELAYED, *args)
        zargs, hargs = [], []
        for i, (fin, jid, sub) in enumerate(failed_ids[-N_DEAD:]):
            needle = i % 100 == 11
            exp.dead += needle
            zargs += [str(fin), jid]
            hargs += [jid, f'{{"id":"{jid}","payload":{payload_json(rng, i, needle)}}}']
        yield resp("ZADD", DEAD, *zargs)
        yield resp("HSET", BODIES, *hargs)

    pipe_in(port, queues())
    log(f"{N_PENDING} pending, {N_DELAYED} delayed, {N_DEAD} dead")
    return exp, finished


def build_index(r, port, finished):
    before = r.info("memory")["used_memory"]

    def cmds():
        for k in range(0, len(finished), 1000):
            args = []
            for fin, jid in finished[k:k + 1000]:
                args += [str(fin), jid]
            yield resp("ZADD", INDEX, *args)

    t = time.monotonic()
    pipe_in(port, cmds())
    took = time.monotonic() - t
    after = r.info("memory")["used_memory"]
    usage = r.execute_command("MEMORY", "USAGE", INDEX, "SAMPLES", "0")
    log(f"index of {len(finished)} ids in {took:.1f} s")
    return after - before, usage


# ---- the search --------------------------------------------------------------------------------
# The test inside Redis (an option the numbers are for, not what jobqd's scripts may do: these
# touch keys not in KEYS, which jobqd's key guard forbids and a Redis Cluster does not promise).
SCAN_LUA = """
local r = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[3], 'COUNT', ARGV[2])
local out = {}
for _, key in ipairs(r[2]) do
  local v = redis.call('HMGET', key, 'result', 'error')
  if (v[1] and string.find(v[1], ARGV[4], 1, true)) or (v[2] and string.find(v[2], ARGV[4], 1, true))
  then out[#out + 1] = key end
end
return {r[1], out}
"""
INDEX_LUA = """
local ids = redis.call('ZREVRANGE', KEYS[1], ARGV[1], ARGV[2])
local out = {}
for _, id in ipairs(ids) do
  local key = ARGV[3] .. id
  local v = redis.call('HMGET', key, 'result', 'error')
  if (v[1] and string.find(v[1], ARGV[4], 1, true)) or (v[2] and string.find(v[2], ARGV[4], 1, true))
  then out[#out + 1] = key end
end
return {#ids, out}
"""


class Search:
    """One search's cursor; call() examines at most `budget` keys (list and zset elements, dead
    bodies, state keys), `chunk` state keys a Redis command."""

    def __init__(self, r, approach, budget, chunk):
        self.r, self.approach, self.budget, self.chunk = r, approach, budget, chunk
        self.phase, self.pos, self.cursor = 0, 0, 0
        self.done = False
        self.found = set()
        self.pending = self.delayed = self.dead = 0
        self.calls = 0
        if approach.endswith("+lua"):
            self.sha = (r.script_load(SCAN_LUA), r.script_load(INDEX_LUA))

    def hash_phase(self):
        self.phase, self.pos, self.cursor = 3, 0, 0
        return self

    def call(self):
        r, left = self.r, self.budget
        self.calls += 1
        while left > 0 and not self.done:
            if self.phase in (0, 1, 2):
                n = min(SLICE, left)
                a, b = self.pos, self.pos + n - 1
                if self.phase == 0:
                    items = r.lrange(PENDING, a, b)
                elif self.phase == 1:
                    items = r.zrange(DELAYED, a, b)
                else:
                    ids = r.zrevrange(DEAD, a, b)
                    items = [x for x in r.hmget(BODIES, ids) if x] if ids else []
                hits = sum(1 for x in items if NEEDLE in x)
                if self.phase == 0:
                    self.pending += hits
                elif self.phase == 1:
                    self.delayed += hits
                else:
                    self.dead += hits
                left -= n
                self.pos += n
                got = len(ids) if self.phase == 2 else len(items)
                if got < n:
                    self.phase, self.pos = self.phase + 1, 0
                continue
            n = min(self.chunk, left)
            left -= n
            if self.approach == "scan+lua":
                cur, keys = r.evalsha(self.sha[0], 0, self.cursor, n, JOB + "*", NEEDLE)
                self.cursor = int(cur)
                self.done = self.cursor == 0
                self.found.update(keys)
                continue
            if self.approach == "index+lua":
                got, keys = r.evalsha(self.sha[1], 1, INDEX, self.pos, self.pos + n - 1, JOB,
                                      NEEDLE)
                self.pos += n
                self.done = got < n
                self.found.update(keys)
                continue
            if self.approach == "scan":
                self.cursor, keys = r.scan(self.cursor, match=JOB + "*", count=n)
                if self.cursor == 0:
                    self.done = True
            else:
                ids = r.zrevrange(INDEX, self.pos, self.pos + n - 1)
                self.pos += n
                if len(ids) < n:
                    self.done = True
                keys = [JOB.encode() + i for i in ids]
            for k in range(0, len(keys), self.chunk):
                part = keys[k:k + self.chunk]
                p = r.pipeline(transaction=False)
                for key in part:
                    p.hmget(key, *FIELDS)
                for key, (status, result, error, kind) in zip(part, p.execute()):
                    if status is None:
                        continue          # expired meanwhile (the index would ZREM it)
                    if (result and NEEDLE in result) or (error and NEEDLE in error):
                        self.found.add(key)


def cpu_s(ctl):
    c = ctl.info("cpu")
    return float(c["used_cpu_user"]) + float(c["used_cpu_sys"])


def slowlog(ctl, name):
    """Our client's commands in the slowlog: [(duration us, command name)]."""
    out = []
    for e in ctl.execute_command("SLOWLOG", "GET", "-1"):
        if len(e) >= 6 and e[5] == name.encode():
            out.append((int(e[2]), e[3][0].upper()))
    return out


def per_call(ctl, r, approach, budget, chunk):
    """8 calls from the start of the state keys (slowlog off: wall ms, Redis CPU ms), then 8 with
    every command in the slowlog: per command name the median and the longest (the slowlog's time
    is wall time: on a shared VM a command the kernel preempts looks long, hence the median), and
    the calls' summed command time. A search that ends (small scales) starts again."""
    ctl.config_set("slowlog-log-slower-than", 10_000_000)
    s = Search(r, approach, budget, chunk).hash_phase()
    walls, cpus = [], []
    for _ in range(PER_CALL_CALLS):
        if s.done:
            s = Search(r, approach, budget, chunk).hash_phase()
        c0 = cpu_s(ctl)
        t0 = time.perf_counter()
        s.call()
        walls.append((time.perf_counter() - t0) * 1000)
        cpus.append((cpu_s(ctl) - c0) * 1000)
    ctl.config_set("slowlog-max-len", 4 * budget + 1000)
    ctl.config_set("slowlog-log-slower-than", 0)
    s = Search(r, approach, budget, chunk).hash_phase()
    by, busy = {}, []
    for _ in range(PER_CALL_CALLS):
        if s.done:
            s = Search(r, approach, budget, chunk).hash_phase()
        ctl.slowlog_reset()
        s.call()
        entries = slowlog(ctl, "search")
        for d, name in entries:
            by.setdefault(name.decode(), []).append(d)
        busy.append(sum(d for d, _ in entries) / 1000)
    ctl.config_set("slowlog-log-slower-than", 10_000_000)
    ctl.slowlog_reset()
    cmds = {k: (statistics.median(v), max(v), len(v)) for k, v in by.items()}
    heavy = max(cmds, key=lambda k: cmds[k][0])
    return {"wall": statistics.median(walls), "cpu": statistics.median(cpus),
            "cmds": cmds, "heavy": (heavy,) + cmds[heavy],
            "longest": max(v[1] for v in cmds.values()), "busy": statistics.median(busy)}


def whole(ctl, r, approach, budget, chunk, exp):
    """The whole search, calls back to back, nothing else running: its time, Redis' CPU, and its
    commands over SLOW_US (slowlog)."""
    ctl.config_set("slowlog-max-len", 100_000)
    ctl.config_set("slowlog-log-slower-than", SLOW_US)
    ctl.slowlog_reset()
    s = Search(r, approach, budget, chunk)
    c0, t0 = cpu_s(ctl), time.monotonic()
    while not s.done:
        s.call()
    t1, c1 = time.monotonic(), cpu_s(ctl)
    slow = slowlog(ctl, "search")
    ctl.config_set("slowlog-log-slower-than", 10_000_000)
    ctl.slowlog_reset()
    ok = (s.found == exp.jobs and s.pending == exp.pending and s.delayed == exp.delayed
          and s.dead == exp.dead)
    if not ok:
        log(f"MISMATCH {approach} b={budget}: found {len(s.found)}/{len(exp.jobs)} jobs, "
            f"{s.pending}/{exp.pending} pending, {s.delayed}/{exp.delayed} delayed, "
            f"{s.dead}/{exp.dead} dead")
    return {"secs": t1 - t0, "cpu": c1 - c0, "calls": s.calls, "ok": ok,
            "over": len(slow), "over1ms": sum(1 for d, _ in slow if d >= 1000),
            "slowest": max(slow) if slow else None}


def probed(r, approach, budget, chunk, probe):
    """The search again (from the start, the state keys' part), in PROBE_WINDOWS windows of
    WINDOW s of calls back to back, each followed by as long with none, the probe running
    throughout: its latencies in the search's windows against those in the quiet ones (the same
    minutes, so that the machine's other work hits both alike)."""
    s = Search(r, approach, budget, chunk).hash_phase()
    probe.start()
    on, off = [], []
    for _ in range(PROBE_WINDOWS):
        if s.done:
            s = Search(r, approach, budget, chunk).hash_phase()
        a = time.monotonic_ns()
        while not s.done and time.monotonic_ns() - a < WINDOW * 1e9:
            s.call()
        b = time.monotonic_ns()
        time.sleep(WINDOW)
        on.append((a, b))
        off.append((b, time.monotonic_ns()))
    samples = probe.finish()
    lat_on, lat_off = within(samples, on), within(samples, off)
    return {"p50": pct(lat_on, 50), "p99": pct(lat_on, 99), "max": max(lat_on, default=0),
            "q50": pct(lat_off, 50), "q99": pct(lat_off, 99), "qmax": max(lat_off, default=0),
            "n": len(lat_on)}


def probe_alone(probe, cpu, secs, with_burner=False):
    b = burner() if with_burner else None
    if b is not None and cpu is not None:
        os.sched_setaffinity(b.pid, {cpu})
    probe.start()
    time.sleep(secs)
    lat = within(probe.finish(), [(0, 1 << 62)])
    if b is not None:
        stop(b)
    return {"p50": pct(lat, 50), "p99": pct(lat, 99), "max": max(lat), "samples": len(lat)}


def phase_slices(ctl, r):
    """The longest LRANGE / ZRANGE / HMGET of dead:bodies (slices of 500) over the whole of
    pending, delayed and dead, every command in the slowlog."""
    ctl.config_set("slowlog-max-len", 10_000)
    ctl.config_set("slowlog-log-slower-than", 0)
    ctl.slowlog_reset()
    s = Search(r, "scan", SLICE, SLICE)
    while s.phase < 3:
        s.call()
    entries = slowlog(ctl, "search")
    ctl.config_set("slowlog-log-slower-than", 10_000_000)
    ctl.slowlog_reset()
    by = {}
    for d, name in entries:
        by.setdefault(name.decode(), []).append(d)
    return {k: (max(v), statistics.median(v), len(v)) for k, v in by.items()}


# ---- B's write cost ----------------------------------------------------------------------------
SETTLE = """
-- KEYS: index, then each job's state key; ARGV: mode, first finished_at, spacing (ms), keep (s),
-- retention (ms), then per job: id, result, payload, tokens (space-separated)
local mode, t0, dt, keep, ret = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4],
  tonumber(ARGV[5])
local last = t0
for k = 2, #KEYS do
  local a = 6 + (k - 2) * 4
  local id, fin = ARGV[a], t0 + (k - 2) * dt
  last = fin
  local fins = string.format('%d', fin)
  if mode == 'payload' then
    redis.call('HSET', KEYS[k], 'status', 'succeeded', 'queue', 'q', 'handler', 'thumbs',
      'attempts', '1', 'submitted_at', fins, 'started_at', fins, 'finished_at', fins,
      'worker', 'host-a.4242.k3j9', 'result', ARGV[a + 1], 'payload', ARGV[a + 2])
  else
    redis.call('HSET', KEYS[k], 'status', 'succeeded', 'queue', 'q', 'handler', 'thumbs',
      'attempts', '1', 'submitted_at', fins, 'started_at', fins, 'finished_at', fins,
      'worker', 'host-a.4242.k3j9', 'result', ARGV[a + 1])
  end
  redis.call('EXPIRE', KEYS[k], keep)
  if mode == 'index' then
    redis.call('ZADD', KEYS[1], fins, id)
  elseif mode == 'tokens' then
    for tok in string.gmatch(ARGV[a + 3], '%S+') do
      redis.call('SADD', 'jobq:{q}:tok:' .. tok, id)
    end
  end
end
if mode == 'index' then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('(%d', last - ret))
end
return #KEYS - 1
"""
BATCH = 25


def tokens_of(text):
    out, word = [], []
    for ch in text:
        if ch.isalnum():
            word.append(ch)
        elif word:
            out.append("".join(word).lower())
            word = []
    if word:
        out.append("".join(word).lower())
    return sorted(set(t for t in out if len(t) >= 2))


def write_run(ctl, r, mode, finished_span, rnd):
    rng = random.Random(100 + rnd)
    sha = r.script_load(SETTLE)
    latest = ctl.zrevrange(INDEX, 0, 0, withscores=True)
    t0 = int(latest[0][1]) + 1 if latest else 0
    spacing = finished_span / N                     # the index grows as fast as it is trimmed
    jobs = []
    for i in range(N_WRITE):
        jid = new_id(rng, t0 + i)
        res = result_json(rng, i, False)
        pay = payload_json(rng, i, False) if mode == "payload" else ""
        toks = " ".join(tokens_of(res)) if mode == "tokens" else ""
        jobs.append((jid, res, pay, toks))
    calls = []
    for k in range(0, N_WRITE, BATCH):
        part = jobs[k:k + BATCH]
        keys = [INDEX] + [JOB + j[0] for j in part]
        args = [mode, str(t0 + int(k * spacing)), f"{spacing:.3f}", "86400",
                str(finished_span)]
        for j in part:
            args += list(j)
        calls.append((keys, args))
    ctl.config_resetstat()
    mem0 = ctl.info("memory")["used_memory"]
    c0 = cpu_s(ctl)
    t = time.monotonic()
    for k in range(0, len(calls), 8):           # a few calls in flight, as settle's one writer
        p = r.pipeline(transaction=False)
        for keys, args in calls[k:k + 8]:
            p.evalsha(sha, len(keys), *keys, *args)
        p.execute()
    secs = time.monotonic() - t
    c1 = cpu_s(ctl)
    mem1 = ctl.info("memory")["used_memory"]
    stats = ctl.info("commandstats")
    ntok = sum(len(j[3].split()) for j in jobs)
    # Untimed: the run's state keys and token sets go again.
    p = r.pipeline(transaction=False)
    for jid, _, _, _ in jobs:
        p.unlink(JOB + jid)
    p.execute()
    if mode == "tokens":
        p = r.pipeline(transaction=False)
        for t_ in set(t for j in jobs for t in j[3].split()):
            p.unlink(f"jobq:{{{Q}}}:tok:" + t_)
        p.execute()

    def upc(name):
        v = stats.get("cmdstat_" + name)
        return float(v["usec_per_call"]) if v else None

    return {"cpu_us": (c1 - c0) / N_WRITE * 1e6, "mem": (mem1 - mem0) / N_WRITE, "secs": secs,
            "tokens": ntok / N_WRITE, "hset": upc("hset"), "expire": upc("expire"),
            "zadd": upc("zadd"), "trim": upc("zremrangebyscore"), "sadd": upc("sadd"),
            "evalsha": upc("evalsha")}


# ---- main --------------------------------------------------------------------------------------
CONFIGS = {
    "scan": [(1000, 1000), (5000, 250), (5000, 500), (20000, 1000), (20000, 20000)],
    "index": [(1000, 1000), (5000, 1000), (20000, 1000), (20000, 20000)],
    "scan+lua": [(5000, 250)],
    "index+lua": [(5000, 250)],
}


def fmt(x, nd=1):
    return "-" if x is None else f"{x:.{nd}f}"


def two(vals, nd=1):
    return " / ".join(fmt(v, nd) for v in vals)


def main():
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    cpus = sorted(os.sched_getaffinity(0))
    redis_cpu = cpus[0] if len(cpus) >= 2 else None
    client_cpu = cpus[1] if len(cpus) >= 2 else None
    tmp = tempfile.mkdtemp(prefix="jobqd-search-")
    port = free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", tmp,
            "--save", "", "--appendonly", "no", "--daemonize", "no",
            "--logfile", os.path.join(tmp, "redis.log")]
    if redis_cpu is not None:
        argv = ["taskset", "-c", str(redis_cpu)] + argv
    srv = spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ctl = redis.Redis(port=port)
        for _ in range(200):
            if srv.poll() is not None:
                with open(os.path.join(tmp, "redis.log")) as f:
                    raise RuntimeError("redis-server exited:\n" + f.read()[-2000:])
            try:
                ctl.ping()
                break
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
        version = ctl.info("server")["redis_version"]
        log(f"redis-server {version} on port {port}, N = {N}, scale {SCALE}")
        mem0 = ctl.info("memory")["used_memory"]
        exp, finished = load(ctl, port)
        mem_data = ctl.info("memory")["used_memory"] - mem0
        sample_key = JOB + finished[1][1]
        hash_usage = ctl.execute_command("MEMORY", "USAGE", sample_key)
        hash_enc = ctl.object("encoding", sample_key)
        index_mem, index_usage = build_index(ctl, port, finished)
        del finished
        r = redis.Redis(port=port, client_name="search")
        probe = Probe(port, tmp, client_cpu)
        if client_cpu is not None:
            os.sched_setaffinity(0, {client_cpu})
        os.nice(19)

        slices = phase_slices(ctl, r)
        base, ctrl = [], []
        rows = {}
        for rnd in range(ROUNDS):
            base.append(probe_alone(probe, client_cpu, 8))
            ctrl.append(probe_alone(probe, client_cpu, 5, with_burner=True))
            for approach, configs in CONFIGS.items():
                for budget, chunk in configs:
                    pc = per_call(ctl, r, approach, budget, chunk)
                    w = whole(ctl, r, approach, budget, chunk, exp)
                    w.update(probed(r, approach, budget, chunk, probe))
                    rows.setdefault((approach, budget, chunk), []).append((pc, w))
                    log(f"round {rnd + 1} {approach:5} b={budget:5} c={chunk:5}: call "
                        f"{pc['wall']:.1f} ms (Redis {pc['busy']:.2f} ms, "
                        + ", ".join(f"{k} {v[0]:.0f}/{v[1]}us" for k, v in pc["cmds"].items())
                        + "); whole "
                        f"{w['secs']:.1f} s, Redis CPU {w['cpu']:.2f} s, {w['calls']} calls, "
                        f"probe p99 {w['p99']:.0f} us (quiet {w['q99']:.0f}), "
                        f">{SLOW_US}us: {w['over']}, >1ms: {w['over1ms']}, "
                        f"ok={w['ok']}")
        base.append(probe_alone(probe, client_cpu, 8))

        writes = {}
        span = 20 * HOUR
        # Untimed: the first 200,000 new keys grow the main and expires dicts (a rehash, and
        # their tables' memory), which would be charged to whichever run came first.
        write_run(ctl, r, "base", span, 99)
        for rnd in range(WRITE_ROUNDS):
            for mode in ("base", "index", "payload", "tokens"):
                wr = write_run(ctl, r, mode, span, rnd)
                writes.setdefault(mode, []).append(wr)
                log(f"write round {rnd + 1} {mode:8}: {wr['cpu_us']:.2f} us Redis CPU/job, "
                    f"{wr['mem']:.0f} B/job, zadd {wr['zadd']} trim {wr['trim']} sadd "
                    f"{wr['sadd']} us/call")
    finally:
        stop_all()
        shutil.rmtree(tmp, ignore_errors=True)

    # ---- the report ----
    print(f"\n== search of retained jobs: N = {N:,} state hashes ({N // 20:,} failed), "
          f"{N_PENDING:,} pending, {N_DELAYED:,} delayed, {N_DEAD:,} dead; redis-server "
          f"{version}, {len(cpus)} CPUs; {ROUNDS} rounds shown as a / b")
    print(f"data: used_memory {mem_data / 2**20:.0f} MiB; a state hash {hash_usage} B "
          f"({hash_enc.decode()}); index {INDEX}: used_memory +{index_mem / 2**20:.1f} MiB, "
          f"MEMORY USAGE {index_usage / 2**20:.1f} MiB ({index_mem / N:.0f} B/id)")
    print("pending/delayed/dead slices of 500 (longest / median us, commands): " +
          ", ".join(f"{k} {v[0]}/{v[1]:.0f} ({v[2]})" for k, v in sorted(slices.items())))
    print("probe alone, 8 s (p50/p99/max us): " +
          "; ".join(f"{b['p50']:.0f}/{b['p99']:.0f}/{b['max']:.0f}" for b in base) +
          "   beside a nice-19 CPU burner, 5 s: " +
          "; ".join(f"{b['p50']:.0f}/{b['p99']:.0f}/{b['max']:.0f}" for b in ctrl))
    print("\ncall: the median of 8 calls from the start of the state keys; call Redis ms: the "
          "summed time of its commands (slowlog); call CPU ms: Redis' CPU (INFO cpu); heaviest "
          "cmd: the command name with the highest median time in those calls (its longest); "
          "whole: the whole search, calls back to back, alone: its time, Redis' CPU, its "
          f"commands over {SLOW_US} us / over 1 ms (slowlog); probe: the search's calls again "
          f"in {PROBE_WINDOWS} windows of {WINDOW} s, each followed by {WINDOW} s without, the "
          "probe's LPUSH and RPOP latencies in the search's windows, and (in brackets) in the "
          "quiet ones")
    hdr = ("approach", "budget", "keys/cmd", "call wall ms", "call Redis ms", "call CPU ms",
           "heaviest cmd: median us (max)", "whole s", "whole CPU s", "calls",
           f"slow cmds >{SLOW_US}us / >1ms", "probe p50 us (quiet)", "probe p99 us (quiet)",
           "probe max us (quiet)", "found all")
    print("\n| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for (approach, budget, chunk), res in rows.items():
        pcs = [x[0] for x in res]
        ws = [x[1] for x in res]
        longest = " / ".join(f"{p['heavy'][0]} {p['heavy'][1]:.0f} ({p['heavy'][2]})"
                             for p in pcs)

        slow = " / ".join(f"{w['over']}/{w['over1ms']}" for w in ws)

        def pq(a, b):
            return " / ".join(f"{w[a]:.0f} ({w[b]:.0f})" for w in ws)

        print(f"| {approach} | {budget} | {chunk} | {two([p['wall'] for p in pcs])} | "
              f"{two([p['busy'] for p in pcs], 2)} | {two([p['cpu'] for p in pcs])} | "
              f"{longest} | {two([w['secs'] for w in ws])} | {two([w['cpu'] for w in ws], 2)} | "
              f"{ws[0]['calls']} | {slow} | "
              f"{pq('p50', 'q50')} | {pq('p99', 'q99')} | {pq('max', 'qmax')} | "
              f"{all(w['ok'] for w in ws)} |")
    print(f"\nwrite cost, {N_WRITE:,} jobs settled {BATCH} a script call, the index at {N:,}, "
          f"{WRITE_ROUNDS} rounds alternating (Redis CPU us/job, used_memory B/job, commandstats "
          "us/call; extra: the median of each round's difference to that round's base)")
    print("| per job | Redis CPU us/job | extra vs base | memory B/job | us/call |")
    print("|---|---|---|---|---|")
    labels = {"base": "HSET 9 fields + EXPIRE (settle's success)",
              "index": "+ ZADD finished, ZREMRANGEBYSCORE per 25",
              "payload": "+ a 200-byte payload field in the HSET",
              "tokens": "+ SADD per word token"}
    for mode, ws in writes.items():
        cpu = [w["cpu_us"] for w in ws]
        mem = [w["mem"] for w in ws]
        # Each round's extra against that round's base, the median of the rounds.
        extra = statistics.median(w["cpu_us"] - b["cpu_us"] for w, b in zip(ws, writes["base"]))
        xmem = statistics.median(w["mem"] - b["mem"] for w, b in zip(ws, writes["base"]))
        upc = {"base": f"hset {two([w['hset'] for w in ws], 2)}, expire "
                       f"{two([w['expire'] for w in ws], 2)}",
               "index": f"zadd {two([w['zadd'] for w in ws], 2)}, zremrangebyscore "
                        f"{two([w['trim'] for w in ws], 2)}",
               "payload": f"hset {two([w['hset'] for w in ws], 2)}",
               "tokens": f"sadd {two([w['sadd'] for w in ws], 2)} "
                         f"({ws[0]['tokens']:.1f} tokens/job)"}[mode]
        print(f"| {labels[mode]} | {two(cpu, 2)} | {extra:+.2f} | {two(mem, 0)} "
              f"(extra {xmem:+.0f}) | {upc} |")
    ok = all(w["ok"] for res in rows.values() for _, w in res)
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--probe":
        probe_main(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]) if sys.argv[4] else None)
        sys.exit(0)
    try:
        sys.exit(main())
    finally:
        stop_all()
