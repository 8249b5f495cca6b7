"""RedisStorage and AsyncRedisStorage against a real redis-server: connection, scripts,
keys, time, retries and adaptive back-off."""

from __future__ import annotations

import asyncio
import datetime
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import freezegun
import pytest
import redis
import redis.asyncio
from hypothesis import given
from hypothesis import strategies as st
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.retry import Retry

from ratekeeper import (
    AsyncLimiter,
    AsyncRedisStorage,
    AsyncStorage,
    ConfigError,
    DictSource,
    Limiter,
    MemoryStorage,
    Policy,
    Rate,
    RedisStorage,
    Storage,
    StorageError,
)
from ratekeeper._adaptive import Backoff
from ratekeeper._algorithms import BoundLimit
from ratekeeper._rates import Algorithm
from ratekeeper.storage._redis_core import ADAPT_SHA, SCRIPT_SHA, key_component
from ratekeeper.testing import ManualClock
from tests.servers import redis_server
from tests.strategies import ALGORITHMS

pytestmark = pytest.mark.redis

# The longest key the storage can write: prefix (40), version, two bounded components
# (57 each), separators, algorithm code and a period in µs.
KEY_BOUND = 200

HOSTILE_KEYS = [
    "",
    "plain",
    "a:b",
    "a|b",
    "{",
    "}",
    "{tag}",
    "a}:fw:60000000:{b",
    "%7B",
    "%",
    "#",
    "#" + "0" * 40,
    "line\nbreak",
    "tab\tcr\r",
    "nul\x00byte",
    "ключ",
    "键",
    "🙂",
    "e\u0301",
    "\u00e9",
    " ",
    "x" * 10_240,
    "x" * 10_239 + "y",
    "é" * 5_000,
]


def server_keys(url: str) -> dict[bytes, int]:
    """Every key on the server with its PTTL."""
    client = redis.Redis.from_url(url)
    try:
        return {key: int(client.pttl(key)) for key in client.scan_iter(count=1000)}
    finally:
        client.close()


def commandstats(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name: int(entry["calls"]) for name, entry in stats.items()}


def settled_evalsha_calls(client: redis.Redis, expected: int) -> int:
    """The EVALSHA calls the server has run, once it has run ``expected`` of them (or after
    two seconds): a call sent on a connection that timed out runs when the server gets
    to it, which may be after commands another client sent later."""
    deadline = time.monotonic() + 2.0
    while True:
        calls = commandstats(client).get("cmdstat_evalsha", 0)
        if calls >= expected or time.monotonic() > deadline:
            return calls
        time.sleep(0.01)


def test_from_url_has_short_timeouts_no_retries_and_hiredis(redis_url: str) -> None:
    """from_url builds a client with 0.25 s timeouts, zero retries and hiredis's parser."""
    with RedisStorage.from_url(redis_url) as storage:
        client = storage.client
        assert client.get_retry().get_retries() == 0
        connection = client.connection_pool.make_connection()
        assert (connection.socket_timeout, connection.socket_connect_timeout) == (0.25, 0.25)
        assert connection.retry.get_retries() == 0
        assert type(connection._parser).__name__ == "_HiredisParser"
        connection.disconnect()
        assert isinstance(storage, Storage)
    astorage = AsyncRedisStorage.from_url(redis_url)
    assert isinstance(astorage, AsyncStorage)
    pool = astorage.client.connection_pool
    assert pool.connection_kwargs["socket_timeout"] == 0.25
    assert pool.connection_kwargs["socket_connect_timeout"] == 0.25
    assert pool.connection_kwargs["retry"].get_retries() == 0


@pytest.mark.parametrize("option", ["retry", "retry_on_timeout", "retry_on_error"])
def test_retry_options_are_refused(redis_url: str, option: str) -> None:
    """A decision is never retried, so from_url refuses retry options with a reason."""
    options: dict[str, Any] = {option: True}
    with pytest.raises(ConfigError, match=f"{option}="):
        RedisStorage.from_url(redis_url, **options)


@pytest.mark.parametrize(
    ("url", "options", "complaint"),
    [
        ("http://user:hunter2@host/0", {}, "scheme 'http://'"),
        ("localhost:6379", {}, "scheme '(none)'"),
        ("redis://localhost", {"socket_timeout": 0}, "socket_timeout must be"),
        ("redis://localhost", {"socket_connect_timeout": -1.0}, "socket_connect_timeout"),
    ],
)
def test_bad_urls_and_timeouts_are_config_errors(
    url: str, options: dict[str, Any], complaint: str
) -> None:
    """A bad scheme or timeout is a ConfigError saying which; a password is never shown."""
    with pytest.raises(ConfigError, match=re.escape(complaint)) as raised:
        RedisStorage.from_url(url, **options)
    assert "hunter2" not in str(raised.value)
    with pytest.raises(ConfigError, match=re.escape(complaint)):
        AsyncRedisStorage.from_url(url, **options)


def test_password_protected_server() -> None:
    """A password in the URL authenticates; without it the decision fails clearly."""
    with redis_server("--requirepass", "s3cret:pw") as server:
        url = f"redis://:s3cret%3Apw@127.0.0.1:{server.port}/0"
        limiter = Limiter(DictSource({"w": "2/minute"}), RedisStorage.from_url(url))
        assert [limiter.hit("w").allowed for _ in range(3)] == [True, True, False]
        anonymous = Limiter(DictSource({"w": "2/minute"}), RedisStorage.from_url(server.url))
        with pytest.raises(StorageError, match=r"Authentication|NOAUTH"):
            anonymous.hit("w")


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (made with the openssl tool)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt"),
            *("ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_rediss_url_talks_tls(tls_files: tuple[Path, Path]) -> None:
    """rediss:// with a CA file decides over TLS, sync and async, against a TLS-only server."""
    from tests.servers import free_port

    cert, key = tls_files
    port = free_port()
    tls = ("--tls-port", str(port), "--tls-cert-file", str(cert), "--tls-key-file", str(key))
    extra = (*tls, "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no")
    with redis_server(*extra):
        url = f"rediss://127.0.0.1:{port}/0"
        storage = RedisStorage.from_url(url, ssl_ca_certs=str(cert))
        limiter = Limiter(DictSource({"w": "1/minute"}), storage)
        assert [limiter.hit("w").allowed for _ in range(2)] == [True, False]
        storage.close()

        async def scenario() -> list[bool]:
            async with AsyncRedisStorage.from_url(url, ssl_ca_certs=str(cert)) as astorage:
                alimiter = AsyncLimiter(DictSource({"w": "1/minute"}), astorage)
                return [(await alimiter.hit("w", key="async")).allowed for _ in range(2)]

        assert asyncio.run(scenario()) == [True, False]


def test_an_existing_client_is_used_and_left_open(redis_url: str) -> None:
    """A client passed in is used as it is, and close() leaves it to its owner."""
    client = redis.Redis.from_url(redis_url)
    storage = RedisStorage(client, prefix="mine")
    limiter = Limiter(DictSource({"w": "1/minute"}), storage)
    assert limiter.hit("w").allowed
    storage.close()
    assert client.ping()
    assert all(key.startswith(b"mine:v2:{w|}") for key in client.scan_iter())
    client.close()


def test_one_round_trip_per_decision(redis_url: str) -> None:
    """Each decision, on any policy, is exactly one EVALSHA on the server."""
    spec = {"rate": "10/second;100/minute;1000/hour", "algorithm": "sliding-window"}
    with RedisStorage.from_url(redis_url) as storage:
        limiter = Limiter(DictSource({"w": spec}), storage)
        limiter.hit("w")  # loads the script once
        storage.client.config_resetstat()
        for _ in range(20):
            limiter.hit("w")
        limiter.peek("w")
        stats = commandstats(storage.client)
    # commandstats also counts the commands a script calls: every decision read the
    # server's TIME once, and nothing but EVALSHA came from the client.
    assert stats["cmdstat_evalsha"] == 21
    assert stats["cmdstat_time"] == 21
    inside = {"cmdstat_time", "cmdstat_mget", "cmdstat_set"}
    assert set(stats) - inside == {"cmdstat_evalsha", "cmdstat_config|resetstat"}


def test_scripts_are_reloaded_after_script_flush(redis_url: str) -> None:
    """After SCRIPT FLUSH (a restart, a failover) decisions and back-off calls still work."""
    clock = ManualClock(1000.0)
    with RedisStorage.from_url(redis_url, clock=clock) as storage:
        limiter = Limiter(DictSource({"w": "3/minute"}), storage)
        limiter.adapt("w", Backoff(refresh=0.0))
        assert limiter.hit("w").allowed
        storage.client.script_flush()
        assert storage.client.script_exists(SCRIPT_SHA, ADAPT_SHA) == [False, False]
        assert limiter.hit("w").allowed
        storage.client.script_flush()
        assert limiter.throttle("w") == 0.5
        # 3/minute at half scale is 1/minute, and two were taken: refused.
        assert not limiter.hit("w").allowed
        assert storage.client.script_exists(SCRIPT_SHA, ADAPT_SHA) == [True, True]


def test_async_scripts_are_reloaded_after_script_flush(redis_url: str) -> None:
    """The asyncio storage reloads its scripts after SCRIPT FLUSH too."""

    async def scenario() -> list[bool]:
        async with AsyncRedisStorage.from_url(redis_url) as storage:
            limiter = AsyncLimiter(DictSource({"w": "3/minute"}), storage)
            limiter.adapt("w", Backoff(refresh=0.0))
            first = (await limiter.hit("w")).allowed
            await storage.client.script_flush()
            second = (await limiter.hit("w")).allowed
            await storage.client.script_flush()
            scale = await limiter.throttle("w")
            return [first, second, scale == 0.5, not (await limiter.hit("w")).allowed]

    assert asyncio.run(scenario()) == [True] * 4


def test_a_decision_is_never_retried_after_a_timeout() -> None:
    """A decision that times out (server busy) is not sent again: it runs exactly once."""
    with redis_server("--enable-debug-command", "yes") as server:
        admin = redis.Redis.from_url(server.url)
        probe = redis.Redis.from_url(server.url, socket_timeout=0.02, retry=Retry(NoBackoff(), 0))
        sleeper = threading.Thread(target=admin.execute_command, args=("DEBUG", "SLEEP", "0.5"))
        storage = RedisStorage.from_url(server.url, socket_timeout=0.05, retry_interval=0)
        limit = BoundLimit.compile("w", Policy.parse({"rate": "5/minute"}))
        storage.decide(limit, "k", 1)  # connected, script loaded
        admin.config_resetstat()
        sleeper.start()
        for _ in range(10_000):  # until the server is busy sleeping
            try:
                probe.ping()
            except redis.TimeoutError:
                break
        else:
            pytest.fail("DEBUG SLEEP never made the server busy")
        with pytest.raises(StorageError, match="Timeout"):
            storage.decide(limit, "k", 1)
        sleeper.join()
        assert settled_evalsha_calls(admin, 1) == 1
        # The timed-out call did run once on the server: 2 units used in all, not 3.
        assert storage.decide(limit, "k", 1, commit=False)[2] == 3
        for client in (admin, probe):
            client.close()
        storage.close()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_hostile_keys_never_collide_or_fail(redis_url: str, algorithm: Algorithm) -> None:
    """Keys with separators, braces, newlines, unicode or 10 kB: one state each, bounded
    Redis keys with a TTL, and every rate of a key in one hash slot."""
    clock = ManualClock(5000.0)
    name = "api:{v1}|\nname"
    spec = {"rate": "1/day;2/30 days", "algorithm": algorithm}
    with RedisStorage.from_url(redis_url, clock=clock) as storage:
        limiter = Limiter(DictSource({name: spec}), storage)
        assert all(limiter.hit(name, key=key).allowed for key in HOSTILE_KEYS)
        assert not any(limiter.hit(name, key=key).allowed for key in HOSTILE_KEYS)
        for key in HOSTILE_KEYS:
            slots = {key_slot(k.encode()) for k in storage.keys(limiter.bound(name), key)}
            assert len(slots) == 1
    written = server_keys(redis_url)
    assert len(written) == 2 * len(HOSTILE_KEYS)
    assert max(len(key) for key in written) <= KEY_BOUND
    assert all(pttl > 0 for pttl in written.values())


@given(st.lists(st.text(max_size=80), min_size=2, max_size=8, unique=True))
def test_key_components_are_injective_and_bounded(texts: list[str]) -> None:
    """Distinct user keys always give distinct, short, brace- and colon-free components."""
    components = [key_component(text) for text in texts]
    assert len(set(components)) == len(texts)
    for component in components:
        assert len(component) <= 57
        assert not set(component) & set("{}:|\n ")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_every_key_gets_a_ttl_no_longer_than_its_state_lives(
    redis_url: str, algorithm: Algorithm
) -> None:
    """On server time every key written, back-off included, expires within two periods."""
    spec = {"rate": "3/second;10/minute", "algorithm": algorithm}
    with RedisStorage.from_url(redis_url) as storage:
        limiter = Limiter(DictSource({"w": spec}), storage)
        limiter.adapt("w", Backoff(quiet=1.0, refresh=0.0))
        for key in ("a", "b"):
            limiter.hit("w", key=key, cost=2)
            limiter.hit("w", key=key, cost=2)  # refused by 3/second: writes nothing
        limiter.throttle("w", key="a")
    written = server_keys(redis_url)
    assert len(written) == 5
    assert all(0 < pttl <= 120_000 for pttl in written.values())
    # The back-off key shares the hash tag (and so the Cluster slot) of the key's rates.
    of_a = [key for key in written if b"{w|a}" in key]
    assert len(of_a) == 3
    assert len({key_slot(key) for key in of_a}) == 1


def test_prefix_separates_applications_and_is_validated(redis_url: str) -> None:
    """Two prefixes on one server count apart; a prefix with braces or spaces is refused."""
    with (
        RedisStorage.from_url(redis_url, prefix="app-one") as one,
        RedisStorage.from_url(redis_url, prefix="app-two") as two,
    ):
        for storage in (one, two):
            limiter = Limiter(DictSource({"w": "1/minute"}), storage)
            assert limiter.hit("w").allowed
    prefixes = {key.split(b":")[0] for key in server_keys(redis_url)}
    assert prefixes == {b"app-one", b"app-two"}
    for bad in ["", "a b", "{x}", "x" * 41]:
        with pytest.raises(ConfigError, match="prefix"):
            RedisStorage.from_url(redis_url, prefix=bad)


def test_server_time_is_what_counts_not_a_skewed_client_clock(redis_url: str) -> None:
    """A host whose clock is 30 s ahead gets no extra admissions on server time; with its
    own clock it would have taken a second burst (the contrast proves the test bites)."""
    spec = {"rate": "10/minute", "algorithm": "token-bucket"}
    with RedisStorage.from_url(redis_url) as honest:
        on_time = Limiter(DictSource({"w": spec}), honest)
        assert sum(on_time.hit("w").allowed for _ in range(12)) == 10
    skewed_clock = RedisStorage.from_url(redis_url, prefix="own-clock", clock=lambda: time.time())
    skewed_server = RedisStorage.from_url(redis_url)
    own = Limiter(DictSource({"w": spec}), skewed_clock)
    assert sum(own.hit("w").allowed for _ in range(12)) == 10
    ahead = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=30)
    with freezegun.freeze_time(ahead, tick=True):
        on_server = Limiter(DictSource({"w": spec}), skewed_server)
        assert sum(on_server.hit("w").allowed for _ in range(12)) == 0
        assert sum(own.hit("w").allowed for _ in range(12)) == 5
    skewed_clock.close()
    skewed_server.close()


def test_async_limiter_decorator_paces_waiters_by_reservation(redis_url: str) -> None:
    """AsyncLimiter on AsyncRedisStorage: on_exceeded="wait" reserves evenly paced slots."""
    clock = ManualClock(1000.0)

    async def scenario() -> list[float]:
        seen: list[float] = []
        async with AsyncRedisStorage.from_url(redis_url, clock=clock) as storage:
            spec = {"rate": "4/second", "algorithm": "token-bucket", "burst": 1}
            limiter = AsyncLimiter(DictSource({"p": spec}), storage, sleep=clock.async_sleep)

            @limiter.limit("p", on_exceeded="wait", max_wait=5.0)
            async def call() -> None:
                seen.append(round(clock() - 1000.0, 6))

            for _ in range(4):
                await call()
        return seen

    assert asyncio.run(scenario()) == [0.0, 0.25, 0.5, 0.75]


def test_async_limiter_counts_like_the_sync_one(redis_url: str) -> None:
    """The asyncio storage shares state with the sync one: same keys, same counts."""

    async def scenario() -> list[bool]:
        async with AsyncRedisStorage.from_url(redis_url) as storage:
            limiter = AsyncLimiter(DictSource({"w": "3/300 days"}), storage)
            return [(await limiter.hit("w", key="k")).allowed for _ in range(2)]

    assert asyncio.run(scenario()) == [True, True]
    with RedisStorage.from_url(redis_url) as storage:
        limiter = Limiter(DictSource({"w": "3/300 days"}), storage)
        assert [limiter.hit("w", key="k").allowed for _ in range(2)] == [True, False]


@pytest.fixture
def fleet(redis_url: str) -> Iterator[tuple[Limiter, Limiter, ManualClock]]:
    """Two limiters, each with its own Redis client, sharing one server and one clock."""
    clock = ManualClock(1000.0)
    storages = [RedisStorage.from_url(redis_url, clock=clock) for _ in range(2)]
    limiters = []
    for storage in storages:
        limiter = Limiter(DictSource({"aws.sns.Publish": "10/second"}), storage)
        limiter.adapt("aws.*", Backoff(refresh=0.0))
        limiters.append(limiter)
    yield limiters[0], limiters[1], clock
    for storage in storages:
        storage.close()


def test_a_throttle_in_one_process_slows_the_fleet(
    fleet: tuple[Limiter, Limiter, ManualClock],
) -> None:
    """A throttle recorded through one client lowers the rate another client sees."""
    first, second, clock = fleet
    assert second.peek("aws.sns.Publish", "us-east-1").rate == Rate(10, 1.0)
    assert first.throttle("aws.sns.Publish", "us-east-1") == 0.5
    assert second.peek("aws.sns.Publish", "us-east-1").rate == Rate(5, 1.0)
    assert second.peek("aws.sns.Publish", "eu-west-1").rate == Rate(10, 1.0)
    assert second.throttle("aws.sns.Publish", "us-east-1") == 0.5  # within the cooldown
    clock.advance(5.0)
    assert first.peek("aws.sns.Publish", "us-east-1").rate == Rate(6, 1.0)
    second.reset("aws.sns.Publish", "us-east-1")
    assert first.peek("aws.sns.Publish", "us-east-1").rate == Rate(10, 1.0)


def test_async_throttle_is_shared_with_sync_processes(redis_url: str) -> None:
    """A throttle recorded through AsyncRedisStorage is seen by a RedisStorage limiter."""

    async def scenario() -> float:
        async with AsyncRedisStorage.from_url(redis_url) as storage:
            limiter = AsyncLimiter(DictSource({"aws.sqs.SendMessage": "8/second"}), storage)
            limiter.adapt("aws.*", Backoff(refresh=0.0))
            return await limiter.throttle("aws.sqs.SendMessage")

    assert asyncio.run(scenario()) == 0.5
    with RedisStorage.from_url(redis_url) as storage:
        limiter = Limiter(DictSource({"aws.sqs.SendMessage": "8/second"}), storage)
        limiter.adapt("aws.*", Backoff(refresh=0.0))
        assert limiter.peek("aws.sqs.SendMessage").rate == Rate(4, 1.0)


# The sync and asyncio storages send decisions on connections they keep from the client's
# pool (ratekeeper.storage._redis_lanes): these pin down what that path must get right.


def test_close_returns_the_kept_connection_to_the_pool(redis_url: str) -> None:
    """Decisions keep one connection of the client's pool; close() hands it back."""
    pool = redis.BlockingConnectionPool.from_url(redis_url, max_connections=1, timeout=0.05)
    client = redis.Redis(connection_pool=pool)
    storage = RedisStorage(client)
    limiter = Limiter(DictSource({"w": "100/minute", "a": "100/minute"}), storage)
    limiter.adapt("a", Backoff(refresh=0.0))
    # Script loads, resets and back-off calls take the same connection: nothing starves.
    assert [limiter.hit("w").remaining for _ in range(3)] == [99, 98, 97]
    limiter.reset("w")
    assert limiter.throttle("a") == 0.5
    with pytest.raises(redis.ConnectionError, match="No connection available"):
        client.ping()
    storage.close()
    assert client.ping()
    assert limiter.hit("w").remaining == 99  # the connection is taken again
    storage.close()
    client.close()


def test_a_connection_the_server_closed_while_idle_is_replaced(redis_url: str) -> None:
    """After the server drops the kept connection, the next decision reconnects and counts."""
    admin = redis.Redis.from_url(redis_url)
    with RedisStorage.from_url(redis_url, retry_interval=60.0) as storage:
        limiter = Limiter(DictSource({"w": "100/minute"}), storage)
        assert limiter.hit("w").remaining == 99
        assert admin.client_kill_filter(_type="normal", skipme=True) >= 1
        assert limiter.hit("w").remaining == 98
        assert storage.failure_counts() == {}
    admin.close()


def test_async_connection_the_server_closed_while_idle_is_replaced(redis_url: str) -> None:
    """The asyncio storage, too, replaces a kept connection the server has closed."""
    admin = redis.Redis.from_url(redis_url)

    async def scenario() -> list[int]:
        async with AsyncRedisStorage.from_url(redis_url, retry_interval=60.0) as storage:
            limiter = AsyncLimiter(DictSource({"w": "100/minute"}), storage)
            first = (await limiter.hit("w")).remaining
            assert admin.client_kill_filter(_type="normal", skipme=True) >= 1
            await asyncio.sleep(0.02)  # idle: the loop sees the connection close
            second = (await limiter.hit("w")).remaining
            assert storage.failure_counts() == {}
            return [first, second]

    assert asyncio.run(scenario()) == [99, 98]
    admin.close()


def test_async_decision_that_times_out_is_not_retried() -> None:
    """An asyncio decision past socket_timeout raises StorageError; it ran exactly once."""
    with redis_server("--enable-debug-command", "yes") as server:
        admin = redis.Redis.from_url(server.url)
        limit = BoundLimit.compile("w", Policy.parse({"rate": "5/minute"}))

        async def scenario() -> int:
            storage = AsyncRedisStorage.from_url(server.url, socket_timeout=0.05, retry_interval=0)
            await storage.decide(limit, "k", 1)  # connected, script loaded
            admin.config_resetstat()
            sleeper = asyncio.create_task(
                asyncio.to_thread(admin.execute_command, "DEBUG", "SLEEP", "0.4")
            )
            await asyncio.sleep(0.1)  # the server is asleep now
            started = time.monotonic()
            with pytest.raises(StorageError, match="Timeout"):
                await storage.decide(limit, "k", 1)
            assert time.monotonic() - started < 0.3
            await sleeper
            assert settled_evalsha_calls(admin, 1) == 1
            outcome = await storage.decide(limit, "k", 1, commit=False)
            await storage.aclose()
            return outcome[2]

        # The timed-out call did run once on the server: 2 units used in all, not 3.
        assert asyncio.run(scenario()) == 3
        assert commandstats(admin)["cmdstat_evalsha"] == 2
        admin.close()


def test_cancelling_an_async_decision_cancels_it_and_keeps_the_storage_usable() -> None:
    """A task cancelled while its decision is in flight sees CancelledError, not a
    timeout, and later decisions work."""
    with redis_server("--enable-debug-command", "yes") as server:
        admin = redis.Redis.from_url(server.url)
        limit = BoundLimit.compile("w", Policy.parse({"rate": "5/minute"}))

        async def scenario() -> int:
            async with AsyncRedisStorage.from_url(server.url, socket_timeout=1.0) as storage:
                await storage.decide(limit, "k", 1)
                sleeper = asyncio.create_task(
                    asyncio.to_thread(admin.execute_command, "DEBUG", "SLEEP", "0.3")
                )
                await asyncio.sleep(0.05)
                decision = asyncio.create_task(storage.decide(limit, "k", 1))
                await asyncio.sleep(0.05)
                decision.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await decision
                await sleeper
                assert storage.failure_counts() == {}
                return (await storage.decide(limit, "k", 1, commit=False))[2]

        assert asyncio.run(scenario()) == 3
        admin.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_does_not_share_the_parents_connection(redis_url: str) -> None:
    """A child forked after decisions opens its own connection: both processes count."""
    with RedisStorage.from_url(redis_url) as storage:
        limiter = Limiter(DictSource({"w": "100/minute"}), storage)
        assert limiter.hit("w").remaining == 99
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through its exit status
            code = 1
            try:
                code = 0 if all(limiter.hit("w").allowed for _ in range(20)) else 1
            finally:
                os._exit(code)
        mine = [limiter.hit("w").allowed for _ in range(20)]
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert all(mine)
        assert limiter.peek("w").remaining == 100 - 41


def test_clients_the_fast_path_does_not_cover_use_execute_command(redis_url: str) -> None:
    """A client subclass and a single-connection client are used through execute_command."""
    calls: list[object] = []

    class Recording(redis.Redis):
        def execute_command(self, *args: Any, **options: Any) -> Any:
            calls.append(args[0])
            return super().execute_command(*args, **options)  # type: ignore[no-untyped-call]

    for client in (
        Recording.from_url(redis_url),
        redis.Redis.from_url(redis_url, single_connection_client=True),
    ):
        limiter = Limiter(DictSource({"w": "100/minute"}), RedisStorage(client))
        limiter.reset("w")
        assert [limiter.hit("w").remaining for _ in range(2)] == [99, 98]
        client.close()
    assert calls.count("EVALSHA") >= 2


def test_a_long_sliding_log_decides_like_memory(redis_url: str) -> None:
    """A log of hundreds of entries, stored and read in several chunks, decides as
    MemoryStorage does, refusals and expiry included."""
    clock = ManualClock(1000.0)
    limit = BoundLimit.compile(
        "log", Policy.parse({"rate": "300/minute", "algorithm": "sliding-log"})
    )
    memory = MemoryStorage(clock=clock)

    def visible(outcome: tuple[Any, ...]) -> tuple[Any, ...]:
        return (outcome[0], *outcome[2:])

    with RedisStorage.from_url(redis_url, clock=clock) as storage:
        seen = []
        for step in range(320):
            clock.advance(0.001 if step % 50 else 0.5)
            outcome = visible(storage.decide(limit, "k", 1))
            assert outcome == visible(memory.decide(limit, "k", 1))
            seen.append(outcome[0])
        assert seen.count(True) == 300
        clock.advance(30.0)
        assert visible(storage.decide(limit, "k", 7)) == visible(memory.decide(limit, "k", 7))
