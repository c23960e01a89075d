#!/usr/bin/env python3
"""make bench, spool section: files per second from drop to final state, jobqd beside a shell
watcher over the same files in the same run.

jobqd: one queue with a spool source on DIR, the noop handler, `on_success: move` (each file ends
in DIR/done/ after its state is in Redis). Baseline (issue #10):
    inotifywait -m -e close_write,moved_to --format %f DIR | while read f; do mv DIR/$f DONE/; done
Both get the same drop: N small files written and closed in DIR as fast as this script can, the
clock from the first file's creation to the last file's arrival in its done folder. Rounds
alternate (jobqd, shell, jobqd, ...); the median of each is printed with the ratio.

A second part drops a burst bigger than the kernel's inotify queue on each (with the watcher
stopped while the files land, so the queue overflows for certain) and counts the files each
finishes: jobqd rescans on IN_Q_OVERFLOW, the shell watcher never hears of the rest.

Usage: spool_bench.py BUILD_DIR [SCALE]
"""
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

build = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build")
scale = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
N = max(500, int(10000 * scale))
ROUNDS = 3
TIMEOUT = 120.0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.002)


def count(path):
    try:
        return sum(1 for e in os.scandir(path) if not e.is_dir(follow_symlinks=False))
    except FileNotFoundError:
        return 0


def drop(dir_, n, tag):
    body = b'{"payload":{}}'
    for i in range(n):
        fd = os.open(os.path.join(dir_, f"{tag}{i}.json"), os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                     0o640)
        os.write(fd, body)
        os.close(fd)


def settle(done, n, timeout):
    """Waits until `done` holds n files or nothing arrives for 3 s; returns (count, when)."""
    deadline = time.monotonic() + timeout
    last, last_change = -1, time.monotonic()
    while True:
        c = count(done)
        now = time.monotonic()
        if c >= n:
            return c, now
        if c != last:
            last, last_change = c, now
        elif now - last_change > 3.0 or now > deadline:
            return c, last_change
        time.sleep(0.002)


class Redis:
    def __init__(self, tmp):
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL)
        wait_for(self.up, 10, "redis-server")

    def up(self):
        try:
            socket.create_connection(("127.0.0.1", self.port), 0.2).close()
            return True
        except OSError:
            return False

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


class Jobqd:
    label = "jobqd"

    def __init__(self, tmp, redis):
        self.tmp, self.redis = tmp, redis

    def start(self, dir_):
        cfg = os.path.join(self.tmp, "jobqd.yaml")
        with open(cfg, "w") as f:
            f.write(f"""daemon: {{state_dir: {self.tmp}/state, log_level: info}}
http: {{listen: "off"}}
redis: {{url: "redis://127.0.0.1:{self.redis.port}/0"}}
handlers: {{h: {{type: builtin, name: noop}}}}
queues:
  q:
    handler: h
    concurrency: 10
    buffer: 1000
    sources: [{{spool: {{dir: {dir_}, on_success: move}}}}]
""")
        self.log = os.path.join(self.tmp, "jobqd.log")
        self.proc = subprocess.Popen([os.path.join(build, "jobqd"), "-c", cfg],
                                     stdout=open(self.log, "w"), stderr=subprocess.STDOUT)
        wait_for(lambda: "taking files matching" in open(self.log).read() or
                 self.proc.poll() is not None, 15, "jobqd to watch its spool dir")
        if self.proc.poll() is not None:
            raise RuntimeError("jobqd exited:\n" + open(self.log).read()[-2000:])
        return os.path.join(dir_, "done")

    def pause(self, on):
        self.proc.send_signal(signal.SIGSTOP if on else signal.SIGCONT)

    def stop(self):
        self.proc.send_signal(signal.SIGCONT)
        self.proc.terminate()
        self.proc.wait(30)


class Shell:
    label = "inotifywait+mv"

    def __init__(self, tmp):
        self.tmp = tmp

    def start(self, dir_):
        done = os.path.join(dir_, "done")
        os.mkdir(done)
        script = ('inotifywait -q -m -e close_write,moved_to --format %f "$1" | '
                  'while read -r f; do mv "$1/$f" "$2/"; done')
        # Its own session: a stop reaches the whole pipeline.
        self.proc = subprocess.Popen(["bash", "-c", script, "shell", dir_, done],
                                     start_new_session=True, stderr=subprocess.DEVNULL)
        # inotifywait prints nothing when ready with -q: give it a moment, then check a file.
        probe = os.path.join(dir_, "probe.ready")
        deadline = time.monotonic() + 10
        while count(done) == 0:
            with open(probe, "w"):
                pass
            time.sleep(0.05)
            if time.monotonic() > deadline:
                raise RuntimeError("inotifywait did not start")
        time.sleep(0.1)
        for name in os.listdir(done):
            os.unlink(os.path.join(done, name))
        for name in os.listdir(dir_):
            if name.startswith("probe"):
                os.unlink(os.path.join(dir_, name))
        return done

    def pause(self, on):
        os.killpg(self.proc.pid, signal.SIGSTOP if on else signal.SIGCONT)

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGCONT)
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        self.proc.wait(10)


def one_round(system, root, n, tag, burst=False):
    dir_ = tempfile.mkdtemp(dir=root)
    done = system.start(dir_)
    try:
        if burst:
            system.pause(True)
        t0 = time.monotonic()
        drop(dir_, n, tag)
        if burst:
            system.pause(False)
        got, t1 = settle(done, n, TIMEOUT)
        return got, t1 - t0
    finally:
        system.stop()
        shutil.rmtree(dir_, ignore_errors=True)


def main():
    if not shutil.which("inotifywait"):
        print("  inotifywait missing (inotify-tools): skipped")
        return 0
    root = tempfile.mkdtemp(prefix="jobqd-spool-bench-")
    redis = Redis(root)
    try:
        systems = [Jobqd(root, redis), Shell(root)]
        rates = {s.label: [] for s in systems}
        for r in range(ROUNDS):
            for s in systems:
                got, secs = one_round(s, root, N, f"r{r}-")
                if got < N:
                    raise RuntimeError(f"{s.label} finished {got} of {N} files")
                rates[s.label].append(N / secs)
        ours = statistics.median(rates["jobqd"])
        base = statistics.median(rates["inotifywait+mv"])
        print(f"  {N} files, drop to done/, median of {ROUNDS} alternating rounds")
        print(f"  {'':<28}{'jobqd':>12}{'inotifywait+mv':>16}{'ratio':>9}")
        print(f"  {'files/s':<28}{ours:>12.0f}{base:>16.0f}{ours / base:>8.1f}x")
        print(f"  {'runs (files/s)':<28}" + "  ".join(
            f"{a:.0f}/{b:.0f}" for a, b in zip(rates["jobqd"], rates["inotifywait+mv"])))
        try:
            qmax = int(open("/proc/sys/fs/inotify/max_queued_events").read())
        except OSError:
            qmax = 16384
        burst = qmax + max(1000, int(4000 * scale))
        print(f"  burst of {burst} files while the watcher is stopped "
              f"(inotify queue {qmax} events):")
        for s in systems:
            got, secs = one_round(s, root, burst, "b-", burst=True)
            lost = burst - got
            print(f"  {s.label:<28}{got:>8} done in {secs:5.1f} s, {lost} never taken")
    finally:
        redis.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
