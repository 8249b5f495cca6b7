"""The Decision value: what a limit answered for one request."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

from ratekeeper._rates import Policy, Rate

__all__ = ["Decision", "make_decision"]


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to one request against a limit.

    ``remaining`` is the number of units still available after this decision (for
    :meth:`~ratekeeper.Limiter.peek`, the units available now). ``retry_after`` is 0.0 when
    the request was admitted at once, the time to wait when it was admitted by reservation,
    the time until the same cost would be admitted when refused, and ``math.inf`` when the
    cost exceeds what the policy can ever admit. ``reset_after`` is the time until the key
    is back to full capacity after this decision (for ``peek``, as if the request were
    admitted, so even an unused key shows how long one request would count; windows are
    aligned to the clock's zero). ``rate`` is the binding rate: the one that refused, or the one
    with the least room. ``shadow`` is true when the policy only observes (``mode="shadow"``):
    then a refusal is reported but not enforced. ``waited`` is how many seconds the caller
    waited before this decision (``acquire`` and ``on_exceeded="wait"``), counting a slot
    reserved ahead, which the caller sleeps until after the decision is made.
    """

    allowed: bool
    limit_name: str
    key: str
    remaining: int
    retry_after: float
    reset_after: float
    cost: int
    policy: Policy
    rate: Rate
    shadow: bool = False
    waited: float = 0.0

    def describe(self) -> str:
        """A sentence for logs and exception messages."""
        who = f"limit {self.limit_name!r}" + (f" (key {self.key!r})" if self.key else "")
        if self.allowed:
            if self.retry_after > 0:
                return f"{who} admitted cost {self.cost} after a wait of {self.retry_after:.3f} s"
            return f"{who} admitted cost {self.cost}; {self.remaining} remaining"
        if math.isinf(self.retry_after):
            capacity = self.policy.burst if self.policy.burst is not None else self.rate.amount
            if self.rate is not self.policy.rates[0]:
                capacity = self.rate.amount
            return (
                f"{who} can never admit cost {self.cost}: it exceeds the capacity {capacity} "
                f"of {self.rate} ({self.policy.algorithm})"
            )
        return (
            f"{who} refused cost {self.cost} at {self.rate} ({self.policy.algorithm}); "
            f"retry after {self.retry_after:.3f} s"
        )


def _decision_builder() -> Callable[
    [bool, str, str, int, float, float, int, Policy, Rate, bool, float], Decision
]:
    # A frozen dataclass's __init__ sets each field through object.__setattr__, which costs
    # more than the whole storage decision; the limiters build a Decision on every hit, so
    # they set the slots through their descriptors instead. The same value results: a test
    # compares the two field by field.
    new = object.__new__
    setters = [getattr(Decision, field.name).__set__ for field in dataclasses.fields(Decision)]
    (allowed, limit_name, key, remaining, retry_after, reset_after, cost, policy, rate, shadow,
     waited) = setters  # fmt: skip

    def build(
        a: bool, n: str, k: str, r: int, ra: float, rs: float, c: int, p: Policy, rt: Rate,
        sh: bool, w: float,
    ) -> Decision:  # fmt: skip
        d = new(Decision)
        allowed(d, a)
        limit_name(d, n)
        key(d, k)
        remaining(d, r)
        retry_after(d, ra)
        reset_after(d, rs)
        cost(d, c)
        policy(d, p)
        rate(d, rt)
        shadow(d, sh)
        waited(d, w)
        return d

    return build


make_decision = _decision_builder()
"""``make_decision(*fields)`` equals ``Decision(*fields)``, built several times faster."""
