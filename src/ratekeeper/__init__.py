"""ratekeeper: rate limits for Python functions and boto3 clients.

Calls are admitted, paced or refused according to limits read from a mutable config
source; counts live in memory or in Redis, with the same semantics on both.

>>> import ratekeeper
>>> @ratekeeper.limit("10/second")
... def call() -> int:
...     return 42
>>> call()
42

The Redis classes are importable from here too, lazily: ``import ratekeeper`` imports
neither redis nor boto3.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ratekeeper._decision import Decision
from ratekeeper._decorator import limit
from ratekeeper._limiter import AsyncLimiter, Limiter
from ratekeeper._observe import LimitStats
from ratekeeper._rates import Policy, Rate
from ratekeeper.exceptions import ConfigError, RatekeeperError, RateLimitExceeded, StorageError
from ratekeeper.sources import (
    CallableSource,
    ChainSource,
    DictSource,
    EnvSource,
    FileSource,
    Snapshot,
    Source,
)
from ratekeeper.storage import AsyncStorage, MemoryStorage, Storage

if TYPE_CHECKING:
    from ratekeeper.sources import RedisSource
    from ratekeeper.storage.redis import AsyncRedisStorage, RedisStorage

__all__ = [
    "AsyncLimiter",
    "AsyncRedisStorage",
    "AsyncStorage",
    "CallableSource",
    "ChainSource",
    "ConfigError",
    "Decision",
    "DictSource",
    "EnvSource",
    "FileSource",
    "LimitStats",
    "Limiter",
    "MemoryStorage",
    "Policy",
    "Rate",
    "RateLimitExceeded",
    "RatekeeperError",
    "RedisSource",
    "RedisStorage",
    "Snapshot",
    "Source",
    "Storage",
    "StorageError",
    "limit",
]

_LAZY = {
    "RedisSource": "ratekeeper.sources._redis",
    "RedisStorage": "ratekeeper.storage.redis",
    "AsyncRedisStorage": "ratekeeper.storage.redis",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ratekeeper' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
