"""Config sources: where limits come from, and how a change reaches the next call.

Every source offers a cheap change signal (``version``) and an immutable ``snapshot()``.
:class:`RedisSource` is imported on first use, so importing this package never imports
redis.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ratekeeper.sources._base import Snapshot, Source
from ratekeeper.sources._callable import CallableSource
from ratekeeper.sources._chain import ChainSource
from ratekeeper.sources._dict import DictSource
from ratekeeper.sources._env import EnvSource
from ratekeeper.sources._file import FileSource, check_file, load_file
from ratekeeper.sources._polling import Problem

if TYPE_CHECKING:
    from ratekeeper.sources._redis import RedisSource

__all__ = [
    "CallableSource",
    "ChainSource",
    "DictSource",
    "EnvSource",
    "FileSource",
    "Problem",
    "RedisSource",
    "Snapshot",
    "Source",
    "check_file",
    "load_file",
]


def __getattr__(name: str) -> Any:
    if name == "RedisSource":
        from ratekeeper.sources._redis import RedisSource

        return RedisSource
    raise AttributeError(f"module 'ratekeeper.sources' has no attribute {name!r}")
