"""The in-memory hot path, side by side with the peers, in one process and one run.

    python benchmarks/bench_hotpath.py [--quick] [--markdown FILE] [--repeats N]
                                       [--redis-url URL]

Prints the machine, then a Markdown table of nanoseconds per call (median of interleaved
repeats, nothing subtracted) with ratios to a bare function call and to ratekeeper's
decorated call (the default algorithm, sliding-window), then the ratios the performance
contract sets targets for. Every limit is huge, so every call is admitted, except in the
rows marked "denied". ``--quick`` is a smoke run for CI: its numbers mean little.

The named-limit rows read their policy from a DictSource, a FileSource and a RedisSource
(counting in memory): the price of a mutable source on the hot path. The RedisSource row
uses ``--redis-url``, or else a throwaway redis-server started for the run when one is on
PATH; without either the row is left out.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path

import limits
import limits.storage
import limits.strategies
import pyrate_limiter
import ratelimit
import throttled
import token_bucket

import ratekeeper
from _timing import Case, Result, emit, machine, markdown_table, measure
from ratekeeper import (
    ChainSource,
    DictSource,
    EnvSource,
    FileSource,
    Limiter,
    Policy,
    Rate,
    _fastpath,
)
from ratekeeper._rates import ALGORITHMS

HUGE_AMOUNT = 10**9
HUGE = f"{HUGE_AMOUNT}/day"  # never reached in a run: every call is admitted
# A log holds one entry per microsecond with admitted calls in the last period, and a
# step reads all of them: with a day-long period it would grow with the run and measure
# the run's length. A 10 µs period keeps at most 10 entries, the regime a log is for.
SHORT_LOG = Policy((Rate(HUGE_AMOUNT, 0.000_01),), algorithm="sliding-log")

BARE = "bare function call"
EMPTY = "empty loop"
REFERENCE = "ratekeeper @limit sliding-window"
RATELIMIT = "ratelimit @limits"
LIMITS_FIXED = "limits FixedWindowRateLimiter.hit"
LIMITS_MOVING = "limits MovingWindowRateLimiter.hit"
NAMED = "ratekeeper Limiter.limit(name) via "
PURE = "ratekeeper @limit sliding-window, pure Python"
SOURCES = ("DictSource", "FileSource", "RedisSource", "ChainSource")
PACKAGES = ("ratekeeper", "limits", "pyrate-limiter", "throttled-py", "ratelimit", "token-bucket")

NOTES = (
    "Nothing is subtracted: every figure includes one iteration of the loop "
    f"(the {EMPTY!r} row) and, for decorated calls, the call of the decorated function "
    f"(the {BARE!r} row).",
    f"Admitted rows use {HUGE} (10**9 per day) so no call is refused, except the "
    "sliding-log rows: 10**9 per 10 µs, so the log holds at most 10 entries (one per "
    "microsecond) instead of growing with the run.",
    f"{LIMITS_MOVING}: limits keeps one entry per call of the last period (1 second at "
    "least) and inserts each at the front of a list, so its cost grows with the calls "
    "before it; the row is the mean over a fixed number of calls from an empty window "
    "(see 'calls').",
    "pyrate-limiter's InMemoryBucket is a log too, but it skips the scan while the log "
    "holds fewer items than the limit, so its admitted call does not grow with the log.",
    "ratekeeper's decorated calls run their admitted path in a C extension when it is "
    f"built (it is, here); the {PURE!r} row is the same call on the pure-Python path, "
    "which serves where the extension is not built.",
    "Denied rows: a limit of 1/day, hit once before timing. Limiter.hit builds a "
    "Decision each time; limits' hit returns a bool.",
    f"{NAMED}...: the policy is read from that source (counting in memory); FileSource and "
    "RedisSource look for changes from their own thread every second, so a call reads one "
    "attribute, as with DictSource. ChainSource is EnvSource over FileSource over a "
    "DictSource of defaults. The DictSource row runs the very code of the literal "
    "@limit, so its distance from 1.00x shows the noise of the run.",
)


def work() -> None:
    """The function every decorator wraps: does nothing, so the wrapper is what is timed."""


def ratekeeper_cases() -> list[Case]:
    cases = []
    for algorithm in ALGORITHMS:
        if algorithm == "sliding-log":
            decorated = ratekeeper.limit(SHORT_LOG)(work)
        else:
            decorated = ratekeeper.limit(HUGE, algorithm=algorithm)(work)
        cases.append(Case(f"ratekeeper @limit {algorithm}", "call()", {"call": decorated}))
    # The same call where the C extension is not built (or RATEKEEPER_PURE_PYTHON=1).
    speedups, _fastpath.speedups = _fastpath.speedups, None
    try:
        pure = ratekeeper.limit(HUGE)(work)
    finally:
        _fastpath.speedups = speedups
    cases.append(Case(PURE, "call()", {"call": pure}))

    named = Limiter(DictSource({"bench.named": HUGE}))
    cases.append(Case(f"{NAMED}DictSource", "call()", {"call": named.limit("bench.named")(work)}))

    admitted = Limiter(
        DictSource(
            {
                algorithm: SHORT_LOG
                if algorithm == "sliding-log"
                else {"rate": HUGE, "algorithm": algorithm}
                for algorithm in ALGORITHMS
            }
        )
    )
    denied = Limiter(
        DictSource(
            {algorithm: {"rate": "1/day", "algorithm": algorithm} for algorithm in ALGORITHMS}
        )
    )
    for algorithm in ALGORITHMS:
        assert denied.hit(algorithm).allowed
        assert not denied.hit(algorithm).allowed
    for outcome, limiter in (("admitted", admitted), ("denied", denied)):
        for algorithm in ALGORITHMS:
            cases.append(
                Case(
                    f"ratekeeper Limiter.hit {algorithm} {outcome}",
                    f"limiter.hit({algorithm!r})",
                    {"limiter": limiter},
                )
            )
    return cases


def source_cases(resources: ExitStack, redis_url: str | None) -> list[Case]:
    """Named limits read from a file and from a Redis hash (counting in memory)."""
    directory = resources.enter_context(tempfile.TemporaryDirectory())
    path = Path(directory, "ratelimits.toml")
    path.write_text(f'[limits]\n"bench.named" = "{HUGE}"\n', encoding="utf-8")
    file_source = FileSource(path)
    resources.callback(file_source.close)  # before the directory goes
    from_file = Limiter(file_source)
    cases = [Case(f"{NAMED}FileSource", "call()", {"call": from_file.limit("bench.named")(work)})]
    # The usual production chain: environment over file over code defaults.
    env = EnvSource(environ={})
    resources.callback(env.close)
    chain = ChainSource(env, file_source, DictSource({"*": "1/second"}))
    through_chain = Limiter(chain).limit("bench.named")(work)
    cases.append(Case(f"{NAMED}ChainSource", "call()", {"call": through_chain}))
    url = redis_url or _throwaway_redis(resources)
    if url is not None:
        from ratekeeper import RedisSource

        source = resources.enter_context(RedisSource.from_url(url, key="bench:limits"))
        source.set("bench.named", HUGE)
        from_redis = Limiter(source)
        call = from_redis.limit("bench.named")(work)
        call()
        cases.append(Case(f"{NAMED}RedisSource", "call()", {"call": call}))
    return cases


def _throwaway_redis(resources: ExitStack) -> str | None:
    """A redis-server for this run only (stopped by its pid at exit), if one is on PATH."""
    if shutil.which("redis-server") is None:
        return None
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.servers import start_redis

    server = start_redis()
    resources.callback(shutil.rmtree, server.directory, ignore_errors=True)
    resources.callback(server.stop)
    return server.url


def limits_cases(quick: bool) -> list[Case]:
    item = limits.parse(HUGE)
    cases = []
    for label, strategy in (
        ("FixedWindowRateLimiter", limits.strategies.FixedWindowRateLimiter),
        ("MovingWindowRateLimiter", limits.strategies.MovingWindowRateLimiter),
        ("SlidingWindowCounterRateLimiter", limits.strategies.SlidingWindowCounterRateLimiter),
    ):
        storage = limits.storage.MemoryStorage()
        moving = label == "MovingWindowRateLimiter"
        cases.append(
            Case(
                f"limits {label}.hit",
                "strategy.hit(item, 'bench')",
                {"strategy": strategy(storage), "item": item},
                before_repeat=storage.reset if moving else None,
                calls=(1_000 if quick else 10_000) if moving else None,
            )
        )
    storage = limits.storage.MemoryStorage()
    refusing = limits.strategies.FixedWindowRateLimiter(storage)
    one = limits.parse("1/day")
    assert refusing.hit(one, "bench")
    cases.append(
        Case(
            f"{LIMITS_FIXED} denied",
            "strategy.hit(item, 'bench')",
            {"strategy": refusing, "item": one},
        )
    )
    return cases


def pyrate_cases() -> list[Case]:
    rate = pyrate_limiter.Rate(HUGE_AMOUNT, pyrate_limiter.Duration.DAY)
    log = pyrate_limiter.Limiter(pyrate_limiter.InMemoryBucket([rate]))
    state = pyrate_limiter.Limiter(
        pyrate_limiter.StateBucket([rate], algorithm=pyrate_limiter.TokenBucket())
    )
    decorating = pyrate_limiter.Limiter(pyrate_limiter.InMemoryBucket([rate]))
    decorated: Callable[[], None] = decorating.as_decorator(name="bench")(work)  # type: ignore[no-untyped-call]
    stmt = "limiter.try_acquire('bench', blocking=False)"
    return [
        Case("pyrate-limiter Limiter.try_acquire InMemoryBucket", stmt, {"limiter": log}),
        Case(
            "pyrate-limiter Limiter.try_acquire StateBucket token-bucket", stmt, {"limiter": state}
        ),
        Case("pyrate-limiter @as_decorator InMemoryBucket", "call()", {"call": decorated}),
    ]


def throttled_cases() -> list[Case]:
    quota = throttled.per_day(HUGE_AMOUNT)
    cases = []
    for label, using in (("token-bucket", "token_bucket"), ("fixed-window", "fixed_window")):
        store = throttled.MemoryStore()
        direct = throttled.Throttled(key="bench", using=using, quota=quota, store=store)
        decorator = throttled.Throttled(key="deco", using=using, quota=quota, store=store)
        cases.append(Case(f"throttled-py Throttled.limit {label}", "t.limit()", {"t": direct}))
        cases.append(Case(f"throttled-py @Throttled {label}", "call()", {"call": decorator(work)}))
    return cases


def other_cases() -> list[Case]:
    decorated: Callable[[], None] = ratelimit.limits(calls=HUGE_AMOUNT, period=86_400)(work)
    bucket = token_bucket.Limiter(HUGE_AMOUNT / 86_400, HUGE_AMOUNT, token_bucket.MemoryStorage())
    return [
        Case(RATELIMIT, "call()", {"call": decorated}),
        Case("token-bucket Limiter.consume", "bucket.consume('bench')", {"bucket": bucket}),
    ]


def all_cases(quick: bool, resources: ExitStack, redis_url: str | None = None) -> list[Case]:
    return [
        Case(EMPTY, "pass"),
        Case(BARE, "call()", {"call": work}),
        *ratekeeper_cases(),
        *source_cases(resources, redis_url),
        *limits_cases(quick),
        *pyrate_cases(),
        *throttled_cases(),
        *other_cases(),
    ]


def _ratio(value: float, reference: float) -> str:
    return f"{value / reference:.2f}x"


def results_table(results: Sequence[Result]) -> str:
    by_name = {result.case.name: result for result in results}
    bare = by_name[BARE].median
    reference = by_name[REFERENCE].median
    rows = []
    for result in results:
        is_empty = result.case.name == EMPTY
        rows.append(
            [
                result.case.name,
                f"{result.median:,.0f}",
                f"{result.low:,.0f}–{result.high:,.0f}",
                f"{result.calls:,}",
                "" if is_empty else _ratio(result.median, bare),
                "" if is_empty else _ratio(result.median, reference),
            ]
        )
    headers = ["Case", "ns/call", "min–max", "calls", "× bare call", f"× {REFERENCE}"]
    return markdown_table(headers, rows, right=(1, 2, 3, 4, 5))


def targets_table(results: Sequence[Result]) -> str:
    by_name = {result.case.name: result for result in results}
    ratelimit_ns = by_name[RATELIMIT].median
    limits_ns = by_name[LIMITS_FIXED].median
    bare = by_name[BARE].median
    rows = []
    for algorithm in ALGORITHMS:
        ns = by_name[f"ratekeeper @limit {algorithm}"].median
        checks = ((ratelimit_ns, 0.5), (limits_ns, 0.15), (bare, 5.0))
        rows.append(
            [
                f"ratekeeper @limit {algorithm}",
                *(
                    f"{ns / base:.2f}x {'met' if ns / base <= bound else 'missed'}"
                    for base, bound in checks
                ),
            ]
        )
    headers = [
        "Decorated admitted call",
        f"× {RATELIMIT} (target ≤ 0.5x)",
        f"× {LIMITS_FIXED} (target ≤ 0.15x)",
        "× bare call (stretch ≤ 5x)",
    ]
    return markdown_table(headers, rows, right=(1, 2, 3))


def sources_table(results: Sequence[Result]) -> str:
    by_name = {result.case.name: result for result in results}
    reference = by_name[REFERENCE].median
    rows = []
    for source in SOURCES:
        result = by_name.get(NAMED + source)
        if result is None:
            rows.append([NAMED + source, "not run (no Redis)"])
            continue
        ratio = result.median / reference
        rows.append([NAMED + source, f"{ratio:.2f}x {'met' if ratio <= 1.10 else 'missed'}"])
    headers = ["Named limit, admitted call", f"× {REFERENCE} (target ≤ 1.10x)"]
    return markdown_table(headers, rows, right=(1,))


def report(results: Sequence[Result], repeats: int) -> str:
    info = "\n".join(f"- {label}: {value}" for label, value in machine(PACKAGES))
    method = (
        f"- Method: median of {repeats} repeats interleaved round-robin across all cases; "
        "each repeat times a loop of 'calls' iterations with time.perf_counter_ns; "
        "ns per call, nothing subtracted."
    )
    notes = "\n".join(f"{i}. {note}" for i, note in enumerate(NOTES, 1))
    return "\n\n".join(
        [
            f"{info}\n{method}",
            results_table(results),
            notes,
            targets_table(results),
            sources_table(results),
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few iterations: a CI smoke run")
    parser.add_argument("--markdown", type=Path, metavar="FILE", help="also write the report")
    parser.add_argument("--repeats", type=int, help="repeats per case (default 7, quick 3)")
    parser.add_argument("--redis-url", help="the server for the RedisSource row")
    args = parser.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 7)
    target_ns = 2_000_000 if args.quick else 40_000_000
    with ExitStack() as resources:
        cases = all_cases(args.quick, resources, args.redis_url)
        results = measure(cases, repeats=repeats, target_ns=target_ns)
    text = report(results, repeats)
    emit(text, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
