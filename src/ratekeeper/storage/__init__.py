"""Storages: where counting state lives.

:class:`MemoryStorage` (the default) keeps it in this process; :class:`RedisStorage` and
:class:`AsyncRedisStorage` share it between processes and hosts. The Redis classes are
imported on first use, so importing this package never imports redis.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ratekeeper.storage._base import AsyncStorage, Storage
from ratekeeper.storage._memory import MemoryStorage

if TYPE_CHECKING:
    from ratekeeper.storage.redis import AsyncRedisStorage, RedisStorage

__all__ = ["AsyncRedisStorage", "AsyncStorage", "MemoryStorage", "RedisStorage", "Storage"]


def __getattr__(name: str) -> Any:
    if name in {"RedisStorage", "AsyncRedisStorage"}:
        from ratekeeper.storage import redis

        return getattr(redis, name)
    raise AttributeError(f"module 'ratekeeper.storage' has no attribute {name!r}")
