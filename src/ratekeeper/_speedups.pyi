"""Type stubs of the optional C module behind the decorated call's admitted path."""

from collections.abc import Callable
from typing import Any

FIXED_WINDOW: int
SLIDING_WINDOW: int
SLIDING_LOG: int
TOKEN_BUCKET: int

class Lock:
    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool: ...
    def release(self) -> None: ...
    def locked(self) -> bool: ...
    def __enter__(self) -> bool: ...
    def __exit__(self, *exc_info: object) -> None: ...

class Limited:
    fast_path_enabled: bool
    fast_calls: int
    def __init__(
        self,
        fn: Callable[..., Any],
        slow: Callable[..., Any],
        source: object,
        states: dict[Any, Any],
        lock: Lock,
        clock: Callable[[], int] | None,
        key: str,
        key_fn: Callable[..., object] | None,
    ) -> None: ...
    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...
    def configure(
        self,
        version: object,
        enabled: bool,
        algorithm: int,
        amount: int,
        period: int,
        capacity: int,
        interval: int,
        cost: int,
        slot: str,
    ) -> None: ...
    def disable(self) -> None: ...

def step(
    algorithm: int,
    state: tuple[int, ...] | None,
    now: int,
    amount: int,
    period: int,
    capacity: int,
    interval: int,
    cost: int,
) -> tuple[bool, tuple[int, ...] | None]: ...
