"""MemoryStorage: counting state in this process, exact under threads.

One lock guards the table and the clock is read inside it, so decisions are totally ordered
and a limit of K admits exactly K however many threads race. States carry their expiry
instant; a sweep that runs when the table has doubled since the last one drops the expired
ones, so a million one-off keys do not grow memory without bound, at amortised O(1).
"""

from __future__ import annotations

import threading
import time as _time
from collections.abc import Callable
from typing import Any

from ratekeeper._adaptive import scale_at, throttled
from ratekeeper._algorithms import BoundLimit, Outcome, State, decide

__all__ = ["MemoryStorage", "micros"]

_MIN_SWEEP = 1024
AnyLock = Any  # threading.Lock, or the C extension's Lock with the same interface


def _new_lock() -> AnyLock:
    try:
        from ratekeeper._speedups import Lock
    except ImportError:
        return threading.Lock()
    return Lock()


def _monotonic_us() -> int:
    # Looked up on the module at every call, so freezegun's patched clock is seen.
    return _time.monotonic_ns() // 1000


def micros(clock: Callable[[], float] | None) -> Callable[[], int]:
    """Turn a clock in float seconds into one in integer microseconds."""
    if clock is None or clock is _time.monotonic:
        return _monotonic_us
    now_us = getattr(clock, "now_us", None)
    if callable(now_us):
        return now_us  # type: ignore[no-any-return]
    return lambda: round(clock() * 1_000_000)


class MemoryStorage:
    """Keeps counting state in process memory; serves both Limiter and AsyncLimiter.

    ``clock`` returns seconds (monotonic by default, and freezegun's when time is frozen);
    tests pass a :class:`ratekeeper.testing.ManualClock`.
    """

    def __init__(self, *, clock: Callable[[], float] | None = None) -> None:
        now = micros(clock)
        # None for the default clock, which decide() reads inline: this is every call's path.
        self._now: Callable[[], int] | None = None if now is _monotonic_us else now
        # The C extension's lock when it is built: the decorators' C fast path takes the
        # same lock, so both paths decide in one total order.
        self._lock = _new_lock()
        self._states: dict[tuple[str, str], State] = {}
        self._sweep_at = _MIN_SWEEP

    @property
    def lock(self) -> AnyLock:
        """The lock every decision on this storage holds."""
        return self._lock

    @property
    def table(self) -> dict[tuple[str, str], State]:
        """The live table of states, keyed by (meter slot, key); hold :attr:`lock` to read it."""
        return self._states

    @property
    def clock_us(self) -> Callable[[], int] | None:
        """The injected clock in microseconds, or None for the default monotonic clock."""
        return self._now

    def decide(
        self, limit: BoundLimit, key: str, cost: int, max_wait_us: int = 0, commit: bool = True
    ) -> Outcome:
        """Apply ``limit`` to ``key`` atomically; see :class:`~ratekeeper.storage.Storage`."""
        meters = limit.meters
        lock = self._lock
        # acquire + try/finally rather than `with`: the same guarantee, at half the cost of
        # a `with` block on CPython 3.11.
        lock.acquire()
        try:
            # The default clock, inline; looked up on the module at every call, like
            # _monotonic_us, so freezegun's patched clock is seen.
            clock = self._now
            now = _time.monotonic_ns() // 1000 if clock is None else clock()
            states = self._states
            if len(meters) == 1:
                meter = meters[0]
                if 0 < cost <= meter.capacity:
                    slot = (meter.slot, key)
                    state = states.get(slot)
                    outcome = meter.step(state, now, meter, cost, max_wait_us)
                    if commit and outcome[1] is not None:  # admitted, or a bucket converted
                        if state is None and len(states) >= self._sweep_at:
                            self._sweep(now)
                        states[slot] = outcome[1]  # type: ignore[assignment]
                    return outcome
            slots = [(meter.slot, key) for meter in meters]
            outcome = decide(meters, [states.get(slot) for slot in slots], now, cost, max_wait_us)
            new_states = outcome[1]
            if commit and new_states is not None:
                if len(states) >= self._sweep_at:
                    self._sweep(now)
                for slot, new in zip(slots, new_states, strict=True):  # type: ignore[call-overload]
                    if new is not None:
                        states[slot] = new
            return outcome
        finally:
            lock.release()

    def reset(self, limit: BoundLimit, key: str) -> None:
        """Forget the state of ``key`` under every rate of ``limit`` (and its back-off)."""
        with self._lock:
            for meter in limit.meters:
                self._states.pop((meter.slot, key), None)
            self._states.pop((limit.backoff_slot, key), None)

    def scale(self, limit: BoundLimit, key: str) -> int:
        """The back-off scale (permille) in force for ``key`` under an adaptive limit."""
        with self._lock:
            return scale_at(self._states.get((limit.backoff_slot, key)), self._read_clock())

    def throttle(self, limit: BoundLimit, key: str, params: tuple[int, int, int, int, int]) -> int:
        """Record a throttle signal; returns the scale now in force."""
        slot = (limit.backoff_slot, key)
        with self._lock:
            now = self._read_clock()
            state = self._states.get(slot)
            new = throttled(state, now, params)
            if new is None:
                return scale_at(state, now)
            self._states[slot] = new
            return new[1]

    def _read_clock(self) -> int:
        clock = self._now
        return _monotonic_us() if clock is None else clock()

    def clear(self) -> None:
        """Forget every state (for tests)."""
        with self._lock:
            self._states.clear()
            self._sweep_at = _MIN_SWEEP

    def __len__(self) -> int:
        """The number of live entries in the table (expired ones may linger until a sweep)."""
        return len(self._states)

    def _sweep(self, now: int) -> None:
        states = self._states
        for slot in [slot for slot, state in states.items() if state[0] <= now]:
            del states[slot]
        self._sweep_at = max(_MIN_SWEEP, 2 * len(states))
