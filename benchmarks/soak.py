"""Soak: processes and threads hammer exact limits on Redis while the limits change and
Redis restarts; then every admission is checked against the limit that was in force.

    python benchmarks/soak.py [--seconds N | --short] [--processes N] [--threads N]

Starts its own redis-server on a free loopback port (persistence off) and restarts it on
the same port once (``--short``, 10 s) or twice (default, 60 s). Worker processes run
threads that call ``Limiter.hit`` on fixed-window, sliding-log and token-bucket limits read
from a RedisSource, each thread with a RedisStorage of its own; the processes alternate
``on_storage_error="raise"`` and ``"local"``. A controller changes the limits through the
RedisSource every few seconds. Prints a Markdown summary and exits 1 on any over-admission.

What counts as over-admission. Each admission made by Redis is recorded with the instants
just before and after the call; the server's clock read inside the script (``TIME``) lies
between them, since the server runs on this host. A restart loses every count (persistence
is off), so right after it a window may admit its amount again: that is the documented
cost of an unreplicated Redis, not an over-admission. Checks therefore run within one
*epoch*, one life of the server, and an admission whose call straddles a stop or a start is
left out. Within an epoch a finding must be certain whatever the true instants were:

* fixed-window: more admissions than the amount in one aligned window (counting only
  calls that lie wholly inside it);
* sliding-log: more than the amount within some span shorter than the period;
* token-bucket: more than ``burst + span × amount / period`` within some span.

Where the limit changed, the largest amount and burst among the admissions concerned is
used. Decisions answered by the ``local`` fallback are counted apart and not checked (they
are this process's own count), nor are calls that raised: a timed-out call may have been
admitted on the server unseen, which can only hide admissions, never invent them.
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, cast

# The server helpers of the test suite, shared rather than copied.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.servers import RedisServer, start_redis

from ratekeeper import Limiter, RedisStorage, StorageError
from ratekeeper.sources import RedisSource
from ratekeeper.storage._redis_core import OnStorageError

# Two phases per limit; the controller flips between them. Periods stay one second.
PHASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "soak.fixed": (
        {"rate": "40/second", "algorithm": "fixed-window"},
        {"rate": "80/second", "algorithm": "fixed-window"},
    ),
    "soak.log": (
        {"rate": "30/second", "algorithm": "sliding-log"},
        {"rate": "60/second", "algorithm": "sliding-log"},
    ),
    "soak.bucket": (
        {"rate": "50/second", "algorithm": "token-bucket", "burst": 10},
        {"rate": "100/second", "algorithm": "token-bucket", "burst": 25},
    ),
}
KEYS = ("k0", "k1")
CHANGE_EVERY = 4.0  # seconds between limit changes
DOWN_FOR = 0.5  # seconds Redis stays down at each restart
RETRY_INTERVAL = 0.2
Admission = tuple[str, str, int, int, int, int, int]  # name, key, t0, t1 µs, amount, period, burst


def now_us() -> int:
    return time.time_ns() // 1000


# ---- worker process ---------------------------------------------------------------------


def worker(
    url: str, hash_key: str, prefix: str, policy: OnStorageError, threads: int, until: float
) -> dict[str, Any]:
    source = RedisSource.from_url(url, interval=0.5, key=hash_key)
    lock = threading.Lock()
    totals: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    admissions: list[Admission] = []

    def run(seed: int) -> None:
        rng = random.Random(seed)
        storage = RedisStorage.from_url(
            url,
            prefix=prefix,
            on_storage_error=policy,
            retry_interval=RETRY_INTERVAL,
        )
        limiter = Limiter(source, storage)
        for name, (first, _) in PHASES.items():
            limiter.register(name, first)  # in force while a restarted Redis has no hash yet
        mine: Counter[str] = Counter()
        wrong: Counter[str] = Counter()
        seen: list[Admission] = []
        while time.time() < until:
            name, key = rng.choice(tuple(PHASES)), rng.choice(KEYS)
            failed_before = storage.failure_counts().get(name, (0, 0))[0]
            t0 = now_us()
            try:
                decision = limiter.hit(name, key)
            except StorageError:
                wrong["StorageError"] += 1
                time.sleep(0.001)  # Redis is down and the policy raises: do not spin
                continue
            except Exception as exc:  # any other exception is a finding: count it by type
                wrong[type(exc).__name__] += 1
                continue
            t1 = now_us()
            mine["decisions"] += 1
            if storage.failure_counts().get(name, (0, 0))[0] != failed_before:
                mine["fallback admitted" if decision.allowed else "fallback denied"] += 1
            elif decision.allowed:
                rate = decision.rate
                burst = decision.policy.burst or rate.amount
                seen.append((name, key, t0, t1, rate.amount, rate.period_us, burst))
            else:
                mine["denied"] += 1
        storage.close()
        with lock:
            totals.update(mine)
            errors.update(wrong)
            admissions.extend(seen)

    pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    source.close()
    return {"totals": dict(totals), "errors": dict(errors), "admissions": admissions}


# ---- checks -----------------------------------------------------------------------------


def fixed_window_excess(items: list[Admission]) -> tuple[int, int]:
    """(windows over their amount, worst excess) among admissions wholly inside a window."""
    windows: dict[int, list[int]] = defaultdict(list)
    for _, _, t0, t1, amount, period, _ in items:
        if t0 // period == t1 // period:
            windows[t0 // period].append(amount)
    excess = [len(amounts) - max(amounts) for amounts in windows.values()]
    bad = [e for e in excess if e > 0]
    return len(bad), max(bad, default=0)


def span_excess(items: list[Admission], bucket: bool) -> tuple[int, int]:
    """(spans over the bound, worst excess): sliding-log when not ``bucket``, else GCRA."""
    ordered = sorted(items, key=lambda item: item[2])
    bad, worst = 0, 0
    for i, (_, _, start, _, _, period, _) in enumerate(ordered):
        latest, amount, burst, count, found = start, 0, 0, 0, 0
        for _, _, t0, t1, a, _, b in ordered[i:]:
            if t0 - start >= period:
                break
            latest, amount, burst, count = max(latest, t1), max(amount, a), max(burst, b), count + 1
            span = latest - start
            if bucket:
                allowed = burst + (span * amount) // period
            elif span < period:
                allowed = amount
            else:
                continue
            found = max(found, count - allowed)
        if found > 0:
            bad, worst = bad + 1, max(worst, found)
    return bad, worst


CHECKS = {
    "soak.fixed": ("fixed-window", fixed_window_excess),
    "soak.log": ("sliding-log", lambda items: span_excess(items, bucket=False)),
    "soak.bucket": ("token-bucket", lambda items: span_excess(items, bucket=True)),
}


# ---- controller -------------------------------------------------------------------------


class Controller:
    """Owns the server: publishes limits, flips them, restarts Redis; records epochs."""

    def __init__(self, hash_key: str) -> None:
        self.hash_key = hash_key
        self.server: RedisServer = start_redis()
        self.port = self.server.port
        self.epochs: list[list[int]] = [[now_us(), 0]]  # [start, end] of each server life
        self.phase = 0
        self.changes = 0
        self.publish()

    @property
    def url(self) -> str:
        return self.server.url

    def publish(self) -> None:
        source = RedisSource.from_url(self.url, key=self.hash_key, subscribe=False, timeout=2.0)
        try:
            for name, phases in PHASES.items():
                source.set(name, phases[self.phase])
        finally:
            source.close()

    def flip(self) -> None:
        self.phase = 1 - self.phase
        self.changes += 1
        self.publish()

    def restart(self) -> None:
        self.server.stop()
        # After the old process has exited: every answer it gave came before this instant.
        self.epochs[-1][1] = now_us()
        time.sleep(DOWN_FOR)
        self.server = start_redis(port=self.port)
        self.epochs.append([now_us(), 0])
        self.publish()  # the new server is empty: the hash too

    def stop(self) -> None:
        self.server.stop()
        self.epochs[-1][1] = now_us()


def soak(seconds: float, processes: int, threads: int, restarts: int, split: bool = False) -> int:
    run = secrets.token_hex(3)
    hash_key, prefix = f"soak-{run}:limits", f"soak-{run}"
    controller = Controller(hash_key)
    out_dir = Path(tempfile.mkdtemp(prefix="ratekeeper-soak-"))
    started = time.time()
    until = started + seconds
    children = []
    for index in range(processes):
        policy = ("raise", "local")[index % 2]
        out = out_dir / f"worker-{index}.json"
        own = f"{prefix}-{index}" if split else prefix  # split: a fault, to test the checks
        command = [sys.executable, __file__, "--worker", controller.url, hash_key, own,
                   policy, str(threads), repr(until), str(out)]  # fmt: skip
        children.append((policy, out, subprocess.Popen(command)))
    restart_at = [started + seconds * (k + 1) / (restarts + 1) for k in range(restarts)]
    change_at = started + CHANGE_EVERY
    try:
        while time.time() < until:
            if restart_at and time.time() >= restart_at[0]:
                restart_at.pop(0)
                controller.restart()
            elif time.time() >= change_at:
                change_at += CHANGE_EVERY
                controller.flip()
            time.sleep(0.05)
        results = []
        for policy, out, child in children:
            code = child.wait(timeout=60)
            if code != 0:
                print(f"a {policy} worker exited with {code}", file=sys.stderr)
                return 1
            results.append((policy, json.loads(out.read_text(encoding="utf-8"))))
    finally:
        for _, _, child in children:
            if child.poll() is None:
                child.kill()
        controller.stop()
    elapsed = time.time() - started
    return report(results, controller, elapsed, processes, threads)


def report(
    results: list[tuple[str, dict[str, Any]]],
    controller: Controller,
    elapsed: float,
    processes: int,
    threads: int,
) -> int:
    totals: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    per_policy: Counter[str] = Counter()
    admissions: list[Admission] = []
    for policy, result in results:
        totals.update(result["totals"])
        errors.update(result["errors"])
        per_policy[policy] += result["totals"].get("decisions", 0)
        admissions.extend(tuple(item) for item in result["admissions"])
    grouped: dict[tuple[str, str, int], list[Admission]] = defaultdict(list)
    straddling = 0
    for item in admissions:
        epoch = next(
            (i for i, (a, b) in enumerate(controller.epochs) if a <= item[2] and item[3] <= b), None
        )
        if epoch is None:
            straddling += 1
        else:
            grouped[(item[0], item[1], epoch)].append(item)
    decisions = totals["decisions"]
    lines = [
        f"## Soak: {elapsed:.0f} s, {processes} processes × {threads} threads, "
        f"{len(controller.epochs) - 1} Redis restarts, {controller.changes} limit changes",
        "",
        "| Measure | Value |",
        "|---|---:|",
        f"| decisions | {decisions} |",
        f"| decisions/s | {decisions / elapsed:.0f} |",
        f"| decisions, raise / local processes | {per_policy['raise']} / {per_policy['local']} |",
        f"| admitted by Redis (checked) | {len(admissions) - straddling} |",
        f"| admitted by Redis, call straddling a restart (not checked) | {straddling} |",
        f"| denied by Redis | {totals['denied']} |",
        f"| answered by the local fallback (admitted / denied) | "
        f"{totals['fallback admitted']} / {totals['fallback denied']} |",
    ]
    lines += [f"| errors: {name} | {count} |" for name, count in sorted(errors.items())]
    if not errors:
        lines.append("| errors | 0 |")
    lines += ["", "| Limit | Algorithm | Admissions checked | Windows or spans over the limit "
              "| Worst excess |", "|---|---|---:|---:|---:|"]  # fmt: skip
    over_total = 0
    for name, (algorithm, check) in CHECKS.items():
        checked, bad, worst = 0, 0, 0
        for (limit, _, _), items in grouped.items():
            if limit == name:
                found = check(items)
                checked, bad, worst = checked + len(items), bad + found[0], max(worst, found[1])
        over_total += bad
        lines.append(f"| {name} | {algorithm} | {checked} | {bad} | {worst} |")
    lines += ["", "| Server life | Seconds |", "|---|---:|"]
    lines += [f"| {i + 1} | {(b - a) / 1e6:.1f} |" for i, (a, b) in enumerate(controller.epochs)]
    lines += ["", f"over-admissions: {over_total} (windows or spans holding more than the limit)"]
    print("\n".join(lines))
    return 1 if over_total or decisions == 0 else 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "--worker":
        url, hash_key, prefix, policy, threads, until, out = args[1:8]
        if policy not in ("raise", "local"):
            raise SystemExit(f"unknown worker policy {policy!r}")
        result = worker(
            url, hash_key, prefix, cast("OnStorageError", policy), int(threads), float(until)
        )
        Path(out).write_text(json.dumps(result), encoding="utf-8")
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=60.0, help="run time (default 60)")
    parser.add_argument("--short", action="store_true", help="10 s with one restart")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=3)
    parser.add_argument(
        "--split-prefix",
        action="store_true",
        help="a deliberate fault: each process counts under a prefix of its own, so the "
        "fleet admits the limit once per process and the checks must report it",
    )
    options = parser.parse_args(args)
    seconds = 10.0 if options.short else options.seconds
    if not 1 <= seconds <= 600 or options.processes < 2 or options.threads < 1:
        parser.error("--seconds must be 1..600, --processes at least 2, --threads at least 1")
    restarts = 1 if options.short else 2
    return soak(seconds, options.processes, options.threads, restarts, options.split_prefix)


if __name__ == "__main__":
    sys.exit(main())
