"""Helpers for testing code that uses ratekeeper: a clock that moves only when told.

>>> from ratekeeper import Limiter, MemoryStorage, DictSource
>>> clock = ManualClock()
>>> limiter = Limiter(DictSource({"jobs": "1/second"}), MemoryStorage(clock=clock),
...                   sleep=clock.sleep)
>>> limiter.hit("jobs").allowed, limiter.hit("jobs").allowed
(True, False)
>>> clock.advance(1.0)
>>> limiter.hit("jobs").allowed
True
"""

from __future__ import annotations

import asyncio

__all__ = ["ManualClock"]


class ManualClock:
    """A clock for tests: reads ``start`` seconds until :meth:`advance` moves it.

    Pass it as ``MemoryStorage(clock=...)`` or ``RedisStorage(..., clock=...)``; pass its
    :meth:`sleep` / :meth:`async_sleep` to a limiter so waits advance it instead of
    blocking. It counts in whole microseconds, like the storages.
    """

    __slots__ = ("_us",)

    def __init__(self, start: float = 0.0) -> None:
        self._us = round(start * 1_000_000)

    def __call__(self) -> float:
        return self._us / 1_000_000

    def now_us(self) -> int:
        """The current reading in whole microseconds."""
        return self._us

    def advance(self, seconds: float) -> None:
        """Move the clock forward (or back, with a negative number)."""
        self._us += round(seconds * 1_000_000)

    def sleep(self, seconds: float) -> None:
        """A ``time.sleep`` stand-in that advances the clock instead of waiting."""
        if seconds > 0:
            self.advance(seconds)

    async def async_sleep(self, seconds: float) -> None:
        """An ``asyncio.sleep`` stand-in: advances the clock, then yields to the loop once."""
        if seconds > 0:
            self.advance(seconds)
        await asyncio.sleep(0)

    def __repr__(self) -> str:
        return f"ManualClock({self()!r})"
