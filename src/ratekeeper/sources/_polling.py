"""The shared machinery of sources that look for changes: when to look, and how to complain.

:class:`PollingSource` is the base of FileSource, EnvSource, CallableSource and RedisSource.
Its ``version`` is the hot-path change signal. With an injected clock (a ManualClock in
tests) it is a clock comparison that returns the same object until ``interval`` seconds
have passed, and only then asks the subclass to look (stat a file, read a Redis counter,
...). With the default clock a daemon thread of the source does the looks when they fall
due, and ``version`` becomes a plain attribute: a call then pays no clock read at all.
A look that finds a problem keeps the last good snapshot, logs each distinct problem once
and exposes it as ``last_error`` / ``problems``.

This module must not do I/O itself, and ``version`` must never raise or block on another
thread's look: a call that arrives while a look is under way uses the current snapshot.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time as _time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import overload

from ratekeeper._rates import Policy
from ratekeeper.exceptions import ConfigError, RatekeeperError
from ratekeeper.sources._base import Snapshot, Watchers

__all__ = ["PollingSource", "Problem", "logger", "parse_text"]

logger = logging.getLogger("ratekeeper.sources")

# Bound at import: time between looks is real time even while freezegun freezes the clock,
# so a frozen test still sees its config change.
_monotonic = _time.monotonic
_RETRY = 0.01  # how soon the ticker tries again when another thread holds the look


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a source's content: where it is, which limit, and what is wrong.

    ``origin`` is a file path, an environment variable or a Redis key; ``line`` is the line
    in the file when known; ``name`` is the limit name when the problem concerns one.

    >>> str(Problem("ratelimits.toml", 4, "sns.publish", "unknown algorithm 'token'"))
    "ratelimits.toml:4: limit 'sns.publish': unknown algorithm 'token'"
    """

    origin: str
    line: int | None
    name: str | None
    message: str

    def __str__(self) -> str:
        where = self.origin if self.line is None else f"{self.origin}:{self.line}"
        what = self.message if self.name is None else f"limit {self.name!r}: {self.message}"
        return f"{where}: {what}"


def problems_error(problems: Iterable[Problem], intro: str = "") -> ConfigError:
    """One ConfigError whose message lists every problem, one per line."""
    lines = [str(problem) for problem in problems]
    if intro:
        lines.insert(0, intro)
    return ConfigError("\n".join(lines))


def parse_text(value: str) -> Policy:
    """A spec held as text (a variable, a Redis field): a rate string, or a JSON table when
    it starts with ``{``."""
    text = value.strip()
    if text.startswith("{"):
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"invalid JSON table: {exc.msg} (column {exc.colno})") from None
        except ValueError as exc:  # an integer past Python's digit limit
            raise ConfigError(f"invalid JSON table: {exc}") from None
        except RecursionError:
            raise ConfigError("invalid JSON table: nested too deeply") from None
        return Policy.parse(spec)
    return Policy.parse(text)


def check_interval(value: float, what: str = "interval") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ConfigError(f"{what} must be a number of seconds >= 0, got {value!r}")
    return float(value)


class PollingSource:
    """Base of the sources that look for changes at most every ``interval`` seconds.

    ``clock`` returns seconds. With the default (None) a daemon thread of the source looks
    when a look falls due, in real time, and ``version`` is a plain attribute. With a clock
    given (a ManualClock, say), or an interval of 0, ``version`` compares the clock with the
    next look's time and the call that finds it past looks. Subclasses implement
    :meth:`_poll`, publish new content with :meth:`_publish` and call :meth:`_start` last
    in ``__init__``.
    """

    version: object
    """The same object until a look finds new content (looks at most every interval)."""

    def __init__(self, interval: float, clock: Callable[[], float] | None) -> None:
        self._interval = check_interval(interval)
        self._clock = clock
        self._version: object = object()
        self._snapshot = Snapshot()
        self._due = -math.inf
        self._looking = threading.Lock()
        self._problems: tuple[Problem, ...] = ()
        self._last_error: RatekeeperError | None = None
        self._logged: set[str] = set()
        self._wake: threading.Event | None = None  # set while the ticker runs
        self._stopped = False
        self._watchers = Watchers()
        # Ticked: a plain attribute that only the looks write. The class's own attribute
        # lookup stays free of any descriptor named ``version``, which keeps the hot
        # path's read as cheap as DictSource's. Clocked: a subclass adds the descriptor.
        self._ticked = clock is None and self._interval > 0
        if self._ticked:
            self.version = self._version
        else:
            self.__class__ = _clocked(type(self))

    @property
    def interval(self) -> float:
        """The least number of seconds between two looks for a change."""
        return self._interval

    @property
    def last_error(self) -> RatekeeperError | None:
        """What the last look found wrong (None when it was fine): a ConfigError for bad
        content, a StorageError when the content could not be read."""
        return self._last_error

    @property
    def problems(self) -> tuple[Problem, ...]:
        """Every problem the last look found, each with its origin, line and limit name."""
        return self._problems

    def snapshot(self) -> Snapshot:
        """The current table of policies (the last good one, when a look found problems)."""
        return self._snapshot

    def refresh(self) -> bool:
        """Look for a change now, whatever the interval; True when the policies changed.

        Waits for a look under way in another thread instead of skipping it.
        """
        before = self._version
        with self._looking:
            self._look_locked()
        return self._version is not before

    def invalidate(self) -> None:
        """Look for a change soon: at once in the ticker, or on the next ``version`` read."""
        self._due = -math.inf
        wake = self._wake
        if wake is not None:
            wake.set()

    def _now(self) -> float:
        clock = self._clock
        return _monotonic() if clock is None else clock()

    def _start(self) -> None:
        """Start the ticker of a ticked source; the subclass's ``__init__`` ends with it."""
        if self._ticked:
            self.version = self._version
            with _TICKERS_LOCK:
                if self._wake is None and not self._stopped:
                    self._spawn()

    def _spawn(self) -> None:
        wake = self._wake = threading.Event()
        _TICKING.add(self)
        threading.Thread(
            target=_ticker,
            args=(weakref.ref(self), wake),
            name=f"ratekeeper-{self!r}",
            daemon=True,
        ).start()

    def close(self) -> None:
        """Stop looking for changes (but by :meth:`refresh`); the limits last read stay."""
        self._stop()

    def _stop(self) -> None:
        with _TICKERS_LOCK:
            self._stopped = True
            wake, self._wake = self._wake, None
        if wake is not None:
            wake.set()

    def _look(self) -> object:
        # Non-blocking: one thread looks, the others carry on with the current snapshot
        # rather than queue behind a slow disk or network.
        if self._stopped or not self._looking.acquire(blocking=False):
            return self._version
        try:
            if self._now() >= self._due:
                self._look_locked()
        finally:
            self._looking.release()
        return self._version

    def _look_locked(self) -> None:
        # Due time first: a notification that arrives during the look re-arms the next one.
        self._due = self._now() + self._interval
        try:
            self._poll()
        except Exception as exc:  # a bug or an odd backend error must never fail a call
            self._report([Problem(repr(self), None, None, f"{type(exc).__name__}: {exc}")])
        if self._ticked and self.version is not self._version:
            # After the snapshot, as in _publish: a new version brings its snapshot.
            self.version = self._version
            self._watchers.notify()

    def _watch(self, method: Callable[[], None]) -> bool:
        """Call ``method`` after each change; True when that is the only way to learn of
        one (a ticked source), False when ``version`` must be read for a look to happen."""
        if not self._ticked:
            return False
        self._watchers.add(method)
        return True

    def _poll(self) -> None:
        """Look for new content; call _publish, _report or _clear. Runs under the look lock."""
        raise NotImplementedError

    def _publish(self, snapshot: Snapshot) -> None:
        # The snapshot first, then the version: a reader that sees the new version is sure
        # to get the new snapshot. Equal content keeps the version, so nothing recompiles.
        if dict(snapshot) != dict(self._snapshot) or type(snapshot) is not type(self._snapshot):
            self._snapshot = snapshot
            self._version = object()

    def _report(
        self,
        problems: Iterable[Problem],
        error: RatekeeperError | None = None,
        consequence: str = "keeping the last good limits",
    ) -> None:
        """Record what is wrong; log each problem once for as long as it lasts."""
        self._problems = tuple(problems)
        if not self._problems:
            self._clear()
            return
        self._last_error = error if error is not None else problems_error(self._problems)
        texts = {str(problem) for problem in self._problems}
        for problem in self._problems:
            text = str(problem)
            if text not in self._logged:
                self._logged.add(text)
                logger.warning("%s (%s)", text, consequence)
        # Forget the problems that went away, so that one coming back is logged again.
        self._logged &= texts

    def _clear(self) -> None:
        """The last look was fine: forget the problems, and say so if there were any."""
        if self._logged:
            logger.info("%r: the problems are resolved", self)
        self._problems = ()
        self._last_error = None
        self._logged = set()


class _Version:
    """``version`` of a clocked source: compares the clock with the next look's time."""

    @overload
    def __get__(self, source: None, owner: type) -> _Version: ...

    @overload
    def __get__(self, source: PollingSource, owner: type) -> object: ...

    def __get__(self, source: PollingSource | None, owner: type) -> object:
        if source is None:
            return self
        clock = source._clock
        if (_monotonic() if clock is None else clock()) < source._due:
            return source._version
        return source._look()


_CLOCKED: dict[type[PollingSource], type[PollingSource]] = {}


def _clocked(cls: type[PollingSource]) -> type[PollingSource]:
    """``cls`` with a ``version`` that compares the clock (same name, same behaviour else)."""
    if "version" in cls.__dict__:
        return cls
    clocked = _CLOCKED.get(cls)
    if clocked is None:
        namespace = {
            "version": _Version(),
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
            "__doc__": cls.__doc__,
        }
        clocked = _CLOCKED.setdefault(cls, type(cls.__name__, (cls,), namespace))
    return clocked


_TICKERS_LOCK = threading.Lock()
_TICKING: weakref.WeakSet[PollingSource] = weakref.WeakSet()


def _ticker(ref: weakref.ref[PollingSource], wake: threading.Event) -> None:
    """Look whenever the source's next look falls due; end with the source or its stop."""
    while True:
        source = ref()
        if source is None or source._wake is not wake:
            return
        delay = source._due - _monotonic()
        if delay <= 0:
            source._look()
            delay = max(source._due - _monotonic(), _RETRY)
        del source  # hold no reference while waiting, so the source can be collected
        wake.wait(delay)
        wake.clear()


def _restart_tickers() -> None:
    # A forked child has none of its parent's threads: give its sources tickers of their
    # own. A lock held by a parent thread at the fork would never be released here.
    global _TICKERS_LOCK
    _TICKERS_LOCK = threading.Lock()
    sources = list(_TICKING)
    _TICKING.clear()
    for source in sources:
        source._looking = threading.Lock()
        source._wake = None
        if not source._stopped:
            source._spawn()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_restart_tickers)
