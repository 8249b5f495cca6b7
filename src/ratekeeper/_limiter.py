"""Limiter and AsyncLimiter: resolve a limit name, ask the storage, wait or raise.

The twins share every step that does no I/O (name resolution and its cache, decision
building, the wait plan); they differ only where one awaits. The flow is one way:
name -> policy (cached until the source's ``version`` moves) -> storage -> outcome ->
Decision.
"""

from __future__ import annotations

import asyncio
import fnmatch
import inspect
import math
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Literal, ParamSpec, TypeVar

from ratekeeper._adaptive import FULL, Backoff, scale_policy
from ratekeeper._algorithms import NEVER, BoundLimit, Outcome
from ratekeeper._decision import Decision, make_decision
from ratekeeper._decorator import CostSpec, KeySpec, as_key, decorate
from ratekeeper._observe import Observable
from ratekeeper._rates import Policy, PolicySpec
from ratekeeper.exceptions import ConfigError, RateLimitExceeded
from ratekeeper.sources import DictSource, Source
from ratekeeper.sources._base import specificity
from ratekeeper.storage import AsyncStorage, MemoryStorage, Storage

__all__ = ["AsyncLimiter", "Limiter", "OnExceeded"]

OnExceeded = Literal["raise", "wait"]
P = ParamSpec("P")
R = TypeVar("R")
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


class _Core(Observable):
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


def _sync_sleep(seconds: float) -> None:
    time.sleep(seconds)


async def _async_sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


class Limiter(_Core):
    """Decides requests against named limits held in a config source.

    >>> limiter = Limiter(DictSource({"reports.export": "2/minute"}))
    >>> [limiter.hit("reports.export").allowed for _ in range(3)]
    [True, True, False]

    ``source`` defaults to an empty :class:`~ratekeeper.DictSource` and ``storage`` to a
    :class:`~ratekeeper.MemoryStorage`. ``sleep`` is how waits happen (tests inject one).
    A ``key`` says who is limited; one that is not a string is turned into one with
    ``str()``, as the decorators do, so ``5`` and ``"5"`` are the same key everywhere.
    """

    def __init__(
        self,
        source: Source | None = None,
        storage: Storage | None = None,
        *,
        sleep: Callable[[float], None] = _sync_sleep,
        async_sleep: Callable[[float], Awaitable[None]] = _async_sleep,
    ) -> None:
        super().__init__(source)
        self._storage: Storage = storage if storage is not None else MemoryStorage()
        if inspect.iscoroutinefunction(getattr(self._storage, "decide", None)):
            raise TypeError(f"{self._storage!r} is asynchronous: use AsyncLimiter with it")
        self._sleep = sleep
        self._async_sleep = async_sleep
        self._awaitable = _Awaitable(self._storage)  # for decorated coroutine functions

    @property
    def storage(self) -> Storage:
        """The storage where this limiter's counts live."""
        return self._storage

    def hit(self, name: str, key: str = "", cost: int = 1) -> Decision:
        """Try to consume ``cost`` from ``key`` under the limit ``name``; never blocks."""
        key = key if type(key) is str else as_key(key)
        bound = self.effective(self._storage, self.bound(name), key)
        cost = check_cost(cost, name)
        decision = self.decision(bound, key, cost, self._storage.decide(bound, key, cost, 0, True))
        if self._listeners:
            self.notify(decision)
        return decision

    def peek(self, name: str, key: str = "", cost: int = 1) -> Decision:
        """The decision ``hit`` would give now, consuming nothing."""
        key = key if type(key) is str else as_key(key)
        bound = self.effective(self._storage, self.bound(name), key)
        cost = check_cost(cost, name)
        outcome = self._storage.decide(bound, key, cost, 0, False)
        return self.decision(bound, key, cost, outcome, consumed=False)

    def acquire(
        self, name: str, key: str = "", cost: int = 1, *, timeout: float | None = None
    ) -> Decision:
        """Consume ``cost``, waiting as long as needed up to ``timeout`` seconds.

        Raises :class:`~ratekeeper.RateLimitExceeded` when the wait would pass the timeout
        (without waiting for nothing) or when the cost can never be admitted.
        """
        key = key if type(key) is str else as_key(key)
        cost = check_cost(cost, name)
        budget = check_wait(timeout, "timeout")
        budget_s = math.inf if budget is None else budget
        bound = self.effective(self._storage, self.bound(name), key)
        return self.settle(self._storage, self._sleep, bound, key, cost, budget_s)

    def reset(self, name: str, key: str = "") -> None:
        """Forget what ``key`` has consumed under the limit ``name``."""
        key = key if type(key) is str else as_key(key)
        self._storage.reset(self.bound(name), key)

    def throttle(self, name: str, key: str = "") -> float:
        """Report that downstream throttled ``key`` under the adaptive limit ``name``.

        The effective rate drops by the back-off's ``decrease`` (once per cooldown);
        returns the fraction of the configured rate now in force.
        """
        key = key if type(key) is str else as_key(key)
        bound, backoff = self.backoff_of(name)
        scale = self._storage.throttle(bound, key, backoff.params)
        self.remember_scale(bound, key, scale)
        return scale / FULL

    def limit(
        self,
        name: str,
        *,
        rate: PolicySpec | None = None,
        key: KeySpec = None,
        cost: CostSpec = 1,
        on_exceeded: OnExceeded = "raise",
        max_wait: float | None = None,
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Decorate a function (``def`` or ``async def``) so each call goes through ``name``.

        ``rate`` is the fallback policy while the source has no entry for ``name``. ``key``
        is a string or a callable of the call's arguments; ``cost`` an int or a callable of
        them; ``on_exceeded="wait"`` paces calls (for at most ``max_wait`` seconds) instead
        of raising :class:`~ratekeeper.RateLimitExceeded`.
        """
        return decorate(
            self,
            name,
            rate=rate,
            key=key,
            cost=cost,
            on_exceeded=on_exceeded,
            max_wait=max_wait,
            coroutines_only=False,
        )


class AsyncLimiter(_Core):
    """The awaited twin of :class:`Limiter`: same methods, same semantics.

    Works with :class:`~ratekeeper.MemoryStorage` (no I/O, nothing to await) and with
    :class:`~ratekeeper.AsyncRedisStorage`.
    """

    def __init__(
        self,
        source: Source | None = None,
        storage: AsyncStorage | Storage | None = None,
        *,
        sleep: Callable[[float], Awaitable[None]] = _async_sleep,
    ) -> None:
        super().__init__(source)
        chosen = storage if storage is not None else MemoryStorage()
        self._storage: AsyncStorage = (
            chosen  # type: ignore[assignment]
            if inspect.iscoroutinefunction(getattr(chosen, "decide", None))
            else _Awaitable(chosen)  # type: ignore[arg-type]
        )
        self._sleep = sleep

    @property
    def storage(self) -> AsyncStorage:
        """The storage where this limiter's counts live (sync storages appear awaitable)."""
        return self._storage

    async def hit(self, name: str, key: str = "", cost: int = 1) -> Decision:
        """Try to consume ``cost`` from ``key`` under the limit ``name``; never waits."""
        key = key if type(key) is str else as_key(key)
        bound = self.bound(name)
        if bound.backoff is not None:  # no coroutine to await for the common case
            bound = await self.effective_async(self._storage, bound, key)
        cost = check_cost(cost, name)
        outcome = await self._storage.decide(bound, key, cost, 0, True)
        decision = self.decision(bound, key, cost, outcome)
        if self._listeners:
            self.notify(decision)
        return decision

    async def peek(self, name: str, key: str = "", cost: int = 1) -> Decision:
        """The decision ``hit`` would give now, consuming nothing."""
        key = key if type(key) is str else as_key(key)
        bound = self.bound(name)
        if bound.backoff is not None:  # no coroutine to await for the common case
            bound = await self.effective_async(self._storage, bound, key)
        cost = check_cost(cost, name)
        outcome = await self._storage.decide(bound, key, cost, 0, False)
        return self.decision(bound, key, cost, outcome, consumed=False)

    async def acquire(
        self, name: str, key: str = "", cost: int = 1, *, timeout: float | None = None
    ) -> Decision:
        """Consume ``cost``, waiting as long as needed up to ``timeout`` seconds."""
        key = key if type(key) is str else as_key(key)
        cost = check_cost(cost, name)
        budget = check_wait(timeout, "timeout")
        budget_s = math.inf if budget is None else budget
        bound = self.bound(name)
        if bound.backoff is not None:  # no coroutine to await for the common case
            bound = await self.effective_async(self._storage, bound, key)
        return await self.settle_async(self._storage, self._sleep, bound, key, cost, budget_s)

    async def reset(self, name: str, key: str = "") -> None:
        """Forget what ``key`` has consumed under the limit ``name``."""
        key = key if type(key) is str else as_key(key)
        await self._storage.reset(self.bound(name), key)

    async def throttle(self, name: str, key: str = "") -> float:
        """Report that downstream throttled ``key``; see :meth:`Limiter.throttle`."""
        key = key if type(key) is str else as_key(key)
        bound, backoff = self.backoff_of(name)
        scale = await self._storage.throttle(bound, key, backoff.params)
        self.remember_scale(bound, key, scale)
        return scale / FULL

    def limit(
        self,
        name: str,
        *,
        rate: PolicySpec | None = None,
        key: KeySpec = None,
        cost: CostSpec = 1,
        on_exceeded: OnExceeded = "raise",
        max_wait: float | None = None,
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Decorate a coroutine function so each call goes through ``name``; see
        :meth:`Limiter.limit`."""
        return decorate(
            self,
            name,
            rate=rate,
            key=key,
            cost=cost,
            on_exceeded=on_exceeded,
            max_wait=max_wait,
            coroutines_only=True,
        )


class _Awaitable:
    """Lets AsyncLimiter await a storage that does no I/O."""

    __slots__ = ("_storage",)

    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    async def decide(
        self, limit: BoundLimit, key: str, cost: int, max_wait_us: int = 0, commit: bool = True
    ) -> Outcome:
        return self._storage.decide(limit, key, cost, max_wait_us, commit)

    async def reset(self, limit: BoundLimit, key: str) -> None:
        self._storage.reset(limit, key)

    async def scale(self, limit: BoundLimit, key: str) -> int:
        return self._storage.scale(limit, key)

    async def throttle(
        self, limit: BoundLimit, key: str, params: tuple[int, int, int, int, int]
    ) -> int:
        return self._storage.throttle(limit, key, params)

    def __repr__(self) -> str:
        return repr(self._storage)
