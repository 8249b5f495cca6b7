"""The four algorithms, as pure functions of (state, now, meter, cost).

Everything counts in integer microseconds. A *state* is a tuple of ints whose first item is
the instant it expires (from then on it is equivalent to no state at all); a step returns

    (allowed, new_state, available, retry_after_us, reset_after_us, binding_index)

and never writes anything: the storage keeps ``new_state`` when it is not None. That is
the state after an admission, or, for a refused token bucket whose rate or burst changed,
the bucket converted to the new rate (consuming nothing): a change takes effect on the
next call, admitted or not, so the old bucket never refills at the old rate. This tuple
is also the storage's reply to the limiter (an *outcome*), so the admitted hot path
allocates nothing else. ``retry_after_us`` is 0 when admitted now, the wait when admitted
by reservation (token bucket only), the time until the same cost would be admitted when
refused, and -1 when it never can be.

The Lua scripts under ``storage/lua`` implement this same specification; products that
could exceed 2**53 are computed in floats here exactly as Lua computes them in doubles, so
the two agree bit for bit (a differential test holds them to it). Nothing in this module
knows about names, keys, locks, clocks or I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ratekeeper._rates import Algorithm, Policy

if TYPE_CHECKING:
    from ratekeeper._adaptive import Backoff

__all__ = ["BoundLimit", "Meter", "Outcome", "State", "decide"]

State = tuple[int, ...]
Outcome = tuple[bool, object, int, int, int, int]
Step = Callable[["State | None", int, "Meter", int, int], Outcome]

NEVER = -1


@dataclass(frozen=True, slots=True)
class Meter:
    """One rate of a policy, compiled for counting: integers only."""

    algorithm: Algorithm
    amount: int
    period_us: int
    capacity: int  # the most one decision can ever admit: the amount, or the burst
    interval_us: int  # token bucket: microseconds per unit (rounded up); windows: 0
    slot: str  # identity of this meter's state: limit name, algorithm, period; never the amount
    step: Step


def fixed_window(state: State | None, now: int, m: Meter, cost: int, max_wait: int) -> Outcome:
    """At most ``amount`` per window of ``period`` aligned to the clock's zero."""
    period = m.period_us
    index = now // period
    count = 0
    if state is not None and state[1] >= index:  # a clock behind the state stays in its window
        index = state[1]
        count = state[2]
    end = (index + 1) * period
    available = m.amount - count if count < m.amount else 0
    if count + cost <= m.amount:
        return (True, (end, index, count + cost), available, 0, end - now, 0)
    return (False, None, available, end - now, end - now, 0)


def sliding_window(state: State | None, now: int, m: Meter, cost: int, max_wait: int) -> Outcome:
    """The weighted two-window counter: the previous window counts by its overlap."""
    period = m.period_us
    amount = m.amount
    index = now // period
    current = previous = 0
    if state is not None:
        if state[1] >= index:
            index = state[1]
            current = state[2]
            previous = state[3]
        elif state[1] == index - 1:
            previous = state[2]
    elapsed = now - index * period
    if elapsed < 0:
        elapsed = 0
    used = float(previous) * (period - elapsed) / period + current
    available = math.floor(amount - used)
    if available < 0:
        available = 0
    if used + cost <= amount:
        end = (index + 2) * period
        return (True, (end, index, current + cost, previous), available, 0, end - now, 0)
    if current + cost <= amount:
        # Only the previous window's weight is in the way: wait until it has faded enough.
        fade = float(amount - current - cost) * period / previous
        wait = math.ceil(period - fade) - elapsed
    else:
        # This window's own count is in the way: it must first become the previous one.
        fade = float(amount - cost) * period / current
        wait = period - elapsed + max(0, math.ceil(period - fade))
    if wait < 1:
        wait = 1
    if current:
        reset = (index + 2) * period - now
    elif previous:
        reset = (index + 1) * period - now
    else:
        reset = 0
    return (False, None, available, wait, reset, 0)


def sliding_log(state: State | None, now: int, m: Meter, cost: int, max_wait: int) -> Outcome:
    """Exact: at most ``amount`` in any half-open interval of length ``period``.

    The state lists (time, units) pairs after the expiry; O(amount) in the worst case.
    """
    period = m.period_us
    horizon = now - period  # an entry at t counts while t > now - period
    live: list[int] = []
    used = 0
    if state is not None:
        for i in range(1, len(state), 2):
            if state[i] > horizon:
                live.append(state[i])
                live.append(state[i + 1])
                used += state[i + 1]
    available = m.amount - used if used < m.amount else 0
    if used + cost <= m.amount:
        at = now
        if live and live[-2] >= now:  # a clock behind the log appends at its end, in order
            at = live[-2]
            live[-1] += cost
        else:
            live.append(now)
            live.append(cost)
        end = at + period
        return (True, (end, *live), available, 0, end - now, 0)
    need = used + cost - m.amount
    freed = 0
    wait = 0
    for i in range(0, len(live), 2):
        freed += live[i + 1]
        if freed >= need:
            wait = live[i] + period - now
            break
    return (False, None, available, wait, live[-2] + period - now, 0)


def token_bucket(state: State | None, now: int, m: Meter, cost: int, max_wait: int) -> Outcome:
    """GCRA: one "theoretical arrival time" per key; refill ``amount/period`` up to capacity.

    A request may be admitted ``max_wait`` microseconds in the future (a reservation): the
    slot is taken now and the caller waits ``retry_after``, so waiters are paced evenly.
    """
    interval = m.interval_us
    capacity = m.capacity
    tat = now
    converted = False
    if state is not None and state[1] > now:
        tat = state[1]
        if state[2] != interval or state[3] != capacity:
            converted = True
            # The rate or burst changed: keep the bucket's level (whole units, as in the old
            # bucket), clamped into the new capacity, and refill from there at the new rate.
            level = (state[3] * state[2] - (state[1] - now)) // state[2]
            if level > capacity:
                level = capacity
            tat = now + (capacity - level) * interval
    tolerance = capacity * interval
    available = (now + tolerance - tat) // interval
    if available < 0:
        available = 0
    new_tat = tat + cost * interval
    wait = new_tat - tolerance - now
    if wait <= max_wait:
        return (
            True,
            (new_tat, new_tat, interval, capacity),
            available,
            wait if wait > 0 else 0,  # max(wait, 0) without the cost of a builtin call
            new_tat - now,
            0,
        )
    kept = (tat, tat, interval, capacity) if converted else None
    return (False, kept, available, wait, tat - now, 0)


STEPS: dict[Algorithm, Step] = {
    "fixed-window": fixed_window,
    "sliding-window": sliding_window,
    "sliding-log": sliding_log,
    "token-bucket": token_bucket,
}


@dataclass(frozen=True, slots=True)
class BoundLimit:
    """A policy bound to a limit name and compiled for the storages."""

    name: str
    policy: Policy
    meters: tuple[Meter, ...]
    backoff: Backoff | None = None  # set for adaptive limits (see _adaptive)

    @property
    def backoff_slot(self) -> str:
        """Identity of this limit's back-off state (shared by all its rates)."""
        return f"{self.name}\x1fbackoff"

    @classmethod
    def compile(cls, name: str, policy: Policy, backoff: Backoff | None = None) -> BoundLimit:
        meters = []
        for index, rate in enumerate(policy.rates):
            period = rate.period_us
            capacity = rate.amount
            interval = 0
            if policy.algorithm == "token-bucket":
                interval = -(-period // rate.amount)
                if index == 0 and policy.burst is not None:
                    capacity = policy.burst
            meters.append(
                Meter(
                    algorithm=policy.algorithm,
                    amount=rate.amount,
                    period_us=period,
                    capacity=capacity,
                    interval_us=interval,
                    slot=f"{name}\x1f{policy.algorithm}\x1f{period}",
                    step=STEPS[policy.algorithm],
                )
            )
        return cls(name, policy, tuple(meters), backoff)


def decide(
    meters: Sequence[Meter],
    states: Sequence[State | None],
    now: int,
    cost: int,
    max_wait: int,
) -> Outcome:
    """Decide all meters of a policy at once: admitted only if every one admits.

    The outcome's ``new_state`` is a list with one state per meter when admitted (nothing to
    write for ``cost == 0``, which is always admitted). A refusal consumes nothing: its
    ``new_state`` is None, or a list holding the converted state of each refused token
    bucket whose rate changed, and None for every other meter.
    """
    results: list[Outcome] = []
    for meter, state in zip(meters, states, strict=True):
        if cost > meter.capacity:
            peeked = meter.step(state, now, meter, 0, 0)
            results.append((False, None, peeked[2], NEVER, peeked[4], 0))
        else:
            results.append(meter.step(state, now, meter, cost, max_wait))
    available = min(r[2] for r in results)
    reset = max(r[4] for r in results)
    if cost == 0:
        return (True, None, available, 0, reset, _tightest(results))
    refused = [i for i, r in enumerate(results) if not r[0]]
    if refused:
        never = [i for i in refused if results[i][3] == NEVER]
        binding = never[0] if never else max(refused, key=lambda i: results[i][3])
        kept = [None if r[0] else r[1] for r in results]
        keep = kept if any(state is not None for state in kept) else None
        return (False, keep, available, results[binding][3], reset, binding)
    wait = max(r[3] for r in results)
    if wait > 0 and len(results) > 1:
        # A reservation must hold every rate at the same future instant, or the rates that
        # had room now would count the units earlier than they are used.
        at = now + wait
        results = [m.step(s, at, m, cost, 0) for m, s in zip(meters, states, strict=True)]
        if not all(r[0] for r in results):  # pragma: no cover - follows from the first pass
            return (False, None, available, wait, reset, 0)
        reset = max(r[4] for r in results) + wait
    return (True, [r[1] for r in results], available, wait, reset, _tightest(results))


def _tightest(results: Sequence[Outcome]) -> int:
    return min(range(len(results)), key=lambda i: results[i][2])
