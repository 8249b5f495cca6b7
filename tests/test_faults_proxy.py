"""The Redis storages behind a loopback proxy that delays replies, drops connections in the
middle of a request, or swallows traffic: each failure policy gives its documented answer,
the circuit breaker bounds the time lost, and counting resumes from Redis afterwards."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ratekeeper import (
    AsyncLimiter,
    AsyncRedisStorage,
    Decision,
    DictSource,
    Limiter,
    RateLimitExceeded,
    RedisStorage,
    StorageError,
)
from ratekeeper.storage._redis_core import OnStorageError
from ratekeeper.testing import ManualClock
from tests.proxy import Proxy
from tests.servers import RedisServer

pytestmark = pytest.mark.redis

TIMEOUT = 0.1  # socket and connect timeout of every storage here
RETRY = 0.2  # retry_interval
FAST = 0.01  # a reply delay well below the timeout
SLOW = 0.4  # a reply delay past the timeout
POLICIES: tuple[OnStorageError, ...] = ("raise", "allow", "deny", "local")
LIMITS = {"api": {"rate": "5/minute", "algorithm": "sliding-log"}}
# What a call answers once Redis cannot, per policy, while the local fallback is fresh.
DEGRADED = {"raise": "error", "allow": "allowed", "deny": "denied", "local": "allowed"}


@pytest.fixture
def proxy(redis_url: str, redis_proc: RedisServer) -> Iterator[Proxy]:
    """A proxy in front of the session's (flushed) redis-server, closed afterwards."""
    with Proxy(redis_proc.port, lifetime=60.0) as own:
        yield own


def _options(policy: OnStorageError, clock: ManualClock | None) -> dict[str, Any]:
    return {
        "on_storage_error": policy,
        "retry_interval": RETRY,
        "clock": clock,
        "socket_timeout": TIMEOUT,
        "socket_connect_timeout": TIMEOUT,
    }


def storage_for(
    proxy: Proxy, policy: OnStorageError, clock: ManualClock | None = None
) -> RedisStorage:
    return RedisStorage.from_url(proxy.url, **_options(policy, clock))


def async_storage_for(
    proxy: Proxy, policy: OnStorageError, clock: ManualClock | None = None
) -> AsyncRedisStorage:
    return AsyncRedisStorage.from_url(proxy.url, **_options(policy, clock))


def outcome(call: Callable[[], Decision]) -> str:
    """ "allowed", "denied" or "error" (a StorageError chaining redis-py's error); any
    other exception is not documented and fails the test by propagating."""
    try:
        decision = call()
    except StorageError as exc:
        return _error(exc)
    return "allowed" if decision.allowed else "denied"


async def async_outcome(call: Callable[[], Awaitable[Decision]]) -> str:
    """:func:`outcome` for a coroutine."""
    try:
        decision = await call()
    except StorageError as exc:
        return _error(exc)
    return "allowed" if decision.allowed else "denied"


def _error(exc: StorageError) -> str:
    # Compared with the expected answer, so a StorageError without its cause fails.
    return "error" if isinstance(exc.__cause__, redis.RedisError) else f"bare {exc!r}"


@pytest.mark.parametrize("policy", POLICIES)
def test_latency_below_the_timeout_gives_exact_decisions(
    proxy: Proxy, policy: OnStorageError
) -> None:
    """Replies slower than loopback but inside the socket timeout: exact decisions, no
    failures counted, whatever the policy."""
    storage = storage_for(proxy, policy)
    limiter = Limiter(DictSource(LIMITS), storage)
    try:
        with proxy.delayed(FAST):
            started = time.monotonic()
            outcomes = [outcome(lambda: limiter.hit("api")) for _ in range(7)]
            elapsed = time.monotonic() - started
    finally:
        storage.close()
    assert outcomes == ["allowed"] * 5 + ["denied"] * 2
    assert elapsed >= 7 * FAST
    assert storage.failure_counts() == {}


@pytest.mark.parametrize("policy", POLICIES)
def test_latency_past_the_timeout_follows_the_policy(proxy: Proxy, policy: OnStorageError) -> None:
    """Replies later than the socket timeout: the policy answers, and while the breaker is
    open no call touches the network."""
    clock = ManualClock(1000.0)
    storage = storage_for(proxy, policy, clock)
    limiter = Limiter(DictSource(LIMITS), storage)
    try:
        assert outcome(lambda: limiter.hit("api")) == "allowed"
        with proxy.delayed(SLOW):
            started = time.monotonic()
            first = outcome(lambda: limiter.hit("api"))
            timed_out = time.monotonic() - started
            connections = proxy.accepted
            started = time.monotonic()
            later = [outcome(lambda: limiter.hit("api")) for _ in range(3)]
            skipped = time.monotonic() - started
    finally:
        storage.close()
    assert first == DEGRADED[policy]
    assert 0.9 * TIMEOUT <= timed_out < SLOW
    # The local fallback counts from zero: three more fit in its fresh 5/minute.
    assert later == [DEGRADED[policy]] * 3
    assert skipped < TIMEOUT / 2
    assert proxy.accepted == connections
    assert storage.failure_counts()["api"] == (4, 0 if policy == "raise" else 4)


@pytest.mark.slow
@pytest.mark.parametrize("policy", POLICIES)
def test_breaker_bounds_the_time_lost_to_timeouts(proxy: Proxy, policy: OnStorageError) -> None:
    """Over N calls against replies that never come in time, at most one call per
    retry_interval waits for the socket timeout; the others answer at once."""
    storage = storage_for(proxy, policy)
    limiter = Limiter(DictSource({"api": "1000000/minute"}), storage)
    durations: list[float] = []
    answers: set[str] = set()
    try:
        assert outcome(lambda: limiter.hit("api")) == "allowed"
        with proxy.delayed(SLOW):
            started = time.monotonic()
            while time.monotonic() - started < 4 * RETRY + RETRY / 2:
                before = time.monotonic()
                answers.add(outcome(lambda: limiter.hit("api")))
                durations.append(time.monotonic() - before)
            elapsed = time.monotonic() - started
    finally:
        storage.close()
    slow = [d for d in durations if d >= TIMEOUT / 2]
    assert answers == {DEGRADED[policy]}
    assert len(durations) > 20 * len(slow)
    assert 1 <= len(slow) <= elapsed / RETRY + 1
    assert all(d < TIMEOUT + 0.15 for d in slow)  # no call waits for the reply itself


@pytest.mark.parametrize("policy", POLICIES)
def test_connection_dropped_mid_request_then_recovery(proxy: Proxy, policy: OnStorageError) -> None:
    """A connection dropped while a request is in flight: the policy answers at once (no
    timeout), and after retry_interval counting resumes from what Redis holds, which
    includes the request whose reply was lost."""
    clock = ManualClock(1000.0)
    storage = storage_for(proxy, policy, clock)
    limiter = Limiter(DictSource(LIMITS), storage)
    try:
        assert [outcome(lambda: limiter.hit("api")) for _ in range(2)] == ["allowed"] * 2
        proxy.drop_at_next_reply()
        started = time.monotonic()
        lost = outcome(lambda: limiter.hit("api"))
        elapsed = time.monotonic() - started
        assert lost == DEGRADED[policy]
        assert elapsed < TIMEOUT  # a reset connection fails fast
        assert outcome(lambda: limiter.hit("api")) == DEGRADED[policy]  # breaker open
        connections = proxy.accepted
        clock.advance(RETRY)
        # Redis holds three (two, plus the one whose reply was lost): two more fit.
        recovered = [outcome(lambda: limiter.hit("api")) for _ in range(3)]
    finally:
        storage.close()
    assert recovered == ["allowed", "allowed", "denied"]
    assert proxy.accepted == connections + 1  # one new connection, through the proxy


@pytest.mark.parametrize("policy", POLICIES)
def test_idle_connection_dropped_costs_nothing(proxy: Proxy, policy: OnStorageError) -> None:
    """Connections dropped between calls are made again by the next call: no failure,
    no policy answer, and the count goes on."""
    storage = storage_for(proxy, policy, ManualClock(1000.0))
    limiter = Limiter(DictSource(LIMITS), storage)
    try:
        seen = [outcome(lambda: limiter.hit("api")) for _ in range(2)]
        proxy.drop()
        seen += [outcome(lambda: limiter.hit("api")) for _ in range(4)]
    finally:
        storage.close()
    assert seen == ["allowed"] * 5 + ["denied"]
    assert storage.failure_counts() == {}
    assert proxy.accepted >= 2  # connected again through the proxy


@pytest.mark.parametrize("policy", POLICIES)
def test_black_hole_times_out_then_recovers(proxy: Proxy, policy: OnStorageError) -> None:
    """A network that accepts connections and answers nothing costs one timeout; after
    it heals, the first call past retry_interval reaches Redis again."""
    clock = ManualClock(1000.0)
    storage = storage_for(proxy, policy, clock)
    limiter = Limiter(DictSource(LIMITS), storage)
    try:
        assert outcome(lambda: limiter.hit("api")) == "allowed"
        with proxy.swallowing():
            started = time.monotonic()
            assert outcome(lambda: limiter.hit("api")) == DEGRADED[policy]
            assert time.monotonic() - started >= 0.9 * TIMEOUT
            clock.advance(RETRY)
            started = time.monotonic()
            assert outcome(lambda: limiter.hit("api")) == DEGRADED[policy]  # the probe
            assert time.monotonic() - started >= 0.9 * TIMEOUT
        clock.advance(RETRY)
        # The swallowed requests never reached Redis: it holds one.
        recovered = [outcome(lambda: limiter.hit("api")) for _ in range(5)]
    finally:
        storage.close()
    assert recovered == ["allowed"] * 4 + ["denied"]


@pytest.mark.parametrize("policy", POLICIES)
def test_async_limiter_behind_the_proxy(proxy: Proxy, policy: OnStorageError) -> None:
    """AsyncLimiter on AsyncRedisStorage: exact under small latency, the policy past the
    timeout and on a mid-request drop, and Redis's count again after recovery."""
    clock = ManualClock(1000.0)

    async def run() -> list[str]:
        storage = async_storage_for(proxy, policy, clock)
        limiter = AsyncLimiter(DictSource(LIMITS), storage)

        async def hit() -> str:
            return await async_outcome(lambda: limiter.hit("api"))

        try:
            with proxy.delayed(FAST):
                seen = [await hit()]
            with proxy.delayed(SLOW):
                seen.append(await hit())
            clock.advance(RETRY)
            # A timed-out connection is discarded; the next call connects again, and a
            # fault during the handshake would stop the request before it is sent.
            seen.append(await hit())
            proxy.drop_at_next_reply()
            seen.append(await hit())
            clock.advance(RETRY)
            seen += [await hit(), await hit()]
        finally:
            await storage.aclose()
        return seen

    degraded = DEGRADED[policy]
    # Redis ran both requests whose replies were lost: it holds four, one more fits.
    expected = ["allowed", degraded, "allowed", degraded, "allowed", "denied"]
    assert asyncio.run(run()) == expected


@pytest.mark.parametrize("policy", POLICIES)
def test_decorator_behind_the_proxy(proxy: Proxy, policy: OnStorageError) -> None:
    """A decorated function sees the policy when Redis is slow or the connection drops,
    and Redis's count again after recovery."""
    clock = ManualClock(1000.0)
    storage = storage_for(proxy, policy, clock)
    limiter = Limiter(DictSource(LIMITS), storage)
    calls: list[int] = []

    @limiter.limit("api")
    def work(n: int) -> int:
        calls.append(n)
        return n

    def attempt(n: int) -> str:
        try:
            work(n)
        except StorageError as exc:
            return _error(exc)
        except RateLimitExceeded as exc:
            return "denied" if exc.limit_name == "api" else f"denied by {exc.limit_name}"
        return "allowed"

    try:
        assert attempt(1) == "allowed"
        with proxy.delayed(SLOW):
            assert attempt(2) == DEGRADED[policy]
        clock.advance(RETRY)
        assert attempt(3) == "allowed"  # reconnects: the drop below hits a warm connection
        proxy.drop_at_next_reply()
        assert attempt(4) == DEGRADED[policy]
        clock.advance(RETRY)
        after = [attempt(n) for n in (5, 6)]
    finally:
        storage.close()
    # Redis holds four: the two admitted and the two whose replies were lost.
    assert after == ["allowed", "denied"]
    ran = [1, 3, 5] if DEGRADED[policy] in ("error", "denied") else [1, 2, 3, 4, 5]
    assert calls == ran


def test_async_decorator_behind_the_proxy(proxy: Proxy) -> None:
    """A decorated coroutine on AsyncLimiter with "local": paced by the fallback while
    replies are late, by Redis again afterwards."""
    clock = ManualClock(1000.0)

    async def run() -> tuple[list[str], list[str]]:
        storage = async_storage_for(proxy, "local", clock)
        limiter = AsyncLimiter(DictSource({"api": "3/minute"}), storage)

        @limiter.limit("api")
        async def work() -> str:
            return "ran"

        async def attempt() -> str:
            try:
                return await work()
            except RateLimitExceeded:
                return "denied"

        try:
            warm = await attempt()  # a fault during the first connect would stop the request
            with proxy.delayed(SLOW):
                degraded = [warm] + [await attempt() for _ in range(4)]
            clock.advance(RETRY)
            recovered = [await attempt() for _ in range(2)]
        finally:
            await storage.aclose()
        return degraded, recovered

    degraded, recovered = asyncio.run(run())
    # One in Redis, then the local 3/minute.
    assert degraded == ["ran", "ran", "ran", "ran", "denied"]
    # Redis holds two, the timed-out request included: one more fits there.
    assert recovered == ["ran", "denied"]


def test_proxy_refuses_past_its_connection_bound(redis_proc: RedisServer) -> None:
    """The proxy serves at most max_connections at once and closes the rest."""
    with Proxy(redis_proc.port, max_connections=1, lifetime=10.0) as proxy:
        first = redis.Redis(host="127.0.0.1", port=proxy.port, socket_timeout=1)
        second = redis.Redis(
            host="127.0.0.1", port=proxy.port, socket_timeout=1, retry=Retry(NoBackoff(), 0)
        )
        try:
            assert first.ping()
            with pytest.raises(redis.ConnectionError):
                second.ping()
            assert proxy.open_connections == 1
        finally:
            first.close()
            second.close()


def test_proxy_stops_itself_after_its_lifetime(redis_proc: RedisServer) -> None:
    """Past its lifetime the proxy closes its connections and refuses new ones."""
    proxy = Proxy(redis_proc.port, lifetime=0.05)
    client = redis.Redis(
        host="127.0.0.1", port=proxy.port, socket_timeout=1, retry=Retry(NoBackoff(), 0)
    )
    try:
        assert proxy.wait(5.0)
        with pytest.raises(redis.ConnectionError):
            client.ping()
        assert proxy.open_connections == 0
    finally:
        client.close()
        proxy.close()
