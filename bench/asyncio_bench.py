#!/usr/bin/env python3
"""The baseline for bench_async: the same operations in Python's asyncio, same output format."""
import asyncio
import sys
import time

SCALE = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0


def n(base):
    return int(base * SCALE)


async def handoff(count, maxsize):
    q = asyncio.Queue(maxsize)

    async def producer():
        for i in range(count):
            await q.put(i)

    async def consumer():
        for _ in range(count):
            await q.get()

    t0 = time.perf_counter()
    await asyncio.gather(producer(), consumer())
    return count / (time.perf_counter() - t0)


async def empty():
    pass


async def spawn_await(count):
    t0 = time.perf_counter()
    for _ in range(count):
        await asyncio.create_task(empty())
    return count / (time.perf_counter() - t0)


async def await_coroutine(count):
    t0 = time.perf_counter()
    for _ in range(count):
        await empty()
    return count / (time.perf_counter() - t0)


def best_of(runs, make):
    return max(asyncio.run(make()) for _ in range(runs))


def main():
    rows = [
        ("queue hand-off (maxsize 1)", lambda: handoff(n(200_000), 1)),
        ("queue hand-off (maxsize 64)", lambda: handoff(n(500_000), 64)),
        ("queue hand-off (maxsize 1024)", lambda: handoff(n(500_000), 1024)),
        ("spawn + await empty task", lambda: spawn_await(n(200_000))),
        ("await empty coroutine", lambda: await_coroutine(n(1_000_000))),
    ]
    for name, make in rows:
        print(f"{name}\t{best_of(3, make):.0f}", flush=True)


if __name__ == "__main__":
    main()
