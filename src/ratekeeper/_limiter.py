"""Limiter and AsyncLimiter: resolve a limit name, ask the storage, wait or raise.

The twins share every step that does no I/O (:mod:`ratekeeper._core`: name resolution
and its cache, decision building, the wait plan); they differ only where one awaits. The
flow is one way:
name -> policy (cached until the source's ``version`` moves) -> storage -> outcome ->
Decision.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import time
from collections.abc import Awaitable, Callable
from typing import Literal, ParamSpec, TypeVar

from ratekeeper._adaptive import FULL
from ratekeeper._algorithms import BoundLimit, Outcome
from ratekeeper._core import Core, check_cost, check_wait
from ratekeeper._decision import Decision
from ratekeeper._decorator import CostSpec, KeySpec, as_key, decorate
from ratekeeper._rates import PolicySpec
from ratekeeper.sources import Source
from ratekeeper.storage import AsyncStorage, MemoryStorage, Storage

__all__ = ["AsyncLimiter", "Limiter", "OnExceeded"]

OnExceeded = Literal["raise", "wait"]
P = ParamSpec("P")
R = TypeVar("R")


def _sync_sleep(seconds: float) -> None:
    time.sleep(seconds)


async def _async_sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


class Limiter(Core):
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


class AsyncLimiter(Core):
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
