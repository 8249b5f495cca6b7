"""The C fast path of a decorated plain function, used when the optional extension is built.

The Python wrapper built by :mod:`ratekeeper._decorator` is the specification of a
decorated call. For its commonest case -- a policy of one rate, a constant cost, no
back-off, nobody listening, :class:`~ratekeeper.MemoryStorage` -- a C object
(``ratekeeper._speedups.Limited``) runs the admitted path instead: the version check, the
storage's lock, its clock, one algorithm step on the very same state tuples, and the call.
Whatever it cannot decide at once (a refusal, a new key, a changed source) it hands to the
Python wrapper, which decides again from scratch; a refusal consumed nothing, so that is
safe. Setting ``RATEKEEPER_PURE_PYTHON=1`` before import turns the fast path off.

This module only builds and configures that object; it decides nothing itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ratekeeper._algorithms import BoundLimit
from ratekeeper.storage._memory import MemoryStorage

if TYPE_CHECKING:
    from ratekeeper._limiter import Limiter

__all__ = ["ALGORITHM_CODES", "fast_path", "speedups"]


def _load() -> ModuleType | None:
    if os.environ.get("RATEKEEPER_PURE_PYTHON") == "1":
        return None
    try:
        from ratekeeper import _speedups
    except ImportError:  # not compiled here: the pure-Python path decides identically
        return None
    return _speedups


speedups = _load()

ALGORITHM_CODES = {
    "fixed-window": 0,
    "sliding-window": 1,
    "sliding-log": 2,
    "token-bucket": 3,
}


def fast_path(
    fn: Callable[..., Any],
    slow: Callable[..., Any],
    limiter: Limiter,
    rebind: Callable[[], tuple[object, BoundLimit]],
    key_const: str,
    key_fn: Callable[..., object] | None,
    cost_const: int,
    cost_fn: Callable[..., int] | None,
) -> Callable[..., Any] | None:
    """A C callable that runs ``fn`` under the limit, or None when it cannot serve."""
    storage = limiter.storage
    if (
        speedups is None
        or cost_fn is not None
        or type(storage) is not MemoryStorage
        or not isinstance(storage.lock, speedups.Lock)
    ):
        return None
    cell: list[Any] = []

    def reconfigure() -> None:
        # Read before the bound, so a change racing this one is seen at the next call
        # rather than hidden under a newer epoch or version.
        epoch = limiter._epoch
        listeners = limiter._listeners
        version, bound = rebind()
        meters = bound.meters
        meter = meters[0]
        enabled = (
            not listeners
            and len(meters) == 1
            and bound.backoff is None
            and 0 < cost_const <= meter.capacity
        )
        cell[0].configure(
            version,
            epoch,
            enabled,
            ALGORITHM_CODES[meter.algorithm],
            meter.amount,
            meter.period_us,
            meter.capacity,
            meter.interval_us,
            cost_const if enabled else 0,  # a cost past any capacity may not fit in C
            meter.slot,
        )

    fast = speedups.Limited(
        fn,
        slow,
        limiter.source,
        limiter,
        "_epoch",
        storage.table,
        storage.lock,
        storage.clock_us,
        key_const,
        key_fn,
        reconfigure,
    )
    cell.append(fast)
    return fast  # type: ignore[no-any-return]
