"""Measure how far the sliding-window counter can exceed its amount in a sliding interval.

Runs the pure algorithm (no storage, simulated time) under several loads and prints, for
each, the most calls admitted in any interval of length ``period`` as a multiple of the
amount. The docs quote these figures; run ``python benchmarks/sliding_window_bound.py``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

from ratekeeper import Policy, Rate
from ratekeeper._algorithms import BoundLimit, State

PERIOD_US = 60_000_000


def worst_ratio(amount: int, arrivals: Iterator[int]) -> float:
    """The largest admitted count in any half-open interval of one period, / amount."""
    policy = Policy((Rate(amount, PERIOD_US / 1_000_000),), algorithm="sliding-window")
    meter = BoundLimit.compile("bound", policy).meters[0]
    state: State | None = None
    admitted: list[int] = []
    for now in arrivals:
        outcome = meter.step(state, now, meter, 1, 0)
        if outcome[0]:
            state = outcome[1]  # type: ignore[assignment]
            admitted.append(now)
    best = 0
    start = 0
    for end, at in enumerate(admitted):
        while admitted[start] <= at - PERIOD_US:
            start += 1
        best = max(best, end - start + 1)
    return best / amount


def greedy(amount: int) -> Iterator[int]:
    """Callers retrying 20 times per unit interval, for 40 periods, from mid-window."""
    now = 10 * PERIOD_US + PERIOD_US // 3
    step = max(1, PERIOD_US // (amount * 20))
    while now < 50 * PERIOD_US:
        yield now
        now += step


def random_arrivals(amount: int, seed: int = 7) -> Iterator[int]:
    """Arrivals at random gaps averaging one per unit interval."""
    rnd = random.Random(seed)
    now = 10 * PERIOD_US
    for _ in range(amount * 40):
        now += rnd.randint(1, 2 * PERIOD_US // amount)
        yield now


def adversarial(amount: int) -> Iterator[int]:
    """A full window's calls in its last millisecond, then a steady stream."""
    end_of_window = 11 * PERIOD_US - 1_000
    for _ in range(amount):
        yield end_of_window
    now = 11 * PERIOD_US
    step = max(1, PERIOD_US // (amount * 100))
    while now < 12 * PERIOD_US:
        yield now
        now += step


LOADS: dict[str, Callable[[int], Iterator[int]]] = {
    "random arrivals": random_arrivals,
    "greedy callers": greedy,
    "adversarial": adversarial,
}


def main() -> None:
    amounts = (10, 100, 1000)
    print("| load | " + " | ".join(f"{a}/minute" for a in amounts) + " |")
    print("|---|" + "---|" * len(amounts))
    for label, load in LOADS.items():
        ratios = [worst_ratio(amount, load(amount)) for amount in amounts]
        print(f"| {label} | " + " | ".join(f"{r:.3f}x" for r in ratios) + " |")


if __name__ == "__main__":
    main()
