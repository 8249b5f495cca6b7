"""What Limiter and AsyncLimiter share: every step that does no I/O.

Name resolution and its cache (re-read only when the source's ``version`` or the
limiter's epoch moves), fallbacks, adaptive back-off bookkeeping, building decisions, and
the one decision step that both wait loops drive. The twins in :mod:`ratekeeper._limiter`
differ only where one awaits the storage. Nothing here touches a clock other than for the
back-off cache, and nothing touches a socket.
"""

from __future__ import annotations

import fnmatch
import math
import threading
import time
from collections.abc import Awaitable, Callable

from ratekeeper._adaptive import FULL, Backoff, scale_policy
from ratekeeper._algorithms import NEVER, BoundLimit, Outcome
from ratekeeper._decision import Decision, make_decision
from ratekeeper._observe import Observable
from ratekeeper._rates import Policy, PolicySpec
from ratekeeper.exceptions import ConfigError, RateLimitExceeded
from ratekeeper.sources import DictSource, Source
from ratekeeper.sources._base import specificity
from ratekeeper.storage import AsyncStorage, Storage

__all__ = ["UNBOUNDED_US", "Core", "check_cost", "check_wait", "reservation_us"]

UNBOUNDED_US = 2**62


def check_cost(cost: object, name: str) -> int:
    """A cost is a whole number >= 0; anything else is a ConfigError naming the limit."""
    if isinstance(cost, int) and not isinstance(cost, bool) and cost >= 0:
        return cost
    raise ConfigError(f"limit {name!r}: cost must be a whole number >= 0, got {cost!r}")


def check_wait(max_wait: float | None, what: str = "max_wait") -> float | None:
    if max_wait is None:
        return None
    if isinstance(max_wait, bool) or not isinstance(max_wait, (int, float)) or not max_wait >= 0:
        raise ConfigError(f"{what} must be a number of seconds >= 0 or None, got {max_wait!r}")
    return float(max_wait)


def reservation_us(bound: BoundLimit, budget: float | None) -> int:
    """How far into the future a waiting caller may reserve (token bucket only)."""
    if bound.policy.algorithm != "token-bucket" or bound.policy.mode == "shadow":
        return 0
    if budget is None or math.isinf(budget):
        return UNBOUNDED_US
    return int(budget * 1_000_000)


class Core(Observable):
    """Everything the twins share: sources, the resolution cache, decisions, wait plans,
    and the listeners that watch decisions."""

    def __init__(self, source: Source | None) -> None:
        super().__init__()
        self._source: Source = source if source is not None else DictSource()
        self._fallbacks: dict[str, Policy] = {}
        self._fallback_lock = threading.Lock()
        # (source version, {name: bound}) swapped as one value, so a reader never pairs a
        # new version with bounds compiled from an older snapshot.
        self._cache: tuple[object, dict[str, BoundLimit]] = (object(), {})
        # Adaptive limits: name patterns with their back-off, the scale last read per
        # (name, key) with the monotonic time it is trusted until, and the scaled bounds.
        self._adaptive: tuple[tuple[str, Backoff], ...] = ()
        self._scales: dict[tuple[str, str], tuple[float, int]] = {}
        self._scaled: dict[tuple[str, Policy, int], BoundLimit] = {}

    @property
    def source(self) -> Source:
        """The config source this limiter reads its policies from."""
        return self._source

    def register(self, name: str, rate: PolicySpec) -> None:
        """Give ``name`` a fallback policy, used while the source has no entry for it."""
        try:
            policy = Policy.parse(rate)
        except ConfigError as exc:
            raise ConfigError(f"limit {name!r}: {exc}") from None
        with self._fallback_lock:
            known = self._fallbacks.get(name)
            if known is not None and known != policy:
                raise ConfigError(
                    f"limit {name!r} already has the fallback rate {known}; got {policy}"
                )
            self._fallbacks[name] = policy
            self._cache = (object(), {})
            self._epoch = object()

    def adapt(self, pattern: str, backoff: Backoff | None = None) -> None:
        """Make the limits whose names match ``pattern`` (a name or a glob) adaptive.

        An adaptive limit's effective rate drops when :meth:`throttle` reports that
        downstream throttled, and recovers after quiet periods, never above the configured
        rate. Where several patterns match a name, the most specific wins, as in a source
        (``aws.sns.*`` over ``aws.*``). The back-off state lives in the storage, so with
        Redis a throttle seen by one process slows the whole fleet. Decisions show the
        effective rate.
        """
        if not isinstance(pattern, str) or not pattern:
            raise ConfigError(f"adapt() needs a limit name or pattern, got {pattern!r}")
        chosen = backoff if backoff is not None else Backoff()
        kept = [item for item in self._adaptive if item[0] != pattern]
        # Most specific first, by the rule that resolves names in a source.
        kept.append((pattern, chosen))
        self._adaptive = tuple(sorted(kept, key=lambda item: specificity(item[0])))
        self._cache = (object(), {})
        self._epoch = object()

    def bound(self, name: str) -> BoundLimit:
        """The compiled policy for ``name`` under the source's current content."""
        version = self._source.version
        cached_version, table = self._cache
        if cached_version is not version:
            table = {}
            self._cache = (version, table)
        try:
            bound = table.get(name)
        except TypeError:  # unhashable: not a name at all
            raise ConfigError(f"a limit name must be a non-empty string, got {name!r}") from None
        if bound is None:
            bound = table[name] = self._bind(name)
        return bound

    def _bind(self, name: str) -> BoundLimit:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"a limit name must be a non-empty string, got {name!r}")
        policy = self._source.snapshot().resolve(name)
        if policy is None:
            policy = self._fallbacks.get(name)
        if policy is None:
            raise ConfigError(
                f"no limit named {name!r} in {self._source!r}, and no fallback rate: "
                f"add an entry for it or pass rate= to the decorator"
            )
        backoff = None
        for pattern, candidate in self._adaptive:
            if fnmatch.fnmatchcase(name, pattern):
                backoff = candidate
                break
        return BoundLimit.compile(name, policy, backoff)

    def cached_scale(self, bound: BoundLimit, key: str) -> int | None:
        """The back-off scale last read for (name, key), while it is still trusted."""
        entry = self._scales.get((bound.name, key))
        if entry is not None and entry[0] > time.monotonic():
            return entry[1]
        return None

    def remember_scale(self, bound: BoundLimit, key: str, scale: int) -> None:
        if len(self._scales) > 100_000:  # bounded: one-off keys must not grow it forever
            self._scales = {}
        refresh = bound.backoff.refresh if bound.backoff is not None else 0.0
        self._scales[(bound.name, key)] = (time.monotonic() + refresh, scale)

    def at_scale(self, bound: BoundLimit, scale: int) -> BoundLimit:
        """``bound`` with its rates scaled to ``scale`` permille (state identity unchanged)."""
        if scale >= FULL:
            return bound
        cache_key = (bound.name, bound.policy, scale)
        scaled = self._scaled.get(cache_key)
        if scaled is None:
            if len(self._scaled) > 10_000:
                self._scaled = {}
            policy = scale_policy(bound.policy, scale)
            scaled = self._scaled[cache_key] = BoundLimit.compile(bound.name, policy, bound.backoff)
        return scaled

    def effective(self, storage: Storage, bound: BoundLimit, key: str) -> BoundLimit:
        """The bound in force for ``key``: scaled by its back-off when adaptive."""
        if bound.backoff is None:
            return bound
        scale = self.cached_scale(bound, key)
        if scale is None:
            scale = storage.scale(bound, key)
            self.remember_scale(bound, key, scale)
        return self.at_scale(bound, scale)

    async def effective_async(
        self, storage: AsyncStorage, bound: BoundLimit, key: str
    ) -> BoundLimit:
        """:meth:`effective`, awaited."""
        if bound.backoff is None:
            return bound
        scale = self.cached_scale(bound, key)
        if scale is None:
            scale = await storage.scale(bound, key)
            self.remember_scale(bound, key, scale)
        return self.at_scale(bound, scale)

    def backoff_of(self, name: str) -> tuple[BoundLimit, Backoff]:
        bound = self.bound(name)
        if bound.backoff is None:
            raise ConfigError(
                f"limit {name!r} is not adaptive: call adapt() with a pattern matching it first"
            )
        return bound, bound.backoff

    def binder(self, name: str) -> Callable[[], tuple[object, BoundLimit]]:
        """For decorators: returns (version, bound) pairs; the version is read first."""
        source = self._source

        def rebind() -> tuple[object, BoundLimit]:
            version = source.version
            return version, self.bound(name)

        return rebind

    @staticmethod
    def decision(
        bound: BoundLimit,
        key: str,
        cost: int,
        outcome: Outcome,
        *,
        consumed: bool = True,
        waited: float = 0.0,
    ) -> Decision:
        allowed, _, available, retry_us, reset_us, binding = outcome
        policy = bound.policy
        return make_decision(
            allowed,
            bound.name,
            key,
            available - cost if allowed and consumed and available >= cost else available,
            math.inf if retry_us == NEVER else retry_us / 1_000_000,
            reset_us / 1_000_000,
            cost,
            policy,
            policy.rates[binding],
            policy.mode == "shadow",
            waited,
        )

    def step(
        self,
        bound: BoundLimit,
        key: str,
        cost: int,
        outcome: Outcome,
        budget: float,
        waited: float = 0.0,
    ) -> tuple[Decision | None, float]:
        """The one decision step every wait loop drives: (decision, 0 or the reserved wait)
        when done, (None, delay) to sleep and try again; raises when waiting cannot help.
        A final decision is reported to the listeners here, so both loops report alike."""
        if outcome[0]:
            waited += outcome[3] / 1_000_000  # a reserved slot: the caller sleeps until it
        decision = self.decision(bound, key, cost, outcome, waited=waited)
        if outcome[0]:
            done = decision, decision.retry_after
        elif decision.shadow:
            done = decision, 0.0
        else:
            delay = decision.retry_after
            if delay > budget or math.isinf(delay):  # inf: a cost that can never be admitted
                if self._listeners:
                    self.notify(decision)
                raise RateLimitExceeded(decision)
            return None, delay
        if self._listeners:
            self.notify(decision)
        return done

    def settle(
        self,
        storage: Storage,
        sleep: Callable[[float], None],
        bound: BoundLimit,
        key: str,
        cost: int,
        budget: float,
        outcome: Outcome | None = None,
    ) -> Decision:
        """The sync wait loop."""
        waited = 0.0
        while True:
            if outcome is None:
                outcome = storage.decide(bound, key, cost, reservation_us(bound, budget), True)
            decision, delay = self.step(bound, key, cost, outcome, budget, waited)
            if delay:
                sleep(delay)
            if decision is not None:
                return decision
            budget -= delay
            waited += delay
            bound = self.effective(storage, self.bound(bound.name), key)
            outcome = None

    async def settle_async(
        self,
        storage: AsyncStorage,
        sleep: Callable[[float], Awaitable[None]],
        bound: BoundLimit,
        key: str,
        cost: int,
        budget: float,
        outcome: Outcome | None = None,
    ) -> Decision:
        """The async wait loop: the sync one, awaited."""
        waited = 0.0
        while True:
            if outcome is None:
                reserve = reservation_us(bound, budget)
                outcome = await storage.decide(bound, key, cost, reserve, True)
            decision, delay = self.step(bound, key, cost, outcome, budget, waited)
            if delay:
                await sleep(delay)
            if decision is not None:
                return decision
            budget -= delay
            waited += delay
            bound = await self.effective_async(storage, self.bound(bound.name), key)
            outcome = None
