"""Exactness across processes: 4 and 8 worker processes (sync and asyncio) race on one key
of a K-per-day limit in one Redis, and exactly K requests are admitted, for every
algorithm and for a multi-rate policy."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.strategies import ALGORITHMS

pytestmark = [pytest.mark.redis, pytest.mark.slow]

K = 40
ATTEMPTS = 30  # per worker and limit: every run attempts well over K

# A worker process: builds its limiter, reports "ready", waits for "go" on stdin so that
# all workers start together, then hits every limit ATTEMPTS times (the asyncio worker
# from 6 concurrent tasks) and prints how many hits each limit admitted.
WORKER = """
import asyncio, json, sys
from ratekeeper import AsyncLimiter, AsyncRedisStorage, DictSource, Limiter, RedisStorage

url, mode, specs, attempts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
names = sorted(specs)
admitted = dict.fromkeys(names, 0)


def ready():
    print("ready", flush=True)
    assert sys.stdin.readline().strip() == "go"


if mode == "sync":
    storage = RedisStorage.from_url(url)
    limiter = Limiter(DictSource(specs), storage)
    limiter.peek(names[0], key="warm-up")
    ready()
    for _ in range(attempts):
        for name in names:
            admitted[name] += limiter.hit(name, key="shared").allowed
else:
    async def main():
        async with AsyncRedisStorage.from_url(url, max_connections=8) as storage:
            limiter = AsyncLimiter(DictSource(specs), storage)
            await limiter.peek(names[0], key="warm-up")
            ready()

            async def task(share):
                for _ in range(share):
                    for name in names:
                        # Awaited first: `admitted[name] += await ...` would read the
                        # count before the await and lose the other tasks' updates.
                        allowed = (await limiter.hit(name, key="shared")).allowed
                        admitted[name] += allowed

            shares = [attempts // 6 + (i < attempts % 6) for i in range(6)]
            await asyncio.gather(*(task(share) for share in shares))

    asyncio.run(main())
print(json.dumps(admitted), flush=True)
"""


@pytest.mark.parametrize("processes", [4, 8])
def test_processes_admit_exactly_k(redis_url: str, processes: int) -> None:
    """Half sync, half asyncio workers on one key: admissions == K for every limit."""
    specs: dict[str, object] = {
        f"exact.{algorithm}": {"rate": f"{K}/day", "algorithm": algorithm}
        for algorithm in ALGORITHMS
    }
    specs["exact.multi"] = {"rate": f"{K}/day;{K * 3}/300 days", "algorithm": "sliding-log"}
    modes = ["sync", "async"] * (processes // 2)
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, redis_url, mode, json.dumps(specs), str(ATTEMPTS)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for mode in modes
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None
            assert worker.stdout.readline().strip() == "ready"
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        reports = [json.loads(worker.communicate(timeout=60)[0]) for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    assert all(worker.returncode == 0 for worker in workers)
    totals = {name: sum(report[name] for report in reports) for name in specs}
    assert totals == dict.fromkeys(specs, K)
