"""RedisStorage and AsyncRedisStorage on a real three-master Redis Cluster."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio.cluster
import redis.cluster
from redis.crc import key_slot

from ratekeeper import (
    AsyncLimiter,
    AsyncRedisStorage,
    DictSource,
    Limiter,
    Rate,
    RedisSource,
    RedisStorage,
)
from ratekeeper._rates import Algorithm
from ratekeeper.testing import ManualClock
from tests.servers import RedisClusterServers
from tests.strategies import ALGORITHMS

pytestmark = [pytest.mark.redis, pytest.mark.cluster]


def plain(url: str) -> str:
    """The ``redis://`` form of a ``redis+cluster://`` URL, as redis-py's own client wants."""
    return url.replace("redis+cluster://", "redis://", 1)


@pytest.fixture
def cluster_client(cluster_url: str) -> Iterator[redis.cluster.RedisCluster]:
    """A redis-py RedisCluster client on the session's cluster."""
    client = redis.cluster.RedisCluster.from_url(plain(cluster_url))
    yield client
    client.close()


def node_key_counts(cluster: RedisClusterServers) -> list[int]:
    counts = []
    for port in cluster.ports:
        client = redis.Redis(host="127.0.0.1", port=port)
        counts.append(int(client.dbsize()))
        client.close()
    return counts


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_cluster_client_decides_every_algorithm(
    cluster_client: redis.cluster.RedisCluster, algorithm: Algorithm
) -> None:
    """With a RedisCluster client, each algorithm admits the amount and then refuses."""
    storage = RedisStorage(cluster_client)
    limiter = Limiter(DictSource({"api": {"rate": "3/minute", "algorithm": algorithm}}), storage)
    decisions = [limiter.hit("api", key="tenant-1") for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions[:3]] == [2, 1, 0]
    # Past the amount a sliding window waits for the previous window's weight to fade, which
    # takes up to two periods; the other algorithms free a unit within one.
    longest = 120 if algorithm == "sliding-window" else 60
    assert 0 < decisions[3].retry_after <= longest
    # Another key has its own count.
    assert limiter.hit("api", key="tenant-2").allowed


@pytest.mark.parametrize("how", ["scheme", "flag"])
def test_from_url_builds_a_cluster_client(cluster_url: str, how: str) -> None:
    """``redis+cluster://`` and ``cluster=True`` both give a storage on a RedisCluster."""
    if how == "scheme":
        storage = RedisStorage.from_url(cluster_url)
    else:
        storage = RedisStorage.from_url(plain(cluster_url), cluster=True)
    with storage:
        limiter = Limiter(DictSource({"api": "2/minute"}), storage)
        assert [limiter.hit("api", key="k").allowed for _ in range(3)] == [True, True, False]
        assert isinstance(storage.client, redis.cluster.RedisCluster)
        assert storage.client.exists(*storage.keys(limiter.bound("api"), "k")) == 1


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_async_cluster_decides_every_algorithm(cluster_url: str, algorithm: Algorithm) -> None:
    """AsyncRedisStorage on an asyncio RedisCluster, given or from the URL, decides alike."""

    async def run() -> list[list[bool]]:
        given = redis.asyncio.cluster.RedisCluster.from_url(plain(cluster_url))
        results: list[list[bool]] = []
        try:
            for storage in (AsyncRedisStorage(given), AsyncRedisStorage.from_url(cluster_url)):
                async with storage:
                    limiter = AsyncLimiter(
                        DictSource({"api": {"rate": "3/minute", "algorithm": algorithm}}),
                        storage,
                    )
                    key = f"via-{len(results)}"
                    results.append([(await limiter.hit("api", key=key)).allowed for _ in range(4)])
        finally:
            await given.aclose()
        return results

    assert asyncio.run(run()) == [[True, True, True, False]] * 2


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_multi_rate_policy_keys_share_one_slot(
    cluster_client: redis.cluster.RedisCluster, algorithm: Algorithm
) -> None:
    """The keys of a multi-rate decision hash to one slot, and the rates are all-or-nothing."""
    clock = ManualClock(1000.0)
    storage = RedisStorage(cluster_client, clock=clock)
    spec = {"rate": "2/second;3/minute", "algorithm": algorithm}
    limiter = Limiter(DictSource({"api": spec}), storage)
    keys = storage.keys(limiter.bound("api"), "user:{42}")
    assert len(keys) == 2
    slots = {key_slot(k.encode()) for k in keys}
    assert len(slots) == 1
    assert {int(cluster_client.cluster_keyslot(k)) for k in keys} == slots

    assert [limiter.hit("api", key="user:{42}").allowed for _ in range(3)] == [True, True, False]
    clock.advance(1.5)
    # The refused third hit consumed nothing from the per-minute rate.
    assert limiter.hit("api", key="user:{42}").allowed
    clock.advance(1.5)
    refused = limiter.hit("api", key="user:{42}")
    assert not refused.allowed
    assert refused.rate == Rate(3, 60.0)
    assert cluster_client.exists(*keys) == 2


def test_keys_of_different_users_spread_over_slots_and_nodes(
    cluster_client: redis.cluster.RedisCluster, redis_cluster_proc: RedisClusterServers
) -> None:
    """Each (limit name, key) pair is its own hash tag, so users spread over the masters."""
    storage = RedisStorage(cluster_client)
    limiter = Limiter(DictSource({"api": "5/second;100/hour"}), storage)
    users = [f"user-{i}" for i in range(24)]
    for user in users:
        assert limiter.hit("api", key=user).allowed
    slots = {key_slot(storage.keys(limiter.bound("api"), user)[0].encode()) for user in users}
    assert len(slots) > 1
    counts = node_key_counts(redis_cluster_proc)
    assert sum(counts) == 2 * len(users)
    assert sum(1 for count in counts if count) > 1


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_cluster_counts_exactly_under_threads(cluster_url: str, algorithm: Algorithm) -> None:
    """Four threads racing on one key of a cluster admit exactly the limit's amount."""
    storage = RedisStorage.from_url(cluster_url, clock=ManualClock(5000.0))
    limiter = Limiter(DictSource({"api": {"rate": "50/hour", "algorithm": algorithm}}), storage)
    admitted: list[int] = []
    barrier = threading.Barrier(4)

    def worker() -> None:
        barrier.wait()
        admitted.append(sum(limiter.hit("api", key="shared").allowed for _ in range(30)))

    with storage:
        threads = [threading.Thread(target=worker) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(admitted) == 4
    assert sum(admitted) == 50


def test_script_flush_on_every_master_is_recovered(
    cluster_client: redis.cluster.RedisCluster, redis_cluster_proc: RedisClusterServers
) -> None:
    """After SCRIPT FLUSH on every master the next decision reloads the script and succeeds."""
    storage = RedisStorage(cluster_client)
    limiter = Limiter(DictSource({"api": "2/minute"}), storage)
    assert limiter.hit("api", key="a").allowed
    for port in redis_cluster_proc.ports:
        node = redis.Redis(host="127.0.0.1", port=port)
        node.script_flush()
        node.close()
    assert [limiter.hit("api", key=k).allowed for k in ("a", "a", "b")] == [True, False, True]


def test_redis_source_reads_limits_from_a_cluster(
    cluster_client: redis.cluster.RedisCluster,
) -> None:
    """RedisSource on a RedisCluster client reads the limits hash and hears of changes."""
    cluster_client.hset("ratekeeper:limits", mapping={"api": "2/minute", "__version__": 1})
    # A clock that stands still: only the notification can make the source look again.
    source = RedisSource(cluster_client, interval=60.0, clock=ManualClock())
    try:
        assert source._subscribed.wait(5)
        limiter = Limiter(source, RedisStorage(cluster_client))
        assert [limiter.hit("api").allowed for _ in range(3)] == [True, True, False]
        # An operator's change through another RedisSource on the cluster.
        writer = RedisSource(cluster_client, interval=60.0, clock=ManualClock(), subscribe=False)
        writer.set("api", "3/minute")
        writer.close()
        assert source._notified.wait(5)
        # The new amount applies to the count kept so far.
        assert limiter.hit("api").allowed
        assert not limiter.hit("api").allowed
    finally:
        source.close()
