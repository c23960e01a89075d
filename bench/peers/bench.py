#!/usr/bin/env python3
"""jobqd beside its peers (bee-queue, BullMQ, RQ) on one private redis-server: bench/run's last
section. Usage: bench.py BUILD_DIR [SCALE]. What each figure is and how it is measured:
bench/README.md.

Environment:
  BENCH_RUNS=3              runs per figure (median of them; latency pools their samples)
  BENCH_PEERS=throughput,rq,rss,latency,tls,replicas,cluster,shards,ceiling
                            the sections to run (all by default)
  BENCH_JOBQD_VARIANT=auto  also measure "jobqd (succeeded: 0)", whose queues get
                            BENCH_JOBQD_VARIANT_KEYS (default `retain: {succeeded: 0}`): `auto`
                            (the default) does whenever build/jobqd accepts those keys
                            (--check-config), 1 says why not when it does not, 0 never does
  BENCH_VERBOSE=1           per-run figures and each system's commands by name on stderr
"""
import collections
import json
import math
import os
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

import redis
from redis.crc import key_slot

HERE = os.path.dirname(os.path.abspath(__file__))
NODE = shutil.which("node") or "node"
VERBOSE = os.environ.get("BENCH_VERBOSE") == "1"
POLL = 0.01  # seconds between completion polls
PROBE_WARMUP = 5000  # samples every latency probe takes, idle, before it reports any (common.js)


class RunFailed(Exception):
    pass


def log(msg):
    print(f"[peers] {msg}", file=sys.stderr, flush=True)


# ---- processes -------------------------------------------------------------------------------
# Every child runs in a session of its own, so stopping it stops whatever it started; all are
# stopped at exit, however the harness ends.
LIVE = []


def spawn(argv, **kw):
    p = subprocess.Popen(argv, start_new_session=True, **kw)
    LIVE.append(p)
    return p


def stop(p, grace=10.0, sig=signal.SIGTERM):
    if p.poll() is None:
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait(timeout=10)
    else:
        # Anything the child left behind in its session.
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if p in LIVE:
        LIVE.remove(p)


def stop_all():
    for p in list(LIVE):
        try:
            stop(p, grace=2.0)
        except Exception:
            pass


def on_signal(signum, _frame):
    raise SystemExit(128 + signum)


def descendants(pid):
    children = collections.defaultdict(list)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children[ppid].append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds_of(pids):
    """CPU the processes have used so far: each thread's time on a CPU from
    /proc/PID/task/TID/schedstat (nanoseconds; /proc/PID/stat counts 10 ms ticks, a third of a
    microsecond per job over 30,000 jobs: the size of the differences measured), else stat's."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            ns = 0
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    ns += int(f.read().split()[0])
            total += ns / 1e9
            continue
        except (OSError, IndexError, ValueError):
            pass
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
        except (OSError, IndexError, ValueError):
            pass
    return total


def make_test_certs(directory):
    """A CA and a certificate for localhost it signed, in `directory`; returns the CA's path."""
    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-days", "2", "-subj", "/CN=bench-ca", "-keyout", "ca.key",
            "-out", "ca.crt")
    openssl("req", "-new", *ec, "-subj", "/CN=localhost", "-keyout", "server.key",
            "-out", "server.csr")
    with open(os.path.join(directory, "san.cnf"), "w") as f:
        f.write("subjectAltName = DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "san.cnf", "-out", "server.crt")
    return os.path.join(directory, "ca.crt")


def vm_hwm_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return
        if time.monotonic() > deadline:
            raise RunFailed(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(POLL)


def tail(path, n=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


# ---- the private redis-servers ---------------------------------------------------------------
class RedisNode:
    """A redis-server of the harness's on a free port of 127.0.0.1 (another if that one was taken
    meanwhile), `--save "" --appendonly no` and the arguments `extra(port)` returns, its log in
    `directory`. What drain() reads of a Redis: its nodes (this one), the node of a queue's keys
    (this one), and each node's CPU and commandstats."""

    def __init__(self, directory, extra=lambda port: []):
        self.dir = directory
        log = os.path.join(directory, "redis.log")
        for attempt in range(5):
            self.port = free_port()
            self.proc = spawn(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                 *extra(self.port),
                 "--dir", directory, "--save", "", "--appendonly", "no",
                 "--daemonize", "no", "--logfile", log],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.ctl = redis.Redis(port=self.port, decode_responses=True)
            try:
                wait_for(self._up, 10, "redis-server")
                break
            except RunFailed:
                stop(self.proc)
                if attempt == 4:
                    raise RunFailed("redis-server did not start:\n" + tail(log))
        self.version = self.ctl.info("server")["redis_version"]
        self.nodes = [self]

    def _up(self):
        if self.proc.poll() is not None:
            raise RunFailed("redis-server exited")
        try:
            return self.ctl.ping()
        except redis.exceptions.ConnectionError:
            return False

    def node_of(self, queue):
        return self

    def reset(self):
        self.ctl.flushall(asynchronous=False)
        self.ctl.script_flush()

    def cpu_seconds(self):
        """Redis' own CPU so far (user + system, the main thread's and its helpers')."""
        c = self.ctl.info("cpu")
        return float(c["used_cpu_user"]) + float(c["used_cpu_sys"])

    def commandstats(self):
        stats = {}
        for key, value in self.ctl.info("commandstats").items():
            if key.startswith("cmdstat_"):
                stats[key[len("cmdstat_"):]] = int(value["calls"])
        return stats


class RedisServer(RedisNode):
    """One redis-server for every system: same binary, same config, flushed between runs."""

    def __init__(self, tmp):
        directory = os.path.join(tmp, "redis")
        os.makedirs(directory)
        # A TLS port beside the plain one (the tls section): a CA and a server certificate for
        # localhost, made here.
        self.ca = make_test_certs(directory)
        super().__init__(directory, self._tls_args)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.tls_url = f"rediss://localhost:{self.tls_port}/0"

    def _tls_args(self, port):
        del port
        self.tls_port = free_port()
        return ["--tls-port", str(self.tls_port),
                "--tls-cert-file", os.path.join(self.dir, "server.crt"),
                "--tls-key-file", os.path.join(self.dir, "server.key"),
                "--tls-ca-cert-file", self.ca, "--tls-auth-clients", "no"]


class RedisCluster:
    """The primaries of a Redis Cluster on this machine, no replicas (made as
    tests/support/cluster.hpp makes one): the 16384 slots split evenly, a queue's keys
    (jobq:{Q}:...) on the primary of its tag's slot. drain() measures it as it does one Redis,
    summed over the nodes."""

    SLOTS = 16384

    def __init__(self, directory, primaries=3):
        self.bus = {}  # port -> cluster bus port
        self.nodes = []
        for i in range(primaries):
            node_dir = os.path.join(directory, f"node{i}")
            os.makedirs(node_dir)
            self.nodes.append(RedisNode(node_dir, self._cluster_args))
        self.version = self.nodes[0].version
        self.slots = [(i * self.SLOTS // primaries, (i + 1) * self.SLOTS // primaries - 1)
                      for i in range(primaries)]
        # Each primary its config epoch before it meets the others (what redis-cli --cluster
        # create does), so none has to settle a collision.
        for i, (node, (first, last)) in enumerate(zip(self.nodes, self.slots)):
            node.ctl.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
            node.ctl.execute_command("CLUSTER", "SET-CONFIG-EPOCH", i + 1)
        first = self.nodes[0]
        for node in self.nodes[1:]:
            node.ctl.execute_command("CLUSTER", "MEET", "127.0.0.1", first.port,
                                     self.bus[first.port])
        wait_for(self._formed, 30, "the cluster to form")
        # Two seeds, as an operator would write it: jobqd asks either for the slot map.
        self.url = "redis-cluster://" + ",".join(f"127.0.0.1:{node.port}"
                                                 for node in self.nodes[:2])

    def _cluster_args(self, port):
        # A bus port of its own: the default, port + 10000, is past 65535 for a high free port.
        self.bus[port] = free_port()
        return ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf",
                "--cluster-port", str(self.bus[port]), "--cluster-node-timeout", "5000"]

    def _formed(self):
        """Every node says the cluster is ok and knows every other, no handshake pending."""
        try:
            for node in self.nodes:
                if node.proc.poll() is not None:
                    raise RunFailed(f"cluster node {node.port} exited:\n"
                                    + tail(os.path.join(node.dir, "redis.log")))
                known = node.ctl.execute_command("CLUSTER", "NODES").strip().splitlines()
                if ("cluster_state:ok" not in node.ctl.execute_command("CLUSTER", "INFO")
                        or len(known) != len(self.nodes) or any("handshake" in k for k in known)):
                    return False
        except redis.exceptions.RedisError:
            return False
        return True

    def node_of(self, queue):
        """The primary holding queue's keys: its slot is in that node's range, and no slot
        moves."""
        slot = key_slot(f"jobq:{{{queue}}}:pending".encode())
        return next(node for node, (first, last) in zip(self.nodes, self.slots)
                    if first <= slot <= last)

    def reset(self):
        for node in self.nodes:
            node.reset()

    def stop(self):
        for node in self.nodes:
            stop(node.proc)


class Poller:
    """The completion poll: its own connection, every command it sends counted by name, so
    they can be taken out of Redis' commandstats."""

    def __init__(self, port):
        self.r = redis.Redis(port=port, decode_responses=True, single_connection_client=True)
        self.r.ping()  # connects before the stats are reset
        self.counts = collections.Counter()

    def call(self, *args):
        self.counts[args[0].lower()] += 1
        return self.r.execute_command(*args)

    def close(self):
        self.r.close()


# ---- the systems -----------------------------------------------------------------------------
class System:
    name = "?"
    exits_when_done = False  # RQ's burst workers exit once the queue is empty
    pending_key = "?"  # the list pre-filled jobs wait in

    def pending(self, queue="q"):
        return self.server.node_of(queue).ctl.llen(self.pending_key.format(q=queue))

    def __init__(self, env):
        self.env = env
        self.server = env.redis  # the Redis it runs on: what drain() fills, polls and measures

    def logfile(self, tag):
        self.env.runs += 1
        return os.path.join(self.env.tmp, f"{self.env.runs:03d}-{tag}.log")

    def ready(self, workers, logs):
        return all(tail(path).find("ready") >= 0 for path in logs)

    def check(self, queue, n):
        """After a run: a non-empty string if the run went wrong."""
        return ""

    def remaining_in(self, polls, queue="q"):
        """Jobs not finished yet, with a poller per Redis node (`polls`: port -> Poller)."""
        return self.remaining(polls[self.server.node_of(queue).port], queue)


class Jobqd(System):
    name = "jobqd"
    pending_key = "jobq:{{{q}}}:pending"

    def __init__(self, env, label="jobqd", extra_queue_keys="", binary=None, tls=False,
                 redis_keys="", server=None):
        super().__init__(env)
        self.server = server or env.redis  # or a RedisCluster (the cluster section)
        self.name = label
        self.extra = extra_queue_keys
        self.binary = binary or env.jobqd
        self.tls = tls
        self.redis_keys = redis_keys  # more keys of the redis section ("wait_replicas: 1")

    def yaml(self, state_dir, queues):
        """The one place the benchmark's jobqd config is written. `queues`: [(name, concurrency)];
        buffer is max(100, 2 x concurrency); the variant's keys (`retain: ...`) go to every
        queue."""
        # The URL quoted: a cluster's lists its seeds with commas, which end a plain scalar in a
        # flow mapping.
        lines = [
            f"daemon: {{state_dir: {state_dir}, log_level: warn}}",
            (f'redis: {{url: "{self.server.tls_url}", tls: {{ca_file: {self.server.ca}}}'
             if self.tls else f'redis: {{url: "{self.server.url}"')
            + (f", {self.redis_keys}}}" if self.redis_keys else "}"),
            f"http: {{listen: 127.0.0.1:{free_port()}}}",
            "handlers: {nothing: {type: builtin, name: noop}}",
            "queues:",
        ]
        for name, concurrency in queues:
            keys = f"handler: nothing, concurrency: {concurrency}, buffer: {max(100, 2 * concurrency)}"
            if self.extra:
                keys += f", {self.extra}"
            lines.append(f"  {name}: {{{keys}}}")
        return "\n".join(lines) + "\n"

    def write_config(self, queues):
        self.env.runs += 1
        base = os.path.join(self.env.tmp, f"{self.env.runs:03d}-jobqd")
        path = base + ".yaml"
        with open(path, "w") as f:
            f.write(self.yaml(base + "-state", queues))
        return path

    def config_accepted(self):
        path = self.write_config([("q", 10)])
        r = subprocess.run([self.binary, "--check-config", "-c", path],
                           capture_output=True, text=True, timeout=30)
        return r.returncode == 0, (r.stdout + r.stderr).strip()

    def fill(self, n, queue="q"):
        r = self.server.node_of(queue).ctl
        key = f"jobq:{{{queue}}}:pending"
        pipe = r.pipeline(transaction=False)
        for start in range(0, n, 1000):
            pipe.lpush(key, *(json.dumps({"id": f"b{i}", "payload": {}}, separators=(",", ":"))
                              for i in range(start, min(n, start + 1000))))
            if len(pipe) >= 20:
                pipe.execute()
        pipe.execute()

    def start(self, queues, events=False):
        del events  # jobqd always publishes its events
        config = self.write_config(queues)
        logpath = config[:-5] + ".log"
        with open(logpath, "w") as out:
            p = spawn([self.binary, "-c", config], stdout=out, stderr=subprocess.STDOUT)
        return [p], [logpath]

    def ready(self, workers, logs):
        return all(self.server.node_of(q).ctl.zcard(f"jobq:{{{q}}}:leases") > 0
                   for q in self.started_queues)

    def remaining(self, poll, queue="q"):
        left = poll.call("LLEN", f"jobq:{{{queue}}}:pending")
        if left:
            return left
        for worker in poll.call("ZRANGE", f"jobq:{{{queue}}}:leases", 0, -1):
            left += poll.call("HLEN", f"jobq:{{{queue}}}:inflight:{worker}")
        return left

    def check(self, queue, n):
        """Nothing left anywhere (the worker has stopped: a job it still held would be back in
        pending), nothing dead, and every job's state says succeeded where states are kept."""
        r = self.server.node_of(queue).ctl
        k = f"jobq:{{{queue}}}"
        left = (r.llen(f"{k}:pending"), r.zcard(f"{k}:delayed"), r.zcard(f"{k}:dead"))
        if any(left):
            return "left in pending, delayed, dead: %d, %d, %d" % left
        if self.extra:
            return ""
        bad = 0
        for start in range(0, n, 10000):
            pipe = r.pipeline(transaction=False)
            for i in range(start, min(n, start + 10000)):
                pipe.hget(f"{k}:job:b{i}", "status")
            bad += sum(status != "succeeded" for status in pipe.execute())
        return f"{bad} of {n} jobs not succeeded" if bad else ""

    def probe_argv(self, queue, samples):
        return [NODE, os.path.join(HERE, "jobqd.js"), "probe", str(self.env.redis.port), queue,
                str(samples)]


def shard_tags(queue, n):
    """What daemon/store/shards.cpp computes (the daemon is the reference: a job sent to a shard
    other than its id's home is forwarded, which the sharded run's check counts): shard 0 is the
    queue, shard k the first tag queue#s whose slot is in the k-th window of n not shard 0's."""
    def window(tag):
        return key_slot(("{" + tag + "}").encode()) * n // 16384
    tags = [queue]
    for w in range(n):
        if w == window(queue):
            continue
        s = 0
        while window(f"{queue}#{s}") != w:
            s += 1
        tags.append(f"{queue}#{s}")
    return tags


def home_shard(job_id, n):
    """FNV-1a of the id modulo n, as daemon/store/shards.cpp."""
    h = 14695981039346656037
    for c in job_id.encode():
        h = ((h ^ c) * 1099511628211) % (1 << 64)
    return h % n


class ShardedJobqd(Jobqd):
    """jobqd with `shards: N` on every queue: each job filled into its id's home shard (as jobqctl
    submit does), and every shard polled, checked and counted."""

    def __init__(self, env, label, shards, server):
        super().__init__(env, label, extra_queue_keys=f"shards: {shards}", server=server)
        self.shards = shards

    def fill(self, n, queue="q"):
        tags = shard_tags(queue, self.shards)
        by_tag = collections.defaultdict(list)
        for i in range(n):
            by_tag[tags[home_shard(f"b{i}", self.shards)]].append(
                json.dumps({"id": f"b{i}", "payload": {}}, separators=(",", ":")))
        for tag, jobs in by_tag.items():
            pipe = self.server.node_of(tag).ctl.pipeline(transaction=False)
            for start in range(0, len(jobs), 1000):
                pipe.lpush(f"jobq:{{{tag}}}:pending", *jobs[start:start + 1000])
            pipe.execute()

    def pending(self, queue="q"):
        return sum(self.server.node_of(t).ctl.llen(f"jobq:{{{t}}}:pending")
                   for t in shard_tags(queue, self.shards))

    def ready(self, workers, logs):
        return all(self.server.node_of(t).ctl.zcard(f"jobq:{{{t}}}:leases") > 0
                   for q in self.started_queues for t in shard_tags(q, self.shards))

    def remaining_in(self, polls, queue="q"):
        return sum(Jobqd.remaining(self, polls[self.server.node_of(t).port], t)
                   for t in shard_tags(queue, self.shards))

    def check(self, queue, n):
        for t in shard_tags(queue, self.shards):
            problem = Jobqd.check(self, t, 0)
            if problem:
                return f"shard {t}: {problem}"
        # A job filled outside its home would have been forwarded (one LPUSH by the daemon).
        forwarded = sum(node.commandstats().get("lpush", 0) for node in self.server.nodes)
        return f"{forwarded} jobs forwarded to another shard" if forwarded else ""


class NodePeer(System):
    script = "?"
    keys = ()  # the lists whose lengths add up to the jobs not finished yet
    failed = None

    def fill(self, n, queue="q"):
        path = self.logfile(f"{self.script}-fill")
        with open(path, "w") as out:
            p = spawn([NODE, os.path.join(HERE, self.script), "fill", str(self.env.redis.port),
                       queue, str(n)], stdout=out, stderr=subprocess.STDOUT)
        try:
            rc = p.wait(timeout=600)
        except subprocess.TimeoutExpired:
            rc = None
        stop(p)
        if rc != 0:
            raise RunFailed(f"{self.name} fill failed ({rc}):\n{tail(path)}")

    def worker_argv(self, queues, events):
        raise NotImplementedError

    def start(self, queues, events=False):
        path = self.logfile(f"{self.script}-work")
        with open(path, "w") as out:
            p = spawn(self.worker_argv(queues, events), stdout=out, stderr=subprocess.STDOUT)
        return [p], [path]

    def remaining(self, poll, queue="q"):
        left = 0
        for k in self.keys:
            left += poll.call("LLEN", k.format(q=queue))
            if left:
                return left
        return left

    def check(self, queue, n):
        r = self.env.redis.ctl
        key = self.failed.format(q=queue)
        failed = r.zcard(key) if r.type(key) == "zset" else r.scard(key)
        return f"{failed} failed jobs" if failed else ""

    def probe_argv(self, queue, samples):
        return [NODE, os.path.join(HERE, self.script), "probe", str(self.env.redis.port), queue,
                str(samples)]


class Bee(NodePeer):
    name = "bee-queue"
    script = "bee.js"
    keys = ("bq:{q}:waiting", "bq:{q}:active")
    pending_key = keys[0]
    failed = "bq:{q}:failed"

    def worker_argv(self, queues, events):
        return ([NODE, os.path.join(HERE, self.script), "work", str(self.env.redis.port)] +
                (["--events"] if events else []) + [f"{q}:{c}" for q, c in queues])

    def check(self, queue, n):
        left = self.env.redis.ctl.hlen(f"bq:{queue}:jobs")  # removeOnSuccess deletes each
        return super().check(queue, n) or (f"{left} jobs not removed" if left else "")


class Bull(NodePeer):
    name = "BullMQ"
    script = "bull.js"
    keys = ("bull:{q}:wait", "bull:{q}:active")
    pending_key = keys[0]
    failed = "bull:{q}:failed"

    def worker_argv(self, queues, events):
        del events  # BullMQ always writes its events stream
        return ([NODE, os.path.join(HERE, self.script), "work", str(self.env.redis.port)] +
                [f"{q}:{c}" for q, c in queues])


class RQ(System):
    """RQ from Debian: `rq worker --burst` processes (rq 1.13 has no worker pool), each taking
    one job at a time; jobs enqueued with result_ttl=0 (nothing kept after success). SimpleWorker
    runs jobs in the worker process (RQ's documented non-forking worker class, its fastest);
    the default Worker forks a work horse per job."""

    exits_when_done = True
    pending_key = "rq:queue:{q}"

    def __init__(self, env, worker_class=None):
        super().__init__(env)
        self.worker_class = worker_class
        self.name = "RQ (SimpleWorker)" if worker_class else "RQ (Worker, fork)"

    def fill(self, n, queue="q"):
        from rq import Queue

        q = Queue(queue, connection=redis.Redis(port=self.env.redis.port))
        for start in range(0, n, 1000):
            q.enqueue_many([Queue.prepare_data("rq_noop.noop", result_ttl=0, description="noop")
                            for _ in range(start, min(n, start + 1000))])

    def start(self, queues, events=False):
        (queue, processes), = queues
        rq = shutil.which("rq")
        if not rq:
            raise RunFailed("no rq command (python3-rq)")
        procs, logs = [], []
        for i in range(processes):
            path = self.logfile(f"rq-{i}")
            argv = [rq, "worker", "--burst", "--quiet", "--path", HERE, "--url", self.env.redis.url,
                    "--name", f"bench-{self.env.runs}-{i}"]
            if self.worker_class:
                argv += ["--worker-class", self.worker_class]
            with open(path, "w") as out:
                procs.append(spawn(argv + [queue], stdout=out, stderr=subprocess.STDOUT, cwd=HERE))
            logs.append(path)
        return procs, logs

    def remaining(self, poll, queue="q"):
        raise NotImplementedError  # done when every burst worker has exited

    def check(self, queue, n):
        r = self.env.redis.ctl
        left = r.llen(f"rq:queue:{queue}") + r.zcard(f"rq:wip:{queue}")
        failed = r.zcard(f"rq:failed:{queue}")
        return f"{left} jobs left, {failed} failed" if left or failed else ""


# ---- measurements ----------------------------------------------------------------------------
class Env:
    def __init__(self, tmp, jobqd, redis_server):
        self.tmp, self.jobqd, self.redis = tmp, jobqd, redis_server
        self.runs = 0


def drain(env, system, n, concurrency, processes=1, rss=False, queues=("q",)):
    """Pre-fill n jobs, spread evenly over `queues` (n rounded down to a multiple of them), start
    the worker(s) serving them, time from the start until all n are finished. Redis is the
    system's: one server, or each node of a cluster, its figures summed over the nodes.
    Returns {rate, cmds (per job), rss (KiB, VmHWM summed over the worker's processes), cpu_us
    (Redis' per job), node_cpu_us (each node's share of it), worker_cpu_us}."""
    server = system.server
    each = n // len(queues)
    n = each * len(queues)
    server.reset()
    for q in queues:
        system.fill(each, q)
        if system.pending(q) != each:
            raise RunFailed(f"{system.name}: {system.pending(q)} jobs pending in {q} after "
                            f"filling {each}")
    polls = {node.port: Poller(node.port) for node in server.nodes}
    for node in server.nodes:
        node.ctl.config_resetstat()
    cpu0 = [node.cpu_seconds() for node in server.nodes]
    workers = [(q, processes if isinstance(system, RQ) else concurrency) for q in queues]
    if isinstance(system, Jobqd):
        system.started_queues = list(queues)
    timeout = 120 + n / 200
    t0 = time.perf_counter()
    procs, logs = system.start(workers)
    try:
        deadline = t0 + timeout
        while True:
            if system.exits_when_done:
                if all(p.poll() is not None for p in procs):
                    break
            else:
                if not any(system.remaining_in(polls, q) for q in queues):
                    break
                dead = [p for p in procs if p.poll() is not None]
                if dead:
                    raise RunFailed(f"{system.name} worker exited ({dead[0].returncode}):\n"
                                    + tail(logs[procs.index(dead[0])]))
            if time.perf_counter() > deadline:
                raise RunFailed(f"{system.name}: not drained within {timeout:.0f} s")
            time.sleep(POLL)
        elapsed = time.perf_counter() - t0
        node_cpu = [node.cpu_seconds() - c for node, c in zip(server.nodes, cpu0)]
        worker_cpu = sum(cpu_seconds_of(descendants(p.pid)) for p in procs)
        hwm = sum(vm_hwm_kib(descendants(p.pid)) for p in procs) if rss else None
        stats = collections.Counter()
        for node in server.nodes:
            stats.update(node.commandstats())
    finally:
        for p in procs:
            stop(p, grace=15.0)
        for poll in polls.values():
            poll.close()
    stats["config|resetstat"] -= len(server.nodes)
    for poll in polls.values():
        stats.subtract(poll.counts)
    if any(v < 0 for v in stats.values()):
        raise RunFailed(f"commandstats do not add up: {dict(stats)}")
    for q in queues:
        problem = system.check(q, each)
        if problem:
            raise RunFailed(f"{system.name}: {q}: {problem}")
    stats = {k: v for k, v in stats.items() if v}
    if VERBOSE:
        top = ", ".join(f"{k} {v / n:.2f}" for k, v in
                        sorted(stats.items(), key=lambda kv: -kv[1])[:12])
        log(f"  {system.name} c={concurrency}: {n / elapsed:,.0f} jobs/s; per job: {top}")
    # Redis' CPU per job: what bounds every Redis-backed queue (one core runs at most 1/cpu jobs
    # a second). The harness's own polls (a few hundred cheap commands) are left in.
    return {"rate": n / elapsed, "cmds": sum(stats.values()) / n, "rss": hwm,
            "cpu_us": sum(node_cpu) * 1e6 / n, "node_cpu_us": [c * 1e6 / n for c in node_cpu],
            "worker_cpu_us": worker_cpu * 1e6 / n}


class Lines:
    """Reads lines from a child's stdout with deadlines."""

    def __init__(self, stream):
        self.stream = stream
        self.sel = selectors.DefaultSelector()
        self.sel.register(stream, selectors.EVENT_READ)
        self.buf = b""
        self.eof = False

    def read(self, timeout):
        """Everything available within timeout (at least one chunk unless EOF)."""
        if self.eof:
            return
        for _ in self.sel.select(timeout):
            chunk = os.read(self.stream.fileno(), 65536)
            if not chunk:
                self.eof = True
            self.buf += chunk

    def has(self, line):
        return (b"\n" + self.buf).find(b"\n" + line + b"\n") >= 0

    def wait_line(self, line, timeout):
        deadline = time.monotonic() + timeout
        while not self.has(line):
            if self.eof or time.monotonic() > deadline:
                raise RunFailed(f"no {line!r} from the probe; it printed {self.buf[-500:]!r}")
            self.read(max(0.0, min(0.1, deadline - time.monotonic())))


def start_ready(system, queues):
    """Starts the system's workers on `queues` and waits until they serve them."""
    if isinstance(system, Jobqd):
        system.started_queues = [q for q, _ in queues]
    procs, logs = system.start(queues, events=True)
    try:
        wait_for(lambda: system.ready(procs, logs) or any(p.poll() is not None for p in procs),
                 30, f"{system.name} to be ready")
        if any(p.poll() is not None for p in procs):
            raise RunFailed(f"{system.name} exited:\n{tail(logs[0])}")
    except BaseException:
        for p in procs:
            stop(p, grace=15.0)
        raise
    return procs


def latency_run(env, system, samples, warm, load_n=0):
    """Submit-to-finish latency samples (ms) of queue q, one job at a time: idle, or while queue
    `load` (concurrency 100, same worker process) drains load_n pre-filled jobs. The probe first
    takes `warm` samples that count for nothing (its own JIT warm-up, common.js) from a worker
    serving q alone: idle, the same worker is then measured, warm too; under load it stops, the
    load is pushed and a worker for both queues starts (the load warms it within its first
    thousand jobs).
    Returns (samples, jobs/s of `load` while the probe ran)."""
    env.redis.reset()
    probe_log = system.logfile("probe")
    with open(probe_log, "w") as err:
        probe = spawn(system.probe_argv("q", samples), stdin=subprocess.PIPE,
                      stdout=subprocess.PIPE, stderr=err)
    procs = []

    def say(line):
        probe.stdin.write(line.encode() + b"\n")
        probe.stdin.flush()

    try:
        lines = Lines(probe.stdout)
        lines.wait_line(b"ready", 30)
        procs = start_ready(system, [("q", 10)])
        say(f"warm {warm}")
        lines.wait_line(b"warmed", 60 + warm * 0.05)
        if load_n:
            for p in procs:
                stop(p, grace=15.0)
            system.fill(load_n, "load")
            procs = start_ready(system, [("q", 10), ("load", 100)])
        say("go")
        end, load_rate = math.inf, None
        if load_n:
            poll = Poller(env.redis.port)
            t0 = time.monotonic()
            deadline = t0 + 120 + load_n / 200
            while True:
                left = system.remaining(poll, "load")
                if not left or lines.has(b"done"):
                    break
                if time.monotonic() > deadline:
                    raise RunFailed(f"{system.name}: load not drained in time")
                lines.read(POLL)
            end = time.time() * 1000
            load_rate = (load_n - left) / (time.monotonic() - t0)
            poll.close()
            if not lines.has(b"done"):
                say("stop")
        lines.wait_line(b"done", 60 + samples * 0.1)
    except RunFailed as e:
        raise RunFailed(f"{e}\n{tail(probe_log)}")
    finally:
        for p in procs:
            stop(p, grace=15.0)
        stop(probe, grace=5.0)
    out = []
    for line in lines.buf.decode().splitlines():
        if "\t" in line:
            submitted, ms = line.split("\t")
            if float(submitted) < end:
                out.append(float(ms))
    return out, load_rate


def percentile(sorted_values, p):
    if not sorted_values:
        return math.nan
    return sorted_values[max(0, math.ceil(p * len(sorted_values)) - 1)]


def redis_benchmark(env, args, n):
    r = subprocess.run(["redis-benchmark", "-h", "127.0.0.1", "-p", str(env.redis.port),
                        "-P", "16", "-n", str(n), "--csv"] + args,
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RunFailed(f"redis-benchmark failed: {r.stderr}")
    rows = [line for line in r.stdout.splitlines() if line.startswith('"') and "rps" not in line]
    return float(rows[-1].split(",")[1].strip('"'))


# ---- output, in the style of bench/run's side_by_side ----------------------------------------
def human_rate(v):
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if v >= div:
            return f"{v / div:.2f}{unit}"
    return f"{v:.0f}"


def fmt_ms(v):
    return f"{v:.2f}ms" if v < 100 else f"{v:.0f}ms"


def fmt_mib(v):
    return f"{v / 1024:.1f}MiB"


def fmt_cmds(v):
    return f"{v:.2f}"


def fmt_us(v):
    return f"{v:.1f} us"


def table(title, rows, peers, higher_better, fmt, base_label="best peer"):
    """rows: [(figure, jobqd value, {peer: value})]. The baseline is the best peer of the row
    (fastest, or least when lower is better); ratio says how many times better jobqd is than it
    (jobqd / baseline for rates, baseline / jobqd for lower-is-better figures)."""
    def cell(v):
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt(v)

    w = max([34] + [len(r[0]) + 2 for r in rows])
    cols = max([12] + [len(p) + 2 for p in peers])
    print(f"\n{title}")
    print(f"  {'figure':<{w}}{'jobqd':>12}{base_label:>12}{'ratio':>9}"
          + "".join(f"{p:>{cols}}" for p in peers))
    for figure, ours, theirs in rows:
        present = {p: v for p, v in theirs.items() if v is not None and not math.isnan(v)}
        base = (max if higher_better else min)(present.values()) if present else None
        ratio = "-"
        if base and ours and not math.isnan(ours):
            r = ours / base if higher_better else base / ours
            ratio = f"{r:.0f}x" if r >= 10 else f"{r:.2f}x"
        print(f"  {figure:<{w}}{cell(ours):>12}{cell(base):>12}{ratio:>9}"
              + "".join(f"{cell(theirs.get(p)):>{cols}}" for p in peers))
    sys.stdout.flush()


def cluster_report(on_cluster, on_one, cluster, queues, n):
    """After the cluster section's tables (on_cluster, on_one: its drains' results, n jobs each):
    jobqd's CPU overhead on the cluster, each node's share of Redis' CPU, and what the costs
    measured give for more primaries than this machine has cores for."""
    if not on_cluster or not on_one:
        return
    ours = median([r["worker_cpu_us"] for r in on_cluster])
    base = median([r["worker_cpu_us"] for r in on_one])
    print(f"  jobqd CPU per job, the routing's overhead: {ours:.2f} us on the cluster against "
          f"{base:.2f} on one Redis, {100 * (ours - base) / base:+.1f}%\n  (the runs: "
          + ", ".join(f"{r['worker_cpu_us']:.2f}" for r in on_cluster) + " against "
          + ", ".join(f"{r['worker_cpu_us']:.2f}" for r in on_one) + " us)")
    redis_us = median([r["cpu_us"] for r in on_cluster])
    held = [[q for q in queues if cluster.node_of(q) is node] for node in cluster.nodes]
    print("  Redis CPU by node (each a median of the runs, so the shares need not add up to "
          "100%):")
    for i, (node, (first, last)) in enumerate(zip(cluster.nodes, cluster.slots)):
        us = median([r["node_cpu_us"][i] for r in on_cluster])
        own = n * len(held[i]) // len(queues)
        print(f"    127.0.0.1:{node.port}, slots {first}-{last}, {len(held[i])} queues "
              f"({' '.join(held[i])}): {us:.1f} us per job of the {n:,} "
              f"({100 * us / redis_us:.0f}%)"
              + (f", {us * n / own:.1f} us per job of its own {own:,}" if own else ""))
    # What this machine cannot show: every node and jobqd share its cores, so more primaries
    # only split the same CPU. The costs per job measured stand in for a core per primary.
    primaries = (3, 10, 30)
    per_primary = 1 / (redis_us * 1e-6)
    per_daemon = 1 / (ours * 1e-6)
    redis_bound = [p * per_primary for p in primaries]
    for paragraph in (
            f"Estimate, not a measurement: the {len(cluster.nodes)} primaries, jobqd and the "
            f"harness share this machine's {os.cpu_count()} cores, so the cluster's jobs/s above "
            "gains at most the second core over one Redis and says nothing of more primaries. "
            "With a core per primary and busy queues spread evenly, each primary runs at most "
            f"1/(Redis CPU per job) = 1/{redis_us:.1f}us = {human_rate(per_primary)} jobs/s; "
            "Redis-bound, " + ", ".join(f"{human_rate(r)} jobs/s on {p} primaries"
                                        for p, r in zip(primaries, redis_bound)) + ".",
            f"jobqd daemons scale out apart from that: a daemon's core runs 1/{ours:.2f}us = "
            f"{human_rate(per_daemon)} jobs/s, so those rates need about "
            + ", ".join(f"{r / per_daemon:.0f}" for r in redis_bound) + " daemon cores.",
            "Assumed: the costs per job measured here hold there (here over loopback, and with "
            "the nodes contending for cores); a queue lives on one primary, so P primaries need "
            f"at least P busy queues, evenly hashed (these {len(queues)} hash "
            f"{'/'.join(str(len(h)) for h in held)} over the {len(cluster.nodes)})."):
        print(textwrap.fill(paragraph, 100, initial_indent="  ", subsequent_indent="  "))


def shards_report(split, whole, cluster):
    """After the shards section's tables: each node's Redis CPU per job of the queue, with the
    queue on one primary and spread over three, and what that gives a busy queue."""
    if not split or not whole:
        return
    print("  Redis CPU per job of the queue, by node (medians of the runs):")
    for i, node in enumerate(cluster.nodes):
        one = median([r["node_cpu_us"][i] for r in whole])
        three = median([r["node_cpu_us"][i] for r in split])
        tags = [t for t in shard_tags("q", 3) if cluster.node_of(t) is node]
        print(f"    127.0.0.1:{node.port} (shards here: {' '.join(tags) or '-'}): "
              f"{one:.1f} us with shards: 1, {three:.1f} us with shards: 3")
    busiest_one = max(median([r["node_cpu_us"][i] for r in whole])
                      for i in range(len(cluster.nodes)))
    busiest_three = max(median([r["node_cpu_us"][i] for r in split])
                        for i in range(len(cluster.nodes)))
    total_three = median([r["cpu_us"] for r in split])
    paragraph = (
        f"The busiest node spends {busiest_one:.1f} us of Redis CPU per job of the queue with "
        f"shards: 1 and {busiest_three:.1f} us with shards: 3 ({busiest_one / busiest_three:.2f}x "
        f"less): one queue is no longer capped at one Redis core. Estimate, not a measurement "
        f"(the nodes, jobqd and the harness share this machine's {os.cpu_count()} cores): with a "
        f"core per primary, one queue runs at most 1/{busiest_one:.1f}us = "
        f"{human_rate(1e6 / busiest_one)} jobs/s unsharded, and about "
        f"{human_rate(1e6 / busiest_three)} jobs/s over 3 primaries; spread over P shards on P "
        f"primaries, about P / {total_three:.1f}us: "
        + ", ".join(f"{human_rate(p * 1e6 / total_three)} jobs/s on {p}" for p in (10, 30))
        + " (Redis-bound; daemons added to match).")
    print(textwrap.fill(paragraph, 100, initial_indent="  ", subsequent_indent="  "))


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else math.nan


# ---- main ------------------------------------------------------------------------------------
def stable_binary(path, dest, timeout=900):
    """build/jobqd may be briefly missing or half-written while it is being rebuilt: wait until
    it exists, has not changed for 5 s and answers --version, then use a copy of it so every run
    uses the same binary."""
    deadline = time.monotonic() + timeout
    announced = False
    while True:
        try:
            st = os.stat(path)
            if time.time() - st.st_mtime > 5 and os.access(path, os.X_OK):
                shutil.copy2(path, dest)
                if os.stat(path).st_mtime == st.st_mtime and subprocess.run(
                        [dest, "--version"], capture_output=True, timeout=30).returncode == 0:
                    return
        except (OSError, subprocess.TimeoutExpired):
            pass
        if time.monotonic() > deadline:
            raise RunFailed(f"{path} did not become usable within {timeout} s")
        if not announced:
            log(f"waiting for {path} (being rebuilt?)")
            announced = True
        time.sleep(1)


def versions():
    out = {}
    for pkg in ("bee-queue", "bullmq", "ioredis"):
        try:
            with open(os.path.join(HERE, "node_modules", pkg, "package.json")) as f:
                out[pkg] = json.load(f)["version"]
        except OSError:
            out[pkg] = "?"
    try:
        import rq

        out["rq"] = rq.__version__
    except ImportError:
        out["rq"] = "?"
    out["node"] = subprocess.run([NODE, "--version"], capture_output=True, text=True).stdout.strip()
    return out


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else "build"
    scale = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
    runs = max(1, int(os.environ.get("BENCH_RUNS", "3")))
    sections = os.environ.get("BENCH_PEERS",
                              "throughput,rq,rss,latency,tls,replicas,cluster,shards,ceiling").split(",")
    n = max(1000, int(100000 * scale))
    rq_n = max(1000, n // 10)
    samples = max(200, int(2000 * scale))
    warm = max(500, int(PROBE_WARMUP * scale))

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    tmp = tempfile.mkdtemp(prefix="jobqd-peers-")
    started = time.monotonic()
    try:
        jobqd = os.path.join(tmp, "jobqd")
        stable_binary(os.path.join(build, "jobqd"), jobqd)
        server = RedisServer(tmp)
        env = Env(tmp, jobqd, server)
        v = versions()
        ours = subprocess.run([jobqd, "--version"], capture_output=True, text=True).stdout.strip()
        print(f"\n== {ours or 'jobqd'} vs bee-queue {v['bee-queue']}, BullMQ {v['bullmq']} (ioredis "
              f"{v['ioredis']}, node {v['node']}), RQ {v['rq']}; one redis-server "
              f"{server.version} (--save \"\" --appendonly no), median of {runs}")
        print("  ratio: how many times better jobqd does than the baseline: jobqd / baseline for "
              "jobs/s, baseline / jobqd\n  for ms, MiB and commands per job; under 1x the "
              "baseline does better")
        jq, bee, bull = Jobqd(env), Bee(env), Bull(env)
        systems = [jq, bee, bull]
        switch = os.environ.get("BENCH_JOBQD_VARIANT", "auto")
        if switch != "0":
            keys = os.environ.get("BENCH_JOBQD_VARIANT_KEYS", "retain: {succeeded: 0}")
            variant = Jobqd(env, "jobqd (succeeded: 0)" if keys == "retain: {succeeded: 0}"
                            else f"jobqd ({keys})", keys)
            ok, why = variant.config_accepted()
            if ok:
                systems.insert(1, variant)
            elif switch == "1":
                print(f"  ({variant.name} skipped: this jobqd refuses `{keys}`: {why})")
            else:
                print(f"  (no {variant.name} rows: this jobqd does not know `{keys}` yet)")
        base = os.environ.get("BENCH_JOBQD_BASE", "")
        if base:
            # An earlier jobqd (e.g. the commit before a redesign) in the same runs, alternating,
            # so that what the change costs or saves is measured on one machine's one mood.
            base_copy = os.path.join(tmp, "jobqd-base")
            stable_binary(base, base_copy)
            base_version = subprocess.run([base_copy, "--version"], capture_output=True,
                                          text=True).stdout.strip() or "base"
            systems.insert(1, Jobqd(env, f"{base_version} (base)", binary=base_copy))
        jobqds = [s for s in systems if isinstance(s, Jobqd)]
        peers = [bee, bull]
        peer_names = [p.name for p in peers]
        results = collections.defaultdict(list)  # (section, system name, concurrency) -> runs

        def attempt(key, f, *args, **kw):
            try:
                results[key].append(f(*args, **kw))
            except RunFailed as e:
                log(f"{key[1]} {key[0]} c={key[2]}: FAILED: {e}")

        def fig(section, name, c, field):
            return median([r[field] for r in results[(section, name, c)]])

        concs = (1, 10, 100)
        if "throughput" in sections:
            for c in concs:
                for i in range(runs):
                    for s in systems:
                        attempt(("tp", s.name, c), drain, env, s, n, c)
                    log(f"throughput c={c} run {i + 1}/{runs}: " + ", ".join(
                        f"{s.name} {human_rate(results[('tp', s.name, c)][-1]['rate'])}/s"
                        for s in systems if results[("tp", s.name, c)]))
            def tp_rows(field):
                """A row per jobqd variant and concurrency: its figure and each peer's."""
                rows = []
                for s in jobqds:
                    suffix = "" if s is jq else f", {s.name}"
                    rows += [(f"concurrency {c}{suffix}", fig("tp", s.name, c, field),
                              {p.name: fig("tp", p.name, c, field) for p in peers})
                             for c in concs]
                return rows

            table(f"throughput, jobs/s: {n:,} pre-filled no-op jobs, one worker process, from its "
                  "start until all are finished", tp_rows("rate"), peer_names, True, human_rate)
            table("Redis commands per job (commandstats calls, scripts' inner commands included, "
                  "the harness's polls taken out; lower is better)", tp_rows("cmds"), peer_names,
                  False, fmt_cmds, base_label="fewest")
            table("Redis CPU per job (INFO cpu, used_cpu_user + used_cpu_sys over the drain, / "
                  "jobs; what bounds a queue on one Redis core; lower is better)",
                  tp_rows("cpu_us"), peer_names, False, fmt_us, base_label="least")

        if "rq" in sections:
            rq_simple, rq_fork = RQ(env, "rq.worker.SimpleWorker"), RQ(env)
            for i in range(runs):
                attempt(("rq", jq.name, 10), drain, env, jq, rq_n, 10)
                attempt(("rq", rq_simple.name, 10), drain, env, rq_simple, rq_n, 10, processes=10)
                attempt(("rq", rq_fork.name, 10), drain, env, rq_fork, rq_n, 10, processes=10)
                log(f"rq run {i + 1}/{runs}: " + ", ".join(
                    f"{s.name} {human_rate(results[('rq', s.name, 10)][-1]['rate'])}/s"
                    for s in (jq, rq_simple, rq_fork) if results[("rq", s.name, 10)]))
            rq_names = [rq_simple.name, rq_fork.name]
            table(f"RQ {v['rq']}: {rq_n:,} no-op jobs at concurrency 10 (jobqd: one process; RQ: "
                  "10 `rq worker --burst` processes, done when all have exited)",
                  [("throughput, jobs/s", fig("rq", jq.name, 10, "rate"),
                    {s: fig("rq", s, 10, "rate") for s in rq_names})],
                  rq_names, True, human_rate, base_label="faster")
            table("RQ: Redis commands per job (lower is better)",
                  [("commands per job", fig("rq", jq.name, 10, "cmds"),
                    {s: fig("rq", s, 10, "cmds") for s in rq_names})],
                  rq_names, False, fmt_cmds, base_label="fewest")

        if "rss" in sections:
            for i in range(runs):
                for s in systems:
                    attempt(("rss", s.name, 1000), drain, env, s, n, 1000, rss=True)
                log(f"rss run {i + 1}/{runs}: " + ", ".join(
                    f"{s.name} {fmt_mib(results[('rss', s.name, 1000)][-1]['rss'])}"
                    for s in systems if results[("rss", s.name, 1000)]))
            rows = [(f"peak RSS{'' if s is jq else ', ' + s.name}", fig("rss", s.name, 1000, "rss"),
                     {p.name: fig("rss", p.name, 1000, "rss") for p in peers}) for s in jobqds]
            table(f"worker memory, VmHWM summed over the worker's processes, draining {n:,} "
                  "pending at concurrency 1000 (lower is better)", rows, peer_names, False, fmt_mib,
                  base_label="least")
            rows = [(f"concurrency 1000{'' if s is jq else ', ' + s.name}",
                     fig("rss", s.name, 1000, "rate"),
                     {p.name: fig("rss", p.name, 1000, "rate") for p in peers}) for s in jobqds]
            table("throughput of those runs, jobs/s", rows, peer_names, True, human_rate)

        if "latency" in sections:
            lat = collections.defaultdict(list)
            load_rates = collections.defaultdict(list)
            lat_systems = [jq, bee, bull]
            for load_n in (0, n):
                for i in range(runs):
                    for s in lat_systems:
                        try:
                            got, rate = latency_run(env, s, samples, warm, load_n)
                            lat[(s.name, load_n)] += got
                            if rate:
                                load_rates[s.name].append(rate)
                        except RunFailed as e:
                            log(f"{s.name} latency{' under load' if load_n else ''}: FAILED: {e}")
                    log(f"latency{' under load' if load_n else ''} run {i + 1}/{runs}: " + ", ".join(
                        f"{s.name} {len(lat[(s.name, load_n)])} samples" for s in lat_systems))
            rows = []
            for load_n, label in ((0, "idle"), (n, "under load")):
                data = {s.name: sorted(lat[(s.name, load_n)]) for s in lat_systems}
                for p, pname in ((0.5, "p50"), (0.99, "p99"), (0.999, "p99.9")):
                    rows.append((f"{label} {pname}", percentile(data[jq.name], p),
                                 {s.name: percentile(data[s.name], p) for s in peers}))
                rows.append((f"{label} samples", len(data[jq.name]),
                             {s.name: len(data[s.name]) for s in peers}))
            print(f"\n(latency: {samples:,} samples per run after {warm:,} the probe takes idle to "
                  f"warm up its JIT, {runs} runs pooled; under load: queue `load`, concurrency 100, "
                  f"draining {n:,} pre-filled jobs in the same worker process, started after the "
                  "warm-up; only samples submitted before it was drained count)")
            table("submit-to-finish latency of one job at a time on queue q, ms (lower is better)",
                  [r for r in rows if not r[0].endswith("samples")], peer_names, False, fmt_ms,
                  base_label="best peer")
            print("  samples: " + "; ".join(
                f"{r[0][:-8]}: jobqd {r[1]}, " + ", ".join(f"{k} {v}" for k, v in r[2].items())
                for r in rows if r[0].endswith("samples")))
            print("  queue `load` drained at, while the probe ran (median of the runs): " + ", ".join(
                f"{s.name} {human_rate(median(load_rates[s.name]))} jobs/s" for s in lat_systems))

        def one_against_other(section, base, variant, base_label, title, queues=("q",)):
            """`variant` against `base`, alternating drains at concurrency 10 (each of `queues`):
            jobs/s, then jobqd's CPU (from /proc), Redis' CPU and commands per job."""
            for i in range(runs):
                for s in (base, variant):
                    attempt((section, s.name, 10), drain, env, s, n, 10, queues=queues)
                log(f"{section} c=10 run {i + 1}/{runs}: " + ", ".join(
                    f"{s.name} {human_rate(results[(section, s.name, 10)][-1]['rate'])}/s"
                    for s in (base, variant) if results[(section, s.name, 10)]))

            def row(figure, field):
                return (figure, fig(section, variant.name, 10, field),
                        {base_label: fig(section, base.name, 10, field)})
            table(title + ", concurrency 10, median of the runs", [row("jobs/s", "rate")], [],
                  True, human_rate, base_label=base_label)
            table("  per job (lower is better)",
                  [row("jobqd CPU per job (us)", "worker_cpu_us"),
                   row("Redis CPU per job (us)", "cpu_us"),
                   row("Redis commands per job", "cmds")],
                  [], False, lambda v: f"{v:.2f}", base_label=base_label)

        if "tls" in sections:
            # The same drain over rediss:// and over the plain port of the same redis-server.
            one_against_other("tls", Jobqd(env, "jobqd plain"), Jobqd(env, "jobqd TLS", tls=True),
                              "plain", "TLS: jobqd over rediss:// against the same Redis's "
                              "plain port")

        if "replicas" in sections:
            # A replica of the bench's Redis, and jobqd with redis.wait_replicas: 1 against 0:
            # what waiting for a replica (WAIT after each batch of outcomes) costs.
            replica_dir = os.path.join(tmp, "replica")
            os.makedirs(replica_dir)
            replica = spawn(["redis-server", "--port", str(free_port()), "--bind", "127.0.0.1",
                             "--dir", replica_dir, "--save", "", "--appendonly", "no",
                             "--replicaof", "127.0.0.1", str(server.port),
                             "--logfile", os.path.join(replica_dir, "redis.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                wait_for(lambda: any(isinstance(v, dict) and v.get("state") == "online"
                                     for v in server.ctl.info("replication").values()), 30,
                         "the replica's sync")
                one_against_other("replicas", Jobqd(env, "jobqd asynchronous"),
                                  Jobqd(env, "jobqd wait_replicas 1", redis_keys="wait_replicas: 1"),
                                  "wait 0", "replicas: redis.wait_replicas: 1 (WAIT after each "
                                  "batch of outcomes) against 0, one replica on this machine")
            finally:
                stop(replica)

        if "cluster" in sections:
            # The same drain of 12 queues on the bench's Redis and on a 3-primary cluster (no
            # replicas) on this machine: what routing each queue to its slot's primary costs
            # jobqd, and the figures an estimate for more primaries needs.
            cluster_dir = os.path.join(tmp, "cluster")
            os.makedirs(cluster_dir)
            cluster = RedisCluster(cluster_dir, 3)
            try:
                queues = [f"q{i}" for i in range(12)]
                jobs = n - n % len(queues)  # what drain() spreads evenly over them
                single = Jobqd(env, "jobqd on one Redis")
                spread = Jobqd(env, "jobqd on a 3-primary cluster", server=cluster)
                one_against_other("cluster", single, spread, "one Redis",
                                  f"cluster: jobqd on a 3-primary cluster (no replicas) against "
                                  f"one Redis, {jobs:,} jobs over {len(queues)} queues", queues)
                cluster_report(results[("cluster", spread.name, 10)],
                               results[("cluster", single.name, 10)], cluster, queues, jobs)
            finally:
                cluster.stop()

        if "shards" in sections:
            # One busy queue on a 3-primary cluster, shards: 1 (all of it on one primary) against
            # shards: 3 (a shard on each): Redis' CPU per job on each node, the work divided.
            shards_dir = os.path.join(tmp, "shards")
            os.makedirs(shards_dir)
            cluster = RedisCluster(shards_dir, 3)
            try:
                whole = ShardedJobqd(env, "jobqd shards: 1", 1, cluster)
                split = ShardedJobqd(env, "jobqd shards: 3", 3, cluster)
                one_against_other("shards", whole, split, "shards: 1",
                                  f"shards: one queue on a 3-primary cluster (no replicas), "
                                  f"shards: 3 against shards: 1, {n:,} jobs")
                shards_report(results[("shards", split.name, 10)],
                              results[("shards", whole.name, 10)], cluster)
            finally:
                cluster.stop()

        if "ceiling" in sections:
            hset_n = max(50000, int(300000 * scale))
            rpop_n = max(10000, int(100000 * scale))
            job = json.dumps({"id": "b12345", "payload": {}}, separators=(",", ":"))
            hsets, rpops, ran_out = [], [], False
            for i in range(runs):
                server.reset()
                hsets.append(redis_benchmark(env, ["-r", "1000000", "HSET",
                                                   "ceil:{q}:job:__rand_int__", "status",
                                                   "succeeded"], hset_n))
                server.reset()
                # Enough for every request to pop a full 100, with room to spare.
                server.ctl.eval("local b = {} for i = 1, 1000 do b[i] = ARGV[1] end for i = 1, "
                                "tonumber(ARGV[2]) do redis.call('LPUSH', KEYS[1], unpack(b)) end",
                                1, "ceil:{q}:pending", job, rpop_n // 10 + 100)
                rpops.append(redis_benchmark(env, ["RPOP", "ceil:{q}:pending", "100"], rpop_n))
                ran_out = ran_out or server.ctl.llen("ceil:{q}:pending") == 0
                log(f"ceiling run {i + 1}/{runs}: HSET {human_rate(hsets[-1])}/s, "
                    f"RPOP 100 {human_rate(rpops[-1])}/s")
            server.reset()
            hset, rpop = median(hsets), median(rpops)
            ceiling = 1 / (1 / hset + 1 / (100 * rpop))
            ours = fig("tp", jq.name, 100, "rate") if "throughput" in sections else math.nan
            table("the redis-benchmark ceiling of the least work one job needs, a pipelined batch "
                  "pop plus one state write:\n  jobs/s = 1 / (1/HSET rate + 1/(100 x `RPOP key "
                  "100` rate)), redis-benchmark -P 16, 50 clients, median of the runs",
                  [("jobqd concurrency 100 vs ceiling", ours, {"ceiling": ceiling})],
                  [], True, human_rate, base_label="ceiling")
            print(f"  HSET on random keys ({hset_n:,} requests, -r 1000000): {human_rate(hset)}/s; "
                  f"RPOP key 100 on a pre-filled list ({rpop_n:,} requests): {human_rate(rpop)}/s, "
                  f"{human_rate(100 * rpop)} jobs/s popped"
                  + ("  (WARNING: the list ran out)" if ran_out else ""))
            if not math.isnan(ours):
                print(f"  jobqd at concurrency 100 runs at {100 * ours / ceiling:.1f}% of the "
                      "ceiling")
        print(f"\n(peers section: {time.monotonic() - started:.0f} s)")
    except RunFailed as e:
        print(f"peers benchmark failed: {e}", file=sys.stderr)
        return 1
    finally:
        stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
