"""The fleet variant of ``ratekeeper demo --redis URL --workers N``: processes sharing a limit.

The command starts N worker processes (``python -m ratekeeper._demo_fleet``). Each one
decorates a function with a limit read from the same source (a TOML file, or a Redis hash
through :class:`~ratekeeper.RedisSource`), counts in the same :class:`~ratekeeper.RedisStorage`,
calls it in a loop and reports its admitted and refused calls per second as JSON lines.
The parent adds the workers' figures up per second, changes the limit halfway, and shows
that together the workers admit no more than the limit in force. Every key the run writes
starts with a prefix of its own, and is deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import queue
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, Literal, TextIO

from ratekeeper._demo import (
    LIMIT_NAME,
    POLL_INTERVAL,
    Tally,
    check_rates,
    write_limits,
)
from ratekeeper._limiter import Limiter
from ratekeeper._rates import Policy
from ratekeeper.exceptions import ConfigError, RateLimitExceeded, StorageError

__all__ = ["FleetError", "bound_per_second", "run_fleet", "worker"]

SourceKind = Literal["file", "redis"]
_READY_TIMEOUT = 60.0  # seconds for every worker to import, connect and report ready
_START_DELAY = 0.3  # between "go" and the first call, so every worker starts together


class FleetError(Exception):
    """The fleet could not run (Redis unreachable, a worker failed to start)."""


def bound_per_second(policy: Policy) -> int:
    """The most calls any one-second interval may hold under ``policy``'s tightest rate
    (exact for sliding-log, which the demo uses by default)."""
    return min(rate.amount * max(1, math.ceil(1.0 / rate.period)) for rate in policy.rates)


def run_fleet(
    *,
    url: str,
    workers: int,
    seconds: float,
    before: str,
    after: str,
    calls_per_second: int,
    algorithm: str,
    source_kind: SourceKind,
    out: TextIO,
) -> int:
    """Run ``workers`` processes against one Redis; halfway, change the limit they share."""
    check_rates(before, after, algorithm)
    import redis

    from ratekeeper.sources import RedisSource

    try:
        client = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        client.ping()
    except (redis.RedisError, ValueError) as exc:
        raise FleetError(f"cannot reach Redis at {url}: {exc}") from None
    run = f"{os.getpid()}-{secrets.token_hex(3)}"
    prefix = f"ratekeeper-demo-{run}"
    hash_key = f"{prefix}:limits"
    spec = {"rate": before, "algorithm": algorithm}
    with tempfile.TemporaryDirectory(prefix="ratekeeper-demo-") as folder:
        path = Path(folder) / "ratelimits.toml"
        redis_source: RedisSource | None = None
        if source_kind == "file":
            write_limits(path, before, algorithm)
            where = f"file:{path}"
        else:
            redis_source = RedisSource(client, key=hash_key, subscribe=False)
            redis_source.set(LIMIT_NAME, spec)
            where = f"redis:{hash_key}"
        processes: list[subprocess.Popen[str]] = []
        try:
            for _ in range(workers):
                processes.append(_spawn(url, where, prefix, seconds, calls_per_second))
            fleet = _Fleet(processes, out)
            fleet.wait_ready()
            out.write(
                f"{workers} processes share the limit {LIMIT_NAME!r} = {before!r} ({algorithm}), "
                f"read from {_describe(source_kind, path, hash_key)} and counted in Redis "
                f"at {url}.\nEach calls send() {calls_per_second} times a second for "
                f"{seconds:g} s; at {seconds / 2:g} s the limit becomes {after!r}.\n\n"
            )
            fleet.header()
            start = time.time() + _START_DELAY
            fleet.go(start)

            def change() -> str:
                if redis_source is not None:
                    redis_source.set(LIMIT_NAME, {"rate": after, "algorithm": algorithm})
                    return f"RedisSource.set({LIMIT_NAME!r}, {after!r})"
                write_limits(path, after, algorithm)
                return f"{path.name} rewritten: rate = {after!r}"

            return fleet.collect(start, seconds / 2, change)
        finally:
            for process in processes:
                _stop(process)
            if redis_source is not None:
                redis_source.close()
            _delete_keys(client, prefix)
            client.close()


def _describe(kind: SourceKind, path: Path, key: str) -> str:
    return f"the file {path}" if kind == "file" else f"the Redis hash {key!r}"


def _spawn(url: str, where: str, prefix: str, seconds: float, calls: int) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "ratekeeper._demo_fleet", url, where, prefix]
    command += [repr(seconds), str(calls)]
    return subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
    )


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            stream.close()


def _delete_keys(client: Any, prefix: str) -> None:
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    except Exception:  # the demo is over; leftover keys expire on their own
        return


class _Fleet:
    """The parent's side: reads every worker's lines, prints one row per second."""

    def __init__(self, processes: Sequence[subprocess.Popen[str]], out: TextIO) -> None:
        self.processes = processes
        self.out = out
        self.inbox: queue.Queue[tuple[int, dict[str, Any] | None]] = queue.Queue()
        self.seconds: dict[int, dict[int, dict[str, Any]]] = {}
        self.printed = 0
        self.tally = Tally()
        self.over = 0
        self.calls = 0
        self.note: tuple[int, str] | None = None
        for index, process in enumerate(processes):
            assert process.stdout is not None
            threading.Thread(target=self._read, args=(index, process.stdout), daemon=True).start()

    def _read(self, index: int, stream: IO[str]) -> None:
        for line in stream:
            try:
                self.inbox.put((index, json.loads(line)))
            except ValueError:
                continue
        self.inbox.put((index, None))

    def wait_ready(self) -> None:
        ready: set[int] = set()
        deadline = time.monotonic() + _READY_TIMEOUT
        while len(ready) < len(self.processes):
            try:
                index, message = self.inbox.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise FleetError("the worker processes did not start in time") from None
            if message is None:
                code = self.processes[index].wait()
                raise FleetError(f"worker {index + 1} stopped before starting (exit code {code})")
            ready.add(index)

    def go(self, start: float) -> None:
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.write(f"{start!r}\n")
            process.stdin.close()

    def header(self) -> None:
        names = " ".join(f"{f'w{i + 1}':>4}" for i in range(len(self.processes)))
        self.out.write(f"{'second':>6}  {'limit':<21} {names}  {'together':>8} {'refused':>8}\n")
        self.out.flush()

    def collect(self, start: float, change_after: float, change: Callable[[], str]) -> int:
        change_at = start + change_after
        done: set[int] = set()
        failed = False
        changed = False
        while len(done) < len(self.processes):
            timeout = 1.0 if changed else max(0.0, min(1.0, change_at - time.time()))
            try:
                index, message = self.inbox.get(timeout=timeout)
            except queue.Empty:
                message = None
                index = -1
            if not changed and time.time() >= change_at:
                # Shown above the row of the second in which it happened, whenever the
                # workers' reports of the previous second arrive.
                self.note = (int(change_after), change())
                changed = True
            if index < 0:
                continue
            if message is None:
                done.add(index)
                failed = failed or self.processes[index].wait() != 0
            elif "second" in message:
                self.seconds.setdefault(message["second"], {})[index] = message
                self._flush()
            elif "calls" in message:
                self.calls += message["calls"]
        self._flush(final=True)
        self.out.write(
            f"\n{len(self.processes)} processes admitted {self.tally.admitted}, refused "
            f"{self.tally.refused} of {self.calls} calls; admitted per second together: "
            f"{self.tally.followed()}.\n"
        )
        if self.over:
            self.out.write(
                f"In {self.over} second(s) together they admitted more than the limit.\n"
            )
        else:
            self.out.write("In no second did they together admit more than the limit in force.\n")
        return 1 if failed else 0

    def _flush(self, *, final: bool = False) -> None:
        # Rows come out in order, each once every worker has reported its second.
        while self.printed in self.seconds and (
            final or len(self.seconds[self.printed]) == len(self.processes)
        ):
            self._row(self.printed, self.seconds.pop(self.printed))
            self.printed += 1
        if final:
            for second in sorted(self.seconds):
                self._row(second, self.seconds.pop(second))

    def _row(self, second: int, reports: dict[int, dict[str, Any]]) -> None:
        if self.note is not None and self.note[0] <= second:
            self.out.write(f"{'':>6}  -- {self.note[1]} --\n")
            self.note = None
        labels = {label for report in reports.values() for label in report["limits"]}
        admitted = sum(report["admitted"] for report in reports.values())
        refused = sum(report["refused"] for report in reports.values())
        bound = max(report["bound"] for report in reports.values())
        self.tally.admitted += admitted
        self.tally.refused += refused
        label = self.tally.close_second(labels, admitted, refused)
        each = " ".join(
            f"{reports[i]['admitted'] if i in reports else '-':>4}"
            for i in range(len(self.processes))
        )
        mark = ""
        if admitted > bound:
            self.over += 1
            mark = f"  over the limit of {bound}"
        self.out.write(f"{second + 1:>6}  {label:<21} {each}  {admitted:>8} {refused:>8}{mark}\n")
        self.out.flush()


def worker(
    url: str, where: str, prefix: str, seconds: float, calls: int, inp: TextIO, out: TextIO
) -> int:
    """One process of the fleet: the decorated function, the loop, one JSON line a second."""
    from ratekeeper.sources import FileSource, RedisSource, Source
    from ratekeeper.storage.redis import RedisStorage

    kind, _, location = where.partition(":")
    source: Source
    if kind == "file":
        source = FileSource(location, interval=POLL_INTERVAL)
    else:
        source = RedisSource.from_url(url, key=location, interval=POLL_INTERVAL)
    storage = RedisStorage.from_url(url, prefix=prefix)
    limiter = Limiter(source, storage)

    @limiter.limit(LIMIT_NAME)
    def send(n: int) -> int:
        return n

    def emit(**message: object) -> None:
        out.write(json.dumps(message) + "\n")
        out.flush()

    limiter.peek(LIMIT_NAME)  # loads the script and reads the source before the clock starts
    emit(ready=True)
    start_wall = float(inp.readline())
    # Each process counts on its own monotonic clock, aligned to the instant the parent
    # chose on the wall clock.
    start = time.monotonic() + (start_wall - time.time())
    step = 1.0 / calls
    counts = [0, 0]
    labels: list[str] = []
    bound = 0
    second = n = 0
    while True:
        delay = start + n * step - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        elapsed = time.monotonic() - start
        if int(elapsed) > second or elapsed >= seconds:
            emit(second=second, admitted=counts[0], refused=counts[1], limits=labels, bound=bound)
            counts, labels, bound, second = [0, 0], [], 0, int(elapsed)
        if elapsed >= seconds:
            break
        try:
            send(n)
            counts[0] += 1
        except RateLimitExceeded:
            counts[1] += 1
        n += 1
        policy = source.snapshot().resolve(LIMIT_NAME)
        if policy is not None:
            label = ";".join(map(str, policy.rates))
            if label not in labels:
                labels.append(label)
            bound = max(bound, bound_per_second(policy))
    emit(calls=n)
    storage.close()
    close = getattr(source, "close", None)
    if close is not None:
        close()
    return 0


def _main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m ratekeeper._demo_fleet")
    parser.add_argument("url")
    parser.add_argument("where")
    parser.add_argument("prefix")
    parser.add_argument("seconds", type=float)
    parser.add_argument("calls", type=int)
    args = parser.parse_args(argv)
    try:
        return worker(
            args.url, args.where, args.prefix, args.seconds, args.calls, sys.stdin, sys.stdout
        )
    except (ConfigError, StorageError, ValueError) as exc:
        sys.stderr.write(f"ratekeeper demo worker: error: {exc}\n")
        return 1
    except KeyboardInterrupt:  # the parent stops too, and says so
        return 130


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
