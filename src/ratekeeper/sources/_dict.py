"""DictSource: limits held in a mapping that the program changes at run time."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping

from ratekeeper._rates import PolicySpec
from ratekeeper.sources._base import Snapshot, Watchers, compile_limits

__all__ = ["DictSource"]


class DictSource:
    """A mutable table of limits: ``set``, ``delete`` and ``replace`` take effect on the next call.

    >>> source = DictSource({"reports.export": "5/minute"})
    >>> source.set("aws.sns.*", {"rate": "300/second", "algorithm": "token-bucket"})
    >>> str(source.snapshot().resolve("aws.sns.Publish"))
    '300/second (token-bucket)'

    A bad spec raises :class:`~ratekeeper.ConfigError` and leaves the source unchanged.
    """

    def __init__(self, limits: Mapping[str, PolicySpec] | None = None) -> None:
        self._lock = threading.Lock()
        self._snapshot = Snapshot(compile_limits(limits or {}, "DictSource"))
        self.version: object = object()
        self._watchers = Watchers()

    def snapshot(self) -> Snapshot:
        """The current table of policies."""
        return self._snapshot

    def set(self, name: str, spec: PolicySpec) -> None:
        """Add or change one limit (a name or a glob pattern)."""
        policies = compile_limits({name: spec}, "DictSource")
        with self._lock:
            self._publish({**self._snapshot, **policies})

    def delete(self, name: str) -> None:
        """Remove one limit; a missing name is not an error."""
        with self._lock:
            if name in self._snapshot:
                self._publish({k: v for k, v in self._snapshot.items() if k != name})

    def replace(self, limits: Mapping[str, PolicySpec]) -> None:
        """Swap the whole table at once."""
        policies = compile_limits(limits, "DictSource")
        with self._lock:
            self._publish(policies)

    def _publish(self, policies: Mapping[str, object]) -> None:
        # The snapshot first, then the version: a reader that sees the new version is
        # sure to get the new snapshot.
        self._snapshot = Snapshot(policies)  # type: ignore[arg-type]
        self.version = object()
        self._watchers.notify()

    def _watch(self, method: Callable[[], None]) -> bool:
        """Call ``method`` after each change; True: no need to read ``version`` to learn of
        one."""
        self._watchers.add(method)
        return True

    def __repr__(self) -> str:
        return f"DictSource({len(self._snapshot)} limits)"
