"""ChainSource: several sources in order of precedence, e.g. environment, then file, then code.

A name is resolved by the first source that knows it (its exact entry or any of its
patterns): precedence is by whole source, not by specificity across sources. The chain's
version is one token that stays the same object while every child's version does. This
module must not copy or merge the children's policies on the hot path.
"""

from __future__ import annotations

import operator
import threading
from collections.abc import Sequence

from ratekeeper._rates import Policy
from ratekeeper.exceptions import ConfigError
from ratekeeper.sources._base import Snapshot, Source

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

    def __init__(self, *sources: Source) -> None:
        if not sources:
            raise ConfigError("ChainSource needs at least one source")
        for source in sources:
            if not isinstance(source, Source):
                raise ConfigError(f"ChainSource takes sources, got {source!r}")
        self._sources: tuple[Source, ...] = sources
        self._lock = threading.Lock()
        versions = tuple(map(_version_of, sources))
        # (child versions, token, snapshot) swapped as one value.
        self._state: tuple[tuple[object, ...], object, ChainSnapshot | None] = (
            versions,
            object(),
            None,
        )

    @property
    def sources(self) -> tuple[Source, ...]:
        """The children, highest precedence first."""
        return self._sources

    @property
    def version(self) -> object:
        """The same object while no child's version moved."""
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
        """The children's current snapshots, resolved in order of precedence."""
        state = self._state
        if state[2] is not None and tuple(map(_version_of, self._sources)) == state[0]:
            return state[2]
        token = self.version  # children's versions first, then their snapshots
        snapshot = ChainSnapshot([source.snapshot() for source in self._sources])
        with self._lock:
            if self._state[1] is token and self._state[2] is None:
                self._state = (self._state[0], token, snapshot)
        return snapshot

    def __repr__(self) -> str:
        return f"ChainSource({', '.join(map(repr, self._sources))})"


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
