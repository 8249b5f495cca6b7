"""RedisSource against a real redis-server: one hash of limits shared by a fleet.

Two RedisSource instances on separate clients stand for two processes. Time between looks
is a ManualClock; notifications travel through the server's real pub/sub.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator

import pytest
import redis

from ratekeeper import (
    ConfigError,
    Limiter,
    MemoryStorage,
    Policy,
    Rate,
    RedisSource,
    RedisStorage,
    StorageError,
)
from ratekeeper.sources._redis import VERSION_FIELD, encode_spec
from ratekeeper.testing import ManualClock
from tests.servers import start_redis

pytestmark = pytest.mark.redis

KEY = "ratekeeper:limits"


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    """A plain client of the test server, for looking behind the sources' backs."""
    with redis.Redis.from_url(redis_url, decode_responses=True) as plain:
        yield plain


def calls(client: redis.Redis, command: str) -> int:
    """How many times the server ran ``command`` since the last CONFIG RESETSTAT."""
    stats = client.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


def rate_of(source: RedisSource, name: str) -> Rate | None:
    _ = source.version
    policy = source.snapshot().resolve(name)
    return None if policy is None else policy.rates[0]


def test_set_is_seen_by_the_writer_at_once_and_by_others_after_the_interval(
    redis_url: str,
) -> None:
    """A writes; A's next call sees it; B (no pub/sub) sees it once its interval passed."""
    clock = ManualClock()
    with (
        RedisSource.from_url(redis_url, subscribe=False, clock=clock) as a,
        RedisSource.from_url(redis_url, interval=2.0, subscribe=False, clock=clock) as b,
    ):
        a.set("sns.publish", {"rate": "300/second", "algorithm": "token-bucket", "burst": 600})
        assert rate_of(a, "sns.publish") == Rate(300, 1.0)  # read back by set()
        assert rate_of(b, "sns.publish") is None
        clock.advance(2.0)
        assert b.snapshot().resolve("sns.publish") is None
        _ = b.version
        assert b.snapshot().resolve("sns.publish") == Policy.parse(
            {"rate": "300/second", "algorithm": "token-bucket", "burst": 600}
        )
        a.delete("sns.publish")
        a.delete("never-there")
        clock.advance(2.0)
        assert rate_of(b, "sns.publish") is None


def test_a_notification_makes_the_next_call_look(redis_url: str) -> None:
    """With pub/sub, another process's change is seen without waiting for the interval."""
    clock = ManualClock()
    with (
        RedisSource.from_url(redis_url, subscribe=False, clock=clock) as writer,
        RedisSource.from_url(redis_url, interval=3600, clock=clock) as reader,
    ):
        assert reader._subscribed.wait(5.0)
        version = reader.version
        writer.set("jobs", "7/minute")
        assert reader._notified.wait(5.0)
        assert reader.version is not version
        assert rate_of(reader, "jobs") == Rate(7, 60.0)
    assert reader._listener is not None
    assert not reader._listener.is_alive()


def test_the_hot_path_sends_nothing_to_redis(redis_url: str, client: redis.Redis) -> None:
    """1000 calls within the interval send no command; one look past it is one HGET."""
    clock = ManualClock()
    with RedisSource.from_url(redis_url, interval=5.0, subscribe=False, clock=clock) as source:
        source.set("jobs", "1000000/second")
        limiter = Limiter(source, MemoryStorage(clock=clock))

        @limiter.limit("jobs")
        def job() -> None:
            pass

        job()
        client.config_resetstat()
        for _ in range(1000):
            job()
        assert calls(client, "hget") == 0
        assert calls(client, "hgetall") == 0
        clock.advance(5.0)
        for _ in range(1000):
            job()
        assert calls(client, "hget") == 1
        assert calls(client, "hgetall") == 0  # the counter did not move: nothing re-read


def test_set_validates_before_writing(redis_url: str, client: redis.Redis) -> None:
    """A bad spec or name is a ConfigError and writes nothing (the counter stays put)."""
    with RedisSource.from_url(redis_url, subscribe=False) as source:
        source.set("ok", "1/second")
        before = client.hgetall(KEY)
        with pytest.raises(ConfigError, match=r"limit 'jobs': .*fortnight"):
            source.set("jobs", "5/fortnight")
        with pytest.raises(ConfigError, match=r"limit 'jobs': unknown algorithm"):
            source.set("jobs", {"rate": "5/minute", "algorithm": "leaky"})
        with pytest.raises(ConfigError, match="reserved for the version counter"):
            source.set(VERSION_FIELD, "5/minute")
        with pytest.raises(ConfigError, match="non-empty string"):
            source.delete("")
        assert client.hgetall(KEY) == before


@pytest.mark.parametrize(
    "spec",
    [
        "5/minute;100/hour",
        {"rate": "300/second", "algorithm": "token-bucket", "burst": 600},
        {"rate": "5/minute", "mode": "shadow", "algorithm": "sliding-log"},
        Policy((Rate(3, 10.0),), algorithm="fixed-window"),
    ],
)
def test_every_spec_shape_survives_the_hash(redis_url: str, spec: object) -> None:
    """What set() writes reads back as the same policy."""
    with RedisSource.from_url(redis_url, subscribe=False) as source:
        source.set("x", spec)  # type: ignore[arg-type]
        _ = source.version
        assert source.snapshot()["x"] == Policy.parse(spec)  # type: ignore[arg-type]
        assert Policy.parse(spec) == Policy.parse(  # type: ignore[arg-type]
            json_or_text(encode_spec(spec))  # type: ignore[arg-type]
        )


def json_or_text(text: str) -> object:
    import json

    return json.loads(text) if text.startswith("{") else text


def test_a_bad_value_in_the_hash_is_skipped_and_reported(
    redis_url: str, client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """A value written by other means that is not a spec is reported once; the rest works."""
    clock = ManualClock()
    with RedisSource.from_url(redis_url, subscribe=False, clock=clock) as source:
        source.set("good", "2/second")
        client.hset(KEY, mapping={"bad": "lots", "table": '{"rate": 5'})
        client.hincrby(KEY, VERSION_FIELD, 1)
        with caplog.at_level(logging.WARNING, logger="ratekeeper.sources"):
            clock.advance(1.0)
            assert rate_of(source, "good") == Rate(2, 1.0)
            for _ in range(3):
                clock.advance(1.0)
                _ = source.version
        assert set(source.snapshot()) == {"good"}
        assert {problem.name for problem in source.problems} == {"bad", "table"}
        messages = sorted(r.getMessage() for r in caplog.records)
        assert len(messages) == 2
        assert "redis hash 'ratekeeper:limits': limit 'bad'" in messages[0]
        assert "'lots'" in messages[0]
        assert "skipping it" in messages[0]
        assert "invalid JSON table" in messages[1]
        assert isinstance(source.last_error, ConfigError)
        source.delete("bad")
        source.delete("table")
        _ = source.version
        assert source.last_error is None


def test_an_entry_written_without_the_counter_waits_for_it(
    redis_url: str, client: redis.Redis
) -> None:
    """HSET alone is not announced; bumping __version__ makes every source read it."""
    clock = ManualClock()
    with RedisSource.from_url(redis_url, subscribe=False, clock=clock) as source:
        source.set("a", "1/second")
        _ = source.version
        client.hset(KEY, "a", "9/second")
        clock.advance(1.0)
        assert rate_of(source, "a") == Rate(1, 1.0)
        client.hincrby(KEY, VERSION_FIELD, 1)
        clock.advance(1.0)
        assert rate_of(source, "a") == Rate(9, 1.0)


def test_redis_down_keeps_the_last_good_limits(caplog: pytest.LogCaptureFixture) -> None:
    """With the server gone calls go on under the last limits, reported; it comes back."""
    server = start_redis()
    try:
        clock = ManualClock()
        with RedisSource.from_url(server.url, subscribe=False, clock=clock) as source:
            source.set("jobs", "4/minute")
            limiter = Limiter(source, MemoryStorage(clock=clock))
            assert limiter.hit("jobs").rate == Rate(4, 60.0)
            server.stop()
            clock.advance(1.0)
            with caplog.at_level(logging.WARNING, logger="ratekeeper.sources"):
                for _ in range(3):
                    assert limiter.hit("jobs").rate == Rate(4, 60.0)
                    clock.advance(1.0)
            assert isinstance(source.last_error, StorageError)
            assert isinstance(source.last_error.__cause__, redis.ConnectionError)
            assert len(caplog.records) == 1
            assert "cannot read the limits" in caplog.records[0].getMessage()
            with pytest.raises(StorageError, match="could not write limit 'jobs'"):
                source.set("jobs", "5/minute")
            server = start_redis(port=server.port)
            with redis.Redis.from_url(server.url) as fresh:
                fresh.hset(KEY, mapping={"jobs": "6/minute", VERSION_FIELD: 1})
            clock.advance(1.0)
            assert limiter.hit("jobs").rate == Rate(6, 60.0)
            assert source.last_error is None
    finally:
        server.stop()
        shutil.rmtree(server.directory, ignore_errors=True)


def test_a_lost_hash_keeps_the_last_good_limits(
    redis_url: str, client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """A hash lost in a restart without persistence keeps the limits, reported, until an
    operator writes again; then the hash is the truth once more."""
    clock = ManualClock()
    with RedisSource.from_url(redis_url, subscribe=False, clock=clock) as source:
        source.set("jobs", "4/minute")
        source.set("reports", "1/hour")
        limiter = Limiter(source, MemoryStorage(clock=clock))
        assert limiter.hit("jobs").rate == Rate(4, 60.0)
        client.flushall()  # what a restart of a Redis without persistence leaves
        clock.advance(1.0)
        with caplog.at_level(logging.WARNING, logger="ratekeeper"):
            for _ in range(3):
                assert limiter.hit("jobs").rate == Rate(4, 60.0)
                clock.advance(1.0)
        assert source.last_error is not None
        assert "the hash is gone" in str(source.last_error)
        assert len([r for r in caplog.records if "the hash is gone" in r.getMessage()]) == 1
        source.set("jobs", "6/minute")
        assert limiter.hit("jobs").rate == Rate(6, 60.0)
        assert source.problems == ()
        with pytest.raises(ConfigError, match="'reports'"):
            limiter.hit("reports")


def test_a_fleet_shares_a_raised_limit(redis_url: str) -> None:
    """Two processes share counts in Redis; one raises 5/minute to 10/minute: 5 more in all."""
    clock = ManualClock(1000.0)
    with (
        RedisSource.from_url(redis_url, subscribe=False, clock=clock) as source_a,
        RedisSource.from_url(redis_url, subscribe=False, clock=clock) as source_b,
        RedisStorage.from_url(redis_url, clock=clock) as storage_a,
        RedisStorage.from_url(redis_url, clock=clock) as storage_b,
    ):
        source_a.set("reports.export", "5/minute")
        clock.advance(1.0)
        a = Limiter(source_a, storage_a)
        b = Limiter(source_b, storage_b)
        assert [a.hit("reports.export").allowed for _ in range(3)] == [True] * 3
        assert [b.hit("reports.export").allowed for _ in range(3)] == [True, True, False]
        source_a.set("reports.export", "10/minute")
        assert [a.hit("reports.export").allowed for _ in range(2)] == [True, True]
        assert not b.hit("reports.export").allowed  # b still reads 5/minute
        clock.advance(1.0)
        assert [b.hit("reports.export").allowed for _ in range(4)] == [True] * 3 + [False]


def test_an_empty_key_is_a_config_error(redis_url: str) -> None:
    """The hash key must be a non-empty string."""
    with pytest.raises(ConfigError, match="non-empty key"):
        RedisSource.from_url(redis_url, key="", subscribe=False)
