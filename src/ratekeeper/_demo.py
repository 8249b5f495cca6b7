"""The demo behind ``ratekeeper demo``: a decorated function, a loop, a live limit change.

It uses only the public API, the way a user would, and runs on the in-memory default. The
limit lives in a TOML file read by a :class:`~ratekeeper.FileSource`; halfway the demo
rewrites the file, as an operator would, and the limiter picks the change up by itself.
Time and sleep are injected so the demo itself can be tested without waiting. The fleet
variant (several processes sharing Redis) is in :mod:`ratekeeper._demo_fleet`.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from ratekeeper._limiter import Limiter
from ratekeeper._rates import ALGORITHMS, Policy, Rate
from ratekeeper.exceptions import ConfigError, RateLimitExceeded
from ratekeeper.sources import FileSource
from ratekeeper.storage import MemoryStorage

__all__ = [
    "ALGORITHMS",
    "LIMIT_NAME",
    "POLL_INTERVAL",
    "Tally",
    "check_rates",
    "limits_toml",
    "per_second",
    "run_demo",
    "write_limits",
]

LIMIT_NAME = "demo.send"
# How often the FileSource looks at the file: short, so the change shows within the second
# it is made, and still far from a stat per call.
POLL_INTERVAL = 0.25


def check_rates(before: str, after: str, algorithm: str) -> None:
    """Raise a ConfigError naming the option whose value is bad."""
    for option, text in (("--before", before), ("--after", after)):
        try:
            Policy(Rate.parse_many(text), algorithm=algorithm)  # type: ignore[arg-type]
        except ConfigError as exc:
            raise ConfigError(f"{option} {text!r}: {exc}") from None


def limits_toml(rate: str, algorithm: str) -> str:
    """The limits file the demo writes: one limit, in the documented format."""
    return f'[limits."{LIMIT_NAME}"]\nrate = "{rate}"\nalgorithm = "{algorithm}"\n'


def write_limits(path: Path, rate: str, algorithm: str) -> None:
    """Replace the file in one rename, as editors and deploy tools do: readers see the old
    file or the new one, never half of it."""
    scratch = path.with_suffix(".toml.new")
    scratch.write_text(limits_toml(rate, algorithm), encoding="utf-8")
    os.replace(scratch, path)


def per_second(policy: Policy | None) -> float:
    """The tightest rate of a policy, in units per second."""
    if policy is None:
        return math.inf
    return min(rate.amount / rate.period for rate in policy.rates)


def _label(policy: Policy | None) -> str:
    return ";".join(map(str, policy.rates)) if policy is not None else "-"


@dataclass
class Tally:
    """Admitted and refused calls per second, and the rate of each whole second under
    a single limit (the figures the summary compares with the limits)."""

    admitted: int = 0
    refused: int = 0
    rows: list[tuple[str, int, int]] = field(default_factory=list)
    under: dict[str, list[int]] = field(default_factory=dict)

    def close_second(self, labels: set[str], admitted: int, refused: int) -> str:
        label = " -> ".join(sorted(labels, key=lambda text: text not in self.under))
        self.rows.append((label, admitted, refused))
        if len(labels) == 1:
            self.under.setdefault(label, []).append(admitted)
        return label

    def followed(self) -> str:
        parts = [
            f"{sum(counts) / len(counts):g}/s under {label!r}"
            for label, counts in self.under.items()
            if counts
        ]
        return ", ".join(parts) if parts else "no whole second under one limit"


def run_demo(
    *,
    seconds: float,
    before: str,
    after: str,
    calls_per_second: int,
    algorithm: str = "sliding-log",
    out: TextIO,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    directory: str | os.PathLike[str] | None = None,
) -> int:
    """Call a limited function in a loop; halfway, rewrite the limits file it reads."""
    try:
        check_rates(before, after, algorithm)
    except ConfigError as exc:
        out.write(f"ratekeeper demo: {exc}\n")
        return 2
    with tempfile.TemporaryDirectory(prefix="ratekeeper-demo-", dir=directory) as folder:
        path = Path(folder) / "ratelimits.toml"
        write_limits(path, before, algorithm)
        source = FileSource(path, interval=POLL_INTERVAL, clock=clock)
        limiter = Limiter(source, MemoryStorage(clock=clock))
        return _loop(
            limiter,
            source,
            path,
            seconds,
            before,
            after,
            calls_per_second,
            algorithm,
            out,
            clock,
            sleep,
        )


def _loop(
    limiter: Limiter,
    source: FileSource,
    path: Path,
    seconds: float,
    before: str,
    after: str,
    calls_per_second: int,
    algorithm: str,
    out: TextIO,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> int:
    @limiter.limit(LIMIT_NAME)
    def send(n: int) -> int:
        return n

    out.write(
        f"{path} holds the limit {LIMIT_NAME!r}:\n\n"
        + "".join(f"    {line}\n" for line in limits_toml(before, algorithm).splitlines())
        + f"\nsend() is decorated with @limiter.limit({LIMIT_NAME!r}) and called "
        f"{calls_per_second} times a second for {seconds:g} s.\n"
        f"At {seconds / 2:g} s the file is rewritten with rate = {after!r}; the limiter "
        f"looks at the file every {POLL_INTERVAL:g} s.\n\n"
        f"{'second':>6}  {'limit':<21} {'admitted':>8} {'refused':>8}\n"
    )
    out.flush()
    tally = Tally()
    start = clock()
    step = 1.0 / calls_per_second
    rewritten_at: float | None = None
    policy = source.snapshot().resolve(LIMIT_NAME)
    labels = {_label(policy)}
    current = [0, 0]
    second = 0
    n = 0
    while True:
        elapsed = clock() - start
        if elapsed >= seconds:
            break
        if int(elapsed) > second:
            _row(out, second, tally.close_second(labels, *current), current)
            labels, current, second = {_label(policy)}, [0, 0], int(elapsed)
        if rewritten_at is None and elapsed >= seconds / 2:
            write_limits(path, after, algorithm)
            rewritten_at = elapsed
            out.write(f"{'':>6}  -- {path.name} rewritten: rate = {after!r} --\n")
        try:
            send(n)
            current[0] += 1
            tally.admitted += 1
        except RateLimitExceeded:
            current[1] += 1
            tally.refused += 1
        n += 1
        seen = source.snapshot().resolve(LIMIT_NAME)
        if seen is not policy:
            # The limiter read the file on this call: no restart, no re-decoration, and
            # the calls already counted still count.
            policy = seen
            labels.add(_label(policy))
            lag = f" {elapsed - rewritten_at:.2f} s after the rewrite" if rewritten_at else ""
            out.write(f"{'':>6}  -- the limiter now applies {_label(policy)!r}{lag} --\n")
        delay = start + n * step - clock()
        if delay > 0:
            sleep(delay)
    if current != [0, 0]:
        _row(out, second, tally.close_second(labels, *current), current)
    out.write(
        f"\nadmitted {tally.admitted}, refused {tally.refused} of {n} calls; "
        f"admitted per second: {tally.followed()}.\n"
    )
    return 0


def _row(out: TextIO, second: int, limit: str, counts: list[int]) -> None:
    out.write(f"{second + 1:>6}  {limit:<21} {counts[0]:>8} {counts[1]:>8}\n")
    out.flush()
