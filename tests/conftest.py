"""Fixtures shared by the whole suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers import RedisServer, redis_server


@pytest.fixture(scope="session")
def redis_proc() -> Iterator[RedisServer]:
    """One real redis-server for the session, on a free loopback port."""
    with redis_server() as server:
        yield server


@pytest.fixture
def redis_url(redis_proc: RedisServer) -> str:
    """The URL of the session's redis-server, flushed before each test."""
    import redis

    client = redis.Redis.from_url(redis_proc.url)
    client.flushall()
    client.close()
    return redis_proc.url
