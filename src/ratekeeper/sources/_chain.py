"""ChainSource: several sources in order of precedence, e.g. environment, then file, then code.

A name is resolved by the first source that knows it (its exact entry or any of its
patterns): precedence is by whole source, not by specificity across sources. The chain's
version is one token that stays the same object while every member's version does. This
module must not copy or merge the members' policies on the hot path.
"""

from __future__ import annotations

import operator
import threading
from collections.abc import Callable, Sequence

from ratekeeper._rates import Policy
from ratekeeper.exceptions import ConfigError
from ratekeeper.sources._base import Snapshot, Source, Watchers

__all__ = ["ChainSource"]

_version_of = operator.attrgetter("version")


class ChainSource:
    """The first of ``sources`` that knows a limit name gives its policy.

    >>> from ratekeeper import DictSource
    >>> overrides = DictSource({"reports.*": "1/minute"})
    >>> defaults = DictSource({"reports.export": "5/minute", "*": "100/minute"})
    >>> chain = ChainSource(overrides, defaults)
    >>> str(chain.snapshot().resolve("reports.export"))  # overrides' pattern wins
    '1/minute (sliding-window)'
    >>> str(chain.snapshot().resolve("search"))
    '100/minute (sliding-window)'
    """

    # When every member tells the chain of its changes (DictSource, a polling source with
    # its own thread, a chain of those), ``version`` is a plain attribute that the members'
    # notifications replace. Otherwise (a member on an injected clock, or a source of
    # another kind) reading the chain's version must read the members' versions, for
    # that is when they look: the instance becomes a _PolledChain.
    version: object
    """The same object while no member's version moved."""

    def __init__(self, *sources: Source) -> None:
        if not sources:
            raise ConfigError("ChainSource needs at least one source")
        for source in sources:
            if not isinstance(source, Source):
                raise ConfigError(f"ChainSource takes sources, got {source!r}")
        self._sources: tuple[Source, ...] = sources
        self._lock = threading.Lock()
        self._watchers = Watchers()
        versions = tuple(map(_version_of, sources))
        # (member versions, token, snapshot) swapped as one value.
        self._state: tuple[tuple[object, ...], object, ChainSnapshot | None] = (
            versions,
            object(),
            None,
        )
        pushed = [_watch(source, self._member_changed) for source in sources]
        if all(pushed):
            self.version = self._state[1]
        else:
            self.__class__ = _PolledChain

    @property
    def sources(self) -> tuple[Source, ...]:
        """The members, highest precedence first."""
        return self._sources

    def snapshot(self) -> Snapshot:
        """The members' current snapshots, resolved in order of precedence."""
        state = self._state
        if state[2] is not None:
            return state[2]
        token = state[1]
        snapshot = ChainSnapshot([source.snapshot() for source in self._sources])
        with self._lock:
            # Cached only if no member changed meanwhile; built after the token was read,
            # the snapshot is never older than it.
            if self._state[1] is token and self._state[2] is None:
                self._state = (self._state[0], token, snapshot)
        return snapshot

    def _member_changed(self) -> None:
        # Looked up on the instance's class at each call: _PolledChain overrides _changed.
        self._changed()

    def _changed(self) -> None:
        with self._lock:
            token = object()
            self._state = ((), token, None)
            self.version = token
        self._watchers.notify()

    def _watch(self, method: Callable[[], None]) -> bool:
        """Call ``method`` after each change; True when no one needs to read ``version``."""
        self._watchers.add(method)
        return type(self) is ChainSource

    def __repr__(self) -> str:
        return f"ChainSource({', '.join(map(repr, self._sources))})"


class _PolledChain(ChainSource):
    """A chain whose version is computed by reading its members' versions."""

    @property
    def version(self) -> object:  # type: ignore[override]
        """The same object while no member's version moved."""
        versions = tuple(map(_version_of, self._sources))
        state = self._state
        # Tuple equality compares items by identity first; versions are plain objects.
        if versions == state[0]:
            return state[1]
        with self._lock:
            if versions != self._state[0]:
                self._state = (versions, object(), None)
            return self._state[1]

    def snapshot(self) -> Snapshot:
        """The members' current snapshots, resolved in order of precedence."""
        state = self._state
        if state[2] is not None and tuple(map(_version_of, self._sources)) == state[0]:
            return state[2]
        token = self.version  # members' versions first, then their snapshots
        snapshot = ChainSnapshot([source.snapshot() for source in self._sources])
        with self._lock:
            if self._state[1] is token and self._state[2] is None:
                self._state = (self._state[0], token, snapshot)
        return snapshot

    def _changed(self) -> None:
        # Members that notify are read like the others; only watchers need telling.
        self._watchers.notify()


def _watch(source: Source, method: Callable[[], None]) -> bool:
    watch = getattr(source, "_watch", None)
    return bool(watch(method)) if watch is not None else False


class ChainSnapshot(Snapshot):
    """Snapshots consulted in order; as a mapping, the first entry of each name or pattern."""

    __slots__ = ("_layers",)

    def __init__(self, layers: Sequence[Snapshot]) -> None:
        merged: dict[str, Policy] = {}
        for layer in reversed(layers):
            merged.update(layer)
        super().__init__(merged)
        self._layers = tuple(layers)

    @property
    def layers(self) -> tuple[Snapshot, ...]:
        """The children's snapshots, highest precedence first."""
        return self._layers

    def resolve(self, name: str) -> Policy | None:
        for layer in self._layers:
            policy = layer.resolve(name)
            if policy is not None:
                return policy
        return None

    def match(self, name: str) -> str | None:
        for layer in self._layers:
            entry = layer.match(name)
            if entry is not None:
                return entry
        return None
