"""What a storage is: the place where counting state lives and decisions are made atomically.

A storage receives a :class:`~ratekeeper._algorithms.BoundLimit` (a policy compiled for one
limit name), a key and a cost, applies the algorithm to the state of every rate at once,
keeps the new state only when the whole request is admitted, and answers with an outcome
tuple. It knows nothing of decorators, config sources or waiting.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ratekeeper._algorithms import BoundLimit, Outcome

__all__ = ["AsyncStorage", "Storage"]


@runtime_checkable
class Storage(Protocol):
    """A storage a :class:`~ratekeeper.Limiter` can use (MemoryStorage, RedisStorage)."""

    def decide(
        self, limit: BoundLimit, key: str, cost: int, max_wait_us: int = 0, commit: bool = True
    ) -> Outcome:
        """Apply ``limit`` to ``key``; keep the new state only if admitted and ``commit``."""
        ...

    def reset(self, limit: BoundLimit, key: str) -> None:
        """Forget the state of ``key`` under every rate of ``limit``."""
        ...

    def scale(self, limit: BoundLimit, key: str) -> int:
        """The back-off scale (permille of the configured rate) of an adaptive limit."""
        ...

    def throttle(self, limit: BoundLimit, key: str, params: tuple[int, int, int, int, int]) -> int:
        """Record a throttle signal for an adaptive limit; returns the scale now in force."""
        ...


@runtime_checkable
class AsyncStorage(Protocol):
    """The awaited twin of :class:`Storage` (AsyncRedisStorage)."""

    async def decide(
        self, limit: BoundLimit, key: str, cost: int, max_wait_us: int = 0, commit: bool = True
    ) -> Outcome:
        """Apply ``limit`` to ``key``; keep the new state only if admitted and ``commit``."""
        ...

    async def reset(self, limit: BoundLimit, key: str) -> None:
        """Forget the state of ``key`` under every rate of ``limit``."""
        ...

    async def scale(self, limit: BoundLimit, key: str) -> int:
        """The back-off scale (permille of the configured rate) of an adaptive limit."""
        ...

    async def throttle(
        self, limit: BoundLimit, key: str, params: tuple[int, int, int, int, int]
    ) -> int:
        """Record a throttle signal for an adaptive limit; returns the scale now in force."""
        ...
