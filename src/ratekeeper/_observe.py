"""Watching a limiter: decision listeners, per-limit counters, the ``ratekeeper`` logger.

A *listener* is a callable that receives every :class:`~ratekeeper.Decision` a limiter
makes for a caller (``hit``, ``acquire`` and the decorators, never ``peek``). The limiter
holds its listeners as one tuple that ``add_listener`` / ``remove_listener`` swap whole,
so the hot path tests a single attribute, and a decision is built only when that tuple is
not empty. The counters behind ``stats()`` are themselves a listener, which
``enable_stats()`` installs: counting costs nothing until someone asks for it.

Storage failures are counted where they happen, by the storage (see
``RedisCore.failure_counts``), because the limiter only ever sees the outcome the failure
policy chose; ``stats()`` merges those counts in. Nothing here touches a clock or a socket,
and a listener that raises is logged and never fails the call it observes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ratekeeper._decision import Decision

__all__ = [
    "LimitStats",
    "Listener",
    "Observable",
    "StatsListener",
    "failure_counts_of",
    "failure_totals",
    "logger",
    "notify",
    "outcome_of",
]

logger = logging.getLogger("ratekeeper")

Listener = Callable[[Decision], object]


@dataclass(frozen=True, slots=True)
class LimitStats:
    """What one limit name has decided since :meth:`~ratekeeper.Limiter.enable_stats`.

    ``admitted`` counts admitted decisions (at once or after a wait), ``denied`` enforced
    refusals, and ``shadow_denied`` the refusals of a shadow-mode limit, whose callers
    went on anyway. ``waited`` is the total seconds callers waited before being admitted
    or refused. ``storage_errors`` counts decisions the storage could not make (it failed,
    or its circuit breaker was open), and ``fallbacks`` those of them that the failure
    policy (``allow``, ``deny`` or ``local``) answered instead of raising; both are kept by
    the storage, so every limiter sharing that storage sees them.
    """

    admitted: int = 0
    denied: int = 0
    shadow_denied: int = 0
    waited: float = 0.0
    storage_errors: int = 0
    fallbacks: int = 0


def outcome_of(decision: Decision) -> str:
    """The outcome label exporters use: ``admitted``, ``denied`` or ``shadow_denied``."""
    if decision.allowed:
        return "admitted"
    return "shadow_denied" if decision.shadow else "denied"


def notify(listeners: tuple[Listener, ...], decision: Decision) -> None:
    """Hand ``decision`` to every listener; one that raises is logged and skipped."""
    for listener in listeners:
        try:
            listener(decision)
        except Exception:  # an observer must never break the call it observes
            logger.exception("decision listener %r failed on: %s", listener, decision.describe())


class StatsListener:
    """The built-in listener that counts decisions per limit name, exactly under threads."""

    __slots__ = ("_counts", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # name -> [admitted, denied, shadow_denied, waited]
        self._counts: dict[str, list[Any]] = {}

    def __call__(self, decision: Decision) -> None:
        with self._lock:
            counts = self._counts.get(decision.limit_name)
            if counts is None:
                counts = self._counts[decision.limit_name] = [0, 0, 0, 0.0]
            if decision.allowed:
                counts[0] += 1
            elif decision.shadow:
                counts[2] += 1
            else:
                counts[1] += 1
            counts[3] += decision.waited

    def snapshot(self) -> dict[str, tuple[int, int, int, float]]:
        with self._lock:
            return {name: (c[0], c[1], c[2], c[3]) for name, c in self._counts.items()}

    def __repr__(self) -> str:
        return "StatsListener()"


def failure_counts_of(storage: object) -> Mapping[str, tuple[int, int]]:
    # Duck-typed: only storages that can fail (Redis) keep failure counts.
    counts = getattr(storage, "failure_counts", None)
    return counts() if callable(counts) else {}


def failure_totals(storages: Iterable[object]) -> dict[str, tuple[int, int]]:
    """(storage errors, fallbacks) per limit name, summed over ``storages``."""
    totals: dict[str, tuple[int, int]] = {}
    for storage in storages:
        for name, (errors, fallbacks) in failure_counts_of(storage).items():
            known = totals.get(name, (0, 0))
            totals[name] = (known[0] + errors, known[1] + fallbacks)
    return totals


class Observable:
    """The listener half of the limiters' shared core."""

    def __init__(self) -> None:
        # Swapped whole, never mutated: a decision being reported in one thread keeps
        # iterating the tuple it read while another thread adds or removes a listener.
        self._listeners: tuple[Listener, ...] = ()
        self._stats: StatsListener | None = None
        self._listeners_lock = threading.Lock()
        # Replaced whenever what a decorated call must do changes without the source's
        # version moving (listeners here; fallbacks and back-off in the limiter), so the
        # decorators re-read their limit: one identity test on the hot path.
        self._epoch: object = object()

    def _set_listeners(self, listeners: tuple[Listener, ...]) -> None:
        self._listeners = listeners
        self._epoch = object()

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(decision)`` with every decision made for a caller from now on.

        That is every ``hit``, ``acquire`` and decorated call: admitted, refused, or
        admitted after a wait (``decision.waited`` says how long), and the refusals of
        shadow-mode limits, which are reported but not enforced. ``peek`` reports nothing.
        Listeners run in the caller's thread, after the decision and before the call goes
        on: keep them quick. One that raises is logged (logger ``ratekeeper``) and the
        call goes on. Adding the same listener twice reports each decision to it twice.
        """
        if not callable(listener):
            raise TypeError(f"a listener must be callable, got {listener!r}")
        with self._listeners_lock:
            self._set_listeners((*self._listeners, listener))

    def remove_listener(self, listener: Listener) -> None:
        """Stop reporting to ``listener`` (once, if it was added more than once).

        Raises :class:`ValueError` when it is not a listener of this limiter.
        """
        with self._listeners_lock:
            listeners = list(self._listeners)
            try:
                listeners.remove(listener)
            except ValueError:
                raise ValueError(f"{listener!r} is not a listener of {self!r}") from None
            self._set_listeners(tuple(listeners))

    def notify(self, decision: Decision) -> None:
        """Report ``decision`` to the listeners (the limiter calls this; so may wrappers
        that decide through it, such as integrations)."""
        notify(self._listeners, decision)

    def enable_stats(self) -> None:
        """Start counting decisions per limit name, for :meth:`stats`.

        Counting is a built-in listener, so with stats off (the default) a decorated call
        that is admitted builds no decision at all. Calling this again changes nothing.
        """
        with self._listeners_lock:
            if self._stats is not None:
                return
            self._stats = StatsListener()
            self._set_listeners((*self._listeners, self._stats))

    def stats(self) -> dict[str, LimitStats]:
        """The counters of every limit name seen since :meth:`enable_stats`, by name.

        >>> from ratekeeper import DictSource, Limiter
        >>> limiter = Limiter(DictSource({"jobs": "1/minute"}))
        >>> limiter.enable_stats()
        >>> _ = limiter.hit("jobs"), limiter.hit("jobs")
        >>> limiter.stats()["jobs"]
        LimitStats(admitted=1, denied=1, shadow_denied=0, waited=0.0, storage_errors=0, fallbacks=0)
        """
        counter = self._stats
        if counter is None:
            raise RuntimeError(f"stats are off for {self!r}: call enable_stats() first")
        counts = counter.snapshot()
        failures = failure_counts_of(getattr(self, "storage", None))
        result: dict[str, LimitStats] = {}
        for name in sorted(counts.keys() | failures.keys()):
            admitted, denied, shadow_denied, waited = counts.get(name, (0, 0, 0, 0.0))
            errors, fallbacks = failures.get(name, (0, 0))
            result[name] = LimitStats(admitted, denied, shadow_denied, waited, errors, fallbacks)
        return result
