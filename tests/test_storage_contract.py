"""The storage contract: one behavioural suite that MemoryStorage and RedisStorage both pass.

Every test runs on MemoryStorage and on RedisStorage driven by a ManualClock; the tests
that need no clock movement also run on RedisStorage on the server's TIME, with periods
long enough that no window boundary passes while a test runs.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from ratekeeper import DictSource, Limiter, MemoryStorage, Rate, RateLimitExceeded, Storage
from ratekeeper._rates import Algorithm, PolicySpec
from ratekeeper.testing import ManualClock
from tests.strategies import ALGORITHMS

WINDOWS: tuple[Algorithm, ...] = ("fixed-window", "sliding-window", "sliding-log")


@dataclass
class Rig:
    """A storage under test, the clock driving it (None: server time) and the periods
    its tests use."""

    storage: Storage
    clock: ManualClock | None
    period: str
    other_period: str

    def limiter(self, specs: dict[str, PolicySpec]) -> tuple[Limiter, DictSource]:
        source = DictSource(specs)
        sleep = self.clock.sleep if self.clock is not None else _no_sleep
        return Limiter(source, self.storage, sleep=sleep), source

    def spec(self, amount: int, algorithm: Algorithm, burst: int | None = None) -> PolicySpec:
        table: dict[str, object] = {"rate": f"{amount}/{self.period}", "algorithm": algorithm}
        if burst is not None:
            table["burst"] = burst
        return table

    @property
    def seconds(self) -> float:
        return Rate.parse(f"1/{self.period}").period


def _no_sleep(seconds: float) -> None:
    raise AssertionError(f"a server-time test must not wait ({seconds} s)")


def _make_rig(kind: str, request: pytest.FixtureRequest) -> Iterator[Rig]:
    if kind == "memory":
        clock = ManualClock(1000.0)
        yield Rig(MemoryStorage(clock=clock), clock, "minute", "hour")
        return
    from ratekeeper import RedisStorage

    url: str = request.getfixturevalue("redis_url")
    if kind == "redis":
        clock = ManualClock(1000.0)
        with RedisStorage.from_url(url, clock=clock) as storage:
            yield Rig(storage, clock, "minute", "hour")
    else:
        # Windows are aligned to the clock's zero: with periods of 300 days, a boundary
        # falls inside a test run about once in a billion runs.
        with RedisStorage.from_url(url) as storage:
            yield Rig(storage, None, "300 days", "600 days")


@pytest.fixture(
    params=[
        "memory",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("redis-server-time", marks=pytest.mark.redis),
    ]
)
def rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    """Every storage: memory, Redis on a ManualClock, Redis on the server's TIME."""
    yield from _make_rig(request.param, request)


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def timed_rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    """The storages a test can move time for: memory and Redis on a ManualClock."""
    yield from _make_rig(request.param, request)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_hits_are_admitted_up_to_the_amount(rig: Rig, algorithm: Algorithm) -> None:
    """5 per period: five hits are admitted with falling remaining, the sixth is refused."""
    limiter, _ = rig.limiter({"w": rig.spec(5, algorithm)})
    decisions = [limiter.hit("w", key="k") for _ in range(6)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0, 0]
    assert 0 < decisions[-1].retry_after <= rig.seconds
    assert decisions[-1].limit_name == "w"
    assert decisions[-1].key == "k"


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_peek_consumes_nothing(rig: Rig, algorithm: Algorithm) -> None:
    """Peeking any number of times leaves the count where it was."""
    limiter, _ = rig.limiter({"w": rig.spec(3, algorithm)})
    limiter.hit("w")
    for _ in range(5):
        peeked = limiter.peek("w")
        assert (peeked.allowed, peeked.remaining) == (True, 2)
    assert limiter.peek("w", cost=3).allowed is False
    assert [limiter.hit("w").allowed for _ in range(3)] == [True, True, False]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_reset_forgets_one_key_only(rig: Rig, algorithm: Algorithm) -> None:
    """reset() gives a key its full amount back and leaves other keys alone."""
    limiter, _ = rig.limiter({"w": rig.spec(2, algorithm)})
    for key in ("a", "b"):
        limiter.hit("w", key=key, cost=2)
    limiter.reset("w", key="a")
    assert limiter.peek("w", key="a").remaining == 2
    assert limiter.peek("w", key="b").remaining == 0
    assert limiter.hit("w", key="a", cost=2).allowed
    assert not limiter.hit("w", key="b").allowed


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_refusal_by_one_rate_consumes_nothing_from_the_others(
    rig: Rig, algorithm: Algorithm
) -> None:
    """10 per long period and 3 per short one: a refused cost-2 leaves the 10 untouched."""
    both = {"rate": f"10/{rig.other_period};3/{rig.period}", "algorithm": algorithm}
    limiter, source = rig.limiter({"w": both})
    assert limiter.hit("w", cost=2).allowed
    refused = limiter.hit("w", cost=2)
    assert not refused.allowed
    assert refused.rate == Rate.parse(f"3/{rig.period}")
    # The long rate alone keeps its state (same name, algorithm and period): it shows what
    # the refused request took from it, which must be nothing.
    source.set("w", {"rate": f"10/{rig.other_period}", "algorithm": algorithm})
    assert limiter.peek("w").remaining == 8


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_cost_beyond_capacity_is_refused_forever_and_consumes_nothing(
    rig: Rig, algorithm: Algorithm
) -> None:
    """A cost above what the limit can ever admit: refused with retry_after inf, at once."""
    limiter, _ = rig.limiter({"w": rig.spec(5, algorithm)})
    refused = limiter.hit("w", cost=6)
    assert not refused.allowed
    assert math.isinf(refused.retry_after)
    with pytest.raises(RateLimitExceeded) as raised:
        limiter.acquire("w", cost=6, timeout=None)
    assert math.isinf(raised.value.decision.retry_after)
    assert limiter.peek("w").remaining == 5


@pytest.mark.parametrize("algorithm", WINDOWS)
def test_raising_a_rate_keeps_the_count(rig: Rig, algorithm: Algorithm) -> None:
    """5 per period used up, then 10 per period: exactly 5 more, not 10."""
    limiter, source = rig.limiter({"w": rig.spec(5, algorithm)})
    assert all(limiter.hit("w").allowed for _ in range(5))
    assert not limiter.hit("w").allowed
    source.set("w", rig.spec(10, algorithm))
    assert limiter.peek("w").remaining == 5
    assert [limiter.hit("w").allowed for _ in range(6)] == [True] * 5 + [False]


@pytest.mark.parametrize("algorithm", WINDOWS)
def test_lowering_a_rate_denies(rig: Rig, algorithm: Algorithm) -> None:
    """5 used, then 3 per period: refused, naming the new rate."""
    limiter, source = rig.limiter({"w": rig.spec(5, algorithm)})
    assert all(limiter.hit("w").allowed for _ in range(5))
    source.set("w", rig.spec(3, algorithm))
    refused = limiter.hit("w")
    assert not refused.allowed
    assert refused.rate == Rate.parse(f"3/{rig.period}")
    assert refused.remaining == 0


@pytest.mark.parametrize("algorithm", WINDOWS)
def test_lowered_rate_admits_again_exactly_when_usage_falls_below(
    timed_rig: Rig, algorithm: Algorithm
) -> None:
    """After lowering 5/minute to 3/minute, the refusal's retry_after is exact to the µs."""
    rig = timed_rig
    assert rig.clock is not None
    limiter, source = rig.limiter({"w": rig.spec(5, algorithm)})
    assert all(limiter.hit("w").allowed for _ in range(5))
    source.set("w", rig.spec(3, algorithm))
    refused = limiter.hit("w")
    rig.clock.advance(refused.retry_after - 1e-6)
    assert not limiter.hit("w").allowed
    rig.clock.advance(1e-6)
    assert limiter.hit("w").allowed


def test_token_bucket_level_is_clamped_into_a_smaller_burst(rig: Rig) -> None:
    """Burst 10 with 3 used has 7 left; with burst 5 it has 5 at once, then none."""
    limiter, source = rig.limiter({"tb": rig.spec(10, "token-bucket", burst=10)})
    for _ in range(3):
        assert limiter.hit("tb").allowed
    assert limiter.peek("tb").remaining == 7
    source.set("tb", rig.spec(10, "token-bucket", burst=5))
    assert limiter.peek("tb").remaining == 5
    assert [limiter.hit("tb").allowed for _ in range(6)] == [True] * 5 + [False]


def test_token_bucket_level_is_kept_in_a_larger_burst(rig: Rig) -> None:
    """A larger burst does not refill the bucket: the level carries over."""
    limiter, source = rig.limiter({"tb": rig.spec(10, "token-bucket", burst=5)})
    for _ in range(3):
        assert limiter.hit("tb").allowed
    source.set("tb", rig.spec(10, "token-bucket", burst=20))
    assert limiter.peek("tb").remaining == 2
    assert [limiter.hit("tb").allowed for _ in range(3)] == [True, True, False]


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (("fixed-window", False), ("sliding-window", False)),
        (("sliding-window", False), ("sliding-log", False)),
        (("sliding-log", False), ("sliding-log", True)),
        (("token-bucket", False), ("token-bucket", True)),
        (("token-bucket", False), ("fixed-window", False)),
    ],
)
def test_changed_algorithm_or_period_starts_fresh(
    rig: Rig, before: tuple[Algorithm, bool], after: tuple[Algorithm, bool]
) -> None:
    """State belongs to (name, key, algorithm, period): change one and counting restarts."""

    def spec(choice: tuple[Algorithm, bool]) -> PolicySpec:
        period = rig.other_period if choice[1] else rig.period
        return {"rate": f"5/{period}", "algorithm": choice[0]}

    limiter, source = rig.limiter({"w": spec(before)})
    assert all(limiter.hit("w").allowed for _ in range(5))
    assert not limiter.hit("w").allowed
    source.set("w", spec(after))
    assert [limiter.hit("w").allowed for _ in range(6)] == [True] * 5 + [False]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_time_passing_restores_the_amount(timed_rig: Rig, algorithm: Algorithm) -> None:
    """Once a full period has passed since the last hit, the whole amount is back."""
    rig = timed_rig
    assert rig.clock is not None
    limiter, _ = rig.limiter({"w": rig.spec(4, algorithm)})
    assert limiter.hit("w", cost=4).allowed
    assert not limiter.hit("w").allowed
    rig.clock.advance(2 * rig.seconds)
    assert limiter.peek("w").remaining == 4
    assert limiter.hit("w", cost=4).allowed


def test_a_changed_token_bucket_is_converted_even_by_a_refusal(timed_rig: Rig) -> None:
    """A rate change takes effect at the next call, admitted or not: retry_after holds."""
    rig = timed_rig
    assert rig.clock is not None
    limiter, source = rig.limiter({"tb": rig.spec(10, "token-bucket")})
    assert [limiter.hit("tb").allowed for _ in range(10)] == [True] * 10
    source.set("tb", rig.spec(20, "token-bucket", burst=10))  # one unit per 3 s, from empty
    refused = limiter.hit("tb")
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(rig.seconds / 20)
    rig.clock.advance(rig.seconds / 40)
    assert not limiter.hit("tb").allowed  # the old bucket (one unit per 6 s) is gone
    rig.clock.advance(rig.seconds / 40)
    assert limiter.hit("tb").allowed
    assert not limiter.hit("tb").allowed


def test_wait_reserves_evenly_paced_token_bucket_slots(timed_rig: Rig) -> None:
    """on_exceeded="wait" on a token bucket: calls are paced one interval apart."""
    rig = timed_rig
    assert rig.clock is not None
    limiter, _ = rig.limiter({"paced": {"rate": "2/second", "algorithm": "token-bucket"}})
    start = rig.clock()
    seen: list[float] = []

    @limiter.limit("paced", on_exceeded="wait", max_wait=10.0)
    def call() -> None:
        assert rig.clock is not None
        seen.append(round(rig.clock() - start, 6))

    for _ in range(5):
        call()
    assert seen == [0.0, 0.0, 0.5, 1.0, 1.5]


def test_decorated_function_is_refused_past_the_limit(rig: Rig) -> None:
    """The decorator raises RateLimitExceeded, carrying the decision, past the amount."""
    limiter, _ = rig.limiter({"w": rig.spec(2, "sliding-window")})
    calls: list[int] = []

    @limiter.limit("w", key=lambda user: user)
    def fetch(user: str) -> None:
        calls.append(1)

    fetch("u1")
    fetch("u1")
    with pytest.raises(RateLimitExceeded) as raised:
        fetch("u1")
    fetch("u2")
    assert len(calls) == 3
    assert raised.value.decision.key == "u1"
