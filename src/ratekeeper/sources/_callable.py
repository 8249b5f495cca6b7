"""CallableSource: a function from limit name to spec, the "dynamic limit" of web frameworks.

The function is called the first time a name is resolved, then again at most every ``ttl``
seconds for each name seen so far (by the source's daemon thread, with the default clock);
the version moves only when an answer changed, so the limiter resolves again only then.
This module must not call the function on every call, and must not let an exception from
it reach a caller: the last good answer stands.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

from ratekeeper._rates import Policy, PolicySpec
from ratekeeper.exceptions import ConfigError
from ratekeeper.sources._base import Snapshot
from ratekeeper.sources._polling import PollingSource, Problem

__all__ = ["CallableSource"]

LimitFunction = Callable[[str], "PolicySpec | None"]


class CallableSource(PollingSource):
    """Limits answered by ``fn(name)``: a rate string, a table, a Policy, or None (no entry).

    >>> tiers = {"free": "10/minute", "paid": "1000/minute"}
    >>> source = CallableSource(lambda name: tiers.get(name.rpartition(".")[2]))
    >>> str(source.snapshot().resolve("api.paid"))
    '1000/minute (sliding-window)'

    Each name's answer is kept for ``ttl`` seconds, then ``fn`` is asked again: from the
    source's daemon thread with the default clock, so ``fn`` must be safe to call from
    another thread; with ``clock`` given, from the call that finds it due. When ``fn``
    raises or answers with a bad spec, the problem is logged once and shown in
    ``last_error``; the name keeps its last good answer (none, the first time: then the
    limiter's fallback applies).
    """

    def __init__(
        self,
        fn: LimitFunction,
        ttl: float = 1.0,
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if not callable(fn):
            raise ConfigError(f"CallableSource needs a function of the limit name, got {fn!r}")
        super().__init__(ttl, clock)
        self._fn = fn
        self._lock = threading.Lock()  # guards the tables below, never held while fn runs
        self._values: dict[str, Policy | None] = {}
        self._stamps: dict[str, float] = {}
        self._errors: dict[str, Problem] = {}
        self._snapshot = _CallableSnapshot(self)
        self._due = self._now() + self._interval
        self._start()

    @property
    def ttl(self) -> float:
        """How long an answer of the function is kept, in seconds."""
        return self._interval

    def known(self) -> dict[str, Policy | None]:
        """The names resolved so far and their current answers."""
        return dict(self._values)

    def _resolve(self, name: str) -> Policy | None:
        values = self._values
        if name in values:
            return values[name]
        now = self._now()
        policy, problem = self._evaluate(name)
        with self._lock:
            if name not in self._values:  # another thread may have asked meanwhile
                self._values[name] = policy
                self._stamps[name] = now
                self._note(name, problem)
            return self._values[name]

    def _poll(self) -> None:
        now = self._now()
        expired = [
            name for name, stamp in list(self._stamps.items()) if stamp + self._interval <= now
        ]
        answers = {name: self._evaluate(name) for name in expired}
        with self._lock:
            values = dict(self._values)
            for name, (policy, problem) in answers.items():
                self._stamps[name] = now
                if problem is None:
                    values[name] = policy
                self._note(name, problem)
            if values != self._values:
                self._values = values  # whole table first, then the version
                self._version = object()
            if self._stamps:
                # Look again when the oldest answer expires, so none lives past its ttl
                # nor is asked for again before it.
                self._due = min(self._stamps.values()) + self._interval

    def _evaluate(self, name: str) -> tuple[Policy | None, Problem | None]:
        try:
            spec = self._fn(name)
            return (None if spec is None else Policy.parse(spec)), None
        except Exception as exc:  # the function is the user's: any failure is reported
            what = str(exc) if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}"
            return None, Problem(repr(self), None, name, what)

    def _note(self, name: str, problem: Problem | None) -> None:
        if problem is None:
            if self._errors.pop(name, None) is None:
                return
        else:
            self._errors[name] = problem
        self._report(list(self._errors.values()), consequence="keeping the last good answer")

    def __repr__(self) -> str:
        # A callable object's default repr carries its address: name its class instead.
        label = getattr(self._fn, "__qualname__", None) or type(self._fn).__qualname__
        return f"CallableSource({label})"


class _CallableSnapshot(Snapshot):
    """The answers so far, asking the function for a name it has not seen yet."""

    __slots__ = ("_source",)

    def __init__(self, source: CallableSource) -> None:
        super().__init__()
        self._source = source

    def resolve(self, name: str) -> Policy | None:
        return self._source._resolve(name)

    def match(self, name: str) -> str | None:
        return name if self._source._resolve(name) is not None else None

    def __getitem__(self, name: str) -> Policy:
        policy = self._source._values.get(name)
        if policy is None:
            raise KeyError(name)
        return policy

    def __iter__(self) -> Iterator[str]:
        return iter([name for name, p in self._source._values.items() if p is not None])

    def __len__(self) -> int:
        return sum(1 for p in self._source._values.values() if p is not None)

    def __repr__(self) -> str:
        return f"Snapshot({ {name: str(p) for name, p in self.items()}!r})"
