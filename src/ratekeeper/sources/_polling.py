"""The shared machinery of sources that look for changes: when to look, and how to complain.

:class:`PollingSource` is the base of FileSource, EnvSource, CallableSource and RedisSource.
Its ``version`` is the hot-path change signal: a clock comparison that returns the same
object until ``interval`` seconds have passed, and only then asks the subclass to look
(stat a file, read a Redis counter, ...). A look that finds a problem keeps the last good
snapshot, logs each distinct problem once and exposes it as ``last_error`` / ``problems``.

This module must not do I/O itself, and ``version`` must never raise or block on another
thread's look: a call that arrives while a look is under way uses the current snapshot.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time as _time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ratekeeper._rates import Policy
from ratekeeper.exceptions import ConfigError, RatekeeperError
from ratekeeper.sources._base import Snapshot

__all__ = ["PollingSource", "Problem", "logger", "parse_text"]

logger = logging.getLogger("ratekeeper.sources")


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
        return Policy.parse(spec)
    return Policy.parse(text)


def check_interval(value: float, what: str = "interval") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ConfigError(f"{what} must be a number of seconds >= 0, got {value!r}")
    return float(value)


class PollingSource:
    """Base of the sources that look for changes at most every ``interval`` seconds.

    ``clock`` returns seconds; by default :func:`time.monotonic`, looked up at each call so
    that freezegun's frozen clock is seen. Subclasses implement :meth:`_poll` and publish
    new content with :meth:`_publish`.
    """

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

    @property
    def version(self) -> object:
        """The same object until a look finds new content (looks at most every interval)."""
        # The hot path: one clock read and one comparison; the branch keeps the default
        # clock looked up at call time without a second Python frame.
        clock = self._clock
        if (_time.monotonic() if clock is None else clock()) < self._due:
            return self._version
        return self._look()

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
        """Make the next ``version`` read look for a change (a notification said so)."""
        self._due = -math.inf

    def _now(self) -> float:
        clock = self._clock
        return _time.monotonic() if clock is None else clock()

    def _look(self) -> object:
        # Non-blocking: one thread looks, the others carry on with the current snapshot
        # rather than queue behind a slow disk or network.
        if not self._looking.acquire(blocking=False):
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
