"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

from tests.servers import RedisClusterServers, RedisServer, redis_cluster, redis_server

# In CI the property tests draw the same examples on every run, so a run's verdict is about
# the change under test; on a developer's machine they explore anew each time (and a
# failure found there is kept in .hypothesis/ and tried first from then on).
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


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


@pytest.fixture(scope="session")
def redis_cluster_proc() -> Iterator[RedisClusterServers]:
    """One real three-master Redis Cluster for the session, on free loopback ports."""
    with redis_cluster() as cluster:
        yield cluster


@pytest.fixture
def cluster_url(redis_cluster_proc: RedisClusterServers) -> str:
    """A ``redis+cluster://`` URL of the session's cluster, every master flushed first."""
    import redis

    for port in redis_cluster_proc.ports:
        client = redis.Redis(host="127.0.0.1", port=port)
        client.flushall()
        client.close()
    return redis_cluster_proc.url
