"""The demo behind ``ratekeeper demo``: a decorated function, a loop, a live limit change.

It uses only the public API, the way a user would, and runs on the in-memory default.
Time and sleep are injected so the demo itself can be tested without waiting.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TextIO

from ratekeeper._limiter import Limiter
from ratekeeper._rates import ALGORITHMS, Policy, Rate
from ratekeeper.exceptions import ConfigError, RateLimitExceeded
from ratekeeper.sources import DictSource
from ratekeeper.storage import MemoryStorage

__all__ = ["ALGORITHMS", "run_demo"]

LIMIT_NAME = "demo.send"


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
) -> int:
    """Call a limited function in a loop; halfway, change its limit in the source."""
    try:
        before_rates = Rate.parse_many(before)
        after_rates = Rate.parse_many(after)
        Policy(before_rates, algorithm=algorithm)  # type: ignore[arg-type]
    except ConfigError as exc:
        out.write(f"ratekeeper demo: {exc}\n")
        return 2
    source = DictSource({LIMIT_NAME: {"rate": before, "algorithm": algorithm}})
    limiter = Limiter(source, MemoryStorage(clock=clock))

    @limiter.limit(LIMIT_NAME)
    def send(n: int) -> int:
        return n

    out.write(
        f"Calling send() {calls_per_second} times a second for {seconds:g} s under the limit "
        f"{LIMIT_NAME!r} = {before!r} ({algorithm});\n"
        f"at {seconds / 2:g} s the config source changes it to {after!r}.\n\n"
        f"{'second':>6}  {'limit':<16} {'admitted':>8} {'refused':>8}\n"
    )
    start = clock()
    step = 1.0 / calls_per_second
    changed = False
    totals = {"admitted": 0, "refused": 0}
    current = [0, 0]
    second = 0
    n = 0
    while True:
        elapsed = clock() - start
        if elapsed >= seconds:
            break
        if int(elapsed) > second:
            _row(out, second, after if changed else before, current)
            current = [0, 0]
            second = int(elapsed)
        if not changed and elapsed >= seconds / 2:
            # The next call sees the new policy: no restart, no re-decoration, and the
            # calls already counted still count.
            source.set(LIMIT_NAME, {"rate": after, "algorithm": algorithm})
            changed = True
            out.write(f"{'':>6}  -- limit changed to {after!r} --\n")
        try:
            send(n)
            current[0] += 1
            totals["admitted"] += 1
        except RateLimitExceeded:
            current[1] += 1
            totals["refused"] += 1
        n += 1
        next_at = start + n * step
        delay = next_at - clock()
        if delay > 0:
            sleep(delay)
    if current != [0, 0]:
        _row(out, second, after if changed else before, current)
    before_rate = _per_second(before_rates)
    after_rate = _per_second(after_rates)
    out.write(
        f"\nadmitted {totals['admitted']}, refused {totals['refused']} of {n} calls; "
        f"the limit allowed about {before_rate:g}/s before the change and {after_rate:g}/s "
        "after it, and the admitted rate followed.\n"
    )
    return 0


def _row(out: TextIO, second: int, limit: str, counts: list[int]) -> None:
    out.write(f"{second + 1:>6}  {limit:<16} {counts[0]:>8} {counts[1]:>8}\n")
    out.flush()


def _per_second(rates: tuple[Rate, ...]) -> float:
    return min(rate.amount / rate.period for rate in rates) if rates else math.inf
