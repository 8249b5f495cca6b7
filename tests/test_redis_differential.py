"""The Lua scripts and the Python algorithms are one specification: random timed sequences
give identical outcomes on MemoryStorage and on RedisStorage at the same ManualClock times."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterator

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from ratekeeper import (
    AsyncLimiter,
    AsyncRedisStorage,
    DictSource,
    MemoryStorage,
    Policy,
    Rate,
    RedisStorage,
)
from ratekeeper._adaptive import Backoff
from ratekeeper._algorithms import BoundLimit, Outcome
from ratekeeper._rates import Algorithm
from ratekeeper.testing import ManualClock
from tests.servers import RedisServer
from tests.strategies import (
    ALGORITHMS,
    SIMULATION,
    backoff_params,
    multi_policies,
    single_policies,
    starts,
    storage_operations,
)

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def pair(redis_proc: RedisServer) -> Iterator[tuple[RedisStorage, ManualClock, redis.Redis]]:
    """A RedisStorage on a ManualClock, the clock, and an admin client to flush between
    examples (one server for the module)."""
    url = redis_proc.url
    clock = ManualClock()
    admin = redis.Redis.from_url(url)
    with RedisStorage.from_url(url, clock=clock) as storage:
        yield storage, clock, admin
    admin.close()


def visible(outcome: Outcome) -> tuple[object, ...]:
    """What a decision shows: everything but the new state (Redis keeps it server-side)."""
    allowed, _, available, retry_us, reset_us, binding = outcome
    return (bool(allowed), available, retry_us, reset_us, binding)


@SIMULATION
@given(policy=st.one_of(single_policies(), multi_policies()), start=starts, data=st.data())
def test_memory_and_redis_decide_alike(
    pair: tuple[RedisStorage, ManualClock, redis.Redis],
    policy: Policy,
    start: int,
    data: st.DataObject,
) -> None:
    """hit / peek / reserve / reset sequences on two keys: the same outcome and the same
    stored state at every step."""
    storage, clock, admin = pair
    admin.flushdb()
    period = min(rate.period_us for rate in policy.rates)
    operations = data.draw(storage_operations(period))
    limit = BoundLimit.compile("diff", policy)
    clock.advance(start / 1e6 - clock())
    memory = MemoryStorage(clock=clock)
    for dt, op, key, cost, max_wait in operations:
        clock.advance(dt / 1e6)
        if op == "reset":
            memory.reset(limit, key)
            storage.reset(limit, key)
            continue
        commit = op != "peek"
        expected = visible(memory.decide(limit, key, cost, max_wait, commit))
        assert visible(storage.decide(limit, key, cost, max_wait, commit)) == expected
        assert stored(admin, storage, limit, key) == kept(memory, limit, key)


def stored(admin: redis.Redis, storage: RedisStorage, limit: BoundLimit, key: str) -> list[str]:
    """The state of every rate of ``key`` as the script stored it, written out as text
    ("" when absent)."""
    values = admin.mget(storage.keys(limit, key))
    return [unpacked(value) if isinstance(value, bytes) else "" for value in values]


def unpacked(value: bytes) -> str:
    """A stored state (little-endian doubles) as its integers; a fraction would show."""
    numbers = struct.unpack(f"<{len(value) // 8}d", value)
    return " ".join(str(int(x)) if x.is_integer() else repr(x) for x in numbers)


def kept(memory: MemoryStorage, limit: BoundLimit, key: str) -> list[str]:
    """The same, from MemoryStorage: its states lead with the expiry, which Redis keeps as
    the key's TTL instead."""
    states = [memory.table.get((meter.slot, key)) for meter in limit.meters]
    return [" ".join(map(str, state[1:])) if state is not None else "" for state in states]


@SIMULATION
@given(
    params=backoff_params,
    start=starts,
    events=st.lists(st.tuples(st.integers(0, 4_000_000), st.booleans()), max_size=30),
)
def test_memory_and_redis_back_off_alike(
    pair: tuple[RedisStorage, ManualClock, redis.Redis],
    params: tuple[int, int, int, int, int],
    start: int,
    events: list[tuple[int, bool]],
) -> None:
    """The same throttles at the same times give the same scales on both storages."""
    storage, clock, admin = pair
    admin.flushdb()
    limit = BoundLimit.compile("adaptive", Policy.parse("10/second"))
    clock.advance(start / 1e6 - clock())
    memory = MemoryStorage(clock=clock)
    for dt, is_throttle in events:
        clock.advance(dt / 1e6)
        if is_throttle:
            assert storage.throttle(limit, "k", params) == memory.throttle(limit, "k", params)
        assert storage.scale(limit, "k") == memory.scale(limit, "k")


@settings(SIMULATION, max_examples=25)
@given(policy=st.one_of(single_policies(), multi_policies()), start=starts, data=st.data())
def test_async_limiter_on_redis_decides_like_memory(
    redis_proc: RedisServer, policy: Policy, start: int, data: st.DataObject
) -> None:
    """AsyncLimiter on AsyncRedisStorage gives the decisions AsyncLimiter on memory gives."""
    url = redis_proc.url
    period = min(rate.period_us for rate in policy.rates)
    operations = data.draw(storage_operations(period, max_size=25))
    clock = ManualClock(start / 1e6)

    async def scenario() -> None:
        async with AsyncRedisStorage.from_url(url, clock=clock) as storage:
            await storage.client.flushdb()
            on_redis = AsyncLimiter(DictSource({"d": policy}), storage)
            on_memory = AsyncLimiter(
                DictSource({"d": policy}),
                MemoryStorage(clock=clock),
            )
            on_redis.adapt("d", Backoff(refresh=0.0))
            on_memory.adapt("d", Backoff(refresh=0.0))
            for dt, op, key, cost, _ in operations:
                clock.advance(dt / 1e6)
                if op == "reset":
                    await on_redis.reset("d", key)
                    await on_memory.reset("d", key)
                elif op == "reserve":  # here: a throttle signal, as the limiters see it
                    assert await on_redis.throttle("d", key) == await on_memory.throttle("d", key)
                elif op == "peek":
                    assert await on_redis.peek("d", key, cost) == await on_memory.peek(
                        "d", key, cost
                    )
                else:
                    assert await on_redis.hit("d", key, cost) == await on_memory.hit("d", key, cost)

    asyncio.run(scenario())


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("amount", [1, 2, 3])
def test_memory_and_redis_agree_on_a_grid(
    pair: tuple[RedisStorage, ManualClock, redis.Redis], algorithm: Algorithm, amount: int
) -> None:
    """A fixed walk across window boundaries, every cost from 0 to past the amount, on one
    rate and on two: the same outcome and state at every step."""
    storage, clock, admin = pair
    admin.flushdb()
    clock.advance(10.0 - clock())
    memory = MemoryStorage(clock=clock)
    limits = [
        BoundLimit.compile("grid-1", Policy((Rate(amount, 1.0),), algorithm=algorithm)),
        BoundLimit.compile(
            "grid-2", Policy((Rate(amount + 1, 3.0), Rate(amount, 1.0)), algorithm=algorithm)
        ),
    ]
    for step in range(48):
        clock.advance((0.125, 0.25, 0.375, 0.0)[step % 4])
        cost = (step * 5) % (amount + 2)
        max_wait = 600_000 if step % 3 == 0 else 0
        for limit in limits:
            expected = visible(memory.decide(limit, "k", cost, max_wait, step % 5 != 4))
            assert visible(storage.decide(limit, "k", cost, max_wait, step % 5 != 4)) == expected
            assert stored(admin, storage, limit, "k") == kept(memory, limit, "k")
