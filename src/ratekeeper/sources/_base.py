"""What a config source is, and how a limit name is resolved against one.

A source maps limit names (and glob patterns of them) to policies. It offers two things:

* ``version``: an object that stays the *same object* while nothing has changed, read on
  the hot path (an attribute read or a clock comparison, never I/O per call);
* ``snapshot()``: the current :class:`Snapshot`, an immutable table the limiter resolves
  names against. Sources swap whole snapshots in one assignment, so a reader sees either
  the old table or the new one, never half of each.

Resolution: an exact name wins; otherwise the matching glob pattern with the most literal
characters (a ``[...]`` set counts as none), then the fewest wildcards, then the first in
sorted order; so ``aws.sns.*`` beats ``aws.*`` beats ``*``. Patterns match whole names,
case-sensitively, and ``*`` also crosses dots (``aws.*`` matches ``aws.sns.Publish``).
"""

from __future__ import annotations

import fnmatch
import re
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Protocol, runtime_checkable

from ratekeeper._rates import Policy, PolicySpec
from ratekeeper.exceptions import ConfigError

__all__ = ["Snapshot", "Source", "Watchers", "compile_limits", "is_pattern", "specificity"]

_WILDCARDS = re.compile(r"[*?\[]")
# What a pattern matches other than literal characters: a wildcard or a whole set.
_NON_LITERAL = re.compile(r"\[!?\]?[^\]]*\]|[*?]")


def is_pattern(name: str) -> bool:
    """True for a glob pattern (``*``, ``?`` or ``[...]``) rather than one limit name."""
    return _WILDCARDS.search(name) is not None


def specificity(pattern: str) -> tuple[int, int, str]:
    """The sort key of a pattern among those matching one name: smallest wins.

    >>> sorted(["*", "aws.*", "aws.sns.*", "aws.sns.Pub*", "aws.sn?.*"], key=specificity)
    ['aws.sns.Pub*', 'aws.sns.*', 'aws.sn?.*', 'aws.*', '*']
    """
    wildcards = _NON_LITERAL.findall(pattern)
    return (-len(_NON_LITERAL.sub("", pattern)), len(wildcards), pattern)


class Snapshot(Mapping[str, Policy]):
    """An immutable table of limit names and patterns to policies."""

    __slots__ = ("_exact", "_patterns", "_table")

    def __init__(self, policies: Mapping[str, Policy] | None = None) -> None:
        table = dict(policies or {})
        self._table = table
        self._exact = {name: p for name, p in table.items() if not is_pattern(name)}
        patterns = [
            (name, re.compile(fnmatch.translate(name)), p)
            for name, p in table.items()
            if is_pattern(name)
        ]
        patterns.sort(key=lambda item: specificity(item[0]))
        self._patterns = tuple(patterns)

    def resolve(self, name: str) -> Policy | None:
        """The policy for ``name``: its exact entry, else its most specific pattern."""
        policy = self._exact.get(name)
        if policy is not None:
            return policy
        for _pattern, regex, candidate in self._patterns:
            if regex.match(name):
                return candidate
        return None

    def match(self, name: str) -> str | None:
        """The entry (name or pattern) that ``name`` resolves to, if any."""
        if name in self._exact:
            return name
        for pattern, regex, _ in self._patterns:
            if regex.match(name):
                return pattern
        return None

    def __getitem__(self, name: str) -> Policy:
        return self._table[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)

    def __repr__(self) -> str:
        return f"Snapshot({ {name: str(p) for name, p in self._table.items()}!r})"


def compile_limits(specs: Mapping[str, PolicySpec], origin: str = "") -> dict[str, Policy]:
    """Parse every spec of a ``[limits]`` table; a bad one is a ConfigError naming it."""
    if not isinstance(specs, Mapping):
        raise ConfigError(f"{origin or 'limits'}: expected a table of limit names, got {specs!r}")
    policies: dict[str, Policy] = {}
    where = f"{origin}: " if origin else ""
    for name, spec in specs.items():
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{where}a limit name must be a non-empty string, got {name!r}")
        try:
            policies[name] = Policy.parse(spec)
        except ConfigError as exc:
            raise ConfigError(f"{where}limit {name!r}: {exc}") from None
    return policies


@runtime_checkable
class Source(Protocol):
    """Where a limiter reads its policies from."""

    @property
    def version(self) -> object:
        """Stays the same object until the source's content may have changed."""
        ...

    def snapshot(self) -> Snapshot:
        """The current table of policies."""
        ...


class Watchers:
    """Who to tell when a source's version moves: a ChainSource holding it, so that the
    chain's own version can stay a plain attribute. Holds bound methods weakly."""

    __slots__ = ("_methods",)

    def __init__(self) -> None:
        self._methods: tuple[weakref.WeakMethod[Callable[[], None]], ...] = ()

    def add(self, method: Callable[[], None]) -> None:
        self._methods = (*self._methods, weakref.WeakMethod(method))

    def notify(self) -> None:
        for ref in self._methods:
            method = ref()
            if method is not None:
                method()
