"""Redis-backed decisions, side by side with the round-trip floor and the peers, in one run.

    python benchmarks/bench_redis.py [--quick] [--url redis://HOST:PORT/DB] [--markdown FILE]
                                     [--repeats N] [--cpu N]

Starts its own redis-server on a free loopback port (persistence off) unless ``--url`` is
given, and stops it by pid at the end. Prints the machine, then a Markdown table of
microseconds per decision (median of interleaved repeats, nothing subtracted) for each
ratekeeper algorithm through ``Limiter.hit`` on a RedisStorage and ``AsyncLimiter.hit`` on
an AsyncRedisStorage, beside a raw redis-py ``PING`` and an ``EVALSHA`` of ``return 1`` on
the same connection, and beside ``limits``, ``pyrate-limiter`` and ``throttled-py`` on the
same server; then the ratios the performance contract sets targets for. Every limit is
huge, so every decision admits. ``--quick`` is a smoke run for CI: its numbers mean little.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import limits
import limits.storage
import limits.strategies
import pyrate_limiter
import redis
import throttled
import throttled.store

from _timing import Case, Result, emit, machine, markdown_table, measure
from ratekeeper import (
    AsyncLimiter,
    AsyncRedisStorage,
    DictSource,
    Limiter,
    Policy,
    Rate,
    RedisStorage,
)
from ratekeeper._rates import ALGORITHMS

HUGE_AMOUNT = 10**9
HUGE = f"{HUGE_AMOUNT}/day"  # never reached in a run: every decision admits
# A log is read and rewritten whole by every step; with a day-long period it would grow
# with the run and measure the run's length. 10 µs keeps it at one or two entries.
SHORT_LOG = Policy((Rate(HUGE_AMOUNT, 0.000_01),), algorithm="sliding-log")
# Async cases await this many decisions per timed iteration, so entering the event loop
# once per iteration is spread over them; the figures are per decision.
BATCH = 50
PACKAGES = ("ratekeeper", "redis", "hiredis", "limits", "pyrate-limiter", "throttled-py")

PING = "redis-py PING"
EVALSHA = "redis-py EVALSHA 'return 1'"
SHAPED = "redis-py EVALSHA 'return 1', a decision's keys and arguments"
DECIDE = "ratekeeper RedisStorage.decide token-bucket (no Limiter)"
OWN_EVALSHA = "ratekeeper RedisStorage's own path: EVALSHA 'return 1'"
ASYNC_PING = "redis.asyncio PING"
ASYNC_EVALSHA = "redis.asyncio EVALSHA 'return 1'"
ASYNC_OWN_EVALSHA = "ratekeeper AsyncRedisStorage's own path: EVALSHA 'return 1'"
SYNC_ROW = "ratekeeper Limiter.hit {} (RedisStorage)"
ASYNC_ROW = "ratekeeper AsyncLimiter.hit {} (AsyncRedisStorage)"
RETURN_ONE = "return 1"

NOTES = (
    "µs per decision: the median of the repeats; min–max are the fastest and slowest "
    "repeats. Nothing is subtracted: a figure includes one iteration of the timing loop.",
    f"× EVALSHA: against {EVALSHA!r} on the same connection for sync rows, against "
    f"{ASYNC_EVALSHA!r} for async rows. That is the floor of any one-script decision: "
    "one round trip plus redis-py's command encoding and reply parsing. The row with a "
    "decision's keys and arguments sends what a token-bucket decision sends, to a script "
    "that ignores them, and the RedisStorage.decide row leaves the Limiter out: together "
    "they split a decision's cost into transport, Lua and Limiter.",
    f"Async rows await {BATCH} decisions per timed iteration inside one event loop "
    "(run_until_complete once per batch), and report the time per decision.",
    f"Admitted rows use {HUGE}, except ratekeeper's sliding-log: 10**9 per 10 µs, so the "
    "log, which every step reads and rewrites, holds one or two entries instead of "
    "growing with the run.",
    "limits MovingWindowRateLimiter and pyrate-limiter RedisBucket keep one entry per "
    "call of the period (a list, a sorted set); their rows are the mean over a fixed "
    "number of calls from an empty key (see 'calls').",
    "ratekeeper's rows and the floor rows share the client that RedisStorage.from_url / "
    "AsyncRedisStorage.from_url build (0.25 s socket timeouts, no retries); limits, "
    "pyrate-limiter and throttled-py use their own redis-py clients, on the same server, "
    "built as each library documents.",
    "The redis-py floor rows go through execute_command (pool checkout and release, retry "
    "wrapper, argument encoding). The storages skip that path: they send each decision, "
    "already encoded, on a connection they keep from the client's pool, so a decision can "
    "cost less than the redis-py floor. The 'own path' rows send 'return 1' that way: "
    "the floor of the storages' own transport, which the '× own floor' columns compare "
    "against.",
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def redis_server(cpu: int | None) -> Iterator[str]:
    """A redis-server of our own on a free loopback port (on ``cpu`` when given); stopped
    by pid on exit."""
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not on PATH (or pass --url)")
    port = free_port()
    directory = tempfile.mkdtemp(prefix="ratekeeper-bench-")
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    command += ["--appendonly", "no", "--dir", directory]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if cpu is not None:
        os.sched_setaffinity(process.pid, {cpu})
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    sys.exit("redis-server did not start")
                time.sleep(0.02)
        client.close()
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(directory, ignore_errors=True)


def source() -> DictSource:
    return DictSource(
        {
            algorithm: SHORT_LOG
            if algorithm == "sliding-log"
            else {"rate": HUGE, "algorithm": algorithm}
            for algorithm in ALGORITHMS
        }
    )


def sync_cases(url: str) -> tuple[list[Case], Callable[[], None]]:
    # The storage's own client (short timeouts, no retries), as users get it; the floor
    # rows use the same client and connection.
    storage = RedisStorage.from_url(url, prefix="bench")
    client = storage.client
    execute = client.execute_command
    sha = client.script_load(RETURN_ONE)
    limiter = Limiter(source(), storage)
    for algorithm in ALGORITHMS:
        assert limiter.hit(algorithm).allowed
    bound = limiter.bound("token-bucket")
    # The same EVALSHA with the keys and arguments of a decision: the transport's share.
    shaped = (sha, *storage._command(bound, "", 1, 0, True)[2:])
    lane = storage._lane
    assert lane is not None, "from_url's client always gets the storage's own path"
    cases = [
        Case(PING, "execute('PING')", {"execute": execute}),
        Case(EVALSHA, "execute('EVALSHA', sha, 0)", {"execute": execute, "sha": sha}),
        Case(SHAPED, "execute('EVALSHA', *shaped)", {"execute": execute, "shaped": shaped}),
        Case(OWN_EVALSHA, "call(packed)", {"call": lane.call, "packed": return_one(sha)}),
        Case(DECIDE, "decide(bound, '', 1, 0, True)", {"decide": storage.decide, "bound": bound}),
    ]
    cases += [Case(SYNC_ROW.format(a), f"hit({a!r})", {"hit": limiter.hit}) for a in ALGORITHMS]
    return cases, storage.close


def return_one(sha: str | bytes) -> bytes:
    """``EVALSHA sha 0`` in the Redis protocol, as the storages' own path sends commands."""
    digest = sha.encode() if isinstance(sha, str) else sha
    return b"*3\r\n$7\r\nEVALSHA\r\n$40\r\n%b\r\n$1\r\n0\r\n" % digest


async def _batch(call: Callable[..., Awaitable[Any]], *args: object) -> None:
    for _ in range(BATCH):
        await call(*args)


def async_cases(url: str, quick: bool) -> tuple[list[Case], Callable[[], None]]:
    loop = asyncio.new_event_loop()
    run = loop.run_until_complete
    storage = AsyncRedisStorage.from_url(url, prefix="bench")
    client = storage.client
    execute = client.execute_command
    sha = run(client.script_load(RETURN_ONE))
    limiter = AsyncLimiter(source(), storage)
    for algorithm in ALGORITHMS:
        assert run(limiter.hit(algorithm)).allowed
    lane = storage._lane
    assert lane is not None, "from_url's client always gets the storage's own path"
    namespace = {
        "run": run,
        "batch": _batch,
        "execute": execute,
        "sha": sha,
        "call": lane.call,
        "packed": return_one(sha),
    }
    calls = 4 if quick else None  # calibrating starts at 100 batches: too long for a smoke run
    cases = [
        Case(ASYNC_PING, "run(batch(execute, 'PING'))", namespace, calls=calls),
        Case(ASYNC_EVALSHA, "run(batch(execute, 'EVALSHA', sha, 0))", namespace, calls=calls),
        Case(ASYNC_OWN_EVALSHA, "run(batch(call, packed))", namespace, calls=calls),
    ]
    cases += [
        Case(
            ASYNC_ROW.format(a),
            f"run(batch(hit, {a!r}))",
            {**namespace, "hit": limiter.hit},
            calls=calls,
        )
        for a in ALGORITHMS
    ]

    def close() -> None:
        run(storage.aclose())
        loop.close()

    return cases, close


def limits_cases(url: str, quick: bool) -> tuple[list[Case], Callable[[], None]]:
    storage = limits.storage.RedisStorage(url)
    item = limits.parse(HUGE)
    cases = []
    for label, strategy in (
        ("FixedWindowRateLimiter", limits.strategies.FixedWindowRateLimiter),
        ("MovingWindowRateLimiter", limits.strategies.MovingWindowRateLimiter),
        ("SlidingWindowCounterRateLimiter", limits.strategies.SlidingWindowCounterRateLimiter),
    ):
        moving = label == "MovingWindowRateLimiter"
        key = f"bench-{label}"
        cases.append(
            Case(
                f"limits {label}.hit (RedisStorage)",
                f"hit(item, {key!r})",
                {"hit": strategy(storage).hit, "item": item},
                before_repeat=storage.reset if moving else None,
                calls=(300 if quick else 3_000) if moving else None,
            )
        )
    return cases, lambda: None


def pyrate_cases(url: str, quick: bool) -> tuple[list[Case], Callable[[], None]]:
    client = redis.Redis.from_url(url)
    rate = pyrate_limiter.Rate(HUGE_AMOUNT, pyrate_limiter.Duration.DAY)
    bucket = pyrate_limiter.RedisBucket.init([rate], client, "bench-pyrate")
    limiter = pyrate_limiter.Limiter(bucket)

    def empty() -> None:
        client.delete("bench-pyrate")

    case = Case(
        "pyrate-limiter Limiter.try_acquire (RedisBucket)",
        "acquire('bench', blocking=False)",
        {"acquire": limiter.try_acquire},
        before_repeat=empty,
        calls=300 if quick else 3_000,
    )

    def close() -> None:
        limiter.close()
        client.close()

    return [case], close


def throttled_cases(url: str) -> tuple[list[Case], Callable[[], None]]:
    store = throttled.store.RedisStore(server=url)
    quota = throttled.per_day(HUGE_AMOUNT)
    cases = []
    for using in ("fixed_window", "sliding_window", "token_bucket", "gcra"):
        limiter = throttled.Throttled(key=f"bench-{using}", using=using, quota=quota, store=store)
        cases.append(
            Case(f"throttled-py Throttled.limit {using} (RedisStore)", "t.limit()", {"t": limiter})
        )
    return cases, lambda: None


def results_table(results: Sequence[Result]) -> str:
    by_name = {result.case.name: result for result in results}
    floors = {False: by_name[EVALSHA].median, True: by_name[ASYNC_EVALSHA].median}
    rows = []
    for result in results:
        is_async = result.case.name.startswith(
            ("redis.asyncio", "ratekeeper AsyncLimiter", "ratekeeper AsyncRedisStorage")
        )
        per = BATCH if is_async else 1
        median = result.median / per / 1000
        rows.append(
            [
                result.case.name,
                f"{median:,.1f}",
                f"{result.low / per / 1000:,.1f}–{result.high / per / 1000:,.1f}",
                f"{result.calls * per:,}",
                f"{result.median / floors[is_async]:.2f}x",
            ]
        )
    headers = ["Case", "µs/decision", "min–max", "calls", "× EVALSHA"]
    return markdown_table(headers, rows, right=(1, 2, 3, 4))


def targets_table(results: Sequence[Result]) -> str:
    """The target ratios from the medians, and from the fastest repeats beside them: on a
    busy machine the medians carry other processes' noise, the fastest repeats less."""
    by_name = {result.case.name: result for result in results}
    floor = by_name[EVALSHA]
    own = by_name[OWN_EVALSHA].median
    async_own = by_name[ASYNC_OWN_EVALSHA].median
    rows = []
    for algorithm in ALGORITHMS:
        sync = by_name[SYNC_ROW.format(algorithm)]
        async_ = by_name[ASYNC_ROW.format(algorithm)]
        to_floor = sync.median / floor.median
        to_sync = async_.median / BATCH / sync.median
        rows.append(
            [
                algorithm,
                f"{sync.median / 1000:.1f}",
                f"{to_floor:.2f}x {'met' if to_floor <= 1.3 else 'missed'}",
                f"{sync.low / floor.low:.2f}x",
                f"{sync.median / own:.2f}x",
                f"{async_.median / BATCH / 1000:.1f}",
                f"{to_sync:.2f}x {'met' if to_sync <= 1.2 else 'missed'}",
                f"{async_.low / BATCH / sync.low:.2f}x",
                f"{async_.median / async_own:.2f}x",
            ]
        )
    headers = [
        "Algorithm",
        "sync µs",
        "sync × EVALSHA (target ≤ 1.3x)",
        "fastest",
        "sync × own floor",
        "async µs",
        "async × sync (target ≤ 1.2x)",
        "fastest",
        "async × own floor",
    ]
    return markdown_table(headers, rows, right=(1, 2, 3, 4, 5, 6, 7, 8))


def report(results: Sequence[Result], repeats: int, server: str, placement: str) -> str:
    info = "\n".join(f"- {label}: {value}" for label, value in machine(PACKAGES))
    method = (
        f"- Server: {server}, loopback; {placement}\n"
        f"- Method: median of {repeats} repeats interleaved round-robin across all cases; "
        "each repeat times a loop of 'calls' iterations with time.perf_counter_ns."
    )
    notes = "\n".join(f"{i}. {note}" for i, note in enumerate(NOTES, 1))
    return "\n\n".join([f"{info}\n{method}", results_table(results), notes, targets_table(results)])


def server_version(url: str) -> str:
    client = redis.Redis.from_url(url)
    try:
        return f"redis-server {client.info('server')['redis_version']}"
    finally:
        client.close()


def run(url: str, quick: bool, repeats: int, placement: str) -> str:
    makers: list[Callable[[], tuple[list[Case], Callable[[], None]]]] = [
        lambda: sync_cases(url),
        lambda: async_cases(url, quick),
        lambda: limits_cases(url, quick),
        lambda: pyrate_cases(url, quick),
        lambda: throttled_cases(url),
    ]
    cases: list[Case] = []
    closers: list[Callable[[], None]] = []
    try:
        for make in makers:
            made, close = make()
            cases += made
            closers.append(close)
        target_ns = 5_000_000 if quick else 100_000_000
        results = measure(cases, repeats=repeats, target_ns=target_ns, min_calls=20)
    finally:
        for close in closers:
            close()
    return report(results, repeats, server_version(url), placement)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few iterations: a CI smoke run")
    parser.add_argument("--url", help="an existing Redis to use (default: start one)")
    parser.add_argument(
        "--cpu",
        type=int,
        metavar="N",
        help="pin this process and the server it starts to CPU N: a round trip then costs "
        "a context switch, not a wake-up of another CPU, and varies less",
    )
    parser.add_argument("--markdown", type=Path, metavar="FILE", help="also write the report")
    parser.add_argument("--repeats", type=int, help="repeats per case (default 7, quick 3)")
    args = parser.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 7)
    placement = "client and server not pinned"
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
        placement = f"client pinned to CPU {args.cpu}"
        if args.url is None:
            placement = f"client and server pinned to CPU {args.cpu}"
    if args.url is not None:
        text = run(args.url, args.quick, repeats, placement)
    else:
        with redis_server(args.cpu) as url:
            text = run(url, args.quick, repeats, placement)
    emit(text, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
