"""The failure policy and circuit breaker of the Redis storages, against a real server that
is stopped, restarted on the same port, or paused with SIGSTOP so calls time out."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import redis

from ratekeeper import (
    AsyncLimiter,
    AsyncRedisStorage,
    ConfigError,
    DictSource,
    Limiter,
    RateLimitExceeded,
    RedisStorage,
    StorageError,
)
from ratekeeper.storage._redis_core import OnStorageError
from ratekeeper.testing import ManualClock
from tests.servers import RedisServer, redis_unavailable, start_redis

pytestmark = pytest.mark.redis

TIMEOUT = 0.1  # socket and connect timeout of every storage here
RETRY = 5.0  # retry_interval, on a ManualClock unless a test says otherwise
POLICIES: tuple[OnStorageError, ...] = ("raise", "allow", "deny", "local")
LIMITS = {"api": "3/minute", "pair": "2/second;3/minute"}


class Server:
    """A redis-server of the test's own, which it may stop, restart or pause."""

    def __init__(self) -> None:
        try:
            self.current: RedisServer = start_redis()
        except RuntimeError as exc:
            redis_unavailable(str(exc))
            raise  # pragma: no cover - pytest.fail/skip raised
        self.port = self.current.port
        self.url = self.current.url
        self.paused = False

    def stop(self) -> None:
        self.resume()
        self.current.stop()

    def kill(self) -> None:
        """SIGKILL the server: no clean shutdown, connections are reset."""
        self.resume()
        self.current.process.kill()
        self.current.process.wait(timeout=5)
        self.current.stop()  # closes the stderr pipe, removes the directory

    def restart(self) -> None:
        """Start a fresh, empty server on the same port."""
        self.stop()
        self.current = start_redis(port=self.port)

    @contextmanager
    def pause(self) -> Iterator[None]:
        """SIGSTOP the server: connections are accepted but nothing answers."""
        self.current.process.send_signal(signal.SIGSTOP)
        self.paused = True
        try:
            yield
        finally:
            self.resume()

    def resume(self) -> None:
        if self.paused:
            self.current.process.send_signal(signal.SIGCONT)
            self.paused = False

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)


@pytest.fixture
def server() -> Iterator[Server]:
    """A redis-server of this test's own, resumed and stopped by pid afterwards."""
    own = Server()
    try:
        yield own
    finally:
        own.stop()


def storage_for(
    server: Server, policy: OnStorageError, clock: ManualClock | None = None, retry: float = RETRY
) -> RedisStorage:
    return RedisStorage.from_url(
        server.url,
        on_storage_error=policy,
        retry_interval=retry,
        clock=clock,
        socket_timeout=TIMEOUT,
        socket_connect_timeout=TIMEOUT,
    )


def limiter_for(
    server: Server, policy: OnStorageError, clock: ManualClock | None = None, retry: float = RETRY
) -> Limiter:
    return Limiter(DictSource(LIMITS), storage_for(server, policy, clock, retry))


def test_raise_gives_storage_error_with_the_cause_chained(server: Server) -> None:
    """With "raise", a dead server gives StorageError chaining redis-py's ConnectionError."""
    limiter = limiter_for(server, "raise", ManualClock(1000.0))
    assert limiter.hit("api").allowed
    server.stop()
    with pytest.raises(StorageError, match="Redis storage failed") as failed:
        limiter.hit("api")
    assert isinstance(failed.value.__cause__, redis.ConnectionError)
    # The breaker is open now: the next call fails at once with the last error as cause.
    with pytest.raises(StorageError, match=r"unavailable \(retrying after 5 s\)") as skipped:
        limiter.hit("api")
    assert skipped.value.__cause__ is failed.value.__cause__
    with pytest.raises(StorageError):
        limiter.reset("api")


def test_allow_admits_while_redis_is_down(server: Server) -> None:
    """With "allow", every call is admitted while the server is down."""
    limiter = limiter_for(server, "allow", ManualClock(1000.0))
    server.stop()
    decisions = [limiter.hit("api", key="k") for _ in range(10)]
    assert all(d.allowed for d in decisions)
    limiter.reset("api", key="k")  # a reset that cannot reach Redis is not an error here


def test_deny_refuses_with_a_retry_after(server: Server) -> None:
    """With "deny", calls are refused with retry_after = the time until the next probe."""
    clock = ManualClock(1000.0)
    limiter = limiter_for(server, "deny", clock)
    server.stop()
    first = limiter.hit("api")
    assert not first.allowed
    assert first.retry_after == pytest.approx(RETRY)
    clock.advance(2.0)
    later = limiter.hit("api")
    assert not later.allowed
    assert later.retry_after == pytest.approx(RETRY - 2.0)


def test_local_falls_back_to_memory_with_the_same_policies(server: Server) -> None:
    """With "local", decisions come from an in-memory limiter with the same policies."""
    clock = ManualClock(1000.0)
    limiter = limiter_for(server, "local", clock)
    server.stop()
    assert [limiter.hit("api", key="k").allowed for _ in range(4)] == [True, True, True, False]
    assert limiter.hit("api", key="other").allowed
    # The multi-rate policy stays all-or-nothing in the fallback too.
    assert [limiter.hit("pair").allowed for _ in range(3)] == [True, True, False]
    clock.advance(1.5)
    assert limiter.hit("pair").allowed
    clock.advance(1.5)
    refused = limiter.hit("pair")
    assert not refused.allowed
    assert refused.rate.period == 60.0


def test_paused_server_costs_one_timeout_not_one_per_call(server: Server) -> None:
    """While the server is paused, N calls in one retry_interval pay one socket timeout."""
    limiter = limiter_for(server, "allow", clock=None, retry=60.0)
    assert limiter.hit("api").allowed
    calls = 30
    with server.pause():
        started = time.perf_counter()
        decisions = [limiter.hit("api") for _ in range(calls)]
        elapsed = time.perf_counter() - started
    assert all(d.allowed for d in decisions)
    assert elapsed >= 0.9 * TIMEOUT
    assert elapsed < calls * TIMEOUT / 5


def test_breaker_probes_once_per_retry_interval(server: Server) -> None:
    """After each retry_interval one call probes the paused server; the others skip it."""
    clock = ManualClock(1000.0)
    limiter = limiter_for(server, "deny", clock)
    with server.pause():
        started = time.perf_counter()
        for _ in range(3):
            assert not any(limiter.hit("api").allowed for _ in range(10))
            clock.advance(RETRY)
        elapsed = time.perf_counter() - started
    assert elapsed >= 3 * 0.9 * TIMEOUT
    assert elapsed < 3 * TIMEOUT + 1.0


@pytest.mark.parametrize("end", ["stop", "kill"])
def test_recovers_after_restart_and_counts_in_redis_again(server: Server, end: str) -> None:
    """After a restart the first call past retry_interval reaches Redis; counting resumes."""
    clock = ManualClock(1000.0)
    limiter = limiter_for(server, "local", clock)
    assert limiter.hit("api").allowed
    if end == "kill":
        server.kill()
    else:
        server.stop()
    assert [limiter.hit("api").allowed for _ in range(4)] == [True, True, True, False]
    server.restart()
    # Still within retry_interval: the breaker keeps deciding locally.
    assert not limiter.hit("api").allowed
    clock.advance(RETRY)
    # The restarted server is empty (no persistence): a fresh count of three.
    assert [limiter.hit("api").allowed for _ in range(4)] == [True, True, True, False]
    client = server.client()
    keys = limiter.storage.keys(limiter.bound("api"), "")  # type: ignore[attr-defined]
    assert client.exists(*keys) == 1
    client.close()


def test_counts_are_kept_across_a_pause(server: Server) -> None:
    """A paused server keeps its counts; after it resumes, decisions count from them."""
    clock = ManualClock(1000.0)
    limiter = Limiter(
        DictSource({"api": "10/minute"}), storage_for(server, "allow", clock, retry=RETRY)
    )
    assert [limiter.hit("api").allowed for _ in range(2)] == [True, True]
    with server.pause():
        assert all(limiter.hit("api").allowed for _ in range(5))
    clock.advance(RETRY)
    # 10 - 2 admitted before the pause - 1 for the call that timed out: it had been sent,
    # and the server ran it on resuming. That is why a decision is never retried.
    admitted = [limiter.hit("api").allowed for _ in range(9)]
    assert admitted == [True] * 7 + [False] * 2


def test_decorator_follows_the_failure_policy(server: Server) -> None:
    """A decorated function sees each policy: raise, allow, deny and local."""
    clock = ManualClock(1000.0)
    limiters = {p: limiter_for(server, p, clock) for p in POLICIES}
    calls: list[str] = []

    def make(policy: OnStorageError) -> Callable[[], str]:
        @limiters[policy].limit("api")
        def work() -> str:
            calls.append(policy)
            return policy

        return work

    raising, allowing, denying, local = (make(p) for p in POLICIES)
    server.stop()
    with pytest.raises(StorageError) as failed:
        raising()
    assert isinstance(failed.value.__cause__, redis.ConnectionError)
    assert [allowing() for _ in range(5)] == ["allow"] * 5
    with pytest.raises(RateLimitExceeded) as refused:
        denying()
    assert refused.value.retry_after == pytest.approx(RETRY)
    assert [local() for _ in range(3)] == ["local"] * 3
    with pytest.raises(RateLimitExceeded):
        local()
    assert calls == ["allow"] * 5 + ["local"] * 3


def test_acquire_with_deny_waits_for_the_probe_and_recovers(server: Server) -> None:
    """acquire() under "deny" waits until the next probe, which finds Redis back."""
    clock = ManualClock(1000.0)
    storage = storage_for(server, "deny", clock)
    limiter = Limiter(DictSource(LIMITS), storage, sleep=clock.sleep)
    server.stop()
    assert not limiter.hit("api").allowed
    with pytest.raises(RateLimitExceeded) as refused:
        limiter.acquire("api", timeout=1.0)  # the probe is 5 s away: waiting cannot help
    assert refused.value.retry_after == pytest.approx(RETRY)
    server.restart()
    started = clock()
    decision = limiter.acquire("api", timeout=10.0)
    assert decision.allowed
    assert clock() - started == pytest.approx(RETRY)
    assert decision.remaining == 2  # counted in the restarted Redis


def test_async_storage_follows_the_failure_policy(server: Server) -> None:
    """AsyncRedisStorage applies each policy when down and recovers after a restart."""
    clock = ManualClock(1000.0)

    async def run() -> None:
        storages = {
            policy: AsyncRedisStorage.from_url(
                server.url,
                on_storage_error=policy,
                retry_interval=RETRY,
                clock=clock,
                socket_timeout=TIMEOUT,
                socket_connect_timeout=TIMEOUT,
            )
            for policy in POLICIES
        }
        limiters = {p: AsyncLimiter(DictSource(LIMITS), s) for p, s in storages.items()}
        try:
            assert (await limiters["raise"].hit("api")).allowed
            server.stop()
            with pytest.raises(StorageError) as failed:
                await limiters["raise"].hit("api")
            assert isinstance(failed.value.__cause__, redis.ConnectionError)
            assert (await limiters["allow"].hit("api")).allowed
            denied = await limiters["deny"].hit("api")
            assert not denied.allowed
            assert denied.retry_after == pytest.approx(RETRY)
            local = [(await limiters["local"].hit("api")).allowed for _ in range(4)]
            assert local == [True, True, True, False]
            server.restart()
            clock.advance(RETRY)
            counted = [(await limiters["raise"].hit("api")).allowed for _ in range(4)]
            assert counted == [True, True, True, False]
        finally:
            for storage in storages.values():
                await storage.aclose()

    asyncio.run(run())


def test_async_paused_server_costs_one_timeout(server: Server) -> None:
    """The async storage, too, pays one socket timeout per retry_interval while paused."""

    async def run() -> float:
        storage = AsyncRedisStorage.from_url(
            server.url,
            on_storage_error="allow",
            retry_interval=60.0,
            socket_timeout=TIMEOUT,
            socket_connect_timeout=TIMEOUT,
        )
        limiter = AsyncLimiter(DictSource(LIMITS), storage)
        try:
            assert (await limiter.hit("api")).allowed
            with server.pause():
                started = time.perf_counter()
                for _ in range(30):
                    assert (await limiter.hit("api")).allowed
                return time.perf_counter() - started
        finally:
            await storage.aclose()

    elapsed = asyncio.run(run())
    assert 0.9 * TIMEOUT <= elapsed < 30 * TIMEOUT / 5


def test_retrying_client_options_are_refused() -> None:
    """from_url refuses retry options: a decision that timed out may have run already."""
    with pytest.raises(ConfigError, match="retry_on_timeout"):
        RedisStorage.from_url("redis://127.0.0.1:1/0", retry_on_timeout=True)


def test_unknown_failure_policy_is_a_config_error() -> None:
    """An unknown on_storage_error names the value and the choices."""
    with pytest.raises(ConfigError, match=r"'ignore'.*raise, allow, deny, local"):
        RedisStorage.from_url("redis://127.0.0.1:1/0", on_storage_error="ignore")  # type: ignore[arg-type]
