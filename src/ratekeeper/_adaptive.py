"""Adaptive back-off: the effective rate of a limit drops when downstream throttles, then
recovers. Pure functions of a small state, like the algorithms.

The state of one (limit name, key) is ``(expires_at, scale, since, step, quiet, cooldown)``
in permille and microseconds: ``scale`` is the fraction of the configured rate in force
since ``since``; after each ``quiet`` interval without a new throttle it regains ``step``,
up to 1000 (then the state has expired and is equivalent to none). A throttle multiplies
the current scale by ``decrease``, at most once per ``cooldown`` so that a burst of
throttled replies across a fleet counts as one signal. The effective rate is never above
the configured one. Scaling changes only amounts and capacities, never the identity of a
meter's state, so counts carry over exactly as for a rate changed in the source.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ratekeeper._algorithms import State
from ratekeeper._rates import Policy, Rate
from ratekeeper.exceptions import ConfigError

__all__ = ["FULL", "Backoff", "scale_at", "scale_policy", "throttled"]

FULL = 1000


@dataclass(frozen=True, slots=True)
class Backoff:
    """How a throttled limit slows down and recovers.

    ``decrease`` multiplies the effective rate on each throttle (at most once per
    ``cooldown`` seconds), never below ``floor`` of the configured rate; after ``quiet``
    seconds without a throttle the rate regains ``step`` of the configured rate, and again
    after each further ``quiet`` seconds, until it is back to the configured rate.
    ``refresh`` is how long a process trusts the scale it last read from the storage, so a
    throttle seen by another process of the fleet reaches this one within that time.
    """

    decrease: float = 0.5
    floor: float = 0.05
    step: float = 0.1
    quiet: float = 5.0
    cooldown: float = 1.0
    refresh: float = 0.25

    def __post_init__(self) -> None:
        for name in ("decrease", "floor", "step"):
            value = getattr(self, name)
            if not 0 < value < 1 and not (name == "step" and value == 1):
                raise ConfigError(f"Backoff.{name} must be in (0, 1), got {value!r}")
        for name in ("quiet", "cooldown", "refresh"):
            value = getattr(self, name)
            if not 0 <= value < 86400 * 365 or (name == "quiet" and value == 0):
                raise ConfigError(f"Backoff.{name} must be a positive number of seconds")

    @property
    def params(self) -> tuple[int, int, int, int, int]:
        """(decrease, floor, step) in permille, (quiet, cooldown) in microseconds."""
        return (
            max(1, round(self.decrease * FULL)),
            max(1, round(self.floor * FULL)),
            max(1, round(self.step * FULL)),
            max(1, round(self.quiet * 1_000_000)),
            round(self.cooldown * 1_000_000),
        )


def scale_at(state: State | None, now: int) -> int:
    """The scale (permille of the configured rate) in force at ``now``."""
    if state is None or state[0] <= now:
        return FULL
    scale, since, step, quiet = state[1], state[2], state[3], state[4]
    elapsed = now - since
    if elapsed < quiet:
        return scale
    regained = scale + step * (elapsed // quiet)
    return regained if regained < FULL else FULL


def throttled(
    state: State | None, now: int, params: tuple[int, int, int, int, int]
) -> State | None:
    """The state after a throttle signal at ``now``, or None when it falls in the cooldown."""
    decrease, floor, step, quiet, cooldown = params
    if state is not None and state[0] > now and now - state[2] < state[5]:
        return None
    scale = scale_at(state, now) * decrease // FULL
    if scale < floor:
        scale = floor
    expires = now + quiet * -(-(FULL - scale) // step)
    return (expires, scale, now, step, quiet, cooldown)


def scale_policy(policy: Policy, scale: int) -> Policy:
    """The policy in force at ``scale`` permille: amounts and burst scaled, at least 1."""
    if scale >= FULL:
        return policy
    rates = tuple(Rate(max(1, rate.amount * scale // FULL), rate.period) for rate in policy.rates)
    burst = None if policy.burst is None else max(1, policy.burst * scale // FULL)
    return dataclasses.replace(policy, rates=rates, burst=burst)
